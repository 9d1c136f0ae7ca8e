//! When a preserved user's retention runs out (rule 5).
//!
//! These functions look only at the record and the policy, not at any mapping:
//! a user whose mapping was removed is still deleted on schedule, so a sweeper
//! for orphaned records uses them as the planner does. Neither checks the
//! connector gate; deleting still needs [`crate::core::ConnectorGate`].

use jiff::Timestamp;

use super::model::{Policy, State, UserRecord};

/// The moment a preserved record becomes due for deletion: `preservedAt +
/// deleteAfter`, or `None` when it will not be deleted automatically (not
/// Preserved, `autoDelete` off, or no `preservedAt` to measure from — the
/// conservative reading of a damaged record). A deadline beyond the calendar's
/// end is the end of the calendar.
pub fn deletion_deadline(record: &UserRecord, policy: &Policy) -> Option<Timestamp> {
    if record.state != State::Preserved || !policy.auto_delete {
        return None;
    }
    let preserved_at = record.preserved_at?;
    Some(
        preserved_at
            .checked_add(policy.delete_after)
            .unwrap_or(Timestamp::MAX),
    )
}

/// Whether the record's deadline has been reached at `now` (a deadline of
/// exactly `now` counts as reached).
pub fn retention_due(record: &UserRecord, policy: &Policy, now: Timestamp) -> bool {
    deletion_deadline(record, policy).is_some_and(|deadline| now >= deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Reason;
    use crate::core::testkit::*;
    use std::time::Duration;

    #[test]
    fn deadline_is_preserved_at_plus_delete_after() {
        let record = preserved("a", MAPPING, Reason::Unmapped, t(0));
        assert_eq!(
            deletion_deadline(&record, &policy()),
            Some(t(0) + Duration::from_secs(45 * 86_400))
        );
    }

    #[test]
    fn due_at_and_after_the_deadline_only() {
        let record = preserved("a", MAPPING, Reason::DisabledInDirectory, t(0));
        let deadline = deletion_deadline(&record, &policy()).unwrap();
        assert!(!retention_due(
            &record,
            &policy(),
            deadline - Duration::from_secs(1)
        ));
        assert!(retention_due(&record, &policy(), deadline));
        assert!(retention_due(
            &record,
            &policy(),
            deadline + Duration::from_secs(1)
        ));
    }

    #[test]
    fn no_deadline_without_auto_delete_or_preservation() {
        let record = preserved("a", MAPPING, Reason::Unmapped, t(0));
        let off = Policy {
            auto_delete: false,
            ..policy()
        };
        assert_eq!(deletion_deadline(&record, &off), None);
        assert_eq!(deletion_deadline(&active("b", MAPPING), &policy()), None);
        let undated = UserRecord {
            preserved_at: None,
            ..record
        };
        assert_eq!(deletion_deadline(&undated, &policy()), None);
    }

    #[test]
    fn enormous_retention_saturates() {
        let record = preserved("a", MAPPING, Reason::Unmapped, t(0));
        let forever = Policy {
            delete_after: Duration::MAX,
            ..policy()
        };
        assert_eq!(deletion_deadline(&record, &forever), Some(Timestamp::MAX));
    }
}
