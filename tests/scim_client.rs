//! The SCIM client against a real SCIM server (scim2-server, tests/scim.sh),
//! through a fault-injecting proxy where the test needs the application to
//! misbehave. What the client did is checked on the server, through its own
//! API, not on what the client believes it sent.

#[path = "scim_support/mod.rs"]
mod scim_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use url::Url;
use usersync::delivery::scim::{
    Auth, ClientConfig, ENTERPRISE_USER_SCHEMA, Exchange, MatchAttribute, Observer, PatchOp,
    ScimClient, ScimError,
};

use scim_support::{FaultProxy, Tenant, unique};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// What the client told its observer.
#[derive(Default)]
struct Recorder {
    responses: Mutex<Vec<(String, Option<u16>)>>,
    waits: Mutex<Vec<Duration>>,
    exchanges: Mutex<Vec<Exchange>>,
}

impl Observer for Recorder {
    fn response(&self, method: &str, status: Option<u16>, _elapsed: Duration) {
        self.responses
            .lock()
            .unwrap()
            .push((method.to_owned(), status));
    }
    fn throttled(&self, wait: Duration) {
        self.waits.lock().unwrap().push(wait);
    }
    fn exchange(&self, e: &Exchange) {
        self.exchanges.lock().unwrap().push(e.clone());
    }
}

fn config(base: Url, token: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new(base, Auth::Bearer(token.to_owned()));
    cfg.timeout = Duration::from_secs(10);
    cfg.max_attempts = 3;
    cfg.max_retry_wait = Duration::from_secs(2);
    cfg
}

fn client_of(tenant: &Tenant) -> ScimClient {
    ScimClient::new(config(tenant.url.clone(), &tenant.token)).unwrap()
}

fn through(proxy: &FaultProxy, tenant: &Tenant) -> (ScimClient, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let client = ScimClient::new(config(proxy.base_url(), &tenant.token))
        .unwrap()
        .with_observer(recorder.clone());
    (client, recorder)
}

fn user(name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": name,
        "externalId": external_id,
        "active": true,
        "displayName": format!("{name} (test)"),
    })
}

#[tokio::test]
async fn capabilities_are_read_from_service_provider_config_and_resource_types() {
    let tenant = Tenant::fresh("caps");
    let caps = client_of(&tenant).capabilities().await.unwrap();
    assert!(
        caps.patch && caps.filter && caps.etag && caps.bulk,
        "{caps:?}"
    );
    assert_eq!(caps.filter_max_results, Some(1000));
    assert!(caps.enterprise_user, "{caps:?}");
}

