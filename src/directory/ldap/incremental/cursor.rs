//! The cursor: where the last read of a scope left off, as one short string
//! the runner keeps in the mapping's status between runs.
//!
//! Every cursor carries the key of the scope it was made for (see
//! [`ScopeReader::key`](crate::directory::ldap::scope_read::ScopeReader::key)),
//! so a cursor made before the mapping's filter, base DN or attributes
//! changed, or for another connector, is refused instead of hiding the users
//! the change brought into scope.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The longest syncrepl cookie accepted. OpenLDAP's carry one CSN per
/// provider (about 45 characters each); this leaves room for large meshes
/// while keeping the status field small.
const MAX_COOKIE_LEN: usize = 4096;

/// Where the next incremental read of a scope continues from.
///
/// Its text form (`Display` / [`Cursor::parse`], and serde) is what is
/// persisted:
///
/// - `usn:<scope key>:<invocationId>:<highestCommittedUSN>:<read at>`
/// - `syncrepl:<scope key>:<cookie>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Cursor {
    /// Active Directory: the DC's `highestCommittedUSN`, read before the last
    /// search. USNs are counters of one DC, so the cursor also names the DC
    /// by its `invocationId` (which also changes when the DC is restored from
    /// a backup); on any other DC it is refused.
    UsnChanged {
        scope_key: String,
        invocation_id: String,
        highest_usn: u64,
        /// The `now` of the read that made the cursor: accounts whose
        /// `accountExpires` passed before it were already read as disabled.
        read_at: Timestamp,
    },
    /// OpenLDAP: the RFC 4533 sync cookie the server returned.
    SyncRepl { scope_key: String, cookie: String },
}

/// Why a persisted cursor cannot be used. The caller then does a full read,
/// which makes a new cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a usersync cursor ({problem}): {text:?}")]
pub struct CursorParseError {
    pub text: String,
    pub problem: &'static str,
}

impl Cursor {
    /// A cursor from its persisted text.
    pub fn parse(text: &str) -> Result<Cursor, CursorParseError> {
        let fail = |problem| CursorParseError {
            text: text.chars().take(200).collect(),
            problem,
        };
        let (kind, rest) = text.split_once(':').ok_or_else(|| fail("no kind"))?;
        let (scope_key, rest) = rest.split_once(':').ok_or_else(|| fail("no scope key"))?;
        if !is_scope_key(scope_key) {
            return Err(fail("the scope key is not 16 hex digits"));
        }
        let scope_key = scope_key.to_owned();
        match kind {
            "usn" => {
                let mut parts = rest.splitn(3, ':');
                let (Some(invocation_id), Some(usn), Some(read_at)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(fail("a usn cursor has four fields"));
                };
                if invocation_id.len() != 36 || uuid::Uuid::parse_str(invocation_id).is_err() {
                    return Err(fail("the invocationId is not a GUID"));
                }
                Ok(Cursor::UsnChanged {
                    scope_key,
                    invocation_id: invocation_id.to_ascii_lowercase(),
                    highest_usn: usn.parse().map_err(|_| fail("the USN is not a number"))?,
                    read_at: read_at
                        .parse()
                        .map_err(|_| fail("the read time is not a timestamp"))?,
                })
            }
            "syncrepl" => {
                if !is_cookie_text(rest) {
                    return Err(fail("the cookie is empty, too long or not printable ASCII"));
                }
                Ok(Cursor::SyncRepl {
                    scope_key,
                    cookie: rest.to_owned(),
                })
            }
            _ => Err(fail("unknown kind")),
        }
    }

    /// The key of the scope the cursor was made for.
    pub fn scope_key(&self) -> &str {
        match self {
            Cursor::UsnChanged { scope_key, .. } | Cursor::SyncRepl { scope_key, .. } => scope_key,
        }
    }
}

/// Whether a cookie can be kept as a cursor: printable ASCII without spaces
/// (what OpenLDAP sends), so the text form needs no escaping.
pub(super) fn is_cookie_text(cookie: &str) -> bool {
    !cookie.is_empty()
        && cookie.len() <= MAX_COOKIE_LEN
        && cookie.bytes().all(|b| b.is_ascii_graphic())
}

fn is_scope_key(key: &str) -> bool {
    key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::UsnChanged {
                scope_key,
                invocation_id,
                highest_usn,
                read_at,
            } => write!(f, "usn:{scope_key}:{invocation_id}:{highest_usn}:{read_at}"),
            Cursor::SyncRepl { scope_key, cookie } => write!(f, "syncrepl:{scope_key}:{cookie}"),
        }
    }
}

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cursor::parse(s)
    }
}

impl From<Cursor> for String {
    fn from(cursor: Cursor) -> String {
        cursor.to_string()
    }
}

impl TryFrom<String> for Cursor {
    type Error = CursorParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Cursor::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef";

    fn usn() -> Cursor {
        Cursor::UsnChanged {
            scope_key: KEY.into(),
            invocation_id: "315f63cd-85cc-4413-ba1f-0c6d0dff4068".into(),
            highest_usn: 4394,
            read_at: "2025-06-01T12:00:00.5Z".parse().unwrap(),
        }
    }

    fn syncrepl() -> Cursor {
        Cursor::SyncRepl {
            scope_key: KEY.into(),
            cookie: "rid=000,csn=20261123152306.390105Z#000000#000#000000".into(),
        }
    }

    #[test]
    fn cursors_round_trip_through_their_text_form() {
        for cursor in [usn(), syncrepl()] {
            let text = cursor.to_string();
            assert_eq!(Cursor::parse(&text).unwrap(), cursor, "{text}");
            let json = serde_json::to_string(&cursor).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), cursor);
        }
        assert_eq!(
            usn().to_string(),
            "usn:0123456789abcdef:315f63cd-85cc-4413-ba1f-0c6d0dff4068:4394:2025-06-01T12:00:00.5Z"
        );
    }

    #[test]
    fn damaged_cursors_are_refused() {
        for text in [
            "",
            "usn",
            "dirsync:0123456789abcdef:x",
            "usn:0123456789abcdef:not-a-guid:1:2025-06-01T12:00:00Z",
            "usn:0123456789abcdef:315f63cd-85cc-4413-ba1f-0c6d0dff4068:-1:2025-06-01T12:00:00Z",
            "usn:0123456789abcdef:315f63cd-85cc-4413-ba1f-0c6d0dff4068:1",
            "usn:0123456789abcdef:315f63cd-85cc-4413-ba1f-0c6d0dff4068:1:yesterday",
            "syncrepl:0123456789abcdef:",
            "syncrepl:0123456789abcdef:rid=000 csn=x",
            "syncrepl:short:rid=000",
        ] {
            assert!(Cursor::parse(text).is_err(), "{text:?}");
        }
        assert!(serde_json::from_str::<Cursor>("\"usn:x\"").is_err());
    }
}
