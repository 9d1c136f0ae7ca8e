//! The custom resources of the `usersync.dev/v1alpha1` API, defined here and only here.
//! `usersync crd` prints them; `crds/` holds that output.

mod approval;
mod common;
mod connector;
mod mapping;
mod policy;
mod target;
mod user;

pub use approval::*;
pub use common::*;
pub use connector::*;
pub use mapping::*;
pub use policy::*;
pub use target::*;
pub use user::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The field manager of the reconcilers' writes: conditions they own and every
/// DirectoryUser. Admins' fields are never written under it, so server-side apply
/// shows exactly what the operator owns.
pub const FIELD_MANAGER: &str = "usersync";

/// The field manager of the run results in a mapping's status (lastRun, counts,
/// Synced/Syncing/DeletionsBlocked). A second manager keeps the reconciler's and
/// the runner's fields from removing each other under server-side apply.
pub const RUNNER_FIELD_MANAGER: &str = "usersync-runner";

/// The field manager of a mapping's `Push` condition, which its push channel
/// writes when it opens or closes, apart from the reconciler and the runner.
pub const PUSH_FIELD_MANAGER: &str = "usersync-push";

/// The six CustomResourceDefinitions, in a stable order, labelled as parts of usersync
/// so that tools can select them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        ConnectorHealth::crd(),
        DirectoryMapping::crd(),
        SyncPolicy::crd(),
        DirectoryUser::crd(),
        RunApproval::crd(),
        ProvisioningTarget::crd(),
    ];
    for crd in &mut crds {
        crd.metadata
            .labels
            .get_or_insert_default()
            .insert("app.kubernetes.io/part-of".into(), "usersync".into());
        // A DirectoryUser is a record, not a workload: Manual and CSV users are
        // never written by the operator, and would read as unobserved for ever.
        if crd.spec.names.kind != "DirectoryUser" {
            default_status(crd);
        }
        *crd = with_known_formats(crd);
    }
    crds
}

/// The CRD with every integer `format` one the API server knows. The schema
/// generator names Rust's unsigned types (`uint32`, `uint64`), which the API server
/// does not recognise and warns about on every `kubectl apply`; `int64` holds every
/// value the fields take, and the generated `minimum: 0` still refuses negatives.
fn with_known_formats(crd: &CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(format) = map.get_mut("format")
                    && matches!(
                        format.as_str(),
                        Some("uint8" | "uint16" | "uint32" | "uint64" | "uint" | "int8" | "int16")
                    )
                {
                    *format = "int64".into();
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD always serialises");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD with other formats is still a CRD")
}

/// What the API server fills in for an object (other than a DirectoryUser) without status:
/// `observedGeneration: 0`, below any generation (they start at 1). So a fresh object
/// reads as not yet observed (kstatus, which Flux and kpt use, says InProgress) until
/// the operator writes the generation it acted on. Only a missing status is
/// defaulted: a status written without `observedGeneration` keeps reading as before.
fn default_status(crd: &mut CustomResourceDefinition) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON;
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"))
            .expect("every kind has a status");
        assert!(
            status
                .properties
                .as_ref()
                .is_some_and(|p| p.contains_key("observedGeneration")),
            "every status has observedGeneration"
        );
        let mut default = serde_json::json!({"observedGeneration": 0});
        // A fresh approval reads Pending until the operator uses it or finds it stale.
        if crd.spec.names.kind == "RunApproval" {
            default["state"] = "Pending".into();
        }
        status.default = Some(JSON(default));
    }
}

/// The CRDs as one multi-document YAML stream, exactly as committed under `crds/`.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD always serialises"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of each schema node with CEL rules, anywhere in `value`.
    fn rule_messages<'a>(value: &'a serde_json::Value, out: &mut Vec<Vec<&'a str>>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(rules) = map
                    .get("x-kubernetes-validations")
                    .and_then(|r| r.as_array())
                {
                    out.push(rules.iter().filter_map(|r| r["message"].as_str()).collect());
                }
                map.values().for_each(|v| rule_messages(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| rule_messages(v, out)),
            _ => {}
        }
    }

    /// A duration of zero probes in a busy loop or deletes at once, so no
    /// duration field is left without a lower bound.
    #[test]
    fn every_duration_field_has_a_minimum() {
        let crds = serde_json::to_value(crds()).unwrap();
        let mut nodes = Vec::new();
        rule_messages(&crds, &mut nodes);
        let durations: Vec<_> = nodes
            .iter()
            .filter(|messages| messages.iter().any(|m| m.contains("must be a duration")))
            .collect();
        assert_eq!(durations.len(), 10, "the duration fields of the API");
        for messages in durations {
            assert!(
                messages.iter().any(|m| m.contains("must be at least")),
                "a duration field without a minimum: {messages:?}"
            );
        }
    }
}
