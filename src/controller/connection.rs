//! The boundary between the resources and the directory sources: a ConnectorHealth
//! and its Secrets become a [`Source`], a DirectoryMapping a [`Scope`], converted once
//! and validated here.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client, ResourceExt};

use crate::api::{ConnectorHealth, DirectoryMapping, LdapFlavor, SearchScope, SecretKeyRef};
use crate::core::duration::{MIN_TIMEOUT, check_minimum};
use crate::core::parse_duration;

use super::metrics::{ConnectorLabels, Metrics};
use crate::directory::graph::TokenCache;
use crate::directory::ldap::{self, AttributeMap, Flavor, LdapScope, LdapSettings, LdapSource};
use crate::directory::{Scope, Source, SourceError};
use crate::secret::SecretString;

/// Why a connector or mapping could not be turned into something to read.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// A Secret or key the spec names is missing; the message names it.
    #[error("{message}")]
    Secret {
        reason: &'static str,
        message: String,
    },
    /// The spec asks for something an admin has not allowed: a Secret that is not a
    /// credential for this connector, or an endpoint credentials may not go to.
    #[error("{message}")]
    NotAllowed {
        reason: &'static str,
        message: String,
    },
    /// The spec cannot be used as it is.
    #[error("{0}")]
    Invalid(String),
    /// The API server failed.
    #[error("reading a Secret failed: {0}")]
    Kube(#[from] kube::Error),
}

impl ConnectionError {
    /// A fixed reason for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectionError::Secret { reason, .. } | ConnectionError::NotAllowed { reason, .. } => {
                reason
            }
            ConnectionError::Invalid(_) => "InvalidSpec",
            ConnectionError::Kube(_) => "APIError",
        }
    }
}

impl From<SourceError> for ConnectionError {
    fn from(e: SourceError) -> Self {
        ConnectionError::Invalid(e.message)
    }
}

/// The label that makes a Secret usable as a connector's credential: its value
/// must be `"true"`. Without it a connector that names the Secret is refused, so a
/// connector cannot send another application's Secret to a server of its choosing.
pub const CREDENTIAL_LABEL: &str = "usersync.dev/credential";

/// An annotation on a credential Secret that restricts it to the connectors it
/// names (comma-separated ConnectorHealth names of the Secret's namespace).
pub const CONNECTORS_ANNOTATION: &str = "usersync.dev/connectors";

/// The ClusterRole a namespace binds to let the operator read its Secrets, unless
/// the operator is told another name.
pub const SECRET_READER_ROLE: &str = "usersync-secret-reader";

/// How a namespace grants the operator its Secrets: the ClusterRole to bind, and
/// the account to bind it to (the operator's own, when it could learn it).
#[derive(Clone, Debug)]
pub struct SecretGrant {
    /// The ClusterRole with the right to read Secrets.
    pub role: String,
    /// The operator's username, e.g. `system:serviceaccount:usersync-system:usersync`.
    pub account: Option<String>,
}

impl Default for SecretGrant {
    fn default() -> Self {
        Self {
            role: SECRET_READER_ROLE.into(),
            account: None,
        }
    }
}

impl SecretGrant {
    /// The one command that grants `namespace`'s Secrets to the operator.
    pub fn command(&self, namespace: &str) -> String {
        let subject = match &self.account {
            Some(user) => match user.strip_prefix("system:serviceaccount:") {
                Some(sa) => format!("--serviceaccount={sa}"),
                None => format!("--user={user}"),
            },
            None => "--serviceaccount=<operator namespace>:<operator service account>".into(),
        };
        format!(
            "kubectl create rolebinding usersync-secrets -n {namespace} --clusterrole={} {subject}",
            self.role
        )
    }
}

/// What reading a connector's Secrets needs besides the client: how to name the
/// grant when a namespace has not given it, and where to watch the Secrets of a
/// namespace that has.
#[derive(Clone, Default)]
pub struct SecretAccess {
    /// How a namespace grants its Secrets.
    pub grant: Arc<SecretGrant>,
    /// The watches of credential Secrets, per namespace; none in the CLI.
    pub watches: Option<Arc<super::secret_watch::SecretWatches>>,
}

