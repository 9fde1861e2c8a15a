//! Leader election with a `coordination.k8s.io/v1` Lease: every replica serves metrics, one
//! (the holder of the Lease) manages HPAs and activation.
//!
//! The holder renews the Lease every third of its duration and steps down when it has not
//! renewed for two thirds of it, before any other replica may take the Lease (a full
//! duration after the last renewal): two replicas never act at once, even when the
//! apiserver is unreachable. Every write uses the Lease's resourceVersion, so two
//! candidates racing for a free Lease cannot both win.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a Lease holds without renewal.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (its Pod name, or host and PID).
    pub identity: String,
    /// `leaseDurationSeconds`.
    pub duration: Duration,
}

/// What one look at the Lease decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else's and current: follow.
    Follow(String),
}

/// Decide from the Lease's spec at `now` (pure).
pub fn step(spec: Option<&LeaseSpec>, identity: &str, now: DateTime<Utc>) -> Step {
    let Some(spec) = spec else {
        return Step::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::Acquire;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(|t| crate::chrono_time(t.0));
    match last {
        Some(t) if t + chrono::TimeDelta::seconds(duration) > now => {
            Step::Follow(holder.to_string())
        }
        _ => Step::Acquire,
    }
}

/// A chrono time as the Lease's microsecond timestamp.
fn micro(t: DateTime<Utc>) -> Timestamp {
    Timestamp::new(t.timestamp(), t.timestamp_subsec_micros() as i32 * 1000)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Run the election until the process ends; the receiver says whether this replica leads.
pub fn spawn(client: Client, config: LeaseConfig) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::time::{sleep, timeout, Instant};
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let every = config.duration / 3;
        // Leading ends this long after the start of the last successful renewal (measured
        // on this replica's own clock), before anyone may take the Lease (a full duration
        // after the renewTime it wrote, which is no earlier than that start).
        let deadline = config.duration * 2 / 3;
        let mut leading_until: Option<Instant> = None;
        loop {
            let started = Instant::now();
            // A round never runs past the deadline: a hung apiserver cannot keep a stale
            // leader acting.
            let budget = match leading_until {
                Some(until) => until.saturating_duration_since(started).min(every),
                None => every,
            };
            let round = timeout(
                budget.max(Duration::from_millis(100)),
                try_lead(&api, &config),
            )
            .await
            .unwrap_or(Err(ElectionError::Timeout));
            match round {
                Ok(true) => leading_until = Some(started + deadline),
                Ok(false) => leading_until = None,
                Err(e) => {
                    warn!(lease = %config.name, error = %e, "leader election: the Lease could not be read or written");
                }
            }
            let leading = leading_until.is_some_and(|until| Instant::now() < until);
            if !leading {
                leading_until = None;
            }
            if leading != *tx.borrow() {
                if leading {
                    info!(lease = %config.name, identity = %config.identity, "leading: managing HPAs and activation");
                } else {
                    info!(lease = %config.name, identity = %config.identity, "not leading: serving metrics only");
                }
                let _ = tx.send(leading);
            }
            if tx.is_closed() {
                return;
            }
            // Wake for the next renewal, or at the deadline to step down on time.
            let next = match leading_until {
                Some(until) => until.saturating_duration_since(Instant::now()).min(every),
                None => every,
            };
            sleep(next.max(Duration::from_millis(100))).await;
        }
    });
    rx
}

/// Give the Lease up if this replica holds it (on shutdown), so another replica takes
/// over at its next look instead of after the Lease's duration. Best effort, 3 s at most.
pub async fn release(client: &Client, config: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let attempt = async {
        let Some(mut lease) = api.get_opt(&config.name).await? else {
            return Ok::<_, kube::Error>(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        api.replace(&config.name, &PostParams::default(), &lease)
            .await
            .map(|_| true)
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(true)) => info!(lease = %config.name, "released the leader Lease"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(lease = %config.name, error = %e, "releasing the Lease failed"),
        Err(_) => warn!(lease = %config.name, "releasing the Lease timed out"),
    }
}

#[derive(Debug, thiserror::Error)]
enum ElectionError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("no answer in time")]
    Timeout,
}

/// One round: returns whether this replica holds the Lease afterwards.
async fn try_lead(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, ElectionError> {
    let now = Utc::now();
    let current = api.get_opt(&config.name).await?;
    let step = step(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &config.identity,
        now,
    );
    let duration = i32::try_from(config.duration.as_secs()).unwrap_or(15);
    match (step, current) {
        (Step::Follow(_), _) => Ok(false),
        (Step::Acquire, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(MicroTime(micro(now))),
                    renew_time: Some(MicroTime(micro(now))),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        (step, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if step == Step::Acquire {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(MicroTime(micro(now)));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(duration);
            spec.renew_time = Some(MicroTime(micro(now)));
            // resourceVersion stays set: a concurrent change makes this a 409.
            match api
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        (Step::Renew, None) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn spec(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(micro(t(renewed)))),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn who_may_lead() {
        assert_eq!(step(None, "a", t(0)), Step::Acquire, "no Lease yet");
        assert_eq!(
            step(Some(&spec("a", 0, 15)), "a", t(100)),
            Step::Renew,
            "ours, even late"
        );
        assert_eq!(
            step(Some(&spec("b", 0, 15)), "a", t(14)),
            Step::Follow("b".into()),
            "b renewed 14 s ago: still b's"
        );
        assert_eq!(
            step(Some(&spec("b", 0, 15)), "a", t(15)),
            Step::Acquire,
            "expired"
        );
        assert_eq!(
            step(Some(&spec("", 0, 15)), "a", t(1)),
            Step::Acquire,
            "released"
        );
        let never = LeaseSpec {
            holder_identity: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(
            step(Some(&never), "a", t(0)),
            Step::Acquire,
            "no times at all"
        );
    }
}
