//! The real SCIM server of the tests (scim2-server, tests/scim.sh), brought up
//! on first use unless USERSYNC_SCIM_URL names one already, with a tenant of its
//! own for each test; and a fault-injecting proxy in front of it for what a real
//! server does not do on its own: throttling, outages, an application without
//! PATCH, Entra-style and sparse answers, slow answers, its own credentials.
//!
//! The proxy listens on 127.0.0.1 on a port of its own and forwards every
//! request to the tenant as it came, path and query alike, so the base URL of
//! the proxy ends like the tenant's (`/<tenant>/v2`). It counts what it saw.

#![allow(dead_code)]

#[path = "../graph_emulator/tls.rs"]
mod tls;

use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

/// What tests/scim.sh env prints.
struct ServerEnv {
    root: Url,
    token: String,
}

fn server() -> &'static ServerEnv {
    static ENV: OnceLock<ServerEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        // The root is the URL's origin when only USERSYNC_SCIM_URL is set.
        let root = from_env("USERSYNC_SCIM_ROOT").or_else(|| {
            from_env("USERSYNC_SCIM_URL")
                .and_then(|u| Url::parse(&u).ok())
                .map(|u| u.origin().ascii_serialization())
        });
        let (root, token_file) = match (root, from_env("USERSYNC_SCIM_TOKEN_FILE")) {
            (Some(root), Some(file)) => (root, file),
            _ => {
                let env = run_script("up").and_then(|_| run_script("env")).unwrap_or_else(|e| {
                    panic!(
                        "no SCIM server: USERSYNC_SCIM_URL is not set and tests/scim.sh could not start one ({e}); \
                         run `bash tests/lib/deps.sh scim && bash tests/scim.sh up && eval \"$(bash tests/scim.sh env)\"` first"
                    )
                });
                let var = |name: &str| {
                    env.lines()
                        .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                        .unwrap_or_else(|| panic!("tests/scim.sh env prints {name}"))
                        .trim_matches('\'')
                        .to_string()
                };
                (var("USERSYNC_SCIM_ROOT"), var("USERSYNC_SCIM_TOKEN_FILE"))
            }
        };
        let token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|e| panic!("cannot read the SCIM server's token {token_file}: {e}"))
            .trim()
            .to_owned();
        ServerEnv {
            root: Url::parse(&root).expect("USERSYNC_SCIM_ROOT is a URL"),
            token,
        }
    })
}

fn run_script(arg: &str) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scim.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(arg)
        .output()
        .map_err(|e| format!("cannot run tests/scim.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tests/scim.sh {arg} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A client for the test's own requests (plain HTTP to 127.0.0.1).
fn plain_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A name no other test (or run) uses: `prefix` and 8 random hex digits.
pub fn unique(prefix: &str) -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 4];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    format!("{prefix}-{:08x}", u32::from_be_bytes(bytes))
}

/// A tenant of the real server, with no users but those its test makes.
#[derive(Clone)]
pub struct Tenant {
    /// `http://127.0.0.1:PORT/<tenant>/v2`.
    pub url: Url,
    /// The server's bearer token.
    pub token: String,
    http: reqwest::Client,
}

impl Tenant {
    /// A tenant of its own for the test `name`.
    pub fn fresh(name: &str) -> Self {
        let env = server();
        let url = env
            .root
            .join(&format!("{}/v2", unique(name)))
            .expect("a tenant URL");
        Self {
            url,
            token: env.token.clone(),
            http: plain_client(),
        }
    }

    fn endpoint(&self, rel: &str) -> String {
        format!("{}{rel}", self.url.as_str().trim_end_matches('/'))
    }

    /// A GET straight to the server, bypassing the client under test: the
    /// status and the JSON body.
    pub async fn get(&self, rel: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.endpoint(rel))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the SCIM server answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The user `id` as the server holds it.
    pub async fn user(&self, id: &str) -> Option<Value> {
        match self.get(&format!("/Users/{id}")).await {
            (200, body) => Some(body),
            (404, _) => None,
            (status, body) => panic!("GET /Users/{id}: HTTP {status} {body}"),
        }
    }

    /// Every user the server holds in this tenant.
    pub async fn users(&self) -> Vec<Value> {
        let (status, body) = self.get("/Users?count=1000").await;
        assert_eq!(status, 200, "{body}");
        body["Resources"].as_array().cloned().unwrap_or_default()
    }

