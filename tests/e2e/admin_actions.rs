//! What admins do in sequence and at once (issue "Safe under real admin actions"):
//! tearing down in any order, removing a mapping, preserving by hand and letting
//! retention pass, failed runs and their retries, and overlapping mappings run at
//! the same moment. Real API server, real slapd.

use std::time::Duration;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use usersync::api::{DirectoryMapping, DirectoryUser, RunResult, find_condition};

use crate::ldap_support::{PrivateSlapd, Server};
use crate::support::{cluster, eventually, stderr};
use crate::world::{RUN_WAIT, World};

/// How long tearing down may take after the last deletion.
const TEARDOWN: Duration = Duration::from_secs(30);

/// A world with two mappings over their own OUs, two active users each.
async fn two_mappings<'a>(test: &str, server: &'a Server, policy: serde_json::Value) -> World<'a> {
    let w = World::new(test, server, policy).await;
    let east = w.sub_ou("east");
    let west = w.sub_ou("west");
    for (ou, uid) in [(&east, "e1"), (&east, "e2"), (&west, "w1"), (&west, "w2")] {
        w.add_user_in(ou, uid, false);
    }
    w.mapping("east", &east, json!({})).await;
    w.mapping("west", &west, json!({})).await;
    w
}

fn mappings(w: &World<'_>) -> Api<DirectoryMapping> {
    Api::namespaced(w.client.clone(), &w.ns.name)
}

fn kubectl_delete(w: &World<'_>, objects: &[&str]) {
    let mut args = vec!["delete", "-n", &w.ns.name, "--wait=false"];
    args.extend_from_slice(objects);
    let out = cluster().kubectl(args);
    assert!(out.status.success(), "kubectl delete: {}", stderr(&out));
}

