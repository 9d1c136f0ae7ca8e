//! Which read a run needs. Incremental reads return only what changed in the
//! directory, so a decision that waits for the directory's word on a user whose
//! entry did not change needs the whole scope.

use super::model::{MappingContext, Reason, State, UserRecord};

/// Why this mapping's run must read the whole scope even though an incremental
/// read is allowed; `None` when an incremental read serves.
///
/// An admin who lifts a manual preserve (`spec.preserve: false`) leaves the user
/// Preserved with reason Manual; only the directory can say whether the user is
/// enabled and matched again (rule 4), and an incremental read says nothing about
/// an entry that did not change.
pub fn full_read_needed(snapshot: &[UserRecord], mapping: &MappingContext) -> Option<String> {
    let lifted = snapshot
        .iter()
        .filter(|r| r.is_owned_by(&mapping.connector, &mapping.name))
        .filter(|r| {
            r.state == State::Preserved && r.reason == Some(Reason::Manual) && !r.manual_preserve
        })
        .count();
    (lifted > 0).then(|| {
        format!("{lifted} user(s) had a manual preserve lifted; the directory decides whether they are enabled again")
    })
}

/// The anchors of the users the store holds as matched by `mapping`'s scope:
/// its live records, but those it preserved because no mapping matched them.
/// An incremental read compares a changed group's members with these.
pub fn anchors_in_scope(snapshot: &[UserRecord], mapping: &MappingContext) -> Vec<String> {
    snapshot
        .iter()
        .filter(|r| r.is_owned_by(&mapping.connector, &mapping.name) && r.is_live())
        .filter(|r| !(r.state == State::Preserved && r.reason == Some(Reason::Unmapped)))
        .map(|r| r.anchor.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::{MAPPING, active, deleted, mapping, now, preserved};

    #[test]
    fn a_lifted_manual_preserve_needs_a_full_read() {
        let mut record = preserved("a1", MAPPING, Reason::Manual, now());
        record.manual_preserve = true;
        assert_eq!(
            full_read_needed(std::slice::from_ref(&record), &mapping()),
            None,
            "still preserved by the admin: nothing to ask the directory"
        );
        record.manual_preserve = false;
        assert!(full_read_needed(std::slice::from_ref(&record), &mapping()).is_some());
        let other = UserRecord {
            mapping: Some("other".into()),
            ..record.clone()
        };
        assert_eq!(
            full_read_needed(&[other], &mapping()),
            None,
            "another mapping's user"
        );
        let disabled = preserved("a2", MAPPING, Reason::DisabledInDirectory, now());
        assert_eq!(full_read_needed(&[disabled], &mapping()), None);
    }

    #[test]
    fn the_users_in_scope_are_the_mappings_live_records_not_preserved_as_unmapped() {
        let snapshot = vec![
            active("a1", MAPPING),
            preserved("a2", MAPPING, Reason::DisabledInDirectory, now()),
            preserved("a3", MAPPING, Reason::Manual, now()),
            preserved("a4", MAPPING, Reason::Unmapped, now()),
            deleted("a5", MAPPING, now()),
            active("a6", "other"),
        ];
        assert_eq!(
            anchors_in_scope(&snapshot, &mapping()),
            ["a1", "a2", "a3"],
            "a user preserved as unmapped is not in scope: if it is again, it must be read"
        );
    }
}
