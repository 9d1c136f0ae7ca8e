//! The Graph source: probe a tenant, read a mapping's whole scope, and look
//! users up by anchor.
//!
//! A scope without groups is read from `/users`; a scope with groups from each
//! group's `transitiveMembers/microsoft.graph.user` (nested groups resolved by
//! Graph), at most [`CONCURRENCY`] groups at a time, and the union kept once
//! per user. A `$filter` is sent as an advanced query (`ConsistencyLevel:
//! eventual` and `$count=true`), which every filter Graph supports on users
//! accepts. Any failure fails the whole read: the caller then changes no
//! lifecycle state.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::api::{Api, Call, refusal};
use super::assertion::CertificateKey;
use super::delta::DeltaLink;
use super::error::{GraphError, Permission};
use super::query::{GROUPS_PER_CHECK, IDS_PER_FILTER, PAGE_SIZE, filter_with_ids, with_query};
use super::settings::{Credential, Endpoints, GraphScope, GraphSettings, is_graph_id};
use super::token::{ClientAuth, TokenCache, TokenFingerprint, TokenSlot, Tokens};
use super::transport::{Throttling, Transport};
use super::user::{Projected, Projection};
use crate::core::{DirectoryEntry, DirectoryView};

/// Requests in flight at once for one read (group reads, membership checks,
/// lookups): enough to overlap latency, few enough not to invite throttling.
pub const CONCURRENCY: usize = 4;

/// Times a membership check is asked before its read fails.
pub(crate) const MEMBERSHIP_ATTEMPTS: u32 = 3;

/// An Entra ID tenant read through Microsoft Graph.
pub struct GraphSource {
    pub(crate) api: Api,
    endpoints: Endpoints,
    /// The most time one whole read may take.
    read_budget: Duration,
    /// Told this source's throttling when it is dropped.
    on_drop: Option<ThrottlingReport>,
}

type ThrottlingReport = Box<dyn Fn(Throttling) + Send + Sync>;

impl Drop for GraphSource {
    fn drop(&mut self) {
        if let Some(report) = &self.on_drop {
            report(self.throttling());
        }
    }
}

impl std::fmt::Debug for GraphSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphSource")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A successful probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Token (from cache or new) and one minimal read, end to end.
    pub latency: Duration,
}

/// The result of reading a whole scope, or of one delta round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphRead {
    /// A complete view: full for a full read, incremental for a delta round.
    pub view: DirectoryView,
    /// Where the next incremental read continues; `None` for a plain full read.
    pub delta: Option<DeltaLink>,
    /// Always 0: a read that meets a user without an `id` is incomplete and
    /// fails (full reads), or asks for a full read (delta rounds). Kept for the
    /// directory-neutral [`Read`](crate::directory::Read).
    pub skipped_without_anchor: u64,
}

/// Users collected by anchor, and how many had none.
#[derive(Default)]
pub(crate) struct Collected {
    pub entries: BTreeMap<String, DirectoryEntry>,
    pub skipped: u64,
}

impl Collected {
    pub(crate) fn add(&mut self, projected: Projected) {
        match projected {
            Projected::User(entry) => {
                self.entries.insert(entry.anchor.clone(), entry);
            }
            Projected::WithoutAnchor => self.skipped += 1,
        }
    }

    /// The users, if every item could be used. An item without an `id` is a
    /// user the read cannot account for: skipping it and going on would
    /// preserve that user as if it had left the scope, so the read is
    /// incomplete (DESIGN §3) and fails, naming how many there were.
    pub(crate) fn complete(
        self,
        what: &str,
    ) -> Result<BTreeMap<String, DirectoryEntry>, GraphError> {
        if self.skipped > 0 {
            tracing::warn!(
                what,
                without_id = self.skipped,
                "Graph answered with users without an id; the read is incomplete"
            );
            return Err(without_id(what, self.skipped));
        }
        Ok(self.entries)
    }
}

/// The error for `count` collection items without a usable `id`.
pub(crate) fn without_id(what: &str, count: u64) -> GraphError {
    let items = if count == 1 {
        "1 item".to_owned()
    } else {
        format!("{count} items")
    };
    GraphError::read_failed(
        what,
        format!("{items} came without an id, so the read is incomplete and changes nothing"),
    )
}

