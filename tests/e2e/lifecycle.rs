//! DESIGN.md sections 2–4 against a real OpenLDAP server and a real API server: one
//! test per rule, named after it.

use std::time::Duration;

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use usersync::api::{
    APPROVE_RUN_ANNOTATION, ConnectorHealth, DirectoryMapping, DirectoryUser, ReadMode, RunResult,
    condition_is_true, find_condition,
};

use crate::ldap_support::Server;
use crate::support::{HeldRelay, cluster, eventually, stderr};
use crate::world::{RUN_WAIT, World};

#[tokio::test]
async fn import_enabled_matched_user_becomes_active_and_disabled_one_is_never_imported() {
    let w = World::new("import", Server::slapd(), json!({})).await;
    w.add_user("alice", false);
    w.add_user("bob", true);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
    assert_eq!(run.imported, 1, "{run:?}");
    let alice = w.user("alice").await;
    assert_eq!(w.state("alice").await, "Active");
    assert_eq!(alice.spec.email.as_deref(), Some("alice@example.org"));
    assert_eq!(alice.spec.display_name.as_deref(), Some("User alice"));
    assert_eq!(alice.spec.profile.as_deref(), Some("staff"));
    assert_eq!(
        alice.labels().get("usersync.dev/state").map(String::as_str),
        Some("active")
    );
    assert_eq!(
        alice
            .labels()
            .get("usersync.dev/mapping")
            .map(String::as_str),
        Some("staff")
    );
    assert!(
        alice.name_any().starts_with("corp-"),
        "record named from connector and anchor: {}",
        alice.name_any()
    );
    assert!(
        w.named("bob").await.is_empty(),
        "a disabled directory user was imported"
    );
    let mapping: DirectoryMapping = Api::namespaced(w.client.clone(), &w.ns.name)
        .get("staff")
        .await
        .unwrap();
    let status = mapping.status.unwrap();
    assert_eq!(status.users.unwrap().active, 1);
    assert!(status.next_sync_time.is_some(), "nextSyncTime is shown");
    assert!(condition_is_true(&status.conditions, "Synced"));
}

