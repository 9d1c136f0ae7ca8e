//! The LDAP source: probe a directory, read a mapping's whole scope, and look
//! users up by anchor. Each operation opens its own session and closes it, so
//! no connection state (a half-read search, a server that restarted) carries
//! over from one run to the next.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::connection::{Connector, SearchRequest, Session};
use super::entry::Projection;
use super::error::LdapError;
use super::filter::{and_filter, or_filter, scope_filter};
use super::flavor::Flavor;
use super::settings::{LdapScope, LdapSettings};
use crate::core::{DirectoryEntry, DirectoryView};

/// Anchors per lookup search: keeps each filter small enough for any server.
const LOOKUP_BATCH: usize = 100;

/// A directory reached over LDAP.
pub struct LdapSource {
    connector: Connector,
}

/// A successful probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Connect, TLS, bind and the root DSE read, end to end.
    pub latency: Duration,
    /// The root DSE's `namingContexts`: the trees the server holds.
    pub naming_contexts: Vec<String>,
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

/// A mapping's scope turned into one search.
struct ScopeSearch {
    filter: String,
    projection: Projection,
    attributes: Vec<String>,
}

impl LdapSource {
    /// A source for `settings`, checked. No network traffic: an unreachable
    /// server shows in the first operation.
    pub fn new(settings: &LdapSettings) -> Result<Self, LdapError> {
        Ok(Self {
            connector: Connector::new(settings)?,
        })
    }

    pub fn flavor(&self) -> Flavor {
        self.connector.settings.flavor
    }

    /// The name of the anchor attribute in use.
    pub fn anchor_attribute(&self) -> &str {
        self.connector.settings.anchor.name()
    }

    /// Connect, bind and read the root DSE: what `Connected=True` rests on.
    pub async fn probe(&self) -> Result<ProbeReport, LdapError> {
        let started = Instant::now();
        let mut session = self.connector.open().await?;
        let root = session
            .root_dse(&["namingContexts", "supportedLDAPVersion"])
            .await?;
        let latency = started.elapsed();
        session.close().await;
        let naming_contexts = root.texts("namingContexts").map(str::to_owned).collect();
        Ok(ProbeReport {
            latency,
            naming_contexts,
        })
    }

    /// Read every user of `scope`, page by page, keeping only each entry's
    /// projection. `Ok` means the read was complete; any failure on the way
    /// (a size or time limit, a lost connection) is an `Err`, and the caller
    /// must then change no lifecycle state.
    ///
    /// `now` decides time-based signals (AD's `accountExpires`).
    pub async fn read(&self, scope: &LdapScope, now: Timestamp) -> Result<LdapRead, LdapError> {
        let search = self.scope_search(scope)?;
        let mut session = self.connector.open().await?;
        let disabled = self
            .disabled_anchors(&mut session, scope, &search.filter, None)
            .await?;
        let mut entries = BTreeMap::new();
        let (mut skipped, mut duplicates) = (0u64, 0u64);
        let request = SearchRequest {
            base_dn: scope.base_dn.trim(),
            scope: scope.scope,
            filter: &search.filter,
            attributes: &search.attributes,
            page_size: self.connector.settings.page_size,
        };
        session
            .paged_search(&request, |raw| {
                match search.projection.project(&raw, now) {
                    Some(mut entry) => {
                        entry.enabled &= !disabled.contains(&entry.anchor);
                        if entries.insert(entry.anchor.clone(), entry).is_some() {
                            duplicates += 1;
                        }
                    }
                    None => {
                        skipped += 1;
                        tracing::debug!(dn = %raw.dn, anchor = self.anchor_attribute(), "entry without an anchor skipped");
                    }
                }
            })
            .await?;
        session.close().await;
        if skipped > 0 {
            tracing::warn!(
                base_dn = %scope.base_dn,
                skipped,
                anchor = self.anchor_attribute(),
                "entries without an anchor were skipped"
            );
        }
        Ok(LdapRead {
            view: DirectoryView::full_keyed(entries),
            skipped_without_anchor: skipped,
            duplicate_anchors: duplicates,
        })
    }

