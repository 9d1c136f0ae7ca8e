//! The DirectoryMapping reconciler: resolves the policy and connector, keeps the
//! schedule, starts runs (scheduled, on demand, after a spec edit), and sums it all
//! up as the mapping's health (`Ready`, `Reconciling`, `Stalled`).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};

use super::approval::{self, Granted};
use super::context::Context;
use super::error::{Error, Result};
use super::push::{self, PushDemand};
use super::readiness::{Readiness, Resolution, mapping_readiness};
use super::ready::{OwnedFields, report_unreadable, write_health};
use super::resolve::{checked_reference, interval_of};
use super::run_id::new_run_id;
use super::sync::{self, publish};
use crate::api::{
    APPROVE_RUN_ANNOTATION, ConnectorHealth, DirectoryMapping, RunResult, RunTrigger,
    SYNC_REQUESTED_ANNOTATION, SyncPolicy, SyncRequest,
};
use crate::core::{OnDemand, is_due, next_run, on_demand, requeue_after, run_spacing};

/// Reconcile one DirectoryMapping. A mapping that does not even deserialise is
/// reported as `InvalidSpec` instead of stopping the controller.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<DirectoryMapping>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    match &guard.0 {
        Ok(mapping) => {
            let ns = mapping.namespace().unwrap_or_default();
            let api: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
            // Without our finalizer in the cached copy, the copy may predate our own
            // adding of it (a second trigger right after the first reconcile): adding
            // it from there would fail its precondition. Read the object itself.
            let mapping = if mapping.finalizers().iter().any(|f| f == USERS_FINALIZER) {
                mapping.clone()
            } else {
                match api.get_opt(&mapping.name_any()).await? {
                    Some(fresh) => fresh,
                    None => return Ok(Action::await_change()),
                }
            };
            finalizer(&api, USERS_FINALIZER, Arc::new(mapping), |event| async {
                match event {
                    FinalizerEvent::Apply(mapping) => reconcile_valid(mapping, &ctx).await,
                    FinalizerEvent::Cleanup(mapping) => release_users(mapping, &ctx).await,
                }
            })
            .await
            .map_err(|e| Error::Finalizer(Box::new(e)))
        }
        Err(invalid) => {
            report_unreadable(&ctx.client, guard.as_ref(), invalid).await?;
            Ok(Action::await_change())
        }
    }
}

