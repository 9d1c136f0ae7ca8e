//! Least privilege: a Secret becomes a credential only when its owner marked it so
//! (for the connectors it names), credentials go only to the endpoints an admin
//! allowed, and every opt-in that weakens that is visible. The attempts here are
//! the exfiltration a namespace's connector author could try: name another
//! application's Secret and point the connector at a server of their own.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use usersync::api::{ConnectorHealth, find_condition};

use crate::graph_emulator::{CLIENT_ID, TENANT_ID};
use crate::support::{Recording, cluster, eventually, recording_server, stdout};
use crate::world::Scene;

const WAIT: Duration = Duration::from_secs(30);

/// Another application's database password: what an attacker would like to read.
const VALUE: &str = "BillingDbPassw0rdXq7Zr2";

/// Wait until `name` has condition `type_` with this status and reason.
async fn until(
    api: &Api<ConnectorHealth>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Condition {
    eventually(
        WAIT,
        &format!("{name} {type_}={status}/{reason}"),
        || async {
            let c = api.get_opt(name).await.ok()??;
            find_condition(&c.status?.conditions, type_)
                .filter(|c| c.status == status && c.reason == reason)
                .cloned()
        },
    )
    .await
}

/// Patch metadata of a Secret, as its owner would.
async fn patch_secret(scene: &Scene, name: &str, meta: serde_json::Value) {
    let api: Api<Secret> = Api::namespaced(scene.client.clone(), &scene.ns.name);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": meta})),
    )
    .await
    .unwrap();
}

/// The value appears in no status, condition or Event of the namespace.
fn value_is_nowhere_visible(scene: &Scene) {
    for kind in ["connectorhealths", "events"] {
        let out = cluster().kubectl(["get", kind, "-n", &scene.ns.name, "-o", "json"]);
        let text = stdout(&out);
        assert!(
            !text.contains(VALUE),
            "the Secret's value reached {kind}: {text}"
        );
    }
}

/// Connector `grab` of kind `kind` (`ldap` or `entraID`) with `base` settings and `extra` ones.
fn grab(kind: &str, base: &serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut settings = base.clone();
    settings
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap());
    json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "ConnectorHealth", "metadata": {"name": "grab"},
        "spec": {kind: settings, "probeInterval": "1s", "staleAfter": "1m"},
    })
}

/// Once the Secret is allowed, the connector resolves and its probe sends the value
/// to the fake (which shows the fake records what it gets), still never shown.
async fn sent_once_allowed(scene: &Scene, api: &Api<ConnectorHealth>, fake: &Recording) {
    until(api, "grab", "Resolved", "True", "Resolved").await;
    eventually(WAIT, "the credential to reach the fake", || async {
        (fake.count(VALUE) > 0).then_some(())
    })
    .await;
    value_is_nowhere_visible(scene);
}

/// Let a few probe intervals pass, then check the fake received nothing at all.
async fn still_nothing_sent(fake: &Recording) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.count(VALUE), 0, "the Secret's value was sent");
    assert_eq!(fake.len(), 0, "the connector connected to the fake");
}

