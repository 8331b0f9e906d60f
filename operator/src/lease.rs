//! Leader election through a `coordination.k8s.io` Lease, so that of several
//! operator replicas exactly one reconciles.
//!
//! A replica takes the Lease when nobody holds it or its holder has not
//! renewed it for `leaseDurationSeconds`, and renews it every third of that.
//! Every write names the `resourceVersion` it read, so two replicas racing for
//! it cannot both win (the loser gets 409 Conflict). A leader that fails to
//! renew stops reconciling at once, before its Lease can expire.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::controller::{self, Context};

/// Whether this replica leads (1) or stands by (0).
pub const METRIC_LEADER: &str = "auth_operator_leader";

/// One replica's view of the Lease.
pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderLease {
    /// The Lease `name` in `namespace`, contended for as `identity` (the pod name).
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.to_owned(), identity: identity.to_owned(), duration }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes the Lease when it is free or expired, renews it when held; true when this replica holds it now.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(now, Some(MicroTime(now)), 0, seconds)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let held_here = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(duration)) => {
                renewed.0.checked_add(SignedDuration::from_secs(i64::from(duration))).map_or(true, |end| end < now)
            }
            _ => true,
        };
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !(held_here || expired || free) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!held_here);
        let acquired = if held_here { spec.acquire_time } else { Some(MicroTime(now)) };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current.metadata.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(self.spec(now, acquired, transitions, seconds)),
        };
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await)
    }

    /// Gives the Lease up (when it is held here), so a standby replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(current) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current.metadata.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec { holder_identity: None, renew_time: None, ..spec }),
        };
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await).map(drop)
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: acquired,
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

fn conflict_is_false<T>(outcome: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match outcome {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Stands by until this replica holds the Lease, then runs the controller
/// while it keeps renewing it; goes back to standing by when a renewal fails,
/// and gives the Lease up when `stop` turns true.
pub async fn lead(lease: LeaderLease, context: Arc<Context>, mut stop: watch::Receiver<bool>) {
    let renew_every = lease.duration / 3;
    let retry_every = Duration::from_secs(2).min(renew_every);
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    metrics::gauge!(METRIC_LEADER).set(0.0);
    while !stopped(&stop) {
        match lease.try_acquire().await {
            Ok(true) => {}
            Ok(false) => {
                let _ = tokio::time::timeout(retry_every, stop.changed()).await;
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read the leader Lease");
                let _ = tokio::time::timeout(retry_every, stop.changed()).await;
                continue;
            }
        }
        tracing::info!(identity = lease.identity(), "leading: reconciling pipelines");
        metrics::gauge!(METRIC_LEADER).set(1.0);
        let mut controller_stop = stop.clone();
        let controller = controller::run(Arc::clone(&context), async move {
            let _ = controller_stop.wait_for(|stopped| *stopped).await;
        });
        let renewing = async {
            loop {
                tokio::time::sleep(renew_every).await;
                match lease.try_acquire().await {
                    Ok(true) => {}
                    Ok(false) => return tracing::warn!("another replica holds the Lease; standing by"),
                    Err(err) => return tracing::warn!(error = %err, "could not renew the Lease; standing by"),
                }
            }
        };
        tokio::select! {
            () = controller => {}
            () = renewing => {}
        }
        metrics::gauge!(METRIC_LEADER).set(0.0);
    }
    if let Err(err) = lease.release().await {
        tracing::warn!(error = %err, "could not give the Lease up");
    }
}
