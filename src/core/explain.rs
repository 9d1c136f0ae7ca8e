//! Why a record is in its state, and what its deletion still waits for: the
//! answer `usersync explain` prints, from the record, its policy and its
//! connector's gate, at a given time.

use jiff::Timestamp;
use serde::Serialize;

use super::duration::format_duration;
use super::gate::ConnectorGate;
use super::model::{Origin, Policy, Reason, State, UserRecord};

/// The rule behind a record's state, and for a preserved user, what its deletion
/// waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The rule that put the record in its state, with its times.
    pub rule: String,
    /// What happens next, and what would change it.
    pub next: String,
    /// For a preserved user: each condition its deletion needs, in the order
    /// they are checked. Empty for any other record.
    pub deletion_needs: Vec<Need>,
}

/// One condition a deletion needs, and whether it holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Need {
    pub what: &'static str,
    pub met: bool,
    pub detail: String,
}

/// Explain `record` at `now`. `policy` is its mapping's policy and `gate` its
/// connector's; either is `None` when it no longer exists.
pub fn explain(
    record: &UserRecord,
    policy: Option<&Policy>,
    gate: Option<&ConnectorGate>,
    now: Timestamp,
) -> Explanation {
    let at = |t: Option<Timestamp>| t.map_or("an unrecorded time".to_string(), |t| t.to_string());
    let mapping = record.mapping.as_deref().unwrap_or("none");
    if !record.origin.is_managed_by_sync() {
        let by = match record.origin {
            Origin::Csv => "a CSV import",
            _ => "an admin",
        };
        return Explanation {
            rule: format!(
                "created by {by} ({}): sync never changes, preserves or deletes it (rule 7)",
                record.origin
            ),
            next: "nothing changes it but an admin".into(),
            deletion_needs: Vec::new(),
        };
    }
    let (rule, next) = match (record.state, record.reason) {
        (State::Active, _) if record.manual_preserve => (
            format!("imported by mapping {mapping}; an admin has asked to preserve it (spec.preserve)"),
            "the next run of its mapping preserves it".to_string(),
        ),
        (State::Active, _) => (
            format!(
                "imported by mapping {mapping}: Active while its directory account is enabled and in the mapping's scope"
            ),
            "preserved when the account is disabled, or when it leaves every mapping's scope and the policy has autoPreserveUnmapped".to_string(),
        ),
        (State::Preserved, Some(Reason::Manual)) => (
            format!(
                "preserved at {} by an admin (spec.preserve): sync never lifts an admin's preserve",
                at(record.preserved_at)
            ),
            "`usersync unpreserve` (or spec.preserve: false) lifts it; then the next run re-enables it if its account is enabled and in scope".to_string(),
        ),
        (State::Preserved, Some(Reason::DisabledInDirectory)) => (
            format!(
                "preserved at {}: the directory marks the account disabled",
                at(record.preserved_at)
            ),
            "re-enabled by the next run that reads the account enabled".to_string(),
        ),
        (State::Preserved, _) => (
            format!(
                "preserved at {}: no mapping of connector {} matches it any more (last mapping: {mapping})",
                at(record.preserved_at),
                record.connector
            ),
            "re-enabled, or transferred, when a mapping of its connector matches it again".to_string(),
        ),
        (State::Deleted, _) if record.manual_preserve => (
            format!(
                "deleted at {}, while an admin held it (spec.preserve stays on the tombstone)",
                at(record.deleted_at)
            ),
            "Deleted is final; the directory object is not imported again until an admin clears the tombstone's preserve".to_string(),
        ),
        (State::Deleted, _) => (
            format!(
                "deleted at {}: its retention after being preserved ran out",
                at(record.deleted_at)
            ),
            "Deleted is final; if the directory object returns, it becomes a new record".to_string(),
        ),
    };
    let deletion_needs = if record.state == State::Preserved {
        deletion_needs(record, policy, gate, now)
    } else {
        Vec::new()
    };
    Explanation {
        rule,
        next,
        deletion_needs,
    }
}

