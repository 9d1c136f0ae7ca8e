//! The ProvisioningTarget reconciler: one delivery cycle per `interval`. A cycle
//! reads the registry and the target's ledger, plans what the application should
//! receive (src/delivery/plan.rs), and only when there is something to send asks
//! the application (a probe, its capabilities, and on a full reconcile its
//! accounts) and sends it. Every answer updates the ledger entry of its user; a
//! cycle with nothing to do sends no request and writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use super::connection::{ConnectionError, Holder, credential_value};
use super::context::Context;
use super::error::Result;
use super::metrics::{TargetAccountLabels, TargetLabels, TargetRequestLabels};
use super::ready::STALLED;
use super::run_id::new_run_id;
use super::status::apply_status;
use crate::api::{
    AccountCounts, BlockedCycle, CycleSummary, Deprovision as ApiDeprovision,
    MatchAttribute as ApiMatch, ProvisioningTarget, ProvisioningTargetStatus, RunApproval,
    TargetCapabilities, set_condition,
};
use crate::core::duration::parse_duration;
use crate::core::health::{Health, Verdict};
use crate::delivery::plan::{
    self as dplan, Delivered, DeliveredState, Deprovision, Entry, Remote, Settings, Step,
};
use crate::delivery::resource::{AttributeRule, digest, match_value, removed_paths, resource};
use crate::delivery::scim::{
    Auth, ClientConfig, Exchange, MatchAttribute, Observer, PatchOp, RemoteUser, ScimClient,
    ScimError,
};
use crate::delivery::select::{Requirement, Selection};
use crate::store::ledger::LedgerOf;

/// Condition types of a target.
pub const CONNECTED: &str = "Connected";
pub const QUARANTINED: &str = "Quarantined";
pub const DELETIONS_BLOCKED: &str = "DeletionsBlocked";
pub const INSECURE: &str = "Insecure";

/// Requests in flight at once against one application.
const CONCURRENCY: usize = 8;
/// Failure Events per cycle; the rest are counted in the summary.
const MAX_FAILURE_EVENTS: usize = 10;
/// A cycle whose requests fail more often than this (with at least
/// [`MIN_ATTEMPTS_FOR_RATIO`] sent) quarantines the target.
const MAX_FAILURE_RATIO: f64 = 0.5;
const MIN_ATTEMPTS_FOR_RATIO: usize = 4;
/// The slowest a quarantined target cycles.
const MAX_QUARANTINE_INTERVAL: Duration = Duration::from_secs(3600);
/// Steps sent between two ledger records within a phase: a restart repeats at
/// most this many lookups.
const RECORD_EVERY: usize = 200;
/// Accounts per page of a full reconcile's read.
const LIST_PAGE: u32 = 100;

/// Reconcile one ProvisioningTarget: run a cycle when one is due.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<ProvisioningTarget>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let target = match &guard.0 {
        Ok(t) => t.clone(),
        Err(invalid) => {
            super::ready::report_unreadable(&ctx.client, guard.as_ref(), invalid).await?;
            return Ok(Action::await_change());
        }
    };
    if target.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = ctx.now();
    // The cached copy can predate this process's own last cycle (a Secret or an
    // approval triggers at once): a cycle that looks due is decided on the API
    // server's copy, so that one cycle never runs twice.
    let (ns, name) = (target.namespace().unwrap_or_default(), target.name_any());
    let nudged = |t: &ProvisioningTarget| {
        pending_approval(&ctx, t).is_some() || ctx.credentials_changed(&ns, &name, false)
    };
    let target = match wait_for(&target, nudged(&target), now) {
        Some(_) => target,
        None => {
            let api: Api<ProvisioningTarget> =
                Api::namespaced(ctx.client.clone(), &target.namespace().unwrap_or_default());
            match api.get_opt(&target.name_any()).await? {
                Some(fresh) => fresh,
                None => return Ok(Action::await_change()),
            }
        }
    };
    report_stale_approvals(&ctx, &target).await?;
    let old = target.status.clone().unwrap_or_default();
    let spec = &target.spec;
    let (Ok(interval), Ok(full_every)) = (
        parse_duration(&spec.interval),
        parse_duration(&spec.full_reconcile_interval),
    ) else {
        let mut status = old.clone();
        stalled(
            &mut status,
            &target,
            "InvalidSpec",
            "interval or fullReconcileInterval is not a duration".into(),
            now,
        );
        write(&ctx, &target, &old, &status).await?;
        return Ok(Action::await_change());
    };
    let interval = slowed(interval, old.quarantined_cycles);
    let generation = target.metadata.generation;
    if let Some(wait) = wait_for(&target, nudged(&target), now) {
        return Ok(Action::requeue(wait));
    }
    let approval = pending_approval(&ctx, &target);
    let requested = sync_requested(&target);
    if !ctx.may_write() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let full = old.observed_generation != generation
        || old
            .last_full_reconcile_time
            .as_ref()
            .is_none_or(|t| t.0 + signed(full_every) <= now);
    ctx.credentials_changed(&ns, &name, true);
    let mut status = cycle(&ctx, &target, &old, approval, full, now).await?;
    status.last_sync_time = Some(Time(now));
    let next = slowed(
        parse_duration(&spec.interval).unwrap_or(interval),
        status.quarantined_cycles,
    );
    status.next_sync_time = Some(Time(now + signed(next)));
    status.observed_generation = generation;
    if let Some(r) = requested {
        status.last_sync_request = Some(r);
    }
    write(&ctx, &target, &old, &status).await?;
    Ok(Action::requeue(next))
}

/// How long until the target's next cycle is due; `None` when it is due now: its
/// spec changed, it was `nudged` (an approval waits, or a Secret it reads
/// changed), an admin asked, or its (slowed) interval passed. A spec whose
/// durations do not parse is due, to be reported.
fn wait_for(target: &ProvisioningTarget, nudged: bool, now: jiff::Timestamp) -> Option<Duration> {
    let old = target.status.clone().unwrap_or_default();
    let interval = slowed(
        parse_duration(&target.spec.interval).ok()?,
        old.quarantined_cycles,
    );
    parse_duration(&target.spec.full_reconcile_interval).ok()?;
    let due_at = old
        .last_sync_time
        .as_ref()
        .map(|t| t.0 + signed(interval))?;
    if old.observed_generation != target.metadata.generation
        || nudged
        || sync_requested(target).is_some()
        || due_at <= now
    {
        return None;
    }
    Some(
        due_at
            .duration_since(now)
            .unsigned_abs()
            .max(Duration::from_secs(1)),
    )
}

/// An admin's request for a cycle now that no cycle has answered yet.
fn sync_requested(target: &ProvisioningTarget) -> Option<String> {
    let answered = target
        .status
        .as_ref()
        .and_then(|s| s.last_sync_request.as_ref());
    target
        .annotations()
        .get(crate::api::SYNC_REQUESTED_ANNOTATION)
        .filter(|r| answered != Some(*r))
        .cloned()
}

/// The Secrets a target reads: a change to one starts a cycle (a fixed token
/// clears a quarantine without waiting for the slowed interval).
pub fn secret_names(target: &ProvisioningTarget) -> impl Iterator<Item = &str> {
    let spec = &target.spec;
    [
        spec.auth.bearer_token_secret_ref.as_ref(),
        spec.auth.oauth2.as_ref().map(|o| &o.client_secret_ref),
        spec.ca_secret_ref.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|r| r.name.as_str())
}

/// A quarantined target's interval: doubled per quarantined cycle in a row, up to
/// an hour (or the interval, when that is longer).
fn slowed(interval: Duration, quarantined_cycles: u32) -> Duration {
    if quarantined_cycles == 0 {
        return interval;
    }
    interval
        .saturating_mul(1 << quarantined_cycles.min(8))
        .min(MAX_QUARANTINE_INTERVAL.max(interval))
}

