//! OpenLDAP's incremental reads: the Content Synchronization Operation
//! (syncrepl, RFC 4533) in refreshOnly mode, served by the `syncprov` overlay.
//!
//! A refresh with the previous cookie returns the entries of the scope that
//! changed since (Sync State "add"/"modify"), and the entryUUIDs of those
//! deleted or no longer matched (Sync State "delete", or Sync Info `syncIdSet`
//! messages with `refreshDeletes`), then a Sync Done control with the new
//! cookie. When the server cannot list the deletions since that cookie (its
//! session log does not reach back far enough) it falls back to a "present"
//! phase that names every entry still there; that is only usable against a
//! copy of the whole scope, so it ends in "full read required".
//!
//! syncprov's session log keeps entryUUIDs, not DNs: a refresh names as
//! removed every entry deleted, or changed and not in the scope, anywhere in
//! the database since the cookie. Anchors of other scopes among them belong
//! to no record of this mapping, and the planner passes them by.
//!
//! The control values are decoded here rather than with ldap3's parsers,
//! which panic on a value they do not expect: a misbehaving server must fail
//! one read, not the operator.

use std::collections::BTreeSet;
use std::convert::Infallible;

use jiff::Timestamp;
use ldap3::asn1::{PL, StructureTag, TagClass, Types, parse_tag};
use ldap3::controls::{MakeCritical, RawControl, RefreshMode, SyncRequest};
use ldap3::{LdapResult, ResultEntry, Scope};

