//! Push channels (the SyncPolicy's push mode): a search the directory keeps
//! open, answered with each change below a mapping's base DN as it is made.
//!
//! - OpenLDAP: a syncrepl refreshAndPersist search from the server's present
//!   cookie (module `syncrepl`), where the syncprov overlay serves it;
//! - Active Directory (and Samba AD): a change notification search (module
//!   `notify`);
//! - other servers: none.
//!
//! A channel only says that something changed, never what: the run it leads
//! to reads the changes as every incremental run does, through the same
//! planner and rules. It watches every entry below the base DN, so that a
//! change to a group kept there is seen as well as one to a user, and the
//! children of the entries that hold the scope's groups (those `memberOf`
//! names and those nested in them, as they were when the channel opened) kept
//! elsewhere, one search each: joining or leaving a group changes the group,
//! not the user. A change to an entry the mapping does not select costs one
//! incremental run that finds nothing to do.

use std::collections::HashSet;

use futures::future::{FutureExt, select_all};
use ldap3::controls::RawControl;
use ldap3::{LdapResult, ResultEntry, Scope};
use tokio::sync::mpsc;

use super::{IncrementalSource, syncrepl};
use crate::directory::ldap::connection::{ControlSearch, Session};
use crate::directory::ldap::error::LdapError;
use crate::directory::ldap::filter::{dn_within, normalize_dn, parent_dn};
use crate::directory::ldap::flavor::Flavor;
use crate::directory::ldap::groups::GroupTree;
use crate::directory::ldap::scope_read::ScopeReader;
use crate::directory::ldap::settings::{LdapScope, SearchScope};

const GENERIC_HAS_NO_PUSH: &str = "the Generic flavor has no push channel: set flavor OpenLDAP or ActiveDirectory if the server is one";

/// At most this many searches beside the scope's own, for the entries that hold
/// its groups: each is a connection the directory keeps open.
const MAX_GROUP_ROOTS: usize = 8;

/// Where a channel for a scope below `base_dn` (within `scope`) listens: the
/// scope itself, then, once each, the entries whose children are `groups` not
/// within it (one level below each: a group's parent holds its siblings too),
/// at most [`MAX_GROUP_ROOTS`] of them; and how many groups were left out.
fn push_roots(
    base_dn: &str,
    scope: SearchScope,
    groups: &[String],
) -> (Vec<(String, SearchScope)>, usize) {
    let same = |a: &str, b: &str| normalize_dn(a).ok() == normalize_dn(b).ok();
    let mut roots = vec![(base_dn.to_owned(), scope)];
    let mut left_out = 0;
    for group in groups {
        let Some(parent) = parent_dn(group) else {
            continue;
        };
        let searched = match scope {
            SearchScope::Subtree => dn_within(group, base_dn),
            SearchScope::OneLevel => same(&parent, base_dn),
        };
        if searched || roots.iter().skip(1).any(|(dn, _)| same(dn, &parent)) {
            continue;
        }
        if roots.len() > MAX_GROUP_ROOTS {
            left_out += 1;
        } else {
            roots.push((parent, SearchScope::OneLevel));
        }
    }
    (roots, left_out)
}

/// A push search with `control` of every entry below `base_dn` within
/// `scope` (the only filter AD takes), asking for no attributes: the run reads
/// what it needs. Every message goes to `on_message` until the search ends.
pub(super) async fn push_search<E>(
    session: &mut Session,
    base_dn: &str,
    scope: Scope,
    control: RawControl,
    on_message: impl FnMut(ResultEntry) -> Result<(), E>,
) -> Result<Result<LdapResult, E>, LdapError> {
    let no_attributes = ["1.1".to_owned()];
    let search = ControlSearch {
        base_dn,
        scope,
        filter: "(objectClass=*)",
        attributes: &no_attributes,
        controls: vec![control],
    };
    session.persistent_search(search, on_message).await
}

/// What a push channel reports while it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEvent {
    /// The directory took the search: changes from now on are reported.
    Listening,
    /// Something below the base DN changed.
    Changed,
}

/// Why a push channel closed without a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEnd {
    /// The directory ended the search (its cookie expired, it restarted the
    /// database): listen again, and read what changed in between.
    RefreshRequired,
    /// The directory offers no push for this scope; the message says why and
    /// what would change that.
    NotSupported(String),
}

impl IncrementalSource {
    /// Whether this flavor has a push channel at all.
    pub fn supports_push(&self) -> bool {
        self.flavor() != Flavor::Generic
    }

