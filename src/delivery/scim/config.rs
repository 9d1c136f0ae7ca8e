//! How to reach one SCIM application: its base URL, its credentials, the CA
//! that signs its certificate, and the bounds of a request.

use std::fmt;
use std::time::Duration;

use url::Url;

/// The credentials the application accepts.
#[derive(Clone)]
pub enum Auth {
    /// A long-lived bearer token, sent as `Authorization: Bearer <token>`.
    Bearer(String),
    /// An OAuth 2.0 client credentials grant (RFC 6749 §4.4): the token is
    /// asked for at `token_url`, kept until shortly before it expires, and
    /// asked for again when the application refuses it.
    ClientCredentials {
        token_url: Url,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::ClientCredentials {
                token_url,
                client_id,
                scope,
                ..
            } => f
                .debug_struct("ClientCredentials")
                .field("token_url", &token_url.as_str())
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("scope", scope)
                .finish(),
        }
    }
}

/// Everything a [`super::ScimClient`] is made from.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The URL the SCIM endpoints are under: `{base_url}/Users`,
    /// `{base_url}/ServiceProviderConfig`.
    pub base_url: Url,
    pub auth: Auth,
    /// PEM certificates of the CAs to trust besides the system's (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// The longest one request (connect, send, answer) may take.
    pub timeout: Duration,
    /// How many times a request is sent when the application answers 429 or
    /// 5xx, or cannot be reached: 1 sends it once.
    pub max_attempts: u32,
    /// The longest wait between two attempts: a longer `Retry-After` is cut to it.
    pub max_retry_wait: Duration,
}

impl ClientConfig {
    /// A configuration with the usual bounds: a 30 s timeout, 4 attempts, and
    /// at most 30 s between two of them.
    pub fn new(base_url: Url, auth: Auth) -> Self {
        Self {
            base_url,
            auth,
            ca_pem: None,
            timeout: Duration::from_secs(30),
            max_attempts: 4,
            max_retry_wait: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_debug_output() {
        let bearer = ClientConfig::new(
            Url::parse("https://app.example/scim/v2").unwrap(),
            Auth::Bearer("tok-3f9a".into()),
        );
        let oauth = ClientConfig::new(
            Url::parse("https://app.example/scim/v2").unwrap(),
            Auth::ClientCredentials {
                token_url: Url::parse("https://login.example/token").unwrap(),
                client_id: "usersync".into(),
                client_secret: "s3cr3t-77".into(),
                scope: Some("scim".into()),
            },
        );
        let shown = format!("{bearer:?} {oauth:?}");
        assert!(
            !shown.contains("tok-3f9a") && !shown.contains("s3cr3t-77"),
            "{shown}"
        );
        assert!(
            shown.contains("usersync") && shown.contains("redacted"),
            "{shown}"
        );
    }
}
