//! The default store: one DirectoryUser object per record, lifecycle in its status
//! subresource, every write a server-side apply under the operator's field manager.
//! In the operator, a run plans from the namespace's watched copy
//! ([`super::warm`]); the command line, which has none, lists.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::record::{labels_of, spec_of, status_of};
use super::warm::{CachedUser, SYNC_WAIT, UserCache};
use super::{ApplyReport, RunInfo, StoreError, UserStore};
use crate::api::DirectoryUser;
use crate::api::FIELD_MANAGER;
use crate::core::{Origin, State, Transition, TransitionKind, UserRecord, deletion_deadline};

/// The field manager of changes an admin makes through the command line.
pub const ADMIN_FIELD_MANAGER: &str = "usersync-admin";
/// How many writes are in flight at once.
const WRITE_CONCURRENCY: usize = 16;
/// Objects per list page when taking a snapshot.
const LIST_PAGE: u32 = 500;

/// DirectoryUser objects of one namespace.
pub struct KubernetesStore {
    api: Api<DirectoryUser>,
    /// The namespace's watched copy, when the process keeps one.
    cache: Option<Arc<UserCache>>,
    /// What the snapshot saw that the planner's records do not carry, by name.
    seen: HashMap<String, Seen>,
}

/// One object as the last snapshot saw it.
struct Seen {
    /// Every write is conditional on it: a record changed since (by another run)
    /// is not overwritten from a stale plan.
    resource_version: Option<String>,
    /// `status.previousRecord`, which only the store keeps.
    previous_record: Option<String>,
    /// The spec fields, attributes and labels the object held: one the new
    /// record lacks is removed by name (see [`removals`]).
    held: Held,
}

/// What an object's spec and labels held, by name.
#[derive(Default)]
struct Held {
    spec: Vec<String>,
    attributes: Vec<String>,
    labels: Vec<String>,
}

impl Held {
    fn of(record: &UserRecord) -> Self {
        let spec = spec_of(record);
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        Self {
            spec: keys(&spec),
            attributes: spec.get("attributes").map(keys).unwrap_or_default(),
            labels: labels_of(record).into_keys().collect(),
        }
    }
}

/// `object` (the record's metadata and spec) with a `null` for every spec field,
/// attribute and label the object held and the record lacks; `None` when it lacks
/// none. Server-side apply cannot remove those: the object was created by a POST,
/// whose fields stay owned by that create, so a removal goes as a merge patch.
fn removals(object: &serde_json::Value, held: &Held) -> Option<serde_json::Value> {
    let mut patch = object.clone();
    let mut removed = false;
    let mut null_missing = |target: &mut serde_json::Value, names: &[String]| {
        if !target.is_object() {
            *target = serde_json::json!({});
        }
        let map = target.as_object_mut().expect("an object");
        for name in names {
            if !map.contains_key(name) {
                map.insert(name.clone(), serde_json::Value::Null);
                removed = true;
            }
        }
    };
    let spec_names: Vec<String> = held
        .spec
        .iter()
        .filter(|k| k.as_str() != "attributes")
        .cloned()
        .collect();
    null_missing(&mut patch["spec"], &spec_names);
    if !held.attributes.is_empty() {
        null_missing(&mut patch["spec"]["attributes"], &held.attributes);
    }
    null_missing(&mut patch["metadata"]["labels"], &held.labels);
    removed.then_some(patch)
}

/// Why one write did not land.
enum WriteError {
    /// The object changed, appeared or went since the snapshot.
    Conflict,
    /// This process may no longer write (it lost the Lease or is stopping).
    Fenced,
    Other(kube::Error),
}

impl From<kube::Error> for WriteError {
    fn from(e: kube::Error) -> Self {
        match e {
            // A write conditional on a version of an object deleted since fails
            // as not found.
            kube::Error::Api(ref r) if r.code == 409 || r.code == 404 => WriteError::Conflict,
            e => WriteError::Other(e),
        }
    }
}

