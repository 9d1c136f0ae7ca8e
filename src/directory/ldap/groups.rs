//! The groups a mapping selects (`memberOf`), with the groups nested in them,
//! read from the directory: what decides who is a member, and what says
//! whether a membership changed since a cursor.
//!
//! Joining or leaving a group changes the group entry, not the user:
//! OpenLDAP's memberof overlay writes the member's `memberOf` without a
//! change syncrepl reports, and AD's `memberOf` is a back link that does not
//! bump the member's `uSNChanged`. An incremental read therefore looks at the
//! groups themselves: each one's `entryCSN` (OpenLDAP) or `uSNChanged` (AD)
//! against the cursor.
//!
//! - Active Directory: one search per naming context for the selected groups
//!   and every group below them (the in-chain rule on `memberOf`).
//! - OpenLDAP: the memberof overlay keeps direct memberships only, so the
//!   tree is walked a level at a time, groups whose `memberOf` names a group
//!   already found, until no new group turns up. The scope's membership
//!   clause then names every group of the tree, so nested members count.

use std::collections::BTreeMap;

use super::connection::{SearchRequest, Session};
use super::error::LdapError;
use super::filter::{escape_filter_value, normalize_dn, or_filter};
use super::flavor::Flavor;
use super::settings::{SearchScope, ValidSettings};

/// How deep an OpenLDAP group tree is walked: a bound on the searches, far
/// beyond any real nesting (a cycle ends the walk earlier, by itself).
const MAX_DEPTH: usize = 32;

/// Group object classes on OpenLDAP, as the memberof overlay knows them.
const OPENLDAP_GROUPS: &str = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))";

/// The selected groups and the groups nested in them, as the directory holds
/// them now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct GroupTree {
    /// By normalised DN: the DN as the server spelled it and the group's
    /// change marker (`entryCSN` or `uSNChanged`) when it was readable.
    groups: BTreeMap<String, (String, Option<String>)>,
    /// Selected groups the directory does not hold (deleted, renamed, or
    /// not visible to the bind account).
    missing: Vec<String>,
}

impl GroupTree {
    /// Read the tree below `selected` (DNs as the mapping names them). No
    /// search when nothing is selected, or for the Generic flavor, whose
    /// membership attribute is the server's own business.
    pub async fn read(
        session: &mut Session,
        settings: &ValidSettings,
        selected: &[String],
    ) -> Result<GroupTree, LdapError> {
        let mut tree = GroupTree::default();
        if selected.is_empty() || settings.flavor == Flavor::Generic {
            return Ok(tree);
        }
        let root = session.root_dse(&["namingContexts"]).await?;
        let contexts: Vec<String> = root.texts("namingContexts").map(str::to_owned).collect();
        let mut by_context: BTreeMap<String, Vec<&String>> = BTreeMap::new();
        for group in selected {
            by_context
                .entry(naming_context(&contexts, group))
                .or_default()
                .push(group);
        }
        for (context, groups) in &by_context {
            match settings.flavor {
                Flavor::ActiveDirectory => tree.read_ad(session, settings, context, groups).await?,
                _ => {
                    tree.walk_openldap(session, settings, context, groups)
                        .await?
                }
            }
        }
        tree.missing = selected
            .iter()
            .filter(|g| !tree.groups.contains_key(&key(g)))
            .cloned()
            .collect();
        if !tree.missing.is_empty() {
            tracing::warn!(groups = ?tree.missing, "memberOf groups of a mapping are not in the directory");
        }
        Ok(tree)
    }

    /// Every group of the tree, as the server spells its DN.
    pub fn dns(&self) -> impl Iterator<Item = &String> {
        self.groups.values().map(|(dn, _)| dn)
    }

    /// Whether any group of the tree changed after a cursor, as
    /// `changed_after` judges a marker. A group without a readable marker,
    /// and a selected group that is gone, count as changed: the membership
    /// must then be read again.
    pub fn changed(&self, changed_after: impl Fn(&str) -> bool) -> bool {
        !self.missing.is_empty()
            || self
                .groups
                .values()
                .any(|(_, marker)| marker.as_deref().is_none_or(&changed_after))
    }

    fn add(&mut self, dn: String, marker: Option<String>) -> bool {
        self.groups.insert(key(&dn), (dn, marker)).is_none()
    }

    async fn read_ad(
        &mut self,
        session: &mut Session,
        settings: &ValidSettings,
        context: &str,
        groups: &[&String],
    ) -> Result<(), LdapError> {
        let clauses: Vec<String> = groups
            .iter()
            .flat_map(|g| {
                let value = escape_filter_value(g.trim());
                [
                    format!("(distinguishedName={value})"),
                    format!("(memberOf:1.2.840.113556.1.4.1941:={value})"),
                ]
            })
            .collect();
        let filter = format!(
            "(&(objectClass=group){})",
            or_filter(&clauses).unwrap_or_default()
        );
        self.search(session, settings, context, &filter, "uSNChanged")
            .await?;
        Ok(())
    }