    /// What an application's own admin does, straight on the server: `method`
    /// (PATCH, DELETE) on `/Users/<id>` with `body`; the status.
    pub async fn admin(&self, method: reqwest::Method, id: &str, body: Option<Value>) -> u16 {
        let mut request = self
            .http
            .request(method, self.endpoint(&format!("/Users/{id}")))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/scim+json")
                .body(body.to_string());
        }
        request
            .send()
            .await
            .expect("the SCIM server answers")
            .status()
            .as_u16()
    }

    /// Create a user straight on the server (one the client did not make).
    pub async fn create(&self, user: Value) -> Value {
        let response = self
            .http
            .post(self.endpoint("/Users"))
            .bearer_auth(&self.token)
            .header(header::CONTENT_TYPE, "application/scim+json")
            .body(user.to_string())
            .send()
            .await
            .expect("the SCIM server answers");
        assert_eq!(response.status().as_u16(), 201);
        response.json().await.expect("a created user")
    }
}

/// How the proxy treats the Authorization header.
#[derive(Clone, Debug)]
enum Credential {
    /// Forwarded as it came: the server checks it.
    PassThrough,
    /// The proxy's own token; the server's is sent on.
    Token(String),
    /// Tokens from the proxy's OAuth token endpoint, for this client.
    OAuth {
        client_id: String,
        client_secret: String,
    },
}

/// One request the proxy saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// Relative to the tenant: `/Users`, `/Users/<id>`.
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
}

#[derive(Debug)]
struct Faults {
    credential: Credential,
    issued: Vec<String>,
    token_requests: u32,
    token_lifetime: u64,
    /// Answers given before any forwarding, one per request.
    queued: VecDeque<(u16, Option<String>)>,
    /// Requests still answered before every one is refused with 401.
    refuse_after: Option<usize>,
    /// Requests still answered before every one is held without an answer.
    hold_after: Option<usize>,
    /// Whether requests are held now.
    holding: bool,
    no_patch: bool,
    ignore_filters: bool,
    entra_style: bool,
    sparse_lists: bool,
    /// Ids left out of list answers (a loose pager), still there by id.
    hidden: Vec<String>,
    /// Ids whose own requests are refused with 403 (accounts the app protects).
    forbidden: Vec<String>,
    delay: Duration,
    seen: Vec<Seen>,
    /// Requests received, counted as they arrive (before any delay).
    arrived: usize,
}

struct Shared {
    faults: Mutex<Faults>,
    tenant: Tenant,
    /// The tenant's path, `/<tenant>/v2`.
    prefix: String,
    http: reqwest::Client,
}

/// A proxy in front of a tenant of the real server.
#[derive(Clone)]
pub struct FaultProxy {
    shared: Arc<Shared>,
    base: Url,
    ca_pem: Option<String>,
}

impl FaultProxy {
    /// A proxy over plain HTTP on 127.0.0.1.
    pub async fn start(tenant: &Tenant) -> Self {
        Self::launch(tenant, false).await
    }

    /// A proxy over HTTPS on 127.0.0.1, with a certificate from its own CA
    /// ([`FaultProxy::ca_pem`]).
    pub async fn start_tls(tenant: &Tenant) -> Self {
        Self::launch(tenant, true).await
    }

