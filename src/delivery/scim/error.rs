//! What can go wrong talking to a SCIM application, put cause first with what
//! to change. No variant ever holds a credential: the token, the client secret
//! and the Authorization header are never part of an error.

use std::time::Duration;

use serde_json::Value;

/// The longest text of the application's kept in a message.
const MAX_DETAIL: usize = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScimError {
    /// The configuration can never work (a base URL that is not http(s), a CA
    /// bundle that holds no certificate).
    #[error("invalid SCIM target settings: {0}")]
    InvalidConfig(String),

    /// The application (401, 403) or the OAuth token endpoint refused the credentials.
    #[error(
        "the {} refused the credentials (HTTP {status}{}); check the bearer token (spec.auth.bearerTokenSecretRef), or the OAuth client ID, secret and scope (spec.auth.oauth2)",
        if *.token_endpoint { "OAuth token endpoint" } else { "SCIM application" },
        detail_suffix(.detail)
    )]
    Unauthorized {
        status: u16,
        /// True when the token endpoint refused, not the application.
        token_endpoint: bool,
        detail: Option<String>,
    },

    /// A user with the same unique attribute (userName) exists already (409).
    #[error(
        "the SCIM application already holds a user with the same unique attribute (HTTP 409{}); look it up by the matching attribute and adopt it",
        detail_suffix(.detail)
    )]
    Conflict { detail: Option<String> },

    /// The user changed in the application since the version a conditional
    /// write named (412): nothing was written.
    #[error(
        "the user changed in the SCIM application since its version was read (HTTP 412{}); read it again and plan anew",
        detail_suffix(.detail)
    )]
    Stale { detail: Option<String> },

    /// The application refused the request (another 4xx): the request or
    /// the user must change, asking again alike cannot help.
    #[error(
        "the SCIM application refused the request (HTTP {status}{}{})",
        .scim_type.as_deref().map(|t| format!(", scimType {t}")).unwrap_or_default(),
        detail_suffix(.detail)
    )]
    Rejected {
        status: u16,
        scim_type: Option<String>,
        detail: Option<String>,
    },

    /// The application kept failing (5xx) on every attempt.
    #[error(
        "the SCIM application failed (HTTP {status}{}) on every attempt; it is down or overloaded, a later cycle tries again",
        detail_suffix(.detail)
    )]
    Server { status: u16, detail: Option<String> },

    /// The application kept answering 429 on every attempt.
    #[error(
        "the SCIM application kept throttling (HTTP 429) after waiting {:.1}s in all; a later cycle tries again",
        .waited.as_secs_f64()
    )]
    Throttled { waited: Duration },

    /// No answer: the host did not resolve, refused the connection, or timed out.
    #[error("cannot reach the SCIM application: {0}")]
    Transport(String),

    /// The application's certificate was refused; not retried, asking again
    /// meets the same certificate.
    #[error("TLS with {host} failed: {detail}")]
    Tls { host: String, detail: String },

    /// An answer that is not in SCIM's shape.
    #[error("the SCIM application answered outside the SCIM protocol: {0}")]
    Protocol(String),
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl ScimError {
    /// The credentials are wrong (or lack a right): no retry helps until an admin acts.
    pub fn is_credentials(&self) -> bool {
        matches!(self, ScimError::Unauthorized { .. })
    }

    /// The application refuses this client, whatever it asks: a 401, or the token
    /// endpoint's refusal. A 403 on one request refuses that request (an account
    /// the application protects), not the client.
    pub fn refuses_the_client(&self) -> bool {
        match self {
            ScimError::Unauthorized {
                status,
                token_endpoint,
                ..
            } => *token_endpoint || *status != 403,
            _ => false,
        }
    }

    /// The SCIM error type of a refusal (`uniqueness`, `invalidValue`, …).
    pub fn scim_type(&self) -> Option<&str> {
        match self {
            ScimError::Rejected { scim_type, .. } => scim_type.as_deref(),
            ScimError::Conflict { .. } => Some("uniqueness"),
            _ => None,
        }
    }

    /// The application's own words, when it said any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            ScimError::Unauthorized { detail, .. }
            | ScimError::Conflict { detail }
            | ScimError::Stale { detail }
            | ScimError::Rejected { detail, .. }
            | ScimError::Server { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// The error for a final answer of `status` (not 2xx) with `body`.
    pub(crate) fn from_answer(status: u16, body: Option<&Value>) -> Self {
        let (scim_type, detail) = body.map(error_parts).unwrap_or_default();
        match status {
            401 | 403 => ScimError::Unauthorized {
                status,
                token_endpoint: false,
                detail,
            },
            409 => ScimError::Conflict { detail },
            412 => ScimError::Stale { detail },
            429 => ScimError::Throttled {
                waited: Duration::ZERO,
            },
            // 501: the application lacks the method (PATCH, most often), a "no".
            500..=599 if status != 501 => ScimError::Server { status, detail },
            _ => ScimError::Rejected {
                status,
                scim_type,
                detail,
            },
        }
    }
}

/// `(scimType, detail)` of a SCIM error body (RFC 7644 §3.12), each shortened
/// to its first line; bodies of other shapes (an HTML error page) give neither.
pub(crate) fn error_parts(body: &Value) -> (Option<String>, Option<String>) {
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .map(first_line)
            .filter(|s| !s.is_empty())
    };
    (text("scimType"), text("detail"))
}

