//! Rules 1–6: import, update, preserve, re-enable, delete, and Deleted is final.

use super::*;

// Rule 1: import.

#[test]
fn import_enabled_matched_user_becomes_active() {
    let plan = Scenario::new(vec![], DirectoryView::full([entry("alice")])).plan();
    let t = only(&plan);
    assert_eq!(t.kind, TransitionKind::Import { follows: None });
    assert_eq!(t.record.name, name_of("alice"));
    assert_eq!(t.record.state, State::Active);
    assert_eq!(t.record.origin, Origin::Directory);
    assert_eq!(t.record.mapping.as_deref(), Some(MAPPING));
    assert_eq!(t.record.fields, entry("alice").fields(Some(PROFILE)));
    assert_eq!(plan.counts.imported, 1);
    assert_eq!(plan.outcome(), PlanOutcome::Succeeded);
}

#[test]
fn disabled_directory_user_is_never_imported() {
    let plan = Scenario::new(vec![], DirectoryView::full([disabled("bob")])).plan();
    assert!(plan.transitions.is_empty(), "{:#?}", plan.transitions);
}

#[test]
fn import_needs_auto_import() {
    let mut run = Scenario::new(vec![], DirectoryView::full([entry("alice")]));
    run.mapping.auto_import = false;
    assert!(run.plan().transitions.is_empty());
}

// Rule 2: update, and the zero-writes rule.

#[test]
fn no_change_resync_plans_zero_transitions() {
    let snapshot = vec![
        active("a", MAPPING),
        active("b", MAPPING),
        preserved("c", MAPPING, Reason::DisabledInDirectory, t(90)),
    ];
    let view = DirectoryView::full([entry("a"), entry("b"), disabled("c")]);
    let plan = Scenario::new(snapshot, view).plan();
    assert!(plan.transitions.is_empty(), "{:#?}", plan.transitions);
    assert_eq!(plan.counts.unchanged, 3);
}

#[test]
fn changed_fields_are_updated() {
    let changed = DirectoryEntry {
        display_name: Some("Alice Liddell".into()),
        ..entry("a")
    };
    let mut run = Scenario::new(
        vec![active("a", MAPPING), active("b", MAPPING)],
        DirectoryView::full([changed.clone(), entry("b")]),
    );
    run.mapping.profile = Some("research".into());
    let plan = run.plan();
    assert_eq!(
        step_set(&plan),
        [step("update", "a"), step("update", "b")].into()
    );
    let a = plan
        .transitions
        .iter()
        .find(|t| t.record.anchor == "a")
        .unwrap();
    assert_eq!(a.record.fields, changed.fields(Some("research")));
    assert_eq!(plan.counts.updated, 2);
}

// Rule 3: preserve.

#[test]
fn disabled_user_is_preserved() {
    let plan = Scenario::new(
        vec![active("a", MAPPING)],
        DirectoryView::full([disabled("a")]),
    )
    .plan();
    let t = only(&plan);
    assert_eq!(t.kind, TransitionKind::Preserve);
    assert_eq!(t.record.state, State::Preserved);
    assert_eq!(t.record.reason, Some(Reason::DisabledInDirectory));
    assert_eq!(t.record.preserved_at, Some(now()));
}

#[test]
fn unmapped_user_preserved_only_with_auto_preserve_unmapped() {
    let mut run = Scenario::new(vec![active("a", MAPPING)], DirectoryView::full([]));
    let t = only(&run.plan()).clone();
    assert_eq!(t.kind, TransitionKind::Preserve);
    assert_eq!(t.record.reason, Some(Reason::Unmapped));
    assert_eq!(t.record.preserved_at, Some(now()));

    run.policy.auto_preserve_unmapped = false;
    assert!(run.plan().transitions.is_empty());
}

#[test]
fn another_mappings_user_outside_the_view_is_left_alone() {
    let plan = Scenario::new(vec![active("a", "sales")], DirectoryView::full([])).plan();
    assert!(plan.transitions.is_empty());
}

// Manual preserve.

#[test]
fn manual_preserve_preserves_an_active_user() {
    let record = UserRecord {
        manual_preserve: true,
        ..active("a", MAPPING)
    };
    let plan = Scenario::new(vec![record], DirectoryView::full([entry("a")])).plan();
    let t = only(&plan);
    assert_eq!(t.kind, TransitionKind::Preserve);
    assert_eq!(t.record.reason, Some(Reason::Manual));
}

#[test]
fn manual_preserve_is_never_lifted_by_sync() {
    let manual = UserRecord {
        manual_preserve: true,
        ..preserved("a", MAPPING, Reason::Manual, t(90))
    };
    // `spec.preserve` also holds a user that sync had preserved by itself.
    let held = UserRecord {
        manual_preserve: true,
        ..preserved("b", MAPPING, Reason::DisabledInDirectory, t(90))
    };
    let plan = Scenario::new(
        vec![manual, held],
        DirectoryView::full([entry("a"), entry("b")]),
    )
    .plan();
    assert!(plan.transitions.is_empty(), "{:#?}", plan.transitions);
}

