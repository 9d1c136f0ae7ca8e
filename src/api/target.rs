//! `ProvisioningTarget`: an application that receives the registry's lifecycle over
//! SCIM 2.0 (RFC 7643/7644).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{SecretKeyRef, duration_minimum_rule, duration_rule};
use crate::core::duration::{MIN_FULL_SYNC_INTERVAL, MIN_TARGET_INTERVAL};

/// An application that receives the registry's users over SCIM 2.0: who goes there,
/// how their fields become SCIM attributes, and what deprovisioning does.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "usersync.dev",
    version = "v1alpha1",
    kind = "ProvisioningTarget",
    doc = "An application that receives the registry's users and their lifecycle over SCIM 2.0.",
    plural = "provisioningtargets",
    shortname = "ptarget",
    namespaced,
    status = "ProvisioningTargetStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Connected","type":"string","jsonPath":".status.conditions[?(@.type==\"Connected\")].status"}"#,
    printcolumn = r#"{"name":"Provisioned","type":"integer","jsonPath":".status.accounts.provisioned","description":"accounts delivered and active in the application"}"#,
    printcolumn = r#"{"name":"Disabled","type":"integer","jsonPath":".status.accounts.disabled","description":"accounts delivered and disabled in the application"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.accounts.failed","description":"users whose last delivery failed"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","priority":1,"jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Quarantined","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Quarantined\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.endpoint.startsWith('https://') || self.allowInsecureHttp").message("endpoint must be https://; plain http:// sends the credential in clear text and needs allowInsecureHttp: true"))]
#[x_kube(validation = Rule::new("size(self.users.mappings) > 0 || size(self.users.profiles) > 0 || has(self.users.selector)").message("users must name at least one of mappings, profiles or selector: a target never receives every user by accident"))]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningTargetSpec {
    /// The SCIM service's base URL, the one `/Users` and `/ServiceProviderConfig` hang
    /// from, for example `https://app.example.com/scim/v2`.
    /// It cannot change: the target's ledger holds the ids of accounts in the
    /// application at this endpoint, which another application would not know (or
    /// would know as other accounts). To deliver to another application, create
    /// another ProvisioningTarget.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message("endpoint must be an http(s) URL with no query or fragment, such as https://app.example.com/scim/v2"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("endpoint cannot change: the target's ledger holds account ids of the application at the old endpoint; to deliver to another application, create a new ProvisioningTarget"))]
    #[schemars(length(max = 2048))]
    pub endpoint: String,

    /// How usersync authenticates to the application (exactly one way).
    pub auth: TargetAuth,

    /// The Secret key that holds the PEM CA bundle to verify the application with.
    /// Without it the system roots are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,

    /// Allow a plain `http://` endpoint, where anyone on the path can read the
    /// credential. Only for a local test application. While set, `Insecure` is True
    /// (reason `InsecureHttp`) and a Warning Event was emitted. Default false.
    #[serde(default)]
    pub allow_insecure_http: bool,

    /// Which users of the registry (this namespace) go to the application. A user is
    /// selected when it matches every part that is set.
    pub users: TargetUsers,

    /// How user fields become SCIM attributes. Default: `userName` from username,
    /// `displayName` from displayName, the work email from email, `externalId` from
    /// the directory anchor.
    #[serde(default = "default_attributes")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.exists(a, a.to == 'userName')").message("attributes must map some field to userName: SCIM requires it"))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.to == a.to))").message("each SCIM path may appear only once in attributes"))]
    pub attributes: Vec<ScimAttribute>,

    /// The attribute that finds an application's existing account before one is
    /// created: `userName` (default) or `externalId` (the directory anchor, when
    /// the application keeps it). An existing account is adopted only when this
    /// attribute equals the user's value exactly.
    #[serde(default)]
    pub match_attribute: MatchAttribute,

    /// What happens in the application when a user is preserved or deleted in the
    /// registry, or leaves the target's users.
    #[serde(default)]
    pub deprovision: Deprovision,

    /// Limits that stop a cycle that would disable or delete too much at once.
    #[serde(default)]
    pub safety: TargetSafety,

    /// Plan only: cycles compute the requests they would send and show them in
    /// status and Events; nothing is sent but reads.
    #[serde(default)]
    pub dry_run: bool,

    /// Time between the starts of two cycles; at least 10s. Default 5m. A change in
    /// the registry is delivered by the next cycle.
    #[serde(default = "default_interval")]
    #[x_kube(validation = duration_rule("interval"))]
    #[x_kube(validation = duration_minimum_rule("interval", MIN_TARGET_INTERVAL))]
    #[schemars(length(max = 64))]
    pub interval: String,

    /// How often a cycle also reads back every account it delivered, so that changes
    /// made in the application are corrected; at least 1m. Default 24h.
    #[serde(default = "default_full_reconcile_interval")]
    #[x_kube(validation = duration_rule("fullReconcileInterval"))]
    #[x_kube(validation = duration_minimum_rule("fullReconcileInterval", MIN_FULL_SYNC_INTERVAL))]
    #[schemars(length(max = 64))]
    pub full_reconcile_interval: String,
}