fn signed(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

/// What one cycle found and did, as the target's new status.
async fn cycle(
    ctx: &Context,
    target: &ProvisioningTarget,
    old: &ProvisioningTargetStatus,
    approval: Option<(RunApproval, String)>,
    full: bool,
    now: jiff::Timestamp,
) -> Result<ProvisioningTargetStatus> {
    let mut status = old.clone();
    let name = target.name_any();
    let ns = target.namespace().unwrap_or_default();
    let generation = target.metadata.generation;
    let uid = target.uid().unwrap_or_default();
    let of = LedgerOf {
        target: &name,
        uid: &uid,
        created: target.metadata.creation_timestamp.as_ref().map(|t| t.0),
    };
    insecure(ctx, target, &mut status, now).await;
    let id = new_run_id(now);
    let mut summary = CycleSummary {
        id: id.clone(),
        full_reconcile: full,
        ..Default::default()
    };

    // The desired state, before anything is asked of the application.
    let mut store = ctx.backend.open(&ctx.client, &ns);
    let view = match store.delivery_view(of).await {
        Ok(v) => v,
        Err(e) => {
            let message = format!("reading the registry failed: {e}; the next cycle tries again");
            reconciling(
                &mut status,
                generation,
                "RegistryUnavailable",
                &message,
                now,
            );
            summary.result = "Failed".into();
            summary.message = message;
            status.last_cycle = Some(summary);
            return Ok(status);
        }
    };
    let entries = entries(target, &view);
    // A dry run sends nothing, so it spends no approval: the first cycle that
    // sends uses it.
    let approved = approval
        .as_ref()
        .filter(|_| !target.spec.dry_run)
        .map(|(_, d)| d.as_str());
    let settings = settings(target, now, approved);
    let quiet = dplan::plan(&entries, None, &settings);
    let quarantined = old.quarantined_cycles > 0;
    if !full
        && !quarantined
        && view.foreign.is_empty()
        && quiet.unapproved.is_empty()
        && quiet.steps.is_empty()
        && quiet.blocked.is_none()
        && quiet.invalid.is_empty()
    {
        // Nothing to send: no request, and only counts that changed get written.
        summary.result = "Succeeded".into();
        summary.message = "nothing changed".into();
        finish(
            ctx,
            target,
            &mut status,
            &view.ledger,
            summary,
            None,
            &quiet,
            now,
        )
        .await;
        return Ok(status);
    }

    // From here the application is asked.
    let observer = Arc::new(Recorded::new(ctx, &ns, &name));
    let client = match client_for(ctx, target).await {
        Ok(c) => c.with_observer(observer.clone()),
        Err(e) => {
            let reason = e.reason();
            let message = e.to_string();
            set_condition(
                &mut status.conditions,
                CONNECTED,
                false,
                "NotProbed",
                "the target's settings do not resolve; see Ready".into(),
                generation,
                now,
            );
            failed(&mut status, target, summary, reason, message, now);
            return Ok(status);
        }
    };
    let started = Instant::now();
    if let Err(e) = client.probe().await {
        connected(&mut status, generation, Some(&e), started.elapsed(), now);
        return Ok(failed_cycle(ctx, target, status, summary, &e, observer.requests(), now).await);
    }
    connected(&mut status, generation, None, started.elapsed(), now);
    let (capabilities, actual) =
        match prepare(&client, old, full, &view.ledger, match_attribute(target)).await {
            Ok(found) => found,
            Err(e) => {
                let requests = observer.requests();
                return Ok(failed_cycle(ctx, target, status, summary, &e, requests, now).await);
            }
        };
    status.capabilities = Some(capabilities.clone());
    let plan = dplan::plan(&entries, actual.as_ref(), &settings);

    // Users that cannot be delivered get their reason in the ledger; no request.
    // Entries an earlier target of this name left are forgotten.
    let mut invalid: Vec<(String, Option<Delivered>)> = plan
        .invalid
        .iter()
        .map(|(user, why)| {
            let previous = view.ledger.get(user).cloned().unwrap_or_default();
            (user.clone(), Some(failed_entry(previous, why, now, user)))
        })
        .collect();
    // Users wanted active again spend the approval their entry kept: a later
    // disable or delete of theirs counts against the thresholds.
    let unapproved = plan
        .unapproved
        .iter()
        .filter(|u| !plan.invalid.iter().any(|(i, _)| i == *u));
    invalid.extend(unapproved.filter_map(|user| {
        let previous = view.ledger.get(user)?;
        let entry = Delivered {
            approved: None,
            ..previous.clone()
        };
        Some((user.clone(), Some(entry)))
    }));
    let invalid_users: std::collections::HashSet<String> =
        invalid.iter().map(|(u, _)| u.clone()).collect();
    invalid.extend(
        view.foreign
            .iter()
            .filter(|u| !invalid_users.contains(*u))
            .map(|u| (u.clone(), None)),
    );
    let mut ledger = view.ledger.clone();
    let mut sent = Sent::default();
    if !target.spec.dry_run
        && let Err(stop) = record(ctx, &store, of, &invalid, &mut ledger).await
    {
        sent.stop = Some(stop);
    }
    if target.spec.dry_run {
        summary.result = "DryRun".into();
        summary.message = describe_dry_run(&plan.steps);
        tally(&plan.steps, &mut summary);
    } else if sent.stop.is_none() {
        let executor = Executor {
            client: &client,
            patch: capabilities.patch,
            by: match_attribute(target),
            match_path: match_path(target),
            rules: rules(target),
            held: held_accounts(&view.ledger),
            may_send: &|| ctx.may_write(),
            refused: Default::default(),
        };
        // The approved steps that fail keep the approval for their retries.
        let approved = plan
            .approved
            .then(|| approval.as_ref().map(|(a, _)| a.spec.run_id.as_str()))
            .flatten();
        sent = send(
            ctx,
            &executor,
            &store,
            of,
            (&plan.steps, approved),
            &mut ledger,
            now,
        )
        .await;
        for done in &sent.done {
            count(done, &mut summary);
        }
    }
    let failures: Vec<(String, String)> = plan
        .invalid
        .iter()
        .cloned()
        .chain(sent.failures.iter().cloned())
        .collect();
    summary.failed = u32::try_from(failures.len()).unwrap_or(u32::MAX);
    summary.requests = observer.requests();
    for (user, why) in failures.iter().take(MAX_FAILURE_EVENTS) {
        event(
            ctx,
            target,
            EventType::Warning,
            "DeliveryFailed",
            format!("user {user}: {why}"),
        )
        .await;
    }
    match sent.stop.take() {
        Some(Stop::Fenced) | None => {}
        Some(Stop::Credentials(e)) => {
            let message = match sent.unsent {
                0 => e.to_string(),
                n => format!(
                    "{e}; the requests of {n} users were not sent: they go when a cycle gets through"
                ),
            };
            return Ok(quarantine(
                ctx,
                target,
                status,
                summary,
                "BadCredentials",
                message,
                &ledger,
                now,
            )
            .await);
        }
        Some(Stop::Ledger(message)) => {
            status.accounts = Some(account_counts(&ledger));
            failed(
                &mut status,
                target,
                summary,
                "RegistryUnavailable",
                message,
                now,
            );
            return Ok(status);
        }
    }
    // The ratio counts requests only: a user nothing could be sent for is not the
    // application's failure.
    let request_failures = u32::try_from(sent.failures.len()).unwrap_or(u32::MAX);
    let attempted = summary.created
        + summary.adopted
        + summary.updated
        + summary.enabled
        + summary.disabled
        + summary.deleted
        + request_failures;
    if attempted as usize >= MIN_ATTEMPTS_FOR_RATIO
        && f64::from(request_failures) > MAX_FAILURE_RATIO * f64::from(attempted)
    {
        let message = format!(
            "{request_failures} of {attempted} requests of cycle {id} failed (more than half); cycles slow down until one succeeds; the first failure: {}",
            sent.failures
                .first()
                .map(|(u, w)| format!("{u}: {w}"))
                .unwrap_or_default()
        );
        return Ok(quarantine(
            ctx,
            target,
            status,
            summary,
            "HighFailureRate",
            message,
            &ledger,
            now,
        )
        .await);
    }
    if summary.result.is_empty() {
        summary.result = match (plan.blocked.is_some(), summary.failed) {
            (true, _) => "Blocked",
            (false, 0) => "Succeeded",
            _ => "PartiallyFailed",
        }
        .into();
        summary.message = cycle_message(&summary, plan.deferred);
    }
    if full && summary.result != "DryRun" {
        status.last_full_reconcile_time = Some(Time(now));
    }
    if let Some((approval, _)) = &approval
        && !target.spec.dry_run
        && ctx.may_write()
    {
        // An approval is spent by the cycle that sent what it approved; one whose
        // steps changed meanwhile approves nothing that is still wanted.
        let api: Api<RunApproval> = Api::namespaced(ctx.client.clone(), &ns);
        let (state, consumed_by, message) = match &plan.blocked {
            None => (
                crate::api::ApprovalState::Used,
                Some(id.as_str()),
                match sent.approved_failures {
                    0 => format!(
                        "cycle {id} of target {name} sent the withheld disables and deletes"
                    ),
                    n => format!(
                        "cycle {id} of target {name} sent the withheld disables and deletes; {n} of them failed and are retried on later cycles without a new approval"
                    ),
                },
            ),
            Some(_) => (
                crate::api::ApprovalState::Stale,
                None,
                format!(
                    "the disables and deletes target {name} would send changed since cycle {}: this approval sends nothing; look at the blocked cycle again",
                    approval.spec.run_id
                ),
            ),
        };
        let _ = super::approval::decide(ctx, &api, approval, state, consumed_by, message).await;
    }
    status.quarantined_cycles = 0;
    set_condition(
        &mut status.conditions,
        QUARANTINED,
        false,
        "Healthy",
        "the application accepts the target's requests".into(),
        generation,
        now,
    );
    finish(
        ctx,
        target,
        &mut status,
        &ledger,
        summary,
        Some(&old.blocked_cycle),
        &plan,
        now,
    )
    .await;
    Ok(status)
}

/// The ledger's accounts (not deleted) by id, with their users.
fn held_accounts(ledger: &HashMap<String, Delivered>) -> HashMap<String, String> {
    ledger
        .iter()
        .filter(|(_, d)| d.state != Some(DeliveredState::Deleted))
        .filter_map(|(user, d)| Some((d.remote_id.clone()?, user.clone())))
        .collect()
}

/// The target's attribute map.
fn rules(target: &ProvisioningTarget) -> Vec<AttributeRule> {
    target
        .spec
        .attributes
        .iter()
        .map(|a| AttributeRule {
            from: a.from.clone(),
            to: a.to.clone(),
        })
        .collect()
}

/// The registry's users as the planner's entries: the selected ones, and every
/// user of the ledger (gone from the registry, or no longer selected).
fn entries(target: &ProvisioningTarget, view: &crate::store::ledger::DeliveryView) -> Vec<Entry> {
    let selection = selection(target);
    let rules = rules(target);
    let deprovision = match target.spec.deprovision {
        ApiDeprovision::Disable => Deprovision::Disable,
        ApiDeprovision::Delete => Deprovision::Delete,
        ApiDeprovision::None => Deprovision::Leave,
    };
    let path = match_path(target);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (record, labels) in &view.records {
        let delivered = view.ledger.get(&record.name).cloned();
        let selected = selection.selects(record, labels);
        if !selected && delivered.is_none() {
            continue;
        }
        seen.insert(record.name.as_str());
        let want = dplan::want(Some(record), selected, deprovision);
        let resource = resource(record, &rules);
        out.push(Entry {
            name: record.name.clone(),
            want,
            digest: digest(&resource),
            match_value: match_value(&resource, path).map(str::to_owned),
            resource,
            delivered,
        });
    }
    for (user, delivered) in &view.ledger {
        if seen.contains(user.as_str()) {
            continue;
        }
        out.push(Entry {
            name: user.clone(),
            want: dplan::want(None, false, deprovision),
            resource: Value::Null,
            digest: String::new(),
            match_value: None,
            delivered: Some(delivered.clone()),
        });
    }
    out
}

fn selection(target: &ProvisioningTarget) -> Selection {
    let users = &target.spec.users;
    let mut s = Selection {
        mappings: users.mappings.clone(),
        profiles: users.profiles.clone(),
        has_selector: users.selector.is_some(),
        ..Default::default()
    };
    if let Some(sel) = &users.selector {
        s.match_labels = sel.match_labels.clone().unwrap_or_default();
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            s.requirements.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                // DoesNotExist, and anything the API server let through: no user
                // has an unknown operator's key, so it selects nobody by mistake.
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => Requirement::In(e.key.clone(), Vec::new()),
            });
        }
    }
    s
}