#[tokio::test]
async fn a_probe_passes_with_the_right_token_and_is_a_credentials_error_with_a_wrong_one() {
    let tenant = Tenant::fresh("probe");
    client_of(&tenant).probe().await.unwrap();

    let wrong = ScimClient::new(config(tenant.url.clone(), "not-the-token")).unwrap();
    let error = wrong.probe().await.unwrap_err();
    assert!(error.is_credentials(), "{error}");
    assert!(
        matches!(error, ScimError::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_probe_fails_on_an_application_that_ignores_filters() {
    let tenant = Tenant::fresh("probe-nofilter");
    tenant.create(user("someone", "x-1")).await;
    // A base URL whose /Users answers without applying the filter: the list of
    // everyone, as an application that ignores `filter` does.
    let proxy = FaultProxy::start(&tenant).await;
    proxy.ignore_filters();
    let (client, _) = through(&proxy, &tenant);
    let error = client.probe().await.unwrap_err();
    assert!(matches!(error, ScimError::Protocol(_)), "{error:?}");
    assert!(
        error.to_string().contains("does not apply filters"),
        "{error}"
    );
}

#[tokio::test]
async fn a_wrong_base_url_or_no_listener_is_told_by_what_to_check() {
    let tenant = Tenant::fresh("wrong-base");
    let wrong = tenant.url.join("v2/elsewhere").unwrap();
    let error = ScimClient::new(config(wrong, &tenant.token))
        .unwrap()
        .probe()
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no /Users (HTTP 404); check that spec.endpoint"),
        "{error}"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let nobody = Url::parse(&format!("http://127.0.0.1:{port}/scim/v2")).unwrap();
    let mut cfg = config(nobody, &tenant.token);
    cfg.max_attempts = 2;
    let error = ScimClient::new(cfg).unwrap().probe().await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ScimError::Transport(_)), "{error:?}");
    assert!(
        text.starts_with("cannot reach the SCIM application"),
        "{text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        !text.contains("filter"),
        "the query stays out of the message: {text}"
    );
}

#[tokio::test]
async fn a_created_user_is_found_by_user_name_and_by_external_id() {
    let tenant = Tenant::fresh("create");
    let mut slash = tenant.url.clone();
    slash.set_path(&format!("{}/", tenant.url.path()));
    let client = ScimClient::new(config(slash, &tenant.token)).unwrap();
    assert_eq!(
        client.base_url(),
        &tenant.url,
        "a trailing slash is dropped"
    );
    let created = client.create(&user("ann", "ext-ann")).await.unwrap();
    let on_server = tenant.user(&created.id).await.expect("the server holds it");
    assert_eq!(on_server["userName"], "ann");
    assert_eq!(on_server["externalId"], "ext-ann");
    assert_eq!(created.active, Some(true));
    assert!(created.etag.is_some(), "{created:?}");

    let by_name = client.find(MatchAttribute::UserName, "ann").await.unwrap();
    assert_eq!(
        by_name.iter().map(|u| &u.id).collect::<Vec<_>>(),
        [&created.id]
    );
    let by_external = client
        .find(MatchAttribute::ExternalId, "ext-ann")
        .await
        .unwrap();
    assert_eq!(
        by_external.iter().map(|u| &u.id).collect::<Vec<_>>(),
        [&created.id]
    );
    assert!(
        client
            .find(MatchAttribute::UserName, "bob")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_duplicate_user_name_is_a_conflict() {
    let tenant = Tenant::fresh("conflict");
    let client = client_of(&tenant);
    client.create(&user("carol", "ext-1")).await.unwrap();
    let error = client.create(&user("carol", "ext-2")).await.unwrap_err();
    assert!(matches!(error, ScimError::Conflict { .. }), "{error:?}");
    assert_eq!(error.scim_type(), Some("uniqueness"));
    assert_eq!(tenant.users().await.len(), 1);
}

#[tokio::test]
async fn disable_then_re_enable_patch_the_same_id_in_one_operation_each() {
    let tenant = Tenant::fresh("patch");
    let proxy = FaultProxy::start(&tenant).await;
    let (client, recorder) = through(&proxy, &tenant);
    let created = client.create(&user("dave", "ext-dave")).await.unwrap();

    client
        .patch(&created.id, &[PatchOp::replace("active", json!(false))])
        .await
        .unwrap();
    assert_eq!(tenant.user(&created.id).await.unwrap()["active"], false);

    client
        .patch(&created.id, &[PatchOp::replace("active", json!(true))])
        .await
        .unwrap();
    let on_server = tenant.user(&created.id).await.unwrap();
    assert_eq!(on_server["active"], true);
    assert_eq!(on_server["id"], created.id.as_str());
    assert_eq!(tenant.users().await.len(), 1, "re-enabling is no re-create");

    client
        .patch(
            &created.id,
            &[
                PatchOp::replace("displayName", json!("Dave D")),
                PatchOp::replace("name.givenName", json!("Dave")),
                PatchOp::replace("name.familyName", json!("Dee")),
                PatchOp::replace(
                    &format!("{ENTERPRISE_USER_SCHEMA}:department"),
                    json!("R&D"),
                ),
                PatchOp::replace("active", json!(false)),
            ],
        )
        .await
        .unwrap();
    let on_server = tenant.user(&created.id).await.unwrap();
    assert_eq!(on_server["displayName"], "Dave D");
    assert_eq!(on_server["name"]["givenName"], "Dave");
    assert_eq!(on_server["name"]["familyName"], "Dee");
    assert_eq!(on_server[ENTERPRISE_USER_SCHEMA]["department"], "R&D");
    assert_eq!(on_server["active"], false);
    assert_eq!(on_server["userName"], "dave", "what was not patched stays");

    let exchanges = recorder.exchanges.lock().unwrap();
    let patches: Vec<&Exchange> = exchanges.iter().filter(|e| e.method == "PATCH").collect();
    assert_eq!(patches.len(), 3);
    let last = patches[2].request.as_ref().unwrap();
    assert_eq!(last["Operations"].as_array().unwrap().len(), 1, "{last}");
    assert_eq!(last["Operations"][0]["op"], "replace");
    assert_eq!(last["Operations"][0]["value"]["active"], json!(false));
    assert_eq!(proxy.count("PATCH", &format!("/Users/{}", created.id)), 3);
}

#[tokio::test]
async fn a_conditional_write_on_an_old_version_is_stale_and_changes_nothing() {
    let tenant = Tenant::fresh("if-match");
    let client = client_of(&tenant);
    let created = client.create(&user("mia", "ext-mia")).await.unwrap();
    let first = created.etag.clone().expect("the server versions its users");
    client
        .patch_if_match(
            &created.id,
            &[PatchOp::replace("displayName", json!("Mia 2"))],
            &first,
        )
        .await
        .unwrap();
    let now = client.get(&created.id).await.unwrap().unwrap();
    assert_ne!(now.etag.as_deref(), Some(first.as_str()));

    let error = client
        .patch_if_match(
            &created.id,
            &[PatchOp::replace("active", json!(false))],
            &first,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ScimError::Stale { .. }), "{error:?}");
    let mut whole = user("mia", "ext-mia");
    whole["active"] = json!(false);
    let error = client
        .replace_if_match(&created.id, &whole, &first)
        .await
        .unwrap_err();
    assert!(matches!(error, ScimError::Stale { .. }), "{error:?}");
    let on_server = tenant.user(&created.id).await.unwrap();
    assert_eq!(on_server["active"], true, "a stale write changes nothing");
    assert_eq!(on_server["displayName"], "Mia 2");

    client
        .replace_if_match(&created.id, &whole, now.etag.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(tenant.user(&created.id).await.unwrap()["active"], false);
}

#[tokio::test]
async fn an_application_without_patch_says_so_and_takes_a_replace() {
    let tenant = Tenant::fresh("nopatch");
    let proxy = FaultProxy::start(&tenant).await;
    proxy.without_patch();
    let (client, _) = through(&proxy, &tenant);
    assert!(!client.capabilities().await.unwrap().patch);

    let created = client.create(&user("erin", "ext-erin")).await.unwrap();
    let error = client
        .patch(&created.id, &[PatchOp::replace("active", json!(false))])
        .await
        .unwrap_err();
    assert!(
        matches!(error, ScimError::Rejected { status: 501, .. }),
        "{error:?}"
    );

    let mut whole = user("erin", "ext-erin");
    whole["active"] = json!(false);
    whole["displayName"] = json!("Erin E");
    let replaced = client.replace(&created.id, &whole).await.unwrap();
    assert_eq!(replaced.id, created.id);
    let on_server = tenant.user(&created.id).await.unwrap();
    assert_eq!(on_server["active"], false);
    assert_eq!(on_server["displayName"], "Erin E");
}

#[tokio::test]
async fn a_429_with_a_fractional_retry_after_is_waited_out_and_retried() {
    let tenant = Tenant::fresh("throttle");
    let proxy = FaultProxy::start(&tenant).await;
    let (client, recorder) = through(&proxy, &tenant);
    proxy.throttle(2, "0.5");
    let started = Instant::now();
    let created = client.create(&user("fay", "ext-fay")).await.unwrap();
    assert!(tenant.user(&created.id).await.is_some());
    assert_eq!(proxy.count("POST", "/Users"), 3, "{:?}", proxy.seen());
    assert_eq!(
        *recorder.waits.lock().unwrap(),
        [Duration::from_millis(500), Duration::from_millis(500)]
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    let statuses: Vec<Option<u16>> = recorder
        .responses
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(statuses, [Some(429), Some(429), Some(201)]);
}

#[tokio::test]
async fn throttling_past_the_attempts_is_a_throttled_error_with_the_time_waited() {
    let tenant = Tenant::fresh("throttle-out");
    let proxy = FaultProxy::start(&tenant).await;
    let (client, _) = through(&proxy, &tenant);
    proxy.throttle(10, "0.2");
    let error = client.get("nobody").await.unwrap_err();
    assert_eq!(
        error,
        ScimError::Throttled {
            waited: Duration::from_millis(400)
        }
    );
    assert_eq!(proxy.count("GET", "/Users/nobody"), 3);
}

#[tokio::test]
async fn a_503_storm_longer_than_the_attempts_is_a_server_error_without_a_hang() {
    let tenant = Tenant::fresh("storm");
    let proxy = FaultProxy::start(&tenant).await;
    let (client, recorder) = through(&proxy, &tenant);
    proxy.fail(50, 503);
    let started = Instant::now();
    let error = client
        .find(MatchAttribute::UserName, "gus")
        .await
        .unwrap_err();
    assert!(
        matches!(error, ScimError::Server { status: 503, .. }),
        "{error:?}"
    );
    assert_eq!(proxy.count("GET", "/Users"), 3);
    assert_eq!(recorder.waits.lock().unwrap().len(), 2);
    // Two back-offs of at most 250 ms and 500 ms.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_deleted_user_is_gone_and_deleting_it_again_is_done() {
    let tenant = Tenant::fresh("delete");
    let client = client_of(&tenant);
    let created = client.create(&user("hal", "ext-hal")).await.unwrap();
    assert!(client.get(&created.id).await.unwrap().is_some());
    client.delete(&created.id).await.unwrap();
    assert!(client.get(&created.id).await.unwrap().is_none());
    assert!(tenant.user(&created.id).await.is_none());
    client.delete(&created.id).await.unwrap();
}

#[tokio::test]
async fn list_pages_cover_every_user() {
    let tenant = Tenant::fresh("list");
    let client = client_of(&tenant);
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(
            client
                .create(&user(&format!("user{i}"), &format!("ext-{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let page = client.list(start, 3).await.unwrap();
        assert_eq!(page.total_results, 7);
        assert_eq!(page.start_index, start);
        if page.users.is_empty() {
            break;
        }
        start += page.users.len() as u64;
        seen.extend(page.users.into_iter().map(|u| u.id));
    }
    made.sort();
    seen.sort();
    assert_eq!(seen, made);
}

#[tokio::test]
async fn a_quote_a_backslash_and_a_plus_in_a_value_are_escaped_in_the_filter() {
    let tenant = Tenant::fresh("escape");
    let client = client_of(&tenant);
    let tricky = r#"o"brien\x+y z"#;
    let created = client.create(&user(tricky, r#"e"1"#)).await.unwrap();
    client.create(&user("o", "e")).await.unwrap();
    let found = client.find(MatchAttribute::UserName, tricky).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, created.id);
    assert_eq!(found[0].user_name.as_deref(), Some(tricky));
    let by_external = client
        .find(MatchAttribute::ExternalId, r#"e"1"#)
        .await
        .unwrap();
    assert_eq!(by_external.len(), 1);
}

#[tokio::test]
async fn entra_style_answers_with_string_booleans_and_capitalised_ops_are_read() {
    let tenant = Tenant::fresh("entra");
    let proxy = FaultProxy::start(&tenant).await;
    proxy.entra_style();
    let (client, recorder) = through(&proxy, &tenant);
    let caps = client.capabilities().await.unwrap();
    assert!(caps.patch && caps.filter, "{caps:?}");
    let created = client.create(&user("ivy", "ext-ivy")).await.unwrap();
    assert_eq!(
        created.raw["active"], "True",
        "the proxy rewrote the answer"
    );
    assert_eq!(created.active, Some(true));
    client
        .patch(&created.id, &[PatchOp::replace("active", json!(false))])
        .await
        .unwrap();
    let found = client.find(MatchAttribute::UserName, "ivy").await.unwrap();
    assert_eq!(found[0].active, Some(false));
    // What the client sent stays RFC-shaped: a real boolean, a lowercase op.
    let exchanges = recorder.exchanges.lock().unwrap();
    let patch = exchanges.iter().find(|e| e.method == "PATCH").unwrap();
    assert_eq!(
        patch.request.as_ref().unwrap()["Operations"][0],
        json!({"op": "replace", "value": {"active": false}})
    );
}

#[tokio::test]
async fn sparse_lists_and_versions_only_in_the_etag_header_are_read() {
    let tenant = Tenant::fresh("sparse");
    let proxy = FaultProxy::start(&tenant).await;
    proxy.sparse_lists();
    let (client, _) = through(&proxy, &tenant);
    assert!(
        client
            .find(MatchAttribute::UserName, "nobody")
            .await
            .unwrap()
            .is_empty()
    );
    client.probe().await.unwrap();
    let created = client.create(&user("jo", "ext-jo")).await.unwrap();
    assert!(created.raw["meta"].get("version").is_none());
    assert!(
        created.etag.as_deref().is_some_and(|e| e.starts_with("W/")),
        "{created:?}"
    );
    let page = client.list(1, 10).await.unwrap();
    assert_eq!(
        page.users.iter().map(|u| &u.id).collect::<Vec<_>>(),
        [&created.id]
    );
}

#[tokio::test]
async fn a_slow_application_past_the_timeout_is_a_transport_error_after_the_attempts() {
    let tenant = Tenant::fresh("slow");
    let proxy = FaultProxy::start(&tenant).await;
    proxy.slow(Duration::from_millis(800));
    let mut cfg = config(proxy.base_url(), &tenant.token);
    cfg.timeout = Duration::from_millis(300);
    cfg.max_attempts = 2;
    let client = ScimClient::new(cfg).unwrap();
    let started = Instant::now();
    let error = client.get("anyone").await.unwrap_err();
    assert!(matches!(error, ScimError::Transport(_)), "{error:?}");
    assert!(error.to_string().contains("in time"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn oauth_tokens_are_asked_for_once_and_renewed_when_refused() {
    let tenant = Tenant::fresh("oauth");
    let proxy = FaultProxy::start(&tenant).await;
    proxy.require_oauth("usersync-app", "client-secret-91c2", 3600);
    let mut cfg = config(proxy.base_url(), "");
    cfg.auth = Auth::ClientCredentials {
        token_url: proxy.token_url(),
        client_id: "usersync-app".into(),
        client_secret: "client-secret-91c2".into(),
        scope: Some("scim.write".into()),
    };
    let client = ScimClient::new(cfg.clone()).unwrap();
    client.probe().await.unwrap();
    let created = client.create(&user("kim", "ext-kim")).await.unwrap();
    client.get(&created.id).await.unwrap().unwrap();
    assert_eq!(proxy.token_requests(), 1);

    proxy.revoke_tokens();
    client.get(&created.id).await.unwrap().unwrap();
    assert_eq!(proxy.token_requests(), 2);

    cfg.auth = Auth::ClientCredentials {
        token_url: proxy.token_url(),
        client_id: "usersync-app".into(),
        client_secret: "wrong-secret-5e1d".into(),
        scope: None,
    };
    let error = ScimClient::new(cfg).unwrap().probe().await.unwrap_err();
    assert!(error.is_credentials(), "{error}");
    assert!(error.to_string().contains("invalid_client"), "{error}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("wrong-secret-5e1d"), "{shown}");
}

#[tokio::test]
async fn a_secret_never_appears_in_an_error_or_an_exchange() {
    let tenant = Tenant::fresh("secrets");
    let proxy = FaultProxy::start(&tenant).await;
    let token = unique("proxy-token");
    proxy.require_token(&token);
    let recorder = Arc::new(Recorder::default());
    let wrong = unique("wrong-token");
    let client = ScimClient::new(config(proxy.base_url(), &wrong))
        .unwrap()
        .with_observer(recorder.clone());
    let error = client.probe().await.unwrap_err();
    assert!(error.is_credentials(), "{error}");
    let right = ScimClient::new(config(proxy.base_url(), &token))
        .unwrap()
        .with_observer(recorder.clone());
    right.probe().await.unwrap();
    let mut secret_user = user("lee", "ext-lee");
    secret_user["password"] = json!("pw-on-the-wire-4d2");
    right.create(&secret_user).await.unwrap();

    let exchanges = format!("{:?}", recorder.exchanges.lock().unwrap());
    let shown = format!("{error} {error:?} {right:?} {client:?} {exchanges}");
    for secret in [
        &token,
        &wrong,
        &tenant.token,
        &"pw-on-the-wire-4d2".to_owned(),
    ] {
        assert!(!shown.contains(secret.as_str()), "{secret} in {shown}");
    }
}

#[tokio::test]
async fn tls_to_the_application_needs_its_ca_and_a_refused_certificate_names_the_host() {
    let tenant = Tenant::fresh("tls");
    let proxy = FaultProxy::start_tls(&tenant).await;
    let untrusting = ScimClient::new(config(proxy.base_url(), &tenant.token)).unwrap();
    let error = untrusting.probe().await.unwrap_err();
    let ScimError::Tls { host, detail } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        host,
        &format!("127.0.0.1:{}", proxy.base_url().port().unwrap())
    );
    assert!(
        detail.contains("UnknownIssuer") && detail.contains("spec.caSecretRef"),
        "{detail}"
    );
    assert_eq!(
        proxy.seen().len(),
        0,
        "nothing was sent over a refused connection"
    );

    let mut cfg = config(proxy.base_url(), &tenant.token);
    cfg.ca_pem = Some(proxy.ca_pem().unwrap().as_bytes().to_vec());
    ScimClient::new(cfg).unwrap().probe().await.unwrap();
}
