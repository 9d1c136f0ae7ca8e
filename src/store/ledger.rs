//! Where each ProvisioningTarget keeps what it delivered of each user (the
//! ledger): in the Kubernetes store, one `status.deliveries` entry per target on
//! the DirectoryUser, written by server-side apply under a field manager of the
//! target's own, so targets and sync never remove each other's fields; in
//! PostgreSQL, the `deliveries` table. Both survive restarts and failover, and a
//! cycle writes only the entries that changed.
//!
//! Each entry carries the uid of the target object that wrote it. A target
//! deleted and created again under the same name is a new target: the entries of
//! the earlier object are not its ledger (it matches before it creates, as on a
//! first cycle), and its cycles forget them.
//!
//! An entry without a uid was written before entries carried one (an upgrade
//! from such a version, or a rollback to it). It is the current object's when it
//! last changed after that object was created, give or take [`CLOCK_SKEW`]; an
//! older one is an earlier object's. The current object's next write of such an
//! entry names its uid.

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

use super::record::{labels_of, record_from_user};
use super::{Store, StoreError};
use crate::api::{Delivery, DirectoryUser};
use crate::core::UserRecord;
use crate::delivery::plan::{Delivered, DeliveredState};

/// Whose ledger: a ProvisioningTarget by name, and the uid and creation time of
/// the object.
#[derive(Clone, Copy, Debug)]
pub struct LedgerOf<'a> {
    pub target: &'a str,
    pub uid: &'a str,
    pub created: Option<Timestamp>,
}

/// How far the clocks of the writers of an entry and of the API server that set
/// a target's creation time may disagree.
pub const CLOCK_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

impl LedgerOf<'_> {
    /// Whether an entry of this target's name, written by the object `uid`
    /// (`None`: before entries named one) and last changed at `time`, is this
    /// object's.
    pub fn owns(&self, uid: Option<&str>, time: Option<Timestamp>) -> bool {
        match (uid, time, self.created) {
            (Some(uid), _, _) => uid == self.uid,
            (None, Some(time), Some(created)) => time >= created - CLOCK_SKEW,
            (None, _, _) => false,
        }
    }
}

/// The registry as a target's cycle reads it: every record with its registry
/// labels, and the target's ledger by record name (entries of records that are
/// gone included, where the store keeps them).
#[derive(Debug, Default)]
pub struct DeliveryView {
    pub records: Vec<(UserRecord, BTreeMap<String, String>)>,
    pub ledger: HashMap<String, Delivered>,
    /// Users with an entry of an earlier target object of the same name (another
    /// uid): not this target's, and forgotten by its next cycle that sends.
    pub foreign: Vec<String>,
}

/// The field manager of target `target`'s ledger entries.
pub fn target_field_manager(target: &str) -> String {
    format!("usersync-target-{target}")
}

const LIST_PAGE: u32 = 500;
const WRITE_CONCURRENCY: usize = 16;

fn from_api(d: &Delivery) -> Delivered {
    Delivered {
        remote_id: d.remote_id.clone(),
        state: DeliveredState::parse(&d.state),
        digest: d.digest.clone(),
        time: d.time.as_ref().map(|t| t.0),
        last_error: d.last_error.clone(),
        failures: d.failures,
        retry_after: d.retry_after_time.as_ref().map(|t| t.0),
        approved: d.approved_cycle.clone(),
    }
}

fn to_api(of: LedgerOf<'_>, d: &Delivered) -> Delivery {
    Delivery {
        target: of.target.to_string(),
        target_uid: Some(of.uid.to_string()),
        remote_id: d.remote_id.clone(),
        state: d.state.map(|s| s.as_str()).unwrap_or("Pending").to_string(),
        digest: d.digest.clone(),
        time: d.time.map(Time),
        last_error: d.last_error.clone(),
        failures: d.failures,
        retry_after_time: d.retry_after.map(Time),
        approved_cycle: d.approved.clone(),
    }
}

impl Store {
    /// The registry and `target`'s ledger, read once per cycle.
    pub async fn delivery_view(&mut self, of: LedgerOf<'_>) -> Result<DeliveryView, StoreError> {
        match self {
            Store::Kubernetes(s) => {
                let api: &Api<DirectoryUser> = s.api();
                let mut view = DeliveryView::default();
                let mut params = ListParams::default().limit(LIST_PAGE);
                loop {
                    let page = api.list(&params).await?;
                    for user in &page.items {
                        let record = record_from_user(user);
                        match user
                            .status
                            .as_ref()
                            .and_then(|s| s.deliveries.iter().find(|d| d.target == of.target))
                        {
                            Some(d)
                                if of.owns(
                                    d.target_uid.as_deref(),
                                    d.time.as_ref().map(|t| t.0),
                                ) =>
                            {
                                view.ledger.insert(record.name.clone(), from_api(d));
                            }
                            Some(_) => view.foreign.push(record.name.clone()),
                            None => {}
                        }
                        let labels = labels_of(&record);
                        view.records.push((record, labels));
                    }
                    match page.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(token) => params = params.continue_token(&token),
                        None => break,
                    }
                }
                Ok(view)
            }
            Store::Postgres(s) => {
                let records = super::UserStore::snapshot(s).await?;
                let (ledger, foreign) = s.deliveries_of(of).await?;
                Ok(DeliveryView {
                    records: records.iter().map(|r| (r.clone(), labels_of(r))).collect(),
                    ledger,
                    foreign,
                })
            }
        }
    }

    /// Write `changes` to `target`'s ledger: a new entry for a user, or `None` to
    /// forget it. Returns the write requests issued; a user whose record is gone
    /// (Kubernetes store) has nowhere to keep an entry, and is skipped.
    pub async fn record_deliveries(
        &self,
        of: LedgerOf<'_>,
        changes: &[(String, Option<Delivered>)],
    ) -> Result<u64, StoreError> {
        if changes.is_empty() {
            return Ok(0);
        }
        match self {
            Store::Kubernetes(s) => {
                let api = s.api().clone();
                let params = PatchParams::apply(&target_field_manager(of.target)).force();
                let mut pending = Vec::with_capacity(changes.len());
                for (name, delivered) in changes {
                    let entries: Vec<Delivery> = delivered.iter().map(|d| to_api(of, d)).collect();
                    pending.push(write_entry(
                        api.clone(),
                        params.clone(),
                        name.clone(),
                        entries,
                    ));
                }
                futures::stream::iter(pending)
                    .buffer_unordered(WRITE_CONCURRENCY)
                    .try_fold(0u64, |n, w| async move { Ok(n + w) })
                    .await
            }
            Store::Postgres(s) => s.record_deliveries(of, changes).await,
        }
    }
}

/// Apply one user's entries of a target (none: forget it). A user whose object is
/// gone has nowhere to keep an entry: nothing is written.
async fn write_entry(
    api: Api<DirectoryUser>,
    params: PatchParams,
    name: String,
    entries: Vec<Delivery>,
) -> Result<u64, StoreError> {
    let patch = serde_json::json!({
        "apiVersion": "usersync.dev/v1alpha1",
        "kind": "DirectoryUser",
        "status": { "deliveries": entries },
    });
    match api
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(1),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(0),
        Err(e) => Err(StoreError::from(e)),
    }
}
