//! The warm registry: a watch of each namespace's DirectoryUsers, kept as the
//! planner's records, so that a run takes its snapshot without listing them.
//!
//! One watch per namespace in use, started by the first store opened for it and
//! shared by every run there. Only what a plan needs is kept of each object (its
//! record, its `resourceVersion`, `status.previousRecord`); `managedFields` and the
//! rest are dropped as each object arrives.
//!
//! The copy may lag behind the API server. That is safe because every write is
//! conditional on the version its plan saw: a write from a stale copy conflicts,
//! and the store then folds the object as it is now into the copy before the user
//! is planned again. What a run writes goes into the copy at once, so the next run
//! sees it even before the watch does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::record_from_user;
use crate::api::DirectoryUser;
use crate::core::UserRecord;

/// How long a run waits for a watch to have listed its namespace before it lists
/// the DirectoryUsers itself (a first list of 100k users takes 10–15 s).
pub const SYNC_WAIT: Duration = Duration::from_secs(60);
/// Objects per page of the watch's lists.
const LIST_PAGE: u32 = 500;

/// The watched DirectoryUsers of every namespace in use, shared by all runs.
pub struct WarmRegistry {
    client: Client,
    caches: Mutex<HashMap<String, Arc<UserCache>>>,
    /// The watches, ended when the registry goes.
    watches: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl WarmRegistry {
    /// A registry whose watches use `client`. Nothing is watched until a namespace
    /// is first asked for.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            caches: Default::default(),
            watches: Default::default(),
        }
    }

    /// The copy of `namespace`'s DirectoryUsers, its watch started on first use.
    pub fn cache(&self, namespace: &str) -> Arc<UserCache> {
        let mut caches = self.caches.lock().expect("caches lock poisoned");
        if let Some(cache) = caches.get(namespace) {
            return cache.clone();
        }
        let cache = Arc::new(UserCache::new(namespace));
        let api: Api<DirectoryUser> = Api::namespaced(self.client.clone(), namespace);
        let task = tokio::spawn(cache.clone().follow(api));
        self.watches
            .lock()
            .expect("watches lock poisoned")
            .push(task.abort_handle());
        caches.insert(namespace.to_string(), cache.clone());
        cache
    }
}

impl Drop for WarmRegistry {
    fn drop(&mut self) {
        for watch in self
            .watches
            .get_mut()
            .expect("watches lock poisoned")
            .drain(..)
        {
            watch.abort();
        }
    }
}

/// What a plan needs of one DirectoryUser.
#[derive(Clone, Debug)]
pub struct CachedUser {
    pub record: UserRecord,
    /// The object's `resourceVersion`, the precondition of a write planned from it.
    pub resource_version: Option<String>,
    /// `status.previousRecord`, which only the store keeps.
    pub previous_record: Option<String>,
}

impl CachedUser {
    /// The projection of `user`.
    pub fn of(user: &DirectoryUser) -> Self {
        Self {
            record: record_from_user(user),
            resource_version: user.metadata.resource_version.clone(),
            previous_record: user.status.as_ref().and_then(|s| s.previous_record.clone()),
        }
    }

    fn version(&self) -> Option<u64> {
        self.resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
    }
}

/// Whether the copy can be planned from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Health {
    /// The watch is listing the namespace (the first time, or again after it fell
    /// too far behind): the copy is incomplete or may have missed changes.
    Listing,
    /// Listed, and the watch delivers changes.
    Current,
    /// The watch failed (its message) and has delivered nothing since.
    Broken(String),
}

/// The copy of one namespace's DirectoryUsers.
pub struct UserCache {
    namespace: String,
    users: Mutex<Users>,
    health: watch::Sender<Health>,
}

#[derive(Default)]
struct Users {
    by_name: HashMap<String, CachedUser>,
    /// A list in progress, swapped in when it is complete.
    listing: Option<HashMap<String, CachedUser>>,
}

