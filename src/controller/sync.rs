//! One run of one mapping: resolve → read → plan (pure) → apply → report. Only the
//! two ends touch the API server and the directory.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};

use super::approval::Granted;
use super::context::{Context, RUNNER_FIELD_MANAGER};
use super::planning::{Prepared, ViewFrom, prepare};
use super::resolve::gate_of;
use crate::api::{
    BlockedRun, ConnectorHealth, DirectoryMapping, DirectoryMappingStatus, RunResult, RunSummary,
    RunTrigger, UserCounts, find_condition, set_condition,
};
use crate::core::{self, PlanOutcome, State, TransitionKind, UserRecord};
use crate::store::{RunInfo, UserStore};

/// Condition types the runner owns.
pub const SYNCED: &str = "Synced";
/// A run is in progress.
pub const SYNCING: &str = "Syncing";
/// A safety rule withheld preserves or deletions.
pub const DELETIONS_BLOCKED: &str = "DeletionsBlocked";

/// How often a run plans again the users whose writes conflicted with another run's.
const MAX_REPLANS: usize = 3;

/// Per-user Events per run; past this a summary says how many more there were,
/// so a mass change does not flood the API.
const USER_EVENTS_PER_RUN: usize = 20;

/// What the run found, for status, Events and the caller.
pub struct RunReport {
    pub summary: RunSummary,
    pub blocked: Option<BlockedRun>,
    pub blocked_message: Option<String>,
    pub users: Option<UserCounts>,
    /// API writes the run issued for users.
    pub writes: u64,
    /// Directory users not imported, and why (collisions with Manual/CSV users).
    pub skips: Vec<String>,
    /// Deletions the plan wanted, and how many of them were withheld.
    pub deletions: (u64, u64),
    /// Where the next incremental read continues, to keep once the run applied fully.
    pub next_cursor: Option<String>,
}

/// A deleted mapping's last run sees nothing in scope; every other run reads the directory.
fn view_from(trigger: RunTrigger) -> ViewFrom {
    match trigger {
        RunTrigger::MappingDeleted => ViewFrom::Nothing,
        RunTrigger::Schedule | RunTrigger::OnDemand | RunTrigger::SpecChanged => {
            ViewFrom::Directory
        }
    }
}

