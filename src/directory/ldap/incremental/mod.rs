//! Incremental reads (DESIGN section 4): read only what changed since the
//! last read, where the directory can say what that is.
//!
//! - Active Directory: `uSNChanged` above the DC's `highestCommittedUSN` at
//!   the last read (module `usn`). Removals are not visible this way, but
//!   for a group's members (below).
//! - OpenLDAP: a syncrepl refreshOnly search from the last cookie (RFC 4533,
//!   the `syncprov` overlay; module `syncrepl`). Deleted entries, and
//!   entries changed so that the scope no longer matches them, come back as
//!   removed entryUUIDs (with those of other parts of the database).
//! - Other servers: none; every read is full.
//!
//! [`IncrementalSource::read_full_with_cursor`] reads the whole scope (it is
//! every run's full read, whatever the flavor) and notes where the directory
//! stood just before (a [`Cursor`]);
//! [`IncrementalSource::read_incremental`] continues from a cursor and
//! returns the next one. When the directory cannot continue from it (another
//! DC, a rejected cookie, a changed mapping, ...) the answer is
//! [`IncrementalOutcome::FullReadRequired`], never an empty read.
//!
//! Joining or leaving a group changes the group, not the user, on both
//! servers. When a group the scope selects (or one nested in it) changed
//! since the cursor, the scope's membership is read again (its anchors only)
//! and compared with the users the caller holds: who left is reported as
//! removed, who joined is read in full.
//!
//! An incremental view is [`ReadKind::Incremental`](crate::core::ReadKind):
//! absence from it means nothing, only `removed` says a user left the scope,
//! and some removals are never reported (see module `usn`). The runner must
//! still read the whole scope periodically.

mod cursor;
mod notify;
mod push;
mod syncrepl;
mod usn;

use std::collections::HashSet;
use std::fmt;

use jiff::Timestamp;

use super::connection::{Connector, Session};
use super::error::LdapError;
use super::flavor::Flavor;
use super::scope_read::{Collected, ScopeReader};
use super::settings::{LdapScope, LdapSettings};
use crate::core::DirectoryView;
pub use cursor::{Cursor, CursorParseError};
pub use push::{PushEnd, PushEvent};
use syncrepl::Refresh;

/// The anchor attribute whose values syncrepl reports for removed entries.
const ENTRY_UUID: &str = "entryUUID";

/// The reads of a mapping's scope: full reads (with a cursor where the
/// directory offers one), and incremental reads where it can. Built from the
/// same settings as [`LdapSource`](super::LdapSource), which probes and looks
/// users up; like it, every read opens its own connection and closes it.
pub struct IncrementalSource {
    connector: Connector,
}

/// The result of reading a whole scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapRead {
    /// Every user the scope matched: a complete, full view.
    pub view: DirectoryView,
    /// Entries the scope matched that had no usable anchor; they are not in the
    /// view (a user without identity cannot be tracked).
    pub skipped_without_anchor: u64,
    /// Entries whose anchor had already been seen in this read (the later one
    /// is kept). Non-zero only with a misbehaving server or anchor attribute.
    pub duplicate_anchors: u64,
}

/// The changes of a scope since a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalRead {
    /// An incremental view: the users that changed (added, modified, enabled
    /// or disabled) and still match, and the anchors reported as removed.
    /// `removed` may name anchors that were never in this scope (OpenLDAP
    /// reports removals database-wide); on Active Directory it names only the
    /// members who left a changed group.
    pub view: DirectoryView,
    /// Where the next incremental read continues from.
    pub cursor: Cursor,
    /// Changed entries without a usable anchor, left out of the view.
    pub skipped_without_anchor: u64,
    /// Changed entries whose anchor had already been seen in this read.
    pub duplicate_anchors: u64,
}

/// What an incremental read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncrementalOutcome {
    Changes(IncrementalRead),
    /// The changes since the cursor cannot be had; read the whole scope with
    /// [`IncrementalSource::read_full_with_cursor`] instead.
    FullReadRequired(FullReadReason),
}

/// Why an incremental read could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FullReadReason {
    /// The directory offers no incremental reads: the Generic flavor, a server
    /// without syncprov, or a DC that hides its USN or invocationId.
    NotSupported,
    /// The cursor was made for another scope: the mapping's base DN, filter,
    /// groups or attributes, or the connector's URL, flavor or presets changed.
    ScopeChanged,
    /// Active Directory: the connection reached another DC, or the DC was
    /// restored from a backup (its invocationId changed).
    DifferentServer,
    /// The server refused the cursor, or did not continue from it.
    CursorRejected,
    /// The server no longer knows what was deleted since the cursor (OpenLDAP:
    /// the syncprov session log does not reach back that far).
    HistoryUnavailable,
    /// More changes than the server returns in one unpaged search (syncrepl
    /// refreshes cannot be paged); a full read pages.
    TooManyChanges,
}

