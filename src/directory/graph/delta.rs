//! Incremental reads with Graph's delta query on users.
//!
//! A round starts at `/users/delta?$select=…` (the first round lists every
//! user) or at the `@odata.deltaLink` the previous round ended with, follows
//! `@odata.nextLink` page by page, and ends at a new `@odata.deltaLink`. Users
//! deleted since the last round come as `{"id", "@removed": {"reason"}}`
//! (`changed`: in the recycle bin; `deleted`: gone for good); both are removals.
//!
//! The delta query tracks the whole tenant and only supports `$filter` by id,
//! so a scope with a filter or groups is applied afterwards: the users a round
//! says changed are checked against the filter (`(filter) and id in (…)`) and
//! their membership with `checkMemberGroups`; those no longer in scope are
//! reported as removed, and go through the unmapped rules (a lookup in the
//! other mappings first). The delta `$select`s the properties the filter
//! tests too, so that a user whose `department` changes into or out of the
//! filter is among the changed. The filter check is an advanced query
//! (`ConsistencyLevel: eventual`), whose answer can miss a user edited a
//! moment ago: a user it leaves out is kept in the delta link as unconfirmed,
//! and reported removed only when the next round's check leaves it out too
//! (`checkMemberGroups` is not eventual: no second look there). A membership
//! change alone (a user added to or removed from a group, the user object
//! unchanged) is not a change of the user: a groups delta over the scope's
//! groups and the groups nested in them brings it (see [`super::membership`]),
//! and the users it names are checked like changed ones. Incremental reads
//! are never the only source of "gone": the periodic full read stays.
//!
//! The first round of a scope with groups or a filter does not walk the
//! tenant's users for a link: it asks for one at `$deltatoken=latest`.
//!
//! A delta link Graph no longer knows (410 Gone, `syncStateNotFound`,
//! `resyncRequired`) is not an error but [`DeltaOutcome::FullReadNeeded`]; so
//! is a round with an item without an `id` (logged with the count): its
//! changes are not applied, and the full read that follows fails on such an
//! item too rather than skip it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::api::{Call, FollowedLinks, parse_page, refusal};
use super::error::{GraphError, Permission};
use super::membership::{GroupsLink, MAX_TRACKED_GROUPS, MembershipRound, filter_properties};
use super::query::with_query;
use super::settings::GraphScope;
use super::source::{Collected, GraphRead, GraphSource, full_read};
use super::user::{Projected, Projection};
use crate::core::{DirectoryEntry, DirectoryView};

/// Error codes that say a delta link can no longer be followed.
const RESYNC_CODES: [&str; 3] = ["syncStateNotFound", "resyncRequired", "syncStateInvalid"];

/// Where the next incremental read of a scope continues: Graph's deltaLink,
/// and the `$select` it was opened with (a link only serves the properties it
/// was opened for). Not a secret: the token in it is a position, not a
/// credential. Stored by the runner between runs, e.g. as [`DeltaLink::to_token`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaLink {
    url: String,
    select: String,
    /// Users a `$filter` check (an eventually consistent advanced query) left
    /// out: not reported as gone until the next round's check confirms it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unconfirmed: Vec<String>,
    /// The groups delta of the scope's groups, for their membership changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<GroupsLink>,
}

/// The `$select` of a scope's users delta: the projection's properties, and
/// those its filter tests.
fn delta_select(projection: &Projection, scope: &GraphScope) -> String {
    let mut select = projection.select();
    for name in scope
        .filter
        .as_deref()
        .map(filter_properties)
        .unwrap_or_default()
    {
        if !select.split(',').any(|s| s.eq_ignore_ascii_case(&name)) {
            select.push(',');
            select.push_str(&name);
        }
    }
    select
}

impl DeltaLink {
    /// The link as one string, to store (in memory or in a status field).
    pub fn to_token(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A link stored with [`DeltaLink::to_token`].
    pub fn from_token(token: &str) -> Result<Self, GraphError> {
        serde_json::from_str(token)
            .map_err(|_| GraphError::InvalidConfig("the stored delta link is not readable".into()))
    }

    /// The deltaLink URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Debug for DeltaLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeltaLink")
            .field("url", &self.url)
            .field("select", &self.select)
            .field("unconfirmed", &self.unconfirmed.len())
            .field("groups", &self.groups.as_ref().map(|g| g.tracked.len()))
            .finish()
    }
}

/// What an incremental read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// A complete round: an incremental view (or a full one, for a first round)
    /// and, in `read.delta`, the link for the next round.
    Changes(GraphRead),
    /// The link can no longer be followed: read the whole scope (a first
    /// round, `read_delta(scope, None)`). Nothing was read.
    FullReadNeeded { reason: String },
}

