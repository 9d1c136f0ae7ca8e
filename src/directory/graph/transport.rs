//! HTTP for the token endpoint and Graph: one client per source, with its TLS
//! roots and timeout, and the retry loop that every request goes through.
//!
//! A request is retried when the failure is passing: 429 and 503 (throttling,
//! as Graph does it), 502/504, a timeout or a dropped connection. The wait is
//! the server's `Retry-After` (seconds, fractional as in Graph's documented
//! `Retry-After: 2.128`, or an HTTP-date), never less, plus a little jitter;
//! without one, an exponential backoff with jitter. A `Retry-After` holds back
//! every request of the source, not only the one that was told: Graph throttles
//! per app and tenant, so the others would only be throttled in turn.
//!
//! Throttling is normal for a large tenant: a throttled request (429, or 503
//! with `Retry-After`) is bounded by its time budget alone, however many times
//! it is told to wait. Other passing failures also count against the attempts. When either runs out the request
//! fails, and with it the read, which the caller treats as incomplete. Any
//! other status is handed back to the caller to classify. The source counts
//! throttled answers and the time spent waiting ([`Throttling`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

use super::error::GraphError;
use super::settings::{GraphSettings, RetryPolicy};
use crate::directory::tls::{CertificateProblem, certificate_problem};
use crate::http::chain;
use crate::http::{first_line, jitter, retry_after};

/// The longest server error text kept in a message.
const MAX_DETAIL: usize = 400;

/// The most jitter added to a server's `Retry-After`, and its share of it.
const MAX_JITTER: Duration = Duration::from_millis(500);
const JITTER_SHARE: f64 = 0.1;

/// An HTTP client with the source's TLS roots, timeout and retries.
pub(crate) struct Transport {
    client: reqwest::Client,
    retry: RetryPolicy,
    timeout: Duration,
    /// The largest body read from one answer.
    max_response_bytes: u64,
    /// No request is sent before this instant: the latest `Retry-After`.
    hold: Mutex<Option<Instant>>,
    throttled: AtomicU64,
    waited_ms: AtomicU64,
}

/// How much a source was throttled: answers 429 or 503, and the time its
/// requests spent waiting before retrying them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttling {
    pub throttled_requests: u64,
    pub waited: Duration,
}

/// An answer that is not retried: a success, or a status for the caller to
/// classify (400, 401, 403, 404, 410, …).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON, for a successful reply.
    pub(crate) fn json(&self, what: &str) -> Result<Value, GraphError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            GraphError::read_failed(what, format!("the answer is not the expected JSON: {e}"))
        })
    }

    /// The status with the service's error code and message, e.g.
    /// `HTTP 403 Forbidden (Authorization_RequestDenied: Insufficient privileges…)`.
    pub(crate) fn describe(&self) -> String {
        describe_status(self.status, &self.body)
    }

    /// The error code of a Graph (`error.code`) or OAuth2 (`error`) error body.
    pub(crate) fn error_code(&self) -> Option<String> {
        error_parts(&self.body).map(|(code, _)| code)
    }
}

/// Why a body could not be read whole.
enum BodyError {
    /// It is, or grew, larger than the cap.
    TooLarge,
    Transport(reqwest::Error),
}

/// Why one attempt failed in a way worth retrying.
enum Passing {
    Status { status: StatusCode, detail: String },
    Timeout,
    Connection(String),
}

impl Transport {
    pub(crate) fn new(settings: &GraphSettings) -> Result<Self, GraphError> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(
                crate::http::tls_config(settings.ca_pem.as_deref())
                    .map_err(GraphError::InvalidConfig)?,
            )
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect would carry the bearer token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("usersync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::InvalidConfig(format!("HTTP client: {}", chain(&e))))?;
        Ok(Self {
            client,
            retry: settings.retry,
            timeout: settings.timeout,
            max_response_bytes: settings.max_response_bytes,
            hold: Mutex::new(None),
            throttled: AtomicU64::new(0),
            waited_ms: AtomicU64::new(0),
        })
    }

    /// Throttling seen so far.
    pub(crate) fn throttling(&self) -> Throttling {
        Throttling {
            throttled_requests: self.throttled.load(Ordering::Relaxed),
            waited: Duration::from_millis(self.waited_ms.load(Ordering::Relaxed)),
        }
    }