/// Run `mapping` once and record the outcome in its status and Events; `approval`
/// is the RunApproval of the blocked run that this run applies, if one started it.
pub async fn run(
    ctx: Arc<Context>,
    mapping: Arc<DirectoryMapping>,
    trigger: RunTrigger,
    run_id: String,
    approval: Option<Granted>,
) -> RunSummary {
    let ns = mapping.namespace().unwrap_or_default();
    let name = mapping.name_any();
    let api: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
    let start = ctx.now();

    let previous = api
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .and_then(|m| m.status)
        .unwrap_or_default();
    let mut status = runner_status(&previous);
    status.sync_in_progress = true;
    set(
        &mut status.conditions,
        SYNCING,
        true,
        "RunInProgress",
        format!("run {run_id} started"),
        &mapping,
        start,
    );
    if let Err(e) = write(&api, &name, &status).await {
        tracing::warn!(mapping = %name, error = %e, "could not mark the run as started");
    }

    let clock = Instant::now();
    // The store's run history (PostgreSQL keeps one; its audit rows name the run).
    let history = ctx.backend.open(&ctx.client, &ns);
    let report = match history
        .run_started(&run_id, &name, &format!("{trigger:?}"), start)
        .await
    {
        Ok(()) => {
            execute(
                &ctx,
                &mapping,
                trigger,
                &run_id,
                start,
                previous.blocked_run.as_ref(),
                approval.as_ref().map(|a| a.run_id.as_str()),
            )
            .await
        }
        Err(e) => failed(&run_id, trigger, start, e.to_string()),
    };
    let mut summary = report.summary.clone();
    summary.observed_generation = mapping.metadata.generation;
    if let Some(approval) = &approval {
        summary.approved_by = Some(approval.approved_by.clone());
        summary.approval_ref = Some(approval.name.clone());
        let message = summary.message.get_or_insert_default();
        message.push_str(&format!(
            "; blocked run {} {}",
            approval.run_id,
            approval.describe()
        ));
    }
    summary.duration = Some(format!("{:.1}s", clock.elapsed().as_secs_f64()));
    let finished = ctx.now();
    summary.finish_time = Some(Time(finished));
    if let Err(e) = history
        .run_finished(&summary, report.writes, ctx.now())
        .await
    {
        tracing::warn!(mapping = %name, run = %run_id, error = %e, "could not record the run's outcome in the store");
    }
    tracing::info!(
        mapping = %name, namespace = %ns, run = %run_id, result = ?summary.result,
        approved_by = summary.approved_by.as_deref().unwrap_or(""),
        imported = summary.imported, updated = summary.updated, preserved = summary.preserved,
        reenabled = summary.reenabled, deleted = summary.deleted, skipped = summary.skipped,
        writes = report.writes, duration = summary.duration.as_deref().unwrap_or(""), "run finished"
    );

    record_metrics(&ctx, &ns, &name, &summary, &report, clock.elapsed());

    let now = ctx.now();
    status.sync_in_progress = false;
    // A failed run counts as the start of the next wait, which backs off from 30s
    // by the failures in a row (up to the interval); any other outcome resets it.
    status.last_sync_time = Some(Time(start));
    status.consecutive_failures = match summary.result {
        RunResult::Failed => previous.consecutive_failures.saturating_add(1),
        _ => 0,
    };
    status.last_run = Some(summary.clone());
    // The cursor moves only after a run applied everything it read: a blocked or
    // failed run reads the same changes again next time.
    if summary.result == RunResult::Succeeded {
        status.read_cursor = report
            .next_cursor
            .clone()
            .zip(mapping.metadata.generation)
            .map(|(value, generation)| crate::api::ReadCursor { value, generation });
        if summary.read == Some(crate::api::ReadMode::Full) {
            status.last_full_sync_time = Some(Time(start));
        }
    }
    if report.users.is_some() {
        status.users = report.users;
    }
    set(
        &mut status.conditions,
        SYNCING,
        false,
        "Idle",
        format!("run {run_id} finished"),
        &mapping,
        now,
    );
    let (synced, reason) = match summary.result {
        RunResult::Succeeded => (true, "Succeeded"),
        RunResult::DryRun => (true, "DryRun"),
        RunResult::Blocked => (true, "PartiallyApplied"),
        RunResult::Failed => (false, "RunFailed"),
    };
    let message = summary.message.clone().unwrap_or_default();
    set(
        &mut status.conditions,
        SYNCED,
        synced,
        reason,
        format!("run {run_id}: {message}"),
        &mapping,
        now,
    );
    match &report.blocked_message {
        Some(why) => {
            set(
                &mut status.conditions,
                DELETIONS_BLOCKED,
                true,
                "SafetyRule",
                why.clone(),
                &mapping,
                now,
            );
        }
        None if summary.result != RunResult::Failed => {
            set(
                &mut status.conditions,
                DELETIONS_BLOCKED,
                false,
                "NotBlocked",
                "no transition was withheld".into(),
                &mapping,
                now,
            );
        }
        None => {}
    }
    if summary.result != RunResult::Failed {
        status.blocked_run = report.blocked;
    }
    if !ctx.may_write() {
        // Another replica leads now: its view of this mapping wins.
        tracing::warn!(mapping = %name, run = %run_id, "the run's outcome is not recorded: this process no longer holds the Lease or is stopping");
        ctx.finished(&mapping, &summary, status.consecutive_failures);
        return summary;
    }
    if let Err(e) = write(&api, &name, &status).await {
        tracing::warn!(mapping = %name, error = %e, "could not record the run's outcome");
    }

    let (type_, reason) = match summary.result {
        RunResult::Succeeded => (EventType::Normal, "SyncSucceeded"),
        RunResult::DryRun => (EventType::Normal, "SyncDryRun"),
        RunResult::Blocked => (EventType::Warning, "SyncBlocked"),
        RunResult::Failed => (EventType::Warning, "SyncFailed"),
    };
    let note = format!(
        "run {run_id} ({trigger:?}): {message}; imported {}, updated {}, preserved {}, re-enabled {}, deleted {}, transferred {}, skipped {}",
        summary.imported,
        summary.updated,
        summary.preserved,
        summary.reenabled,
        summary.deleted,
        summary.transferred,
        summary.skipped
    );
    publish(&ctx, mapping.as_ref(), type_, reason, "Sync", note).await;
    // Collisions are reported, not merged (rule 7): one Event per skipped user, capped.
    for skip in report.skips.iter().take(USER_EVENTS_PER_RUN) {
        publish(
            &ctx,
            mapping.as_ref(),
            EventType::Warning,
            "ImportSkipped",
            "Sync",
            format!("run {run_id}: {skip}"),
        )
        .await;
    }
    if report.skips.len() > USER_EVENTS_PER_RUN {
        let more = report.skips.len() - USER_EVENTS_PER_RUN;
        publish(
            &ctx,
            mapping.as_ref(),
            EventType::Warning,
            "ImportSkipped",
            "Sync",
            format!("run {run_id}: {more} more directory users were not imported"),
        )
        .await;
    }
    ctx.finished(&mapping, &summary, status.consecutive_failures);
    summary
}

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
    let store = ctx.backend.open(&ctx.client, &ns);
    if let Err(e) = store.close_interrupted_runs(&name).await {
        tracing::warn!(mapping = %name, error = %e, "could not close the interrupted run in the store");
    }
}

