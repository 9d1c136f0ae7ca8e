//! `DirectoryMapping`: which users of a directory to import, and how their fields map.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{MAX_LABEL_VALUE_LEN, name_fits_label_rule, reference_rule};
use super::user::MAPPING_LABEL;

/// Annotation whose every new value asks for one sync of the mapping now.
pub const SYNC_REQUESTED_ANNOTATION: &str = "usersync.dev/sync-requested-at";
/// Annotation by which an admin approves one run that a safety threshold blocked,
/// honoured only where the policy sets `safety.allowAnnotationApproval`; a
/// RunApproval is the approval that names its approver.
pub const APPROVE_RUN_ANNOTATION: &str = "usersync.dev/approve-run";

/// Which users of a directory to import and how their fields map. The mapping's
/// connector and policy are named references in the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "usersync.dev",
    version = "v1alpha1",
    kind = "DirectoryMapping",
    doc = "Which users of a directory to import, and how their fields map.",
    plural = "directorymappings",
    shortname = "dmap",
    namespaced,
    status = "DirectoryMappingStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Next Sync","type":"string","jsonPath":".status.nextSyncTime"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.users.active"}"#,
    printcolumn = r#"{"name":"Preserved","type":"integer","jsonPath":".status.users.preserved"}"#,
    printcolumn = r#"{"name":"Result","type":"string","priority":1,"jsonPath":".status.lastRun.result"}"#,
    printcolumn = r#"{"name":"Connector","type":"string","priority":1,"jsonPath":".spec.connectorRef"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = name_fits_label_rule("DirectoryMapping", MAPPING_LABEL)
)]
#[x_kube(validation = Rule::new("[has(self.ldap), has(self.entraID)].exists_one(x, x)").message("exactly one of spec.ldap or spec.entraID must be set, matching the connector's kind"))]
#[serde(rename_all = "camelCase")]
pub struct DirectoryMappingSpec {
    /// Name of the ConnectorHealth (same namespace) whose directory this mapping reads.
    /// Connector names are at most 63 characters, like the label that carries them.
    /// Cannot change once set: users are identified per connector.
    #[x_kube(validation = Rule::new("self == oldSelf").message("connectorRef is immutable; create a new mapping instead"))]
    #[x_kube(validation = reference_rule("connectorRef", "ConnectorHealth"))]
    #[schemars(length(max = MAX_LABEL_VALUE_LEN))]
    pub connector_ref: String,

    /// Name of the SyncPolicy (same namespace) with the schedule and lifecycle rules.
    #[x_kube(validation = reference_rule("policyRef", "SyncPolicy"))]
    #[schemars(length(max = 253))]
    pub policy_ref: String,

    /// When several mappings of one connector match a user, the lowest number owns it.
    /// Default 100.
    #[serde(default = "default_priority")]
    #[x_kube(validation = Rule::new("self >= 0").message("priority must be 0 or greater"))]
    pub priority: i32,

    /// Import new matching users. When unset, the policy's autoImport applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_import: Option<bool>,

    /// Profile label copied onto the users of this mapping (`usersync.dev/profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$')").message("profile must be a valid label value (at most 63 characters: letters, digits, '-', '_', '.')"))]
    #[schemars(length(max = 63))]
    pub profile: Option<String>,

    /// The scope in an LDAP directory (for an ldap connector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapScope>,

    /// The scope in an Entra ID tenant (for an entraID connector).
    #[serde(rename = "entraID", default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<EntraIdScope>,

    /// User fields and the directory attributes they come from. The connector's
    /// flavor presets fill any field left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<AttributeMapping>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_priority() -> i32 {
    100
}

/// How deep below the base DN to search.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum SearchScope {
    /// The base entry and everything below it.
    #[default]
    Subtree,
    /// Only the entries immediately below the base.
    OneLevel,
}

/// Which LDAP entries are users of this mapping.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LdapScope {
    /// Where the search starts, e.g. `OU=Staff,DC=corp,DC=example`.
    #[serde(rename = "baseDN")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("baseDN must not be empty"))]
    pub base_dn: String,

    /// Subtree (default) or OneLevel.
    #[serde(default)]
    pub scope: SearchScope,

    /// An LDAP filter selecting user entries, e.g. `(objectClass=user)`. The flavor's
    /// user filter applies when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('(') && self.endsWith(')')").message("filter must be an LDAP filter in parentheses, e.g. (objectClass=user)"))]
    #[schemars(length(max = 4096))]
    pub filter: Option<String>,

    /// Only users that are members of at least one of these groups (DNs). Membership is
    /// nested (through groups of groups) on Active Directory and OpenLDAP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
}

/// Which Entra ID users are users of this mapping.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntraIdScope {
    /// Object IDs of groups whose transitive user members are in scope. Empty: all users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,

    /// A Microsoft Graph `$filter` on users, e.g. `department eq 'Sales'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// User fields and the directory attributes that fill them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeMapping {
    /// Attribute for the username (AD preset `sAMAccountName`, OpenLDAP `uid`, Graph `userPrincipalName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Attribute for the email address (preset `mail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Attribute for the display name (preset `displayName`; OpenLDAP `cn` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Attribute for the user principal name (AD preset `userPrincipalName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// Further fields copied into the user's `attributes`: field name to directory attribute.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// What started a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RunTrigger {
    /// The policy's interval came round.
    Schedule,
    /// An admin asked through the sync-requested-at annotation.
    OnDemand,
    /// The mapping is being deleted: its users go through the unmapped rules.
    MappingDeleted,
    /// The mapping's spec changed: the new generation is applied soon, not at the
    /// next interval.
    SpecChanged,
    /// The directory reported a change in the mapping's scope (the policy's push mode).
    Push,
}

