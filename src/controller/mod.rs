//! The reconcilers and how they are wired to the API server.

mod approval;
mod backoff;
mod clock;
mod connection;
mod connector;
mod context;
mod error;
mod events;
pub mod leader;
mod mapping;
pub mod metrics;
pub mod planning;
mod policy;
mod push;
mod readiness;
mod ready;
pub mod resolve;
mod retention;
mod run_id;
mod run_status;
mod secret_watch;
mod status;
mod sync;
pub mod target;

pub use clock::{Clock, Fence};
pub use connection::{Directories, SECRET_READER_ROLE, SecretGrant};
pub use context::{Context, FIELD_MANAGER};
pub use error::{Error, Result};
pub use readiness::{READY, Readiness};

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::{ConnectorHealth, DirectoryMapping, ProvisioningTarget, RunApproval, SyncPolicy};

/// What the operator runs against.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// The namespaces to watch; every namespace when empty.
    pub namespaces: Vec<String>,
    /// How many mappings may sync at the same time (at least one).
    pub max_concurrent_runs: usize,
    /// Where runs and probes are counted.
    pub metrics: Arc<metrics::Metrics>,
    /// Set once the controllers are watching (for `/readyz`).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Where users are kept.
    pub store: crate::store::Backend,
    /// Where the controllers read the time (the system clock unless a test sets one).
    pub clock: Clock,
    /// Whether this process may write (holds the Lease); always open without
    /// leader election.
    pub fence: Fence,
    /// How a namespace grants the operator its Secrets, for the message of a
    /// connector whose namespace has not.
    pub secret_grant: SecretGrant,
}

/// One set of controllers watches one namespace, or all of them.
#[derive(Clone, Debug)]
struct Watched(Option<String>);

