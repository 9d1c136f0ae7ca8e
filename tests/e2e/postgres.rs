//! The operator with `--store=postgres` against a real API server, a real OpenLDAP
//! server and a real PostgreSQL server: users, their audit log and the run history
//! live in the database, and nothing of them in the cluster.

use kube::Api;
use serde_json::json;
use sqlx::Row;
use usersync::api::{DirectoryMapping, DirectoryUser, RunResult};
use usersync::store::Backend;

use crate::ldap_support::Server;
use crate::pg_support::fresh_database;
use crate::support::{eventually, start_operator_with, stderr, stdout};
use crate::world::{RUN_WAIT, World};

/// (state, reason) of the user `uid` in the database.
async fn stored(
    db: &usersync::store::postgres::Database,
    ns: &str,
    uid: &str,
) -> Option<(String, Option<String>)> {
    sqlx::query_as("SELECT state, reason FROM users WHERE namespace = $1 AND username = $2")
        .bind(ns)
        .bind(uid)
        .fetch_optional(db.pool())
        .await
        .unwrap()
}

/// Run the `usersync` binary with `--store postgres -n NS` and the database's DSN.
fn usersync_pg(dsn: &str, ns: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(args)
        .args(["--store", "postgres", "-n", ns])
        .env("KUBECONFIG", &crate::support::cluster().kubeconfig)
        .env("USERSYNC_POSTGRES_DSN", dsn)
        .env("USERSYNC_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn with_the_postgres_store_users_audit_and_runs_live_in_the_database() {
    let (db, _) = fresh_database("e2e_sync").await;
    let w = World::without_operator(
        "pg-sync",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    start_operator_with(&w.client, &w.ns.name, Backend::Postgres(db.clone()));
    let ns = w.ns.name.clone();
    w.add_user("alice", false);
    w.add_user("bob", true);
    w.add_user("carol", false);

    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
    assert_eq!(run.imported, 2, "{run:?}");
    assert_eq!(
        stored(&db, &ns, "alice").await,
        Some(("Active".into(), None))
    );
    assert_eq!(
        stored(&db, &ns, "bob").await,
        None,
        "a disabled user is not imported"
    );
    let objects: Api<DirectoryUser> = Api::namespaced(w.client.clone(), &ns);
    assert!(
        objects
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no DirectoryUser objects with the postgres store"
    );
    let mapping = Api::<DirectoryMapping>::namespaced(w.client.clone(), &ns)
        .get("staff")
        .await
        .unwrap();
    assert_eq!(
        mapping.status.unwrap().users.unwrap().active,
        2,
        "counts come from the store"
    );

    // Disable → preserve, audited with the run that did it.
    w.set_disabled("alice", true);
    let preserve_run = w.sync("staff").await;
    assert_eq!(preserve_run.preserved, 1, "{preserve_run:?}");
    assert_eq!(
        stored(&db, &ns, "alice").await,
        Some(("Preserved".into(), Some("DisabledInDirectory".into())))
    );
    let audit = sqlx::query(
        "SELECT t.kind, t.run_id, t.actor, r.result FROM transitions t \
         JOIN users u ON u.namespace = t.namespace AND u.name = t.user_name \
         JOIN runs r ON r.namespace = t.namespace AND r.id = t.run_id \
         WHERE t.namespace = $1 AND u.username = 'alice' ORDER BY t.id",
    )
    .bind(&ns)
    .fetch_all(db.pool())
    .await
    .unwrap();
    let audit: Vec<(String, String, String, String)> = audit
        .iter()
        .map(|r| {
            (
                r.get("kind"),
                r.get("run_id"),
                r.get("actor"),
                r.get("result"),
            )
        })
        .collect();
    let actor = "usersync/mapping/staff".to_string();
    let ok = "Succeeded".to_string();
    assert_eq!(
        audit,
        vec![
            ("import".into(), run.id.clone(), actor.clone(), ok.clone()),
            ("preserve".into(), preserve_run.id.clone(), actor, ok),
        ]
    );
    let runs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE namespace = $1 AND mapping = 'staff' AND finished_at IS NOT NULL",
    )
    .bind(&ns)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(runs, 2, "both runs are in the history");

    // Deleting the mapping sends its users through the unmapped rules, then it goes.
    let mappings: Api<DirectoryMapping> = Api::namespaced(w.client.clone(), &ns);
    mappings.delete("staff", &Default::default()).await.unwrap();
    eventually(RUN_WAIT, "the mapping to be released and gone", || async {
        mappings
            .get_opt("staff")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        stored(&db, &ns, "carol").await,
        Some(("Preserved".into(), Some("Unmapped".into())))
    );
}

#[tokio::test]
async fn plan_and_import_csv_work_on_the_postgres_store() {
    let (db, dsn) = fresh_database("e2e_cli").await;
    let w = World::without_operator("pg-cli", Server::slapd(), json!({})).await;
    let ns = w.ns.name.clone();
    w.add_user("dora", false);
    w.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {"connectorRef": "corp", "policyRef": "default", "ldap": {"baseDN": w.ou.dn}},
    }));
    let with_store = |args: &[&str]| usersync_pg(&dsn, &ns, args);

    let plan = with_store(&["plan", "staff"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("imported 1"), "{}", stdout(&plan));

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "username,email\nerin,erin@example.org\nfred,\n",
    )
    .unwrap();
    let path = file.path().to_str().unwrap();
    let import = with_store(&["import-csv", path]);
    assert!(import.status.success(), "{}", stderr(&import));
    assert!(stdout(&import).contains("2 created"), "{}", stdout(&import));
    let csv: Vec<(String, String)> =
        sqlx::query_as("SELECT name, origin FROM users WHERE namespace = $1 ORDER BY name")
            .bind(&ns)
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        csv,
        [
            ("csv-erin".into(), "CSV".into()),
            ("csv-fred".into(), "CSV".into())
        ]
    );

    // Without the connection string the command says what is missing.
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(["plan", "staff", "--store", "postgres", "-n", &ns])
        .env("KUBECONFIG", &crate::support::cluster().kubeconfig)
        .env_remove("USERSYNC_POSTGRES_DSN")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("USERSYNC_POSTGRES_DSN"),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test]