impl SecretAccess {
    /// A reader of `namespace`'s Secrets.
    pub fn reader(&self, client: &Client, namespace: &str) -> SecretReader {
        SecretReader {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_string(),
            access: self.clone(),
        }
    }
}

/// Reads the Secrets of one namespace for its connectors.
pub struct SecretReader {
    api: Api<Secret>,
    namespace: String,
    access: SecretAccess,
}

impl SecretReader {
    /// The metadata of Secret `name`, or a refusal that names the grant when the
    /// namespace has not given the operator its Secrets. A namespace that answers
    /// gets its credential Secrets watched.
    async fn metadata(
        &self,
        field: &str,
        name: &str,
    ) -> Result<Option<kube::core::PartialObjectMeta<Secret>>, ConnectionError> {
        match self.api.get_metadata_opt(name).await {
            Err(kube::Error::Api(e)) if e.code == 403 => Err(ConnectionError::NotAllowed {
                reason: "SecretAccessNotGranted",
                message: format!(
                    "spec.{field}: Secret {name:?} cannot be read: namespace {ns} has not granted \
                     the operator its Secrets; to grant it: {}",
                    self.access.grant.command(&self.namespace),
                    ns = self.namespace,
                ),
            }),
            Err(e) => Err(e.into()),
            Ok(found) => {
                if let Some(watches) = &self.access.watches {
                    watches.ensure(&self.namespace);
                }
                Ok(found)
            }
        }
    }
}

/// An annotation on a credential Secret that restricts it to the ProvisioningTargets
/// it names (comma-separated names of the Secret's namespace).
pub const TARGETS_ANNOTATION: &str = "usersync.dev/targets";

/// The kind of object that uses a credential Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    Connector,
    Target,
}

impl Holder {
    fn annotation(self) -> &'static str {
        match self {
            Holder::Connector => CONNECTORS_ANNOTATION,
            Holder::Target => TARGETS_ANNOTATION,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Holder::Connector => "connectors",
            Holder::Target => "targets",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Holder::Connector => "connector",
            Holder::Target => "target",
        }
    }
}

/// Whether the Secret (by its metadata) may be used by `connector`; the error says
/// how an admin allows it. Only names and metadata go into the message.
#[cfg(test)]
pub fn credential_permitted(
    meta: &ObjectMeta,
    connector: &str,
    namespace: &str,
    field: &str,
) -> Result<(), ConnectionError> {
    credential_permitted_to(meta, Holder::Connector, connector, namespace, field)
}

/// Whether the Secret (by its metadata) may be used by `holder` (a connector or a
/// target) named `name`.
pub fn credential_permitted_to(
    meta: &ObjectMeta,
    holder: Holder,
    name_of_holder: &str,
    namespace: &str,
    field: &str,
) -> Result<(), ConnectionError> {
    let name = meta.name.as_deref().unwrap_or_default();
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(CREDENTIAL_LABEL))
        .is_some_and(|v| v == "true");
    if !labelled {
        return Err(ConnectionError::NotAllowed {
            reason: "SecretNotPermitted",
            message: format!(
                "spec.{field}: Secret {name:?} is not marked as a usersync credential, so it is not used; \
                 if it is meant for this {}, allow it with: \
                 kubectl label secret {name} -n {namespace} {CREDENTIAL_LABEL}=true",
                holder.singular()
            ),
        });
    }
    let annotation = holder.annotation();
    let Some(allowed) = meta.annotations.as_ref().and_then(|a| a.get(annotation)) else {
        // A Secret restricted to some connectors is not for targets, and the
        // other way round.
        let other = match holder {
            Holder::Connector => TARGETS_ANNOTATION,
            Holder::Target => CONNECTORS_ANNOTATION,
        };
        if meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(other))
        {
            return Err(ConnectionError::NotAllowed {
                reason: "SecretNotPermitted",
                message: format!(
                    "spec.{field}: Secret {name:?} is restricted by its annotation {other} to other objects, \
                     so no {} may use it; to allow {name_of_holder:?}: \
                     kubectl annotate secret {name} -n {namespace} {annotation}={name_of_holder}",
                    holder.singular()
                ),
            });
        }
        return Ok(());
    };
    if allowed.split(',').any(|c| c.trim() == name_of_holder) {
        return Ok(());
    }
    Err(ConnectionError::NotAllowed {
        reason: "SecretNotPermitted",
        message: format!(
            "spec.{field}: Secret {name:?} may be used only by the {} its annotation \
             {annotation} names ({allowed:?}), not by {name_of_holder:?}; to allow this one too: \
             kubectl annotate secret {name} -n {namespace} --overwrite {annotation}={}",
            holder.plural(),
            allowed
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .chain([name_of_holder])
                .collect::<Vec<_>>()
                .join(",")
        ),
    })
}

