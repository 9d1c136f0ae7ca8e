//! "No stale write" (DESIGN section 3): runs of different mappings plan from their
//! own snapshots and may overlap. Against a store whose writes are conditional on
//! the version each plan saw, and with conflicted users planned again, every
//! interleaving ends as some order of the runs: the lowest `priority` owns a user,
//! and a tombstone is never revived.

use std::collections::BTreeMap;

use super::*;

/// A store that writes a transition only when its record is as the plan saw it:
/// an import only where no record exists, anything else only at the seen version.
#[derive(Default)]
struct ConditionalStore {
    records: BTreeMap<String, (u64, UserRecord)>,
}

/// What one run read: the records and the version of each.
struct Read {
    records: Vec<UserRecord>,
    versions: BTreeMap<String, u64>,
}

impl ConditionalStore {
    fn with(records: Vec<UserRecord>) -> Self {
        Self {
            records: records
                .into_iter()
                .map(|r| (r.name.clone(), (1, r)))
                .collect(),
        }
    }

    fn read(&self) -> Read {
        Read {
            records: self.records.values().map(|(_, r)| r.clone()).collect(),
            versions: self
                .records
                .iter()
                .map(|(name, (v, _))| (name.clone(), *v))
                .collect(),
        }
    }

    /// Apply `transitions` conditionally; the names whose write did not land.
    fn apply(&mut self, transitions: &[Transition], read: &mut Read) -> Vec<String> {
        let mut conflicts = Vec::new();
        for t in transitions {
            let name = &t.record.name;
            if conflicts.contains(name) {
                continue;
            }
            let current = self.records.get(name).map(|(v, _)| *v);
            let expected = read.versions.get(name).copied();
            let lands = match t.kind {
                TransitionKind::Import { .. } => current.is_none(),
                _ => current.is_some() && current == expected,
            };
            if lands {
                let version = current.unwrap_or(0) + 1;
                self.records
                    .insert(name.clone(), (version, t.record.clone()));
                read.versions.insert(name.clone(), version);
            } else {
                conflicts.push(name.clone());
            }
        }
        conflicts
    }
}

/// A mapping of the connector: its name, priority and what its scope holds.
#[derive(Clone)]
struct Run {
    name: &'static str,
    priority: i32,
    view: DirectoryView,
    /// The other mappings' claims on this run's unmatched users (the targeted lookup).
    claims: OtherClaims,
}

impl Run {
    fn plan(&self, snapshot: &[UserRecord]) -> Plan {
        let mut s = Scenario::new(snapshot.to_vec(), self.view.clone());
        s.mapping = MappingContext {
            name: self.name.into(),
            priority: self.priority,
            ..mapping()
        };
        s.claims = self.claims.clone();
        s.plan()
    }

    /// Apply `plan` (made from `read`); plan the conflicted users (directory
    /// objects, by anchor) again from what the store holds now, as the controller
    /// does (up to three times).
    fn finish(&self, store: &mut ConditionalStore, plan: &Plan, mut read: Read) {
        let mut transitions = plan.transitions.clone();
        let mut conflicted = store.apply(&transitions, &mut read);
        for _ in 0..3 {
            if conflicted.is_empty() {
                return;
            }
            let anchors: Vec<String> = transitions
                .iter()
                .filter(|t| conflicted.contains(&t.record.name))
                .map(|t| t.record.anchor.clone())
                .collect();
            read = store.read();
            transitions = self
                .plan(&read.records)
                .transitions
                .into_iter()
                .filter(|t| anchors.contains(&t.record.anchor))
                .collect();
            conflicted = store.apply(&transitions, &mut read);
        }
        assert!(conflicted.is_empty(), "still conflicting: {conflicted:?}");
    }
}

/// Both orders in which two runs that read the same snapshot can land.
fn both_orders(
    start: Vec<UserRecord>,
    a: &Run,
    b: &Run,
    check: impl Fn(&BTreeMap<String, (u64, UserRecord)>),
) {
    for (first, second) in [(a, b), (b, a)] {
        let mut store = ConditionalStore::with(start.clone());
        let (read_first, read_second) = (store.read(), store.read());
        let plan_first = first.plan(&read_first.records);
        let plan_second = second.plan(&read_second.records);
        first.finish(&mut store, &plan_first, read_first);
        second.finish(&mut store, &plan_second, read_second);
        check(&store.records);
    }
}

