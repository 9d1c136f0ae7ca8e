//! `usersync approve <mapping> [run]`: show the run a safety threshold blocked, and
//! approve it with a RunApproval that names the caller. The operator starts the
//! approved run at once.
//!
//! Approving needs `create runapprovals`, a right apart from editing mappings; the
//! shipped admission policy refuses an approval whose `approvedBy` is not the
//! requester, so the caller's username is asked of the API server (a
//! SelfSubjectReview), never guessed from the kubeconfig.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{
    BlockedCycle, BlockedRun, DirectoryMapping, ProvisioningTarget, RunApproval, RunApprovalSpec,
    is_dns1123_subdomain,
};

/// What `approve` did.
#[derive(Debug)]
pub struct Approved {
    /// The blocked run that was approved.
    pub blocked: BlockedRun,
    /// The RunApproval's name.
    pub approval: String,
    /// The approver, as the API server knows the caller.
    pub approved_by: String,
}

/// Approve the blocked run of `mapping`: `run_id` when given must name it, so an
/// admin approves the plan they looked at and not a newer one.
pub async fn approve(
    client: Client,
    namespace: &str,
    mapping: &str,
    run_id: Option<&str>,
    reason: Option<&str>,
) -> anyhow::Result<Approved> {
    let api: Api<DirectoryMapping> = Api::namespaced(client.clone(), namespace);
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
    let approved_by = username(&client).await?;
    let approvals: Api<RunApproval> = Api::namespaced(client, namespace);
    let spec = RunApprovalSpec {
        mapping_ref: mapping.to_string(),
        target_ref: String::new(),
        run_id: blocked.run_id.clone(),
        approved_by: approved_by.clone(),
        reason: reason.map(str::to_owned),
    };
    // One approval per blocked run, named after it; a run id seen again after its
    // approval was used gets a new one.
    let name = format!("{mapping}-{}", blocked.run_id);
    let named = is_dns1123_subdomain(&name).then_some(name);
    let created = match named {
        Some(name) => match create(&approvals, Some(&name), None, &spec).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = approvals.get(&name).await?;
                if !existing.decided() {
                    anyhow::ensure!(
                        existing.spec.run_id == spec.run_id,
                        "RunApproval {name} exists for another run"
                    );
                    return Ok(Approved {
                        blocked,
                        approval: name,
                        approved_by: existing.spec.approved_by,
                    });
                }
                create(&approvals, None, Some(&format!("{name}-")), &spec).await?
            }
            other => other?,
        },
        None => create(&approvals, None, Some(&format!("{mapping}-")), &spec).await?,
    };
    Ok(Approved {
        blocked,
        approval: created.name_any(),
        approved_by,
    })
}

/// What `approve --target` did.
#[derive(Debug)]
pub struct ApprovedCycle {
    pub blocked: BlockedCycle,
    pub approval: String,
    pub approved_by: String,
}

/// Approve the blocked cycle of ProvisioningTarget `target`: `run_id` when given
/// must name it. The operator sends the withheld disables and deletes at once.
pub async fn approve_target(
    client: Client,
    namespace: &str,
    target: &str,
    run_id: Option<&str>,
    reason: Option<&str>,
) -> anyhow::Result<ApprovedCycle> {
    let api: Api<ProvisioningTarget> = Api::namespaced(client.clone(), namespace);
    let blocked = api
        .get(target)
        .await?
        .status
        .and_then(|s| s.blocked_cycle)
        .ok_or_else(|| anyhow::anyhow!("{namespace}/{target} has no cycle waiting for approval"))?;
    if let Some(wanted) = run_id {
        anyhow::ensure!(
            wanted == blocked.run_id,
            "{namespace}/{target} waits for approval of cycle {}, not {wanted}: its plan changed; look at it again",
            blocked.run_id
        );
    }
    let approved_by = username(&client).await?;
    let approvals: Api<RunApproval> = Api::namespaced(client, namespace);
    let spec = RunApprovalSpec {
        mapping_ref: String::new(),
        target_ref: target.to_string(),
        run_id: blocked.run_id.clone(),
        approved_by: approved_by.clone(),
        reason: reason.map(str::to_owned),
    };
    let created = create(&approvals, None, Some(&format!("{target}-")), &spec).await?;
    Ok(ApprovedCycle {
        blocked,
        approval: created.name_any(),
        approved_by,
    })
}

async fn create(
    api: &Api<RunApproval>,
    name: Option<&str>,
    generate_name: Option<&str>,
    spec: &RunApprovalSpec,
) -> kube::Result<RunApproval> {
    let approval = RunApproval {
        metadata: ObjectMeta {
            name: name.map(str::to_owned),
            generate_name: generate_name.map(str::to_owned),
            ..Default::default()
        },
        spec: spec.clone(),
        status: None,
    };
    api.create(&PostParams::default(), &approval).await
}

/// The caller's username, as the API server authenticated it.
pub async fn username(client: &Client) -> anyhow::Result<String> {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| {
            anyhow::anyhow!("asking the API server who you are (a SelfSubjectReview) failed: {e}")
        })?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| anyhow::anyhow!("the API server did not say who you are"))
}
