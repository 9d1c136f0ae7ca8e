//! RunApprovals: an approver's consent to one threshold-blocked run. The mapping
//! reconciler uses a matching approval once (it starts the blocked run at once and
//! names the approver in that run) and reports one that names another run as Stale.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::context::{Context, FIELD_MANAGER};
use super::error::Result;
use crate::api::{
    ApprovalState, BlockedRun, DirectoryMapping, RunApproval, RunApprovalStatus, set_condition,
};

/// An approval the operator has taken for a run: who approved, and through which
/// RunApproval. The run names them in its report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The RunApproval's name.
    pub name: String,
    /// The approved (blocked) run's id.
    pub run_id: String,
    /// The approver, as the admission policy checked it.
    pub approved_by: String,
    /// The approver's reason, if given.
    pub reason: Option<String>,
}

impl Granted {
    /// The approval in words, for Events, logs and the run's message.
    pub fn describe(&self) -> String {
        let reason = self
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        format!(
            "approved by {} (RunApproval {}){reason}",
            self.approved_by, self.name
        )
    }
}

/// The oldest undecided approval of `mapping` that names its blocked run.
pub fn matching(ctx: &Context, mapping: &DirectoryMapping) -> Option<RunApproval> {
    let blocked = mapping.status.as_ref()?.blocked_run.as_ref()?;
    ctx.undecided_approvals(mapping)
        .into_iter()
        .find(|a| a.spec.run_id == blocked.run_id)
}

/// Take `approval` for run `run_id`: record in its status that it is used, so that
/// it is never used again. The write is conditional on the version read: an
/// approval that changed since (another replica used it) is left alone, and
/// `None` comes back.
pub async fn take(
    ctx: &Context,
    approval: &RunApproval,
    run_id: &str,
    blocked: &BlockedRun,
) -> Result<Option<Granted>> {
    let api: Api<RunApproval> = Api::namespaced(
        ctx.client.clone(),
        &approval.namespace().unwrap_or_default(),
    );
    let Some(fresh) = api.get_opt(&approval.name_any()).await? else {
        return Ok(None);
    };
    if fresh.decided() || fresh.spec.run_id != blocked.run_id {
        return Ok(None);
    }
    let message = format!(
        "run {run_id} of mapping {} applies blocked run {} (it would preserve {} and delete {} users)",
        fresh.spec.mapping_ref, blocked.run_id, blocked.would_preserve, blocked.would_delete
    );
    if !decide(
        ctx,
        &api,
        &fresh,
        ApprovalState::Used,
        Some(run_id),
        message,
    )
    .await?
    {
        return Ok(None);
    }
    Ok(Some(Granted {
        name: fresh.name_any(),
        run_id: fresh.spec.run_id.clone(),
        approved_by: fresh.spec.approved_by.clone(),
        reason: fresh.spec.reason.clone(),
    }))
}

/// Report the undecided approvals of `mapping` that name a run other than the one
/// waiting for approval (or name one when none waits) as Stale. Decided on the
/// mapping as the API server has it now, so a cache that lags behind a freshly
/// blocked run never makes a good approval stale.
pub async fn report_stale(ctx: &Context, mapping: &DirectoryMapping) -> Result<()> {
    let candidates = ctx.undecided_approvals(mapping);
    let blocked_now = mapping.status.as_ref().and_then(|s| s.blocked_run.as_ref());
    if candidates
        .iter()
        .all(|a| Some(a.spec.run_id.as_str()) == blocked_now.map(|b| b.run_id.as_str()))
    {
        return Ok(());
    }
    let ns = mapping.namespace().unwrap_or_default();
    let mappings: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(fresh) = mappings.get_opt(&mapping.name_any()).await? else {
        return Ok(());
    };
    let blocked = fresh.status.and_then(|s| s.blocked_run);
    let api: Api<RunApproval> = Api::namespaced(ctx.client.clone(), &ns);
    for approval in candidates {
        if blocked
            .as_ref()
            .is_some_and(|b| b.run_id == approval.spec.run_id)
        {
            continue;
        }
        let message = match &blocked {
            Some(b) => format!(
                "mapping {} waits for approval of run {}, not {}: this approval does nothing; look at the blocked plan again (`usersync approve {} {}`)",
                approval.spec.mapping_ref,
                b.run_id,
                approval.spec.run_id,
                approval.spec.mapping_ref,
                b.run_id
            ),
            None => format!(
                "no run of mapping {} waits for approval: this approval of run {} does nothing",
                approval.spec.mapping_ref, approval.spec.run_id
            ),
        };
        tracing::info!(mapping = %mapping.name_any(), approval = %approval.name_any(), approved_by = %approval.spec.approved_by, "{message}");
        decide(ctx, &api, &approval, ApprovalState::Stale, None, message).await?;
    }
    Ok(())
}

/// Write the approval's outcome, conditional on the version read. `false` when
/// the approval changed in the meantime (nothing was written).
pub(crate) async fn decide(
    ctx: &Context,
    api: &Api<RunApproval>,
    approval: &RunApproval,
    state: ApprovalState,
    consumed_by: Option<&str>,
    message: String,
) -> Result<bool> {
    let now = ctx.now();
    let generation = approval.metadata.generation;
    let mut status = approval.status.clone().unwrap_or_default();
    let (ready, stalled, reason) = match state {
        ApprovalState::Used => (true, false, "Used"),
        ApprovalState::Stale => (false, true, "Stale"),
        ApprovalState::Pending => (false, false, "Pending"),
    };
    for (type_, value) in [
        (super::READY, ready),
        ("Reconciling", false),
        ("Stalled", stalled),
    ] {
        set_condition(
            &mut status.conditions,
            type_,
            value,
            reason,
            message.clone(),
            generation,
            now,
        );
    }
    let status = RunApprovalStatus {
        conditions: status.conditions,
        observed_generation: generation,
        state: Some(state),
        consumed_by: consumed_by.map(str::to_owned),
        decided_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        message: Some(message),
    };
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": approval.resource_version()},
        "status": status,
    });
    match api
        .patch_status(
            &approval.name_any(),
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}
