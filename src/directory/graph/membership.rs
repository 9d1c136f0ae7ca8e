//! Membership changes of the groups a scope selects, for incremental reads.
//!
//! Graph's users delta does not report a user joining or leaving a group: that
//! is a change of the group. The groups delta does, per group and for direct
//! members only (`members@delta`, users and groups alike; Graph offers no delta
//! of transitive members). So a scope's groups delta tracks the scope's groups
//! and every group nested in them, by id (`$filter=id eq '…' or …`): a user
//! added to or removed from any of them is checked again (`checkMemberGroups`,
//! which follows nesting), and a group added to or removed from any of them
//! changes the tree itself, which only a full read can rebuild.
//!
//! Its link starts at `$deltatoken=latest`: no listing, only a position.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::api::Call;
use super::error::{GraphError, Permission};
use super::query::with_query;
use super::source::GraphSource;

/// The most groups one groups delta tracks: Graph's limit on the ids of its
/// `$filter`.
pub const MAX_TRACKED_GROUPS: usize = 50;

/// Where the groups delta of a scope continues, and which groups it tracks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsLink {
    pub url: String,
    pub tracked: Vec<String>,
}

/// What a round of the groups delta found.
pub enum MembershipRound {
    /// The users whose direct membership of a tracked group changed, and the
    /// link for the next round.
    Changes {
        users: BTreeSet<String>,
        next: GroupsLink,
    },
    /// The groups tree changed, or the link expired: read the whole scope.
    FullReadNeeded(String),
}

impl GraphSource {
    /// A groups delta link for `groups` and the groups nested in them, from now
    /// on; `None` when they are more than one delta can track (their
    /// membership changes then show at the next full read).
    pub(crate) async fn groups_link(
        &self,
        groups: &[String],
    ) -> Result<Option<GroupsLink>, GraphError> {
        let mut tracked: BTreeSet<String> = groups.iter().cloned().collect();
        for group in groups {
            tracked.extend(self.nested_groups(group).await?);
        }
        if tracked.len() > MAX_TRACKED_GROUPS {
            tracing::warn!(
                groups = tracked.len(),
                "the scope's groups are more than one groups delta tracks; every run of this mapping reads in full"
            );
            return Ok(None);
        }
        let tracked: Vec<String> = tracked.into_iter().collect();
        let filter = tracked
            .iter()
            .map(|id| format!("id eq '{id}'"))
            .collect::<Vec<_>>()
            .join(" or ");
        let start = with_query(
            self.api.url("groups/delta"),
            &[
                ("$select", "members"),
                ("$filter", &filter),
                ("$deltatoken", "latest"),
            ],
        );
        match self.groups_round(start, &tracked).await? {
            MembershipRound::Changes { next, .. } => Ok(Some(next)),
            MembershipRound::FullReadNeeded(reason) => Err(GraphError::read_failed(
                "starting a groups delta query",
                format!("Graph refused a new groups delta query: {reason}"),
            )),
        }
    }

    /// The membership changes since `link`.
    pub(crate) async fn membership_changes(
        &self,
        link: &GroupsLink,
    ) -> Result<MembershipRound, GraphError> {
        match Url::parse(&link.url) {
            Ok(url) if self.api.is_own(&url) => self.groups_round(url, &link.tracked).await,
            _ => Ok(MembershipRound::FullReadNeeded(
                "the groups delta link does not point to this connector's Graph endpoint".into(),
            )),
        }
    }

