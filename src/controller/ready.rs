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
    let generation = obj.meta().generation;
    let previous = find_condition(current, READY);
    let unchanged = previous.is_some_and(|p| {
        (p.status == "True") == readiness.ready
            && p.reason == readiness.reason
            && p.message == readiness.message
            && p.observed_generation == generation
    }) && observed_generation == generation;
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
    let status = serde_json::json!({ "conditions": [ready], "observedGeneration": generation });
    apply_status(api, &obj.name_any(), &status).await?;
    Ok(true)
}
