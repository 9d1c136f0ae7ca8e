//! Health as GitOps tools read it: `Ready` means the object does its job now,
//! `Reconciling` that work for its generation is pending or a transient failure is
//! being retried, `Stalled` that only a person can help. Each test drives a real
//! object into one of those states and reads the conditions the operator wrote.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use serde_json::json;
use usersync::api::{ConnectorHealth, DirectoryMapping, RunTrigger, find_condition};

use crate::ldap_support::Server;
use crate::support::{eventually, silent_server, stderr};
use crate::world::{RUN_WAIT, Scene, World};

const WAIT: Duration = Duration::from_secs(30);

/// The condition `type_` once it has `status` and `reason`.
async fn until<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
    wait: Duration,
) -> Condition
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: HasConditions,
{
    eventually(
        wait,
        &format!("{name} {type_}={status}/{reason}"),
        || async {
            let obj = api.get_opt(name).await.ok()??;
            find_condition(&obj.conditions(), type_)
                .filter(|c| c.status == status && c.reason == reason)
                .cloned()
        },
    )
    .await
}

trait HasConditions {
    fn conditions(&self) -> Vec<Condition>;
}

impl HasConditions for ConnectorHealth {
    fn conditions(&self) -> Vec<Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
}

impl HasConditions for DirectoryMapping {
    fn conditions(&self) -> Vec<Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
}

/// Exactly one of Ready, Reconciling and Stalled is True.
fn one_verdict(conditions: &[Condition]) -> &'static str {
    let on: Vec<&'static str> = ["Ready", "Reconciling", "Stalled"]
        .into_iter()
        .filter(|t| find_condition(conditions, t).is_some_and(|c| c.status == "True"))
        .collect();
    assert_eq!(on.len(), 1, "one verdict at a time: {conditions:#?}");
    on[0]
}

/// A port on 127.0.0.1 that nothing listens on: every connection is refused at once.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connector(scene: &Scene, url: &str, stale_after: &str) {
    scene.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "ConnectorHealth", "metadata": {"name": "corp"},
        "spec": {
            "ldap": {"url": url, "flavor": "OpenLDAP", "timeout": "2s"},
            "probeInterval": "1s", "staleAfter": stale_after,
        }
    }));
}

#[tokio::test]
async fn ldaps_to_a_server_of_an_unknown_ca_is_a_tls_failure_naming_the_host_and_ca_secret_ref() {
    let server = Server::slapd();
    let scene = Scene::new("health-tls", json!({})).await;
    scene.start_operator();
    let started = std::time::Instant::now();
    // No caSecretRef: slapd's certificate comes from the tests' private CA.
    connector(&scene, &server.ldaps_url, "1m");
    let api: Api<ConnectorHealth> = Api::namespaced(scene.client.clone(), &scene.ns.name);
    let c = until(&api, "corp", "Connected", "False", "TLSError", WAIT).await;
    let waited = started.elapsed();
    let host = server.ldaps_url.trim_start_matches("ldaps://");
    for part in [
        &format!("the certificate of {host}"),
        "UnknownIssuer",
        "spec.ldap.caSecretRef",
    ] {
        assert!(c.message.contains(part), "{part}: {}", c.message);
    }
    assert!(!c.message.contains("insecureSkipVerify"), "{}", c.message);
    assert!(
        waited < Duration::from_secs(6),
        "reported after {waited:?}, as if retried to a timeout"
    );
    // Probed once a second, not in a loop: the failures count the probes.
    let failures = |c: ConnectorHealth| c.status.unwrap_or_default().consecutive_failures;
    let before = failures(api.get("corp").await.unwrap());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = failures(api.get("corp").await.unwrap()) - before;
    assert!(
        (2..=6).contains(&during),
        "{during} failed probes in 4s at a probe interval of 1s"
    );
    let c = until(&api, "corp", "Stalled", "True", "TLSError", WAIT).await;
    assert!(c.message.contains("caSecretRef"), "{}", c.message);
}

#[tokio::test]
async fn an_unreachable_connector_is_reconciling_and_stalled_once_past_stale_after() {
    let scene = Scene::new("health-down", json!({})).await;
    scene.start_operator();
    let closed = closed_port();
    connector(&scene, &format!("ldap://127.0.0.1:{closed}"), "4s");
    let api: Api<ConnectorHealth> = Api::namespaced(scene.client.clone(), &scene.ns.name);
    let c = until(&api, "corp", "Reconciling", "True", "Unreachable", WAIT).await;
    assert!(c.message.contains("retrying"), "{}", c.message);
    scene
        .health_is("ConnectorHealth", "corp", "InProgress", "Progressing")
        .await;
    let ready = find_condition(&api.get("corp").await.unwrap().conditions(), "Ready")
        .cloned()
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Unreachable")
    );
    // The outage outlasts staleAfter: a person should look.
    let c = until(&api, "corp", "Stalled", "True", "Unreachable", WAIT).await;
    assert!(
        c.message.contains("longer than staleAfter 4s"),
        "{}",
        c.message
    );
    assert_eq!(
        one_verdict(&api.get("corp").await.unwrap().conditions()),
        "Stalled"
    );
}