/// Every [`FullReadReason::as_str`], for metric labels.
pub const FULL_READ_REASONS: [&str; 6] = [
    "NotSupported",
    "ScopeChanged",
    "DifferentServer",
    "CursorRejected",
    "HistoryUnavailable",
    "TooManyChanges",
];

impl FullReadReason {
    /// A fixed name, one of [`FULL_READ_REASONS`].
    pub fn as_str(self) -> &'static str {
        match self {
            FullReadReason::NotSupported => "NotSupported",
            FullReadReason::ScopeChanged => "ScopeChanged",
            FullReadReason::DifferentServer => "DifferentServer",
            FullReadReason::CursorRejected => "CursorRejected",
            FullReadReason::HistoryUnavailable => "HistoryUnavailable",
            FullReadReason::TooManyChanges => "TooManyChanges",
        }
    }
}

impl fmt::Display for FullReadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FullReadReason::NotSupported => "the directory offers no incremental reads",
            FullReadReason::ScopeChanged => "the mapping or connector changed since the last read",
            FullReadReason::DifferentServer => {
                "the connection reached another domain controller (or one restored from a backup)"
            }
            FullReadReason::CursorRejected => {
                "the directory refused to continue from the last read"
            }
            FullReadReason::HistoryUnavailable => {
                "the directory no longer knows what was deleted since the last read"
            }
            FullReadReason::TooManyChanges => {
                "more changes since the last read than one unpaged search returns"
            }
        })
    }
}

impl IncrementalSource {
    /// A source for `settings`, checked. No network traffic.
    pub fn new(settings: &LdapSettings) -> Result<Self, LdapError> {
        Ok(Self {
            connector: Connector::new(settings)?,
        })
    }

    pub fn flavor(&self) -> Flavor {
        self.connector.settings.flavor
    }

    /// Whether this flavor has incremental reads at all. A server may still
    /// turn out not to offer them: [`Self::read_full_with_cursor`] then
    /// returns no cursor.
    pub fn supports_incremental(&self) -> bool {
        self.flavor() != Flavor::Generic
    }

    /// Read every user of `scope`, page by page, keeping only each entry's
    /// projection, and a cursor taken just before the read began, so that the
    /// next incremental read also sees what changed while this one ran. No
    /// cursor when the directory offers no incremental reads; the read is then
    /// just a full read.
    ///
    /// `Ok` means the read was complete; any failure on the way (a size or
    /// time limit, a lost connection) is an `Err`, and the caller must then
    /// change no lifecycle state. `now` decides time-based signals (AD's
    /// `accountExpires`).
    pub async fn read_full_with_cursor(
        &self,
        scope: &LdapScope,
        now: Timestamp,
    ) -> Result<(LdapRead, Option<Cursor>), LdapError> {
        let settings = &self.connector.settings;
        let mut reader = ScopeReader::new(settings, scope)?;
        let mut session = self.connector.open().await?;
        let cursor = self.cursor_here(&mut session, &reader, now).await?;
        reader.nest_groups(&mut session).await?;
        let collected = reader.read(&mut session, None, now).await?;
        session.close().await;
        warn_skipped(&reader, collected.skipped_without_anchor);
        Ok((
            LdapRead {
                view: DirectoryView::full_keyed(collected.entries),
                skipped_without_anchor: collected.skipped_without_anchor,
                duplicate_anchors: collected.duplicate_anchors,
            },
            cursor,
        ))
    }

