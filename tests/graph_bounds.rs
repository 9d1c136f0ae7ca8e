//! Bounded reads on Graph (DESIGN §3): a broken or hostile Graph endpoint
//! cannot exhaust the operator. Each test runs the Graph source against a
//! small fake of its own on 127.0.0.1 that misbehaves in one way: an endless
//! or oversized answer, page links that go round in a cycle, an endless chain
//! of new links, a server too slow to finish. Each read fails with its named
//! error, and the fake shows that the read stopped.
//!
//! The size-cap tests print the test process's peak resident memory (VmHWM)
//! before and after the read.

mod peak_memory;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use url::Url;
use usersync::directory::graph::{
    Cloud, Credential, GraphError, GraphScope, GraphSettings, GraphSource, RetryPolicy,
};
use usersync::secret::SecretString;

use peak_memory::peak_rss_mib;

const TENANT_ID: &str = "3f9a1c52-6d1e-4b7a-9c0d-2e5f8a7b6c41";
const CLIENT_ID: &str = "b7d2e4f1-0a3c-4e5b-8f6d-1c2b3a4d5e6f";
const MIB: u64 = 1024 * 1024;

/// How the fake answers a page of users (`/v1.0/users` and `/v1.0/users/delta`).
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// A 200 whose body never ends, sent without a `Content-Length`.
    EndlessBody,
    /// A 200 that declares (and sends) a body of this many bytes.
    DeclaredBody(u64),
    /// The first page links to a second, which links back to the first.
    CycleBackToFirst,
    /// Every page links to a new one, for ever.
    EndlessChain,
    /// Every page waits this long, then links to a new one, up to 20 pages.
    Slow(Duration),
}

struct Fake {
    misbehaviour: Misbehaviour,
    base: Url,
    /// Page requests seen (token requests not counted).
    pages: AtomicU64,
    /// Body bytes handed to the connection so far.
    sent: AtomicU64,
    /// The path and query of the first page request, to link back to.
    first: std::sync::Mutex<Option<String>>,
}

async fn start(misbehaviour: Misbehaviour) -> Arc<Fake> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = Arc::new(Fake {
        misbehaviour,
        base: Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
        pages: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        first: std::sync::Mutex::new(None),
    });
    let router = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/users", get(page))
        .route("/v1.0/users/delta", get(page))
        .with_state(fake.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    fake
}

async fn token() -> Response {
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": "fake-access-token",
    }))
    .into_response()
}

/// A page of one user, linking to `next` (a path and query) when given.
fn page_of_one(fake: &Fake, n: u64, next: Option<String>) -> Response {
    let mut body = json!({
        "value": [{
            "id": format!("00000000-0000-4000-8000-{n:012}"),
            "userPrincipalName": format!("user{n}@contoso.example"),
            "accountEnabled": true,
        }],
    });
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(fake.base.join(&next).unwrap().as_str());
    }
    axum::Json(body).into_response()
}

async fn page(State(fake): State<Arc<Fake>>, OriginalUri(uri): OriginalUri) -> Response {
    let n = fake.pages.fetch_add(1, Ordering::SeqCst);
    let path = uri.path().trim_start_matches('/').to_owned();
    match fake.misbehaviour {
        Misbehaviour::EndlessBody => {
            let counter = fake.clone();
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            let body = futures::stream::repeat_with(move || {
                counter.sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                Ok::<_, std::io::Error>(chunk.clone())
            });
            // A JSON object that never closes.
            let opening = futures::stream::once(async { Ok(Bytes::from_static(b"{\"value\":[")) });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::StreamExt::chain(opening, body)))
                .unwrap()
        }
        Misbehaviour::DeclaredBody(size) => {
            fake.sent.fetch_add(size, Ordering::SeqCst);
            let mut body = b"{\"value\":[]}".to_vec();
            body.resize(size as usize, b' ');
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Misbehaviour::CycleBackToFirst => {
            let next = if n == 0 {
                let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                *fake.first.lock().unwrap() = Some(format!("{path}{query}"));
                format!("{path}?$skiptoken=B")
            } else {
                fake.first.lock().unwrap().clone().unwrap()
            };
            page_of_one(&fake, n, Some(next))
        }
        Misbehaviour::EndlessChain => {
            page_of_one(&fake, n, Some(format!("{path}?$skiptoken=page{}", n + 1)))
        }
        Misbehaviour::Slow(wait) => {
            tokio::time::sleep(wait).await;
            let next = (n < 19).then(|| format!("{path}?$skiptoken=page{}", n + 1));
            page_of_one(&fake, n, next)
        }
    }
}