#[tokio::test]
async fn a_connector_that_never_answers_says_it_is_probing_at_once() {
    let scene = Scene::new("health-hung", json!({})).await;
    scene.start_operator();
    let port = silent_server().await;
    connector(&scene, &format!("ldap://127.0.0.1:{port}"), "1m");
    let api: Api<ConnectorHealth> = Api::namespaced(scene.client.clone(), &scene.ns.name);
    // Before the first probe can time out, the status already says what goes on.
    let probing = until(
        &api,
        "corp",
        "Reconciling",
        "True",
        "Probing",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        probing.message.contains("first probe"),
        "{}",
        probing.message
    );
    scene
        .health_is("ConnectorHealth", "corp", "InProgress", "Progressing")
        .await;
    until(&api, "corp", "Reconciling", "True", "Timeout", WAIT).await;
}

#[tokio::test]
async fn bad_credentials_stall_the_connector_at_once() {
    let server = Server::slapd();
    let scene = Scene::new("health-cred", json!({})).await;
    scene
        .secret("corp-bind", "password", "not-the-password")
        .await;
    scene.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "ConnectorHealth", "metadata": {"name": "corp"},
        "spec": {
            "ldap": {
                "url": server.url, "allowPlaintextBind": true, "flavor": "OpenLDAP", "bindDN": server.bind_dn,
                "bindPasswordSecretRef": {"name": "corp-bind", "key": "password"},
            },
            "probeInterval": "1h", "staleAfter": "1h",
        }
    }));
    scene.start_operator();
    let api: Api<ConnectorHealth> = Api::namespaced(scene.client.clone(), &scene.ns.name);
    let c = until(&api, "corp", "Stalled", "True", "BindFailed", WAIT).await;
    assert!(!c.message.contains("not-the-password"), "{}", c.message);
    assert_eq!(
        one_verdict(&api.get("corp").await.unwrap().conditions()),
        "Stalled"
    );
}

/// An admin narrows a mapping's filter. The edit is applied by a run soon (not at
/// the next interval, 24h away), the thresholds still hold, and the mapping is not
/// Ready while its new generation waits for approval; approving it makes it Ready.
#[tokio::test]
async fn a_spec_edit_is_applied_soon_and_a_blocked_edit_stalls_the_mapping() {
    let w = World::new("health-edit", Server::slapd(), json!({})).await;
    for i in 0..5 {
        w.add_user(&format!("he{i}"), false);
    }
    let first = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(first.imported, 5);
    let api: Api<DirectoryMapping> = Api::namespaced(w.client.clone(), &w.ns.name);
    let ready = until(&api, "staff", "Ready", "True", "Synced", WAIT).await;
    assert_eq!(ready.observed_generation, Some(1));
    w.health_is("DirectoryMapping", "staff", "Current", "Healthy")
        .await;
    w.health_is("ConnectorHealth", "corp", "Current", "Healthy")
        .await;

    // Narrow the filter to one user: the run would preserve 4 of 5, past 10%.
    w.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {
            "connectorRef": "corp", "policyRef": "default", "profile": "staff",
            "ldap": {"baseDN": w.ou.dn, "filter": "(uid=he0)"},
        },
    }));
    // Observed at once, applied only by the run that comes a few seconds later: in
    // between, the edit is pending (Flux waits, Argo CD shows Progressing).
    let pending = until(&api, "staff", "Reconciling", "True", "RunPending", WAIT).await;
    assert!(
        pending.message.contains("generation 2"),
        "{}",
        pending.message
    );
    assert_eq!(pending.observed_generation, Some(2));
    w.health_is("DirectoryMapping", "staff", "InProgress", "Progressing")
        .await;
    let stalled = until(
        &api,
        "staff",
        "Stalled",
        "True",
        "AwaitingApproval",
        RUN_WAIT,
    )
    .await;
    let mapping = api.get("staff").await.unwrap();
    let status = mapping.status.clone().unwrap();
    let run = status.last_run.clone().unwrap();
    assert_eq!(run.trigger, RunTrigger::SpecChanged, "{run:?}");
    assert_eq!(run.observed_generation, Some(2));
    let blocked = status.blocked_run.clone().unwrap();
    assert!(
        stalled
            .message
            .contains(&format!("usersync approve staff {}", blocked.run_id))
            && stalled.message.contains("preserve 4"),
        "{}",
        stalled.message
    );
    assert_eq!(one_verdict(&status.conditions), "Stalled");
    assert_eq!(
        w.state("he1").await,
        "Active",
        "nothing withheld was applied"
    );

    let out = crate::support::usersync(["approve", "staff", &blocked.run_id, "-n", &w.ns.name]);
    assert!(out.status.success(), "usersync approve: {}", stderr(&out));
    let ready = until(&api, "staff", "Ready", "True", "Synced", RUN_WAIT).await;
    assert_eq!(ready.observed_generation, Some(2));
    assert_eq!(w.state("he1").await, "Preserved/Unmapped");
    assert_eq!(w.state("he0").await, "Active");
    w.health_is("DirectoryMapping", "staff", "Current", "Healthy")
        .await;
    // A user's lifecycle state is not a failure of the object.
    for username in ["he0", "he1"] {
        let user = kube::ResourceExt::name_any(&w.user(username).await);
        w.health_is("DirectoryUser", &user, "Current", "Healthy")
            .await;
    }
}