/// One user in a round: changed (present), or removed.
enum Change {
    Present(DirectoryEntry),
    Removed,
}

/// A round followed to its end, or a link that expired.
enum Round {
    Complete {
        changes: BTreeMap<String, Change>,
        skipped: u64,
        next: Url,
    },
    Expired(String),
}

impl GraphSource {
    /// An incremental read of `scope` since `since`, or, without a link, a
    /// first round: a complete full view of the scope plus the link for the
    /// next round.
    ///
    /// The first round of a whole-tenant scope is the delta listing itself. For
    /// a scope with groups or a filter, the listing is run to its end for the
    /// link alone (its users are not kept), and then the scope is read as in
    /// [`GraphSource::read`]; a change between the two shows again in the next
    /// round, which is harmless.
    ///
    /// An `Err` leaves `since` valid: the caller keeps it and tries again.
    pub async fn read_delta(
        &self,
        scope: &GraphScope,
        since: Option<&DeltaLink>,
    ) -> Result<DeltaOutcome, GraphError> {
        let outcome = self
            .within_budget(
                "reading user changes (delta query)",
                self.delta_round(scope, since, &[]),
            )
            .await;
        self.log_throttling();
        outcome
    }

    /// A first round (a full view of `scope` and the link for the next round)
    /// that accounts for `expected`, the users the caller holds as in scope: one
    /// the read leaves out is looked up by id before it counts as gone (see
    /// [`GraphSource::confirm_missing`]).
    pub async fn read_full(
        &self,
        scope: &GraphScope,
        expected: &[String],
    ) -> Result<DeltaOutcome, GraphError> {
        let outcome = self
            .within_budget("reading users", self.delta_round(scope, None, expected))
            .await;
        self.log_throttling();
        outcome
    }

    async fn delta_round(
        &self,
        scope: &GraphScope,
        since: Option<&DeltaLink>,
        expected: &[String],
    ) -> Result<DeltaOutcome, GraphError> {
        scope.validate()?;
        let projection = Projection::new(&scope.attributes);
        let select = delta_select(&projection, scope);
        let Some(since) = since else {
            return self.first_round(scope, &projection, expected).await;
        };
        if since.select != select {
            return Ok(DeltaOutcome::FullReadNeeded {
                reason: "the mapping's attributes changed since the delta link was made".into(),
            });
        }
        if !scope.groups.is_empty() && since.groups.is_none() {
            // No groups delta for this scope (more groups than one delta tracks,
            // or a link from before groups were tracked): only a full read sees
            // who joined or left them, so every run reads in full.
            return Ok(DeltaOutcome::FullReadNeeded {
                reason: format!(
                    "no groups delta tracks the mapping's groups (at most {MAX_TRACKED_GROUPS}, nested ones included): only a full read sees their membership changes"
                ),
            });
        }
        let url = match Url::parse(&since.url) {
            Ok(url) if self.api.is_own(&url) => url,
            _ => {
                return Ok(DeltaOutcome::FullReadNeeded {
                    reason: "the delta link does not point to this connector's Graph endpoint"
                        .into(),
                });
            }
        };
        let (changes, skipped, next) = match self.round(url, &projection, true).await? {
            Round::Complete {
                changes,
                skipped,
                next,
            } => (changes, skipped, next),
            Round::Expired(reason) => return Ok(DeltaOutcome::FullReadNeeded { reason }),
        };
        if skipped > 0 {
            // A change that cannot be told apart from the others: applying the
            // rest would leave that user as it was. The round is dropped, and a
            // full read (which fails if it meets such an item too) takes over.
            tracing::warn!(
                without_id = skipped,
                "Graph delta items came without an id; reading the whole scope instead"
            );
            return Ok(DeltaOutcome::FullReadNeeded {
                reason: format!(
                    "{skipped} delta item(s) came without an id; the changes cannot all be applied"
                ),
            });
        }
        let mut changes = changes;
        // Membership changes: the users they name are checked as changed ones.
        let groups = match &since.groups {
            None => None,
            Some(link) => match self.membership_changes(link).await? {
                MembershipRound::FullReadNeeded(reason) => {
                    return Ok(DeltaOutcome::FullReadNeeded { reason });
                }
                MembershipRound::Changes { users, next } => {
                    for id in users {
                        if changes.contains_key(&id) {
                            continue;
                        }
                        match self.get_user(&id, &projection).await? {
                            Some(Projected::User(entry)) => {
                                changes.insert(id, Change::Present(entry));
                            }
                            Some(Projected::WithoutAnchor) => {
                                return Ok(DeltaOutcome::FullReadNeeded {
                                    reason: "a user a membership change names came without an id"
                                        .into(),
                                });
                            }
                            // Gone from the tenant: the users delta reports that.
                            None => {
                                tracing::debug!(user = %id, "a user a membership change names is not found");
                            }
                        }
                    }
                    Some(next)
                }
            },
        };
        let mut entries = Vec::new();
        let mut removed = Vec::new();
        for (id, change) in changes {
            match change {
                Change::Present(entry) => entries.push(entry),
                Change::Removed => removed.push(id),
            }
        }
        let mut unconfirmed = Vec::new();
        if !scope.is_whole_tenant() {
            // Users the last round's filter check left out, and that did not
            // change since: this round's check confirms or clears them.
            let pending: BTreeSet<String> = since.unconfirmed.iter().cloned().collect();
            let seen: BTreeSet<&String> =
                entries.iter().map(|e| &e.anchor).chain(&removed).collect();
            let recheck: Vec<String> = pending
                .iter()
                .filter(|id| !seen.contains(id))
                .cloned()
                .collect();
            let ids: Vec<String> = entries
                .iter()
                .map(|e| e.anchor.clone())
                .chain(recheck.iter().cloned())
                .collect();
            let in_scope = if ids.is_empty() {
                Default::default()
            } else {
                self.in_scope(scope, ids).await?
            };
            let (kept, left): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .partition(|e| in_scope.contains(&e.anchor));
            entries = kept;
            let left = left
                .into_iter()
                .map(|e| e.anchor)
                .chain(recheck.into_iter().filter(|id| !in_scope.contains(id)));
            for id in left {
                // A `$filter` is read with `ConsistencyLevel: eventual`: a user
                // edited a moment ago can briefly fall out of its answer. Out
                // of scope only once a later round's check agrees.
                if scope.filter.is_some() && !pending.contains(&id) {
                    unconfirmed.push(id);
                } else {
                    removed.push(id);
                }
            }
        }
        if !unconfirmed.is_empty() {
            tracing::info!(
                unconfirmed = unconfirmed.len(),
                "users left out by the filter check are kept until the next round confirms it"
            );
        }
        tracing::debug!(
            changed = entries.len(),
            removed = removed.len(),
            "Graph delta round complete"
        );
        Ok(DeltaOutcome::Changes(GraphRead {
            view: DirectoryView::incremental(entries, removed),
            delta: Some(DeltaLink {
                url: next.into(),
                select,
                unconfirmed,
                groups,
            }),
            skipped_without_anchor: 0,
        }))
    }

