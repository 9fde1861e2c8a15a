//! Membership: every replica keeps a `coordination.k8s.io/v1` Lease of its own and lists
//! the others', and the objects are shared among the settled members
//! ([`scaler_core::shard`]). Each object has one owner that polls its triggers, activates
//! and scales it, and manages its HPA; the others serve its metric reads (forwarding the
//! cached ones to the owner).
//!
//! A round (every third of the Lease duration) renews this replica's Lease and lists the
//! group's. A replica acts only within two thirds of the duration after the start of its
//! last successful round, as the leader elector does; one whose round succeeds only after
//! that deadline joins again (settling anew) instead of acting, for the others may have
//! taken its share. The others take a member's share once a list begun after its deadline
//! (and the skew margin) still shows no later renewal: a round is made at that instant, so
//! a replica that dies is replaced within two thirds of the duration and the margin of its
//! last renewal. Between rounds the view is worked out again every second from the last
//! list: members settle by the clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client};
use scaler_core::shard::{self, Member, View};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// The label naming a Lease's group (the `--leader-election-id`).
pub const GROUP_LABEL: &str = "eventscale.sh/member-of";
/// The annotation with a member's address for forwarded reads.
pub const ADDRESS_ANNOTATION: &str = "eventscale.sh/address";
/// The annotation with when a member settles (Unix milliseconds).
pub const SETTLED_ANNOTATION: &str = "eventscale.sh/settled-at";
/// The annotation with how long a member acts after a renewal (milliseconds). A Lease
/// without it (an older replica, during an upgrade) counts as acting for its whole
/// duration.
pub const ACTING_ANNOTATION: &str = "eventscale.sh/acting-ms";

/// The kinds objects are owned by, in their ownership keys.
pub mod kinds {
    /// ScaledObjects.
    pub const SCALED_OBJECT: &str = "ScaledObject";
    /// ScaledJobs.
    pub const SCALED_JOB: &str = "ScaledJob";
    /// HTTPScaledObjects.
    pub const HTTP_SCALED_OBJECT: &str = "HTTPScaledObject";
}

/// This replica's place in the group.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// The Leases' namespace.
    pub namespace: String,
    /// The group: the label value, and the prefix of the Leases' names.
    pub group: String,
    /// This replica's identity (its Pod name, or host and PID).
    pub identity: String,
    /// Where this replica answers forwarded metric reads (`host:port`).
    pub address: Option<String>,
    /// `leaseDurationSeconds`.
    pub duration: Duration,
}

impl MembershipConfig {
    /// This replica's Lease: `<group>-<identity>`, made a valid object name.
    pub fn lease_name(&self) -> String {
        let raw = format!("{}-{}", self.group, self.identity).to_ascii_lowercase();
        let mut name: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        name.truncate(253);
        name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct State {
    view: View,
    /// Whether this replica may act now (it listed the Leases recently enough).
    acting: bool,
}

/// Which objects this replica owns, kept up to date by the membership task.
#[derive(Clone)]
pub struct Shard {
    rx: watch::Receiver<Arc<State>>,
    acting_until: Arc<std::sync::Mutex<Option<Instant>>>,
    leaving: Arc<AtomicBool>,
}

impl Shard {
    /// A shard that owns everything, always: a single replica without Leases (tests).
    pub fn whole(identity: &str) -> Self {
        let (tx, rx) = watch::channel(Arc::new(State {
            view: View::alone(identity),
            acting: true,
        }));
        // The sender lives as long as the process: the view never changes.
        std::mem::forget(tx);
        Shard {
            rx,
            acting_until: Arc::new(std::sync::Mutex::new(None)),
            leaving: Arc::default(),
        }
    }

    /// What this replica owns now, for one pass over many objects: the view and the
    /// right to act are read once.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.rx.borrow().clone();
        // The task publishes at most a second late: the deadline itself is checked here.
        let in_time = match *self.acting_until.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(until) => Instant::now() < until,
            None => true,
        };
        let acting = state.acting && in_time && !self.leaving.load(Ordering::Acquire);
        Snapshot { state, acting }
    }

    /// Whether this replica owns the object and may act on it now.
    pub fn owns(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.snapshot().owns(kind, namespace, name)
    }

    /// The owner of the object when it is another member: its identity and address.
    pub fn other_owner(&self, kind: &str, namespace: &str, name: &str) -> Option<Member> {
        let snapshot = self.snapshot();
        let view = snapshot.view();
        view.owner(&shard::key(kind, namespace, name))
            .filter(|m| m.identity != view.me)
            .cloned()
    }