impl GraphSource {
    /// A source for `settings`, checked: endpoints, CA bundle, and for a
    /// certificate credential that the key is RSA and belongs to the
    /// certificate. No network traffic: an unreachable tenant shows in the
    /// first operation.
    pub fn new(settings: &GraphSettings) -> Result<Self, GraphError> {
        Self::build(settings, |_| Arc::new(TokenSlot::default()))
    }

    /// As [`GraphSource::new`], with its token kept in `cache` for `owner` (a
    /// connector): a later source of the same owner and settings uses the token
    /// until shortly before it expires, instead of asking for another.
    pub fn with_token_cache(
        settings: &GraphSettings,
        cache: &TokenCache,
        owner: &str,
    ) -> Result<Self, GraphError> {
        Self::build(settings, |fingerprint| cache.slot(owner, fingerprint))
    }

    fn build(
        settings: &GraphSettings,
        slot: impl FnOnce(TokenFingerprint) -> Arc<TokenSlot>,
    ) -> Result<Self, GraphError> {
        let endpoints = settings.validate()?;
        let fingerprint = TokenFingerprint::of(
            &endpoints.token,
            &settings.client_id,
            &endpoints.scope,
            &credential_bytes(&settings.credential),
        );
        let auth = match &settings.credential {
            Credential::Secret(secret) => ClientAuth::Secret(secret.clone()),
            Credential::Certificate { cert_pem, key_pem } => {
                ClientAuth::Certificate(Box::new(CertificateKey::from_pem(cert_pem, key_pem)?))
            }
        };
        let transport = Transport::new(settings)?;
        let tokens = Tokens::new(
            endpoints.token.clone(),
            settings.client_id.clone(),
            endpoints.scope.clone(),
            auth,
            slot(fingerprint),
        );
        Ok(Self {
            api: Api::new(transport, tokens, endpoints.graph.clone()),
            endpoints,
            on_drop: None,
            read_budget: settings.read_budget,
        })
    }

    /// Hand how much this source was throttled to `report` when it is
    /// dropped: once, after every read, probe or lookup made with it,
    /// whether they succeeded or not.
    pub fn report_throttling(
        mut self,
        report: impl Fn(Throttling) + Send + Sync + 'static,
    ) -> Self {
        self.on_drop = Some(Box::new(report));
        self
    }

    /// Where requests go.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// How often Graph throttled this source (429 or 503) and how long its
    /// requests waited for it, since the source was made.
    pub fn throttling(&self) -> Throttling {
        self.api.throttling()
    }

    /// A token and one minimal read of users (which needs `User.Read.All`):
    /// what `Connected=True` rests on.
    pub async fn probe(&self) -> Result<ProbeReport, GraphError> {
        let started = Instant::now();
        let url = with_query(self.api.url("users"), &[("$select", "id"), ("$top", "1")]);
        let call = Call {
            what: "reading one user",
            permission: Permission::UserReadAll,
            advanced: false,
        };
        self.api.page(&url, call).await?;
        Ok(ProbeReport {
            latency: started.elapsed(),
        })
    }

    /// Read every user of `scope`, page by page, keeping only each user's
    /// projection. `Ok` means the read was complete; any failure on the way
    /// (throttling past the budget, an error page, a missing group) is an
    /// `Err`, and the caller must then change no lifecycle state.
    pub async fn read(&self, scope: &GraphScope) -> Result<GraphRead, GraphError> {
        scope.validate()?;
        let projection = Projection::new(&scope.attributes);
        let collected = self
            .within_budget("reading users", self.read_scope(scope, &projection))
            .await;
        self.log_throttling();
        full_read(collected?, None)
    }

