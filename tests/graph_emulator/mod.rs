//! An in-process Microsoft Graph and identity platform for the Graph source's
//! tests, built from Microsoft's documented behaviour. It listens on
//! 127.0.0.1 (an ephemeral port), over plain HTTP or HTTPS with its own CA,
//! and serves both the token endpoint and Graph at one base URL:
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: the client credentials grant with a
//!   client secret or a certificate's client assertion (see `auth`);
//! - `GET /v1.0/users` with `$select` (only the selected properties, so
//!   `accountEnabled` is absent unless selected), `$filter` (see `filter`),
//!   `$top` (at most 999), `$count` (advanced: needs `ConsistencyLevel:
//!   eventual`), paged with opaque `$skiptoken` next links;
//! - `GET /v1.0/users/{id}`, `POST /v1.0/users/{id}/checkMemberGroups`;
//! - `GET /v1.0/users/delta`: next links, then a delta link; `@removed`
//!   entries for deleted users; an expired delta token answers 410 Gone;
//! - `GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user`: nested
//!   groups resolved; `$count` and `$filter` need `ConsistencyLevel: eventual`.
//!
//! Tests steer it through [`GraphEmulator`]'s methods: users, groups, token
//! lifetime and revocation, permissions, delta token expiry, injected faults
//! (the next N Graph requests answer 429 with `Retry-After`, or 503), objects
//! served without their `id`, `checkMemberGroups` answering 404 for a user
//! not yet replicated, and a log and count of the requests it saw.
//!
//! `fixtures/` holds two throwaway RSA key pairs with self-signed certificates
//! (made with openssl for these tests only; they are no one's credentials):
//! `app.*` (a PKCS#8 key) and `other.*` (a PKCS#1 key).

#![allow(dead_code)] // Each test binary uses a different part of the emulator.

mod auth;
mod filter;
mod tenant;
mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use url::Url;

use auth::{App, RegisteredCertificate};
use filter::Filter;
use tenant::{Tenant, is_known_property};

pub const TENANT_ID: &str = "3f9a1c52-6d1e-4b7a-9c0d-2e5f8a7b6c41";
pub const CLIENT_ID: &str = "b7d2e4f1-0a3c-4e5b-8f6d-1c2b3a4d5e6f";
/// The client secret registered with the emulated app (a test value).
pub const CLIENT_SECRET: &str = "emulator-client-secret-7Q~xVb2";

pub const APP_CERT: &str = include_str!("fixtures/app.crt.pem");
pub const APP_KEY: &str = include_str!("fixtures/app.key.pem");
pub const OTHER_CERT: &str = include_str!("fixtures/other.crt.pem");
pub const OTHER_KEY: &str = include_str!("fixtures/other.key.pem");

pub const USER_READ_ALL: &str = "User.Read.All";
pub const GROUP_MEMBER_READ_ALL: &str = "GroupMember.Read.All";

/// A failure the next Graph requests answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 Too Many Requests with `Retry-After: <seconds>`.
    Throttle { retry_after: u64 },
    /// 503 Service Unavailable, without `Retry-After`.
    Unavailable,
    /// Throttling as Microsoft documents it: `status` 429 (or 503, which
    /// Graph also throttles with) and the `Retry-After` header as given, e.g.
    /// `2.128`, an HTTP-date, or none at all.
    Throttled {
        status: u16,
        retry_after: Option<String>,
    },
}

/// A request Graph saw (token requests are counted apart).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query options.
    pub query: BTreeMap<String, String>,
    pub consistency_level: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A handle on a running emulator; clones share it.
#[derive(Clone)]
pub struct GraphEmulator {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    base: Url,
    ca_pem: Option<String>,
    /// Connections opened to the HTTPS listener.
    tls_connections: Arc<AtomicU64>,
}

struct Issued {
    expires: Instant,
    roles: BTreeSet<String>,
}

/// A paged listing in progress.
struct Listing {
    items: Vec<Item>,
    offset: usize,
    select: Option<Vec<String>>,
    page: usize,
    count: Option<usize>,
    /// For delta rounds: the version the round started at, and the epoch.
    delta: Option<(u64, u64)>,
    path: String,
}