fn default_interval() -> String {
    "5m".into()
}
fn default_full_reconcile_interval() -> String {
    "24h".into()
}

/// The mapping every target gets unless it says otherwise.
pub fn default_attributes() -> Vec<ScimAttribute> {
    [
        ("username", "userName"),
        ("displayName", "displayName"),
        ("email", r#"emails[type eq "work"].value"#),
        ("anchor", "externalId"),
    ]
    .into_iter()
    .map(|(from, to)| ScimAttribute {
        from: from.into(),
        to: to.into(),
    })
    .collect()
}

/// How usersync authenticates to the application: exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("[has(self.bearerTokenSecretRef), has(self.oauth2)].exists_one(x, x)").message("auth must set exactly one of bearerTokenSecretRef or oauth2"))]
#[serde(rename_all = "camelCase")]
pub struct TargetAuth {
    /// The Secret key that holds a long-lived bearer token (the application's "secret
    /// token"). The Secret must carry the label `usersync.dev/credential: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,

    /// OAuth 2.0 client credentials: usersync fetches a token and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuthClientCredentials>,
}

/// An OAuth 2.0 client-credentials grant (RFC 6749 section 4.4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientCredentials {
    /// The token endpoint, `https://…`.
    #[x_kube(validation = Rule::new("self.matches('^https://[^?#\\\\s]+$')").message("tokenURL must be an https:// URL"))]
    #[serde(rename = "tokenURL")]
    #[schemars(length(max = 2048))]
    pub token_url: String,

    /// The client id.
    #[x_kube(validation = Rule::new("size(self) > 0").message("clientID must not be empty"))]
    #[serde(rename = "clientID")]
    #[schemars(length(max = 512))]
    pub client_id: String,

    /// The Secret key that holds the client secret; the Secret must carry
    /// `usersync.dev/credential: "true"`.
    pub client_secret_ref: SecretKeyRef,

    /// The scope to ask for, if the application wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub scope: Option<String>,
}

/// Which users of the registry go to the application. Every part that is set must
/// match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetUsers {
    /// Users owned by one of these DirectoryMappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub mappings: Vec<String>,

    /// Users whose profile (from their mapping) is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 63)))]
    pub profiles: Vec<String>,

    /// Users whose registry labels match: `usersync.dev/connector`,
    /// `usersync.dev/mapping`, `usersync.dev/profile` and `usersync.dev/state`
    /// (the same in both stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// One SCIM attribute and the user field it comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScimAttribute {
    /// The user field: `username`, `email`, `displayName`, `userPrincipalName`,
    /// `profile`, `anchor`, or `attributes.NAME` (an extra attribute of the mapping).
    #[x_kube(validation = Rule::new("self in ['username', 'email', 'displayName', 'userPrincipalName', 'profile', 'anchor'] || self.matches('^attributes[.][A-Za-z0-9_-]+$')").message("from must be username, email, displayName, userPrincipalName, profile, anchor or attributes.NAME"))]
    #[schemars(length(max = 128))]
    pub from: String,

    /// The SCIM path: a core attribute (`userName`, `name.givenName`), a filtered
    /// multi-valued one (`emails[type eq "work"].value`), or an extension's,
    /// prefixed by its schema URN
    /// (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`).
    /// `id`, `meta`, `schemas` and `active` are usersync's own.
    #[x_kube(validation = Rule::new(r#"self.matches('^((urn:[A-Za-z0-9:._-]+:)?[A-Za-z][A-Za-z0-9_]*)([\\[][A-Za-z]+ eq "[^"\\]]*"[\\]])?([.][A-Za-z][A-Za-z0-9_]*)?$')"#).message(r#"to must be a SCIM path such as userName, name.givenName, emails[type eq "work"].value or urn:…:User:employeeNumber"#))]
    #[x_kube(validation = Rule::new("!(self in ['id', 'meta', 'schemas', 'active'])").message("to must not be id, meta, schemas or active: usersync sets them"))]
    #[schemars(length(max = 256))]
    pub to: String,
}

