//! Push mode (the SyncPolicy's `push`): per mapping, a channel on which the
//! directory reports changes below the mapping's base DN, and the runs those
//! changes start.
//!
//! A change is never applied from the channel. It marks the mapping as having
//! changes to read and asks for a reconcile, after a second's wait for more
//! changes; the reconciler then starts an incremental run (trigger `Push`) once
//! no run is in progress and the last one did not fail, through the same
//! planner, rules, approvals and fencing as any run. Changes reported during a
//! run start another when it ends. A channel that opens (at the operator's
//! start, after a lost connection or an expired cookie) starts one run too: it
//! reads what changed while no channel was open. That one may start although
//! the last run failed, without waiting out the runs' backoff: the directory
//! has just answered. Scheduled runs and full reads
//! go on as before, so a channel that is down costs only speed.
//!
//! OpenLDAP and Active Directory push (see
//! [`IncrementalSource::listen`](crate::directory::ldap::IncrementalSource::listen));
//! Entra ID is asked for its changes every [`POLL_EVERY`] with a Graph delta
//! query from a copy of the mapping's cursor. A channel that waits costs no
//! CPU: its task sleeps on the socket.
//!
//! The channel's state is the mapping's `Push` condition, written under a field
//! manager of its own only when it changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::connection::{scope_for, source_for};
use super::context::Context;
use super::metrics::{Metrics, mapping_labels};
use crate::api::{
    ConnectorHealth, DirectoryMapping, PUSH_FIELD_MANAGER, condition, find_condition,
};
use crate::directory::{Incremental, PushEnd, PushEvent, Scope, Source};

/// The condition type of a mapping's push channel.
pub const PUSH: &str = "Push";
/// How long a reported change waits for more before its run is asked for.
const SETTLE: Duration = Duration::from_secs(1);
/// How often a directory that does not push (Entra ID) is asked for changes.
pub const POLL_EVERY: Duration = Duration::from_secs(10);
/// The wait before the first retry of a lost channel; it doubles up to
/// [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LAST_RETRY: Duration = Duration::from_secs(300);
/// How long a directory that refused push waits before it is asked again.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(600);

/// The open push channels of this process, by mapping.
#[derive(Default)]
pub struct PushChannels {
    open: Mutex<HashMap<String, Channel>>,
}

struct Channel {
    /// What the channel was opened for: a new one replaces it when this differs.
    opened_for: String,
    task: tokio::task::AbortHandle,
    changes: Arc<Changes>,
}

/// Changes reported on a channel, and how many of them a run has started for.
#[derive(Default)]
struct Changes {
    seen: AtomicU64,
    served: AtomicU64,
    /// The channel opened since the last run started: the directory answers.
    opened: AtomicBool,
}

/// What a mapping's channel asks of the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushDemand {
    /// Nothing to read.
    None,
    /// Changes to read, once the runs' backoff allows.
    Changes,
    /// Changes to read, and the channel has just opened: the directory answers
    /// again, so one run may start even though the last one failed.
    Reopened,
}

/// `namespace/name` of a mapping.
fn key_of(mapping: &DirectoryMapping) -> String {
    format!(
        "{}/{}",
        mapping.namespace().unwrap_or_default(),
        mapping.name_any()
    )
}

impl PushChannels {
    /// Keep a channel open for `mapping` of `connector`: open one if there is
    /// none, or a new one when the mapping's or the connector's spec changed.
    pub fn keep_open(
        &self,
        ctx: &Arc<Context>,
        mapping: &DirectoryMapping,
        connector: &ConnectorHealth,
    ) {
        let opened_for = format!(
            "{:?}/{:?}/{:?}",
            mapping.metadata.generation, connector.metadata.uid, connector.metadata.generation
        );
        let key = key_of(mapping);
        let mut open = self.open.lock().expect("push channels lock poisoned");
        if open
            .get(&key)
            .is_some_and(|c| c.opened_for == opened_for && !c.task.is_finished())
        {
            return;
        }
        // Changes not yet served stay pending across the new channel.
        let changes = open
            .remove(&key)
            .map(|old| {
                old.task.abort();
                old.changes
            })
            .unwrap_or_default();
        let task = tokio::spawn(keep_listening(
            ctx.clone(),
            mapping.namespace().unwrap_or_default(),
            mapping.name_any(),
            changes.clone(),
        ));
        tracing::info!(mapping = %mapping.name_any(), "push mode: opening a channel to the directory");
        open.insert(
            key,
            Channel {
                opened_for,
                task: task.abort_handle(),
                changes,
            },
        );
    }

