//! The Graph source against the Graph emulator (tests/graph_emulator): full
//! reads, scopes, tokens and credentials, throttling, delta rounds, identity,
//! lookups, and what errors and settings may show.

mod graph_emulator;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use graph_emulator::{
    APP_CERT, APP_KEY, CLIENT_ID, CLIENT_SECRET, Fault, GROUP_MEMBER_READ_ALL, GraphEmulator,
    OTHER_CERT, OTHER_KEY, TENANT_ID,
};
use serde_json::{Value, json};
use usersync::core::{DirectoryEntry, ReadKind};
use usersync::directory::graph::{
    Cloud, Credential, DeltaLink, DeltaOutcome, GraphError, GraphRead, GraphScope, GraphSettings,
    GraphSource, RetryPolicy, TokenCache,
};
use usersync::secret::SecretString;

// --- helpers ---

/// Settings pointing both hosts at the emulator, with quick retries.
fn settings_with(em: &GraphEmulator, credential: Credential) -> GraphSettings {
    let mut s = GraphSettings::new(TENANT_ID, CLIENT_ID, credential, Cloud::Global);
    s.authority_host = Some(em.base_url());
    s.graph_host = Some(em.base_url());
    s.ca_pem = em.ca_pem().map(String::into_bytes);
    s.timeout = Duration::from_secs(5);
    s.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        budget: Duration::from_secs(20),
    };
    s
}

fn settings(em: &GraphEmulator) -> GraphSettings {
    settings_with(em, Credential::Secret(SecretString::new(CLIENT_SECRET)))
}

fn source(em: &GraphEmulator) -> GraphSource {
    GraphSource::new(&settings(em)).unwrap()
}

fn groups(ids: &[&String]) -> GraphScope {
    GraphScope {
        groups: ids.iter().map(|s| (*s).clone()).collect(),
        ..Default::default()
    }
}

fn filtered(filter: &str) -> GraphScope {
    GraphScope {
        filter: Some(filter.into()),
        ..Default::default()
    }
}

fn anchors(read: &GraphRead) -> BTreeSet<String> {
    read.view.entries.keys().cloned().collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

fn changes(outcome: DeltaOutcome) -> GraphRead {
    match outcome {
        DeltaOutcome::Changes(read) => read,
        DeltaOutcome::FullReadNeeded { reason } => panic!("full read needed: {reason}"),
    }
}

fn entry<'a>(read: &'a GraphRead, id: &str) -> &'a DirectoryEntry {
    &read.view.entries[id]
}

/// Graph requests on a path (query excluded) that ends with `suffix`.
fn requests_to(em: &GraphEmulator, suffix: &str) -> Vec<graph_emulator::Recorded> {
    em.requests()
        .into_iter()
        .filter(|r| r.path.ends_with(suffix))
        .collect()
}

// --- full reads ---

#[tokio::test]
async fn full_read_with_paging_returns_every_user_exactly_once_with_correct_fields() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(50);
    let mut expected = BTreeMap::new();
    for i in 0..230 {
        let upn = format!("user{i:03}@contoso.example");
        let id = if i % 10 == 0 {
            // Some users have no mailbox.
            em.create_user_with(json!({
                "userPrincipalName": upn,
                "displayName": format!("User {i}"),
            }))
        } else {
            em.create_user(&upn, &format!("User {i}"))
        };
        expected.insert(id, (upn, i % 10 != 0, format!("User {i}")));
    }

    let read = source(&em).read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(read.view.read, ReadKind::Full);
    assert!(read.view.complete);
    assert!(read.delta.is_none());
    assert_eq!(read.skipped_without_anchor, 0);
    assert_eq!(anchors(&read), expected.keys().cloned().collect());
    for (id, (upn, has_mail, name)) in &expected {
        let e = entry(&read, id);
        assert_eq!(e.anchor, *id);
        assert!(e.enabled);
        assert_eq!(e.username.as_deref(), Some(upn.as_str()));
        assert_eq!(e.user_principal_name.as_deref(), Some(upn.as_str()));
        assert_eq!(e.email.as_deref(), has_mail.then_some(upn.as_str()));
        assert_eq!(e.display_name.as_deref(), Some(name.as_str()));
    }
    // 230 users at 50 a page: five pages, each requested once (no user read
    // twice), the first asking for the largest page.
    let pages = requests_to(&em, "/v1.0/users");
    assert_eq!(pages.len(), 5);
    assert_eq!(pages[0].query.get("$top").map(String::as_str), Some("999"));
    assert!(
        pages[1..]
            .iter()
            .all(|p| p.query.contains_key("$skiptoken"))
    );
}

#[tokio::test]
async fn disabled_users_are_read_as_not_enabled() {
    let em = GraphEmulator::start().await;
    let on = em.create_user("on@contoso.example", "On");
    let off = em.create_user_with(json!({
        "userPrincipalName": "off@contoso.example",
        "displayName": "Off",
        "accountEnabled": false,
    }));
    let later = em.create_user("later@contoso.example", "Later");
    em.set_enabled(&later, false);

    let read = source(&em).read(&GraphScope::all_users()).await.unwrap();

    assert!(entry(&read, &on).enabled);
    assert!(!entry(&read, &off).enabled);
    assert!(!entry(&read, &later).enabled);
}

#[tokio::test]
async fn account_enabled_is_requested_via_select() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");
    let mut scope = GraphScope::all_users();
    scope
        .attributes
        .extra
        .insert("dept".into(), "department".into());

    source(&em).read(&scope).await.unwrap();

    let request = &requests_to(&em, "/v1.0/users")[0];
    let select: Vec<&str> = request.query["$select"].split(',').collect();
    for property in [
        "id",
        "accountEnabled",
        "userPrincipalName",
        "mail",
        "displayName",
        "department",
    ] {
        assert!(select.contains(&property), "{select:?} lacks {property}");
    }
}

#[tokio::test]
async fn emulator_returns_account_enabled_only_when_selected() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");
    let token = raw_token(&em).await;
    let client = raw_client();
    let users = |query: &'static str| {
        let url = format!("{}v1.0/users{query}", em.base_url());
        let request = client.get(url).bearer_auth(&token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let default = users("").await;
    assert!(default["value"][0].get("accountEnabled").is_none());
    assert!(default["value"][0].get("userPrincipalName").is_some());
    let selected = users("?$select=id,accountEnabled").await;
    assert_eq!(selected["value"][0]["accountEnabled"], json!(true));
    assert!(selected["value"][0].get("userPrincipalName").is_none());
}

// --- scopes ---

