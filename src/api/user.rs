//! `DirectoryUser`: one user record of the registry; its lifecycle lives in status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{MAX_LABEL_VALUE_LEN, reference_rule};

/// Label: the connector a user comes from.
pub const CONNECTOR_LABEL: &str = "usersync.dev/connector";
/// Label: the mapping that owns a user.
pub const MAPPING_LABEL: &str = "usersync.dev/mapping";
/// Label: the user's lifecycle state, lower-case (`active`, `preserved`, `deleted`).
pub const STATE_LABEL: &str = "usersync.dev/state";
/// Label: the profile of the mapping that owns the user.
pub const PROFILE_LABEL: &str = "usersync.dev/profile";

/// One user of the registry. Directory users are written by the operator; Manual and
/// CSV users by admins, and sync never changes them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "usersync.dev",
    version = "v1alpha1",
    kind = "DirectoryUser",
    doc = "One user record of the registry; its lifecycle state lives in status.",
    plural = "directoryusers",
    shortname = "duser",
    namespaced,
    status = "DirectoryUserStatus",
    printcolumn = r#"{"name":"Username","type":"string","jsonPath":".spec.username"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Origin","type":"string","jsonPath":".spec.origin"}"#,
    printcolumn = r#"{"name":"Mapping","type":"string","jsonPath":".spec.mappingRef"}"#,
    printcolumn = r#"{"name":"Email","type":"string","priority":1,"jsonPath":".spec.email"}"#,
    // A string, not a date: kubectl shows a date column as an age, and a deadline
    // in the future as `<invalid>`.
    printcolumn = r#"{"name":"Delete After","type":"string","priority":1,"jsonPath":".status.deleteAfterTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.origin != 'Directory' || (has(self.connectorRef) && has(self.anchor))").message("a Directory user needs connectorRef and anchor"))]
#[x_kube(validation = Rule::new("!has(oldSelf.anchor) || (has(self.anchor) && self.anchor == oldSelf.anchor)").message("anchor is immutable once set"))]
#[x_kube(validation = Rule::new("!has(oldSelf.connectorRef) || (has(self.connectorRef) && self.connectorRef == oldSelf.connectorRef)").message("connectorRef is immutable once set"))]
#[serde(rename_all = "camelCase")]
pub struct DirectoryUserSpec {
    /// Where the record comes from: Directory (written by sync), Manual or CSV (written
    /// by admins; sync never changes, preserves or deletes them). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("origin is immutable"))]
    pub origin: Origin,

    /// The ConnectorHealth this user's directory object belongs to. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = reference_rule("connectorRef", "ConnectorHealth"))]
    #[schemars(length(max = MAX_LABEL_VALUE_LEN))]
    pub connector_ref: Option<String>,

    /// The directory object's immutable identity (objectGUID, entryUUID or Graph id),
    /// never a name. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub anchor: Option<String>,

    /// The mapping that owns this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = reference_rule("mappingRef", "DirectoryMapping"))]
    #[schemars(length(max = MAX_LABEL_VALUE_LEN))]
    pub mapping_ref: Option<String>,

    /// Login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,

    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,

    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,

    /// User principal name (Active Directory, Entra ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,

    /// The downstream profile, from the owning mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,

    /// Further fields, from the mapping's `attributes.extra`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,

    /// An admin's manual preserve (suspend). Sync never lifts it.
    #[serde(default)]
    pub preserve: bool,
}

/// Where a user record comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Origin {
    /// Imported and maintained by sync from a directory.
    Directory,
    /// Created by an admin.
    Manual,
    /// Imported from a CSV file by `usersync import-csv`.
    CSV,
}

/// A user's lifecycle state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum UserState {
    /// In use.
    Active,
    /// Suspended; deleted after the policy's deleteAfter unless it comes back.
    Preserved,
    /// Final: a tombstone. A returning directory object gets a new record.
    Deleted,
}

/// Why a user is preserved or deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum StateReason {
    /// The directory says the account is disabled.
    DisabledInDirectory,
    /// No mapping of the connector matches the user any more.
    Unmapped,
    /// An admin preserved the user (spec.preserve).
    Manual,
    /// The retention period after preservation passed.
    RetentionExpired,
}

/// The user's lifecycle, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryUserStatus {
    /// Active, Preserved or Deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<UserState>,

    /// Why the user is Preserved or Deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StateReason>,

    /// When the user was preserved; retention counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserved_at: Option<Time>,

    /// When a preserved user becomes due for deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_time: Option<Time>,

    /// When the user was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Time>,

    /// When a sync last wrote this user from its directory object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_time: Option<Time>,

    /// The id of the run that last changed this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_run: Option<String>,

    /// The record this one follows when a deleted directory object came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_record: Option<String>,

    /// What each ProvisioningTarget last delivered of this user, one entry per target.
    /// Each entry is written by its target alone (a field manager of its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["target".into()]))]
    pub deliveries: Vec<Delivery>,

    /// Conditions, for tools that read them (none are required today).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What one ProvisioningTarget delivered of a user: the account's id in the
/// application and a digest of what was last sent, so an unchanged user costs no
/// request and no write.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The ProvisioningTarget's name.
    pub target: String,
    /// The uid of the ProvisioningTarget object that wrote this entry. A target
    /// deleted and created again under the same name is a new target: an entry of
    /// another uid is not its own, and it forgets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_uid: Option<String>,
    /// The account's `id` in the application, once it was created or adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// `Provisioned`, `Disabled` or `Deleted` once the account exists; `Pending`
    /// while none was created or adopted yet (a failed create keeps `Pending`,
    /// with `lastError`).
    pub state: String,
    /// A digest of the attributes last delivered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// When this entry last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The application's last refusal or failure, cause first (its scimType and detail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed attempts in a row; the next is not before `retryAfterTime`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// When the next attempt after a failure is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_time: Option<Time>,
    /// The step an approval covered and the blocked cycle it approved
    /// (`disable:<cycle>` or `delete:<cycle>`), kept while that request has not
    /// succeeded and the user is not wanted active again: its retries need no new
    /// approval, and only a retry of that kind counts as approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_cycle: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
