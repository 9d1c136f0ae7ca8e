//! A real PostgreSQL server for the external store's tests (tests/postgres.sh),
//! brought up on first use unless USERSYNC_POSTGRES_DSN names one already, and a
//! fresh database per test so that tests never see each other's rows.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use usersync::store::postgres::Database;

/// The connection string of the server's `usersync` database.
pub fn server_dsn() -> &'static str {
    static DSN: OnceLock<String> = OnceLock::new();
    DSN.get_or_init(|| {
        if let Ok(dsn) = std::env::var("USERSYNC_POSTGRES_DSN") {
            return dsn;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres.sh");
        let up = Command::new("bash")
            .arg(&script)
            .arg("up")
            .output()
            .expect("tests/postgres.sh runs");
        assert!(
            up.status.success(),
            "tests/postgres.sh up failed: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        let env = Command::new("bash")
            .arg(&script)
            .arg("env")
            .output()
            .expect("tests/postgres.sh runs");
        let out = String::from_utf8_lossy(&env.stdout);
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("export USERSYNC_POSTGRES_DSN="))
            .expect("tests/postgres.sh env prints the DSN");
        line.trim_matches('\'').to_string()
    })
}

/// A new, empty database named after `test`, and its connection string.
pub async fn fresh_database(test: &str) -> (Database, String) {
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
    let dsn = url.to_string();
    let db = Database::open(&dsn, Duration::ZERO)
        .await
        .expect("the schema migrates on an empty database");
    (db, dsn)
}