    /// Wait while the source is held back by a `Retry-After`.
    async fn wait_for_hold(&self) {
        loop {
            let until = *self.hold.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(until) if until > Instant::now() => {
                    let wait = until - Instant::now();
                    self.add_waited(wait);
                    tokio::time::sleep(wait).await;
                }
                _ => return,
            }
        }
    }

    /// Hold every request back until `until` (the later of two holds wins).
    fn hold_until(&self, until: Instant) {
        let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        if hold.is_none_or(|h| h < until) {
            *hold = Some(until);
        }
    }

    fn add_waited(&self, wait: Duration) {
        self.waited_ms
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Send the request `build` makes, retrying passing failures. `what` and
    /// `endpoint` name the request in errors.
    pub(crate) async fn send(
        &self,
        what: &str,
        endpoint: &Url,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, GraphError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        // Attempts that were not throttling: only those count against the limit.
        let mut failed = 0u32;
        loop {
            attempt += 1;
            self.wait_for_hold().await;
            let (failure, retry_after) = match build().send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers(), SystemTime::now());
                    match self.read_body(response).await {
                        Ok(body) if !is_passing(status) => {
                            return Ok(Reply { status, body });
                        }
                        Err(BodyError::TooLarge) => {
                            return Err(GraphError::ResponseTooLarge {
                                what: what.to_owned(),
                                endpoint: origin(endpoint),
                                limit: self.max_response_bytes,
                            });
                        }
                        Ok(body) => (
                            Passing::Status {
                                status,
                                detail: describe_status(status, &body),
                            },
                            retry_after,
                        ),
                        Err(BodyError::Transport(e)) if e.is_timeout() => (Passing::Timeout, None),
                        Err(BodyError::Transport(e)) => (Passing::Connection(chain(&e)), None),
                    }
                }
                Err(e) if e.is_timeout() => (Passing::Timeout, None),
                Err(e) if e.is_builder() => {
                    return Err(GraphError::InvalidConfig(format!(
                        "{what}: cannot build the request: {}",
                        chain(&e)
                    )));
                }
                Err(e) => match certificate_problem(&e) {
                    // Asking again meets the same certificate.
                    Some(problem) => return Err(tls_failure(endpoint, &problem)),
                    None => (Passing::Connection(chain(&e)), None),
                },
            };
            let throttled = failure.is_throttling(retry_after.is_some());
            if throttled {
                self.throttled.fetch_add(1, Ordering::Relaxed);
            } else {
                failed += 1;
            }
            let wait = match retry_after {
                // Never earlier than asked.
                Some(asked) => asked + jitter(asked.mul_f64(JITTER_SHARE).min(MAX_JITTER)),
                None => self.backoff(attempt),
            };
            let out_of_budget = started.elapsed() + wait > self.retry.budget;
            if failed >= self.retry.max_attempts || out_of_budget {
                return Err(self.give_up(what, endpoint, failure, attempt, retry_after));
            }
            tracing::debug!(
                what,
                attempt,
                wait_ms = wait.as_millis() as u64,
                failure = failure.summary(),
                "retrying a Graph request"
            );
            if retry_after.is_some() {
                // The whole source waits: the others would be throttled too.
                self.hold_until(Instant::now() + wait);
                self.wait_for_hold().await;
            } else {
                self.add_waited(wait);
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// The body of `response`, chunk by chunk as it arrives, never more than
    /// the cap: a `Content-Length` past it is refused before anything is
    /// read, and a body without one (chunked, or lying) is dropped as soon as
    /// it grows past it. So an endless or huge answer costs the cap at most.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
        let cap = self.max_response_bytes;
        if response.content_length().is_some_and(|length| length > cap) {
            return Err(BodyError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
            if (body.len() + chunk.len()) as u64 > cap {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The backoff before attempt `attempt + 1`: doubling from the initial
    /// backoff up to the maximum, half of it fixed and half random ("equal
    /// jitter"), so that many clients throttled together do not return together.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .retry
            .initial_backoff
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
        let ceiling = doubled.min(self.retry.max_backoff);
        let half = ceiling / 2;
        half + jitter(half)
    }

    fn give_up(
        &self,
        what: &str,
        endpoint: &Url,
        failure: Passing,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> GraphError {
        let tries = if attempts == 1 {
            "1 attempt".to_owned()
        } else {
            format!("{attempts} attempts")
        };
        let what = what.to_owned();
        match failure {
            Passing::Status { status, detail } if status == StatusCode::TOO_MANY_REQUESTS => {
                let detail = match retry_after {
                    Some(wait) if wait > self.retry.budget => format!(
                        "{detail}; the service asked to wait {:.3}s, beyond the retry budget of {}s",
                        wait.as_secs_f64(),
                        self.retry.budget.as_secs()
                    ),
                    _ => format!("{detail} after {tries}"),
                };
                GraphError::Throttled { what, detail }
            }
            Passing::Status { detail, .. } => GraphError::Unreachable {
                endpoint: origin(endpoint),
                detail: format!("{what}: {detail} after {tries}"),
            },
            Passing::Timeout => GraphError::Timeout {
                what,
                detail: format!(
                    "no answer from {} within {:?}, {tries}",
                    origin(endpoint),
                    self.timeout
                ),
            },
            Passing::Connection(detail) => GraphError::Unreachable {
                endpoint: origin(endpoint),
                detail: format!("{detail} ({tries})"),
            },
        }
    }
}

impl Passing {
    /// 429, or a 503 that says when to come back (Graph throttles with both);
    /// a 503 without `Retry-After` is an outage, retried a bounded number of times.
    fn is_throttling(&self, has_retry_after: bool) -> bool {
        matches!(
            self,
            Passing::Status { status, .. }
                if *status == StatusCode::TOO_MANY_REQUESTS
                    || (*status == StatusCode::SERVICE_UNAVAILABLE && has_retry_after)
        )
    }

    fn summary(&self) -> String {
        match self {
            Passing::Status { detail, .. } => detail.clone(),
            Passing::Timeout => "timeout".into(),
            Passing::Connection(detail) => detail.clone(),
        }
    }
}

/// Statuses that say "not now" rather than "no".
fn is_passing(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// `scheme://host:port` of a URL: enough to name an endpoint in a message.
/// The error for a refused certificate of `endpoint`'s host.
fn tls_failure(endpoint: &Url, problem: &CertificateProblem) -> GraphError {
    let host = match (endpoint.host_str(), endpoint.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => origin(endpoint),
    };
    tracing::debug!(host, ?problem, "the server's certificate was refused");
    GraphError::Tls {
        endpoint: origin(endpoint),
        detail: problem.describe(&host, "spec.entraID.caSecretRef"),
    }
}

pub(crate) fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn describe_status(status: StatusCode, body: &[u8]) -> String {
    let mut text = format!("HTTP {status}");
    if let Some((code, message)) = error_parts(body) {
        // AADSTS descriptions carry trace and correlation IDs on further lines.
        let message = first_line(&message, MAX_DETAIL);
        if message.is_empty() {
            text += &format!(" ({code})");
        } else {
            text += &format!(" ({code}: {message})");
        }
    }
    text
}

/// `(code, message)` of a Graph error (`{"error": {"code", "message"}}`) or an
/// OAuth2 error (`{"error", "error_description"}`).
fn error_parts(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    match error {
        Value::String(code) => Some((code.clone(), text(value.get("error_description")))),
        Value::Object(_) => Some((text(error.get("code")), text(error.get("message")))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_and_oauth_errors_are_described_by_code_and_first_line() {
        let graph = br#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation."}}"#;
        assert_eq!(
            describe_status(StatusCode::FORBIDDEN, graph),
            "HTTP 403 Forbidden (Authorization_RequestDenied: Insufficient privileges to complete the operation.)"
        );
        let oauth = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x\r\nCorrelation ID: y"}"#;
        assert_eq!(
            describe_status(StatusCode::UNAUTHORIZED, oauth),
            "HTTP 401 Unauthorized (invalid_client: AADSTS7000215: Invalid client secret provided.)"
        );
        assert_eq!(
            describe_status(StatusCode::BAD_GATEWAY, b"<html>"),
            "HTTP 502 Bad Gateway"
        );
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let settings = super::super::settings::GraphSettings::new(
            "t",
            "c",
            super::super::settings::Credential::Secret(crate::secret::SecretString::new("x")),
            super::super::cloud::Cloud::Global,
        );
        let t = Transport::new(&settings).unwrap();
        for attempt in 1..20 {
            let d = t.backoff(attempt);
            let ceiling = (Duration::from_secs(1) * (1 << (attempt - 1).min(16)))
                .min(Duration::from_secs(30));
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
    }
}
