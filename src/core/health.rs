//! How an object's health reads to the tools that judge it (kstatus, which Flux,
//! kpt and cli-utils use; Argo CD's health scripts): one verdict per object, from
//! its detailed state, written as the `Ready`, `Reconciling` and `Stalled`
//! conditions.
//!
//! - **Ready**: the object does its job now.
//! - **Reconciling**: work for the current generation is pending, or a transient
//!   failure is being retried; it resolves without anyone's help.
//! - **Stalled**: only a person can help (bad credentials, a missing or
//!   not-permitted reference, a run awaiting approval), or a transient failure has
//!   lasted past the connector's `staleAfter`.

use std::time::Duration;

use jiff::Timestamp;

/// The three states a verdict can take; each sets exactly one of `Ready`,
/// `Reconciling` and `Stalled` to True.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// `Ready=True`.
    Ready,
    /// `Ready=False`, `Reconciling=True`.
    Reconciling,
    /// `Ready=False`, `Stalled=True`.
    Stalled,
}

/// An object's health, with the reason and message of its true condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    /// A fixed, CamelCase reason.
    pub reason: String,
    /// What is the case, cause first, and what to do about it.
    pub message: String,
}

impl Verdict {
    fn new(health: Health, reason: &str, message: impl Into<String>) -> Self {
        Self {
            health,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Failure reasons that no retry can cure: a person must change a spec, a Secret,
/// a grant or a credential.
const NEEDS_A_PERSON: &[&str] = &[
    // settings and references
    "InvalidSpec",
    "InvalidConfig",
    "InvalidSecret",
    "SecretNotFound",
    "SecretKeyNotFound",
    "SecretNotPermitted",
    "SecretAccessNotGranted",
    "EndpointNotAllowed",
    "PlaintextBindRefused",
    "PolicyNotFound",
    "PolicyInvalid",
    "ConnectorNotFound",
    "ConnectorInvalid",
    // what the directory said about our credentials or its certificate
    "BindFailed",
    "AuthFailed",
    "Forbidden",
    "TLSError",
];

/// Whether a failure with this reason waits for a person rather than a retry.
pub fn needs_a_person(reason: &str) -> bool {
    NEEDS_A_PERSON.contains(&reason)
}

/// Something that keeps an object from working, as its detailed condition says it.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    pub reason: &'a str,
    pub message: &'a str,
}

/// The last probe of a connector's current generation.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    pub connected: bool,
    pub reason: &'a str,
    pub message: &'a str,
    /// Since when the connector has been connected, or not.
    pub since: Timestamp,
    /// The last successful probe, of any generation.
    pub last_success: Option<Timestamp>,
}

/// What a connector's health is judged from.
#[derive(Clone, Copy, Debug)]
pub struct ConnectorFacts<'a> {
    /// Why its settings or Secrets do not resolve, if they do not.
    pub unresolved: Option<Problem<'a>>,
    /// The last probe, if the current generation was probed.
    pub probe: Option<Probe<'a>>,
    pub stale_after: Duration,
    pub now: Timestamp,
}

/// A connector is Ready when it resolves and a probe succeeded within `staleAfter`.
pub fn connector_health(f: &ConnectorFacts<'_>) -> Verdict {
    if let Some(p) = f.unresolved {
        return stalled_or_retrying(p, None, f.stale_after, f.now);
    }
    let Some(probe) = f.probe else {
        return Verdict::new(
            Health::Reconciling,
            "Probing",
            "the connection settings resolve; the first probe of this generation has not finished yet",
        );
    };
    if probe.connected {
        let fresh = probe
            .last_success
            .is_some_and(|t| elapsed(t, f.now) <= f.stale_after);
        return if fresh {
            Verdict::new(Health::Ready, "Connected", probe.message)
        } else {
            Verdict::new(
                Health::Reconciling,
                "ProbeOverdue",
                format!(
                    "no probe succeeded within staleAfter ({}); the next probe decides",
                    crate::core::format_duration(f.stale_after)
                ),
            )
        };
    }
    stalled_or_retrying(
        Problem {
            reason: probe.reason,
            message: probe.message,
        },
        Some(probe.since),
        f.stale_after,
        f.now,
    )
}

