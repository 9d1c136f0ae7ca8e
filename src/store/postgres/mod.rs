//! The external store: users, the audit log of their transitions and the history of
//! runs in PostgreSQL (DESIGN section 5), for directories too large to keep as
//! DirectoryUser objects. The schema comes with the binary (`migrations/`) and is
//! brought up to date when the operator starts.
//!
//! Every write of a run is one statement per batch: the users are written and the
//! audit rows inserted together, with the state and fields the row had before, so
//! the log says what changed. Each write is conditional on the row its plan read
//! (DESIGN section 3, no stale write): an import inserts only where no row exists,
//! any other write updates only the `version` the snapshot saw, and a row that
//! moved on since is left alone and reported as a conflict, to be planned again.
//! The statement also refuses, at the database, what the planner never asks for:
//! it never overwrites a Manual or CSV user (rule 7), a tombstone (rule 6) or an
//! admin's `manual_preserve`.

use jiff::Timestamp;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use super::{ApplyReport, RunInfo, Snapshot, StoreError, UserStore};
use crate::api::RunSummary;
use crate::core::{
    Origin, Policy, Reason, State, Transition, TransitionKind, UserFields, UserRecord,
    deletion_deadline,
};

/// Transitions per statement.
const BATCH: usize = 1000;
/// Statements of one phase in flight at once (of the pool's 8 connections).
const WRITERS: usize = 4;

/// The embedded schema migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/postgres/migrations");

/// A pool of connections to the usersync database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    options: std::sync::Arc<PgConnectOptions>,
    /// The warm copy of each namespace in use, shared by its stores.
    copies: std::sync::Arc<std::sync::Mutex<HashMap<String, std::sync::Arc<WarmCopy>>>>,
}

/// Where it is, never the password (the connection options hold it).
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("at", &self.describe())
            .finish()
    }
}

impl Database {
    /// Parse a connection string (`postgres://user:password@host:5432/db?sslmode=…`)
    /// without connecting. The error never repeats the string: it holds a password.
    pub fn from_dsn(dsn: &str) -> Result<Self, StoreError> {
        Ok(Self::with_options(Self::parse(dsn)?))
    }

    fn parse(dsn: &str) -> Result<PgConnectOptions, StoreError> {
        PgConnectOptions::from_str(dsn).map_err(|e| {
            StoreError::Postgres(format!(
                "the PostgreSQL connection string is not valid: {}",
                redact(&e.to_string(), dsn)
            ))
        })
    }