#[tokio::test]
async fn group_scope_reads_transitive_members_of_nested_groups_with_consistency_level() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(2);
    let direct = em.create_user("direct@contoso.example", "Direct");
    let nested1 = em.create_user("nested1@contoso.example", "Nested 1");
    let nested2 = em.create_user("nested2@contoso.example", "Nested 2");
    let deep = em.create_user("deep@contoso.example", "Deep");
    let other_group_only = em.create_user("other@contoso.example", "Other");
    let outside = em.create_user("outside@contoso.example", "Outside");
    let staff = em.create_group("Staff");
    let team = em.create_group("Team");
    let squad = em.create_group("Squad");
    let other = em.create_group("Other");
    em.add_member(&staff, &direct);
    em.add_member(&staff, &team);
    em.add_member(&team, &nested1);
    em.add_member(&team, &nested2);
    em.add_member(&team, &squad);
    em.add_member(&squad, &deep);
    // A user in both groups, and a cycle, are read once.
    em.add_member(&other, &direct);
    em.add_member(&other, &other_group_only);
    em.add_member(&squad, &staff);

    let read = source(&em).read(&groups(&[&staff, &other])).await.unwrap();

    assert_eq!(
        anchors(&read),
        set(&[&direct, &nested1, &nested2, &deep, &other_group_only])
    );
    assert!(!read.view.entries.contains_key(&outside));
    let member_reads = requests_to(&em, "/transitiveMembers/microsoft.graph.user");
    // Staff's four users on two pages of two, Other's two on one.
    assert_eq!(member_reads.len(), 3);
    for request in &member_reads {
        assert_eq!(request.consistency_level.as_deref(), Some("eventual"));
    }
    let first: Vec<_> = member_reads
        .iter()
        .filter(|r| !r.query.contains_key("$skiptoken"))
        .collect();
    assert_eq!(first.len(), 2);
    for request in first {
        assert_eq!(
            request.query.get("$count").map(String::as_str),
            Some("true")
        );
        assert!(request.query["$select"].contains("accountEnabled"));
    }
}

#[tokio::test]
async fn emulator_refuses_a_filtered_member_listing_without_consistency_level() {
    let em = GraphEmulator::start().await;
    let group = em.create_group("G");
    let token = raw_token(&em).await;
    let url = format!(
        "{}v1.0/groups/{group}/transitiveMembers/microsoft.graph.user?$filter=startswith(displayName,'a')",
        em.base_url()
    );
    let plain = raw_client()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let advanced = raw_client()
        .get(format!("{url}&$count=true"))
        .bearer_auth(&token)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .unwrap();
    assert_eq!(advanced.status(), 200);
}

#[tokio::test]
async fn filter_scope_sends_an_advanced_query_and_reads_only_matching_users() {
    let em = GraphEmulator::start().await;
    let sales = em
        .create_user_with(json!({"userPrincipalName": "s@contoso.example", "department": "Sales"}));
    let sales_off = em.create_user_with(
        json!({"userPrincipalName": "s2@contoso.example", "department": "sales", "accountEnabled": false}),
    );
    em.create_user_with(
        json!({"userPrincipalName": "e@contoso.example", "department": "Engineering"}),
    );
    em.create_user("nodept@contoso.example", "No department");

    let read = source(&em)
        .read(&filtered("department eq 'Sales'"))
        .await
        .unwrap();

    assert_eq!(anchors(&read), set(&[&sales, &sales_off]));
    assert!(!entry(&read, &sales_off).enabled);
    let request = &requests_to(&em, "/v1.0/users")[0];
    assert_eq!(request.query["$filter"], "department eq 'Sales'");
    assert_eq!(
        request.query.get("$count").map(String::as_str),
        Some("true")
    );
    assert_eq!(request.consistency_level.as_deref(), Some("eventual"));
}

#[tokio::test]
async fn filter_and_groups_together_read_matching_members_only() {
    let em = GraphEmulator::start().await;
    let member_sales = em.create_user_with(
        json!({"userPrincipalName": "ms@contoso.example", "department": "Sales"}),
    );
    let member_eng = em
        .create_user_with(json!({"userPrincipalName": "me@contoso.example", "department": "Eng"}));
    em.create_user_with(json!({"userPrincipalName": "os@contoso.example", "department": "Sales"}));
    let group = em.create_group("G");
    em.add_member(&group, &member_sales);
    em.add_member(&group, &member_eng);
    let mut scope = groups(&[&group]);
    scope.filter = Some("department eq 'Sales'".into());

    let read = source(&em).read(&scope).await.unwrap();

    assert_eq!(anchors(&read), set(&[&member_sales]));
}

#[tokio::test]
async fn a_missing_group_fails_the_read() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");
    let missing = graph_emulator::random_guid();

    let error = source(&em).read(&groups(&[&missing])).await.unwrap_err();

    assert_eq!(error.reason(), "ReadFailed");
    assert!(error.to_string().contains(&missing), "{error}");
    assert!(
        error.to_string().contains("Request_ResourceNotFound"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_permission_is_forbidden_and_names_the_permission() {
    let em = GraphEmulator::start().await;
    let group = em.create_group("G");
    em.revoke_permission(GROUP_MEMBER_READ_ALL);

    let error = source(&em).read(&groups(&[&group])).await.unwrap_err();

    assert_eq!(error.reason(), "Forbidden");
    let message = error.to_string();
    assert!(message.contains("GroupMember.Read.All"), "{message}");
    assert!(message.contains("Authorization_RequestDenied"), "{message}");
}

// --- tokens ---

#[tokio::test]
async fn a_permission_granted_after_a_403_is_used_by_the_next_source_of_the_owner() {
    let em = GraphEmulator::start().await;
    let group = em.create_group("G");
    em.revoke_permission(GROUP_MEMBER_READ_ALL);
    let cache = TokenCache::default();
    let read = || async {
        GraphSource::with_token_cache(&settings(&em), &cache, "team-a/corp")
            .unwrap()
            .read(&groups(&[&group]))
            .await
    };
    assert_eq!(read().await.unwrap_err().reason(), "Forbidden");

    // The admin grants it: the next run has it, not only the next token after
    // the kept one expires.
    em.grant_permission(GROUP_MEMBER_READ_ALL);
    read().await.unwrap();
    assert_eq!(em.token_requests(), 2);
    read().await.unwrap();
    assert_eq!(em.token_requests(), 2, "a token that works is kept");
}

#[tokio::test]
async fn token_is_cached_and_reused() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");
    let source = source(&em);

    source.probe().await.unwrap();
    source.read(&GraphScope::all_users()).await.unwrap();
    source.read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(em.token_requests(), 1);
    assert_eq!(em.graph_requests(), 3);
}

#[tokio::test]
async fn token_is_refreshed_after_expiry() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");
    em.set_token_lifetime(Duration::from_secs(2));
    let source = source(&em);

    source.read(&GraphScope::all_users()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    source.read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(em.token_requests(), 2);
    // The new token was asked for before Graph could refuse the old one.
    assert_eq!(em.graph_requests(), 2);
}

#[tokio::test]
async fn a_rejected_token_is_renewed_once_and_the_request_retried() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");
    let source = source(&em);
    source.read(&GraphScope::all_users()).await.unwrap();

    em.invalidate_issued_tokens();
    let read = source.read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(read.view.entries.len(), 1);
    assert_eq!(em.token_requests(), 2);
    assert_eq!(em.graph_requests(), 3); // ok, 401, ok
}

