//! The connector-level retention pass (rule 5): preserved users whose mapping no
//! longer exists are deleted at the `deleteAfterTime` recorded when they were
//! preserved, by the connector, whether or not any mapping still covers them. It
//! runs after a successful probe, at most every five minutes, behind the same gate
//! as every deletion.

use std::collections::BTreeSet;

use kube::api::ListParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::context::Context;
use super::resolve::gate_of;
use super::run_id::new_run_id;
use super::sync::publish;
use crate::api::{ConnectorHealth, DirectoryMapping};
use crate::core::{self, orphan_deletions};
use crate::store::{RunInfo, UserStore};

/// The most users one pass deletes; the next pass takes the rest.
const DELETES_PER_PASS: usize = 500;

/// How often a connector's pass runs at most: deadlines are days apart, and the
/// pass reads the connector's preserved users from the store each time.
const PASS_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Delete the connector's orphaned preserved users that are due. `connector`
/// carries the status just probed. Failures are logged and retried by the next
/// pass; nothing here fails the probe.
pub async fn sweep(ctx: &Context, connector: &ConnectorHealth) {
    let ns = connector.namespace().unwrap_or_default();
    let name = connector.name_any();
    let now = ctx.now();
    if gate_of(Some(connector)).deletions_permitted(now).is_err()
        || !ctx.sweep_due(&format!("{ns}/{name}"), now, PASS_EVERY)
    {
        return;
    }
    let mappings: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
    // A mapping being deleted still owns its users: its last run decides for them.
    let existing: BTreeSet<String> = match mappings.list_metadata(&ListParams::default()).await {
        Ok(list) => list.items.iter().map(|m| m.name_any()).collect(),
        Err(e) => {
            tracing::warn!(connector = %name, namespace = %ns, error = %e, "retention pass: listing mappings failed");
            return;
        }
    };
    let mut store = ctx.store(&ns);
    let preserved = match store.preserved_of(&name).await {
        Ok(records) => records,
        Err(e) => {
            tracing::warn!(connector = %name, namespace = %ns, error = %e, "retention pass: reading preserved users failed");
            return;
        }
    };
    let due = orphan_deletions(&preserved, &name, &existing, now, DELETES_PER_PASS);
    drop(preserved);
    if due.is_empty() {
        return;
    }
    // Checked once more right before deleting, as every deletion is.
    let connectors: Api<ConnectorHealth> = Api::namespaced(ctx.client.clone(), &ns);
    let fresh = connectors.get_opt(&name).await.ok().flatten();
    if let Err(refusal) = gate_of(fresh.as_ref()).deletions_permitted(ctx.now()) {
        tracing::info!(connector = %name, namespace = %ns, users = due.len(), %refusal, "retention pass: deletions blocked");
        return;
    }
    let run_id = new_run_id(now);
    // The deadlines were recorded when the users were preserved; no policy is
    // consulted here (their mapping, and perhaps its policy, are gone).
    let policy = core::Policy {
        auto_preserve_unmapped: false,
        auto_delete: false,
        delete_after: std::time::Duration::MAX,
        max_preserve_percent: 0,
        max_deletes_per_run: 0,
        dry_run: false,
        delete_manually_preserved: false,
    };
    let actor = format!("usersync/connector/{name}");
    let may_write = || ctx.may_write();
    let info = RunInfo {
        run_id: &run_id,
        now,
        policy: &policy,
        actor: &actor,
        may_write: &may_write,
    };
    // The store's run history names the pass (its audit rows point at it); a
    // connector's pass is told from a mapping's run by a name no mapping can have.
    let pass = format!("connector/{name}");
    if let Err(e) = store.run_started(&run_id, &pass, "Retention", now).await {
        tracing::warn!(connector = %name, namespace = %ns, error = %e, "retention pass: could not record the pass");
        return;
    }
    let outcome = store.apply(&due, info).await;
    let summary = pass_summary(&run_id, now, ctx.now(), &outcome);
    if let Err(e) = store
        .run_finished(
            &summary,
            outcome.as_ref().map_or(0, |r| r.writes),
            ctx.now(),
        )
        .await
    {
        tracing::warn!(connector = %name, namespace = %ns, error = %e, "retention pass: could not record the outcome");
    }
    if summary.result == crate::api::RunResult::Failed {
        let message = summary.message.clone().unwrap_or_default();
        tracing::warn!(connector = %name, namespace = %ns, run = %run_id, %message, "retention pass: not every deletion applied");
        publish(
            ctx,
            connector,
            EventType::Warning,
            "RetentionFailed",
            "Retention",
            format!("pass {run_id}: {message}"),
        )
        .await;
    }
    let Ok(report) = outcome else { return };
    let deleted = report.applied;
    tracing::info!(connector = %name, namespace = %ns, run = %run_id, deleted, "retention pass: deleted users whose mapping is gone");
    if deleted == 0 {
        return;
    }
    let left: BTreeSet<&str> = report
        .failed
        .iter()
        .map(|(user, _)| user.as_str())
        .chain(report.conflicts.iter().map(String::as_str))
        .collect();
    let gone: Vec<&str> = due
        .iter()
        .map(|t| t.record.name.as_str())
        .filter(|user| !left.contains(user))
        .collect();
    let shown = first_of(&gone, 10, ", ");
    publish(
        ctx,
        connector,
        EventType::Warning,
        "RetentionDeleted",
        "Retention",
        format!(
            "pass {run_id}: deleted {deleted} preserved users whose mapping no longer exists, at the deadline recorded when they were preserved ({shown})"
        ),
    )
    .await;
}

