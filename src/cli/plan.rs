//! `usersync plan <mapping>`: what a run would do now, applying nothing.

use std::fmt::Write as _;

use kube::{Api, Client};

use crate::api::DirectoryMapping;
use crate::controller::Directories;
use crate::controller::planning::{ViewFrom, prepare};
use crate::core::{Plan, TransitionKind};
use crate::store::Backend;

/// Plan one run of `mapping` exactly as the operator would, and apply nothing.
pub async fn plan(
    client: Client,
    backend: &Backend,
    namespace: &str,
    mapping: &str,
) -> anyhow::Result<Plan> {
    let api: Api<DirectoryMapping> = Api::namespaced(client.clone(), namespace);
    let mapping = api.get(mapping).await?;
    let prepared = prepare(
        &client,
        backend.open(&client, namespace),
        &Directories::default(),
        &mapping,
        ViewFrom::Directory,
        None,
        jiff::Timestamp::now(),
    )
    .await?;
    Ok(prepared.plan)
}

/// The plan as text for a terminal: the counts, then one line per change.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan: {}", plan.counts);
    if let Some(blocked) = &plan.blocked {
        let _ = writeln!(out, "blocked: {blocked}");
    }
    for t in &plan.transitions {
        let detail = match &t.kind {
            TransitionKind::Transfer { from } => {
                format!(" (from {})", from.as_deref().unwrap_or("no mapping"))
            }
            TransitionKind::Import {
                follows: Some(previous),
            } => format!(" (returns after deletion of {previous})"),
            TransitionKind::Preserve => format!(" ({:?})", t.record.reason),
            _ => String::new(),
        };
        let username = t.record.fields.username.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "{:<9} {:<40} {username}{detail}",
            t.kind.label(),
            t.record.name
        );
    }
    if let Some(blocked) = &plan.blocked {
        for t in &blocked.withheld {
            let _ = writeln!(
                out,
                "withheld  {:<40} {} {}",
                t.record.name,
                t.kind.label(),
                t.record.fields.username.as_deref().unwrap_or("-")
            );
        }
    }
    for skip in &plan.skips {
        let _ = writeln!(out, "skipped   {skip}");
    }
    out
}