fn match_attribute(target: &ProvisioningTarget) -> MatchAttribute {
    match target.spec.match_attribute {
        ApiMatch::UserName => MatchAttribute::UserName,
        ApiMatch::ExternalId => MatchAttribute::ExternalId,
    }
}

fn match_path(target: &ProvisioningTarget) -> &'static str {
    match target.spec.match_attribute {
        ApiMatch::UserName => "userName",
        ApiMatch::ExternalId => "externalId",
    }
}

/// What a cycle reads of the application before it sends: its capabilities (read
/// again on a full reconcile, else kept from status) and, on a full reconcile, its
/// accounts.
async fn prepare(
    client: &ScimClient,
    old: &ProvisioningTargetStatus,
    full: bool,
    ledger: &HashMap<String, Delivered>,
    by: MatchAttribute,
) -> std::result::Result<(TargetCapabilities, Option<HashMap<String, Remote>>), ScimError> {
    let capabilities = match (&old.capabilities, full) {
        (Some(known), false) => known.clone(),
        _ => {
            let c = client.capabilities().await?;
            TargetCapabilities {
                patch: c.patch,
                filter: c.filter,
                etag: c.etag,
            }
        }
    };
    let actual = match full {
        true => Some(read_back(client, ledger, by).await?),
        false => None,
    };
    Ok((capabilities, actual))
}

/// The accounts of the ledger as the application holds them now, by id. The
/// application is read page by page; accounts it holds that this target never
/// created or adopted are not kept. Paging only saves requests: an account of the
/// ledger that no page showed (an application that pages loosely, ignores
/// startIndex, or leaves out totalResults) is asked for by its id, and only a 404
/// there makes it absent.
async fn read_back(
    client: &ScimClient,
    ledger: &HashMap<String, Delivered>,
    by: MatchAttribute,
) -> std::result::Result<HashMap<String, Remote>, ScimError> {
    let mut missing: std::collections::HashSet<&str> = ledger
        .values()
        .filter(|d| d.state != Some(DeliveredState::Deleted))
        .filter_map(|d| d.remote_id.as_deref())
        .collect();
    let mut found = HashMap::new();
    let remote = |user: &RemoteUser| Remote {
        active: user.active,
        match_value: match by {
            MatchAttribute::UserName => user.user_name.clone(),
            MatchAttribute::ExternalId => user.external_id.clone(),
        },
    };
    let mut start = 1;
    while !missing.is_empty() {
        let page = client.list(start, LIST_PAGE).await?;
        for user in &page.users {
            if missing.remove(user.id.as_str()) {
                found.insert(user.id.clone(), remote(user));
            }
        }
        // A page from elsewhere than asked ends the paging: the rest is asked by id.
        if page.items == 0 || page.start_index != start {
            break;
        }
        start += page.items;
        if start > page.total_results {
            break;
        }
    }
    let missing: Vec<String> = missing.into_iter().map(str::to_string).collect();
    for ids in missing.chunks(CONCURRENCY) {
        let answers = futures::future::join_all(ids.iter().map(|id| client.get(id))).await;
        for (id, answer) in ids.iter().zip(answers) {
            match answer {
                Ok(Some(user)) => {
                    found.insert(id.clone(), remote(&user));
                }
                Ok(None) => {}
                Err(e) if e.refuses_the_client() => return Err(e),
                // Unreadable, not gone: what it holds is unknown, so its user is
                // sent what it should hold, and fails alone if that fails too.
                Err(e) => {
                    tracing::debug!(account = %id, error = %e, "reading an account back failed");
                    found.insert(
                        id.clone(),
                        Remote {
                            active: None,
                            match_value: None,
                        },
                    );
                }
            }
        }
    }
    Ok(found)
}