    /// A pool over `options`; connections are opened when first needed.
    pub fn with_options(options: PgConnectOptions) -> Self {
        let options = options.application_name("usersync");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(15))
            .connect_lazy_with(options.clone());
        Self {
            pool,
            options: std::sync::Arc::new(options),
            copies: Default::default(),
        }
    }

    /// Where the database is, for messages: host, port, database and user (never
    /// the password).
    pub fn describe(&self) -> String {
        let o = &self.options;
        format!(
            "{}:{} (database {:?}, user {:?})",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("<default>"),
            o.get_username()
        )
    }

    /// Bring the schema up to date. Safe with several replicas: the migrator holds
    /// an advisory lock while it works. Connects on its own first, so that a
    /// database it cannot reach is reported with the reason (refused, unknown host,
    /// authentication failed) rather than as a pool timeout.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        use sqlx::Connection as _;
        let at = self.describe();
        let mut conn = tokio::time::timeout(
            Duration::from_secs(15),
            sqlx::PgConnection::connect_with(self.options.as_ref()),
        )
        .await
        .map_err(|_| StoreError::Postgres(format!("connecting to PostgreSQL at {at} timed out")))?
        .map_err(|e| StoreError::Postgres(format!("cannot connect to PostgreSQL at {at}: {e}")))?;
        MIGRATOR.run(&mut conn).await.map_err(|e| {
            StoreError::Postgres(format!("migrating the schema at {at} failed: {e}"))
        })?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Connect with the connection string `dsn` and bring the schema up to date,
    /// trying again for up to `wait` while the database cannot be reached (it may
    /// start after the operator).
    pub async fn open(
        dsn: &str,
        ca_file: Option<&std::path::Path>,
        wait: Duration,
    ) -> Result<Self, StoreError> {
        let db = match ca_file {
            None => Self::from_dsn(dsn)?,
            Some(ca) => {
                if !ca.is_file() {
                    return Err(StoreError::Postgres(format!(
                        "the CA bundle {} for PostgreSQL is not a readable file",
                        ca.display()
                    )));
                }
                Self::with_options(Self::parse(dsn)?.ssl_root_cert(ca))
            }
        };
        let deadline = std::time::Instant::now() + wait;
        let mut delay = Duration::from_secs(1);
        loop {
            match db.migrate().await {
                Ok(()) => return Ok(db),
                Err(e) if std::time::Instant::now() + delay < deadline => {
                    tracing::warn!(error = %e, retry_in = ?delay, "PostgreSQL is not usable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The store of one namespace.
    pub fn store(&self, namespace: &str) -> PostgresStore {
        let copy = self
            .copies
            .lock()
            .expect("copies lock poisoned")
            .entry(namespace.to_string())
            .or_default()
            .clone();
        PostgresStore {
            at: self.describe().into(),
            pool: self.pool.clone(),
            namespace: namespace.to_string(),
            copy,
            seen: Seen::default(),
        }
    }

    /// The pool, for tools and tests that read the tables.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The users of one namespace in PostgreSQL.
pub struct PostgresStore {
    /// Where the database is, for messages.
    at: std::sync::Arc<str>,
    pool: PgPool,
    namespace: String,
    /// The namespace's warm copy, which snapshots are taken from.
    copy: std::sync::Arc<WarmCopy>,
    /// The `version` of each row as the last read of records saw it: every write
    /// but an import is conditional on it.
    seen: Seen,
}

/// The versions a store's writes expect.
#[derive(Default)]
struct Seen {
    /// The last snapshot.
    snapshot: Registry,
    /// Later reads and this store's own writes, by name; they come first.
    since: HashMap<String, i64>,
}

impl Seen {
    fn version_of(&self, name: &str) -> Option<i64> {
        self.since
            .get(name)
            .copied()
            .or_else(|| self.snapshot.version_of(name))
    }
}

/// `text` with every occurrence of the DSN's password (and the DSN) masked.
fn redact(text: &str, dsn: &str) -> String {
    let mut out = text.replace(dsn, "<connection string>");
    if let Ok(url) = url::Url::parse(dsn)
        && let Some(password) = url.password().filter(|p| !p.is_empty())
    {
        out = out.replace(password, "***");
        // The URL keeps the password percent-encoded; mask the decoded form too.
        if let Some((_, decoded)) =
            url::form_urlencoded::parse(format!("p={password}").as_bytes()).next()
        {
            out = out.replace(decoded.as_ref(), "***");
        }
    }
    out
}

fn db_error(what: &str, e: sqlx::Error) -> StoreError {
    StoreError::Postgres(format!("{what}: {e}"))
}

fn micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.as_microsecond())
}

fn from_micros(v: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    v.map(|us| {
        Timestamp::from_microsecond(us)
            .map_err(|e| StoreError::Postgres(format!("a stored time is out of range: {e}")))
    })
    .transpose()
}

/// An enum of the core from its stored name (the API's spelling, as `Display` writes it).
fn parse_stored<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Postgres(format!("unknown {what} {s:?} in the users table")))
}

fn origin_of(s: &str) -> Result<Origin, StoreError> {
    parse_stored("origin", s)
}

fn state_of(s: &str) -> Result<State, StoreError> {
    parse_stored("state", s)
}

fn reason_of(s: &str) -> Result<Reason, StoreError> {
    parse_stored("reason", s)
}

/// The columns of a user row as [`record_of`] reads them, times as microseconds
/// since the epoch.
macro_rules! user_columns {
    () => {
        "SELECT name, origin, connector, anchor, mapping, username, email, \
        display_name, user_principal_name, profile, attributes::text AS attributes, \
        manual_preserve, state, reason, version, \
        (extract(epoch FROM preserved_at) * 1000000)::int8 AS preserved_us, \
        (extract(epoch FROM deleted_at) * 1000000)::int8 AS deleted_us, \
        (extract(epoch FROM delete_after) * 1000000)::int8 AS delete_after_us \
        FROM users "
    };
}

mod warm;
use warm::{OwnWrite, Registry, WarmCopy};

/// The preserved directory users of one connector ($2).
const PRESERVED_OF: &str = concat!(
    user_columns!(),
    "WHERE namespace = $1 AND connector = $2 AND origin = 'Directory' \
     AND state = 'Preserved' ORDER BY name"
);

fn record_of(row: &PgRow) -> Result<UserRecord, StoreError> {
    let get = |e: sqlx::Error| db_error("reading a user row failed", e);
    let attributes: String = row.try_get("attributes").map_err(get)?;
    let reason: Option<String> = row.try_get("reason").map_err(get)?;
    Ok(UserRecord {
        name: row.try_get("name").map_err(get)?,
        origin: origin_of(row.try_get("origin").map_err(get)?)?,
        connector: row
            .try_get::<Option<String>, _>("connector")
            .map_err(get)?
            .unwrap_or_default(),
        anchor: row
            .try_get::<Option<String>, _>("anchor")
            .map_err(get)?
            .unwrap_or_default(),
        mapping: row.try_get("mapping").map_err(get)?,
        fields: UserFields {
            username: row.try_get("username").map_err(get)?,
            email: row.try_get("email").map_err(get)?,
            display_name: row.try_get("display_name").map_err(get)?,
            user_principal_name: row.try_get("user_principal_name").map_err(get)?,
            profile: row.try_get("profile").map_err(get)?,
            attributes: serde_json::from_str(&attributes).map_err(|e| {
                StoreError::Postgres(format!("a user's attributes are not a JSON object: {e}"))
            })?,
        },
        manual_preserve: row.try_get("manual_preserve").map_err(get)?,
        state: state_of(row.try_get("state").map_err(get)?)?,
        reason: reason.as_deref().map(reason_of).transpose()?,
        preserved_at: from_micros(row.try_get("preserved_us").map_err(get)?)?,
        deleted_at: from_micros(row.try_get("deleted_us").map_err(get)?)?,
        delete_after_time: from_micros(row.try_get("delete_after_us").map_err(get)?)?,
    })
}

/// The record of a row, its version noted in `seen`.
fn seen_record(row: &PgRow, seen: &mut HashMap<String, i64>) -> Result<UserRecord, StoreError> {
    let record = record_of(row)?;
    let version = row
        .try_get("version")
        .map_err(|e| db_error("reading a user row failed", e))?;
    seen.insert(record.name.clone(), version);
    Ok(record)
}

/// The record of `t` as its write stores it and a read gives it back: times at
/// the database's precision, the deletion deadline the write computes, and the
/// admin's `manual_preserve`, which an import never sets and an update keeps.
fn stored_form(t: &Transition, policy: &Policy) -> UserRecord {
    let r = &t.record;
    let stored =
        |t: Option<Timestamp>| t.and_then(|t| Timestamp::from_microsecond(t.as_microsecond()).ok());
    UserRecord {
        origin: Origin::Directory,
        manual_preserve: r.manual_preserve && !matches!(t.kind, TransitionKind::Import { .. }),
        preserved_at: stored(r.preserved_at),
        deleted_at: stored(r.deleted_at),
        delete_after_time: stored(deletion_deadline(r, policy)),
        ..r.clone()
    }
}

/// Write a batch of directory users and log their transitions, in one statement.
/// Each row names the version it expects (`expected`): none for an import, which
/// inserts only where no row exists, else the version the snapshot saw, which an
/// update must find. Every CTE sees the table as it was before the statement, so
/// `old` holds the rows before the write. Returns one row per input: its new
/// version when written, else whether the database refused it (a Manual or CSV
/// user, or a tombstone, at the version the plan saw) rather than found it changed.
const APPLY_BATCH: &str = r#"
WITH input AS (
    SELECT * FROM unnest(
        $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
        $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
        $16::text[], $17::int8[], $18::int8[], $19::int8[], $20::text[], $21::text[],
        $23::int8[]
    ) AS i(name, kind, connector, anchor, mapping, username,
           email, display_name, upn, profile, attributes, state,
           reason, preserved_us, delete_after_us, deleted_us, previous_record, detail,
           expected)
),
old AS (
    SELECT u.* FROM users u JOIN input i ON u.namespace = $1 AND u.name = i.name
),
created AS (
    INSERT INTO users AS u (
        namespace, name, origin, connector, anchor, mapping, username, email,
        display_name, user_principal_name, profile, attributes, state, reason,
        preserved_at, delete_after, deleted_at, last_seen_at, last_sync_run,
        previous_record, updated_at)
    SELECT $1, i.name, 'Directory', i.connector, i.anchor, i.mapping, i.username, i.email,
        i.display_name, i.upn, i.profile, i.attributes::jsonb, i.state, i.reason,
        timestamptz 'epoch' + i.preserved_us * interval '1 microsecond',
        timestamptz 'epoch' + i.delete_after_us * interval '1 microsecond',
        timestamptz 'epoch' + i.deleted_us * interval '1 microsecond',
        timestamptz 'epoch' + $3 * interval '1 microsecond',
        $2, i.previous_record,
        timestamptz 'epoch' + $3 * interval '1 microsecond'
    FROM input i
    WHERE i.expected IS NULL
    ON CONFLICT (namespace, name) DO NOTHING
    RETURNING u.name, u.version
),
changed AS (
    UPDATE users AS u SET
        connector = i.connector,
        anchor = i.anchor,
        mapping = i.mapping,
        username = i.username,
        email = i.email,
        display_name = i.display_name,
        user_principal_name = i.upn,
        profile = i.profile,
        attributes = i.attributes::jsonb,
        state = i.state,
        reason = i.reason,
        preserved_at = timestamptz 'epoch' + i.preserved_us * interval '1 microsecond',
        delete_after = timestamptz 'epoch' + i.delete_after_us * interval '1 microsecond',
        deleted_at = timestamptz 'epoch' + i.deleted_us * interval '1 microsecond',
        last_seen_at = timestamptz 'epoch' + $3 * interval '1 microsecond',
        last_sync_run = $2,
        written_xid = pg_current_xact_id(),
        previous_record = coalesce(i.previous_record, u.previous_record),
        updated_at = timestamptz 'epoch' + $3 * interval '1 microsecond',
        version = u.version + 1
    FROM input i
    WHERE u.namespace = $1 AND u.name = i.name AND u.version = i.expected
        AND u.origin = 'Directory' AND u.state <> 'Deleted'
    RETURNING u.name, u.version
),
written AS (
    SELECT name, version FROM created UNION ALL SELECT name, version FROM changed
),
logged AS (
    INSERT INTO transitions (at, namespace, user_name, kind, from_state, to_state,
                             reason, detail, run_id, actor)
    SELECT timestamptz 'epoch' + $3 * interval '1 microsecond', $1, i.name, i.kind,
        o.state, i.state, i.reason,
        nullif(concat_ws('; ', i.detail, CASE WHEN o.name IS NOT NULL THEN nullif(concat_ws(', ',
            CASE WHEN o.username IS DISTINCT FROM i.username THEN 'username' END,
            CASE WHEN o.email IS DISTINCT FROM i.email THEN 'email' END,
            CASE WHEN o.display_name IS DISTINCT FROM i.display_name THEN 'displayName' END,
            CASE WHEN o.user_principal_name IS DISTINCT FROM i.upn THEN 'userPrincipalName' END,
            CASE WHEN o.profile IS DISTINCT FROM i.profile THEN 'profile' END,
            CASE WHEN o.attributes IS DISTINCT FROM i.attributes::jsonb THEN 'attributes' END
        ), '') || ' changed' END), ''),
        $2, $22
    FROM input i JOIN written w ON w.name = i.name LEFT JOIN old o ON o.name = i.name
)
SELECT i.name, w.version,
    w.name IS NULL AND o.version = i.expected
        AND (o.origin <> 'Directory' OR o.state = 'Deleted') AS refused,
    pg_current_xact_id()::text::int8 AS xid
FROM input i LEFT JOIN written w ON w.name = i.name LEFT JOIN old o ON o.name = i.name
"#;

/// What became of one row of a batch.
enum Outcome {
    /// Written; the row's version now.
    Written(i64),
    /// The row is a Manual or CSV user or a tombstone: sync never writes it.
    Refused,
    /// The row is not as the plan saw it (changed, created or removed since).
    Conflict,
}

/// The columns of one batch, in the order of [`APPLY_BATCH`]'s parameters.
#[derive(Default)]
struct Columns {
    name: Vec<String>,
    kind: Vec<String>,
    connector: Vec<String>,
    anchor: Vec<String>,
    mapping: Vec<Option<String>>,
    username: Vec<Option<String>>,
    email: Vec<Option<String>>,
    display_name: Vec<Option<String>>,
    upn: Vec<Option<String>>,
    profile: Vec<Option<String>>,
    attributes: Vec<String>,
    state: Vec<String>,
    reason: Vec<Option<String>>,
    preserved_us: Vec<Option<i64>>,
    delete_after_us: Vec<Option<i64>>,
    deleted_us: Vec<Option<i64>>,
    previous_record: Vec<Option<String>>,
    detail: Vec<Option<String>>,
    /// The version the write expects to find; `None`: no row.
    expected: Vec<Option<i64>>,
}

impl Columns {
    fn push(&mut self, t: &Transition, run: &RunInfo<'_>, expected: Option<i64>) {
        let r = &t.record;
        let (previous, detail) = match &t.kind {
            TransitionKind::Import {
                follows: Some(tombstone),
            } => (
                Some(tombstone.clone()),
                Some(format!("returned after deletion; follows {tombstone}")),
            ),
            TransitionKind::Transfer { from } => (
                None,
                Some(format!(
                    "owner {} -> {}",
                    from.as_deref().unwrap_or("(none)"),
                    r.mapping.as_deref().unwrap_or("(none)")
                )),
            ),
            _ => (None, None),
        };
        self.name.push(r.name.clone());
        self.kind.push(t.kind.label().to_string());
        self.connector.push(r.connector.clone());
        self.anchor.push(r.anchor.clone());
        self.mapping.push(r.mapping.clone());
        self.username.push(r.fields.username.clone());
        self.email.push(r.fields.email.clone());
        self.display_name.push(r.fields.display_name.clone());
        self.upn.push(r.fields.user_principal_name.clone());
        self.profile.push(r.fields.profile.clone());
        self.attributes.push(
            serde_json::to_string(&r.fields.attributes).expect("attributes always serialise"),
        );
        self.state.push(r.state.to_string());
        self.reason.push(r.reason.map(|x| x.to_string()));
        self.preserved_us.push(micros(r.preserved_at));
        self.delete_after_us
            .push(micros(deletion_deadline(r, run.policy)));
        self.deleted_us.push(micros(r.deleted_at));
        self.previous_record.push(previous);
        self.detail.push(detail);
        self.expected.push(expected);
    }
}

impl PostgresStore {
    /// A failed request, saying where the database is (never the password).
    fn error(&self, what: &str, e: sqlx::Error) -> StoreError {
        let hint = match &e {
            sqlx::Error::PoolTimedOut => {
                " (no connection within 15s: is the database up and reachable?)"
            }
            _ => "",
        };
        StoreError::Postgres(format!("{what}: PostgreSQL at {}: {e}{hint}", self.at))
    }

    /// The version a write of `t` expects: an import expects no row, any other
    /// write the row as the snapshot saw it (and a record it did not see, none).
    fn expected(&self, t: &Transition) -> Option<i64> {
        match t.kind {
            TransitionKind::Import { .. } => None,
            _ => self.seen.version_of(&t.record.name),
        }
    }

    /// Write one batch; what became of each of its records, by name, and the
    /// statement's transaction.
    async fn apply_batch(
        &self,
        batch: &[Transition],
        run: &RunInfo<'_>,
    ) -> Result<(HashMap<String, Outcome>, i64), sqlx::Error> {
        let mut c = Columns::default();
        for t in batch {
            c.push(t, run, self.expected(t));
        }
        let rows: Vec<(String, Option<i64>, Option<bool>, i64)> = sqlx::query_as(APPLY_BATCH)
            .bind(&self.namespace)
            .bind(run.run_id)
            .bind(run.now.as_microsecond())
            .bind(c.name)
            .bind(c.kind)
            .bind(c.connector)
            .bind(c.anchor)
            .bind(c.mapping)
            .bind(c.username)
            .bind(c.email)
            .bind(c.display_name)
            .bind(c.upn)
            .bind(c.profile)
            .bind(c.attributes)
            .bind(c.state)
            .bind(c.reason)
            .bind(c.preserved_us)
            .bind(c.delete_after_us)
            .bind(c.deleted_us)
            .bind(c.previous_record)
            .bind(c.detail)
            .bind(run.actor)
            .bind(c.expected)
            .fetch_all(&self.pool)
            .await?;
        let xid = rows.first().map_or(0, |r| r.3);
        let outcomes = rows
            .into_iter()
            .map(|(name, version, refused, _)| {
                let outcome = match (version, refused) {
                    (Some(version), _) => Outcome::Written(version),
                    (None, Some(true)) => Outcome::Refused,
                    (None, _) => Outcome::Conflict,
                };
                (name, outcome)
            })
            .collect();
        Ok((outcomes, xid))
    }

    /// Put what became of `batch` into `report`, and what it wrote into this
    /// store's versions and the warm copy.
    async fn note_outcomes(
        &mut self,
        batch: &[Transition],
        result: Result<(HashMap<String, Outcome>, i64), sqlx::Error>,
        run: &RunInfo<'_>,
        report: &mut ApplyReport,
    ) {
        let (mut outcomes, xid) = match result {
            Ok(written) => written,
            Err(e) => {
                tracing::warn!(error = %e, transitions = batch.len(), "writing users to PostgreSQL failed");
                report.failed.extend(
                    batch
                        .iter()
                        .map(|t| (t.record.name.clone(), format!("PostgreSQL: {e}"))),
                );
                return;
            }
        };
        report.writes += 1;
        let mut written = OwnWrite {
            xid,
            rows: Vec::new(),
        };
        for t in batch {
            let name = &t.record.name;
            match outcomes.remove(name).unwrap_or(Outcome::Conflict) {
                Outcome::Written(version) => {
                    report.applied += 1;
                    // A later phase of this run may write the same row again: its
                    // precondition is this write.
                    self.seen.since.insert(name.clone(), version);
                    written.rows.push((stored_form(t, run.policy), version));
                }
                Outcome::Refused => report.failed.push((
                    name.clone(),
                    "the stored record is a tombstone or not a directory user; left unchanged"
                        .to_string(),
                )),
                Outcome::Conflict => {
                    tracing::info!(user = %name, transition = t.kind.label(), "the user changed since the snapshot; not written");
                    report.conflicts.push(name.clone());
                }
            }
        }
        self.copy.wrote(written).await;
    }

    /// Record that a run started, so its transitions can name it.
    pub async fn run_started(
        &self,
        run_id: &str,
        mapping: &str,
        trigger: &str,
        started: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runs (namespace, id, mapping, trigger, started_at) \
             VALUES ($1, $2, $3, $4, timestamptz 'epoch' + $5 * interval '1 microsecond') \
             ON CONFLICT (namespace, id) DO NOTHING",
        )
        .bind(&self.namespace)
        .bind(run_id)
        .bind(mapping)
        .bind(trigger)
        .bind(started.as_microsecond())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("recording the run's start failed", e))?;
        Ok(())
    }

    /// Complete a run's row with its outcome.
    pub async fn run_finished(
        &self,
        summary: &RunSummary,
        writes: u64,
        finished: Timestamp,
    ) -> Result<(), StoreError> {
        let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        sqlx::query(
            "UPDATE runs SET finished_at = timestamptz 'epoch' + $3 * interval '1 microsecond', \
             result = $4, read = $5, imported = $6, updated = $7, unchanged = $8, \
             preserved = $9, reenabled = $10, deleted = $11, transferred = $12, \
             skipped = $13, writes = $14, message = $15 \
             WHERE namespace = $1 AND id = $2",
        )
        .bind(&self.namespace)
        .bind(&summary.id)
        .bind(finished.as_microsecond())
        .bind(format!("{:?}", summary.result))
        .bind(summary.read.map(|r| format!("{r:?}")))
        .bind(n(summary.imported))
        .bind(n(summary.updated))
        .bind(n(summary.unchanged))
        .bind(n(summary.preserved))
        .bind(n(summary.reenabled))
        .bind(n(summary.deleted))
        .bind(n(summary.transferred))
        .bind(n(summary.skipped))
        .bind(i64::try_from(writes).unwrap_or(i64::MAX))
        .bind(summary.message.as_deref())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("recording the run's outcome failed", e))?;
        Ok(())
    }

    /// Close the runs of `mapping` that never ended (the operator stopped during
    /// them) as failed. Their transitions stay in the log: whatever a cut-off run
    /// applied is applied, and the next run plans from there.
    pub async fn close_interrupted_runs(&self, mapping: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET result = 'Failed', finished_at = now(), \
             message = 'interrupted: the operator stopped during the run' \
             WHERE namespace = $1 AND mapping = $2 AND result IS NULL",
        )
        .bind(&self.namespace)
        .bind(mapping)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("closing interrupted runs failed", e))?;
        Ok(())
    }

    /// Whether `mapping` of `connector` still owns a user that is not a tombstone.
    pub async fn owns_live_users(
        &self,
        connector: &str,
        mapping: &str,
    ) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE namespace = $1 AND origin = 'Directory' \
             AND connector = $2 AND mapping = $3 AND state <> 'Deleted')",
        )
        .bind(&self.namespace)
        .bind(connector)
        .bind(mapping)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.error("reading the mapping's users failed", e))
    }
}

