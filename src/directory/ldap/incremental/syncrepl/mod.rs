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
//! - `refresh`: the searches, and what their messages and results mean;
//! - `persist`: the refreshAndPersist search of push mode, which only tells
//!   that something changed;
//! - `controls`: the Sync Request control, and the Sync State, Sync Done and
//!   Sync Info values decoded from the wire;
//! - `cookie`: what an OpenLDAP cookie says about how far it reaches.

mod controls;
mod cookie;
mod persist;
mod refresh;

pub(super) use persist::persist;
pub(super) use refresh::{Refresh, current_cookie, refresh_since};

/// Whether an entry with CSN `entry_csn` changed after the cookie `sent`
/// (a cookie that cannot be read: it may have).
pub(super) fn changed_after(sent: &str, entry_csn: &str) -> bool {
    cookie::OpenLdapCookie::parse(sent).is_none_or(|c| c.precedes(entry_csn))
}

/// A cookie as slapd 2.6 sends it, for the tests of the parts.
#[cfg(test)]
const COOKIE: &str = "rid=000,csn=20261123152306.390105Z#000000#000#000000";

/// The bytes of a hex string, for the tests of the parts.
#[cfg(test)]
fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_changed_after_the_cookie_only_when_its_csn_is_later() {
        assert!(changed_after(
            COOKIE,
            "20261123152306.390106Z#000000#000#000000"
        ));
        assert!(!changed_after(
            COOKIE,
            "20261123152306.390105Z#000000#000#000000"
        ));
        assert!(!changed_after(
            COOKIE,
            "20250101000000.000000Z#000000#000#000000"
        ));
        // What cannot be compared may have changed.
        assert!(changed_after(
            "not a cookie",
            "20250101000000.000000Z#000000#000#000000"
        ));
        assert!(changed_after(COOKIE, "garbage"));
    }
}
