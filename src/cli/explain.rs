//! `usersync explain <user>`: why a user is in its state, what its deletion still
//! waits for, what happened to it, and for a user that is not imported, why not.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::api::{ConnectorHealth, DirectoryMapping, RunSummary, SyncPolicy};
use crate::controller::Directories;
use crate::controller::planning::{ViewFrom, prepare};
use crate::controller::resolve::{gate_of, policy_of};
use crate::core::{self, Explanation, TransitionKind, UserRecord};
use crate::store::{Backend, HistoryEntry, UserStore};

/// What `explain` found for one query.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The records the query names (a username reused after a deletion names the
    /// tombstone and the new record).
    pub records: Vec<Explained>,
    /// When no live directory record matched: what each mapping's full read says
    /// about it.
    pub not_imported: Vec<NotImported>,
}

/// One record, explained.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explained {
    pub record: UserRecord,
    pub explanation: Explanation,
    pub mapping: Option<Related>,
    /// None for a Manual or CSV user, which has no connector.
    pub connector: Option<Related>,
    pub history: Vec<HistoryEntry>,
    /// The last run of its mapping.
    pub last_run: Option<RunSummary>,
}

/// A mapping or connector a record refers to, with its conditions.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Related {
    pub name: String,
    pub exists: bool,
    pub conditions: Vec<String>,
}

/// Why one mapping did not import a directory user.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotImported {
    pub mapping: String,
    pub why: String,
}

/// Explain the user `query` names (record name, username or anchor) in `namespace`.
pub async fn explain(
    client: &Client,
    backend: &Backend,
    namespace: &str,
    query: &str,
    now: jiff::Timestamp,
) -> anyhow::Result<Report> {
    let mut store = backend.open(client, namespace);
    let mut snapshot: Vec<_> = store
        .snapshot()
        .await?
        .iter()
        .filter(|r| {
            r.name == query || r.anchor == query || r.fields.username.as_deref() == Some(query)
        })
        .cloned()
        .collect();
    snapshot.sort_by_key(|r| (r.state == core::State::Deleted, r.name.clone()));
    let mappings: Api<DirectoryMapping> = Api::namespaced(client.clone(), namespace);
    let connectors: Api<ConnectorHealth> = Api::namespaced(client.clone(), namespace);
    let policies: Api<SyncPolicy> = Api::namespaced(client.clone(), namespace);
    let mut records = Vec::new();
    // A name reaches the API server only once it is a name (a record of the
    // PostgreSQL store, say, was never checked by a CRD schema).
    let named = |name: &str| crate::api::is_dns1123_subdomain(name);
    for record in snapshot {
        let mapping = match &record.mapping {
            Some(name) if named(name) => mappings.get_opt(name).await?,
            _ => None,
        };
        let policy = match &mapping {
            Some(m) if named(&m.spec.policy_ref) => policies
                .get_opt(&m.spec.policy_ref)
                .await?
                .and_then(|p| policy_of(&p).ok()),
            _ => None,
        };
        let connector = match record.connector.as_str() {
            name if named(name) => connectors.get_opt(name).await?,
            _ => None,
        };
        let gate = connector.as_ref().map(|c| gate_of(Some(c)));
        let explanation = core::explain(&record, policy.as_ref(), gate.as_ref(), now);
        let history = store.history(&record.name).await?;
        let connector = (!record.connector.is_empty()).then(|| {
            let status = connector
                .as_ref()
                .map(|c| c.status.as_ref().map(|s| &s.conditions[..]));
            Related::of(&record.connector, status)
        });
        let last_run = mapping
            .as_ref()
            .and_then(|m| m.status.as_ref()?.last_run.clone());
        let mapping = record.mapping.as_deref().map(|name| {
            let status = mapping
                .as_ref()
                .map(|m| m.status.as_ref().map(|s| &s.conditions[..]));
            Related::of(name, status)
        });
        records.push(Explained {
            record,
            explanation,
            mapping,
            connector,
            history,
            last_run,
        });
    }
    // A Manual or CSV user, or a tombstone, may share the name of a directory user
    // that is not imported: say why that one is not.
    let imported = records
        .iter()
        .any(|e| e.record.origin.is_managed_by_sync() && e.record.state != core::State::Deleted);
    let not_imported = if !imported {
        why_not_imported(client, backend, namespace, query, now).await?
    } else {
        Vec::new()
    };
    Ok(Report {
        records,
        not_imported,
    })
}

