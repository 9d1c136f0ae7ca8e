//! The SyncPolicy reconciler: validates the policy and counts the mappings that use it.

use std::sync::Arc;

use kube::api::ListParams;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::Result;
use super::readiness::policy_readiness;
use super::ready::{OwnedFields, report_unreadable, write_health};
use crate::api::{DirectoryMapping, SyncPolicy};

/// Reconcile one SyncPolicy: its health (Ready when valid, Stalled when not) and how many mappings use it.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<SyncPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let policy = match &guard.0 {
        Ok(policy) => Arc::new(policy.clone()),
        Err(invalid) => {
            report_unreadable(&ctx.client, guard.as_ref(), invalid).await?;
            return Ok(Action::await_change());
        }
    };
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
    let mut fields = serde_json::Map::new();
    fields.insert("mappings".into(), count.into());
    let owned = OwnedFields {
        fields,
        unchanged: status.mappings == count,
    };
    let verdict = crate::core::health::policy_health(readiness.problem(), &readiness.message);
    write_health(
        &api,
        policy.as_ref(),
        &status.conditions,
        status.observed_generation,
        &verdict,
        owned,
    )
    .await?;
    Ok(Action::await_change())
}