async fn reconcile_valid(mapping: Arc<DirectoryMapping>, ctx: &Arc<Context>) -> Result<Action> {
    let ns = mapping.namespace().unwrap_or_default();
    let api: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
    let policies: Api<SyncPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let connectors: Api<ConnectorHealth> = Api::namespaced(ctx.client.clone(), &ns);
    // The cache may not show our own latest writes yet: what this process did wins.
    let memory = ctx.memory(&mapping);
    let mapping = fresh_if_behind(&api, mapping, &memory).await?;
    let Resolution {
        readiness,
        policy,
        connector,
    } = mapping_readiness(&policies, &connectors, &mapping).await?;
    let status = mapping.status.clone().unwrap_or_default();
    let now = ctx.now();

    let requested = mapping
        .annotations()
        .get(SYNC_REQUESTED_ANNOTATION)
        .cloned();
    let mut request = memory
        .handled_request
        .clone()
        .or_else(|| status.last_sync_request.clone());
    let handled = request.as_ref().map(|r| r.value.clone());
    let running = ctx.run_in_progress(&mapping);
    // A run in progress that this process never started was cut off by a restart or
    // a failover: its runner is gone.
    if status.sync_in_progress && running.is_none() && memory.last_start.is_none() {
        sync::mark_interrupted(ctx, &mapping).await;
    }
    let mut next_sync = None;
    let mut action = Action::await_change();

    match (&policy, readiness.ready) {
        (Some(policy), true) if !policy.spec.suspend => {
            let interval = interval_of(policy).unwrap_or(std::time::Duration::from_secs(86_400));
            ctx.metrics
                .interval
                .get_or_create(&super::metrics::mapping_labels(&ns, &mapping.name_any()))
                .set(interval.as_secs_f64());
            let last_start = status
                .last_sync_time
                .as_ref()
                .map(|t| t.0)
                .max(memory.last_start);
            // After a failed run the next one comes sooner, backing off (section 4),
            // counted from when the failed run ended: one that took longer than its
            // backoff to fail is not retried at once.
            let failures = memory.failures.unwrap_or(status.consecutive_failures);
            let spacing = run_spacing(interval, failures);
            let last_start = if failures > 0 {
                last_start.max(last_finish(&status, &memory))
            } else {
                last_start
            };
            let mut started = None;
            // An approval of the run waiting for one starts that run at once: a
            // RunApproval (used once), or the annotation where the policy allows it.
            if running.is_none()
                && let (Some(approval), Some(blocked)) =
                    (approval::matching(ctx, &mapping), &status.blocked_run)
            {
                let run_id = new_run_id(now);
                if let Some(granted) = approval::take(ctx, &approval, &run_id, blocked).await? {
                    announce_approval(ctx, &mapping, &approval, &granted, &run_id).await;
                    launch(
                        ctx,
                        &mapping,
                        RunTrigger::OnDemand,
                        now,
                        run_id,
                        Some(granted),
                    );
                    started = Some(now);
                }
            }
            if let Some(approved) = new_approval(&mapping, &memory, policy)
                && running.is_none()
                && started.is_none()
            {
                let run_id = start_run(ctx, &mapping, RunTrigger::OnDemand, now);
                tracing::info!(mapping = %mapping.name_any(), approved = %approved, run = %run_id, "the approval annotation starts the blocked run");
                ctx.remember_approval(&mapping, &approved);
                started = Some(now);
            }
            // Approvals of any other run do nothing, and say so. While a run is in
            // progress the blocked run may be about to change: they wait for it.
            if running.is_none()
                && started.is_none()
                && let Err(e) = approval::report_stale(ctx, &mapping).await
            {
                tracing::warn!(mapping = %mapping.name_any(), error = %e, "could not report stale approvals");
            }
            match on_demand(
                requested.as_deref(),
                handled.as_deref(),
                running.is_some() || started.is_some(),
            ) {
                OnDemand::Start => {
                    let run_id = start_run(ctx, &mapping, RunTrigger::OnDemand, now);
                    request = Some(SyncRequest {
                        value: requested.clone().unwrap_or_default(),
                        outcome: format!("Started run {run_id}"),
                    });
                    ctx.remember(&mapping, None, request.as_ref());
                    started = Some(now);
                }
                OnDemand::Refused => {
                    let current = running.clone().unwrap_or_default();
                    let outcome = format!("Refused: run {current} of this mapping is in progress");
                    refuse(ctx, &mapping, &outcome).await;
                    request = Some(SyncRequest {
                        value: requested.clone().unwrap_or_default(),
                        outcome,
                    });
                    ctx.remember(&mapping, None, request.as_ref());
                }
                OnDemand::None => {}
            }
            // A spec edit is applied soon, not at the next interval, once no further
            // edit came for a moment. A first run needs no such rule: it is due at once.
            let edit_due = match (mapping.metadata.generation, &status.last_run) {
                (Some(generation), Some(_)) if run_generation(&status) != Some(generation) => {
                    Some(ctx.edit_seen(&mapping, generation, now) + EDIT_SETTLES)
                }
                _ => None,
            };
            if started.is_none()
                && running.is_none()
                && let Some(due) = edit_due.filter(|due| *due <= now)
            {
                let run_id = start_run(ctx, &mapping, RunTrigger::SpecChanged, now);
                tracing::info!(mapping = %mapping.name_any(), run = %run_id, due = %due, "the spec changed: a run applies it");
                started = Some(now);
            }
            if started.is_none() && running.is_none() && is_due(last_start, spacing, now) {
                start_run(ctx, &mapping, RunTrigger::Schedule, now);
                started = Some(now);
            }
            // Push mode: the channel stays open, and the changes it reported start
            // a run, one at a time; after a failed run the backoff above decides,
            // unless the channel has just opened again (the directory answers).
            match (&connector, policy.spec.push) {
                (Some(connector), true) => ctx.push.keep_open(ctx, &mapping, connector),
                _ => {
                    ctx.push.close(&mapping, &ctx.metrics);
                    push::clear_condition(ctx, &mapping).await;
                }
            }
            let push_run = match ctx.push.demand(&mapping) {
                PushDemand::None => false,
                PushDemand::Changes => failures == 0,
                PushDemand::Reopened => true,
            };
            if started.is_none() && running.is_none() && push_run {
                let run_id = start_run(ctx, &mapping, RunTrigger::Push, now);
                tracing::info!(mapping = %mapping.name_any(), run = %run_id, "the directory reported changes: a run reads them");
                started = Some(now);
            }
            if started.is_some() {
                ctx.push.served(&mapping);
            }
            // While a run is in progress the next run counts from its start.
            let counted_from = started.or(last_start);
            let scheduled = next_run(counted_from, spacing);
            next_sync = match (scheduled, edit_due.filter(|_| started.is_none())) {
                (Some(scheduled), Some(edit)) => Some(scheduled.min(edit)),
                (scheduled, edit) => scheduled.or(edit),
            }
            .map(Time);
            if started.is_none() && running.is_none() {
                action = Action::requeue(
                    requeue_after(now, next_sync.as_ref().map(|t| t.0))
                        .max(std::time::Duration::from_secs(1)),
                );
            }
        }
        _ => {
            // Not ready, or suspended: no runs, no push channel, and a request says
            // why it was not served.
            ctx.push.close(&mapping, &ctx.metrics);
            push::clear_condition(ctx, &mapping).await;
            if let Some(value) = requested.filter(|v| Some(v) != handled.as_ref()) {
                let why = match &policy {
                    Some(p) if p.spec.suspend => "the policy is suspended".to_string(),
                    _ => format!(
                        "the mapping is not ready ({}: {})",
                        readiness.reason, readiness.message
                    ),
                };
                let outcome = format!("Refused: {why}");
                refuse(ctx, &mapping, &outcome).await;
                request = Some(SyncRequest { value, outcome });
                ctx.remember(&mapping, None, request.as_ref());
            }
        }
    }

    let running = ctx.run_in_progress(&mapping);
    let verdict = health_of(
        &mapping,
        &readiness,
        policy.as_ref(),
        connector.as_ref(),
        running.as_deref(),
        next_sync.as_ref().map(|t| t.0),
        now,
    );
    write_status(&api, &mapping, &verdict, next_sync, request).await?;
    Ok(action)
}

