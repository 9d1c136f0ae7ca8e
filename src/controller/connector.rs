//! The ConnectorHealth reconciler: resolves the connector's settings and Secrets
//! into `Resolved`, probes the directory every `probeInterval` into `Connected`, and
//! sums both up as its health (`Ready` when it resolves and a probe succeeded within
//! `staleAfter`; `Reconciling` or `Stalled` otherwise).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::connection::source_for;
use super::context::Context;
use super::error::Result;
use super::readiness::RESOLVED;
use super::status::apply_status;
use crate::api::{ConnectorHealth, ConnectorHealthStatus, set_condition};

/// The `Connected` condition's type.
pub const CONNECTED: &str = "Connected";

/// The `Insecure` condition's type: True while an opt-in weakens how the
/// connector's credentials travel.
pub const INSECURE: &str = "Insecure";

/// How often a connector whose namespace has not granted its Secrets looks again.
const GRANT_RECHECK: Duration = Duration::from_secs(15);

/// Reconcile one ConnectorHealth: `Resolved`, a probe when one is due, and its health.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<ConnectorHealth>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let connector = match &guard.0 {
        Ok(connector) => Arc::new(connector.clone()),
        Err(invalid) => {
            super::ready::report_unreadable(&ctx.client, guard.as_ref(), invalid).await?;
            return Ok(Action::await_change());
        }
    };
    let ns = connector.namespace().unwrap_or_default();
    let api: Api<ConnectorHealth> = Api::namespaced(ctx.client.clone(), &ns);
    let now = ctx.now();
    let generation = connector.metadata.generation;
    let old = connector.status.clone().unwrap_or_default();
    let mut status = old.clone();
    insecure(&ctx, &connector, &old, &mut status, generation, now).await;

    let interval = match durations(&connector) {
        Ok(d) => d,
        Err(message) => {
            set(
                &mut status,
                RESOLVED,
                false,
                "InvalidSpec",
                message,
                generation,
                now,
            );
            return finish(&api, &connector, &old, status, generation, now, None).await;
        }
    };
    let source = match source_for(&ctx.client, &connector, &ctx.directories).await {
        Ok(source) => {
            set(
                &mut status,
                RESOLVED,
                true,
                "Resolved",
                "connection settings and their Secrets resolve".into(),
                generation,
                now,
            );
            source
        }
        Err(e) => {
            set(
                &mut status,
                RESOLVED,
                false,
                e.reason(),
                e.to_string(),
                generation,
                now,
            );
            set(
                &mut status,
                CONNECTED,
                false,
                "NotProbed",
                "the connection settings do not resolve; see the Resolved condition".into(),
                generation,
                now,
            );
            // A grant of Secrets is a RoleBinding, which the operator may not watch:
            // look again soon rather than wait for a change that would not show.
            let again =
                (e.reason() == "SecretAccessNotGranted").then(|| interval.min(GRANT_RECHECK));
            return finish(&api, &connector, &old, status, generation, now, again).await;
        }
    };

    // Probe when due, and at once after a spec change (a new URL or password).
    let last_probe = old.last_probe_time.as_ref().map(|t| t.0);
    let spec_changed = old.observed_generation != generation;
    let due = spec_changed || last_probe.is_none_or(|t| elapsed(t, now) >= interval);
    if !due {
        let wait = interval.saturating_sub(elapsed(last_probe.unwrap_or(now), now));
        return finish(&api, &connector, &old, status, generation, now, Some(wait)).await;
    }
    if spec_changed {
        // A probe can take up to its timeout: say at once that this generation is
        // being probed, rather than nothing (or the last generation's verdict).
        finish(
            &api,
            &connector,
            &old,
            status.clone(),
            generation,
            now,
            None,
        )
        .await?;
    }
    let outcome = tokio::time::timeout(interval.max(Duration::from_secs(5)), source.probe()).await;
    status.last_probe_time = Some(Time(now));
    match outcome {
        Ok(Ok(latency)) => {
            let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
            status.last_success_time = Some(Time(now));
            status.consecutive_failures = 0;
            status.latency_ms = Some(ms);
            status.message = Some(format!("bind and read succeeded in {ms} ms"));
            set(
                &mut status,
                CONNECTED,
                true,
                "Connected",
                format!("bind and read succeeded in {ms} ms"),
                generation,
                now,
            );
        }
        Ok(Err(e)) => {
            status.consecutive_failures = old.consecutive_failures.saturating_add(1);
            status.message = Some(e.message.clone());
            tracing::warn!(connector = %connector.name_any(), namespace = %ns, reason = e.reason, error = %e.message, "probe failed");
            set(
                &mut status,
                CONNECTED,
                false,
                e.reason,
                e.message,
                generation,
                now,
            );
        }
        Err(_) => {
            status.consecutive_failures = old.consecutive_failures.saturating_add(1);
            let message = format!("the probe did not finish within {}s", interval.as_secs());
            status.message = Some(message.clone());
            set(
                &mut status,
                CONNECTED,
                false,
                "Timeout",
                message,
                generation,
                now,
            );
        }
    }
    let up = crate::api::condition_is_true(&status.conditions, CONNECTED);
    let labels = super::metrics::ConnectorLabels {
        namespace: ns.clone(),
        connector: connector.name_any(),
    };
    ctx.metrics
        .connector_up
        .get_or_create(&labels)
        .set(i64::from(up));
    let action = finish(
        &api,
        &connector,
        &old,
        status.clone(),
        generation,
        now,
        Some(interval),
    )
    .await?;
    if up {
        let probed = ConnectorHealth {
            status: Some(status),
            ..connector.as_ref().clone()
        };
        super::retention::sweep(&ctx, &probed).await;
    }
    Ok(action)
}