use super::super::entry::RawEntry;
use super::super::error::{LdapError, describe_result};
use super::FullReadReason;
use super::control_session::{ControlSearch, ControlSession};
use super::cursor::is_cookie_text;
use super::scope_read::{Collected, ScopeReader};
use crate::directory::ldap::settings::SearchScope;

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";

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
pub(super) enum Refresh {
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
pub(super) async fn current_cookie(
    session: &mut ControlSession,
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
    let Ok(result) = session.search(search, |_| Ok::<(), Infallible>(())).await?;
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
pub(super) async fn refresh_since(
    session: &mut ControlSession,
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
        scope: match reader.scope() {
            SearchScope::Subtree => Scope::Subtree,
            SearchScope::OneLevel => Scope::OneLevel,
        },
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
    let result = match session.search(search, |m| state.handle(m)).await? {
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
        3 => {
            return Err(LdapError::Timeout {
                url: session.url().to_owned(),
                operation: "search",
                detail: format!(
                    "the server stopped reading {} at its time limit: {}",
                    reader.base_dn(),
                    describe_result(result.rc, &result.text)
                ),
            });
        }
        rc => {
            return Err(LdapError::SearchFailed {
                base_dn: reader.base_dn().to_owned(),
                detail: describe_result(rc, &result.text),
                source: None,
            });
        }
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

fn sync_request(cookie: Option<&str>) -> RawControl {
    // Critical: a server without syncprov must refuse the search rather than
    // answer it as a plain search of the whole scope.
    SyncRequest {
        mode: RefreshMode::RefreshOnly,
        cookie: cookie.map(|c| c.as_bytes().to_vec()),
        reload_hint: false,
    }
    .critical()
    .into()
}

fn sync_done(result: &LdapResult) -> Result<Option<SyncDone>, &'static str> {
    result
        .ctrls
        .iter()
        .find(|c| c.1.ctype == SYNC_DONE_OID)
        .map(|c| SyncDone::decode(c.1.val.as_deref().unwrap_or_default()))
        .transpose()
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
        let state = message
            .1
            .iter()
            .find(|c| c.1.ctype == SYNC_STATE_OID)
            .ok_or(Stop::Malformed("an entry without a Sync State control"))?;
        let state = SyncState::decode(state.1.val.as_deref().unwrap_or_default())
            .map_err(Stop::Malformed)?;
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

/// The parts of an OpenLDAP cookie (`rid=000,sid=001,csn=<csn>;<csn>`) that
/// say how far it reaches: one CSN per provider (server ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenLdapCookie {
    csns: Vec<String>,
}

impl OpenLdapCookie {
    /// `None` unless the cookie has a replica ID and at least one well-formed
    /// CSN, which is what slapd needs to continue from it.
    pub fn parse(cookie: &str) -> Option<Self> {
        let mut rid = false;
        let mut csns = Vec::new();
        for field in cookie.split(',') {
            let (key, value) = field.split_once('=')?;
            match key {
                "rid" => {
                    rid = !value.is_empty()
                        && value.len() <= 3
                        && value.bytes().all(|b| b.is_ascii_digit());
                }
                "csn" => {
                    for csn in value.split(';') {
                        csn_sid(csn)?;
                        csns.push(csn.to_owned());
                    }
                }
                _ => {}
            }
        }
        (rid && !csns.is_empty()).then_some(Self { csns })
    }

    /// Whether the cookie is older than a change with CSN `entry_csn`, that
    /// is, whether a refresh from it may send that entry. A CSN of a provider
    /// the cookie does not know, or that cannot be read, may be sent.
    pub fn precedes(&self, entry_csn: &str) -> bool {
        let Some(sid) = csn_sid(entry_csn) else {
            return true;
        };
        // CSNs of one provider have a fixed width: text order is time order.
        self.csns
            .iter()
            .filter(|c| csn_sid(c) == Some(sid))
            .all(|c| entry_csn > c.as_str())
    }
}

/// The server ID of a CSN (`20250601120000.000000Z#000000#001#000000`), or
/// `None` when it is not one.
fn csn_sid(csn: &str) -> Option<&str> {
    let mut parts = csn.split('#');
    let (time, count, sid, modifier) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let time_ok = time.len() == 22
        && time.bytes().enumerate().all(|(i, b)| match i {
            14 => b == b'.',
            21 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    (parts.next().is_none() && time_ok && hex(count, 6) && hex(sid, 3) && hex(modifier, 6))
        .then_some(sid)
}

// ------------------------------------------------------------ RFC 4533 values

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryState {
    Present,
    Add,
    Modify,
    Delete,
}

/// syncStateValue ::= SEQUENCE { state ENUMERATED, entryUUID syncUUID,
/// cookie syncCookie OPTIONAL }
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyncState {
    pub state: EntryState,
    /// The entryUUID in its text form.
    pub entry_uuid: String,
    pub cookie: Option<Vec<u8>>,
}

/// syncDoneValue ::= SEQUENCE { cookie syncCookie OPTIONAL,
/// refreshDeletes BOOLEAN DEFAULT FALSE }
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyncDone {
    pub cookie: Option<Vec<u8>>,
    pub refresh_deletes: bool,
}

/// syncInfoValue, the value of a Sync Info intermediate message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SyncInfo {
    NewCookie(Vec<u8>),
    RefreshDelete {
        cookie: Option<Vec<u8>>,
    },
    RefreshPresent {
        cookie: Option<Vec<u8>>,
    },
    IdSet {
        cookie: Option<Vec<u8>>,
        refresh_deletes: bool,
        uuids: Vec<String>,
    },
}

impl SyncState {
    pub fn decode(value: &[u8]) -> Result<Self, &'static str> {
        let mut parts = sequence(value, "Sync State")?.into_iter();
        let state = parts
            .next()
            .and_then(|t| universal(t, Types::Enumerated))
            .ok_or("Sync State without a state")?;
        let state = match state.as_slice() {
            [0] => EntryState::Present,
            [1] => EntryState::Add,
            [2] => EntryState::Modify,
            [3] => EntryState::Delete,
            _ => return Err("Sync State with an unknown state"),
        };
        let entry_uuid = parts
            .next()
            .and_then(|t| universal(t, Types::OctetString))
            .ok_or("Sync State without an entryUUID")?;
        let cookie = match parts.next() {
            None => None,
            Some(tag) => {
                Some(universal(tag, Types::OctetString).ok_or("Sync State with a bad cookie")?)
            }
        };
        Ok(Self {
            state,
            entry_uuid: uuid_text(&entry_uuid)?,
            cookie,
        })
    }
}

impl SyncDone {
    pub fn decode(value: &[u8]) -> Result<Self, &'static str> {
        let (cookie, flag, rest) = cookie_and_flag(sequence(value, "Sync Done")?)?;
        if rest.is_some() {
            return Err("Sync Done with extra components");
        }
        Ok(Self {
            cookie,
            refresh_deletes: flag.unwrap_or(false),
        })
    }
}

impl SyncInfo {
    /// The Sync Info value of an intermediate message; `None` for another
    /// kind of intermediate message.
    pub fn decode(message: StructureTag) -> Result<Option<Self>, &'static str> {
        let parts = message
            .expect_constructed()
            .ok_or("an intermediate message that is not a sequence")?;
        let mut name = None;
        let mut value = None;
        for part in parts {
            match (part.class, part.id) {
                (TagClass::Context, 0) => name = part.expect_primitive(),
                (TagClass::Context, 1) => value = part.expect_primitive(),
                _ => return Err("an intermediate message with an unknown component"),
            }
        }
        if name.as_deref() != Some(SYNC_INFO_OID.as_bytes()) {
            return Ok(None);
        }
        let value = value.ok_or("Sync Info without a value")?;
        let (_, choice) = parse_tag(&value).map_err(|_| "Sync Info is not BER")?;
        if choice.class != TagClass::Context {
            return Err("Sync Info with an unknown choice");
        }
        let info = match (choice.id, choice.payload) {
            (0, PL::P(cookie)) => SyncInfo::NewCookie(cookie),
            (1 | 2, PL::C(parts)) => {
                let (cookie, _refresh_done, rest) = cookie_and_flag(parts)?;
                if rest.is_some() {
                    return Err("Sync Info refresh with extra components");
                }
                if choice.id == 1 {
                    SyncInfo::RefreshDelete { cookie }
                } else {
                    SyncInfo::RefreshPresent { cookie }
                }
            }
            (3, PL::C(parts)) => {
                let (cookie, flag, rest) = cookie_and_flag(parts)?;
                let set = rest
                    .filter(|t| t.class == TagClass::Universal && t.id == Types::Set as u64)
                    .and_then(StructureTag::expect_constructed)
                    .ok_or("Sync Info syncIdSet without its UUIDs")?;
                let uuids = set
                    .into_iter()
                    .map(|t| {
                        universal(t, Types::OctetString)
                            .ok_or("a syncUUID that is not an octet string")
                            .and_then(|b| uuid_text(&b))
                    })
                    .collect::<Result<_, _>>()?;
                SyncInfo::IdSet {
                    cookie,
                    refresh_deletes: flag.unwrap_or(false),
                    uuids,
                }
            }
            _ => return Err("Sync Info with an unknown choice"),
        };
        Ok(Some(info))
    }
}

/// The components of a BER SEQUENCE.
fn sequence(value: &[u8], what: &'static str) -> Result<Vec<StructureTag>, &'static str> {
    let (_, tag) = parse_tag(value).map_err(|_| "a control value that is not BER")?;
    if tag.class != TagClass::Universal || tag.id != Types::Sequence as u64 {
        return Err(what);
    }
    tag.expect_constructed().ok_or(what)
}

/// The contents of a primitive universal tag of type `kind`.
fn universal(tag: StructureTag, kind: Types) -> Option<Vec<u8>> {
    (tag.class == TagClass::Universal && tag.id == kind as u64)
        .then(|| tag.expect_primitive())
        .flatten()
}

type CookieAndFlag = (Option<Vec<u8>>, Option<bool>, Option<StructureTag>);

/// `cookie OCTET STRING OPTIONAL, flag BOOLEAN DEFAULT ..., <one more>`:
/// the shape shared by Sync Done and the Sync Info choices.
fn cookie_and_flag(parts: Vec<StructureTag>) -> Result<CookieAndFlag, &'static str> {
    let mut parts = parts.into_iter().peekable();
    let is = |t: &StructureTag, kind: Types| t.class == TagClass::Universal && t.id == kind as u64;
    let cookie = match parts.next_if(|t| is(t, Types::OctetString)) {
        Some(tag) => Some(tag.expect_primitive().ok_or("a constructed cookie")?),
        None => None,
    };
    let flag = match parts.next_if(|t| is(t, Types::Boolean)) {
        Some(tag) => match tag.expect_primitive().as_deref() {
            Some([b]) => Some(*b != 0),
            _ => return Err("a malformed boolean"),
        },
        None => None,
    };
    let rest = parts.next();
    if parts.next().is_some() {
        return Err("too many components");
    }
    Ok((cookie, flag, rest))
}

/// A syncUUID (16 bytes) as entryUUID text: lower-case, hyphenated.
fn uuid_text(bytes: &[u8]) -> Result<String, &'static str> {
    uuid::Uuid::from_slice(bytes)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| "a syncUUID that is not 16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    const COOKIE: &str = "rid=000,csn=20261123152306.390105Z#000000#000#000000";

