//! The warm copy: each namespace's users kept in memory between runs, so that a
//! run's snapshot reads only the rows written since the last one (migration 0004).
//!
//! The copy remembers the database snapshot it was last brought up to date at
//! (`pg_current_snapshot()`, read in the same REPEATABLE READ transaction as the
//! rows). Every row names the transaction that last wrote it (`written_xid`, set
//! by the operator's statements, by a column default on insert and by a trigger on
//! any other update), so the rows written since are those whose writer that
//! snapshot does not see: another process's, an admin's by hand, `usersync
//! preserve`, a CSV import. Rows removed by hand are listed in `users_removed`.
//!
//! What this process writes goes into the copy as it was written (with the version
//! the statement gave it), and its transactions are left out of the next read, so
//! a first import of 1M users is not read back. Reads of the copy may lag behind
//! the database; that is safe because every write is conditional on the version
//! its plan saw: a stale copy conflicts, and the next snapshot brings the row.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::postgres::PgPool;

use super::{StoreError, record_of};
use crate::core::UserRecord;

/// The users of one namespace as the planner sees them, sorted by name, and the
/// version of each (same order), which the writes planned from them expect.
#[derive(Clone, Default)]
pub(super) struct Registry {
    pub records: Arc<Vec<UserRecord>>,
    pub versions: Arc<Vec<i64>>,
}

impl Registry {
    /// The version the registry holds of `name`.
    pub fn version_of(&self, name: &str) -> Option<i64> {
        let at = self
            .records
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()?;
        self.versions.get(at).copied()
    }
}

/// What one statement of this process wrote: its transaction and the rows as
/// stored, with their new versions.
pub(super) struct OwnWrite {
    pub xid: i64,
    pub rows: Vec<(UserRecord, i64)>,
}

#[derive(Default)]
struct State {
    registry: Registry,
    /// The database snapshot (`pg_snapshot` as text) the copy is up to date at;
    /// none before the first read.
    read_at: Option<String>,
    /// What this process wrote since that read.
    own: Vec<OwnWrite>,
}

/// The copy of one namespace's users, shared by every store of it in the process.
#[derive(Default)]
pub(super) struct WarmCopy {
    state: tokio::sync::Mutex<State>,
}

/// The columns of a row, its version, and the last writer's transaction.
const COLUMNS: &str = concat!(user_columns!(), "u ");

/// The changed rows: written by a transaction the last read did not see ($2),
/// other than this process's own ($3), whose rows it already holds, except where
/// the row was removed by hand and made again since.
fn changed_rows() -> String {
    format!(
        "{COLUMNS} WHERE u.namespace = $1 \
         AND u.written_xid >= pg_snapshot_xmin($2::pg_snapshot) \
         AND NOT pg_visible_in_snapshot(u.written_xid, $2::pg_snapshot) \
         AND (NOT EXISTS (SELECT 1 FROM unnest($3::xid8[]) AS o(xid) WHERE o.xid = u.written_xid) \
              OR u.name IN (SELECT name FROM users_removed r WHERE r.namespace = $1 \
                  AND r.removed_xid >= pg_snapshot_xmin($2::pg_snapshot) \
                  AND NOT pg_visible_in_snapshot(r.removed_xid, $2::pg_snapshot)))"
    )
}

/// Names removed by hand since the last read ($2) that are gone now.
const REMOVED: &str = "SELECT DISTINCT r.name FROM users_removed r WHERE r.namespace = $1 \
    AND r.removed_xid >= pg_snapshot_xmin($2::pg_snapshot) \
    AND NOT pg_visible_in_snapshot(r.removed_xid, $2::pg_snapshot) \
    AND NOT EXISTS (SELECT 1 FROM users u WHERE u.namespace = $1 AND u.name = r.name)";

/// Every row of a namespace.
const ALL_ROWS: &str = concat!(user_columns!(), "WHERE namespace = $1 ORDER BY name");

fn failed(e: sqlx::Error) -> StoreError {
    StoreError::Postgres(format!("reading users from PostgreSQL failed: {e}"))
}