#[tokio::test]
async fn an_ldap_connector_cannot_send_an_unmarked_secret_anywhere() {
    let scene = Scene::new("cred-ldap", json!({})).await;
    let (port, fake) = recording_server().await;
    // Another application's Secret, never marked as a usersync credential.
    scene
        .secret_with("billing-db", "password", VALUE, json!({}))
        .await;
    let base = json!({
        "url": format!("ldap://127.0.0.1:{port}"), "flavor": "OpenLDAP", "timeout": "2s",
        "bindDN": "cn=anyone", "bindPasswordSecretRef": {"name": "billing-db", "key": "password"},
    });
    let connector = |extra: serde_json::Value| grab("ldap", &base, extra);
    scene.apply(&connector(json!({})));
    scene.start_operator();
    let api: Api<ConnectorHealth> = Api::namespaced(scene.client.clone(), &scene.ns.name);

    // A simple bind in clear text is refused before anything else.
    let c = until(&api, "grab", "Resolved", "False", "PlaintextBindRefused").await;
    assert!(
        c.message.contains("allowPlaintextBind: true"),
        "{}",
        c.message
    );
    until(&api, "grab", "Stalled", "True", "PlaintextBindRefused").await;
    until(&api, "grab", "Insecure", "False", "Secure").await;

    // The author opts in to clear text (it is their connector): the Secret is still refused.
    scene.apply(&connector(json!({"allowPlaintextBind": true})));
    let c = until(&api, "grab", "Resolved", "False", "SecretNotPermitted").await;
    let line = format!(
        "kubectl label secret billing-db -n {} usersync.dev/credential=true",
        scene.ns.name
    );
    assert!(c.message.contains(&line), "{}", c.message);
    until(&api, "grab", "Ready", "False", "SecretNotPermitted").await;
    until(&api, "grab", "Stalled", "True", "SecretNotPermitted").await;
    until(&api, "grab", "Insecure", "True", "PlaintextBind").await;
    still_nothing_sent(&fake).await;

    // Marked as a credential, but only for another connector: still refused.
    patch_secret(
        &scene,
        "billing-db",
        json!({"labels": {"usersync.dev/credential": "true"}, "annotations": {"usersync.dev/connectors": "billing"}}),
    )
    .await;
    let c = eventually(WAIT, "a refusal naming the annotation", || async {
        let c = api.get("grab").await.ok()?;
        find_condition(&c.status?.conditions, "Resolved")
            .filter(|c| {
                c.reason == "SecretNotPermitted" && c.message.contains("usersync.dev/connectors")
            })
            .cloned()
    })
    .await;
    assert!(
        c.message.contains("usersync.dev/connectors=billing,grab"),
        "{}",
        c.message
    );
    still_nothing_sent(&fake).await;
    value_is_nowhere_visible(&scene);

    // The owner lets this connector use it: now (and only now) the bind is sent.
    patch_secret(
        &scene,
        "billing-db",
        json!({"annotations": {"usersync.dev/connectors": "billing,grab"}}),
    )
    .await;
    sent_once_allowed(&scene, &api, &fake).await;
}