fn settings(fake: &Fake) -> GraphSettings {
    let mut s = GraphSettings::new(
        TENANT_ID,
        CLIENT_ID,
        Credential::Secret(SecretString::new("fake-client-secret")),
        Cloud::Global,
    );
    s.authority_host = Some(fake.base.clone());
    s.graph_host = Some(fake.base.clone());
    s.timeout = Duration::from_secs(10);
    s.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        budget: Duration::from_secs(20),
    };
    // Short enough that a cycle the source failed to see ends the test.
    s.read_budget = Duration::from_secs(10);
    s
}

/// The read's outcome, or a panic if it does not end at all: a missing bound
/// fails the test rather than hang it.
async fn ends<T>(read: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the read never ended")
}

/// Wait a moment and check that the fake saw nothing more: the read stopped.
async fn assert_stopped(fake: &Fake) -> (u64, u64) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (pages, sent) = (
        fake.pages.load(Ordering::SeqCst),
        fake.sent.load(Ordering::SeqCst),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.pages.load(Ordering::SeqCst), pages, "requests went on");
    assert_eq!(
        fake.sent.load(Ordering::SeqCst),
        sent,
        "the body kept flowing"
    );
    (pages, sent)
}

#[tokio::test]
async fn an_endless_answer_fails_the_read_at_the_default_size_cap() {
    let fake = start(Misbehaviour::EndlessBody).await;
    let before = peak_rss_mib();
    let source = GraphSource::new(&settings(&fake)).unwrap();

    let error = ends(source.read(&GraphScope::all_users()))
        .await
        .unwrap_err();

    let after = peak_rss_mib();
    assert!(
        matches!(&error, GraphError::ResponseTooLarge { limit, .. } if *limit == 64 * MIB),
        "{error:?}"
    );
    assert_eq!(error.reason(), "ResponseTooLarge");
    let message = error.to_string();
    assert!(message.contains("64 MiB"), "{message}");
    assert!(message.contains("spec.entraID.maxResponseMiB"), "{message}");
    assert!(!message.contains("fake-access-token") && !message.contains("fake-client-secret"));
    let (pages, sent) = assert_stopped(&fake).await;
    // Not retried: one request, and the connection dropped soon after the cap.
    assert_eq!(pages, 1);
    println!(
        "endless answer, cap 64 MiB: server sent {} MiB before the read stopped; peak RSS {} MiB before, {} MiB after",
        sent / MIB,
        before,
        after
    );
}

#[tokio::test]
async fn an_answer_that_declares_a_length_past_the_cap_is_refused_before_it_is_read() {
    let fake = start(Misbehaviour::DeclaredBody(3 * MIB)).await;
    let mut settings = settings(&fake);
    settings.max_response_bytes = MIB;
    let before = peak_rss_mib();
    let source = GraphSource::new(&settings).unwrap();

    let error = ends(source.read(&GraphScope::all_users()))
        .await
        .unwrap_err();

    let after = peak_rss_mib();
    assert!(
        matches!(&error, GraphError::ResponseTooLarge { what, limit, .. } if what == "reading users" && *limit == MIB),
        "{error:?}"
    );
    assert_stopped(&fake).await;
    assert_eq!(fake.pages.load(Ordering::SeqCst), 1);
    println!(
        "3 MiB answer, cap 1 MiB: peak RSS {} MiB before, {} MiB after",
        before, after
    );
}