/// What a preserved record's deletion needs (rule 5): a deadline, reached, and a
/// connector that permits deletions now.
fn deletion_needs(
    record: &UserRecord,
    policy: Option<&Policy>,
    gate: Option<&ConnectorGate>,
    now: Timestamp,
) -> Vec<Need> {
    let deadline = match record.delete_after_time {
        Some(t) if t <= now => Need {
            what: "deadline",
            met: true,
            detail: format!("deleteAfterTime {t} has passed"),
        },
        Some(t) => {
            let left: std::time::Duration = t
                .duration_since(now)
                .try_into()
                .unwrap_or(std::time::Duration::ZERO);
            let left = std::time::Duration::from_secs(left.as_secs());
            Need {
                what: "deadline",
                met: false,
                detail: format!("deleteAfterTime {t}, in {}", format_duration(left)),
            }
        }
        None => Need {
            what: "deadline",
            met: false,
            detail: match policy {
                _ if record.reason == Some(Reason::Manual) => "none is recorded: a manual preserve is not deleted unless the policy sets preservation.deleteManuallyPreserved".into(),
                Some(p) if !p.auto_delete => "none is recorded: the policy's preservation.autoDelete is off".into(),
                None => "none is recorded, and the mapping's policy no longer exists".into(),
                Some(_) => "none is recorded; the next run of its mapping records one".into(),
            },
        },
    };
    let connector = match gate.map(|g| g.deletions_permitted(now)) {
        Some(Ok(())) => Need {
            what: "connector",
            met: true,
            detail: format!(
                "connector {} permits deletions now (connected, probed recently, deletionsAllowed)",
                record.connector
            ),
        },
        Some(Err(refusal)) => Need {
            what: "connector",
            met: false,
            detail: format!("connector {}: {refusal}", record.connector),
        },
        None => Need {
            what: "connector",
            met: false,
            detail: format!(
                "no ConnectorHealth {} exists, so nothing of it is deleted",
                record.connector
            ),
        },
    };
    let mut needs = vec![deadline, connector];
    if let Some(p) = policy {
        needs.push(Need {
            what: "threshold",
            met: true,
            detail: format!(
                "a run deletes at most {} users (safety.maxDeletesPerRun); beyond that it waits for an approval",
                p.max_deletes_per_run
            ),
        });
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::UserFields;
    use std::time::Duration;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn record(state: State, reason: Option<Reason>) -> UserRecord {
        UserRecord {
            name: "corp-01".into(),
            origin: Origin::Directory,
            connector: "corp".into(),
            anchor: "a1".into(),
            mapping: Some("staff".into()),
            fields: UserFields::default(),
            manual_preserve: false,
            state,
            reason,
            preserved_at: (state != State::Active).then(|| at("2026-01-01T00:00:00Z")),
            deleted_at: (state == State::Deleted).then(|| at("2026-01-08T00:00:00Z")),
            delete_after_time: None,
        }
    }

    fn policy() -> Policy {
        Policy {
            auto_preserve_unmapped: true,
            auto_delete: true,
            delete_after: Duration::from_secs(7 * 86400),
            max_preserve_percent: 10,
            max_deletes_per_run: 50,
            dry_run: false,
            delete_manually_preserved: false,
        }
    }

    fn healthy(now: Timestamp) -> ConnectorGate {
        ConnectorGate {
            exists: true,
            connected: true,
            last_success: Some(now),
            stale_after: Duration::from_secs(600),
            deletions_allowed: true,
        }
    }

    const NOW: &str = "2026-01-03T00:00:00Z";

    #[test]
    fn each_state_and_reason_names_its_rule() {
        let now = at(NOW);
        let cases = [
            (
                State::Active,
                None,
                "Active while its directory account is enabled",
            ),
            (
                State::Preserved,
                Some(Reason::DisabledInDirectory),
                "the directory marks the account disabled",
            ),
            (
                State::Preserved,
                Some(Reason::Unmapped),
                "no mapping of connector corp matches it",
            ),
            (
                State::Preserved,
                Some(Reason::Manual),
                "by an admin (spec.preserve)",
            ),
            (
                State::Deleted,
                Some(Reason::RetentionExpired),
                "deleted at 2026-01-08T00:00:00Z: its retention",
            ),
        ];
        for (state, reason, says) in cases {
            let e = explain(
                &record(state, reason),
                Some(&policy()),
                Some(&healthy(now)),
                now,
            );
            assert!(e.rule.contains(says), "{state:?}/{reason:?}: {}", e.rule);
            assert_eq!(
                e.deletion_needs.is_empty(),
                state != State::Preserved,
                "{state:?}: {:?}",
                e.deletion_needs
            );
        }
    }

    #[test]
    fn manual_and_csv_users_are_left_to_admins() {
        let mut r = record(State::Active, None);
        r.origin = Origin::Csv;
        let e = explain(&r, None, None, at(NOW));
        assert!(
            e.rule.contains("a CSV import") && e.rule.contains("never"),
            "{}",
            e.rule
        );
        assert!(e.deletion_needs.is_empty());
    }

    #[test]
    fn a_preserved_user_shows_its_deadline_and_the_connector_gate() {
        let now = at(NOW);
        let mut r = record(State::Preserved, Some(Reason::DisabledInDirectory));
        r.delete_after_time = Some(at("2026-01-08T00:00:00Z"));
        let e = explain(&r, Some(&policy()), Some(&healthy(now)), now);
        let met: Vec<(&str, bool)> = e.deletion_needs.iter().map(|n| (n.what, n.met)).collect();
        assert_eq!(
            met,
            [
                ("deadline", false),
                ("connector", true),
                ("threshold", true)
            ]
        );
        assert!(
            e.deletion_needs[0].detail.contains("in 5d"),
            "{:?}",
            e.deletion_needs[0]
        );

        let frozen = ConnectorGate {
            deletions_allowed: false,
            ..healthy(now)
        };
        let later = at("2026-01-09T00:00:00Z");
        let e = explain(&r, Some(&policy()), Some(&frozen), later);
        assert!(e.deletion_needs[0].met, "the deadline has passed");
        assert!(!e.deletion_needs[1].met);
        assert!(
            e.deletion_needs[1]
                .detail
                .contains("deletionsAllowed: false"),
            "{:?}",
            e.deletion_needs[1]
        );
    }

    #[test]
    fn a_user_without_a_deadline_says_why_none_is_recorded() {
        let now = at(NOW);
        let manual = record(State::Preserved, Some(Reason::Manual));
        let e = explain(&manual, Some(&policy()), Some(&healthy(now)), now);
        assert!(
            e.deletion_needs[0]
                .detail
                .contains("deleteManuallyPreserved")
        );
        let off = Policy {
            auto_delete: false,
            ..policy()
        };
        let disabled = record(State::Preserved, Some(Reason::DisabledInDirectory));
        let e = explain(&disabled, Some(&off), Some(&healthy(now)), now);
        assert!(e.deletion_needs[0].detail.contains("autoDelete is off"));
        let e = explain(&disabled, None, None, now);
        assert!(!e.deletion_needs[1].met);
        assert!(
            e.deletion_needs[1]
                .detail
                .contains("no ConnectorHealth corp")
        );
    }

    #[test]
    fn a_held_tombstone_says_it_blocks_the_reimport() {
        let mut r = record(State::Deleted, Some(Reason::RetentionExpired));
        r.manual_preserve = true;
        let e = explain(&r, None, None, at(NOW));
        assert!(
            e.next.contains("not imported again until an admin clears"),
            "{}",
            e.next
        );
    }
}
