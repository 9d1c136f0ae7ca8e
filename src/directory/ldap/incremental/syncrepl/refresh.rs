//! A syncrepl refreshOnly search from a cookie, and the one that finds the
//! server's present cookie: the messages of the refresh, gathered as they
//! arrive, and its result read as RFC 4533 and slapd mean it.

use std::collections::BTreeSet;
use std::convert::Infallible;

use jiff::Timestamp;
use ldap3::{ResultEntry, Scope};

use super::controls::{EntryState, SyncInfo, SyncState, sync_done, sync_request};
use super::cookie::OpenLdapCookie;
use crate::directory::ldap::connection::{ControlSearch, Session};
use crate::directory::ldap::entry::RawEntry;
use crate::directory::ldap::error::{LdapError, describe_result};
use crate::directory::ldap::incremental::FullReadReason;
use crate::directory::ldap::incremental::cursor::is_cookie_text;
use crate::directory::ldap::scope_read::{Collected, ScopeReader};

/// Result codes of a refresh that mean "this cookie cannot be continued from".
/// 4096 is e-syncRefreshRequired (RFC 4533); OpenLDAP answers 53
/// (unwillingToPerform, "consumer state is newer than provider") for a cookie
/// from the future, as after a restore from backup.
const SYNC_REFRESH_REQUIRED: u32 = 4096;
const UNWILLING_TO_PERFORM: u32 = 53;
/// unavailableCriticalExtension: no syncprov on this database.
const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;

/// The attribute that tells when an entry last changed.
const ENTRY_CSN: &str = "entryCSN";

/// The outcome of a refresh from a cookie.
pub(in crate::directory::ldap::incremental) enum Refresh {
    Changes {
        collected: Collected,
        /// The entryUUIDs of entries deleted or no longer in scope.
        removed: BTreeSet<String>,
        cookie: String,
    },
    FullReadRequired(FullReadReason),
}

/// The cookie that marks the server's present state, or `None` when the
/// server offers no syncrepl for this base (no syncprov overlay, or the bind
/// account may not use it). A refresh with no cookie over a filter that
/// matches nothing costs the server one base entry and returns just that.
pub(in crate::directory::ldap::incremental) async fn current_cookie(
    session: &mut Session,
    base_dn: &str,
) -> Result<Option<String>, LdapError> {
    let no_attributes = ["1.1".to_owned()];
    let search = ControlSearch {
        base_dn,
        scope: Scope::Base,
        filter: "(!(objectClass=*))",
        attributes: &no_attributes,
        controls: vec![sync_request(None)],
    };
    let Ok(result) = session
        .search_with_controls(search, |_| Ok::<(), Infallible>(()))
        .await?;
    if result.rc != 0 {
        tracing::warn!(
            base_dn,
            result = %describe_result(result.rc, &result.text),
            "the server refused a syncrepl refresh; incremental reads are off for this scope"
        );
        return Ok(None);
    }
    let cookie = match sync_done(&result) {
        Ok(Some(done)) => done.cookie.and_then(|c| String::from_utf8(c).ok()),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(base_dn, error = %e, "the server's Sync Done control is malformed");
            None
        }
    };
    match cookie {
        Some(cookie) if is_cookie_text(&cookie) && OpenLdapCookie::parse(&cookie).is_some() => {
            Ok(Some(cookie))
        }
        _ => {
            tracing::warn!(
                base_dn,
                "the server returned no usable syncrepl cookie; incremental reads are off for this scope"
            );
            Ok(None)
        }
    }
}

