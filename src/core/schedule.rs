//! When a mapping syncs: on its interval, and on demand (DESIGN section 4).
//!
//! The schedule is derived only from what status persists — the last run's
//! start and the last handled on-demand value — never from memory, so an
//! operator restart neither skips nor repeats a run.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// When the next scheduled run is due: the last run's start plus the interval.
/// `None` means "due now" (the mapping has never run). A time beyond the
/// calendar's end is the end of the calendar.
pub fn next_run(last_run_start: Option<Timestamp>, interval: Duration) -> Option<Timestamp> {
    last_run_start.map(|start| start.checked_add(interval).unwrap_or(Timestamp::MAX))
}

/// The wait before the first retry of a failed run; each further failure in a row
/// doubles it, up to the interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);

/// How long after the last run's start the next run is due: the interval, or after
/// `failures` failed runs in a row, [`FIRST_RETRY`] doubled for each failure after
/// the first, never longer than the interval.
pub fn run_spacing(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    FIRST_RETRY
        .saturating_mul(1u32 << (failures - 1).min(20))
        .min(interval)
}

/// Whether a scheduled run is due at `now`.
pub fn is_due(last_run_start: Option<Timestamp>, interval: Duration, now: Timestamp) -> bool {
    next_run(last_run_start, interval).is_none_or(|next| now >= next)
}

/// How long to wait from `now` until `next`; zero when it is due already.
pub fn requeue_after(now: Timestamp, next: Option<Timestamp>) -> Duration {
    next.map_or(Duration::ZERO, |next| {
        next.duration_since(now)
            .try_into()
            .unwrap_or(Duration::ZERO)
    })
}

/// What to do about the `usersync.dev/sync-requested-at` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnDemand {
    /// No request, or one already handled.
    None,
    /// A new request: start a run now and record the value as handled.
    Start,
    /// A new request while a run is in progress: refuse it, and record the
    /// value as handled with the refusal so it is not acted on later.
    Refused,
}

/// Decides about an on-demand request. Any value differing from the last
/// handled one is a new request; the same value is never acted on twice.
pub fn on_demand(
    request_value: Option<&str>,
    last_handled_value: Option<&str>,
    run_in_progress: bool,
) -> OnDemand {
    match request_value {
        None => OnDemand::None,
        Some(value) if Some(value) == last_handled_value => OnDemand::None,
        Some(_) if run_in_progress => OnDemand::Refused,
        Some(_) => OnDemand::Start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn never_run_mapping_is_due_now() {
        assert_eq!(next_run(None, DAY), None);
        assert!(is_due(None, DAY, t("2025-01-01T00:00:00Z")));
        assert_eq!(
            requeue_after(t("2025-01-01T00:00:00Z"), None),
            Duration::ZERO
        );
    }

    #[test]
    fn next_run_is_interval_after_last_start() {
        let start = t("2025-01-01T00:00:00Z");
        assert_eq!(next_run(Some(start), DAY), Some(t("2025-01-02T00:00:00Z")));
        assert!(!is_due(Some(start), DAY, t("2025-01-01T23:59:59Z")));
        assert!(is_due(Some(start), DAY, t("2025-01-02T00:00:00Z")));
        assert!(is_due(Some(start), DAY, t("2025-01-05T00:00:00Z")));
    }

    #[test]
    fn requeue_waits_until_next_and_never_negative() {
        let next = Some(t("2025-01-02T00:00:00Z"));
        assert_eq!(
            requeue_after(t("2025-01-01T23:00:00Z"), next),
            Duration::from_secs(3600)
        );
        assert_eq!(
            requeue_after(t("2025-01-03T00:00:00Z"), next),
            Duration::ZERO
        );
    }

    #[test]
    fn a_failed_run_is_retried_with_backoff_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(run_spacing(hour, 0), hour, "no failure: the interval");
        assert_eq!(run_spacing(hour, 1), Duration::from_secs(30));
        assert_eq!(run_spacing(hour, 2), Duration::from_secs(60));
        assert_eq!(run_spacing(hour, 3), Duration::from_secs(120));
        assert_eq!(run_spacing(hour, 7), Duration::from_secs(1920));
        assert_eq!(run_spacing(hour, 8), hour, "never past the interval");
        assert_eq!(run_spacing(hour, u32::MAX), hour);
        assert_eq!(
            run_spacing(Duration::from_secs(10), 1),
            Duration::from_secs(10),
            "an interval shorter than the first retry wins"
        );
        let start = t("2025-01-01T00:00:00Z");
        assert!(!is_due(
            Some(start),
            run_spacing(DAY, 1),
            t("2025-01-01T00:00:29Z")
        ));
        assert!(is_due(
            Some(start),
            run_spacing(DAY, 1),
            t("2025-01-01T00:00:30Z")
        ));
    }

    #[test]
    fn huge_interval_saturates() {
        let start = t("2025-01-01T00:00:00Z");
        assert_eq!(next_run(Some(start), Duration::MAX), Some(Timestamp::MAX));
    }

    #[test]
    fn new_on_demand_value_starts_a_run() {
        assert_eq!(on_demand(Some("1"), None, false), OnDemand::Start);
        assert_eq!(on_demand(Some("2"), Some("1"), false), OnDemand::Start);
    }

    #[test]
    fn on_demand_while_running_is_refused() {
        assert_eq!(on_demand(Some("2"), Some("1"), true), OnDemand::Refused);
    }

    #[test]
    fn same_on_demand_value_is_never_acted_on_twice() {
        assert_eq!(on_demand(Some("1"), Some("1"), false), OnDemand::None);
        assert_eq!(on_demand(Some("1"), Some("1"), true), OnDemand::None);
        assert_eq!(on_demand(None, Some("1"), false), OnDemand::None);
        assert_eq!(on_demand(None, None, true), OnDemand::None);
    }

    /// What status persists between reconciles, and so survives a restart.
    #[derive(Clone, Default)]
    struct Persisted {
        last_run_start: Option<Timestamp>,
        runs: Vec<Timestamp>,
    }

    /// One reconcile at `now`, with nothing but the persisted state to go on.
    fn reconcile(state: &mut Persisted, interval: Duration, now: Timestamp) {
        if is_due(state.last_run_start, interval, now) {
            state.last_run_start = Some(now);
            state.runs.push(now);
        }
    }

    #[test]
    fn restart_does_not_double_a_run() {
        let mut state = Persisted::default();
        reconcile(&mut state, DAY, t("2025-01-01T00:00:00Z"));
        // The operator restarts a minute later and reconciles everything again.
        let mut restarted = state.clone();
        reconcile(&mut restarted, DAY, t("2025-01-01T00:01:00Z"));
        assert_eq!(restarted.runs, state.runs);
        assert_eq!(
            requeue_after(
                t("2025-01-01T00:01:00Z"),
                next_run(restarted.last_run_start, DAY)
            ),
            DAY - Duration::from_secs(60)
        );
    }

    #[test]
    fn restart_does_not_skip_a_run_that_fell_due_while_down() {
        let mut state = Persisted::default();
        reconcile(&mut state, DAY, t("2025-01-01T00:00:00Z"));
        // Down from 23:00 until 03:00 the next day, across the due time.
        let mut restarted = state.clone();
        reconcile(&mut restarted, DAY, t("2025-01-02T03:00:00Z"));
        reconcile(&mut restarted, DAY, t("2025-01-02T03:00:05Z"));
        assert_eq!(
            restarted.runs,
            vec![t("2025-01-01T00:00:00Z"), t("2025-01-02T03:00:00Z")]
        );
    }
}
