//! The lifecycle plan of one run of one mapping: store snapshot + directory
//! view + policy + now → the ordered transitions to apply (DESIGN sections 2, 3).
//!
//! Planning is pure and the same whether or not the run is a dry run. The
//! runner applies [`Plan::transitions`] in order; each transition carries the
//! whole record as it should be afterwards, so applying is a write of that
//! record (see [`crate::core::apply()`]).
//!
//! Choices where the design leaves room, made here once:
//! - `spec.preserve` (manual preserve) turns an Active user Preserved (Manual)
//!   and keeps any preserved user from being re-enabled, whatever its reason.
//!   Once an admin clears it, the user re-enables like any other preserved user
//!   when it is enabled and matched.
//! - Retention applies to every automatic preserve. A user an admin holds
//!   (`spec.preserve`, or reason Manual) is deleted only when the policy opts in
//!   (`deleteManuallyPreserved`), and its tombstone then keeps the hold: the same
//!   directory object is not imported again until an admin clears it (rule 5).
//! - Manual preserves are the admin's own decision: they do not count against
//!   the preserve threshold and are never held back by it.
//! - An update that would give a directory user the username or email of a
//!   Manual or CSV user is held back and reported, like the import would be.
//! - When this mapping takes a user over, the ownership change and the field
//!   refresh are one `Transfer`; a user handed to another mapping keeps its
//!   fields and state for that mapping's run to decide.
//! - Planning a zero `deleteAfter` preserves and deletes in the same run.
//! - A user deleted while its directory object still matches and is enabled
//!   returns, by rule 6, as a new record on the next run, unless an admin held it.

mod imports;
mod records;
mod registry;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use self::imports::ImportDecision;
use self::registry::Registry;
use super::gate::{ConnectorGate, GateRefusal};
use super::model::{
    DirectoryView, MappingContext, Origin, OtherClaims, Policy, ReadKind, State, UserRecord,
};
use super::safety::{Approval, ThresholdBreach, ThresholdVerdict, check_thresholds};

/// Everything one run's plan depends on, besides the clock.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Every record in the namespace. The planner picks out this connector's
    /// directory records, and the Manual and CSV records of any connector for
    /// collision checks.
    pub snapshot: &'a [UserRecord],
    pub view: &'a DirectoryView,
    pub mapping: &'a MappingContext,
    pub policy: &'a Policy,
    /// The answers to [`crate::core::claim_lookups_needed`].
    pub claims: &'a OtherClaims,
    pub gate: &'a ConnectorGate,
    /// The admin's approval of an earlier blocked run, if any.
    pub approval: Option<&'a Approval>,
}

/// What a transition does. The variants are listed in the order they apply
/// within a run: spec changes (renames included) before imports, so that a
/// reused name never meets its previous holder (rule 8); then re-enables,
/// preserves and deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum TransitionKind {
    /// Fields refreshed from the directory (rule 2).
    Update,
    /// Ownership moves to another mapping of the connector (rule 9); when it
    /// moves to this run's mapping, the fields are refreshed in the same write.
    Transfer { from: Option<String> },
    /// A new record (rule 1). `follows` names the tombstone of the same
    /// directory object when it returns after deletion (rule 6).
    Import { follows: Option<String> },
    /// Preserved → Active (rule 4).
    Reenable,
    /// Active → Preserved; the reason is on the record (rule 3).
    Preserve,
    /// Preserved → Deleted after retention (rule 5).
    Delete,
}

impl TransitionKind {
    /// A fixed label, for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            TransitionKind::Update => "update",
            TransitionKind::Transfer { .. } => "transfer",
            TransitionKind::Import { .. } => "import",
            TransitionKind::Reenable => "reenable",
            TransitionKind::Preserve => "preserve",
            TransitionKind::Delete => "delete",
        }
    }

    /// The order in which transitions apply: within one phase they are independent.
    pub fn phase(&self) -> u8 {
        match self {
            TransitionKind::Update | TransitionKind::Transfer { .. } => 0,
            TransitionKind::Import { .. } => 1,
            TransitionKind::Reenable => 2,
            TransitionKind::Preserve => 3,
            TransitionKind::Delete => 4,
        }
    }
}

/// One change to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub kind: TransitionKind,
    /// The whole record as it is after this transition (and the ones before it).
    pub record: UserRecord,
}

impl Transition {
    /// A preserve that sync decided by itself; these count against the
    /// thresholds. A Manual preserve is the admin's own decision and does not.
    pub fn is_automatic_preserve(&self) -> bool {
        self.kind == TransitionKind::Preserve
            && self
                .record
                .reason
                .is_some_and(|r| r.is_automatic_preserve())
    }
}

/// What the run did, in numbers (after anything held back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub imported: usize,
    pub updated: usize,
    /// This mapping's users in the view that need no write.
    pub unchanged: usize,
    pub preserved: usize,
    pub reenabled: usize,
    pub deleted: usize,
    pub transferred: usize,
    /// Collisions with Manual or CSV users.
    pub skipped: usize,
}