/// Refresh `reader`'s scope from `cookie`: the changes since, projected as
/// they arrive. Entries come back with `enabled` from their own attributes
/// only; the caller applies the disabled filter.
pub(in crate::directory::ldap::incremental) async fn refresh_since(
    session: &mut Session,
    reader: &ScopeReader<'_>,
    cookie: &str,
    now: Timestamp,
) -> Result<Refresh, LdapError> {
    // slapd silently answers a cookie it cannot read (no rid, a damaged CSN)
    // with the whole scope, as if none had been sent; such a cookie never
    // goes out.
    let Some(sent) = OpenLdapCookie::parse(cookie) else {
        return Ok(Refresh::FullReadRequired(FullReadReason::CursorRejected));
    };
    let mut attributes = reader.attributes().to_vec();
    attributes.push(ENTRY_CSN.to_owned());
    let search = ControlSearch {
        base_dn: reader.base_dn(),
        scope: reader.scope().into(),
        filter: reader.filter(),
        attributes: &attributes,
        controls: vec![sync_request(Some(cookie))],
    };
    let mut state = RefreshState {
        reader,
        sent: &sent,
        now,
        collected: Collected::default(),
        removed: BTreeSet::new(),
        latest_cookie: None,
    };
    let result = match session
        .search_with_controls(search, |m| state.handle(m))
        .await?
    {
        Ok(result) => result,
        Err(Stop::FullReadRequired(reason)) => return Ok(Refresh::FullReadRequired(reason)),
        Err(Stop::Malformed(problem)) => return Err(malformed(reader.base_dn(), problem)),
    };
    match result.rc {
        0 => {}
        SYNC_REFRESH_REQUIRED | UNWILLING_TO_PERFORM => {
            tracing::info!(
                base_dn = reader.base_dn(),
                result = %describe_result(result.rc, &result.text),
                "the server refused the sync cookie"
            );
            return Ok(Refresh::FullReadRequired(FullReadReason::CursorRejected));
        }
        // The refresh is not paged (syncprov does not page), so a burst of
        // changes can pass the bind account's size limit; a full read pages.
        4 | 11 => return Ok(Refresh::FullReadRequired(FullReadReason::TooManyChanges)),
        UNAVAILABLE_CRITICAL_EXTENSION => {
            return Ok(Refresh::FullReadRequired(FullReadReason::NotSupported));
        }
        // A time limit (3) or any other failure.
        rc => return Err(session.result_error(reader.base_dn(), rc, result.text)),
    }
    let done = match sync_done(&result) {
        Ok(Some(done)) => done,
        Ok(None) => return Ok(Refresh::FullReadRequired(FullReadReason::NotSupported)),
        Err(problem) => return Err(malformed(reader.base_dn(), problem)),
    };
    if !done.refresh_deletes {
        // A present phase (RFC 4533 3.3.1): entries left out are deleted.
        return Ok(Refresh::FullReadRequired(
            FullReadReason::HistoryUnavailable,
        ));
    }
    // The newest cookie the server gave; none at all means nothing changed
    // anywhere in the database.
    let cookie = match done.cookie.or(state.latest_cookie) {
        None => cookie.to_owned(),
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(text) if is_cookie_text(&text) && OpenLdapCookie::parse(&text).is_some() => text,
            // slapd answers an unreadable cookie with an empty one.
            _ => return Ok(Refresh::FullReadRequired(FullReadReason::CursorRejected)),
        },
    };
    Ok(Refresh::Changes {
        collected: state.collected,
        removed: state.removed,
        cookie,
    })
}

fn malformed(base_dn: &str, problem: &'static str) -> LdapError {
    LdapError::SearchFailed {
        base_dn: base_dn.to_owned(),
        detail: format!("the server sent a malformed syncrepl message: {problem}"),
        source: None,
    }
}

/// Why a refresh stopped before its end.
enum Stop {
    FullReadRequired(FullReadReason),
    Malformed(&'static str),
}

/// What a refresh has gathered so far.
struct RefreshState<'r> {
    reader: &'r ScopeReader<'r>,
    sent: &'r OpenLdapCookie,
    now: Timestamp,
    collected: Collected,
    removed: BTreeSet<String>,
    latest_cookie: Option<Vec<u8>>,
}

impl RefreshState<'_> {
    fn handle(&mut self, message: ResultEntry) -> Result<(), Stop> {
        if message.is_ref() {
            // Continuation references: other servers' parts are not read.
            return Ok(());
        }
        if message.is_intermediate() {
            return match SyncInfo::decode(message.0).map_err(Stop::Malformed)? {
                None => Ok(()),
                Some(info) => self.on_sync_info(info),
            };
        }
        let state = SyncState::of_entry(&message).map_err(Stop::Malformed)?;
        if state.cookie.is_some() {
            self.latest_cookie = state.cookie;
        }
        match state.state {
            EntryState::Present => Err(Stop::FullReadRequired(FullReadReason::HistoryUnavailable)),
            EntryState::Delete => {
                self.removed.insert(state.entry_uuid);
                Ok(())
            }
            EntryState::Add | EntryState::Modify => {
                let entry = RawEntry::from_result(message).map_err(Stop::Malformed)?;
                if let Some(csn) = entry.first_text(ENTRY_CSN)
                    && !self.sent.precedes(csn)
                {
                    // The server sent an entry unchanged since the cookie: it
                    // did not continue from it, but started over.
                    return Err(Stop::FullReadRequired(FullReadReason::CursorRejected));
                }
                self.collected
                    .add(self.reader.projection().project(&entry, self.now));
                Ok(())
            }
        }
    }

    fn on_sync_info(&mut self, info: SyncInfo) -> Result<(), Stop> {
        match info {
            SyncInfo::NewCookie(cookie) => self.latest_cookie = Some(cookie),
            SyncInfo::RefreshDelete { cookie } => {
                if cookie.is_some() {
                    self.latest_cookie = cookie;
                }
            }
            SyncInfo::RefreshPresent { .. } => {
                return Err(Stop::FullReadRequired(FullReadReason::HistoryUnavailable));
            }
            SyncInfo::IdSet {
                cookie,
                refresh_deletes,
                uuids,
            } => {
                if !refresh_deletes {
                    return Err(Stop::FullReadRequired(FullReadReason::HistoryUnavailable));
                }
                if cookie.is_some() {
                    self.latest_cookie = cookie;
                }
                self.removed.extend(uuids);
            }
        }
        Ok(())
    }
}