#[derive(Clone)]
enum Item {
    User(String),
    Removed(String, &'static str),
}

struct DeltaState {
    since: u64,
    select: Option<Vec<String>>,
    epoch: u64,
}

struct State {
    tenant: Tenant,
    app: App,
    tokens: HashMap<String, Issued>,
    reject_all_tokens: bool,
    listings: HashMap<String, Listing>,
    delta_tokens: HashMap<String, DeltaState>,
    /// Groups delta tokens: the version and the groups (`$filter` by id) tracked.
    group_delta_tokens: HashMap<String, (u64, Vec<String>, u64)>,
    delta_epoch: u64,
    expired_delta_code: &'static str,
    /// Per coming Graph request: a fault, or `None` to serve it.
    faults: VecDeque<Option<Fault>>,
    log: Vec<Recorded>,
    token_requests: u64,
    /// The most items a page holds, whatever `$top` says (Graph may serve fewer).
    page_cap: usize,
    /// Per user: how many more `checkMemberGroups` answer 404 (a user created
    /// a moment ago, not yet on the replica that answers).
    membership_lag: HashMap<String, usize>,
    /// Per user: how many more advanced queries (`ConsistencyLevel:
    /// eventual`) leave it out, as an index that has not caught up with an edit.
    index_lag: HashMap<String, usize>,
}

impl GraphEmulator {
    /// An emulator over plain HTTP on 127.0.0.1.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// An emulator over HTTPS on 127.0.0.1, with a certificate from its own CA
    /// ([`GraphEmulator::ca_pem`]).
    pub async fn start_tls() -> Self {
        Self::launch(true).await
    }