    /// The changes of `scope` since `cursor`. `Ok(Changes)` only when the
    /// directory gave all of them; entries are projected as they arrive, with
    /// the same disabled signal as a full read.
    ///
    /// `in_scope` are the anchors of the users the caller holds as matched by
    /// the scope. When a group the scope selects, or one nested in it,
    /// changed since the cursor, the scope's membership is read again: those
    /// of `in_scope` it no longer matches are reported as removed, and the
    /// users it matches that are not in `in_scope` are read as changed.
    pub async fn read_incremental(
        &self,
        scope: &LdapScope,
        cursor: &Cursor,
        in_scope: &[String],
        now: Timestamp,
    ) -> Result<IncrementalOutcome, LdapError> {
        let settings = &self.connector.settings;
        if !self.supports_incremental() {
            return Ok(IncrementalOutcome::FullReadRequired(
                FullReadReason::NotSupported,
            ));
        }
        let mut reader = ScopeReader::new(settings, scope)?;
        if cursor.scope_key() != reader.key() {
            return Ok(IncrementalOutcome::FullReadRequired(
                FullReadReason::ScopeChanged,
            ));
        }
        let outcome = match (settings.flavor, cursor) {
            (
                Flavor::ActiveDirectory,
                Cursor::UsnChanged {
                    invocation_id,
                    highest_usn,
                    read_at,
                    ..
                },
            ) => {
                let since = UsnSince {
                    invocation_id,
                    highest_usn: *highest_usn,
                    read_at: *read_at,
                };
                self.usn_changes(&mut reader, since, in_scope, now).await?
            }
            (Flavor::OpenLdap, Cursor::SyncRepl { cookie, .. }) => {
                self.syncrepl_changes(&mut reader, cookie, in_scope, now)
                    .await?
            }
            // A cursor of the other kind with a matching key: not one we made.
            _ => IncrementalOutcome::FullReadRequired(FullReadReason::CursorRejected),
        };
        match &outcome {
            IncrementalOutcome::Changes(read) => {
                warn_skipped(&reader, read.skipped_without_anchor);
                tracing::debug!(
                    base_dn = reader.base_dn(),
                    changed = read.view.entries.len(),
                    removed = read.view.removed.len(),
                    "incremental read"
                );
            }
            IncrementalOutcome::FullReadRequired(reason) => tracing::info!(
                base_dn = reader.base_dn(),
                reason = reason.as_str(),
                "incremental read not possible: {reason}"
            ),
        }
        Ok(outcome)
    }

    /// A cursor for where the directory stands now, for `reader`'s scope.
    async fn cursor_here(
        &self,
        session: &mut Session,
        reader: &ScopeReader<'_>,
        now: Timestamp,
    ) -> Result<Option<Cursor>, LdapError> {
        let settings = &self.connector.settings;
        // On the session of the read itself: USNs belong to one DC, and a
        // cookie to one server.
        Ok(match settings.flavor {
            Flavor::ActiveDirectory => {
                usn::dc_state(session, settings.page_size)
                    .await?
                    .map(|dc| Cursor::UsnChanged {
                        scope_key: reader.key(),
                        invocation_id: dc.invocation_id,
                        highest_usn: dc.highest_usn,
                        read_at: now,
                    })
            }
            Flavor::OpenLdap => syncrepl::current_cookie(session, reader.base_dn())
                .await?
                .map(|cookie| Cursor::SyncRepl {
                    scope_key: reader.key(),
                    cookie,
                }),
            Flavor::Generic => None,
        })
    }

    async fn usn_changes(
        &self,
        reader: &mut ScopeReader<'_>,
        since: UsnSince<'_>,
        in_scope: &[String],
        now: Timestamp,
    ) -> Result<IncrementalOutcome, LdapError> {
        let mut session = self.connector.open().await?;
        let Some(dc) = usn::dc_state(&mut session, self.connector.settings.page_size).await? else {
            session.close().await;
            return Ok(IncrementalOutcome::FullReadRequired(
                FullReadReason::NotSupported,
            ));
        };
        if !dc.invocation_id.eq_ignore_ascii_case(since.invocation_id) {
            session.close().await;
            return Ok(IncrementalOutcome::FullReadRequired(
                FullReadReason::DifferentServer,
            ));
        }
        if dc.highest_usn < since.highest_usn {
            // The same database never counts backwards.
            session.close().await;
            return Ok(IncrementalOutcome::FullReadRequired(
                FullReadReason::CursorRejected,
            ));
        }
        let groups = reader.read_groups(&mut session).await?;
        let changed = usn::changed_since(since.highest_usn, since.read_at, now);
        let mut collected = reader.read(&mut session, Some(&changed), now).await?;
        let after_cursor = |usn: &str| {
            usn.parse::<u64>()
                .ok()
                .is_none_or(|usn| usn > since.highest_usn)
        };
        let left = if groups.changed(after_cursor) {
            members_again(&mut session, reader, in_scope, &mut collected, now).await?
        } else {
            Vec::new()
        };
        session.close().await;
        let cursor = Cursor::UsnChanged {
            scope_key: reader.key(),
            invocation_id: dc.invocation_id,
            highest_usn: dc.highest_usn,
            read_at: now,
        };
        Ok(IncrementalOutcome::Changes(incremental_read(
            collected, left, cursor,
        )))
    }

