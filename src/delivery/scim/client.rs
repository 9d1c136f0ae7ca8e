//! The SCIM client: the one place that speaks HTTP to an application.
//!
//! Every request goes through one loop. 429, 500, 502, 503, 504, a timeout or
//! a dropped connection are sent again, up to `max_attempts` in all, after the
//! application's `Retry-After` (whole or fractional seconds, or an HTTP-date)
//! or else an exponential back-off with jitter, each wait at most
//! `max_retry_wait` and reported to the [`Observer`]. A POST is sent again too:
//! when the first one did create the user, the second meets a 409, which the
//! caller answers by looking the user up and adopting it. A refused
//! certificate is not retried: asking again meets the same certificate.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderValue, IF_MATCH};
use serde_json::Value;
use url::Url;

use super::config::{Auth, ClientConfig};
use super::error::ScimError;
use super::model::{
    Capabilities, Exchange, ListPage, MatchAttribute, PatchOp, RemoteUser,
    enterprise_in_resource_types, enterprise_in_schemas, eq_filter, patch_body, redact_passwords,
};
use super::token::ClientCredentials;
use crate::directory::tls::certificate_problem;
use crate::http::{chain, jitter, retry_after};
use crate::secret::SecretString;

/// The media type of SCIM messages (RFC 7644 §3.1).
const SCIM_JSON: &str = "application/scim+json";
/// The largest answer read: a page of users is far smaller.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// The first back-off without a `Retry-After`; it doubles with each attempt.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// The setting that names a CA to trust, for a refused certificate's message.
const CA_FIELD: &str = "spec.caSecretRef";

/// What the client tells about its requests: for metrics, and for an account
/// of each request and answer (dry run, `usersync provision`).
pub trait Observer: Send + Sync {
    /// One answer (`status`), or a request that got none (`None`).
    fn response(&self, method: &str, status: Option<u16>, elapsed: Duration);
    /// A wait before sending a request again.
    fn throttled(&self, wait: Duration);
    /// A request and its answer, without credentials.
    fn exchange(&self, _e: &Exchange) {}
}

enum Credentials {
    Bearer(SecretString),
    ClientCredentials(Box<ClientCredentials>),
}

/// A client of one SCIM application.
pub struct ScimClient {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
    max_attempts: u32,
    max_retry_wait: Duration,
    observer: Option<Arc<dyn Observer>>,
}

/// A final answer: 2xx, or a status for the caller to classify.
struct Answer {
    status: u16,
    body: Option<Value>,
    etag: Option<String>,
}

/// Why an attempt failed in a way worth another.
enum Passing {
    Status { status: u16, body: Option<Value> },
    Transport(String),
}

impl ScimClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ScimError> {
        let mut base = cfg.base_url;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ScimError::InvalidConfig(format!(
                "the base URL {base} is not an http(s) URL; set spec.endpoint to where the application serves /Users, e.g. https://app.example/scim/v2"
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(ScimError::InvalidConfig(
                "the base URL holds credentials (user:password@); remove them from spec.endpoint and set spec.auth instead".into(),
            ));
        }
        base.set_query(None);
        base.set_fragment(None);
        if let Ok(mut segments) = base.path_segments_mut() {
            segments.pop_if_empty();
        }
        if cfg.max_attempts == 0 {
            return Err(ScimError::InvalidConfig(
                "max_attempts is 0; it must be 1 or more (1 sends each request once)".into(),
            ));
        }
        let tls = crate::http::tls_config(cfg.ca_pem.as_deref()).map_err(|e| {
            ScimError::InvalidConfig(format!(
                "{e}; set {CA_FIELD} to a Secret key holding PEM certificates"
            ))
        })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            // A redirect would carry the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("usersync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ScimError::InvalidConfig(format!("HTTP client: {}", chain(&e))))?;
        let credentials = match cfg.auth {
            Auth::Bearer(token) => Credentials::Bearer(SecretString::new(token)),
            Auth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => Credentials::ClientCredentials(Box::new(ClientCredentials::new(
                token_url,
                client_id,
                SecretString::new(client_secret),
                scope,
            ))),
        };
        Ok(Self {
            http,
            base,
            credentials,
            max_attempts: cfg.max_attempts,
            max_retry_wait: cfg.max_retry_wait,
            observer: None,
        })
    }