/// The attribute that identifies an existing account in the application.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum MatchAttribute {
    /// The mapped `userName`.
    #[default]
    #[serde(rename = "userName")]
    UserName,
    /// The mapped `externalId`.
    #[serde(rename = "externalId")]
    ExternalId,
}

/// What deprovisioning does in the application.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Deprovision {
    /// Preserved, deleted and deselected users are disabled (`active: false`);
    /// nothing is deleted.
    #[default]
    Disable,
    /// As Disable, and a user deleted in the registry is deleted in the application.
    Delete,
    /// Nothing is sent when a user is preserved, deleted or deselected: the account
    /// is left as it is.
    None,
}

fn default_max_disable_percent() -> u32 {
    10
}
fn default_max_deletes() -> u32 {
    100
}

/// Limits per cycle. A cycle over a limit sends none of its disables and deletes
/// (creates and updates still go), sets `DeletionsBlocked` with the numbers, and
/// waits for a RunApproval of its cycle id or a higher limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSafety {
    /// The most accounts one cycle may disable, in percent of the accounts active in
    /// the application (0–100). Default 10.
    #[serde(default = "default_max_disable_percent")]
    #[x_kube(validation = Rule::new("self <= 100").message("maxDisablePercent must be between 0 and 100"))]
    pub max_disable_percent: u32,

    /// The most accounts one cycle may delete. Default 100.
    #[serde(default = "default_max_deletes")]
    pub max_deletes_per_cycle: u32,
}

impl Default for TargetSafety {
    fn default() -> Self {
        Self {
            max_disable_percent: default_max_disable_percent(),
            max_deletes_per_cycle: default_max_deletes(),
        }
    }
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningTargetStatus {
    /// `Ready`, `Connected`, `Quarantined`, `DeletionsBlocked`, `Insecure`,
    /// `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the last cycle started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// When the next cycle is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<Time>,

    /// When a cycle last read back every delivered account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_reconcile_time: Option<Time>,

    /// The application's accounts by delivered state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<AccountCounts>,

    /// What the application said it supports (`/ServiceProviderConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<TargetCapabilities>,

    /// The last cycle's outcome and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cycle: Option<CycleSummary>,

    /// The cycle whose disables and deletes a threshold withheld, to approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_cycle: Option<BlockedCycle>,

    /// The last value of the `usersync.dev/sync-requested-at` annotation that a
    /// cycle answered; a new value starts a cycle at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_request: Option<String>,

    /// How many cycles in a row were quarantined (they slow down as it grows).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quarantined_cycles: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Accounts in the application by what was last delivered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountCounts {
    /// Delivered and active.
    pub provisioned: u32,
    /// Delivered and disabled.
    pub disabled: u32,
    /// Deleted by this target.
    pub deleted: u32,
    /// Users whose last delivery failed (they are retried with back-off).
    pub failed: u32,
}

/// What the application supports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCapabilities {
    /// PATCH is supported; without it, changes are sent with PUT.
    pub patch: bool,
    /// Filters are supported (needed to match before create).
    pub filter: bool,
    /// ETags are supported.
    pub etag: bool,
}

/// One cycle's outcome.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CycleSummary {
    /// The cycle's id.
    pub id: String,
    /// `Succeeded`, `PartiallyFailed`, `Failed`, `Blocked`, `DryRun` or `Quarantined`.
    pub result: String,
    /// Whether the cycle read back the delivered accounts.
    #[serde(default)]
    pub full_reconcile: bool,
    /// Accounts created.
    pub created: u32,
    /// Existing accounts adopted (matched by the match attribute) instead of created.
    pub adopted: u32,
    /// Accounts whose attributes were changed (renames among them).
    pub updated: u32,
    /// Disabled accounts enabled again.
    pub enabled: u32,
    /// Accounts disabled.
    pub disabled: u32,
    /// Accounts deleted.
    pub deleted: u32,
    /// Users whose request failed.
    pub failed: u32,
    /// Requests sent to the application.
    pub requests: u32,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A cycle a threshold stopped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockedCycle {
    /// The id to approve: a RunApproval with `targetRef` and this `runId`.
    pub run_id: String,
    /// Accounts the cycle would have disabled.
    pub would_disable: u32,
    /// Accounts the cycle would have deleted.
    pub would_delete: u32,
    /// Accounts active in the application when the cycle started.
    pub active_accounts: u32,
    /// A fingerprint of the withheld requests. While a later cycle would withhold
    /// the same ones, it keeps this id, so an approval stays valid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan_digest: String,
}