    async fn launch(tls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls { "https" } else { "http" };
        let base = Url::parse(&format!("{scheme}://127.0.0.1:{port}/")).unwrap();
        let pki = tls.then(tls::test_pki);
        let state = State {
            tenant: Tenant::default(),
            app: App {
                tenant_id: TENANT_ID.into(),
                client_id: CLIENT_ID.into(),
                secrets: vec![CLIENT_SECRET.into()],
                certificates: vec![RegisteredCertificate::from_pem(APP_CERT)],
                token_lifetime: Duration::from_secs(3599),
                roles: [USER_READ_ALL, GROUP_MEMBER_READ_ALL]
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                scope: "https://graph.microsoft.com/.default".into(),
            },
            tokens: HashMap::new(),
            reject_all_tokens: false,
            listings: HashMap::new(),
            delta_tokens: HashMap::new(),
            group_delta_tokens: HashMap::new(),
            delta_epoch: 0,
            expired_delta_code: "syncStateNotFound",
            faults: VecDeque::new(),
            log: Vec::new(),
            token_requests: 0,
            page_cap: 999,
            membership_lag: HashMap::new(),
            index_lag: HashMap::new(),
        };
        let emulator = GraphEmulator {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                base,
                ca_pem: pki.as_ref().map(|p| p.ca_pem.clone()),
                tls_connections: Arc::default(),
            }),
        };
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/v1.0/users", get(list_users))
            .route("/v1.0/users/delta", get(users_delta))
            .route("/v1.0/groups/delta", get(groups_delta))
            .route("/v1.0/users/{id}", get(get_user))
            .route(
                "/v1.0/users/{id}/checkMemberGroups",
                post(check_member_groups),
            )
            .route(
                "/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user",
                get(transitive_users),
            )
            .route(
                "/v1.0/groups/{id}/transitiveMembers/microsoft.graph.group",
                get(transitive_groups),
            )
            .with_state(emulator.clone());
        match pki {
            Some(pki) => tls::serve_tls(
                listener,
                pki.server_config,
                router,
                emulator.shared.tls_connections.clone(),
            ),
            None => {
                tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                });
            }
        }
        emulator
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// The base URL of both the token endpoint and Graph.
    pub fn base_url(&self) -> Url {
        self.shared.base.clone()
    }

    /// The CA that issued the HTTPS certificate (for [`GraphEmulator::start_tls`]).
    pub fn ca_pem(&self) -> Option<String> {
        self.shared.ca_pem.clone()
    }

    /// Connections clients opened to the HTTPS emulator, a failed handshake's
    /// included.
    pub fn tls_connections(&self) -> u64 {
        self.shared.tls_connections.load(Ordering::SeqCst)
    }

    // --- the app registration and its tokens ---

    /// How long new access tokens live (`expires_in`).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().app.token_lifetime = lifetime;
    }

    /// Register a further certificate credential (PEM).
    pub fn register_certificate(&self, pem: &str) {
        self.state()
            .app
            .certificates
            .push(RegisteredCertificate::from_pem(pem));
    }

    /// Add a client secret to the app registration (as a rotation does, before
    /// the old one is removed).
    pub fn add_client_secret(&self, secret: &str) {
        self.state().app.secrets.push(secret.into());
    }

    /// Grant an application permission (with consent) to tokens issued from now on.
    pub fn grant_permission(&self, role: &str) {
        self.state().app.roles.insert(role.into());
    }

    /// Withdraw an application permission from tokens issued from now on.
    pub fn revoke_permission(&self, role: &str) {
        self.state().app.roles.remove(role);
    }

    /// Invalidate every token issued so far (as a revoked session would).
    pub fn invalidate_issued_tokens(&self) {
        self.state().tokens.clear();
    }

    /// While set, Graph rejects every token with 401.
    pub fn reject_all_tokens(&self, reject: bool) {
        self.state().reject_all_tokens = reject;
    }

    /// Token requests answered (successfully or not).
    pub fn token_requests(&self) -> u64 {
        self.state().token_requests
    }

    // --- the directory ---

    /// A new enabled user with this UPN (also its mail) and display name; its id.
    pub fn create_user(&self, upn: &str, display_name: &str) -> String {
        self.create_user_with(json!({
            "userPrincipalName": upn,
            "mail": upn,
            "displayName": display_name,
        }))
    }

    /// A new user with these properties (`accountEnabled` defaults to true); its id.
    pub fn create_user_with(&self, props: Value) -> String {
        let Value::Object(props) = props else {
            panic!("user properties must be an object")
        };
        let id = random_guid();
        self.state().tenant.add_user(id.clone(), props);
        id
    }

    /// Set a user property (a change the delta query reports).
    pub fn set_property(&self, id: &str, name: &str, value: Value) {
        let name = name.to_owned();
        assert!(
            self.state().tenant.update_user(id, |p| {
                p.insert(name, value);
            }),
            "no user {id}"
        );
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) {
        self.set_property(id, "accountEnabled", Value::Bool(enabled));
    }

    /// Change a user's UPN (and mail): the id stays.
    pub fn rename(&self, id: &str, upn: &str) {
        self.set_property(id, "userPrincipalName", json!(upn));
        self.set_property(id, "mail", json!(upn));
    }

    /// Delete a user for good (delta: `@removed` with reason `deleted`).
    pub fn delete_user(&self, id: &str) {
        assert!(
            self.state().tenant.delete_user(id, "deleted"),
            "no user {id}"
        );
    }

    /// Delete a user to the recycle bin (delta: `@removed` with reason `changed`).
    pub fn soft_delete_user(&self, id: &str) {
        assert!(
            self.state().tenant.delete_user(id, "changed"),
            "no user {id}"
        );
    }

    /// A new security group; its id.
    pub fn create_group(&self, display_name: &str) -> String {
        let id = random_guid();
        self.state().tenant.groups.insert(
            id.clone(),
            tenant::Group {
                display_name: display_name.into(),
                ..Default::default()
            },
        );
        id
    }

    /// Add a user or a group (nesting) to a group.
    pub fn add_member(&self, group: &str, member: &str) {
        let mut state = self.state();
        let known =
            state.tenant.users.contains_key(member) || state.tenant.groups.contains_key(member);
        assert!(known, "no user or group {member}");
        assert!(state.tenant.groups.contains_key(group), "no such group");
        state.tenant.set_member(group, member, true);
    }

    pub fn remove_member(&self, group: &str, member: &str) {
        let mut state = self.state();
        assert!(state.tenant.groups.contains_key(group), "no such group");
        state.tenant.set_member(group, member, false);
    }

    // --- delta tokens, faults, paging, the log ---

    /// Every delta token issued so far expires: following it answers 410 Gone
    /// with the error code set by [`GraphEmulator::set_expired_delta_code`]
    /// (`syncStateNotFound` unless changed).
    pub fn expire_delta_tokens(&self) {
        self.state().delta_epoch += 1;
    }

    pub fn set_expired_delta_code(&self, code: &'static str) {
        self.state().expired_delta_code = code;
    }

    /// The next `count` Graph requests answer with `fault`.
    pub fn inject(&self, fault: Fault, count: usize) {
        self.inject_after(0, fault, count);
    }

    /// After `skip` more Graph requests are served, the `count` following
    /// ones answer with `fault` (e.g. the second page of a listing).
    pub fn inject_after(&self, skip: usize, fault: Fault, count: usize) {
        let mut state = self.state();
        state.faults.clear();
        state.faults.extend(std::iter::repeat_n(None, skip));
        state.faults.extend(std::iter::repeat_n(Some(fault), count));
    }

    /// As [`GraphEmulator::inject`], and keep the faults already queued:
    /// the next `count` requests after them answer with `fault`.
    pub fn inject_more(&self, fault: Fault, count: usize) {
        self.state()
            .faults
            .extend(std::iter::repeat_n(Some(fault), count));
    }

    /// Serve this user (or, once deleted, its `@removed` entry) without its
    /// `id` from now on.
    pub fn serve_without_id(&self, id: &str) {
        self.state().tenant.without_id.insert(id.to_owned());
    }

    /// The next `count` `checkMemberGroups` of this user answer 404
    /// `Request_ResourceNotFound`, as Entra does while a new user has not yet
    /// reached the replica that answers.
    pub fn lag_membership(&self, id: &str, count: usize) {
        self.state().membership_lag.insert(id.to_owned(), count);
    }

    /// The next `count` advanced queries (`ConsistencyLevel: eventual`: a
    /// `$filter` or `$count` on users, transitive members) leave this user
    /// out, as Microsoft documents for a user edited a moment ago.
    pub fn lag_index(&self, id: &str, count: usize) {
        self.state().index_lag.insert(id.to_owned(), count);
    }

    /// Serve at most `cap` items per page, whatever `$top` asks.
    pub fn set_page_cap(&self, cap: usize) {
        self.state().page_cap = cap.max(1);
    }

    /// Graph requests seen, faulted ones included.
    pub fn graph_requests(&self) -> usize {
        self.state().log.len()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().log.clone()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }
}

