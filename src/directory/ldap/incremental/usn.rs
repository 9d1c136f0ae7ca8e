//! Active Directory's incremental reads: `uSNChanged`.
//!
//! Every write on a DC gives the object written a new `uSNChanged`, a counter
//! of that DC (replicated changes get a local USN too). A read notes the DC's
//! `highestCommittedUSN` before it searches; the next read asks for
//! `uSNChanged` above it. USNs mean nothing on another DC, nor on the same DC
//! after a restore from backup; both show as a different `invocationId`, and
//! the cursor is refused.
//!
//! What this cannot see: an object that changed so that the scope no longer
//! matches it (moved out, filtered out, deleted) is not in the search's
//! results, and a member added to or removed from a `memberOf` group changes
//! only the group (`memberOf` is a back link, which does not bump the
//! member's USN). Membership is therefore read again when a group of the
//! scope's tree has a later `uSNChanged` (module `groups`); the users who
//! left are then reported as removed. Other removals are found by the next
//! full read. DESIGN section 4: incremental runs are never the only source of
//! "this user is gone".
//!
//! One change needs no write at all: an `accountExpires` moment passing. The
//! search also asks for the accounts whose expiry fell between the last read
//! and `now`, so they show as disabled without waiting for a full read.

use jiff::Timestamp;

use super::super::account::timestamp_to_filetime;
use super::super::anchor::guid_bytes_to_string;
use super::super::connection::{SearchRequest, Session};
use super::super::error::LdapError;
use super::super::settings::SearchScope;

/// Which DC a session reached, and how far its changes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DcState {
    /// The DC database's `invocationId`, as a GUID string.
    pub invocation_id: String,
    pub highest_usn: u64,
}

/// The state of the DC `session` is connected to, or `None` when it does not
/// show the bind account its `highestCommittedUSN` and `invocationId`.
pub(super) async fn dc_state(
    session: &mut Session,
    page_size: i32,
) -> Result<Option<DcState>, LdapError> {
    let root = session
        .root_dse(&["highestCommittedUSN", "dsServiceName"])
        .await?;
    let usn = root
        .first_text("highestCommittedUSN")
        .and_then(|v| v.parse::<u64>().ok());
    let (Some(highest_usn), Some(service)) = (usn, root.first_text("dsServiceName")) else {
        tracing::warn!("the root DSE shows no highestCommittedUSN or dsServiceName");
        return Ok(None);
    };
    // The DC's NTDS Settings object (dsServiceName) holds its invocationId.
    let attributes = ["invocationId".to_owned()];
    let request = SearchRequest {
        base_dn: service,
        scope: SearchScope::Subtree,
        filter: "(objectClass=nTDSDSA)",
        attributes: &attributes,
        page_size,
    };
    let mut invocation_id = None;
    session
        .paged_search(&request, |entry| {
            if invocation_id.is_none() {
                invocation_id = entry
                    .first_bytes("invocationId")
                    .and_then(guid_bytes_to_string);
            }
        })
        .await?;
    if invocation_id.is_none() {
        tracing::warn!(%service, "the DC's invocationId is not readable");
    }
    Ok(invocation_id.map(|invocation_id| DcState {
        invocation_id,
        highest_usn,
    }))
}

/// The clause that selects what changed since a read that saw USNs up to
/// `highest_usn` at `read_at`: a higher `uSNChanged`, or an `accountExpires`
/// in `(read_at, now]`.
pub(super) fn changed_since(highest_usn: u64, read_at: Timestamp, now: Timestamp) -> String {
    let written = format!("(uSNChanged>={})", highest_usn.saturating_add(1));
    let from = timestamp_to_filetime(read_at) + 1;
    let to = timestamp_to_filetime(now);
    if from > to {
        return written;
    }
    format!("(|{written}(&(accountExpires>={from})(accountExpires<={to})))")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_later_usns_or_expiries_since_the_last_read() {
        let read_at: Timestamp = "2000-01-01T00:00:00Z".parse().unwrap();
        let now: Timestamp = "2000-01-01T00:00:01Z".parse().unwrap();
        // 2000-01-01T00:00:00Z is 125911584000000000 as a FILETIME.
        assert_eq!(
            changed_since(4394, read_at, now),
            "(|(uSNChanged>=4395)(&(accountExpires>=125911584000000001)(accountExpires<=125911584010000000)))"
        );
        assert!(ldap3::parse_filter(changed_since(4394, read_at, now)).is_ok());
    }

    #[test]
    fn a_clock_that_went_back_asks_only_for_usns() {
        let read_at: Timestamp = "2000-01-01T00:00:01Z".parse().unwrap();
        let now: Timestamp = "2000-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(changed_since(7, read_at, now), "(uSNChanged>=8)");
        assert_eq!(
            changed_since(u64::MAX, now, now),
            format!("(uSNChanged>={})", u64::MAX)
        );
    }
}