impl WarmCopy {
    /// The namespace's users as the database holds them now: read in full the
    /// first time, then only what was written since.
    pub async fn current(&self, pool: &PgPool, namespace: &str) -> Result<Registry, StoreError> {
        use futures::TryStreamExt;
        use sqlx::Row;
        let mut state = self.state.lock().await;
        let mut tx = pool.begin().await.map_err(failed)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        let now: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
            .fetch_one(&mut *tx)
            .await
            .map_err(failed)?;
        let version = |row: &sqlx::postgres::PgRow| -> Result<i64, StoreError> {
            row.try_get("version").map_err(failed)
        };
        let Some(since) = state.read_at.clone() else {
            let mut rows = sqlx::query(ALL_ROWS).bind(namespace).fetch(&mut *tx);
            let (mut records, mut versions) = (Vec::new(), Vec::new());
            while let Some(row) = rows.try_next().await.map_err(failed)? {
                records.push(record_of(&row)?);
                versions.push(version(&row)?);
            }
            drop(rows);
            tx.commit().await.map_err(failed)?;
            // The copy is looked up by binary search on the bytes of the names;
            // the database sorted them by its collation.
            if !records.is_sorted_by(|a, b| a.name <= b.name) {
                let mut pairs: Vec<_> = records.into_iter().zip(versions).collect();
                pairs.sort_unstable_by(|a, b| a.0.name.cmp(&b.0.name));
                (records, versions) = pairs.into_iter().unzip();
            }
            state.registry = Registry {
                records: Arc::new(records),
                versions: Arc::new(versions),
            };
            // Whatever this process wrote had committed before the read began.
            state.own.clear();
            state.read_at = Some(now);
            return Ok(state.registry.clone());
        };
        let own = format!(
            "{{{}}}",
            state
                .own
                .iter()
                .map(|w| w.xid.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut changed = Vec::new();
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(changed_rows()))
            .bind(namespace)
            .bind(&since)
            .bind(&own)
            .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await.map_err(failed)? {
            changed.push((record_of(&row)?, version(&row)?));
        }
        drop(rows);
        let removed: Vec<String> = sqlx::query_scalar(REMOVED)
            .bind(namespace)
            .bind(&since)
            .fetch_all(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        if !changed.is_empty() || !removed.is_empty() {
            tracing::debug!(
                namespace,
                changed = changed.len(),
                removed = removed.len(),
                "users written by others since the last snapshot"
            );
        }
        let own = std::mem::take(&mut state.own);
        merge(&mut state.registry, own, removed, changed);
        state.read_at = Some(now);
        Ok(state.registry.clone())
    }

    /// Note what a statement of this process wrote: the copy holds it from the
    /// next snapshot on, without reading it back.
    pub async fn wrote(&self, write: OwnWrite) {
        let mut state = self.state.lock().await;
        if state.read_at.is_some() && !write.rows.is_empty() {
            state.own.push(write);
        }
    }
}

/// Bring `registry` up to date: this process's writes (each unless the copy holds
/// a later version), then the rows removed by hand, then the rows others wrote
/// (as the database holds them now, so they win).
fn merge(
    registry: &mut Registry,
    own: Vec<OwnWrite>,
    removed: Vec<String>,
    changed: Vec<(UserRecord, i64)>,
) {
    if own.is_empty() && removed.is_empty() && changed.is_empty() {
        return;
    }
    // Shared with a run still planning from it: that run keeps its own.
    let records = Arc::make_mut(&mut registry.records);
    let versions = Arc::make_mut(&mut registry.versions);
    let mut added: HashMap<String, (UserRecord, i64)> = HashMap::new();
    let mut put = |record: UserRecord, version: i64, authoritative: bool| match records
        .binary_search_by(|r| r.name.cmp(&record.name))
    {
        Ok(at) => {
            if authoritative || version > versions[at] {
                records[at] = record;
                versions[at] = version;
            }
        }
        Err(_) => match added.get_mut(&record.name) {
            Some(had) if !authoritative && had.1 >= version => {}
            Some(had) => *had = (record, version),
            None => {
                added.insert(record.name.clone(), (record, version));
            }
        },
    };
    for write in own {
        for (record, version) in write.rows {
            put(record, version, false);
        }
    }
    let removed: HashSet<String> = removed.into_iter().collect();
    for (record, version) in changed {
        put(record, version, true);
    }
    for name in &removed {
        added.remove(name);
    }
    if !removed.is_empty() {
        let keep: Vec<bool> = records.iter().map(|r| !removed.contains(&r.name)).collect();
        let mut kept = keep.iter();
        versions.retain(|_| *kept.next().unwrap_or(&true));
        let mut kept = keep.iter();
        records.retain(|_| *kept.next().unwrap_or(&true));
    }
    if !added.is_empty() {
        let mut pairs: Vec<(UserRecord, i64)> = std::mem::take(records)
            .into_iter()
            .zip(std::mem::take(versions))
            .chain(added.into_values())
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.name.cmp(&b.0.name));
        (*records, *versions) = pairs.into_iter().unzip();
    }
}