#[test]
fn cleared_manual_preserve_reenables_like_any_other() {
    let record = preserved("a", MAPPING, Reason::Manual, t(90));
    let plan = Scenario::new(vec![record], DirectoryView::full([entry("a")])).plan();
    assert_eq!(only(&plan).kind, TransitionKind::Reenable);
}

// Rule 4: re-enable.

#[test]
fn reenable_lifts_automatic_preserve() {
    let snapshot = vec![
        preserved("a", MAPPING, Reason::DisabledInDirectory, t(90)),
        preserved("b", MAPPING, Reason::Unmapped, t(90)),
    ];
    let plan = Scenario::new(snapshot, DirectoryView::full([entry("a"), entry("b")])).plan();
    assert_eq!(
        step_set(&plan),
        [step("reenable", "a"), step("reenable", "b")].into()
    );
    for t in &plan.transitions {
        assert_eq!(t.record.state, State::Active);
        assert_eq!(t.record.reason, None);
        assert_eq!(t.record.preserved_at, None);
    }
    assert_eq!(plan.counts.reenabled, 2);
}

#[test]
fn preserved_user_still_disabled_stays_preserved() {
    let record = preserved("a", MAPPING, Reason::Unmapped, t(90));
    let plan = Scenario::new(vec![record], DirectoryView::full([disabled("a")])).plan();
    assert!(plan.transitions.is_empty());
}

// Rule 5: delete after retention, behind the connector gate.

#[test]
fn preserved_user_deleted_after_retention() {
    let snapshot = vec![
        preserved("due", MAPPING, Reason::Unmapped, now() - 45 * DAY),
        preserved(
            "later",
            MAPPING,
            Reason::DisabledInDirectory,
            now() - 44 * DAY,
        ),
        UserRecord {
            manual_preserve: true,
            ..preserved("manual", MAPPING, Reason::Manual, t(0))
        },
    ];
    let plan = Scenario::new(snapshot, DirectoryView::full([disabled("later")])).plan();
    assert_eq!(step_set(&plan), [step("delete", "due")].into());
    let t = &plan.transitions[0];
    assert_eq!(t.record.state, State::Deleted);
    assert_eq!(t.record.reason, Some(Reason::RetentionExpired));
    assert_eq!(t.record.deleted_at, Some(now()));
    assert_eq!(plan.counts.deleted, 1);
}

#[test]
fn a_manual_preserve_is_not_deleted_by_retention_unless_the_policy_opts_in() {
    let held = || UserRecord {
        manual_preserve: true,
        ..preserved("manual", MAPPING, Reason::Manual, t(0))
    };
    let mut run = Scenario::new(vec![held()], DirectoryView::full([entry("manual")]));
    assert!(run.plan().transitions.is_empty(), "a held user was deleted");
    run.policy.delete_manually_preserved = true;
    assert_eq!(steps(&run.plan()), vec![step("delete", "manual")]);
}

#[test]
fn a_tombstone_an_admin_held_blocks_the_reimport_until_the_hold_is_cleared() {
    let tombstone = UserRecord {
        manual_preserve: true,
        ..deleted("a", MAPPING, t(90))
    };
    let plan = Scenario::new(vec![tombstone.clone()], DirectoryView::full([entry("a")])).plan();
    assert!(plan.transitions.is_empty(), "{:#?}", plan.transitions);
    assert_eq!(
        plan.skips[0].why,
        SkipCause::HeldByAdmin {
            tombstone: tombstone.name.clone()
        }
    );
    assert!(plan.skips[0].to_string().contains("usersync unpreserve"));
    assert_eq!(plan.counts.skipped, 1);

    let cleared = UserRecord {
        manual_preserve: false,
        ..tombstone
    };
    let plan = Scenario::new(vec![cleared], DirectoryView::full([entry("a")])).plan();
    assert_eq!(plan.counts.imported, 1, "{:#?}", plan.transitions);
}

#[test]
fn no_delete_without_auto_delete() {
    let mut run = Scenario::new(
        vec![preserved("a", MAPPING, Reason::Unmapped, t(0))],
        DirectoryView::full([]),
    );
    run.policy.auto_delete = false;
    assert!(run.plan().transitions.is_empty());
}

#[test]
fn reenabled_user_is_not_deleted() {
    let plan = Scenario::new(
        vec![preserved("a", MAPPING, Reason::Unmapped, t(0))],
        DirectoryView::full([entry("a")]),
    )
    .plan();
    assert_eq!(steps(&plan), vec![step("reenable", "a")]);
}