/// Upsert CSV users and log them, in one statement (see [`APPLY_BATCH`]).
const IMPORT_CSV: &str = r#"
WITH input AS (
    SELECT * FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::text[])
        AS i(name, username, email, display_name, upn, profile, attributes)
),
old AS (
    SELECT u.* FROM users u JOIN input i ON u.namespace = $1 AND u.name = i.name
),
written AS (
    INSERT INTO users AS u (namespace, name, origin, username, email, display_name,
        user_principal_name, profile, attributes, updated_at)
    SELECT $1, i.name, 'CSV', i.username, i.email, i.display_name, i.upn, i.profile,
        i.attributes::jsonb, timestamptz 'epoch' + $3 * interval '1 microsecond'
    FROM input i
    ON CONFLICT (namespace, name) DO UPDATE SET
        username = EXCLUDED.username,
        email = EXCLUDED.email,
        display_name = EXCLUDED.display_name,
        user_principal_name = EXCLUDED.user_principal_name,
        profile = EXCLUDED.profile,
        attributes = EXCLUDED.attributes,
        updated_at = EXCLUDED.updated_at,
        version = u.version + 1
    WHERE u.origin = 'CSV'
    RETURNING u.name
)
INSERT INTO transitions (at, namespace, user_name, kind, from_state, to_state, detail, actor)
SELECT timestamptz 'epoch' + $3 * interval '1 microsecond', $1, i.name,
    CASE WHEN o.name IS NULL THEN 'csv-import' ELSE 'csv-update' END,
    o.state, coalesce(o.state, 'Active'), 'imported from a CSV file', $2
