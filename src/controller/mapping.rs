//! The DirectoryMapping reconciler: resolves the policy and connector into `Ready`,
//! keeps the schedule, and starts runs (scheduled and on demand).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use super::readiness::{Readiness, mapping_readiness};
use super::ready::{OwnedFields, report_unreadable, write_ready_with};
use super::resolve::interval_of;
use super::run_id::new_run_id;
use super::sync::{self, publish};
use crate::api::{
    ConnectorHealth, DirectoryMapping, RunResult, RunTrigger, SYNC_REQUESTED_ANNOTATION,
    SyncPolicy, SyncRequest,
};
use crate::core::{OnDemand, is_due, next_run, on_demand, requeue_after};

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
            finalizer(
                &api,
                USERS_FINALIZER,
                Arc::new(mapping.clone()),
                |event| async {
                    match event {
                        FinalizerEvent::Apply(mapping) => reconcile_valid(mapping, &ctx).await,
                        FinalizerEvent::Cleanup(mapping) => release_users(mapping, &ctx).await,
                    }
                },
            )
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
    let (readiness, policy) = mapping_readiness(&policies, &connectors, &mapping).await?;
    let status = mapping.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();

    let requested = mapping
        .annotations()
        .get(SYNC_REQUESTED_ANNOTATION)
        .cloned();
    // The cache may not show our own latest writes yet: what this process did wins.
    let memory = ctx.memory(&mapping);
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
            let last_start = status
                .last_sync_time
                .as_ref()
                .map(|t| t.0)
                .max(memory.last_start);
            let mut started = None;
            match on_demand(requested.as_deref(), handled.as_deref(), running.is_some()) {
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
            if started.is_none() && running.is_none() && is_due(last_start, interval, now) {
                start_run(ctx, &mapping, RunTrigger::Schedule, now);
                started = Some(now);
            }
            // While a run is in progress the next run counts from its start.
            let counted_from = started.or(last_start);
            next_sync = next_run(counted_from, interval).map(Time);
            if started.is_none() && running.is_none() {
                action = Action::requeue(
                    requeue_after(now, next_sync.as_ref().map(|t| t.0))
                        .max(std::time::Duration::from_secs(1)),
                );
            }
        }
        _ => {
            // Not ready, or suspended: no runs, and a request says why it was not served.
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

    write_status(&api, &mapping, &readiness, next_sync, request).await?;
    Ok(action)
}

/// Held on every mapping so that, when it is deleted, its users go through the
/// unmapped rules (preserved, or transferred to another mapping) before it goes.
pub const USERS_FINALIZER: &str = "usersync.dev/users";

/// The last run of a deleted mapping: nothing is in scope any more. The mapping goes
/// once that run applied; a blocked or failed run keeps it (with status and Events
/// saying why) and is retried, so an admin can approve it like any other run.
async fn release_users(mapping: Arc<DirectoryMapping>, ctx: &Arc<Context>) -> Result<Action> {
    if let Some(run) = ctx.run_in_progress(&mapping) {
        tracing::info!(mapping = %mapping.name_any(), run = %run, "waiting for the run in progress before releasing users");
        return Ok(Action::requeue(std::time::Duration::from_secs(2)));
    }
    // A mapping that owns no live user has nothing to release.
    let store = ctx
        .backend
        .open(&ctx.client, &mapping.namespace().unwrap_or_default());
    let live = store
        .owns_live_users(&mapping.spec.connector_ref, &mapping.name_any())
        .await
        .map_err(|e| Error::Store(e.to_string()))?;
    if !live {
        return Ok(Action::await_change());
    }
    let run_id = new_run_id(jiff::Timestamp::now());
    if !ctx.claim_run(&mapping, &run_id) {
        return Ok(Action::requeue(std::time::Duration::from_secs(2)));
    }
    let summary = sync::run(
        ctx.clone(),
        mapping.clone(),
        RunTrigger::MappingDeleted,
        run_id.clone(),
    )
    .await;
    // Deletions a gate refused wait for the next run of the user's connector; only a
    // failed run or a threshold (which an admin must approve) keeps the mapping.
    let api: Api<DirectoryMapping> =
        Api::namespaced(ctx.client.clone(), &mapping.namespace().unwrap_or_default());
    let threshold_blocked = api
        .get_opt(&mapping.name_any())
        .await?
        .and_then(|m| m.status?.blocked_run)
        .is_some_and(|b| b.run_id == run_id);
    match summary.result {
        RunResult::Failed => Err(Error::Release(summary.message.unwrap_or_default())),
        RunResult::Blocked if threshold_blocked => {
            Err(Error::Release(summary.message.unwrap_or_default()))
        }
        _ => Ok(Action::await_change()),
    }
}

/// Claim the mapping and spawn its run; returns the run id.
fn start_run(
    ctx: &Arc<Context>,
    mapping: &Arc<DirectoryMapping>,
    trigger: RunTrigger,
    now: jiff::Timestamp,
) -> String {
    let run_id = new_run_id(now);
    if ctx.claim_run(mapping, &run_id) {
        ctx.remember(mapping, Some(now), None);
        let (ctx, mapping, id) = (ctx.clone(), mapping.clone(), run_id.clone());
        tokio::spawn(async move {
            let _slot = ctx.run_slots.clone().acquire_owned().await;
            sync::run(ctx, mapping, trigger, id).await;
        });
    }
    run_id
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

/// Apply the reconciler's part of the status (Ready, observedGeneration, nextSyncTime,
/// lastSyncRequest) when it changed.
async fn write_status(
    api: &Api<DirectoryMapping>,
    mapping: &DirectoryMapping,
    readiness: &Readiness,
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
    write_ready_with(
        api,
        mapping,
        &status.conditions,
        status.observed_generation,
        readiness,
        owned,
    )
    .await?;
    Ok(())
}