    async fn launch(tenant: &Tenant, tls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls { "https" } else { "http" };
        let prefix = tenant.url.path().trim_end_matches('/').to_owned();
        let base = Url::parse(&format!("{scheme}://127.0.0.1:{port}{prefix}")).unwrap();
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults {
                credential: Credential::PassThrough,
                issued: Vec::new(),
                token_requests: 0,
                token_lifetime: 3600,
                queued: VecDeque::new(),
                refuse_after: None,
                hold_after: None,
                holding: false,
                no_patch: false,
                ignore_filters: false,
                entra_style: false,
                sparse_lists: false,
                hidden: Vec::new(),
                forbidden: Vec::new(),
                delay: Duration::ZERO,
                seen: Vec::new(),
                arrived: 0,
            }),
            tenant: tenant.clone(),
            prefix,
            http: plain_client(),
        });
        let router = Router::new()
            .route("/oauth2/token", post(issue_token))
            .fallback(forward)
            .with_state(shared.clone());
        let pki = tls.then(tls::test_pki);
        let ca_pem = pki.as_ref().map(|p| p.ca_pem.clone());
        match pki {
            Some(pki) => tls::serve_tls(listener, pki.server_config, router, Arc::default()),
            None => {
                tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                });
            }
        }
        Self {
            shared,
            base,
            ca_pem,
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap()
    }

    /// The base URL a client is given: the proxy's `/<tenant>/v2`.
    pub fn base_url(&self) -> Url {
        self.base.clone()
    }

    /// The CA that signed the HTTPS proxy's certificate.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The proxy's OAuth 2.0 token endpoint (client credentials grant).
    pub fn token_url(&self) -> Url {
        self.base.join("/oauth2/token").unwrap()
    }

    /// Accept only `Authorization: Bearer <token>`, answering 401 with a SCIM
    /// error otherwise; the server's own token is sent on.
    pub fn require_token(&self, token: &str) {
        self.faults().credential = Credential::Token(token.to_owned());
    }

    /// Accept only tokens the proxy's token endpoint issued to this client,
    /// each valid for `lifetime_secs` as far as the client is told.
    pub fn require_oauth(&self, client_id: &str, client_secret: &str, lifetime_secs: u64) {
        let mut faults = self.faults();
        faults.credential = Credential::OAuth {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
        };
        faults.token_lifetime = lifetime_secs;
    }

    /// Refuse every token issued so far, as after a revocation.
    pub fn revoke_tokens(&self) {
        self.faults().issued.clear();
    }

    /// How many times the token endpoint was asked.
    pub fn token_requests(&self) -> u32 {
        self.faults().token_requests
    }

    /// Answer the next `n` requests 429 with `Retry-After: <retry_after>`.
    pub fn throttle(&self, n: usize, retry_after: &str) {
        let mut faults = self.faults();
        for _ in 0..n {
            faults.queued.push_back((429, Some(retry_after.to_owned())));
        }
    }

    /// Answer the next `n` requests with `status` (503: an outage).
    pub fn fail(&self, n: usize, status: u16) {
        let mut faults = self.faults();
        for _ in 0..n {
            faults.queued.push_back((status, None));
        }
    }

    /// Answer `n` more requests, then refuse every one with 401, as after the
    /// token was revoked in the middle of a cycle.
    pub fn refuse_after(&self, n: usize) {
        self.faults().refuse_after = Some(n);
    }

    /// Answer `n` more requests, then hold every one without an answer until
    /// [`FaultProxy::release`], as an application that hangs.
    pub fn hold_after(&self, n: usize) {
        self.faults().hold_after = Some(n);
    }

    /// Whether requests are being held.
    pub fn holding(&self) -> bool {
        self.faults().holding
    }

    /// Answer the held requests with 503, never forwarding them (their client
    /// may be gone), and every later one as before.
    pub fn release(&self) {
        let mut faults = self.faults();
        faults.hold_after = None;
        faults.holding = false;
    }

    /// Accept the credentials again after [`FaultProxy::refuse_after`].
    pub fn accept_again(&self) {
        self.faults().refuse_after = None;
    }

    /// An application without PATCH: PATCH answers 501, and
    /// /ServiceProviderConfig says `patch.supported: false`.
    pub fn without_patch(&self) {
        self.faults().no_patch = true;
    }

    /// An application that ignores `filter`: lists answer with everyone.
    pub fn ignore_filters(&self) {
        self.faults().ignore_filters = true;
    }

    /// Answers as Entra-era applications write them: booleans as "True" and
    /// "False" strings, op names capitalised.
    pub fn entra_style(&self) {
        self.faults().entra_style = true;
    }

    /// Lists as careless applications write them: no `totalResults`, no
    /// `Resources` when empty, an item without `id`, no `meta.version` (the
    /// version only in the `ETag` header).
    pub fn sparse_lists(&self) {
        self.faults().sparse_lists = true;
    }

    /// Hold every answer back by `delay`.
    pub fn slow(&self, delay: Duration) {
        self.faults().delay = delay;
    }

    /// Every request seen, in order (the token endpoint's are not).
    pub fn seen(&self) -> Vec<Seen> {
        self.faults().seen.clone()
    }

    /// How many requests arrived so far, answered or not (the token endpoint's
    /// are not counted).
    pub fn arrived(&self) -> usize {
        self.faults().arrived
    }

    /// How many requests of `method` to `path` (without query) were seen.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.faults()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }

    /// Leave the user `id` out of every list answer, as an application whose
    /// pages drift does; a request for it by id still finds it.
    pub fn hide_in_lists(&self, id: &str) {
        self.faults().hidden.push(id.to_owned());
    }

    /// Refuse every request for the user `id` with 403, as an application does
    /// for an account it protects.
    pub fn forbid(&self, id: &str) {
        self.faults().forbidden.push(id.to_owned());
    }

    /// Answer the requests for the user `id` again.
    pub fn allow(&self, id: &str) {
        self.faults().forbidden.retain(|f| f != id);
    }

    /// Forget the requests seen so far.
    pub fn reset_counts(&self) {
        self.faults().seen.clear();
    }
}

