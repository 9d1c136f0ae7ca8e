//! Bounded reads end to end: a read stopped at one of its bounds fails the
//! mapping's run with the bound's reason, and changes no user (DESIGN §3,
//! complete reads only).

use serde_json::json;
use usersync::api::{RunResult, RunSummary};

use crate::entra::{cloud_mapping, entra};
use crate::graph_emulator::{Fault, GraphEmulator};
use crate::ldap_support::Server;
use crate::world::{Scene, World};

/// An Entra ID scene whose mapping `cloud` has imported `count` users named
/// `<prefix><i>@contoso.example`, with full reads only and no preserve threshold.
async fn entra_with_users(
    test: &str,
    prefix: &str,
    count: u32,
) -> (GraphEmulator, Scene, Vec<String>) {
    let em = GraphEmulator::start().await;
    em.set_page_cap(2);
    let users: Vec<String> = (0..count)
        .map(|i| format!("{prefix}{i}@contoso.example"))
        .collect();
    for (i, upn) in users.iter().enumerate() {
        em.create_user(upn, &format!("{prefix}{i}"));
    }
    let s = entra(
        test,
        &em,
        json!({"incremental": false, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let first = s.mapping_with("cloud", cloud_mapping(json!({}))).await;
    assert_eq!(first.imported, count, "{first:?}");
    (em, s, users)
}

/// The run failed with `reason`, its message names `setting`, and every one
/// of `users` is still Active.
async fn failed_changing_no_one(
    s: &Scene,
    run: &RunSummary,
    reason: &str,
    setting: &str,
    users: &[String],
) {
    assert_eq!(run.result, RunResult::Failed, "{run:?}");
    let message = run.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("({reason})")) && message.contains(setting),
        "{run:?}"
    );
    for user in users {
        assert_eq!(
            s.state(user).await,
            "Active",
            "a read stopped at a bound changed {user}"
        );
    }
}

#[tokio::test]
async fn entra_a_read_past_its_budget_fails_the_run_and_preserves_no_one() {
    let (em, s, users) = entra_with_users("entra-budget", "b", 5).await;
    s.patch_connector(json!({"entraID": {"readBudget": "3s"}}))
        .await;
    // Graph keeps throttling: each request alone would wait on, within its own
    // retry budget; the read as a whole stops at readBudget.
    em.inject(Fault::Throttle { retry_after: 1 }, 10_000);

    let run = s.sync("cloud").await;

    failed_changing_no_one(
        &s,
        &run,
        "ReadBudgetExceeded",
        "spec.entraID.readBudget",
        &users,
    )
    .await;
}

#[tokio::test]
async fn entra_an_answer_past_the_response_cap_fails_the_run_and_imports_no_one() {
    let (em, s, users) = entra_with_users("entra-cap", "r", 3).await;
    // 150 newcomers with 12 KB names, on pages of 100 users: about 1.2 MB a page.
    em.set_page_cap(100);
    let long_name = "N".repeat(12_000);
    for i in 0..150 {
        em.create_user(&format!("n{i}@contoso.example"), &long_name);
    }
    s.patch_connector(json!({"entraID": {"maxResponseMiB": 1}}))
        .await;

    let run = s.sync("cloud").await;

    failed_changing_no_one(
        &s,
        &run,
        "ResponseTooLarge",
        "spec.entraID.maxResponseMiB",
        &users,
    )
    .await;
    assert_eq!(run.imported, 0, "{run:?}");
    assert_eq!(s.users().await.len(), 3, "a cut-off read imported users");
}

#[tokio::test]
async fn ldap_a_search_past_max_entries_fails_the_run_and_preserves_no_one() {
    let w = World::new(
        "max-entries",
        Server::slapd(),
        json!({"incremental": false, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let users = ["erin", "finn", "gail"].map(String::from);
    for uid in &users {
        w.add_user(uid, false);
    }
    let first = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(first.imported, 3, "{first:?}");
    w.patch_connector(json!({"ldap": {"maxEntries": 2}})).await;

    let run = w.sync("staff").await;

    failed_changing_no_one(
        &w,
        &run,
        "EntryLimitExceeded",
        "spec.ldap.maxEntries",
        &users,
    )
    .await;
}
