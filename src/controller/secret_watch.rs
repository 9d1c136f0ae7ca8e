//! Watches of credential Secrets, one per namespace that granted the operator its
//! Secrets. The right to read Secrets is given per namespace (a RoleBinding to the
//! secret-reader ClusterRole), so there is no cluster-wide watch to hold: a
//! namespace's watch starts the first time one of its connectors reads a Secret
//! there, and ends if the namespace takes the right back.
//!
//! Only metadata is watched, and only of Secrets labelled as credentials: values
//! are never cached. A change names the Secret, and the connectors that name it are
//! reconciled again (a rotated password, a label or annotation just added).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use super::connection::CREDENTIAL_LABEL;

/// A Secret that changed: its namespace, its name, its resourceVersion, and
/// whether it was only listed as the watch (re)started rather than changed.
pub type SecretChange = (String, String, Option<String>, bool);

/// The namespaces whose credential Secrets are watched.
pub struct SecretWatches {
    client: Client,
    changed: mpsc::UnboundedSender<SecretChange>,
    running: Mutex<HashSet<String>>,
}

impl SecretWatches {
    /// Watches that report changed Secrets to `changed`.
    pub fn new(client: Client, changed: mpsc::UnboundedSender<SecretChange>) -> Arc<Self> {
        Arc::new(Self {
            client,
            changed,
            running: Default::default(),
        })
    }

    /// Watch `namespace`'s credential Secrets, unless that is already done.
    pub fn ensure(self: &Arc<Self>, namespace: &str) {
        let fresh = self
            .running
            .lock()
            .expect("secret watches lock poisoned")
            .insert(namespace.to_string());
        if !fresh {
            return;
        }
        let this = self.clone();
        let namespace = namespace.to_string();
        tokio::spawn(async move {
            this.watch(&namespace).await;
            this.running
                .lock()
                .expect("secret watches lock poisoned")
                .remove(&namespace);
        });
    }

    /// Report every change until the namespace refuses the watch, or nobody listens.
    async fn watch(&self, namespace: &str) {
        let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().labels(CREDENTIAL_LABEL);
        let mut events = watcher(api, config).default_backoff().boxed();
        tracing::debug!(namespace, "watching credential Secrets");
        while let Some(event) = events.next().await {
            let (secret, listed) = match event {
                Ok(Event::Apply(s) | Event::Delete(s)) => (s, false),
                Ok(Event::InitApply(s)) => (s, true),
                Ok(Event::Init | Event::InitDone) => continue,
                Err(e) if forbidden(&e) => {
                    tracing::info!(
                        namespace,
                        "this namespace no longer grants its Secrets; its credential Secrets are not watched"
                    );
                    return;
                }
                Err(e) => {
                    tracing::debug!(namespace, error = %e, "the watch of credential Secrets failed; retrying");
                    continue;
                }
            };
            if self
                .changed
                .send((
                    namespace.to_string(),
                    secret.name_any(),
                    secret.resource_version(),
                    listed,
                ))
                .is_err()
            {
                return;
            }
        }
    }
}

/// Whether the API server refused the watch for want of the right.
fn forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(e))
        | watcher::Error::WatchStartFailed(kube::Error::Api(e))
        | watcher::Error::WatchFailed(kube::Error::Api(e)) => e.code == 403,
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}