/// How long a spec edit waits for further edits before a run applies it.
const EDIT_SETTLES: jiff::SignedDuration = jiff::SignedDuration::from_secs(5);

/// The generation the last run used (a run recorded before runs named theirs
/// counts as current).
fn run_generation(status: &crate::api::DirectoryMappingStatus) -> Option<i64> {
    let run = status.last_run.as_ref()?;
    run.observed_generation.or(status.observed_generation)
}

/// The mapping as the API server has it, when this process finished a run that the
/// cached copy does not show yet (its health would describe the run before).
async fn fresh_if_behind(
    api: &Api<DirectoryMapping>,
    mapping: Arc<DirectoryMapping>,
    memory: &super::context::MappingMemory,
) -> Result<Arc<DirectoryMapping>> {
    let recorded = mapping
        .status
        .as_ref()
        .and_then(|s| s.last_run.as_ref())
        .and_then(|r| r.finish_time.as_ref())
        .map(|t| t.0);
    if memory.last_finish.is_some()
        && memory.last_finish > recorded
        && let Some(fresh) = api.get_opt(&mapping.name_any()).await?
    {
        return Ok(Arc::new(fresh));
    }
    Ok(mapping)
}

/// The mapping's health: its references, then its last run for this generation.
#[allow(clippy::too_many_arguments)]
fn health_of(
    mapping: &DirectoryMapping,
    readiness: &Readiness,
    policy: Option<&SyncPolicy>,
    connector: Option<&ConnectorHealth>,
    running: Option<&str>,
    next_run: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> crate::core::health::Verdict {
    use crate::api::find_condition;
    use crate::core::health::{LastRun, MappingFacts, RunOutcome, mapping_health};
    let status = mapping.status.clone().unwrap_or_default();
    let since =
        |type_: &str| find_condition(&status.conditions, type_).map(|c| c.last_transition_time.0);
    let last_run = status.last_run.as_ref().map(|r| {
        let mut id = r.id.as_str();
        let (outcome, since) = match (r.result, &status.blocked_run) {
            (RunResult::Succeeded, _) => (RunOutcome::Applied, None),
            (RunResult::DryRun, _) => (RunOutcome::DryRun, None),
            (RunResult::Failed, _) => (RunOutcome::Failed, since(sync::SYNCED)),
            (RunResult::Blocked, Some(b)) => {
                // The id to approve is the blocked plan's, kept across retries.
                id = b.run_id.as_str();
                let outcome = RunOutcome::AwaitingApproval {
                    would_preserve: b.would_preserve,
                    would_delete: b.would_delete,
                };
                (outcome, None)
            }
            (RunResult::Blocked, None) => (
                RunOutcome::DeletionsDeferred,
                since(sync::DELETIONS_BLOCKED),
            ),
        };
        LastRun {
            id,
            generation: run_generation(&status),
            outcome,
            message: r.message.as_deref().unwrap_or_default(),
            since,
        }
    });
    let stale_after = connector
        .and_then(|c| crate::core::parse_duration(&c.spec.stale_after).ok())
        .unwrap_or(std::time::Duration::from_secs(300));
    mapping_health(&MappingFacts {
        name: &mapping.name_any(),
        generation: mapping.metadata.generation,
        unresolved: readiness.problem(),
        suspended: policy.is_some_and(|p| p.spec.suspend),
        running,
        last_run,
        next_run,
        stale_after,
        now,
    })
}

/// Held on every mapping so that, when it is deleted, its users go through the
/// unmapped rules (preserved, or transferred to another mapping) before it goes.
pub const USERS_FINALIZER: &str = "usersync.dev/users";

/// When the last run ended, by this process's memory or the status.
fn last_finish(
    status: &crate::api::DirectoryMappingStatus,
    memory: &super::context::MappingMemory,
) -> Option<jiff::Timestamp> {
    let recorded = status
        .last_run
        .as_ref()
        .and_then(|r| r.finish_time.as_ref())
        .map(|t| t.0);
    memory.last_finish.max(recorded)
}

/// The approval annotation, when the policy accepts it, it names the run now waiting
/// for approval and this process has not yet started a run for it.
fn new_approval(
    mapping: &DirectoryMapping,
    memory: &super::context::MappingMemory,
    policy: &SyncPolicy,
) -> Option<String> {
    if !policy.spec.safety.allow_annotation_approval {
        return None;
    }
    let approved = mapping.annotations().get(APPROVE_RUN_ANNOTATION)?.trim();
    let blocked = mapping.status.as_ref()?.blocked_run.as_ref()?;
    (approved == blocked.run_id && memory.handled_approval.as_deref() != Some(approved))
        .then(|| approved.to_string())
}

/// The last run of a deleted mapping: nothing is in scope any more, so its users go
/// through the unmapped rules. A mapping whose policy or connector is gone lets go
/// at once, without a read: its users stay as they are, and the connector's
/// retention pass deletes the preserved ones on schedule. A failed last run is
/// retried with the runs' backoff, and a threshold-blocked one waits for approval
/// (which starts it at once), a raised threshold or the next interval; both keep
/// the mapping, with `Ready` saying why.
async fn release_users(mapping: Arc<DirectoryMapping>, ctx: &Arc<Context>) -> Result<Action> {
    ctx.push.close(&mapping, &ctx.metrics);
    let released = try_release(mapping.clone(), ctx).await;
    if released.is_ok() {
        // A mapping created again under this name starts afresh.
        ctx.forget(&mapping);
    }
    released
}

/// The referenced object, `None` when it does not exist (or the reference is not
/// a name, so it cannot); an API failure is an error, never "gone".
async fn referenced<K>(api: &Api<K>, field: &str, name: &str) -> Result<Option<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match checked_reference(field, name) {
        Ok(name) => Ok(api.get_opt(name).await?),
        Err(_) => Ok(None),
    }
}

