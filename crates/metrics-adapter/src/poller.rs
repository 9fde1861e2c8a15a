//! The polling loop (KEDA's scale loop): every `pollingInterval`, aligned to its
//! multiples, each ScaledObject is polled. Triggers with `useCachedMetrics` are stored for
//! HPA reads; with activation on (not metrics-only) every trigger is asked, and the
//! activator carries out what the answers mean for the target. Each replica polls only
//! the ScaledObjects it owns ([`activator::membership`]): one poll per object and
//! interval whatever the number of replicas. In metrics-only mode only ScaledObjects with
//! cached triggers are polled.
//!
//! With activation on, `external-push` triggers' answers arrive between polls: a
//! `result: true` is acted on at once (KEDA's push: the workload at zero is activated
//! without waiting for the poll); a `false`, or any push to a ScaledObject whose
//! `scalingModifiers` decide activity, has the object polled at once, so every trigger
//! has its say (KEDA would act on the one trigger's `false` alone). A stream that opens
//! again after a loss has its object polled at once too: a push sent meanwhile is lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use activator::membership::{kinds, Shard};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use scaler_core::conditions::{ConditionType, Reason};
use scaler_core::poll::{next_aligned, Cached, TriggerSample};
use scaler_core::runtime::Runtimes;
use scaler_core::scalers::external::{PushEvent, Pushed};
use scaler_core::trace::{SampleRecord, Source};
use scaler_core::ScaledObject;
use tracing::{debug, warn, Instrument};

use crate::provider::uses_cache;

/// Activation (full mode): the activator's context (its shard says what this replica
/// owns).
#[derive(Clone)]
pub struct Activation {
    /// The activator's context.
    pub ctx: Arc<activator::Context>,
}

/// Whether `shard` lets this replica act on `so` now.
fn owns(shard: &Shard, so: &ScaledObject) -> bool {
    shard.owns(
        kinds::SCALED_OBJECT,
        &so.namespace().unwrap_or_default(),
        &so.name_any(),
    )
}

/// What a question asked of another replica answered, shared by the polls of one instant:
/// `None` when it could not be asked.
type RemoteAnswer = Option<Result<scaler_core::scalers::Sample, String>>;

/// Where a replica's polls of cached triggers go: the replica that polls their question
/// ([`scaler_core::shard::query_key`]), so a question shared by many ScaledObjects is
/// asked once per interval whatever the number of replicas.
#[derive(Clone)]
pub struct Route {
    /// The group's view.
    pub shard: Shard,
    /// The channel to the other replicas.
    pub forwarder: Arc<crate::forward::Forwarder>,
    /// Asks in flight by (owner, question): the ScaledObjects of one question polled at
    /// one instant share one ask (the key holds every parameter, thresholds included, so
    /// the value and the activity are the same for all of them).
    pub asks: Arc<scaler_core::coalesce::Coalescer<(String, String), RemoteAnswer>>,
}

impl Route {
    /// A route through `forwarder` by `shard`'s view.
    pub fn new(shard: Shard, forwarder: Arc<crate::forward::Forwarder>) -> Self {
        Self {
            shard,
            forwarder,
            // The polls of one instant start within this of each other.
            asks: Arc::new(scaler_core::coalesce::Coalescer::with_linger(
                Duration::from_millis(500),
            )),
        }
    }
}

/// Poll trigger `index` of `so` (metric `metric`, question `question`) through `owner`,
/// the replica that polls the question; `None` when it could not be asked (the trigger is
/// then polled here).
async fn poll_remote(
    route: &Route,
    owner: scaler_core::shard::Member,
    question: String,
    so: &ScaledObject,
    index: usize,
    metric: String,
) -> Option<TriggerSample> {
    let (ns, name) = (so.namespace().unwrap_or_default(), so.name_any());
    let forwarder = route.forwarder.clone();
    let asked = metric.clone();
    let key = (owner.identity.clone(), question);
    let (answer, _) = route
        .asks
        .run(key, async move {
            match forwarder.sample(&owner, &ns, &asked, &name).await {
                Ok(result) => Some(result),
                Err(e) => {
                    debug!(error = %e, "the replica polling this question could not be asked; polling here");
                    None
                }
            }
        })
        .await;
    answer.map(|result| TriggerSample {
        trigger_name: so.spec.triggers.get(index).and_then(|t| t.name.clone()),
        metric,
        result,
    })
}