    /// The URL the endpoints are under, as normalised (no trailing slash).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn with_observer(mut self, o: Arc<dyn Observer>) -> Self {
        self.observer = Some(o);
        self
    }

    /// What the application supports: `/ServiceProviderConfig`, then the
    /// enterprise extension from `/ResourceTypes`, or `/Schemas` when that
    /// names no User type. Either may be missing (404 and the like).
    pub async fn capabilities(&self) -> Result<Capabilities, ScimError> {
        let answer = self
            .call(Method::GET, &["ServiceProviderConfig"], &[], None)
            .await?;
        if answer.status == 404 {
            return Err(ScimError::Protocol(format!(
                "{} has no /ServiceProviderConfig (HTTP 404); check that spec.endpoint is where the application serves /Users",
                self.base
            )));
        }
        let body = success_body(answer, "/ServiceProviderConfig")?;
        let mut caps = Capabilities::from_service_provider_config(&body)?;
        let from_types = match self.optional(&["ResourceTypes"]).await? {
            Some(body) => enterprise_in_resource_types(&body),
            None => None,
        };
        caps.enterprise_user = match from_types {
            Some(found) => found,
            None => self
                .optional(&["Schemas"])
                .await?
                .is_some_and(|body| enterprise_in_schemas(&body)),
        };
        Ok(caps)
    }

    /// A discovery endpoint's body, or `None` when the application has none.
    async fn optional(&self, path: &[&str]) -> Result<Option<Value>, ScimError> {
        let answer = self.call(Method::GET, path, &[], None).await?;
        match answer.status {
            200..=299 => Ok(answer.body),
            401 | 403 => Err(ScimError::from_answer(answer.status, answer.body.as_ref())),
            400..=499 | 501 => Ok(None),
            status => Err(ScimError::from_answer(status, answer.body.as_ref())),
        }
    }

    /// A connection test as Entra makes it: a filter for a user that cannot
    /// exist (a random GUID) must answer 200 with an empty list.
    pub async fn probe(&self) -> Result<(), ScimError> {
        let guid = random_guid();
        let found = self.find(MatchAttribute::UserName, &guid).await?;
        if found.is_empty() {
            Ok(())
        } else {
            Err(ScimError::Protocol(format!(
                "a filter for the userName {guid}, which no user has, answered {} user(s): the application does not apply filters, so users cannot be matched before they are created",
                found.len()
            )))
        }
    }

    /// The users whose `attr` equals `value`.
    pub async fn find(
        &self,
        attr: MatchAttribute,
        value: &str,
    ) -> Result<Vec<RemoteUser>, ScimError> {
        let filter = eq_filter(attr, value);
        let answer = self
            .call(Method::GET, &["Users"], &[("filter", &filter)], None)
            .await?;
        let body = success_body(self.users_endpoint(answer)?, "a filtered list of users")?;
        Ok(ListPage::from_value(&body, 1)?.users)
    }

    /// A 404 for /Users itself: the base URL is not where the application is.
    fn users_endpoint(&self, answer: Answer) -> Result<Answer, ScimError> {
        if answer.status == 404 {
            return Err(ScimError::Protocol(format!(
                "{} has no /Users (HTTP 404); check that spec.endpoint is where the application serves /Users",
                self.base
            )));
        }
        Ok(answer)
    }

    /// The user `id`; `None` when the application has none (404).
    pub async fn get(&self, id: &str) -> Result<Option<RemoteUser>, ScimError> {
        let answer = self.call(Method::GET, &["Users", id], &[], None).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        let etag = answer.etag.clone();
        let body = success_body(answer, "a user")?;
        user_from(body, etag.as_deref(), "a user").map(Some)
    }

    /// Create `user`; a user holding its unique attribute already is
    /// [`ScimError::Conflict`].
    pub async fn create(&self, user: &Value) -> Result<RemoteUser, ScimError> {
        let answer = self.call(Method::POST, &["Users"], &[], Some(user)).await?;
        let etag = answer.etag.clone();
        let body = success_body(answer, "a created user")?;
        user_from(body, etag.as_deref(), "a created user")
    }

    /// Apply `ops` to the user `id`: the user as changed when the application
    /// answers with it (200), `None` when it answers 204.
    pub async fn patch(&self, id: &str, ops: &[PatchOp]) -> Result<Option<RemoteUser>, ScimError> {
        self.patch_with(id, ops, None).await
    }

    /// [`ScimClient::patch`] only while the user is at `version` (its ETag):
    /// one changed meanwhile is [`ScimError::Stale`], and stays as it is.
    pub async fn patch_if_match(
        &self,
        id: &str,
        ops: &[PatchOp],
        version: &str,
    ) -> Result<Option<RemoteUser>, ScimError> {
        self.patch_with(id, ops, Some(version)).await
    }

    async fn patch_with(
        &self,
        id: &str,
        ops: &[PatchOp],
        if_match: Option<&str>,
    ) -> Result<Option<RemoteUser>, ScimError> {
        let body = patch_body(ops);
        let answer = self
            .call_with(Method::PATCH, &["Users", id], &[], Some(&body), if_match)
            .await?;
        let etag = answer.etag.clone();
        if answer.status == 204 || (is_success(answer.status) && answer.body.is_none()) {
            return Ok(None);
        }
        let body = success_body(answer, "a patched user")?;
        user_from(body, etag.as_deref(), "a patched user").map(Some)
    }

    /// Replace the user `id` whole (PUT), for applications without PATCH.
    pub async fn replace(&self, id: &str, user: &Value) -> Result<RemoteUser, ScimError> {
        self.replace_with(id, user, None).await
    }

    /// [`ScimClient::replace`] only while the user is at `version` (its ETag).
    pub async fn replace_if_match(
        &self,
        id: &str,
        user: &Value,
        version: &str,
    ) -> Result<RemoteUser, ScimError> {
        self.replace_with(id, user, Some(version)).await
    }

    async fn replace_with(
        &self,
        id: &str,
        user: &Value,
        if_match: Option<&str>,
    ) -> Result<RemoteUser, ScimError> {
        let answer = self
            .call_with(Method::PUT, &["Users", id], &[], Some(user), if_match)
            .await?;
        if is_success(answer.status) && answer.body.is_none() {
            // Some applications answer 204; the user as it is now is one GET away.
            return self.get(id).await?.ok_or_else(|| {
                ScimError::Protocol(format!("the user {id} was replaced, then was not found"))
            });
        }
        let etag = answer.etag.clone();
        let body = success_body(answer, "a replaced user")?;
        user_from(body, etag.as_deref(), "a replaced user")
    }

    /// Delete the user `id`; one that is gone already (404) counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), ScimError> {
        let answer = self.call(Method::DELETE, &["Users", id], &[], None).await?;
        match answer.status {
            404 => Ok(()),
            status if is_success(status) => Ok(()),
            status => Err(ScimError::from_answer(status, answer.body.as_ref())),
        }
    }

    /// One page of all users, from `start_index` (1-based), at most `count`.
    pub async fn list(&self, start_index: u64, count: u32) -> Result<ListPage, ScimError> {
        let start = start_index.max(1).to_string();
        let count = count.to_string();
        let answer = self
            .call(
                Method::GET,
                &["Users"],
                &[("startIndex", &start), ("count", &count)],
                None,
            )
            .await?;
        let body = success_body(self.users_endpoint(answer)?, "a page of users")?;
        ListPage::from_value(&body, start_index.max(1))
    }

    /// Send one request, again while the failure is passing; the final answer,
    /// whatever its status (the caller classifies it), or the error that ended
    /// the attempts.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, ScimError> {
        self.call_with(method, segments, query, body, None).await
    }

    /// [`ScimClient::call`], with `If-Match: <if_match>` when given.
    async fn call_with(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, ScimError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked at construction: a base URL")
            .extend(segments);
        if !query.is_empty() {
            url.set_query(Some(&encode_query(query)));
        }
        let relative = url.as_str()[self.base.as_str().len()..].to_owned();
        let mut attempt = 0u32;
        let mut renewed = false;
        let mut waited = Duration::ZERO;
        loop {
            attempt += 1;
            let (auth, generation) = self.authorization().await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, auth.clone())
                .header(reqwest::header::ACCEPT, SCIM_JSON);
            if let Some(version) = if_match {
                request = request.header(IF_MATCH, version);
            }
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, SCIM_JSON)
                    .body(serde_json::to_vec(body).expect("JSON serialises"));
            }
            let started = Instant::now();
            let sent = request.send().await;
            let (failure, asked) = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let asked = retry_after(response.headers(), SystemTime::now());
                    let etag = response
                        .headers()
                        .get(ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let read = read_body(response).await;
                    self.report(&method, Some(status), started.elapsed());
                    match read {
                        Err(e) => (Passing::Transport(e), None),
                        Ok(bytes) => {
                            let answer_body = parse_body(&bytes).map(|mut b| {
                                self.scrub(&mut b, &auth);
                                b
                            });
                            self.tell_exchange(
                                &method,
                                &relative,
                                body,
                                status,
                                answer_body.as_ref(),
                            );
                            if status == 401
                                && !renewed
                                && let Some(generation) = generation
                                && let Credentials::ClientCredentials(oauth) = &self.credentials
                            {
                                // Revoked before its time, maybe: once more, with a new token.
                                oauth.invalidate(generation).await;
                                renewed = true;
                                attempt -= 1;
                                continue;
                            }
                            if !is_passing(status) {
                                return Ok(Answer {
                                    status,
                                    body: answer_body,
                                    etag,
                                });
                            }
                            let failure = Passing::Status {
                                status,
                                body: answer_body,
                            };
                            (failure, asked)
                        }
                    }
                }
                Err(e) => {
                    self.report(&method, None, started.elapsed());
                    let error = send_error(&url, &e);
                    if matches!(error, ScimError::Tls { .. }) {
                        return Err(error);
                    }
                    (Passing::Transport(error.to_string()), None)
                }
            };
            match self.next_wait(attempt, asked) {
                Some(wait) => {
                    tracing::debug!(
                        method = %method,
                        path = relative,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "retrying a SCIM request"
                    );
                    waited += wait;
                    self.pause(wait).await;
                }
                None => return Err(give_up(failure, waited)),
            }
        }
    }

    /// The wait before the next attempt, or `None` when none is left.
    fn next_wait(&self, attempt: u32, asked: Option<Duration>) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        Some(match asked {
            Some(asked) => asked.min(self.max_retry_wait),
            None => self.backoff(attempt),
        })
    }

    /// Doubling from [`INITIAL_BACKOFF`] up to `max_retry_wait`, half of it
    /// fixed and half random, so that clients throttled together do not
    /// come back together.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = INITIAL_BACKOFF
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_retry_wait);
        let half = ceiling / 2;
        half + jitter(half)
    }

    async fn pause(&self, wait: Duration) {
        if let Some(o) = &self.observer {
            o.throttled(wait);
        }
        tokio::time::sleep(wait).await;
    }

    fn report(&self, method: &Method, status: Option<u16>, elapsed: Duration) {
        if let Some(o) = &self.observer {
            o.response(method.as_str(), status, elapsed);
        }
    }

    fn tell_exchange(
        &self,
        method: &Method,
        path: &str,
        request: Option<&Value>,
        status: u16,
        response: Option<&Value>,
    ) {
        if let Some(o) = &self.observer {
            o.exchange(&Exchange {
                method: method.to_string(),
                path: path.to_owned(),
                request: request.map(redact_passwords),
                status,
                response: response.map(redact_passwords),
            });
        }
    }

    /// The Authorization header, and the generation of an OAuth token.
    /// Cut the credentials out of an answer: the token sent with the request
    /// (`auth`) and, with OAuth, the client secret.
    fn scrub(&self, body: &mut Value, auth: &HeaderValue) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let client_secret = match &self.credentials {
            Credentials::ClientCredentials(oauth) => oauth.client_secret(),
            Credentials::Bearer(_) => "",
        };
        crate::secret::scrub_json(body, &[token, client_secret]);
    }

    async fn authorization(&self) -> Result<(HeaderValue, Option<u64>), ScimError> {
        let (token, generation) = match &self.credentials {
            Credentials::Bearer(token) => (token.clone(), None),
            Credentials::ClientCredentials(oauth) => {
                let (token, generation) = oauth.token(&self.http).await?;
                (token, Some(generation))
            }
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| {
                ScimError::InvalidConfig(
                    "the bearer token holds characters an HTTP header cannot carry (a line break?); check the Secret of spec.auth.bearerTokenSecretRef".into(),
                )
            })?;
        value.set_sensitive(true);
        Ok((value, generation))
    }
}

