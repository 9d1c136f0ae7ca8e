//! The planner's inputs: the registry as the store holds it, what one run read
//! from the directory, and the resolved mapping and policy settings.
//!
//! Callers convert their resources into these types once, at the boundary, so
//! the rules below work on plain values and never on Kubernetes or LDAP types.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::attributes::Attributes;

/// Where a registry entry came from. Only `Directory` records are managed by
/// sync; the others belong to people (rule 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// Imported from a directory by a mapping.
    Directory,
    /// Created by an admin.
    Manual,
    /// Created by a CSV import.
    #[serde(rename = "CSV")]
    Csv,
}

impl Origin {
    /// Whether sync may change, preserve or delete a record of this origin.
    pub fn is_managed_by_sync(self) -> bool {
        self == Origin::Directory
    }
}

/// The API's spelling, as in `spec.origin`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Directory => "Directory",
            Origin::Manual => "Manual",
            Origin::Csv => "CSV",
        })
    }
}

/// The lifecycle state of a record (DESIGN section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    Active,
    Preserved,
    /// Final: a tombstone that never changes again (rule 6).
    Deleted,
}

/// Why a record is Preserved or Deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The directory says the account is disabled.
    DisabledInDirectory,
    /// No mapping of its connector matches it any more.
    Unmapped,
    /// An admin preserved it (`spec.preserve`).
    Manual,
    /// Deleted because its retention after preservation ran out.
    RetentionExpired,
}

/// The API's spelling, as in `status.state`.
impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Active => "Active",
            State::Preserved => "Preserved",
            State::Deleted => "Deleted",
        })
    }
}

/// The API's spelling, as in `status.reason`.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::DisabledInDirectory => "DisabledInDirectory",
            Reason::Unmapped => "Unmapped",
            Reason::Manual => "Manual",
            Reason::RetentionExpired => "RetentionExpired",
        })
    }
}

impl Reason {
    /// Preserves that sync made by itself and may therefore lift (rule 4).
    pub fn is_automatic_preserve(self) -> bool {
        matches!(self, Reason::DisabledInDirectory | Reason::Unmapped)
    }
}

/// The user-facing fields of a record. Every field a directory may lack is
/// optional, so an absent attribute is never confused with an empty one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFields {
    pub username: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    /// The owning mapping's profile label.
    pub profile: Option<String>,
    /// Extra attributes named by the mapping.
    pub attributes: Attributes,
}

/// One registry entry as the store has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The record's name in the store (see [`crate::core::record_name`]).
    pub name: String,
    pub origin: Origin,
    /// The connector the record belongs to.
    pub connector: String,
    /// The immutable directory identifier: the record's identity (rule 8).
    pub anchor: String,
    /// The mapping that owns the record; `None` when no mapping does.
    pub mapping: Option<String>,
    pub fields: UserFields,
    /// An admin's manual preserve (`spec.preserve`).
    pub manual_preserve: bool,
    pub state: State,
    pub reason: Option<Reason>,
    pub preserved_at: Option<Timestamp>,
    pub deleted_at: Option<Timestamp>,
    /// When the store last recorded that this preserved record becomes due for
    /// deletion (`status.deleteAfterTime`): what the connector-level retention pass
    /// goes by once no mapping owns the record any more.
    #[serde(default)]
    pub delete_after_time: Option<Timestamp>,
}

impl UserRecord {
    /// Whether the record still takes part in the lifecycle (is not a tombstone).
    pub fn is_live(&self) -> bool {
        self.state != State::Deleted
    }

    /// Whether this is a directory record of `connector` owned by `mapping`.
    pub fn is_owned_by(&self, connector: &str, mapping: &str) -> bool {
        self.origin == Origin::Directory
            && self.connector == connector
            && self.mapping.as_deref() == Some(mapping)
    }
}

/// The per-user projection a directory source yields for one mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub anchor: String,
    /// `false` when the directory marks the account disabled.
    pub enabled: bool,
    pub username: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub attributes: Attributes,
}

impl DirectoryEntry {
    /// The record fields this entry implies under a mapping with `profile`.
    pub fn fields(&self, profile: Option<&str>) -> UserFields {
        UserFields {
            username: self.username.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            user_principal_name: self.user_principal_name.clone(),
            profile: profile.map(str::to_owned),
            attributes: self.attributes.clone(),
        }
    }
}

/// How the directory was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadKind {
    /// The whole scope: absence from the view means "no longer matched".
    Full,
    /// Only changes since the last run: absence means nothing.
    Incremental,
}

impl fmt::Display for ReadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadKind::Full => "full",
            ReadKind::Incremental => "incremental",
        })
    }
}

/// What one run read from the directory for one mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryView {
    pub read: ReadKind,
    /// Every page was read, no size or time limit was hit and nothing failed.
    /// An incomplete view changes nothing (DESIGN section 3).
    pub complete: bool,
    /// The entries this mapping matched, by anchor.
    pub entries: BTreeMap<String, DirectoryEntry>,
    /// Incremental reads only: anchors the source reported as deleted or out of
    /// scope. They go through the unmapped rules. An anchor that is also in
    /// `entries` counts as present (the conservative reading). Ignored for full
    /// reads, where absence already says it.
    pub removed: Vec<String>,
}

impl DirectoryView {
    /// A complete full read of the mapping's scope.
    pub fn full(entries: impl IntoIterator<Item = DirectoryEntry>) -> Self {
        Self::full_keyed(by_anchor(entries))
    }