    async fn first_round(
        &self,
        scope: &GraphScope,
        projection: &Projection,
        expected: &[String],
    ) -> Result<DeltaOutcome, GraphError> {
        let select = delta_select(projection, scope);
        let whole_tenant = scope.is_whole_tenant();
        // The delta query takes no `$top`: Graph chooses its page size. A
        // narrower scope is read on its own below: it needs only the link.
        let mut options = vec![("$select", select.as_str())];
        if !whole_tenant {
            options.push(("$deltatoken", "latest"));
        }
        let start = with_query(self.api.url("users/delta"), &options);
        let (changes, skipped, next) = match self.round(start, projection, whole_tenant).await? {
            Round::Complete {
                changes,
                skipped,
                next,
            } => (changes, skipped, next),
            // A fresh listing cannot have expired; say so rather than loop.
            Round::Expired(reason) => {
                return Err(GraphError::read_failed(
                    "starting a delta query",
                    format!("Graph refused a new delta query: {reason}"),
                ));
            }
        };
        let groups = if scope.groups.is_empty() {
            None
        } else {
            self.groups_link(&scope.groups).await?
        };
        let link = DeltaLink {
            url: next.into(),
            select,
            unconfirmed: Vec::new(),
            groups,
        };
        let collected = if whole_tenant {
            let mut collected = Collected {
                skipped,
                ..Default::default()
            };
            for change in changes.into_values() {
                if let Change::Present(entry) = change {
                    collected.add(Projected::User(entry));
                }
            }
            collected
        } else {
            let mut collected = self.read_scope(scope, projection).await?;
            self.confirm_missing(scope, &mut collected, expected)
                .await?;
            collected
        };
        Ok(DeltaOutcome::Changes(full_read(collected, Some(link))?))
    }