/// Poll `so` once through its runtime: its `useCachedMetrics` triggers, or all of them
/// when `all`, concurrently; a cached trigger whose question another replica polls is
/// asked of that replica (`route`). Cached triggers are stored; every answer is returned.
pub async fn poll_once(
    runtimes: &Runtimes,
    so: &ScaledObject,
    all: bool,
    route: Option<&Route>,
) -> Vec<TriggerSample> {
    let (ns, so_name) = (so.namespace().unwrap_or_default(), so.name_any());
    let rt = runtimes.get(so).await;
    let snapshot = route.map(|r| r.shard.snapshot());
    let view = snapshot.as_ref().map(|s| s.view());
    let polls = so
        .spec
        .triggers
        .iter()
        .enumerate()
        .filter(|(_, t)| all || t.use_cached_metrics == Some(true))
        .filter_map(|(i, t)| rt.scaler(i).map(|built| (i, t, built)))
        .map(|(i, t, built)| {
            let remote = match (route, &view, built) {
                (Some(r), Some(v), Ok(scaler)) if t.use_cached_metrics == Some(true) => {
                    let question = scaler_core::shard::query_key(&ns, t);
                    v.owner(&question)
                        .filter(|m| m.identity != v.me && m.address.is_some())
                        .map(|m| (r, m.clone(), question, scaler.metric_spec().name.clone()))
                }
                _ => None,
            };
            let rt = &rt;
            async move {
                if let Some((r, owner, question, metric)) = remote {
                    let from = owner.identity.clone();
                    if let Some(s) = poll_remote(r, owner, question, so, i, metric).await {
                        return (i, s, Source::Replica(from));
                    }
                }
                (i, rt.sample(i).await, Source::Live)
            }
        });
    let polled = futures::future::join_all(polls).await;
    let mut cached = HashMap::new();
    let mut samples = Vec::with_capacity(polled.len());
    let mut records = Vec::with_capacity(polled.len());
    for (index, sample, source) in polled {
        records.push(SampleRecord::of(index, &sample, source));
        let spec = rt.scaler(index).and_then(Result::ok);
        if let Some(spec) = spec.as_ref().map(|s| s.metric_spec()) {
            if so.spec.fallback.is_some() {
                runtimes
                    .health
                    .record(&ns, &so_name, &spec.name, sample.result.is_ok());
            }
            if so.spec.triggers[index].use_cached_metrics == Some(true) {
                let (value, active) = match &sample.result {
                    Ok(s) => (Ok(s.value), s.active),
                    Err(e) => (Err(e.clone()), false),
                };
                cached.insert(
                    spec.name.clone(),
                    Cached {
                        value,
                        active,
                        at: Instant::now(),
                        target: Some((spec.target.value(), spec.target_type)),
                    },
                );
            }
        }
        samples.push(sample);
    }
    if !cached.is_empty() {
        runtimes.cache.put(&ns, &so_name, cached);
    }
    runtimes
        .trace
        .poll(&ns, &so_name, chrono::Utc::now(), records);
    samples
}

/// Whether the reconcile has accepted `so`: it recorded the target's original replica
/// count and did not reject the spec. Until then the scale loop leaves the target alone
/// (as KEDA starts a ScaledObject's loop only after its first successful reconcile).
fn accepted(so: &ScaledObject) -> bool {
    let Some(status) = so.status.as_ref() else {
        return false;
    };
    let rejected = status
        .condition(ConditionType::Ready)
        .is_some_and(|c| c.has_reason(&[Reason::ScaledObjectCheckFailed]));
    status.original_replica_count.is_some() && !rejected
}

