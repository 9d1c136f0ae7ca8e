//! What every reconciler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef};
use tokio::sync::{Semaphore, mpsc};

use super::backoff::Backoff;
use crate::api::{DirectoryMapping, RunApproval};

pub use crate::api::{FIELD_MANAGER, RUNNER_FIELD_MANAGER};

/// What this process last did for one mapping. The object a reconcile gets comes
/// from the watch cache, which can lag behind the operator's own status writes; a
/// schedule or request decided from a stale copy would double a run or refuse a
/// request that already started one.
#[derive(Clone, Debug, Default)]
pub struct MappingMemory {
    /// When the last run this process started began.
    pub last_start: Option<jiff::Timestamp>,
    /// The last on-demand request this process handled, and its outcome.
    pub handled_request: Option<crate::api::SyncRequest>,
    /// Failed runs in a row as of the last run this process finished.
    pub failures: Option<u32>,
    /// When the last run this process finished ended.
    pub last_finish: Option<jiff::Timestamp>,
    /// What started that run, how it ended, and when it started.
    pub last_run: Option<(
        crate::api::RunTrigger,
        crate::api::RunResult,
        jiff::Timestamp,
    )>,
    /// The last approval (a blocked run's id) this process started a run for.
    pub handled_approval: Option<String>,
    /// A generation of the spec that no run has applied yet, and when this process
    /// first saw it: its run waits a moment for further edits.
    pub edited: Option<(i64, jiff::Timestamp)>,
}

/// Shared state handed to every reconcile.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events, one object per occurrence.
    pub recorder: super::events::Recorder,
    /// Retry delays of objects whose reconcile failed.
    pub backoff: Arc<Backoff>,
    /// Runs in progress (or waiting for a slot), by mapping, with their ids.
    runs: Arc<Mutex<HashMap<String, String>>>,
    /// What this process did per mapping, which the watch cache may not show yet.
    memory: Arc<Mutex<HashMap<String, MappingMemory>>>,
    /// When each connector's retention pass last ran, by this context's clock.
    sweeps: Arc<Mutex<HashMap<String, jiff::Timestamp>>>,
    /// Targets (`namespace/name`) a Secret of which changed since their last cycle.
    credentials_changed: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Bounds how many mappings sync at once.
    pub run_slots: Arc<Semaphore>,
    /// The operator's metrics.
    pub metrics: Arc<super::metrics::Metrics>,
    /// Where users are kept.
    pub backend: crate::store::Backend,
    /// The watched DirectoryUsers of the namespaces in use, which runs plan from.
    warm: Arc<crate::store::warm::WarmRegistry>,
    /// What the directory sources share across runs and probes.
    pub directories: super::connection::Directories,
    /// Where the time comes from.
    pub clock: super::Clock,
    /// Whether this process holds the Lease.
    fence: super::Fence,
    /// Set when the process begins to stop: runs write nothing more.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The tasks of runs in progress, so that a stop can end them before the Lease
    /// is released.
    run_tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Asks the mapping controller to reconcile a mapping again (after a run).
    requeue: Option<mpsc::UnboundedSender<ObjectRef<DeserializeGuard<DirectoryMapping>>>>,
    /// The watched RunApprovals, which a mapping reconcile looks its approvals up in.
    approvals: Option<reflector::Store<DeserializeGuard<RunApproval>>>,
    /// The push channels of mappings whose policy turns push mode on.
    pub push: Arc<super::push::PushChannels>,
}

impl Context {
    /// A context for the given client, reporting Events as `usersync`.
    pub fn new(
        client: Client,
        max_concurrent_runs: usize,
        metrics: Arc<super::metrics::Metrics>,
        backend: crate::store::Backend,
    ) -> Self {
        Self {
            recorder: super::events::Recorder::new(client.clone(), std::env::var("POD_NAME").ok()),
            warm: Arc::new(crate::store::warm::WarmRegistry::new(client.clone())),
            client,
            backoff: Default::default(),
            runs: Default::default(),
            memory: Default::default(),
            sweeps: Default::default(),
            credentials_changed: Default::default(),
            run_slots: Arc::new(Semaphore::new(max_concurrent_runs.max(1))),
            requeue: None,
            approvals: None,
            push: Default::default(),
            clock: super::Clock::system(),
            fence: super::Fence::open(),
            stopping: Default::default(),
            run_tasks: Default::default(),
            directories: super::connection::Directories {
                secrets: Default::default(),
                tokens: Default::default(),
                metrics: Some(metrics.clone()),
            },
            metrics,
            backend,
        }
    }