#[tokio::test]
async fn sources_of_one_owner_share_a_cached_token_until_the_credential_changes() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");
    let cache = TokenCache::default();
    let shared = |settings: &GraphSettings, owner: &str| {
        GraphSource::with_token_cache(settings, &cache, owner).unwrap()
    };

    for _ in 0..3 {
        shared(&settings(&em), "team-a/corp").probe().await.unwrap();
    }
    shared(&settings(&em), "team-a/corp")
        .read(&GraphScope::all_users())
        .await
        .unwrap();
    assert_eq!(em.token_requests(), 1, "a new source asked for a new token");

    // Another connector with the same app has a token of its own.
    shared(&settings(&em), "team-b/corp").probe().await.unwrap();
    assert_eq!(em.token_requests(), 2);

    // A rotated secret gets a token of its own, then keeps it.
    em.add_client_secret("rotated-secret-9Z~");
    let rotated = settings_with(
        &em,
        Credential::Secret(SecretString::new("rotated-secret-9Z~")),
    );
    shared(&rotated, "team-a/corp").probe().await.unwrap();
    shared(&rotated, "team-a/corp").probe().await.unwrap();
    assert_eq!(em.token_requests(), 3);

    // So does another tenant (here one the emulator refuses: it is asked).
    let mut other_tenant = settings(&em);
    other_tenant.tenant_id = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6".into();
    let refused = shared(&other_tenant, "team-a/corp").probe().await;
    assert!(refused.is_err());
    assert_eq!(em.token_requests(), 4);
}

#[tokio::test]
async fn a_kept_token_graph_rejects_is_renewed_once_and_the_probe_succeeds() {
    let em = GraphEmulator::start().await;
    let cache = TokenCache::default();
    let probe = || async {
        GraphSource::with_token_cache(&settings(&em), &cache, "team-a/corp")
            .unwrap()
            .probe()
            .await
    };
    probe().await.unwrap();

    // Revoked while kept: the next source's request meets a 401.
    em.invalidate_issued_tokens();
    em.clear_log();
    probe().await.unwrap();
    assert_eq!(em.token_requests(), 2);
    assert_eq!(em.graph_requests(), 2, "a 401, then the request again");

    // The renewed token is the one kept.
    probe().await.unwrap();
    assert_eq!(em.token_requests(), 2);
}

#[tokio::test]
async fn a_token_graph_keeps_rejecting_fails_after_one_renewal() {
    let em = GraphEmulator::start().await;
    em.reject_all_tokens(true);

    let error = source(&em).probe().await.unwrap_err();

    assert_eq!(error.reason(), "AuthFailed");
    assert!(
        error.to_string().contains("InvalidAuthenticationToken"),
        "{error}"
    );
    assert_eq!(em.token_requests(), 2);
    assert_eq!(em.graph_requests(), 2);
}

#[tokio::test]
async fn wrong_client_secret_is_auth_failed_without_the_secret_in_the_message() {
    let em = GraphEmulator::start().await;
    let wrong = "wrong-secret-value-9f8e7d";
    let source = GraphSource::new(&settings_with(
        &em,
        Credential::Secret(SecretString::new(wrong)),
    ))
    .unwrap();

    let error = source.probe().await.unwrap_err();

    assert_eq!(error.reason(), "AuthFailed");
    let (shown, debug) = (error.to_string(), format!("{error:?}"));
    assert!(shown.contains("AADSTS7000215"), "{shown}");
    assert!(!shown.contains(wrong) && !debug.contains(wrong), "{shown}");
    assert!(!shown.contains(CLIENT_SECRET));
    // The trace and correlation IDs on the description's further lines are left out.
    assert!(!shown.contains("Trace ID"), "{shown}");
    assert_eq!(em.graph_requests(), 0);
}

#[tokio::test]
async fn unknown_tenant_or_client_is_auth_failed() {
    let em = GraphEmulator::start().await;
    let mut s = settings(&em);
    s.client_id = graph_emulator::random_guid();
    let error = GraphSource::new(&s).unwrap().probe().await.unwrap_err();
    assert_eq!(error.reason(), "AuthFailed");
    assert!(error.to_string().contains("AADSTS700016"), "{error}");

    let mut s = settings(&em);
    s.tenant_id = graph_emulator::random_guid();
    let error = GraphSource::new(&s).unwrap().probe().await.unwrap_err();
    assert_eq!(error.reason(), "AuthFailed");
    assert!(error.to_string().contains("AADSTS90002"), "{error}");
}

// --- certificate credentials ---

fn certificate(cert: &str, key: &str) -> Credential {
    Credential::Certificate {
        cert_pem: cert.into(),
        key_pem: SecretString::new(key),
    }
}

#[tokio::test]
async fn certificate_credential_works() {
    let em = GraphEmulator::start().await;
    let id = em.create_user("a@contoso.example", "A");
    let source = GraphSource::new(&settings_with(&em, certificate(APP_CERT, APP_KEY))).unwrap();

    let read = source.read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(anchors(&read), set(&[&id]));
    assert_eq!(em.token_requests(), 1);
}

#[tokio::test]
async fn certificate_credential_with_a_pkcs1_key_works() {
    let em = GraphEmulator::start().await;
    em.register_certificate(OTHER_CERT);
    let source = GraphSource::new(&settings_with(&em, certificate(OTHER_CERT, OTHER_KEY))).unwrap();

    source.probe().await.unwrap();
}

#[tokio::test]
async fn certificate_not_registered_with_the_app_is_auth_failed() {
    let em = GraphEmulator::start().await;
    let source = GraphSource::new(&settings_with(&em, certificate(OTHER_CERT, OTHER_KEY))).unwrap();

    let error = source.probe().await.unwrap_err();

    assert_eq!(error.reason(), "AuthFailed");
    assert!(error.to_string().contains("AADSTS700027"), "{error}");
    assert!(!error.to_string().contains("PRIVATE KEY"));
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_invalid_config() {
    let mut s = GraphSettings::new(
        TENANT_ID,
        CLIENT_ID,
        certificate(APP_CERT, OTHER_KEY),
        Cloud::Global,
    );
    let error = GraphSource::new(&s).err().unwrap();
    assert_eq!(error.reason(), "InvalidConfig");
    assert!(error.to_string().contains("does not belong"), "{error}");
    s.credential = certificate(APP_CERT, "not a key");
    let error = GraphSource::new(&s).err().unwrap();
    assert_eq!(error.reason(), "InvalidConfig");
}

#[tokio::test]
async fn emulator_rejects_an_assertion_signed_with_another_key() {
    let em = GraphEmulator::start().await;
    let audience = format!("{}{TENANT_ID}/oauth2/v2.0/token", em.base_url());
    // Names the registered certificate, but is signed with another key.
    let jwt = signed_assertion(APP_CERT, OTHER_KEY, &audience);
    let response = raw_client()
        .post(&audience)
        .form(&[
            ("client_id", CLIENT_ID),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &jwt),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([700027]));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("signature validation")
    );
    // The same assertion signed with the certificate's own key is accepted.
    let jwt = signed_assertion(APP_CERT, APP_KEY, &audience);
    let response = raw_client()
        .post(&audience)
        .form(&[
            ("client_id", CLIENT_ID),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &jwt),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

// --- throttling and failures ---

#[tokio::test]
async fn throttling_429_with_retry_after_recovers_with_no_lost_or_duplicated_users() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(40);
    let ids: BTreeSet<String> = (0..100)
        .map(|i| em.create_user(&format!("u{i}@contoso.example"), "U"))
        .collect();
    // The second page is throttled twice, with Retry-After: 1.
    em.inject_after(1, Fault::Throttle { retry_after: 1 }, 2);
    let started = Instant::now();

    let read = source(&em).read(&GraphScope::all_users()).await.unwrap();

    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured"
    );
    assert_eq!(anchors(&read), ids);
    // Three pages, and the throttled one twice more.
    assert_eq!(em.graph_requests(), 5);
    let pages = requests_to(&em, "/v1.0/users");
    assert_eq!(pages[1].query, pages[2].query);
    assert_eq!(pages[2].query, pages[3].query);
}

