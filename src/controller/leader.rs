//! Leader election on a `coordination.k8s.io` Lease: of several replicas exactly one
//! syncs. The holder renews the Lease every `renew` and gives it up on shutdown; a
//! standby takes it once it has seen no renewal for `duration`. A holder that
//! cannot renew in time stops syncing, so two replicas never run at once.
//!
//! Expiry is judged as client-go judges it: by this replica's own monotonic
//! clock, from the moment it last saw the Lease change, never by comparing the
//! holder's `renewTime` with the local wall clock (nodes' clocks differ). The
//! holder, for its part, gives up one renew period before the others may take
//! over, and bounds every renewal by that deadline: an API server that does not
//! answer (kube's client sets no read timeout) cannot keep it syncing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// How often a standby looks at it.
    pub retry: Duration,
}

/// Holding the Lease. `lost()` resolves if it is lost; `release()` gives it up.
pub struct LeaseGuard {
    api: Api<Lease>,
    config: LeaseConfig,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
    /// When the Lease was last renewed, by this replica's monotonic clock.
    renewed: Arc<Mutex<Instant>>,
}

/// Wait until this replica holds the Lease.
pub async fn acquire(client: Client, config: LeaseConfig) -> LeaseGuard {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut announced = false;
    let mut observed = Observed::default();
    loop {
        match try_acquire(&api, &config, &mut observed).await {
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
        tokio::time::sleep(config.retry).await;
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "acquired the lease; this replica syncs");
    let (tx, lost) = watch::channel(false);
    let renewed = Arc::new(Mutex::new(Instant::now()));
    let renewer = tokio::spawn(renew_loop(api.clone(), config.clone(), tx, renewed.clone()));
    LeaseGuard {
        api,
        config,
        lost,
        renewer,
        renewed,
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

    /// A check that this replica holds the Lease at the moment it is asked: not
    /// lost, and renewed recently enough that no other replica may have taken it.
    /// It reads the clock itself, so a process that was paused past its deadline
    /// fails the check at once, before its renew loop has even woken up.
    pub fn holding(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let (renewed, lost, config) =
            (self.renewed.clone(), self.lost.clone(), self.config.clone());
        move || {
            let last = *renewed.lock().expect("renewal lock poisoned");
            !*lost.borrow() && Instant::now() < renewal_deadline(last, &config)
        }
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

async fn renew_loop(
    api: Api<Lease>,
    config: LeaseConfig,
    lost: watch::Sender<bool>,
    renewed: Arc<Mutex<Instant>>,
) {
    let mut last_renewal = Instant::now();
    let mut observed = Observed::default();
    let stop = |why: &str| {
        tracing::error!(lease = %config.name, "{why}; stopping");
        let _ = lost.send(true);
    };
    loop {
        tokio::time::sleep(config.renew).await;
        let deadline = renewal_deadline(last_renewal, &config);
        let attempt = Instant::now();
        if attempt >= deadline {
            // The process was paused or starved past the point where the others
            // may take the Lease.
            return stop("the lease was not renewed in time");
        }
        let renewal =
            tokio::time::timeout_at(deadline.into(), try_acquire(&api, &config, &mut observed));
        match renewal.await {
            // The Lease now says it was renewed at `attempt` or later.
            Ok(Ok(true)) => {
                last_renewal = attempt;
                *renewed.lock().expect("renewal lock poisoned") = attempt;
            }
            Ok(Ok(false)) => return stop("another replica took the lease"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %config.name, error = %e, "could not renew the lease");
                if Instant::now() + config.renew >= deadline {
                    return stop("the lease could not be renewed in time");
                }
            }
            Err(_) => {
                return stop("the API server did not answer before the lease would expire");
            }
        }
    }
}

/// When the holder must stop syncing unless it has renewed: one renew period
/// before the others may take the Lease.
fn renewal_deadline(last_renewal: Instant, config: &LeaseConfig) -> Instant {
    last_renewal + config.duration.saturating_sub(config.renew)
}

/// What a standby last saw of someone else's Lease, and since when (by its own
/// clock).
#[derive(Debug, Default)]
struct Observed {
    record: Option<(String, Option<jiff::Timestamp>)>,
    since: Option<Instant>,
}

impl Observed {
    /// Whether nobody holds the Lease any more: it is released, or it has not
    /// changed for `duration` of this replica's time.
    fn expired(&mut self, spec: &LeaseSpec, duration: Duration, now: Instant) -> bool {
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder.is_empty() {
            return true;
        }
        let record = Some((holder, spec.renew_time.as_ref().map(|t| t.0)));
        if self.record != record {
            self.record = record;
            self.since = Some(now);
            return false;
        }
        let seen = self.since.unwrap_or(now);
        // The holder's own term, if it is longer than ours.
        let term = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(duration, |s| duration.max(Duration::from_secs(s)));
        now.duration_since(seen) >= term
    }
}

/// Take or renew the Lease if it is free, expired or ours. A conflicting write
/// (another replica got there first) is a plain "no".
async fn try_acquire(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
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
            if !mine && !observed.expired(spec, config.duration, Instant::now()) {
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

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn a_lease_expires_after_its_duration_unchanged_by_the_standbys_clock() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut observed = Observed::default();
        // A renewTime far in the past (the holder's clock is behind) is not
        // taken as expiry: the record was only just seen.
        let held = spec(Some("a"), "2001-01-01T00:00:00Z", 15);
        assert!(!observed.expired(&held, LEASE, s(0)));
        assert!(!observed.expired(&held, LEASE, s(14)));
        // A renewal restarts the count.
        let renewed = spec(Some("a"), "2001-01-01T00:00:05Z", 15);
        assert!(!observed.expired(&renewed, LEASE, s(14)));
        assert!(!observed.expired(&renewed, LEASE, s(28)));
        assert!(observed.expired(&renewed, LEASE, s(29)));
        // A holder that asked for a longer term gets it.
        let mut observed = Observed::default();
        let long = spec(Some("b"), "2001-01-01T00:00:00Z", 60);
        assert!(!observed.expired(&long, LEASE, s(0)));
        assert!(!observed.expired(&long, LEASE, s(30)));
        assert!(observed.expired(&long, LEASE, s(60)));
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let now = Instant::now();
        let mut observed = Observed::default();
        assert!(observed.expired(&spec(None, "2026-01-01T00:00:19Z", 15), LEASE, now));
        assert!(observed.expired(&spec(Some(""), "2026-01-01T00:00:19Z", 15), LEASE, now));
    }

    #[test]
    fn the_holder_stops_one_renew_period_before_the_others_may_take_over() {
        let config = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "a".into(),
            duration: LEASE,
            renew: Duration::from_secs(5),
            retry: Duration::from_secs(2),
        };
        let t0 = Instant::now();
        assert_eq!(renewal_deadline(t0, &config), t0 + Duration::from_secs(10));
    }
}
