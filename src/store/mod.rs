//! The registry of users, behind one interface with two implementations:
//! [`kubernetes`] (DirectoryUser objects, the default) and [`postgres`] (an
//! external database, for large directories).

pub mod kubernetes;
pub mod ledger;
pub mod postgres;
mod record;
pub mod warm;

pub use record::{record_from_user, user_state_label};

use jiff::Timestamp;
use thiserror::Error;

use crate::core::{Policy, Transition, UserRecord};

/// Which run is applying, for the records it writes.
#[derive(Clone, Copy)]
pub struct RunInfo<'a> {
    /// The run's id, written to each changed user's `lastSyncRun`.
    pub run_id: &'a str,
    /// The run's clock reading.
    pub now: Timestamp,
    /// The policy in force, for retention deadlines.
    pub policy: &'a Policy,
    /// Who is writing, for the audit log (e.g. `usersync/mapping/staff`).
    pub actor: &'a str,
    /// Asked before every batch of writes: whether this process may still write
    /// (it holds the Lease and is not stopping). Once it says no, nothing more is
    /// written and the rest of the plan is reported as not written.
    pub may_write: &'a (dyn Fn() -> bool + Send + Sync),
}

impl std::fmt::Debug for RunInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunInfo")
            .field("run_id", &self.run_id)
            .field("now", &self.now)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// Why a transition was not written when the Lease check refused it.
pub(crate) const NOT_WRITTEN_FENCED: &str =
    "not written: this process no longer holds the Lease or is stopping";

impl RunInfo<'_> {
    /// When this process may no longer write, the transitions not written (all of
    /// `rest`) go into `report` as failed, and the answer is true: stop.
    pub(crate) fn fenced(&self, rest: &[Transition], report: &mut ApplyReport) -> bool {
        if (self.may_write)() {
            return false;
        }
        tracing::warn!(
            run = self.run_id,
            left = rest.len(),
            "this process no longer holds the Lease or is stopping: writing nothing more"
        );
        report.failed.extend(
            rest.iter()
                .map(|t| (t.record.name.clone(), NOT_WRITTEN_FENCED.to_string())),
        );
        true
    }
}

/// What applying a plan did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Transitions written completely.
    pub applied: usize,
    /// Write requests issued to the store.
    pub writes: u64,
    /// Transitions that failed, with the record name and why.
    pub failed: Vec<(String, String)>,
    /// Records whose write did not land because the store no longer held the state
    /// the plan saw (another run wrote them since the snapshot): plan them again.
    pub conflicts: Vec<String>,
}

/// A failure of the store itself.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The Kubernetes API refused or failed a request.
    #[error("reading users from the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    /// The request names something that cannot be changed (the message says why).
    #[error("{0}")]
    Refused(String),
    /// PostgreSQL refused or failed a request, or could not be reached.
    #[error("{0}")]
    Postgres(String),
}

/// Every record of a namespace, as the planner sees them. Shared: a store may
/// hand the same records to several runs (the PostgreSQL store's warm copy).
pub type Snapshot = std::sync::Arc<Vec<UserRecord>>;

/// The registry of users of one namespace.
#[allow(async_fn_in_trait)]
pub trait UserStore {
    /// Every record, as the planner sees them.
    async fn snapshot(&mut self) -> Result<Snapshot, StoreError>;
    /// Apply transitions in order. Transitions of one phase may be written
    /// concurrently; a phase starts only after the previous one finished.
    async fn apply(
        &mut self,
        transitions: &[Transition],
        run: RunInfo<'_>,
    ) -> Result<ApplyReport, StoreError>;
}

/// The plan's transitions in batches of at most `size`, phase by phase (updates and
/// renames, imports, re-enables, preserves, deletes): a batch never spans two
/// phases, so its writes are independent of each other. Batches keep a first
/// import of 100k users from holding 100k pending writes in memory.
pub(crate) fn phase_batches(
    transitions: &[Transition],
    size: usize,
) -> impl Iterator<Item = &[Transition]> {
    transitions
        .chunk_by(|a, b| a.kind.phase() == b.kind.phase())
        .flat_map(move |phase| phase.chunks(size))
}

/// Where users are kept, chosen when the operator starts.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// DirectoryUser objects in each mapping's namespace.
    #[default]
    Kubernetes,
    /// Tables in PostgreSQL.
    Postgres(postgres::Database),
}

impl Backend {
    /// The store of `namespace`.
    pub fn open(&self, client: &kube::Client, namespace: &str) -> Store {
        match self {
            Backend::Kubernetes => Store::Kubernetes(Box::new(kubernetes::KubernetesStore::new(
                client.clone(),
                namespace,
            ))),
            Backend::Postgres(db) => Store::Postgres(db.store(namespace)),
        }
    }