FROM input i JOIN written w ON w.name = i.name LEFT JOIN old o ON o.name = i.name
RETURNING from_state IS NULL
"#;

/// What a CSV import did, or would do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CsvImported {
    pub created: usize,
    pub updated: usize,
}

impl PostgresStore {
    /// Import users of origin CSV (`name`, fields) in one transaction: either every
    /// row is written or none. A row whose name belongs to a user of another origin
    /// refuses the whole import: its index and why come back, and nothing is written.
    pub async fn import_csv(
        &self,
        users: &[(String, UserFields)],
        actor: &str,
        dry_run: bool,
    ) -> Result<Result<CsvImported, Vec<(usize, String)>>, StoreError> {
        let fail = |e| self.error("importing CSV users failed", e);
        let names: Vec<&str> = users.iter().map(|(n, _)| n.as_str()).collect();
        let mut tx = self.pool.begin().await.map_err(fail)?;
        let existing: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, origin FROM users WHERE namespace = $1 AND name = ANY($2) FOR UPDATE",
        )
        .bind(&self.namespace)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        let existing: std::collections::HashMap<String, String> = existing.into_iter().collect();
        let refused: Vec<(usize, String)> = names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let origin = existing.get(*name).filter(|o| o.as_str() != "CSV")?;
                Some((
                    i,
                    format!("record {name} already exists with origin {origin}; CSV import never changes it"),
                ))
            })
            .collect();
        if !refused.is_empty() {
            return Ok(Err(refused));
        }
        let updated = existing.len();
        let counts = CsvImported {
            created: users.len() - updated,
            updated,
        };
        if dry_run {
            return Ok(Ok(counts));
        }
        let column = |f: fn(&UserFields) -> Option<String>| -> Vec<Option<String>> {
            users.iter().map(|(_, u)| f(u)).collect()
        };
        let attributes: Vec<String> = users
            .iter()
            .map(|(_, u)| {
                serde_json::to_string(&u.attributes).expect("attributes always serialise")
            })
            .collect();
        let written: Vec<bool> = sqlx::query_scalar(IMPORT_CSV)
            .bind(&self.namespace)
            .bind(actor)
            .bind(Timestamp::now().as_microsecond())
            .bind(&names)
            .bind(column(|u| u.username.clone()))
            .bind(column(|u| u.email.clone()))
            .bind(column(|u| u.display_name.clone()))
            .bind(column(|u| u.user_principal_name.clone()))
            .bind(column(|u| u.profile.clone()))
            .bind(attributes)
            .fetch_all(&mut *tx)
            .await
            .map_err(fail)?;
        if written.len() != users.len() {
            // Another writer took a name between the check and the write.
            return Err(StoreError::Postgres(format!(
                "{} of {} rows changed origin while importing; nothing was imported",
                users.len() - written.len(),
                users.len()
            )));
        }
        tx.commit().await.map_err(fail)?;
        Ok(Ok(counts))
    }
}

