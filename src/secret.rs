//! Secret values (passwords, client secrets, tokens) that must never be printed.

use std::fmt;

/// A secret string. `Debug` and `Display` print a placeholder, so a secret that ends
/// up in a log line, an Event, a status field or an error message says nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it (a bind, a token request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `value` with every string in it that holds one of `secrets` cut at it: an
/// application or token endpoint that echoes a credential back in its answer
/// (a detail that quotes the request) has the credential replaced by
/// `<redacted>` before the answer goes anywhere.
pub fn scrub_json(value: &mut serde_json::Value, secrets: &[&str]) {
    match value {
        serde_json::Value::String(text) => {
            for secret in secrets.iter().filter(|s| s.len() >= 4) {
                if text.contains(secret) {
                    *text = text.replace(secret, "<redacted>");
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| scrub_json(v, secrets)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| scrub_json(v, secrets)),
        _ => {}
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_secret_is_cut_out_of_an_answer() {
        let mut answer = serde_json::json!({
            "detail": "token s3cr3t-token is not valid for tenant x",
            "nested": [{"why": "s3cr3t-token"}],
            "status": 401,
        });
        scrub_json(&mut answer, &["s3cr3t-token", ""]);
        assert_eq!(
            answer,
            serde_json::json!({
                "detail": "token <redacted> is not valid for tenant x",
                "nested": [{"why": "<redacted>"}],
                "status": 401,
            })
        );
    }

    #[test]
    fn secrets_never_print_their_value() {
        let s = SecretString::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