impl Watched {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.0 {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// The username the API server knows this process by (a SelfSubjectReview, which
/// every authenticated account may make), to name in a grant; none if it cannot
/// tell.
pub async fn whoami(client: &Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    match api
        .create(&Default::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(review) => review.status?.user_info?.username,
        Err(e) => {
            tracing::debug!(error = %e, "could not learn the operator's username");
            None
        }
    }
}

/// Run the controllers until SIGTERM or SIGINT.
pub async fn run(client: Client, scope: Scope) -> anyhow::Result<()> {
    run_until(client, scope, shutdown_signal()).await
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing reconciles in progress");
}

/// Run the controllers until `shutdown` resolves. Runs in progress stop writing and
/// are ended first, then reconciles in progress finish; only then does this return.
pub async fn run_until(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ctx = Context::new(
        client.clone(),
        scope.max_concurrent_runs,
        scope.metrics.clone(),
        scope.store.clone(),
    )
    .with_clock(scope.clock.clone())
    .with_fence(scope.fence.clone())
    .with_secret_grant(scope.secret_grant.clone());
    // Each controller waits on its own receiver: the controllers need a Sync trigger.
    // On shutdown the runs stop writing and end first; then the controllers stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = ctx.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.stop_runs().await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    scope
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let watched: Vec<Watched> = if scope.namespaces.is_empty() {
        vec![Watched(None)]
    } else {
        scope
            .namespaces
            .iter()
            .cloned()
            .map(|ns| Watched(Some(ns)))
            .collect()
    };
    let sets = watched.into_iter().map(|w| {
        tracing::info!(
            namespace = w.0.as_deref().unwrap_or("<all>"),
            "starting controllers"
        );
        controllers(client.clone(), w, ctx.clone(), stopped.clone()).boxed()
    });
    futures::future::join_all(sets).await;
    // Runs that started while the controllers were stopping end here too: once
    // this returns, nothing of this process writes, and the Lease may be released.
    ctx.stop_runs().await;
    tracing::info!("controllers stopped");
    Ok(())
}

/// The mapping, policy and connector controllers of one watched scope.
async fn controllers<S, F>(client: Client, scope: Watched, ctx: Context, stopped: S)
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + Sync + 'static,
{
    // Each set routes post-run reconciles to its own mapping controller.
    let (requeue_tx, requeue_rx) = tokio::sync::mpsc::unbounded_channel();
    let wc = watcher::Config::default().any_semantic();
    // RunApprovals: kept in a store that mapping reconciles look their approvals up
    // in; a new (undecided) one triggers its mapping at once.
    let (approval_store, approval_writer) = reflector::store();
    let approval_trigger = reflector::reflector(
        approval_writer,
        watcher(
            scope.api::<DeserializeGuard<RunApproval>>(&client),
            wc.clone(),
        ),
    )
    .default_backoff()
    .applied_objects();
    // Credential Secrets are watched per namespace that granted them; a change
    // reconciles the connectors that name the Secret.
    let (secret_tx, mut secret_rx) =
        tokio::sync::mpsc::unbounded_channel::<secret_watch::SecretChange>();
    let (to_connectors, connector_secret_rx) = tokio::sync::mpsc::unbounded_channel();
    let (to_targets, target_secret_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Targets cycle on an edited Secret: a change, or a listing (after the
        // watch restarted) of a version other than the last one seen.
        let mut versions: std::collections::HashMap<(String, String), Option<String>> =
            Default::default();
        while let Some(change) = secret_rx.recv().await {
            let (ns, name, version, listed) = &change;
            let last = versions.insert((ns.clone(), name.clone()), version.clone());
            let edited = !listed || last.is_some_and(|v| &v != version);
            if edited {
                let _ = to_targets.send(change.clone());
            }
            let _ = to_connectors.send(change);
        }
    });
    let ctx = Arc::new(
        ctx.with_requeue(requeue_tx)
            .with_approvals(approval_store)
            .with_secret_watches(secret_watch::SecretWatches::new(client.clone(), secret_tx)),
    );

    // Mappings: the trigger stream skips status-only changes (our own writes) but keeps
    // spec and annotation changes, which carry on-demand requests and approvals, and
    // finalizer changes (adding ours must lead to a reconcile of its own).
    let (mapping_store, mapping_writer) = reflector::store();
    let mapping_trigger = reflector::reflector(
        mapping_writer,
        watcher(
            scope.api::<DeserializeGuard<DirectoryMapping>>(&client),
            wc.clone(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(
        predicates::generation
            .combine(predicates::annotations)
            .combine(predicates::finalizers),
        Default::default(),
    );
    let by_policy = mapping_store.clone();
    let by_connector = mapping_store.clone();
    let mappings = Controller::for_stream(mapping_trigger, mapping_store)
        .watches(
            scope.api::<DeserializeGuard<SyncPolicy>>(&client),
            wc.clone(),
            move |policy| mappings_referring(&by_policy, &policy, |m| &m.spec.policy_ref),
        )
        .watches(
            scope.api::<DeserializeGuard<ConnectorHealth>>(&client),
            wc.clone(),
            move |connector| {
                mappings_referring(&by_connector, &connector, |m| &m.spec.connector_ref)
            },
        )
        .watches_stream(approval_trigger, |guard: DeserializeGuard<RunApproval>| {
            let approval = guard
                .0
                .ok()
                .filter(|a| !a.decided() && !a.spec.mapping_ref.is_empty())?;
            let ns = approval.namespace()?;
            Some(
                ObjectRef::<DeserializeGuard<DirectoryMapping>>::new(&approval.spec.mapping_ref)
                    .within(&ns),
            )
        })
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
            requeue_rx,
        ))
        .graceful_shutdown_on(stopped())
        .run(
            |obj, ctx| guarded(obj, ctx, mapping::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    // A policy counts the mappings that name it, so it follows their changes too.
    let policies = Controller::new(
        scope.api::<DeserializeGuard<SyncPolicy>>(&client),
        wc.clone(),
    )
    .watches(
        scope.api::<DeserializeGuard<DirectoryMapping>>(&client),
        wc.clone(),
        |guard| {
            let mapping = guard.0.ok()?;
            let ns = mapping.namespace()?;
            Some(
                ObjectRef::<DeserializeGuard<SyncPolicy>>::new(&mapping.spec.policy_ref)
                    .within(&ns),
            )
        },
    )
    .graceful_shutdown_on(stopped())
    .run(
        |obj, ctx| guarded(obj, ctx, policy::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(log_outcome);

    // Connectors follow their credential Secrets (metadata only: the operator never
    // caches Secret values), through the per-namespace watches.
    let connectors = Controller::new(
        scope.api::<DeserializeGuard<ConnectorHealth>>(&client),
        wc.clone(),
    );
    let connector_secrets = naming_secret(connectors.store(), connector_secret_rx, |c| {
        connector::secret_names(c).map(str::to_string).collect()
    });
    let connectors = connectors
        .reconcile_on(connector_secrets)
        .graceful_shutdown_on(stopped())
        .run(
            |obj, ctx| guarded(obj, ctx, connector::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    // Targets run a cycle per interval; an approval of a blocked cycle, a change of
    // spec or annotations, or of a Secret they read starts one. Their own status
    // writes do not.
    let (target_store, target_writer) = reflector::store();
    let target_trigger = reflector::reflector(
        target_writer,
        watcher(
            scope.api::<DeserializeGuard<ProvisioningTarget>>(&client),
            wc.clone(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(
        predicates::generation.combine(predicates::annotations),
        Default::default(),
    );
    // A Secret listed as its watch starts has not changed: only edits start cycles.
    let noted = ctx.clone();
    let target_secrets = naming_secret(target_store.clone(), target_secret_rx, |t| {
        target::secret_names(t).map(str::to_string).collect()
    })
    .inspect(move |target| {
        noted.note_credentials_changed(
            target.namespace.as_deref().unwrap_or_default(),
            &target.name,
        )
    });
    let targets = Controller::for_stream(target_trigger, target_store)
        .reconcile_on(target_secrets)
        .watches(
            scope.api::<DeserializeGuard<RunApproval>>(&client),
            wc.clone(),
            |guard| {
                let approval = guard
                    .0
                    .ok()
                    .filter(|a| !a.decided() && !a.spec.target_ref.is_empty())?;
                let ns = approval.namespace()?;
                Some(
                    ObjectRef::<DeserializeGuard<ProvisioningTarget>>::new(
                        &approval.spec.target_ref,
                    )
                    .within(&ns),
                )
            },
        )
        .graceful_shutdown_on(stopped())
        .run(
            |obj, ctx| guarded(obj, ctx, target::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    futures::join!(mappings, policies, connectors, targets);
}

/// The objects of `store` that read a Secret that changed, by the names `reads`
/// gives for each.
fn naming_secret<K>(
    store: reflector::Store<DeserializeGuard<K>>,
    changes: tokio::sync::mpsc::UnboundedReceiver<secret_watch::SecretChange>,
    reads: fn(&K) -> Vec<String>,
) -> impl futures::Stream<Item = ObjectRef<DeserializeGuard<K>>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    tokio_stream::wrappers::UnboundedReceiverStream::new(changes).flat_map(
        move |(ns, name, _, _): secret_watch::SecretChange| {
            let naming: Vec<_> = store
                .state()
                .into_iter()
                .filter(|guard| {
                    matches!(&guard.0, Ok(o) if o.namespace().as_deref() == Some(ns.as_str())
                        && reads(o).contains(&name))
                })
                .map(|guard| ObjectRef::from_obj(guard.as_ref()))
                .collect();
            futures::stream::iter(naming)
        },
    )
}

/// Mappings in the object's namespace whose reference (`field`) names it.
fn mappings_referring<K: Resource>(
    store: &reflector::Store<DeserializeGuard<DirectoryMapping>>,
    obj: &K,
    field: fn(&DirectoryMapping) -> &String,
) -> Vec<ObjectRef<DeserializeGuard<DirectoryMapping>>> {
    let (ns, name) = (obj.namespace(), obj.name_any());
    store
        .state()
        .into_iter()
        .filter(|g| matches!(&g.0, Ok(m) if m.namespace() == ns && *field(m) == name))
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Run a reconcile and keep the per-object backoff in step with its outcome.
async fn guarded<K, F, Fut>(obj: Arc<K>, ctx: Arc<Context>, reconcile: F) -> Result<Action>
where
    K: Resource,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let key = backoff_key(obj.as_ref());
    let outcome = reconcile(obj, ctx.clone()).await;
    if outcome.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    outcome
}

fn backoff_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        std::any::type_name::<K>(),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Transient errors are retried with a per-object exponential backoff.
fn error_policy<K: Resource>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = error
        .retry_in()
        .unwrap_or_else(|| ctx.backoff.failed(&backoff_key(obj.as_ref())));
    tracing::warn!(
        object = %obj.name_any(),
        namespace = obj.namespace().as_deref().unwrap_or(""),
        error_kind = error.kind(),
        error = %error,
        retry_in_s = delay.as_secs(),
        "reconcile failed; will retry"
    );
    Action::requeue(delay)
}

async fn log_outcome<T: Debug, E: std::fmt::Display>(outcome: Result<T, E>) {
    match outcome {
        Ok(obj) => tracing::debug!(?obj, "reconciled"),
        Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
    }
}
