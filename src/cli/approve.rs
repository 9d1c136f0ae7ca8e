//! `usersync approve <mapping> [run]`: show the run a safety threshold blocked, and
//! approve it. The operator starts the approved run at once.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::api::{APPROVE_RUN_ANNOTATION, BlockedRun, DirectoryMapping};

/// The field manager of the approval.
const APPROVER_FIELD_MANAGER: &str = "usersync-approver";

/// Approve the blocked run of `mapping`: `run_id` when given must name it, so an
/// admin approves the plan they looked at and not a newer one. Returns the blocked
/// run that was approved.
pub async fn approve(
    client: Client,
    namespace: &str,
    mapping: &str,
    run_id: Option<&str>,
) -> anyhow::Result<BlockedRun> {
    let api: Api<DirectoryMapping> = Api::namespaced(client, namespace);
    let current = api.get(mapping).await?;
    let blocked = current
        .status
        .and_then(|s| s.blocked_run)
        .ok_or_else(|| anyhow::anyhow!("{namespace}/{mapping} has no run waiting for approval"))?;
    if let Some(wanted) = run_id {
        anyhow::ensure!(
            wanted == blocked.run_id,
            "{namespace}/{mapping} waits for approval of run {}, not {wanted}: its plan changed; look at it again",
            blocked.run_id
        );
    }
    let approval = serde_json::json!({
        "apiVersion": "usersync.dev/v1alpha1",
        "kind": "DirectoryMapping",
        "metadata": {"name": mapping, "annotations": {APPROVE_RUN_ANNOTATION: blocked.run_id}},
    });
    api.patch(
        mapping,
        &PatchParams::apply(APPROVER_FIELD_MANAGER).force(),
        &Patch::Apply(&approval),
    )
    .await?;
    Ok(blocked)
}
