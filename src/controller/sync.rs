//! One run of one mapping: resolve → read → plan (pure) → apply → report. Only the
//! two ends touch the API server and the directory. The status a run writes is in
//! [`super::run_status`], its Events in [`super::events`], its metrics in
//! [`super::metrics`].

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::approval::Granted;
use super::context::Context;
pub(crate) use super::events::publish;
use super::events::{USER_EVENTS_PER_RUN, user_events};
use super::planning::{Prepared, ViewFrom, prepare};
use super::resolve::gate_of;
pub(crate) use super::run_status::{DELETIONS_BLOCKED, SYNCED, SYNCING, mark_interrupted};
use super::run_status::{counts_after, runner_status, set, write};
use crate::api::{
    BlockedRun, ConnectorHealth, DirectoryMapping, RunResult, RunSummary, RunTrigger, UserCounts,
};
use crate::core::{self, PlanOutcome, TransitionKind};
use crate::store::{RunInfo, UserStore};

/// How often a run plans again the users whose writes conflicted with another run's.
const MAX_REPLANS: usize = 3;

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
        RunTrigger::Schedule
        | RunTrigger::OnDemand
        | RunTrigger::SpecChanged
        | RunTrigger::Push => ViewFrom::Directory,
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
    let history = ctx.store(&ns);
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

    super::metrics::record_run(&ctx, &ns, &name, &summary, &report, clock.elapsed());

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
    let note = run_note(&summary, &message);
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
        read_took,
    } = match prepare(
        &ctx.client,
        ctx.store(&ns),
        &ctx.directories,
        mapping,
        view_from(trigger),
        approved,
        now,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let labels = super::metrics::mapping_labels(&ns, &mapping.name_any());
    if let Some(took) = read_took {
        ctx.metrics
            .read_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

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
    let writing = Instant::now();
    let mut report = match store.apply(&transitions, info).await {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    // A write that met a record changed since the snapshot (another mapping's run)
    // did not land; those users are planned again from what the store holds now.
    let mut snapshot = snapshot;
    // Retried transitions that conflicted again, for the next round's re-plan.
    let mut lost_again: Vec<core::Transition> = Vec::new();
    for _ in 0..MAX_REPLANS {
        if report.conflicts.is_empty() {
            break;
        }
        let conflicted: std::collections::HashSet<String> =
            std::mem::take(&mut report.conflicts).into_iter().collect();
        tracing::info!(mapping = %context.name, run = %run_id, users = conflicted.len(), "writes conflicted with another run's; planning those users again");
        // A preserve or delete is retried only where this run's own plan (after
        // its thresholds and the gate's last check) already had it for that user.
        let attempted = || {
            transitions
                .iter()
                .chain(&lost_again)
                .filter(|t| conflicted.contains(&t.record.name))
        };
        let allowed: std::collections::HashSet<(String, u8)> = attempted()
            .map(|t| (t.record.name.clone(), t.kind.phase()))
            .collect();
        // The directory objects behind them: a record another run made a tombstone
        // comes back as a new record (another name) for the same object.
        let anchors: std::collections::HashSet<String> =
            attempted().map(|t| t.record.anchor.clone()).collect();
        transitions.retain(|t| !conflicted.contains(&t.record.name));
        lost_again.clear();
        let (replanned, fresh) = match basis.replan(&mut store, &context, &core_policy, now).await {
            Ok(p) => p,
            Err(e) => return fail(e.to_string()),
        };
        snapshot = fresh;
        let retry: Vec<core::Transition> = replanned
            .transitions
            .into_iter()
            .filter(|t| anchors.contains(&t.record.anchor))
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
        let (lost, landed): (Vec<_>, Vec<_>) = retry
            .into_iter()
            .partition(|t| report.conflicts.contains(&t.record.name));
        transitions.extend(landed);
        lost_again = lost;
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
    ctx.metrics
        .write_duration
        .get_or_create(&labels)
        .observe(writing.elapsed().as_secs_f64());
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

/// A run's Event note: the run, what started it and its outcome, with the counts
/// once (a succeeded or dry run's message already states them).
fn run_note(summary: &RunSummary, message: &str) -> String {
    let head = format!(
        "run {} ({}): {message}",
        summary.id,
        summary.trigger.in_words()
    );
    if matches!(summary.result, RunResult::Succeeded | RunResult::DryRun) {
        return head;
    }
    format!(
        "{head}; applied: imported {}, updated {}, preserved {}, re-enabled {}, deleted {}, transferred {}, skipped {}",
        summary.imported,
        summary.updated,
        summary.preserved,
        summary.reenabled,
        summary.deleted,
        summary.transferred,
        summary.skipped
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_event_states_its_counts_once() {
        let counts = core::PlanCounts {
            imported: 5,
            ..Default::default()
        };
        let now = jiff::Timestamp::UNIX_EPOCH;
        let message = format!("applied {counts}");
        let done = summary(
            "r1",
            RunTrigger::OnDemand,
            now,
            RunResult::Succeeded,
            &counts,
            message.clone(),
        );
        let note = run_note(&done, &message);
        assert_eq!(note.matches("imported 5").count(), 1, "{note}");
        assert!(note.starts_with("run r1 (asked for): applied"), "{note}");
        let message = "1 of 5 changes failed to apply".to_string();
        let failed = summary(
            "r2",
            RunTrigger::OnDemand,
            now,
            RunResult::Failed,
            &counts,
            message.clone(),
        );
        let note = run_note(&failed, &message);
        assert!(note.ends_with("applied: imported 5, updated 0, preserved 0, re-enabled 0, deleted 0, transferred 0, skipped 0"), "{note}");
    }
}