impl fmt::Display for PlanCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imported {}, updated {}, unchanged {}, preserved {}, re-enabled {}, deleted {}, transferred {}, skipped {}",
            self.imported,
            self.updated,
            self.unchanged,
            self.preserved,
            self.reenabled,
            self.deleted,
            self.transferred,
            self.skipped
        )
    }
}

/// Which value two users share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CollisionField {
    Username,
    Email,
    /// A Manual or CSV record of the same connector claims the same anchor.
    Anchor,
}

impl fmt::Display for CollisionField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CollisionField::Username => "username",
            CollisionField::Email => "email",
            CollisionField::Anchor => "anchor",
        })
    }
}

/// A directory user's value that a Manual or CSV user already has (rule 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collision {
    pub field: CollisionField,
    /// The directory's value.
    pub value: String,
    /// The Manual or CSV record that has it.
    pub with: String,
    pub with_origin: Origin,
}

/// Something the run did not do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    pub anchor: String,
    /// The existing directory record whose update was held back; `None` when
    /// the user was not imported.
    pub record: Option<String>,
    pub why: SkipCause,
}

/// Why a directory user was not imported, or its update held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SkipCause {
    /// A Manual or CSV user already has one of its values (rule 7).
    Collision(Collision),
    /// A Manual or CSV user claims the anchor of this existing directory user. The
    /// directory user is still kept in step; the other record is the admin's to fix.
    SharedAnchor(Collision),
    /// The directory object was deleted while an admin held it (`spec.preserve`
    /// stays on its tombstone): it is not imported again until an admin clears the
    /// tombstone's preserve (rule 5).
    HeldByAdmin { tombstone: String },
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.record, &self.why) {
            (Some(record), SkipCause::SharedAnchor(c)) => {
                return write!(
                    f,
                    "{} user {} claims the anchor {:?} of directory user {record}, which stays in sync; remove or fix {}",
                    c.with_origin, c.with, c.value, c.with
                );
            }
            (None, _) => write!(f, "directory user {} not imported", self.anchor)?,
            (Some(record), _) => write!(f, "update of {record} held back")?,
        }
        match &self.why {
            SkipCause::SharedAnchor(_) => Ok(()),
            SkipCause::Collision(c) => write!(
                f,
                ": its {} {:?} is already used by {} user {}",
                c.field, c.value, c.with_origin, c.with
            ),
            SkipCause::HeldByAdmin { tombstone } => write!(
                f,
                ": an admin preserved it before it was deleted as {tombstone}; clear spec.preserve on {tombstone} (usersync unpreserve {tombstone}) to let it be imported again"
            ),
        }
    }
}

/// Something worth an Event that is not a skip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Notice {
    /// A deleted directory object matched again and got a new record (rule 6).
    ReturnedAfterDeletion {
        anchor: String,
        /// The new record.
        record: String,
        /// The tombstone it follows; never revived.
        previous: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::ReturnedAfterDeletion {
                anchor,
                record,
                previous,
            } => write!(
                f,
                "directory user {anchor} returned after deletion: imported as {record}, following the deleted record {previous}"
            ),
        }
    }
}

/// Preserve and delete transitions the run held back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// A safety threshold stopped all automatic preserves and all deletes.
    pub threshold: Option<ThresholdBreach>,
    /// The connector gate stopped all deletes.
    pub gate: Option<GateRefusal>,
    /// What would have been applied otherwise, in order (for reports).
    pub withheld: Vec<Transition>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(threshold) = &self.threshold {
            parts.push(threshold.to_string());
        }
        if let Some(gate) = &self.gate {
            parts.push(format!("deletions blocked: {gate}"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Why a run failed without changing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum PlanFailure {
    #[error(
        "the {read} directory read was incomplete (not every page was read, a size or time limit was hit, or an error occurred); no user was changed"
    )]
    IncompleteRead { read: ReadKind },
}

/// The run's result as status reports it (`lastRun.result`, less DryRun,
/// which is the runner's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PlanOutcome {
    Succeeded,
    /// Some preserves or deletes were held back; the rest applies.
    Blocked,
    /// Nothing applies.
    Failed,
}

/// The plan of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// To apply in this order.
    pub transitions: Vec<Transition>,
    pub counts: PlanCounts,
    pub skips: Vec<Skip>,
    pub notices: Vec<Notice>,
    pub blocked: Option<Blocked>,
    /// The approved run whose approval let this run's preserves and deletes through.
    pub approved_run: Option<String>,
    pub failure: Option<PlanFailure>,
}

impl Plan {
    fn failed(failure: PlanFailure) -> Self {
        Plan {
            transitions: Vec::new(),
            counts: PlanCounts::default(),
            skips: Vec::new(),
            notices: Vec::new(),
            blocked: None,
            approved_run: None,
            failure: Some(failure),
        }
    }