/// A failure a person must fix is Stalled at once; any other is retried, and
/// Stalled once it has lasted past `staleAfter`.
fn stalled_or_retrying(
    p: Problem<'_>,
    since: Option<Timestamp>,
    stale_after: Duration,
    now: Timestamp,
) -> Verdict {
    if needs_a_person(p.reason) {
        return Verdict::new(Health::Stalled, p.reason, p.message);
    }
    match since.map(|t| elapsed(t, now)) {
        Some(lasted) if lasted > stale_after => Verdict::new(
            Health::Stalled,
            p.reason,
            format!(
                "{} (failing for {}, longer than staleAfter {}; retries go on)",
                p.message,
                crate::core::format_duration(lasted),
                crate::core::format_duration(stale_after)
            ),
        ),
        _ => Verdict::new(
            Health::Reconciling,
            p.reason,
            format!("{} (retrying)", p.message),
        ),
    }
}

/// The outcome of a mapping's last run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Everything planned applied.
    Applied,
    /// The policy is in dry run: planned, nothing applied.
    DryRun,
    /// A safety threshold withheld transitions: an admin must approve the run.
    AwaitingApproval {
        would_preserve: u32,
        would_delete: u32,
    },
    /// Deletions waited for the connector (unhealthy, stale, or frozen by
    /// `deletionsAllowed: false`); everything else applied.
    DeletionsDeferred,
    /// The run failed.
    Failed,
}

/// A mapping's last run.
#[derive(Clone, Copy, Debug)]
pub struct LastRun<'a> {
    pub id: &'a str,
    /// The mapping's generation the run used.
    pub generation: Option<i64>,
    pub outcome: RunOutcome,
    pub message: &'a str,
    /// Since when runs have ended this way (failed, or deferred deletions).
    pub since: Option<Timestamp>,
}

/// What a mapping's health is judged from.
#[derive(Clone, Copy, Debug)]
pub struct MappingFacts<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    /// Why its policy or connector does not resolve, if they do not.
    pub unresolved: Option<Problem<'a>>,
    /// The policy is suspended.
    pub suspended: bool,
    /// The run in progress, if one is.
    pub running: Option<&'a str>,
    pub last_run: Option<LastRun<'a>>,
    /// When the next run starts.
    pub next_run: Option<Timestamp>,
    /// The connector's `staleAfter`: how long a transient failure is only retried.
    pub stale_after: Duration,
    pub now: Timestamp,
}

/// A mapping is Ready when its last run for the current generation applied and
/// nothing is blocked.
pub fn mapping_health(f: &MappingFacts<'_>) -> Verdict {
    if let Some(p) = f.unresolved {
        return stalled_or_retrying(p, None, f.stale_after, f.now);
    }
    if f.suspended {
        return Verdict::new(
            Health::Ready,
            "Suspended",
            "the policy is suspended: no run starts until it is resumed",
        );
    }
    let generation = f.generation.unwrap_or_default();
    let Some(run) = f.last_run.filter(|r| r.generation == f.generation) else {
        let message = match (f.running, f.next_run) {
            (Some(id), _) => format!("run {id} is applying generation {generation}"),
            (None, Some(at)) if at > f.now => format!(
                "generation {generation} has not been applied by a run yet; the next run starts at {at}"
            ),
            (None, _) => {
                format!(
                    "generation {generation} has not been applied by a run yet; a run starts shortly"
                )
            }
        };
        return Verdict::new(Health::Reconciling, "RunPending", message);
    };
    match run.outcome {
        RunOutcome::Applied => Verdict::new(
            Health::Ready,
            "Synced",
            format!(
                "run {} applied generation {generation}: {}",
                run.id, run.message
            ),
        ),
        RunOutcome::DryRun => Verdict::new(
            Health::Ready,
            "DryRun",
            format!("run {}: {} (the policy is in dry run)", run.id, run.message),
        ),
        RunOutcome::AwaitingApproval {
            would_preserve,
            would_delete,
        } => Verdict::new(
            Health::Stalled,
            "AwaitingApproval",
            format!(
                "run {id} would preserve {would_preserve} and delete {would_delete} users, past the policy's thresholds, and applied none of those; approve it with `usersync approve {name} {id}`, or raise the thresholds",
                id = run.id,
                name = f.name,
            ),
        ),
        RunOutcome::DeletionsDeferred => stalled_or_retrying(
            Problem {
                reason: "DeletionsDeferred",
                message: run.message,
            },
            run.since,
            f.stale_after,
            f.now,
        ),
        RunOutcome::Failed => {
            let mut verdict = stalled_or_retrying(
                Problem {
                    reason: "RunFailed",
                    message: run.message,
                },
                run.since,
                f.stale_after,
                f.now,
            );
            verdict.message = format!("run {} failed: {}", run.id, verdict.message);
            if let (Health::Reconciling, Some(at)) = (verdict.health, f.next_run) {
                verdict
                    .message
                    .push_str(&format!("; the next try starts at {at}"));
            }
            verdict
        }
    }
}