/// Read one key of a Secret, if the Secret is a credential `connector` may use: its
/// metadata is checked first, so the value of a Secret that is not is never fetched.
/// The value never leaves as text except through the returned bytes; errors name the
/// Secret and key only.
async fn secret_value(
    secrets: &SecretReader,
    connector: &ConnectorHealth,
    field: &str,
    r: &SecretKeyRef,
) -> Result<Vec<u8>, ConnectionError> {
    credential_value(secrets, Holder::Connector, &connector.name_any(), field, r).await
}

/// Read one key of a Secret of the reader's namespace for `holder` named `name`,
/// checked as [`credential_permitted_to`] says before its value is fetched.
pub async fn credential_value(
    secrets: &SecretReader,
    holder: Holder,
    name: &str,
    field: &str,
    r: &SecretKeyRef,
) -> Result<Vec<u8>, ConnectionError> {
    // A name and nothing else reaches the API server (the CRD checks it too).
    if !crate::api::is_dns1123_subdomain(&r.name) {
        return Err(ConnectionError::Invalid(format!(
            "spec.{field}.name {:?} is not a Secret name (lowercase letters, digits, '-' and '.')",
            r.name
        )));
    }
    let not_found = || ConnectionError::Secret {
        reason: "SecretNotFound",
        message: format!(
            "spec.{field}: Secret {:?} not found in this namespace; create it or fix the reference",
            r.name
        ),
    };
    let namespace = secrets.namespace.clone();
    let meta = secrets
        .metadata(field, &r.name)
        .await?
        .ok_or_else(not_found)?;
    credential_permitted_to(&meta.metadata, holder, name, &namespace, field)?;
    let secret = secrets.api.get_opt(&r.name).await?.ok_or_else(not_found)?;
    // Checked again: the label may have gone between the two reads.
    credential_permitted_to(&secret.metadata, holder, name, &namespace, field)?;
    let value = secret
        .data
        .and_then(|mut d| d.remove(&r.key).map(|b| b.0))
        .or_else(|| {
            secret
                .string_data
                .and_then(|mut d| d.remove(&r.key))
                .map(String::into_bytes)
        });
    value.ok_or_else(|| ConnectionError::Secret {
        reason: "SecretKeyNotFound",
        message: format!("spec.{field}: Secret {:?} has no key {:?}", r.name, r.key),
    })
}

/// Refuse a simple bind in clear text unless the connector opted in: the password
/// would cross the network readable. Checked before the Secret is read.
fn check_ldap_transport(spec: &crate::api::LdapConnection) -> Result<(), ConnectionError> {
    let plain = spec
        .url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("ldap://"));
    if plain && !spec.start_tls && spec.bind_dn.is_some() && !spec.allow_plaintext_bind {
        return Err(ConnectionError::NotAllowed {
            reason: "PlaintextBindRefused",
            message: format!(
                "spec.ldap: a simple bind over {} without StartTLS would send the bind password in clear text; \
                 use ldaps://, set startTLS: true, or opt in with allowPlaintextBind: true",
                spec.url
            ),
        });
    }
    Ok(())
}

