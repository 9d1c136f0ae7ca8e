//! The PostgreSQL store against a real server (tests/postgres.sh): the schema, runs
//! planned by the real planner and applied to the database, the audit log, the run
//! history, CSV imports, and the rules the database itself enforces.

#[path = "pg_support/mod.rs"]
mod pg_support;

use std::path::Path;
use std::time::Duration;

use jiff::{Timestamp, ToSpan};
use sqlx::Row;
use usersync::core::{
    self, ConnectorGate, DirectoryEntry, DirectoryView, MappingContext, OtherClaims, Plan,
    PlanInput, Policy, Reason, State, Transition, TransitionKind, UserFields, record_name,
};
use usersync::store::postgres::{Database, PostgresStore};
use usersync::store::{ApplyReport, RunInfo, UserStore};

use pg_support::fresh_database;

const CONNECTOR: &str = "corp";
const ACTOR: &str = "usersync/mapping/staff";

fn mapping() -> MappingContext {
    MappingContext {
        name: "staff".into(),
        connector: CONNECTOR.into(),
        priority: 100,
        profile: Some("staff".into()),
        auto_import: true,
    }
}

fn policy() -> Policy {
    Policy {
        auto_preserve_unmapped: true,
        auto_delete: true,
        delete_after: Duration::from_secs(60),
        max_preserve_percent: 100,
        max_deletes_per_run: 100,
        dry_run: false,
        delete_manually_preserved: false,
    }
}

fn gate(now: Timestamp) -> ConnectorGate {
    ConnectorGate {
        exists: true,
        connected: true,
        last_success: Some(now),
        stale_after: Duration::from_secs(3600),
        deletions_allowed: true,
    }
}

fn entry(anchor: &str, enabled: bool, email: &str) -> DirectoryEntry {
    DirectoryEntry {
        anchor: anchor.into(),
        enabled,
        username: Some(anchor.into()),
        email: Some(email.into()),
        display_name: Some(format!("User {anchor}")),
        user_principal_name: None,
        attributes: [("department".to_string(), "Sales".to_string())]
            .into_iter()
            .collect(),
    }
}

/// Whole seconds: the database keeps microseconds.
fn t0() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap()
}

/// The plan of a run over `view` from the store's snapshot.
async fn plan_for(store: &mut PostgresStore, view: &DirectoryView, now: Timestamp) -> Plan {
    plan_as(store, &mapping(), &OtherClaims::none(), view, now).await
}

/// The plan of a run of `mapping` over `view` from the store's snapshot, with what
/// the lookups of the connector's other mappings found.
async fn plan_as(
    store: &mut PostgresStore,
    mapping: &MappingContext,
    claims: &OtherClaims,
    view: &DirectoryView,
    now: Timestamp,
) -> Plan {
    let snapshot = store.snapshot().await.expect("snapshot");
    let input = PlanInput {
        snapshot: &snapshot,
        view,
        mapping,
        policy: &policy(),
        claims,
        gate: &gate(now),
        approval: None,
    };
    let plan = core::plan(&input, now);
    assert!(plan.failure.is_none(), "{:?}", plan.failure);
    plan
}

/// One run as the runner does it: snapshot, plan, record the run, apply.
async fn run(
    store: &mut PostgresStore,
    view: DirectoryView,
    now: Timestamp,
    run_id: &str,
) -> (Plan, ApplyReport) {
    let plan = plan_for(store, &view, now).await;
    let report = apply_as(store, &plan.transitions, now, run_id).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    (plan, report)
}

/// Apply `transitions` as the run `run_id` (recorded first), whatever comes of them.
async fn apply_as(
    store: &mut PostgresStore,
    transitions: &[Transition],
    now: Timestamp,
    run_id: &str,
) -> ApplyReport {
    store
        .run_started(run_id, "staff", "Schedule", now)
        .await
        .expect("run recorded");
    store
        .apply(
            transitions,
            RunInfo {
                run_id,
                now,
                policy: &policy(),
                actor: ACTOR,
                may_write: &|| true,
            },
        )
        .await
        .expect("apply")
}

/// kind, from_state, to_state, reason, detail, run_id
type AuditRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    String,
);

fn name_of(anchor: &str) -> String {
    record_name(CONNECTOR, anchor, 1)
}

/// The migrations the binary embeds, read from their directory.
async fn migrations() -> sqlx::migrate::Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/postgres/migrations");
    sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .expect("the migrations read")
}

/// A new database named after `test` with the first `n` migrations only (the
/// schema of an earlier version), its DSN and a connection to it.
async fn database_of_the_first(test: &str, n: usize) -> (String, Database) {
    let dsn = pg_support::empty_database(test).await;
    let earlier = sqlx::migrate::Migrator::with_migrations(
        migrations().await.iter().take(n).cloned().collect(),
    );
    let old = Database::from_dsn(&dsn).unwrap();
    earlier.run(old.pool()).await.expect("the earlier schema");
    (dsn, old)
}

#[tokio::test]
async fn the_schema_migrates_on_an_empty_database_and_again_on_restart() {
    let (db, dsn) = fresh_database("migrate").await;
    let again = Database::open(&dsn, None, Duration::ZERO).await;
    assert!(
        again.is_ok(),
        "a second start migrates nothing and succeeds"
    );
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "deliveries",
            "runs",
            "transitions",
            "users",
            "users_removed"
        ],
        "{tables:?}"
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(applied, migrations().await.iter().count() as i64);
}

#[tokio::test]
async fn import_into_postgres_and_a_no_change_resync_writes_nothing() {
    let (db, dsn) = fresh_database("import").await;
    let mut store = db.store("team-a");
    let now = t0();
    let view = || {
        DirectoryView::full([
            entry("a1", true, "ann@example.org"),
            entry("b2", true, "bo@example.org"),
            entry("c3", false, "cy@example.org"),
        ])
    };
    let (plan, report) = run(&mut store, view(), now, "run-1").await;
    assert_eq!(plan.counts.imported, 2, "the disabled user is not imported");
    assert_eq!(report.applied, 2);

    // Read by another process, which has no copy of its own yet.
    let stored = Database::from_dsn(&dsn)
        .unwrap()
        .store("team-a")
        .snapshot()
        .await
        .unwrap()
        .to_vec();
    let mut planned: Vec<_> = plan.transitions.iter().map(|t| t.record.clone()).collect();
    planned.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        stored, planned,
        "the store gives back exactly what was written, in the order of names"
    );

    let (again, report) = run(&mut store, view(), now + 1.hour(), "run-2").await;
    assert!(again.transitions.is_empty(), "{:?}", again.transitions);
    assert_eq!(report.writes, 0, "a no-change resync issues no write");
}

