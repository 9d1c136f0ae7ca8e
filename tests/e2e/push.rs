//! Push mode (DESIGN section 4) against a real OpenLDAP server and a real API
//! server: with the policy's `push` on, an `ldapmodify` reaches the registry
//! in seconds although the interval is an hour, through a run the change
//! started (trigger `Push`); a lost connection shows in the mapping's `Push`
//! condition and heals by itself. The same on Active Directory is in `ad.rs`.

use std::time::Duration;

use serde_json::json;
use usersync::api::{ReadMode, RunResult, RunTrigger};

use crate::ldap_support::{PrivateSlapd, Server};
use crate::world::World;

/// A policy in push mode whose scheduled runs are an hour apart: a change seen
/// within the tests' wait can only have come through the push channel.
pub fn push_policy() -> serde_json::Value {
    json!({"interval": "1h", "push": true, "safety": {"maxPreservePercent": 100}})
}

#[tokio::test]
async fn a_directory_change_reaches_the_registry_through_a_push_run_within_the_interval() {
    let w = World::new("push", Server::slapd(), push_policy()).await;
    for uid in ["ana", "bob"] {
        w.add_user(uid, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let message = w.push_condition("staff", "Listening").await;
    assert!(message.contains("incremental run"), "{message}");
    w.quiet("staff").await;
    assert_eq!(w.state("ana").await, "Active");
    let before = w.last_run("staff").await.unwrap().id;

    // Disable one user, rename another, add a third: no run is due for an hour.
    w.set_disabled("ana", true);
    w.rename("bob", "bobby");
    w.add_user("carl", false);
    w.state_becomes("ana", "Preserved/DisabledInDirectory")
        .await;
    w.state_becomes("bobby", "Active").await;
    w.state_becomes("carl", "Active").await;
    assert!(
        w.named("bob").await.is_empty(),
        "the rename left the old name"
    );

    // The users are written before the run's summary: wait for the summary.
    let run = w.wait_run("staff", Some(&before)).await;
    assert_eq!(
        (run.trigger, run.result, run.read),
        (
            RunTrigger::Push,
            RunResult::Succeeded,
            Some(ReadMode::Incremental)
        ),
        "{run:?}"
    );
}

#[tokio::test]
async fn a_lost_push_connection_shows_in_the_condition_and_heals_when_the_directory_is_back() {
    let private = PrivateSlapd::start("pushdown");
    let w = World::new("pushdown", &private.server, push_policy()).await;
    w.add_user("dan", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.push_condition("staff", "Listening").await;

    private.server.script(&["down"], None);
    let message = w.push_condition("staff", "PushDisconnected").await;
    assert!(
        message.contains("opening it again in") && message.contains("scheduled runs go on"),
        "{message}"
    );
    assert!(
        !message.contains(private.server.bind_password()),
        "{message}"
    );

    private.server.script(&["up"], None);
    w.push_condition("staff", "Listening").await;
    w.quiet("staff").await;
    let before = w.last_run("staff").await.unwrap().id;
    // The channel is open again and reports changes as before.
    w.set_disabled("dan", true);
    w.state_becomes("dan", "Preserved/DisabledInDirectory")
        .await;
    let run = w.wait_run("staff", Some(&before)).await;
    assert_eq!(run.trigger, RunTrigger::Push, "{run:?}");
}

#[tokio::test]
async fn without_push_mode_a_mapping_has_no_push_condition_and_no_channel() {
    let w = World::new("nopush", Server::slapd(), json!({"interval": "1h"})).await;
    w.add_user("eve", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("eve", true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        w.state("eve").await,
        "Active",
        "a run came without push mode"
    );
    let run = w.last_run("staff").await.unwrap();
    assert_eq!(run.trigger, RunTrigger::Schedule, "{run:?}");
    let mappings: kube::Api<usersync::api::DirectoryMapping> =
        kube::Api::namespaced(w.client.clone(), &w.ns.name);
    let status = mappings.get("staff").await.unwrap().status.unwrap();
    assert!(
        usersync::api::find_condition(&status.conditions, "Push").is_none(),
        "{:?}",
        status.conditions
    );
}

#[tokio::test]
async fn joining_or_leaving_a_group_kept_outside_the_base_dn_starts_a_push_run() {
    use crate::membership::{add_group, change_member};
    let w = World::new("pushgroup", Server::slapd(), push_policy()).await;
    // The users below ou=people; the group the mapping selects beside it.
    let people = w.sub_ou("people");
    for uid in ["ana", "bob"] {
        w.add_user_in(&people, uid, false);
    }
    let member = |uid: &str| format!("uid={uid},{people}");
    let group = add_group(&w, "staff", &[&member("ana")]);
    w.mapping(
        "staff",
        &people,
        json!({"ldap": {"baseDN": people, "memberOf": [group]}}),
    )
    .await;
    w.push_condition("staff", "Listening").await;
    w.quiet("staff").await;
    assert_eq!(w.state("ana").await, "Active");
    assert!(w.named("bob").await.is_empty(), "bob is in no group yet");
    let before = w.last_run("staff").await.unwrap().id;

    // No run is due for an hour, and nothing below the base DN changes.
    change_member(&w, &group, "add", &member("bob"));
    change_member(&w, &group, "delete", &member("ana"));
    w.state_becomes("bob", "Active").await;
    w.state_becomes("ana", "Preserved/Unmapped").await;
    let run = w.wait_run("staff", Some(&before)).await;
    assert_eq!(run.trigger, RunTrigger::Push, "{run:?}");
}