/// The first line of `text`, at most [`MAX_DETAIL`] bytes.
pub(crate) fn first_line(text: &str) -> String {
    crate::http::first_line(text, MAX_DETAIL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scim_error_body_gives_its_type_and_detail() {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400",
            "scimType": "invalidValue",
            "detail": "Attribute 'emails' is malformed\nat line 3"
        });
        let error = ScimError::from_answer(400, Some(&body));
        assert_eq!(error.scim_type(), Some("invalidValue"));
        assert_eq!(error.detail(), Some("Attribute 'emails' is malformed"));
        assert_eq!(
            error.to_string(),
            "the SCIM application refused the request (HTTP 400, scimType invalidValue: Attribute 'emails' is malformed)"
        );
        assert!(!error.is_credentials());
    }

    #[test]
    fn each_status_becomes_its_kind_of_error() {
        let conflict = json!({"status": "409", "scimType": "uniqueness", "detail": "taken"});
        assert_eq!(
            ScimError::from_answer(409, Some(&conflict)),
            ScimError::Conflict {
                detail: Some("taken".into())
            }
        );
        assert!(matches!(
            ScimError::from_answer(412, None),
            ScimError::Stale { detail: None }
        ));
        assert!(ScimError::from_answer(401, None).is_credentials());
        assert!(ScimError::from_answer(403, None).is_credentials());
        assert!(matches!(
            ScimError::from_answer(502, Some(&json!("<html>"))),
            ScimError::Server {
                status: 502,
                detail: None
            }
        ));
        assert!(matches!(
            ScimError::from_answer(501, None),
            ScimError::Rejected { status: 501, .. }
        ));
        let odd = ScimError::from_answer(418, Some(&json!({"detail": 5})));
        assert_eq!(odd.detail(), None);
        assert!(matches!(odd, ScimError::Rejected { status: 418, .. }));
    }

    #[test]
    fn a_long_detail_is_shortened_on_a_character_boundary() {
        let long = "é".repeat(400);
        let short = first_line(&long);
        assert!(short.len() <= MAX_DETAIL + "…".len());
        assert!(short.ends_with('…'));
    }

    #[test]
    fn messages_name_the_cause_first_and_what_to_change() {
        let unauthorized = ScimError::Unauthorized {
            status: 401,
            token_endpoint: true,
            detail: Some("invalid_client".into()),
        };
        assert_eq!(
            unauthorized.to_string(),
            "the OAuth token endpoint refused the credentials (HTTP 401: invalid_client); check the bearer token (spec.auth.bearerTokenSecretRef), or the OAuth client ID, secret and scope (spec.auth.oauth2)"
        );
    }
}
