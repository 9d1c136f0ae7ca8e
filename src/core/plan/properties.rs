//! Invariants of the planner over random registries and directory views.
//!
//! The generators draw from small pools of anchors, names and mappings so that
//! the interesting coincidences — a returning anchor, a username a Manual user
//! has, a user two mappings match — happen often.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::core::gate::ConnectorGate;
use crate::core::model::{DirectoryEntry, Reason, UserFields};
use crate::core::naming::record_name;
use crate::core::retention::retention_due;
use crate::core::safety::allowed_preserves;
use crate::core::testkit::*;

const ANCHORS: [&str; 6] = [
    "a1",
    "a2",
    "a3",
    "a4",
    "00000000-0000-0000-0000-0000000000a5",
    "a6",
];
const MAPPINGS: [&str; 3] = [MAPPING, "sales", "ops"];
const USERNAMES: [&str; 4] = ["alice", "bob", "Alice", "carol"];

fn anchor() -> impl Strategy<Value = String> {
    proptest::sample::select(&ANCHORS[..]).prop_map(str::to_owned)
}

fn optional_username() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(&USERNAMES[..]).prop_map(str::to_owned))
}

fn day() -> impl Strategy<Value = Timestamp> {
    (0i64..=100).prop_map(t)
}

/// Directory fields: usually exactly what [`entry`] derives (so many records
/// are unchanged), sometimes a different username or display name.
fn directory_entry() -> impl Strategy<Value = DirectoryEntry> {
    (
        anchor(),
        any::<bool>(),
        optional_username(),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(|(anchor, enabled, username, renamed, variant)| {
            let mut e = entry(&anchor);
            e.enabled = enabled || variant == 0;
            if renamed {
                e.username = username;
            }
            if variant == 3 {
                e.display_name = Some("Changed".into());
            }
            e
        })
}

fn view() -> impl Strategy<Value = DirectoryView> {
    (
        proptest::collection::vec(directory_entry(), 0..6),
        proptest::collection::vec(anchor(), 0..3),
        any::<bool>(),
        prop_oneof![9 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(entries, removed, incremental, complete)| {
            let mut view = if incremental {
                DirectoryView::incremental(entries, removed)
            } else {
                DirectoryView::full(entries)
            };
            view.complete = complete;
            view
        })
}

fn origin() -> impl Strategy<Value = Origin> {
    prop_oneof![6 => Just(Origin::Directory), 1 => Just(Origin::Manual), 1 => Just(Origin::Csv)]
}

fn lifecycle() -> impl Strategy<Value = (State, Option<Reason>)> {
    prop_oneof![
        3 => Just((State::Active, None)),
        1 => Just((State::Preserved, Some(Reason::DisabledInDirectory))),
        1 => Just((State::Preserved, Some(Reason::Unmapped))),
        1 => Just((State::Preserved, Some(Reason::Manual))),
        1 => Just((State::Deleted, Some(Reason::RetentionExpired))),
    ]
}

fn record() -> impl Strategy<Value = UserRecord> {
    (
        (
            origin(),
            prop_oneof![5 => Just(CONNECTOR), 1 => Just("other-ldap")],
            anchor(),
            1u32..3,
        ),
        proptest::option::weighted(0.9, proptest::sample::select(&MAPPINGS[..])),
        (optional_username(), any::<bool>(), any::<bool>()),
        lifecycle(),
        (day(), day(), any::<bool>()),
    )
        .prop_map(
            |(
                (origin, connector, anchor, generation),
                mapping,
                (username, derived, manual_preserve),
                (state, reason),
                (preserved_at, deleted_at, dated),
            )| {
                let name = match origin {
                    Origin::Directory => record_name(connector, &anchor, generation),
                    _ => format!("{origin:?}-{anchor}").to_lowercase(),
                };
                let mut fields = entry(&anchor).fields(Some(PROFILE));
                if !derived {
                    fields.username = username;
                }
                UserRecord {
                    name,
                    origin,
                    connector: connector.into(),
                    anchor,
                    mapping: mapping.map(str::to_owned),
                    fields,
                    manual_preserve,
                    state,
                    reason,
                    preserved_at: (state != State::Active && dated).then_some(preserved_at),
                    deleted_at: (state == State::Deleted).then_some(deleted_at),
                    delete_after_time: None,
                }
            },
        )
}

/// Records as a store holds them: unique names, and at most one live
/// directory record per connector and anchor (the planner never makes a second).
fn snapshot() -> impl Strategy<Value = Vec<UserRecord>> {
    proptest::collection::vec(record(), 0..10).prop_map(|records| {
        let by_name: BTreeMap<String, UserRecord> =
            records.into_iter().map(|r| (r.name.clone(), r)).collect();
        let mut live = std::collections::BTreeSet::new();
        by_name
            .into_values()
            .filter(|r| {
                !(r.origin == Origin::Directory && r.is_live())
                    || live.insert((r.connector.clone(), r.anchor.clone()))
            })
            .collect()
    })
}

fn claims() -> impl Strategy<Value = OtherClaims> {
    proptest::collection::vec(
        (
            anchor(),
            proptest::sample::select(&MAPPINGS[..]),
            prop_oneof![Just(50), Just(100), Just(200)],
        ),
        0..4,
    )
    .prop_map(|claims| {
        claims
            .into_iter()
            .fold(OtherClaims::none(), |all, (a, m, p)| all.with(a, m, p))
    })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        any::<bool>(),
        prop_oneof![3 => Just(true), 1 => Just(false)],
        prop_oneof![Just(0i64), Just(10), Just(45)],
        prop_oneof![Just(0u8), Just(10), Just(50), Just(100)],
        0u32..4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                auto_preserve_unmapped,
                auto_delete,
                days,
                percent,
                max_deletes,
                dry_run,
                delete_manually_preserved,
            )| Policy {
                auto_preserve_unmapped,
                auto_delete,
                delete_after: DAY * u32::try_from(days).unwrap(),
                max_preserve_percent: percent,
                max_deletes_per_run: max_deletes,
                dry_run,
                delete_manually_preserved,
            },
        )
}

