//! `ConnectorHealth`: how to reach one directory, and whether it is reachable now.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    SecretKeyRef, cel_string, duration_minimum_rule, duration_rule, name_fits_label_rule,
};
use super::user::CONNECTOR_LABEL;
use crate::core::duration::{MIN_PROBE_INTERVAL, MIN_STALE_AFTER, MIN_TIMEOUT};

/// An `authorityHost` or `graphHost`: `https://host[:port]`, nothing after it but an
/// optional '/'. usersync appends the token and Graph paths itself, so a path here
/// would be doubled. Plain HTTP only to 127.0.0.1, for local emulators.
pub const ENTRA_HOST_PATTERN: &str =
    r"^(https://([-A-Za-z0-9.]+|\[[0-9A-Fa-f:.]+\])|http://127\.0\.0\.1)(:[0-9]{1,5})?/?$";

/// The CEL rule of an Entra endpoint override; `appended` is the path usersync adds.
fn entra_host_rule(field: &str, appended: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.matches({})", cel_string(ENTRA_HOST_PATTERN))).message(
        kube::core::Message::Message(format!(
            "{field} must be https://host[:port] with no path, query or fragment: usersync appends {appended} itself"
        )),
    )
}

/// How to reach one directory (exactly one of `ldap` or `entraID`), how often to
/// probe it, and whether deletions may currently rely on it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "usersync.dev",
    version = "v1alpha1",
    kind = "ConnectorHealth",
    doc = "How to reach one directory, and whether it is reachable now.",
    plural = "connectorhealths",
    shortname = "conn",
    namespaced,
    status = "ConnectorHealthStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Connected","type":"string","jsonPath":".status.conditions[?(@.type==\"Connected\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Connected\")].reason"}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessTime"}"#,
    printcolumn = r#"{"name":"Latency","type":"integer","priority":1,"jsonPath":".status.latencyMs","description":"round trip of the last successful probe, in milliseconds"}"#,
    printcolumn = r#"{"name":"Insecure","type":"string","jsonPath":".status.conditions[?(@.type==\"Insecure\")].reason","description":"an opt-in that weakens how credentials travel (InsecureSkipVerify, PlaintextBind, CustomEndpoints), or Secure"}"#,
    printcolumn = r#"{"name":"Deletions","type":"boolean","jsonPath":".spec.deletionsAllowed","description":"whether deletions may rely on this connector"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = name_fits_label_rule("ConnectorHealth", CONNECTOR_LABEL)
)]
#[x_kube(validation = Rule::new("[has(self.ldap), has(self.entraID)].exists_one(x, x)").message("exactly one of spec.ldap or spec.entraID must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectorHealthSpec {
    /// Connect to an LDAP directory: Active Directory, OpenLDAP or another LDAP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConnection>,

    /// Connect to a Microsoft Entra ID tenant through Microsoft Graph.
    #[serde(rename = "entraID", default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<EntraIdConnection>,

    /// How often the directory is probed (a bind or token plus one small read); at least 1s.
    /// Default 1m.
    #[serde(default = "default_probe_interval")]
    #[x_kube(validation = duration_rule("probeInterval"))]
    #[x_kube(validation = duration_minimum_rule("probeInterval", MIN_PROBE_INTERVAL))]
    #[schemars(length(max = 64))]
    pub probe_interval: String,

    /// Deletions need a successful probe younger than this; at least 1s. Default 5m.
    #[serde(default = "default_stale_after")]
    #[x_kube(validation = duration_rule("staleAfter"))]
    #[x_kube(validation = duration_minimum_rule("staleAfter", MIN_STALE_AFTER))]
    #[schemars(length(max = 64))]
    pub stale_after: String,

    /// The admin's freeze switch: while false, no user of this connector is deleted
    /// (for example during a directory maintenance window). Default true.
    #[serde(default = "default_true")]
    pub deletions_allowed: bool,
}

fn default_probe_interval() -> String {
    "1m".into()
}
fn default_stale_after() -> String {
    "5m".into()
}
fn default_true() -> bool {
    true
}
fn default_page_size() -> u32 {
    1000
}
fn default_timeout() -> String {
    "30s".into()
}
fn default_max_entries() -> u64 {
    2_000_000
}
fn default_max_response_mib() -> u32 {
    64
}
fn default_read_budget() -> String {
    "30m".into()
}

/// Presets for the anchor attribute and the "disabled" signal of an LDAP server.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum LdapFlavor {
    /// Active Directory (or Samba AD): anchor `objectGUID`; disabled when
    /// `userAccountControl` has bit 0x2 or `accountExpires` has passed.
    #[default]
    ActiveDirectory,
    /// OpenLDAP: anchor `entryUUID`; disabled when `disabledFilter` matches
    /// (default `(pwdAccountLockedTime=*)`).
    OpenLDAP,
    /// Any other LDAP server: `anchorAttribute` and `disabledFilter` come from the spec.
    Generic,
}