#[tokio::test]
async fn throttling_past_the_budget_fails_as_throttled_at_once() {
    let em = GraphEmulator::start().await;
    em.inject(Fault::Throttle { retry_after: 3600 }, 1);
    let started = Instant::now();

    let error = source(&em)
        .read(&GraphScope::all_users())
        .await
        .unwrap_err();

    assert_eq!(error.reason(), "Throttled");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(em.graph_requests(), 1);
}

/// Throttled as Microsoft documents it, with this `Retry-After` (or none).
fn throttled(status: u16, retry_after: Option<&str>) -> Fault {
    Fault::Throttled {
        status,
        retry_after: retry_after.map(str::to_owned),
    }
}

/// The time between the first request and its retry.
fn retried_after(em: &GraphEmulator) -> Duration {
    let log = em.requests();
    log[1].at - log[0].at
}

#[tokio::test]
async fn a_fractional_retry_after_as_microsoft_documents_it_is_honoured() {
    let em = GraphEmulator::start().await;
    let id = em.create_user("a@contoso.example", "A");
    em.inject(throttled(429, Some("1.528")), 1);

    let read = source(&em).read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(anchors(&read), set(&[&id]));
    assert!(
        retried_after(&em) >= Duration::from_millis(1528),
        "{:?}",
        retried_after(&em)
    );
}

#[tokio::test]
async fn a_retry_after_http_date_is_honoured_never_earlier() {
    let em = GraphEmulator::start().await;
    let id = em.create_user("a@contoso.example", "A");
    // Two seconds ahead, to the next whole second (an HTTP-date has no less).
    let now = jiff::Timestamp::now();
    let date = jiff::Timestamp::from_second(now.as_second() + 3).unwrap();
    let text = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&date)
        .unwrap();
    let due =
        Instant::now() + Duration::try_from(date.duration_since(jiff::Timestamp::now())).unwrap();
    em.inject(throttled(429, Some(&text)), 1);

    let read = source(&em).read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(anchors(&read), set(&[&id]));
    let retry = &em.requests()[1];
    assert!(retry.at + Duration::from_millis(5) >= due, "retried early");
}

#[tokio::test]
async fn throttling_without_retry_after_backs_off_and_a_503_with_retry_after_throttles_too() {
    let em = GraphEmulator::start().await;
    let id = em.create_user("a@contoso.example", "A");
    em.inject(throttled(429, None), 2);
    em.inject_more(throttled(503, Some("0.4")), 1);

    let source = source(&em);
    let read = source.read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(anchors(&read), set(&[&id]));
    let log = em.requests();
    assert_eq!(log.len(), 4);
    assert!(log[3].at - log[2].at >= Duration::from_millis(400));
    assert_eq!(source.throttling().throttled_requests, 3);
}

#[tokio::test]
async fn throttling_is_bounded_by_the_time_budget_not_by_a_count() {
    let em = GraphEmulator::start().await;
    let id = em.create_user("a@contoso.example", "A");
    // Ten in a row, with the settings' four attempts: a count would give up.
    em.inject(throttled(429, Some("0.05")), 10);

    let source = source(&em);
    let read = source.read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(anchors(&read), set(&[&id]));
    assert_eq!(em.graph_requests(), 11);
    let throttling = source.throttling();
    assert_eq!(throttling.throttled_requests, 10);
    assert!(
        throttling.waited >= Duration::from_millis(500),
        "{throttling:?}"
    );

    // A budget it cannot keep fails the read as Throttled.
    let mut short = settings(&em);
    short.retry.budget = Duration::from_millis(300);
    em.inject(throttled(429, Some("0.1")), 100);
    let error = GraphSource::new(&short)
        .unwrap()
        .read(&GraphScope::all_users())
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "Throttled", "{error}");
}

#[tokio::test]
async fn a_retry_after_holds_back_every_request_of_the_source() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(1);
    let mut group_ids = Vec::new();
    for g in 0..3 {
        let group = em.create_group(&format!("G{g}"));
        for i in 0..150 {
            let user = em.create_user(&format!("u{g}-{i}@contoso.example"), "U");
            em.add_member(&group, &user);
        }
        group_ids.push(group);
    }
    em.inject(throttled(429, Some("1")), 1);

    let read = source(&em)
        .read(&groups(&group_ids.iter().collect::<Vec<_>>()))
        .await
        .unwrap();

    assert_eq!(read.view.entries.len(), 450);
    let log = em.requests();
    let told = log[0].at;
    // Requests already on their way when the 429 came may arrive; no new one
    // is sent until the second has passed.
    let during = log
        .iter()
        .filter(|r| r.at > told && r.at < told + Duration::from_secs(1))
        .count();
    assert!(
        during <= 8,
        "{during} requests went out while the source was told to wait"
    );
}

#[tokio::test]
async fn persistent_503s_fail_the_read() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(10);
    for i in 0..30 {
        em.create_user(&format!("u{i}@contoso.example"), "U");
    }
    em.inject_after(1, Fault::Unavailable, 100);

    let error = source(&em)
        .read(&GraphScope::all_users())
        .await
        .unwrap_err();

    assert_eq!(error.reason(), "Unreachable");
    assert!(error.to_string().contains("503"), "{error}");
    // The first page, then the second one on each of the 4 attempts.
    assert_eq!(em.graph_requests(), 5);
}

#[tokio::test]
async fn transient_503s_are_retried_with_backoff() {
    let em = GraphEmulator::start().await;
    let id = em.create_user("a@contoso.example", "A");
    em.inject(Fault::Unavailable, 2);

    let read = source(&em).read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(anchors(&read), set(&[&id]));
    assert_eq!(em.graph_requests(), 3);
}

#[tokio::test]
async fn an_unreachable_host_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let em = GraphEmulator::start().await;
    let mut s = settings(&em);
    let closed = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    s.authority_host = Some(closed);

    let error = GraphSource::new(&s).unwrap().probe().await.unwrap_err();

    assert_eq!(error.reason(), "Unreachable");
}

// --- TLS ---

#[tokio::test]
async fn https_with_the_admins_ca_works_and_an_unknown_ca_fails_at_once_as_tls() {
    let em = GraphEmulator::start_tls().await;
    let id = em.create_user("a@contoso.example", "A");
    let read = source(&em).read(&GraphScope::all_users()).await.unwrap();
    assert_eq!(anchors(&read), set(&[&id]));

    let mut s = settings(&em);
    s.ca_pem = None;
    let before = em.tls_connections();
    let started = Instant::now();
    let error = GraphSource::new(&s).unwrap().probe().await.unwrap_err();
    assert_eq!(error.reason(), "TLSError", "{error}");
    let message = error.to_string();
    let host = format!("127.0.0.1:{}", em.base_url().port().unwrap());
    assert!(
        message.contains(&format!("the certificate of {host}")),
        "{message}"
    );
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("spec.entraID.caSecretRef"), "{message}");
    assert!(!message.contains("insecureSkipVerify"), "{message}");
    assert_eq!(
        em.tls_connections() - before,
        1,
        "a refused certificate was asked again"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

// --- delta ---

/// A first round, whose view is a full one.
async fn first_round(source: &GraphSource, scope: &GraphScope) -> (GraphRead, DeltaLink) {
    let read = changes(source.read_delta(scope, None).await.unwrap());
    assert_eq!(read.view.read, ReadKind::Full);
    assert!(read.view.complete);
    let link = read.delta.clone().expect("a delta link");
    (read, link)
}

#[tokio::test]
async fn delta_first_round_pages_to_a_delta_link_and_is_a_full_view() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(40);
    let ids: BTreeSet<String> = (0..100)
        .map(|i| em.create_user(&format!("u{i}@contoso.example"), "U"))
        .collect();

    let (read, link) = first_round(&source(&em), &GraphScope::all_users()).await;

    assert_eq!(anchors(&read), ids);
    assert!(link.url().contains("deltatoken"));
    let rounds = requests_to(&em, "/v1.0/users/delta");
    assert_eq!(rounds.len(), 3);
    assert!(rounds[0].query["$select"].contains("accountEnabled"));
}

