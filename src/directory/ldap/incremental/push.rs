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
//! change to a group kept there is seen as well as one to a user; a change to
//! an entry the mapping does not select costs one incremental run that finds
//! nothing to do.

use ldap3::controls::RawControl;
use ldap3::{LdapResult, ResultEntry, Scope};

use super::{IncrementalSource, syncrepl};
use crate::directory::ldap::connection::{ControlSearch, Session};
use crate::directory::ldap::error::LdapError;
use crate::directory::ldap::flavor::Flavor;
use crate::directory::ldap::scope_read::ScopeReader;
use crate::directory::ldap::settings::LdapScope;

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
        on_event: impl FnMut(PushEvent),
    ) -> Result<PushEnd, LdapError> {
        let settings = &self.connector.settings;
        let reader = ScopeReader::new(settings, scope)?;
        let (base_dn, search_scope) = (reader.base_dn(), reader.scope().into());
        match settings.flavor {
            Flavor::OpenLdap => {
                let mut session = self.connector.open().await?;
                let Some(cookie) = syncrepl::current_cookie(&mut session, base_dn).await? else {
                    session.close().await;
                    return Ok(PushEnd::NotSupported(format!(
                        "the server offers no syncrepl for {base_dn}: enable the syncprov overlay on its database, and let the bind account use it"
                    )));
                };
                let end =
                    syncrepl::persist(&mut session, base_dn, search_scope, &cookie, on_event)
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
            Flavor::Generic => Ok(PushEnd::NotSupported(
                "the Generic flavor has no push channel: set flavor OpenLDAP or ActiveDirectory if the server is one".into(),
            )),
        }
    }
}
