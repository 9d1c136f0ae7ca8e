//! The rule for directory users the registry does not have yet (rules 1, 6, 7).

use super::registry::Registry;
use super::{Notice, PlanInput, Skip, SkipCause, Transition, TransitionKind};
use crate::core::model::{DirectoryEntry, Origin, State, UserRecord};
use crate::core::ownership::owner_with;

/// What one run does about one entry that has no live record.
pub(super) enum ImportDecision {
    /// Nothing: disabled, autoImport off, or another mapping owns it.
    None,
    Import {
        transition: Box<Transition>,
        /// Set when the user returns after deletion.
        notice: Option<Notice>,
    },
    /// Not imported: it would collide with a Manual or CSV user, or an admin's
    /// preserve holds it.
    Skip(Skip),
}

/// Decides about `entry`, which has no live record in the registry.
pub(super) fn plan_import(
    entry: &DirectoryEntry,
    input: &PlanInput<'_>,
    registry: &mut Registry<'_>,
) -> ImportDecision {
    let mapping = input.mapping;
    if !entry.enabled || !mapping.auto_import {
        return ImportDecision::None;
    }
    // When a better mapping is known to match, it imports the user in its run.
    let claims = input.claims.for_anchor(&entry.anchor);
    if owner_with((&mapping.name, mapping.priority), true, claims) != Some(mapping.name.as_str()) {
        return ImportDecision::None;
    }
    let fields = entry.fields(mapping.profile.as_deref());
    if let Some(collision) = registry.import_collision(&entry.anchor, &fields) {
        return ImportDecision::Skip(Skip {
            anchor: entry.anchor.clone(),
            record: None,
            why: SkipCause::Collision(collision),
        });
    }
    // A tombstone is never revived (rule 6): the returning user gets a new
    // record with the next generation, and the plan says which one it follows.
    let tombstone = registry.latest_tombstone(&entry.anchor);
    // An admin's preserve never turns into an Active record by sync: a tombstone
    // that still carries it holds the directory object back (rule 5).
    if let Some(held) = tombstone.filter(|t| t.manual_preserve) {
        return ImportDecision::Skip(Skip {
            anchor: entry.anchor.clone(),
            record: None,
            why: SkipCause::HeldByAdmin {
                tombstone: held.name.clone(),
            },
        });
    }
    let follows = tombstone.map(|r| r.name.clone());
    let record = UserRecord {
        name: registry.claim_new_name(&entry.anchor),
        origin: Origin::Directory,
        connector: mapping.connector.clone(),
        anchor: entry.anchor.clone(),
        mapping: Some(mapping.name.clone()),
        fields,
        manual_preserve: false,
        state: State::Active,
        reason: None,
        preserved_at: None,
        deleted_at: None,
        delete_after_time: None,
    };
    let notice = follows
        .clone()
        .map(|previous| Notice::ReturnedAfterDeletion {
            anchor: entry.anchor.clone(),
            record: record.name.clone(),
            previous,
        });
    ImportDecision::Import {
        transition: Box::new(Transition {
            kind: TransitionKind::Import { follows },
            record,
        }),
        notice,
    }
}
