//! Figures, printed and not timed: the token and Graph requests a 10k-user
//! tenant sees for a full run and an incremental run of one connector, with
//! probes between them, through the sources the controller makes (a new one
//! for every run and probe, sharing the connector's token).
//!
//! `cargo test --release --test graph_figures -- --nocapture` prints them.
//! The token count is asserted: one for the whole sequence.

mod graph_emulator;

use std::time::{Duration, Instant};

use graph_emulator::{CLIENT_ID, CLIENT_SECRET, GraphEmulator, TENANT_ID};
use serde_json::json;
use usersync::directory::graph::{
    Cloud, Credential, GraphScope, GraphSettings, GraphSource, TokenCache,
};
use usersync::directory::{Incremental, Scope, Source};
use usersync::secret::SecretString;

const USERS: usize = 10_000;
/// Users whose mail changes between the runs (1 %).
const CHANGED: usize = USERS / 100;
const PROBES_BETWEEN_RUNS: usize = 3;

const OWNER: &str = "figures/corp";

fn settings(em: &GraphEmulator) -> GraphSettings {
    let mut s = GraphSettings::new(
        TENANT_ID,
        CLIENT_ID,
        Credential::Secret(SecretString::new(CLIENT_SECRET)),
        Cloud::Global,
    );
    s.authority_host = Some(em.base_url());
    s.graph_host = Some(em.base_url());
    s.timeout = Duration::from_secs(30);
    s
}

/// A source as the controller makes one for a run or a probe: new, with the
/// connector's token from `tokens` (or, without one, a token of its own).
fn source(em: &GraphEmulator, tokens: Option<&TokenCache>) -> Source {
    let settings = settings(em);
    let source = match tokens {
        Some(cache) => GraphSource::with_token_cache(&settings, cache, OWNER),
        None => GraphSource::new(&settings),
    };
    Source::Graph(Box::new(source.unwrap()))
}

/// Requests of one step: (token requests, Graph requests).
fn requests_since(em: &GraphEmulator, tokens_before: u64) -> (u64, usize) {
    let figures = (em.token_requests() - tokens_before, em.graph_requests());
    em.clear_log();
    figures
}

struct Figures {
    full: (u64, usize, usize),
    probes: (u64, usize),
    incremental: (u64, usize, usize),
}

/// A full run, probes, 1 % of the users changed, and an incremental run.
async fn runs(em: &GraphEmulator, ids: &[String], tokens: Option<&TokenCache>) -> Figures {
    let scope = Scope::Graph(GraphScope::all_users());
    let now = jiff::Timestamp::now();

    em.clear_log();
    let before = em.token_requests();
    let started = Instant::now();
    let full = source(em, tokens)
        .read_with_cursor(&scope, &[], now)
        .await
        .unwrap();
    let full_took = started.elapsed();
    assert_eq!(full.read.view.entries.len(), USERS);
    let (full_tokens, full_graph) = requests_since(em, before);
    let cursor = full.cursor.expect("a delta link after the full read");

    let before = em.token_requests();
    for _ in 0..PROBES_BETWEEN_RUNS {
        source(em, tokens).probe().await.unwrap();
    }
    let probes = requests_since(em, before);

    // A property the read selects (Graph's delta reports only those), to a value
    // new each time this runs.
    let round = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for id in ids.iter().take(CHANGED) {
        em.set_property(id, "mail", json!(format!("{id}.{round}@renamed.example")));
    }
    let before = em.token_requests();
    let started = Instant::now();
    let changes = match source(em, tokens)
        .read_since(&scope, &cursor, &[], now)
        .await
        .unwrap()
    {
        Incremental::Changes(changes) => changes,
        Incremental::FullReadRequired(why) => panic!("the delta link was refused: {why}"),
    };
    let incremental_took = started.elapsed();
    assert_eq!(changes.read.view.entries.len(), CHANGED);
    let (incremental_tokens, incremental_graph) = requests_since(em, before);
    println!(
        "  full read {} ms, incremental read {} ms (not a target; for orientation)",
        full_took.as_millis(),
        incremental_took.as_millis()
    );
    Figures {
        full: (full_tokens, full_graph, USERS),
        probes,
        incremental: (incremental_tokens, incremental_graph, CHANGED),
    }
}

fn print(title: &str, f: &Figures) {
    println!("{title}");
    println!("  | step | users read | token requests | Graph requests |");
    println!("  |---|---|---|---|");
    println!(
        "  | full run | {} | {} | {} |",
        f.full.2, f.full.0, f.full.1
    );
    println!(
        "  | {PROBES_BETWEEN_RUNS} probes | – | {} | {} |",
        f.probes.0, f.probes.1
    );
    println!(
        "  | incremental run ({} % changed) | {} | {} | {} |",
        CHANGED * 100 / USERS,
        f.incremental.2,
        f.incremental.0,
        f.incremental.1
    );
}

#[tokio::test]
async fn figures_for_a_10k_user_tenant_full_and_incremental() {
    let em = GraphEmulator::start().await;
    let ids: Vec<String> = (0..USERS)
        .map(|i| em.create_user(&format!("u{i:05}@contoso.example"), &format!("User {i}")))
        .collect();

    let cache = TokenCache::default();
    let shared = runs(&em, &ids, Some(&cache)).await;
    print(
        &format!("{USERS} users, the connector's token kept across runs and probes:"),
        &shared,
    );
    let total = shared.full.0 + shared.probes.0 + shared.incremental.0;
    assert_eq!(total, 1, "one token serves the whole sequence");

    let own = runs(&em, &ids, None).await;
    print(
        &format!("{USERS} users, for comparison a token per source (as before):"),
        &own,
    );
    assert_eq!(
        (own.full.1, own.incremental.1),
        (shared.full.1, shared.incremental.1),
        "the Graph requests do not depend on where the token comes from"
    );
}