/// What a step did, for its ledger entry and the cycle's counts.
enum Done {
    Created {
        id: String,
        digest: String,
    },
    Adopted {
        id: String,
        digest: String,
    },
    Updated {
        id: String,
        digest: String,
        enabled: bool,
    },
    Disabled,
    Deleted,
    /// The account is gone (or none is wanted): the entry is dropped.
    Forgotten,
    /// Not sent: this process may no longer write.
    NotSent,
    /// Not sent: the application refused the target's credentials earlier in
    /// the cycle, which quarantines the target.
    Unsent,
}

impl Done {
    fn entry(&self, previous: Delivered, now: jiff::Timestamp) -> Option<Delivered> {
        let ok = |remote_id: Option<String>, state, digest: String| {
            Some(Delivered {
                remote_id,
                state: Some(state),
                digest,
                time: Some(now),
                last_error: None,
                failures: 0,
                retry_after: None,
                approved: None,
            })
        };
        match self {
            Done::Created { id, digest }
            | Done::Adopted { id, digest }
            | Done::Updated { id, digest, .. } => ok(
                Some(id.clone()),
                DeliveredState::Provisioned,
                digest.clone(),
            ),
            Done::Disabled => ok(
                previous.remote_id,
                DeliveredState::Disabled,
                previous.digest,
            ),
            Done::Deleted => ok(previous.remote_id, DeliveredState::Deleted, previous.digest),
            Done::Forgotten => None,
            Done::NotSent | Done::Unsent => Some(previous),
        }
    }
}

fn count(done: &Done, s: &mut CycleSummary) {
    match done {
        Done::Created { .. } => s.created += 1,
        Done::Adopted { .. } => s.adopted += 1,
        Done::Updated { enabled: true, .. } => s.enabled += 1,
        Done::Updated { .. } => s.updated += 1,
        Done::Disabled => s.disabled += 1,
        Done::Deleted => s.deleted += 1,
        Done::Forgotten | Done::NotSent | Done::Unsent => {}
    }
}

fn tally(steps: &[Step], s: &mut CycleSummary) {
    for step in steps {
        match step {
            Step::Create { .. } => s.created += 1,
            Step::Update { enable: true, .. } => s.enabled += 1,
            Step::Update { .. } => s.updated += 1,
            Step::Disable { .. } => s.disabled += 1,
            Step::Delete { .. } => s.deleted += 1,
            Step::Forget { .. } => {}
        }
    }
}

fn failed_entry(previous: Delivered, why: &str, now: jiff::Timestamp, user: &str) -> Delivered {
    let failures = previous.failures.saturating_add(1);
    Delivered {
        last_error: Some(why.to_string()),
        failures,
        retry_after: Some(dplan::retry_after(now, failures, user)),
        time: Some(now),
        ..previous
    }
}

/// What the sending part of a cycle did.
#[derive(Default)]
struct Sent {
    /// The outcome of each step that reached the application.
    done: Vec<Done>,
    /// Users whose request failed, and why.
    failures: Vec<(String, String)>,
    /// Of those, the users whose disable or delete an approval covered.
    approved_failures: usize,
    /// Steps not sent because the application refused the credentials.
    unsent: usize,
    /// Why the cycle stopped before its last phase, if it did.
    stop: Option<Stop>,
}

/// Why a cycle stopped sending.
enum Stop {
    /// This replica may no longer write (it lost the lease, or is stopping).
    Fenced,
    /// The application refused the client's credentials.
    Credentials(ScimError),
    /// What was sent could not be recorded: nothing more is sent.
    Ledger(String),
}

/// Send the plan's steps phase by phase, recording the outcomes in the ledger
/// every [`RECORD_EVERY`] steps and before the next phase starts. The cycle stops
/// at the first outcomes that cannot be recorded, or when the application refuses
/// the credentials, or when this replica may no longer write.
async fn send(
    ctx: &Context,
    executor: &Executor<'_>,
    store: &crate::store::Store,
    of: LedgerOf<'_>,
    (steps, approved): (&[Step], Option<&str>),
    ledger: &mut HashMap<String, Delivered>,
    now: jiff::Timestamp,
) -> Sent {
    let mut sent = Sent::default();
    let batches = steps
        .chunk_by(|a, b| a.phase() == b.phase())
        .flat_map(|phase| phase.chunks(RECORD_EVERY));
    for phase in batches {
        let results: Vec<(Step, std::result::Result<Done, ScimError>)> =
            futures::StreamExt::collect(futures::StreamExt::buffered(
                futures::stream::iter(phase.iter().cloned().map(|step| async move {
                    let out = executor.run(&step).await;
                    (step, out)
                })),
                CONCURRENCY,
            ))
            .await;
        let mut changes = Vec::new();
        for (step, out) in results {
            let user = step.name().to_string();
            let previous = ledger.get(&user).cloned().unwrap_or_default();
            let marker = approved.and_then(|cycle| step.approval_marker(cycle));
            let approved = marker.as_deref();
            match out {
                Ok(Done::NotSent) => {
                    sent.stop.get_or_insert(Stop::Fenced);
                }
                // Refused for the target's credentials, not for the user: no
                // failure of its own, and sent again once a cycle gets through
                // (an approved step keeps its approval for that).
                Ok(Done::Unsent) => unsent(&mut sent, &mut changes, user, previous, approved),
                Err(e) if e.refuses_the_client() => {
                    sent.stop.get_or_insert(Stop::Credentials(e.clone()));
                    unsent(&mut sent, &mut changes, user, previous, approved);
                }
                Ok(done) => {
                    changes.push((user, done.entry(previous, now)));
                    sent.done.push(done);
                }
                Err(e) => {
                    let why = e.to_string();
                    let mut entry = failed_entry(previous, &why, now, &user);
                    if let Some(marker) = approved {
                        entry.approved = Some(marker.to_string());
                    }
                    if entry.approved.is_some() {
                        sent.approved_failures += 1;
                    }
                    changes.push((user.clone(), Some(entry)));
                    sent.failures.push((user, why));
                }
            }
        }
        if let Err(stop) = record(ctx, store, of, &changes, ledger).await {
            sent.stop = Some(stop);
        }
        if sent.stop.is_some() {
            break;
        }
    }
    sent
}

/// A step not sent because the application refused the credentials: counted,
/// and an approved one keeps its approval in the user's entry.
fn unsent(
    sent: &mut Sent,
    changes: &mut Vec<(String, Option<Delivered>)>,
    user: String,
    previous: Delivered,
    approved: Option<&str>,
) {
    sent.unsent += 1;
    if let Some(cycle) = approved.filter(|c| previous.approved.as_deref() != Some(*c)) {
        let approved = Some(cycle.to_string());
        changes.push((
            user,
            Some(Delivered {
                approved,
                ..previous
            }),
        ));
    }
}

/// Record `changes` in the ledger (in the store, and in `ledger` for the counts).
/// A replica that may no longer write records nothing: what it sent is planned
/// again by the one that writes, which matches before it creates.
async fn record(
    ctx: &Context,
    store: &crate::store::Store,
    of: LedgerOf<'_>,
    changes: &[(String, Option<Delivered>)],
    ledger: &mut HashMap<String, Delivered>,
) -> std::result::Result<(), Stop> {
    if changes.is_empty() {
        return Ok(());
    }
    // A process that is stopping still holds the lease: what it sent is
    // recorded, and nothing more is sent.
    if !ctx.holds_lease() {
        return Err(Stop::Fenced);
    }
    let written = store.record_deliveries(of, changes).await.map_err(|e| {
        Stop::Ledger(format!(
            "recording what was delivered failed: {e}; nothing more is sent until a cycle can record it"
        ))
    })?;
    tracing::debug!(target = of.target, written, "ledger written");
    for (user, entry) in changes {
        match entry {
            Some(e) => ledger.insert(user.clone(), e.clone()),
            None => ledger.remove(user),
        };
    }
    Ok(())
}