/// Refuse an Entra endpoint other than the one Microsoft documents for the cloud,
/// unless the connector opted in (`allowCustomEndpoints`): the token request carries
/// the client secret or assertion. Checked before a Secret is read.
fn check_entra_host(
    field: &str,
    url: Option<&url::Url>,
    documented: &str,
    cloud: crate::api::EntraCloud,
    allowed: bool,
) -> Result<(), ConnectionError> {
    let Some(url) = url else { return Ok(()) };
    let is_documented = url.scheme() == "https"
        && url.host_str() == Some(documented)
        && url.port_or_known_default() == Some(443)
        && url.path() == "/";
    if is_documented || allowed {
        return Ok(());
    }
    Err(ConnectionError::NotAllowed {
        reason: "EndpointNotAllowed",
        message: format!(
            "spec.entraID.{field} {:?} is not https://{documented}, the host Microsoft documents for the {cloud:?} cloud; \
             credentials go elsewhere only when the connector sets allowCustomEndpoints: true",
            url.as_str()
        ),
    })
}

/// The opt-ins of a connector that weaken how its credentials travel, as the
/// `Insecure` condition's reasons, in a fixed order.
pub fn insecure_opt_ins(connector: &ConnectorHealth) -> Vec<(&'static str, &'static str)> {
    let spec = &connector.spec;
    let mut found = Vec::new();
    if let Some(l) = &spec.ldap {
        if l.allow_plaintext_bind {
            found.push((
                "PlaintextBind",
                "allowPlaintextBind: true lets the bind password travel in clear text",
            ));
        }
        if l.insecure_skip_verify {
            found.push((
                "InsecureSkipVerify",
                "insecureSkipVerify: true accepts any server certificate",
            ));
        }
    }
    if spec
        .entra_id
        .as_ref()
        .is_some_and(|e| e.allow_custom_endpoints)
    {
        found.push(("CustomEndpoints", "allowCustomEndpoints: true lets credentials go to hosts other than the cloud's documented ones"));
    }
    found
}

/// What the sources made for connectors share across runs and probes: how their
/// Secrets are read, the Entra ID access tokens, and the metrics their
/// throttling is counted in.
#[derive(Clone, Default)]
pub struct Directories {
    pub secrets: SecretAccess,
    pub tokens: Arc<TokenCache>,
    pub metrics: Option<Arc<Metrics>>,
}

