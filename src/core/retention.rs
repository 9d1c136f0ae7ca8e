//! When a preserved user's retention runs out (rule 5).
//!
//! These functions look only at the record and the policy, not at any mapping:
//! a user whose mapping was removed is still deleted on schedule, by the
//! connector-level pass ([`orphan_deletions`]) that goes by the deadline recorded
//! when the user was preserved. Neither checks the connector gate; deleting still
//! needs [`crate::core::ConnectorGate`].

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::model::{Policy, Reason, State, UserRecord};
use super::plan::{Transition, TransitionKind};

/// The moment a preserved record becomes due for deletion: `preservedAt +
/// deleteAfter`, or `None` when it will not be deleted automatically (not
/// Preserved, `autoDelete` off, held by an admin without the policy's
/// `deleteManuallyPreserved`, or no `preservedAt` to measure from — the
/// conservative reading of a damaged record). A deadline beyond the calendar's
/// end is the end of the calendar.
pub fn deletion_deadline(record: &UserRecord, policy: &Policy) -> Option<Timestamp> {
    if record.state != State::Preserved || !policy.auto_delete {
        return None;
    }
    // The hold is `spec.preserve` itself: once an admin clears it, the user's
    // retention runs like any other preserve's (and sync may re-enable it).
    if record.manual_preserve && !policy.delete_manually_preserved {
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

/// The deletions of the connector-level retention pass: preserved directory
/// records of `connector` that no existing mapping owns (their mapping was
/// removed, or they never had one) and whose recorded `deleteAfterTime` has
/// passed at `now`. They are deleted whether or not any mapping still covers
/// them; an admin's hold was already written into the recorded deadline (none is
/// recorded for it unless the policy opted in), and a record `spec.preserve` holds
/// now is never deleted here. The answer is in name order, at most `limit` long.
pub fn orphan_deletions(
    snapshot: &[UserRecord],
    connector: &str,
    mappings: &BTreeSet<String>,
    now: Timestamp,
    limit: usize,
) -> Vec<Transition> {
    let mut due: Vec<Transition> = snapshot
        .iter()
        .filter(|r| {
            r.origin.is_managed_by_sync()
                && r.connector == connector
                && r.state == State::Preserved
                && !r.manual_preserve
                && r.mapping.as_ref().is_none_or(|m| !mappings.contains(m))
                && r.delete_after_time.is_some_and(|deadline| now >= deadline)
        })
        .map(|r| Transition {
            kind: TransitionKind::Delete,
            record: UserRecord {
                state: State::Deleted,
                reason: Some(Reason::RetentionExpired),
                deleted_at: Some(now),
                ..r.clone()
            },
        })
        .collect();
    due.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    due.truncate(limit);
    due
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn a_manual_preserve_has_no_deadline_unless_the_policy_opts_in() {
        let manual = UserRecord {
            manual_preserve: true,
            ..preserved("a", MAPPING, Reason::Manual, t(0))
        };
        let held = UserRecord {
            manual_preserve: true,
            ..preserved("b", MAPPING, Reason::DisabledInDirectory, t(0))
        };
        let released = UserRecord {
            manual_preserve: false,
            ..manual.clone()
        };
        assert_eq!(
            deletion_deadline(&released, &policy()),
            Some(t(0) + 45 * DAY),
            "a released hold runs its retention"
        );
        for record in [&manual, &held] {
            assert_eq!(deletion_deadline(record, &policy()), None, "{record:?}");
            let opted_in = Policy {
                delete_manually_preserved: true,
                ..policy()
            };
            assert_eq!(
                deletion_deadline(record, &opted_in),
                Some(t(0) + 45 * DAY),
                "{record:?}"
            );
        }
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

    fn recorded(record: UserRecord, deadline: Timestamp) -> UserRecord {
        UserRecord {
            delete_after_time: Some(deadline),
            ..record
        }
    }

    #[test]
    fn users_of_a_removed_mapping_are_deleted_at_their_recorded_deadline() {
        let snapshot = vec![
            recorded(preserved("gone", "removed", Reason::Unmapped, t(0)), t(45)),
            recorded(
                preserved("later", "removed", Reason::Unmapped, t(0)),
                t(200),
            ),
            recorded(preserved("kept", MAPPING, Reason::Unmapped, t(0)), t(45)),
            recorded(
                UserRecord {
                    mapping: None,
                    ..preserved("unowned", "x", Reason::DisabledInDirectory, t(0))
                },
                t(45),
            ),
            recorded(
                UserRecord {
                    manual_preserve: true,
                    ..preserved("held", "removed", Reason::Unmapped, t(0))
                },
                t(45),
            ),
            UserRecord {
                connector: "other".into(),
                ..recorded(
                    preserved("elsewhere", "removed", Reason::Unmapped, t(0)),
                    t(45),
                )
            },
            preserved("undated", "removed", Reason::Unmapped, t(0)),
            active("active", "removed"),
        ];
        let mappings = BTreeSet::from([MAPPING.to_string()]);
        let due = orphan_deletions(&snapshot, CONNECTOR, &mappings, now(), 100);
        let names: Vec<_> = due.iter().map(|t| t.record.anchor.as_str()).collect();
        assert_eq!(names, vec!["gone", "unowned"]);
        for t in &due {
            assert_eq!(t.kind, TransitionKind::Delete);
            assert_eq!(t.record.state, State::Deleted);
            assert_eq!(t.record.reason, Some(Reason::RetentionExpired));
            assert_eq!(t.record.deleted_at, Some(now()));
        }
        assert!(
            orphan_deletions(&snapshot, CONNECTOR, &mappings, t(44), 100).is_empty(),
            "nothing is due before the recorded deadline"
        );
        assert_eq!(
            orphan_deletions(&snapshot, CONNECTOR, &mappings, now(), 1).len(),
            1,
            "the pass deletes at most its limit"
        );
    }
}