/// One scale-loop round for `so`, which this replica owns: poll every trigger (none while
/// paused, when the pause decides alone) and let the activator act on the answers, with
/// the ScaledObject as the store has it now, while this replica still owns it.
async fn poll_and_act(
    runtimes: &Runtimes,
    so: &ScaledObject,
    store: &Store<ScaledObject>,
    activation: &Activation,
    gates: &Gates,
    route: Option<&Route>,
) {
    let started = Instant::now();
    let samples = if paused(so) {
        Vec::new()
    } else {
        poll_once(runtimes, so, true, route).await
    };
    if !owns(&activation.ctx.shard, so) {
        return;
    }
    // The poll took time: act on the object as it is now (a pause or a deletion may
    // have arrived meanwhile).
    let Some(so) = store.get(&ObjectRef::from_obj(so)) else {
        return;
    };
    if !actionable(&so) {
        return;
    }
    let health = runtimes
        .health
        .snapshot(&so.namespace().unwrap_or_default(), &so.name_any());
    let activity = scaler_core::poll::activity(&so, &samples, &health);
    // One act at a time per object, pushes' included; a push of `true` that came while
    // this poll ran is newer than its answers: an inactive poll does not undo it.
    let gate = gate_of(gates, &so);
    let last_push = gate.lock().await;
    if !activity.active && last_push.is_some_and(|at| at > started) {
        debug!(
            "a push made the object active while it was polled; this poll's inactivity is stale"
        );
        return;
    }
    act(activation, &so, &activity, &health, "activation").await;
}

/// Whether `so` carries a pause annotation (an invalid one included: the reconcile
/// reports it, and nothing is scaled meanwhile).
fn paused(so: &ScaledObject) -> bool {
    !matches!(
        scaler_core::activation::pause_of(so.annotations()),
        Ok(scaler_core::activation::Pause::No)
    )
}

/// Whether the scale loop may act on `so` as the store has it: not being deleted, and
/// accepted by the reconcile.
fn actionable(so: &ScaledObject) -> bool {
    so.metadata.deletion_timestamp.is_none() && accepted(so)
}

/// Let the activator carry out `activity` for `so` while this replica owns it; a failure
/// (`what` failed) is logged and tried again at the next poll.
async fn act(
    activation: &Activation,
    so: &ScaledObject,
    activity: &scaler_core::poll::Activity,
    health: &std::collections::BTreeMap<String, scaler_core::scaled_object::HealthStatus>,
    what: &str,
) {
    let shard = activation.ctx.shard.clone();
    let (ns, name) = (so.namespace().unwrap_or_default(), so.name_any());
    let still_owned = move || shard.owns(kinds::SCALED_OBJECT, &ns, &name);
    if let Err(e) = activator::scale::act(&activation.ctx, so, activity, health, &still_owned).await
    {
        // The poll's span is a debug one: the warning names the object itself.
        warn!(
            scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any()),
            error = %e,
            "{what} failed; retrying at the next poll"
        );
    }
}

/// A ScaledObject's act lock (polls' and pushes' acts take it), holding when a push of
/// `true` last acted.
type Gate = Arc<tokio::sync::Mutex<Option<Instant>>>;

/// Every ScaledObject's [`Gate`], by (namespace, name).
type Gates = Arc<std::sync::Mutex<HashMap<(String, String), Gate>>>;

fn gate_of(gates: &Gates, so: &ScaledObject) -> Gate {
    gates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((so.namespace().unwrap_or_default(), so.name_any()))
        .or_default()
        .clone()
}

/// What a push calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushAction {
    /// Act on it at once: activate.
    Act,
    /// Poll the object at once: every trigger has its say.
    Poll,
    /// Nothing: it repeats what the trigger said last.
    Ignore,
}

/// How long a repeated `true` is ignored after one was acted on: a scaler pushing its
/// state on a timer (the HTTP add-on's, every 200 ms) has it acted on this often, so an
/// act that could not be carried out (the object not yet accepted, a failed write) is
/// tried again well before the next poll.
const REPEATED_TRUE_EVERY: Duration = Duration::from_secs(5);