fn gate() -> impl Strategy<Value = ConnectorGate> {
    prop_oneof![
        3 => Just(healthy_gate()),
        1 => Just(ConnectorGate::missing()),
        1 => Just(ConnectorGate { deletions_allowed: false, ..healthy_gate() }),
        1 => Just(ConnectorGate { last_success: Some(t(0)), ..healthy_gate() }),
    ]
}

fn approval() -> impl Strategy<Value = Option<Approval>> {
    proptest::option::of((0usize..4, 0usize..4).prop_map(|(p, d)| Approval {
        run_id: "approved".into(),
        max_preserve: p,
        max_delete: d,
    }))
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        snapshot(),
        view(),
        claims(),
        policy_strategy(),
        gate(),
        approval(),
        any::<bool>(),
    )
        .prop_map(
            |(snapshot, view, claims, policy, gate, approval, auto_import)| {
                let mut run = Scenario::new(snapshot, view);
                run.claims = claims;
                run.policy = policy;
                run.gate = gate;
                run.approval = approval;
                run.mapping.auto_import = auto_import;
                run
            },
        )
}

/// The record each transition starts from: the snapshot's, or the previous
/// transition's for the same name.
fn befores(run: &Scenario, plan: &Plan) -> Vec<Option<UserRecord>> {
    let mut current: BTreeMap<String, UserRecord> = run
        .snapshot
        .iter()
        .map(|r| (r.name.clone(), r.clone()))
        .collect();
    plan.transitions
        .iter()
        .map(|t| current.insert(t.record.name.clone(), t.record.clone()))
        .collect()
}

