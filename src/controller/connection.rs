//! The boundary between the resources and the directory sources: a ConnectorHealth
//! and its Secrets become a [`Source`], a DirectoryMapping a [`Scope`], converted once
//! and validated here.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::{ConnectorHealth, DirectoryMapping, LdapFlavor, SearchScope, SecretKeyRef};
use crate::core::parse_duration;
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
            ConnectionError::Secret { reason, .. } => reason,
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

/// Read one key of a Secret. The value never leaves as text except through the
/// returned bytes; errors name the Secret and key only.
async fn secret_value(
    secrets: &Api<Secret>,
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
    let secret = secrets.get_opt(&r.name).await?.ok_or_else(|| ConnectionError::Secret {
        reason: "SecretNotFound",
        message: format!("spec.{field}: Secret {:?} not found in this namespace; create it or fix the reference", r.name),
    })?;
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

/// The source a connector describes, with its Secrets read now (so a changed
/// password is picked up by the next run or probe).
pub async fn source_for(
    secrets: &Api<Secret>,
    connector: &ConnectorHealth,
) -> Result<Source, ConnectionError> {
    let Some(spec) = &connector.spec.ldap else {
        return graph_source_for(secrets, connector).await;
    };
    let flavor = match spec.flavor {
        LdapFlavor::ActiveDirectory => Flavor::ActiveDirectory,
        LdapFlavor::OpenLDAP => Flavor::OpenLdap,
        LdapFlavor::Generic => Flavor::Generic,
    };
    let mut settings = LdapSettings::new(spec.url.clone(), flavor);
    settings.start_tls = spec.start_tls;
    settings.insecure_skip_verify = spec.insecure_skip_verify;
    settings.anchor_attribute = spec.anchor_attribute.clone();
    settings.disabled_filter = spec.disabled_filter.clone();
    settings.page_size = spec.page_size;
    settings.timeout = parse_duration(&spec.timeout)
        .map_err(|e| ConnectionError::Invalid(format!("spec.ldap.timeout: {e}")))?;
    if let (Some(dn), Some(r)) = (&spec.bind_dn, &spec.bind_password_secret_ref) {
        let password = secret_value(secrets, "ldap.bindPasswordSecretRef", r).await?;
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
        settings.ca_pem = Some(secret_value(secrets, "ldap.caSecretRef", r).await?);
    }
    let source = LdapSource::new(&settings)
        .map_err(|e: ldap::LdapError| ConnectionError::Invalid(e.to_string()))?;
    let incremental = ldap::IncrementalSource::new(&settings)
        .map_err(|e: ldap::LdapError| ConnectionError::Invalid(e.to_string()))?;
    Ok(Source::Ldap(source, Box::new(incremental)))
}

/// Text from a Secret key (a password, a client secret, a PEM document).
async fn secret_text(
    secrets: &Api<Secret>,
    field: &str,
    r: &SecretKeyRef,
) -> Result<String, ConnectionError> {
    let bytes = secret_value(secrets, field, r).await?;
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
    secrets: &Api<Secret>,
    connector: &ConnectorHealth,
) -> Result<Source, ConnectionError> {
    use crate::api::EntraCloud;
    use crate::directory::graph::{Cloud, Credential, GraphSettings, GraphSource};
    let Some(spec) = &connector.spec.entra_id else {
        return Err(ConnectionError::Invalid(
            "exactly one of spec.ldap or spec.entraID must be set".into(),
        ));
    };
    let credential = match (&spec.client_secret_ref, &spec.certificate_secret_ref) {
        (Some(r), _) => {
            let secret = secret_text(secrets, "entraID.clientSecretRef", r).await?;
            Credential::Secret(SecretString::new(secret.trim_end_matches(['\r', '\n'])))
        }
        (None, Some(r)) => {
            let key_pem = secret_text(secrets, "entraID.certificateSecretRef", r).await?;
            let cert_ref = SecretKeyRef {
                name: r.name.clone(),
                key: "tls.crt".into(),
            };
            let cert_pem = secret_text(secrets, "entraID.certificateSecretRef", &cert_ref).await?;
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
    let cloud = match spec.cloud {
        EntraCloud::Global => Cloud::Global,
        EntraCloud::USGov => Cloud::UsGov,
        EntraCloud::USGovDoD => Cloud::UsGovDod,
        EntraCloud::China => Cloud::China,
    };
    let mut settings = GraphSettings::new(
        spec.tenant_id.clone(),
        spec.client_id.clone(),
        credential,
        cloud,
    );
    let url = |field: &str, value: &Option<String>| -> Result<Option<url::Url>, ConnectionError> {
        value
            .as_deref()
            .map(|v| {
                url::Url::parse(v)
                    .map_err(|e| ConnectionError::Invalid(format!("spec.entraID.{field}: {e}")))
            })
            .transpose()
    };
    settings.authority_host = url("authorityHost", &spec.authority_host)?;
    settings.graph_host = url("graphHost", &spec.graph_host)?;
    settings.timeout = parse_duration(&spec.timeout)
        .map_err(|e| ConnectionError::Invalid(format!("spec.entraID.timeout: {e}")))?;
    if let Some(r) = &spec.ca_secret_ref {
        settings.ca_pem = Some(secret_value(secrets, "entraID.caSecretRef", r).await?);
    }
    let source =
        GraphSource::new(&settings).map_err(|e| ConnectionError::Invalid(e.to_string()))?;
    Ok(Source::Graph(Box::new(source)))
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
