//! A real PostgreSQL server for the external store's tests (tests/postgres.sh),
//! brought up on first use unless USERSYNC_POSTGRES_DSN names one already, and a
//! fresh database per test so that tests never see each other's rows.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use usersync::store::postgres::Database;

/// What tests/postgres.sh env prints: the DSN of the `usersync` database and the
/// path of the CA that signed the server's certificate.
struct ServerEnv {
    dsn: String,
    ca: String,
}

fn server() -> &'static ServerEnv {
    static ENV: OnceLock<ServerEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        if let (Ok(dsn), Ok(ca)) = (
            std::env::var("USERSYNC_POSTGRES_DSN"),
            std::env::var("USERSYNC_POSTGRES_TEST_CA"),
        ) {
            return ServerEnv { dsn, ca };
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres.sh");
        let run = |arg: &str| {
            let out = Command::new("bash")
                .arg(&script)
                .arg(arg)
                .output()
                .expect("tests/postgres.sh runs");
            assert!(
                out.status.success(),
                "tests/postgres.sh {arg} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run("up");
        let env = run("env");
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("tests/postgres.sh env prints {name}"))
                .trim_matches('\'')
                .to_string()
        };
        ServerEnv {
            dsn: var("USERSYNC_POSTGRES_DSN"),
            ca: var("USERSYNC_POSTGRES_TEST_CA"),
        }
    })
}

/// The connection string of the server's `usersync` database.
pub fn server_dsn() -> &'static str {
    &server().dsn
}

/// The CA bundle that signed the server's certificate.
pub fn server_ca() -> &'static Path {
    Path::new(&server().ca)
}

/// A new, empty database named after `test`, and its connection string.
pub async fn fresh_database(test: &str) -> (Database, String) {
    let dsn = empty_database(test).await;
    let db = Database::open(&dsn, None, Duration::ZERO)
        .await
        .expect("the schema migrates on an empty database");
    (db, dsn)
}

/// The connection string of a new database named after `test`, without a schema
/// (to make an older one in).
pub async fn empty_database(test: &str) -> String {
    let admin = Database::from_dsn(server_dsn()).expect("the server's DSN parses");
    let name = format!(
        "t_{}_{}",
        test.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id() ^ (jiff::Timestamp::now().subsec_nanosecond() as u32)
    );
    let create = format!("CREATE DATABASE {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(admin.pool())
        .await
        .expect("the test role may create databases");
    admin.pool().close().await;
    let mut url = url::Url::parse(server_dsn()).expect("the DSN is a URL");
    url.set_path(&name);
    url.to_string()
}