/// Sends the steps of a plan.
struct Executor<'a> {
    client: &'a ScimClient,
    patch: bool,
    by: MatchAttribute,
    match_path: &'static str,
    /// The target's attribute map.
    rules: Vec<AttributeRule>,
    /// The accounts of the ledger, by id, with the user each belongs to: one of
    /// them is never adopted by another user.
    held: HashMap<String, String>,
    /// Asked before each step: whether this process may still send.
    may_send: &'a (dyn Fn() -> bool + Sync),
    /// Set once the application refused the credentials: nothing more is sent.
    refused: std::sync::atomic::AtomicBool,
}

impl Executor<'_> {
    async fn run(&self, step: &Step) -> std::result::Result<Done, ScimError> {
        use std::sync::atomic::Ordering;
        if !(self.may_send)() {
            return Ok(Done::NotSent);
        }
        if self.refused.load(Ordering::SeqCst) {
            return Ok(Done::Unsent);
        }
        let out = self.step(step).await;
        if out.as_ref().is_err_and(ScimError::refuses_the_client) {
            self.refused.store(true, Ordering::SeqCst);
        }
        out
    }

    async fn step(&self, step: &Step) -> std::result::Result<Done, ScimError> {
        match step {
            Step::Create {
                name,
                resource,
                digest,
                match_value,
            } => self.create(name, resource, digest, match_value).await,
            Step::Update {
                remote_id,
                resource,
                digest,
                enable,
                ..
            } => match self.send(remote_id, resource, true).await? {
                Some(()) => Ok(Done::Updated {
                    id: remote_id.clone(),
                    digest: digest.clone(),
                    enabled: *enable,
                }),
                None => Ok(Done::Forgotten),
            },
            Step::Disable { remote_id, .. } => match self.disable(remote_id).await? {
                Some(()) => Ok(Done::Disabled),
                None => Ok(Done::Forgotten),
            },
            Step::Delete { remote_id, .. } => {
                self.client.delete(remote_id).await?;
                Ok(Done::Deleted)
            }
            Step::Forget { .. } => Ok(Done::Forgotten),
        }
    }

    /// Match before create: an account whose match attribute equals the user's
    /// exactly is adopted (and brought up to date); otherwise one is created, and a
    /// 409 means one appeared meanwhile: look again and adopt it.
    async fn create(
        &self,
        user: &str,
        resource: &Value,
        digest: &str,
        value: &str,
    ) -> std::result::Result<Done, ScimError> {
        let found = self.exact(value).await?;
        // The lookup took a while: a process that lost the lease meanwhile sends
        // nothing more.
        if !(self.may_send)() {
            return Ok(Done::NotSent);
        }
        if let Some(existing) = found {
            self.adoptable(user, &existing.id, value)?;
            self.send(&existing.id, resource, true).await?;
            return Ok(Done::Adopted {
                id: existing.id,
                digest: digest.to_string(),
            });
        }
        let mut body = resource.clone();
        body["active"] = json!(true);
        match self.client.create(&body).await {
            Ok(created) => Ok(Done::Created {
                id: created.id,
                digest: digest.to_string(),
            }),
            Err(ScimError::Conflict { detail }) => match self.exact(value).await? {
                Some(existing) => {
                    self.adoptable(user, &existing.id, value)?;
                    self.send(&existing.id, resource, true).await?;
                    Ok(Done::Adopted {
                        id: existing.id,
                        digest: digest.to_string(),
                    })
                }
                None => Err(ScimError::Rejected {
                    status: 409,
                    scim_type: Some("uniqueness".into()),
                    detail: Some(format!(
                        "an account holds a unique attribute of this user, but its {} is not exactly {value:?}, so it is not adopted{}",
                        self.match_path,
                        detail.map(|d| format!(" ({d})")).unwrap_or_default()
                    )),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Whether `user` may adopt account `id`: not when the ledger gives it to
    /// another user (whose rename away from `value` has not reached the
    /// application yet). That user's rename comes first; this create is retried.
    fn adoptable(&self, user: &str, id: &str, value: &str) -> std::result::Result<(), ScimError> {
        match self.held.get(id) {
            Some(holder) if holder != user => Err(ScimError::Rejected {
                status: 409,
                scim_type: Some("uniqueness".into()),
                detail: Some(format!(
                    "the account whose {} is {value:?} belongs to user {holder} of this target, whose change has not reached the application yet; it is not adopted, and this user is retried",
                    self.match_path
                )),
            }),
            _ => Ok(()),
        }
    }

    /// The account whose match attribute is exactly `value` (filters compare
    /// userName without case; adoption does not).
    async fn exact(&self, value: &str) -> std::result::Result<Option<RemoteUser>, ScimError> {
        let found = self.client.find(self.by, value).await?;
        Ok(found.into_iter().find(|u| {
            let theirs = match self.by {
                MatchAttribute::UserName => u.user_name.as_deref(),
                MatchAttribute::ExternalId => u.external_id.as_deref(),
            };
            theirs == Some(value)
        }))
    }

    /// Send the user's attributes (and `active`) to account `id`: one PATCH, or a
    /// PUT of the whole resource where PATCH is not supported. `None` when the
    /// account is gone.
    async fn send(
        &self,
        id: &str,
        resource: &Value,
        active: bool,
    ) -> std::result::Result<Option<()>, ScimError> {
        if self.patch {
            let mut ops: Vec<PatchOp> = resource
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str() != "schemas")
                .map(|(k, v)| PatchOp::replace(k, v.clone()))
                .collect();
            ops.push(PatchOp::replace("active", json!(active)));
            // What the user no longer has goes from the account too.
            let kept = ops.len();
            ops.extend(
                removed_paths(&self.rules, resource)
                    .iter()
                    .map(|p| PatchOp::remove(p)),
            );
            let mut answer = self.client.patch(id, &ops).await;
            if ops.len() > kept && matches!(answer, Err(ScimError::Rejected { status: 400, .. })) {
                // An application that refuses to remove what it does not hold
                // (`noTarget`) still gets the rest.
                answer = self.client.patch(id, &ops[..kept]).await;
            }
            return match answer {
                Ok(_) => Ok(Some(())),
                Err(ScimError::Rejected { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let mut body = resource.clone();
        body["id"] = json!(id);
        body["active"] = json!(active);
        match self.client.replace(id, &body).await {
            Ok(_) => Ok(Some(())),
            Err(ScimError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Set account `id` inactive: a PATCH of `active` alone, or without PATCH, a
    /// PUT of the account as the application holds it with `active: false`.
    async fn disable(&self, id: &str) -> std::result::Result<Option<()>, ScimError> {
        if self.patch {
            return match self
                .client
                .patch(id, &[PatchOp::replace("active", json!(false))])
                .await
            {
                Ok(_) => Ok(Some(())),
                Err(ScimError::Rejected { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let Some(current) = self.client.get(id).await? else {
            return Ok(None);
        };
        let mut body = current.raw.clone();
        if let Some(map) = body.as_object_mut() {
            map.remove("meta");
        }
        body["active"] = json!(false);
        match self.client.replace(id, &body).await {
            Ok(_) => Ok(Some(())),
            Err(ScimError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The client of the target's application, from its spec and Secrets.
pub async fn client_for(
    ctx: &Context,
    target: &ProvisioningTarget,
) -> std::result::Result<ScimClient, ConnectionError> {
    let spec = &target.spec;
    let name = target.name_any();
    let ns = target.namespace().unwrap_or_default();
    let base = url::Url::parse(&spec.endpoint).map_err(|e| {
        ConnectionError::Invalid(format!(
            "spec.endpoint {:?} is not a URL: {e}",
            spec.endpoint
        ))
    })?;
    if base.scheme() == "http" && !spec.allow_insecure_http {
        return Err(ConnectionError::NotAllowed {
            reason: "EndpointNotAllowed",
            message: format!(
                "spec.endpoint {} is plain http, which would send the credential in clear text; use https:// or opt in with allowInsecureHttp: true",
                spec.endpoint
            ),
        });
    }
    let secrets = ctx.directories.secrets.reader(&ctx.client, &ns);
    let text = |bytes: Vec<u8>, field: &str| {
        String::from_utf8(bytes)
            .map(|s| s.trim().to_string())
            .map_err(|_| ConnectionError::Secret {
                reason: "InvalidSecret",
                message: format!("spec.{field}: the Secret's value is not UTF-8 text"),
            })
    };
    let auth = if let Some(r) = &spec.auth.bearer_token_secret_ref {
        let field = "auth.bearerTokenSecretRef";
        Auth::Bearer(text(
            credential_value(&secrets, Holder::Target, &name, field, r).await?,
            field,
        )?)
    } else if let Some(o) = &spec.auth.oauth2 {
        let field = "auth.oauth2.clientSecretRef";
        let secret = text(
            credential_value(&secrets, Holder::Target, &name, field, &o.client_secret_ref).await?,
            field,
        )?;
        Auth::ClientCredentials {
            token_url: url::Url::parse(&o.token_url).map_err(|e| {
                ConnectionError::Invalid(format!("spec.auth.oauth2.tokenURL is not a URL: {e}"))
            })?,
            client_id: o.client_id.clone(),
            client_secret: secret,
            scope: o.scope.clone(),
        }
    } else {
        return Err(ConnectionError::Invalid(
            "spec.auth sets no credentials; set bearerTokenSecretRef or oauth2".into(),
        ));
    };
    let mut config = ClientConfig::new(base, auth);
    if let Some(r) = &spec.ca_secret_ref {
        config.ca_pem =
            Some(credential_value(&secrets, Holder::Target, &name, "caSecretRef", r).await?);
    }
    ScimClient::new(config).map_err(|e| ConnectionError::Invalid(e.to_string()))
}

/// Counts requests for the cycle and the metrics, and keeps the exchanges for
/// a dry run or `usersync provision`.
pub struct Recorded {
    metrics: Arc<super::metrics::Metrics>,
    labels: TargetLabels,
    requests: std::sync::atomic::AtomicU32,
    pub exchanges: Option<Mutex<Vec<Exchange>>>,
}

impl Recorded {
    pub fn new(ctx: &Context, namespace: &str, target: &str) -> Self {
        Self {
            metrics: ctx.metrics.clone(),
            labels: TargetLabels {
                namespace: namespace.into(),
                target: target.into(),
            },
            requests: Default::default(),
            exchanges: None,
        }
    }

    pub fn requests(&self) -> u32 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Observer for Recorded {
    fn response(&self, method: &str, status: Option<u16>, elapsed: Duration) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = match status {
            Some(s) => format!("{}xx", s / 100),
            None => "error".into(),
        };
        self.metrics
            .target_requests
            .get_or_create(&TargetRequestLabels {
                namespace: self.labels.namespace.clone(),
                target: self.labels.target.clone(),
                method: method.into(),
                result,
            })
            .inc();
        self.metrics
            .target_request_duration
            .get_or_create(&self.labels)
            .observe(elapsed.as_secs_f64());
    }

    fn throttled(&self, wait: Duration) {
        self.metrics
            .target_throttled_wait
            .get_or_create(&self.labels)
            .inc_by(wait.as_secs_f64());
    }

    fn exchange(&self, e: &Exchange) {
        if let Some(all) = &self.exchanges {
            all.lock().expect("not poisoned").push(e.clone());
        }
    }
}

/// The `Connected` condition from the probe.
fn connected(
    status: &mut ProvisioningTargetStatus,
    generation: Option<i64>,
    error: Option<&ScimError>,
    took: Duration,
    now: jiff::Timestamp,
) {
    let (ok, reason, message) = match error {
        None => (
            true,
            "Connected",
            format!(
                "the application answered a filter for a user that does not exist with an empty list in {} ms",
                took.as_millis()
            ),
        ),
        Some(e) => (false, reason_of(e), e.to_string()),
    };
    set_condition(
        &mut status.conditions,
        CONNECTED,
        ok,
        reason,
        message,
        generation,
        now,
    );
}

fn reason_of(e: &ScimError) -> &'static str {
    match e {
        ScimError::Unauthorized { .. } => "AuthFailed",
        ScimError::Tls { .. } => "TLSError",
        ScimError::Transport(_) => "Unreachable",
        ScimError::Server { .. } | ScimError::Throttled { .. } => "ApplicationUnavailable",
        ScimError::InvalidConfig(_) => "InvalidConfig",
        ScimError::Protocol(_)
        | ScimError::Conflict { .. }
        | ScimError::Rejected { .. }
        | ScimError::Stale { .. } => "ProtocolError",
    }
}

/// A cycle that stopped at the application's first answer.
async fn failed_cycle(
    ctx: &Context,
    target: &ProvisioningTarget,
    mut status: ProvisioningTargetStatus,
    mut summary: CycleSummary,
    e: &ScimError,
    requests: u32,
    now: jiff::Timestamp,
) -> ProvisioningTargetStatus {
    summary.requests = requests;
    if e.is_credentials() {
        let no_ledger = HashMap::new();
        return quarantine(
            ctx,
            target,
            status,
            summary,
            "BadCredentials",
            e.to_string(),
            &no_ledger,
            now,
        )
        .await;
    }
    let message = format!("{e}; the next cycle tries again");
    failed(&mut status, target, summary, reason_of(e), message, now);
    status
}

/// A failed cycle: Stalled when only a person can help, else Reconciling.
fn failed(
    status: &mut ProvisioningTargetStatus,
    target: &ProvisioningTarget,
    mut summary: CycleSummary,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) {
    if crate::core::health::needs_a_person(reason) {
        stalled(status, target, reason, message.clone(), now);
    } else {
        reconciling(status, target.metadata.generation, reason, &message, now);
    }
    summary.result = "Failed".into();
    summary.message = message;
    status.last_cycle = Some(summary);
}

/// Quarantine the target: cycles slow down until one succeeds.
#[allow(clippy::too_many_arguments)]
async fn quarantine(
    ctx: &Context,
    target: &ProvisioningTarget,
    mut status: ProvisioningTargetStatus,
    mut summary: CycleSummary,
    reason: &str,
    message: String,
    ledger: &HashMap<String, Delivered>,
    now: jiff::Timestamp,
) -> ProvisioningTargetStatus {
    let generation = target.metadata.generation;
    let first = status.quarantined_cycles == 0;
    status.quarantined_cycles = status.quarantined_cycles.saturating_add(1);
    let next = slowed(
        parse_duration(&target.spec.interval).unwrap_or(Duration::from_secs(300)),
        status.quarantined_cycles,
    );
    let message = format!(
        "{message}; quarantined: the next cycle in {}",
        crate::core::format_duration(next)
    );
    set_condition(
        &mut status.conditions,
        QUARANTINED,
        true,
        reason,
        message.clone(),
        generation,
        now,
    );
    if first
        || !matches!(crate::api::find_condition(&status.conditions, STALLED), Some(c) if c.reason == reason)
    {
        event(
            ctx,
            target,
            EventType::Warning,
            "Quarantined",
            message.clone(),
        )
        .await;
    }
    if crate::core::health::needs_a_person(reason_for_health(reason)) {
        stalled(&mut status, target, reason, message.clone(), now);
    } else {
        reconciling(&mut status, generation, reason, &message, now);
    }
    summary.result = "Quarantined".into();
    summary.message = message;
    let labels = TargetLabels {
        namespace: target.namespace().unwrap_or_default(),
        target: target.name_any(),
    };
    ctx.metrics.target_quarantined.get_or_create(&labels).set(1);
    if !ledger.is_empty() {
        status.accounts = Some(account_counts(ledger));
    }
    status.last_cycle = Some(summary);
    status
}

/// Bad credentials need a person; a high failure rate may pass by itself.
fn reason_for_health(reason: &str) -> &str {
    match reason {
        "BadCredentials" => "AuthFailed",
        other => other,
    }
}

fn account_counts(ledger: &HashMap<String, Delivered>) -> AccountCounts {
    let c = dplan::counts(ledger.values());
    AccountCounts {
        provisioned: c["Provisioned"],
        disabled: c["Disabled"],
        deleted: c["Deleted"],
        failed: c["Failed"],
    }
}

/// The end of a cycle that reached the application (or needed not to): counts,
/// the blocked cycle, health, metrics and the summary Event.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Context,
    target: &ProvisioningTarget,
    status: &mut ProvisioningTargetStatus,
    ledger: &HashMap<String, Delivered>,
    summary: CycleSummary,
    previous_blocked: Option<&Option<BlockedCycle>>,
    plan: &dplan::Plan,
    now: jiff::Timestamp,
) {
    let generation = target.metadata.generation;
    let counts = account_counts(ledger);
    let ns = target.namespace().unwrap_or_default();
    let name = target.name_any();
    for (state, n) in [
        ("provisioned", counts.provisioned),
        ("disabled", counts.disabled),
        ("deleted", counts.deleted),
        ("failed", counts.failed),
    ] {
        ctx.metrics
            .target_accounts
            .get_or_create(&TargetAccountLabels {
                namespace: ns.clone(),
                target: name.clone(),
                state: state.into(),
            })
            .set(i64::from(n));
    }
    ctx.metrics
        .target_quarantined
        .get_or_create(&TargetLabels {
            namespace: ns.clone(),
            target: name.clone(),
        })
        .set(0);
    status.accounts = Some(counts);
    // The blocked cycle: one id while the withheld requests stay the same.
    match &plan.blocked {
        Some(b) => {
            let kept = previous_blocked
                .and_then(|p| p.as_ref())
                .or(status.blocked_cycle.as_ref())
                .filter(|p| p.plan_digest == b.digest)
                .cloned();
            let blocked = kept.unwrap_or_else(|| BlockedCycle {
                run_id: summary.id.clone(),
                would_disable: u32::try_from(b.would_disable).unwrap_or(u32::MAX),
                would_delete: u32::try_from(b.would_delete).unwrap_or(u32::MAX),
                active_accounts: u32::try_from(b.active).unwrap_or(u32::MAX),
                plan_digest: b.digest.clone(),
            });
            let message = format!(
                "{b}; none of them was sent. To send them, approve cycle {}: usersync approve --target {name} {} (or raise spec.safety)",
                blocked.run_id, blocked.run_id
            );
            let new = status.blocked_cycle.as_ref().map(|p| &p.run_id) != Some(&blocked.run_id);
            if new {
                event(
                    ctx,
                    target,
                    EventType::Warning,
                    "DeletionsBlocked",
                    message.clone(),
                )
                .await;
            }
            set_condition(
                &mut status.conditions,
                DELETIONS_BLOCKED,
                true,
                "ThresholdExceeded",
                message.clone(),
                generation,
                now,
            );
            status.blocked_cycle = Some(blocked);
            stalled(status, target, "ApprovalRequired", message, now);
        }
        None => {
            status.blocked_cycle = None;
            set_condition(
                &mut status.conditions,
                DELETIONS_BLOCKED,
                false,
                "WithinThresholds",
                "no disable or delete was withheld".into(),
                generation,
                now,
            );
            match summary.result.as_str() {
                "Succeeded" | "DryRun" => ready(status, generation, &summary, now),
                _ => reconciling(
                    status,
                    generation,
                    "DeliveryFailed",
                    &format!(
                        "{}; failed users are retried with back-off",
                        summary.message
                    ),
                    now,
                ),
            }
        }
    }
    let changed = summary.created
        + summary.adopted
        + summary.updated
        + summary.enabled
        + summary.disabled
        + summary.deleted;
    let reason = match summary.result.as_str() {
        "DryRun" if !plan.steps.is_empty() => Some("DryRun"),
        "DryRun" => None,
        _ if changed > 0 => Some("Delivered"),
        _ => None,
    };
    if let Some(reason) = reason {
        let note = format!("cycle {}: {}", summary.id, summary.message);
        event(ctx, target, EventType::Normal, reason, note).await;
    }
    status.last_cycle = Some(summary);
}

fn cycle_message(s: &CycleSummary, deferred: usize) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (s.created, "created"),
        (s.adopted, "adopted"),
        (s.updated, "updated"),
        (s.enabled, "enabled"),
        (s.disabled, "disabled"),
        (s.deleted, "deleted"),
        (s.failed, "failed"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if deferred > 0 {
        parts.push(format!("{deferred} waiting to retry"));
    }
    if parts.is_empty() {
        "nothing to send".into()
    } else {
        format!("{} ({} requests)", parts.join(", "), s.requests)
    }
}

fn describe_dry_run(steps: &[Step]) -> String {
    if steps.is_empty() {
        return "dry run: nothing to send".into();
    }
    let shown: Vec<String> = steps.iter().take(10).map(describe_step).collect();
    let more = steps.len().saturating_sub(shown.len());
    format!(
        "dry run: would send {}{}",
        shown.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}

/// One step in words, as the dry run and `usersync plan --target` show it.
pub fn describe_step(step: &Step) -> String {
    match step {
        Step::Create {
            name, match_value, ..
        } => format!("create {name} ({match_value}) after looking it up"),
        Step::Update {
            name,
            remote_id,
            enable: true,
            ..
        } => format!("enable {name} (id {remote_id})"),
        Step::Update {
            name, remote_id, ..
        } => format!("update {name} (id {remote_id})"),
        Step::Disable { name, remote_id } => format!("disable {name} (id {remote_id})"),
        Step::Delete { name, remote_id } => format!("delete {name} (id {remote_id})"),
        Step::Forget { name } => format!("forget {name} (its account is gone)"),
    }
}

fn ready(
    status: &mut ProvisioningTargetStatus,
    generation: Option<i64>,
    s: &CycleSummary,
    now: jiff::Timestamp,
) {
    let message = format!("cycle {} {}: {}", s.id, s.result.to_lowercase(), s.message);
    health(status, generation, Health::Ready, "Delivered", message, now);
}

fn reconciling(
    status: &mut ProvisioningTargetStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) {
    health(
        status,
        generation,
        Health::Reconciling,
        reason,
        message.to_string(),
        now,
    );
}

fn stalled(
    status: &mut ProvisioningTargetStatus,
    target: &ProvisioningTarget,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) {
    let generation = target.metadata.generation;
    health(status, generation, Health::Stalled, reason, message, now);
    status.observed_generation = generation;
}

/// `Ready`, `Reconciling` and `Stalled` for one verdict, as kstatus and Argo CD read them.
fn health(
    status: &mut ProvisioningTargetStatus,
    generation: Option<i64>,
    health: Health,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) {
    let verdict = Verdict {
        health,
        reason: reason.to_string(),
        message,
    };
    let conditions = super::ready::health_conditions(&status.conditions, &verdict, generation, now);
    status
        .conditions
        .retain(|c| !conditions.iter().any(|n| n.type_ == c.type_));
    status.conditions.extend(conditions);
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// The `Insecure` condition, and a Warning Event when plain http is turned on.
async fn insecure(
    ctx: &Context,
    target: &ProvisioningTarget,
    status: &mut ProvisioningTargetStatus,
    now: jiff::Timestamp,
) {
    let generation = target.metadata.generation;
    let on = target.spec.allow_insecure_http && target.spec.endpoint.starts_with("http://");
    let was = crate::api::condition_is_true(&status.conditions, INSECURE);
    if on {
        let message = "allowInsecureHttp: the endpoint is plain http, so the credential crosses the network readable".to_string();
        if !was {
            event(
                ctx,
                target,
                EventType::Warning,
                "InsecureHttp",
                message.clone(),
            )
            .await;
        }
        set_condition(
            &mut status.conditions,
            INSECURE,
            true,
            "InsecureHttp",
            message,
            generation,
            now,
        );
    } else {
        set_condition(
            &mut status.conditions,
            INSECURE,
            false,
            "Secure",
            "the credential travels only over TLS".into(),
            generation,
            now,
        );
    }
}

/// An Event about the target; a failure to publish is logged, never fatal. A
/// process that may no longer write (it lost the lease, or is stopping) reports
/// nothing, as it writes no status: the one that holds the lease reports.
async fn event(
    ctx: &Context,
    target: &ProvisioningTarget,
    type_: EventType,
    reason: &str,
    note: String,
) {
    if !ctx.may_write() {
        return;
    }
    let e = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Deliver".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&e, &target.object_ref(&())).await {
        tracing::debug!(error = %err, "publishing an Event failed");
    }
}

/// Report the target's undecided approvals that name a cycle other than the one
/// waiting for approval (or any, when none waits) as Stale: they do nothing.
/// Decided on the API server's copy of the target, so a cache behind a freshly
/// blocked cycle never makes a good approval stale; each write is conditional on
/// the approval's version, so one just used stays used.
async fn report_stale_approvals(ctx: &Context, target: &ProvisioningTarget) -> Result<()> {
    let (ns, name) = (target.namespace().unwrap_or_default(), target.name_any());
    let waiting = |t: &ProvisioningTarget| {
        t.status
            .as_ref()
            .and_then(|s| s.blocked_cycle.as_ref())
            .map(|b| b.run_id.clone())
    };
    let cached = waiting(target);
    let candidates: Vec<RunApproval> = ctx
        .undecided_target_approvals(&ns, &name)
        .into_iter()
        .filter(|a| Some(&a.spec.run_id) != cached.as_ref())
        .collect();
    if candidates.is_empty() || !ctx.may_write() {
        return Ok(());
    }
    let targets: Api<ProvisioningTarget> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(fresh) = targets.get_opt(&name).await? else {
        return Ok(());
    };
    let waiting_now = waiting(&fresh);
    let approvals: Api<RunApproval> = Api::namespaced(ctx.client.clone(), &ns);
    for approval in candidates
        .iter()
        .filter(|a| Some(&a.spec.run_id) != waiting_now.as_ref())
    {
        let message = match &waiting_now {
            Some(id) => format!(
                "target {name} waits for approval of cycle {id}, not {}: this approval does nothing; look at the blocked cycle again (`usersync approve --target {name} {id}`)",
                approval.spec.run_id
            ),
            None => format!(
                "no cycle of target {name} waits for approval: this approval of cycle {} does nothing",
                approval.spec.run_id
            ),
        };
        let state = crate::api::ApprovalState::Stale;
        super::approval::decide(ctx, &approvals, approval, state, None, message).await?;
    }
    Ok(())
}

/// The oldest undecided RunApproval of the target's blocked cycle, with the
/// fingerprint of the withheld steps it approves.
fn pending_approval(ctx: &Context, target: &ProvisioningTarget) -> Option<(RunApproval, String)> {
    let blocked = target.status.as_ref()?.blocked_cycle.as_ref()?;
    let approval = ctx
        .undecided_target_approvals(&target.namespace()?, &target.name_any())
        .into_iter()
        .find(|a| a.spec.run_id == blocked.run_id)?;
    Some((approval, blocked.plan_digest.clone()))
}

/// Write the status when it changed.
async fn write(
    ctx: &Context,
    target: &ProvisioningTarget,
    old: &ProvisioningTargetStatus,
    status: &ProvisioningTargetStatus,
) -> Result<()> {
    // A replica that lost the lease leaves the status to the one that holds it.
    if old == status || !ctx.may_write() {
        return Ok(());
    }
    let api: Api<ProvisioningTarget> =
        Api::namespaced(ctx.client.clone(), &target.namespace().unwrap_or_default());
    apply_status(&api, &target.name_any(), status).await
}

/// The steps the next cycle of `target` would send, from the registry and the
/// ledger alone (no request to the application): `usersync plan --target`.
pub async fn preview(ctx: &Context, target: &ProvisioningTarget) -> Result<dplan::Plan> {
    let ns = target.namespace().unwrap_or_default();
    let mut store = ctx.backend.open(&ctx.client, &ns);
    let (name, uid) = (target.name_any(), target.uid().unwrap_or_default());
    let of = LedgerOf {
        target: &name,
        uid: &uid,
        created: target.metadata.creation_timestamp.as_ref().map(|t| t.0),
    };
    let view = store
        .delivery_view(of)
        .await
        .map_err(|e| super::Error::Store(e.to_string()))?;
    let settings = settings(target, ctx.now(), None);
    Ok(dplan::plan(&entries(target, &view), None, &settings))
}

/// The planner's settings from the target's thresholds.
fn settings<'a>(
    target: &ProvisioningTarget,
    now: jiff::Timestamp,
    approved: Option<&'a str>,
) -> Settings<'a> {
    Settings {
        max_disable_percent: u8::try_from(target.spec.safety.max_disable_percent.min(100))
            .unwrap_or(100),
        max_deletes: target.spec.safety.max_deletes_per_cycle,
        now,
        approved,
    }
}

/// What `usersync provision` did for one user.
pub struct Provisioned {
    /// The step sent, in words; `None` when the user needed nothing.
    pub step: Option<String>,
    /// Every request and its answer, without credentials.
    pub exchanges: Vec<Exchange>,
    /// The outcome, in words.
    pub outcome: String,
}

/// Deliver user `user` (a record name or a username) to `target` now, as a cycle
/// would (match before create, PATCH or PUT), and record the outcome in the
/// ledger. The thresholds do not apply: one user, named by an admin.
pub async fn provision(
    ctx: &Context,
    target: &ProvisioningTarget,
    user: &str,
) -> anyhow::Result<Provisioned> {
    let ns = target.namespace().unwrap_or_default();
    let name = target.name_any();
    let mut store = ctx.backend.open(&ctx.client, &ns);
    let uid = target.uid().unwrap_or_default();
    let of = LedgerOf {
        target: &name,
        uid: &uid,
        created: target.metadata.creation_timestamp.as_ref().map(|t| t.0),
    };
    let view = store.delivery_view(of).await?;
    let record = view
        .records
        .iter()
        .map(|(r, _)| r)
        .find(|r| r.name == user || r.fields.username.as_deref() == Some(user))
        .map(|r| r.name.clone())
        .unwrap_or_else(|| user.to_string());
    let entry = entries(target, &view)
        .into_iter()
        .find(|e| e.name == record)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{user} is neither among the users ProvisioningTarget {ns}/{name} selects nor in its ledger"
            )
        })?;
    let settings = Settings {
        max_disable_percent: 100,
        max_deletes: u32::MAX,
        now: ctx.now(),
        approved: None,
    };
    // A user waiting for its back-off is sent now: the admin asked.
    let mut entry = entry;
    if let Some(d) = entry.delivered.as_mut() {
        d.retry_after = None;
    }
    let plan = dplan::plan(std::slice::from_ref(&entry), None, &settings);
    if let Some((_, why)) = plan.invalid.first() {
        anyhow::bail!("{user} cannot be delivered: {why}");
    }
    let Some(step) = plan.steps.first().cloned() else {
        return Ok(Provisioned {
            step: None,
            exchanges: Vec::new(),
            outcome: format!("{user} is up to date in {ns}/{name}: nothing to send"),
        });
    };
    let mut observer = Recorded::new(ctx, &ns, &name);
    observer.exchanges = Some(Mutex::new(Vec::new()));
    let observer = Arc::new(observer);
    let client = client_for(ctx, target)
        .await?
        .with_observer(observer.clone());
    client.probe().await?;
    let patch = client.capabilities().await?.patch;
    let executor = Executor {
        client: &client,
        patch,
        by: match_attribute(target),
        match_path: match_path(target),
        rules: rules(target),
        held: held_accounts(&view.ledger),
        may_send: &|| true,
        refused: Default::default(),
    };
    let previous = entry.delivered.clone().unwrap_or_default();
    let now = ctx.now();
    let (change, outcome) = match executor.run(&step).await {
        Ok(done) => (
            done.entry(previous, now),
            format!("{} for {user}: done", describe_step(&step)),
        ),
        Err(e) => {
            let why = e.to_string();
            (
                Some(failed_entry(previous, &why, now, &record)),
                format!("{} for {user} failed: {why}", describe_step(&step)),
            )
        }
    };
    store.record_deliveries(of, &[(record, change)]).await?;
    let exchanges = observer
        .exchanges
        .as_ref()
        .map(|m| m.lock().expect("not poisoned").clone())
        .unwrap_or_default();
    Ok(Provisioned {
        step: Some(describe_step(&step)),
        exchanges,
        outcome,
    })
}
