//! Certificate credentials: the client assertion the app signs with its
//! certificate's private key instead of sending a client secret.
//!
//! The assertion is a JWT signed RS256. Its header names the certificate by
//! thumbprint (`x5t`: base64url SHA-1 of the DER certificate, and `x5t#S256`:
//! the SHA-256 one) so Entra ID knows which registered certificate to verify it
//! with; its claims say who (`iss` = `sub` = client ID), for whom (`aud` = the
//! token endpoint), when (`nbf`, `iat`, `exp`) and once (`jti`).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::GraphError;
use crate::secret::SecretString;

/// How long an assertion is valid: short, as it is used at once.
const ASSERTION_LIFETIME_SECS: u64 = 600;

/// A certificate credential, parsed once and checked: the key is RSA and
/// belongs to the certificate.
pub(crate) struct CertificateKey {
    key: RsaKeyPair,
    x5t: String,
    x5t_s256: String,
}

impl CertificateKey {
    pub(crate) fn from_pem(cert_pem: &str, key_pem: &SecretString) -> Result<Self, GraphError> {
        let invalid = |m: &str| GraphError::InvalidConfig(m.to_owned());
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| {
            invalid("the certificate is not a PEM certificate (-----BEGIN CERTIFICATE-----)")
        })?;
        // The parser's error is not shown: it could quote part of the key.
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes())
            .map_err(|_| invalid("the private key is not a PEM private key"))?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            _ => {
                return Err(invalid(
                    "the private key is not an RSA key; Entra ID certificate credentials are RSA (2048 bits or more)",
                ));
            }
        }
        .map_err(|e| {
            GraphError::InvalidConfig(format!(
                "the private key is not a usable RSA key ({e}); use an RSA key of 2048 to 8192 bits"
            ))
        })?;
        // The certificate's subjectPublicKeyInfo holds the RSAPublicKey DER
        // verbatim, so a key of another certificate shows here, not as an
        // AADSTS error at every token request.
        let public = key.public_key().as_ref();
        if !cert.windows(public.len()).any(|w| w == public) {
            return Err(invalid(
                "the private key does not belong to the certificate (tls.key and tls.crt are of different pairs)",
            ));
        }
        Ok(Self {
            key,
            x5t: URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, &cert)),
            x5t_s256: URL_SAFE_NO_PAD.encode(digest(&SHA256, &cert)),
        })
    }

    /// A client assertion for `client_id` at the token endpoint `audience`,
    /// valid from `now` (seconds since the Unix epoch).
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: u64,
    ) -> Result<SecretString, GraphError> {
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": self.x5t,
            "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": random_uuid()?,
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| GraphError::InvalidConfig("signing the client assertion failed".into()))?;
        Ok(SecretString::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

impl fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateKey")
            .field("x5t", &self.x5t)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A random version 4 UUID, for the assertion's `jti`.
fn random_uuid() -> Result<String, GraphError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| GraphError::InvalidConfig("no system randomness".into()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(uuid::Uuid::from_bytes(b).hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_material_is_invalid_config_without_echoing_the_key() {
        let key = SecretString::new(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----\n",
        );
        for cert in ["", "not a certificate"] {
            let e = CertificateKey::from_pem(cert, &key).unwrap_err();
            assert_eq!(e.reason(), "InvalidConfig");
            assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        }
    }

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(random_uuid().unwrap(), u);
    }
}
