//! One test per rule of DESIGN sections 2 and 3, named after the rule.

mod concurrency;
mod identity;
mod lifecycle;
mod ownership;
mod people;
mod reads;
mod safety;

use std::time::Duration;

use super::*;
use crate::core::gate::ConnectorGate;
use crate::core::model::{DirectoryEntry, Reason, UserFields};
use crate::core::naming::record_name;
use crate::core::testkit::*;

/// `(kind, record name)` of every transition, in order.
fn steps(plan: &Plan) -> Vec<(&'static str, String)> {
    plan.transitions
        .iter()
        .map(|t| (t.kind.label(), t.record.name.clone()))
        .collect()
}

/// The same, ignoring order (for transitions of one phase, ordered by name).
fn step_set(plan: &Plan) -> std::collections::BTreeSet<(&'static str, String)> {
    steps(plan).into_iter().collect()
}

fn step(kind: &'static str, anchor: &str) -> (&'static str, String) {
    (kind, name_of(anchor))
}

fn only(plan: &Plan) -> &Transition {
    assert_eq!(plan.transitions.len(), 1, "{:#?}", plan.transitions);
    &plan.transitions[0]
}

fn renamed(anchor: &str, username: &str) -> DirectoryEntry {
    DirectoryEntry {
        username: Some(username.into()),
        ..entry(anchor)
    }
}

fn with_username(mut record: UserRecord, username: &str) -> UserRecord {
    record.fields.username = Some(username.into());
    record
}

fn steps_of(transitions: &[Transition]) -> Vec<(&'static str, String)> {
    transitions
        .iter()
        .map(|t| (t.kind.label(), t.record.name.clone()))
        .collect()
}
