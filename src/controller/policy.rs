//! The SyncPolicy reconciler: validates the policy and counts the mappings that use it.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::Result;
use super::readiness::policy_readiness;
use super::ready::write_ready;
use crate::api::SyncPolicy;

/// Reconcile one SyncPolicy: its `Ready` condition.
pub async fn reconcile(policy: Arc<SyncPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = policy.namespace().unwrap_or_default();
    let api: Api<SyncPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let readiness = policy_readiness(&policy.spec);
    let status = policy.status.clone().unwrap_or_default();
    write_ready(
        &api,
        policy.as_ref(),
        &status.conditions,
        status.observed_generation,
        &readiness,
    )
    .await?;
    Ok(Action::await_change())
}
