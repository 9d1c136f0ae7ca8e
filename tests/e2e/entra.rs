//! The lifecycle for Entra ID: the same rules, read through Microsoft Graph (here the
//! Graph emulator, written from Microsoft's documented behaviour).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use usersync::api::{ConnectorHealth, RunResult};

use crate::graph_emulator::{CLIENT_ID, CLIENT_SECRET, Fault, GraphEmulator, TENANT_ID};
use crate::support::eventually;
use crate::world::{RUN_WAIT, Scene};

/// A scene with an Entra ID connector `corp` on the emulator and the operator running.
pub(crate) async fn entra(test: &str, em: &GraphEmulator, policy: serde_json::Value) -> Scene {
    let scene = Scene::new(test, policy).await;
    entra_connector(&scene, em).await;
    scene.start_operator();
    scene
}

/// The Entra ID connector `corp` on the emulator, and its Secret.
pub(crate) async fn entra_connector(scene: &Scene, em: &GraphEmulator) {
    scene.secret("graph-app", "secret", CLIENT_SECRET).await;
    let base = em.base_url().to_string();
    scene.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "ConnectorHealth", "metadata": {"name": "corp"},
        "spec": {
            "entraID": {
                "tenantID": TENANT_ID, "clientID": CLIENT_ID,
                "clientSecretRef": {"name": "graph-app", "key": "secret"},
                // The emulator is no host Microsoft documents: an admin's opt-in.
                "authorityHost": base, "graphHost": base, "allowCustomEndpoints": true, "timeout": "10s",
            },
            "probeInterval": "2s", "staleAfter": "1m",
        }
    }));
}

