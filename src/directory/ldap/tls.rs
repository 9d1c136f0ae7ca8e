//! The rustls client configuration for LDAPS and StartTLS: the admin's CA
//! bundle, else the system roots; certificate verification off only when the
//! settings say `insecure_skip_verify`.

use std::sync::{Arc, LazyLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::LdapError;
use crate::directory::tls::certificate_problem;

/// The system's trusted roots, loaded once per process. Certificates the
/// platform store holds but rustls cannot use are skipped.
static SYSTEM_ROOTS: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
    let mut store = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "could not load some system CA certificates");
    }
    let (added, ignored) = store.add_parsable_certificates(loaded.certs);
    tracing::debug!(added, ignored, "loaded the system CA certificates");
    Arc::new(store)
});

/// The TLS client configuration for a connector.
pub fn client_config(
    ca_pem: Option<&[u8]>,
    insecure_skip_verify: bool,
) -> Result<Arc<ClientConfig>, LdapError> {
    // The provider is named explicitly: the process-wide default may be unset,
    // or set to something else, by other parts of the program.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::InvalidConfig(format!("TLS setup: {e}")))?;
    let config = if insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate { provider }))
            .with_no_client_auth()
    } else {
        let roots = match ca_pem {
            Some(pem) => Arc::new(roots_from_pem(pem)?),
            None => SYSTEM_ROOTS.clone(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The certificates of a PEM bundle; refuse a bundle with none, or with a
/// certificate rustls cannot use, rather than fail later at every handshake.
fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, LdapError> {
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| {
            LdapError::InvalidConfig(format!("the CA bundle is not valid PEM: {e}"))
        })?;
        store.add(cert).map_err(|e| {
            LdapError::InvalidConfig(format!("the CA bundle holds an unusable certificate: {e}"))
        })?;
    }
    if store.is_empty() {
        return Err(LdapError::InvalidConfig(
            "the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(store)
}

/// Accepts any server certificate, for `insecure_skip_verify`. The handshake
/// signatures are still checked, so the connection is at least encrypted to
/// whoever holds the presented certificate's key.
#[derive(Debug)]
struct AnyServerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS failure with `host` in words: a refused certificate as
/// [`CertificateProblem::describe`] says it (naming `spec.ldap.caSecretRef`),
/// else the rustls error, else what the server did instead of TLS.
pub fn describe_tls_failure(error: &ldap3::LdapError, host: &str) -> String {
    if let Some(problem) = certificate_problem(error) {
        return problem.describe(host, "spec.ldap.caSecretRef");
    }
    let rustls_error = match error {
        ldap3::LdapError::Rustls { source } => Some(source),
        ldap3::LdapError::Io { source } => source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match rustls_error {
        Some(other) => other.to_string(),
        None => match error {
            ldap3::LdapError::LdapResult { result } => format!(
                "the server refused StartTLS: {}",
                super::error::describe_result(result.rc, &result.text)
            ),
            ldap3::LdapError::Io { source } => {
                format!("{source} (is {host} a TLS port, and does the server support TLS?)")
            }
            other => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_without_certificates_is_invalid_config() {
        for pem in [&b""[..], b"not pem at all"] {
            match client_config(Some(pem), false) {
                Err(LdapError::InvalidConfig(m)) => assert!(m.contains("CA bundle"), "{m}"),
                other => panic!("expected InvalidConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn insecure_and_system_root_configs_build() {
        assert!(client_config(None, true).is_ok());
        assert!(client_config(None, false).is_ok());
    }
}