/// `k=v&…` with spaces as `%20`, not the `+` of HTML forms, which not every
/// application reads as a space in a filter (Entra sends `%20` too).
fn encode_query(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        url::form_urlencoded::byte_serialize(text.as_bytes())
            .collect::<String>()
            // A literal plus is %2B by now: each `+` left stands for a space.
            .replace('+', "%20")
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// "Not now" rather than "no". 501 is a "no": the application lacks the method.
fn is_passing(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The error after the last attempt.
fn give_up(failure: Passing, waited: Duration) -> ScimError {
    match failure {
        Passing::Status { status: 429, .. } => ScimError::Throttled { waited },
        Passing::Status { status, body } => ScimError::from_answer(status, body.as_ref()),
        Passing::Transport(detail) => ScimError::Transport(detail),
    }
}

/// The body of a successful answer; the status's error otherwise.
fn success_body(answer: Answer, what: &str) -> Result<Value, ScimError> {
    if !is_success(answer.status) {
        return Err(ScimError::from_answer(answer.status, answer.body.as_ref()));
    }
    answer.body.ok_or_else(|| {
        ScimError::Protocol(format!(
            "HTTP {} with no JSON body where {what} was expected",
            answer.status
        ))
    })
}

fn user_from(body: Value, etag: Option<&str>, what: &str) -> Result<RemoteUser, ScimError> {
    RemoteUser::from_value(body, etag)
        .ok_or_else(|| ScimError::Protocol(format!("{what} without an id")))
}

/// The body as JSON; `None` when empty or not JSON (an HTML error page).
fn parse_body(bytes: &[u8]) -> Option<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_RESPONSE_BYTES)
    {
        return Err(format!(
            "an answer larger than {} MiB",
            MAX_RESPONSE_BYTES >> 20
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| chain(&e))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!(
                "an answer larger than {} MiB",
                MAX_RESPONSE_BYTES >> 20
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error for a request that got no answer.
pub(crate) fn send_error(url: &Url, error: &reqwest::Error) -> ScimError {
    let host = match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => url.origin().ascii_serialization(),
    };
    if let Some(problem) = certificate_problem(error) {
        return ScimError::Tls {
            detail: problem.describe(&host, CA_FIELD),
            host,
        };
    }
    if error.is_timeout() {
        return ScimError::Transport(format!("no answer from {host} in time"));
    }
    // reqwest's text names the whole URL; the host is enough, and a filter
    // value in the query is nobody's business in a message.
    let mut text = chain(error);
    if let Some(stripped) = text.split_once(" for url (").map(|(head, tail)| {
        let rest = tail.split_once(')').map(|(_, r)| r).unwrap_or_default();
        format!("{head} to {host}{rest}")
    }) {
        text = stripped;
    }
    ScimError::Transport(text)
}

/// A version 4 UUID from the system's random source.
fn random_guid() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

impl std::fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimClient")
            .field("base", &self.base.as_str())
            .field(
                "credentials",
                &match self.credentials {
                    Credentials::Bearer(_) => "Bearer(<redacted>)",
                    Credentials::ClientCredentials(_) => "ClientCredentials(<redacted>)",
                },
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_in_the_query_has_its_spaces_as_percent_20_and_a_plus_kept() {
        assert_eq!(
            encode_query(&[("filter", r#"userName eq "a+b c""#), ("count", "5")]),
            "filter=userName%20eq%20%22a%2Bb%20c%22&count=5"
        );
    }

    #[test]
    fn a_probe_guid_is_a_version_4_uuid() {
        let guid = random_guid();
        assert_eq!(guid.len(), 36);
        assert_eq!(&guid[14..15], "4");
        assert_ne!(guid, random_guid());
    }

    #[test]
    fn a_base_url_with_credentials_or_not_http_is_refused() {
        for url in ["ftp://app.example/scim", "https://u:p@app.example/scim"] {
            let cfg = ClientConfig::new(Url::parse(url).unwrap(), Auth::Bearer("t".into()));
            let error = ScimClient::new(cfg).unwrap_err();
            assert!(matches!(error, ScimError::InvalidConfig(_)), "{error}");
            assert!(!error.to_string().contains("u:p"), "{error}");
        }
    }

    #[test]
    fn retry_waits_follow_retry_after_capped_else_back_off() {
        let mut cfg = ClientConfig::new(
            Url::parse("http://127.0.0.1:1/scim/v2/").unwrap(),
            Auth::Bearer("t".into()),
        );
        cfg.max_attempts = 3;
        cfg.max_retry_wait = Duration::from_secs(2);
        let client = ScimClient::new(cfg).unwrap();
        assert_eq!(
            client.next_wait(1, Some(Duration::from_millis(500))),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            client.next_wait(1, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(2))
        );
        let backoff = client.next_wait(2, None).unwrap();
        assert!(backoff >= Duration::from_millis(250) && backoff <= Duration::from_millis(500));
        assert_eq!(client.next_wait(3, Some(Duration::ZERO)), None);
    }
}