/// Where and how to bind to an LDAP server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!(self.startTLS && self.url.startsWith('ldaps://'))").message("startTLS applies to ldap:// URLs; ldaps:// is already TLS"))]
#[x_kube(validation = Rule::new("has(self.bindDN) == has(self.bindPasswordSecretRef)").message("bindDN and bindPasswordSecretRef must be set together"))]
#[x_kube(validation = Rule::new("self.flavor != 'Generic' || has(self.anchorAttribute)").message("the Generic flavor needs anchorAttribute (an immutable, unique attribute such as entryUUID)"))]
#[x_kube(validation = Rule::new("!(self.insecureSkipVerify && has(self.caSecretRef))").message("set either caSecretRef or insecureSkipVerify, not both"))]
#[serde(rename_all = "camelCase")]
pub struct LdapConnection {
    /// Server URL: `ldap://host:port` or `ldaps://host:port`.
    #[x_kube(validation = Rule::new("self.matches('^ldaps?://[^/?#\\\\s]+/?$')").message("url must be ldap://host[:port] or ldaps://host[:port]"))]
    #[schemars(length(max = 2048))]
    pub url: String,

    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(rename = "startTLS", default)]
    pub start_tls: bool,

    /// DN to bind as (a simple bind). Omit both bindDN and bindPasswordSecretRef for an anonymous bind.
    #[serde(rename = "bindDN", default, skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<String>,

    /// The Secret key that holds the bind password; re-read when the Secret changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password_secret_ref: Option<SecretKeyRef>,

    /// The Secret key that holds the PEM CA bundle to verify the server with. Without it
    /// the system roots are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,

    /// Skip TLS certificate verification. Only for tests; never the default. While
    /// set, the connector's `Insecure` condition is True (reason `InsecureSkipVerify`)
    /// and a Warning Event was emitted when it was turned on.
    #[serde(default)]
    pub insecure_skip_verify: bool,

    /// Allow a simple bind (the bind DN and its password) over a plain `ldap://`
    /// connection without StartTLS, where anyone on the path can read the password.
    /// Without it such a connector is refused (`Resolved=False`, reason
    /// `PlaintextBindRefused`) before its Secret is read. An anonymous connector (no
    /// bindDN) sends no credential and needs no opt-in. While set, `Insecure` is True
    /// (reason `PlaintextBind`). Default false.
    #[serde(default)]
    pub allow_plaintext_bind: bool,

    /// Presets for the anchor and the disabled signal: ActiveDirectory, OpenLDAP or Generic.
    #[serde(default)]
    pub flavor: LdapFlavor,

    /// The immutable, unique attribute that identifies a user (overrides the flavor's preset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_attribute: Option<String>,

    /// An LDAP filter that matches disabled users (overrides the flavor's preset), for
    /// example `(pwdAccountLockedTime=*)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('(') && self.endsWith(')')").message("disabledFilter must be an LDAP filter in parentheses"))]
    #[schemars(length(max = 4096))]
    pub disabled_filter: Option<String>,

    /// Entries per page of a paged search (RFC 2696). Default 1000.
    #[serde(default = "default_page_size")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("pageSize must be between 1 and 100000"))]
    pub page_size: u32,

    /// Time limit for connecting and for each operation; at least 1s. Default 30s.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = duration_rule("timeout"))]
    #[x_kube(validation = duration_minimum_rule("timeout", MIN_TIMEOUT))]
    #[schemars(length(max = 64))]
    pub timeout: String,

    /// The most entries one search may return, over all its pages. A server that sends
    /// more (a broken or hostile one that never ends) fails the read with
    /// `EntryLimitExceeded`, and the run changes nothing. Raise it for a directory whose
    /// scope really holds more users. Default 2000000.
    #[serde(default = "default_max_entries")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxEntries must be at least 1"))]
    pub max_entries: u64,
}

/// The national cloud a tenant lives in; it chooses the login and Graph hosts.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum EntraCloud {
    /// login.microsoftonline.com and graph.microsoft.com.
    #[default]
    Global,
    /// Azure US Government (L4).
    USGov,
    /// Azure US Government (L5, DoD).
    USGovDoD,
    /// Azure operated by 21Vianet.
    China,
}

/// Which app registration to authenticate as, and where.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("[has(self.clientSecretRef), has(self.certificateSecretRef)].exists_one(x, x)").message("exactly one of clientSecretRef or certificateSecretRef must be set"))]
#[serde(rename_all = "camelCase")]
pub struct EntraIdConnection {
    /// The directory (tenant) ID, a GUID.
    #[serde(rename = "tenantID")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')").message("tenantID must be a GUID"))]
    #[schemars(length(max = 36))]
    pub tenant_id: String,

    /// The application (client) ID of the app registration, a GUID.
    #[serde(rename = "clientID")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')").message("clientID must be a GUID"))]
    #[schemars(length(max = 36))]
    pub client_id: String,

