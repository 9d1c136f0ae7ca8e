//! The default store: one DirectoryUser object per record, lifecycle in its status
//! subresource, every write a server-side apply under the operator's field manager.

use std::collections::HashMap;

use futures::{FutureExt, StreamExt};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::record::{labels_of, record_from_user, spec_of, status_of};
use super::{ApplyReport, RunInfo, StoreError, UserStore};
use crate::api::DirectoryUser;
use crate::controller::FIELD_MANAGER;
use crate::core::{Transition, TransitionKind, UserRecord, deletion_deadline};

/// The field manager of changes an admin makes through the command line.
pub const ADMIN_FIELD_MANAGER: &str = "usersync-admin";
/// How many writes are in flight at once.
const WRITE_CONCURRENCY: usize = 16;
/// Objects per list page when taking a snapshot.
const LIST_PAGE: u32 = 500;

/// DirectoryUser objects of one namespace.
pub struct KubernetesStore {
    api: Api<DirectoryUser>,
    /// What the snapshot saw that the planner's records do not carry.
    previous_records: HashMap<String, String>,
}

impl KubernetesStore {
    /// The store of `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            previous_records: HashMap::new(),
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

    async fn write(
        &self,
        transition: &Transition,
        run: RunInfo<'_>,
        previous: Option<String>,
    ) -> Result<u64, kube::Error> {
        let record = &transition.record;
        let name = &record.name;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let object = serde_json::json!({
            "apiVersion": "usersync.dev/v1alpha1",
            "kind": "DirectoryUser",
            "metadata": { "name": name, "labels": labels_of(record) },
            "spec": spec_of(record),
        });
        self.api
            .patch(name, &params, &Patch::Apply(&object))
            .await?;
        let deadline = deletion_deadline(record, run.policy);
        let status = status_of(record, deadline, previous, run.run_id, run.now);
        let status = serde_json::json!({
            "apiVersion": "usersync.dev/v1alpha1",
            "kind": "DirectoryUser",
            "status": status,
        });
        self.api
            .patch_status(name, &params, &Patch::Apply(&status))
            .await?;
        Ok(2)
    }
}

impl UserStore for KubernetesStore {
    async fn snapshot(&mut self) -> Result<Vec<UserRecord>, StoreError> {
        let mut records = Vec::new();
        self.previous_records.clear();
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            let page = self.api.list(&params).await?;
            if records.is_empty() {
                // One allocation for the whole registry instead of doubling
                // (and copying) it page after page.
                let remaining = page.metadata.remaining_item_count.unwrap_or(0);
                records.reserve_exact(page.items.len() + usize::try_from(remaining).unwrap_or(0));
            }
            for user in &page.items {
                if let Some(previous) = user.status.as_ref().and_then(|s| s.previous_record.clone())
                {
                    self.previous_records.insert(user.name_any(), previous);
                }
                records.push(record_from_user(user));
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(records)
    }

    async fn apply(
        &mut self,
        transitions: &[Transition],
        run: RunInfo<'_>,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        let this = &*self;
        // Futures are made a batch at a time, WRITE_CONCURRENCY in flight.
        for batch in super::phase_batches(transitions, WRITE_CONCURRENCY * 16) {
            let writes: Vec<_> = batch
                .iter()
                .map(|t| {
                    let previous = match &t.kind {
                        TransitionKind::Import { follows } => follows.clone(),
                        _ => this.previous_records.get(&t.record.name).cloned(),
                    };
                    this.write(t, run, previous).map(move |result| (t, result))
                })
                .collect();
            let results: Vec<_> = futures::stream::iter(writes)
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
            for (t, result) in results {
                match result {
                    Ok(writes) => {
                        report.applied += 1;
                        report.writes += writes;
                    }
                    Err(e) => {
                        tracing::warn!(user = %t.record.name, transition = t.kind.label(), error = %e, "writing a user failed");
                        report.failed.push((t.record.name.clone(), e.to_string()));
                    }
                }
            }
        }
        Ok(report)
    }
}