    // Control values as slapd 2.6 sent them (captured with ldapsearch -E sync=ro).

    #[test]
    fn sync_state_of_an_added_entry_decodes() {
        let value = hex("30150a01010410f82a347e7b9a1041861c2b16058afe43");
        assert_eq!(
            SyncState::decode(&value).unwrap(),
            SyncState {
                state: EntryState::Add,
                entry_uuid: "f82a347e-7b9a-1041-861c-2b16058afe43".into(),
                cookie: None,
            }
        );
    }

    #[test]
    fn sync_done_decodes_with_and_without_cookie_and_flag() {
        let with_both = hex(
            "303904347269643d3030302c63736e3d32303236313132333135323330362e3339303130355a2330303030303023303030233030303030300101ff",
        );
        assert_eq!(
            SyncDone::decode(&with_both).unwrap(),
            SyncDone {
                cookie: Some(COOKIE.as_bytes().to_vec()),
                refresh_deletes: true
            }
        );
        // Nothing changed: no new cookie.
        assert_eq!(
            SyncDone::decode(&hex("30030101ff")).unwrap(),
            SyncDone {
                cookie: None,
                refresh_deletes: true
            }
        );
        // A present phase: refreshDeletes left at its default, FALSE.
        let present = hex(
            "303604347269643d3030302c63736e3d32303236313132333135323330362e3339303130355a233030303030302330303023303030303030",
        );
        assert!(!SyncDone::decode(&present).unwrap().refresh_deletes);
        // An unreadable cookie answered with an empty one.
        assert_eq!(
            SyncDone::decode(&hex("300504000101ff")).unwrap().cookie,
            Some(Vec::new())
        );
    }