    /// `read`, stopped with [`GraphError::ReadBudgetExceeded`] when it takes
    /// longer than the read budget: an endless chain of page links, or a
    /// server that answers ever so slowly, ends there. Dropping the read
    /// cancels its requests in flight.
    pub(crate) async fn within_budget<T>(
        &self,
        what: &str,
        read: impl Future<Output = Result<T, GraphError>>,
    ) -> Result<T, GraphError> {
        match tokio::time::timeout(self.read_budget, read).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    what,
                    budget_s = self.read_budget.as_secs(),
                    "a Graph read ran past its time budget"
                );
                Err(GraphError::ReadBudgetExceeded {
                    what: what.to_owned(),
                    budget: self.read_budget,
                })
            }
        }
    }

    /// The users of `scope` whose anchor is one of `anchors` (rule 9: before a
    /// user is preserved as unmapped, does another mapping match it?). Anchors
    /// that are not users, not in the scope, or cannot be a Graph object ID are
    /// simply not in the result.
    pub async fn lookup(
        &self,
        scope: &GraphScope,
        anchors: &[String],
    ) -> Result<Vec<DirectoryEntry>, GraphError> {
        self.within_budget("looking users up", self.lookup_unbounded(scope, anchors))
            .await
    }

    async fn lookup_unbounded(
        &self,
        scope: &GraphScope,
        anchors: &[String],
    ) -> Result<Vec<DirectoryEntry>, GraphError> {
        scope.validate()?;
        let projection = Projection::new(&scope.attributes);
        let wanted: Vec<String> = anchors
            .iter()
            .filter(|a| is_graph_id(a))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut found = Collected::default();
        match &scope.filter {
            // The filter and the IDs in one query per batch.
            Some(filter) => {
                for batch in wanted.chunks(IDS_PER_FILTER) {
                    let url =
                        self.users_url(&projection, Some(&filter_with_ids(Some(filter), batch)));
                    let call = Call {
                        what: "looking users up",
                        permission: Permission::UserReadAll,
                        advanced: true,
                    };
                    self.api
                        .for_each(url, call, |user| {
                            found.add(projection.project(&user, call.what)?);
                            Ok(())
                        })
                        .await?;
                }
            }
            // Targeted reads, which see a user as soon as it exists.
            None => {
                // Owned IDs: a closure over borrowed ones makes the future
                // lose `Send` (a higher-ranked lifetime the compiler cannot prove).
                let projection = &projection;
                let reads = stream::iter(wanted.iter().cloned())
                    .map(|id| async move { self.get_user(&id, projection).await })
                    .buffer_unordered(CONCURRENCY);
                let results: Vec<_> = reads.collect().await;
                for result in results {
                    if let Some(projected) = result? {
                        found.add(projected);
                    }
                }
            }
        }
        let mut entries = found.complete("looking users up")?;
        if !scope.groups.is_empty() {
            let ids: Vec<String> = entries.keys().cloned().collect();
            let members = self.members_of_any(&scope.groups, &ids).await?;
            entries.retain(|id, _| members.contains(id));
        }
        Ok(entries.into_values().collect())
    }

    /// Put back into a full read of a group or filter scope the users of
    /// `expected` it left out that are in scope after all.
    ///
    /// Such a scope is read as an advanced query (`ConsistencyLevel:
    /// eventual`), whose index can lag behind an edit: a user edited a moment
    /// ago can briefly be missing from the answer, and concluding from that
    /// one answer that it left the scope would preserve it. So each expected
    /// user the read left out is looked up as [`GraphSource::lookup`] does: by
    /// `GET /users/{id}` (a user that is gone answers 404), by
    /// `checkMemberGroups` for the groups (not eventual), and for a filter by
    /// a second, targeted query `(filter) and id in (…)` (Graph has no
    /// consistent way to test a filter). Only a user those leave out is absent
    /// from the view; a lookup that fails fails the read.
    pub(crate) async fn confirm_missing(
        &self,
        scope: &GraphScope,
        collected: &mut Collected,
        expected: &[String],
    ) -> Result<(), GraphError> {
        if scope.is_whole_tenant() {
            return Ok(());
        }
        let missing: Vec<String> = expected
            .iter()
            .filter(|id| !collected.entries.contains_key(*id))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let found = self.lookup(scope, &missing).await?;
        tracing::info!(
            missing = missing.len(),
            still_in_scope = found.len(),
            "users the read left out were looked up by id"
        );
        for entry in found {
            collected.add(Projected::User(entry));
        }
        Ok(())
    }

    /// Every user of the scope, by anchor.
    pub(crate) async fn read_scope(
        &self,
        scope: &GraphScope,
        projection: &Projection,
    ) -> Result<Collected, GraphError> {
        let mut collected = Collected::default();
        if scope.groups.is_empty() {
            let url = self.users_url(projection, scope.filter.as_deref());
            let call = Call {
                what: "reading users",
                permission: Permission::UserReadAll,
                advanced: scope.filter.is_some(),
            };
            self.api
                .for_each(url, call, |user| {
                    collected.add(projection.project(&user, call.what)?);
                    Ok(())
                })
                .await?;
            return Ok(collected);
        }
        let groups: BTreeSet<String> = scope.groups.iter().cloned().collect();
        let filter = scope.filter.as_deref();
        let mut reads = stream::iter(groups)
            .map(|group| async move { self.read_group(&group, filter, projection).await })
            .buffer_unordered(CONCURRENCY);
        while let Some(group) = reads.next().await {
            // The first failure ends the read; the other group reads are dropped.
            let group = group?;
            collected.skipped += group.skipped;
            collected.entries.extend(group.entries);
        }
        Ok(collected)
    }

    /// The transitive user members of one group (nested groups resolved by
    /// Graph). A group that does not exist fails the read: treating it as empty
    /// would preserve every user it held.
    async fn read_group(
        &self,
        group: &str,
        filter: Option<&str>,
        projection: &Projection,
    ) -> Result<Collected, GraphError> {
        let select = projection.select();
        let top = PAGE_SIZE.to_string();
        let mut options = vec![
            ("$select", select.as_str()),
            ("$top", top.as_str()),
            ("$count", "true"),
        ];
        if let Some(filter) = filter {
            options.push(("$filter", filter));
        }
        let url = with_query(
            self.api.url(&format!(
                "groups/{group}/transitiveMembers/microsoft.graph.user"
            )),
            &options,
        );
        let what = format!("reading the members of group {group}");
        let call = Call {
            what: &what,
            permission: Permission::GroupMemberReadAll,
            advanced: true,
        };
        let mut collected = Collected::default();
        self.api
            .for_each(url, call, |user| {
                collected.add(projection.project(&user, call.what)?);
                Ok(())
            })
            .await?;
        Ok(collected)
    }

    /// Say how much the read was throttled, if at all.
    pub(crate) fn log_throttling(&self) {
        let t = self.throttling();
        if t.throttled_requests > 0 {
            tracing::info!(
                throttled_requests = t.throttled_requests,
                waited_ms = t.waited.as_millis() as u64,
                "Microsoft Graph throttled the read"
            );
        }
    }

    /// `/users` with the projection's `$select`, the largest page, and the
    /// filter as an advanced query.
    fn users_url(&self, projection: &Projection, filter: Option<&str>) -> url::Url {
        let select = projection.select();
        let top = PAGE_SIZE.to_string();
        let mut options = vec![("$select", select.as_str()), ("$top", top.as_str())];
        if let Some(filter) = filter {
            options.push(("$filter", filter));
            options.push(("$count", "true"));
        }
        with_query(self.api.url("users"), &options)
    }

    /// One user by ID; `None` when there is no such user.
    pub(crate) async fn get_user(
        &self,
        id: &str,
        projection: &Projection,
    ) -> Result<Option<Projected>, GraphError> {
        let select = projection.select();
        let url = with_query(
            self.api.url(&format!("users/{id}")),
            &[("$select", &select)],
        );
        let call = Call {
            what: "looking a user up",
            permission: Permission::UserReadAll,
            advanced: false,
        };
        let reply = self.api.send(Method::GET, &url, None, call).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => match reply.json(call.what)? {
                Value::Object(user) => Ok(Some(projection.project(&user, call.what)?)),
                _ => Err(GraphError::read_failed(
                    call.what,
                    "the user is not a JSON object",
                )),
            },
            _ => Err(refusal(&reply, call)),
        }
    }

    /// Which of `ids` are in `scope` now (used for users a delta round says
    /// changed, whose scope the delta itself cannot tell).
    pub(crate) async fn in_scope(
        &self,
        scope: &GraphScope,
        ids: Vec<String>,
    ) -> Result<HashSet<String>, GraphError> {
        let mut candidates = ids;
        if let Some(filter) = &scope.filter {
            let mut matching = Vec::new();
            for batch in candidates.chunks(IDS_PER_FILTER) {
                let url = with_query(
                    self.api.url("users"),
                    &[
                        ("$select", "id"),
                        ("$filter", &filter_with_ids(Some(filter), batch)),
                        ("$count", "true"),
                    ],
                );
                let call = Call {
                    what: "checking changed users against the filter",
                    permission: Permission::UserReadAll,
                    advanced: true,
                };
                self.api
                    .for_each(url, call, |user| {
                        match user.get("id").and_then(Value::as_str) {
                            Some(id) if !id.is_empty() => matching.push(id.to_owned()),
                            // Not knowing which user this is, the check cannot
                            // say who is out of scope.
                            _ => return Err(without_id(call.what, 1)),
                        }
                        Ok(())
                    })
                    .await?;
            }
            candidates = matching;
        }
        if !scope.groups.is_empty() {
            return self.members_of_any(&scope.groups, &candidates).await;
        }
        Ok(candidates.into_iter().collect())
    }

    /// Which of `ids` are transitive members of at least one of `groups`, by
    /// `checkMemberGroups` on each user: a direct question with a direct
    /// answer, rather than reading every group's whole member list.
    pub(crate) async fn members_of_any(
        &self,
        groups: &[String],
        ids: &[String],
    ) -> Result<HashSet<String>, GraphError> {
        let checks = stream::iter(ids.iter().cloned())
            .map(|id| async move {
                for chunk in groups.chunks(GROUPS_PER_CHECK) {
                    if self.is_member_of_any(&id, chunk).await? {
                        return Ok::<_, GraphError>(Some(id));
                    }
                }
                Ok(None)
            })
            .buffer_unordered(CONCURRENCY);
        let results: Vec<_> = checks.collect().await;
        let mut members = HashSet::new();
        for result in results {
            members.extend(result?);
        }
        Ok(members)
    }

    /// Whether the user is a transitive member of any of `groups`. Only a
    /// success answers the question: a 404 (which Entra gives for a user
    /// created a moment ago, not yet on every replica) or any other refusal is
    /// no "not a member". It is asked again, after a backoff, up to
    /// [`MEMBERSHIP_ATTEMPTS`] times; then the read fails (incomplete), rather
    /// than let the user be preserved on an answer that never came.
    async fn is_member_of_any(&self, id: &str, groups: &[String]) -> Result<bool, GraphError> {
        let url = self.api.url(&format!("users/{id}/checkMemberGroups"));
        let call = Call {
            what: "checking group membership",
            permission: Permission::GroupMemberReadAll,
            advanced: false,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reply = self
                .api
                .post_json(&url, &json!({ "groupIds": groups }), call)
                .await?;
            match reply.status {
                s if s.is_success() => {
                    let value = reply.json(call.what)?;
                    return match value.get("value").and_then(Value::as_array) {
                        Some(found) => Ok(!found.is_empty()),
                        None => Err(GraphError::read_failed(
                            call.what,
                            "the answer has no \"value\"",
                        )),
                    };
                }
                // Permissions do not come back by asking again.
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                    return Err(refusal(&reply, call));
                }
                _ if attempt < MEMBERSHIP_ATTEMPTS => {
                    tracing::debug!(
                        user = id,
                        attempt,
                        answer = reply.describe(),
                        "a membership check did not succeed; asking again"
                    );
                    tokio::time::sleep(self.api.backoff(attempt)).await;
                }
                _ => {
                    return Err(GraphError::read_failed(
                        format!("checking the group membership of user {id}"),
                        format!(
                            "{} after {attempt} attempts; without an answer the user's scope is unknown, so the read is incomplete",
                            reply.describe()
                        ),
                    ));
                }
            }
        }
    }
}