#[tokio::test]
async fn delta_returns_exactly_the_created_modified_disabled_and_deleted_users() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let modified = em.create_user("m@contoso.example", "Before");
    let disabled = em.create_user("d@contoso.example", "D");
    let deleted = em.create_user("x@contoso.example", "X");
    let recycled = em.create_user("r@contoso.example", "R");
    let quiet = em.create_user("q@contoso.example", "Q");
    let (_, link) = first_round(&source, &GraphScope::all_users()).await;

    let created = em.create_user("new@contoso.example", "New");
    em.set_property(&modified, "displayName", json!("After"));
    em.set_enabled(&disabled, false);
    em.delete_user(&deleted);
    em.soft_delete_user(&recycled);
    let read = changes(
        source
            .read_delta(&GraphScope::all_users(), Some(&link))
            .await
            .unwrap(),
    );

    assert_eq!(read.view.read, ReadKind::Incremental);
    assert!(read.view.complete);
    assert_eq!(anchors(&read), set(&[&created, &modified, &disabled]));
    assert!(!read.view.entries.contains_key(&quiet));
    assert_eq!(
        read.view.removed.iter().cloned().collect::<BTreeSet<_>>(),
        set(&[&deleted, &recycled])
    );
    assert_eq!(
        entry(&read, &modified).display_name.as_deref(),
        Some("After")
    );
    assert!(!entry(&read, &disabled).enabled);
    assert!(entry(&read, &created).enabled);
    assert!(read.view.says_unmatched(&deleted));

    // Nothing changed since: an empty round, with a new link.
    let next = read.delta.clone().unwrap();
    let again = changes(
        source
            .read_delta(&GraphScope::all_users(), Some(&next))
            .await
            .unwrap(),
    );
    assert!(again.view.entries.is_empty() && again.view.removed.is_empty());
}

#[tokio::test]
async fn delta_token_expiry_means_a_full_read_is_needed() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");
    let source = source(&em);
    let (_, link) = first_round(&source, &GraphScope::all_users()).await;

    for code in ["syncStateNotFound", "resyncRequired"] {
        em.set_expired_delta_code(code);
        em.expire_delta_tokens();
        match source
            .read_delta(&GraphScope::all_users(), Some(&link))
            .await
            .unwrap()
        {
            DeltaOutcome::FullReadNeeded { reason } => {
                assert!(reason.contains(code), "{reason}")
            }
            DeltaOutcome::Changes(_) => panic!("an expired link gave changes"),
        }
    }
    // Starting over works.
    first_round(&source, &GraphScope::all_users()).await;
}

#[tokio::test]
async fn delta_link_of_other_attributes_means_a_full_read_is_needed() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let (_, link) = first_round(&source, &GraphScope::all_users()).await;
    let mut scope = GraphScope::all_users();
    scope
        .attributes
        .extra
        .insert("dept".into(), "department".into());
    let restored = DeltaLink::from_token(&link.to_token()).unwrap();

    let outcome = source.read_delta(&scope, Some(&restored)).await.unwrap();

    assert!(matches!(outcome, DeltaOutcome::FullReadNeeded { .. }));
}

#[tokio::test]
async fn delta_for_a_group_scope_checks_the_membership_of_changed_users() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let direct = em.create_user("direct@contoso.example", "Direct");
    let nested = em.create_user("nested@contoso.example", "Nested");
    let leaving = em.create_user("leaving@contoso.example", "Leaving");
    let outsider = em.create_user("outsider@contoso.example", "Outsider");
    let group = em.create_group("Staff");
    let team = em.create_group("Team");
    em.add_member(&group, &direct);
    em.add_member(&group, &team);
    em.add_member(&team, &nested);
    em.add_member(&team, &leaving);
    let scope = groups(&[&group]);
    let (read, link) = first_round(&source, &scope).await;
    assert_eq!(anchors(&read), set(&[&direct, &nested, &leaving]));

    let joiner = em.create_user("joiner@contoso.example", "Joiner");
    em.add_member(&team, &joiner);
    em.set_property(&nested, "displayName", json!("Nested, renamed"));
    em.set_property(&outsider, "displayName", json!("Outsider, renamed"));
    em.remove_member(&team, &leaving);
    em.set_property(&leaving, "displayName", json!("Left"));
    let read = changes(source.read_delta(&scope, Some(&link)).await.unwrap());

    assert_eq!(anchors(&read), set(&[&joiner, &nested]));
    let removed: BTreeSet<String> = read.view.removed.iter().cloned().collect();
    assert_eq!(removed, set(&[&leaving, &outsider]));
    assert!(!requests_to(&em, "/checkMemberGroups").is_empty());
}

#[tokio::test]
async fn delta_for_a_group_scope_sees_users_join_and_leave_directly_or_nested_with_nothing_else_changed()
 {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let direct = em.create_user("direct@contoso.example", "Direct");
    let leaver = em.create_user("leaver@contoso.example", "Leaver");
    let joins_team = em.create_user("joins.team@contoso.example", "Joins team");
    let joins_group = em.create_user("joins.group@contoso.example", "Joins group");
    let group = em.create_group("Staff");
    let team = em.create_group("Team");
    em.add_member(&group, &direct);
    em.add_member(&group, &team);
    em.add_member(&team, &leaver);
    let scope = groups(&[&group]);
    let (read, link) = first_round(&source, &scope).await;
    assert_eq!(anchors(&read), set(&[&direct, &leaver]));

    // Membership alone: no user object changes, so the users delta is silent.
    em.add_member(&team, &joins_team);
    em.add_member(&group, &joins_group);
    em.remove_member(&team, &leaver);
    let read = changes(source.read_delta(&scope, Some(&link)).await.unwrap());
    assert_eq!(anchors(&read), set(&[&joins_team, &joins_group]));
    let removed: BTreeSet<String> = read.view.removed.iter().cloned().collect();
    assert_eq!(removed, set(&[&leaver]));
    let rounds = requests_to(&em, "/v1.0/groups/delta");
    assert_eq!(rounds.len(), 2, "one to start, one to follow");
    let filter = rounds[0].query["$filter"].clone();
    assert!(
        filter.contains(&format!("id eq '{group}'")) && filter.contains(&format!("id eq '{team}'")),
        "{filter}"
    );

    // Nothing since: nothing changed, and the next link works as well.
    let read = changes(
        source
            .read_delta(&scope, Some(&read.delta.unwrap()))
            .await
            .unwrap(),
    );
    assert!(read.view.entries.is_empty() && read.view.removed.is_empty());
}