    /// Close the channel of `mapping`, if one is open; true if one was.
    pub fn close(&self, mapping: &DirectoryMapping, metrics: &Metrics) -> bool {
        let closed = self
            .open
            .lock()
            .expect("push channels lock poisoned")
            .remove(&key_of(mapping));
        match closed {
            Some(channel) => {
                channel.task.abort();
                let labels = mapping_labels(
                    &mapping.namespace().unwrap_or_default(),
                    &mapping.name_any(),
                );
                metrics.push_open.remove(&labels);
                true
            }
            None => false,
        }
    }

    /// Close every channel (the process is stopping).
    pub fn close_all(&self) {
        for (_, channel) in self
            .open
            .lock()
            .expect("push channels lock poisoned")
            .drain()
        {
            channel.task.abort();
        }
    }

    /// Whether the channel of `mapping` reported changes no run has started for.
    pub fn demand(&self, mapping: &DirectoryMapping) -> PushDemand {
        let open = self.open.lock().expect("push channels lock poisoned");
        let Some(changes) = open.get(&key_of(mapping)).map(|c| &c.changes) else {
            return PushDemand::None;
        };
        if changes.seen.load(Ordering::SeqCst) <= changes.served.load(Ordering::SeqCst) {
            PushDemand::None
        } else if changes.opened.load(Ordering::SeqCst) {
            PushDemand::Reopened
        } else {
            PushDemand::Changes
        }
    }

    /// A run of `mapping` starts now: it reads every change reported so far.
    pub fn served(&self, mapping: &DirectoryMapping) {
        if let Some(c) = self
            .open
            .lock()
            .expect("push channels lock poisoned")
            .get(&key_of(mapping))
        {
            let seen = c.changes.seen.load(Ordering::SeqCst);
            c.changes.served.fetch_max(seen, Ordering::SeqCst);
            c.changes.opened.store(false, Ordering::SeqCst);
        }
    }
}

/// The channel's state, as the `Push` condition shows it.
struct PushState {
    open: bool,
    reason: &'static str,
    message: String,
}