async fn an_admins_preserve_is_kept_audited_and_applied_with_the_postgres_store() {
    let (db, dsn) = fresh_database("e2e_preserve").await;
    let w = World::without_operator("pg-preserve", Server::slapd(), json!({})).await;
    start_operator_with(&w.client, &w.ns.name, Backend::Postgres(db.clone()));
    let ns = w.ns.name.clone();
    w.add_user("hal", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let name: String =
        sqlx::query_scalar("SELECT name FROM users WHERE namespace = $1 AND username = 'hal'")
            .bind(&ns)
            .fetch_one(db.pool())
            .await
            .unwrap();

    let out = usersync_pg(&dsn, &ns, &["preserve", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = w.sync("staff").await;
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(
        stored(&db, &ns, "hal").await,
        Some(("Preserved".into(), Some("Manual".into())))
    );
    let list = usersync_pg(&dsn, &ns, &["users"]);
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(stdout(&list).contains("Manual"), "{}", stdout(&list));

    // A later run keeps it: sync never lifts an admin's preserve.
    let again = w.sync("staff").await;
    assert_eq!(again.reenabled, 0, "{again:?}");

    let out = usersync_pg(&dsn, &ns, &["unpreserve", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = w.sync("staff").await;
    assert_eq!(run.reenabled, 1, "{run:?}");

    let kinds: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT kind, reason FROM transitions WHERE namespace = $1 AND user_name = $2 ORDER BY id",
    )
    .bind(&ns)
    .bind(&name)
    .fetch_all(db.pool())
    .await
    .unwrap();
    let k = |kind: &str, reason: Option<&str>| (kind.to_string(), reason.map(str::to_string));
    assert_eq!(
        kinds,
        [
            k("import", None),
            k("manual-preserve", None),
            k("preserve", Some("Manual")),
            k("manual-unpreserve", None),
            k("reenable", None),
        ]
    );
    let out = usersync_pg(&dsn, &ns, &["preserve", "corp-nobody"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no user"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_database_it_cannot_reach_fails_the_run_with_a_message_naming_it() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dsn = format!("postgres://usersync:Never-Shown-pw@127.0.0.1:{port}/usersync");
    let db = usersync::store::postgres::Database::from_dsn(&dsn).unwrap();
    let w = World::without_operator("pg-down", Server::slapd(), json!({})).await;
    start_operator_with(&w.client, &w.ns.name, Backend::Postgres(db));
    w.add_user("ivy", false);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(run.result, RunResult::Failed, "{run:?}");
    let message = run.message.unwrap_or_default();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("Never-Shown"), "{message}");
    let mapping = Api::<DirectoryMapping>::namespaced(w.client.clone(), &w.ns.name)
        .get("staff")
        .await
        .unwrap();
    let synced = usersync::api::find_condition(&mapping.status.unwrap().conditions, "Synced")
        .cloned()
        .unwrap();
    assert_eq!(
        (synced.status.as_str(), synced.reason.as_str()),
        ("False", "RunFailed")
    );
}

/// Rule 5 with the external store: the users of a removed mapping are deleted at
/// their recorded deadline by the connector's retention pass, which the audit log
/// and the run history name.
#[tokio::test]
async fn users_of_a_removed_mapping_are_deleted_on_schedule_with_the_postgres_store() {
    let (db, _) = fresh_database("e2e_orphans").await;
    let w = World::without_operator(
        "pg-orphans",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "2h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    crate::support::start_operator_clocked(
        &w.client,
        &w.ns.name,
        Backend::Postgres(db.clone()),
        &w.clock,
    );
    let ns = w.ns.name.clone();
    let (east, west) = (w.sub_ou("east"), w.sub_ou("west"));
    w.add_user_in(&east, "pe1", false);
    w.add_user_in(&west, "pw1", false);
    w.mapping("east", &east, json!({})).await;
    w.mapping("west", &west, json!({})).await;
    let mappings: Api<DirectoryMapping> = Api::namespaced(w.client.clone(), &ns);
    mappings
        .delete("east", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    eventually(RUN_WAIT, "east to go", || async {
        mappings.get_opt("east").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(
        stored(&db, &ns, "pe1").await,
        Some(("Preserved".into(), Some("Unmapped".into())))
    );

    w.advance(std::time::Duration::from_secs(2 * 3600 + 1))
        .await;
    eventually(RUN_WAIT, "the orphan to be deleted", || async {
        (stored(&db, &ns, "pe1").await? == ("Deleted".to_string(), Some("RetentionExpired".into())))
            .then_some(())
    })
    .await;
    assert_eq!(
        stored(&db, &ns, "pw1").await,
        Some(("Active".into(), None)),
        "the other mapping's user is untouched"
    );
    // The transition is written as it happens; the run's result when the run ends.
    let finished = eventually(RUN_WAIT, "the deleting run to finish", || async {
        let row: (String, Option<String>, Option<i32>) = sqlx::query_as(
            "SELECT r.mapping, r.result, r.deleted FROM transitions t JOIN runs r \
             ON r.namespace = t.namespace AND r.id = t.run_id \
             WHERE t.namespace = $1 AND t.kind = 'delete'",
        )
        .bind(&ns)
        .fetch_one(db.pool())
        .await
        .ok()?;
        row.1.is_some().then_some(row)
    })
    .await;
    assert_eq!(
        (finished.0.as_str(), finished.1.as_deref(), finished.2),
        ("connector/corp", Some("Succeeded"), Some(1))
    );
}

/// Rule 8's order, where it shows: a directory object renamed away from a name and a
/// new object taking that name, in one run. The store's audit log records the
/// rename before the import, so at no point do two records hold the name (a
/// downstream application with unique user names would refuse the import first).
#[tokio::test]
async fn within_a_run_a_rename_is_applied_before_the_import_that_reuses_the_name() {
    let (db, _) = fresh_database("e2e_rename_order").await;
    let w = World::without_operator("pg-rename", Server::slapd(), json!({})).await;
    start_operator_with(&w.client, &w.ns.name, Backend::Postgres(db.clone()));
    let ns = w.ns.name.clone();
    w.add_user("reuse", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.rename("reuse", "reuse-old");
    w.add_user("reuse", false);
    let run = w.sync("staff").await;
    assert_eq!((run.updated, run.imported), (1, 1), "{run:?}");

    let log: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT t.kind, u.username FROM transitions t JOIN users u \
         ON u.namespace = t.namespace AND u.name = t.user_name \
         WHERE t.namespace = $1 AND t.run_id = $2 ORDER BY t.id",
    )
    .bind(&ns)
    .bind(&run.id)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        log,
        [
            ("update".to_string(), Some("reuse-old".to_string())),
            ("import".to_string(), Some("reuse".to_string())),
        ],
        "the rename lands first"
    );
}