    /// The Secret key holding a client secret of the app registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,

    /// The Secret holding a certificate credential of the app registration: `key`
    /// names the PEM private key (usually `tls.key`); the PEM certificate is read
    /// from `tls.crt` of the same Secret (a `kubernetes.io/tls` Secret fits as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_secret_ref: Option<SecretKeyRef>,

    /// Global, USGov, USGovDoD or China. Default Global.
    #[serde(default)]
    pub cloud: EntraCloud,

    /// Override the login host (for private endpoints), e.g. `https://login.example`:
    /// scheme, host and port only; the tenant and token path are appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = entra_host_rule("authorityHost", "/<tenantID>/oauth2/v2.0/token"))]
    #[schemars(length(max = 2048))]
    pub authority_host: Option<String>,

    /// Override the Microsoft Graph host (for private endpoints), e.g. `https://graph.example`:
    /// scheme, host and port only; `/v1.0/` is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = entra_host_rule("graphHost", "/v1.0/"))]
    #[schemars(length(max = 2048))]
    pub graph_host: Option<String>,

    /// Allow `authorityHost` and `graphHost` to name hosts other than the ones
    /// Microsoft documents for `cloud` (login.microsoftonline.com and
    /// graph.microsoft.com for Global, login.microsoftonline.us with graph.microsoft.us
    /// or dod-graph.microsoft.us for USGov and USGovDoD, login.chinacloudapi.cn and
    /// microsoftgraph.chinacloudapi.cn for China). The client secret or assertion goes
    /// to the token host, so without this opt-in any other host is refused
    /// (`Resolved=False`, reason `EndpointNotAllowed`) before a Secret is read. While
    /// set, `Insecure` is True (reason `CustomEndpoints`). Default false.
    #[serde(default)]
    pub allow_custom_endpoints: bool,

    /// The Secret key holding a PEM CA bundle for overridden hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,

    /// Time limit for each request; at least 1s. Default 30s.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = duration_rule("timeout"))]
    #[x_kube(validation = duration_minimum_rule("timeout", MIN_TIMEOUT))]
    #[schemars(length(max = 64))]
    pub timeout: String,

    /// The largest answer read from Microsoft Graph or the token endpoint, in MiB
    /// (1 to 1024). An answer past it is dropped as soon as that much has arrived, and
    /// the read fails with `ResponseTooLarge`: the run changes nothing. A page of 999
    /// users is a few MiB. Default 64.
    #[serde(rename = "maxResponseMiB", default = "default_max_response_mib")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1024").message("maxResponseMiB must be between 1 and 1024"))]
    pub max_response_mib: u32,

    /// The most time one whole read of a mapping's users may take (every page, every
    /// retry and throttling wait included; a throttled request has its own budget too).
    /// A read past it fails with `ReadBudgetExceeded`, and the run changes nothing.
    /// At least 1s. Default 30m.
    #[serde(default = "default_read_budget")]
    #[x_kube(validation = duration_rule("readBudget"))]
    #[x_kube(validation = duration_minimum_rule("readBudget", MIN_TIMEOUT))]
    #[schemars(length(max = 64))]
    pub read_budget: String,
}

/// What the prober last saw.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorHealthStatus {
    /// `Ready` (it resolves and a probe succeeded within `staleAfter`), `Reconciling`
    /// (a probe is pending or a transient failure is retried), `Stalled` (only a
    /// person can help), `Resolved` (the spec and its Secrets resolve), `Connected`
    /// (True only after a real bind or token plus a read succeeded) and `Insecure`
    /// (True while an opt-in that weakens how credentials travel is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the last probe ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,

    /// When a probe last succeeded. Deletions need this to be younger than staleAfter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,

    /// Probes failed in a row since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,

    /// Round trip of the last successful probe, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,

    /// What the last probe found, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_hosts_are_scheme_host_and_port_only() {
        let host = regex::Regex::new(ENTRA_HOST_PATTERN).unwrap();
        for good in [
            "https://login.example",
            "https://login.example/",
            "https://login.example:8443",
            "https://127.0.0.1:9000/",
            "https://[::1]:8443/",
            // The Graph emulator of the tests, over plain HTTP.
            "http://127.0.0.1:41234/",
            "http://127.0.0.1",
        ] {
            assert!(host.is_match(good), "{good}");
        }
        for bad in [
            "https://login.microsoftonline.com/tenant/oauth2/v2.0/token",
            "https://graph.example/v1.0",
            "https://login.example/base",
            "https://login.example//",
            "https://graph.example/?x=1",
            "https://graph.example?x=1",
            "https://graph.example#top",
            "https://user@graph.example",
            "http://graph.example",
            "http://127.0.0.1.example/",
            "https://a b",
            "ftp://graph.example",
            "https://",
        ] {
            assert!(!host.is_match(bad), "{bad}");
        }
    }
}