/// The source a connector describes, with its Secrets read now (so a changed
/// password is picked up by the next run or probe), as `directories` reads them.
/// An Entra ID source keeps its access token in `directories`, for the
/// connector's later sources with the same settings and credential, and counts
/// its throttling there when dropped.
pub async fn source_for(
    client: &Client,
    connector: &ConnectorHealth,
    directories: &Directories,
) -> Result<Source, ConnectionError> {
    let secrets = &directories
        .secrets
        .reader(client, &connector.namespace().unwrap_or_default());
    let Some(spec) = &connector.spec.ldap else {
        return graph_source_for(secrets, connector, directories).await;
    };
    let flavor = match spec.flavor {
        LdapFlavor::ActiveDirectory => Flavor::ActiveDirectory,
        LdapFlavor::OpenLDAP => Flavor::OpenLdap,
        LdapFlavor::Generic => Flavor::Generic,
    };
    check_ldap_transport(spec)?;
    let mut settings = LdapSettings::new(spec.url.clone(), flavor);
    settings.start_tls = spec.start_tls;
    settings.insecure_skip_verify = spec.insecure_skip_verify;
    settings.anchor_attribute = spec.anchor_attribute.clone();
    settings.disabled_filter = spec.disabled_filter.clone();
    settings.page_size = spec.page_size;
    settings.timeout = parse_duration(&spec.timeout)
        .map_err(|e| ConnectionError::Invalid(format!("spec.ldap.timeout: {e}")))?;
    settings.max_entries = spec.max_entries;
    if let (Some(dn), Some(r)) = (&spec.bind_dn, &spec.bind_password_secret_ref) {
        let password = secret_value(secrets, connector, "ldap.bindPasswordSecretRef", r).await?;
        let password = String::from_utf8(password).map_err(|_| ConnectionError::Secret {
            reason: "InvalidSecret",
            message: format!(
                "spec.ldap.bindPasswordSecretRef: key {:?} of Secret {:?} is not UTF-8 text",
                r.key, r.name
            ),
        })?;
        settings.bind = Some((
            dn.clone(),
            SecretString::new(password.trim_end_matches(['\r', '\n'])),
        ));
    }
    if let Some(r) = &spec.ca_secret_ref {
        settings.ca_pem = Some(secret_value(secrets, connector, "ldap.caSecretRef", r).await?);
    }
    let source = LdapSource::new(&settings)
        .map_err(|e: ldap::LdapError| ConnectionError::Invalid(e.to_string()))?;
    let incremental = ldap::IncrementalSource::new(&settings)
        .map_err(|e: ldap::LdapError| ConnectionError::Invalid(e.to_string()))?;
    Ok(Source::Ldap(source, Box::new(incremental)))
}

/// Text from a Secret key (a password, a client secret, a PEM document).
async fn secret_text(
    secrets: &SecretReader,
    connector: &ConnectorHealth,
    field: &str,
    r: &SecretKeyRef,
) -> Result<String, ConnectionError> {
    let bytes = secret_value(secrets, connector, field, r).await?;
    String::from_utf8(bytes).map_err(|_| ConnectionError::Secret {
        reason: "InvalidSecret",
        message: format!(
            "spec.{field}: key {:?} of Secret {:?} is not UTF-8 text",
            r.key, r.name
        ),
    })
}

/// The Graph source an `entraID` connector describes.
async fn graph_source_for(
    secrets: &SecretReader,
    connector: &ConnectorHealth,
    directories: &Directories,
) -> Result<Source, ConnectionError> {
    use crate::api::EntraCloud;
    use crate::directory::graph::{Cloud, Credential, GraphSettings, GraphSource};
    let Some(spec) = &connector.spec.entra_id else {
        return Err(ConnectionError::Invalid(
            "exactly one of spec.ldap or spec.entraID must be set".into(),
        ));
    };
    let cloud = match spec.cloud {
        EntraCloud::Global => Cloud::Global,
        EntraCloud::USGov => Cloud::UsGov,
        EntraCloud::USGovDoD => Cloud::UsGovDod,
        EntraCloud::China => Cloud::China,
    };
    let url = |field: &str, value: &Option<String>| -> Result<Option<url::Url>, ConnectionError> {
        value
            .as_deref()
            .map(|v| {
                url::Url::parse(v)
                    .map_err(|e| ConnectionError::Invalid(format!("spec.entraID.{field}: {e}")))
            })
            .transpose()
    };
    let authority_host = url("authorityHost", &spec.authority_host)?;
    let graph_host = url("graphHost", &spec.graph_host)?;
    // Where the credential would go, checked before any Secret is read.
    check_entra_host(
        "authorityHost",
        authority_host.as_ref(),
        cloud.login_host(),
        spec.cloud,
        spec.allow_custom_endpoints,
    )?;
    check_entra_host(
        "graphHost",
        graph_host.as_ref(),
        cloud.graph_host(),
        spec.cloud,
        spec.allow_custom_endpoints,
    )?;
    let credential = match (&spec.client_secret_ref, &spec.certificate_secret_ref) {
        (Some(r), _) => {
            let secret = secret_text(secrets, connector, "entraID.clientSecretRef", r).await?;
            Credential::Secret(SecretString::new(secret.trim_end_matches(['\r', '\n'])))
        }
        (None, Some(r)) => {
            let key_pem =
                secret_text(secrets, connector, "entraID.certificateSecretRef", r).await?;
            let cert_ref = SecretKeyRef {
                name: r.name.clone(),
                key: "tls.crt".into(),
            };
            let cert_pem = secret_text(
                secrets,
                connector,
                "entraID.certificateSecretRef",
                &cert_ref,
            )
            .await?;
            Credential::Certificate {
                cert_pem,
                key_pem: SecretString::new(key_pem),
            }
        }
        (None, None) => {
            return Err(ConnectionError::Invalid(
                "spec.entraID needs clientSecretRef or certificateSecretRef".into(),
            ));
        }
    };
    let mut settings = GraphSettings::new(
        spec.tenant_id.clone(),
        spec.client_id.clone(),
        credential,
        cloud,
    );
    settings.authority_host = authority_host;
    settings.graph_host = graph_host;
    settings.timeout = parse_duration(&spec.timeout)
        .map_err(|e| ConnectionError::Invalid(format!("spec.entraID.timeout: {e}")))?;
    (settings.max_response_bytes, settings.read_budget) = read_bounds(spec)?;
    if let Some(r) = &spec.ca_secret_ref {
        settings.ca_pem = Some(secret_value(secrets, connector, "entraID.caSecretRef", r).await?);
    }
    let mut source =
        GraphSource::with_token_cache(&settings, &directories.tokens, &token_owner(connector))
            .map_err(|e| ConnectionError::Invalid(e.to_string()))?;
    if let Some(metrics) = &directories.metrics {
        let metrics = metrics.clone();
        let labels = ConnectorLabels {
            namespace: connector.namespace().unwrap_or_default(),
            connector: connector.name_any(),
        };
        source = source.report_throttling(move |t| metrics.record_throttling(&labels, t));
    }
    Ok(Source::Graph(Box::new(source)))
}

