//! `RunApproval`: an approver's consent to one run that a safety threshold blocked.
//!
//! Approving is a right apart from editing a mapping: whoever may change a
//! mapping's scope could otherwise cause a mass deletion and wave it through.
//! RBAC grants `create runapprovals` on its own, the shipped admission policy
//! holds `spec.approvedBy` to the requester's username, and the operator records
//! the approver in the run it starts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{MAX_LABEL_VALUE_LEN, label_reference_rule};

/// The approval of one threshold-blocked run of one mapping, by a named approver.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "usersync.dev",
    version = "v1alpha1",
    kind = "RunApproval",
    doc = "The approval of one threshold-blocked run of one DirectoryMapping; records who approved.",
    plural = "runapprovals",
    shortname = "rapproval",
    namespaced,
    status = "RunApprovalStatus",
    printcolumn = r#"{"name":"Mapping","type":"string","jsonPath":".spec.mappingRef"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef"}"#,
    printcolumn = r#"{"name":"Run","type":"string","jsonPath":".spec.runId"}"#,
    printcolumn = r#"{"name":"Approved By","type":"string","jsonPath":".spec.approvedBy"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Consumed By","type":"string","priority":1,"jsonPath":".status.consumedBy"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a RunApproval's spec is immutable; create a new one instead"))]
#[x_kube(validation = Rule::new("[has(self.mappingRef), has(self.targetRef)].exists_one(x, x)").message("a RunApproval names exactly one of mappingRef or targetRef"))]
#[serde(rename_all = "camelCase")]
pub struct RunApprovalSpec {
    /// Name of the DirectoryMapping (same namespace) whose blocked run is approved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[x_kube(validation = label_reference_rule("mappingRef", "DirectoryMapping"))]
    #[schemars(length(max = MAX_LABEL_VALUE_LEN))]
    pub mapping_ref: String,

    /// Name of the ProvisioningTarget (same namespace) whose blocked cycle is
    /// approved (`status.blockedCycle.runId`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[x_kube(validation = label_reference_rule("targetRef", "ProvisioningTarget"))]
    #[schemars(length(max = MAX_LABEL_VALUE_LEN))]
    pub target_ref: String,

    /// The id of the blocked run (`status.blockedRun.runId` of the mapping). An
    /// approval of any other run id is Stale and does nothing.
    #[x_kube(validation = Rule::new("size(self) > 0").message("runId must not be empty"))]
    #[schemars(length(max = 128))]
    pub run_id: String,

    /// Who approves: the requester's username. The shipped admission policy refuses a
    /// RunApproval whose approvedBy is not the username of whoever creates it.
    #[x_kube(validation = Rule::new("size(self) > 0").message("approvedBy must not be empty"))]
    #[schemars(length(max = 512))]
    pub approved_by: String,

    /// Why the run is approved, in words, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

/// What became of an approval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ApprovalState {
    /// Not yet acted on: the operator starts the blocked run it names.
    Pending,
    /// A run was started with it (`consumedBy`); an approval is used once.
    Used,
    /// It named a run that is not the one waiting for approval; it did nothing.
    Stale,
}

/// What the operator did with this approval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunApprovalStatus {
    /// `Ready` (the approval was used), `Reconciling` (it waits for the operator),
    /// `Stalled` (it is stale: it names a run that is not waiting for approval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending, Used or Stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ApprovalState>,

    /// The id of the run that this approval started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_by: Option<String>,

    /// When the operator used the approval or found it stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_time: Option<Time>,

    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RunApproval {
    /// Whether the operator has already used this approval or found it stale.
    pub fn decided(&self) -> bool {
        matches!(
            self.status.as_ref().and_then(|s| s.state),
            Some(ApprovalState::Used | ApprovalState::Stale)
        )
    }
}
