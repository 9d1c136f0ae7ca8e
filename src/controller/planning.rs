//! Everything a run needs before it applies anything: the mapping's policy and
//! connector resolved, the registry's snapshot, the directory read, the targeted
//! lookups in the connector's other mappings, and the pure plan. `usersync plan`
//! and the runner share it, so the CLI shows exactly what a run would do.

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::connection::{scope_for, source_for};
use super::resolve::{gate_of, mapping_context, policy_of};
use crate::api::{APPROVE_RUN_ANNOTATION, ConnectorHealth, DirectoryMapping, SyncPolicy};
use crate::core::{
    self, Approval, DirectoryView, MappingContext, OtherClaims, Plan, PlanInput, UserRecord,
    claim_lookups_needed,
};
use crate::directory::Source;
use crate::store::UserStore;
use crate::store::kubernetes::KubernetesStore;

/// Where the run's view of the directory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewFrom {
    /// A complete read of the mapping's scope.
    Directory,
    /// Nothing matches any more: the mapping is being deleted, so its users go
    /// through the unmapped rules (and to other mappings that match them).
    Nothing,
}

/// A plan and what it was made from.
pub struct Prepared {
    pub plan: Plan,
    pub snapshot: Vec<UserRecord>,
    pub store: KubernetesStore,
    pub policy: core::Policy,
    pub context: MappingContext,
}

/// Resolve, read and plan one run of `mapping`. An error is a run that could not
/// even be planned; the message says why in words an admin can act on.
pub async fn prepare(
    client: &Client,
    mapping: &DirectoryMapping,
    from: ViewFrom,
    now: jiff::Timestamp,
) -> Result<Prepared, String> {
    let ns = mapping.namespace().unwrap_or_default();
    let policies: Api<SyncPolicy> = Api::namespaced(client.clone(), &ns);
    let connectors: Api<ConnectorHealth> = Api::namespaced(client.clone(), &ns);
    let mappings: Api<DirectoryMapping> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let spec = &mapping.spec;

    let policy = policies
        .get_opt(&spec.policy_ref)
        .await
        .map_err(|e| format!("reading the SyncPolicy failed: {e}"))?
        .ok_or_else(|| format!("SyncPolicy {:?} not found", spec.policy_ref))?;
    let core_policy = policy_of(&policy)
        .map_err(|e| format!("SyncPolicy {:?} is invalid: {e}", spec.policy_ref))?;
    let connector = connectors
        .get_opt(&spec.connector_ref)
        .await
        .map_err(|e| format!("reading the ConnectorHealth failed: {e}"))?
        .ok_or_else(|| format!("ConnectorHealth {:?} not found", spec.connector_ref))?;
    let source = source_for(&secrets, &connector)
        .await
        .map_err(|e| format!("connector {:?}: {e}", spec.connector_ref))?;
    let context = mapping_context(mapping, &policy);

    let mut store = KubernetesStore::new(client.clone(), &ns);
    let snapshot = store.snapshot().await.map_err(|e| e.to_string())?;

    // The read. Any failure leaves an incomplete view, which plans nothing.
    let (view, read_error) = match from {
        ViewFrom::Nothing => (DirectoryView::full(Vec::new()), None),
        ViewFrom::Directory => {
            let scope = scope_for(mapping).map_err(|e| format!("spec: {e}"))?;
            let started = std::time::Instant::now();
            match source.read(&scope, now).await {
                Ok(read) => {
                    tracing::info!(
                        mapping = %mapping.name_any(),
                        entries = read.view.entries.len(),
                        skipped_without_anchor = read.skipped_without_anchor,
                        read_ms = started.elapsed().as_millis() as u64,
                        "directory read"
                    );
                    (read.view, None)
                }
                Err(e) => (
                    DirectoryView::full(Vec::new()).incomplete(),
                    Some(format!("{} ({})", e.message, e.reason)),
                ),
            }
        }
    };
    let (view, claims, lookup_error) =
        match other_claims(&source, &mappings, mapping, &snapshot, &view, &context, now).await {
            Ok(claims) => (view, claims, None),
            Err(e) => (view.incomplete(), OtherClaims::none(), Some(e)),
        };
    let gate = gate_of(Some(&connector));
    let approval = approval_of(mapping);
    let input = PlanInput {
        snapshot: &snapshot,
        view: &view,
        mapping: &context,
        policy: &core_policy,
        claims: &claims,
        gate: &gate,
        approval: approval.as_ref(),
    };
    let plan = core::plan(&input, now);
    if let Some(failure) = &plan.failure {
        let why = read_error.or(lookup_error).unwrap_or_default();
        return Err(format!("{failure}: {why}"));
    }
    Ok(Prepared {
        plan,
        snapshot,
        store,
        policy: core_policy,
        context,
    })
}

/// Targeted lookups of the anchors the planner needs in the connector's other mappings.
async fn other_claims(
    source: &Source,
    mappings: &Api<DirectoryMapping>,
    mapping: &DirectoryMapping,
    snapshot: &[UserRecord],
    view: &DirectoryView,
    context: &MappingContext,
    now: jiff::Timestamp,
) -> Result<OtherClaims, String> {
    let mut claims = OtherClaims::none();
    let anchors = claim_lookups_needed(snapshot, view, context);
    if anchors.is_empty() {
        return Ok(claims);
    }
    let others = mappings
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing mappings failed: {e}"))?;
    let others: Vec<DirectoryMapping> = others
        .items
        .into_iter()
        .filter(|m| {
            m.spec.connector_ref == mapping.spec.connector_ref
                && m.name_any() != mapping.name_any()
                && m.metadata.deletion_timestamp.is_none()
        })
        .collect();
    for other in &others {
        let scope = scope_for(other).map_err(|e| format!("mapping {:?}: {e}", other.name_any()))?;
        let found = source.lookup(&scope, &anchors, now).await.map_err(|e| {
            format!(
                "looking up users in mapping {:?} failed: {} ({})",
                other.name_any(),
                e.message,
                e.reason
            )
        })?;
        for entry in found {
            claims.insert(entry.anchor, other.name_any(), other.spec.priority);
        }
    }
    Ok(claims)
}

/// The admin's approval of the run that a threshold blocked, if the annotation names it.
fn approval_of(mapping: &DirectoryMapping) -> Option<Approval> {
    let approved = mapping.annotations().get(APPROVE_RUN_ANNOTATION)?;
    let blocked = mapping.status.as_ref()?.blocked_run.as_ref()?;
    (approved.trim() == blocked.run_id).then(|| Approval {
        run_id: blocked.run_id.clone(),
        max_preserve: blocked.would_preserve as usize,
        max_delete: blocked.would_delete as usize,
    })
}