    /// A stream that yields whenever the view or the right to act changes (to reconcile
    /// every object again: some just became this replica's).
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let rx = self.rx.clone();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// Stop acting at once (shutdown).
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
    }
}

/// What a [`Shard`] says at one instant.
pub struct Snapshot {
    state: Arc<State>,
    acting: bool,
}

impl Snapshot {
    /// Whether `other` says the same: the same view of the group, acting alike.
    pub fn same_as(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.state, &other.state) && self.acting == other.acting
    }

    /// Whether this replica owns the object and may act on it.
    pub fn owns(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.acting && self.state.view.owns_object(kind, namespace, name)
    }

    /// The members as this replica saw them.
    pub fn view(&self) -> &View {
        &self.state.view
    }
}

/// A chrono time as the Lease's microsecond timestamp.
fn micro(t: DateTime<Utc>) -> MicroTime {
    MicroTime(
        Timestamp::new(t.timestamp(), t.timestamp_subsec_micros() as i32 * 1000)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// How long the holder of `lease` acts after a renewal (milliseconds): as its annotation
/// says, else (an older replica) the whole duration.
fn acting_ms_of(lease: &Lease) -> i64 {
    let duration_ms = 1000
        * i64::from(
            lease
                .spec
                .as_ref()
                .and_then(|s| s.lease_duration_seconds)
                .unwrap_or(15),
        );
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ACTING_ANNOTATION))
        .and_then(|v| v.parse::<i64>().ok())
        .map_or(duration_ms, |a| a.clamp(0, duration_ms))
}

/// A member as its Lease describes it; `None` for a released or foreign Lease.
pub fn member_of(lease: &Lease) -> Option<Member> {
    let spec = lease.spec.as_ref()?;
    let identity = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(|t| crate::chrono_time(t.0))?;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let acting_ms = acting_ms_of(lease);
    let annotations = lease.metadata.annotations.as_ref();
    let settled_at_ms = annotations
        .and_then(|a| a.get(SETTLED_ANNOTATION))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(i64::MAX);
    let address = annotations
        .and_then(|a| a.get(ADDRESS_ANNOTATION))
        .filter(|a| !a.is_empty())
        .cloned();
    let renewed_ms = renewed.timestamp_millis();
    Some(Member {
        identity,
        address,
        settled_at_ms,
        expires_at_ms: renewed_ms + duration * 1000,
        acts_until_ms: renewed_ms + acting_ms,
    })
}

/// Whether a joining member is alone, from the members listed (by a list begun at
/// `listed_at_ms`) after its Lease was written: no other member may be acting, so it
/// settles at once instead of after [`shard::settle_delay_ms`].
pub fn alone(me: &str, listed: &[Member], listed_at_ms: i64) -> bool {
    !listed
        .iter()
        .any(|m| m.identity != me && !shard::gone(m, listed_at_ms))
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("no answer in time")]
    Timeout,
    #[error("our Lease changed under us; writing it again")]
    Conflict,
}

fn lease_body(config: &MembershipConfig, settled_at_ms: i64, now: DateTime<Utc>) -> Lease {
    let mut annotations = BTreeMap::new();
    annotations.insert(SETTLED_ANNOTATION.to_string(), settled_at_ms.to_string());
    annotations.insert(
        ACTING_ANNOTATION.to_string(),
        shard::acting_ms(config.duration.as_millis() as i64).to_string(),
    );
    if let Some(a) = &config.address {
        annotations.insert(ADDRESS_ANNOTATION.to_string(), a.clone());
    }
    Lease {
        metadata: ObjectMeta {
            name: Some(config.lease_name()),
            namespace: Some(config.namespace.clone()),
            labels: Some(BTreeMap::from([(
                GROUP_LABEL.to_string(),
                config.group.clone(),
            )])),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(config.duration.as_secs()).unwrap_or(15)),
            acquire_time: Some(micro(now)),
            renew_time: Some(micro(now)),
            ..Default::default()
        }),
    }
}

fn group_list(config: &MembershipConfig) -> ListParams {
    ListParams::default().labels(&format!("{GROUP_LABEL}={}", config.group))
}