#[tokio::test]
async fn an_entra_connector_cannot_send_an_unmarked_secret_or_use_an_unknown_host() {
    let scene = Scene::new("cred-entra", json!({})).await;
    let (port, fake) = recording_server().await;
    scene
        .secret_with("billing-app", "secret", VALUE, json!({}))
        .await;
    let host = format!("http://127.0.0.1:{port}");
    let base = json!({
        "tenantID": TENANT_ID, "clientID": CLIENT_ID,
        "clientSecretRef": {"name": "billing-app", "key": "secret"},
        "authorityHost": host, "graphHost": host, "timeout": "2s",
    });
    let connector = |extra: serde_json::Value| grab("entraID", &base, extra);
    scene.apply(&connector(json!({})));
    scene.start_operator();
    let api: Api<ConnectorHealth> = Api::namespaced(scene.client.clone(), &scene.ns.name);

    // A host that is not the cloud's needs the admin's opt-in.
    let c = until(&api, "grab", "Resolved", "False", "EndpointNotAllowed").await;
    assert!(
        c.message.contains("login.microsoftonline.com"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("allowCustomEndpoints: true"),
        "{}",
        c.message
    );
    until(&api, "grab", "Stalled", "True", "EndpointNotAllowed").await;
    still_nothing_sent(&fake).await;

    // With it, the unmarked Secret is refused all the same.
    scene.apply(&connector(json!({"allowCustomEndpoints": true})));
    let c = until(&api, "grab", "Resolved", "False", "SecretNotPermitted").await;
    assert!(
        c.message.contains("kubectl label secret billing-app"),
        "{}",
        c.message
    );
    until(&api, "grab", "Stalled", "True", "SecretNotPermitted").await;
    until(&api, "grab", "Insecure", "True", "CustomEndpoints").await;
    still_nothing_sent(&fake).await;

    patch_secret(
        &scene,
        "billing-app",
        json!({"labels": {"usersync.dev/credential": "true"}, "annotations": {"usersync.dev/connectors": "payroll"}}),
    )
    .await;
    eventually(WAIT, "a refusal naming the annotation", || async {
        let c = api.get("grab").await.ok()?;
        find_condition(&c.status?.conditions, "Resolved")
            .filter(|c| c.reason == "SecretNotPermitted" && c.message.contains("payroll"))
            .map(|_| ())
    })
    .await;
    still_nothing_sent(&fake).await;
    value_is_nowhere_visible(&scene);

    // Allowed for this connector: the token request carries it to the fake.
    patch_secret(
        &scene,
        "billing-app",
        json!({"annotations": {"usersync.dev/connectors": null}}),
    )
    .await;
    sent_once_allowed(&scene, &api, &fake).await;
}

#[tokio::test]
async fn an_insecure_opt_in_shows_as_a_condition_a_column_and_one_event() {
    let scene = Scene::new("cred-insecure", json!({})).await;
    let port = crate::support::silent_server().await;
    scene.secret("lab-bind", "password", "lab-password").await;
    scene.secret("lab-app", "secret", "lab-client-secret").await;
    let host = format!("http://127.0.0.1:{port}");
    // Each opt-in, on a connector of its own (to a server that never answers).
    let opt_ins = [
        (
            "skip",
            json!({"ldap": {"url": format!("ldaps://127.0.0.1:{port}"), "insecureSkipVerify": true, "flavor": "OpenLDAP", "timeout": "1s"}}),
            "InsecureSkipVerify",
            "insecureSkipVerify: true",
        ),
        (
            "plain",
            json!({"ldap": {
                "url": format!("ldap://127.0.0.1:{port}"), "allowPlaintextBind": true, "flavor": "OpenLDAP", "timeout": "1s",
                "bindDN": "cn=lab", "bindPasswordSecretRef": {"name": "lab-bind", "key": "password"},
            }}),
            "PlaintextBind",
            "allowPlaintextBind: true",
        ),
        (
            "custom",
            json!({"entraID": {
                "tenantID": TENANT_ID, "clientID": CLIENT_ID, "clientSecretRef": {"name": "lab-app", "key": "secret"},
                "authorityHost": host, "graphHost": host, "allowCustomEndpoints": true, "timeout": "1s",
            }}),
            "CustomEndpoints",
            "allowCustomEndpoints: true",
        ),
    ];
    for (name, settings, _, _) in &opt_ins {
        let mut spec = settings.clone();
        spec["probeInterval"] = json!("1s");
        spec["staleAfter"] = json!("1m");
        scene.apply(&json!({
            "apiVersion": "usersync.dev/v1alpha1", "kind": "ConnectorHealth", "metadata": {"name": name},
            "spec": spec,
        }));
    }
    scene.start_operator();
    let api: Api<ConnectorHealth> = Api::namespaced(scene.client.clone(), &scene.ns.name);
    for (name, _, reason, opt_in) in &opt_ins {
        let c = until(&api, name, "Insecure", "True", reason).await;
        assert!(c.message.contains(opt_in), "{name}: {}", c.message);
        let out = cluster().kubectl(["get", "conn", name, "-n", &scene.ns.name]);
        let table = stdout(&out);
        assert!(
            table.lines().next().is_some_and(|h| h.contains("INSECURE")) && table.contains(reason),
            "{table}"
        );
    }

    // Several probes later, still one Warning Event for each.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let out = cluster().kubectl(["get", "events", "-n", &scene.ns.name, "-o", "json"]);
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, _, reason, _) in &opt_ins {
        let insecure: Vec<_> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == *reason)
            .collect();
        assert_eq!(insecure.len(), 1, "{name}: {insecure:?}");
        assert_eq!(insecure[0]["type"], "Warning");
        assert_eq!(insecure[0]["involvedObject"]["name"], *name);
        assert!(
            insecure[0]["count"].as_i64().unwrap_or(1) <= 1,
            "{insecure:?}"
        );
    }

    // Turned off: the condition says so.
    let patch = json!({"spec": {"ldap": {"insecureSkipVerify": false}}});
    api.patch("skip", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    until(&api, "skip", "Insecure", "False", "Secure").await;
}
