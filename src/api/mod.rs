//! The custom resources of the `usersync.dev/v1alpha1` API, defined here and only here.
//! `usersync crd` prints them; `crds/` holds that output.

mod common;
mod connector;
mod mapping;
mod policy;
mod user;

pub use common::*;
pub use connector::*;
pub use mapping::*;
pub use policy::*;
pub use user::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The four CustomResourceDefinitions, in a stable order, labelled as parts of usersync
/// so that tools can select them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        ConnectorHealth::crd(),
        DirectoryMapping::crd(),
        SyncPolicy::crd(),
        DirectoryUser::crd(),
    ];
    for crd in &mut crds {
        crd.metadata
            .labels
            .get_or_insert_default()
            .insert("app.kubernetes.io/part-of".into(), "usersync".into());
    }
    crds
}

/// The CRDs as one multi-document YAML stream, exactly as committed under `crds/`.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD always serialises"))
        .collect::<Vec<_>>()
        .join("---\n")
}