/// Keep a channel open for one mapping, opening it again with back-off when it
/// is lost, until the task is aborted.
async fn keep_listening(ctx: Arc<Context>, ns: String, name: String, changes: Arc<Changes>) {
    let mut failures = 0u32;
    loop {
        let wait = match listen_once(&ctx, &ns, &name, &changes, &mut failures).await {
            // The directory ended the search: listen again at once; the new
            // channel's first run reads what changed in between.
            Ok(PushEnd::RefreshRequired) => {
                tracing::info!(mapping = %name, namespace = %ns, "the directory ended the push channel; opening it again");
                Duration::from_secs(1)
            }
            Ok(PushEnd::NotSupported(why)) => {
                let state = PushState {
                    open: false,
                    reason: "PushUnsupported",
                    message: format!(
                        "{why}; changes are read by scheduled runs only (asked again in {}s)",
                        UNSUPPORTED_RETRY.as_secs()
                    ),
                };
                report(&ctx, &ns, &name, state).await;
                UNSUPPORTED_RETRY
            }
            Err(cause) => {
                failures = failures.saturating_add(1);
                ctx.metrics
                    .push_lost
                    .get_or_create(&mapping_labels(&ns, &name))
                    .inc();
                let wait = retry_after(failures);
                tracing::warn!(mapping = %name, namespace = %ns, %cause, retry_in_s = wait.as_secs(), "push channel lost");
                let state = PushState {
                    open: false,
                    reason: "PushDisconnected",
                    message: format!(
                        "the push channel is closed: {cause}; opening it again in {}s, and scheduled runs go on meanwhile",
                        wait.as_secs()
                    ),
                };
                report(&ctx, &ns, &name, state).await;
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The wait before retry number `failures` of a lost channel.
fn retry_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(LAST_RETRY)
}

/// Open one channel and follow it until it closes: `Ok` when the directory
/// closed it (or offers none), `Err` with the cause when it could not be
/// opened or was lost. The cause names no secret.
async fn listen_once(
    ctx: &Arc<Context>,
    ns: &str,
    name: &str,
    changes: &Changes,
    failures: &mut u32,
) -> Result<PushEnd, String> {
    let mappings: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), ns);
    let connectors: Api<ConnectorHealth> = Api::namespaced(ctx.client.clone(), ns);
    let mapping = mappings
        .get(name)
        .await
        .map_err(|e| format!("reading the mapping failed: {e}"))?;
    let connector = connectors
        .get(&mapping.spec.connector_ref)
        .await
        .map_err(|e| format!("reading the connector failed: {e}"))?;
    let source = source_for(&ctx.client, &connector, &ctx.directories)
        .await
        .map_err(|e| e.to_string())?;
    let scope = scope_for(&mapping).map_err(|e| e.to_string())?;
    if let Source::Graph(_) = source {
        return poll(ctx, &mapping, &source, &scope, changes, failures).await;
    }
    let (events, mut reported) = mpsc::unbounded_channel();
    let listen = source.listen(&scope, move |event| {
        let _ = events.send(event);
    });
    tokio::pin!(listen);
    // Set by the first change of a batch: when the batch's run is asked for.
    let mut settled: Option<Instant> = None;
    loop {
        tokio::select! {
            end = &mut listen => {
                // A change reported just before the end is read by the run the
                // next channel starts.
                return end.map_err(|e| format!("{} ({})", e.message, e.reason));
            }
            Some(event) = reported.recv() => match event {
                PushEvent::Listening => {
                    *failures = 0;
                    tracing::info!(mapping = %name, namespace = %ns, "push channel open");
                    let state = PushState {
                        open: true,
                        reason: "Listening",
                        message: "the directory reports changes below the base DN as they are made; each starts an incremental run".into(),
                    };
                    report(ctx, ns, name, state).await;
                    // What changed while no channel was open.
                    changes.opened.store(true, Ordering::SeqCst);
                    changed(ctx, &mapping, changes);
                }
                PushEvent::Changed => {
                    ctx.metrics
                        .push_changes
                        .get_or_create(&mapping_labels(ns, name))
                        .inc();
                    settled.get_or_insert_with(|| Instant::now() + SETTLE);
                }
            },
            _ = tokio::time::sleep_until(settled.unwrap_or_else(Instant::now)), if settled.is_some() => {
                settled = None;
                changed(ctx, &mapping, changes);
            }
        }
    }
}

/// Ask Entra ID for the mapping's changes every [`POLL_EVERY`], from a copy of
/// its cursor (the delta link the last run kept), and mark the mapping changed
/// when there are any. Returns only on a failure.
async fn poll(
    ctx: &Arc<Context>,
    mapping: &DirectoryMapping,
    source: &Source,
    scope: &Scope,
    changes: &Changes,
    failures: &mut u32,
) -> Result<PushEnd, String> {
    let (ns, name) = (mapping.namespace().unwrap_or_default(), mapping.name_any());
    let mappings: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), &ns);
    let state = PushState {
        open: true,
        reason: "Polling",
        message: format!(
            "the directory is asked for changes every {}s (a delta query); each change starts an incremental run",
            POLL_EVERY.as_secs()
        ),
    };
    report(ctx, &ns, &name, state).await;
    let mut cursor: Option<String> = None;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        if cursor.is_none() {
            // The cursor the mapping's last run kept, for this generation.
            let fresh = mappings
                .get(&name)
                .await
                .map_err(|e| format!("reading the mapping failed: {e}"))?;
            cursor = fresh
                .status
                .and_then(|s| s.read_cursor)
                .filter(|c| Some(c.generation) == fresh.metadata.generation)
                .map(|c| c.value);
        }
        let Some(from) = &cursor else {
            continue;
        };
        match source
            .read_since(scope, from, &[], ctx.now())
            .await
            .map_err(|e| format!("{} ({})", e.message, e.reason))?
        {
            Incremental::Changes(read) => {
                *failures = 0;
                let reported = read.read.view.entries.len() + read.read.view.removed.len();
                if reported > 0 {
                    ctx.metrics
                        .push_changes
                        .get_or_create(&mapping_labels(&ns, &name))
                        .inc_by(reported as u64);
                    changed(ctx, mapping, changes);
                }
                cursor = read.cursor;
            }
            Incremental::FullReadRequired(_) => {
                changed(ctx, mapping, changes);
                cursor = None;
            }
        }
    }
}

