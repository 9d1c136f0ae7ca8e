//! The part of a mapping's status that runs own (`lastRun`, counts, the `Synced`,
//! `Syncing` and `DeletionsBlocked` conditions), written under the runner's own
//! field manager.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, ResourceExt};

use super::context::{Context, RUNNER_FIELD_MANAGER};
use crate::api::{
    DirectoryMapping, DirectoryMappingStatus, UserCounts, find_condition, set_condition,
};
use crate::core::{self, State, UserRecord};

/// Condition types the runner owns.
pub const SYNCED: &str = "Synced";
/// A run is in progress.
pub const SYNCING: &str = "Syncing";
/// A safety rule withheld preserves or deletions.
pub const DELETIONS_BLOCKED: &str = "DeletionsBlocked";

/// A run that another process (or this one before a restart) started and never
/// finished: the operator stopped or lost its Lease mid-run. Clear `syncInProgress`
/// and say so, and close the run in the store's history; when the run was due, the
/// schedule starts it again.
pub(crate) async fn mark_interrupted(ctx: &Context, mapping: &DirectoryMapping) {
    let ns = mapping.namespace().unwrap_or_default();
    let name = mapping.name_any();
    let api: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = mapping.status.clone().unwrap_or_default();
    let mut status = runner_status(&previous);
    status.sync_in_progress = false;
    let interrupted = find_condition(&previous.conditions, SYNCING)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    set(
        &mut status.conditions,
        SYNCING,
        false,
        "Interrupted",
        format!(
            "the operator stopped during a run ({interrupted}); nothing was lost, and a due run starts again"
        ),
        mapping,
        ctx.now(),
    );
    tracing::info!(mapping = %name, namespace = %ns, "a run cut off by a stop or failover is closed");
    if let Err(e) = write(&api, &name, &status).await {
        tracing::warn!(mapping = %name, error = %e, "could not clear the interrupted run");
    }
    let store = ctx.store(&ns);
    if let Err(e) = store.close_interrupted_runs(&name).await {
        tracing::warn!(mapping = %name, error = %e, "could not close the interrupted run in the store");
    }
}

/// The fields of the status the runner owns, carried over from `previous`.
pub(crate) fn runner_status(previous: &DirectoryMappingStatus) -> DirectoryMappingStatus {
    let owned = [SYNCED, SYNCING, DELETIONS_BLOCKED];
    DirectoryMappingStatus {
        conditions: previous
            .conditions
            .iter()
            .filter(|c| owned.contains(&c.type_.as_str()))
            .cloned()
            .collect(),
        last_sync_time: previous.last_sync_time.clone(),
        consecutive_failures: previous.consecutive_failures,
        sync_in_progress: previous.sync_in_progress,
        last_run: previous.last_run.clone(),
        blocked_run: previous.blocked_run.clone(),
        users: previous.users.clone(),
        read_cursor: previous.read_cursor.clone(),
        last_full_sync_time: previous.last_full_sync_time.clone(),
        ..Default::default()
    }
}

pub(crate) fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    mapping: &DirectoryMapping,
    now: jiff::Timestamp,
) {
    set_condition(
        conditions,
        type_,
        ok,
        reason,
        message,
        mapping.metadata.generation,
        now,
    );
}

pub(crate) async fn write(
    api: &Api<DirectoryMapping>,
    name: &str,
    status: &DirectoryMappingStatus,
) -> Result<(), kube::Error> {
    use kube::api::{Patch, PatchParams};
    let patch = serde_json::json!({
        "apiVersion": "usersync.dev/v1alpha1",
        "kind": "DirectoryMapping",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(RUNNER_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// This mapping's users by state once `transitions` are applied to `snapshot`,
/// without building the new registry.
pub(crate) fn counts_after(
    snapshot: &[UserRecord],
    transitions: &[core::Transition],
    connector: &str,
    mapping: &str,
) -> UserCounts {
    let changed: std::collections::HashMap<&str, &UserRecord> = transitions
        .iter()
        .map(|t| (t.record.name.as_str(), &t.record))
        .collect();
    let known: std::collections::HashSet<&str> = snapshot.iter().map(|r| r.name.as_str()).collect();
    let records = snapshot
        .iter()
        .map(|r| changed.get(r.name.as_str()).copied().unwrap_or(r))
        .chain(
            changed
                .iter()
                .filter(|(name, _)| !known.contains(*name))
                .map(|(_, r)| *r),
        );
    let mut counts = UserCounts::default();
    for r in records.filter(|r| r.is_owned_by(connector, mapping)) {
        match r.state {
            State::Active => counts.active += 1,
            State::Preserved => counts.preserved += 1,
            State::Deleted => counts.deleted += 1,
        }
    }
    counts
}
