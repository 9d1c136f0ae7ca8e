//! App-only access tokens from the Microsoft identity platform: the OAuth2
//! client credentials grant, with a client secret or a client assertion.
//!
//! One token is cached and shared by every request of the source until shortly
//! before it expires. A [`TokenCache`] keeps that token beyond the source, so
//! the sources a controller makes anew for every run and probe of one
//! connector share it: a tenant sees one token request an hour per connector,
//! not one per run (each lands in its sign-in logs).
//!
//! Requests for a token are serialised, so a burst of concurrent Graph
//! requests asks for one token, not one each. When Graph rejects a token
//! (401), the requester invalidates that token (by its generation, so a token
//! another request already renewed is kept) and asks again once. A 403
//! invalidates it too, without asking again: the permission the admin grants
//! in answer shows only in a new token.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
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

/// The cached token of one app, and the generation of the last one issued.
#[derive(Debug, Default)]
pub(crate) struct TokenSlot(Mutex<(Option<Cached>, u64)>);

/// What a token depends on, hashed: the token endpoint (authority host and
/// tenant), the client ID, the scope and the credential. Two sources with the
/// same fingerprint may use each other's token; a rotated secret or another
/// tenant makes another fingerprint. Only the first bytes are ever shown.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenFingerprint([u8; 32]);

impl TokenFingerprint {
    pub(crate) fn of(endpoint: &Url, client_id: &str, scope: &str, credential: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        for part in [
            endpoint.as_str().as_bytes(),
            client_id.as_bytes(),
            scope.as_bytes(),
            credential,
        ] {
            // Length-prefixed, so no two different inputs run together alike.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Self(hasher.finalize().into())
    }
}

impl fmt::Debug for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenFingerprint(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Access tokens kept across sources, one per owner (a connector): a source
/// made for the same owner and fingerprint reuses the token, one made with
/// another fingerprint (a rotated secret, a changed tenant) replaces it. So
/// the cache holds one token per connector the process has seen; a connector
/// deleted and made again with the same settings may reuse its token.
#[derive(Debug, Default)]
pub struct TokenCache {
    slots: std::sync::Mutex<HashMap<String, (TokenFingerprint, Arc<TokenSlot>)>>,
}

impl TokenCache {
    /// The slot of `owner` for `fingerprint`: the kept one, or a new, empty one
    /// that replaces a slot of another fingerprint.
    pub(crate) fn slot(&self, owner: &str, fingerprint: TokenFingerprint) -> Arc<TokenSlot> {
        let mut slots = self.slots.lock().expect("token cache lock poisoned");
        match slots.get(owner) {
            Some((kept, slot)) if *kept == fingerprint => slot.clone(),
            _ => {
                let slot = Arc::new(TokenSlot::default());
                slots.insert(owner.to_owned(), (fingerprint, slot.clone()));
                slot
            }
        }
    }
}

/// Gets, caches and renews the source's access token.
#[derive(Debug)]
pub(crate) struct Tokens {
    endpoint: Url,
    client_id: String,
    scope: String,
    auth: ClientAuth,
    cache: Arc<TokenSlot>,
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
    /// Tokens kept in `cache` (a private slot, or one of a [`TokenCache`]).
    pub(crate) fn new(
        endpoint: Url,
        client_id: String,
        scope: String,
        auth: ClientAuth,
        cache: Arc<TokenSlot>,
    ) -> Self {
        Self {
            endpoint,
            client_id,
            scope,
            auth,
            cache,
        }
    }

    /// A token valid for a while yet: the cached one, or a new one.
    pub(crate) async fn get(&self, transport: &Transport) -> Result<Token, GraphError> {
        let mut cache = self.cache.0.lock().await;
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
        let mut cache = self.cache.0.lock().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_changes_with_each_input_and_shows_none_of_them() {
        let endpoint = Url::parse("https://login.example/tenant-a/oauth2/v2.0/token").unwrap();
        let other = Url::parse("https://login.example/tenant-b/oauth2/v2.0/token").unwrap();
        let base = TokenFingerprint::of(&endpoint, "app", "scope", b"secret-one");
        assert_eq!(
            base,
            TokenFingerprint::of(&endpoint, "app", "scope", b"secret-one")
        );
        for changed in [
            TokenFingerprint::of(&other, "app", "scope", b"secret-one"),
            TokenFingerprint::of(&endpoint, "app2", "scope", b"secret-one"),
            TokenFingerprint::of(&endpoint, "app", "scope2", b"secret-one"),
            TokenFingerprint::of(&endpoint, "app", "scope", b"secret-two"),
            // Parts do not run together.
            TokenFingerprint::of(&endpoint, "ap", "pscope", b"secret-one"),
        ] {
            assert_ne!(base, changed);
        }
        let shown = format!("{base:?}");
        assert_eq!(shown.len(), "TokenFingerprint(12345678…)".len(), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn the_cache_keeps_one_slot_per_owner_and_fingerprint() {
        let endpoint = Url::parse("https://login.example/t/oauth2/v2.0/token").unwrap();
        let one = TokenFingerprint::of(&endpoint, "app", "scope", b"one");
        let two = TokenFingerprint::of(&endpoint, "app", "scope", b"two");
        let cache = TokenCache::default();
        let first = cache.slot("ns/corp", one);
        assert!(Arc::ptr_eq(&first, &cache.slot("ns/corp", one)));
        assert!(!Arc::ptr_eq(&first, &cache.slot("ns/other", one)));
        let rotated = cache.slot("ns/corp", two);
        assert!(!Arc::ptr_eq(&first, &rotated));
        // The old credential's token is not kept beside the new one.
        assert!(!Arc::ptr_eq(&first, &cache.slot("ns/corp", one)));
        assert_eq!(cache.slots.lock().unwrap().len(), 2);
    }
}