// --- handlers ---

type Query = BTreeMap<String, String>;

fn parse_query(raw: Option<String>) -> Query {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A Graph error answer: `{"error": {"code", "message", "innerError"}}`.
struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
    /// The `Retry-After` header, as sent.
    retry_after: Option<String>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let request_id = random_guid();
        let mut response = (
            self.status,
            axum::Json(json!({
                "error": {
                    "code": self.code,
                    "message": self.message,
                    "innerError": {
                        "date": "2025-01-01T00:00:00",
                        "request-id": request_id,
                        "client-request-id": request_id,
                    }
                }
            })),
        )
            .into_response();
        if let Some(value) = self.retry_after {
            response
                .headers_mut()
                .insert("Retry-After", value.parse().unwrap());
        }
        response
    }
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Refusal {
    Refusal {
        status,
        code: code.into(),
        message: message.into(),
        retry_after: None,
    }
}

fn json_response(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

async fn token(
    AxumState(emulator): AxumState<GraphEmulator>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let audience = format!("{}{tenant}/oauth2/v2.0/token", emulator.shared.base);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut state = emulator.state();
    state.token_requests += 1;
    if let Err(refusal) = auth::check(&state.app, &tenant, &form, &audience, now) {
        let status = StatusCode::from_u16(refusal.status).unwrap();
        return (status, axum::Json(refusal.body(&random_guid()))).into_response();
    }
    let token = format!("emulated.{}", random_guid());
    let lifetime = state.app.token_lifetime;
    let roles = state.app.roles.clone();
    state.tokens.insert(
        token.clone(),
        Issued {
            expires: Instant::now() + lifetime,
            roles,
        },
    );
    json_response(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": token,
    }))
}