    async fn syncrepl_changes(
        &self,
        reader: &mut ScopeReader<'_>,
        sent: &str,
        in_scope: &[String],
        now: Timestamp,
    ) -> Result<IncrementalOutcome, LdapError> {
        // The groups (whose nesting the refresh's filter names), the refresh,
        // then the disabled lookups of what it found, on one session. A
        // refresh stopped half-way leaves its search behind: the session is
        // closed then, not reused.
        let mut session = self.connector.open().await?;
        reader.read_groups(&mut session).await?;
        let refresh = syncrepl::refresh_since(&mut session, reader, sent, now).await?;
        let (mut collected, removed, cookie) = match refresh {
            Refresh::Changes {
                collected,
                removed,
                cookie,
            } => (collected, removed, cookie),
            Refresh::FullReadRequired(reason) => {
                session.close().await;
                return Ok(IncrementalOutcome::FullReadRequired(reason));
            }
        };
        let disabled = reader
            .disabled_among(&mut session, collected.entries.keys())
            .await?;
        for entry in collected.entries.values_mut() {
            entry.enabled &= !disabled.contains(&entry.anchor);
        }
        // The groups again, now that the new cookie is known: a change to one
        // after the first look and before the refresh is below that cookie,
        // and would otherwise go unseen until the next full read.
        let groups = reader.read_groups(&mut session).await?;
        let left = if groups.changed(|csn| syncrepl::changed_after(sent, csn)) {
            members_again(&mut session, reader, in_scope, &mut collected, now).await?
        } else {
            Vec::new()
        };
        session.close().await;
        // Removals are reported as entryUUIDs: anchors only when the anchor
        // is entryUUID. With another anchor they wait for the next full read.
        let mut removed: Vec<String> = if reader.anchor().name().eq_ignore_ascii_case(ENTRY_UUID) {
            removed.into_iter().collect()
        } else {
            if !removed.is_empty() {
                tracing::debug!(
                    base_dn = reader.base_dn(),
                    removed = removed.len(),
                    anchor = reader.anchor().name(),
                    "removed entries are not reported: the anchor is not entryUUID"
                );
            }
            Vec::new()
        };
        removed.extend(left);
        let cursor = Cursor::SyncRepl {
            scope_key: reader.key(),
            cookie,
        };
        Ok(IncrementalOutcome::Changes(incremental_read(
            collected, removed, cursor,
        )))
    }
}

/// Where an AD cursor left off.
struct UsnSince<'c> {
    invocation_id: &'c str,
    highest_usn: u64,
    read_at: Timestamp,
}

/// The scope's membership read again after one of its groups changed: the
/// anchors of `in_scope` the scope no longer matches (returned, and taken out
/// of `collected`: this listing is newer than the changes read before it),
/// and the users it matches that `in_scope` lacks, read into `collected`.
async fn members_again(
    session: &mut Session,
    reader: &ScopeReader<'_>,
    in_scope: &[String],
    collected: &mut Collected,
    now: Timestamp,
) -> Result<Vec<String>, LdapError> {
    let members = reader.anchors(session).await?;
    let held: HashSet<&str> = in_scope.iter().map(String::as_str).collect();
    let left: Vec<String> = held
        .iter()
        .filter(|a| !members.contains(**a))
        .map(|a| (*a).to_owned())
        .collect();
    for anchor in &left {
        collected.entries.remove(anchor);
    }
    let joined: Vec<&String> = members
        .iter()
        .filter(|a| !held.contains(a.as_str()) && !collected.entries.contains_key(*a))
        .collect();
    for any_anchor in reader.anchor_batches(joined.into_iter()) {
        let read = reader.read(session, Some(&any_anchor), now).await?;
        collected.entries.extend(read.entries);
    }
    tracing::info!(
        base_dn = reader.base_dn(),
        members = members.len(),
        left = left.len(),
        "a group of the scope changed; its membership was read again"
    );
    Ok(left)
}

fn incremental_read(collected: Collected, removed: Vec<String>, cursor: Cursor) -> IncrementalRead {
    IncrementalRead {
        view: DirectoryView::incremental_keyed(collected.entries, removed),
        cursor,
        skipped_without_anchor: collected.skipped_without_anchor,
        duplicate_anchors: collected.duplicate_anchors,
    }
}