async fn try_release(mapping: Arc<DirectoryMapping>, ctx: &Arc<Context>) -> Result<Action> {
    if let Some(run) = ctx.run_in_progress(&mapping) {
        tracing::info!(mapping = %mapping.name_any(), run = %run, "waiting for the run in progress before releasing users");
        return Err(Error::Release {
            message: format!("run {run} is still in progress"),
            retry_in: std::time::Duration::from_secs(2),
        });
    }
    let ns = mapping.namespace().unwrap_or_default();
    let name = mapping.name_any();
    let policies: Api<SyncPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let connectors: Api<ConnectorHealth> = Api::namespaced(ctx.client.clone(), &ns);
    let policy = referenced(&policies, "spec.policyRef", &mapping.spec.policy_ref).await?;
    let connector = referenced(
        &connectors,
        "spec.connectorRef",
        &mapping.spec.connector_ref,
    )
    .await?;
    let (Some(policy), Some(_)) = (&policy, &connector) else {
        let gone = if policy.is_none() {
            format!("SyncPolicy {:?}", mapping.spec.policy_ref)
        } else {
            format!("ConnectorHealth {:?}", mapping.spec.connector_ref)
        };
        let note = format!(
            "{gone} is gone: the mapping lets go without reading the directory; its users stay as they are, and preserved ones are deleted on schedule by the connector's retention pass"
        );
        tracing::info!(mapping = %name, namespace = %ns, "{note}");
        publish(
            ctx,
            mapping.as_ref(),
            EventType::Normal,
            "Released",
            "Delete",
            note,
        )
        .await;
        return Ok(Action::await_change());
    };
    // A mapping that owns no live user has nothing to release.
    let store = ctx.store(&ns);
    let live = store
        .owns_live_users(&mapping.spec.connector_ref, &name)
        .await
        .map_err(|e| Error::Store(e.to_string()))?;
    if !live {
        return Ok(Action::await_change());
    }
    let now = ctx.now();
    let interval = interval_of(policy).unwrap_or(std::time::Duration::from_secs(86_400));
    let memory = ctx.memory(&mapping);
    let status = mapping.status.clone().unwrap_or_default();
    let approval = new_approval(&mapping, &memory, policy);
    let pending = approval::matching(ctx, &mapping);
    // What this process did last wins over a watch cache that may lag behind it.
    let last = memory.last_run.or_else(|| {
        status
            .last_run
            .as_ref()
            .map(|r| (r.trigger, r.result, r.start_time.0))
    });
    // Wait out the last attempt's backoff (a failure) or the interval (a plan
    // blocked by a threshold) unless an approval came in or the policy now allows
    // the blocked plan.
    if let Some((_, result, started)) = last.filter(|(trigger, _, _)| {
        *trigger == RunTrigger::MappingDeleted && approval.is_none() && pending.is_none()
    }) {
        let failures = memory.failures.unwrap_or(status.consecutive_failures);
        let blocked = status
            .blocked_run
            .as_ref()
            .filter(|b| result == RunResult::Blocked && !now_within_thresholds(b, policy));
        let spacing = match result {
            RunResult::Failed => Some(run_spacing(interval, failures)),
            RunResult::Blocked if blocked.is_some() => Some(interval),
            _ => None,
        };
        let started = Some(started)
            .max(memory.last_start)
            .max(last_finish(&status, &memory));
        if let Some(spacing) = spacing.filter(|s| !is_due(started, *s, now)) {
            let wait = requeue_after(now, next_run(started, spacing));
            let why = match blocked {
                Some(b) => format!(
                    "its last run would preserve {} and delete {} users, past the policy's thresholds; approve run {} (`usersync approve {name} {}`) or raise the thresholds",
                    b.would_preserve, b.would_delete, b.run_id, b.run_id
                ),
                None => {
                    let (id, message) = status
                        .last_run
                        .as_ref()
                        .map(|r| (r.id.as_str(), r.message.as_deref().unwrap_or_default()))
                        .unwrap_or_default();
                    format!("its last run {id} failed ({message}); it is retried with backoff")
                }
            };
            report_deleting(ctx, &mapping, &why, blocked.is_some()).await?;
            return Err(Error::Release {
                message: why,
                retry_in: wait.max(std::time::Duration::from_secs(1)),
            });
        }
    }
    let run_id = new_run_id(now);
    let granted = match (&pending, &status.blocked_run) {
        (Some(pending), Some(blocked)) => approval::take(ctx, pending, &run_id, blocked).await?,
        _ => None,
    };
    if let Some(granted) = &granted {
        announce_approval(ctx, &mapping, pending.as_ref().unwrap(), granted, &run_id).await;
    }
    if !ctx.claim_run(&mapping, &run_id) {
        return Err(Error::Release {
            message: "a run is in progress".into(),
            retry_in: std::time::Duration::from_secs(2),
        });
    }
    ctx.remember(&mapping, Some(now), None);
    if let Some(approved) = &approval {
        ctx.remember_approval(&mapping, approved);
    }
    let summary = sync::run(
        ctx.clone(),
        mapping.clone(),
        RunTrigger::MappingDeleted,
        run_id.clone(),
        granted,
    )
    .await;
    // Deletions a gate refused wait for the connector's retention pass; only a
    // failed run or a threshold (which an admin must approve) keeps the mapping.
    let api: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
    let blocked = api
        .get_opt(&name)
        .await?
        .and_then(|m| m.status?.blocked_run);
    let message = summary.message.clone().unwrap_or_default();
    let retry_in = match summary.result {
        RunResult::Failed => run_spacing(interval, ctx.memory(&mapping).failures.unwrap_or(1)),
        RunResult::Blocked if blocked.is_some() => interval,
        RunResult::DryRun => {
            let note = "the policy is in dry run: the mapping's last run applied nothing, so its users stay as they are (Active ones stay Active); preserved ones are deleted on schedule by the connector's retention pass".to_string();
            publish(
                ctx,
                mapping.as_ref(),
                EventType::Warning,
                "Released",
                "Delete",
                note,
            )
            .await;
            return Ok(Action::await_change());
        }
        _ => return Ok(Action::await_change()),
    };
    report_deleting(
        ctx,
        &mapping,
        &format!("its last run {run_id} did not apply: {message}"),
        summary.result == RunResult::Blocked,
    )
    .await?;
    Err(Error::Release { message, retry_in })
}