#[tokio::test]
async fn a_group_added_to_or_removed_from_a_selected_group_means_a_full_read() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let user = em.create_user("member@contoso.example", "Member");
    let group = em.create_group("Staff");
    let team = em.create_group("Team");
    em.add_member(&group, &team);
    em.add_member(&team, &user);
    let scope = groups(&[&group]);
    let (_, link) = first_round(&source, &scope).await;
    let other = em.create_group("Other");
    em.add_member(&group, &other);
    match source.read_delta(&scope, Some(&link)).await.unwrap() {
        DeltaOutcome::FullReadNeeded { reason } => {
            assert!(reason.contains("group was added to or removed"), "{reason}")
        }
        DeltaOutcome::Changes(read) => panic!("the tree changed, yet {read:?}"),
    }
}

#[tokio::test]
async fn a_scope_of_more_groups_than_one_groups_delta_tracks_reads_in_full_every_run() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let user = em.create_user("member@contoso.example", "Member");
    let top = em.create_group("Top");
    em.add_member(&top, &user);
    // 50 groups nested in the selected one: 51 to track.
    for i in 0..50 {
        let nested = em.create_group(&format!("Nested {i}"));
        em.add_member(&top, &nested);
    }
    let scope = groups(&[&top]);
    let (read, link) = first_round(&source, &scope).await;
    assert_eq!(anchors(&read), set(&[&user]));
    assert!(requests_to(&em, "/v1.0/groups/delta").is_empty());
    match source.read_delta(&scope, Some(&link)).await.unwrap() {
        DeltaOutcome::FullReadNeeded { reason } => {
            assert!(reason.contains("at most 50"), "{reason}")
        }
        DeltaOutcome::Changes(read) => panic!("membership changes would go unseen: {read:?}"),
    }
}

#[tokio::test]
async fn the_first_round_of_a_narrow_scope_gets_its_link_without_walking_the_tenant() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    for i in 0..250 {
        em.create_user(&format!("u{i}@contoso.example"), "User");
    }
    let member = em.create_user("member@contoso.example", "Member");
    let group = em.create_group("Staff");
    em.add_member(&group, &member);
    for scope in [groups(&[&group]), filtered("department eq 'Sales'")] {
        let before = requests_to(&em, "/v1.0/users/delta").len();
        first_round(&source, &scope).await;
        let rounds = requests_to(&em, "/v1.0/users/delta");
        assert_eq!(
            rounds.len() - before,
            1,
            "one request, not a page per 100 users"
        );
        let last = rounds.last().unwrap();
        assert_eq!(
            last.query.get("$deltatoken").map(String::as_str),
            Some("latest")
        );
    }
}

#[tokio::test]
async fn delta_for_a_filter_scope_checks_changed_users_against_the_filter() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let stays = em
        .create_user_with(json!({"userPrincipalName": "a@contoso.example", "department": "Sales"}));
    let moves_out = em
        .create_user_with(json!({"userPrincipalName": "b@contoso.example", "department": "Sales"}));
    let moves_in =
        em.create_user_with(json!({"userPrincipalName": "c@contoso.example", "department": "Eng"}));
    let scope = filtered("department eq 'Sales'");
    let (read, link) = first_round(&source, &scope).await;
    assert_eq!(anchors(&read), set(&[&stays, &moves_out]));

    em.set_property(&stays, "displayName", json!("Still sales"));
    em.set_property(&moves_out, "department", json!("Eng"));
    em.set_property(&moves_in, "department", json!("Sales"));
    let read = changes(source.read_delta(&scope, Some(&link)).await.unwrap());

    assert_eq!(anchors(&read), set(&[&stays, &moves_in]));
    // Out of an eventually consistent check: out once the next round agrees.
    assert!(read.view.removed.is_empty());
    let read = changes(
        source
            .read_delta(&scope, Some(&read.delta.unwrap()))
            .await
            .unwrap(),
    );
    assert_eq!(read.view.removed, vec![moves_out.clone()]);
    let checks: Vec<_> = requests_to(&em, "/v1.0/users")
        .into_iter()
        .filter(|r| {
            r.query
                .get("$filter")
                .is_some_and(|f| f.contains(" id in ("))
        })
        .collect();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].consistency_level.as_deref(), Some("eventual"));
}

// --- complete reads only ---

#[tokio::test]
async fn a_full_read_meeting_users_without_an_id_fails_and_names_the_count() {
    let em = GraphEmulator::start().await;
    em.set_page_cap(10);
    for i in 0..25 {
        em.create_user(&format!("u{i}@contoso.example"), "U");
    }
    let faceless = [
        em.create_user("f1@contoso.example", "F1"),
        em.create_user("f2@contoso.example", "F2"),
    ];
    for id in &faceless {
        em.serve_without_id(id);
    }
    let source = source(&em);
    let group = em.create_group("G");
    em.add_member(&group, &faceless[0]);
    let filter = filtered("startswith(userPrincipalName,'f')");

    for scope in [GraphScope::all_users(), groups(&[&group]), filter] {
        let error = source.read(&scope).await.unwrap_err();
        assert_eq!(error.reason(), "ReadFailed", "{error}");
        assert!(error.to_string().contains("without an id"), "{error}");
    }
    let error = source.read(&GraphScope::all_users()).await.unwrap_err();
    assert!(error.to_string().contains("2 items"), "{error}");
    // The first delta round of the whole tenant is a full read too.
    let error = source
        .read_delta(&GraphScope::all_users(), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("2 items"), "{error}");
    // And a lookup cannot say a user is out of scope if it met an unknown one.
    assert!(
        source
            .lookup(&filtered("startswith(userPrincipalName,'f')"), &faceless)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_delta_item_without_an_id_means_a_full_read_not_a_skipped_change() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let edited = em.create_user("e@contoso.example", "E");
    em.create_user("r@contoso.example", "R");
    let (_, link) = first_round(&source, &GraphScope::all_users()).await;

    em.set_property(&edited, "displayName", json!("E, renamed"));
    em.serve_without_id(&edited);
    let outcome = source
        .read_delta(&GraphScope::all_users(), Some(&link))
        .await
        .unwrap();
    match outcome {
        DeltaOutcome::FullReadNeeded { reason } => {
            assert!(reason.contains("1 delta item"), "{reason}")
        }
        DeltaOutcome::Changes(read) => panic!("the round was applied: {read:?}"),
    }

    // An `@removed` entry without an id, likewise.
    let em2 = GraphEmulator::start().await;
    let source2 = self::source(&em2);
    let gone = em2.create_user("g@contoso.example", "G");
    let (_, link2) = first_round(&source2, &GraphScope::all_users()).await;
    em2.serve_without_id(&gone);
    em2.delete_user(&gone);
    assert!(matches!(
        source2
            .read_delta(&GraphScope::all_users(), Some(&link2))
            .await
            .unwrap(),
        DeltaOutcome::FullReadNeeded { .. }
    ));
}

#[tokio::test]
async fn a_membership_check_answering_404_is_asked_again_and_then_fails_the_read() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let member = em.create_user("m@contoso.example", "M");
    let group = em.create_group("G");
    em.add_member(&group, &member);
    let scope = groups(&[&group]);
    let (_, link) = first_round(&source, &scope).await;

    // A user created a moment ago: the first answers are 404, then Entra knows it.
    let new = em.create_user("new@contoso.example", "New");
    em.add_member(&group, &new);
    em.lag_membership(&new, 2);
    let read = changes(source.read_delta(&scope, Some(&link)).await.unwrap());
    assert_eq!(anchors(&read), set(&[&new]));
    assert!(read.view.removed.is_empty());
    assert_eq!(
        requests_to(&em, &format!("{new}/checkMemberGroups")).len(),
        3
    );

    // Still 404 after every attempt: the round fails, nobody is reported removed.
    em.set_property(&member, "displayName", json!("M, renamed"));
    em.lag_membership(&member, 100);
    let error = source.read_delta(&scope, Some(&link)).await.unwrap_err();
    assert_eq!(error.reason(), "ReadFailed", "{error}");
    assert!(error.to_string().contains("404"), "{error}");
    assert!(error.to_string().contains(&member), "{error}");

    // The lookup rule 9 makes (is this user in another mapping?) too.
    let error = source
        .lookup(&scope, std::slice::from_ref(&member))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ReadFailed", "{error}");
}