#[tokio::test]
async fn update_refreshes_fields_and_a_no_change_resync_writes_nothing() {
    // Full reads: the point is that a run that sees everything unchanged writes nothing.
    let w = World::new("update", Server::slapd(), json!({"incremental": false})).await;
    w.add_user("carol", false);
    w.add_user("dave", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_mail("carol", "carol.new@example.org");
    let run = w.sync("staff").await;
    assert_eq!((run.updated, run.imported), (1, 0), "{run:?}");
    assert_eq!(
        w.user("carol").await.spec.email.as_deref(),
        Some("carol.new@example.org")
    );

    let versions = |users: Vec<DirectoryUser>| {
        let mut v: Vec<_> = users
            .into_iter()
            .map(|u| (u.name_any(), u.resource_version()))
            .collect();
        v.sort();
        v
    };
    let before = versions(w.users().await);
    let run = w.sync("staff").await;
    assert_eq!(
        (run.updated, run.imported, run.unchanged),
        (0, 0, 2),
        "{run:?}"
    );
    assert_eq!(
        versions(w.users().await),
        before,
        "a no-change resync wrote to a user"
    );
}

#[tokio::test]
async fn disabled_user_is_preserved_and_reenabled_when_enabled_again() {
    let w = World::new(
        "disable",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("erin", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("erin", true);
    let run = w.sync("staff").await;
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(w.state("erin").await, "Preserved/DisabledInDirectory");
    let erin = w.user("erin").await;
    assert!(erin.status.as_ref().unwrap().preserved_at.is_some());
    assert!(
        erin.status.as_ref().unwrap().delete_after_time.is_some(),
        "the deletion deadline is shown"
    );
    assert_eq!(
        erin.labels().get("usersync.dev/state").map(String::as_str),
        Some("preserved")
    );

    w.set_disabled("erin", false);
    let run = w.sync("staff").await;
    assert_eq!(run.reenabled, 1, "{run:?}");
    assert_eq!(w.state("erin").await, "Active");
    assert!(w.user("erin").await.status.unwrap().preserved_at.is_none());
}

#[tokio::test]
async fn unmapped_user_is_preserved_with_auto_preserve_unmapped() {
    let w = World::new(
        "unmapped",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("frank", false);
    w.add_user("grace", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.remove("frank");
    let run = w.sync("staff").await;
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(w.state("frank").await, "Preserved/Unmapped");
    assert_eq!(w.state("grace").await, "Active");
}

#[tokio::test]
async fn unmapped_user_stays_as_it_is_without_auto_preserve_unmapped() {
    let w = World::new(
        "keep",
        Server::slapd(),
        json!({"autoPreserveUnmapped": false, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("heidi", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.remove("heidi");
    let run = w.sync("staff").await;
    assert_eq!(run.preserved, 0, "{run:?}");
    assert_eq!(w.state("heidi").await, "Active");
}

#[tokio::test]
async fn preserved_user_is_deleted_after_delete_after_while_the_connector_is_healthy() {
    let w = World::new(
        "retention",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "2h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("ivan", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.connected(true).await;
    w.set_disabled("ivan", true);
    w.sync("staff").await;
    assert_eq!(w.state("ivan").await, "Preserved/DisabledInDirectory");
    w.advance(Duration::from_secs(3600)).await;
    let run = w.sync("staff").await;
    assert_eq!(
        run.deleted, 0,
        "deleted before its retention passed: {run:?}"
    );
    w.advance(Duration::from_secs(3601)).await;
    let run = w.sync("staff").await;
    assert_eq!(run.deleted, 1, "{run:?}");
    assert_eq!(w.state("ivan").await, "Deleted/RetentionExpired");
    let ivan = w.user("ivan").await;
    assert!(ivan.status.as_ref().unwrap().deleted_at.is_some());
    assert_eq!(
        ivan.labels().get("usersync.dev/state").map(String::as_str),
        Some("deleted"),
        "the record stays as a tombstone"
    );
}

#[tokio::test]
async fn deletions_allowed_false_blocks_deletes_until_lifted() {
    let w = World::new(
        "frozen",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "1h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("judy", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("judy", true);
    w.sync("staff").await;
    w.set_deletions_allowed(false).await;
    w.advance(Duration::from_secs(3601)).await;
    the_gate_refuses(&w, "judy", "deletionsAllowed: false").await;

    w.set_deletions_allowed(true).await;
    w.connected(true).await;
    let run = w.sync("staff").await;
    assert_eq!(run.deleted, 1, "{run:?}");
    assert_eq!(w.state("judy").await, "Deleted/RetentionExpired");
}

/// A world with one preserved user whose retention has passed, a directory every run
/// reads without trouble, and a connector that probes every three hours (so the test,
/// not the prober, decides what its status says).
async fn due_for_deletion<'a>(test: &str, server: &'a Server) -> World<'a> {
    due_for_deletion_with(test, server, json!({})).await
}

/// [`due_for_deletion`], with `connector` merged into the connector's spec.
async fn due_for_deletion_with<'a>(
    test: &str,
    server: &'a Server,
    connector: serde_json::Value,
) -> World<'a> {
    let w = World::new(
        test,
        server,
        json!({"preservation": {"deleteAfter": "1h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("gate1", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("gate1", true);
    w.sync("staff").await;
    assert_eq!(w.state("gate1").await, "Preserved/DisabledInDirectory");
    let api: Api<ConnectorHealth> = Api::namespaced(w.client.clone(), &w.ns.name);
    let mut spec = json!({"probeInterval": "3h", "staleAfter": "2h"});
    spec.as_object_mut()
        .unwrap()
        .extend(connector.as_object().cloned().unwrap_or_default());
    api.patch(
        "corp",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": spec})),
    )
    .await
    .unwrap();
    // The spec change is probed at once; then not again for three hours.
    eventually(RUN_WAIT, "the new generation to be probed", || async {
        let c = api.get("corp").await.ok()?;
        let status = c.status?;
        let probed = find_condition(&status.conditions, "Connected")
            .is_some_and(|x| x.status == "True" && x.observed_generation == c.metadata.generation);
        probed.then_some(())
    })
    .await;
    w
}

/// The run reads the whole scope and plans the deletion of `username`; the gate
/// alone refuses it, and `DeletionsBlocked` says `why`.
async fn the_gate_refuses(w: &World<'_>, username: &str, why: &str) {
    let run = w.sync("staff").await;
    assert_eq!(
        (run.deleted, run.result),
        (0, RunResult::Blocked),
        "{run:?}"
    );
    assert_eq!(w.state(username).await, "Preserved/DisabledInDirectory");
    let mapping: DirectoryMapping = Api::namespaced(w.client.clone(), &w.ns.name)
        .get("staff")
        .await
        .unwrap();
    let blocked = find_condition(
        &mapping.status.as_ref().unwrap().conditions,
        "DeletionsBlocked",
    )
    .cloned()
    .unwrap();
    assert_eq!(blocked.status, "True");
    assert!(blocked.message.contains(why), "{}", blocked.message);
}

/// Rule 5, checked where it matters last: the connector is read again right before
/// deleting. An admin who freezes deletions while a run is reading the directory
/// stops that run's deletions, though the connector allowed them when it began.
#[tokio::test]
async fn deletions_frozen_while_a_run_reads_are_refused_by_the_check_right_before_deleting() {
    let upstream = Server::slapd()
        .url
        .trim_start_matches("ldap://")
        .parse()
        .expect("the shared slapd listens on an address");
    let relay = HeldRelay::start(upstream).await;
    let via_relay = json!({"ldap": {"url": format!("ldap://127.0.0.1:{}", relay.port)}});
    let w = due_for_deletion_with("gate-late", Server::slapd(), via_relay).await;
    w.clock.advance(Duration::from_secs(3601));

    relay.hold();
    let mappings: Api<DirectoryMapping> = Api::namespaced(w.client.clone(), &w.ns.name);
    let (before, _) = w.request_sync("staff").await;
    // The run has read the connector (deletions allowed) and waits on the directory.
    eventually(
        RUN_WAIT,
        "the run to wait on the held directory",
        || async {
            let status = mappings.get("staff").await.ok()?.status?;
            (status.sync_in_progress && relay.waiting() > 0).then_some(())
        },
    )
    .await;
    w.set_deletions_allowed(false).await;
    relay.release();

    let run = w.wait_run("staff", before.as_deref()).await;
    assert_eq!(
        (run.deleted, run.result),
        (0, RunResult::Blocked),
        "{run:?}"
    );
    let message = run.message.clone().unwrap_or_default();
    assert!(message.contains("deletionsAllowed: false"), "{run:?}");
    assert_eq!(w.state("gate1").await, "Preserved/DisabledInDirectory");
}

#[tokio::test]
async fn no_delete_while_the_connector_reads_connected_false_though_the_directory_answers() {
    let w = due_for_deletion("gate-down", Server::slapd()).await;
    w.clock.advance(Duration::from_secs(3601));
    // What a failed probe leaves, while the directory still answers every run.
    let out = cluster().kubectl([
        "patch",
        "conn",
        "corp",
        "-n",
        &w.ns.name,
        "--subresource=status",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/status/conditions/0/status","value":"False"}]"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    w.connected(false).await;
    the_gate_refuses(&w, "gate1", "not connected").await;
}

#[tokio::test]
async fn no_delete_while_the_last_successful_probe_is_older_than_stale_after() {
    let w = due_for_deletion("gate-stale", Server::slapd()).await;
    // Two and a half hours on and no probe since: Connected=True, but stale past
    // staleAfter (2h).
    w.clock.advance(Duration::from_secs(5 * 1800));
    the_gate_refuses(
        &w,
        "gate1",
        "deletions need one younger than staleAfter (2h)",
    )
    .await;
    // A fresh probe (asked for by a spec change) lets the same run through.
    let api: Api<ConnectorHealth> = Api::namespaced(w.client.clone(), &w.ns.name);
    let patch = json!({"spec": {"probeInterval": "2s"}});
    api.patch("corp", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    w.advance(Duration::from_secs(1)).await;
    let run = w.sync("staff").await;
    assert_eq!(run.deleted, 1, "{run:?}");
    // A tombstone is a lifecycle state, not a failure of the object.
    let tombstone = w.user("gate1").await.name_any();
    w.health_is("DirectoryUser", &tombstone, "Current", "Healthy")
        .await;
}

#[tokio::test]
async fn no_delete_while_the_connector_is_down_and_delete_once_it_is_back() {
    let private = crate::ldap_support::PrivateSlapd::start("down");
    let w = World::new(
        "down",
        &private.server,
        json!({"preservation": {"deleteAfter": "1h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("ken", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("ken", true);
    w.sync("staff").await;
    assert_eq!(w.state("ken").await, "Preserved/DisabledInDirectory");
    w.advance(Duration::from_secs(3601)).await;

    private.server.script(&["down"], None);
    w.connected(false).await;
    let run = w.sync("staff").await;
    assert_eq!((run.deleted, run.result), (0, RunResult::Failed), "{run:?}");
    assert_eq!(w.state("ken").await, "Preserved/DisabledInDirectory");

    private.server.script(&["up"], None);
    w.connected(true).await;
    let run = w.sync("staff").await;
    assert_eq!(run.deleted, 1, "{run:?}");
    assert_eq!(w.state("ken").await, "Deleted/RetentionExpired");
}

#[tokio::test]
async fn manual_preserve_is_never_lifted_by_sync() {
    let w = World::new("manual", Server::slapd(), json!({})).await;
    w.add_user("liam", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let name = w.user("liam").await.name_any();
    let users: Api<DirectoryUser> = Api::namespaced(w.client.clone(), &w.ns.name);
    users
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"preserve": true}})),
        )
        .await
        .unwrap();
    w.sync("staff").await;
    assert_eq!(w.state("liam").await, "Preserved/Manual");
    let run = w.sync("staff").await;
    assert_eq!(run.reenabled, 0, "{run:?}");
    assert_eq!(
        w.state("liam").await,
        "Preserved/Manual",
        "sync lifted a manual preserve"
    );
    assert!(
        w.user("liam").await.spec.preserve,
        "sync took over the admin's preserve field"
    );
}

#[tokio::test]
async fn manual_and_csv_users_are_untouched_and_a_colliding_directory_user_is_reported() {
    let w = World::new("collide", Server::slapd(), json!({})).await;
    let users: Api<DirectoryUser> = Api::namespaced(w.client.clone(), &w.ns.name);
    for (name, origin, username) in [
        ("manual-mia", "Manual", "mia"),
        ("csv-noah", "CSV", "noah-csv"),
    ] {
        let user: DirectoryUser = serde_json::from_value(json!({
            "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryUser", "metadata": {"name": name},
            "spec": {"origin": origin, "username": username, "email": format!("{username}@example.org")},
        }))
        .unwrap();
        users.create(&PostParams::default(), &user).await.unwrap();
    }
    let before: Vec<_> = users
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|u| u.resource_version())
        .collect();
    w.add_user("mia", false);
    w.add_user("olga", false);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!((run.imported, run.skipped), (1, 1), "{run:?}");
    let mia = w.named("mia").await;
    assert_eq!(
        mia.len(),
        1,
        "the directory user was merged into or imported beside the manual one"
    );
    assert_eq!(mia[0].name_any(), "manual-mia");
    for name in ["manual-mia", "csv-noah"] {
        let u = users.get(name).await.unwrap();
        assert!(
            before.contains(&u.resource_version()),
            "sync changed {name}"
        );
    }
    let events =
        crate::support::cluster().kubectl(["get", "events", "-n", &w.ns.name, "-o", "json"]);
    let events = crate::support::stdout(&events);
    assert!(
        events.contains("ImportSkipped") && events.contains("manual-mia"),
        "the collision is reported in an Event: {events}"
    );
}

#[tokio::test]
async fn deleted_is_final_and_a_returning_object_becomes_a_new_record() {
    let w = World::new(
        "return",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "1h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("pat", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let old = w.user("pat").await.name_any();
    w.set_disabled("pat", true);
    w.sync("staff").await;
    w.advance(Duration::from_secs(3601)).await;
    w.sync("staff").await;
    assert_eq!(w.state("pat").await, "Deleted/RetentionExpired");

    w.set_disabled("pat", false);
    let run = w.sync("staff").await;
    assert_eq!(run.imported, 1, "{run:?}");
    let records = w.named("pat").await;
    assert_eq!(
        records.len(),
        2,
        "a returning object gets a new record beside the tombstone"
    );
    let users: Api<DirectoryUser> = Api::namespaced(w.client.clone(), &w.ns.name);
    let tombstone = users.get(&old).await.unwrap();
    assert_eq!(
        format!("{:?}", tombstone.status.unwrap().state.unwrap()),
        "Deleted",
        "the old record was revived"
    );
    let new = records.into_iter().find(|u| u.name_any() != old).unwrap();
    assert_eq!(
        format!("{:?}", new.status.as_ref().unwrap().state.unwrap()),
        "Active"
    );
    assert_eq!(
        new.status.unwrap().previous_record.as_deref(),
        Some(old.as_str()),
        "the new record points at the old one"
    );
}

#[tokio::test]
async fn rename_keeps_identity() {
    let w = World::new("rename", Server::slapd(), json!({})).await;
    w.add_user("quinn", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let before = w.user("quinn").await;
    w.rename("quinn", "quinn2");
    let run = w.sync("staff").await;
    assert_eq!(
        (run.updated, run.imported, run.preserved),
        (1, 0, 0),
        "{run:?}"
    );
    let after = w.user("quinn2").await;
    assert_eq!(
        after.name_any(),
        before.name_any(),
        "a rename made a new record"
    );
    assert_eq!(after.spec.anchor, before.spec.anchor);
}

#[tokio::test]
async fn a_new_object_reusing_an_old_name_is_a_different_user() {
    let w = World::new("reuse", Server::slapd(), json!({})).await;
    w.add_user("rita", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let old = w.user("rita").await;
    // In one run: the old holder is renamed and a new object takes the name.
    w.rename("rita", "rita-old");
    w.add_user("rita", false);
    let run = w.sync("staff").await;
    assert_eq!((run.updated, run.imported), (1, 1), "{run:?}");
    assert_eq!(w.user("rita-old").await.name_any(), old.name_any());
    let new = w.user("rita").await;
    assert_ne!(new.name_any(), old.name_any());
    assert_ne!(new.spec.anchor, old.spec.anchor);
}

#[tokio::test]
async fn a_user_moving_between_mappings_is_transferred_never_preserved() {
    let w = World::new(
        "move",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let east = w.sub_ou("east");
    let west = w.sub_ou("west");
    w.add_user_in(&east, "sam", false);
    w.add_user_in(&east, "tess", false);
    w.mapping("east", &east, json!({})).await;
    w.mapping("west", &west, json!({})).await;
    let before = w.user("sam").await;
    assert_eq!(before.spec.mapping_ref.as_deref(), Some("east"));
    w.move_to(&format!("uid=sam,{east}"), &west);
    // The mapping that loses the user syncs first: it must hand it over, not preserve it.
    let run = w.sync("east").await;
    assert_eq!(run.preserved, 0, "{run:?}");
    let sam = w.user("sam").await;
    assert_eq!(w.state("sam").await, "Active");
    assert_eq!(sam.name_any(), before.name_any());
    assert_eq!(
        sam.spec.mapping_ref.as_deref(),
        Some("west"),
        "not transferred: {:?}",
        sam.spec
    );
    let run = w.sync("west").await;
    assert_eq!((run.preserved, run.imported), (0, 0), "{run:?}");
    assert_eq!(w.user("sam").await.spec.profile.as_deref(), Some("west"));
}

#[tokio::test]
async fn a_threshold_blocks_the_run_and_approve_run_releases_it() {
    let w = World::new(
        "threshold",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 10, "allowAnnotationApproval": true}}),
    )
    .await;
    for i in 0..10 {
        w.add_user(&format!("u{i}"), false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    for i in 0..4 {
        w.set_disabled(&format!("u{i}"), true);
    }
    let run = w.sync("staff").await;
    assert_eq!(
        (run.result, run.preserved),
        (RunResult::Blocked, 0),
        "{run:?}"
    );
    assert_eq!(w.state("u0").await, "Active");
    let mappings: Api<DirectoryMapping> = Api::namespaced(w.client.clone(), &w.ns.name);
    let status = mappings.get("staff").await.unwrap().status.unwrap();
    let blocked = find_condition(&status.conditions, "DeletionsBlocked")
        .cloned()
        .unwrap();
    assert_eq!(blocked.status, "True");
    assert!(
        blocked.message.contains("would preserve 4 of 10"),
        "{}",
        blocked.message
    );
    assert!(
        blocked.message.contains(&run.id),
        "the message names the run to approve: {}",
        blocked.message
    );
    assert_eq!(status.blocked_run.unwrap().run_id, run.id);

    // Where the policy accepts the annotation, it starts the approved run at once.
    w.annotate("staff", APPROVE_RUN_ANNOTATION, &run.id).await;
    let run = w.wait_run("staff", Some(&run.id)).await;
    assert_eq!(
        (run.result, run.preserved),
        (RunResult::Succeeded, 4),
        "{run:?}"
    );
    assert_eq!(w.state("u0").await, "Preserved/DisabledInDirectory");
}

#[tokio::test]
async fn dry_run_applies_nothing() {
    let w = World::new("dryrun", Server::slapd(), json!({"dryRun": true})).await;
    w.add_user("uma", false);
    w.add_user("vic", false);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(
        (run.result, run.imported),
        (RunResult::DryRun, 2),
        "{run:?}"
    );
    assert!(w.users().await.is_empty(), "a dry run created users");
}

#[tokio::test]
async fn dry_run_plans_preserves_and_deletes_and_applies_none() {
    let w = World::new(
        "dryrun-plan",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "1h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("dora", false);
    w.add_user("dale", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("dale", true);
    w.sync("staff").await;
    assert_eq!(w.state("dale").await, "Preserved/DisabledInDirectory");
    w.set_disabled("dora", true);
    w.apply(&json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "SyncPolicy", "metadata": {"name": "default"},
        "spec": {"interval": "24h", "dryRun": true, "preservation": {"deleteAfter": "1h"}, "safety": {"maxPreservePercent": 100}}}));
    w.advance(Duration::from_secs(3601)).await;
    let run = eventually_dry_run(&w).await;
    assert_eq!((run.preserved, run.deleted), (1, 1), "{run:?}");
    assert_eq!(w.state("dora").await, "Active", "a dry run preserved");
    assert_eq!(
        w.state("dale").await,
        "Preserved/DisabledInDirectory",
        "a dry run deleted"
    );
}

/// The next on-demand run once the policy's dry run is in force.
async fn eventually_dry_run(w: &World<'_>) -> usersync::api::RunSummary {
    crate::support::eventually(crate::world::RUN_WAIT, "a dry run", || async {
        let run = w.sync("staff").await;
        (run.result == RunResult::DryRun).then_some(run)
    })
    .await
}

/// A world on a private slapd with `count` active users of `prefix`, whose server
/// then returns at most `limit` entries per search.
async fn cut_off_world<'a>(
    private: &'a crate::ldap_support::PrivateSlapd,
    prefix: &str,
    count: usize,
    policy: serde_json::Value,
    changes: impl FnOnce(&World<'a>),
    limit: usize,
) -> World<'a> {
    let w = World::new(&format!("cut-{prefix}"), &private.server, policy).await;
    for i in 0..count {
        w.add_user(&format!("{prefix}{i}"), false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(w.users().await.len(), count);
    changes(&w);
    let l = limit.to_string();
    let limits = format!("size.soft={l} size.hard={l} size.pr={l} size.prtotal={l}");
    private.server.script(&["limits", &limits], None);
    w
}

/// The run failed as incomplete and every user is still as it was.
async fn assert_cut_off_changed_nothing(w: &World<'_>, prefix: &str, count: usize) {
    let run = w.sync("staff").await;
    assert_eq!(run.result, RunResult::Failed, "{run:?}");
    assert!(
        run.message
            .as_deref()
            .unwrap_or_default()
            .contains("incomplete"),
        "{run:?}"
    );
    for i in 0..count {
        assert_eq!(
            w.state(&format!("{prefix}{i}")).await,
            "Active",
            "a cut-off read changed {prefix}{i}"
        );
    }
    assert_eq!(
        w.users().await.len(),
        count,
        "a cut-off read imported a user"
    );
}

/// The same rule between full reads: the size limit stops the syncrepl refresh
/// (the run then falls back to a full read, which the limit cuts off too), and
/// nothing changes — not the deletion, the lock or the new user the refresh had
/// begun to report.
#[tokio::test]
async fn an_incomplete_incremental_read_changes_nothing() {
    let private = crate::ldap_support::PrivateSlapd::start("cut-incr");
    let policy = json!({"safety": {"maxPreservePercent": 100}});
    let changes = |w: &World<'_>| {
        w.remove("x0");
        w.set_disabled("x1", true);
        w.add_user("x4", false);
    };
    // Three changes, and at most one entry per search.
    let w = cut_off_world(&private, "x", 4, policy, changes, 1).await;
    assert_cut_off_changed_nothing(&w, "x", 4).await;
}

#[tokio::test]
async fn an_incomplete_read_changes_nothing() {
    let private = crate::ldap_support::PrivateSlapd::start("cut");
    // Full reads only: the paged read of the whole scope is what the size limit
    // cuts off (an incremental read of two changes would stay under it).
    let policy = json!({"incremental": false, "safety": {"maxPreservePercent": 100}});
    let changes = |w: &World<'_>| {
        w.remove("w0");
        w.set_disabled("w1", true);
    };
    // The server stops paged reads after 5 of 12 entries: the read is cut off mid-way.
    let w = cut_off_world(&private, "w", 12, policy, changes, 5).await;
    assert_cut_off_changed_nothing(&w, "w", 12).await;
}

#[tokio::test]
async fn deleting_a_mapping_sends_its_users_through_the_unmapped_rules() {
    let w = World::new(
        "finalize",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let x = w.sub_ou("x");
    w.add_user_in(&x, "alma", false);
    w.add_user_in(&x, "bo", false);
    w.mapping("x", &x, json!({})).await;
    w.mapping(
        "bo",
        &x,
        json!({"priority": 200, "ldap": {"baseDN": x, "filter": "(uid=bo)"}}),
    )
    .await;
    assert_eq!(
        w.user("bo").await.spec.mapping_ref.as_deref(),
        Some("x"),
        "the lower priority number owns the user"
    );

    let mappings: Api<DirectoryMapping> = Api::namespaced(w.client.clone(), &w.ns.name);
    mappings.delete("x", &Default::default()).await.unwrap();
    crate::support::eventually(crate::world::RUN_WAIT, "mapping x to go", || async {
        mappings.get_opt("x").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(w.state("alma").await, "Preserved/Unmapped");
    assert_eq!(
        w.state("bo").await,
        "Active",
        "a user another mapping matches is transferred, not preserved"
    );
    assert_eq!(w.user("bo").await.spec.mapping_ref.as_deref(), Some("bo"));
}

#[tokio::test]
async fn an_on_demand_request_is_refused_while_a_run_is_in_progress() {
    use crate::support::{TestNamespace, cluster, eventually, start_operator};
    // A server that accepts connections and never answers keeps the first run busy
    // until its timeout.
    let port = crate::support::silent_server().await;
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "refused").await;
    start_operator(&client, &ns.name);
    let apply = |o: serde_json::Value| {
        let out = cluster().apply(&ns.name, &o.to_string());
        assert!(out.status.success(), "{}", crate::support::stderr(&out));
    };
    apply(
        json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "SyncPolicy", "metadata": {"name": "default"}, "spec": {}}),
    );
    apply(
        json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "ConnectorHealth", "metadata": {"name": "corp"},
        "spec": {"ldap": {"url": format!("ldap://127.0.0.1:{port}"), "flavor": "OpenLDAP", "timeout": "8s"}, "probeInterval": "1h"}}),
    );
    apply(
        json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {"connectorRef": "corp", "policyRef": "default", "ldap": {"baseDN": "dc=example,dc=org"}}}),
    );
    let mappings: Api<DirectoryMapping> = Api::namespaced(client.clone(), &ns.name);
    eventually(crate::world::RUN_WAIT, "the first run to start", || async {
        mappings
            .get("staff")
            .await
            .ok()?
            .status?
            .sync_in_progress
            .then_some(())
    })
    .await;
    let patch =
        json!({"metadata": {"annotations": {usersync::api::SYNC_REQUESTED_ANNOTATION: "now"}}});
    mappings
        .patch("staff", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let request = eventually(
        crate::world::RUN_WAIT,
        "the request to be handled",
        || async {
            mappings
                .get("staff")
                .await
                .ok()?
                .status?
                .last_sync_request
                .filter(|r| r.value == "now")
        },
    )
    .await;
    assert!(request.outcome.starts_with("Refused: run "), "{request:?}");
    let status = mappings.get("staff").await.unwrap().status.unwrap();
    assert!(
        status.sync_in_progress,
        "the refusal came while the run was still going"
    );
    let events = crate::support::stdout(&cluster().kubectl(["get", "events", "-n", &ns.name]));
    assert!(events.contains("SyncRefused"), "{events}");
}

#[tokio::test]
async fn runs_between_full_reads_read_only_what_changed() {
    let w = World::new(
        "incremental",
        Server::slapd(),
        json!({"fullSyncInterval": "1h", "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("ida", false);
    w.add_user("jon", false);
    let first = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(
        first.read,
        Some(ReadMode::Full),
        "the first run reads everything: {first:?}"
    );
    w.set_mail("ida", "ida.new@example.org");
    let run = w.sync("staff").await;
    assert_eq!(
        (run.read, run.updated, run.unchanged),
        (Some(ReadMode::Incremental), 1, 0),
        "{run:?}"
    );
    assert_eq!(
        w.user("ida").await.spec.email.as_deref(),
        Some("ida.new@example.org")
    );
    // Absence from an incremental read is not "gone": jon, unchanged, stays.
    assert_eq!(w.state("jon").await, "Active");

    // A spec change makes the next run read the whole scope again.
    w.apply(&json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {"connectorRef": "corp", "policyRef": "default", "profile": "renamed", "ldap": {"baseDN": w.ou.dn}}}));
    let run = w.sync("staff").await;
    assert_eq!(run.read, Some(ReadMode::Full), "{run:?}");
    assert_eq!(w.user("jon").await.spec.profile.as_deref(), Some("renamed"));
}

#[tokio::test]
async fn a_full_read_comes_round_every_full_sync_interval() {
    let w = World::new(
        "fullsync",
        Server::slapd(),
        json!({"fullSyncInterval": "1m"}),
    )
    .await;
    w.add_user("kim", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(w.sync("staff").await.read, Some(ReadMode::Incremental));
    w.clock.advance(Duration::from_secs(61));
    assert_eq!(w.sync("staff").await.read, Some(ReadMode::Full));
}

#[tokio::test]
async fn kubectl_get_duser_wide_shows_a_preserved_users_reason_and_deadline() {
    let w = World::new(
        "wide",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "30d"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("wd1", false);
    w.add_user("wd2", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("wd1", true);
    let run = w.sync("staff").await;
    assert_eq!(run.preserved, 1, "{run:?}");
    let user = w.user("wd1").await;
    let deadline = user
        .status
        .as_ref()
        .and_then(|s| s.delete_after_time.as_ref())
        .expect("a preserved user has a deadline")
        .0
        .to_string();
    let out = cluster().kubectl(["get", "duser", "-o", "wide", "-n", &w.ns.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("DELETE AFTER"), "{table}");
    let row = table
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == "wd1"))
        .unwrap_or_else(|| panic!("no row for wd1:\n{table}"));
    assert!(
        row.contains("Preserved") && row.contains("DisabledInDirectory"),
        "{row}"
    );
    assert!(
        row.contains(&deadline),
        "the deadline {deadline} is not in {row:?}"
    );
    assert!(!row.contains("<invalid>"), "{row}");
}