/// The first `limit` of `items` joined by `sep`, and an ellipsis when there are more.
fn first_of<T: AsRef<str>>(items: &[T], limit: usize, sep: &str) -> String {
    let mut shown: Vec<&str> = items.iter().take(limit).map(AsRef::as_ref).collect();
    if items.len() > limit {
        shown.push("…");
    }
    shown.join(sep)
}

/// The pass as the store's run history records it.
fn pass_summary(
    run_id: &str,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
    outcome: &Result<crate::store::ApplyReport, crate::store::StoreError>,
) -> crate::api::RunSummary {
    use crate::api::{RunResult, RunSummary, RunTrigger};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let (result, deleted, message) = match outcome {
        Ok(r) if r.failed.is_empty() && r.conflicts.is_empty() => (
            RunResult::Succeeded,
            r.applied,
            format!("retention pass: deleted {}", r.applied),
        ),
        Ok(r) => {
            // Which users were left, and why: the first few, so the message stays short.
            let why: Vec<String> = r
                .failed
                .iter()
                .map(|(user, reason)| format!("{user}: {reason}"))
                .chain(
                    r.conflicts
                        .iter()
                        .map(|user| format!("{user}: changed since it was read")),
                )
                .collect();
            let shown = first_of(&why, 5, "; ");
            (
                RunResult::Failed,
                r.applied,
                format!(
                    "retention pass: deleted {}, {} not deleted ({shown}); the next pass tries again",
                    r.applied,
                    why.len()
                ),
            )
        }
        Err(e) => (RunResult::Failed, 0, format!("retention pass: {e}")),
    };
    RunSummary {
        id: run_id.to_string(),
        trigger: RunTrigger::Schedule,
        start_time: Time(start),
        duration: None,
        finish_time: Some(Time(end)),
        observed_generation: None,
        result,
        read: None,
        imported: 0,
        updated: 0,
        unchanged: 0,
        preserved: 0,
        reenabled: 0,
        deleted: u32::try_from(deleted).unwrap_or(u32::MAX),
        transferred: 0,
        skipped: 0,
        message: Some(message),
        approved_by: None,
        approval_ref: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{first_of, pass_summary};
    use crate::api::RunResult;
    use crate::store::{ApplyReport, StoreError};

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_pass_that_deleted_everything_due_succeeded() {
        let report = ApplyReport {
            applied: 3,
            writes: 6,
            ..ApplyReport::default()
        };
        let s = pass_summary(
            "r1",
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:05Z"),
            &Ok(report),
        );
        assert_eq!((s.result, s.deleted), (RunResult::Succeeded, 3));
        assert_eq!(s.message.as_deref(), Some("retention pass: deleted 3"));
        assert_eq!(s.finish_time.unwrap().0, at("2026-01-01T00:00:05Z"));
    }

    #[test]
    fn a_pass_whose_deletions_partly_failed_reports_failed_with_what_it_deleted() {
        let report = ApplyReport {
            applied: 2,
            writes: 4,
            failed: vec![("u3".into(), "forbidden".into())],
            conflicts: vec!["u4".into()],
        };
        let s = pass_summary(
            "r1",
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:05Z"),
            &Ok(report),
        );
        assert_eq!((s.result, s.deleted), (RunResult::Failed, 2));
        let said = s.message.unwrap();
        assert!(
            said.contains(
                "deleted 2, 2 not deleted (u3: forbidden; u4: changed since it was read)"
            ),
            "{said}"
        );
    }

    #[test]
    fn a_pass_with_one_failed_deletion_and_no_conflict_failed() {
        let report = ApplyReport {
            applied: 1,
            writes: 2,
            failed: vec![("u2".into(), "forbidden".into())],
            conflicts: Vec::new(),
        };
        let s = pass_summary(
            "r1",
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:05Z"),
            &Ok(report),
        );
        assert_eq!((s.result, s.deleted), (RunResult::Failed, 1));
    }

    #[test]
    fn long_lists_are_cut_with_an_ellipsis() {
        let five = ["a", "b", "c", "d", "e"];
        assert_eq!(first_of(&five, 5, ", "), "a, b, c, d, e");
        assert_eq!(first_of(&five, 4, ", "), "a, b, c, d, …");
        assert_eq!(first_of(&five[..0], 4, ", "), "");
    }

    #[test]
    fn a_pass_the_store_refused_reports_failed_and_nothing_deleted() {
        let s = pass_summary(
            "r1",
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:05Z"),
            &Err(StoreError::Postgres("connection refused".into())),
        );
        assert_eq!((s.result, s.deleted), (RunResult::Failed, 0));
        assert_eq!(
            s.message.as_deref(),
            Some("retention pass: connection refused")
        );
    }
}
