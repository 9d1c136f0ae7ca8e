//! The store snapshot, indexed the ways the planner asks about it: the live
//! record of an anchor, its tombstones, free names, and the Manual/CSV users a
//! directory user must not collide with.

use std::collections::{BTreeMap, BTreeSet};

use super::{Collision, CollisionField};
use crate::core::model::{UserFields, UserRecord};
use crate::core::naming::record_name;

pub(super) struct Registry<'a> {
    connector: &'a str,
    /// The live directory record per anchor of this connector. Should the store
    /// ever hold two, the first by name is the one the run works with and the
    /// other is left alone, so that repeated runs agree on which.
    live: BTreeMap<&'a str, &'a UserRecord>,
    /// Deleted directory records of this connector, per anchor.
    tombstones: BTreeMap<&'a str, Vec<&'a UserRecord>>,
    /// Records of any connector that sync never touches and must not collide with.
    protected: Vec<&'a UserRecord>,
    /// Every name in use, including names this run has handed out.
    taken: BTreeSet<String>,
}

impl<'a> Registry<'a> {
    pub(super) fn new(snapshot: &'a [UserRecord], connector: &'a str) -> Self {
        let mut sorted: Vec<&UserRecord> = snapshot.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut registry = Registry {
            connector,
            live: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            protected: Vec::new(),
            taken: snapshot.iter().map(|r| r.name.clone()).collect(),
        };
        for record in sorted {
            if !record.origin.is_managed_by_sync() {
                if record.is_live() {
                    registry.protected.push(record);
                }
            } else if record.connector == connector {
                if record.is_live() {
                    registry.live.entry(&record.anchor).or_insert(record);
                } else {
                    registry
                        .tombstones
                        .entry(&record.anchor)
                        .or_default()
                        .push(record);
                }
            }
        }
        registry
    }

    /// The live directory records of this connector, in name order.
    pub(super) fn live_records(&self) -> Vec<&'a UserRecord> {
        let mut records: Vec<_> = self.live.values().copied().collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        records
    }

    pub(super) fn has_live(&self, anchor: &str) -> bool {
        self.live.contains_key(anchor)
    }

    /// The most recent tombstone of `anchor`: the record a returning user follows.
    pub(super) fn latest_tombstone(&self, anchor: &str) -> Option<&'a UserRecord> {
        self.tombstones
            .get(anchor)?
            .iter()
            .copied()
            .max_by(|a, b| (a.deleted_at, &a.name).cmp(&(b.deleted_at, &b.name)))
    }

    /// A name for a new record of `anchor` that no record uses, and reserves it.
    /// Tombstones keep their names, so a user returning after deletion gets
    /// the next free generation: `-g2`, then `-g3`.
    pub(super) fn claim_new_name(&mut self, anchor: &str) -> String {
        let mut generation = 1u32;
        loop {
            let name = record_name(self.connector, anchor, generation);
            if self.taken.insert(name.clone()) {
                return name;
            }
            generation = generation.saturating_add(1);
        }
    }

    /// Why a new directory user may not be imported next to the Manual and CSV
    /// users (rule 7): same anchor on this connector, same username or same
    /// email, compared without case.
    pub(super) fn import_collision(&self, anchor: &str, fields: &UserFields) -> Option<Collision> {
        if let Some(shared) = self.anchor_collision(anchor) {
            return Some(shared);
        }
        self.field_collision(CollisionField::Username, fields.username.as_deref())
            .or_else(|| self.field_collision(CollisionField::Email, fields.email.as_deref()))
    }

    /// A Manual or CSV record of this connector that claims `anchor`, the identity
    /// of a directory user (rule 8): reported, never merged.
    pub(super) fn anchor_collision(&self, anchor: &str) -> Option<Collision> {
        self.protected
            .iter()
            .find(|r| r.connector == self.connector && r.anchor == anchor)
            .map(|other| collision(CollisionField::Anchor, anchor, other))
    }

    /// Whether refreshing `old` to `new` would give a directory user the
    /// username or email of a Manual or CSV user. Only values the update
    /// changes count: a clash that already exists is not made worse by holding
    /// back unrelated changes.
    pub(super) fn update_collision(&self, old: &UserFields, new: &UserFields) -> Option<Collision> {
        let changed = |old: &Option<String>, new: &Option<String>| -> bool {
            normalized(old.as_deref()) != normalized(new.as_deref())
        };
        let username = changed(&old.username, &new.username)
            .then(|| self.field_collision(CollisionField::Username, new.username.as_deref()))
            .flatten();
        username.or_else(|| {
            changed(&old.email, &new.email)
                .then(|| self.field_collision(CollisionField::Email, new.email.as_deref()))
                .flatten()
        })
    }

    fn field_collision(&self, field: CollisionField, value: Option<&str>) -> Option<Collision> {
        let wanted = normalized(value)?;
        self.protected
            .iter()
            .find(|other| {
                let theirs = match field {
                    CollisionField::Username => other.fields.username.as_deref(),
                    CollisionField::Email => other.fields.email.as_deref(),
                    CollisionField::Anchor => Some(other.anchor.as_str()),
                };
                normalized(theirs).as_ref() == Some(&wanted)
            })
            .map(|other| collision(field, value.unwrap_or_default(), other))
    }
}

/// Usernames and emails compare without case; an empty value is no value.
fn normalized(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_lowercase)
}

fn collision(field: CollisionField, value: &str, other: &UserRecord) -> Collision {
    Collision {
        field,
        value: value.to_owned(),
        with: other.name.clone(),
        with_origin: other.origin,
    }
}