/// Whether the policy as it is now would let the blocked plan through (an admin
/// raised the thresholds).
fn now_within_thresholds(blocked: &crate::api::BlockedRun, policy: &SyncPolicy) -> bool {
    let Ok(policy) = super::resolve::policy_of(policy) else {
        return false;
    };
    matches!(
        crate::core::check_thresholds(
            blocked.would_preserve as usize,
            blocked.would_delete as usize,
            blocked.active_users as usize,
            &policy,
            None,
        ),
        crate::core::ThresholdVerdict::Within
    )
}

/// The health of a mapping being deleted, saying what keeps it (recomputed on every
/// attempt, so it never describes a state that has passed): Stalled while a run
/// waits for approval, Reconciling while a failed one is retried.
async fn report_deleting(
    ctx: &Context,
    mapping: &DirectoryMapping,
    why: &str,
    awaiting_approval: bool,
) -> Result<()> {
    use crate::core::health::{Health, Verdict};
    let api: Api<DirectoryMapping> =
        Api::namespaced(ctx.client.clone(), &mapping.namespace().unwrap_or_default());
    let status = mapping.status.clone().unwrap_or_default();
    let verdict = Verdict {
        health: if awaiting_approval {
            Health::Stalled
        } else {
            Health::Reconciling
        },
        reason: "Deleting".into(),
        message: format!(
            "the mapping is being deleted and keeps its users until its last run applies: {why}"
        ),
    };
    write_status(
        &api,
        mapping,
        &verdict,
        status.next_sync_time.clone(),
        status.last_sync_request.clone(),
    )
    .await
}

