//! `SyncPolicy`: when to sync, and the lifecycle and safety rules.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{duration_minimum_rule, duration_rule};
use crate::core::duration::{MIN_DELETE_AFTER, MIN_FULL_SYNC_INTERVAL, MIN_INTERVAL};

/// When mappings that name this policy are synced, and what happens to their users.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "usersync.dev",
    version = "v1alpha1",
    kind = "SyncPolicy",
    doc = "When mappings are synced, and the lifecycle and safety rules for their users.",
    plural = "syncpolicies",
    shortname = "spol",
    namespaced,
    status = "SyncPolicyStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.interval"}"#,
    printcolumn = r#"{"name":"Delete After","type":"string","jsonPath":".spec.preservation.deleteAfter"}"#,
    printcolumn = r#"{"name":"Dry Run","type":"boolean","jsonPath":".spec.dryRun"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Mappings","type":"integer","jsonPath":".status.mappings"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicySpec {
    /// Time between the starts of two scheduled runs of a mapping; at least 1m. Default 24h.
    #[serde(default = "default_interval")]
    #[x_kube(validation = duration_rule("interval"))]
    #[x_kube(validation = duration_minimum_rule("interval", MIN_INTERVAL))]
    #[schemars(length(max = 64))]
    pub interval: String,

    /// Read only what changed between runs where the directory offers it (AD
    /// uSNChanged, OpenLDAP syncrepl, Graph delta query). Default true.
    #[serde(default = "default_true")]
    pub incremental: bool,

    /// With incremental reads, how often a run still reads the whole scope, so that
    /// deletions and scope changes are never missed; at least 1m. Default 24h.
    #[serde(default = "default_full_sync_interval")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = duration_rule("fullSyncInterval"))]
    #[x_kube(validation = duration_minimum_rule("fullSyncInterval", MIN_FULL_SYNC_INTERVAL))]
    pub full_sync_interval: String,

    /// React to directory changes within seconds instead of at the next interval:
    /// each mapping keeps a channel open to its directory, and a change in its scope
    /// starts an incremental run (after a second's wait for more changes), planned
    /// and checked like any other. OpenLDAP pushes changes (a syncrepl
    /// refreshAndPersist search, which needs the syncprov overlay); Active
    /// Directory and Entra ID are asked every 10 seconds (uSNChanged, Graph delta).
    /// Scheduled runs, and full reads every fullSyncInterval, go on as before: only
    /// a full read concludes that a user is gone. The mapping's `Push` condition
    /// says whether the channel is open. Default false: it holds one connection per
    /// mapping open to the directory, which its admin may want to allow first.
    #[serde(default)]
    pub push: bool,

    /// Import new matching users, unless a mapping says otherwise. Default true.
    #[serde(default = "default_true")]
    pub auto_import: bool,

    /// Preserve users that no mapping of their connector matches any more. Default true.
    #[serde(default = "default_true")]
    pub auto_preserve_unmapped: bool,

    /// What happens to preserved users.
    #[serde(default)]
    pub preservation: Preservation,

    /// Limits that stop a run that would change too much at once.
    #[serde(default)]
    pub safety: Safety,

    /// Plan only: runs compute what they would do and show it in status; nothing is applied.
    #[serde(default)]
    pub dry_run: bool,

    /// Stop scheduled and on-demand runs of the mappings that use this policy.
    #[serde(default)]
    pub suspend: bool,
}

fn default_interval() -> String {
    "24h".into()
}
fn default_full_sync_interval() -> String {
    "24h".into()
}
fn default_true() -> bool {
    true
}
fn default_delete_after() -> String {
    "45d".into()
}
fn default_max_preserve_percent() -> u32 {
    10
}
fn default_max_deletes() -> u32 {
    500
}

/// Retention of preserved users.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preservation {
    /// Delete preserved users once deleteAfter has passed. Default true.
    #[serde(default = "default_true")]
    pub auto_delete: bool,

    /// How long a user stays preserved before deletion, measured from the moment it
    /// was preserved; at least 1h. Default 45d.
    #[serde(default = "default_delete_after")]
    #[x_kube(validation = duration_rule("deleteAfter"))]
    #[x_kube(validation = duration_minimum_rule("deleteAfter", MIN_DELETE_AFTER))]
    #[schemars(length(max = 64))]
    pub delete_after: String,

    /// Also delete users an admin preserved by hand (`spec.preserve`, `usersync
    /// preserve`) once deleteAfter has passed. Default false: a manual preserve is the
    /// admin's hold, and sync neither lifts nor deletes it. When such a user is deleted,
    /// its tombstone keeps `spec.preserve` and blocks the re-import of the same
    /// directory object until an admin clears it (`usersync unpreserve <tombstone>`).
    #[serde(default)]
    pub delete_manually_preserved: bool,
}

impl Default for Preservation {
    fn default() -> Self {
        Self {
            auto_delete: true,
            delete_after: default_delete_after(),
            delete_manually_preserved: false,
        }
    }
}

/// Thresholds beyond which a run applies no preserves or deletions and asks an admin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Safety {
    /// The largest share (percent) of a mapping's active users that one run may preserve. Default 10.
    #[serde(default = "default_max_preserve_percent")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("maxPreservePercent must be between 0 and 100"))]
    pub max_preserve_percent: u32,

    /// The most users one run may delete. Default 500.
    #[serde(default = "default_max_deletes")]
    #[x_kube(validation = Rule::new("self <= 1000000000").message("maxDeletesPerRun must be at most 1000000000"))]
    pub max_deletes_per_run: u32,

    /// Also accept the `usersync.dev/approve-run` annotation on a mapping as the
    /// approval of its blocked run. Default false: approving is a right of its own
    /// (creating a RunApproval, which names the approver), while the annotation can
    /// be set by anyone who may edit the mapping, and records no one.
    #[serde(default)]
    pub allow_annotation_approval: bool,
}

impl Default for Safety {
    fn default() -> Self {
        Self {
            max_preserve_percent: default_max_preserve_percent(),
            max_deletes_per_run: default_max_deletes(),
            allow_annotation_approval: false,
        }
    }
}

/// What the operator knows about this policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicyStatus {
    /// `Ready`: the spec is valid and usable (else `Stalled`, saying which field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// How many mappings in this namespace use this policy.
    #[serde(default)]
    pub mappings: u32,
}
