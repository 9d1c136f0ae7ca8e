//! Section 3: thresholds, approval, dry run, and the zero-writes rule.

use super::*;

// Section 3: thresholds and approval.

/// `active` users of this mapping, `disabling` of them disabled in the
/// directory, plus a new user and a renamed user that must go ahead regardless.
fn threshold_run(active_users: usize, disabling: usize) -> Scenario {
    let anchors: Vec<String> = (0..active_users).map(|i| format!("user-{i:03}")).collect();
    let mut snapshot: Vec<UserRecord> = anchors.iter().map(|a| active(a, MAPPING)).collect();
    snapshot.push(preserved(
        "back",
        MAPPING,
        Reason::DisabledInDirectory,
        t(90),
    ));
    let mut entries: Vec<DirectoryEntry> = anchors
        .iter()
        .enumerate()
        .map(|(i, a)| if i < disabling { disabled(a) } else { entry(a) })
        .collect();
    entries[active_users - 1].display_name = Some("renamed".into());
    entries.push(entry("new"));
    entries.push(entry("back"));
    let mut run = Scenario::new(snapshot, DirectoryView::full(entries));
    run.policy.max_preserve_percent = 10;
    run
}

#[test]
fn preserve_threshold_blocks() {
    // 10% of 20 active users is 2.
    let within = threshold_run(20, 2).plan();
    assert_eq!(within.counts.preserved, 2);
    assert_eq!(within.blocked, None);

    let plan = threshold_run(20, 3).plan();
    assert_eq!(plan.counts.preserved, 0);
    assert_eq!(
        (
            plan.counts.imported,
            plan.counts.updated,
            plan.counts.reenabled
        ),
        (1, 1, 1)
    );
    let blocked = plan.blocked.as_ref().unwrap();
    let breach = blocked.threshold.as_ref().unwrap();
    assert_eq!(
        (
            breach.would_preserve,
            breach.active_before,
            breach.max_preserve_percent,
            breach.allowed_preserves
        ),
        (3, 20, 10, 2)
    );
    assert_eq!(blocked.withheld.len(), 3);
    assert_eq!(plan.outcome(), PlanOutcome::Blocked);
    assert!(blocked.to_string().contains("would preserve 3 of 20"));
}

#[test]
fn delete_threshold_blocks_preserves_and_deletes() {
    let mut run = Scenario::new(
        vec![
            active("a", MAPPING),
            preserved("d1", MAPPING, Reason::Unmapped, t(0)),
            preserved("d2", MAPPING, Reason::Unmapped, t(0)),
        ],
        DirectoryView::full([disabled("a")]),
    );
    run.policy.max_deletes_per_run = 1;
    let plan = run.plan();
    assert!(plan.transitions.is_empty(), "{:#?}", plan.transitions);
    let breach = plan.blocked.unwrap().threshold.unwrap();
    assert_eq!((breach.would_delete, breach.max_deletes_per_run), (2, 1));
    assert_eq!(breach.would_preserve, 1);
}

#[test]
fn manual_preserve_is_not_held_back_by_thresholds() {
    let mut run = threshold_run(20, 3);
    run.snapshot[10].manual_preserve = true;
    let plan = run.plan();
    assert!(plan.blocked.is_some());
    assert_eq!(plan.counts.preserved, 1);
    assert_eq!(
        plan.transitions
            .iter()
            .find(|t| t.kind == TransitionKind::Preserve)
            .and_then(|t| t.record.reason),
        Some(Reason::Manual)
    );
}

#[test]
fn approval_releases_blocked_run_but_not_a_bigger_one() {
    let blocked = threshold_run(20, 3)
        .plan()
        .blocked
        .unwrap()
        .threshold
        .unwrap();
    let approval = Approval {
        run_id: "run-42".into(),
        max_preserve: blocked.would_preserve,
        max_delete: blocked.would_delete,
    };

    let mut same = threshold_run(20, 3);
    same.approval = Some(approval.clone());
    let plan = same.plan();
    assert_eq!(plan.counts.preserved, 3);
    assert_eq!(plan.blocked, None);
    assert_eq!(plan.approved_run.as_deref(), Some("run-42"));

    let mut bigger = threshold_run(20, 4);
    bigger.approval = Some(approval.clone());
    let plan = bigger.plan();
    assert_eq!(plan.counts.preserved, 0);
    assert_eq!(plan.approved_run, None);
    let breach = plan.blocked.unwrap().threshold.unwrap();
    assert_eq!(breach.approval_exceeded, Some(approval));
}

#[test]
fn approval_does_not_open_the_connector_gate() {
    let mut run = Scenario::new(
        vec![preserved("d", MAPPING, Reason::Unmapped, t(0))],
        DirectoryView::full([]),
    );
    run.policy.max_deletes_per_run = 0;
    run.gate = ConnectorGate::missing();
    let plan = run.plan();
    let blocked = plan.blocked.unwrap();
    assert!(blocked.threshold.is_some() && blocked.gate.is_some());

    run.approval = Some(Approval {
        run_id: "r".into(),
        max_preserve: 0,
        max_delete: 1,
    });
    let plan = run.plan();
    assert!(plan.transitions.is_empty());
    let blocked = plan.blocked.unwrap();
    assert_eq!(blocked.threshold, None);
    assert_eq!(blocked.gate, Some(GateRefusal::MissingConnectorHealth));
}

#[test]
fn thresholds_count_this_mappings_active_users_before_the_run() {
    // 10 active here (allowance 1), 100 in another mapping, 50 about to be imported.
    let mut snapshot: Vec<UserRecord> =
        (0..10).map(|i| active(&format!("s{i}"), MAPPING)).collect();
    snapshot.extend((0..100).map(|i| active(&format!("o{i}"), "sales")));
    let mut entries: Vec<DirectoryEntry> = (0..10)
        .map(|i| {
            if i < 2 {
                disabled(&format!("s{i}"))
            } else {
                entry(&format!("s{i}"))
            }
        })
        .collect();
    entries.extend((0..50).map(|i| entry(&format!("n{i}"))));
    let mut run = Scenario::new(snapshot, DirectoryView::full(entries));
    run.policy.max_preserve_percent = 10;
    let breach = run.plan().blocked.unwrap().threshold.unwrap();
    assert_eq!((breach.active_before, breach.allowed_preserves), (10, 1));
}

// Dry run is the runner's business.

#[test]
fn dry_run_plans_the_same() {
    let mut run = threshold_run(20, 2);
    run.snapshot
        .push(preserved("due", MAPPING, Reason::Unmapped, t(0)));
    let wet = run.plan();
    run.policy.dry_run = true;
    assert_eq!(run.plan(), wet);
}

#[test]
fn applying_then_replanning_finds_nothing_to_do() {
    let mut run = Scenario::new(
        vec![
            active("update", MAPPING),
            active("preserve", MAPPING),
            preserved("reenable", MAPPING, Reason::Unmapped, t(90)),
            preserved("delete", MAPPING, Reason::Unmapped, t(0)),
            active("transfer", "sales"),
            deleted("return", MAPPING, t(10)),
        ],
        DirectoryView::full([
            renamed("update", "x"),
            entry("reenable"),
            entry("transfer"),
            entry("return"),
            entry("import"),
        ]),
    );
    run.claims = OtherClaims::none();
    let plan = run.plan();
    assert_eq!(plan.transitions.len(), 7, "{:#?}", steps(&plan));
    let again = run.after(&plan).plan();
    assert!(again.transitions.is_empty(), "{:#?}", steps(&again));
    assert_eq!(again.counts.unchanged, 5);
}