/// What every Graph request goes through: the log, injected faults, the
/// token and the permission.
fn admit(
    state: &mut State,
    method: &str,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
    role: &str,
) -> Result<(), Refusal> {
    state.log.push(Recorded {
        method: method.into(),
        path: path.into(),
        query: query.clone(),
        consistency_level: headers
            .get("ConsistencyLevel")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        at: Instant::now(),
    });
    match state.faults.pop_front().flatten() {
        Some(Fault::Throttled {
            status,
            retry_after,
        }) => {
            // The body Microsoft documents for a throttled request.
            return Err(Refusal {
                retry_after,
                ..graph_error(
                    StatusCode::from_u16(status).unwrap(),
                    if status == 429 {
                        "TooManyRequests"
                    } else {
                        "ServiceNotAvailable"
                    },
                    "Please retry again later.",
                )
            });
        }
        Some(Fault::Throttle { retry_after }) => {
            return Err(Refusal {
                retry_after: Some(retry_after.to_string()),
                ..graph_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests.",
                )
            });
        }
        Some(Fault::Unavailable) => {
            return Err(graph_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceNotAvailable",
                "The service is temporarily unavailable.",
            ));
        }
        None => {}
    }
    let token = headers
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        ));
    };
    let issued = state
        .tokens
        .get(token)
        .filter(|t| t.expires > Instant::now() && !state.reject_all_tokens);
    let Some(issued) = issued else {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        ));
    };
    if !issued.roles.contains(role) {
        return Err(graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ));
    }
    Ok(())
}

fn is_eventual(headers: &HeaderMap) -> bool {
    headers
        .get("ConsistencyLevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
}

/// `$select`, checked against the known properties.
fn parse_select(query: &Query) -> Result<Option<Vec<String>>, Refusal> {
    let Some(select) = query.get("$select") else {
        return Ok(None);
    };
    let names: Vec<String> = select.split(',').map(|s| s.trim().to_owned()).collect();
    for name in &names {
        if !is_known_property(name) {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                &format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.user'."
                ),
            ));
        }
    }
    Ok(Some(names))
}

fn parse_top(query: &Query) -> Result<Option<usize>, Refusal> {
    let Some(top) = query.get("$top") else {
        return Ok(None);
    };
    match top.parse::<usize>() {
        Ok(n) if (1..=999).contains(&n) => Ok(Some(n)),
        _ => Err(graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &format!("Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."),
        )),
    }
}

/// The options of a first listing request: select, page size, filter, count.
struct ListOptions {
    select: Option<Vec<String>>,
    page: usize,
    filter: Option<Filter>,
    count: bool,
}

/// Parse and check a listing's options. `always_advanced`: the endpoint
/// (transitive members) needs `ConsistencyLevel: eventual` for `$count` and
/// `$filter` alike.
fn list_options(
    query: &Query,
    headers: &HeaderMap,
    page_cap: usize,
    always_advanced: bool,
) -> Result<ListOptions, Refusal> {
    let select = parse_select(query)?;
    let page = parse_top(query)?.unwrap_or(100).min(page_cap);
    let count = query.get("$count").is_some_and(|c| c == "true");
    let filter = match query.get("$filter") {
        Some(raw) => Some(Filter::parse(raw).map_err(|e| {
            graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                &format!("Unsupported or invalid query filter clause specified: {e}"),
            )
        })?),
        None => None,
    };
    let eventual = is_eventual(headers);
    if count && !eventual {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "$count is not currently supported.",
        ));
    }
    let advanced_filter = filter
        .as_ref()
        .is_some_and(|f| always_advanced || f.is_advanced());
    if advanced_filter && !(eventual && count) {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported Query.",
        ));
    }
    Ok(ListOptions {
        select,
        page,
        filter,
        count,
    })
}

/// Start a listing of `ids` (already narrowed) and serve its first page.
fn start_listing(
    state: &mut State,
    base: &Url,
    path: &str,
    mut ids: Vec<String>,
    options: ListOptions,
    eventual: bool,
) -> Response {
    if eventual {
        // The advanced-query index, behind for the users it has not caught up on.
        let lag = &mut state.index_lag;
        ids.retain(|id| match lag.get_mut(id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        });
    }
    let count = options.count.then_some(ids.len());
    let listing = Listing {
        items: ids.into_iter().map(Item::User).collect(),
        offset: 0,
        select: options.select,
        page: options.page,
        count,
        delta: None,
        path: path.into(),
    };
    serve_page(state, base, listing)
}

