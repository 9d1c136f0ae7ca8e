//! The Argo CD health script, on the shapes of object each kind takes, and the copies
//! of it that the README and the chart's argocd-cm snippet carry.

#[path = "argocd_support/mod.rs"]
mod argocd_support;

use argocd_support::{argocd_health, script};
use serde_json::json;

fn object(kind: &str, generation: i64, status: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": kind,
        "metadata": {"name": "x", "generation": generation}, "status": status,
    })
}

fn conditions(ready: &str, reconciling: &str, stalled: &str, reason: &str) -> serde_json::Value {
    json!([
        {"type": "Ready", "status": ready, "reason": reason, "message": "ready says"},
        {"type": "Reconciling", "status": reconciling, "reason": reason, "message": "reconciling says"},
        {"type": "Stalled", "status": stalled, "reason": reason, "message": "stalled says"},
        {"type": "Connected", "status": "False", "reason": "Unreachable", "message": ""},
    ])
}

fn status_of(obj: serde_json::Value) -> String {
    argocd_health(&obj).status
}

#[test]
fn an_object_the_operator_has_not_observed_is_progressing() {
    let mut fresh = object("DirectoryMapping", 1, json!({"observedGeneration": 0}));
    assert_eq!(status_of(fresh.clone()), "Progressing");
    fresh.as_object_mut().unwrap().remove("status");
    assert_eq!(status_of(fresh), "Progressing");
    // An edit the operator has not seen yet, even though the last verdict was Ready.
    let edited = object(
        "DirectoryMapping",
        3,
        json!({"observedGeneration": 2, "conditions": conditions("True", "False", "False", "Synced")}),
    );
    assert_eq!(status_of(edited), "Progressing");
}

#[test]
fn ready_reconciling_and_stalled_read_healthy_progressing_and_degraded() {
    for (ready, reconciling, stalled, want, message) in [
        ("True", "False", "False", "Healthy", "ready says"),
        ("False", "True", "False", "Progressing", "reconciling says"),
        ("False", "False", "True", "Degraded", "stalled says"),
    ] {
        for kind in [
            "ConnectorHealth",
            "DirectoryMapping",
            "SyncPolicy",
            "ProvisioningTarget",
        ] {
            let obj = object(
                kind,
                2,
                json!({"observedGeneration": 2, "conditions": conditions(ready, reconciling, stalled, "Why")}),
            );
            let health = argocd_health(&obj);
            assert_eq!(
                (health.status.as_str(), health.message.as_str()),
                (want, message),
                "{kind}"
            );
        }
    }
    let suspended = object(
        "DirectoryMapping",
        1,
        json!({"observedGeneration": 1, "conditions": conditions("True", "False", "False", "Suspended")}),
    );
    assert_eq!(status_of(suspended), "Suspended");
    // Ready=False with neither of the others (an older operator's status) waits.
    let neither = object(
        "ConnectorHealth",
        1,
        json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "X", "message": "m"}]}),
    );
    assert_eq!(status_of(neither), "Progressing");
}

#[test]
fn every_lifecycle_state_of_a_user_is_healthy_and_an_unapplied_edit_progressing() {
    for state in ["Active", "Preserved", "Deleted"] {
        let user = object(
            "DirectoryUser",
            2,
            json!({"observedGeneration": 2, "state": state}),
        );
        assert_eq!(argocd_health(&user).status, "Healthy", "{state}");
    }
    // Manual and CSV users carry no status the operator wrote.
    let mut manual = object("DirectoryUser", 1, json!({}));
    assert_eq!(status_of(manual.clone()), "Healthy");
    manual.as_object_mut().unwrap().remove("status");
    assert_eq!(status_of(manual), "Healthy");
    let preserved_by_hand = object(
        "DirectoryUser",
        3,
        json!({"observedGeneration": 2, "state": "Active"}),
    );
    assert_eq!(status_of(preserved_by_hand), "Progressing");
}

#[test]
fn the_readme_and_the_argocd_cm_snippet_carry_the_chart_script_verbatim() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lua = script();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```lua\n{lua}```")),
        "the README's Argo CD script differs from charts/usersync/argocd/health.lua"
    );
    let cm: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("charts/usersync/argocd/argocd-cm.yaml")).unwrap(),
    )
    .unwrap();
    for kind in [
        "ConnectorHealth",
        "DirectoryMapping",
        "SyncPolicy",
        "ProvisioningTarget",
        "DirectoryUser",
    ] {
        let key = format!("resource.customizations.health.usersync.dev_{kind}");
        assert_eq!(
            cm["data"][key.as_str()].as_str(),
            Some(lua.as_str()),
            "{key}"
        );
    }
}
