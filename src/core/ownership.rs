//! Which mapping owns a user when several mappings of a connector match it
//! (rule 9), and which anchors the runner must look up to know.
//!
//! Ownership is decided from what matches now, never from history: of all the
//! mappings matching a user, the lowest priority number wins, ties broken by
//! name. A user whose owner stops matching passes straight to a mapping that
//! still matches — a transfer, never a preserve in between — whichever
//! mapping's run sees it first.

use super::model::{Claim, DirectoryView, MappingContext, State, UserRecord};

/// The mapping that owns a user matched by `candidates` (name, priority), or
/// `None` when nothing matches.
pub fn owner<'a>(candidates: impl IntoIterator<Item = (&'a str, i32)>) -> Option<&'a str> {
    candidates
        .into_iter()
        .min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
        .map(|(name, _)| name)
}

/// The owner among this mapping (when it matches) and the other mappings that
/// claim the anchor. Claims naming this mapping itself are ignored: whether it
/// matches is what its own view says.
pub(crate) fn owner_with<'a>(
    this: (&'a str, i32),
    this_matches: bool,
    others: &'a [Claim],
) -> Option<&'a str> {
    let others = others
        .iter()
        .filter(|c| c.mapping != this.0)
        .map(|c| (c.mapping.as_str(), c.priority));
    owner(this_matches.then_some(this).into_iter().chain(others))
}

/// The anchors the runner must look up in the connector's other mappings
/// before planning this mapping's run, building [`crate::core::OtherClaims`]
/// from the answers.
///
/// Two kinds, both small in a steady state:
/// - Active users this mapping owns that the view says are no longer matched:
///   before preserving them as Unmapped, another mapping may take them over.
/// - Users in the view owned by another mapping (or by none): whether their
///   owner still matches, or a better one does, decides who owns them.
///
/// Users this mapping owns and still matches need no lookup: a better mapping
/// that matches them takes them over in its own run. An incomplete view needs
/// no lookups, as it changes nothing. The answer is sorted and free of repeats.
pub fn claim_lookups_needed(
    snapshot: &[UserRecord],
    view: &DirectoryView,
    mapping: &MappingContext,
) -> Vec<String> {
    if !view.complete {
        return Vec::new();
    }
    let mut anchors: Vec<String> = snapshot
        .iter()
        .filter(|r| {
            r.is_live() && r.origin.is_managed_by_sync() && r.connector == mapping.connector
        })
        .filter(|r| {
            let owned = r.mapping.as_deref() == Some(mapping.name.as_str());
            let leaving = owned && r.state == State::Active && view.says_unmatched(&r.anchor);
            let foreign = !owned && view.entries.contains_key(&r.anchor);
            leaving || foreign
        })
        .map(|r| r.anchor.clone())
        .collect();
    anchors.sort();
    anchors.dedup();
    anchors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Reason;
    use crate::core::testkit::*;

    #[test]
    fn lowest_priority_number_owns() {
        assert_eq!(owner([("b", 10), ("a", 20)]), Some("b"));
    }

    #[test]
    fn priority_tie_goes_to_the_first_name() {
        assert_eq!(owner([("zeta", 5), ("alpha", 5)]), Some("alpha"));
    }

    #[test]
    fn nothing_matching_owns_nothing() {
        assert_eq!(owner([]), None);
    }

    #[test]
    fn own_claim_is_judged_by_the_view_not_the_lookup() {
        let claims = [Claim {
            mapping: "staff".into(),
            priority: 1,
        }];
        assert_eq!(owner_with(("staff", 100), false, &claims), None);
    }

    #[test]
    fn lookups_cover_leaving_actives_and_foreign_users_only() {
        let snapshot = vec![
            active("leaving", MAPPING),
            preserved("leaving-preserved", MAPPING, Reason::Unmapped, t(0)),
            active("staying", MAPPING),
            active("foreign", "sales"),
            active("foreign-elsewhere", "sales"),
            manual_record("manual-in-view", "m", "m@example.com"),
        ];
        let view = DirectoryView::full([
            entry("staying"),
            entry("foreign"),
            entry("manual-in-view"),
            entry("new-user"),
        ]);
        assert_eq!(
            claim_lookups_needed(&snapshot, &view, &mapping()),
            vec!["foreign".to_owned(), "leaving".to_owned()]
        );
    }

    #[test]
    fn incremental_lookups_only_for_removed_anchors() {
        let snapshot = vec![active("removed", MAPPING), active("absent", MAPPING)];
        let view = DirectoryView::incremental([], ["removed".to_owned()]);
        assert_eq!(
            claim_lookups_needed(&snapshot, &view, &mapping()),
            vec!["removed".to_owned()]
        );
    }

    #[test]
    fn incomplete_view_needs_no_lookups() {
        let snapshot = vec![active("leaving", MAPPING)];
        let view = DirectoryView::full([]).incomplete();
        assert!(claim_lookups_needed(&snapshot, &view, &mapping()).is_empty());
    }
}