    #[test]
    fn malformed_control_values_are_errors_not_panics() {
        for value in [
            &b""[..],
            &[0x30, 0x05, 0x0a],
            &hex("30030a0105"),
            &hex("30060a0101040201ff"),
            &hex("04020101"),
        ] {
            assert!(SyncState::decode(value).is_err(), "{value:02x?}");
        }
        assert!(SyncDone::decode(&hex("3006010100010100")).is_err());
        assert!(SyncDone::decode(&hex("3003020101")).is_err());
    }

    fn intermediate(oid: &str, value: Option<Vec<u8>>) -> StructureTag {
        let context = |id, bytes: Vec<u8>| StructureTag {
            class: TagClass::Context,
            id,
            payload: PL::P(bytes),
        };
        let mut parts = vec![context(0, oid.as_bytes().to_vec())];
        parts.extend(value.map(|v| context(1, v)));
        StructureTag {
            class: TagClass::Application,
            id: 25,
            payload: PL::C(parts),
        }
    }

    #[test]
    fn sync_info_id_set_decodes_the_uuids() {
        // [3] { cookie, refreshDeletes TRUE, SET { one syncUUID } }
        let value = hex(
            "a34d04347269643d3030302c63736e3d32303236313132333135323330362e3339303130355a2330303030303023303030233030303030300101ff3112041060575ace7b9e104191174de87b22195d",
        );
        assert_eq!(
            SyncInfo::decode(intermediate(SYNC_INFO_OID, Some(value))).unwrap(),
            Some(SyncInfo::IdSet {
                cookie: Some(COOKIE.as_bytes().to_vec()),
                refresh_deletes: true,
                uuids: vec!["60575ace-7b9e-1041-9117-4de87b22195d".into()],
            })
        );
    }

    #[test]
    fn sync_info_new_cookie_and_refresh_phases_decode() {
        assert_eq!(
            SyncInfo::decode(intermediate(SYNC_INFO_OID, Some(hex("800163")))).unwrap(),
            Some(SyncInfo::NewCookie(b"c".to_vec()))
        );
        assert_eq!(
            SyncInfo::decode(intermediate(SYNC_INFO_OID, Some(hex("a200")))).unwrap(),
            Some(SyncInfo::RefreshPresent { cookie: None })
        );
        // Another extension's intermediate message is not ours to read.
        assert_eq!(
            SyncInfo::decode(intermediate("1.2.3", Some(vec![1, 2]))).unwrap(),
            None
        );
        assert!(SyncInfo::decode(intermediate(SYNC_INFO_OID, None)).is_err());
        assert!(SyncInfo::decode(intermediate(SYNC_INFO_OID, Some(vec![0xff]))).is_err());
        // A syncIdSet whose UUID is not 16 bytes.
        assert!(
            SyncInfo::decode(intermediate(SYNC_INFO_OID, Some(hex("a30531030401aa")))).is_err()
        );
    }

    #[test]
    fn openldap_cookie_needs_a_replica_id_and_csns() {
        assert!(OpenLdapCookie::parse(COOKIE).is_some());
        assert!(
            OpenLdapCookie::parse(
                "rid=001,sid=002,csn=20250101000000.000000Z#000000#001#000000;20250101000000.000000Z#000000#002#000000"
            )
            .is_some()
        );
        for bad in [
            "",
            "garbage",
            "csn=20261123152306.390105Z#000000#000#000000",
            "rid=000",
            "rid=000,csn=xyz",
            "rid=abc,csn=20261123152306.390105Z#000000#000#000000",
            "rid=000,csn=20261123152306.390105Z#000000#000",
        ] {
            assert!(OpenLdapCookie::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn cookie_precedes_only_later_changes_of_the_same_provider() {
        let cookie = OpenLdapCookie::parse(COOKIE).unwrap();
        assert!(cookie.precedes("20261123152306.390106Z#000000#000#000000"));
        assert!(!cookie.precedes("20261123152306.390105Z#000000#000#000000"));
        assert!(!cookie.precedes("20200101000000.000000Z#000000#000#000000"));
        // Another provider's change, or an unreadable CSN: cannot tell.
        assert!(cookie.precedes("20200101000000.000000Z#000000#001#000000"));
        assert!(cookie.precedes("garbage"));
    }
}
