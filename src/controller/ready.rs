//! Writing the `Ready` condition: only when it changed, so a steady state issues no writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::Result;
use super::readiness::{READY, Readiness};
use super::status::apply_status;
use crate::api::{condition, find_condition};

/// Apply `Ready` and `observedGeneration` to `obj`'s status unless they already say the same.
pub async fn write_ready<K>(
    api: &Api<K>,
    obj: &K,
    current: &[Condition],
    observed_generation: Option<i64>,
    readiness: &Readiness,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    write_ready_with(
        api,
        obj,
        current,
        observed_generation,
        readiness,
        OwnedFields::none(),
    )
    .await
}

/// The other status fields a reconciler owns beside `Ready`. Server-side apply
/// removes the fields a manager stops sending, so they go in every write together.
pub struct OwnedFields {
    /// The fields, as a JSON object (a field left out is removed).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Whether the status already holds exactly these values.
    pub unchanged: bool,
}

impl OwnedFields {
    /// No further fields.
    pub fn none() -> Self {
        Self {
            fields: serde_json::Map::new(),
            unchanged: true,
        }
    }
}

/// [`write_ready`], with further fields the same reconciler owns.
pub async fn write_ready_with<K>(
    api: &Api<K>,
    obj: &K,
    current: &[Condition],
    observed_generation: Option<i64>,
    readiness: &Readiness,
    owned: OwnedFields,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let generation = obj.meta().generation;
    let previous = find_condition(current, READY);
    let unchanged = previous.is_some_and(|p| {
        (p.status == "True") == readiness.ready
            && p.reason == readiness.reason
            && p.message == readiness.message
            && p.observed_generation == generation
    }) && observed_generation == generation
        && owned.unchanged;
    if unchanged {
        return Ok(false);
    }
    let ready = condition(
        READY,
        readiness.ready,
        readiness.reason,
        readiness.message.clone(),
        generation,
        previous,
        jiff::Timestamp::now(),
    );
    let mut status = owned.fields;
    status.insert("conditions".into(), serde_json::json!([ready]));
    status.insert("observedGeneration".into(), serde_json::json!(generation));
    apply_status(api, &obj.name_any(), &status).await?;
    Ok(true)
}

/// Report an object that does not even deserialise (a field the schema lets through
/// but the operator cannot read) as `Ready=False` / `InvalidSpec`, instead of letting
/// it stop the controller.
pub async fn report_unreadable<K>(
    client: &kube::Client,
    guard: &kube::core::DeserializeGuard<K>,
    invalid: &kube::core::error_boundary::InvalidObject,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let ns = invalid.metadata.namespace.clone().unwrap_or_default();
    let api: Api<kube::core::DeserializeGuard<K>> = Api::namespaced(client.clone(), &ns);
    let readiness = Readiness {
        ready: false,
        reason: "InvalidSpec",
        message: format!("the {} cannot be read: {}", K::kind(&()), invalid.error),
    };
    tracing::warn!(kind = %K::kind(&()), name = ?invalid.metadata.name, error = %invalid.error, "object does not deserialise");
    write_ready(&api, guard, &[], None, &readiness).await?;
    Ok(())
}
