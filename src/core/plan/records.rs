//! The rules for users the registry already has: ownership and transfer,
//! update, preserve, re-enable and delete (rules 2–5, 8 and 9).

use jiff::Timestamp;

use super::registry::Registry;
use super::{PlanInput, Skip, SkipCause, Transition, TransitionKind};
use crate::core::model::{Reason, State, UserRecord};
use crate::core::ownership::owner_with;
use crate::core::retention::retention_due;

/// What one run does to one existing record.
#[derive(Default)]
pub(super) struct RecordPlan {
    /// In the order they apply; each carries the record as it is after it.
    pub transitions: Vec<Transition>,
    pub skip: Option<Skip>,
    /// The record is this mapping's, in the view, and nothing changes.
    pub unchanged: bool,
}

impl RecordPlan {
    fn push(&mut self, kind: TransitionKind, record: &UserRecord) {
        self.transitions.push(Transition {
            kind,
            record: record.clone(),
        });
    }
}

/// Plans one live directory record of the run's connector.
pub(super) fn plan_record(
    record: &UserRecord,
    input: &PlanInput<'_>,
    registry: &Registry<'_>,
    now: Timestamp,
) -> RecordPlan {
    let mapping = input.mapping;
    let entry = input.view.entries.get(&record.anchor);
    let owned_here = record.mapping.as_deref() == Some(mapping.name.as_str());
    let mut plan = RecordPlan::default();
    if !owned_here && entry.is_none() {
        // Another mapping's user that this run did not see: not this run's business.
        return plan;
    }

    // Ownership first (rule 9): absence from an incremental view says nothing,
    // so there this mapping is assumed to match still.
    let this_matches = entry.is_some() || !input.view.says_unmatched(&record.anchor);
    let claims = input.claims.for_anchor(&record.anchor);
    let owner = owner_with((&mapping.name, mapping.priority), this_matches, claims);
    let mut current = record.clone();
    if let Some(owner) = owner.filter(|&owner| owner != mapping.name) {
        // Another mapping matches and wins: hand the user over as it is; its
        // fields and state are that mapping's run to decide.
        if record.mapping.as_deref() != Some(owner) {
            current.mapping = Some(owner.to_owned());
            plan.push(
                TransitionKind::Transfer {
                    from: record.mapping.clone(),
                },
                &current,
            );
        }
        return plan;
    }
    // The user is this mapping's from here on. `owner == None` means nothing
    // matches it any more: it is unmapped.
    let unmapped = owner.is_none();
    let shared = registry.anchor_collision(&record.anchor).map(|c| Skip {
        anchor: record.anchor.clone(),
        record: Some(record.name.clone()),
        why: SkipCause::SharedAnchor(c),
    });

    // Spec: the directory's fields (rule 2) and the ownership. One transition
    // per record, and only when something differs (no-op resyncs write nothing).
    if let Some(entry) = entry {
        let fields = entry.fields(mapping.profile.as_deref());
        if fields != current.fields {
            match registry.update_collision(&current.fields, &fields) {
                Some(collision) => {
                    plan.skip = Some(Skip {
                        anchor: record.anchor.clone(),
                        record: Some(record.name.clone()),
                        why: SkipCause::Collision(collision),
                    })
                }
                None => current.fields = fields,
            }
        }
    }
    if !owned_here {
        current.mapping = Some(mapping.name.clone());
        plan.push(
            TransitionKind::Transfer {
                from: record.mapping.clone(),
            },
            &current,
        );
    } else if current.fields != record.fields {
        plan.push(TransitionKind::Update, &current);
    }

    // Status: preserve or re-enable (rules 3 and 4).
    match current.state {
        State::Active => {
            let reason = if current.manual_preserve {
                Some(Reason::Manual)
            } else if entry.is_some_and(|e| !e.enabled) {
                Some(Reason::DisabledInDirectory)
            } else if unmapped && input.policy.auto_preserve_unmapped {
                Some(Reason::Unmapped)
            } else {
                None
            };
            if let Some(reason) = reason {
                current.state = State::Preserved;
                current.reason = Some(reason);
                current.preserved_at = Some(now);
                plan.push(TransitionKind::Preserve, &current);
            }
        }
        State::Preserved => {
            // `spec.preserve` holds a user preserved whatever the reason; once
            // an admin clears it, even a Manual preserve lifts like any other.
            if entry.is_some_and(|e| e.enabled) && !current.manual_preserve {
                current.state = State::Active;
                current.reason = None;
                current.preserved_at = None;
                plan.push(TransitionKind::Reenable, &current);
            }
        }
        State::Deleted => {}
    }

    // Delete (rule 5), judged on the record as this run leaves it, so that a
    // user re-enabled just now is not deleted and a zero retention deletes in
    // the same run that preserves.
    if retention_due(&current, input.policy, now) {
        current.state = State::Deleted;
        current.reason = Some(Reason::RetentionExpired);
        current.deleted_at = Some(now);
        plan.push(TransitionKind::Delete, &current);
    }

    plan.unchanged = entry.is_some() && plan.transitions.is_empty();
    // Reported whatever else this run does (a held-back update says more).
    plan.skip = plan.skip.or(shared);
    plan
}
