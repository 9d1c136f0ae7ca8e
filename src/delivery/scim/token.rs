//! OAuth 2.0 client credentials (RFC 6749 §4.4) for an application that takes
//! them: one token, asked for once and kept until shortly before it expires.
//! When the application refuses it (401), the requester drops that token (by
//! its generation, so that a token another request has renewed meanwhile is
//! kept) and asks for a new one.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::error::{ScimError, error_parts, first_line};
use crate::http::chain;
use crate::secret::SecretString;

/// Renew at most this long before expiry (less for short-lived tokens).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The lifetime taken when the token endpoint names none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

pub(crate) struct ClientCredentials {
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    scope: Option<String>,
    cached: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    token: Option<(SecretString, Instant)>,
    generation: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
}

impl ClientCredentials {
    /// The client secret, only to cut it out of answers that echo it.
    pub(crate) fn client_secret(&self) -> &str {
        self.client_secret.expose()
    }

    pub(crate) fn new(
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
        scope: Option<String>,
    ) -> Self {
        Self {
            token_url,
            client_id,
            client_secret,
            scope,
            cached: Mutex::new(Cached::default()),
        }
    }

    /// A token valid for a while yet, and its generation.
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
    ) -> Result<(SecretString, u64), ScimError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = &cached.token
            && Instant::now() < *refresh_at
        {
            return Ok((token.clone(), cached.generation));
        }
        let (token, lifetime) = self.request(http).await?;
        let margin = (lifetime / 4).min(MAX_REFRESH_MARGIN);
        cached.generation += 1;
        cached.token = Some((token.clone(), Instant::now() + lifetime - margin));
        Ok((token, cached.generation))
    }

    /// Forget the token of `generation`, which the application refused.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut cached = self.cached.lock().await;
        if cached.generation == generation {
            cached.token = None;
        }
    }

    async fn request(&self, http: &reqwest::Client) -> Result<(SecretString, Duration), ScimError> {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let response = http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| super::client::send_error(&self.token_url, &e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            ScimError::Transport(format!("the OAuth token endpoint: {}", chain(&e)))
        })?;
        if !(200..300).contains(&status) {
            let parsed: Option<Value> = serde_json::from_slice(&body).ok().map(|mut b| {
                crate::secret::scrub_json(&mut b, &[self.client_secret.expose()]);
                b
            });
            let detail = parsed.as_ref().and_then(oauth_error);
            return Err(match status {
                400 | 401 | 403 => ScimError::Unauthorized {
                    status,
                    token_endpoint: true,
                    detail,
                },
                _ => ScimError::Server {
                    status,
                    detail: detail.or_else(|| parsed.as_ref().and_then(|b| error_parts(b).1)),
                },
            });
        }
        let answer: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            ScimError::Protocol(format!(
                "the OAuth token endpoint's answer holds no access_token: {e}"
            ))
        })?;
        let lifetime = answer
            .expires_in
            .as_ref()
            .and_then(super::model::lenient_u64)
            .map(Duration::from_secs)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_LIFETIME);
        Ok((SecretString::new(answer.access_token), lifetime))
    }
}

/// `error: error_description` of an OAuth error body (RFC 6749 §5.2).
fn oauth_error(body: &Value) -> Option<String> {
    let code = body.get("error")?.as_str()?;
    match body.get("error_description").and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() => Some(format!("{code}: {}", first_line(text))),
        _ => Some(code.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_oauth_error_is_told_by_code_and_first_line() {
        assert_eq!(
            oauth_error(
                &json!({"error": "invalid_client", "error_description": "Bad secret.\nTrace: 1"})
            ),
            Some("invalid_client: Bad secret.".into())
        );
        assert_eq!(
            oauth_error(&json!({"error": "invalid_scope"})),
            Some("invalid_scope".into())
        );
        assert_eq!(oauth_error(&json!({"detail": "x"})), None);
    }
}