/// What to do with `pushed` from a trigger whose last push said `last`, acted on `age`
/// ago (`None`: none yet, or its stream just opened again), for an object whose
/// `scalingModifiers` decide activity (`modifiers`) or not. Only a change is acted on
/// (a repeated `true` again after [`REPEATED_TRUE_EVERY`]); the scale loop polls as usual.
fn push_action(last: Option<(bool, Duration)>, pushed: &Pushed, modifiers: bool) -> PushAction {
    match (pushed, last) {
        (Pushed::SpecChanged, _) => PushAction::Ignore,
        (Pushed::Reopened, _) => PushAction::Poll,
        (Pushed::Active(true), Some((true, age))) if !modifiers && age >= REPEATED_TRUE_EVERY => {
            PushAction::Act
        }
        (Pushed::Active(v), Some((was, _))) if was == *v => PushAction::Ignore,
        (Pushed::Active(true), _) if !modifiers => PushAction::Act,
        (Pushed::Active(_), _) => PushAction::Poll,
    }
}

/// Act on an `external-push` trigger's `result: true` for `key` at once: activity as the
/// last poll left it (status.triggersActivity), with the pushing metric active.
async fn act_on_push(
    runtimes: &Runtimes,
    key: &ObjectRef<ScaledObject>,
    trigger: usize,
    store: &Store<ScaledObject>,
    activation: &Activation,
    gates: &Gates,
) {
    let Some(so) = store.get(key) else {
        return;
    };
    if !owns(&activation.ctx.shard, &so) {
        return;
    }
    let gate = gate_of(gates, &so);
    let mut last_push = gate.lock().await;
    *last_push = Some(Instant::now());
    if paused(&so) || !actionable(&so) {
        return;
    }
    let rt = runtimes.get(&so).await;
    let Some(Ok(scaler)) = rt.scaler(trigger) else {
        return;
    };
    let mut per_metric: std::collections::BTreeMap<String, bool> = so
        .status
        .as_ref()
        .and_then(|s| s.triggers_activity.as_ref())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.is_active)).collect())
        .unwrap_or_default();
    per_metric.insert(scaler.metric_spec().name.clone(), true);
    let activity = scaler_core::poll::Activity {
        active: true,
        error: false,
        per_metric,
        failure: None,
    };
    let health = runtimes
        .health
        .snapshot(&so.namespace().unwrap_or_default(), &so.name_any());
    act(activation, &so, &activity, &health, "activation on a push").await;
}

/// The next push, or never without a listener.
async fn next_push(
    pushes: &mut Option<tokio::sync::mpsc::UnboundedReceiver<PushEvent>>,
) -> Option<PushEvent> {
    match pushes {
        Some(rx) => rx.recv().await,
        None => futures::future::pending().await,
    }
}

/// How often the poll times, push memory, act locks and cached values of objects this
/// replica no longer polls are dropped (and at once when the group changes).
const TIDY_EVERY: Duration = Duration::from_secs(1);
/// How often state kept for deleted ScaledObjects is dropped.
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// The longest the loop sleeps: how soon a new or changed ScaledObject is first polled.
const MAX_SLEEP_MS: i64 = 250;
/// Polls running at once. Thousands of ScaledObjects share one instant; started all at
/// once their transient buffers add up (and the allocator keeps the peak), while a few
/// hundred at a time still finish a round of 5,000 well within the second that keeps
/// identical queries coalesced.
const MAX_CONCURRENT_POLLS: usize = 256;
/// The longest a poll waits for its turn. Polls stuck on a dead source hold their turn
/// until their timeout; past this wait the others go ahead anyway, so one broken source
/// shared by hundreds of ScaledObjects never holds up the rest.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);

/// Drop what is kept for ScaledObjects that are gone: their runtimes, cached metrics
/// and failure counts, and the activator's memory of them.
fn forget_deleted(
    store: &Store<ScaledObject>,
    runtimes: &Runtimes,
    activation: Option<&Activation>,
) {
    let state = store.state();
    let all: std::collections::HashSet<(String, String)> = state
        .iter()
        .map(|so| (so.namespace().unwrap_or_default(), so.name_any()))
        .collect();
    runtimes.retain(|ns, name| all.contains(&(ns.to_string(), name.to_string())));
    if let Some(a) = activation {
        let uids: std::collections::HashSet<String> = state
            .iter()
            .filter_map(|so| so.metadata.uid.clone())
            .collect();
        a.ctx.last_active.retain_memory(|uid| uids.contains(uid));
    }
}