    async fn walk_openldap(
        &mut self,
        session: &mut Session,
        settings: &ValidSettings,
        context: &str,
        groups: &[&String],
    ) -> Result<(), LdapError> {
        // The selected groups themselves, then a level of nesting per search.
        let mut clauses: Vec<String> = groups
            .iter()
            .map(|g| format!("(entryDN={})", escape_filter_value(g.trim())))
            .collect();
        for _ in 0..MAX_DEPTH {
            let Some(any) = or_filter(&clauses) else {
                return Ok(());
            };
            let filter = format!("(&{OPENLDAP_GROUPS}{any})");
            let found = self
                .search(session, settings, context, &filter, "entryCSN")
                .await?;
            clauses = found
                .iter()
                .map(|dn| format!("(memberOf={})", escape_filter_value(dn)))
                .collect();
        }
        tracing::warn!(
            context,
            "memberOf groups nest deeper than {MAX_DEPTH} levels; deeper groups are left out"
        );
        Ok(())
    }

    /// One search for groups; the DNs it added to the tree.
    async fn search(
        &mut self,
        session: &mut Session,
        settings: &ValidSettings,
        context: &str,
        filter: &str,
        marker: &str,
    ) -> Result<Vec<String>, LdapError> {
        let attributes = [marker.to_owned()];
        let request = SearchRequest {
            base_dn: context,
            scope: SearchScope::Subtree,
            filter,
            attributes: &attributes,
            page_size: settings.page_size,
        };
        let mut added = Vec::new();
        session
            .paged_search(&request, |entry| {
                let value = entry.first_text(marker).map(str::to_owned);
                if self.add(entry.dn.clone(), value) {
                    added.push(entry.dn);
                }
            })
            .await?;
        Ok(added)
    }
}

fn key(dn: &str) -> String {
    normalize_dn(dn).unwrap_or_else(|_| dn.trim().to_lowercase())
}

/// The naming context that holds `group`: the longest of `contexts` it ends
/// in. A server that names none holding it: the `dc=` components of the DN.
fn naming_context(contexts: &[String], group: &str) -> String {
    let group_key = key(group);
    let holding = contexts
        .iter()
        .filter(|c| {
            let c = key(c);
            !c.is_empty() && (group_key == c || group_key.ends_with(&format!(",{c}")))
        })
        .max_by_key(|c| c.len());
    if let Some(context) = holding {
        return context.clone();
    }
    let domain: Vec<&str> = group
        .split(',')
        .map(str::trim)
        .skip_while(|rdn| !rdn.to_ascii_lowercase().starts_with("dc="))
        .collect();
    if domain.is_empty() {
        group.trim().to_owned()
    } else {
        domain.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_searched_for_in_the_naming_context_that_holds_it() {
        let contexts = vec![
            "DC=corp,DC=example".to_owned(),
            "CN=Configuration,DC=corp,DC=example".to_owned(),
            "DC=other".to_owned(),
        ];
        assert_eq!(
            naming_context(&contexts, "CN=G,OU=Groups,DC=corp,DC=example"),
            "DC=corp,DC=example"
        );
        assert_eq!(
            naming_context(&contexts, "cn=x,cn=configuration,dc=corp,dc=example"),
            "CN=Configuration,DC=corp,DC=example"
        );
        // Not "DC=other" for a DN that merely ends in the same letters.
        assert_eq!(naming_context(&contexts, "cn=g,dc=another"), "dc=another");
        assert_eq!(naming_context(&[], "cn=g,ou=x"), "cn=g,ou=x");
    }

    #[test]
    fn a_changed_unmarked_or_missing_group_means_the_membership_changed() {
        let mut tree = GroupTree::default();
        tree.add("cn=a,dc=x".into(), Some("5".into()));
        tree.add("cn=b,dc=x".into(), Some("3".into()));
        let after = |usn: u64| move |m: &str| m.parse::<u64>().unwrap() > usn;
        assert!(!tree.changed(after(5)));
        assert!(tree.changed(after(4)));
        tree.add("cn=c,dc=x".into(), None);
        assert!(tree.changed(after(5)), "a group without a marker");
        let mut gone = GroupTree::default();
        gone.missing.push("cn=d,dc=x".into());
        assert!(gone.changed(after(0)));
        // The same group spelled another way is one group.
        assert!(!tree.add("CN=A, DC=X".into(), Some("9".into())));
        assert_eq!(tree.dns().count(), 3);
    }
}
