//! Writing an object's health: `Ready`, `Reconciling` and `Stalled` (the conditions
//! kstatus, Flux and Argo CD read), only when they changed, so a steady state issues
//! no writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::Result;
use super::readiness::READY;
use super::status::apply_status;
use crate::api::{condition, find_condition};
use crate::core::health::{Health, Verdict};

/// Work for the current generation is pending (or a transient failure is retried).
pub const RECONCILING: &str = "Reconciling";
/// Only a person can help.
pub const STALLED: &str = "Stalled";

/// The three health conditions of a verdict, keeping each one's transition time
/// while its status holds.
pub fn health_conditions(
    current: &[Condition],
    verdict: &Verdict,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> [Condition; 3] {
    // All three carry the verdict's reason; the ones that are false carry no message.
    let one = |type_: &str, on: bool, message: &str| {
        condition(
            type_,
            on,
            &verdict.reason,
            message,
            generation,
            find_condition(current, type_),
            now,
        )
    };
    let quiet = |health: Health| {
        if verdict.health == health {
            verdict.message.as_str()
        } else {
            ""
        }
    };
    [
        one(READY, verdict.health == Health::Ready, &verdict.message),
        one(
            RECONCILING,
            verdict.health == Health::Reconciling,
            quiet(Health::Reconciling),
        ),
        one(
            STALLED,
            verdict.health == Health::Stalled,
            quiet(Health::Stalled),
        ),
    ]
}

/// Whether `current` already holds these conditions (ignoring transition times).
fn holds(current: &[Condition], wanted: &[Condition]) -> bool {
    wanted.iter().all(|w| {
        find_condition(current, &w.type_).is_some_and(|c| {
            c.status == w.status
                && c.reason == w.reason
                && c.message == w.message
                && c.observed_generation == w.observed_generation
        })
    })
}

/// The other status fields a reconciler owns beside its conditions. Server-side
/// apply removes the fields a manager stops sending, so they go in every write together.
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

/// Apply the verdict's conditions and `observedGeneration` (with the further fields
/// the same reconciler owns) to `obj`'s status, unless it already says the same.
pub async fn write_health<K>(
    api: &Api<K>,
    obj: &K,
    current: &[Condition],
    observed_generation: Option<i64>,
    verdict: &Verdict,
    owned: OwnedFields,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let generation = obj.meta().generation;
    let conditions = health_conditions(current, verdict, generation, jiff::Timestamp::now());
    if holds(current, &conditions) && observed_generation == generation && owned.unchanged {
        return Ok(false);
    }
    let mut status = owned.fields;
    status.insert("conditions".into(), serde_json::json!(conditions));
    status.insert("observedGeneration".into(), serde_json::json!(generation));
    apply_status(api, &obj.name_any(), &status).await?;
    Ok(true)
}

/// Report an object that does not even deserialise (a field the schema lets through
/// but the operator cannot read) as Stalled / `InvalidSpec`, instead of letting it
/// stop the controller.
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
    let verdict = Verdict {
        health: Health::Stalled,
        reason: "InvalidSpec".into(),
        message: format!("the {} cannot be read: {}", K::kind(&()), invalid.error),
    };
    tracing::warn!(kind = %K::kind(&()), name = ?invalid.metadata.name, error = %invalid.error, "object does not deserialise");
    write_health(&api, guard, &[], None, &verdict, OwnedFields::none()).await?;
    Ok(())
}