fn warn_skipped(reader: &ScopeReader<'_>, skipped: u64) {
    if skipped > 0 {
        tracing::warn!(
            base_dn = reader.base_dn(),
            skipped,
            anchor = reader.anchor().name(),
            "entries without an anchor were skipped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::ldap::settings::SearchScope;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}

    /// Reads run on a multi-threaded runtime: sources and futures cross threads.
    #[test]
    fn incremental_sources_and_futures_cross_threads() {
        let source =
            IncrementalSource::new(&LdapSettings::new("ldap://x", Flavor::OpenLdap)).unwrap();
        let scope = LdapScope::new("dc=x");
        let now = Timestamp::UNIX_EPOCH;
        let cursor = Cursor::parse(
            "syncrepl:0123456789abcdef:rid=000,csn=20250101000000.000000Z#000000#000#000000",
        )
        .unwrap();
        assert_send_sync(&source);
        assert_send(&source.read_full_with_cursor(&scope, now));
        assert_send(&source.read_incremental(&scope, &cursor, &[], now));
    }

    #[tokio::test]
    async fn generic_directories_have_no_incremental_reads() {
        let mut settings = LdapSettings::new("ldap://127.0.0.1:1", Flavor::Generic);
        settings.anchor_attribute = Some("nsUniqueId".into());
        let source = IncrementalSource::new(&settings).unwrap();
        assert!(!source.supports_incremental());
        let cursor = Cursor::parse(
            "syncrepl:0123456789abcdef:rid=000,csn=20250101000000.000000Z#000000#000#000000",
        )
        .unwrap();
        // Answered without contacting the (absent) server.
        let outcome = source
            .read_incremental(&LdapScope::new("dc=x"), &cursor, &[], Timestamp::UNIX_EPOCH)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            IncrementalOutcome::FullReadRequired(FullReadReason::NotSupported)
        );
    }

    #[tokio::test]
    async fn a_cursor_of_another_scope_requires_a_full_read_without_a_search() {
        let source =
            IncrementalSource::new(&LdapSettings::new("ldap://127.0.0.1:1", Flavor::OpenLdap))
                .unwrap();
        let cursor = Cursor::parse(
            "syncrepl:0123456789abcdef:rid=000,csn=20250101000000.000000Z#000000#000#000000",
        )
        .unwrap();
        let outcome = source
            .read_incremental(&LdapScope::new("dc=x"), &cursor, &[], Timestamp::UNIX_EPOCH)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            IncrementalOutcome::FullReadRequired(FullReadReason::ScopeChanged)
        );
    }

    #[test]
    fn scope_key_follows_what_decides_the_scope_and_nothing_else() {
        let settings = LdapSettings::new("ldap://dc1", Flavor::ActiveDirectory)
            .validate()
            .unwrap();
        let key = |scope: &LdapScope| ScopeReader::new(&settings, scope).unwrap().key();
        let base = LdapScope::new("OU=Staff,DC=corp,DC=example");
        let k = key(&base);
        assert_eq!(k.len(), 16);
        // The same DN spelled differently is the same scope.
        assert_eq!(key(&LdapScope::new("ou=staff, dc=corp, dc=example")), k);
        let mut other = base.clone();
        other.filter = Some("(department=Sales)".into());
        assert_ne!(key(&other), k);
        let mut other = base.clone();
        other.scope = SearchScope::OneLevel;
        assert_ne!(key(&other), k);
        let mut other = base.clone();
        other.member_of = vec!["CN=G,DC=corp,DC=example".into()];
        assert_ne!(key(&other), k);
        let mut other = base.clone();
        other
            .attributes
            .extra
            .insert("dept".into(), "department".into());
        assert_ne!(key(&other), k);
        let elsewhere = LdapSettings::new("ldap://dc2", Flavor::ActiveDirectory)
            .validate()
            .unwrap();
        assert_ne!(ScopeReader::new(&elsewhere, &base).unwrap().key(), k);
    }

    #[test]
    fn every_full_read_reason_has_its_fixed_name() {
        let all = [
            FullReadReason::NotSupported,
            FullReadReason::ScopeChanged,
            FullReadReason::DifferentServer,
            FullReadReason::CursorRejected,
            FullReadReason::HistoryUnavailable,
            FullReadReason::TooManyChanges,
        ];
        let names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, FULL_READ_REASONS);
    }
}