/// Set or clear an admin's manual preserve, and log it. A run planned before it
/// finds the row's version moved on: its write conflicts and is planned again.
const SET_MANUAL_PRESERVE: &str = r#"
WITH changed AS (
    UPDATE users SET manual_preserve = $3, updated_at = now(), version = version + 1
    WHERE namespace = $1 AND name = $2 AND (state <> 'Deleted' OR NOT $3)
    RETURNING state
),
logged AS (
    INSERT INTO transitions (at, namespace, user_name, kind, from_state, to_state, detail, actor)
    SELECT now(), $1, $2, CASE WHEN $3 THEN 'manual-preserve' ELSE 'manual-unpreserve' END,
        state, state,
        CASE WHEN $3 THEN 'preserve requested; applied by the next run of its mapping'
             ELSE 'preserve lifted; the next run re-enables the user if the directory allows' END,
        $4
    FROM changed
)
SELECT state FROM changed
"#;

impl PostgresStore {
    /// An admin's manual preserve (`true`) or its removal (`false`), as
    /// `spec.preserve` on a DirectoryUser: the next run of the user's mapping acts
    /// on it. Refused for a tombstone or an unknown name.
    pub async fn set_manual_preserve(
        &self,
        name: &str,
        preserve: bool,
        actor: &str,
    ) -> Result<(), StoreError> {
        let state: Option<String> = sqlx::query_scalar(SET_MANUAL_PRESERVE)
            .bind(&self.namespace)
            .bind(name)
            .bind(preserve)
            .bind(actor)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error("changing the user failed", e))?;
        match state {
            Some(_) => Ok(()),
            None => Err(StoreError::Refused(format!(
                "no user {name:?} in namespace {:?} that is not deleted",
                self.namespace
            ))),
        }
    }
}