fn scim_error(status: u16, detail: &str) -> Response {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(),
        "detail": detail,
    });
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/scim+json")],
        body.to_string(),
    )
        .into_response()
}

async fn issue_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut faults = shared.faults.lock().unwrap();
    faults.token_requests += 1;
    let Credential::OAuth {
        client_id,
        client_secret,
    } = faults.credential.clone()
    else {
        return (StatusCode::NOT_FOUND, "no token endpoint").into_response();
    };
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            "unsupported_grant_type",
            "only client_credentials is granted",
        );
    }
    if field("client_id") != Some(&client_id) || field("client_secret") != Some(&client_secret) {
        // Quoting what it was sent, as some token endpoints do.
        return oauth_error(
            "invalid_client",
            &format!(
                "client secret {:?} is not valid",
                field("client_secret").unwrap_or_default()
            ),
        );
    }
    let token = unique("oauth-token");
    faults.issued.push(token.clone());
    let body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": faults.token_lifetime,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn oauth_error(code: &str, description: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": code, "error_description": description}).to_string(),
    )
        .into_response()
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let path = uri.path().to_owned();
    let relative = path
        .strip_prefix(&shared.prefix)
        .unwrap_or(&path)
        .to_owned();
    let headers = request.headers().clone();
    let body = to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let held = {
        let mut faults = shared.faults.lock().unwrap();
        faults.arrived += 1;
        match faults.hold_after.as_mut() {
            Some(0) => faults.holding = true,
            Some(left) => *left -= 1,
            None => {}
        }
        faults.holding
    };
    if held {
        while shared.faults.lock().unwrap().holding {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        return scim_error(503, "held by the test proxy");
    }
    let (delay, decided) = {
        let mut faults = shared.faults.lock().unwrap();
        (
            faults.delay,
            decide(&mut faults, &method, &headers, &shared),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let record = |status: u16| {
        shared.faults.lock().unwrap().seen.push(Seen {
            method: method.to_string(),
            path: relative.clone(),
            query: uri.query().map(str::to_owned),
            status,
        });
    };
    let authorization = match decided {
        Decision::Answer(response) => {
            record(response.status().as_u16());
            return response;
        }
        Decision::Forward(authorization) => authorization,
    };
    let (no_patch, ignore_filters, entra_style, sparse_lists, hidden, forbidden) = {
        let faults = shared.faults.lock().unwrap();
        (
            faults.no_patch,
            faults.ignore_filters,
            faults.entra_style,
            faults.sparse_lists,
            faults.hidden.clone(),
            faults.forbidden.clone(),
        )
    };
    if forbidden
        .iter()
        .any(|id| relative == format!("/Users/{id}"))
    {
        let response = scim_error(403, "this account is protected by the application");
        record(403);
        return response;
    }
    if no_patch && method == Method::PATCH {
        let response = scim_error(501, "PATCH is not supported");
        record(501);
        return response;
    }
    let mut upstream = shared.tenant.url.clone();
    upstream.set_path(&path);
    upstream.set_query(uri.query());
    if ignore_filters {
        let kept: Vec<(String, String)> = upstream
            .query_pairs()
            .filter(|(k, _)| k != "filter")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        upstream.set_query(None);
        if !kept.is_empty() {
            upstream.query_pairs_mut().extend_pairs(kept);
        }
    }
    let mut outgoing = shared.http.request(method.clone(), upstream.as_str());
    for name in [header::CONTENT_TYPE, header::ACCEPT, header::IF_MATCH] {
        if let Some(value) = headers.get(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    if let Some(authorization) = authorization {
        outgoing = outgoing.header(header::AUTHORIZATION, authorization);
    }
    let answer = match outgoing.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => return scim_error(502, &format!("the SCIM server: {e}")),
    };
    let status = answer.status().as_u16();
    let mut out_headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::ETAG, header::LOCATION] {
        if let Some(value) = answer.headers().get(&name) {
            out_headers.insert(name, value.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            if no_patch && relative == "/ServiceProviderConfig" {
                value["patch"] = json!({"supported": false});
            }
            if sparse_lists {
                sparsen(&mut value);
            }
            let paging = !uri.query().unwrap_or_default().contains("filter=");
            if let Some(items) = value
                .get_mut("Resources")
                .and_then(Value::as_array_mut)
                .filter(|_| paging)
            {
                items.retain(|u| !hidden.iter().any(|id| u["id"] == id.as_str()));
            }
            if entra_style {
                entra_rewrite(&mut value);
            }
            Body::from(value.to_string())
        }
        Err(_) => Body::from(bytes),
    };
    record(status);
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    *response.headers_mut() = out_headers;
    response
}

enum Decision {
    Answer(Response),
    /// Forward, with this Authorization header (`None`: none).
    Forward(Option<HeaderValue>),
}

/// A queued fault, a refused credential, or the header to forward with.
fn decide(faults: &mut Faults, _method: &Method, headers: &HeaderMap, shared: &Shared) -> Decision {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let server_token =
        || Some(HeaderValue::from_str(&format!("Bearer {}", shared.tenant.token)).unwrap());
    let authorization = match &faults.credential {
        Credential::PassThrough => headers.get(header::AUTHORIZATION).cloned(),
        Credential::Token(expected) => {
            if presented.as_deref() != Some(expected) {
                return Decision::Answer(unauthorized(presented.as_deref()));
            }
            server_token()
        }
        Credential::OAuth { .. } => {
            if !presented
                .as_ref()
                .is_some_and(|t| faults.issued.contains(t))
            {
                return Decision::Answer(unauthorized(presented.as_deref()));
            }
            server_token()
        }
    };
    if let Some(left) = faults.refuse_after.as_mut() {
        if *left == 0 {
            return Decision::Answer(unauthorized(presented.as_deref()));
        }
        *left -= 1;
    }
    if let Some((status, retry_after)) = faults.queued.pop_front() {
        let mut response = scim_error(status, "injected by the test proxy");
        if let Some(value) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_str(&value).unwrap());
        }
        return Decision::Answer(response);
    }
    Decision::Forward(authorization)
}

/// A 401 that quotes the token it refused, as some applications do.
fn unauthorized(presented: Option<&str>) -> Response {
    let mut response = scim_error(
        401,
        &format!(
            "Authorization failure. The authorization header is invalid or missing (token {:?})",
            presented.unwrap_or_default()
        ),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"SCIM\""),
    );
    response
}