/// Whose token a connector's sources share: the connector, by namespace and name.
pub fn token_owner(connector: &ConnectorHealth) -> String {
    format!(
        "{}/{}",
        connector.namespace().unwrap_or_default(),
        connector.name_any()
    )
}

/// The response cap in bytes and the read budget of an `entraID` connector,
/// checked again here for objects stored before the schema bounded them.
fn read_bounds(
    spec: &crate::api::EntraIdConnection,
) -> Result<(u64, std::time::Duration), ConnectionError> {
    if !(1..=1024).contains(&spec.max_response_mib) {
        return Err(ConnectionError::Invalid(format!(
            "spec.entraID.maxResponseMiB is {}; it must be between 1 and 1024",
            spec.max_response_mib
        )));
    }
    let budget = check_minimum("spec.entraID.readBudget", &spec.read_budget, MIN_TIMEOUT)
        .map_err(ConnectionError::Invalid)?;
    Ok((u64::from(spec.max_response_mib) * 1024 * 1024, budget))
}

/// The scope a mapping describes.
pub fn scope_for(mapping: &DirectoryMapping) -> Result<Scope, ConnectionError> {
    let spec = &mapping.spec;
    let Some(ldap) = &spec.ldap else {
        return graph_scope_for(mapping);
    };
    let attrs = spec.attributes.clone().unwrap_or_default();
    let scope = LdapScope {
        base_dn: ldap.base_dn.clone(),
        scope: match ldap.scope {
            SearchScope::Subtree => ldap::SearchScope::Subtree,
            SearchScope::OneLevel => ldap::SearchScope::OneLevel,
        },
        filter: ldap.filter.clone(),
        member_of: ldap.member_of.clone(),
        attributes: AttributeMap {
            username: attrs.username,
            email: attrs.email,
            display_name: attrs.display_name,
            user_principal_name: attrs.user_principal_name,
            extra: attrs.extra,
        },
    };
    scope
        .validate()
        .map_err(|e| ConnectionError::Invalid(e.to_string()))?;
    Ok(Scope::Ldap(scope))
}