fn snapshot_record<'a>(run: &'a Scenario, name: &str) -> Option<&'a UserRecord> {
    run.snapshot.iter().find(|r| r.name == name)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn deleted_never_becomes_anything_else(run in scenario()) {
        let plan = run.plan();
        for (t, before) in plan.transitions.iter().zip(befores(&run, &plan)) {
            if let Some(before) = before {
                prop_assert_ne!(before.state, State::Deleted, "{:?}", t);
            }
        }
    }

    #[test]
    fn manual_and_csv_records_never_appear_in_transitions(run in scenario()) {
        let plan = run.plan();
        for t in &plan.transitions {
            prop_assert_eq!(t.record.origin, Origin::Directory);
            if let Some(before) = snapshot_record(&run, &t.record.name) {
                prop_assert_eq!(before.origin, Origin::Directory);
            }
        }
    }

    #[test]
    fn incomplete_read_yields_no_transition(mut run in scenario()) {
        run.view.complete = false;
        let plan = run.plan();
        prop_assert!(plan.transitions.is_empty());
        prop_assert_eq!(plan.outcome(), PlanOutcome::Failed);
    }

    #[test]
    fn thresholds_hold_unless_approved(run in scenario()) {
        let plan = run.plan();
        let preserves = plan.transitions.iter().filter(|t| t.is_automatic_preserve()).count();
        let deletes = plan.transitions.iter().filter(|t| t.kind == TransitionKind::Delete).count();
        let active_before = run.snapshot.iter()
            .filter(|r| r.is_owned_by(CONNECTOR, MAPPING) && r.state == State::Active)
            .count();
        let within = preserves <= allowed_preserves(active_before, run.policy.max_preserve_percent)
            && deletes <= run.policy.max_deletes_per_run as usize;
        let approved = plan.approved_run.is_some()
            && run.approval.as_ref().is_some_and(|a| a.covers(preserves, deletes));
        prop_assert!(within || approved, "{} preserves, {} deletes of {} active", preserves, deletes, active_before);
    }

    #[test]
    fn refused_gate_means_no_delete(run in scenario()) {
        let plan = run.plan();
        if run.gate.deletions_permitted(run.now).is_err() {
            prop_assert!(plan.transitions.iter().all(|t| t.kind != TransitionKind::Delete));
        }
    }

    #[test]
    fn transitions_follow_the_lifecycle(run in scenario()) {
        let plan = run.plan();
        for (t, before) in plan.transitions.iter().zip(befores(&run, &plan)) {
            let after = &t.record;
            match (&t.kind, before) {
                (TransitionKind::Import { .. }, None) => {
                    prop_assert_eq!(after.state, State::Active);
                    prop_assert_eq!(after.mapping.as_deref(), Some(MAPPING));
                }
                (TransitionKind::Update | TransitionKind::Transfer { .. }, Some(b)) => {
                    prop_assert_eq!(after.state, b.state);
                    prop_assert_eq!(&after.anchor, &b.anchor);
                }
                (TransitionKind::Preserve, Some(b)) => {
                    prop_assert_eq!(b.state, State::Active);
                    prop_assert_eq!(after.state, State::Preserved);
                    prop_assert_eq!(after.preserved_at, Some(run.now));
                }
                (TransitionKind::Reenable, Some(b)) => {
                    prop_assert_eq!(b.state, State::Preserved);
                    prop_assert!(!b.manual_preserve);
                    prop_assert_eq!(after.state, State::Active);
                }
                (TransitionKind::Delete, Some(b)) => {
                    prop_assert!(retention_due(&b, &run.policy, run.now));
                    prop_assert_eq!(after.state, State::Deleted);
                }
                (kind, before) => prop_assert!(false, "{:?} from {:?}", kind, before),
            }
        }
    }

    #[test]
    fn transitions_come_in_phase_order(run in scenario()) {
        let plan = run.plan();
        let phases: Vec<u8> = plan.transitions.iter().map(|t| t.kind.phase()).collect();
        prop_assert!(phases.is_sorted(), "{:?}", phases);
    }

    #[test]
    fn planning_the_applied_plan_again_finds_nothing(run in scenario()) {
        let plan = run.plan();
        let again = run.after(&plan).plan();
        let threshold_held = plan.blocked.as_ref().is_some_and(|b| b.threshold.is_some());
        let deleted: Vec<&str> = plan.transitions.iter()
            .filter(|t| t.kind == TransitionKind::Delete)
            .map(|t| t.record.name.as_str())
            .collect();
        for t in &again.transitions {
            match &t.kind {
                // The next run counts a different base (it includes this run's
                // imports), so it may release what this one held back.
                TransitionKind::Preserve | TransitionKind::Delete if threshold_held => {}
                // A user deleted while its directory object still matches and is
                // enabled returns as a new record (rule 6).
                TransitionKind::Import { follows: Some(previous) }
                    if deleted.contains(&previous.as_str()) => {}
                _ => prop_assert!(false, "unexpected second-run transition {:#?}", t),
            }
        }
    }

    #[test]
    fn repeated_runs_settle(run in scenario()) {
        let mut current = run.clone();
        for _ in 0..4 {
            let plan = current.plan();
            if plan.transitions.is_empty() {
                return Ok(());
            }
            current = current.after(&plan);
        }
        prop_assert!(false, "still changing after 4 runs: {:#?}", current.plan().transitions);
    }

    #[test]
    fn dry_run_does_not_change_the_plan(mut run in scenario()) {
        run.policy.dry_run = false;
        let wet = run.plan();
        run.policy.dry_run = true;
        prop_assert_eq!(run.plan(), wet);
    }

    #[test]
    fn imported_names_are_fresh_and_valid(run in scenario()) {
        let plan = run.plan();
        for t in &plan.transitions {
            if matches!(t.kind, TransitionKind::Import { .. }) {
                prop_assert!(snapshot_record(&run, &t.record.name).is_none());
                prop_assert!(t.record.name.len() <= 253);
            }
        }
    }
}

/// A full resync of a registry built from the same view writes nothing.
#[test]
fn full_import_then_resync_is_a_no_op() {
    let entries: Vec<DirectoryEntry> = ANCHORS.iter().map(|a| entry(a)).collect();
    let run = Scenario::new(vec![], DirectoryView::full(entries));
    let first = run.plan();
    assert_eq!(first.counts.imported, ANCHORS.len());
    let again = run.after(&first).plan();
    assert!(again.transitions.is_empty());
    assert_eq!(again.counts.unchanged, ANCHORS.len());
    // And a day later, with the clock moved on, still nothing.
    let later = Scenario {
        now: run.now + Duration::from_secs(86_400),
        ..run.after(&first)
    };
    assert!(later.plan().transitions.is_empty());
    let _ = UserFields::default();
}
