//! A mapping's scope read on a session the caller holds: the one way users
//! are read from an LDAP directory. The whole scope (a full read), or only
//! the entries a narrowing clause selects (AD's changed USNs, a lookup by
//! anchor): every entry goes through the same projection and disabled signal.
//! Reads run on the caller's session, so that an AD cursor and the read it
//! belongs to come from one DC.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::anchor::AnchorAttribute;
use super::connection::{SearchRequest, Session};
use super::entry::Projection;
use super::error::LdapError;
use super::filter::{and_filter, normalize_dn, or_filter, scope_filter};
use super::flavor::Flavor;
use super::groups::GroupTree;
use super::settings::{LdapScope, SearchScope, ValidSettings};
use crate::core::DirectoryEntry;

/// Anchors per lookup search: keeps each filter small enough for any server.
const ANCHOR_BATCH: usize = 100;

/// A scope turned into searches, with the settings' presets resolved.
pub(super) struct ScopeReader<'a> {
    settings: &'a ValidSettings,
    base_dn: &'a str,
    scope: SearchScope,
    /// The scope's filter with the groups as the mapping names them: what the
    /// key is made of.
    configured_filter: String,
    admin_filter: Option<String>,
    member_of: &'a [String],
    /// The filter searches use: with the groups nested in the selected ones
    /// too, once [`Self::nest`] has read them (OpenLDAP).
    filter: String,
    projection: Projection,
    attributes: Vec<String>,
}

/// The projected entries of one search.
#[derive(Debug, Default)]
pub(super) struct Collected {
    pub entries: BTreeMap<String, DirectoryEntry>,
    pub skipped_without_anchor: u64,
    pub duplicate_anchors: u64,
}

impl Collected {
    /// Keep one search entry's projection (never the entry itself).
    pub fn add(&mut self, projected: Option<DirectoryEntry>) {
        match projected {
            Some(entry) => {
                if self.entries.insert(entry.anchor.clone(), entry).is_some() {
                    self.duplicate_anchors += 1;
                }
            }
            None => self.skipped_without_anchor += 1,
        }
    }
}

impl<'a> ScopeReader<'a> {
    pub fn new(settings: &'a ValidSettings, scope: &'a LdapScope) -> Result<Self, LdapError> {
        let admin_filter = scope.validate()?;
        let projection = Projection::for_settings(settings, &scope.attributes);
        let filter = scope_filter(settings.flavor, admin_filter.as_deref(), &scope.member_of);
        Ok(Self {
            settings,
            base_dn: scope.base_dn.trim(),
            scope: scope.scope,
            configured_filter: filter.clone(),
            admin_filter,
            member_of: &scope.member_of,
            filter,
            attributes: projection.requested_attributes(),
            projection,
        })
    }

    /// Read the groups the scope selects and those nested in them, and count
    /// the nested groups' members from now on.
    pub async fn read_groups(&mut self, session: &mut Session) -> Result<GroupTree, LdapError> {
        let tree = GroupTree::read(session, self.settings, self.member_of).await?;
        self.nest(&tree);
        Ok(tree)
    }

    /// Where the filter alone does not follow nested groups (OpenLDAP), read
    /// them: before any read of the scope's users.
    pub async fn nest_groups(&mut self, session: &mut Session) -> Result<(), LdapError> {
        if self.settings.flavor == Flavor::OpenLdap {
            self.read_groups(session).await?;
        }
        Ok(())
    }

    /// Count the members of `tree`'s nested groups too. OpenLDAP's `memberOf`
    /// names direct groups only, so every group of the tree is named; AD's
    /// in-chain rule already follows the nesting.
    fn nest(&mut self, tree: &GroupTree) {
        if self.settings.flavor != Flavor::OpenLdap {
            return;
        }
        let groups: Vec<String> = tree.dns().cloned().collect();
        if groups.is_empty() {
            // Keep the configured groups: a membership clause of none would
            // select every user.
            return;
        }
        self.filter = scope_filter(self.settings.flavor, self.admin_filter.as_deref(), &groups);
    }

    pub fn base_dn(&self) -> &str {
        self.base_dn
    }

    pub fn scope(&self) -> SearchScope {
        self.scope
    }

    /// The filter that selects the scope's users.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The attributes the projection reads.
    pub fn attributes(&self) -> &[String] {
        &self.attributes
    }

    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    pub fn anchor(&self) -> &AnchorAttribute {
        self.projection.anchor()
    }

