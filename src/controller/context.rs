//! What every reconciler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Semaphore, mpsc};

use super::backoff::Backoff;
use crate::api::DirectoryMapping;

/// The field manager of the reconcilers' writes: conditions they own and every
/// DirectoryUser. Admins' fields are never written under it, so server-side apply
/// shows exactly what the operator owns.
pub const FIELD_MANAGER: &str = "usersync";

/// The field manager of the run results in a mapping's status (lastRun, counts,
/// Synced/Syncing/DeletionsBlocked). A second manager keeps the reconciler's and
/// the runner's fields from removing each other under server-side apply.
pub const RUNNER_FIELD_MANAGER: &str = "usersync-runner";

/// Shared state handed to every reconcile.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events; it aggregates repeats into series on its own.
    pub recorder: Recorder,
    /// Retry delays of objects whose reconcile failed.
    pub backoff: Arc<Backoff>,
    /// Runs in progress (or waiting for a slot), by mapping, with their ids.
    runs: Arc<Mutex<HashMap<String, String>>>,
    /// Bounds how many mappings sync at once.
    pub run_slots: Arc<Semaphore>,
    /// The operator's metrics.
    pub metrics: Arc<super::metrics::Metrics>,
    /// Asks the mapping controller to reconcile a mapping again (after a run).
    requeue: Option<mpsc::UnboundedSender<ObjectRef<DeserializeGuard<DirectoryMapping>>>>,
}

impl Context {
    /// A context for the given client, reporting Events as `usersync`.
    pub fn new(
        client: Client,
        max_concurrent_runs: usize,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: "usersync".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            backoff: Default::default(),
            runs: Default::default(),
            run_slots: Arc::new(Semaphore::new(max_concurrent_runs.max(1))),
            requeue: None,
            metrics,
        }
    }

    /// Route post-run reconciles to `sender`.
    pub(crate) fn with_requeue(
        mut self,
        sender: mpsc::UnboundedSender<ObjectRef<DeserializeGuard<DirectoryMapping>>>,
    ) -> Self {
        self.requeue = Some(sender);
        self
    }

    fn key(mapping: &DirectoryMapping) -> String {
        format!(
            "{}/{}",
            mapping.namespace().unwrap_or_default(),
            mapping.name_any()
        )
    }

    /// The id of the run of `mapping` in progress, if any.
    pub fn run_in_progress(&self, mapping: &DirectoryMapping) -> Option<String> {
        self.runs
            .lock()
            .expect("runs lock poisoned")
            .get(&Self::key(mapping))
            .cloned()
    }

    /// Claim the mapping for a run; false if one is already in progress.
    pub fn claim_run(&self, mapping: &DirectoryMapping, run_id: &str) -> bool {
        let mut runs = self.runs.lock().expect("runs lock poisoned");
        let key = Self::key(mapping);
        if runs.contains_key(&key) {
            return false;
        }
        runs.insert(key, run_id.to_string());
        true
    }

    /// Release the mapping after its run and ask for a fresh reconcile (the next
    /// schedule is computed from the run just recorded).
    pub fn finished(&self, mapping: &DirectoryMapping) {
        self.runs
            .lock()
            .expect("runs lock poisoned")
            .remove(&Self::key(mapping));
        if let Some(tx) = &self.requeue {
            let reference = ObjectRef::new(&mapping.name_any())
                .within(&mapping.namespace().unwrap_or_default());
            let _ = tx.send(reference);
        }
    }
}