/// The credential as bytes, for its fingerprint only.
fn credential_bytes(credential: &Credential) -> Vec<u8> {
    match credential {
        Credential::Secret(secret) => [b"secret:", secret.expose().as_bytes()].concat(),
        Credential::Certificate { cert_pem, key_pem } => [
            b"certificate:",
            cert_pem.as_bytes(),
            b"\0",
            key_pem.expose().as_bytes(),
        ]
        .concat(),
    }
}

/// A complete full read, or the error of one that met unusable items.
pub(crate) fn full_read(
    collected: Collected,
    delta: Option<DeltaLink>,
) -> Result<GraphRead, GraphError> {
    Ok(GraphRead {
        view: DirectoryView::full_keyed(collected.complete("reading users")?),
        delta,
        skipped_without_anchor: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::graph::cloud::Cloud;
    use crate::secret::SecretString;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}

    /// The controller runs reads on a multi-threaded runtime and keeps sources
    /// and errors in shared state: all of them must cross threads.
    #[test]
    fn sources_futures_and_errors_cross_threads() {
        let settings = GraphSettings::new(
            "11111111-2222-3333-4444-555555555555",
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            Credential::Secret(SecretString::new("x")),
            Cloud::Global,
        );
        let source = GraphSource::new(&settings).unwrap();
        let scope = GraphScope::all_users();
        assert_send_sync(&source);
        assert_send(&source.probe());
        assert_send(&source.read(&scope));
        assert_send(&source.read_delta(&scope, None));
        assert_send(&source.lookup(&scope, &[]));
        assert_send_sync(&GraphError::InvalidConfig(String::new()));
    }
}