/// Join: list the group, write our Lease settling after [`shard::settle_delay_ms`] (or,
/// when a member's Lease is longer, after two thirds of it and the margin), then list the
/// group again and, when alone, write it again settling at once. Returns the Lease and the
/// earliest this replica counts itself settled (Unix milliseconds): not before the delay
/// has passed since the first write *landed*, for a replica that listed before it (and so
/// acts on our share) may go on acting for two thirds of its duration after that list.
async fn join(api: &Api<Lease>, config: &MembershipConfig) -> Result<(Lease, i64), RoundError> {
    let name = config.lease_name();
    let duration_ms = config.duration.as_millis() as i64;
    let before = api.list(&group_list(config)).await?.items;
    let ours = |l: &Lease| l.metadata.name.as_deref() == Some(name.as_str());
    // A member with a longer Lease (a changed setting, an older replica) acts longer after
    // its list than ours would: the delay is the longest, and the margin.
    let longest = before
        .iter()
        .filter(|l| !ours(l))
        .map(acting_ms_of)
        .max()
        .unwrap_or(0);
    let delay = shard::settle_delay_ms(duration_ms).max(longest + shard::SKEW_MARGIN_MS);
    // A Lease of ours from an earlier run of this identity (or from before this replica
    // missed its deadline): that run may act until its deadline; we settle no earlier.
    let previous = before.into_iter().find(|l| ours(l));
    let earliest = previous
        .as_ref()
        .and_then(member_of)
        .map(|m| m.acts_until_ms.saturating_add(shard::SKEW_MARGIN_MS))
        .unwrap_or(i64::MIN);
    let now = Utc::now();
    let settles = (now.timestamp_millis() + delay).max(earliest);
    let mut body = lease_body(config, settles, now);
    let written = match previous {
        Some(p) => {
            body.metadata.resource_version = p.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &body).await
        }
        None => api.create(&PostParams::default(), &body).await,
    };
    let written = match written {
        Ok(l) => l,
        Err(kube::Error::Api(e)) if e.code == 409 => return Err(RoundError::Conflict),
        Err(e) => return Err(e.into()),
    };
    let landed_ms = Utc::now().timestamp_millis();
    let listed_at_ms = landed_ms;
    let listed: Vec<Member> = api
        .list(&group_list(config))
        .await?
        .items
        .iter()
        .filter_map(member_of)
        .collect();
    if !alone(&config.identity, &listed, listed_at_ms) {
        let not_before = landed_ms + delay;
        info!(lease = %name, settles_in_ms = (not_before - now.timestamp_millis()).max(0), "joined the replicas' group");
        return Ok((written, not_before));
    }
    let now = Utc::now();
    let settled = now.timestamp_millis().max(earliest);
    let mut body = lease_body(config, settled, now);
    body.metadata.resource_version = written.metadata.resource_version;
    match api.replace(&name, &PostParams::default(), &body).await {
        Ok(l) => {
            info!(lease = %name, settles_in_ms = (settled - now.timestamp_millis()).max(0), "joined the replicas' group, alone");
            Ok((l, i64::MIN))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Err(RoundError::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// What a successful round saw: the members, when its list began (Unix milliseconds), and
/// the earliest this replica counts itself settled (after a join).
struct Listing {
    members: Vec<Member>,
    listed_at_ms: i64,
    not_before_ms: Option<i64>,
}

/// One round: renew (or join), then list. `ours` is our Lease as last written (its
/// resourceVersion makes the next write safe); `None` to join.
async fn round(
    api: &Api<Lease>,
    config: &MembershipConfig,
    ours: &mut Option<Lease>,
) -> Result<Listing, RoundError> {
    let name = config.lease_name();
    let mut not_before_ms = None;
    let mut joined = None;
    let lease = match ours.take() {
        None => {
            let (lease, not_before) = join(api, config).await?;
            not_before_ms = Some(not_before);
            // Kept only once the round's list succeeds: a join whose round fails is made
            // again, so its settling time is never lost.
            joined = Some(lease);
            None
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(micro(Utc::now()));
            spec.holder_identity = Some(config.identity.clone());
            match api.replace(&name, &PostParams::default(), &lease).await {
                Ok(l) => Some(l),
                // Changed or deleted by someone else: join again (settling anew).
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                    return Err(RoundError::Conflict)
                }
                Err(e) => {
                    *ours = Some(lease);
                    return Err(e.into());
                }
            }
        }
    };
    if lease.is_some() {
        *ours = lease;
    }
    let listed_at_ms = Utc::now().timestamp_millis();
    let listed = api.list(&group_list(config)).await?;
    if joined.is_some() {
        *ours = joined;
    }
    let now_ms = Utc::now().timestamp_millis();
    let duration_ms = config.duration.as_millis() as i64;
    // Leases of replicas long gone (a Pod name is not reused): removed, one per round.
    if let Some(stale) = listed.items.iter().find(|l| {
        member_of(l).is_none_or(|m| m.expires_at_ms + 10 * duration_ms < now_ms)
            && l.metadata.name.as_deref() != Some(name.as_str())
    }) {
        if let Some(n) = stale.metadata.name.as_deref() {
            // Only the Lease as listed: one renewed since (its replica back) stays.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: stale.metadata.uid.clone(),
                    resource_version: stale.metadata.resource_version.clone(),
                }),
                ..Default::default()
            };
            match api.delete(n, &params).await {
                Ok(_) => info!(lease = %n, "removed the Lease of a replica long gone"),
                Err(e) => warn!(lease = %n, error = %e, "removing a stale Lease failed"),
            }
        }
    }
    Ok(Listing {
        members: listed.items.iter().filter_map(member_of).collect(),
        listed_at_ms,
        not_before_ms,
    })
}

