//! Everything a run needs before it applies anything: the mapping's policy and
//! connector resolved, the registry's snapshot, the directory read, the targeted
//! lookups in the connector's other mappings, and the pure plan. `usersync plan`
//! and the runner share it, so the CLI shows exactly what a run would do.

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::connection::{Directories, scope_for, source_for};
use super::resolve::{checked_reference, gate_of, mapping_context, policy_of};
use crate::api::{APPROVE_RUN_ANNOTATION, ConnectorHealth, DirectoryMapping, ReadMode, SyncPolicy};
use crate::core::parse_duration;
use crate::core::{
    self, Approval, DirectoryView, MappingContext, OtherClaims, Plan, PlanInput, UserRecord,
    claim_lookups_needed,
};
use crate::directory::{Incremental, Scope, Source};
use crate::store::{Store, UserStore};

/// Why a run could not be planned. Each says what failed in words an admin can act
/// on, and keeps the error that caused it.
#[derive(Debug, thiserror::Error)]
pub enum PlanningError {
    /// A reference of the mapping is not a name.
    #[error("{0}")]
    Reference(String),
    /// The API server failed a read.
    #[error("reading the {kind} failed: {source}")]
    Api {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    /// A referenced object does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The policy cannot be used.
    #[error("SyncPolicy {name:?} is invalid: {message}")]
    InvalidPolicy { name: String, message: String },
    /// The connector's settings or Secrets do not resolve.
    #[error("connector {name:?}: {source}")]
    Connection {
        name: String,
        #[source]
        source: super::connection::ConnectionError,
    },
    /// A mapping's scope cannot be read with its connector.
    #[error("{context}: {source}")]
    Scope {
        context: String,
        #[source]
        source: super::connection::ConnectionError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A lookup in another mapping of the connector failed (the plan needs it).
    #[error("looking up users in mapping {mapping:?} failed: {} ({})", source.message, source.reason)]
    Lookup {
        mapping: String,
        #[source]
        source: crate::directory::SourceError,
    },
    /// The planner refused: the read was incomplete, and why.
    /// The cause comes first: it is what the admin can act on.
    #[error("{}", match cause { Some(cause) => format!("{cause}; so {failure}"), None => failure.to_string() })]
    Plan {
        failure: core::PlanFailure,
        cause: Option<Box<PlanningError>>,
    },
    /// The read failed (the message is the directory's).
    #[error("{0}")]
    Read(String),
}

/// Where the run's view of the directory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewFrom {
    /// The read a run would make now: incremental when the mapping's cursor allows.
    Directory,
    /// A full read of the mapping's scope, whatever the cursor (to answer about
    /// users who are not imported).
    FullRead,
    /// Nothing matches any more: the mapping is being deleted, so its users go
    /// through the unmapped rules (and to other mappings that match them).
    Nothing,
}

/// A plan and what it was made from.
pub struct Prepared {
    pub plan: Plan,
    pub snapshot: crate::store::Snapshot,
    pub store: Store,
    pub policy: core::Policy,
    pub context: MappingContext,
    /// Whether the run read the whole scope or only the changes.
    pub read_mode: ReadMode,
    /// Where the next incremental read may continue, once this run has applied.
    pub next_cursor: Option<String>,
    /// What the plan was made from besides the snapshot, to plan again after a
    /// conflicting write.
    pub basis: Basis,
    /// How long the directory read took (none when nothing was read).
    pub read_took: Option<std::time::Duration>,
}

/// The resolved references and the directory read a plan is made from.
pub struct Basis {
    source: Source,
    mappings: Api<DirectoryMapping>,
    mapping: DirectoryMapping,
    view: DirectoryView,
    gate: core::ConnectorGate,
    approval: Option<Approval>,
}

impl Basis {
    /// The directory read the plan was made from.
    pub fn view(&self) -> &DirectoryView {
        &self.view
    }

