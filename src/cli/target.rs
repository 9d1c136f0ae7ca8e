//! `usersync plan --target` and `usersync provision`: a ProvisioningTarget's next
//! cycle in words, and one user delivered now, through the controller's own code.

use std::sync::Arc;

use kube::{Api, Client};

use crate::api::ProvisioningTarget;
use crate::controller::target::{Provisioned, describe_step, preview};
use crate::controller::{Context, metrics::Metrics};
use crate::store::Backend;

fn context(client: Client, backend: Backend) -> Context {
    Context::new(client, 1, Arc::new(Metrics::default()), backend)
}

/// The steps the next cycle of `target` would send, in words.
pub async fn plan(
    client: Client,
    backend: Backend,
    namespace: &str,
    target: &str,
) -> anyhow::Result<Vec<String>> {
    let api: Api<ProvisioningTarget> = Api::namespaced(client.clone(), namespace);
    let t = api.get(target).await?;
    let ctx = context(client, backend);
    let plan = preview(&ctx, &t).await?;
    let mut lines: Vec<String> = plan.steps.iter().map(describe_step).collect();
    lines.extend(
        plan.withheld
            .iter()
            .map(|s| format!("withheld by the thresholds: {}", describe_step(s))),
    );
    lines.extend(
        plan.invalid
            .iter()
            .map(|(user, why)| format!("cannot deliver {user}: {why}")),
    );
    Ok(lines)
}

/// Deliver `user` to `target` now.
pub async fn provision(
    client: Client,
    backend: Backend,
    namespace: &str,
    target: &str,
    user: &str,
) -> anyhow::Result<Provisioned> {
    let api: Api<ProvisioningTarget> = Api::namespaced(client.clone(), namespace);
    let t = api.get(target).await?;
    let ctx = context(client, backend);
    crate::controller::target::provision(&ctx, &t, user).await
}