impl UserCache {
    fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            users: Default::default(),
            health: watch::Sender::new(Health::Listing),
        }
    }

    /// Apply the watch's events to the copy, for as long as the process runs. The
    /// watcher retries with backoff on its own; a failure only marks the copy.
    async fn follow(self: Arc<Self>, api: Api<DirectoryUser>) {
        let config = watcher::Config::default().page_size(LIST_PAGE);
        let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.observe(event),
                Err(e) => {
                    tracing::warn!(namespace = %self.namespace, error = %e, "the watch of DirectoryUsers failed; it is retried, and runs list them meanwhile");
                    self.health.send_replace(Health::Broken(e.to_string()));
                }
            }
        }
    }

    /// One event of the watch.
    fn observe(&self, event: Event<DirectoryUser>) {
        let mut users = self.users.lock().expect("users lock poisoned");
        match event {
            Event::Init => {
                users.listing = Some(HashMap::new());
                self.health.send_replace(Health::Listing);
            }
            Event::InitApply(user) => {
                let listing = users.listing.get_or_insert_default();
                listing.insert(user.name_any(), CachedUser::of(&user));
            }
            Event::InitDone => {
                let mut listed = users.listing.take().unwrap_or_default();
                // What this process wrote while the list was under way may be
                // newer than the list's copy; the watch brings the rest.
                for (name, mine) in users.by_name.drain() {
                    if let Some(listed) = listed.get_mut(&name)
                        && newer(&mine, listed)
                    {
                        *listed = mine;
                    }
                }
                listed.shrink_to_fit();
                users.by_name = listed;
                self.health.send_replace(Health::Current);
            }
            Event::Apply(user) => {
                fold(&mut users.by_name, CachedUser::of(&user));
                self.recovered();
            }
            Event::Delete(user) => {
                let name = user.name_any();
                let gone = CachedUser::of(&user);
                if users
                    .by_name
                    .get(&name)
                    .is_none_or(|had| !newer(had, &gone))
                {
                    users.by_name.remove(&name);
                }
                self.recovered();
            }
        }
    }

    /// A failed watch that delivers again is current again.
    fn recovered(&self) {
        self.health.send_if_modified(|health| {
            let broken = matches!(health, Health::Broken(_));
            if broken {
                *health = Health::Current;
            }
            broken
        });
    }

    /// Wait (at most `within`) until the copy can be planned from; why not, when it
    /// cannot.
    pub async fn ready(&self, within: Duration) -> Result<(), String> {
        let mut health = self.health.subscribe();
        let settled =
            tokio::time::timeout(within, health.wait_for(|h| *h != Health::Listing)).await;
        match settled {
            Ok(Ok(health)) => match &*health {
                Health::Broken(why) => Err(format!("the watch of DirectoryUsers failed: {why}")),
                _ => Ok(()),
            },
            Ok(Err(_)) => Err("the watch of DirectoryUsers stopped".into()),
            Err(_) => Err(format!(
                "the watch of DirectoryUsers has not listed them within {}s",
                within.as_secs()
            )),
        }
    }

    /// Every user the copy holds.
    pub fn users(&self) -> Vec<CachedUser> {
        let users = self.users.lock().expect("users lock poisoned");
        users.by_name.values().cloned().collect()
    }

    /// The users for which `keep` holds.
    pub fn users_where(&self, keep: impl Fn(&UserRecord) -> bool) -> Vec<CachedUser> {
        let users = self.users.lock().expect("users lock poisoned");
        users
            .by_name
            .values()
            .filter(|u| keep(&u.record))
            .cloned()
            .collect()
    }

    /// Put an object as this process wrote or read it into the copy, unless the
    /// copy already holds a later version of it.
    pub fn fold(&self, user: &DirectoryUser) {
        let mut users = self.users.lock().expect("users lock poisoned");
        fold(&mut users.by_name, CachedUser::of(user));
    }

    /// An object this process found gone.
    pub fn forget(&self, name: &str) {
        let mut users = self.users.lock().expect("users lock poisoned");
        users.by_name.remove(name);
    }

    /// Fold a list this process made itself (the watch had failed or was slow). A
    /// copy that held exactly what was listed missed nothing: it is current again.
    pub fn absorb_list(&self, listed: &[CachedUser]) {
        let mut users = self.users.lock().expect("users lock poisoned");
        let mut same = listed.len() == users.by_name.len();
        for user in listed {
            same &= users
                .by_name
                .get(&user.record.name)
                .is_some_and(|had| had.resource_version == user.resource_version);
            fold(&mut users.by_name, user.clone());
        }
        if same {
            self.recovered();
        }
    }
}

/// Keep `user` unless `by_name` holds a later version of it.
fn fold(by_name: &mut HashMap<String, CachedUser>, user: CachedUser) {
    match by_name.get_mut(&user.record.name) {
        Some(had) if newer(had, &user) => {}
        Some(had) => *had = user,
        None => {
            by_name.insert(user.record.name.clone(), user);
        }
    }
}