/// The scope of an `entraID` mapping.
fn graph_scope_for(mapping: &DirectoryMapping) -> Result<Scope, ConnectionError> {
    use crate::directory::graph::{GraphAttributes, GraphScope};
    let spec = &mapping.spec;
    let Some(entra) = &spec.entra_id else {
        return Err(ConnectionError::Invalid(
            "exactly one of spec.ldap or spec.entraID must be set".into(),
        ));
    };
    let attrs = spec.attributes.clone().unwrap_or_default();
    let scope = GraphScope {
        groups: entra.groups.clone(),
        filter: entra.filter.clone(),
        attributes: GraphAttributes {
            username: attrs.username,
            email: attrs.email,
            display_name: attrs.display_name,
            user_principal_name: attrs.user_principal_name,
            extra: attrs.extra,
        },
    };
    scope
        .validate()
        .map_err(|e| ConnectionError::Invalid(e.to_string()))?;
    Ok(Scope::Graph(scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            })
        };
        ObjectMeta {
            name: Some("app-db".into()),
            labels: map(labels),
            annotations: map(annotations),
            ..ObjectMeta::default()
        }
    }

    fn refused(m: &ObjectMeta) -> String {
        match credential_permitted(m, "corp", "team-a", "ldap.bindPasswordSecretRef") {
            Err(e) => {
                assert_eq!(e.reason(), "SecretNotPermitted");
                e.to_string()
            }
            Ok(()) => panic!("{m:?} was permitted"),
        }
    }

    #[test]
    fn the_grant_names_the_namespace_the_role_and_the_operators_account() {
        let grant = SecretGrant {
            role: "ops-usersync-secret-reader".into(),
            account: Some("system:serviceaccount:ops:ops-usersync".into()),
        };
        assert_eq!(
            grant.command("team-a"),
            "kubectl create rolebinding usersync-secrets -n team-a \
             --clusterrole=ops-usersync-secret-reader --serviceaccount=ops:ops-usersync"
        );
        let user = SecretGrant {
            account: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(
            user.command("b"),
            "kubectl create rolebinding usersync-secrets -n b \
             --clusterrole=usersync-secret-reader --user=alice"
        );
        assert!(
            SecretGrant::default()
                .command("c")
                .ends_with("--serviceaccount=<operator namespace>:<operator service account>")
        );
    }

    #[test]
    fn only_labelled_secrets_are_credentials() {
        let message = refused(&meta(&[], &[]));
        assert!(
            message.contains("kubectl label secret app-db -n team-a usersync.dev/credential=true"),
            "{message}"
        );
        refused(&meta(&[(CREDENTIAL_LABEL, "false")], &[]));
        refused(&meta(&[(CREDENTIAL_LABEL, "True")], &[]));
        let ok = meta(&[(CREDENTIAL_LABEL, "true")], &[]);
        assert!(credential_permitted(&ok, "corp", "team-a", "f").is_ok());
    }

    #[test]
    fn the_connectors_annotation_restricts_a_credential() {
        let label = [(CREDENTIAL_LABEL, "true")];
        let others = meta(&label, &[(CONNECTORS_ANNOTATION, "hr, payroll")]);
        let message = refused(&others);
        assert!(
            message.contains("--overwrite usersync.dev/connectors=hr,payroll,corp"),
            "{message}"
        );
        refused(&meta(&label, &[(CONNECTORS_ANNOTATION, "")]));
        refused(&meta(&label, &[(CONNECTORS_ANNOTATION, "corporate")]));
        for allowed in ["corp", "hr,corp", " hr , corp "] {
            let m = meta(&label, &[(CONNECTORS_ANNOTATION, allowed)]);
            assert!(
                credential_permitted(&m, "corp", "team-a", "f").is_ok(),
                "{allowed}"
            );
        }
    }

    fn ldap(url: &str, start_tls: bool, bind: bool, allow: bool) -> crate::api::LdapConnection {
        let mut spec =
            serde_json::json!({"url": url, "startTLS": start_tls, "allowPlaintextBind": allow});
        if bind {
            spec["bindDN"] = "cn=svc".into();
            spec["bindPasswordSecretRef"] = serde_json::json!({"name": "s", "key": "k"});
        }
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn read_bounds_default_to_64_mib_and_30_minutes_and_are_checked() {
        let entra = |extra: serde_json::Value| -> crate::api::EntraIdConnection {
            let mut spec = serde_json::json!({
                "tenantID": "3f9a1c52-6d1e-4b7a-9c0d-2e5f8a7b6c41",
                "clientID": "b7d2e4f1-0a3c-4e5b-8f6d-1c2b3a4d5e6f",
                "clientSecretRef": {"name": "s", "key": "k"},
            });
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().cloned().unwrap_or_default());
            serde_json::from_value(spec).unwrap()
        };
        assert_eq!(
            read_bounds(&entra(serde_json::json!({}))).unwrap(),
            (64 * 1024 * 1024, std::time::Duration::from_secs(1800))
        );
        assert_eq!(
            read_bounds(&entra(
                serde_json::json!({"maxResponseMiB": 2, "readBudget": "90s"})
            ))
            .unwrap(),
            (2 * 1024 * 1024, std::time::Duration::from_secs(90))
        );
        for (bad, field) in [
            (serde_json::json!({"maxResponseMiB": 0}), "maxResponseMiB"),
            (serde_json::json!({"readBudget": "0s"}), "readBudget"),
            (serde_json::json!({"readBudget": "soon"}), "readBudget"),
        ] {
            let e = read_bounds(&entra(bad)).unwrap_err().to_string();
            assert!(e.contains(&format!("spec.entraID.{field}")), "{e}");
        }
        let ldap: crate::api::LdapConnection =
            serde_json::from_value(serde_json::json!({"url": "ldaps://dc1"})).unwrap();
        assert_eq!(ldap.max_entries, 2_000_000);
    }

    #[test]
    fn a_simple_bind_in_clear_text_needs_the_opt_in() {
        let e = check_ldap_transport(&ldap("ldap://dc1:389", false, true, false)).unwrap_err();
        assert_eq!(e.reason(), "PlaintextBindRefused");
        assert!(e.to_string().contains("allowPlaintextBind: true"), "{e}");
        assert!(check_ldap_transport(&ldap("LDAP://dc1", false, true, false)).is_err());
        for ok in [
            ldap("ldap://dc1:389", false, true, true),
            ldap("ldap://dc1:389", true, true, false),
            ldap("ldaps://dc1:636", false, true, false),
            // Anonymous: no credential to leak.
            ldap("ldap://dc1:389", false, false, false),
        ] {
            assert!(check_ldap_transport(&ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn entra_credentials_go_only_to_the_documented_hosts() {
        use crate::api::EntraCloud;
        let url = |s: &str| url::Url::parse(s).unwrap();
        let check = |u: &str, host: &str, allowed: bool| {
            check_entra_host(
                "authorityHost",
                Some(&url(u)),
                host,
                EntraCloud::Global,
                allowed,
            )
        };
        let host = "login.microsoftonline.com";
        assert!(check("https://login.microsoftonline.com", host, false).is_ok());
        assert!(check("https://login.microsoftonline.com:443/", host, false).is_ok());
        assert!(check_entra_host("authorityHost", None, host, EntraCloud::Global, false).is_ok());
        for bad in [
            "https://login.example",
            "https://login.microsoftonline.com:8443",
            "https://login.microsoftonline.com.evil.example",
            "http://127.0.0.1:8080",
        ] {
            let e = check(bad, host, false).unwrap_err();
            assert_eq!(e.reason(), "EndpointNotAllowed", "{bad}");
            assert!(e.to_string().contains("allowCustomEndpoints: true"), "{e}");
            assert!(check(bad, host, true).is_ok(), "{bad}");
        }
    }
}
