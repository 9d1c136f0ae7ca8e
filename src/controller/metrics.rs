//! Prometheus metrics. Every label value comes from a fixed set (results, states)
//! or names an object the admin created (namespace, mapping, connector) — never
//! from error text.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::RunResult;

/// How a run ended, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ResultLabel {
    Succeeded,
    Failed,
    Blocked,
    DryRun,
}

impl From<RunResult> for ResultLabel {
    fn from(r: RunResult) -> Self {
        match r {
            RunResult::Succeeded => ResultLabel::Succeeded,
            RunResult::Failed => ResultLabel::Failed,
            RunResult::Blocked => ResultLabel::Blocked,
            RunResult::DryRun => ResultLabel::DryRun,
        }
    }
}

/// A user lifecycle state, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum StateLabel {
    Active,
    Preserved,
    Deleted,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub namespace: String,
    pub mapping: String,
    pub result: ResultLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MappingLabels {
    pub namespace: String,
    pub mapping: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabels {
    pub namespace: String,
    pub mapping: String,
    pub state: StateLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub namespace: String,
    pub connector: String,
}

/// The labels of a ProvisioningTarget's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub namespace: String,
    pub target: String,
}

/// The labels of a request to a SCIM application.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetRequestLabels {
    pub namespace: String,
    pub target: String,
    pub method: String,
    /// The HTTP status class (`2xx`, `4xx`, `5xx`), or `error` without an answer.
    pub result: String,
}

/// The labels of a target's accounts by delivered state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetAccountLabels {
    pub namespace: String,
    pub target: String,
    /// `provisioned`, `disabled`, `deleted` or `failed`.
    pub state: String,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub target_requests: Family<TargetRequestLabels, Counter>,
    pub target_request_duration: Family<TargetLabels, Histogram>,
    pub target_accounts: Family<TargetAccountLabels, Gauge>,
    pub target_quarantined: Family<TargetLabels, Gauge>,
    pub target_throttled_wait: Family<TargetLabels, Counter<f64, AtomicU64>>,
    pub runs: Family<RunLabels, Counter>,
    pub run_duration: Family<MappingLabels, Histogram>,
    pub users: Family<UserLabels, Gauge>,
    pub connector_up: Family<ConnectorLabels, Gauge>,
    pub last_success: Family<MappingLabels, Gauge<f64, AtomicU64>>,
    pub deletions_planned: Family<MappingLabels, Counter>,
    pub deletions_blocked: Family<MappingLabels, Counter>,
    pub graph_throttled: Family<ConnectorLabels, Counter>,
    pub graph_throttled_wait: Family<ConnectorLabels, Counter<f64, AtomicU64>>,
    /// How often the mapping is due to run (its policy's interval), to compare the
    /// last success against.
    pub interval: Family<MappingLabels, Gauge<f64, AtomicU64>>,
    /// How long a run's directory read took.
    pub read_duration: Family<MappingLabels, Histogram>,
    /// How long a run's writes to the registry took.
    pub write_duration: Family<MappingLabels, Histogram>,
    /// Whether the mapping's push channel is open (1) or not (0).
    pub push_open: Family<MappingLabels, Gauge>,
    /// Changes the mapping's push channel reported.
    pub push_changes: Family<MappingLabels, Counter>,
    /// Times the mapping's push channel was lost or could not be opened.
    pub push_lost: Family<MappingLabels, Counter>,
}