/// Delete a mapping and wait until it is gone (its last run applied).
async fn delete_mapping(w: &World<'_>, name: &str) {
    let api = mappings(w);
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(RUN_WAIT, &format!("mapping {name} to go"), || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// Wait until no mapping is left, within [`TEARDOWN`], and check no user was deleted.
async fn torn_down(w: &World<'_>) {
    let api = mappings(w);
    eventually(TEARDOWN, "every mapping to go", || async {
        let left = api.list(&ListParams::default()).await.ok()?.items;
        left.is_empty().then_some(())
    })
    .await;
    for user in w.users().await {
        let state = user.status.and_then(|s| s.state);
        assert_ne!(
            format!("{state:?}"),
            "Some(Deleted)",
            "tearing down deleted {}",
            user.metadata.name.unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn tearing_down_never_hangs_connector_first() {
    let w = two_mappings("down-conn", Server::slapd(), json!({})).await;
    kubectl_delete(&w, &["connectorhealth/corp"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    kubectl_delete(&w, &["directorymapping/east", "directorymapping/west"]);
    torn_down(&w).await;
    assert_eq!(w.state("e1").await, "Active", "released without a read");
}

#[tokio::test]
async fn tearing_down_never_hangs_policy_first() {
    let w = two_mappings("down-pol", Server::slapd(), json!({})).await;
    kubectl_delete(&w, &["syncpolicy/default"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    kubectl_delete(&w, &["directorymapping/east", "directorymapping/west"]);
    torn_down(&w).await;
}

#[tokio::test]
async fn tearing_down_never_hangs_all_at_once() {
    // The default threshold (10%) blocks the last run of a mapping whose connector
    // and policy are still there; once they go, the mapping lets go.
    let w = two_mappings("down-all", Server::slapd(), json!({})).await;
    kubectl_delete(
        &w,
        &[
            "directorymapping/east",
            "directorymapping/west",
            "connectorhealth/corp",
            "syncpolicy/default",
        ],
    );
    torn_down(&w).await;
}

#[tokio::test]
async fn tearing_down_never_hangs_when_the_namespace_goes() {
    let w = two_mappings("down-ns", Server::slapd(), json!({})).await;
    let out = cluster().kubectl(["delete", "namespace", &w.ns.name, "--wait=false"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let api = mappings(&w);
    // The namespace controller's own pace (it works through every namespace the
    // suite deletes) is not ours: the clock starts once it has deleted them all.
    let connectors: Api<usersync::api::ConnectorHealth> =
        Api::namespaced(w.client.clone(), &w.ns.name);
    eventually(
        Duration::from_secs(180),
        "the namespace controller to delete the objects",
        || async {
            let left = api.list(&ListParams::default()).await.ok()?.items;
            let marked = left.iter().all(|m| m.metadata.deletion_timestamp.is_some());
            let connector_gone = connectors.get_opt("corp").await.ok()?.is_none();
            (marked && connector_gone).then_some(())
        },
    )
    .await;
    eventually(TEARDOWN, "the namespace's mappings to go", || async {
        let left = api.list(&ListParams::default()).await.ok()?.items;
        left.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_blocked_last_run_keeps_one_approval_id_and_an_approval_releases_the_mapping_at_once() {
    let w = two_mappings("down-approve", Server::slapd(), json!({})).await;
    let api = mappings(&w);
    api.delete("east", &DeleteParams::default()).await.unwrap();
    // The last run would preserve both of east's users: past 10%, it waits.
    let blocked = eventually(RUN_WAIT, "the last run to be blocked", || async {
        let status = api.get("east").await.ok()?.status?;
        status.blocked_run
    })
    .await;
    let ready = eventually(RUN_WAIT, "Ready to say why the mapping stays", || async {
        let status = api.get("east").await.ok()?.status?;
        find_condition(&status.conditions, "Ready")
            .filter(|c| c.reason == "Deleting")
            .cloned()
    })
    .await;
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains(&blocked.run_id) && ready.message.contains("approve"),
        "{}",
        ready.message
    );
    // Only an approval (or a raised threshold) lets it go: a person must act.
    let status = api.get("east").await.unwrap().status.unwrap();
    let stalled = find_condition(&status.conditions, "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "Deleting")
    );
    assert_eq!(
        w.state("e1").await,
        "Active",
        "nothing applied while blocked"
    );
    // Asking again plans the same: the run to approve keeps its id.
    w.annotate("east", usersync::api::SYNC_REQUESTED_ANNOTATION, "again")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = api
        .get("east")
        .await
        .unwrap()
        .status
        .unwrap()
        .blocked_run
        .unwrap();
    assert_eq!(still.run_id, blocked.run_id, "the approval id changed");

    let out = crate::support::usersync(["approve", "east", &blocked.run_id, "-n", &w.ns.name]);
    assert!(out.status.success(), "usersync approve: {}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("preserves 2"), "the counts are shown: {said}");
    let started = tokio::time::Instant::now();
    eventually(
        Duration::from_secs(15),
        "the approved mapping to go",
        || async { api.get_opt("east").await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the approval waited"
    );
    assert_eq!(w.state("e1").await, "Preserved/Unmapped");
    assert_eq!(
        w.state("w1").await,
        "Active",
        "the other mapping is untouched"
    );
}

#[tokio::test]
async fn users_of_a_removed_mapping_are_deleted_on_schedule_while_the_other_mapping_syncs() {
    let w = two_mappings(
        "orphans",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "2h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    delete_mapping(&w, "east").await;
    assert_eq!(w.state("e1").await, "Preserved/Unmapped");
    let deadline = w
        .user("e1")
        .await
        .status
        .unwrap()
        .delete_after_time
        .unwrap();

    // Before the recorded deadline nothing goes, whatever the other mapping does.
    w.advance(Duration::from_secs(3600)).await;
    w.sync("west").await;
    assert_eq!(w.state("e1").await, "Preserved/Unmapped");

    // After it, the connector's retention pass deletes them; no mapping run needed.
    w.advance(Duration::from_secs(3601)).await;
    eventually(RUN_WAIT, "the orphans to be deleted", || async {
        let states = (w.state("e1").await, w.state("e2").await);
        (states.0 == "Deleted/RetentionExpired" && states.1 == "Deleted/RetentionExpired")
            .then_some(())
    })
    .await;
    let e1 = w.user("e1").await.status.unwrap();
    assert!(
        e1.deleted_at.unwrap().0 >= deadline.0,
        "deleted before its deadline"
    );
    // The pass says what it deleted, on the connector.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(w.client.clone(), &w.ns.name);
    let said = eventually(RUN_WAIT, "the pass's Event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("RetentionDeleted"))
            .and_then(|e| e.note)
    })
    .await;
    assert!(said.contains("deleted 2 preserved users"), "{said}");
    let run = w.sync("west").await;
    assert_eq!(
        (run.result, run.preserved),
        (RunResult::Succeeded, 0),
        "{run:?}"
    );
    assert_eq!(w.state("w1").await, "Active");
}

#[tokio::test]
async fn the_connector_gate_holds_the_retention_pass_of_a_removed_mapping() {
    let w = two_mappings(
        "orphans-gate",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "1h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.set_deletions_allowed(false).await;
    delete_mapping(&w, "east").await;
    w.advance(Duration::from_secs(3601)).await;
    w.advance(Duration::from_secs(1)).await;
    assert_eq!(
        w.state("e1").await,
        "Preserved/Unmapped",
        "deleted while frozen"
    );
    w.set_deletions_allowed(true).await;
    eventually(
        RUN_WAIT,
        "the orphan to be deleted once allowed",
        || async { (w.state("e1").await == "Deleted/RetentionExpired").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_manual_preserve_outlives_retention_and_its_tombstone_blocks_the_reimport() {
    let w = World::new(
        "manual-hold",
        Server::slapd(),
        // Full reads every run: an unchanged entry is only seen by a full read.
        json!({"incremental": false, "preservation": {"deleteAfter": "1h"}}),
    )
    .await;
    w.add_user("hal", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let name = w.user("hal").await.name_any();
    let users: Api<DirectoryUser> = Api::namespaced(w.client.clone(), &w.ns.name);
    let hold = |on: bool| json!({"spec": {"preserve": on}});
    users
        .patch(&name, &PatchParams::default(), &Patch::Merge(&hold(true)))
        .await
        .unwrap();
    w.sync("staff").await;
    assert_eq!(w.state("hal").await, "Preserved/Manual");

    // Retention passes: the admin's hold stays (the default).
    w.advance(Duration::from_secs(3601)).await;
    let run = w.sync("staff").await;
    assert_eq!(run.deleted, 0, "{run:?}");
    assert_eq!(w.state("hal").await, "Preserved/Manual");

    // The policy opts in: deleted, and the tombstone keeps the hold.
    w.apply(&json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "SyncPolicy", "metadata": {"name": "default"},
        "spec": {"interval": "24h", "incremental": false, "preservation": {"deleteAfter": "1h", "deleteManuallyPreserved": true}}}));
    let run = eventually(RUN_WAIT, "a run that deletes the held user", || async {
        let run = w.sync("staff").await;
        (run.deleted == 1).then_some(run)
    })
    .await;
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
    assert_eq!(w.state("hal").await, "Deleted/RetentionExpired");

    // The directory object still matches and is enabled: it does not come back.
    let run = w.sync("staff").await;
    assert_eq!((run.imported, run.skipped), (0, 1), "{run:?}");
    assert_eq!(
        w.named("hal").await.len(),
        1,
        "a held user came back as Active"
    );

    // The admin clears the tombstone's hold: the next full read imports it anew.
    users
        .patch(&name, &PatchParams::default(), &Patch::Merge(&hold(false)))
        .await
        .unwrap();
    let run = w.sync("staff").await;
    assert_eq!(run.imported, 1, "{run:?}");
}

#[tokio::test]
async fn a_failed_run_is_retried_with_backoff_and_a_success_resets_it() {
    let private = PrivateSlapd::start("retry");
    let w = World::new("retry", &private.server, json!({})).await;
    w.add_user("rae", false);
    let first = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(first.result, RunResult::Succeeded, "{first:?}");

    private.server.script(&["down"], None);
    let failed = w.sync("staff").await;
    assert_eq!(failed.result, RunResult::Failed, "{failed:?}");
    let status = mappings(&w).get("staff").await.unwrap().status.unwrap();
    assert_eq!(status.consecutive_failures, 1);
    // The reconcile after the run shows the retry in nextSyncTime: 30s after the
    // failed run ended.
    eventually(RUN_WAIT, "nextSyncTime to show the retry", || async {
        let next = mappings(&w)
            .get("staff")
            .await
            .ok()?
            .status?
            .next_sync_time?
            .0;
        let ended = failed.finish_time.as_ref()?.0;
        (next.duration_since(ended) == jiff::SignedDuration::from_secs(30)).then_some(())
    })
    .await;

    private.server.script(&["up"], None);
    // The retry comes by itself, about 30s after the failure, not a day later.
    let retried = eventually(Duration::from_secs(60), "the retry", || async {
        let status = mappings(&w).get("staff").await.ok()?.status?;
        let run = status.last_run?;
        (run.id != failed.id && !status.sync_in_progress).then_some(run)
    })
    .await;
    assert_eq!(retried.result, RunResult::Succeeded, "{retried:?}");
    let gap = retried.start_time.0.duration_since(failed.start_time.0);
    assert!(
        gap >= jiff::SignedDuration::from_secs(30),
        "retried before the backoff: {gap:?}"
    );
    let status = mappings(&w).get("staff").await.unwrap().status.unwrap();
    assert_eq!(
        status.consecutive_failures, 0,
        "a success resets the backoff"
    );
    // The reconcile after the run moves nextSyncTime back onto the interval.
    eventually(RUN_WAIT, "nextSyncTime back on the interval", || async {
        let next = mappings(&w)
            .get("staff")
            .await
            .ok()?
            .status?
            .next_sync_time?
            .0;
        (next.duration_since(retried.start_time.0) == jiff::SignedDuration::from_secs(86_400))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stuck_finalizer_makes_no_more_than_a_few_attempts_a_minute() {
    let w = two_mappings(
        "stuck",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    // A connector that cannot be used: its bind Secret is gone.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(w.client.clone(), &w.ns.name);
    secrets
        .delete("corp-bind", &DeleteParams::default())
        .await
        .unwrap();
    let api = mappings(&w);
    api.delete("east", &DeleteParams::default()).await.unwrap();
    let failed = eventually(RUN_WAIT, "the last run to fail", || async {
        let run = api.get("east").await.ok()?.status?.last_run?;
        (run.result == RunResult::Failed).then_some(run)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = api.get("east").await.unwrap().status.unwrap();
    let run = status.last_run.unwrap();
    assert_eq!(
        run.id, failed.id,
        "retried within 20s of a failure: {run:?}"
    );
    assert_eq!(status.consecutive_failures, 1);
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(w.client.clone(), &w.ns.name);
    let failures: i32 = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SyncFailed"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("east"))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum();
    assert!(failures <= 2, "{failures} SyncFailed Events in 20s");
    let ready = find_condition(&status.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "Deleting", "{ready:?}");
    assert!(ready.message.contains(&failed.id), "{}", ready.message);
}

#[tokio::test]
async fn overlapping_mappings_synced_at_once_leave_every_user_with_the_lowest_priority() {
    let w = World::new(
        "race",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let rounds = 20;
    let mut replanned = 0;
    for round in 0..rounds {
        let ou = w.sub_ou(&format!("r{round}"));
        let uids: Vec<String> = (0..3).map(|i| format!("r{round}u{i}")).collect();
        for uid in &uids {
            w.add_user_in(&ou, uid, false);
        }
        let (low, high) = (format!("low{round}"), format!("high{round}"));
        let mapping = |name: &str, priority: i32| {
            json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": name},
                "spec": {"connectorRef": "corp", "policyRef": "default", "priority": priority, "ldap": {"baseDN": ou}}})
        };
        // Both created in one apply: their first runs overlap.
        let both = format!("{}\n---\n{}", mapping(&high, 20), mapping(&low, 10));
        let out = cluster().apply(&w.ns.name, &both);
        assert!(out.status.success(), "{}", stderr(&out));
        let a = w.wait_run(&low, None).await;
        let b = w.wait_run(&high, None).await;
        assert_eq!(a.result, RunResult::Succeeded, "{a:?}");
        assert_eq!(b.result, RunResult::Succeeded, "{b:?}");
        replanned += usize::from(a.transferred > 0 || b.transferred > 0);
        for uid in &uids {
            let user = w.user(uid).await;
            assert_eq!(
                user.spec.mapping_ref.as_deref(),
                Some(low.as_str()),
                "round {round}: {uid} owned by the higher priority number ({a:?} / {b:?})"
            );
            assert_eq!(w.state(uid).await, "Active");
        }
    }
    println!("overlapping first runs: {rounds} rounds, {replanned} with a transfer");
}