#[tokio::test]
async fn page_links_that_cycle_back_to_the_first_page_fail_the_read() {
    let fake = start(Misbehaviour::CycleBackToFirst).await;
    let source = GraphSource::new(&settings(&fake)).unwrap();

    let error = ends(source.read(&GraphScope::all_users()))
        .await
        .unwrap_err();

    assert_eq!(
        error,
        GraphError::LinkCycle {
            what: "reading users".into(),
            pages: 2
        }
    );
    assert_eq!(error.reason(), "LinkCycle");
    assert!(error.to_string().contains("cycle"), "{error}");
    // Page A, page B, and not A again.
    assert_stopped(&fake).await;
    assert_eq!(fake.pages.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_delta_round_whose_links_cycle_fails_and_asks_for_nothing_more() {
    let fake = start(Misbehaviour::CycleBackToFirst).await;
    let source = GraphSource::new(&settings(&fake)).unwrap();

    let error = ends(source.read_delta(&GraphScope::all_users(), None))
        .await
        .unwrap_err();

    assert!(
        matches!(&error, GraphError::LinkCycle { pages: 2, .. }),
        "{error:?}"
    );
    assert_stopped(&fake).await;
    assert_eq!(fake.pages.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_endless_chain_of_new_links_ends_at_the_read_budget() {
    let fake = start(Misbehaviour::EndlessChain).await;
    let mut settings = settings(&fake);
    settings.read_budget = Duration::from_secs(1);
    let source = GraphSource::new(&settings).unwrap();
    let started = Instant::now();

    let error = ends(source.read(&GraphScope::all_users()))
        .await
        .unwrap_err();

    let elapsed = started.elapsed();
    assert_eq!(
        error,
        GraphError::ReadBudgetExceeded {
            what: "reading users".into(),
            budget: Duration::from_secs(1)
        }
    );
    assert_eq!(error.reason(), "ReadBudgetExceeded");
    let message = error.to_string();
    assert!(
        message.contains("1s") && message.contains("spec.entraID.readBudget"),
        "{message}"
    );
    let (pages, _) = assert_stopped(&fake).await;
    assert!(pages > 1, "the chain was followed for a while: {pages}");
    println!("endless chain: {pages} pages followed in {elapsed:?} before the budget ended it");
}

#[tokio::test]
async fn a_server_too_slow_to_finish_within_the_read_budget_fails_the_read() {
    // 20 pages at 400 ms each would finish after 8 s; the budget is 1 s.
    let fake = start(Misbehaviour::Slow(Duration::from_millis(400))).await;
    let mut settings = settings(&fake);
    settings.read_budget = Duration::from_secs(1);
    let source = GraphSource::new(&settings).unwrap();

    let error = ends(source.read(&GraphScope::all_users()))
        .await
        .unwrap_err();

    assert!(
        matches!(&error, GraphError::ReadBudgetExceeded { .. }),
        "{error:?}"
    );
    let (pages, _) = assert_stopped(&fake).await;
    assert!(pages <= 3, "{pages} pages asked for");
}

#[test]
fn a_zero_cap_or_budget_is_invalid_config() {
    let mut s = GraphSettings::new(
        TENANT_ID,
        CLIENT_ID,
        Credential::Secret(SecretString::new("x")),
        Cloud::Global,
    );
    s.max_response_bytes = 0;
    assert!(
        matches!(GraphSource::new(&s), Err(GraphError::InvalidConfig(m)) if m.contains("response size cap"))
    );
    s.max_response_bytes = MIB;
    s.read_budget = Duration::ZERO;
    assert!(
        matches!(GraphSource::new(&s), Err(GraphError::InvalidConfig(m)) if m.contains("read budget"))
    );
}