/// Claim the mapping and spawn its run; returns the run id.
fn start_run(
    ctx: &Arc<Context>,
    mapping: &Arc<DirectoryMapping>,
    trigger: RunTrigger,
    now: jiff::Timestamp,
) -> String {
    let run_id = new_run_id(now);
    launch(ctx, mapping, trigger, now, run_id.clone(), None);
    run_id
}

/// Claim the mapping and spawn run `run_id`, with the approval it applies, if any.
fn launch(
    ctx: &Arc<Context>,
    mapping: &Arc<DirectoryMapping>,
    trigger: RunTrigger,
    now: jiff::Timestamp,
    run_id: String,
    approval: Option<Granted>,
) {
    if ctx.claim_run(mapping, &run_id) {
        ctx.remember(mapping, Some(now), None);
        let (ctx, mapping) = (ctx.clone(), mapping.clone());
        let task = {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _slot = ctx.run_slots.clone().acquire_owned().await;
                sync::run(ctx, mapping, trigger, run_id, approval).await;
            })
        };
        ctx.track_run(task);
    }
}

/// Say, on the mapping and on the approval, who approved the blocked run and which
/// run applies it.
async fn announce_approval(
    ctx: &Context,
    mapping: &DirectoryMapping,
    approval: &crate::api::RunApproval,
    granted: &Granted,
    run_id: &str,
) {
    tracing::info!(
        mapping = %mapping.name_any(), namespace = mapping.namespace().as_deref().unwrap_or(""),
        run = %run_id, blocked_run = %granted.run_id, approved_by = %granted.approved_by,
        approval = %granted.name, "an approval starts the blocked run"
    );
    let note = format!(
        "run {run_id} starts: blocked run {} was {}",
        granted.run_id,
        granted.describe()
    );
    publish(
        ctx,
        mapping,
        EventType::Normal,
        "RunApproved",
        "Approve",
        note.clone(),
    )
    .await;
    publish(
        ctx,
        approval,
        EventType::Normal,
        "RunApproved",
        "Approve",
        note,
    )
    .await;
}

