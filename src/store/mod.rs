//! The registry of users, behind one interface with two implementations:
//! [`kubernetes`] (DirectoryUser objects, the default) and, later, PostgreSQL.

pub mod kubernetes;
mod record;

pub use record::{record_from_user, user_state_label};

use jiff::Timestamp;
use thiserror::Error;

use crate::core::{Policy, Transition, UserRecord};

/// Which run is applying, for the records it writes.
#[derive(Clone, Copy, Debug)]
pub struct RunInfo<'a> {
    /// The run's id, written to each changed user's `lastSyncRun`.
    pub run_id: &'a str,
    /// The run's clock reading.
    pub now: Timestamp,
    /// The policy in force, for retention deadlines.
    pub policy: &'a Policy,
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
}

/// A failure of the store itself.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The Kubernetes API refused or failed a request.
    #[error("reading users from the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
}

/// The registry of users of one namespace.
#[allow(async_fn_in_trait)]
pub trait UserStore {
    /// Every record, as the planner sees them.
    async fn snapshot(&mut self) -> Result<Vec<UserRecord>, StoreError>;
    /// Apply transitions in order. Transitions of one phase may be written
    /// concurrently; a phase starts only after the previous one finished.
    async fn apply(
        &mut self,
        transitions: &[Transition],
        run: RunInfo<'_>,
    ) -> Result<ApplyReport, StoreError>;
}