/// Serve the listing's next page, and keep the rest under a new skiptoken.
fn serve_page(state: &mut State, base: &Url, mut listing: Listing) -> Response {
    let end = (listing.offset + listing.page).min(listing.items.len());
    let mut value = Vec::new();
    for item in &listing.items[listing.offset..end] {
        match item {
            Item::User(id) => {
                if let Some(user) = state.tenant.render(id, listing.select.as_deref()) {
                    value.push(user);
                }
            }
            Item::Removed(id, reason) => {
                let mut removed = json!({"id": id, "@removed": {"reason": reason}});
                if state.tenant.without_id.contains(id) {
                    removed.as_object_mut().unwrap().remove("id");
                }
                value.push(removed);
            }
        }
    }
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{base}v1.0/$metadata#users")),
    );
    if let Some(count) = listing.count {
        body.insert("@odata.count".into(), json!(count));
    }
    body.insert("value".into(), Value::Array(value));
    listing.offset = end;
    if listing.offset < listing.items.len() {
        let token = random_token();
        body.insert(
            "@odata.nextLink".into(),
            json!(format!(
                "{base}{}?$skiptoken={token}",
                listing.path.trim_start_matches('/')
            )),
        );
        state.listings.insert(token, listing);
    } else if let Some((as_of, epoch)) = listing.delta {
        let token = random_token();
        body.insert(
            "@odata.deltaLink".into(),
            json!(format!("{base}v1.0/users/delta?$deltatoken={token}")),
        );
        state.delta_tokens.insert(
            token,
            DeltaState {
                since: as_of,
                select: listing.select,
                epoch,
            },
        );
    }
    json_response(Value::Object(body))
}

/// A `$skiptoken` request: the listing it continues.
fn continue_listing(state: &mut State, base: &Url, query: &Query) -> Option<Response> {
    let token = query.get("$skiptoken")?;
    Some(match state.listings.remove(token) {
        Some(listing) => serve_page(state, base, listing),
        None => graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "The specified page token value has expired and can no longer be included in your request.",
        ).into_response(),
    })
}

async fn list_users(
    AxumState(emulator): AxumState<GraphEmulator>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(raw);
    let base = emulator.base_url();
    let mut state = emulator.state();
    if let Err(r) = admit(
        &mut state,
        "GET",
        "/v1.0/users",
        &query,
        &headers,
        USER_READ_ALL,
    ) {
        return r.into_response();
    }
    if let Some(r) = continue_listing(&mut state, &base, &query) {
        return r.into_response();
    }
    let page_cap = state.page_cap;
    let options = match list_options(&query, &headers, page_cap, false) {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let ids: Vec<String> = state
        .tenant
        .users
        .iter()
        .filter(|(_, u)| options.filter.as_ref().is_none_or(|f| f.matches(&u.props)))
        .map(|(id, _)| id.clone())
        .collect();
    let eventual = is_eventual(&headers);
    start_listing(&mut state, &base, "/v1.0/users", ids, options, eventual)
}

/// Graph's answer for a group that does not exist.
fn group_not_found(group: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{group}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
    .into_response()
}

async fn transitive_users(
    AxumState(emulator): AxumState<GraphEmulator>,
    Path(group): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(raw);
    let base = emulator.base_url();
    let path = format!("/v1.0/groups/{group}/transitiveMembers/microsoft.graph.user");
    let mut state = emulator.state();
    if let Err(r) = admit(
        &mut state,
        "GET",
        &path,
        &query,
        &headers,
        GROUP_MEMBER_READ_ALL,
    ) {
        return r.into_response();
    }
    if let Some(r) = continue_listing(&mut state, &base, &query) {
        return r.into_response();
    }
    if !state.tenant.groups.contains_key(&group) {
        return group_not_found(&group);
    }
    let page_cap = state.page_cap;
    let options = match list_options(&query, &headers, page_cap, true) {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let ids: Vec<String> = state
        .tenant
        .transitive_users(&group)
        .into_iter()
        .filter(|id| {
            options
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&state.tenant.users[id].props))
        })
        .collect();
    let eventual = is_eventual(&headers);
    start_listing(&mut state, &base, &path, ids, options, eventual)
}

/// The groups nested in a group, at any depth (one page: a tree of groups is small).
async fn transitive_groups(
    AxumState(emulator): AxumState<GraphEmulator>,
    Path(group): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(raw);
    let base = emulator.base_url();
    let path = format!("/v1.0/groups/{group}/transitiveMembers/microsoft.graph.group");
    let mut state = emulator.state();
    if let Err(r) = admit(
        &mut state,
        "GET",
        &path,
        &query,
        &headers,
        GROUP_MEMBER_READ_ALL,
    ) {
        return r.into_response();
    }
    if !state.tenant.groups.contains_key(&group) {
        return group_not_found(&group);
    }
    let value: Vec<Value> = state
        .tenant
        .nested_groups(&group)
        .into_iter()
        .map(|id| json!({"@odata.type": "#microsoft.graph.group", "id": id}))
        .collect();
    json_response(json!({
        "@odata.context": format!("{base}v1.0/$metadata#groups"),
        "value": value,
    }))
}