    /// A complete full read whose entries are already keyed by anchor, as the
    /// sources collect them (no second map is built).
    pub fn full_keyed(entries: BTreeMap<String, DirectoryEntry>) -> Self {
        debug_assert!(entries.iter().all(|(k, e)| *k == e.anchor));
        Self {
            read: ReadKind::Full,
            complete: true,
            entries,
            removed: Vec::new(),
        }
    }

    /// A complete incremental read: the changed entries and the removed anchors.
    pub fn incremental(
        entries: impl IntoIterator<Item = DirectoryEntry>,
        removed: impl IntoIterator<Item = String>,
    ) -> Self {
        Self::incremental_keyed(by_anchor(entries), removed)
    }

    /// [`Self::incremental`] with the entries already keyed by anchor.
    pub fn incremental_keyed(
        entries: BTreeMap<String, DirectoryEntry>,
        removed: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            read: ReadKind::Incremental,
            removed: removed.into_iter().collect(),
            ..Self::full_keyed(entries)
        }
    }

    /// The same view, marked as not read to the end.
    pub fn incomplete(self) -> Self {
        Self {
            complete: false,
            ..self
        }
    }

    /// Whether this view says `anchor` is no longer matched by the mapping.
    /// Only a complete view can say so; an incremental one only by an explicit
    /// removal, never by absence.
    pub fn says_unmatched(&self, anchor: &str) -> bool {
        if !self.complete || self.entries.contains_key(anchor) {
            return false;
        }
        match self.read {
            ReadKind::Full => true,
            ReadKind::Incremental => self.removed.iter().any(|a| a == anchor),
        }
    }
}

/// Entries keyed by anchor; of two with the same anchor, the later one.
fn by_anchor(
    entries: impl IntoIterator<Item = DirectoryEntry>,
) -> BTreeMap<String, DirectoryEntry> {
    entries.into_iter().map(|e| (e.anchor.clone(), e)).collect()
}

/// The mapping being synced, with inherited settings already resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingContext {
    pub name: String,
    /// The mapping's connector (`spec.connectorRef`).
    pub connector: String,
    /// Lower numbers win when several mappings of a connector match a user.
    pub priority: i32,
    pub profile: Option<String>,
    /// The mapping's `autoImport`, or the policy's when the mapping leaves it unset.
    pub auto_import: bool,
}

/// The lifecycle rules of the mapping's policy, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub auto_preserve_unmapped: bool,
    pub auto_delete: bool,
    /// Measured from the moment a user was preserved.
    pub delete_after: Duration,
    /// 0–100; larger values act as 100.
    pub max_preserve_percent: u8,
    pub max_deletes_per_run: u32,
    /// The runner's concern: the plan is the same either way.
    pub dry_run: bool,
    /// Whether retention also deletes users an admin preserved by hand. Off by
    /// default: a manual preserve is the admin's hold (rule 5).
    #[serde(default)]
    pub delete_manually_preserved: bool,
}

/// Another mapping of the same connector that matches an anchor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    pub mapping: String,
    pub priority: i32,
}

/// For anchors the runner looked up in the connector's other mappings: which of
/// them match (rule 9). Anchors not looked up are absent, which reads as "no
/// other mapping is known to match".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherClaims {
    by_anchor: BTreeMap<String, Vec<Claim>>,
}

impl OtherClaims {
    /// No lookups were made, or none found a match.
    pub fn none() -> Self {
        Self::default()
    }

    /// Records that `mapping` (with `priority`) matches `anchor`.
    pub fn insert(&mut self, anchor: impl Into<String>, mapping: impl Into<String>, priority: i32) {
        let claim = Claim {
            mapping: mapping.into(),
            priority,
        };
        let claims = self.by_anchor.entry(anchor.into()).or_default();
        if !claims.contains(&claim) {
            claims.push(claim);
        }
    }

    /// Builder form of [`OtherClaims::insert`].
    pub fn with(
        mut self,
        anchor: impl Into<String>,
        mapping: impl Into<String>,
        priority: i32,
    ) -> Self {
        self.insert(anchor, mapping, priority);
        self
    }

    /// The other mappings known to match `anchor`.
    pub fn for_anchor(&self, anchor: &str) -> &[Claim] {
        self.by_anchor.get(anchor).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_serde_spell_the_api_alike() {
        let spelled = |v: &dyn erased::Spelled| (v.display(), v.json());
        for (display, json) in [
            spelled(&Origin::Directory),
            spelled(&Origin::Manual),
            spelled(&Origin::Csv),
            spelled(&State::Active),
            spelled(&State::Preserved),
            spelled(&State::Deleted),
            spelled(&Reason::DisabledInDirectory),
            spelled(&Reason::Unmapped),
            spelled(&Reason::Manual),
            spelled(&Reason::RetentionExpired),
        ] {
            assert_eq!(format!("\"{display}\""), json);
        }
        assert_eq!(Origin::Csv.to_string(), "CSV");
    }

    mod erased {
        pub trait Spelled {
            fn display(&self) -> String;
            fn json(&self) -> String;
        }
        impl<T: std::fmt::Display + serde::Serialize> Spelled for T {
            fn display(&self) -> String {
                self.to_string()
            }
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }

    #[test]
    fn only_a_complete_view_says_unmatched() {
        let full = DirectoryView::full([]);
        assert!(full.says_unmatched("a"));
        assert!(!full.clone().incomplete().says_unmatched("a"));
        let incremental = DirectoryView::incremental([], ["gone".to_owned()]);
        assert!(incremental.says_unmatched("gone"));
        assert!(!incremental.says_unmatched("quiet"));
        assert!(!incremental.incomplete().says_unmatched("gone"));
    }
}