/// A user's transitions, oldest first.
const HISTORY: &str = r#"
SELECT (extract(epoch FROM at) * 1000000)::int8 AS at_us, kind, from_state, to_state,
       reason, detail, run_id, actor
FROM transitions WHERE namespace = $1 AND user_name = $2 ORDER BY at, id
"#;

impl PostgresStore {
    /// User `name`'s transitions from the audit log, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<super::HistoryEntry>, StoreError> {
        let rows = sqlx::query(HISTORY)
            .bind(&self.namespace)
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error("reading the audit log from PostgreSQL failed", e))?;
        let failed = |e| self.error("reading the audit log from PostgreSQL failed", e);
        rows.iter()
            .map(|row| {
                let get = |column: &str| row.try_get::<Option<String>, _>(column).map_err(failed);
                let at = from_micros(row.try_get("at_us").map_err(failed)?)?
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                let kind = get("kind")?.unwrap_or_default();
                let to = get("to_state")?.unwrap_or_default();
                let mut what = match get("from_state")? {
                    Some(from) if from != to => format!("{kind}: {from} to {to}"),
                    _ => format!("{kind}: {to}"),
                };
                if let Some(reason) = get("reason")? {
                    what.push_str(&format!(" ({reason})"));
                }
                if let Some(detail) = get("detail")?.filter(|d| !d.is_empty()) {
                    what.push_str(&format!("; {detail}"));
                }
                Ok(super::HistoryEntry {
                    at,
                    what,
                    run: get("run_id")?,
                    by: get("actor")?,
                })
            })
            .collect()
    }

    /// The preserved directory users of `connector`, for its retention pass.
    pub async fn preserved_of(&mut self, connector: &str) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(PRESERVED_OF)
            .bind(&self.namespace)
            .bind(connector)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error("reading preserved users from PostgreSQL failed", e))?;
        // The pass deletes from these: its writes are conditional on them.
        let mut since = HashMap::with_capacity(rows.len());
        let records = rows
            .iter()
            .map(|row| seen_record(row, &mut since))
            .collect::<Result<_, _>>()?;
        self.seen = Seen {
            snapshot: Registry::default(),
            since,
        };
        Ok(records)
    }
}