/// Count the run in the metrics.
fn record_metrics(
    ctx: &Context,
    ns: &str,
    mapping: &str,
    summary: &RunSummary,
    report: &RunReport,
    took: std::time::Duration,
) {
    use super::metrics::{MappingLabels, RunLabels, StateLabel, UserLabels};
    let m = &ctx.metrics;
    let labels = MappingLabels {
        namespace: ns.to_string(),
        mapping: mapping.to_string(),
    };
    m.runs
        .get_or_create(&RunLabels {
            namespace: ns.into(),
            mapping: mapping.into(),
            result: summary.result.into(),
        })
        .inc();
    m.run_duration
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if let Some(users) = &report.users {
        for (state, n) in [
            (StateLabel::Active, users.active),
            (StateLabel::Preserved, users.preserved),
            (StateLabel::Deleted, users.deleted),
        ] {
            m.users
                .get_or_create(&UserLabels {
                    namespace: ns.into(),
                    mapping: mapping.into(),
                    state,
                })
                .set(i64::from(n));
        }
    }
    if summary.result == RunResult::Succeeded {
        m.last_success
            .get_or_create(&labels)
            .set(summary.start_time.0.as_second() as f64);
    }
    m.deletions_planned
        .get_or_create(&labels)
        .inc_by(report.deletions.0);
    m.deletions_blocked
        .get_or_create(&labels)
        .inc_by(report.deletions.1);
}