pub(crate) fn cloud_mapping(extra: serde_json::Value) -> serde_json::Value {
    let mut spec =
        json!({"connectorRef": "corp", "policyRef": "default", "profile": "cloud", "entraID": {}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    spec
}

#[tokio::test]
async fn entra_users_are_imported_preserved_when_disabled_and_reenabled() {
    let em = GraphEmulator::start().await;
    let ana = em.create_user("ana@contoso.example", "Ana");
    let ben = em.create_user("ben@contoso.example", "Ben");
    em.set_enabled(&ben, false);
    let s = entra(
        "entra-life",
        &em,
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    s.connected(true).await;
    let run = s.mapping_with("cloud", cloud_mapping(json!({}))).await;
    assert_eq!(
        (run.result, run.imported),
        (RunResult::Succeeded, 1),
        "{run:?}"
    );
    let user = s.user("ana@contoso.example").await;
    assert_eq!(
        user.spec.anchor.as_deref(),
        Some(ana.as_str()),
        "the anchor is the Graph object id"
    );
    assert!(
        s.named("ben@contoso.example").await.is_empty(),
        "a disabled account was imported"
    );

    em.set_enabled(&ana, false);
    assert_eq!(s.sync("cloud").await.preserved, 1);
    assert_eq!(
        s.state("ana@contoso.example").await,
        "Preserved/DisabledInDirectory"
    );
    em.set_enabled(&ana, true);
    assert_eq!(s.sync("cloud").await.reenabled, 1);
    assert_eq!(s.state("ana@contoso.example").await, "Active");

    em.delete_user(&ana);
    assert_eq!(s.sync("cloud").await.preserved, 1);
    assert_eq!(
        s.state("ana@contoso.example").await,
        "Preserved/Unmapped",
        "a user gone from Graph is preserved, not deleted"
    );
}

#[tokio::test]
async fn entra_upn_change_keeps_identity_and_a_reused_upn_is_a_different_user() {
    let em = GraphEmulator::start().await;
    let old = em.create_user("cy@contoso.example", "Cy");
    let s = entra("entra-upn", &em, json!({})).await;
    s.mapping_with("cloud", cloud_mapping(json!({}))).await;
    let before = s.user("cy@contoso.example").await;

    // One run sees the rename and a new object taking the old UPN.
    em.rename(&old, "cy.old@fabrikam.example");
    let new = em.create_user("cy@contoso.example", "Cy (new)");
    let run = s.sync("cloud").await;
    assert_eq!((run.updated, run.imported), (1, 1), "{run:?}");
    let renamed = s.user("cy.old@fabrikam.example").await;
    assert_eq!(
        renamed.metadata.name, before.metadata.name,
        "a UPN change made a new record"
    );
    assert_eq!(
        renamed.spec.user_principal_name.as_deref(),
        Some("cy.old@fabrikam.example")
    );
    let newcomer = s.user("cy@contoso.example").await;
    assert_eq!(newcomer.spec.anchor.as_deref(), Some(new.as_str()));
    assert_ne!(newcomer.metadata.name, before.metadata.name);
}

#[tokio::test]
async fn entra_throttling_is_recovered_with_no_lost_or_duplicated_user() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(2);
    for i in 0..7 {
        em.create_user(&format!("t{i}@contoso.example"), &format!("T{i}"));
    }
    let s = entra("entra-429", &em, json!({})).await;
    s.mapping_with("cloud", cloud_mapping(json!({}))).await;
    for i in 7..9 {
        em.create_user(&format!("t{i}@contoso.example"), &format!("T{i}"));
    }
    em.inject_after(1, Fault::Throttle { retry_after: 1 }, 2);
    let run = s.sync("cloud").await;
    assert_eq!(
        (run.result, run.imported),
        (RunResult::Succeeded, 2),
        "{run:?}"
    );
    let users = s.users().await;
    assert_eq!(users.len(), 9, "users lost or duplicated after throttling");
}

#[tokio::test]
async fn entra_read_cut_off_by_persistent_503s_changes_nothing() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(2);
    for i in 0..5 {
        em.create_user(&format!("f{i}@contoso.example"), &format!("F{i}"));
    }
    let s = entra(
        "entra-503",
        &em,
        json!({"incremental": false, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    s.mapping_with("cloud", cloud_mapping(json!({}))).await;
    assert_eq!(s.users().await.len(), 5);
    // The first page answers, every later one fails: the read never completes.
    em.inject_after(1, Fault::Unavailable, 1000);
    let run = s.sync("cloud").await;
    assert_eq!(run.result, RunResult::Failed, "{run:?}");
    for i in 0..5 {
        assert_eq!(
            s.state(&format!("f{i}@contoso.example")).await,
            "Active",
            "a cut-off read changed a user"
        );
    }
}

#[tokio::test]
async fn entra_runs_between_full_reads_use_delta_and_an_expired_delta_link_means_a_full_read() {
    use usersync::api::ReadMode;
    let em = GraphEmulator::start().await;
    let dee = em.create_user("dee@contoso.example", "Dee");
    em.create_user("eli@contoso.example", "Eli");
    let s = entra("entra-delta", &em, json!({"fullSyncInterval": "1h"})).await;
    let first = s.mapping_with("cloud", cloud_mapping(json!({}))).await;
    assert_eq!(
        (first.read, first.imported),
        (Some(ReadMode::Full), 2),
        "{first:?}"
    );

    em.set_property(&dee, "displayName", json!("Dee D."));
    let run = s.sync("cloud").await;
    assert_eq!(
        (run.read, run.updated, run.unchanged),
        (Some(ReadMode::Incremental), 1, 0),
        "{run:?}"
    );
    assert_eq!(
        s.user("dee@contoso.example")
            .await
            .spec
            .display_name
            .as_deref(),
        Some("Dee D.")
    );
    assert_eq!(
        s.state("eli@contoso.example").await,
        "Active",
        "absent from a delta round is not gone"
    );

    em.expire_delta_tokens();
    let run = s.sync("cloud").await;
    assert_eq!(
        (run.result, run.read),
        (RunResult::Succeeded, Some(ReadMode::Full)),
        "{run:?}"
    );
    assert_eq!(run.unchanged, 2, "{run:?}");
}

#[tokio::test]
async fn entra_a_user_missing_from_one_eventual_group_read_stays_active_and_one_gone_is_preserved()
{
    let em = GraphEmulator::start().await;
    let lag = em.create_user("lag@contoso.example", "Lag");
    let left = em.create_user("left@contoso.example", "Left");
    let group = em.create_group("Staff");
    em.add_member(&group, &lag);
    em.add_member(&group, &left);
    let s = entra(
        "entra-lag",
        &em,
        json!({"incremental": false, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let mapping = cloud_mapping(json!({"entraID": {"groups": [group]}}));
    let first = s.mapping_with("cloud", mapping).await;
    assert_eq!(first.imported, 2, "{first:?}");

    // The member listing's index has not caught up with an edit of `lag`;
    // `left` really left the group.
    em.set_property(&lag, "displayName", json!("Lag, renamed"));
    em.lag_index(&lag, 1);
    em.remove_member(&group, &left);
    let run = s.sync("cloud").await;
    assert_eq!(
        (run.result, run.preserved, run.updated),
        (RunResult::Succeeded, 1, 1),
        "{run:?}"
    );
    assert_eq!(s.state("lag@contoso.example").await, "Active");
    assert_eq!(
        s.user("lag@contoso.example")
            .await
            .spec
            .display_name
            .as_deref(),
        Some("Lag, renamed")
    );
    assert_eq!(s.state("left@contoso.example").await, "Preserved/Unmapped");
}

#[tokio::test]
async fn entra_leaving_or_joining_the_selected_group_nested_or_direct_is_seen_by_the_next_incremental_run()
 {
    use usersync::api::ReadMode;
    let em = GraphEmulator::start().await;
    let stays = em.create_user("stays@contoso.example", "Stays");
    let leaves = em.create_user("leaves@contoso.example", "Leaves");
    let joins = em.create_user("joins@contoso.example", "Joins");
    let group = em.create_group("Staff");
    let team = em.create_group("Team");
    em.add_member(&group, &stays);
    em.add_member(&group, &team);
    em.add_member(&team, &leaves);
    let s = entra(
        "entra-members",
        &em,
        json!({"fullSyncInterval": "24h", "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let mapping = cloud_mapping(json!({"entraID": {"groups": [group]}}));
    let first = s.mapping_with("cloud", mapping).await;
    assert_eq!(
        (first.read, first.imported),
        (Some(ReadMode::Full), 2),
        "{first:?}"
    );

    // Access revoked in the nested group, granted in the selected one: nothing
    // else about either user changes.
    em.remove_member(&team, &leaves);
    em.add_member(&group, &joins);
    let run = s.sync("cloud").await;
    assert_eq!(
        (run.result, run.read, run.preserved, run.imported),
        (RunResult::Succeeded, Some(ReadMode::Incremental), 1, 1),
        "{run:?}"
    );
    assert_eq!(
        s.state("leaves@contoso.example").await,
        "Preserved/Unmapped"
    );
    assert_eq!(s.state("joins@contoso.example").await, "Active");
    assert_eq!(s.state("stays@contoso.example").await, "Active");
}

/// Wait until the connector `corp` has been probed `count` more times.
async fn probes(s: &Scene, count: usize) {
    let api: Api<ConnectorHealth> = Api::namespaced(s.client.clone(), &s.ns.name);
    let seen = std::sync::Mutex::new(BTreeSet::new());
    eventually(RUN_WAIT, &format!("{count} more probes"), || async {
        let probed = api.get("corp").await.ok()?.status?.last_probe_time?;
        let mut seen = seen.lock().unwrap();
        seen.insert(probed.0);
        // The first value seen is the last probe before the wait.
        (seen.len() > count).then_some(())
    })
    .await;
}

#[tokio::test]
async fn entra_one_token_serves_every_run_and_probe_until_the_secret_is_rotated() {
    let em = GraphEmulator::start().await;
    em.create_user("tok@contoso.example", "Tok");
    let s = entra("entra-token", &em, json!({})).await;
    s.connected(true).await;
    s.mapping_with("cloud", cloud_mapping(json!({}))).await;
    s.sync("cloud").await;
    probes(&s, 3).await;
    assert_eq!(
        em.token_requests(),
        1,
        "two runs and several probes asked for more than one token"
    );

    // The client secret is rotated: the app gets a second secret, then the
    // Secret the connector names is changed to it.
    em.add_client_secret("rotated-graph-secret-4K~");
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns.name);
    secrets
        .patch(
            "graph-app",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"secret": "rotated-graph-secret-4K~"}})),
        )
        .await
        .unwrap();
    eventually(RUN_WAIT, "a token for the rotated secret", || async {
        (em.token_requests() == 2).then_some(())
    })
    .await;
    let run = s.sync("cloud").await;
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
    probes(&s, 2).await;
    assert_eq!(
        em.token_requests(),
        2,
        "the rotated secret's token was not kept"
    );
}

#[tokio::test]
async fn entra_an_unknown_ca_is_reported_at_once_as_tls_naming_the_host_and_ca_secret_ref() {
    let em = GraphEmulator::start_tls().await;
    let started = std::time::Instant::now();
    // No caSecretRef: the emulator's CA is no system root.
    let s = entra("entra-tls", &em, json!({})).await;
    let api: Api<ConnectorHealth> = Api::namespaced(s.client.clone(), &s.ns.name);
    let connected = eventually(RUN_WAIT, "Connected=False/TLSError", || async {
        let status = api.get("corp").await.ok()?.status?;
        usersync::api::find_condition(&status.conditions, "Connected")
            .filter(|c| c.status == "False" && c.reason != "Probing")
            .cloned()
    })
    .await;
    let waited = started.elapsed();
    assert_eq!(connected.reason, "TLSError", "{}", connected.message);
    let host = format!("127.0.0.1:{}", em.base_url().port().unwrap());
    for part in [
        format!("the certificate of {host}"),
        "UnknownIssuer".into(),
        "spec.entraID.caSecretRef".into(),
    ] {
        assert!(
            connected.message.contains(&part),
            "{part}: {}",
            connected.message
        );
    }
    assert!(
        !connected.message.contains("insecureSkipVerify"),
        "{}",
        connected.message
    );
    assert!(
        waited < std::time::Duration::from_secs(8),
        "reported after {waited:?}, as if retried to a timeout"
    );

    // One connection per probe (every 2s), no retries in between.
    let before = em.tls_connections();
    probes(&s, 2).await;
    let opened = em.tls_connections() - before;
    assert!(
        (2..=3).contains(&opened),
        "{opened} connections for 2 probes"
    );
}

#[tokio::test]
async fn entra_changes_reach_the_registry_through_short_period_delta_polling_in_push_mode() {
    let em = GraphEmulator::start().await;
    em.create_user("ana@contoso.example", "Ana");
    let s = entra("entra-push", &em, crate::push::push_policy()).await;
    s.connected(true).await;
    s.mapping_with("cloud", cloud_mapping(json!({}))).await;
    let message = s.push_condition("cloud", "Polling").await;
    assert!(message.contains("every 10s"), "{message}");
    s.quiet("cloud").await;
    assert_eq!(s.state("ana@contoso.example").await, "Active");
    let before = s.last_run("cloud").await.unwrap().id;

    // No run is due for an hour: only the delta polling can start one.
    let ben = em.create_user("ben@contoso.example", "Ben");
    s.state_becomes("ben@contoso.example", "Active").await;
    // The users are written before the run's summary: wait for the summary.
    let run = s.wait_run("cloud", Some(&before)).await;
    assert_eq!(
        (run.trigger, run.result),
        (usersync::api::RunTrigger::Push, RunResult::Succeeded),
        "{run:?}"
    );
    em.set_enabled(&ben, false);
    s.state_becomes("ben@contoso.example", "Preserved/DisabledInDirectory")
        .await;
}