/// Set `Insecure` from the connector's opt-ins, and emit one Warning Event when it
/// turns on (or names a further opt-in), not one per reconcile.
async fn insecure(
    ctx: &Context,
    connector: &ConnectorHealth,
    old: &ConnectorHealthStatus,
    status: &mut ConnectorHealthStatus,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let opt_ins = super::connection::insecure_opt_ins(connector);
    let Some((reason, _)) = opt_ins.first() else {
        set(
            status,
            INSECURE,
            false,
            "Secure",
            "no opt-in weakens how this connector's credentials travel".into(),
            generation,
            now,
        );
        return;
    };
    let message = format!(
        "{}; remove the opt-in once it is no longer needed",
        opt_ins
            .iter()
            .map(|(_, m)| *m)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let before = crate::api::find_condition(&old.conditions, INSECURE);
    let news = before.is_none_or(|c| c.status != "True" || c.message != message);
    set(
        status,
        INSECURE,
        true,
        reason,
        message.clone(),
        generation,
        now,
    );
    if news {
        tracing::warn!(connector = %connector.name_any(), namespace = ?connector.namespace(), reason, "an insecure opt-in is set");
        super::sync::publish(
            ctx,
            connector,
            kube::runtime::events::EventType::Warning,
            reason,
            "Configure",
            message,
        )
        .await;
    }
}

/// The probe interval, with both durations checked against their minimums (an
/// object stored before the CRD had them would otherwise probe in a tight loop).
fn durations(connector: &ConnectorHealth) -> Result<Duration, String> {
    use crate::core::duration::{MIN_PROBE_INTERVAL, MIN_STALE_AFTER, check_minimum};
    let spec = &connector.spec;
    check_minimum("spec.staleAfter", &spec.stale_after, MIN_STALE_AFTER)?;
    check_minimum(
        "spec.probeInterval",
        &spec.probe_interval,
        MIN_PROBE_INTERVAL,
    )
}

/// Write the status when it changed, and say when to look again.
async fn finish(
    api: &Api<ConnectorHealth>,
    connector: &ConnectorHealth,
    old: &ConnectorHealthStatus,
    mut status: ConnectorHealthStatus,
    generation: Option<i64>,
    now: jiff::Timestamp,
    requeue: Option<Duration>,
) -> Result<Action> {
    status.observed_generation = generation;
    let verdict = health_of(connector, &status, generation, now);
    for c in super::ready::health_conditions(&old.conditions, &verdict, generation, now) {
        status.conditions.retain(|x| x.type_ != c.type_);
        status.conditions.push(c);
    }
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    let mut before = old.clone();
    before.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    if status != before {
        apply_status(api, &connector.name_any(), &status).await?;
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after.max(Duration::from_secs(1))),
        None => Action::await_change(),
    })
}

/// The connector's health from its `Resolved` and `Connected` conditions: a probe
/// counts only when it probed the current generation.
fn health_of(
    connector: &ConnectorHealth,
    status: &ConnectorHealthStatus,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> crate::core::health::Verdict {
    use crate::api::find_condition;
    use crate::core::health::{ConnectorFacts, Probe, Problem, connector_health};
    let unresolved = find_condition(&status.conditions, RESOLVED)
        .filter(|c| c.status != "True")
        .map(|c| Problem {
            reason: &c.reason,
            message: &c.message,
        });
    let probe = find_condition(&status.conditions, CONNECTED)
        .filter(|c| c.observed_generation == generation && c.reason != "NotProbed")
        .filter(|_| status.last_probe_time.is_some())
        .map(|c| Probe {
            connected: c.status == "True",
            reason: &c.reason,
            message: &c.message,
            since: c.last_transition_time.0,
            last_success: status.last_success_time.as_ref().map(|t| t.0),
        });
    let stale_after = crate::core::parse_duration(&connector.spec.stale_after)
        .unwrap_or(Duration::from_secs(300));
    connector_health(&ConnectorFacts {
        unresolved,
        probe,
        stale_after,
        now,
    })
}

/// The names of the Secrets a connector refers to.
pub fn secret_names(connector: &ConnectorHealth) -> impl Iterator<Item = &str> {
    let spec = &connector.spec;
    let ldap = spec
        .ldap
        .iter()
        .flat_map(|l| [&l.bind_password_secret_ref, &l.ca_secret_ref]);
    let entra = spec.entra_id.iter().flat_map(|e| {
        [
            &e.client_secret_ref,
            &e.certificate_secret_ref,
            &e.ca_secret_ref,
        ]
    });
    ldap.chain(entra).flatten().map(|r| r.name.as_str())
}

fn elapsed(since: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    now.duration_since(since)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

/// Replace (or add) one condition, keeping its transition time when the status holds.
fn set(
    status: &mut ConnectorHealthStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set_condition(
        &mut status.conditions,
        type_,
        ok,
        reason,
        message,
        generation,
        now,
    );
}