async fn get_user(
    AxumState(emulator): AxumState<GraphEmulator>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(raw);
    let mut state = emulator.state();
    if let Err(r) = admit(
        &mut state,
        "GET",
        &format!("/v1.0/users/{id}"),
        &query,
        &headers,
        USER_READ_ALL,
    ) {
        return r.into_response();
    }
    let select = match parse_select(&query) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match state.tenant.render(&id, select.as_deref()) {
        Some(user) => json_response(user),
        None => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        ).into_response(),
    }
}

async fn check_member_groups(
    AxumState(emulator): AxumState<GraphEmulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = emulator.state();
    let path = format!("/v1.0/users/{id}/checkMemberGroups");
    if let Err(r) = admit(
        &mut state,
        "POST",
        &path,
        &Query::new(),
        &headers,
        GROUP_MEMBER_READ_ALL,
    ) {
        return r.into_response();
    }
    let groups: Option<Vec<String>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v.get("groupIds")?.clone()).ok());
    let Some(groups) = groups.filter(|g| !g.is_empty() && g.len() <= 20) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "groupIds must hold between 1 and 20 group IDs.",
        )
        .into_response();
    };
    let lagging = match state.membership_lag.get_mut(&id) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    };
    if lagging || !state.tenant.users.contains_key(&id) {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        ).into_response();
    }
    let member_of = state.tenant.member_groups(&id, &groups);
    json_response(json!({
        "@odata.context": format!("{}v1.0/$metadata#Collection(Edm.String)", emulator.shared.base),
        "value": member_of,
    }))
}

async fn users_delta(
    AxumState(emulator): AxumState<GraphEmulator>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(raw);
    let base = emulator.base_url();
    let mut state = emulator.state();
    if let Err(r) = admit(
        &mut state,
        "GET",
        "/v1.0/users/delta",
        &query,
        &headers,
        USER_READ_ALL,
    ) {
        return r.into_response();
    }
    if let Some(r) = continue_listing(&mut state, &base, &query) {
        return r.into_response();
    }
    let page = 100.min(state.page_cap);
    let epoch = state.delta_epoch;
    let as_of = state.tenant.version;
    if query.get("$deltatoken").map(String::as_str) == Some("latest") {
        // Documented: no resources, only a deltaLink from now on.
        let select = match parse_select(&query) {
            Ok(s) => s,
            Err(r) => return r.into_response(),
        };
        let listing = Listing {
            items: Vec::new(),
            offset: 0,
            select,
            page,
            count: None,
            delta: Some((as_of, epoch)),
            path: "/v1.0/users/delta".into(),
        };
        return serve_page(&mut state, &base, listing);
    }
    let (items, select) = if let Some(token) = query.get("$deltatoken") {
        let known = state
            .delta_tokens
            .get(token)
            .filter(|d| d.epoch == state.delta_epoch);
        let Some(delta) = known else {
            let code = state.expired_delta_code;
            return graph_error(
                StatusCode::GONE,
                code,
                "The sync state is not found or has expired. Please restart the sync.",
            )
            .into_response();
        };
        let since = delta.since;
        let select = delta.select.clone();
        let mut changed: Vec<(u64, Item)> = state
            .tenant
            .users
            .iter()
            .filter(|(_, u)| u.changed_since(since, select.as_deref()))
            .map(|(id, u)| (u.changed, Item::User(id.clone())))
            .collect();
        changed.extend(
            state
                .tenant
                .removals
                .iter()
                .filter(|r| r.version > since)
                .map(|r| (r.version, Item::Removed(r.id.clone(), r.reason))),
        );
        changed.sort_by_key(|(v, _)| *v);
        (changed.into_iter().map(|(_, i)| i).collect(), select)
    } else {
        if query.contains_key("$filter") {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Only filtering by id is supported on delta.",
            )
            .into_response();
        }
        let select = match parse_select(&query) {
            Ok(s) => s,
            Err(r) => return r.into_response(),
        };
        let items = state.tenant.users.keys().cloned().map(Item::User).collect();
        (items, select)
    };
    let listing = Listing {
        items,
        offset: 0,
        select,
        page,
        count: None,
        delta: Some((as_of, epoch)),
        path: "/v1.0/users/delta".into(),
    };
    serve_page(&mut state, &base, listing)
}

