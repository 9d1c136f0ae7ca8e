//! Builders for the core's tests: one connector, one mapping, and users whose
//! fields are derived from their anchor so that a record and its directory
//! entry agree unless a test makes them differ.

use std::time::Duration;

use jiff::Timestamp;

use super::gate::ConnectorGate;
use super::model::{
    DirectoryEntry, DirectoryView, MappingContext, Origin, OtherClaims, Policy, Reason, State,
    UserFields, UserRecord,
};
use super::naming::record_name;
use super::plan::{Plan, PlanInput, plan};
use super::safety::Approval;

pub const CONNECTOR: &str = "corp-ad";
pub const MAPPING: &str = "staff";
pub const PROFILE: &str = "engineering";
pub const DAY: Duration = Duration::from_secs(86_400);

/// `days` days after 2025-01-01T00:00:00Z.
pub fn t(days: i64) -> Timestamp {
    Timestamp::from_second(1_735_689_600 + days * 86_400).unwrap()
}

/// The default "now" of the tests: day 100.
pub fn now() -> Timestamp {
    t(100)
}

pub fn mapping() -> MappingContext {
    MappingContext {
        name: MAPPING.into(),
        connector: CONNECTOR.into(),
        priority: 100,
        profile: Some(PROFILE.into()),
        auto_import: true,
    }
}

/// The policy defaults of DESIGN section 1.
pub fn policy() -> Policy {
    Policy {
        auto_preserve_unmapped: true,
        auto_delete: true,
        delete_after: 45 * DAY,
        max_preserve_percent: 10,
        max_deletes_per_run: 500,
        dry_run: false,
        delete_manually_preserved: false,
    }
}

/// A connector that passes the gate at [`now`].
pub fn healthy_gate() -> ConnectorGate {
    ConnectorGate {
        exists: true,
        connected: true,
        last_success: Some(now() - Duration::from_secs(60)),
        stale_after: Duration::from_secs(300),
        deletions_allowed: true,
    }
}

/// An enabled directory entry whose fields derive from its anchor.
pub fn entry(anchor: &str) -> DirectoryEntry {
    DirectoryEntry {
        anchor: anchor.into(),
        enabled: true,
        username: Some(anchor.into()),
        email: Some(format!("{anchor}@corp.example")),
        display_name: Some(format!("User {anchor}")),
        user_principal_name: Some(format!("{anchor}@corp.example")),
        attributes: [("department".to_owned(), "R&D".to_owned())].into(),
    }
}

pub fn disabled(anchor: &str) -> DirectoryEntry {
    DirectoryEntry {
        enabled: false,
        ..entry(anchor)
    }
}

/// The name the planner gives the first record of `anchor`.
pub fn name_of(anchor: &str) -> String {
    record_name(CONNECTOR, anchor, 1)
}

/// An Active directory record matching [`entry`] under `mapping`.
pub fn active(anchor: &str, mapping: &str) -> UserRecord {
    UserRecord {
        name: name_of(anchor),
        origin: Origin::Directory,
        connector: CONNECTOR.into(),
        anchor: anchor.into(),
        mapping: Some(mapping.into()),
        fields: entry(anchor).fields(Some(PROFILE)),
        manual_preserve: false,
        state: State::Active,
        reason: None,
        preserved_at: None,
        deleted_at: None,
        delete_after_time: None,
    }
}

pub fn preserved(anchor: &str, mapping: &str, reason: Reason, at: Timestamp) -> UserRecord {
    UserRecord {
        state: State::Preserved,
        reason: Some(reason),
        preserved_at: Some(at),
        ..active(anchor, mapping)
    }
}

/// A tombstone: preserved at `at - 45d`, deleted at `at`.
pub fn deleted(anchor: &str, mapping: &str, at: Timestamp) -> UserRecord {
    UserRecord {
        state: State::Deleted,
        reason: Some(Reason::RetentionExpired),
        preserved_at: Some(at - 45 * DAY),
        deleted_at: Some(at),
        ..active(anchor, mapping)
    }
}

fn people_record(origin: Origin, anchor: &str, username: &str, email: &str) -> UserRecord {
    UserRecord {
        name: format!("{}-{anchor}", format!("{origin:?}").to_lowercase()),
        origin,
        connector: CONNECTOR.into(),
        anchor: anchor.into(),
        mapping: None,
        fields: UserFields {
            username: Some(username.into()),
            email: Some(email.into()),
            ..UserFields::default()
        },
        manual_preserve: false,
        state: State::Active,
        reason: None,
        preserved_at: None,
        deleted_at: None,
        delete_after_time: None,
    }
}

pub fn manual_record(anchor: &str, username: &str, email: &str) -> UserRecord {
    people_record(Origin::Manual, anchor, username, email)
}

pub fn csv_record(anchor: &str, username: &str, email: &str) -> UserRecord {
    people_record(Origin::Csv, anchor, username, email)
}

/// One run's inputs, with lenient thresholds (100%) and a healthy connector
/// unless a test says otherwise.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub snapshot: Vec<UserRecord>,
    pub view: DirectoryView,
    pub mapping: MappingContext,
    pub policy: Policy,
    pub claims: OtherClaims,
    pub gate: ConnectorGate,
    pub approval: Option<Approval>,
    pub now: Timestamp,
}

impl Scenario {
    pub fn new(snapshot: Vec<UserRecord>, view: DirectoryView) -> Self {
        Scenario {
            snapshot,
            view,
            mapping: mapping(),
            policy: Policy {
                max_preserve_percent: 100,
                ..policy()
            },
            claims: OtherClaims::none(),
            gate: healthy_gate(),
            approval: None,
            now: now(),
        }
    }

    pub fn input(&self) -> PlanInput<'_> {
        PlanInput {
            snapshot: &self.snapshot,
            view: &self.view,
            mapping: &self.mapping,
            policy: &self.policy,
            claims: &self.claims,
            gate: &self.gate,
            approval: self.approval.as_ref(),
        }
    }

    pub fn plan(&self) -> Plan {
        plan(&self.input(), self.now)
    }

    /// The same run against the snapshot `plan` leaves behind.
    pub fn after(&self, plan: &Plan) -> Scenario {
        Scenario {
            snapshot: super::apply::apply(plan, &self.snapshot),
            ..self.clone()
        }
    }
}