/// Whether this replica's deadline to act (two thirds of a duration after the start of its
/// last successful round) has passed at `now`.
fn lapsed(until: Option<Instant>, now: Instant) -> bool {
    until.is_some_and(|u| now >= u)
}

/// Take part in the group until the process ends; the [`Shard`] says what this replica
/// owns.
pub fn spawn(client: Client, config: MembershipConfig) -> Shard {
    let (tx, rx) = watch::channel(Arc::new(State {
        view: View {
            me: config.identity.clone(),
            ..Default::default()
        },
        acting: false,
    }));
    let acting_until = Arc::new(std::sync::Mutex::new(Some(Instant::now())));
    let shard = Shard {
        rx,
        acting_until: acting_until.clone(),
        leaving: Arc::default(),
    };
    let leaving = shard.leaving.clone();
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let every = config.duration / 3;
        let deadline = config.duration * 2 / 3;
        let mut ours: Option<Lease> = None;
        let mut members: Vec<Member> = Vec::new();
        let mut listed_at_ms = i64::MIN;
        // After a join that was not alone: the earliest we count ourselves settled.
        let mut not_before_ms = i64::MIN;
        let mut until: Option<Instant> = None;
        let mut next_round = Instant::now();
        loop {
            if leaving.load(Ordering::Acquire) {
                return;
            }
            if Instant::now() >= next_round {
                let started = Instant::now();
                // Past our deadline the others may have taken our share: join again.
                if ours.is_some() && lapsed(until, started) {
                    info!(lease = %config.lease_name(), "membership: the deadline to act passed without a renewal; joining again");
                    ours = None;
                }
                let renewing = ours.is_some();
                if !renewing {
                    // A join makes the others count us as joining: stop acting first.
                    until = Some(until.map_or(started, |u| u.min(started)));
                    *acting_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
                }
                // A renewal must land before our deadline; a join has no deadline.
                let budget = match until {
                    Some(u) if renewing => u.saturating_duration_since(started).min(every),
                    _ => every,
                }
                .max(Duration::from_millis(500));
                let result = tokio::time::timeout(budget, round(&api, &config, &mut ours))
                    .await
                    .unwrap_or(Err(RoundError::Timeout));
                match result {
                    Ok(listing) => {
                        members = listing.members;
                        listed_at_ms = listing.listed_at_ms;
                        if let Some(n) = listing.not_before_ms {
                            not_before_ms = n;
                        }
                        for m in members.iter_mut().filter(|m| m.identity == config.identity) {
                            m.settled_at_ms = m.settled_at_ms.max(not_before_ms);
                        }
                        if renewing && lapsed(until, Instant::now()) {
                            // Renewed, but after the deadline: not acting on it.
                            info!(lease = %config.lease_name(), "membership: renewed only after the deadline to act; joining again");
                            ours = None;
                            next_round = Instant::now();
                        } else {
                            until = Some(started + deadline);
                            next_round = started + every;
                        }
                        // Look again when a member would stop acting unless it renews.
                        if let Some(at) =
                            shard::recheck_at(&config.identity, &members, listed_at_ms)
                        {
                            let wait = at.saturating_sub(Utc::now().timestamp_millis()).max(0);
                            next_round =
                                next_round.min(Instant::now() + Duration::from_millis(wait as u64));
                        }
                        next_round = next_round.max(Instant::now() + Duration::from_millis(100));
                    }
                    Err(e) => {
                        warn!(lease = %config.lease_name(), error = %e, "membership: the Leases could not be renewed or listed");
                        if matches!(e, RoundError::Conflict) {
                            ours = None;
                        }
                        if ours.is_none() {
                            // Our Lease is gone, changed, or its write was cut off: the
                            // next round joins again; stop acting now.
                            until = Some(until.map_or(started, |u| u.min(Instant::now())));
                        }
                        next_round = Instant::now() + Duration::from_secs(1).min(every);
                    }
                }
            }
            let acting = until.is_some_and(|u| Instant::now() < u);
            *acting_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
            let mut view = shard::view(
                &config.identity,
                &members,
                listed_at_ms,
                Utc::now().timestamp_millis(),
            );
            // Ownership needs who and where, not when: a renewal changes nothing.
            for m in &mut view.owners {
                m.settled_at_ms = 0;
                m.expires_at_ms = 0;
                m.acts_until_ms = 0;
            }
            let state = State { view, acting };
            if **tx.borrow() != state {
                let before = tx.borrow().clone();
                if before.acting != state.acting || before.view.owners != state.view.owners {
                    info!(
                        identity = %config.identity,
                        acting = state.acting,
                        owners = ?state.view.identities(),
                        joining = ?state.view.joining,
                        "replicas' group changed"
                    );
                }
                let _ = tx.send(Arc::new(state));
            }
            if tx.is_closed() {
                return;
            }
            let wake = next_round
                .min(Instant::now() + Duration::from_secs(1))
                .min(until.unwrap_or(next_round).max(Instant::now()));
            tokio::time::sleep_until(wake.max(Instant::now() + Duration::from_millis(50))).await;
        }
    });
    shard
}