    /// Note that a Secret target `namespace/name` reads changed: its next
    /// reconcile runs a cycle.
    pub fn note_credentials_changed(&self, namespace: &str, name: &str) {
        self.credentials_changed
            .lock()
            .expect("credentials lock poisoned")
            .insert(format!("{namespace}/{name}"));
    }

    /// Whether a Secret of target `namespace/name` changed since its last cycle;
    /// `take` forgets it (the cycle that answers it starts).
    pub fn credentials_changed(&self, namespace: &str, name: &str, take: bool) -> bool {
        let key = format!("{namespace}/{name}");
        let mut changed = self
            .credentials_changed
            .lock()
            .expect("credentials lock poisoned");
        if take {
            changed.remove(&key)
        } else {
            changed.contains(&key)
        }
    }

    /// The store of `namespace`; in the Kubernetes store, it plans from the
    /// namespace's watched copy, shared by every run there.
    pub fn store(&self, namespace: &str) -> crate::store::Store {
        self.backend.open_warm(&self.client, namespace, &self.warm)
    }

    /// Whether the retention pass of connector `key` is due at `now` (`every` after
    /// the last one); when it is, the pass counts as started now.
    pub fn sweep_due(&self, key: &str, now: jiff::Timestamp, every: std::time::Duration) -> bool {
        let mut sweeps = self.sweeps.lock().expect("sweeps lock poisoned");
        let due = sweeps
            .get(key)
            .is_none_or(|last| crate::core::is_due(Some(*last), every, now));
        if due {
            sweeps.insert(key.to_string(), now);
        }
        due
    }