    /// Follow a round from `start` to its deltaLink. With `keep` false the
    /// users are not kept (only the link is wanted).
    async fn round(
        &self,
        start: Url,
        projection: &Projection,
        keep: bool,
    ) -> Result<Round, GraphError> {
        let call = Call {
            what: "reading user changes (delta query)",
            permission: Permission::UserReadAll,
            advanced: false,
        };
        let mut changes = BTreeMap::new();
        let mut skipped = 0;
        let followed = self
            .follow_delta(start, call, |item| {
                if !keep {
                    return Ok(());
                }
                if item.contains_key("@removed") {
                    match item.get("id").and_then(Value::as_str) {
                        Some(id) if !id.is_empty() => {
                            changes.insert(id.to_owned(), Change::Removed);
                        }
                        _ => skipped += 1,
                    }
                    return Ok(());
                }
                match projection.project(&item, call.what)? {
                    Projected::User(entry) => {
                        changes.insert(entry.anchor.clone(), Change::Present(entry));
                    }
                    Projected::WithoutAnchor => skipped += 1,
                }
                Ok(())
            })
            .await?;
        Ok(match followed {
            Ok(next) => Round::Complete {
                changes,
                skipped,
                next,
            },
            Err(reason) => Round::Expired(reason),
        })
    }

    /// Follow a delta round (of users or of groups) from `start` page by page,
    /// each item to `each`, to its deltaLink; `Err` with the reason when Graph
    /// says the link can no longer be followed. A page link seen before in the
    /// round is a [`GraphError::LinkCycle`], and a deltaLink must point into
    /// this connector's Graph endpoint.
    pub(super) async fn follow_delta(
        &self,
        start: Url,
        call: Call<'_>,
        mut each: impl FnMut(serde_json::Map<String, Value>) -> Result<(), GraphError>,
    ) -> Result<Result<Url, String>, GraphError> {
        let mut followed = FollowedLinks::starting_at(&start);
        let mut url = start;
        loop {
            let reply = self.api.send(Method::GET, &url, None, call).await?;
            if let Some(reason) = expired(reply.status, reply.error_code().as_deref()) {
                return Ok(Err(format!("{reason} ({})", reply.describe())));
            }
            if !reply.status.is_success() {
                return Err(refusal(&reply, call));
            }
            let page = parse_page(reply.json(call.what)?, call.what)?;
            for item in page.items {
                each(item)?;
            }
            match (page.next, page.delta) {
                (Some(next), _) => {
                    followed.follow(&next, call.what)?;
                    url = next;
                }
                (None, Some(delta)) if self.api.is_own(&delta) => return Ok(Ok(delta)),
                (None, Some(_)) => {
                    return Err(GraphError::read_failed(
                        call.what,
                        "the deltaLink points outside this connector's Graph endpoint",
                    ));
                }
                (None, None) => {
                    return Err(GraphError::read_failed(
                        call.what,
                        "a delta page had neither a nextLink nor a deltaLink",
                    ));
                }
            }
        }
    }
}

/// Why a delta answer means "start over", if it does.
fn expired(status: StatusCode, code: Option<&str>) -> Option<&'static str> {
    if status == StatusCode::GONE {
        return Some("the delta link has expired");
    }
    let code = code?;
    (status.is_client_error() && RESYNC_CODES.iter().any(|c| c.eq_ignore_ascii_case(code)))
        .then_some("Graph asks for a full resynchronisation")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_and_resync_codes_mean_a_full_read() {
        assert!(expired(StatusCode::GONE, None).is_some());
        assert!(expired(StatusCode::GONE, Some("syncStateNotFound")).is_some());
        assert!(expired(StatusCode::BAD_REQUEST, Some("resyncRequired")).is_some());
        assert!(expired(StatusCode::BAD_REQUEST, Some("SyncStateNotFound")).is_some());
        assert!(expired(StatusCode::BAD_REQUEST, Some("Request_BadRequest")).is_none());
        assert!(expired(StatusCode::OK, None).is_none());
        assert!(expired(StatusCode::SERVICE_UNAVAILABLE, Some("resyncRequired")).is_none());
    }

    #[test]
    fn delta_links_round_trip_through_a_token() {
        let link = DeltaLink {
            url: "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=abc".into(),
            select: "id,accountEnabled".into(),
            unconfirmed: vec!["u".into()],
            groups: Some(GroupsLink {
                url: "https://graph.example/v1.0/groups/delta?$deltatoken=g".into(),
                tracked: vec!["g".into()],
            }),
        };
        assert_eq!(DeltaLink::from_token(&link.to_token()).unwrap(), link);
        assert!(DeltaLink::from_token("garbage").is_err());
        // A link stored before `unconfirmed` existed still reads.
        let old = DeltaLink::from_token(
            r#"{"url":"https://graph.microsoft.com/v1.0/users/delta","select":"id"}"#,
        )
        .unwrap();
        assert!(old.unconfirmed.is_empty());
    }
}