    /// Plan again from a fresh snapshot of `store` and the same directory read:
    /// after a write conflicted with another run's, the plan must see what that run
    /// wrote (section 3, no stale write).
    pub async fn replan(
        &self,
        store: &mut Store,
        context: &MappingContext,
        policy: &core::Policy,
        now: jiff::Timestamp,
    ) -> Result<(Plan, crate::store::Snapshot), PlanningError> {
        let snapshot = store.snapshot().await?;
        let plan = plan_from(self, &snapshot, context, policy, now)
            .await
            .map_err(|(failure, cause)| PlanningError::Plan {
                failure,
                cause: cause.map(Box::new),
            })?;
        Ok((plan, snapshot))
    }
}

/// Resolve, read and plan one run of `mapping` from `store` (its namespace's), with
/// `approved` the blocked run id a RunApproval approved for it. An error is a run
/// that could not even be planned; the message says why in words an admin can act on.
pub async fn prepare(
    client: &Client,
    mut store: Store,
    directories: &Directories,
    mapping: &DirectoryMapping,
    from: ViewFrom,
    approved: Option<&str>,
    now: jiff::Timestamp,
) -> Result<Prepared, PlanningError> {
    let ns = mapping.namespace().unwrap_or_default();
    let policies: Api<SyncPolicy> = Api::namespaced(client.clone(), &ns);
    let connectors: Api<ConnectorHealth> = Api::namespaced(client.clone(), &ns);
    let mappings: Api<DirectoryMapping> = Api::namespaced(client.clone(), &ns);
    let spec = &mapping.spec;
    checked_reference("spec.policyRef", &spec.policy_ref).map_err(PlanningError::Reference)?;
    checked_reference("spec.connectorRef", &spec.connector_ref)
        .map_err(PlanningError::Reference)?;

    let api = |kind| move |source| PlanningError::Api { kind, source };
    let policy = policies
        .get_opt(&spec.policy_ref)
        .await
        .map_err(api("SyncPolicy"))?
        .ok_or_else(|| PlanningError::NotFound {
            kind: "SyncPolicy",
            name: spec.policy_ref.clone(),
        })?;
    let core_policy = policy_of(&policy).map_err(|message| PlanningError::InvalidPolicy {
        name: spec.policy_ref.clone(),
        message,
    })?;
    let connector = connectors
        .get_opt(&spec.connector_ref)
        .await
        .map_err(api("ConnectorHealth"))?
        .ok_or_else(|| PlanningError::NotFound {
            kind: "ConnectorHealth",
            name: spec.connector_ref.clone(),
        })?;
    let source = source_for(client, &connector, directories)
        .await
        .map_err(|source| PlanningError::Connection {
            name: spec.connector_ref.clone(),
            source,
        })?;
    let context = mapping_context(mapping, &policy);

    let snapshot = store.snapshot().await?;

    // The read. Any failure leaves an incomplete view, which plans nothing.
    let mut read_took = None;
    let (view, read_error, read_mode, next_cursor) = match from {
        ViewFrom::Nothing => (DirectoryView::full(Vec::new()), None, ReadMode::Full, None),
        ViewFrom::Directory | ViewFrom::FullRead => {
            let scope = scope_for(mapping).map_err(|source| PlanningError::Scope {
                context: "spec".into(),
                source,
            })?;
            let mut cursor = match from {
                ViewFrom::FullRead => None,
                _ => usable_cursor(mapping, &policy, now),
            };
            if let Some(why) = cursor
                .as_ref()
                .and(core::full_read_needed(&snapshot, &context))
            {
                tracing::info!(mapping = %context.name, "reading in full: {why}");
                cursor = None;
            }
            let in_scope = core::anchors_in_scope(&snapshot, &context);
            let started = std::time::Instant::now();
            let read =
                read_scope(&source, &scope, cursor.as_deref(), &in_scope, mapping, now).await;
            read_took = Some(started.elapsed());
            read
        }
    };
    let basis = Basis {
        source,
        mappings,
        mapping: mapping.clone(),
        view,
        gate: gate_of(Some(&connector)),
        approval: approval_of(mapping, &policy, approved),
    };
    let plan = plan_from(&basis, &snapshot, &context, &core_policy, now)
        .await
        .map_err(|(failure, lookup_error)| PlanningError::Plan {
            failure,
            cause: read_error
                .map(PlanningError::Read)
                .or(lookup_error)
                .map(Box::new),
        })?;
    Ok(Prepared {
        read_mode,
        next_cursor,
        plan,
        snapshot,
        store,
        policy: core_policy,
        context,
        basis,
        read_took,
    })
}

/// The lookups in the connector's other mappings, then the pure plan. A plan that
/// failed comes back as its failure and the lookup's error, if one caused it.
async fn plan_from(
    basis: &Basis,
    snapshot: &[UserRecord],
    context: &MappingContext,
    policy: &core::Policy,
    now: jiff::Timestamp,
) -> Result<Plan, (core::PlanFailure, Option<PlanningError>)> {
    let claims = match other_claims(
        &basis.source,
        &basis.mappings,
        &basis.mapping,
        snapshot,
        &basis.view,
        context,
        now,
    )
    .await
    {
        Ok(claims) => claims,
        // Without the other mappings' answers the plan would be made from an
        // incomplete view, which plans nothing.
        Err(e) => {
            let failure = core::PlanFailure::IncompleteRead {
                read: basis.view.read,
            };
            return Err((failure, Some(e)));
        }
    };
    let input = PlanInput {
        snapshot,
        view: &basis.view,
        mapping: context,
        policy,
        claims: &claims,
        gate: &basis.gate,
        approval: basis.approval.as_ref(),
    };
    let plan = core::plan(&input, now);
    match plan.failure.clone() {
        Some(failure) => Err((failure, None)),
        None => Ok(plan),
    }
}

/// The stored cursor, when an incremental read may use it: the policy allows
/// incremental reads, the cursor was taken for this spec, and the last full read is
/// younger than `fullSyncInterval`.
fn usable_cursor(
    mapping: &DirectoryMapping,
    policy: &SyncPolicy,
    now: jiff::Timestamp,
) -> Option<String> {
    if !policy.spec.incremental {
        return None;
    }
    let status = mapping.status.as_ref()?;
    let cursor = status.read_cursor.as_ref()?;
    let every = parse_duration(&policy.spec.full_sync_interval).ok()?;
    let last_full = status.last_full_sync_time.as_ref()?.0;
    let fresh = now
        .duration_since(last_full)
        .try_into()
        .is_ok_and(|age: std::time::Duration| age < every);
    (Some(cursor.generation) == mapping.metadata.generation && fresh).then(|| cursor.value.clone())
}

/// Read the scope: incrementally from `cursor` when given and the directory still
/// accepts it (with the anchors the store holds as in scope), else in full. A
/// failed read leaves an incomplete view, which plans nothing, and no new cursor.
async fn read_scope(
    source: &Source,
    scope: &Scope,
    cursor: Option<&str>,
    in_scope: &[String],
    mapping: &DirectoryMapping,
    now: jiff::Timestamp,
) -> (DirectoryView, Option<String>, ReadMode, Option<String>) {
    let started = std::time::Instant::now();
    let failed = |e: crate::directory::SourceError, mode| {
        (
            DirectoryView::full(Vec::new()).incomplete(),
            Some(format!("{} ({})", e.message, e.reason)),
            mode,
            None,
        )
    };
    if let Some(cursor) = cursor {
        match source.read_since(scope, cursor, in_scope, now).await {
            Ok(Incremental::Changes(changes)) => {
                tracing::info!(
                    mapping = %mapping.name_any(),
                    entries = changes.read.view.entries.len(),
                    removed = changes.read.view.removed.len(),
                    read_ms = started.elapsed().as_millis() as u64,
                    "incremental directory read"
                );
                return (
                    changes.read.view,
                    None,
                    ReadMode::Incremental,
                    changes.cursor,
                );
            }
            Ok(Incremental::FullReadRequired(reason)) => {
                tracing::info!(mapping = %mapping.name_any(), %reason, "the cursor cannot be used; reading the whole scope");
            }
            Err(e) => return failed(e, ReadMode::Incremental),
        }
    }
    match source.read_with_cursor(scope, in_scope, now).await {
        Ok(full) => {
            tracing::info!(
                mapping = %mapping.name_any(),
                entries = full.read.view.entries.len(),
                skipped_without_anchor = full.read.skipped_without_anchor,
                read_ms = started.elapsed().as_millis() as u64,
                "directory read"
            );
            (full.read.view, None, ReadMode::Full, full.cursor)
        }
        Err(e) => failed(e, ReadMode::Full),
    }
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
) -> Result<OtherClaims, PlanningError> {
    let mut claims = OtherClaims::none();
    let anchors = claim_lookups_needed(snapshot, view, context);
    if anchors.is_empty() {
        return Ok(claims);
    }
    let others = mappings
        .list(&ListParams::default())
        .await
        .map_err(|source| PlanningError::Api {
            kind: "DirectoryMappings (for the other mappings' claims)",
            source,
        })?;
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
        let scope = scope_for(other).map_err(|source| PlanningError::Scope {
            context: format!("mapping {:?}", other.name_any()),
            source,
        })?;
        let found = source
            .lookup(&scope, &anchors, now)
            .await
            .map_err(|source| PlanningError::Lookup {
                mapping: other.name_any(),
                source,
            })?;
        for entry in found {
            claims.insert(entry.anchor, other.name_any(), other.spec.priority);
        }
    }
    Ok(claims)
}

/// The approval of the run that a threshold blocked: `approved` (the run id a
/// RunApproval approved, which the runner was started with), or the annotation
/// where the policy accepts it, when it names the blocked run.
fn approval_of(
    mapping: &DirectoryMapping,
    policy: &SyncPolicy,
    approved: Option<&str>,
) -> Option<Approval> {
    let blocked = mapping.status.as_ref()?.blocked_run.as_ref()?;
    let by_annotation = || {
        policy
            .spec
            .safety
            .allow_annotation_approval
            .then(|| mapping.annotations().get(APPROVE_RUN_ANNOTATION))
            .flatten()
            .map(|a| a.trim())
    };
    let approved = approved.or_else(by_annotation)?;
    (approved == blocked.run_id).then(|| Approval {
        run_id: blocked.run_id.clone(),
        max_preserve: blocked.would_preserve as usize,
        max_delete: blocked.would_delete as usize,
    })
}