/// Whether `a` is a later version of the object than `b`. The API server's
/// resource versions are integers that grow with every write of a resource type
/// (comparable since Kubernetes 1.35); a version that is not one never counts as
/// later, so the watch's copy wins.
fn newer(a: &CachedUser, b: &CachedUser) -> bool {
    match (a.version(), b.version()) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, version: &str, display: &str) -> DirectoryUser {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "usersync.dev/v1alpha1",
            "kind": "DirectoryUser",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
            "spec": {"origin": "Directory", "connectorRef": "corp", "anchor": name, "displayName": display},
        }))
        .unwrap()
    }

    fn shown(cache: &UserCache, name: &str) -> Option<(String, String)> {
        cache
            .users()
            .into_iter()
            .find(|u| u.record.name == name)
            .map(|u| {
                (
                    u.resource_version.unwrap(),
                    u.record.fields.display_name.unwrap_or_default(),
                )
            })
    }

    fn listed(cache: &UserCache, users: Vec<DirectoryUser>) {
        cache.observe(Event::Init);
        for u in users {
            cache.observe(Event::InitApply(u));
        }
        cache.observe(Event::InitDone);
    }

    #[tokio::test]
    async fn a_run_waits_for_the_first_list_then_plans_from_the_copy() {
        let cache = UserCache::new("ns");
        let slow = cache.ready(Duration::from_millis(20)).await;
        assert!(slow.unwrap_err().contains("has not listed them"));
        listed(&cache, vec![user("a", "10", "A")]);
        cache.ready(Duration::from_millis(20)).await.unwrap();
        assert_eq!(shown(&cache, "a"), Some(("10".into(), "A".into())));
    }

    #[test]
    fn an_own_write_is_not_undone_by_a_late_event_of_an_older_version() {
        let cache = UserCache::new("ns");
        listed(&cache, vec![user("a", "10", "A")]);
        cache.fold(&user("a", "12", "B"));
        cache.observe(Event::Apply(user("a", "11", "old")));
        assert_eq!(shown(&cache, "a"), Some(("12".into(), "B".into())));
        cache.observe(Event::Apply(user("a", "13", "C")));
        assert_eq!(shown(&cache, "a"), Some(("13".into(), "C".into())));
    }

    #[test]
    fn a_relist_keeps_an_own_write_newer_than_its_copy_and_drops_the_gone() {
        let cache = UserCache::new("ns");
        listed(&cache, vec![user("a", "10", "A"), user("b", "10", "B")]);
        cache.observe(Event::Init);
        cache.observe(Event::InitApply(user("a", "11", "A1")));
        cache.fold(&user("a", "12", "mine"));
        cache.observe(Event::InitDone);
        assert_eq!(shown(&cache, "a"), Some(("12".into(), "mine".into())));
        assert_eq!(shown(&cache, "b"), None);
    }

    #[test]
    fn a_deletion_removes_the_user_unless_a_later_version_is_held() {
        let cache = UserCache::new("ns");
        listed(&cache, vec![user("a", "10", "A"), user("b", "10", "B")]);
        cache.observe(Event::Delete(user("a", "11", "A")));
        cache.fold(&user("b", "13", "B2"));
        cache.observe(Event::Delete(user("b", "12", "B")));
        assert_eq!(shown(&cache, "a"), None);
        assert_eq!(shown(&cache, "b"), Some(("13".into(), "B2".into())));
    }

    #[tokio::test]
    async fn a_failed_watch_is_not_planned_from_until_it_delivers_or_a_list_matches() {
        let cache = UserCache::new("ns");
        listed(&cache, vec![user("a", "10", "A")]);
        cache
            .health
            .send_replace(Health::Broken("connection reset".into()));
        let why = cache.ready(Duration::from_millis(20)).await.unwrap_err();
        assert!(why.contains("connection reset"), "{why}");
        cache.absorb_list(&[CachedUser::of(&user("a", "11", "A1"))]);
        assert!(cache.ready(Duration::from_millis(20)).await.is_err());
        cache.absorb_list(&[CachedUser::of(&user("a", "11", "A1"))]);
        cache.ready(Duration::from_millis(20)).await.unwrap();
        cache
            .health
            .send_replace(Health::Broken("connection reset".into()));
        cache.observe(Event::Apply(user("a", "12", "A2")));
        cache.ready(Duration::from_millis(20)).await.unwrap();
    }
}
