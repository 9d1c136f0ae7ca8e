//! The RFC 4533 controls and messages: the Sync Request control sent with a
//! refresh, and the Sync State, Sync Done and Sync Info values that come back.
//!
//! The values are decoded here rather than with ldap3's parsers, which panic
//! on a value they do not expect: a misbehaving server must fail one read,
//! not the operator.

use ldap3::asn1::{PL, StructureTag, TagClass, Types, parse_tag};
use ldap3::controls::{MakeCritical, RawControl, RefreshMode, SyncRequest};
use ldap3::{LdapResult, ResultEntry};

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";

/// The Sync Request control of a refreshOnly search from `cookie` (none: from
/// the start).
pub(super) fn sync_request(cookie: Option<&str>) -> RawControl {
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

/// The Sync Request control of a refreshAndPersist search from `cookie`:
/// after the changes since the cookie, the search stays open for new ones.
pub(super) fn sync_request_persist(cookie: &str) -> RawControl {
    SyncRequest {
        mode: RefreshMode::RefreshAndPersist,
        cookie: Some(cookie.as_bytes().to_vec()),
        reload_hint: false,
    }
    .critical()
    .into()
}

/// The Sync Done control of a search's result, decoded, if it has one.
pub(super) fn sync_done(result: &LdapResult) -> Result<Option<SyncDone>, &'static str> {
    result
        .ctrls
        .iter()
        .find(|c| c.1.ctype == SYNC_DONE_OID)
        .map(|c| SyncDone::decode(c.1.val.as_deref().unwrap_or_default()))
        .transpose()
}

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
    /// The Sync State control of a search entry, decoded: every entry of a
    /// refresh has one.
    pub fn of_entry(entry: &ResultEntry) -> Result<Self, &'static str> {
        let control = entry
            .1
            .iter()
            .find(|c| c.1.ctype == SYNC_STATE_OID)
            .ok_or("an entry without a Sync State control")?;
        Self::decode(control.1.val.as_deref().unwrap_or_default())
    }

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
    use super::super::{COOKIE, hex};
    use super::*;

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
}