/// The fields of the status the runner owns, carried over from `previous`.
fn runner_status(previous: &DirectoryMappingStatus) -> DirectoryMappingStatus {
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

fn set(
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

async fn write(
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

/// Publish an Event; a failure to publish is logged, never fatal.
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let mut note = note;
    if note.len() > 1000 {
        note.truncate(
            note.char_indices()
                .take_while(|(i, _)| *i < 990)
                .last()
                .map_or(0, |(i, c)| i + c.len_utf8()),
        );
        note.push_str(" …");
    }
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::debug!(error = %e, "publishing an Event failed");
    }
}

fn failed(run_id: &str, trigger: RunTrigger, start: jiff::Timestamp, message: String) -> RunReport {
    RunReport {
        summary: summary(
            run_id,
            trigger,
            start,
            RunResult::Failed,
            &core::PlanCounts::default(),
            message,
        ),
        blocked: None,
        blocked_message: None,
        users: None,
        writes: 0,
        skips: Vec::new(),
        deletions: (0, 0),
        next_cursor: None,
    }
}

fn summary(
    run_id: &str,
    trigger: RunTrigger,
    start: jiff::Timestamp,
    result: RunResult,
    counts: &core::PlanCounts,
    message: String,
) -> RunSummary {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    RunSummary {
        id: run_id.to_string(),
        trigger,
        start_time: Time(start),
        duration: None,
        finish_time: None,
        observed_generation: None,
        result,
        read: None,
        imported: n(counts.imported),
        updated: n(counts.updated),
        unchanged: n(counts.unchanged),
        preserved: n(counts.preserved),
        reenabled: n(counts.reenabled),
        deleted: n(counts.deleted),
        transferred: n(counts.transferred),
        skipped: n(counts.skipped),
        message: Some(message),
        approved_by: None,
        approval_ref: None,
    }
}

/// Resolve, read, plan and apply.
async fn execute(
    ctx: &Context,
    mapping: &DirectoryMapping,
    trigger: RunTrigger,
    run_id: &str,
    now: jiff::Timestamp,
    previously_blocked: Option<&BlockedRun>,
    approved: Option<&str>,
) -> RunReport {
    let ns = mapping.namespace().unwrap_or_default();
    let connectors: Api<ConnectorHealth> = Api::namespaced(ctx.client.clone(), &ns);
    let fail = |message: String| failed(run_id, trigger, now, message);
    let Prepared {
        mut plan,
        snapshot,
        mut store,
        policy: core_policy,
        context,
        read_mode,
        next_cursor,
        basis,
    } = match prepare(
        &ctx.client,
        &ctx.backend,
        mapping,
        view_from(trigger),
        approved,
        now,
    )
    .await
    {
        Ok(p) => p,
        Err(message) => return fail(message),
    };

    let blocked = plan.blocked.as_ref().and_then(|b| {
        let t = b.threshold.as_ref()?;
        let plan_digest = withheld_digest(&b.withheld);
        // The same withheld plan as the run waiting for approval: that run it is,
        // so an approval of its id stays valid however often the run is retried.
        let run_id = previously_blocked
            .filter(|p| p.plan_digest == plan_digest)
            .map_or(run_id, |p| p.run_id.as_str());
        Some(BlockedRun {
            run_id: run_id.to_string(),
            would_preserve: u32::try_from(t.would_preserve).unwrap_or(u32::MAX),
            would_delete: u32::try_from(t.would_delete).unwrap_or(u32::MAX),
            active_users: u32::try_from(t.active_before).unwrap_or(u32::MAX),
            plan_digest,
        })
    });
    let blocked_message = plan.blocked.as_ref().map(|b| {
        let mut m = b.to_string();
        if let Some(blocked) = &blocked {
            m.push_str(&format!(
                "; to approve it, run `usersync approve {} {}` (it creates a RunApproval that names you), or raise the threshold",
                mapping.name_any(),
                blocked.run_id,
            ));
        }
        m
    });

    let withheld_deletes = plan.blocked.as_ref().map_or(0, |b| {
        b.withheld
            .iter()
            .filter(|t| t.kind == TransitionKind::Delete)
            .count()
    });
    let planned_deletes = plan.counts.deleted + withheld_deletes;

    if core_policy.dry_run {
        let message = format!("dry run: planned {} (nothing applied)", plan.counts);
        return RunReport {
            summary: RunSummary {
                read: Some(read_mode),
                ..summary(
                    run_id,
                    trigger,
                    now,
                    RunResult::DryRun,
                    &plan.counts,
                    message,
                )
            },
            blocked,
            blocked_message,
            users: Some(counts_after(
                &snapshot,
                &[],
                &context.connector,
                &context.name,
            )),
            writes: 0,
            skips: plan.skips.iter().map(ToString::to_string).collect(),
            deletions: (planned_deletes as u64, 0),
            next_cursor: None,
        };
    }

    // Deletions are checked against the connector once more, right before they happen.
    // Taken, not copied: at 100k users every copy of the plan costs tens of megabytes.
    let mut transitions = std::mem::take(&mut plan.transitions);
    let mut counts = plan.counts;
    let mut late_refusal = None;
    if transitions.iter().any(|t| t.kind == TransitionKind::Delete) {
        let fresh = connectors
            .get_opt(&mapping.spec.connector_ref)
            .await
            .ok()
            .flatten();
        if let Err(refusal) = gate_of(fresh.as_ref()).deletions_permitted(ctx.now()) {
            transitions.retain(|t| t.kind != TransitionKind::Delete);
            counts.deleted = 0;
            late_refusal = Some(format!("deletions blocked: {refusal}"));
        }
    }
    let actor = format!("usersync/mapping/{}", context.name);
    let may_write = || ctx.may_write();
    let info = RunInfo {
        run_id,
        now,
        policy: &core_policy,
        actor: &actor,
        may_write: &may_write,
    };
    let planned = transitions.len();
    let mut report = match store.apply(&transitions, info).await {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    // A write that met a record changed since the snapshot (another mapping's run)
    // did not land; those users are planned again from what the store holds now.
    let mut snapshot = snapshot;
    for _ in 0..MAX_REPLANS {
        if report.conflicts.is_empty() {
            break;
        }
        let conflicted: std::collections::HashSet<String> =
            std::mem::take(&mut report.conflicts).into_iter().collect();
        tracing::info!(mapping = %context.name, run = %run_id, users = conflicted.len(), "writes conflicted with another run's; planning those users again");
        // A preserve or delete is retried only where this run's own plan (after
        // its thresholds and the gate's last check) already had it for that user.
        let allowed: std::collections::HashSet<(String, u8)> = transitions
            .iter()
            .filter(|t| conflicted.contains(&t.record.name))
            .map(|t| (t.record.name.clone(), t.kind.phase()))
            .collect();
        transitions.retain(|t| !conflicted.contains(&t.record.name));
        let (replanned, fresh) = match basis.replan(&mut store, &context, &core_policy, now).await {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        snapshot = fresh;
        let retry: Vec<core::Transition> = replanned
            .transitions
            .into_iter()
            .filter(|t| conflicted.contains(&t.record.name))
            .filter(|t| {
                !matches!(t.kind, TransitionKind::Preserve | TransitionKind::Delete)
                    || allowed.contains(&(t.record.name.clone(), t.kind.phase()))
            })
            .collect();
        let again = match store.apply(&retry, info).await {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        report.applied += again.applied;
        report.writes += again.writes;
        report.failed.extend(again.failed);
        report.conflicts = again.conflicts;
        let lost: std::collections::HashSet<&str> =
            report.conflicts.iter().map(String::as_str).collect();
        transitions.extend(
            retry
                .into_iter()
                .filter(|t| !lost.contains(t.record.name.as_str())),
        );
    }
    for name in std::mem::take(&mut report.conflicts) {
        transitions.retain(|t| t.record.name != name);
        report
            .failed
            .push((name, "changed by another run at the same time".into()));
    }
    // What the run reports is what it applied (a failed write is not counted).
    let failed_names: std::collections::HashSet<&str> = report
        .failed
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    transitions.retain(|t| !failed_names.contains(t.record.name.as_str()));
    counts = core::PlanCounts {
        skipped: counts.skipped,
        unchanged: counts.unchanged,
        ..core::tally(&transitions)
    };
    let users = counts_after(&snapshot, &transitions, &context.connector, &context.name);
    drop(snapshot);
    user_events(ctx, mapping, &transitions, run_id).await;

    let blocked_message = match (blocked_message, late_refusal) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    let (result, message) = if !report.failed.is_empty() {
        let (name, error) = &report.failed[0];
        (
            RunResult::Failed,
            format!(
                "{} of {planned} changes failed to apply (first: {name}: {error}); the other changes applied, and the failed ones are planned again next run",
                report.failed.len(),
            ),
        )
    } else if blocked_message.is_some() || plan.outcome() == PlanOutcome::Blocked {
        (
            RunResult::Blocked,
            blocked_message.clone().unwrap_or_default(),
        )
    } else {
        (RunResult::Succeeded, format!("applied {counts}"))
    };
    RunReport {
        summary: RunSummary {
            read: Some(read_mode),
            ..summary(run_id, trigger, now, result, &counts, message)
        },
        blocked,
        blocked_message,
        users: Some(users),
        writes: report.writes,
        skips: plan.skips.iter().map(ToString::to_string).collect(),
        deletions: (
            planned_deletes as u64,
            planned_deletes.saturating_sub(counts.deleted) as u64,
        ),
        next_cursor,
    }
}

/// A fingerprint of the transitions a threshold withheld: which records, and what
/// would happen to each. Two runs withholding the same have the same digest.
fn withheld_digest(withheld: &[core::Transition]) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<String> = withheld
        .iter()
        .map(|t| format!("{}:{}", t.kind.label(), t.record.name))
        .collect();
    lines.sort();
    let digest = Sha256::digest(lines.join("\n").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// This mapping's users by state once `transitions` are applied to `snapshot`,
/// without building the new registry.
fn counts_after(
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

/// Events on users for notable transitions, and on the mapping for skips and
/// returns; at most [`USER_EVENTS_PER_RUN`] per user-level kind, then one summary.
async fn user_events(
    ctx: &Context,
    mapping: &DirectoryMapping,
    applied: &[core::Transition],
    run_id: &str,
) {
    let ns = mapping.namespace().unwrap_or_default();
    let mut sent = 0usize;
    let mut more = 0usize;
    for t in applied {
        let (type_, reason, note) = match &t.kind {
            TransitionKind::Preserve => (
                EventType::Warning,
                "Preserved",
                format!("preserved ({:?}) by run {run_id}", t.record.reason),
            ),
            TransitionKind::Reenable => (
                EventType::Normal,
                "Reenabled",
                format!("active again after run {run_id}"),
            ),
            TransitionKind::Delete => (
                EventType::Warning,
                "Deleted",
                format!("deleted after retention by run {run_id}"),
            ),
            TransitionKind::Transfer { from } => (
                EventType::Normal,
                "Transferred",
                format!(
                    "moved from mapping {from:?} to {:?} by run {run_id}",
                    t.record.mapping
                ),
            ),
            TransitionKind::Import {
                follows: Some(previous),
            } => (
                EventType::Normal,
                "ReturnedAfterDeletion",
                format!(
                    "this directory object was deleted before as {previous}; imported anew by run {run_id}, the old record stays a tombstone"
                ),
            ),
            _ => continue,
        };
        if sent >= USER_EVENTS_PER_RUN {
            more += 1;
            continue;
        }
        sent += 1;
        // Users kept in PostgreSQL have no object: their Events are the mapping's.
        let (reference, note) = if ctx.backend.has_user_objects() {
            let user = ObjectReference {
                api_version: Some("usersync.dev/v1alpha1".into()),
                kind: Some("DirectoryUser".into()),
                namespace: Some(ns.clone()),
                name: Some(t.record.name.clone()),
                ..Default::default()
            };
            (user, note)
        } else {
            let note = format!("user {}: {note}", t.record.name);
            (mapping.object_ref(&()), note)
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "publishing an Event failed");
        }
    }
    if more > 0 {
        tracing::info!(run = %run_id, more, "per-user Events capped for this run");
    }
}