    /// The ids of the groups nested in `group`, at any depth.
    async fn nested_groups(&self, group: &str) -> Result<Vec<String>, GraphError> {
        let url = with_query(
            self.api.url(&format!(
                "groups/{group}/transitiveMembers/microsoft.graph.group"
            )),
            &[("$select", "id")],
        );
        let what = format!("reading the groups nested in group {group}");
        let call = Call {
            what: &what,
            permission: Permission::GroupMemberReadAll,
            advanced: false,
        };
        let mut found = Vec::new();
        self.api
            .for_each(url, call, |item| {
                match item.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => found.push(id.to_owned()),
                    _ => return Err(super::source::without_id(call.what, 1)),
                }
                Ok(())
            })
            .await?;
        Ok(found)
    }

    /// Follow a groups delta round from `start` to its deltaLink.
    async fn groups_round(
        &self,
        start: Url,
        tracked: &[String],
    ) -> Result<MembershipRound, GraphError> {
        let call = Call {
            what: "reading group membership changes (delta query)",
            permission: Permission::GroupMemberReadAll,
            advanced: false,
        };
        let mut users = BTreeSet::new();
        // The first change that only a full read can take in, if any.
        let mut full_read: Option<&'static str> = None;
        let followed = self
            .follow_delta(start, call, |group| {
                let members = group.get("members@delta").and_then(Value::as_array);
                for member in members.into_iter().flatten() {
                    let Some(id) = member["id"].as_str().filter(|id| !id.is_empty()) else {
                        // A change that names nobody: the round cannot be applied.
                        full_read.get_or_insert(
                            "a group membership change came without the member's id",
                        );
                        continue;
                    };
                    match member["@odata.type"].as_str() {
                        Some("#microsoft.graph.user") => {
                            users.insert(id.to_owned());
                        }
                        // A nested group added or removed changes the tree; a
                        // device or contact is nobody a mapping reads.
                        Some("#microsoft.graph.group") => {
                            full_read.get_or_insert(
                                "a group was added to or removed from a group the mapping selects",
                            );
                        }
                        _ => {}
                    }
                }
                Ok(())
            })
            .await?;
        Ok(match (followed, full_read) {
            (Err(reason), _) => MembershipRound::FullReadNeeded(reason),
            (Ok(_), Some(reason)) => MembershipRound::FullReadNeeded(reason.into()),
            (Ok(delta), None) => MembershipRound::Changes {
                users,
                next: GroupsLink {
                    url: delta.into(),
                    tracked: tracked.to_vec(),
                },
            },
        })
    }
}

/// The user properties a `$filter` tests (`department eq 'Sales'`,
/// `startswith(jobTitle,'Eng')`, `employeeOrgData/division eq …`), so that a
/// delta that `$select`s them reports a user whose change moves it into or out
/// of the filter.
pub fn filter_properties(filter: &str) -> Vec<String> {
    const OPERATORS: [&str; 7] = ["eq", "ne", "gt", "ge", "lt", "le", "in"];
    const FUNCTIONS: [&str; 3] = ["startswith", "endswith", "contains"];
    let mut found = BTreeSet::new();
    // Outside quoted strings, a name before a comparison, or a function's first
    // argument, is a property (its top level, for a path).
    let mut text = String::new();
    let mut quoted = false;
    for c in filter.chars() {
        if c == '\'' {
            quoted = !quoted;
            text.push(' ');
        } else if quoted {
            continue;
        } else if c == '(' || c == ')' || c == ',' {
            text.push(' ');
            text.push(c);
            text.push(' ');
        } else {
            text.push(c);
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        let name = word.split('/').next().unwrap_or_default();
        let is_name = !name.is_empty()
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name {
            continue;
        }
        let before_operator = words
            .get(i + 1)
            .is_some_and(|next| OPERATORS.contains(&next.to_ascii_lowercase().as_str()));
        let function_argument = i >= 2
            && words[i - 1] == "("
            && FUNCTIONS.contains(&words[i - 2].to_ascii_lowercase().as_str());
        if (before_operator || function_argument)
            && !OPERATORS.contains(&name.to_ascii_lowercase().as_str())
        {
            found.insert(name.to_owned());
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filters_properties_are_the_names_it_compares() {
        assert_eq!(filter_properties("department eq 'Sales'"), ["department"]);
        assert_eq!(
            filter_properties(
                "department eq 'Sales and eq Marketing' and startswith(jobTitle,'Eng') or employeeOrgData/division ne 'x'"
            ),
            ["department", "employeeOrgData", "jobTitle"]
        );
        assert_eq!(
            filter_properties("accountEnabled eq true and userType in ('Member','Guest')"),
            ["accountEnabled", "userType"]
        );
        assert!(filter_properties("'department' eq 'x'").is_empty());
    }
}
