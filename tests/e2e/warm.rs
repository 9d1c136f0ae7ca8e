//! DESIGN.md section 5 (the Kubernetes store keeps a watch-backed copy of the
//! namespace's DirectoryUsers, so a run does not list them) and section 3 (no stale
//! write), against a real API server, with the requests of the operator's client
//! seen on the wire.

use std::time::Duration;

use kube::Api;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use usersync::api::{DirectoryUser, RunResult, RunSummary, UserState};

use crate::ldap_support::Server;
use crate::support::{Wire, cluster, start_operator_clocked, stderr};
use crate::world::World;

/// Start the operator of `w` with its client going through `wire`.
fn start_operator_over(w: &World<'_>, wire: &Wire) {
    start_operator_clocked(
        &wire.client(&w.client),
        &w.ns.name,
        usersync::store::Backend::Kubernetes,
        &w.clock,
    );
}

/// Every run reads the whole scope, so that it compares every user with the registry.
fn full_reads() -> serde_json::Value {
    json!({"incremental": false})
}

fn unchanged(run: &RunSummary) {
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
    assert_eq!(
        (run.imported, run.updated, run.preserved, run.deleted),
        (0, 0, 0, 0),
        "{run:?}"
    );
}

#[tokio::test]
async fn a_no_change_run_lists_no_directory_users_and_sees_its_own_writes_before_the_watch_does() {
    let w = World::without_operator("warm-noop", Server::slapd(), full_reads()).await;
    w.add_user("alice", false);
    w.add_user("bob", false);
    let wire = Wire::default();
    // The first list goes through; what the watch delivers after it does not, so
    // the copy knows the first run's imports only from the run itself.
    wire.hold_watches();
    start_operator_over(&w, &wire);
    let first = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(
        (first.result, first.imported),
        (RunResult::Succeeded, 2),
        "{first:?}"
    );
    assert_eq!(
        wire.user_lists().len(),
        1,
        "the watch's first list: {:?}",
        wire.user_lists()
    );

    wire.clear();
    let second = w.sync("staff").await;
    unchanged(&second);
    assert_eq!(second.unchanged, 2, "{second:?}");
    assert_eq!(wire.user_lists(), Vec::<String>::new(), "a run listed");
    assert_eq!(
        wire.user_writes(),
        Vec::<String>::new(),
        "a run wrote what the run before it had written"
    );

    wire.release_watches();
    wire.clear();
    let third = w.sync("staff").await;
    unchanged(&third);
    assert_eq!(wire.user_lists(), Vec::<String>::new(), "a run listed");
    assert_eq!(wire.user_writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_directory_user_an_admin_deleted_or_edited_is_seen_by_the_next_run() {
    let w = World::without_operator("warm-admin", Server::slapd(), full_reads()).await;
    w.add_user("alice", false);
    w.add_user("bob", false);
    let wire = Wire::default();
    start_operator_over(&w, &wire);
    let first = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(first.imported, 2, "{first:?}");
    // A second mapping of the namespace plans from the same copy.
    let empty = w.sub_ou("empty");
    w.mapping("other", &empty, json!({})).await;
    w.sync("other").await;
    assert_eq!(
        (wire.user_lists().len(), wire.user_watches().len()),
        (1, 1),
        "one watch for the namespace: {:?}",
        wire.user_requests()
    );
    let alice = w.user("alice").await.name_any();
    let bob = w.user("bob").await.name_any();

    let ns = w.ns.name.as_str();
    let out = cluster().kubectl(["delete", "directoryuser", &alice, "-n", ns]);
    assert!(out.status.success(), "kubectl delete: {}", stderr(&out));
    let edit = r#"{"spec":{"displayName":"Edited by hand"}}"#;
    let out = cluster().kubectl([
        "patch",
        "directoryuser",
        &bob,
        "-n",
        ns,
        "--type=merge",
        "-p",
        edit,
    ]);
    assert!(out.status.success(), "kubectl patch: {}", stderr(&out));
    // The watch delivers in milliseconds; a second is far more than it needs.
    tokio::time::sleep(Duration::from_secs(1)).await;

    wire.clear();
    let run = w.sync("staff").await;
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
    assert_eq!((run.imported, run.updated), (1, 1), "{run:?}");
    assert_eq!(wire.user_lists(), Vec::<String>::new(), "the run listed");
    assert_eq!(w.state("alice").await, "Active");
    assert_eq!(
        w.user("bob").await.spec.display_name.as_deref(),
        Some("User bob"),
        "the directory's value is back"
    );
}

#[tokio::test]
async fn a_run_planning_from_a_copy_that_missed_another_writers_change_does_not_overwrite_it() {
    let w = World::without_operator("warm-stale", Server::slapd(), full_reads()).await;
    w.add_user("alice", false);
    let wire = Wire::default();
    start_operator_over(&w, &wire);
    let first = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(first.imported, 1, "{first:?}");
    let record = w.user("alice").await.name_any();

    // Another writer makes the record a tombstone, as another mapping's run does;
    // the operator's copy does not see it.
    wire.hold_watches();
    let api: Api<DirectoryUser> = Api::namespaced(w.client.clone(), &w.ns.name);
    let tombstone = json!({"status": {"state": "Deleted", "deletedAt": jiff::Timestamp::now()}});
    api.patch_status(&record, &PatchParams::default(), &Patch::Merge(&tombstone))
        .await
        .unwrap();
    // The directory changes, so a plan from the stale copy updates the record.
    w.server.modify_ldif(&format!(
        "dn: uid=alice,{}\nchangetype: modify\nreplace: displayName\ndisplayName: Alice Renamed\n",
        w.ou.dn
    ));

    let run = w.sync("staff").await;
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
    let kept = api.get(&record).await.unwrap();
    assert_eq!(
        (
            kept.status.as_ref().and_then(|s| s.state),
            kept.spec.display_name.as_deref()
        ),
        (Some(UserState::Deleted), Some("User alice")),
        "the tombstone was written over from a plan that had not seen it"
    );
    // Planned again from the record as it is now: a tombstone is never revived, and
    // the user who is still in the directory gets a new record.
    let new: Vec<_> = w
        .named("alice")
        .await
        .into_iter()
        .filter(|u| u.name_any() != record)
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].spec.display_name.as_deref(), Some("Alice Renamed"));
    assert_eq!(run.imported, 1, "{run:?}");
}