/// A target's ledger in a namespace, times as microseconds.
const DELIVERIES_OF: &str = r#"
SELECT name, target_uid, remote_id, state, digest, failures, last_error, approved_cycle,
       (extract(epoch FROM changed_at) * 1000000)::int8 AS changed_us,
       (extract(epoch FROM retry_after) * 1000000)::int8 AS retry_us
FROM deliveries WHERE namespace = $1 AND target = $2"#;

/// Entries of a target written in one statement; the arrays are parallel.
const UPSERT_DELIVERIES: &str = r#"
INSERT INTO deliveries (namespace, target, target_uid, name, remote_id, state, digest,
                        changed_at, last_error, failures, retry_after, approved_cycle)
SELECT $1, $2, $11, d.name, d.remote_id, d.state, d.digest,
       to_timestamp(d.changed_us / 1000000.0), d.last_error, d.failures,
       to_timestamp(d.retry_us / 1000000.0), d.approved_cycle
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
            $9::int4[], $10::int8[], $12::text[])
     AS d(name, remote_id, state, digest, changed_us, last_error, failures, retry_us,
          approved_cycle)
ON CONFLICT (namespace, target, name) DO UPDATE SET
    target_uid = EXCLUDED.target_uid, remote_id = EXCLUDED.remote_id, state = EXCLUDED.state, digest = EXCLUDED.digest,
    changed_at = EXCLUDED.changed_at, last_error = EXCLUDED.last_error,
    failures = EXCLUDED.failures, retry_after = EXCLUDED.retry_after,
    approved_cycle = EXCLUDED.approved_cycle"#;

const FORGET_DELIVERIES: &str =
    "DELETE FROM deliveries WHERE namespace = $1 AND target = $2 AND name = ANY($3::text[])";