/// ScaledObjects (namespace, name) with something running for them.
type Running = Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>;

/// Marks a ScaledObject's poll as running until dropped.
struct Busy(Running, (String, String));

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// When each ScaledObject this replica polls is next due (Unix ms), by namespace and name:
/// nested so that the scale loop looks objects up by the `&str`s it has.
type Due = HashMap<String, HashMap<String, i64>>;

/// The last value each `external-push` trigger pushed and when it was last acted on, by
/// (namespace, name, trigger).
type LastPushes = HashMap<(String, String, usize), (bool, Instant)>;

/// Handle one push: act at once on a new `true`, poll at once on a new `false` or a
/// reopened stream, rebuild on a new spec. Whether a poll became due now.
fn on_push(
    push: PushEvent,
    runtimes: &Arc<Runtimes>,
    store: &Store<ScaledObject>,
    activation: &Activation,
    due: &mut Due,
    last: &mut LastPushes,
    gates: &Gates,
) -> bool {
    let key = ObjectRef::<ScaledObject>::new(&push.name).within(&push.namespace);
    let who = format!("{}/{}", push.namespace, push.name);
    let id = (push.namespace.clone(), push.name.clone(), push.trigger);
    let Some(so) = store.get(&key) else {
        return false;
    };
    if push.pushed == Pushed::SpecChanged {
        // The trigger built again with its new spec (from what it was built from, no API
        // read; on every replica, whose HPA reads need it), then its HPA reconciled.
        let (runtimes, ctx) = (runtimes.clone(), activation.ctx.clone());
        tokio::spawn(
            async move {
                runtimes.get(&so).await.refresh().await;
                ctx.recheck(&push.namespace, &push.name);
            }
            .instrument(tracing::debug_span!("push", scaledobject = %who)),
        );
        return false;
    }
    let before = last.get(&id).map(|(v, at)| (*v, at.elapsed()));
    let action = push_action(before, &push.pushed, so.spec.uses_modifiers());
    match (&push.pushed, action) {
        (Pushed::Active(v), PushAction::Ignore) => {
            last.entry(id).or_insert((*v, Instant::now()));
        }
        (Pushed::Active(v), _) => {
            last.insert(id, (*v, Instant::now()));
        }
        _ => {
            last.remove(&id);
        }
    }
    match action {
        PushAction::Ignore => false,
        PushAction::Act => {
            debug!(scaledobject = %who, trigger = push.trigger, waited_us = push.at.elapsed().as_micros() as u64, "pushed active: acting now");
            let (runtimes, store, activation, gates) = (
                runtimes.clone(),
                store.clone(),
                activation.clone(),
                gates.clone(),
            );
            tokio::spawn(
                async move {
                    act_on_push(&runtimes, &key, push.trigger, &store, &activation, &gates).await;
                }
                .instrument(tracing::debug_span!("push", scaledobject = %who)),
            );
            false
        }
        PushAction::Poll => {
            debug!(scaledobject = %who, trigger = push.trigger, pushed = ?push.pushed, "polling now");
            // Only an object this replica polls has a poll time to bring forward (one it
            // owns but has not polled yet is polled at the round this starts anyway); a
            // poll time is kept only while it owns the object, which the round relies on.
            if let Some(next) = due
                .get_mut(&push.namespace)
                .and_then(|names| names.get_mut(&push.name))
            {
                *next = 0;
            }
            true
        }
    }
}