#[tokio::test]
async fn a_process_that_may_not_write_writes_nothing() {
    let (db, _) = fresh_database("fenced").await;
    let mut store = db.store("team-a");
    let now = t0();
    let view = DirectoryView::full([entry("a1", true, "ann@example.org")]);
    let plan = plan_for(&mut store, &view, now).await;
    // The Lease was lost (or the process is stopping) before the first batch.
    let report = store
        .apply(
            &plan.transitions,
            RunInfo {
                run_id: "run-fenced",
                now,
                policy: &policy(),
                actor: ACTOR,
                may_write: &|| false,
            },
        )
        .await
        .unwrap();
    assert_eq!((report.applied, report.writes), (0, 0), "{report:?}");
    assert_eq!(report.failed.len(), plan.transitions.len());
    assert!(report.failed[0].1.contains("Lease"), "{:?}", report.failed);
    assert!(
        store.snapshot().await.unwrap().is_empty(),
        "a fenced run wrote"
    );
}

#[tokio::test]
async fn every_transition_is_audited_with_who_what_when_why_and_which_run() {
    let (db, _) = fresh_database("audit").await;
    let mut store = db.store("team-a");
    let now = t0();
    run(
        &mut store,
        DirectoryView::full([entry("a1", true, "ann@example.org")]),
        now,
        "run-1",
    )
    .await;
    run(
        &mut store,
        DirectoryView::full([entry("a1", true, "ann.new@example.org")]),
        now + 1.minute(),
        "run-2",
    )
    .await;
    run(
        &mut store,
        DirectoryView::full([entry("a1", false, "ann.new@example.org")]),
        now + 2.minutes(),
        "run-3",
    )
    .await;
    // deleteAfter is one minute.
    let (plan, _) = run(
        &mut store,
        DirectoryView::full([entry("a1", false, "ann.new@example.org")]),
        now + 4.minutes(),
        "run-4",
    )
    .await;
    assert_eq!(plan.counts.deleted, 1);

    let rows = sqlx::query(
        "SELECT kind, from_state, to_state, reason, detail, run_id, actor, \
         extract(epoch FROM at)::int8 AS at FROM transitions \
         WHERE namespace = 'team-a' AND user_name = $1 ORDER BY id",
    )
    .bind(name_of("a1"))
    .fetch_all(db.pool())
    .await
    .unwrap();
    let log: Vec<AuditRow> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.get::<String, _>("actor"), ACTOR, "who");
            (
                r.get("kind"),
                r.get("from_state"),
                r.get("to_state"),
                r.get("reason"),
                r.get("detail"),
                r.get("run_id"),
            )
        })
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        log,
        vec![
            (
                "import".into(),
                None,
                "Active".into(),
                None,
                None,
                "run-1".into()
            ),
            (
                "update".into(),
                s("Active"),
                "Active".into(),
                None,
                s("email changed"),
                "run-2".into()
            ),
            (
                "preserve".into(),
                s("Active"),
                "Preserved".into(),
                s("DisabledInDirectory"),
                None,
                "run-3".into()
            ),
            (
                "delete".into(),
                s("Preserved"),
                "Deleted".into(),
                s("RetentionExpired"),
                None,
                "run-4".into()
            ),
        ]
    );
    let when: Vec<i64> = rows.iter().map(|r| r.get("at")).collect();
    let expected: Vec<i64> = [0, 60, 120, 240]
        .iter()
        .map(|d| now.as_second() + d)
        .collect();
    assert_eq!(when, expected, "when: the run's clock");

    let tombstone = &store.snapshot().await.unwrap()[0];
    assert_eq!(tombstone.state, State::Deleted);
    assert_eq!(tombstone.reason, Some(Reason::RetentionExpired));
}

