//! Rule 9: ownership among mappings, and transfers.

use super::*;

// Rule 9: ownership and transfer.

#[test]
fn moving_between_mappings_is_a_transfer_not_a_preserve() {
    // Seen from the mapping the user left: another mapping matches it now.
    let mut leaving = Scenario::new(vec![active("a", MAPPING)], DirectoryView::full([]));
    leaving.claims = OtherClaims::none().with("a", "sales", 200);
    let plan = leaving.plan();
    let t = only(&plan);
    assert_eq!(
        t.kind,
        TransitionKind::Transfer {
            from: Some(MAPPING.into())
        }
    );
    assert_eq!(t.record.mapping.as_deref(), Some("sales"));
    assert_eq!(t.record.state, State::Active);
    assert_eq!(plan.counts.transferred, 1);

    // Seen from the mapping the user joined: the old owner no longer matches.
    let mut joining = Scenario::new(
        vec![UserRecord {
            fields: entry("a").fields(Some("sales-profile")),
            ..active("a", "sales")
        }],
        DirectoryView::full([entry("a")]),
    );
    joining.claims = OtherClaims::none();
    let plan = joining.plan();
    let t = only(&plan);
    assert_eq!(
        t.kind,
        TransitionKind::Transfer {
            from: Some("sales".into())
        }
    );
    assert_eq!(t.record.mapping.as_deref(), Some(MAPPING));
    assert_eq!(t.record.fields.profile.as_deref(), Some(PROFILE));
    assert_eq!(t.record.state, State::Active);
}

#[test]
fn user_preserved_as_unmapped_is_taken_over_and_reenabled() {
    let plan = Scenario::new(
        vec![preserved("a", "sales", Reason::Unmapped, t(90))],
        DirectoryView::full([entry("a")]),
    )
    .plan();
    assert_eq!(
        steps(&plan),
        vec![step("transfer", "a"), step("reenable", "a")]
    );
    assert_eq!(plan.transitions[1].record.mapping.as_deref(), Some(MAPPING));
}

#[test]
fn lowest_priority_number_owns_a_user_both_match() {
    let run = |sales_priority| {
        let mut run = Scenario::new(
            vec![active("a", "sales")],
            DirectoryView::full([entry("a")]),
        );
        run.claims = OtherClaims::none().with("a", "sales", sales_priority);
        run.plan()
    };
    // sales (50) beats staff (100): nothing to do here.
    assert!(run(50).transitions.is_empty());
    // A tie goes to the first name: "sales" < "staff".
    assert!(run(100).transitions.is_empty());
    // staff (100) beats sales (200): staff takes over.
    assert_eq!(steps(&run(200)), vec![step("transfer", "a")]);
}

#[test]
fn unmapped_user_goes_to_the_best_other_mapping() {
    let mut run = Scenario::new(vec![active("a", MAPPING)], DirectoryView::full([]));
    run.claims = OtherClaims::none()
        .with("a", "ops", 300)
        .with("a", "sales", 200);
    assert_eq!(only(&run.plan()).record.mapping.as_deref(), Some("sales"));
}

#[test]
fn better_mapping_takes_a_user_this_mapping_owns() {
    let mut run = Scenario::new(
        vec![active("a", MAPPING)],
        DirectoryView::full([entry("a")]),
    );
    run.claims = OtherClaims::none().with("a", "vip", 1);
    let t = only(&run.plan()).clone();
    assert_eq!(t.record.mapping.as_deref(), Some("vip"));
    assert_eq!(t.record.fields, active("a", MAPPING).fields);
}

#[test]
fn orphaned_user_in_view_is_adopted() {
    let orphan = UserRecord {
        mapping: None,
        ..active("a", MAPPING)
    };
    let plan = Scenario::new(vec![orphan], DirectoryView::full([entry("a")])).plan();
    assert_eq!(only(&plan).kind, TransitionKind::Transfer { from: None });
}

#[test]
fn import_is_left_to_a_better_mapping() {
    let mut run = Scenario::new(vec![], DirectoryView::full([entry("a")]));
    run.claims = OtherClaims::none().with("a", "vip", 1);
    assert!(run.plan().transitions.is_empty());
}
