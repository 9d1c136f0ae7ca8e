//! The committed CRDs are exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/usersync.dev.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/usersync.dev.yaml exists");
    let generated = usersync::api::crds_yaml();
    assert!(
        committed == generated,
        "crds/usersync.dev.yaml is out of date with src/api: run `cargo run -- crd > crds/usersync.dev.yaml` and copy it to charts/usersync/crds/ and deploy/base/crds/"
    );
}

#[test]
fn every_crd_has_status_short_names_and_printer_columns() {
    for crd in usersync::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.group, "usersync.dev", "{name}");
        assert_eq!(crd.spec.scope, "Namespaced", "{name}");
        let short = crd.spec.names.short_names.clone().unwrap_or_default();
        assert!(!short.is_empty(), "{name} has no short name");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name} has no status subresource"
        );
        let columns = version
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        assert!(columns.len() >= 4, "{name} has too few printer columns");
    }
}

#[test]
fn every_schema_field_is_documented() {
    // `kubectl explain` shows these descriptions; a field without one explains nothing.
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (field, sub) in props {
                let here = format!("{path}.{field}");
                // Conditions and metadata are Kubernetes' own, documented upstream.
                let inside_standard = path.contains(".conditions") || here.ends_with(".metadata");
                if !inside_standard && sub.get("description").is_none() {
                    missing.push(here.clone());
                }
                walk(&here, sub, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in usersync::api::crds() {
        let schema = serde_json::to_value(
            &crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema,
        )
        .unwrap();
        walk(&crd.spec.names.kind, &schema, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}