    /// The users of `scope` whose anchor is one of `anchors` (rule 9: before a
    /// user is preserved as unmapped, does another mapping match it?). Anchors
    /// that are not in the scope, or cannot be an anchor of this directory (a
    /// malformed GUID), are simply not in the result.
    pub async fn lookup(
        &self,
        scope: &LdapScope,
        anchors: &[String],
        now: Timestamp,
    ) -> Result<Vec<DirectoryEntry>, LdapError> {
        let search = self.scope_search(scope)?;
        let anchor = search.projection.anchor();
        let mut wanted: Vec<&String> = anchors.iter().collect();
        wanted.sort();
        wanted.dedup();
        let clauses: Vec<String> = wanted
            .iter()
            .filter_map(|a| anchor.equality_filter(a))
            .collect();
        let mut found = Vec::new();
        if clauses.is_empty() {
            return Ok(found);
        }
        let mut session = self.connector.open().await?;
        for batch in clauses.chunks(LOOKUP_BATCH) {
            let any_anchor = or_filter(batch).unwrap_or_default();
            let disabled = self
                .disabled_anchors(&mut session, scope, &search.filter, Some(&any_anchor))
                .await?;
            let filter = and_filter(&[search.filter.as_str(), any_anchor.as_str()]);
            let request = SearchRequest {
                base_dn: scope.base_dn.trim(),
                scope: scope.scope,
                filter: &filter,
                attributes: &search.attributes,
                page_size: self.connector.settings.page_size,
            };
            session
                .paged_search(&request, |raw| {
                    if let Some(mut entry) = search.projection.project(&raw, now) {
                        entry.enabled &= !disabled.contains(&entry.anchor);
                        found.push(entry);
                    }
                })
                .await?;
        }
        session.close().await;
        Ok(found)
    }

    fn scope_search(&self, scope: &LdapScope) -> Result<ScopeSearch, LdapError> {
        let settings = &self.connector.settings;
        let admin_filter = scope.validate()?;
        let projection = Projection::for_settings(settings, &scope.attributes);
        Ok(ScopeSearch {
            filter: scope_filter(settings.flavor, admin_filter.as_deref(), &scope.member_of),
            attributes: projection.requested_attributes(),
            projection,
        })
    }

    /// The anchors of the scope's users that the disabled filter matches.
    ///
    /// The server evaluates the filter, so its matching rules apply exactly
    /// (no client-side imitation of LDAP matching), and only the anchors of
    /// disabled users are held — a few percent of the scope — instead of a
    /// second copy of every entry. It runs just before the main read on the
    /// same session; an account disabled between the two searches shows on
    /// the next run.
    async fn disabled_anchors(
        &self,
        session: &mut Session,
        scope: &LdapScope,
        scope_filter: &str,
        narrowed_to: Option<&str>,
    ) -> Result<HashSet<String>, LdapError> {
        let settings = &self.connector.settings;
        let Some(disabled_filter) = settings.disabled_search_filter() else {
            return Ok(HashSet::new());
        };
        let mut parts = vec![scope_filter, disabled_filter];
        parts.extend(narrowed_to);
        let filter = and_filter(&parts);
        let attributes = [settings.anchor.name().to_owned()];
        let request = SearchRequest {
            base_dn: scope.base_dn.trim(),
            scope: scope.scope,
            filter: &filter,
            attributes: &attributes,
            page_size: settings.page_size,
        };
        let mut disabled = HashSet::new();
        session
            .paged_search(&request, |raw| {
                disabled.extend(settings.anchor.read(&raw));
            })
            .await?;
        Ok(disabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}

    /// The controller runs reads on a multi-threaded runtime and keeps sources
    /// and errors in shared state: all of them must cross threads.
    #[test]
    fn sources_futures_and_errors_cross_threads() {
        let source = LdapSource::new(&LdapSettings::new("ldap://x", Flavor::OpenLdap)).unwrap();
        let scope = LdapScope::new("dc=x");
        let now = Timestamp::UNIX_EPOCH;
        assert_send_sync(&source);
        assert_send(&source.probe());
        assert_send(&source.read(&scope, now));
        assert_send(&source.lookup(&scope, &[], now));
        assert_send_sync(&LdapError::InvalidConfig(String::new()));
    }
}