#[tokio::test]
async fn run_history_keeps_each_run_with_its_outcome() {
    let (db, _) = fresh_database("runs").await;
    let store = db.store("team-a");
    let now = t0();
    store
        .run_started("run-1", "staff", "OnDemand", now)
        .await
        .unwrap();
    let open: Option<String> =
        sqlx::query_scalar("SELECT result FROM runs WHERE namespace = 'team-a' AND id = 'run-1'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(open, None, "a run in progress has no result yet");
    let summary: usersync::api::RunSummary = serde_json::from_value(serde_json::json!({
        "id": "run-1", "trigger": "OnDemand", "startTime": now.to_string(), "result": "Blocked",
        "read": "Full", "imported": 3, "preserved": 1, "message": "2 deletions withheld",
    }))
    .unwrap();
    store
        .run_finished(&summary, 7, now + 5.seconds())
        .await
        .unwrap();
    let row = sqlx::query(
        "SELECT mapping, trigger, result, read, imported, preserved, writes, message, \
         extract(epoch FROM finished_at - started_at)::int8 AS took FROM runs WHERE id = 'run-1'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("mapping"), "staff");
    assert_eq!(row.get::<String, _>("trigger"), "OnDemand");
    assert_eq!(row.get::<String, _>("result"), "Blocked");
    assert_eq!(row.get::<String, _>("read"), "Full");
    assert_eq!(row.get::<i32, _>("imported"), 3);
    assert_eq!(row.get::<i32, _>("preserved"), 1);
    assert_eq!(row.get::<i64, _>("writes"), 7);
    assert_eq!(row.get::<String, _>("message"), "2 deletions withheld");
    assert_eq!(row.get::<i64, _>("took"), 5);
}

/// A transition the planner would never make, to show the database refuses it too.
fn forced_update(name: &str, now: Timestamp) -> Transition {
    Transition {
        kind: TransitionKind::Update,
        record: usersync::core::UserRecord {
            name: name.into(),
            origin: usersync::core::Origin::Directory,
            connector: CONNECTOR.into(),
            anchor: "x9".into(),
            mapping: Some("staff".into()),
            fields: UserFields {
                username: Some("intruder".into()),
                ..Default::default()
            },
            manual_preserve: false,
            state: State::Active,
            reason: None,
            preserved_at: None,
            deleted_at: Some(now),
            delete_after_time: None,
        },
    }
}

/// The forced update of `name`, from a snapshot that saw the row as it is: what
/// refuses it is the database's own rule, not a changed row.
async fn apply_forced(store: &mut PostgresStore, name: &str, now: Timestamp) -> ApplyReport {
    store.snapshot().await.unwrap();
    apply_as(store, &[forced_update(name, now)], now, "run-x").await
}

#[tokio::test]
async fn manual_and_csv_users_are_never_overwritten_by_a_run() {
    let (db, _) = fresh_database("origin").await;
    let mut store = db.store("team-a");
    for (name, origin) in [("admin-made", "Manual"), ("csv-ann", "CSV")] {
        sqlx::query(
            "INSERT INTO users (namespace, name, origin, username) VALUES ('team-a', $1, $2, 'mine')",
        )
        .bind(name)
        .bind(origin)
        .execute(db.pool())
        .await
        .unwrap();
        let report = apply_forced(&mut store, name, t0()).await;
        assert_eq!(report.applied, 0, "{origin}: {report:?}");
        assert_eq!(report.failed.len(), 1, "{origin}: the refusal is reported");
        let row = sqlx::query("SELECT origin, username FROM users WHERE name = $1")
            .bind(name)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("origin"), origin);
        assert_eq!(row.get::<String, _>("username"), "mine");
    }
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM transitions")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(audited, 0, "a refused write leaves no audit row");
}

#[tokio::test]
async fn deleted_is_final_in_the_store() {
    let (db, _) = fresh_database("final").await;
    let mut store = db.store("team-a");
    sqlx::query(
        "INSERT INTO users (namespace, name, origin, connector, anchor, username, state, reason, deleted_at) \
         VALUES ('team-a', 'corp-gone', 'Directory', 'corp', 'x9', 'gone', 'Deleted', 'RetentionExpired', now())",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let report = apply_forced(&mut store, "corp-gone", t0()).await;
    assert_eq!((report.applied, report.failed.len()), (0, 1), "{report:?}");
    let state: String = sqlx::query_scalar("SELECT state FROM users WHERE name = 'corp-gone'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(state, "Deleted");
}

#[tokio::test]
async fn manual_preserve_set_by_an_admin_is_kept_and_preserves_the_user() {
    let (db, _) = fresh_database("manual").await;
    let mut store = db.store("team-a");
    let now = t0();
    let view = || DirectoryView::full([entry("a1", true, "ann@example.org")]);
    run(&mut store, view(), now, "run-1").await;
    sqlx::query("UPDATE users SET manual_preserve = true WHERE name = $1")
        .bind(name_of("a1"))
        .execute(db.pool())
        .await
        .unwrap();
    let (plan, _) = run(&mut store, view(), now + 1.minute(), "run-2").await;
    assert_eq!(plan.counts.preserved, 1, "{:?}", plan.transitions);
    // Later runs (within the retention of one minute) rewrite the record but never
    // the admin's flag, and never lift it.
    let view = || DirectoryView::full([entry("a1", true, "ann.other@example.org")]);
    run(&mut store, view(), now + 90.seconds(), "run-3").await;
    let record = store.snapshot().await.unwrap()[0].clone();
    assert!(record.manual_preserve);
    assert_eq!(record.state, State::Preserved);
    assert_eq!(record.reason, Some(Reason::Manual));
}

#[tokio::test]
async fn namespaces_are_kept_apart() {
    let (db, _) = fresh_database("namespaces").await;
    let mut a = db.store("team-a");
    run(
        &mut a,
        DirectoryView::full([entry("a1", true, "ann@example.org")]),
        t0(),
        "run-1",
    )
    .await;
    assert_eq!(a.snapshot().await.unwrap().len(), 1);
    assert!(db.store("team-b").snapshot().await.unwrap().is_empty());
    assert!(
        !db.store("team-b")
            .owns_live_users(CONNECTOR, "staff")
            .await
            .unwrap()
    );
    assert!(a.owns_live_users(CONNECTOR, "staff").await.unwrap());
}

fn csv_user(name: &str) -> (String, UserFields) {
    (
        name.to_string(),
        UserFields {
            username: Some(name.trim_start_matches("csv-").to_string()),
            email: Some(format!("{name}@example.org")),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn a_csv_import_is_all_or_nothing_and_audited() {
    let (db, _) = fresh_database("csv").await;
    let mut store = db.store("team-a");
    run(
        &mut store,
        DirectoryView::full([entry("a1", true, "ann@example.org")]),
        t0(),
        "run-1",
    )
    .await;
    let directory_name = name_of("a1");

    // A row that names a directory user refuses the whole file.
    let users = [
        csv_user("csv-ann"),
        (directory_name.clone(), csv_user("x").1),
    ];
    let refused = store
        .import_csv(&users, "usersync import-csv (alice)", false)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 1, "the row is named");
    assert!(
        refused[0].1.contains("origin Directory"),
        "{}",
        refused[0].1
    );
    let csv_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE origin = 'CSV'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(csv_rows, 0, "nothing was half-applied");

    // A dry run checks and writes nothing; then the import, then the same file again.
    let users = [csv_user("csv-ann"), csv_user("csv-bo")];
    let dry = store
        .import_csv(&users, "usersync import-csv (alice)", true)
        .await;
    assert_eq!(dry.unwrap().unwrap().created, 2);
    let done = store
        .import_csv(&users, "usersync import-csv (alice)", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.created, done.updated), (2, 0));
    let again = store
        .import_csv(&users, "usersync import-csv (alice)", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.created, again.updated), (0, 2));
    let version: i64 = sqlx::query_scalar("SELECT version FROM users WHERE name = 'csv-ann'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(version, 2, "a CSV update counts as a write of the row");
    let log: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, actor FROM transitions WHERE user_name = 'csv-ann' ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        log,
        [
            (
                "csv-import".to_string(),
                "usersync import-csv (alice)".to_string()
            ),
            (
                "csv-update".to_string(),
                "usersync import-csv (alice)".to_string()
            ),
        ]
    );
    let records = store.snapshot().await.unwrap();
    let ann = records.iter().find(|r| r.name == "csv-ann").unwrap();
    assert_eq!(ann.origin, usersync::core::Origin::Csv);
    assert_eq!(ann.state, State::Active);
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_without_the_password() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dsn = format!("postgres://usersync:hunter2-Secret@127.0.0.1:{port}/usersync");
    let err = Database::open(&dsn, None, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("PostgreSQL"), "{err}");
    assert!(
        err.to_lowercase().contains("connect")
            || err.contains("refused")
            || err.contains("timed out"),
        "the message says the database could not be reached: {err}"
    );
}

#[tokio::test]
async fn runs_cut_off_by_a_stop_are_closed_as_failed() {
    let (db, _) = fresh_database("interrupted").await;
    let store = db.store("team-a");
    let now = t0();
    store
        .run_started("run-1", "staff", "Schedule", now)
        .await
        .unwrap();
    store
        .run_started("run-2", "other", "Schedule", now)
        .await
        .unwrap();
    store.close_interrupted_runs("staff").await.unwrap();
    let rows: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT id, result, message FROM runs ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(rows[0].0, "run-1");
    assert_eq!(rows[0].1.as_deref(), Some("Failed"));
    assert!(rows[0].2.as_deref().unwrap().contains("interrupted"));
    assert_eq!(rows[1].1, None, "another mapping's run is left alone");
}

#[tokio::test]
async fn tls_with_verify_full_trusts_the_given_ca_and_nothing_else() {
    let (_, dsn) = fresh_database("tls").await;
    let verify = format!("{dsn}?sslmode=verify-full");
    let db = Database::open(&verify, Some(pg_support::server_ca()), Duration::ZERO)
        .await
        .expect("verify-full with the server's CA connects");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");

    let err = Database::open(&verify, None, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "a certificate from an unknown CA is refused with a TLS error: {err}"
    );
    let missing = Database::open(
        &verify,
        Some(Path::new("/nonexistent/ca.crt")),
        Duration::ZERO,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(missing.contains("/nonexistent/ca.crt"), "{missing}");
}

// No stale write (DESIGN section 3): two runs that read the registry at the same
// time each plan from their own snapshot; whatever one writes makes the other's
// plan of that user stale, and its write does not land.

fn sales() -> MappingContext {
    MappingContext {
        name: "sales".into(),
        priority: 50,
        profile: Some("sales".into()),
        ..mapping()
    }
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.transitions.iter().map(|t| t.kind.label()).collect()
}

/// A row as a fresh snapshot reads it, with its version and last writing run.
async fn stored(db: &Database, name: &str) -> (usersync::core::UserRecord, i64, Option<String>) {
    let record = db
        .store("team-a")
        .snapshot()
        .await
        .unwrap()
        .iter()
        .find(|r| r.name == name)
        .cloned()
        .expect("the row exists");
    let (version, run): (i64, Option<String>) =
        sqlx::query_as("SELECT version, last_sync_run FROM users WHERE name = $1")
            .bind(name)
            .fetch_one(db.pool())
            .await
            .unwrap();
    (record, version, run)
}

/// The audit log: user, kind and run of every row, in order.
async fn audit_log(db: &Database) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT user_name, kind, run_id FROM transitions ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

/// The directory with the one user a1, enabled, with `email`.
fn ann(email: &str) -> DirectoryView {
    DirectoryView::full([entry("a1", true, email)])
}

/// A fresh database where run-1 imported a1 (ann@example.org) at the time returned.
async fn ann_imported(test: &str) -> (Database, Timestamp) {
    let (db, _) = fresh_database(test).await;
    let now = t0();
    run(
        &mut db.store("team-a"),
        ann("ann@example.org"),
        now,
        "run-1",
    )
    .await;
    (db, now)
}

/// A fresh database where run-1 imported the users of `view(true)` and run-2, a
/// minute later, preserved them (`view(false)`: disabled); the time returned is
/// past their deadline (deleteAfter is one minute).
async fn preserved_and_due(
    test: &str,
    view: impl Fn(bool) -> DirectoryView,
) -> (Database, Timestamp) {
    let (db, _) = fresh_database(test).await;
    let now = t0();
    run(&mut db.store("team-a"), view(true), now, "run-1").await;
    let (plan, _) = run(
        &mut db.store("team-a"),
        view(false),
        now + 1.minute(),
        "run-2",
    )
    .await;
    assert!(kinds(&plan).iter().all(|k| *k == "preserve"), "{plan:?}");
    (db, now + 3.minutes())
}

/// Nothing was written and every write of `name` is reported as a conflict.
fn assert_conflict(report: &ApplyReport, name: &str) {
    assert_eq!(report.applied, 0, "{report:?}");
    assert!(
        report.failed.is_empty(),
        "a changed row is a conflict to plan again, not a failure: {report:?}"
    );
    assert!(
        !report.conflicts.is_empty() && report.conflicts.iter().all(|n| n == name),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_stale_update_does_not_undo_a_preserve_another_run_made() {
    let (db, now) = ann_imported("stale_update").await;
    let name = name_of("a1");

    // Both read the registry: one run sees a new email, the other no longer sees
    // the user and preserves it first.
    let mut updating = db.store("team-a");
    let stale = plan_for(&mut updating, &ann("ann.new@example.org"), now + 1.minute()).await;
    assert_eq!(kinds(&stale), ["update"]);
    let (plan, _) = run(
        &mut db.store("team-a"),
        DirectoryView::full([]),
        now + 1.minute(),
        "run-2",
    )
    .await;
    assert_eq!(kinds(&plan), ["preserve"]);
    let before = (stored(&db, &name).await, audit_log(&db).await);
    assert_eq!(before.0.0.state, State::Preserved);

    let report = apply_as(&mut updating, &stale.transitions, now + 1.minute(), "run-3").await;
    assert_conflict(&report, &name);
    assert_eq!(
        (stored(&db, &name).await, audit_log(&db).await),
        before,
        "the stale write changed neither the row nor the log"
    );

    // Planned again from the store as it is now: the user is matched and enabled,
    // so the run re-enables it, writing the row twice (its second write expects
    // the first).
    let (plan, report) = run(
        &mut updating,
        ann("ann.new@example.org"),
        now + 2.minutes(),
        "run-4",
    )
    .await;
    assert_eq!(kinds(&plan), ["update", "reenable"]);
    assert_eq!(report.applied, 2);
    let (after, version, _) = stored(&db, &name).await;
    assert_eq!(after.state, State::Active);
    assert_eq!(after.fields.email.as_deref(), Some("ann.new@example.org"));
    assert_eq!(version, before.0.1 + 2);
}

#[tokio::test]
async fn a_stale_reenable_or_transfer_never_revives_a_tombstone_another_run_made() {
    let name = name_of("a1");
    let view = |enabled| DirectoryView::full([entry("a1", enabled, "ann@example.org")]);
    let (db, later) = preserved_and_due("stale_tombstone", view).await;

    // Planned from the registry before the delete: the user enabled again, for
    // this mapping, and for "sales", which wins it by priority.
    let mut reenabling = db.store("team-a");
    let reenable = plan_for(&mut reenabling, &view(true), later).await;
    assert_eq!(kinds(&reenable), ["reenable"]);
    let mut transferring = db.store("team-a");
    let claims = || OtherClaims::none().with("a1", "staff", 100);
    let transfer = plan_as(&mut transferring, &sales(), &claims(), &view(true), later).await;
    assert_eq!(kinds(&transfer), ["transfer", "reenable"]);
    let (plan, _) = run(&mut db.store("team-a"), view(false), later, "run-3").await;
    assert_eq!(kinds(&plan), ["delete"]);
    let before = (stored(&db, &name).await, audit_log(&db).await);

    let report = apply_as(&mut reenabling, &reenable.transitions, later, "run-4").await;
    assert_conflict(&report, &name);
    let report = apply_as(&mut transferring, &transfer.transitions, later, "run-5").await;
    assert_conflict(&report, &name);
    assert_eq!(
        (stored(&db, &name).await, audit_log(&db).await),
        before,
        "the tombstone and the log are as the delete left them"
    );

    // Planned again, the directory object returns as a new record (rule 6).
    let plan = plan_as(
        &mut transferring,
        &sales(),
        &claims(),
        &view(true),
        later + 1.minute(),
    )
    .await;
    assert_eq!(kinds(&plan), ["import"]);
    let report = apply_as(&mut transferring, &plan.transitions, later, "run-6").await;
    assert_eq!(
        (report.applied, report.conflicts.len()),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(stored(&db, &name).await, before.0, "the tombstone stays");
    let new = &plan.transitions[0].record.name;
    let follows: Option<String> =
        sqlx::query_scalar("SELECT previous_record FROM users WHERE name = $1")
            .bind(new)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(follows.as_deref(), Some(name.as_str()));
}

#[tokio::test]
async fn two_runs_importing_one_user_write_it_once() {
    let (db, _) = fresh_database("import_race").await;
    let now = t0();
    let name = name_of("a1");
    let view = || DirectoryView::full([entry("a1", true, "ann@example.org")]);
    // Two mappings of the connector read an empty registry and both import.
    let mut staff = db.store("team-a");
    let first = plan_for(&mut staff, &view(), now).await;
    let mut other = db.store("team-a");
    let second = plan_as(&mut other, &sales(), &OtherClaims::none(), &view(), now).await;
    assert_eq!(
        (kinds(&first), kinds(&second)),
        (vec!["import"], vec!["import"])
    );

    let report = apply_as(&mut staff, &first.transitions, now, "run-staff").await;
    assert_eq!(report.applied, 1, "{report:?}");
    let before = (stored(&db, &name).await, audit_log(&db).await);
    let report = apply_as(&mut other, &second.transitions, now, "run-sales").await;
    assert_conflict(&report, &name);
    assert_eq!(
        (stored(&db, &name).await, audit_log(&db).await),
        before,
        "the first import stands, logged once"
    );
    assert_eq!(before.0.0.mapping.as_deref(), Some("staff"));
    assert_eq!(before.0.2.as_deref(), Some("run-staff"));

    // Planned again, the mapping that wins by priority takes the user over.
    let claims = OtherClaims::none().with("a1", "staff", 100);
    let plan = plan_as(&mut other, &sales(), &claims, &view(), now).await;
    assert_eq!(kinds(&plan), ["transfer"]);
    let report = apply_as(&mut other, &plan.transitions, now, "run-sales").await;
    assert_eq!(
        (report.applied, report.conflicts.len()),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(stored(&db, &name).await.0.mapping.as_deref(), Some("sales"));
}

#[tokio::test]
async fn an_admins_preserve_after_the_snapshot_makes_the_runs_write_conflict() {
    let (db, now) = ann_imported("stale_admin").await;
    let name = name_of("a1");

    let mut store = db.store("team-a");
    let stale = plan_for(&mut store, &ann("ann.new@example.org"), now + 1.minute()).await;
    assert_eq!(kinds(&stale), ["update"]);
    db.store("team-a")
        .set_manual_preserve(&name, true, "usersync preserve (alice)")
        .await
        .unwrap();
    let before = (stored(&db, &name).await, audit_log(&db).await);
    let report = apply_as(&mut store, &stale.transitions, now + 1.minute(), "run-2").await;
    assert_conflict(&report, &name);
    assert_eq!((stored(&db, &name).await, audit_log(&db).await), before);
    assert!(before.0.0.manual_preserve);
    assert_eq!(before.0.0.fields.email.as_deref(), Some("ann@example.org"));

    // Planned again, the run sees the admin's hold and preserves the user.
    let (plan, _) = run(
        &mut store,
        ann("ann.new@example.org"),
        now + 2.minutes(),
        "run-3",
    )
    .await;
    assert_eq!(kinds(&plan), ["update", "preserve"]);
    let after = stored(&db, &name).await.0;
    assert_eq!(
        (after.state, after.reason),
        (State::Preserved, Some(Reason::Manual))
    );
}

#[tokio::test]
async fn a_change_made_by_hand_makes_a_plan_made_before_it_stale() {
    let (db, now) = ann_imported("stale_hand").await;
    let name = name_of("a1");
    let mut store = db.store("team-a");
    let stale = plan_for(&mut store, &ann("ann.new@example.org"), now + 1.minute()).await;
    // An admin's UPDATE that does not know about `version`.
    sqlx::query("UPDATE users SET display_name = 'Ann (by hand)' WHERE name = $1")
        .bind(&name)
        .execute(db.pool())
        .await
        .unwrap();
    let report = apply_as(&mut store, &stale.transitions, now + 1.minute(), "run-2").await;
    assert_conflict(&report, &name);
    let (record, version, _) = stored(&db, &name).await;
    assert_eq!(record.fields.display_name.as_deref(), Some("Ann (by hand)"));
    assert_eq!(record.fields.email.as_deref(), Some("ann@example.org"));
    assert_eq!(version, 2, "the hand edit counted as a write");
}

#[tokio::test]
async fn the_retention_pass_deletes_only_users_as_it_read_them() {
    let view = |enabled| {
        DirectoryView::full([
            entry("a1", enabled, "ann@example.org"),
            entry("b2", enabled, "bo@example.org"),
        ])
    };
    // Then the mapping is removed.
    let (db, later) = preserved_and_due("stale_retention", view).await;

    // The connector's pass reads the preserved users; an admin then holds one.
    let mut pass = db.store("team-a");
    let preserved = pass.preserved_of(CONNECTOR).await.unwrap();
    let due = core::orphan_deletions(&preserved, CONNECTOR, &Default::default(), later, 100);
    assert_eq!(due.len(), 2);
    db.store("team-a")
        .set_manual_preserve(&name_of("b2"), true, "usersync preserve (alice)")
        .await
        .unwrap();
    let before = audit_log(&db).await;
    pass.run_started("retention-1", "staff", "Schedule", later)
        .await
        .unwrap();
    let report = pass
        .apply(
            &due,
            RunInfo {
                run_id: "retention-1",
                now: later,
                policy: &policy(),
                actor: "usersync/connector/corp",
                may_write: &|| true,
            },
        )
        .await
        .unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.conflicts, [name_of("b2")]);
    assert_eq!(stored(&db, &name_of("a1")).await.0.state, State::Deleted);
    let held = stored(&db, &name_of("b2")).await.0;
    assert_eq!((held.state, held.manual_preserve), (State::Preserved, true));
    let log = audit_log(&db).await;
    assert_eq!(log.len(), before.len() + 1, "only the delete is logged");
    assert_eq!(log.last().unwrap().0, name_of("a1"));
}

#[tokio::test]
async fn a_database_of_the_first_schema_upgrades_and_then_writes_conditionally() {
    let (dsn, old) = database_of_the_first("upgrade", 1).await;
    let name = name_of("a1");
    sqlx::query(
        "INSERT INTO users (namespace, name, origin, connector, anchor, mapping, username, \
         email, display_name, profile, attributes) VALUES ('team-a', $1, 'Directory', 'corp', \
         'a1', 'staff', 'a1', 'ann@example.org', 'User a1', 'staff', '{\"department\": \"Sales\"}')",
    )
    .bind(&name)
    .execute(old.pool())
    .await
    .unwrap();
    old.pool().close().await;

    let db = Database::open(&dsn, None, Duration::ZERO)
        .await
        .expect("the schema upgrades");
    let (record, version, _) = stored(&db, &name).await;
    assert_eq!(
        (record.state, version),
        (State::Active, 1),
        "the row is kept"
    );

    let now = t0();
    let mut stale = db.store("team-a");
    let plan = plan_for(&mut stale, &ann("ann.new@example.org"), now).await;
    assert_eq!(kinds(&plan), ["update"]);
    let (_, report) = run(
        &mut db.store("team-a"),
        ann("ann.b@example.org"),
        now,
        "run-1",
    )
    .await;
    assert_eq!(report.applied, 1);
    let report = apply_as(&mut stale, &plan.transitions, now, "run-2").await;
    assert_conflict(&report, &name);
    let (record, version, _) = stored(&db, &name).await;
    assert_eq!(record.fields.email.as_deref(), Some("ann.b@example.org"));
    assert_eq!(version, 2);
}

/// A target's ledger survives in the `deliveries` table, per namespace and target,
/// and outlives its user's row; forgetting an entry removes only that entry. A
/// target object created again under the same name (another uid) does not get the
/// rows of the earlier one as its ledger.
#[tokio::test]
async fn a_targets_ledger_round_trips_and_outlives_the_user_row() {
    use usersync::delivery::plan::{Delivered, DeliveredState};
    use usersync::store::Backend;
    use usersync::store::ledger::LedgerOf;
    let (db, _) = fresh_database("ledger").await;
    let mut store = db.store("team-a");
    let now = t0();
    run(
        &mut store,
        DirectoryView::full([entry("a1", true, "ann@example.org")]),
        now,
        "run-1",
    )
    .await;
    let name = record_name(CONNECTOR, "a1", 1);
    let delivered = Delivered {
        remote_id: Some("remote-1".into()),
        state: Some(DeliveredState::Provisioned),
        digest: "d1".into(),
        time: Some(now),
        last_error: Some("scimType uniqueness: taken".into()),
        failures: 2,
        retry_after: Some(now + 30.seconds()),
        approved: Some("cycle-7".into()),
    };
    let backend = Backend::Postgres(db.clone());
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let mut store = backend.open(&client, "team-a");
    let app = LedgerOf {
        target: "app",
        uid: "uid-1",
        created: Some(now),
    };
    let writes = store
        .record_deliveries(
            app,
            &[
                (name.clone(), Some(delivered.clone())),
                ("gone-user".into(), Some(delivered.clone())),
            ],
        )
        .await
        .unwrap();
    assert_eq!(writes, 1, "one statement for the batch");
    let view = store.delivery_view(app).await.unwrap();
    assert_eq!(view.records.len(), 1);
    assert_eq!(
        view.records[0]
            .1
            .get("usersync.dev/mapping")
            .map(String::as_str),
        Some("staff")
    );
    assert_eq!(view.ledger.get(&name), Some(&delivered));
    assert!(
        view.ledger.contains_key("gone-user"),
        "an entry outlives its user's row"
    );
    assert!(
        store
            .delivery_view(LedgerOf {
                target: "other-app",
                uid: "uid-1",
                created: Some(now),
            })
            .await
            .unwrap()
            .ledger
            .is_empty()
    );
    assert!(
        db.store("team-b")
            .deliveries_of(app)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    // An update overwrites; None forgets.
    let disabled = Delivered {
        state: Some(DeliveredState::Disabled),
        failures: 0,
        last_error: None,
        retry_after: None,
        ..delivered
    };
    store
        .record_deliveries(
            app,
            &[
                (name.clone(), Some(disabled.clone())),
                ("gone-user".into(), None),
            ],
        )
        .await
        .unwrap();
    let ledger = store.delivery_view(app).await.unwrap().ledger;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger.get(&name), Some(&disabled));
    // The target deleted and created again: a new uid, an empty ledger, and the
    // earlier object's rows named for forgetting.
    let again = LedgerOf {
        target: "app",
        uid: "uid-2",
        created: Some(now),
    };
    let view = store.delivery_view(again).await.unwrap();
    assert!(view.ledger.is_empty(), "{:?}", view.ledger);
    assert_eq!(view.foreign, std::slice::from_ref(&name));
    store
        .record_deliveries(again, &[(name.clone(), Some(disabled.clone()))])
        .await
        .unwrap();
    let view = store.delivery_view(again).await.unwrap();
    assert_eq!(view.ledger.get(&name), Some(&disabled));
    assert!(view.foreign.is_empty());
    assert!(store.delivery_view(app).await.unwrap().ledger.is_empty());
}

/// The namespace as a process that has just started reads it: every row.
async fn cold_read(dsn: &str) -> Vec<usersync::core::UserRecord> {
    Database::from_dsn(dsn)
        .unwrap()
        .store("team-a")
        .snapshot()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_warm_copy_sees_what_other_processes_and_admins_wrote_since() {
    let (db, dsn) = fresh_database("warm_others").await;
    let now = t0();
    let everyone = |email: &str| {
        DirectoryView::full([
            entry("a1", true, email),
            entry("b2", true, "bo@example.org"),
            entry("c3", true, "cy@example.org"),
            entry("d4", true, "di@example.org"),
        ])
    };
    let mut mine = db.store("team-a");
    run(&mut mine, everyone("ann@example.org"), now, "run-1").await;
    assert_eq!(mine.snapshot().await.unwrap().len(), 4);

    // Another replica's run, an admin's `usersync preserve`, edits and a removal
    // by hand, and a Manual user inserted by hand.
    let other = Database::from_dsn(&dsn).unwrap();
    let (plan, _) = run(
        &mut other.store("team-a"),
        everyone("ann.new@example.org"),
        now + 1.minute(),
        "run-2",
    )
    .await;
    assert_eq!(kinds(&plan), ["update"]);
    other
        .store("team-a")
        .set_manual_preserve(&name_of("b2"), true, "usersync preserve (alice)")
        .await
        .unwrap();
    for edit in [
        "UPDATE users SET display_name = 'Cy (by hand)' WHERE name = $1",
        "DELETE FROM users WHERE name = $2",
    ] {
        sqlx::query(edit)
            .bind(name_of("c3"))
            .bind(name_of("d4"))
            .execute(other.pool())
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO users (namespace, name, origin, username) VALUES ('team-a', 'eve', 'Manual', 'eve')",
    )
    .execute(other.pool())
    .await
    .unwrap();

    let warm = mine.snapshot().await.unwrap().to_vec();
    assert_eq!(
        warm,
        cold_read(&dsn).await,
        "the copy is what the database holds"
    );
    let user = |name: &str| warm.iter().find(|r| r.name == name);
    assert_eq!(warm.len(), 4, "{warm:?}");
    assert!(user(&name_of("d4")).is_none(), "d4 is gone");
    assert!(user("eve").is_some());
    let a1 = user(&name_of("a1")).unwrap();
    assert_eq!(a1.fields.email.as_deref(), Some("ann.new@example.org"));
    assert!(user(&name_of("b2")).unwrap().manual_preserve);
    let c3 = user(&name_of("c3")).unwrap();
    assert_eq!(c3.fields.display_name.as_deref(), Some("Cy (by hand)"));

    // Planned from the copy, the run acts on all of it and its writes land.
    let (plan, report) = run(
        &mut mine,
        everyone("ann.new@example.org"),
        now + 2.minutes(),
        "run-3",
    )
    .await;
    let mut planned: Vec<(&str, &str)> = plan
        .transitions
        .iter()
        .map(|t| (t.record.anchor.as_str(), t.kind.label()))
        .collect();
    planned.sort();
    assert_eq!(
        planned,
        [("b2", "preserve"), ("c3", "update"), ("d4", "import")],
        "{plan:?}"
    );
    assert_eq!(report.applied, 3);
    assert_eq!(
        mine.snapshot().await.unwrap().to_vec(),
        cold_read(&dsn).await
    );
}

#[tokio::test]
async fn a_warm_copy_holds_what_its_own_runs_wrote_as_a_read_gives_it_back() {
    let (db, dsn) = fresh_database("warm_own").await;
    let mut store = db.store("team-a");
    let now = t0() + 123_456.microseconds() + 789.nanoseconds();
    let view = |enabled: bool, email: &str| {
        DirectoryView::full([
            entry("a1", enabled, email),
            entry("b2", true, "bo@example.org"),
        ])
    };
    let steps = [
        (view(true, "ann@example.org"), now, "import"),
        (
            view(true, "ann.new@example.org"),
            now + 10.seconds(),
            "update",
        ),
        (
            view(false, "ann.new@example.org"),
            now + 20.seconds(),
            "preserve",
        ),
        (
            view(true, "ann.new@example.org"),
            now + 30.seconds(),
            "reenable",
        ),
        (
            view(false, "ann.new@example.org"),
            now + 40.seconds(),
            "preserve",
        ),
        (
            view(false, "ann.new@example.org"),
            now + 3.minutes(),
            "delete",
        ),
        (
            view(true, "ann.new@example.org"),
            now + 4.minutes(),
            "import",
        ),
    ];
    for (i, (view, at, kind)) in steps.into_iter().enumerate() {
        let (plan, _) = run(&mut store, view, at, &format!("run-{i}")).await;
        assert!(kinds(&plan).contains(&kind), "step {i}: {plan:?}");
        assert_eq!(
            store.snapshot().await.unwrap().to_vec(),
            cold_read(&dsn).await,
            "after step {i} ({kind})"
        );
    }
    // An admin's hold, then a run that writes the held user: the copy keeps it.
    store
        .set_manual_preserve(&name_of("b2"), true, "usersync preserve (alice)")
        .await
        .unwrap();
    let (plan, _) = run(
        &mut store,
        view(true, "ann.new@example.org"),
        now + 5.minutes(),
        "run-hold",
    )
    .await;
    assert_eq!(kinds(&plan), ["preserve"]);
    let warm = store.snapshot().await.unwrap().to_vec();
    assert_eq!(warm, cold_read(&dsn).await);
    assert!(
        warm.iter()
            .any(|r| r.manual_preserve && r.state == State::Preserved)
    );
}

#[tokio::test]
async fn an_import_of_many_batches_written_side_by_side_lands_each_user_once() {
    let (db, dsn) = fresh_database("many_batches").await;
    let mut store = db.store("team-a");
    let now = t0();
    let view = DirectoryView::full(
        (0..4500).map(|i| entry(&format!("u{i:05}"), true, &format!("u{i}@example.org"))),
    );
    let (plan, report) = run(&mut store, view, now, "run-1").await;
    assert_eq!(plan.counts.imported, 4500);
    assert_eq!((report.applied, report.writes), (4500, 5), "{report:?}");
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT user_name) FROM transitions WHERE kind = 'import' AND run_id = 'run-1'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(logged, 4500);
    let warm = store.snapshot().await.unwrap().to_vec();
    assert_eq!(warm.len(), 4500);
    assert_eq!(warm, cold_read(&dsn).await);
}

/// Rows of a target's ledger as the schema before target uids wrote them (no
/// uid) are the ledger of the target object that exists at the upgrade when they
/// changed after it was created: it keeps its accounts' ids, its pending disables
/// and its leavers' rows. A row older than the object is an earlier object's.
#[tokio::test]
async fn ledger_rows_written_before_target_uids_stay_the_current_targets_after_an_upgrade() {
    use usersync::delivery::plan::DeliveredState;
    use usersync::store::Backend;
    use usersync::store::ledger::{CLOCK_SKEW, LedgerOf};
    let (dsn, old) = database_of_the_first("ledger-upgrade", 3).await;
    let now = t0();
    let created = now - 720.hours();
    for (name, remote, state, changed) in [
        ("leaver", "remote-1", "Provisioned", now - 1.hours()),
        ("kept", "remote-2", "Disabled", created + 24.hours()),
        ("skewed", "remote-3", "Provisioned", created - 1.minutes()),
        (
            "earlier",
            "remote-4",
            "Provisioned",
            created - CLOCK_SKEW - 1.minutes(),
        ),
    ] {
        sqlx::query(
            "INSERT INTO deliveries (namespace, target, name, remote_id, state, digest, \
             changed_at) VALUES ('team-a', 'app', $1, $2, $3, 'd1', to_timestamp($4))",
        )
        .bind(name)
        .bind(remote)
        .bind(state)
        .bind(changed.as_second() as f64)
        .execute(old.pool())
        .await
        .unwrap();
    }
    old.pool().close().await;

    let db = Database::open(&dsn, None, Duration::ZERO)
        .await
        .expect("the schema upgrades");
    let backend = Backend::Postgres(db.clone());
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let mut store = backend.open(&client, "team-a");
    let app = LedgerOf {
        target: "app",
        uid: "uid-1",
        created: Some(created),
    };
    let view = store.delivery_view(app).await.unwrap();
    let mut owned: Vec<_> = view
        .ledger
        .iter()
        .map(|(n, d)| (n.as_str(), d.remote_id.as_deref(), d.state))
        .collect();
    owned.sort_by_key(|(n, _, _)| *n);
    assert_eq!(
        owned,
        [
            ("kept", Some("remote-2"), Some(DeliveredState::Disabled)),
            (
                "leaver",
                Some("remote-1"),
                Some(DeliveredState::Provisioned)
            ),
            (
                "skewed",
                Some("remote-3"),
                Some(DeliveredState::Provisioned)
            ),
        ]
    );
    assert_eq!(view.foreign, ["earlier"]);

    // The next write of an entry names the object's uid: an object created
    // later under the same name does not take it for its own.
    let leaver = view.ledger["leaver"].clone();
    store
        .record_deliveries(app, &[("leaver".into(), Some(leaver.clone()))])
        .await
        .unwrap();
    let uid: Option<String> = sqlx::query_scalar(
        "SELECT target_uid FROM deliveries WHERE namespace = 'team-a' AND name = 'leaver'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(uid.as_deref(), Some("uid-1"));
    let later = LedgerOf {
        target: "app",
        uid: "uid-2",
        created: Some(now),
    };
    let view = store.delivery_view(later).await.unwrap();
    assert!(view.ledger.is_empty(), "{:?}", view.ledger);
}
