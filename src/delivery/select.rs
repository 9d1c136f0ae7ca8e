//! Which registry users a target receives (`spec.users`), as a pure predicate over
//! a record and the labels the registry gives it (the same in both stores).

use std::collections::BTreeMap;

use crate::core::UserRecord;

/// One `matchExpressions` requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// `spec.users`, as plain values. Every part that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub mappings: Vec<String>,
    pub profiles: Vec<String>,
    pub match_labels: BTreeMap<String, String>,
    pub requirements: Vec<Requirement>,
    /// Whether a label selector was given at all.
    pub has_selector: bool,
}

impl Selection {
    /// Whether `record`, with its registry `labels`, goes to the target.
    pub fn selects(&self, record: &UserRecord, labels: &BTreeMap<String, String>) -> bool {
        if !self.has_selector && self.mappings.is_empty() && self.profiles.is_empty() {
            return false;
        }
        let mapping_ok = self.mappings.is_empty()
            || record
                .mapping
                .as_ref()
                .is_some_and(|m| self.mappings.contains(m));
        let profile_ok = self.profiles.is_empty()
            || record
                .fields
                .profile
                .as_ref()
                .is_some_and(|p| self.profiles.contains(p));
        let labels_ok = self
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            });
        mapping_ok && profile_ok && labels_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::{self, MAPPING, PROFILE};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_part_that_is_set_must_match() {
        let r = testkit::active("a", MAPPING);
        let l = labels(&[
            ("usersync.dev/mapping", MAPPING),
            ("usersync.dev/state", "active"),
        ]);
        let by_mapping = Selection {
            mappings: vec![MAPPING.into()],
            ..Default::default()
        };
        assert!(by_mapping.selects(&r, &l));
        let other = Selection {
            mappings: vec!["contractors".into()],
            ..Default::default()
        };
        assert!(!other.selects(&r, &l));
        let both = Selection {
            mappings: vec![MAPPING.into()],
            profiles: vec!["sales".into()],
            ..Default::default()
        };
        assert!(!both.selects(&r, &l));
        let profile = Selection {
            profiles: vec![PROFILE.into()],
            ..Default::default()
        };
        assert!(profile.selects(&r, &l));
        let selector = Selection {
            has_selector: true,
            match_labels: labels(&[("usersync.dev/state", "active")]),
            requirements: vec![
                Requirement::In("usersync.dev/mapping".into(), vec![MAPPING.into()]),
                Requirement::NotIn("usersync.dev/profile".into(), vec!["x".into()]),
                Requirement::Exists("usersync.dev/mapping".into()),
                Requirement::DoesNotExist("team".into()),
            ],
            ..Default::default()
        };
        assert!(selector.selects(&r, &l));
        let mut missing = selector.clone();
        missing
            .requirements
            .push(Requirement::Exists("team".into()));
        assert!(!missing.selects(&r, &l));
        let mut wrong = selector;
        wrong
            .match_labels
            .insert("usersync.dev/state".into(), "preserved".into());
        assert!(!wrong.selects(&r, &l));
    }

    #[test]
    fn an_empty_selection_selects_nobody() {
        let r = testkit::active("a", MAPPING);
        assert!(!Selection::default().selects(&r, &BTreeMap::new()));
        // An empty label selector is a choice ("everyone"), as in Kubernetes.
        let everyone = Selection {
            has_selector: true,
            ..Default::default()
        };
        assert!(everyone.selects(&r, &BTreeMap::new()));
    }
}