    /// Open a push channel for `scope` and report to `on_event` until it
    /// closes. An `Err` is a lost or refused connection: retry later. Changes
    /// made while no channel is open are not reported by the next one; read
    /// them with an incremental read.
    pub async fn listen(
        &self,
        scope: &LdapScope,
        mut on_event: impl FnMut(PushEvent),
    ) -> Result<PushEnd, LdapError> {
        let settings = &self.connector.settings;
        let reader = ScopeReader::new(settings, scope)?;
        if settings.flavor == Flavor::Generic {
            return Ok(PushEnd::NotSupported(GENERIC_HAS_NO_PUSH.into()));
        }
        let groups = if scope.member_of.is_empty() {
            Vec::new()
        } else {
            let mut session = self.connector.open().await?;
            let tree = GroupTree::read(&mut session, settings, &scope.member_of).await;
            session.close().await;
            tree?.dns().cloned().collect()
        };
        let (roots, left_out) = push_roots(reader.base_dn(), reader.scope(), &groups);
        if left_out > 0 {
            tracing::warn!(
                base_dn = reader.base_dn(),
                watched = roots.len() - 1,
                left_out,
                "the scope's groups are kept in more places than a push channel watches; changes to the groups left out are seen by scheduled runs"
            );
        }
        // One search per root, each on a session of its own; the channel is
        // listening once all of them are, and ends when the first one ends.
        let (events, mut reported) = mpsc::unbounded_channel();
        let searches = roots.iter().enumerate().map(|(i, (dn, search_scope))| {
            let events = events.clone();
            self.listen_at(dn, (*search_scope).into(), move |event| {
                let _ = events.send((i, event));
            })
            .boxed()
        });
        let mut searches = select_all(searches);
        let mut listening = HashSet::new();
        loop {
            tokio::select! {
                (end, _, _) = &mut searches => return end,
                Some((i, event)) = reported.recv() => match event {
                    PushEvent::Listening => {
                        if listening.insert(i) && listening.len() == roots.len() {
                            on_event(PushEvent::Listening);
                        }
                    }
                    PushEvent::Changed => on_event(PushEvent::Changed),
                },
            }
        }
    }

    /// One push search below `base_dn`, on a session of its own.
    async fn listen_at(
        &self,
        base_dn: &str,
        search_scope: Scope,
        on_event: impl FnMut(PushEvent),
    ) -> Result<PushEnd, LdapError> {
        match self.connector.settings.flavor {
            Flavor::OpenLdap => {
                let mut session = self.connector.open().await?;
                let Some(cookie) = syncrepl::current_cookie(&mut session, base_dn).await? else {
                    session.close().await;
                    return Ok(PushEnd::NotSupported(format!(
                        "the server offers no syncrepl for {base_dn}: enable the syncprov overlay on its database, and let the bind account use it"
                    )));
                };
                let end = syncrepl::persist(&mut session, base_dn, search_scope, &cookie, on_event)
                    .await?;
                session.close().await;
                Ok(end)
            }
            Flavor::ActiveDirectory => {
                let mut session = self.connector.open().await?;
                let end =
                    super::notify::notifications(&mut session, base_dn, search_scope, on_event)
                        .await?;
                session.close().await;
                Ok(end)
            }
            Flavor::Generic => Ok(PushEnd::NotSupported(GENERIC_HAS_NO_PUSH.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(roots: &[(String, SearchScope)]) -> Vec<(&str, SearchScope)> {
        roots.iter().map(|(dn, s)| (dn.as_str(), *s)).collect()
    }

    #[test]
    fn groups_kept_outside_the_scope_are_watched_through_their_parents_once_each() {
        let base = "ou=People,dc=example,dc=org";
        let groups = [
            "cn=Staff,ou=Groups,dc=example,dc=org".to_owned(),
            "cn=Nested,OU=groups,dc=example,dc=org".to_owned(),
            "cn=Local,ou=People,dc=example,dc=org".to_owned(),
            "cn=Deep,ou=Teams,ou=People,dc=example,dc=org".to_owned(),
        ];
        assert_eq!(
            dns(&push_roots(base, SearchScope::Subtree, &groups).0),
            [
                (base, SearchScope::Subtree),
                ("ou=Groups,dc=example,dc=org", SearchScope::OneLevel),
            ]
        );
        // One level below the base: a group deeper down is not in that search.
        assert_eq!(
            dns(&push_roots(base, SearchScope::OneLevel, &groups).0),
            [
                (base, SearchScope::OneLevel),
                ("ou=Groups,dc=example,dc=org", SearchScope::OneLevel),
                (
                    "ou=Teams,ou=People,dc=example,dc=org",
                    SearchScope::OneLevel
                ),
            ]
        );
        assert_eq!(
            dns(&push_roots(base, SearchScope::Subtree, &[]).0),
            [(base, SearchScope::Subtree)]
        );
    }

    #[test]
    fn a_channel_watches_at_most_eight_places_beside_its_scope() {
        let groups: Vec<String> = (0..11)
            .map(|i| format!("cn=g,ou=Groups{i},dc=example,dc=org"))
            .collect();
        let (roots, left_out) =
            push_roots("ou=People,dc=example,dc=org", SearchScope::Subtree, &groups);
        assert_eq!(roots.len(), 1 + MAX_GROUP_ROOTS);
        assert_eq!(left_out, 11 - MAX_GROUP_ROOTS);
        assert_eq!(roots[8].0, "ou=Groups7,dc=example,dc=org");
    }
}
