//! Applying a plan to a snapshot, in memory.
//!
//! The runner uses it to show what a dry run would leave behind; the tests use
//! it to check that planning the result again finds nothing left to do.

use super::model::UserRecord;
use super::plan::Plan;

/// The snapshot after the plan's transitions, in order: each transition's
/// record replaces the record of the same name, or is added when new. Records
/// keep their snapshot order; new ones follow in plan order.
pub fn apply(plan: &Plan, snapshot: &[UserRecord]) -> Vec<UserRecord> {
    let mut records = snapshot.to_vec();
    for transition in &plan.transitions {
        let after = &transition.record;
        match records.iter_mut().find(|r| r.name == after.name) {
            Some(existing) => *existing = after.clone(),
            None => records.push(after.clone()),
        }
    }
    records
}