#[test]
fn no_delete_when_connector_unhealthy() {
    let healthy = healthy_gate();
    let cases = [
        (ConnectorGate::missing(), "missing"),
        (
            ConnectorGate {
                connected: false,
                ..healthy.clone()
            },
            "not connected",
        ),
        (
            ConnectorGate {
                last_success: Some(now() - Duration::from_secs(3600)),
                ..healthy.clone()
            },
            "stale",
        ),
        (
            ConnectorGate {
                last_success: None,
                ..healthy.clone()
            },
            "never succeeded",
        ),
        (
            ConnectorGate {
                deletions_allowed: false,
                ..healthy.clone()
            },
            "frozen",
        ),
    ];
    for (gate, case) in cases {
        let mut run = Scenario::new(
            vec![preserved("a", MAPPING, Reason::Unmapped, t(0))],
            DirectoryView::full([entry("new")]),
        );
        run.gate = gate.clone();
        let plan = run.plan();
        assert_eq!(steps(&plan), vec![step("import", "new")], "{case}");
        let blocked = plan.blocked.as_ref().expect(case);
        assert_eq!(
            blocked.gate,
            gate.deletions_permitted(now()).err(),
            "{case}"
        );
        assert!(blocked.gate.is_some(), "{case}");
        assert_eq!(blocked.threshold, None, "{case}");
        assert_eq!(steps_of(&blocked.withheld), vec![step("delete", "a")]);
        assert_eq!(plan.outcome(), PlanOutcome::Blocked, "{case}");
    }
}

#[test]
fn connector_gate_does_not_hold_back_preserves() {
    let mut run = Scenario::new(
        vec![active("a", MAPPING)],
        DirectoryView::full([disabled("a")]),
    );
    run.gate = ConnectorGate::missing();
    let plan = run.plan();
    assert_eq!(steps(&plan), vec![step("preserve", "a")]);
    assert_eq!(plan.blocked, None);
}

#[test]
fn zero_retention_deletes_in_the_run_that_preserves() {
    let mut run = Scenario::new(
        vec![active("a", MAPPING)],
        DirectoryView::full([disabled("a")]),
    );
    run.policy.delete_after = Duration::ZERO;
    let plan = run.plan();
    assert_eq!(
        steps(&plan),
        vec![step("preserve", "a"), step("delete", "a")]
    );
    assert_eq!(plan.transitions[1].record.preserved_at, Some(now()));
}

// Rule 6: Deleted is final.

#[test]
fn deleted_is_final_and_return_gets_new_record() {
    let tombstone = deleted("a", MAPPING, t(50));
    let plan = Scenario::new(vec![tombstone.clone()], DirectoryView::full([entry("a")])).plan();
    let t = only(&plan);
    let new_name = record_name(CONNECTOR, "a", 2);
    assert_eq!(t.record.name, new_name);
    assert_eq!(
        t.kind,
        TransitionKind::Import {
            follows: Some(tombstone.name.clone())
        }
    );
    assert_eq!(t.record.state, State::Active);
    assert_eq!(
        plan.notices,
        vec![Notice::ReturnedAfterDeletion {
            anchor: "a".into(),
            record: new_name,
            previous: tombstone.name,
        }]
    );
}

#[test]
fn second_return_follows_the_latest_tombstone() {
    let first = deleted("a", MAPPING, t(10));
    let second = UserRecord {
        name: record_name(CONNECTOR, "a", 2),
        ..deleted("a", MAPPING, t(60))
    };
    let plan = Scenario::new(
        vec![second.clone(), first],
        DirectoryView::full([entry("a")]),
    )
    .plan();
    let t = only(&plan);
    assert_eq!(t.record.name, record_name(CONNECTOR, "a", 3));
    assert_eq!(
        t.kind,
        TransitionKind::Import {
            follows: Some(second.name)
        }
    );
}

#[test]
fn deleted_record_never_transitions() {
    let mut run = Scenario::new(
        vec![UserRecord {
            manual_preserve: true,
            ..deleted("a", MAPPING, t(50))
        }],
        DirectoryView::full([DirectoryEntry {
            display_name: Some("changed".into()),
            ..entry("a")
        }]),
    );
    run.mapping.auto_import = false;
    assert!(run.plan().transitions.is_empty());
}

#[test]
fn fields_absent_in_the_directory_are_cleared() {
    let record = active("a", MAPPING);
    let sparse = DirectoryEntry {
        email: None,
        attributes: Default::default(),
        ..entry("a")
    };
    let plan = Scenario::new(vec![record], DirectoryView::full([sparse])).plan();
    let fields: &UserFields = &only(&plan).record.fields;
    assert_eq!(fields.email, None);
    assert!(fields.attributes.is_empty());
}