/// Runs that fail because the directory is down are retried (Reconciling); they
/// stall the mapping only once the failures outlast the connector's staleAfter.
#[tokio::test]
async fn failing_runs_are_reconciling_then_stalled_past_stale_after() {
    let scene = Scene::new("health-runs", json!({})).await;
    scene.start_operator();
    let closed = closed_port();
    connector(&scene, &format!("ldap://127.0.0.1:{closed}"), "5s");
    scene.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {"connectorRef": "corp", "policyRef": "default", "ldap": {"baseDN": "dc=example,dc=org"}},
    }));
    let api: Api<DirectoryMapping> = Api::namespaced(scene.client.clone(), &scene.ns.name);
    let c = until(&api, "staff", "Reconciling", "True", "RunFailed", WAIT).await;
    assert!(c.message.contains("next try starts at"), "{}", c.message);
    scene
        .health_is("DirectoryMapping", "staff", "InProgress", "Progressing")
        .await;
    // The first retry comes 30s after the failure; by then 5s have long passed.
    let c = until(
        &api,
        "staff",
        "Stalled",
        "True",
        "RunFailed",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        c.message.contains("longer than staleAfter 5s"),
        "{}",
        c.message
    );
    scene
        .health_is("DirectoryMapping", "staff", "Failed", "Degraded")
        .await;
}

/// A dry run does what it was told (plan, apply nothing): healthy. A missing
/// reference needs a person: failed.
#[tokio::test]
async fn a_dry_run_is_healthy_and_a_missing_reference_is_failed() {
    let w = World::new("health-dry", Server::slapd(), json!({"dryRun": true})).await;
    w.add_user("hd0", false);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(run.result, usersync::api::RunResult::DryRun);
    let api: Api<DirectoryMapping> = Api::namespaced(w.client.clone(), &w.ns.name);
    until(&api, "staff", "Ready", "True", "DryRun", WAIT).await;
    w.health_is("DirectoryMapping", "staff", "Current", "Healthy")
        .await;
    w.health_is("SyncPolicy", "default", "Current", "Healthy")
        .await;

    w.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "orphan"},
        "spec": {"connectorRef": "nowhere", "policyRef": "default", "ldap": {"baseDN": w.ou.dn}},
    }));
    until(&api, "orphan", "Stalled", "True", "ConnectorNotFound", WAIT).await;
    let said = w
        .health_is("DirectoryMapping", "orphan", "Failed", "Degraded")
        .await;
    assert!(
        said.contains("create it or fix spec.connectorRef"),
        "{said}"
    );
}

/// An admin's preserve is a spec change of the user: it reads in progress until a
/// run applies it, then healthy again (Preserved is a state, not a failure).
#[tokio::test]
async fn a_preserve_set_by_hand_is_in_progress_until_a_run_applies_it() {
    let w = World::new("health-hold", Server::slapd(), json!({})).await;
    w.add_user("hh0", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let name = kube::ResourceExt::name_any(&w.user("hh0").await);
    w.health_is("DirectoryUser", &name, "Current", "Healthy")
        .await;
    let out = crate::support::usersync(["preserve", &name, "-n", &w.ns.name]);
    assert!(out.status.success(), "usersync preserve: {}", stderr(&out));
    w.health_is("DirectoryUser", &name, "InProgress", "Progressing")
        .await;
    w.sync("staff").await;
    assert_eq!(w.state("hh0").await, "Preserved/Manual");
    w.health_is("DirectoryUser", &name, "Current", "Healthy")
        .await;
}