#[tokio::test]
async fn a_user_missing_only_from_an_eventual_filter_check_is_kept_until_a_later_round_confirms() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let edited = em
        .create_user_with(json!({"userPrincipalName": "a@contoso.example", "department": "Sales"}));
    let moved = em
        .create_user_with(json!({"userPrincipalName": "b@contoso.example", "department": "Sales"}));
    let scope = filtered("department eq 'Sales'");
    let (_, link) = first_round(&source, &scope).await;

    // Edited a moment ago: the advanced-query index has not caught up yet.
    em.set_property(&edited, "displayName", json!("A, renamed"));
    em.lag_index(&edited, 1);
    // Really out of the filter.
    em.set_property(&moved, "department", json!("Eng"));
    let read = changes(source.read_delta(&scope, Some(&link)).await.unwrap());
    assert!(read.view.removed.is_empty(), "{:?}", read.view.removed);
    assert!(read.view.entries.is_empty());

    // The next round looks again: the one edited is in scope after all, the
    // one that moved is confirmed out.
    let link = read.delta.unwrap();
    let read = changes(source.read_delta(&scope, Some(&link)).await.unwrap());
    assert_eq!(read.view.removed, vec![moved.clone()]);
    assert!(read.view.entries.is_empty());
    // And nothing is left pending.
    let read = changes(
        source
            .read_delta(&scope, Some(&read.delta.unwrap()))
            .await
            .unwrap(),
    );
    assert!(read.view.removed.is_empty());
    assert_eq!(
        requests_to(&em, "/v1.0/users")
            .iter()
            .filter(|r| r.query.contains_key("$filter"))
            .count(),
        3,
        "the first round's read, then one check per round with something to check"
    );
}

// --- full reads of eventually consistent scopes ---

/// A full read as a run makes it, expecting the users the store holds.
async fn full_expecting(
    source: &GraphSource,
    scope: &GraphScope,
    expected: &[&String],
) -> GraphRead {
    let expected: Vec<String> = expected.iter().map(|s| (*s).clone()).collect();
    let read = changes(source.read_full(scope, &expected).await.unwrap());
    assert_eq!(read.view.read, ReadKind::Full);
    read
}

#[tokio::test]
async fn a_group_full_read_looks_up_a_missing_user_by_id_before_it_counts_as_out_of_scope() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let lagging = em.create_user("lag@contoso.example", "Lag");
    let left = em.create_user("left@contoso.example", "Left");
    let gone = em.create_user("gone@contoso.example", "Gone");
    let stays = em.create_user("stays@contoso.example", "Stays");
    let group = em.create_group("Staff");
    for user in [&lagging, &left, &gone, &stays] {
        em.add_member(&group, user);
    }
    let scope = groups(&[&group]);
    let expected = [&lagging, &left, &gone, &stays];
    assert_eq!(
        anchors(&full_expecting(&source, &scope, &expected).await),
        set(&expected)
    );

    // Edited a moment ago: the member listing's index has not caught up.
    em.set_property(&lagging, "displayName", json!("Lag, renamed"));
    em.lag_index(&lagging, 1);
    em.remove_member(&group, &left);
    em.delete_user(&gone);
    em.clear_log();
    let read = full_expecting(&source, &scope, &expected).await;

    assert_eq!(anchors(&read), set(&[&lagging, &stays]));
    assert_eq!(
        entry(&read, &lagging).display_name.as_deref(),
        Some("Lag, renamed"),
        "the entry comes from the lookup by id"
    );
    // Each user the listing left out was asked for by id, and the ones that
    // exist had their membership checked; the user still listed was not.
    for id in [&lagging, &left, &gone] {
        assert_eq!(
            requests_to(&em, &format!("/v1.0/users/{id}")).len(),
            1,
            "{id}"
        );
    }
    assert!(requests_to(&em, &format!("/v1.0/users/{stays}")).is_empty());
    assert_eq!(requests_to(&em, "/checkMemberGroups").len(), 2);
}

#[tokio::test]
async fn a_filter_full_read_gives_a_missing_user_a_second_targeted_look() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let lagging = em
        .create_user_with(json!({"userPrincipalName": "a@contoso.example", "department": "Sales"}));
    let moved = em
        .create_user_with(json!({"userPrincipalName": "b@contoso.example", "department": "Sales"}));
    let scope = filtered("department eq 'Sales'");
    let expected = [&lagging, &moved];
    full_expecting(&source, &scope, &expected).await;

    em.set_property(&lagging, "displayName", json!("A, renamed"));
    em.lag_index(&lagging, 1);
    em.set_property(&moved, "department", json!("Eng"));
    em.clear_log();
    let read = full_expecting(&source, &scope, &expected).await;

    assert_eq!(anchors(&read), set(&[&lagging]));
    let filtered: Vec<_> = requests_to(&em, "/v1.0/users")
        .into_iter()
        .filter(|r| r.query.contains_key("$filter"))
        .collect();
    assert_eq!(filtered.len(), 2, "the scope's read and one targeted look");
    let look = &filtered[1].query["$filter"];
    assert!(
        look.starts_with("(department eq 'Sales') and id in (")
            && look.contains(&lagging)
            && look.contains(&moved),
        "{look}"
    );
}

#[tokio::test]
async fn a_failed_lookup_of_a_missing_user_fails_the_full_read() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let lagging = em.create_user("lag@contoso.example", "Lag");
    let group = em.create_group("Staff");
    em.add_member(&group, &lagging);
    let scope = groups(&[&group]);
    em.lag_index(&lagging, 1);
    // Entra does not answer the membership check, however often asked.
    em.lag_membership(&lagging, 100);

    let error = source
        .read_full(&scope, std::slice::from_ref(&lagging))
        .await
        .unwrap_err();

    assert_eq!(error.reason(), "ReadFailed", "{error}");
    assert!(error.to_string().contains(&lagging), "{error}");
}

// --- identity ---