/// What every poll of a round shares.
struct Shared {
    runtimes: Arc<Runtimes>,
    store: Store<ScaledObject>,
    activation: Option<Activation>,
    gates: Gates,
    route: Option<Route>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// Start the polls of one round (each ScaledObject with its key and interval, marked
/// busy), at most [`MAX_CONCURRENT_POLLS`] at a time: a poll's task is spawned only once it
/// has its turn, so a round of 100,000 objects holds a few hundred tasks, not 100,000.
/// Past [`MAX_POLL_WAIT`] from the round's start the rest go ahead without a turn.
async fn dispatch(round: Vec<(Arc<ScaledObject>, Busy, i64)>, shared: Shared) {
    let deadline = tokio::time::Instant::now() + MAX_POLL_WAIT;
    let shared = Arc::new(shared);
    for (so, busy, interval) in round {
        let permit = tokio::time::timeout_at(deadline, shared.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok);
        let shared = shared.clone();
        // Every round ends: a hung source or apiserver frees the object for the next.
        let limit = Duration::from_secs((2 * interval).max(30) as u64);
        let span =
            tracing::debug_span!("poll", scaledobject = %format!("{}/{}", busy.1 .0, busy.1 .1));
        tokio::spawn(
            async move {
                let (_busy, _permit) = (busy, permit);
                let round = async {
                    match &shared.activation {
                        Some(a) => {
                            poll_and_act(
                                &shared.runtimes,
                                &so,
                                &shared.store,
                                a,
                                &shared.gates,
                                shared.route.as_ref(),
                            )
                            .await
                        }
                        None => {
                            poll_once(&shared.runtimes, &so, false, shared.route.as_ref()).await;
                        }
                    }
                };
                if tokio::time::timeout(limit, round).await.is_err() {
                    warn!(
                        scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any()),
                        limit_seconds = limit.as_secs(),
                        "poll did not finish in time; abandoned"
                    );
                }
                debug!("polled");
            }
            .instrument(span),
        );
    }
}