    /// Read the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: super::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Write only while `fence` is open.
    pub fn with_fence(mut self, fence: super::Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Whether this process holds the Lease (it may be stopping): what it has
    /// sent may still be recorded.
    pub fn holds_lease(&self) -> bool {
        self.fence.is_open()
    }

    /// Whether this process may write now: it holds the Lease and is not stopping.
    pub fn may_write(&self) -> bool {
        !self.stopping.load(std::sync::atomic::Ordering::SeqCst) && self.fence.is_open()
    }

    /// Keep the task of a run, to end it when the process stops.
    pub fn track_run(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.run_tasks.lock().expect("run tasks lock poisoned");
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Stop: no run writes from now on, and the runs in progress are ended. When
    /// this returns, nothing of this process writes users any more.
    pub async fn stop_runs(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.push.close_all();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.run_tasks.lock().expect("run tasks lock poisoned"));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The current time by this context's clock.
    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    /// Name `grant` to a namespace that has not given the operator its Secrets.
    pub fn with_secret_grant(mut self, grant: super::connection::SecretGrant) -> Self {
        self.directories.secrets.grant = Arc::new(grant);
        self
    }

    /// Watch the credential Secrets of namespaces that granted them with `watches`.
    pub(crate) fn with_secret_watches(
        mut self,
        watches: Arc<super::secret_watch::SecretWatches>,
    ) -> Self {
        self.directories.secrets.watches = Some(watches);
        self
    }

    /// Route post-run reconciles to `sender`.
    pub(crate) fn with_requeue(
        mut self,
        sender: mpsc::UnboundedSender<ObjectRef<DeserializeGuard<DirectoryMapping>>>,
    ) -> Self {
        self.requeue = Some(sender);
        self
    }

    /// Look approvals up in `store` (the controllers' watch of RunApprovals).
    pub(crate) fn with_approvals(
        mut self,
        store: reflector::Store<DeserializeGuard<RunApproval>>,
    ) -> Self {
        self.approvals = Some(store);
        self
    }

    /// The RunApprovals of `mapping` not yet used or found stale, oldest first, as
    /// the watch cache has them.
    /// The undecided approvals in `namespace` that name target `target`, oldest first.
    pub(crate) fn undecided_target_approvals(
        &self,
        namespace: &str,
        target: &str,
    ) -> Vec<RunApproval> {
        let Some(store) = &self.approvals else {
            return Vec::new();
        };
        let mut found: Vec<RunApproval> = store
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|a| {
                a.namespace().as_deref() == Some(namespace)
                    && a.spec.target_ref == target
                    && !a.decided()
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            (a.creation_timestamp(), a.name_any()).cmp(&(b.creation_timestamp(), b.name_any()))
        });
        found
    }

    pub(crate) fn undecided_approvals(&self, mapping: &DirectoryMapping) -> Vec<RunApproval> {
        let Some(store) = &self.approvals else {
            return Vec::new();
        };
        let (ns, name) = (mapping.namespace(), mapping.name_any());
        let mut found: Vec<RunApproval> = store
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|a| a.namespace() == ns && a.spec.mapping_ref == name && !a.decided())
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            (a.creation_timestamp(), a.name_any()).cmp(&(b.creation_timestamp(), b.name_any()))
        });
        found
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

    /// What this process remembers of `mapping`.
    pub fn memory(&self, mapping: &DirectoryMapping) -> MappingMemory {
        self.memory
            .lock()
            .expect("memory lock poisoned")
            .get(&Self::key(mapping))
            .cloned()
            .unwrap_or_default()
    }

    /// Remember a run start and/or a handled request of `mapping`.
    pub fn remember(
        &self,
        mapping: &DirectoryMapping,
        start: Option<jiff::Timestamp>,
        request: Option<&crate::api::SyncRequest>,
    ) {
        let mut memory = self.memory.lock().expect("memory lock poisoned");
        let entry = memory.entry(Self::key(mapping)).or_default();
        if let Some(start) = start {
            entry.last_start = Some(start);
        }
        if let Some(request) = request {
            entry.handled_request = Some(request.clone());
        }
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

    /// Remember that a run was started for the approval of blocked run `run_id`.
    pub fn remember_approval(&self, mapping: &DirectoryMapping, run_id: &str) {
        let mut memory = self.memory.lock().expect("memory lock poisoned");
        memory
            .entry(Self::key(mapping))
            .or_default()
            .handled_approval = Some(run_id.to_string());
    }

    /// When this process first saw `generation` of `mapping` waiting for a run.
    pub fn edit_seen(
        &self,
        mapping: &DirectoryMapping,
        generation: i64,
        now: jiff::Timestamp,
    ) -> jiff::Timestamp {
        let mut memory = self.memory.lock().expect("memory lock poisoned");
        let entry = memory.entry(Self::key(mapping)).or_default();
        match entry.edited {
            Some((seen, at)) if seen == generation => at,
            _ => {
                entry.edited = Some((generation, now));
                now
            }
        }
    }

    /// Forget what this process remembers of `mapping` (it is gone).
    pub fn forget(&self, mapping: &DirectoryMapping) {
        self.memory
            .lock()
            .expect("memory lock poisoned")
            .remove(&Self::key(mapping));
    }

    /// Release the mapping after its run `run`, which left `failures` failed runs
    /// in a row, and ask for a fresh reconcile (the next schedule is computed from the
    /// run just recorded).
    pub fn finished(
        &self,
        mapping: &DirectoryMapping,
        run: &crate::api::RunSummary,
        failures: u32,
    ) {
        {
            let mut memory = self.memory.lock().expect("memory lock poisoned");
            let entry = memory.entry(Self::key(mapping)).or_default();
            entry.failures = Some(failures);
            entry.last_finish = run.finish_time.as_ref().map(|t| t.0);
            entry.last_run = Some((run.trigger, run.result, run.start_time.0));
        }
        self.runs
            .lock()
            .expect("runs lock poisoned")
            .remove(&Self::key(mapping));
        self.reconcile_soon(mapping);
    }

    /// Ask the mapping controller to reconcile `mapping` again.
    pub fn reconcile_soon(&self, mapping: &DirectoryMapping) {
        if let Some(tx) = &self.requeue {
            let reference = ObjectRef::new(&mapping.name_any())
                .within(&mapping.namespace().unwrap_or_default());
            let _ = tx.send(reference);
        }
    }
}