/// Duration buckets from 50 ms to about 7 minutes.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("usersync");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register("runs", "Sync runs by result", runs.clone());
        let run_duration =
            Family::<MappingLabels, Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "run_duration_seconds",
            "Duration of sync runs",
            run_duration.clone(),
        );
        let users = Family::<UserLabels, Gauge>::default();
        registry.register(
            "users",
            "Users of a mapping by lifecycle state",
            users.clone(),
        );
        let connector_up = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_up",
            "Whether the connector's last probe succeeded (1) or not (0)",
            connector_up.clone(),
        );
        let last_success = Family::<MappingLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "When a run of the mapping last succeeded, in Unix seconds",
            last_success.clone(),
        );
        let deletions_planned = Family::<MappingLabels, Counter>::default();
        registry.register(
            "deletions_planned",
            "Deletions that runs planned",
            deletions_planned.clone(),
        );
        let deletions_blocked = Family::<MappingLabels, Counter>::default();
        registry.register(
            "deletions_blocked",
            "Planned deletions that a safety rule or the connector gate withheld",
            deletions_blocked.clone(),
        );
        let interval = Family::<MappingLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "sync_interval_seconds",
            "How often the mapping is due to run (its policy's interval)",
            interval.clone(),
        );
        let read_duration =
            Family::<MappingLabels, Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "read_duration_seconds",
            "Duration of a run's directory read",
            read_duration.clone(),
        );
        let write_duration =
            Family::<MappingLabels, Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "write_duration_seconds",
            "Duration of a run's writes to the user registry",
            write_duration.clone(),
        );
        let graph_throttled = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "graph_throttled_requests",
            "Microsoft Graph and token requests answered 429, or 503 with Retry-After",
            graph_throttled.clone(),
        );
        let graph_throttled_wait = Family::<ConnectorLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "graph_throttled_wait_seconds",
            "Time requests to Microsoft Graph waited because of throttling",
            graph_throttled_wait.clone(),
        );
        let target_requests = Family::<TargetRequestLabels, Counter>::default();
        registry.register(
            "target_requests",
            "Requests to SCIM applications by method and result",
            target_requests.clone(),
        );
        let target_request_duration =
            Family::<TargetLabels, Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "target_request_duration_seconds",
            "Duration of requests to a SCIM application",
            target_request_duration.clone(),
        );
        let target_accounts = Family::<TargetAccountLabels, Gauge>::default();
        registry.register(
            "target_accounts",
            "A target's accounts by delivered state",
            target_accounts.clone(),
        );
        let target_quarantined = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "target_quarantined",
            "Whether the target is quarantined (1) or not (0)",
            target_quarantined.clone(),
        );
        let target_throttled_wait = Family::<TargetLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "target_throttled_wait_seconds",
            "Time requests to a SCIM application waited on 429, 5xx or Retry-After",
            target_throttled_wait.clone(),
        );
        let push_open = Family::<MappingLabels, Gauge>::default();
        registry.register(
            "push_open",
            "Whether the mapping's push channel is open (1) or not (0)",
            push_open.clone(),
        );
        let push_changes = Family::<MappingLabels, Counter>::default();
        registry.register(
            "push_changes",
            "Changes the mapping's push channel reported (polled delta pages with changes, for Entra ID)",
            push_changes.clone(),
        );
        let push_lost = Family::<MappingLabels, Counter>::default();
        registry.register(
            "push_lost",
            "Times the mapping's push channel was lost or could not be opened",
            push_lost.clone(),
        );
        Self {
            registry,
            push_open,
            push_changes,
            push_lost,
            target_requests,
            target_request_duration,
            target_accounts,
            target_quarantined,
            target_throttled_wait,
            interval,
            read_duration,
            write_duration,
            graph_throttled,
            graph_throttled_wait,
            runs,
            run_duration,
            users,
            connector_up,
            last_success,
            deletions_planned,
            deletions_blocked,
        }
    }
}

impl Metrics {
    /// Count how much Graph throttled one source of `connector`.
    pub fn record_throttling(
        &self,
        connector: &ConnectorLabels,
        throttling: crate::directory::graph::Throttling,
    ) {
        if throttling.throttled_requests == 0 && throttling.waited.is_zero() {
            return;
        }
        self.graph_throttled
            .get_or_create(connector)
            .inc_by(throttling.throttled_requests);
        self.graph_throttled_wait
            .get_or_create(connector)
            .inc_by(throttling.waited.as_secs_f64());
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The labels of one mapping.
pub(crate) fn mapping_labels(ns: &str, mapping: &str) -> MappingLabels {
    MappingLabels {
        namespace: ns.to_string(),
        mapping: mapping.to_string(),
    }
}

/// Count the run in the metrics.
pub(crate) fn record_run(
    ctx: &super::Context,
    ns: &str,
    mapping: &str,
    summary: &crate::api::RunSummary,
    report: &super::sync::RunReport,
    took: std::time::Duration,
) {
    use super::metrics::{RunLabels, StateLabel, UserLabels};
    let m = &ctx.metrics;
    let labels = mapping_labels(ns, mapping);
    m.runs
        .get_or_create(&RunLabels {
            namespace: ns.into(),
            mapping: mapping.into(),
            result: summary.result.into(),
        })
        .inc();
    m.run_duration
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if let Some(users) = &report.users {
        for (state, n) in [
            (StateLabel::Active, users.active),
            (StateLabel::Preserved, users.preserved),
            (StateLabel::Deleted, users.deleted),
        ] {
            m.users
                .get_or_create(&UserLabels {
                    namespace: ns.into(),
                    mapping: mapping.into(),
                    state,
                })
                .set(i64::from(n));
        }
    }
    if summary.result == RunResult::Succeeded {
        m.last_success
            .get_or_create(&labels)
            .set(summary.start_time.0.as_second() as f64);
    }
    m.deletions_planned
        .get_or_create(&labels)
        .inc_by(report.deletions.0);
    m.deletions_blocked
        .get_or_create(&labels)
        .inc_by(report.deletions.1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_fixed_labels() {
        let m = Metrics::default();
        let labels = RunLabels {
            namespace: "ns".into(),
            mapping: "staff".into(),
            result: ResultLabel::Succeeded,
        };
        m.runs.get_or_create(&labels).inc();
        let text = m.encode();
        assert!(
            text.contains(
                r#"usersync_runs_total{namespace="ns",mapping="staff",result="Succeeded"} 1"#
            ),
            "{text}"
        );
    }
}