/// Why a write failed, in the API server's own words when it answered (its
/// message names the object and the rule that refused it), without the response's
/// internal structure.
fn write_failure(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!(
            "the API server refused the write ({} {}): {}",
            status.code, status.reason, status.message
        ),
        other => other.to_string(),
    }
}

impl KubernetesStore {
    /// The store of `namespace`, which lists the DirectoryUsers for each snapshot.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            cache: None,
            seen: HashMap::new(),
        }
    }

    /// The namespace's DirectoryUsers.
    pub(crate) fn api(&self) -> &Api<DirectoryUser> {
        &self.api
    }

    /// The store of `namespace` that plans from `cache`, its watched copy, and
    /// keeps that copy up to date with what it writes.
    pub fn warm(client: Client, namespace: &str, cache: Arc<UserCache>) -> Self {
        Self {
            cache: Some(cache),
            ..Self::new(client, namespace)
        }
    }

    /// The watched copy, once it can be planned from; none (after saying why)
    /// when it cannot, and the caller lists.
    async fn ready_cache(&self) -> Option<&UserCache> {
        let cache = self.cache.as_deref()?;
        match cache.ready(SYNC_WAIT).await {
            Ok(()) => Some(cache),
            Err(why) => {
                tracing::warn!(
                    namespace = self.api.namespace().unwrap_or_default(),
                    "{why}; listing the DirectoryUsers instead"
                );
                None
            }
        }
    }

    /// Every DirectoryUser of the namespace, listed page by page, as the planner
    /// needs them. The watched copy, if any, takes in what the list found.
    async fn list_all(&self) -> Result<Vec<CachedUser>, StoreError> {
        let mut users = Vec::new();
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            let page = self.api.list(&params).await?;
            if users.is_empty() {
                // One allocation for the whole registry instead of doubling
                // (and copying) it page after page.
                let remaining = page.metadata.remaining_item_count.unwrap_or(0);
                users.reserve_exact(page.items.len() + usize::try_from(remaining).unwrap_or(0));
            }
            users.extend(page.items.iter().map(CachedUser::of));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        if let Some(cache) = &self.cache {
            cache.absorb_list(&users);
        }
        Ok(users)
    }

    /// Remember what a snapshot saw of each user; their records.
    fn saw_all(&mut self, users: Vec<CachedUser>) -> Vec<UserRecord> {
        self.seen.clear();
        users
            .into_iter()
            .map(|user| {
                self.seen.insert(
                    user.record.name.clone(),
                    Seen {
                        resource_version: user.resource_version,
                        previous_record: user.previous_record,
                        held: Held::of(&user.record),
                    },
                );
                user.record
            })
            .collect()
    }

    /// After a conflict: the object as it is now goes into the watched copy, so
    /// that the user is planned again from it.
    async fn refresh(&self, name: &str) {
        let Some(cache) = &self.cache else {
            return;
        };
        match self.api.get_opt(name).await {
            Ok(Some(user)) => cache.fold(&user),
            Ok(None) => cache.forget(name),
            Err(e) => {
                tracing::warn!(user = %name, error = %e, "reading a user that changed since the snapshot failed")
            }
        }
    }

    /// Whether `mapping` of `connector` still owns a user that is not a tombstone.
    pub async fn owns_live_users(
        &self,
        connector: &str,
        mapping: &str,
    ) -> Result<bool, StoreError> {
        use crate::api::{CONNECTOR_LABEL, MAPPING_LABEL, STATE_LABEL};
        let selector = format!(
            "{MAPPING_LABEL}={mapping},{CONNECTOR_LABEL}={connector},{STATE_LABEL}!=deleted"
        );
        let live = self
            .api
            .list_metadata(&ListParams::default().labels(&selector).limit(1))
            .await?;
        Ok(!live.items.is_empty())
    }

    /// Set `spec.preserve`, the admin's field, as the admin's tool would (field
    /// manager `usersync-admin`, never the operator's).
    pub async fn set_manual_preserve(&self, name: &str, preserve: bool) -> Result<(), StoreError> {
        let patch = serde_json::json!({"spec": {"preserve": preserve}});
        let params = PatchParams {
            field_manager: Some(ADMIN_FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self.api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Err(StoreError::Refused(format!(
                "no DirectoryUser {name:?} in this namespace"
            ))),
            Err(kube::Error::Api(e)) if e.code == 422 => Err(StoreError::Refused(format!(
                "the API server refused the change: {}",
                e.message
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Write one transition's record: the object (metadata and spec), then its
    /// status, each conditional on the version the snapshot saw (a new record must
    /// not exist yet). Returns the writes issued and the object they left.
    async fn write(
        &self,
        transition: &Transition,
        run: RunInfo<'_>,
        previous: Option<String>,
    ) -> Result<(u64, DirectoryUser), WriteError> {
        // Writes queued in a batch start one by one, each maybe long after the
        // batch was admitted: each asks again.
        if !(run.may_write)() {
            return Err(WriteError::Fenced);
        }
        let record = &transition.record;
        let name = &record.name;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut object = serde_json::json!({
            "apiVersion": "usersync.dev/v1alpha1",
            "kind": "DirectoryUser",
            "metadata": { "name": name, "labels": labels_of(record) },
            "spec": spec_of(record),
        });
        let written = match (&transition.kind, self.seen.get(name)) {
            // A create fails when the name is taken: another run imported it first.
            (TransitionKind::Import { .. }, _) | (_, None) => {
                let user: DirectoryUser = serde_json::from_value(object)
                    .map_err(|e| WriteError::Other(kube::Error::SerdeError(e)))?;
                let create = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                self.api.create(&create, &user).await?
            }
            (_, Some(seen)) => {
                object["metadata"]["resourceVersion"] = serde_json::json!(seen.resource_version);
                match removals(&object, &seen.held) {
                    None => {
                        self.api
                            .patch(name, &params, &Patch::Apply(&object))
                            .await?
                    }
                    Some(patch) => {
                        let merge = PatchParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..Default::default()
                        };
                        self.api.patch(name, &merge, &Patch::Merge(&patch)).await?
                    }
                }
            }
        };
        // A write in flight when the process was paused must not go on once the
        // Lease may be another replica's.
        if !(run.may_write)() {
            return Err(WriteError::Fenced);
        }
        let deadline = deletion_deadline(record, run.policy);
        // The generation the object write left: the status describes that spec.
        let status = status_of(
            record,
            deadline,
            previous,
            run.run_id,
            run.now,
            written.metadata.generation,
        );
        let status = serde_json::json!({
            "apiVersion": "usersync.dev/v1alpha1",
            "kind": "DirectoryUser",
            "metadata": { "resourceVersion": written.metadata.resource_version },
            "status": status,
        });
        let written = self
            .api
            .patch_status(name, &params, &Patch::Apply(&status))
            .await?;
        Ok((2, written))
    }

    /// The tombstone a record follows: named by an import, else as the store saw it.
    fn previous_record(&self, t: &Transition) -> Option<String> {
        match &t.kind {
            TransitionKind::Import { follows } => follows.clone(),
            _ => self
                .seen
                .get(&t.record.name)
                .and_then(|s| s.previous_record.clone()),
        }
    }

    /// The Events about DirectoryUser `name` that the API server still keeps,
    /// oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<super::HistoryEntry>, StoreError> {
        use k8s_openapi::api::core::v1::Event;
        let namespace = self.api.namespace().unwrap_or_default().to_string();
        let events: Api<Event> = Api::namespaced(self.api.clone().into_client(), &namespace);
        let about = ListParams::default().fields(&format!(
            "involvedObject.kind=DirectoryUser,involvedObject.name={name}"
        ));
        let mut entries: Vec<super::HistoryEntry> = events
            .list(&about)
            .await?
            .items
            .into_iter()
            .filter_map(|e| {
                let at = e
                    .event_time
                    .map(|t| t.0)
                    .or(e.last_timestamp.map(|t| t.0))
                    .or(e.metadata.creation_timestamp.map(|t| t.0))?;
                let what = match (e.reason, e.message) {
                    (Some(reason), Some(message)) => format!("{reason}: {message}"),
                    (reason, message) => reason.or(message).unwrap_or_default(),
                };
                Some(super::HistoryEntry {
                    at,
                    what,
                    run: None,
                    by: e.reporting_component.filter(|c| !c.is_empty()),
                })
            })
            .collect();
        entries.sort_by_key(|e| e.at);
        Ok(entries)
    }

    /// The preserved directory users of `connector`, as the connector's retention
    /// pass needs them (a label selector: the rest of the registry is not read).
    pub async fn preserved_of(&mut self, connector: &str) -> Result<Vec<UserRecord>, StoreError> {
        use crate::api::{CONNECTOR_LABEL, STATE_LABEL};
        let users = match self.ready_cache().await {
            // The labels selected below are those of directory records.
            Some(cache) => cache.users_where(|r| {
                r.origin == Origin::Directory
                    && r.connector == connector
                    && r.state == State::Preserved
            }),
            None => {
                let selector = format!("{CONNECTOR_LABEL}={connector},{STATE_LABEL}=preserved");
                let listed = self
                    .api
                    .list(&ListParams::default().labels(&selector))
                    .await?;
                listed.items.iter().map(CachedUser::of).collect()
            }
        };
        Ok(self.saw_all(users))
    }
}

impl UserStore for KubernetesStore {
    async fn snapshot(&mut self) -> Result<super::Snapshot, StoreError> {
        let users = match self.ready_cache().await {
            Some(cache) => cache.users(),
            None => self.list_all().await?,
        };
        Ok(std::sync::Arc::new(self.saw_all(users)))
    }

    async fn apply(
        &mut self,
        transitions: &[Transition],
        run: RunInfo<'_>,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        // Futures are made a batch at a time, WRITE_CONCURRENCY in flight.
        // Batches come in order: those before `done` were written (or tried).
        let mut done = 0;
        for batch in super::phase_batches(transitions, WRITE_CONCURRENCY * 16) {
            if run.fenced(&transitions[done..], &mut report) {
                break;
            }
            done += batch.len();
            let this = &*self;
            let writes: Vec<_> = batch
                .iter()
                .map(|t| {
                    this.write(t, run, this.previous_record(t))
                        .map(move |result| (t, result))
                })
                .collect();
            let results: Vec<_> = futures::stream::iter(writes)
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
            for (t, result) in results {
                match result {
                    Ok((writes, written)) => {
                        report.applied += 1;
                        report.writes += writes;
                        // A later phase of this run may write the same record again:
                        // its precondition is this write, not the snapshot.
                        let previous = self.previous_record(t);
                        self.seen.insert(
                            t.record.name.clone(),
                            Seen {
                                resource_version: written.metadata.resource_version.clone(),
                                previous_record: previous,
                                held: Held::of(&t.record),
                            },
                        );
                        // The next run plans from what this one wrote, whether or
                        // not the watch has delivered it by then.
                        if let Some(cache) = &self.cache {
                            cache.fold(&written);
                        }
                    }
                    Err(WriteError::Conflict) => {
                        tracing::info!(user = %t.record.name, transition = t.kind.label(), "the user changed since the snapshot; not written");
                        self.refresh(&t.record.name).await;
                        report.conflicts.push(t.record.name.clone());
                    }
                    Err(WriteError::Fenced) => report
                        .failed
                        .push((t.record.name.clone(), super::NOT_WRITTEN_FENCED.into())),
                    Err(WriteError::Other(e)) => {
                        tracing::warn!(user = %t.record.name, transition = t.kind.label(), error = %e, "writing a user failed");
                        report
                            .failed
                            .push((t.record.name.clone(), write_failure(&e)));
                    }
                }
            }
        }
        Ok(report)
    }
}