async fn refuse(ctx: &Context, mapping: &DirectoryMapping, outcome: &str) {
    tracing::info!(mapping = %mapping.name_any(), outcome, "on-demand sync request not served");
    publish(
        ctx,
        mapping,
        EventType::Warning,
        "SyncRefused",
        "SyncRequest",
        outcome.to_string(),
    )
    .await;
}

/// Apply the reconciler's part of the status (its health, observedGeneration,
/// nextSyncTime, lastSyncRequest) when it changed.
async fn write_status(
    api: &Api<DirectoryMapping>,
    mapping: &DirectoryMapping,
    verdict: &crate::core::health::Verdict,
    next_sync: Option<Time>,
    request: Option<SyncRequest>,
) -> Result<()> {
    let status = mapping.status.clone().unwrap_or_default();
    let unchanged = status.next_sync_time == next_sync && status.last_sync_request == request;
    let mut fields = serde_json::Map::new();
    if let Some(next) = next_sync {
        fields.insert("nextSyncTime".into(), serde_json::to_value(next)?);
    }
    if let Some(request) = request {
        fields.insert("lastSyncRequest".into(), serde_json::to_value(request)?);
    }
    let owned = OwnedFields { fields, unchanged };
    write_health(
        api,
        mapping,
        &status.conditions,
        status.observed_generation,
        verdict,
        owned,
    )
    .await?;
    Ok(())
}