#[tokio::test]
async fn a_upn_change_keeps_the_same_anchor() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let id = em.create_user("jane.doe@contoso.example", "Jane Doe");
    let (before, link) = first_round(&source, &GraphScope::all_users()).await;

    em.rename(&id, "jane.smith@fabrikam.example");
    let delta = changes(
        source
            .read_delta(&GraphScope::all_users(), Some(&link))
            .await
            .unwrap(),
    );
    let after = source.read(&GraphScope::all_users()).await.unwrap();

    assert_eq!(anchors(&before), set(&[&id]));
    assert_eq!(anchors(&after), set(&[&id]));
    assert_eq!(anchors(&delta), set(&[&id]));
    let e = entry(&after, &id);
    assert_eq!(e.username.as_deref(), Some("jane.smith@fabrikam.example"));
    assert_eq!(
        e.user_principal_name.as_deref(),
        Some("jane.smith@fabrikam.example")
    );
    assert_eq!(entry(&delta, &id), e);
}

#[tokio::test]
async fn a_new_user_taking_an_old_upn_has_a_different_anchor() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let old = em.create_user("sam@contoso.example", "Sam One");
    let before = source.read(&GraphScope::all_users()).await.unwrap();
    em.delete_user(&old);
    let new = em.create_user("sam@contoso.example", "Sam Two");

    let after = source.read(&GraphScope::all_users()).await.unwrap();

    assert_ne!(old, new);
    assert_eq!(anchors(&before), set(&[&old]));
    assert_eq!(anchors(&after), set(&[&new]));
    assert_eq!(entry(&after, &new).username, entry(&before, &old).username);
}

// --- lookups and probes ---

#[tokio::test]
async fn lookup_returns_the_anchors_in_scope() {
    let em = GraphEmulator::start().await;
    let source = source(&em);
    let member = em
        .create_user_with(json!({"userPrincipalName": "m@contoso.example", "department": "Sales"}));
    let other =
        em.create_user_with(json!({"userPrincipalName": "o@contoso.example", "department": "Eng"}));
    let group = em.create_group("G");
    em.add_member(&group, &member);
    let gone = graph_emulator::random_guid();
    let wanted = vec![
        member.clone(),
        other.clone(),
        gone,
        "../../groups".to_owned(),
        member.clone(),
    ];
    let found = |entries: Vec<DirectoryEntry>| -> BTreeSet<String> {
        entries.into_iter().map(|e| e.anchor).collect()
    };

    let all = source
        .lookup(&GraphScope::all_users(), &wanted)
        .await
        .unwrap();
    assert_eq!(found(all), set(&[&member, &other]));

    let in_group = source.lookup(&groups(&[&group]), &wanted).await.unwrap();
    assert_eq!(found(in_group), set(&[&member]));

    let by_filter = source
        .lookup(&filtered("department eq 'Eng'"), &wanted)
        .await
        .unwrap();
    assert_eq!(found(by_filter), set(&[&other]));

    assert!(
        source
            .lookup(&GraphScope::all_users(), &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn probe_gets_a_token_and_reads_one_user() {
    let em = GraphEmulator::start().await;
    em.create_user("a@contoso.example", "A");

    let report = source(&em).probe().await.unwrap();

    assert!(report.latency > Duration::ZERO);
    assert_eq!(em.token_requests(), 1);
    let request = &requests_to(&em, "/v1.0/users")[0];
    assert_eq!(request.query.get("$top").map(String::as_str), Some("1"));
}

// --- endpoints and secrets ---

#[test]
fn cloud_endpoint_selection() {
    let secret = || Credential::Secret(SecretString::new("x"));
    for (cloud, token, graph, scope) in [
        (
            Cloud::Global,
            "https://login.microsoftonline.com/",
            "https://graph.microsoft.com/v1.0/",
            "https://graph.microsoft.com/.default",
        ),
        (
            Cloud::UsGov,
            "https://login.microsoftonline.us/",
            "https://graph.microsoft.us/v1.0/",
            "https://graph.microsoft.us/.default",
        ),
        (
            Cloud::UsGovDod,
            "https://login.microsoftonline.us/",
            "https://dod-graph.microsoft.us/v1.0/",
            "https://dod-graph.microsoft.us/.default",
        ),
        (
            Cloud::China,
            "https://login.chinacloudapi.cn/",
            "https://microsoftgraph.chinacloudapi.cn/v1.0/",
            "https://microsoftgraph.chinacloudapi.cn/.default",
        ),
    ] {
        let source =
            GraphSource::new(&GraphSettings::new(TENANT_ID, CLIENT_ID, secret(), cloud)).unwrap();
        let e = source.endpoints();
        assert_eq!(
            e.token.as_str(),
            format!("{token}{TENANT_ID}/oauth2/v2.0/token")
        );
        assert_eq!(e.graph.as_str(), graph);
        assert_eq!(e.scope, scope);
    }
}

#[tokio::test]
async fn no_secret_assertion_or_token_in_errors_or_settings() {
    let em = GraphEmulator::start().await;
    let secret_settings = settings(&em);
    let cert_settings = settings_with(&em, certificate(APP_CERT, APP_KEY));
    let key_body = APP_KEY.lines().nth(1).unwrap();
    for shown in [
        format!("{secret_settings:?}"),
        format!("{cert_settings:?}"),
        format!("{:?}", secret_settings.credential),
        format!("{:?}", cert_settings.credential),
    ] {
        assert!(!shown.contains(CLIENT_SECRET), "{shown}");
        assert!(!shown.contains(key_body), "{shown}");
    }

    // Errors after a token was issued and used, and from refused credentials.
    let source = GraphSource::new(&secret_settings).unwrap();
    source.probe().await.unwrap();
    em.reject_all_tokens(true);
    let mut errors: Vec<GraphError> = vec![source.probe().await.unwrap_err()];
    em.reject_all_tokens(false);
    let mut wrong = settings(&em);
    wrong.credential = Credential::Secret(SecretString::new("wrong-secret-abc"));
    errors.push(GraphSource::new(&wrong).unwrap().probe().await.unwrap_err());
    errors.push(
        GraphSource::new(&settings_with(&em, certificate(OTHER_CERT, OTHER_KEY)))
            .unwrap()
            .probe()
            .await
            .unwrap_err(),
    );
    for error in errors {
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains(CLIENT_SECRET), "{shown}");
            assert!(!shown.contains("wrong-secret-abc"), "{shown}");
            // Access tokens, and assertions (JWTs start with a base64url "{").
            assert!(!shown.contains("emulated."), "{shown}");
            assert!(!shown.contains("eyJ"), "{shown}");
            assert!(!shown.contains(key_body), "{shown}");
        }
    }
}

// --- raw access to the emulator, for tests of the emulator itself ---

fn raw_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn raw_token(em: &GraphEmulator) -> String {
    let response: Value = raw_client()
        .post(format!("{}{TENANT_ID}/oauth2/v2.0/token", em.base_url()))
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["access_token"].as_str().unwrap().to_owned()
}

/// A client assertion naming `cert` (by x5t) signed with `key` (RS256).
fn signed_assertion(cert: &str, key: &str, audience: &str) -> String {
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let x5t = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &der,
    ));
    let key = match PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap() {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).unwrap(),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()).unwrap(),
        _ => unreachable!(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT", "x5t": x5t}).to_string()),
        URL_SAFE_NO_PAD.encode(
            json!({"aud": audience, "iss": CLIENT_ID, "sub": CLIENT_ID, "jti": graph_emulator::random_guid(), "nbf": now, "exp": now + 600})
                .to_string()
        )
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}