    /// The store of `namespace` in the operator: a Kubernetes store plans from
    /// the namespace's watched copy in `warm` (its watch started on first use).
    pub fn open_warm(
        &self,
        client: &kube::Client,
        namespace: &str,
        warm: &warm::WarmRegistry,
    ) -> Store {
        match self {
            Backend::Kubernetes => Store::Kubernetes(Box::new(kubernetes::KubernetesStore::warm(
                client.clone(),
                namespace,
                warm.cache(namespace),
            ))),
            Backend::Postgres(db) => Store::Postgres(db.store(namespace)),
        }
    }

    /// Whether users are DirectoryUser objects (so Events can be about them).
    pub fn has_user_objects(&self) -> bool {
        matches!(self, Backend::Kubernetes)
    }
}

/// One entry of a user's history: a transition from the PostgreSQL audit log, or
/// an Event about its DirectoryUser.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub at: Timestamp,
    /// What happened, as the audit log or the Event says it.
    pub what: String,
    /// The run that did it, when one did.
    pub run: Option<String>,
    /// Who did it: a mapping's run, the connector's retention pass, or an admin.
    pub by: Option<String>,
}

/// The store of one namespace, of either kind.
pub enum Store {
    Kubernetes(Box<kubernetes::KubernetesStore>),
    Postgres(postgres::PostgresStore),
}

impl Store {
    /// Whether `mapping` of `connector` still owns a user that is not a tombstone.
    pub async fn owns_live_users(
        &self,
        connector: &str,
        mapping: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Kubernetes(s) => s.owns_live_users(connector, mapping).await,
            Store::Postgres(s) => s.owns_live_users(connector, mapping).await,
        }
    }

    /// The preserved directory users of `connector`: what its retention pass reads
    /// (not the whole registry).
    pub async fn preserved_of(&mut self, connector: &str) -> Result<Vec<UserRecord>, StoreError> {
        match self {
            Store::Kubernetes(s) => s.preserved_of(connector).await,
            Store::Postgres(s) => s.preserved_of(connector).await,
        }
    }

    /// What happened to user `name`, oldest first: the audit log in PostgreSQL; in
    /// the Kubernetes store, the Events about its DirectoryUser the API server
    /// still keeps (an hour by default).
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        match self {
            Store::Kubernetes(s) => s.history(name).await,
            Store::Postgres(s) => s.history(name).await,
        }
    }

    /// An admin's manual preserve, or its removal: `spec.preserve` of a
    /// DirectoryUser, or `manual_preserve` of a row (logged in the audit log).
    pub async fn set_manual_preserve(
        &self,
        name: &str,
        preserve: bool,
        actor: &str,
    ) -> Result<(), StoreError> {
        match self {
            Store::Kubernetes(s) => s.set_manual_preserve(name, preserve).await,
            Store::Postgres(s) => s.set_manual_preserve(name, preserve, actor).await,
        }
    }

    /// Record that a run started (the run history; DirectoryUser objects keep none
    /// beyond the mapping's status and Events).
    pub async fn run_started(
        &self,
        run_id: &str,
        mapping: &str,
        trigger: &str,
        started: Timestamp,
    ) -> Result<(), StoreError> {
        match self {
            Store::Kubernetes(_) => Ok(()),
            Store::Postgres(s) => s.run_started(run_id, mapping, trigger, started).await,
        }
    }

    /// Close the runs of `mapping` that started and never ended (the operator
    /// stopped during them) as failed.
    pub async fn close_interrupted_runs(&self, mapping: &str) -> Result<(), StoreError> {
        match self {
            Store::Kubernetes(_) => Ok(()),
            Store::Postgres(s) => s.close_interrupted_runs(mapping).await,
        }
    }

    /// Record how a run ended.
    pub async fn run_finished(
        &self,
        summary: &crate::api::RunSummary,
        writes: u64,
        finished: Timestamp,
    ) -> Result<(), StoreError> {
        match self {
            Store::Kubernetes(_) => Ok(()),
            Store::Postgres(s) => s.run_finished(summary, writes, finished).await,
        }
    }
}

impl UserStore for Store {
    async fn snapshot(&mut self) -> Result<Snapshot, StoreError> {
        match self {
            Store::Kubernetes(s) => s.snapshot().await,
            Store::Postgres(s) => s.snapshot().await,
        }
    }

    async fn apply(
        &mut self,
        transitions: &[Transition],
        run: RunInfo<'_>,
    ) -> Result<ApplyReport, StoreError> {
        match self {
            Store::Kubernetes(s) => s.apply(transitions, run).await,
            Store::Postgres(s) => s.apply(transitions, run).await,
        }
    }
}