/// Booleans as "True"/"False", op names capitalised, everywhere in `value`.
fn entra_rewrite(value: &mut Value) {
    match value {
        Value::Bool(b) => *value = Value::String(if *b { "True" } else { "False" }.into()),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "op"
                    && let Value::String(op) = v
                {
                    let mut chars = op.chars();
                    if let Some(first) = chars.next() {
                        *op = first.to_uppercase().chain(chars).collect();
                    }
                    continue;
                }
                entra_rewrite(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(entra_rewrite),
        _ => {}
    }
}

/// A list as careless applications send it.
fn sparsen(value: &mut Value) {
    let Some(map) = value.as_object_mut() else {
        return;
    };
    let is_list = map
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|s| s.as_str().is_some_and(|s| s.ends_with("ListResponse")))
        });
    if let Some(meta) = map.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("version");
    }
    if !is_list {
        return;
    }
    map.remove("totalResults");
    match map.get_mut("Resources").and_then(Value::as_array_mut) {
        Some(items) if items.is_empty() => {
            map.remove("Resources");
        }
        Some(items) => {
            for item in items.iter_mut() {
                if let Some(meta) = item.get_mut("meta").and_then(Value::as_object_mut) {
                    meta.remove("version");
                }
            }
            items.insert(0, json!({"userName": "an item without id"}));
        }
        None => {}
    }
}
