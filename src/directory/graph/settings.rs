//! The plain settings a Graph source runs with. The controller converts the
//! ConnectorHealth's `spec.entraID` and the DirectoryMapping's `spec.entraID`
//! and `spec.attributes` into these once, at the boundary; nothing here knows
//! Kubernetes. Validation turns them into checked forms, so a setting that can
//! never work fails with `InvalidConfig` before any network traffic.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use super::cloud::Cloud;
use super::error::GraphError;
use crate::secret::SecretString;

/// The per-request timeout when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read when none is configured: a page of 999 users with
/// every property the projection can select is a few MiB, so this leaves
/// ample room while keeping a hostile answer far from the operator's memory limit.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// The time one whole read may take when none is configured: a tenant of a
/// million users is about a thousand pages, minutes even when throttled.
pub const DEFAULT_READ_BUDGET: Duration = Duration::from_secs(30 * 60);

/// How to reach and authenticate to one Entra ID tenant (a ConnectorHealth's
/// `spec.entraID`, with its Secrets resolved).
#[derive(Clone)]
pub struct GraphSettings {
    /// The directory (tenant) ID.
    pub tenant_id: String,
    /// The application (client) ID of the app registration.
    pub client_id: String,
    pub credential: Credential,
    pub cloud: Cloud,
    /// Overrides the cloud's login host, e.g. `https://login.example`.
    pub authority_host: Option<Url>,
    /// Overrides the cloud's Graph host, e.g. `https://graph.example`.
    pub graph_host: Option<Url>,
    /// PEM CA certificates trusted besides the system roots (for overridden hosts).
    pub ca_pem: Option<Vec<u8>>,
    /// Limit for each HTTP request.
    pub timeout: Duration,
    /// Retries of throttled and failed requests.
    pub retry: RetryPolicy,
    /// The largest answer (token or Graph) read, in bytes: one past it fails
    /// the read as soon as that many bytes have arrived.
    pub max_response_bytes: u64,
    /// The most time one whole read may take (every page of a scope, or a
    /// delta round), its retries and waits included.
    pub read_budget: Duration,
}

/// The app registration's credential.
#[derive(Clone)]
pub enum Credential {
    /// A client secret.
    Secret(SecretString),
    /// A certificate credential: the PEM certificate registered with the app and
    /// its PEM private key (PKCS#8 or PKCS#1 RSA), used to sign client assertions.
    Certificate {
        cert_pem: String,
        key_pem: SecretString,
    },
}

/// How requests that fail for a passing reason are retried: 429 (after the
/// server's `Retry-After`), 502/503/504, timeouts and dropped connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first one included, not counting throttled
    /// ones (429, or 503 with `Retry-After`): those only the budget bounds.
    pub max_attempts: u32,
    /// The first backoff; each further one doubles, with jitter.
    pub initial_backoff: Duration,
    /// The longest single backoff.
    pub max_backoff: Duration,
    /// The most time one request may take over all its attempts and waits
    /// (throttled ones included); a `Retry-After` that reaches past it fails
    /// the request at once.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            budget: Duration::from_secs(300),
        }
    }
}

impl GraphSettings {
    /// Settings for a tenant and app with the defaults: the given cloud's hosts,
    /// the system CA roots, [`DEFAULT_TIMEOUT`] and the default retries.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        credential: Credential,
        cloud: Cloud,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            credential,
            cloud,
            authority_host: None,
            graph_host: None,
            ca_pem: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            read_budget: DEFAULT_READ_BUDGET,
        }
    }

    /// The endpoints these settings resolve to, checked.
    pub fn endpoints(&self) -> Result<Endpoints, GraphError> {
        let invalid = |m: String| Err(GraphError::InvalidConfig(m));
        if !is_tenant(&self.tenant_id) {
            return invalid(format!(
                "tenant ID {:?} is not a tenant GUID or domain name",
                self.tenant_id
            ));
        }
        if !is_client_id(&self.client_id) {
            return invalid(format!(
                "client ID {:?} is not an application (client) ID",
                self.client_id
            ));
        }
        let authority = match &self.authority_host {
            Some(url) => checked_override("authorityHost", url)?,
            None => self.cloud.authority(),
        };
        let graph = match &self.graph_host {
            Some(url) => checked_override("graphHost", url)?,
            None => self.cloud.graph(),
        };
        let token = authority
            .join(&format!("{}/oauth2/v2.0/token", self.tenant_id))
            .map_err(|e| GraphError::InvalidConfig(format!("token endpoint: {e}")))?;
        let api = graph
            .join("v1.0/")
            .map_err(|e| GraphError::InvalidConfig(format!("Graph endpoint: {e}")))?;
        Ok(Endpoints {
            token,
            graph: api,
            scope: self.cloud.graph_scope(),
        })
    }

    /// Check everything that can be checked without the network.
    pub fn validate(&self) -> Result<Endpoints, GraphError> {
        let endpoints = self.endpoints()?;
        match &self.credential {
            Credential::Secret(secret) if secret.expose().trim().is_empty() => {
                return Err(GraphError::InvalidConfig(
                    "the client secret is empty".into(),
                ));
            }
            Credential::Secret(_) => {}
            Credential::Certificate { .. } => {
                // Parsed, and the key matched to the certificate, when the
                // source is built (see `assertion`).
            }
        }
        if self.timeout.is_zero() {
            return Err(GraphError::InvalidConfig(
                "timeout must be more than zero".into(),
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(GraphError::InvalidConfig(
                "the response size cap must be more than zero".into(),
            ));
        }
        if self.read_budget.is_zero() {
            return Err(GraphError::InvalidConfig(
                "the read budget must be more than zero".into(),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(GraphError::InvalidConfig(
                "retries need at least one attempt".into(),
            ));
        }
        Ok(endpoints)
    }
}

impl fmt::Debug for GraphSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphSettings")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .field("cloud", &self.cloud)
            .field(
                "authority_host",
                &self.authority_host.as_ref().map(Url::as_str),
            )
            .field("graph_host", &self.graph_host.as_ref().map(Url::as_str))
            .field("ca_pem_bytes", &self.ca_pem.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("read_budget", &self.read_budget)
            .finish()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Secret(<redacted>)"),
            Credential::Certificate { cert_pem, .. } => f
                .debug_struct("Certificate")
                .field("cert_pem_bytes", &cert_pem.len())
                .field("key_pem", &"<redacted>")
                .finish(),
        }
    }
}

/// Where the settings send requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub token: Url,
    /// `{graph}/v1.0/`: the base of every Graph request.
    pub graph: Url,
    /// The OAuth2 scope asked for: `https://<cloud's graph host>/.default`.
    pub scope: String,
}