/// Run the loop until the task is dropped.
pub async fn run(
    store: Store<ScaledObject>,
    runtimes: Arc<Runtimes>,
    shard: Shard,
    forwarder: Option<Arc<crate::forward::Forwarder>>,
    activation: Option<Activation>,
    mut pushes: Option<tokio::sync::mpsc::UnboundedReceiver<PushEvent>>,
) {
    let mut due = Due::new();
    // ScaledObjects with a poll still running: the next one waits (one loop per object,
    // as KEDA has), so a slow source or apiserver never piles polls up.
    let busy: Running = Arc::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_POLLS));
    let gates: Gates = Arc::default();
    let mut last_pushes = LastPushes::new();
    let mut forgotten = Instant::now();
    let mut earliest = i64::MAX;
    let route = forwarder.map(|f| Route::new(shard.clone(), f));
    let mut tidied = Instant::now();
    let mut last_view: Option<activator::membership::Snapshot> = None;
    loop {
        // Wake at the next poll instant (polls are due on the interval's multiples, and
        // activation latency is measured from them), within MAX_SLEEP_MS to pick up new
        // ScaledObjects, or at a push.
        let now = chrono::Utc::now().timestamp_millis();
        let sleep_ms = earliest.saturating_sub(now).clamp(1, MAX_SLEEP_MS);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            Some(push) = next_push(&mut pushes) => {
                // Every push waiting is handled at once; the round of polls below runs
                // only when one of them made a poll due now.
                let Some(a) = &activation else { continue };
                let mut poll_now = on_push(push, &runtimes, &store, a, &mut due, &mut last_pushes, &gates);
                while let Some(more) = pushes.as_mut().and_then(|rx| rx.try_recv().ok()) {
                    poll_now |= on_push(more, &runtimes, &store, a, &mut due, &mut last_pushes, &gates);
                }
                if !poll_now {
                    continue;
                }
            }
        }
        if forgotten.elapsed() >= FORGET_EVERY {
            forgotten = Instant::now();
            forget_deleted(&store, &runtimes, activation.as_ref());
        }
        let now = chrono::Utc::now().timestamp_millis();
        earliest = i64::MAX;
        let sos = store.state();
        let owned = shard.snapshot();
        // What is kept per object is tidied up every TIDY_EVERY, and whenever the group
        // changed (so an object that left this replica and came back is told as new):
        // not at every wake, which would copy every key four times a second.
        let tidy = tidied.elapsed() >= TIDY_EVERY
            || !last_view.as_ref().is_some_and(|v| v.same_as(&owned));
        // The objects this pass polls, started by `dispatch` after it.
        let mut round = Vec::new();
        // Borrowed from `sos`: the pass allocates nothing per object it does not poll.
        let mut live: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
        for so in sos
            .iter()
            .filter(|so| activation.is_some() || uses_cache(so))
            .filter(|so| so.metadata.deletion_timestamp.is_none())
        {
            let ns = so.metadata.namespace.as_deref().unwrap_or_default();
            let name = so.metadata.name.as_deref().unwrap_or_default();
            if !owned.owns(kinds::SCALED_OBJECT, ns, name) {
                continue;
            }
            let polled = due.get(ns).and_then(|names| names.get(name)).copied();
            if polled.is_none() {
                // Just became this replica's (its poll times are kept only while it is):
                // what it saw of it before may be older than what its last owner saw since.
                if let Some(a) = &activation {
                    a.ctx
                        .last_active
                        .forget(so.metadata.uid.as_deref().unwrap_or_default());
                }
            }
            if tidy {
                live.insert((ns, name));
            }
            if activation.is_some() && !accepted(so) {
                // Not yet accepted by the reconcile (or rejected by it): its first poll
                // comes right after it is, not a whole pollingInterval later (KEDA starts
                // an object's loop after its first successful reconcile).
                continue;
            }
            let interval = runtimes.interval_of(so);
            let next = match polled {
                Some(next) => next,
                None => {
                    due.entry(ns.to_string())
                        .or_default()
                        .insert(name.to_string(), 0);
                    0
                }
            };
            if now < next {
                earliest = earliest.min(next);
                continue;
            }
            let following = next_aligned(now, interval);
            earliest = earliest.min(following);
            if let Some(t) = due.get_mut(ns).and_then(|names| names.get_mut(name)) {
                *t = following;
            }
            let key = (ns.to_string(), name.to_string());
            if !busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone())
            {
                debug!(scaledobject = %format!("{ns}/{name}"), "previous poll still running; skipping this one");
                continue;
            }
            // Marked busy from here: released when its poll ends, or if it never starts.
            round.push((so.clone(), Busy(busy.clone(), key), interval));
        }
        if !round.is_empty() {
            tokio::spawn(dispatch(
                round,
                Shared {
                    runtimes: runtimes.clone(),
                    store: store.clone(),
                    activation: activation.clone(),
                    gates: gates.clone(),
                    route: route.clone(),
                    permits: permits.clone(),
                },
            ));
        }
        last_view = Some(owned);
        if !tidy {
            continue;
        }
        tidied = Instant::now();
        for (ns, names) in due.iter_mut() {
            names.retain(|name, _| live.contains(&(ns.as_str(), name.as_str())));
        }
        due.retain(|_, names| !names.is_empty());
        last_pushes.retain(|(ns, name, _), _| live.contains(&(ns.as_str(), name.as_str())));
        gates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(ns, name), _| live.contains(&(ns.as_str(), name.as_str())));
        runtimes.cache.retain(|ns, name| live.contains(&(ns, name)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_acted_on_when_they_change() {
        use PushAction::*;
        let (t, f) = (Pushed::Active(true), Pushed::Active(false));
        let (now, later) = (Duration::ZERO, REPEATED_TRUE_EVERY);
        // The first answer of a stream, plain or under scalingModifiers.
        assert_eq!(push_action(None, &t, false), Act);
        assert_eq!(push_action(None, &t, true), Poll);
        assert_eq!(push_action(None, &f, false), Poll);
        // A scaler repeating itself on a timer: nothing, but a `true` again after a while
        // (an act that could not be carried out is tried again).
        assert_eq!(push_action(Some((true, now)), &t, false), Ignore);
        assert_eq!(push_action(Some((true, later)), &t, false), Act);
        assert_eq!(push_action(Some((true, later)), &t, true), Ignore);
        assert_eq!(push_action(Some((false, now)), &f, false), Ignore);
        assert_eq!(push_action(Some((false, later)), &f, false), Ignore);
        // A change.
        assert_eq!(push_action(Some((false, now)), &t, false), Act);
        assert_eq!(push_action(Some((true, now)), &f, false), Poll);
        assert_eq!(push_action(Some((false, now)), &t, true), Poll);
        // A stream back after a loss: whatever was pushed meanwhile is unknown.
        assert_eq!(
            push_action(Some((true, now)), &Pushed::Reopened, false),
            Poll
        );
        assert_eq!(push_action(None, &Pushed::SpecChanged, false), Ignore);
    }
}