impl RunTrigger {
    /// What started the run, in the words of an Event.
    pub fn in_words(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "scheduled",
            RunTrigger::OnDemand => "asked for",
            RunTrigger::MappingDeleted => "last run, the mapping is being deleted",
            RunTrigger::SpecChanged => "the spec changed",
            RunTrigger::Push => "the directory reported a change",
        }
    }
}

/// How a run ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RunResult {
    /// Everything planned was applied.
    Succeeded,
    /// The read or the apply failed; no lifecycle state changed because of the failure.
    Failed,
    /// A safety threshold or the connector gate withheld preserves or deletions.
    Blocked,
    /// The policy is in dry-run mode: the counts are what would have happened.
    DryRun,
}

/// The outcome of one run of a mapping.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run's id, quoted in Events and logs.
    pub id: String,
    /// Schedule or OnDemand.
    pub trigger: RunTrigger,
    /// When the run started.
    pub start_time: Time,
    /// How long the run took, e.g. `12.5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// When the run ended; a failed run's retry waits from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// The mapping's generation the run used. The mapping is Ready only once a run
    /// of its current generation applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Succeeded, Failed, Blocked or DryRun.
    pub result: RunResult,
    /// Full or Incremental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadMode>,
    /// Users imported.
    #[serde(default)]
    pub imported: u32,
    /// Users whose fields changed.
    #[serde(default)]
    pub updated: u32,
    /// Users seen with nothing to change.
    #[serde(default)]
    pub unchanged: u32,
    /// Users preserved (suspended).
    #[serde(default)]
    pub preserved: u32,
    /// Preserved users made active again.
    #[serde(default)]
    pub reenabled: u32,
    /// Users deleted after their retention.
    #[serde(default)]
    pub deleted: u32,
    /// Users transferred to or from another mapping of the connector.
    #[serde(default)]
    pub transferred: u32,
    /// Directory users not imported (for example a collision with a manual user).
    #[serde(default)]
    pub skipped: u32,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who approved the blocked run this run applies (the RunApproval's approvedBy),
    /// when an approval started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The RunApproval that started this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_ref: Option<String>,
}

/// How many of this mapping's users are in each state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCounts {
    /// Users in state Active.
    pub active: u32,
    /// Users in state Preserved.
    pub preserved: u32,
    /// Tombstones in state Deleted.
    pub deleted: u32,
}

/// What became of an on-demand sync request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    /// The value of the sync-requested-at annotation that was handled.
    pub value: String,
    /// Started (with the run id) or Refused (with why).
    pub outcome: String,
}

/// A run that a safety threshold stopped, waiting for an admin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockedRun {
    /// The run id to approve: a RunApproval with this runId (`usersync approve`).
    pub run_id: String,
    /// Preserves the run would have made.
    pub would_preserve: u32,
    /// Deletions the run would have made.
    pub would_delete: u32,
    /// Active users of the mapping when the run started.
    pub active_users: u32,
    /// A fingerprint of the withheld transitions. While a later run would withhold
    /// exactly the same ones, it keeps this run id, so an approval stays valid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan_digest: String,
}

/// A directory's marker of what a run has seen (an AD USN, a syncrepl cookie, a
/// Graph delta link), kept so the next run reads only what changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadCursor {
    /// The directory's own marker; opaque.
    pub value: String,
    /// The mapping generation it was taken for; after a spec change the next run
    /// reads the whole scope again.
    pub generation: i64,
}

/// Whether a run read the whole scope or only what changed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ReadMode {
    /// The whole scope: the only read that may conclude a user is gone.
    Full,
    /// Only what changed since the last run.
    Incremental,
}

/// What the operator knows about this mapping's syncs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryMappingStatus {
    /// `Ready` (the last run of this generation applied and nothing is blocked),
    /// `Reconciling` (a run for this generation is pending, or failed runs are
    /// retried), `Stalled` (only a person can help: a missing reference, a run awaiting
    /// approval), `Synced` (the last run succeeded), `Syncing` (a run is in progress)
    /// and `DeletionsBlocked` (a safety rule withheld transitions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the last run started; the schedule counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// When the next run is due: an interval after the last run's start, or sooner
    /// after a failed run (a retry backing off from 30s, doubling up to the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<Time>,

    /// Runs that failed in a row since the last one that did not; retries back off
    /// by it. Zero after any run that succeeded, was blocked or was a dry run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,

    /// Whether a run is in progress now.
    #[serde(default)]
    pub sync_in_progress: bool,

    /// The outcome of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,

    /// The run that a threshold blocked, if one waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_run: Option<BlockedRun>,

    /// Users of this mapping by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UserCounts>,

    /// When a run last read the whole scope. Incremental runs in between never
    /// conclude that a user is gone; the next full read does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_sync_time: Option<Time>,

    /// Where the next incremental read continues from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_cursor: Option<ReadCursor>,

    /// The last on-demand request and what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_request: Option<SyncRequest>,
}
