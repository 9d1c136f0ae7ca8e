//! Rule 8: identity is the anchor, and renames go before imports.

use super::*;

// Rule 8: identity is the anchor.

#[test]
fn rename_keeps_identity() {
    let old = active("guid-1", MAPPING);
    let new_entry = DirectoryEntry {
        username: Some("alice.smith".into()),
        user_principal_name: Some("alice.smith@new.example".into()),
        ..entry("guid-1")
    };
    let plan = Scenario::new(vec![old.clone()], DirectoryView::full([new_entry])).plan();
    let t = only(&plan);
    assert_eq!(t.kind, TransitionKind::Update);
    assert_eq!(t.record.name, old.name);
    assert_eq!(t.record.state, State::Active);
    assert_eq!(t.record.fields.username.as_deref(), Some("alice.smith"));
}

#[test]
fn reused_name_is_a_different_user() {
    let old = with_username(active("guid-1", MAPPING), "alice");
    let plan = Scenario::new(
        vec![old.clone()],
        DirectoryView::full([renamed("guid-2", "alice")]),
    )
    .plan();
    assert_eq!(
        steps(&plan),
        vec![step("import", "guid-2"), step("preserve", "guid-1")]
    );
    assert_eq!(plan.transitions[0].record.anchor, "guid-2");
    assert_eq!(plan.transitions[1].record.fields, old.fields);
}

#[test]
fn renames_applied_before_imports() {
    // The new user's record name sorts first, so only the rule can put the
    // rename ahead of it.
    let old_anchor = "ffffffff-0000-0000-0000-000000000001";
    let new_anchor = "00000000-0000-0000-0000-000000000002";
    assert!(name_of(new_anchor) < name_of(old_anchor));
    let plan = Scenario::new(
        vec![with_username(active(old_anchor, MAPPING), "alice")],
        DirectoryView::full([
            renamed(old_anchor, "alice.old"),
            renamed(new_anchor, "alice"),
        ]),
    )
    .plan();
    assert_eq!(
        steps(&plan),
        vec![step("update", old_anchor), step("import", new_anchor)]
    );
}

#[test]
fn transitions_are_ordered_updates_imports_reenables_preserves_deletes() {
    let snapshot = vec![
        active("a-update", MAPPING),
        preserved("b-reenable", MAPPING, Reason::DisabledInDirectory, t(90)),
        active("c-preserve", MAPPING),
        preserved("d-delete", MAPPING, Reason::Unmapped, t(0)),
    ];
    let view = DirectoryView::full([
        renamed("a-update", "renamed"),
        entry("b-reenable"),
        disabled("c-preserve"),
        entry("e-import"),
    ]);
    let plan = Scenario::new(snapshot, view).plan();
    let kinds: Vec<_> = plan.transitions.iter().map(|t| t.kind.label()).collect();
    assert_eq!(
        kinds,
        vec!["update", "import", "reenable", "preserve", "delete"]
    );
}

#[test]
fn update_and_preserve_of_one_user_compose() {
    let plan = Scenario::new(
        vec![active("a", MAPPING)],
        DirectoryView::full([DirectoryEntry {
            enabled: false,
            ..renamed("a", "renamed")
        }]),
    )
    .plan();
    assert_eq!(
        steps(&plan),
        vec![step("update", "a"), step("preserve", "a")]
    );
    let preserved = &plan.transitions[1].record;
    assert_eq!(preserved.fields.username.as_deref(), Some("renamed"));
    assert_eq!(preserved.state, State::Preserved);
}
