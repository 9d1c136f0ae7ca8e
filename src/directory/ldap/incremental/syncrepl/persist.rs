//! A syncrepl refreshAndPersist search (RFC 4533 3.3.2): after its refresh,
//! the server keeps the search open and sends each change in its scope as it
//! is made. Only the fact of a change is taken from it; what changed is read
//! by the incremental run it starts.

use ldap3::{ResultEntry, Scope};

use super::controls::{SyncInfo, SyncState, sync_request_persist};
use crate::directory::ldap::connection::Session;
use crate::directory::ldap::error::{LdapError, describe_result};
use crate::directory::ldap::incremental::push::{PushEnd, PushEvent, push_search};

/// e-syncRefreshRequired: the cookie cannot be continued from.
const SYNC_REFRESH_REQUIRED: u32 = 4096;
/// unavailableCriticalExtension: no syncprov on this database.
const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;

/// Listen from `cookie` (the server's present state) for changes below
/// `base_dn` within `scope`, telling `on_event` when the refresh is over (the
/// channel is listening) and of every change after. Returns when the server
/// ends the search.
pub(in crate::directory::ldap::incremental) async fn persist(
    session: &mut Session,
    base_dn: &str,
    scope: Scope,
    cookie: &str,
    mut on_event: impl FnMut(PushEvent),
) -> Result<PushEnd, LdapError> {
    let result = push_search(
        session,
        base_dn,
        scope,
        sync_request_persist(cookie),
        |message| on_message(message, &mut on_event),
    )
    .await?;
    let result = match result {
        Ok(result) => result,
        Err(problem) => {
            return Err(LdapError::SearchFailed {
                base_dn: base_dn.to_owned(),
                detail: format!("the server sent a malformed syncrepl message: {problem}"),
                source: None,
            });
        }
    };
    Ok(match result.rc {
        UNAVAILABLE_CRITICAL_EXTENSION => PushEnd::NotSupported(format!(
            "the server offers no syncrepl for {base_dn} ({}): enable the syncprov overlay on its database",
            describe_result(result.rc, &result.text)
        )),
        // The cookie is too old, or the server ended the search (a restart of
        // its database, a shutdown): listen again from the present.
        SYNC_REFRESH_REQUIRED | 0 => PushEnd::RefreshRequired,
        rc => return Err(session.result_error(base_dn, rc, result.text)),
    })
}

/// One message of the search: the end of the refresh, or a change.
fn on_message(
    message: ResultEntry,
    on_event: &mut impl FnMut(PushEvent),
) -> Result<(), &'static str> {
    if message.is_ref() {
        return Ok(());
    }
    if message.is_intermediate() {
        match SyncInfo::decode(message.0)? {
            // The refresh is over: from now on the server sends changes.
            Some(SyncInfo::RefreshDelete { .. } | SyncInfo::RefreshPresent { .. }) => {
                on_event(PushEvent::Listening)
            }
            Some(SyncInfo::IdSet { .. }) => on_event(PushEvent::Changed),
            Some(SyncInfo::NewCookie(_)) | None => {}
        }
        return Ok(());
    }
    // An entry added, changed, deleted or moved out of the scope; or, during
    // a refresh that could not continue from the cookie, one still present.
    // Either way the run reads the scope and finds out.
    SyncState::of_entry(&message)?;
    on_event(PushEvent::Changed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use ldap3::asn1::{PL, StructureTag, TagClass};
    use ldap3::controls::{Control, RawControl};

    use super::super::hex;
    use super::*;

    /// A search entry with these controls.
    fn entry(controls: Vec<Control>) -> ResultEntry {
        let tag = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(Vec::new()),
        };
        let mut entry = ResultEntry::new(tag);
        entry.1 = controls;
        entry
    }

    /// A Sync Info intermediate message with this value.
    fn sync_info(value: &str) -> ResultEntry {
        let context = |id, bytes: Vec<u8>| StructureTag {
            class: TagClass::Context,
            id,
            payload: PL::P(bytes),
        };
        let tag = StructureTag {
            class: TagClass::Application,
            id: 25,
            payload: PL::C(vec![
                context(0, b"1.3.6.1.4.1.4203.1.9.1.4".to_vec()),
                context(1, hex(value)),
            ]),
        };
        ResultEntry::new(tag)
    }

    fn events(messages: Vec<ResultEntry>) -> Result<Vec<PushEvent>, &'static str> {
        let mut seen = Vec::new();
        for message in messages {
            on_message(message, &mut |e| seen.push(e))?;
        }
        Ok(seen)
    }

    #[test]
    fn the_end_of_the_refresh_is_listening_and_each_entry_after_it_a_change() {
        // Sync State "modify" of one entry, as slapd sends it in the persist phase.
        let modify = Control(
            None,
            RawControl {
                ctype: "1.3.6.1.4.1.4203.1.9.1.2".into(),
                crit: false,
                val: Some(hex("30150a01020410f82a347e7b9a1041861c2b16058afe43")),
            },
        );
        let seen = events(vec![
            // refreshDelete, refreshDone (the default): the refresh is over.
            sync_info("a100"),
            entry(vec![modify]),
            // A new cookie alone says nothing changed in the scope.
            sync_info("800163"),
            // Deletions reported as a set of entryUUIDs.
            sync_info("a3170101ff3112041060575ace7b9e104191174de87b22195d"),
        ])
        .unwrap();
        assert_eq!(
            seen,
            [PushEvent::Listening, PushEvent::Changed, PushEvent::Changed]
        );
    }

    #[test]
    fn an_entry_without_its_sync_state_is_an_error_not_a_change() {
        assert!(events(vec![entry(Vec::new())]).is_err());
        assert!(events(vec![sync_info("ff")]).is_err());
    }
}
