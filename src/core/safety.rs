//! Thresholds that stop a run which would preserve or delete too much at once
//! (DESIGN section 3).
//!
//! A directory outage or a bad filter looks, to a sync, exactly like many users
//! leaving. The thresholds turn that into a question for an admin instead of a
//! mass preserve: the run holds back all of its preserves and deletes, reports
//! the numbers, and an admin either approves that run or raises the limit.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::Policy;

/// An approver's approval of a blocked run (a RunApproval of its run id).
/// The runner builds it from the counts it recorded when that run was blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The id of the run the admin approved.
    pub run_id: String,
    /// The automatic preserves that run would have made.
    pub max_preserve: usize,
    /// The deletes that run would have made.
    pub max_delete: usize,
}

impl Approval {
    /// Whether a run of these sizes is no bigger than the approved one. A bigger
    /// change is a different situation and needs its own approval.
    pub fn covers(&self, preserves: usize, deletes: usize) -> bool {
        preserves <= self.max_preserve && deletes <= self.max_delete
    }
}

/// How many of `active` users one run may preserve under `max_percent`.
///
/// "More than p% of the active users" means `100 × preserves > p × active`, so
/// the allowance is `floor(active × p / 100)`. With few users this is strict on
/// purpose: at 10%, a mapping of 9 users may preserve none without approval,
/// because for such a mapping a single preserve already exceeds the share.
/// Admins of small mappings raise `maxPreservePercent` or approve the run.
/// Values above 100 act as 100.
pub fn allowed_preserves(active: usize, max_percent: u8) -> usize {
    let percent = u128::from(max_percent.min(100));
    // u128 cannot overflow here, whatever `usize` is.
    (active as u128 * percent / 100) as usize
}

/// The numbers behind a threshold stop, for status, the Event and approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdBreach {
    /// Automatic preserves (DisabledInDirectory, Unmapped) the run would make.
    pub would_preserve: usize,
    /// The mapping's active users before the run.
    pub active_before: usize,
    pub max_preserve_percent: u8,
    /// `allowed_preserves(active_before, max_preserve_percent)`.
    pub allowed_preserves: usize,
    pub would_delete: usize,
    pub max_deletes_per_run: u32,
    /// An approval was given but this run is bigger than the approved one.
    pub approval_exceeded: Option<Approval>,
}

impl ThresholdBreach {
    pub fn preserve_limit_exceeded(&self) -> bool {
        self.would_preserve > self.allowed_preserves
    }

    pub fn delete_limit_exceeded(&self) -> bool {
        self.would_delete > self.max_deletes_per_run as usize
    }
}

impl fmt::Display for ThresholdBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.preserve_limit_exceeded() {
            parts.push(format!(
                "would preserve {} of {} active users, limit {}% ({} users)",
                self.would_preserve,
                self.active_before,
                self.max_preserve_percent,
                self.allowed_preserves
            ));
        }
        if self.delete_limit_exceeded() {
            parts.push(format!(
                "would delete {}, limit {} per run",
                self.would_delete, self.max_deletes_per_run
            ));
        }
        write!(f, "safety threshold reached: {}", parts.join("; "))?;
        if let Some(approval) = &self.approval_exceeded {
            write!(
                f,
                "; approved run {} covered at most {} preserves and {} deletes, this run is bigger",
                approval.run_id, approval.max_preserve, approval.max_delete
            )?;
        }
        write!(
            f,
            "; no preserve or delete was applied — approve this run (a RunApproval, \
             `usersync approve`) or raise the threshold"
        )
    }
}

/// The outcome of the threshold check for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThresholdVerdict {
    /// Within the limits.
    Within,
    /// Over the limits, but covered by the admin's approval of run `run_id`.
    Approved { run_id: String },
    /// Over the limits: hold back every preserve and delete.
    Breached(ThresholdBreach),
}

/// Checks a run that would make `preserves` automatic preserves and `deletes`
/// deletes, in a mapping that had `active_before` active users.
pub fn check_thresholds(
    preserves: usize,
    deletes: usize,
    active_before: usize,
    policy: &Policy,
    approval: Option<&Approval>,
) -> ThresholdVerdict {
    let breach = ThresholdBreach {
        would_preserve: preserves,
        active_before,
        max_preserve_percent: policy.max_preserve_percent,
        allowed_preserves: allowed_preserves(active_before, policy.max_preserve_percent),
        would_delete: deletes,
        max_deletes_per_run: policy.max_deletes_per_run,
        approval_exceeded: None,
    };
    if !breach.preserve_limit_exceeded() && !breach.delete_limit_exceeded() {
        return ThresholdVerdict::Within;
    }
    match approval {
        Some(approval) if approval.covers(preserves, deletes) => ThresholdVerdict::Approved {
            run_id: approval.run_id.clone(),
        },
        _ => ThresholdVerdict::Breached(ThresholdBreach {
            approval_exceeded: approval.cloned(),
            ..breach
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::policy;
    use proptest::prelude::*;

    #[test]
    fn allowance_rounds_down() {
        assert_eq!(allowed_preserves(100, 10), 10);
        assert_eq!(allowed_preserves(19, 10), 1);
        assert_eq!(allowed_preserves(9, 10), 0);
        assert_eq!(allowed_preserves(0, 10), 0);
        assert_eq!(allowed_preserves(7, 100), 7);
        assert_eq!(allowed_preserves(7, 255), 7);
        assert_eq!(allowed_preserves(7, 0), 0);
    }

    #[test]
    fn exactly_the_allowed_share_passes() {
        assert_eq!(
            check_thresholds(10, 0, 100, &policy(), None),
            ThresholdVerdict::Within
        );
        assert!(matches!(
            check_thresholds(11, 0, 100, &policy(), None),
            ThresholdVerdict::Breached(_)
        ));
    }

    #[test]
    fn breach_message_has_the_numbers() {
        let ThresholdVerdict::Breached(breach) = check_thresholds(12, 501, 40, &policy(), None)
        else {
            panic!("expected a breach");
        };
        let message = breach.to_string();
        assert!(
            message.contains("would preserve 12 of 40 active users, limit 10% (4 users)"),
            "{message}"
        );
        assert!(message.contains("would delete 501, limit 500"), "{message}");
    }

    #[test]
    fn approval_covers_equal_or_smaller_runs() {
        let approval = Approval {
            run_id: "run-1".into(),
            max_preserve: 12,
            max_delete: 0,
        };
        assert_eq!(
            check_thresholds(12, 0, 40, &policy(), Some(&approval)),
            ThresholdVerdict::Approved {
                run_id: "run-1".into()
            }
        );
        let ThresholdVerdict::Breached(breach) =
            check_thresholds(13, 0, 40, &policy(), Some(&approval))
        else {
            panic!("a bigger run must stay blocked");
        };
        assert_eq!(breach.approval_exceeded, Some(approval));
    }

    proptest! {
        #[test]
        fn verdict_matches_the_rule(
            preserves in 0usize..200, deletes in 0usize..20, active in 0usize..500,
            percent in 0u8..=100, max_deletes in 0u32..20,
        ) {
            let policy = Policy { max_preserve_percent: percent, max_deletes_per_run: max_deletes, ..policy() };
            let over = 100 * preserves > usize::from(percent) * active || deletes > max_deletes as usize;
            let verdict = check_thresholds(preserves, deletes, active, &policy, None);
            prop_assert_eq!(matches!(verdict, ThresholdVerdict::Breached(_)), over);
        }
    }
}
