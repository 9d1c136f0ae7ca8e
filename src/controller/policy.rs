//! The SyncPolicy reconciler: validates the policy and counts the mappings that use it.

use std::sync::Arc;

use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::Result;
use super::readiness::{READY, policy_readiness};
use super::status::apply_status;
use crate::api::{DirectoryMapping, SyncPolicy, condition, find_condition};

/// Reconcile one SyncPolicy: its `Ready` condition and how many mappings use it.
pub async fn reconcile(policy: Arc<SyncPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let api: Api<SyncPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let mappings: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
    let count = mappings
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|m| m.spec.policy_ref == name)
        .count();
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let readiness = policy_readiness(&policy.spec);
    let status = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let previous = find_condition(&status.conditions, READY);
    let unchanged = previous.is_some_and(|p| {
        (p.status == "True") == readiness.ready
            && p.reason == readiness.reason
            && p.message == readiness.message
            && p.observed_generation == generation
    }) && status.observed_generation == generation
        && status.mappings == count;
    if !unchanged {
        let ready = condition(
            READY,
            readiness.ready,
            readiness.reason,
            readiness.message.clone(),
            generation,
            previous,
            jiff::Timestamp::now(),
        );
        let patch = serde_json::json!({
            "conditions": [ready],
            "observedGeneration": generation,
            "mappings": count,
        });
        apply_status(&api, &name, &patch).await?;
    }
    Ok(Action::await_change())
}
