//! App-only access tokens from the Microsoft identity platform: the OAuth2
//! client credentials grant, with a client secret or a client assertion.
//!
//! One token is cached and shared by every request of the source until shortly
//! before it expires. Requests for a token are serialised, so a burst of
//! concurrent Graph requests asks for one token, not one each. When Graph
//! rejects a token (401), the requester invalidates that token (by its
//! generation, so a token another request already renewed is kept) and asks
//! again once.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use super::assertion::CertificateKey;
use super::error::GraphError;
use super::transport::{Transport, origin};
use crate::secret::SecretString;

/// The client assertion type of RFC 7523 (a JWT proving the client's identity).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Renew at most this long before expiry (less for short-lived tokens).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How the app proves who it is at the token endpoint.
pub(crate) enum ClientAuth {
    Secret(SecretString),
    Certificate(Box<CertificateKey>),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::Secret(_) => f.write_str("Secret(<redacted>)"),
            ClientAuth::Certificate(key) => f.debug_tuple("Certificate").field(key).finish(),
        }
    }
}

/// An access token and the generation it belongs to.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: SecretString,
    pub generation: u64,
}

struct Cached {
    token: Token,
    refresh_at: Instant,
}

/// Gets, caches and renews the source's access token.
#[derive(Debug)]
pub(crate) struct Tokens {
    endpoint: Url,
    client_id: String,
    scope: String,
    auth: ClientAuth,
    cache: Mutex<(Option<Cached>, u64)>,
}

impl fmt::Debug for Cached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("generation", &self.token.generation)
            .field("refresh_at", &self.refresh_at)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    expires_in: ExpiresIn,
}

/// `expires_in` is a number; some endpoints have sent it as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(u64),
    Text(String),
}

impl Tokens {
    pub(crate) fn new(endpoint: Url, client_id: String, scope: String, auth: ClientAuth) -> Self {
        Self {
            endpoint,
            client_id,
            scope,
            auth,
            cache: Mutex::new((None, 0)),
        }
    }

    /// A token valid for a while yet: the cached one, or a new one.
    pub(crate) async fn get(&self, transport: &Transport) -> Result<Token, GraphError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = &cache.0
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let (value, lifetime) = self.request(transport).await?;
        cache.1 += 1;
        let token = Token {
            value,
            generation: cache.1,
        };
        let margin = (lifetime / 4).min(MAX_REFRESH_MARGIN);
        cache.0 = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        tracing::debug!(
            generation = token.generation,
            lifetime_s = lifetime.as_secs(),
            "got a Graph access token"
        );
        Ok(token)
    }

    /// Forget the token of `generation` (Graph refused it), unless it was
    /// already replaced.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut cache = self.cache.lock().await;
        if cache
            .0
            .as_ref()
            .is_some_and(|c| c.token.generation == generation)
        {
            cache.0 = None;
        }
    }

    async fn request(&self, transport: &Transport) -> Result<(SecretString, Duration), GraphError> {
        let credential = match &self.auth {
            ClientAuth::Secret(secret) => ("client_secret", secret.clone()),
            ClientAuth::Certificate(key) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                (
                    "client_assertion",
                    key.assertion(&self.client_id, self.endpoint.as_str(), now)?,
                )
            }
        };
        let build = || {
            let mut form = vec![
                ("client_id", self.client_id.as_str()),
                ("scope", self.scope.as_str()),
                ("grant_type", "client_credentials"),
                (credential.0, credential.1.expose()),
            ];
            if credential.0 == "client_assertion" {
                form.push(("client_assertion_type", JWT_BEARER));
            }
            transport.client().post(self.endpoint.clone()).form(&form)
        };
        let reply = transport
            .send("requesting an access token", &self.endpoint, build)
            .await?;
        let endpoint = origin(&self.endpoint);
        if !reply.status.is_success() {
            let detail = reply.describe();
            return Err(if reply.status.is_client_error() {
                GraphError::AuthFailed {
                    endpoint,
                    detail: format!(
                        "{detail}; check the tenant ID, the client ID and the credential"
                    ),
                }
            } else {
                GraphError::Unreachable { endpoint, detail }
            });
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&reply.body).map_err(|e| GraphError::AuthFailed {
                endpoint: endpoint.clone(),
                detail: format!(
                    "the token response is not understood: {}",
                    e.classify_name()
                ),
            })?;
        if parsed
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(GraphError::AuthFailed {
                endpoint,
                detail: "the token endpoint issued a token that is not a bearer token".into(),
            });
        }
        let seconds = match parsed.expires_in {
            ExpiresIn::Number(n) => n,
            ExpiresIn::Text(t) => t.trim().parse().unwrap_or(0),
        };
        Ok((
            SecretString::new(parsed.access_token),
            Duration::from_secs(seconds),
        ))
    }
}

/// Names a JSON error without quoting the input (a token response holds the
/// token).
trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "fields missing or of the wrong type",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

/// Whether a reply status means "this token is not accepted".
pub(crate) fn is_token_rejected(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED
}
