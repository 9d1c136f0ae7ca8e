//! Rule 7: Manual and CSV users are never touched, and never collided with.

use super::*;

// Rule 7: Manual and CSV users.

#[test]
fn manual_and_csv_users_untouched() {
    let due = UserRecord {
        mapping: Some(MAPPING.into()),
        state: State::Preserved,
        reason: Some(Reason::Manual),
        preserved_at: Some(t(0)),
        ..manual_record("m", "mary", "mary@corp.example")
    };
    let csv_active = UserRecord {
        mapping: Some(MAPPING.into()),
        manual_preserve: true,
        ..csv_record("c", "carl", "carl@corp.example")
    };
    let snapshot = vec![due.clone(), csv_active.clone()];
    // The directory disables one and drops the other out of scope.
    let plan = Scenario::new(snapshot, DirectoryView::full([disabled("m")])).plan();
    assert!(plan.transitions.is_empty(), "{:#?}", plan.transitions);
}

#[test]
fn colliding_directory_user_reported_not_imported() {
    let manual = manual_record("m", "alice", "someone@corp.example");
    let csv = csv_record("c", "robert", "BOB@corp.example");
    let plan = Scenario::new(
        vec![manual.clone(), csv.clone()],
        DirectoryView::full([renamed("a", "Alice"), entry("bob"), entry("carol")]),
    )
    .plan();
    assert_eq!(steps(&plan), vec![step("import", "carol")]);
    assert_eq!(
        plan.skips,
        vec![
            Skip {
                anchor: "a".into(),
                record: None,
                why: SkipCause::Collision(Collision {
                    field: CollisionField::Username,
                    value: "Alice".into(),
                    with: manual.name.clone(),
                    with_origin: Origin::Manual,
                }),
            },
            Skip {
                anchor: "bob".into(),
                record: None,
                why: SkipCause::Collision(Collision {
                    field: CollisionField::Email,
                    value: "bob@corp.example".into(),
                    with: csv.name.clone(),
                    with_origin: Origin::Csv,
                }),
            },
        ]
    );
    assert_eq!(plan.counts.skipped, 2);
    let message = plan.skips[0].to_string();
    assert!(
        message.contains(&manual.name) && message.contains("username"),
        "{message}"
    );
}

#[test]
fn manual_record_with_the_same_anchor_blocks_import() {
    let manual = manual_record("a", "someone-else", "else@corp.example");
    let plan = Scenario::new(vec![manual.clone()], DirectoryView::full([entry("a")])).plan();
    assert!(plan.transitions.is_empty());
    let SkipCause::Collision(collision) = &plan.skips[0].why else {
        panic!("not a collision: {:?}", plan.skips[0]);
    };
    assert_eq!(collision.field, CollisionField::Anchor);
    assert_eq!(collision.with, manual.name);
}

#[test]
fn a_manual_user_given_a_directory_users_anchor_is_reported_and_the_directory_user_kept() {
    let manual = manual_record("a", "someone-else", "else@corp.example");
    let mut run = Scenario::new(
        vec![active("a", MAPPING), manual.clone()],
        DirectoryView::full([disabled("a")]),
    );
    run.policy.max_preserve_percent = 100;
    let plan = run.plan();
    assert_eq!(
        steps(&plan),
        vec![step("preserve", "a")],
        "still kept in step"
    );
    let SkipCause::SharedAnchor(collision) = &plan.skips[0].why else {
        panic!("not reported: {:?}", plan.skips);
    };
    assert_eq!(collision.with, manual.name);
    assert!(plan.skips[0].to_string().contains("claims the anchor"));
}

#[test]
fn deleted_manual_user_does_not_collide() {
    let gone = UserRecord {
        state: State::Deleted,
        ..manual_record("m", "alice", "alice@corp.example")
    };
    let plan = Scenario::new(vec![gone], DirectoryView::full([renamed("a", "alice")])).plan();
    assert_eq!(steps(&plan), vec![step("import", "a")]);
}

#[test]
fn update_into_a_collision_is_held_back() {
    let manual = manual_record("m", "admin", "admin@corp.example");
    let plan = Scenario::new(
        vec![manual.clone(), active("a", MAPPING)],
        DirectoryView::full([renamed("a", "ADMIN")]),
    )
    .plan();
    assert!(plan.transitions.is_empty());
    assert_eq!(plan.skips.len(), 1);
    assert_eq!(plan.skips[0].record, Some(name_of("a")));
    assert_eq!(plan.counts.skipped, 1);
    assert_eq!(plan.counts.unchanged, 0);
}