/// `GET /groups/delta?$select=members&$filter=id eq '…' or id eq '…'`: the
/// first round lists each group with all its members in `members@delta`; a
/// round from a deltaLink, the groups whose direct members changed since, with
/// the members added and (`@removed`) removed; `$deltatoken=latest`, only a
/// deltaLink. Members are typed: users and groups (nesting) alike, and only
/// direct ones (Graph has no delta of transitive members).
async fn groups_delta(
    AxumState(emulator): AxumState<GraphEmulator>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(raw);
    let base = emulator.base_url();
    let mut state = emulator.state();
    if let Err(r) = admit(
        &mut state,
        "GET",
        "/v1.0/groups/delta",
        &query,
        &headers,
        GROUP_MEMBER_READ_ALL,
    ) {
        return r.into_response();
    }
    let as_of = state.tenant.version;
    let epoch = state.delta_epoch;
    let token = query.get("$deltatoken").cloned();
    let (since, groups) = match token.as_deref() {
        Some(token) if token != "latest" => {
            let known = state
                .group_delta_tokens
                .get(token)
                .filter(|(_, _, e)| *e == epoch)
                .map(|(v, g, _)| (Some(*v), g.clone()));
            match known {
                Some(k) => k,
                None => {
                    let code = state.expired_delta_code;
                    return graph_error(
                        StatusCode::GONE,
                        code,
                        "The sync state is not found or has expired. Please restart the sync.",
                    )
                    .into_response();
                }
            }
        }
        _ => {
            let ids = match query.get("$filter").map(|f| group_ids_of(f)) {
                Some(Some(ids)) => ids,
                Some(None) => {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_UnsupportedQuery",
                        "Only filtering by id (id eq '…', joined by or) is supported on delta.",
                    )
                    .into_response();
                }
                None => state.tenant.groups.keys().cloned().collect(),
            };
            (None, ids)
        }
    };
    let mut value = Vec::new();
    if token.as_deref() != Some("latest") {
        for id in &groups {
            let Some(group) = state.tenant.groups.get(id) else {
                continue;
            };
            let typed = |member: &str| {
                if state.tenant.groups.contains_key(member) {
                    "#microsoft.graph.group"
                } else {
                    "#microsoft.graph.user"
                }
            };
            let members: Vec<Value> = match since {
                None => group
                    .members
                    .iter()
                    .map(|m| json!({"@odata.type": typed(m), "id": m}))
                    .collect(),
                Some(since) => {
                    // The last change of each member since the token.
                    let mut last: BTreeMap<&str, bool> = BTreeMap::new();
                    for (v, member, added) in &group.log {
                        if *v > since {
                            last.insert(member, *added);
                        }
                    }
                    last.into_iter()
                        .map(|(m, added)| {
                            let mut item = json!({"@odata.type": typed(m), "id": m});
                            if !added {
                                item["@removed"] = json!({"reason": "deleted"});
                            }
                            item
                        })
                        .collect()
                }
            };
            if since.is_some() && members.is_empty() {
                continue;
            }
            value.push(
                json!({"id": id, "displayName": group.display_name, "members@delta": members}),
            );
        }
    }
    let next = random_token();
    state
        .group_delta_tokens
        .insert(next.clone(), (as_of, groups, epoch));
    json_response(json!({
        "@odata.context": format!("{base}v1.0/$metadata#groups"),
        "value": value,
        "@odata.deltaLink": format!("{base}v1.0/groups/delta?$deltatoken={next}"),
    }))
}

/// The ids of `id eq '…' or id eq '…'`, or `None` for any other filter.
fn group_ids_of(filter: &str) -> Option<Vec<String>> {
    filter
        .split(" or ")
        .map(|term| {
            let id = term.trim().strip_prefix("id eq '")?.strip_suffix('\'')?;
            (!id.is_empty() && !id.contains('\'')).then(|| id.to_owned())
        })
        .collect()
}

// --- identifiers ---

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).unwrap();
    b
}

/// A random GUID, as Graph object IDs are.
pub fn random_guid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

fn random_token() -> String {
    random_bytes::<24>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