/// An override must be `https://`, or `http://` to a loopback address (a local
/// emulator or a sidecar proxy): nothing else may carry tokens in clear text.
fn checked_override(what: &str, url: &Url) -> Result<Url, GraphError> {
    let invalid = |m: String| Err(GraphError::InvalidConfig(m));
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return invalid(format!("{what} {:?} names no host", url.as_str()));
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return invalid(format!(
                "{what} {:?} is plain http; use https:// (http is accepted only for 127.0.0.1)",
                url.as_str()
            ));
        }
        other => {
            return invalid(format!(
                "{what} {:?} has scheme {other:?}; use https://",
                url.as_str()
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return invalid(format!(
            "{what} {:?} has a query, fragment or user; give scheme, host, port and at most a path",
            url.as_str()
        ));
    }
    let mut url = url.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn is_loopback(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// A tenant GUID or a verified domain name: letters, digits, dots and hyphens.
fn is_tenant(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !s.starts_with(['.', '-'])
}

/// An application ID: a GUID (hex digits and hyphens).
fn is_client_id(s: &str) -> bool {
    is_graph_id(s)
}

/// A Graph object ID (a GUID). Checked before an ID goes into a URL path.
pub(crate) fn is_graph_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Which Graph property fills each user field. Unset fields take the presets:
/// username and userPrincipalName ← `userPrincipalName`, email ← `mail`,
/// display name ← `displayName`. A property may name a value inside a complex
/// property with a slash, e.g. `onPremisesExtensionAttributes/extensionAttribute1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphAttributes {
    pub username: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    /// Extra user attributes: name on the user record → Graph property.
    pub extra: BTreeMap<String, String>,
}

/// Which users of the tenant a mapping covers (a DirectoryMapping's
/// `spec.entraID` and `spec.attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphScope {
    /// Object IDs of groups whose transitive user members are in scope; empty:
    /// every user of the tenant.
    pub groups: Vec<String>,
    /// A Graph `$filter` on users, e.g. `department eq 'Sales'`. Sent as an
    /// advanced query (`ConsistencyLevel: eventual`, `$count=true`).
    pub filter: Option<String>,
    pub attributes: GraphAttributes,
}

impl GraphScope {
    /// Every user of the tenant, with the attribute presets.
    pub fn all_users() -> Self {
        Self::default()
    }

    /// Whether the scope narrows the tenant's users at all.
    pub fn is_whole_tenant(&self) -> bool {
        self.groups.is_empty() && self.filter.is_none()
    }

    /// Check the group IDs, the filter and the property names.
    pub fn validate(&self) -> Result<(), GraphError> {
        let invalid = |m: String| Err(GraphError::InvalidConfig(m));
        for group in &self.groups {
            if !is_graph_id(group) {
                return invalid(format!("group {group:?} is not a group object ID (a GUID)"));
            }
        }
        if let Some(filter) = &self.filter {
            if filter.trim().is_empty() {
                return invalid("the filter is empty; leave it out to take every user".into());
            }
            if filter.chars().any(char::is_control) {
                return invalid("the filter contains control characters".into());
            }
        }
        let a = &self.attributes;
        for (what, name) in [
            ("attributes.username", &a.username),
            ("attributes.email", &a.email),
            ("attributes.displayName", &a.display_name),
            ("attributes.userPrincipalName", &a.user_principal_name),
        ] {
            if let Some(name) = name {
                check_property(what, name)?;
            }
        }
        for (key, name) in &a.extra {
            if key.is_empty() {
                return invalid("attributes.extra has an empty key".into());
            }
            check_property(&format!("attributes.extra.{key}"), name)?;
        }
        Ok(())
    }
}

fn check_property(what: &str, name: &str) -> Result<(), GraphError> {
    if is_property_path(name) {
        Ok(())
    } else {
        Err(GraphError::InvalidConfig(format!(
            "{what} {name:?} is not a Graph user property (letters, digits and _; / for a nested value)"
        )))
    }
}

/// `name` or `name/inner/...`, each part a property name.
pub(crate) fn is_property_path(s: &str) -> bool {
    s.split('/').all(|part| {
        part.starts_with(|c: char| c.is_ascii_alphabetic())
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GraphSettings {
        GraphSettings::new(
            "11111111-2222-3333-4444-555555555555",
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            Credential::Secret(SecretString::new("s3cret-value")),
            Cloud::Global,
        )
    }

    #[test]
    fn endpoints_follow_the_cloud() {
        let mut s = settings();
        for (cloud, token_host, graph_host) in [
            (
                Cloud::Global,
                "login.microsoftonline.com",
                "graph.microsoft.com",
            ),
            (
                Cloud::UsGov,
                "login.microsoftonline.us",
                "graph.microsoft.us",
            ),
            (
                Cloud::UsGovDod,
                "login.microsoftonline.us",
                "dod-graph.microsoft.us",
            ),
            (
                Cloud::China,
                "login.chinacloudapi.cn",
                "microsoftgraph.chinacloudapi.cn",
            ),
        ] {
            s.cloud = cloud;
            let e = s.validate().unwrap();
            assert_eq!(
                e.token.as_str(),
                format!(
                    "https://{token_host}/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token"
                )
            );
            assert_eq!(e.graph.as_str(), format!("https://{graph_host}/v1.0/"));
            assert_eq!(e.scope, format!("https://{graph_host}/.default"));
        }
    }

    #[test]
    fn overrides_replace_the_hosts_but_not_the_scope() {
        let mut s = settings();
        s.cloud = Cloud::UsGov;
        s.authority_host = Some(Url::parse("https://login.example/base").unwrap());
        s.graph_host = Some(Url::parse("http://127.0.0.1:8443").unwrap());
        let e = s.validate().unwrap();
        assert_eq!(
            e.token.as_str(),
            "https://login.example/base/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token"
        );
        assert_eq!(e.graph.as_str(), "http://127.0.0.1:8443/v1.0/");
        assert_eq!(e.scope, "https://graph.microsoft.us/.default");
    }

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        let mut s = settings();
        s.graph_host = Some(Url::parse("http://graph.example").unwrap());
        assert!(matches!(s.validate(), Err(GraphError::InvalidConfig(m)) if m.contains("https")));
        s.graph_host = Some(Url::parse("http://[::1]:9000").unwrap());
        assert!(s.validate().is_ok());
        s.graph_host = Some(Url::parse("ftp://graph.example").unwrap());
        assert!(s.validate().is_err());
        s.graph_host = Some(Url::parse("https://graph.example/?x=1").unwrap());
        assert!(s.validate().is_err());
    }

    #[test]
    fn ids_and_secrets_are_checked() {
        let mut s = settings();
        s.tenant_id = "../evil".into();
        assert!(s.validate().is_err());
        s.tenant_id = "contoso.onmicrosoft.com".into();
        assert!(s.validate().is_ok());
        s.client_id = "not a guid".into();
        assert!(s.validate().is_err());
        s = settings();
        s.credential = Credential::Secret(SecretString::new(" "));
        assert!(s.validate().is_err());
        s = settings();
        s.timeout = Duration::ZERO;
        assert!(s.validate().is_err());
    }

    #[test]
    fn debug_never_shows_the_secret_or_the_key() {
        let mut s = settings();
        assert!(!format!("{s:?}").contains("s3cret-value"));
        s.credential = Credential::Certificate {
            cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            key_pem: SecretString::new("-----BEGIN PRIVATE KEY----- k3y-material"),
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("k3y-material"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn scopes_are_checked() {
        let mut scope = GraphScope::all_users();
        assert!(scope.validate().is_ok());
        assert!(scope.is_whole_tenant());
        scope.groups = vec!["0b1c2d3e-0000-4000-8000-000000000001".into()];
        assert!(scope.validate().is_ok());
        scope.groups = vec!["x/../../users".into()];
        assert!(scope.validate().is_err());
        scope.groups.clear();
        scope.filter = Some("  ".into());
        assert!(scope.validate().is_err());
        scope.filter = Some("department eq 'Sales'".into());
        assert!(scope.validate().is_ok());
        scope.attributes.extra.insert(
            "ext1".into(),
            "onPremisesExtensionAttributes/extensionAttribute1".into(),
        );
        assert!(scope.validate().is_ok());
        scope.attributes.extra.insert("bad".into(), "a,b".into());
        assert!(scope.validate().is_err());
    }
}