fn two_mappings_matching_a() -> (Run, Run) {
    let east = Run {
        name: "east",
        priority: 10,
        view: DirectoryView::full([entry("a")]),
        claims: OtherClaims::none().with("a", "west", 20),
    };
    let west = Run {
        name: "west",
        priority: 20,
        view: DirectoryView::full([entry("a")]),
        claims: OtherClaims::none().with("a", "east", 10),
    };
    (east, west)
}

#[test]
fn overlapping_first_runs_leave_the_user_with_the_lowest_priority() {
    let (east, west) = two_mappings_matching_a();
    both_orders(vec![], &east, &west, |records| {
        let owners: Vec<_> = records
            .values()
            .map(|(_, r)| (r.mapping.as_deref(), r.state))
            .collect();
        assert_eq!(owners, [(Some("east"), State::Active)], "{records:#?}");
    });
}

#[test]
fn a_stale_transfer_never_lands_on_a_record_another_run_moved() {
    // west owns a; east (a better priority) now matches it too.
    let (east, west) = two_mappings_matching_a();
    both_orders(vec![active("a", "west")], &east, &west, |records| {
        let (_, r) = &records[&name_of("a")];
        assert_eq!(
            (r.mapping.as_deref(), r.state),
            (Some("east"), State::Active)
        );
    });
}

#[test]
fn a_tombstone_another_run_made_is_never_revived() {
    // a is preserved under west and due for deletion; east now matches it again.
    let due = t(-46);
    let east = Run {
        name: "east",
        priority: 10,
        view: DirectoryView::full([entry("a")]),
        claims: OtherClaims::none(),
    };
    let west = Run {
        name: "west",
        priority: 20,
        view: DirectoryView::full([]),
        claims: OtherClaims::none(),
    };
    let start = vec![preserved("a", "west", Reason::Unmapped, due)];
    for (first, second) in [(&west, &east), (&east, &west)] {
        let mut store = ConditionalStore::with(start.clone());
        let (read_first, read_second) = (store.read(), store.read());
        let plan_first = first.plan(&read_first.records);
        let plan_second = second.plan(&read_second.records);
        first.finish(&mut store, &plan_first, read_first);
        second.finish(&mut store, &plan_second, read_second);
        let deleted: Vec<_> = store
            .records
            .values()
            .filter(|(_, r)| r.state == State::Deleted)
            .collect();
        let live: Vec<_> = store
            .records
            .values()
            .filter(|(_, r)| r.state != State::Deleted)
            .map(|(_, r)| r)
            .collect();
        // Whichever lands first decides between "taken over" and "deleted, then
        // imported anew"; a deleted record never becomes live again.
        for (_, tombstone) in &deleted {
            assert_eq!(tombstone.name, name_of("a"), "{:#?}", store.records);
        }
        assert_eq!(live.len(), 1, "{:#?}", store.records);
        assert_eq!(live[0].mapping.as_deref(), Some("east"));
        if !deleted.is_empty() {
            assert_ne!(live[0].name, name_of("a"), "the tombstone was revived");
        }
    }
}

#[test]
fn without_conditional_writes_a_stale_plan_revives_a_tombstone() {
    // The race of the test above against a store that writes blindly: west deletes
    // a, then east's plan, made before that, takes over and re-enables the record.
    // This is what the conditions prevent.
    let east = Run {
        name: "east",
        priority: 10,
        view: DirectoryView::full([entry("a")]),
        claims: OtherClaims::none(),
    };
    let west = Run {
        name: "west",
        priority: 20,
        view: DirectoryView::full([]),
        claims: OtherClaims::none(),
    };
    let snapshot = vec![preserved("a", "west", Reason::Unmapped, t(-46))];
    let plan_west = west.plan(&snapshot);
    let plan_east = east.plan(&snapshot);
    assert!(
        plan_west
            .transitions
            .iter()
            .any(|t| t.kind == TransitionKind::Delete)
    );
    let after = crate::core::apply(&plan_east, &crate::core::apply(&plan_west, &snapshot));
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].name.as_str(), after[0].state),
        (name_of("a").as_str(), State::Active),
        "the blind store revived the tombstone"
    );
}
