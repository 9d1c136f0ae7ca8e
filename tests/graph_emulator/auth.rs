//! The emulator's token endpoint: the OAuth2 client credentials grant as the
//! Microsoft identity platform documents it, with a client secret or a client
//! assertion (a JWT signed with a registered certificate's key, found by its
//! `x5t` or `x5t#S256` thumbprint and verified against that certificate), and
//! errors in the identity platform's shape (`error`, `error_description`
//! starting with the AADSTS code, `error_codes`, trace and correlation IDs).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The app registration the emulator knows.
pub struct App {
    pub tenant_id: String,
    pub client_id: String,
    pub secrets: Vec<String>,
    pub certificates: Vec<RegisteredCertificate>,
    pub token_lifetime: Duration,
    /// Application permissions granted (with consent), put in each token.
    pub roles: BTreeSet<String>,
    /// The scope a token request must ask for.
    pub scope: String,
}

pub struct RegisteredCertificate {
    der: Vec<u8>,
    x5t: String,
    x5t_s256: String,
}

impl RegisteredCertificate {
    pub fn from_pem(pem: &str) -> Self {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("a PEM certificate")
            .to_vec();
        Self {
            x5t: URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, &der)),
            x5t_s256: URL_SAFE_NO_PAD.encode(digest(&SHA256, &der)),
            der,
        }
    }
}

/// A refused token request.
#[derive(Debug)]
pub struct TokenRefusal {
    pub status: u16,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

impl TokenRefusal {
    fn new(status: u16, error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    /// The body, in the identity platform's error shape.
    pub fn body(&self, trace_id: &str) -> Value {
        let timestamp = "2025-01-01 00:00:00Z";
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {trace_id}\r\nTimestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": trace_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

/// Check a token request for `tenant` at the endpoint `audience`, at `now`
/// (seconds since the Unix epoch).
pub fn check(
    app: &App,
    tenant: &str,
    form: &HashMap<String, String>,
    audience: &str,
    now: u64,
) -> Result<(), TokenRefusal> {
    let field = |name: &str| form.get(name).map(String::as_str);
    if !tenant.eq_ignore_ascii_case(&app.tenant_id) {
        return Err(TokenRefusal::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    if field("grant_type") != Some("client_credentials") {
        return Err(TokenRefusal::new(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    let client_id = field("client_id").unwrap_or_default();
    if !client_id.eq_ignore_ascii_case(&app.client_id) {
        return Err(TokenRefusal::new(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        ));
    }
    if field("scope") != Some(app.scope.as_str()) {
        return Err(TokenRefusal::new(
            400,
            "invalid_scope",
            70011,
            "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.",
        ));
    }
    match (field("client_secret"), field("client_assertion")) {
        (Some(secret), None) => {
            if app.secrets.iter().any(|s| s == secret) {
                Ok(())
            } else {
                Err(TokenRefusal::new(
                    401,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                        app.client_id
                    ),
                ))
            }
        }
        (None, Some(assertion)) => {
            if field("client_assertion_type") != Some(JWT_BEARER) {
                return Err(TokenRefusal::new(
                    400,
                    "invalid_request",
                    50027,
                    "The client_assertion_type is not supported.",
                ));
            }
            check_assertion(app, assertion, audience, now)
        }
        _ => Err(TokenRefusal::new(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
    }
}

fn check_assertion(app: &App, jwt: &str, audience: &str, now: u64) -> Result<(), TokenRefusal> {
    let malformed = || {
        TokenRefusal::new(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        )
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(malformed());
    };
    let decode = |part: &str| -> Result<Value, TokenRefusal> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed())?;
        serde_json::from_slice(&bytes).map_err(|_| malformed())
    };
    let header_json = decode(header)?;
    let claims_json = decode(claims)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let algorithm = match text(&header_json, "alg").as_deref() {
        Some("RS256") => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        _ => {
            return Err(TokenRefusal::new(
                401,
                "invalid_client",
                5002738,
                "The client assertion's signing algorithm is not supported.",
            ));
        }
    };
    let x5t = text(&header_json, "x5t");
    let x5t_s256 = text(&header_json, "x5t#S256");
    let Some(certificate) = app.certificates.iter().find(|c| {
        x5t.as_deref() == Some(c.x5t.as_str()) || x5t_s256.as_deref() == Some(c.x5t_s256.as_str())
    }) else {
        return Err(TokenRefusal::new(
            401,
            "invalid_client",
            700027,
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{}']",
                x5t.unwrap_or_default()
            ),
        ));
    };
    let der = CertificateDer::from(certificate.der.as_slice());
    let cert = webpki::EndEntityCert::try_from(&der).expect("a registered certificate parses");
    let signed = format!("{header}.{claims}");
    if cert
        .verify_signature(algorithm, signed.as_bytes(), &signature)
        .is_err()
    {
        return Err(TokenRefusal::new(
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation.",
        ));
    }
    if text(&claims_json, "aud").as_deref() != Some(audience) {
        return Err(TokenRefusal::new(
            401,
            "invalid_client",
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'.",
                text(&claims_json, "aud").unwrap_or_default()
            ),
        ));
    }
    let iss = text(&claims_json, "iss");
    let sub = text(&claims_json, "sub");
    if iss.as_deref() != Some(app.client_id.as_str()) || sub != iss {
        return Err(TokenRefusal::new(
            401,
            "invalid_client",
            700023,
            "Client assertion audience claim does not match Realm issuer.",
        ));
    }
    if text(&claims_json, "jti").is_none_or(|j| j.is_empty()) {
        return Err(malformed());
    }
    let number = |k: &str| claims_json.get(k).and_then(Value::as_u64);
    let (Some(nbf), Some(exp)) = (number("nbf"), number("exp")) else {
        return Err(malformed());
    };
    // Five minutes of clock skew, as the identity platform allows.
    if exp <= now || nbf > now + 300 {
        return Err(TokenRefusal::new(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}