/// Leave the group (on shutdown): stop acting at once, wait a second for acts under way,
/// then delete our Lease so the others take our share at their next round instead of after
/// our deadline. Best effort, 4 s at most.
pub async fn leave(client: &Client, config: &MembershipConfig, shard: &Shard) {
    shard.leave();
    // Acts already past their ownership check finish first (their writes take well under
    // a second); the others take our share only after the delete.
    tokio::time::sleep(Duration::from_millis(shard::SKEW_MARGIN_MS as u64)).await;
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let name = config.lease_name();
    match tokio::time::timeout(
        Duration::from_secs(3),
        api.delete(&name, &DeleteParams::default()),
    )
    .await
    {
        Ok(Ok(_)) => info!(lease = %name, "left the replicas' group"),
        Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
        Ok(Err(e)) => warn!(lease = %name, error = %e, "deleting our Lease failed"),
        Err(_) => warn!(lease = %name, "deleting our Lease timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_s: i64, settled: Option<&str>) -> Lease {
        let mut annotations = BTreeMap::new();
        if let Some(s) = settled {
            annotations.insert(SETTLED_ANNOTATION.to_string(), s.to_string());
        }
        annotations.insert(ADDRESS_ANNOTATION.to_string(), "10.0.0.1:6443".to_string());
        Lease {
            metadata: ObjectMeta {
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(micro(DateTime::from_timestamp(renewed_s, 0).expect("time"))),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn leases_describe_members() {
        let m = member_of(&lease("a", 100, Some("5000"))).expect("member");
        assert_eq!(m.identity, "a");
        assert_eq!(m.expires_at_ms, 115_000);
        assert_eq!(
            m.acts_until_ms, 115_000,
            "an older replica's: its whole duration"
        );
        let mut l = lease("a", 100, Some("5000"));
        l.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ACTING_ANNOTATION.to_string(), "10000".to_string());
        let m = member_of(&l).expect("member");
        assert_eq!(m.acts_until_ms, 110_000, "as its Lease says");
        assert_eq!(m.settled_at_ms, 5000);
        assert_eq!(m.address.as_deref(), Some("10.0.0.1:6443"));
        let joining = member_of(&lease("a", 100, Some("joining"))).expect("member");
        assert_eq!(joining.settled_at_ms, i64::MAX);
        assert!(member_of(&lease("", 100, None)).is_none(), "released");
    }

    #[test]
    fn alone_when_no_other_member_may_act() {
        let me = Member {
            identity: "me".into(),
            address: None,
            settled_at_ms: i64::MAX,
            expires_at_ms: 20_000,
            acts_until_ms: 15_000,
        };
        assert!(alone("me", std::slice::from_ref(&me), 1_000));
        // Another member's Lease, listed after it stopped acting (and the margin): gone.
        let old = Member {
            identity: "old".into(),
            acts_until_ms: 0,
            ..me.clone()
        };
        assert!(alone("me", &[me.clone(), old.clone()], 1_000));
        assert!(!alone("me", &[me.clone(), old], 999), "within the margin");
        let other = Member {
            identity: "b".into(),
            ..me.clone()
        };
        assert!(!alone("me", &[me, other], 1_000));
    }

    #[test]
    fn lease_names_are_valid() {
        let c = MembershipConfig {
            namespace: "eventscale".into(),
            group: "eventscale-leader".into(),
            identity: "Host_1-42".into(),
            address: None,
            duration: Duration::from_secs(15),
        };
        assert_eq!(c.lease_name(), "eventscale-leader-host-1-42");
    }
}