    /// 16 hex digits naming everything that decides which entries the scope
    /// holds and what is read of them: the server, the flavor's presets, the
    /// base DN, the filters and the attributes. A cursor is only valid for
    /// the key it was made with; a changed mapping needs a full read.
    pub fn key(&self) -> String {
        let base = normalize_dn(self.base_dn).unwrap_or_else(|_| self.base_dn.to_lowercase());
        let mut hasher = Sha256::new();
        for part in [
            self.settings.url.as_str(),
            match self.settings.flavor {
                Flavor::ActiveDirectory => "ad",
                Flavor::OpenLdap => "openldap",
                Flavor::Generic => "generic",
            },
            self.settings.anchor.name(),
            self.settings.disabled_filter.as_deref().unwrap_or_default(),
            &base,
            match self.scope {
                SearchScope::Subtree => "sub",
                SearchScope::OneLevel => "one",
            },
            &self.configured_filter,
            &self.attributes.join(","),
        ] {
            // A separator that cannot occur in any part keeps ("ab","c") and
            // ("a","bc") apart.
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Read the scope's users, or with `narrowed_to` only those that clause
    /// also selects, page by page. `Ok` only for a complete read.
    pub async fn read(
        &self,
        session: &mut Session,
        narrowed_to: Option<&str>,
        now: Timestamp,
    ) -> Result<Collected, LdapError> {
        let disabled = self.disabled_anchors(session, narrowed_to).await?;
        let mut parts = vec![self.filter.as_str()];
        parts.extend(narrowed_to);
        let filter = and_filter(&parts);
        let mut collected = Collected::default();
        let request = self.request(&filter, &self.attributes);
        session
            .paged_search(&request, |raw| {
                let projected = self.projection.project(&raw, now).map(|mut entry| {
                    entry.enabled &= !disabled.contains(&entry.anchor);
                    entry
                });
                if projected.is_none() {
                    tracing::debug!(dn = %raw.dn, anchor = self.anchor().name(), "entry without an anchor skipped");
                }
                collected.add(projected);
            })
            .await?;
        Ok(collected)
    }

    /// Of `anchors`, those of users the settings' disabled filter matches, in
    /// batches of anchor lookups: for entries that were read without the
    /// disabled search (a syncrepl refresh).
    pub async fn disabled_among<'s>(
        &self,
        session: &mut Session,
        anchors: impl Iterator<Item = &'s String>,
    ) -> Result<HashSet<String>, LdapError> {
        let mut disabled = HashSet::new();
        if self.settings.disabled_search_filter().is_none() {
            return Ok(disabled);
        }
        for any_anchor in self.anchor_batches(anchors) {
            disabled.extend(self.disabled_anchors(session, Some(&any_anchor)).await?);
        }
        Ok(disabled)
    }

    /// Clauses that select the entries with one of `anchors`, a batch of them
    /// each. Values that cannot be an anchor of this directory (a malformed
    /// GUID) select nothing and are left out.
    pub fn anchor_batches<'s>(&self, anchors: impl Iterator<Item = &'s String>) -> Vec<String> {
        let clauses: Vec<String> = anchors
            .filter_map(|a| self.anchor().equality_filter(a))
            .collect();
        clauses
            .chunks(ANCHOR_BATCH)
            .map(|batch| or_filter(batch).unwrap_or_default())
            .collect()
    }

    /// The anchors of the users (of the narrowed scope) that the disabled
    /// filter matches: evaluated by the server, as in a full read.
    async fn disabled_anchors(
        &self,
        session: &mut Session,
        narrowed_to: Option<&str>,
    ) -> Result<HashSet<String>, LdapError> {
        let Some(disabled_filter) = self.settings.disabled_search_filter() else {
            return Ok(HashSet::new());
        };
        let mut parts = vec![self.filter.as_str(), disabled_filter];
        parts.extend(narrowed_to);
        self.anchors_matching(session, &and_filter(&parts)).await
    }

    /// The anchors of every user of the scope, and nothing else of them: who
    /// is a member now, to compare with the users a store holds.
    pub async fn anchors(&self, session: &mut Session) -> Result<HashSet<String>, LdapError> {
        self.anchors_matching(session, &self.filter).await
    }

    async fn anchors_matching(
        &self,
        session: &mut Session,
        filter: &str,
    ) -> Result<HashSet<String>, LdapError> {
        let mut anchors = HashSet::new();
        let attributes = [self.anchor().name().to_owned()];
        let request = self.request(filter, &attributes);
        session
            .paged_search(&request, |raw| anchors.extend(self.anchor().read(&raw)))
            .await?;
        Ok(anchors)
    }

    fn request<'r>(&'r self, filter: &'r str, attributes: &'r [String]) -> SearchRequest<'r> {
        SearchRequest {
            base_dn: self.base_dn,
            scope: self.scope,
            filter,
            attributes,
            page_size: self.settings.page_size,
        }
    }
}