/// The channel reported changes: count them and ask for a reconcile, which
/// starts their run.
fn changed(ctx: &Context, mapping: &DirectoryMapping, changes: &Changes) {
    changes.seen.fetch_add(1, Ordering::SeqCst);
    ctx.reconcile_soon(mapping);
}

/// Show `state` as the mapping's `Push` condition, unless it already does.
async fn report(ctx: &Context, ns: &str, name: &str, state: PushState) {
    ctx.metrics
        .push_open
        .get_or_create(&mapping_labels(ns, name))
        .set(i64::from(state.open));
    if !ctx.may_write() {
        return;
    }
    let api: Api<DirectoryMapping> = Api::namespaced(ctx.client.clone(), ns);
    let Ok(Some(mapping)) = api.get_opt(name).await else {
        return;
    };
    let conditions = mapping.status.map(|s| s.conditions).unwrap_or_default();
    let previous = find_condition(&conditions, PUSH);
    let wanted = condition(
        PUSH,
        state.open,
        state.reason,
        state.message,
        mapping.metadata.generation,
        previous,
        ctx.now(),
    );
    if previous.is_some_and(|p| {
        (&p.status, &p.reason, &p.message, p.observed_generation)
            == (
                &wanted.status,
                &wanted.reason,
                &wanted.message,
                wanted.observed_generation,
            )
    }) {
        return;
    }
    if let Err(e) = apply_push_conditions(&api, name, vec![wanted]).await {
        tracing::warn!(mapping = %name, namespace = %ns, error = %e, "could not write the Push condition");
    }
}

/// Remove the `Push` condition of a mapping whose push mode is off.
pub async fn clear_condition(ctx: &Context, mapping: &DirectoryMapping) {
    let has_one = mapping
        .status
        .as_ref()
        .is_some_and(|s| find_condition(&s.conditions, PUSH).is_some());
    if !has_one || !ctx.may_write() {
        return;
    }
    let api: Api<DirectoryMapping> =
        Api::namespaced(ctx.client.clone(), &mapping.namespace().unwrap_or_default());
    if let Err(e) = apply_push_conditions(&api, &mapping.name_any(), Vec::new()).await {
        tracing::warn!(mapping = %mapping.name_any(), error = %e, "could not remove the Push condition");
    }
}

/// Apply the push channel's conditions (all it owns: none removes the one it had).
async fn apply_push_conditions(
    api: &Api<DirectoryMapping>,
    name: &str,
    conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "usersync.dev/v1alpha1",
        "kind": "DirectoryMapping",
        "status": {"conditions": conditions},
    });
    api.patch_status(
        name,
        &PatchParams::apply(PUSH_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_channel_is_retried_with_doubling_waits_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_after(u32::MAX), LAST_RETRY);
    }
}
