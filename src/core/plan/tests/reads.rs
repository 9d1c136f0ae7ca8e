//! Section 3: only complete reads decide; incremental absence means nothing.

use super::*;

// Section 3: complete reads only.

#[test]
fn incomplete_read_changes_nothing() {
    let snapshot = vec![
        active("disabled", MAPPING),
        active("gone", MAPPING),
        UserRecord {
            manual_preserve: true,
            ..active("manual", MAPPING)
        },
        preserved("due", MAPPING, Reason::Unmapped, t(0)),
        preserved("back", MAPPING, Reason::Unmapped, t(90)),
    ];
    let view = DirectoryView::full([
        disabled("disabled"),
        entry("manual"),
        entry("back"),
        entry("new"),
    ])
    .incomplete();
    let plan = Scenario::new(snapshot, view).plan();
    assert!(plan.transitions.is_empty(), "{:#?}", plan.transitions);
    assert_eq!(
        plan.failure,
        Some(PlanFailure::IncompleteRead {
            read: ReadKind::Full
        })
    );
    assert_eq!(plan.outcome(), PlanOutcome::Failed);
    assert!(plan.failure.unwrap().to_string().contains("incomplete"));
}

#[test]
fn incremental_absence_is_not_gone() {
    let snapshot = vec![active("quiet", MAPPING), active("changed", MAPPING)];
    let view = DirectoryView::incremental([renamed("changed", "new-name"), entry("new")], []);
    let plan = Scenario::new(snapshot, view).plan();
    assert_eq!(
        steps(&plan),
        vec![step("update", "changed"), step("import", "new")]
    );
}

#[test]
fn incremental_removal_goes_through_the_unmapped_rules() {
    let snapshot = vec![
        active("quiet", MAPPING),
        active("removed", MAPPING),
        active("moved", MAPPING),
    ];
    let view = DirectoryView::incremental([], ["removed".to_owned(), "moved".to_owned()]);
    let mut run = Scenario::new(snapshot, view);
    run.claims = OtherClaims::none().with("moved", "sales", 200);
    let plan = run.plan();
    assert_eq!(
        steps(&plan),
        vec![step("transfer", "moved"), step("preserve", "removed")]
    );
    assert_eq!(plan.transitions[1].record.reason, Some(Reason::Unmapped));

    run.policy.auto_preserve_unmapped = false;
    assert_eq!(steps(&run.plan()), vec![step("transfer", "moved")]);
}

#[test]
fn incremental_entry_also_removed_counts_as_present() {
    let view = DirectoryView::incremental([entry("a")], ["a".to_owned()]);
    let plan = Scenario::new(vec![active("a", MAPPING)], view).plan();
    assert!(plan.transitions.is_empty());
}