/// A policy is Ready when it is valid; an invalid one waits for its author.
pub fn policy_health(invalid: Option<Problem<'_>>, summary: &str) -> Verdict {
    match invalid {
        Some(p) => Verdict::new(Health::Stalled, p.reason, p.message),
        None => Verdict::new(Health::Ready, "Valid", summary),
    }
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    now.duration_since(since)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn connector(unresolved: Option<Problem<'static>>, probe: Option<Probe<'static>>) -> Verdict {
        connector_health(&ConnectorFacts {
            unresolved,
            probe,
            stale_after: 5 * MIN,
            now: at(1000),
        })
    }

    fn probe(connected: bool, reason: &'static str, since: i64) -> Probe<'static> {
        Probe {
            connected,
            reason,
            message: "what the probe said",
            since: at(since),
            last_success: connected.then(|| at(990)),
        }
    }

    #[test]
    fn a_connector_is_ready_only_when_connected_within_stale_after() {
        assert_eq!(
            connector(None, Some(probe(true, "Connected", 0))).health,
            Health::Ready
        );
        let mut old = probe(true, "Connected", 0);
        old.last_success = Some(at(1000 - 301));
        let v = connector(None, Some(old));
        assert_eq!(
            (v.health, v.reason.as_str()),
            (Health::Reconciling, "ProbeOverdue")
        );
    }

    #[test]
    fn a_connector_not_probed_yet_is_reconciling() {
        let v = connector(None, None);
        assert_eq!(
            (v.health, v.reason.as_str()),
            (Health::Reconciling, "Probing")
        );
    }

    #[test]
    fn an_unreachable_connector_is_reconciling_then_stalled_past_stale_after() {
        let v = connector(None, Some(probe(false, "Unreachable", 1000 - 300)));
        assert_eq!(
            (v.health, v.reason.as_str()),
            (Health::Reconciling, "Unreachable")
        );
        let v = connector(None, Some(probe(false, "Timeout", 1000 - 301)));
        assert_eq!((v.health, v.reason.as_str()), (Health::Stalled, "Timeout"));
        assert!(
            v.message.contains("longer than staleAfter 5m"),
            "{}",
            v.message
        );
    }

    #[test]
    fn bad_credentials_and_missing_secrets_stall_a_connector_at_once() {
        for reason in ["BindFailed", "AuthFailed", "Forbidden", "TLSError"] {
            let v = connector(None, Some(probe(false, reason, 999)));
            assert_eq!(v.health, Health::Stalled, "{reason}");
        }
        let missing = Problem {
            reason: "SecretNotFound",
            message: "Secret \"bind\" not found",
        };
        let v = connector(Some(missing), Some(probe(true, "Connected", 0)));
        assert_eq!(
            (v.health, v.reason.as_str()),
            (Health::Stalled, "SecretNotFound")
        );
        // An API error while reading a Secret is retried.
        let flaky = Problem {
            reason: "APIError",
            message: "the API server did not answer",
        };
        assert_eq!(connector(Some(flaky), None).health, Health::Reconciling);
    }

    fn facts(last_run: Option<LastRun<'static>>) -> MappingFacts<'static> {
        MappingFacts {
            name: "staff",
            generation: Some(3),
            unresolved: None,
            suspended: false,
            running: None,
            last_run,
            next_run: Some(at(1030)),
            stale_after: 5 * MIN,
            now: at(1000),
        }
    }

    fn run(generation: i64, outcome: RunOutcome, since: i64) -> Option<LastRun<'static>> {
        Some(LastRun {
            id: "r1",
            generation: Some(generation),
            outcome,
            message: "what the run said",
            since: Some(at(since)),
        })
    }

    #[test]
    fn a_mapping_is_ready_only_after_a_run_of_its_generation_applied() {
        let v = mapping_health(&facts(run(3, RunOutcome::Applied, 0)));
        assert_eq!((v.health, v.reason.as_str()), (Health::Ready, "Synced"));
        // A spec edit: the last run used generation 2.
        let v = mapping_health(&facts(run(2, RunOutcome::Applied, 0)));
        assert_eq!(
            (v.health, v.reason.as_str()),
            (Health::Reconciling, "RunPending")
        );
        assert!(v.message.contains("generation 3"), "{}", v.message);
        let mut f = facts(None);
        f.running = Some("r2");
        let v = mapping_health(&f);
        assert_eq!(v.health, Health::Reconciling);
        assert!(v.message.contains("run r2"), "{}", v.message);
        let v = mapping_health(&facts(run(3, RunOutcome::DryRun, 0)));
        assert_eq!((v.health, v.reason.as_str()), (Health::Ready, "DryRun"));
    }

    #[test]
    fn a_blocked_run_stalls_a_mapping_and_says_how_to_approve() {
        let outcome = RunOutcome::AwaitingApproval {
            would_preserve: 803,
            would_delete: 0,
        };
        let v = mapping_health(&facts(run(3, outcome, 0)));
        assert_eq!(
            (v.health, v.reason.as_str()),
            (Health::Stalled, "AwaitingApproval")
        );
        assert!(
            v.message.contains("usersync approve staff r1"),
            "{}",
            v.message
        );
        assert!(v.message.contains("preserve 803"), "{}", v.message);
    }

    #[test]
    fn failing_runs_are_retried_then_stall_past_stale_after() {
        let v = mapping_health(&facts(run(3, RunOutcome::Failed, 1000 - 60)));
        assert_eq!(
            (v.health, v.reason.as_str()),
            (Health::Reconciling, "RunFailed")
        );
        assert!(v.message.contains("next try starts at"), "{}", v.message);
        let v = mapping_health(&facts(run(3, RunOutcome::Failed, 1000 - 301)));
        assert_eq!(
            (v.health, v.reason.as_str()),
            (Health::Stalled, "RunFailed")
        );
        let v = mapping_health(&facts(run(3, RunOutcome::DeletionsDeferred, 1000 - 10)));
        assert_eq!(v.health, Health::Reconciling);
        let v = mapping_health(&facts(run(3, RunOutcome::DeletionsDeferred, 1000 - 400)));
        assert_eq!(v.health, Health::Stalled);
    }

    #[test]
    fn a_missing_reference_stalls_a_mapping_and_a_suspended_one_is_ready() {
        let mut f = facts(run(3, RunOutcome::Applied, 0));
        f.unresolved = Some(Problem {
            reason: "ConnectorNotFound",
            message: "ConnectorHealth \"corp\" not found",
        });
        assert_eq!(mapping_health(&f).health, Health::Stalled);
        f.unresolved = Some(Problem {
            reason: "ConnectorNotReady",
            message: "ConnectorHealth \"corp\" has not been checked yet",
        });
        assert_eq!(mapping_health(&f).health, Health::Reconciling);
        let mut f = facts(None);
        f.suspended = true;
        assert_eq!(mapping_health(&f).reason, "Suspended");
        assert_eq!(mapping_health(&f).health, Health::Ready);
    }

    #[test]
    fn a_policy_is_ready_when_valid_and_stalled_when_not() {
        assert_eq!(policy_health(None, "interval 24h").health, Health::Ready);
        let bad = Problem {
            reason: "InvalidSpec",
            message: "spec.interval must be at least 1m",
        };
        assert_eq!(policy_health(Some(bad), "").health, Health::Stalled);
    }
}