    pub fn outcome(&self) -> PlanOutcome {
        if self.failure.is_some() {
            PlanOutcome::Failed
        } else if self.blocked.is_some() {
            PlanOutcome::Blocked
        } else {
            PlanOutcome::Succeeded
        }
    }
}

/// Plans one run. See the module docs and DESIGN sections 2 and 3 for the rules.
pub fn plan(input: &PlanInput<'_>, now: Timestamp) -> Plan {
    // A partial read changes nothing, not even what it did read: the rest of
    // the scope might say otherwise (DESIGN section 3).
    if !input.view.complete {
        return Plan::failed(PlanFailure::IncompleteRead {
            read: input.view.read,
        });
    }

    let mut registry = Registry::new(input.snapshot, &input.mapping.connector);
    let mut transitions = Vec::new();
    let mut skips = Vec::new();
    let mut notices = Vec::new();
    let mut unchanged = 0;

    for record in registry.live_records() {
        let planned = records::plan_record(record, input, &registry, now);
        unchanged += usize::from(planned.unchanged && planned.skip.is_none());
        transitions.extend(planned.transitions);
        skips.extend(planned.skip);
    }
    for entry in input.view.entries.values() {
        if registry.has_live(&entry.anchor) {
            continue;
        }
        match imports::plan_import(entry, input, &mut registry) {
            ImportDecision::None => {}
            ImportDecision::Import { transition, notice } => {
                transitions.push(*transition);
                notices.extend(notice);
            }
            ImportDecision::Skip(skip) => skips.push(skip),
        }
    }
    // Each record has at most one transition per phase, so this order keeps
    // every record's own sequence intact. No two transitions share a key, so
    // the in-place unstable sort orders them exactly as a stable one would,
    // without a buffer of half the plan.
    transitions.sort_unstable_by(|a, b| {
        (a.kind.phase(), &a.record.name).cmp(&(b.kind.phase(), &b.record.name))
    });

    let held = hold_back(input, transitions, now);
    let counts = count(&held.kept, skips.len(), unchanged);
    Plan {
        transitions: held.kept,
        counts,
        skips,
        notices,
        blocked: held.blocked,
        approved_run: held.approved_run,
        failure: None,
    }
}

struct HeldBack {
    kept: Vec<Transition>,
    blocked: Option<Blocked>,
    approved_run: Option<String>,
}

/// Applies the safety rules: thresholds hold back every automatic preserve and
/// every delete; the connector gate holds back every delete. Imports, updates,
/// transfers, re-enables and Manual preserves always go ahead.
fn hold_back(input: &PlanInput<'_>, mut transitions: Vec<Transition>, now: Timestamp) -> HeldBack {
    let preserves = transitions
        .iter()
        .filter(|t| t.is_automatic_preserve())
        .count();
    let deletes = transitions
        .iter()
        .filter(|t| t.kind == TransitionKind::Delete)
        .count();
    let active_before = input
        .snapshot
        .iter()
        .filter(|r| {
            r.is_owned_by(&input.mapping.connector, &input.mapping.name) && r.state == State::Active
        })
        .count();

    let (threshold, approved_run) = match check_thresholds(
        preserves,
        deletes,
        active_before,
        input.policy,
        input.approval,
    ) {
        ThresholdVerdict::Within => (None, None),
        ThresholdVerdict::Approved { run_id } => (None, Some(run_id)),
        ThresholdVerdict::Breached(breach) => (Some(breach), None),
    };
    let gate = if deletes > 0 {
        input.gate.deletions_permitted(now).err()
    } else {
        None
    };

    let withhold = |t: &mut Transition| match t.kind {
        TransitionKind::Delete => threshold.is_some() || gate.is_some(),
        TransitionKind::Preserve => threshold.is_some() && t.is_automatic_preserve(),
        _ => false,
    };
    // Taken out in place: a plan of a hundred thousand imports is not copied.
    let withheld: Vec<_> = transitions.extract_if(.., withhold).collect();
    let kept = transitions;
    let blocked = (threshold.is_some() || gate.is_some()).then_some(Blocked {
        threshold,
        gate,
        withheld,
    });
    HeldBack {
        kept,
        blocked,
        approved_run,
    }
}

fn count(transitions: &[Transition], skipped: usize, unchanged: usize) -> PlanCounts {
    PlanCounts {
        skipped,
        unchanged,
        ..tally(transitions)
    }
}

/// The transitions counted by kind (skipped and unchanged left at zero): what a run
/// reports for the transitions it applied.
pub fn tally(transitions: &[Transition]) -> PlanCounts {
    let mut counts = PlanCounts::default();
    for transition in transitions {
        let slot = match transition.kind {
            TransitionKind::Update => &mut counts.updated,
            TransitionKind::Transfer { .. } => &mut counts.transferred,
            TransitionKind::Import { .. } => &mut counts.imported,
            TransitionKind::Reenable => &mut counts.reenabled,
            TransitionKind::Preserve => &mut counts.preserved,
            TransitionKind::Delete => &mut counts.deleted,
        };
        *slot += 1;
    }
    counts
}