/// For a user no record names: what a full read of each mapping finds for it.
async fn why_not_imported(
    client: &Client,
    backend: &Backend,
    namespace: &str,
    query: &str,
    now: jiff::Timestamp,
) -> anyhow::Result<Vec<NotImported>> {
    let api: Api<DirectoryMapping> = Api::namespaced(client.clone(), namespace);
    let mut mappings = api.list(&ListParams::default()).await?.items;
    mappings.sort_by_key(|m| (m.spec.priority, m.name_any()));
    let mut answers = Vec::new();
    // The mappings so far (the first claim wins) whose scope holds the user
    // enabled: (name, priority, connector).
    let mut claimants: Vec<(String, i32, String)> = Vec::new();
    // One token for every mapping's read.
    let directories = Directories::default();
    for mapping in &mappings {
        let read = prepare(
            client,
            backend.open(client, namespace),
            &directories,
            mapping,
            ViewFrom::FullRead,
            None,
            now,
        );
        let why = match read.await {
            Err(e) => format!("its scope could not be read: {e}"),
            Ok(prepared) => {
                let view = prepared.basis.view();
                let entry = view.entries.values().find(|e| {
                    e.anchor == query
                        || e.username.as_deref() == Some(query)
                        || e.user_principal_name.as_deref() == Some(query)
                });
                match entry {
                    None => "not in its scope: the full read found no directory user with that username, anchor or UPN".into(),
                    Some(e) if !e.enabled => {
                        "in its scope, but disabled in the directory: a disabled account is never imported".into()
                    }
                    Some(e) => {
                        let anchor = e.anchor.as_str();
                        let plan = &prepared.plan;
                        let connector = &mapping.spec.connector_ref;
                        let claimant = claimants
                            .iter()
                            .find(|(_, _, c)| c == connector)
                            .cloned();
                        claimants.push((
                            mapping.name_any(),
                            mapping.spec.priority,
                            connector.clone(),
                        ));
                        if let Some(skip) = plan.skips.iter().find(|s| s.anchor == anchor) {
                            format!("in its scope, but not imported: {skip}")
                        } else if plan.transitions.iter().any(|t| {
                            t.record.anchor == anchor
                                && matches!(t.kind, TransitionKind::Import { .. })
                        }) {
                            "in its scope and enabled: the next run of this mapping imports it"
                                .into()
                        } else if let Some((name, priority, _)) = claimant {
                            format!(
                                "in its scope and enabled, but mapping {name} of the same connector (priority {priority}, a lower number) comes first and claims it"
                            )
                        } else {
                            "in its scope and enabled, but the plan does not import it".into()
                        }
                    }
                }
            }
        };
        answers.push(NotImported {
            mapping: mapping.name_any(),
            why,
        });
    }
    Ok(answers)
}

impl Related {
    /// Object `name`: `None` when it does not exist, else its conditions (`None`
    /// while it has no status).
    fn of(name: &str, found: Option<Option<&[Condition]>>) -> Self {
        Related {
            name: name.to_string(),
            exists: found.is_some(),
            conditions: found.flatten().map(described).unwrap_or_default(),
        }
    }
}

fn described(conditions: &[Condition]) -> Vec<String> {
    conditions
        .iter()
        .map(|c| match c.message.as_str() {
            "" => format!("{}={} {}", c.type_, c.status, c.reason),
            message => format!("{}={} {}: {message}", c.type_, c.status, c.reason),
        })
        .collect()
}

/// The report as text for a terminal.
pub fn render(query: &str, report: &Report) -> String {
    let mut out = String::new();
    if report.records.is_empty() {
        let _ = writeln!(
            out,
            "no user record matches {query:?} (by name, username or anchor)"
        );
        if report.not_imported.is_empty() {
            let _ = writeln!(out, "no mapping exists in this namespace to import it");
        }
        for n in &report.not_imported {
            let _ = writeln!(out, "mapping {}: {}", n.mapping, n.why);
        }
        return out;
    }
    for n in &report.not_imported {
        let _ = writeln!(out, "mapping {}: {}", n.mapping, n.why);
    }
    for (i, e) in report.records.iter().enumerate() {
        if i > 0 || !report.not_imported.is_empty() {
            out.push('\n');
        }
        let r = &e.record;
        let reason = r.reason.map(|x| format!(" ({x})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "user {} ({}), {} record: {}{reason}",
            r.name,
            r.fields.username.as_deref().unwrap_or("no username"),
            r.origin,
            r.state
        );
        let _ = writeln!(out, "  why:  {}", e.explanation.rule);
        let _ = writeln!(out, "  next: {}", e.explanation.next);
        if !e.explanation.deletion_needs.is_empty() {
            let _ = writeln!(out, "  deletion needs:");
            for need in &e.explanation.deletion_needs {
                let mark = if need.met { "yes" } else { "no " };
                let _ = writeln!(out, "    [{mark}] {}: {}", need.what, need.detail);
            }
        }
        if let Some(m) = &e.mapping {
            related(&mut out, "mapping", m);
        }
        if let Some(c) = &e.connector {
            related(&mut out, "connector", c);
        }
        if let Some(run) = &e.last_run {
            let _ = writeln!(
                out,
                "  last run {}: {:?}, {}",
                run.id,
                run.result,
                run.message.as_deref().unwrap_or("")
            );
        }
        if e.history.is_empty() {
            let _ = writeln!(out, "  history: none kept");
        } else {
            let _ = writeln!(out, "  history:");
            for h in &e.history {
                let run = h
                    .run
                    .as_deref()
                    .map(|r| format!(" run {r}"))
                    .unwrap_or_default();
                let by =
                    h.by.as_deref()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default();
                let _ = writeln!(out, "    {} {}{run}{by}", h.at, h.what);
            }
        }
    }
    out
}

fn related(out: &mut String, kind: &str, r: &Related) {
    if !r.exists {
        let _ = writeln!(out, "  {kind} {}: no longer exists", r.name);
        return;
    }
    let _ = writeln!(out, "  {kind} {}:", r.name);
    for c in &r.conditions {
        let _ = writeln!(out, "    {c}");
    }
}