impl PostgresStore {
    /// The ledger of target `of`, by user name, and the users whose row another
    /// target object of the same name wrote.
    pub async fn deliveries_of(
        &self,
        of: crate::store::ledger::LedgerOf<'_>,
    ) -> Result<
        (
            HashMap<String, crate::delivery::plan::Delivered>,
            Vec<String>,
        ),
        StoreError,
    > {
        use crate::delivery::plan::{Delivered, DeliveredState};
        let rows = sqlx::query(DELIVERIES_OF)
            .bind(&self.namespace)
            .bind(of.target)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error("reading deliveries from PostgreSQL failed", e))?;
        let mut ledger = HashMap::with_capacity(rows.len());
        let mut foreign = Vec::new();
        for row in &rows {
            let get = |e| db_error("reading a delivery row failed", e);
            let name: String = row.try_get("name").map_err(get)?;
            let uid: Option<String> = row.try_get("target_uid").map_err(get)?;
            let time = from_micros(row.try_get("changed_us").map_err(get)?)?;
            if !of.owns(uid.as_deref(), time) {
                foreign.push(name);
                continue;
            }
            let state: Option<String> = row.try_get("state").map_err(get)?;
            let failures: i32 = row.try_get("failures").map_err(get)?;
            ledger.insert(
                name,
                Delivered {
                    remote_id: row.try_get("remote_id").map_err(get)?,
                    state: state.as_deref().and_then(DeliveredState::parse),
                    digest: row.try_get("digest").map_err(get)?,
                    time,
                    last_error: row.try_get("last_error").map_err(get)?,
                    failures: u32::try_from(failures).unwrap_or(0),
                    retry_after: from_micros(row.try_get("retry_us").map_err(get)?)?,
                    approved: row.try_get("approved_cycle").map_err(get)?,
                },
            );
        }
        Ok((ledger, foreign))
    }

    /// Write `changes` to target `target`'s ledger (`None` forgets a user), in at
    /// most two statements per thousand users. Returns the statements issued.
    pub async fn record_deliveries(
        &self,
        of: crate::store::ledger::LedgerOf<'_>,
        changes: &[(String, Option<crate::delivery::plan::Delivered>)],
    ) -> Result<u64, StoreError> {
        let mut writes = 0;
        for batch in changes.chunks(BATCH) {
            let (kept, forgotten): (Vec<_>, Vec<_>) = batch.iter().partition(|(_, d)| d.is_some());
            if !kept.is_empty() {
                let mut cols = (
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                );
                let mut approved = Vec::with_capacity(kept.len());
                for (name, d) in &kept {
                    let d = d.as_ref().expect("partitioned on Some");
                    cols.0.push(name.clone());
                    cols.1.push(d.remote_id.clone());
                    cols.2.push(d.state.map(|s| s.as_str().to_string()));
                    cols.3.push(d.digest.clone());
                    cols.4.push(micros(d.time).unwrap_or(0));
                    cols.5.push(d.last_error.clone());
                    cols.6.push(i32::try_from(d.failures).unwrap_or(i32::MAX));
                    cols.7.push(micros(d.retry_after));
                    approved.push(d.approved.clone());
                }
                sqlx::query(UPSERT_DELIVERIES)
                    .bind(&self.namespace)
                    .bind(of.target)
                    .bind(cols.0)
                    .bind(cols.1)
                    .bind(cols.2)
                    .bind(cols.3)
                    .bind(cols.4)
                    .bind(cols.5)
                    .bind(cols.6)
                    .bind(cols.7)
                    .bind(of.uid)
                    .bind(approved)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error("writing deliveries to PostgreSQL failed", e))?;
                writes += 1;
            }
            if !forgotten.is_empty() {
                let names: Vec<String> = forgotten.iter().map(|(n, _)| n.clone()).collect();
                sqlx::query(FORGET_DELIVERIES)
                    .bind(&self.namespace)
                    .bind(of.target)
                    .bind(names)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error("writing deliveries to PostgreSQL failed", e))?;
                writes += 1;
            }
        }
        Ok(writes)
    }
}

impl UserStore for PostgresStore {
    async fn snapshot(&mut self) -> Result<Snapshot, StoreError> {
        let registry = self
            .copy
            .current(&self.pool, &self.namespace)
            .await
            .map_err(|e| StoreError::Postgres(format!("{e} (PostgreSQL at {})", self.at)))?;
        let records = registry.records.clone();
        self.seen = Seen {
            snapshot: registry,
            since: HashMap::new(),
        };
        Ok(records)
    }

    async fn apply(
        &mut self,
        transitions: &[Transition],
        run: RunInfo<'_>,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        let batches: Vec<&[Transition]> = super::phase_batches(transitions, BATCH).collect();
        // Up to WRITERS statements of one phase at once: while PostgreSQL writes
        // and commits one batch, the next is built and sent.
        let rounds = batches
            .chunk_by(|a, b| a[0].kind.phase() == b[0].kind.phase())
            .flat_map(|phase| phase.chunks(WRITERS));
        // Rounds come in order: the batches before `done` were written (or tried).
        let mut done = 0;
        for round in rounds {
            if run.fenced(&transitions[done..], &mut report) {
                break;
            }
            let this = &*self;
            let results =
                futures::future::join_all(round.iter().map(|batch| this.apply_batch(batch, &run)))
                    .await;
            for (batch, result) in round.iter().zip(results) {
                done += batch.len();
                self.note_outcomes(batch, result, &run, &mut report).await;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_password_never_appears_in_a_connection_error() {
        let dsn = "postgres://usersync:s3cr%40t-pw@db.example.org:5432/usersync?sslmode=bogus";
        let err = Database::from_dsn(dsn).unwrap_err().to_string();
        assert!(!err.contains("s3cr"), "{err}");
        assert!(err.contains("not valid"), "{err}");
        let masked = redact("failed for s3cr@t-pw and s3cr%40t-pw", dsn);
        assert_eq!(masked, "failed for *** and ***");
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_password() {
        let db =
            Database::from_dsn("postgres://usersync:s3cret-pw@db.example.org:5433/users").unwrap();
        let shown = format!("{db:?} {:?}", crate::store::Backend::Postgres(db.clone()));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.example.org:5433"), "{shown}");
    }

    #[test]
    fn stored_names_parse_back() {
        for o in [Origin::Directory, Origin::Manual, Origin::Csv] {
            assert_eq!(origin_of(&o.to_string()).unwrap(), o);
        }
        for s in [State::Active, State::Preserved, State::Deleted] {
            assert_eq!(state_of(&s.to_string()).unwrap(), s);
        }
        for r in [
            Reason::DisabledInDirectory,
            Reason::Unmapped,
            Reason::Manual,
            Reason::RetentionExpired,
        ] {
            assert_eq!(reason_of(&r.to_string()).unwrap(), r);
        }
        assert!(state_of("Gone").is_err());
    }
}
