//! Leader election on a `coordination.k8s.io` Lease: of several replicas exactly one
//! syncs. The holder renews the Lease every `renew` and gives it up on shutdown; a
//! standby takes it once `duration` has passed without a renewal. A holder that
//! cannot renew in time stops syncing, so two replicas never run at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Which Lease, and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews it.
    pub renew: Duration,
}

/// Holding the Lease. `lost()` resolves if it is lost; `release()` gives it up.
pub struct LeaseGuard {
    api: Api<Lease>,
    config: LeaseConfig,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

/// Wait until this replica holds the Lease.
pub async fn acquire(client: Client, config: LeaseConfig) -> LeaseGuard {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut announced = false;
    loop {
        match try_acquire(&api, &config).await {
            Ok(true) => break,
            Ok(false) if !announced => {
                tracing::info!(lease = %config.name, namespace = %config.namespace, "another replica holds the lease; standing by");
                announced = true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "could not read or take the lease")
            }
        }
        tokio::time::sleep(config.renew).await;
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "acquired the lease; this replica syncs");
    let (tx, lost) = watch::channel(false);
    let renewer = tokio::spawn(renew_loop(api.clone(), config.clone(), tx));
    LeaseGuard {
        api,
        config,
        lost,
        renewer,
    }
}

impl LeaseGuard {
    /// Resolves when the Lease is lost (not renewed in time, or taken by another).
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|l| *l).await;
    }

    /// Whether the Lease has been lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stop renewing and give the Lease up, so a standby takes over at once.
    pub async fn release(self) {
        self.renewer.abort();
        if self.is_lost() {
            return;
        }
        match self.api.get(&self.config.name).await {
            Ok(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if spec.holder_identity.as_deref() == Some(self.config.identity.as_str()) {
                    spec.holder_identity = None;
                    spec.renew_time = None;
                    if let Err(e) = self
                        .api
                        .replace(&self.config.name, &PostParams::default(), &lease)
                        .await
                    {
                        tracing::warn!(error = %e, "could not release the lease; the standby takes it when it expires");
                    } else {
                        tracing::info!(lease = %self.config.name, "released the lease");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not release the lease"),
        }
    }
}

async fn renew_loop(api: Api<Lease>, config: LeaseConfig, lost: watch::Sender<bool>) {
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.renew).await;
        match try_acquire(&api, &config).await {
            Ok(true) => last_renewal = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %config.name, "another replica took the lease; stopping");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "could not renew the lease");
                // Give up before the Lease can have expired for the others.
                if last_renewal.elapsed() + config.renew >= config.duration {
                    tracing::error!(lease = %config.name, "the lease could not be renewed in time; stopping");
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

/// Take or renew the Lease if it is free, expired or ours. A conflicting write
/// (another replica got there first) is a plain "no".
async fn try_acquire(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = jiff::Timestamp::now();
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let result = match api.get_opt(&config.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let mine = spec.holder_identity.as_deref() == Some(config.identity.as_str());
            if !mine && !expired(spec, now) {
                return Ok(false);
            }
            if !mine {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(config.identity.clone());
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(MicroTime(now));
            // `replace` carries the resourceVersion: a concurrent writer makes it fail.
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether nobody holds the Lease any more.
fn expired(spec: &LeaseSpec, now: jiff::Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    holder.is_empty() || renewed.0 + jiff::SignedDuration::from_secs(i64::from(seconds)) < now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration_without_renewal() {
        let now: jiff::Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        assert!(!expired(&spec(Some("a"), "2026-01-01T00:00:10Z", 15), now));
        assert!(expired(&spec(Some("a"), "2026-01-01T00:00:04Z", 15), now));
        assert!(
            expired(&spec(None, "2026-01-01T00:00:19Z", 15), now),
            "a released lease is free"
        );
        assert!(expired(&spec(Some(""), "2026-01-01T00:00:19Z", 15), now));
    }
}
