//! The ScaledJob executor, run on every replica for the ScaledJobs it owns: at every `pollingInterval` it asks a
//! ScaledJob's triggers, decides with [`scaler_core::job_scaling`] how many Jobs to create,
//! creates them, removes finished Jobs beyond the history limits, and writes the status
//! (only when it changes) and KEDA's Events. A new generation of the ScaledJob first
//! removes the Jobs of earlier ones, unless its rollout is `gradual`.
//!
//! Jobs and their pods are counted from watches (label `scaledjob.keda.sh/name`), so a
//! poll reads nothing from the apiserver; Jobs this replica created and the watch has not
//! shown yet are counted too, so a fast poll never creates them twice. Nothing is kept that
//! a new owner would need: it counts the Jobs that exist.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use scaler_core::conditions::{ConditionStatus, ConditionType, Reason};
use scaler_core::hpa::MANAGER;
use scaler_core::job_scaling::{
    count_jobs, decide, demand, history_to_delete, job_for, previous_generation_jobs, Calculation,
    Decision, ScalerMetric, Strategy,
};
use scaler_core::runtime::Runtimes;
use scaler_core::scaled_job::{
    as_scaled_object, paused_by_annotation, ScaledJob, ScaledJobStatus, SCALED_JOB_NAME_LABEL,
};
use scaler_core::scaled_object::{triggers_and_authentications_types, Condition, TriggerActivity};
use scaler_core::trace::{JobRecord, SampleRecord, Source};
use tracing::{debug, info, warn, Instrument};

use crate::events::{publish, EventReason};

/// How long a Job this replica created counts before the watch shows it.
const UNSEEN_FOR: Duration = Duration::from_secs(60);

/// Why a ScaledJob's reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A call to the API server failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// Writing the status failed.
    #[error("writing the status: {0}")]
    Status(#[from] crate::Error),
}

/// Told about the Jobs each poll creates (eventscale's own metrics).
pub trait JobsObserver: Send + Sync {
    /// `created` Jobs, the last of them `decision_to_created` after the poll decided.
    fn jobs_created(&self, created: u64, decision_to_created: Duration);
}

/// Nobody listening.
pub struct Unobserved;

impl JobsObserver for Unobserved {
    fn jobs_created(&self, _: u64, _: Duration) {}
}

/// What the executor shares between ScaledJobs.
pub struct JobsContext {
    client: Client,
    recorder: Recorder,
    runtimes: Arc<Runtimes>,
    version: String,
    observer: Arc<dyn JobsObserver>,
    /// Which ScaledJobs this replica owns: it runs only those.
    pub shard: crate::membership::Shard,
    memory: Mutex<HashMap<String, Memory>>,
}

/// What this replica remembers of one ScaledJob (by uid) between polls; losing it (a new
/// owner) costs nothing but a rollout check.
#[derive(Default)]
struct Memory {
    /// The generation whose earlier generations' Jobs were dealt with.
    rolled_out: Option<i64>,
    /// Jobs created and not yet seen by the watch.
    unseen: Vec<(String, Instant)>,
    /// The last poll found the ScaledJob active at this time.
    last_active: Option<DateTime<Utc>>,
    /// The generation whose strategy warning was published.
    warned: Option<i64>,
    /// The generation whose Job passed the apiserver's dry run.
    checked: Option<i64>,
}

impl JobsContext {
    /// The executor's context: `runtimes` builds the ScaledJobs' scalers (one per
    /// ScaledJob), `version` is written on Jobs as `app.kubernetes.io/version`, `observer`
    /// is told of the Jobs created.
    pub fn new(
        client: Client,
        runtimes: Arc<Runtimes>,
        version: &str,
        observer: Arc<dyn JobsObserver>,
        shard: crate::membership::Shard,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), Reporter::from(MANAGER.to_string()));
        Arc::new(Self {
            client,
            recorder,
            runtimes,
            version: version.to_string(),
            observer,
            shard,
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// Forget what is kept for ScaledJobs that are gone: their memory and their runtimes.
    fn prune(&self, sjs: &Store<ScaledJob>) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        // The usual case, nothing deleted since: no copy of the store. Runtimes and traces
        // are counted too: other replicas' ScaledJobs (a trace asked here) and paused ones
        // have them without memory.
        let kept = self.runtimes.len().max(self.runtimes.trace.len());
        if memory.len() <= sjs.len() && kept <= sjs.len() {
            return;
        }
        let live = sjs.state();
        let uids: std::collections::HashSet<&str> = live
            .iter()
            .filter_map(|s| s.metadata.uid.as_deref())
            .collect();
        memory.retain(|uid, _| uids.contains(uid.as_str()));
        drop(memory);
        self.runtimes.retain(|ns, name| {
            live.iter()
                .any(|s| s.metadata.namespace.as_deref() == Some(ns) && s.name_any() == name)
        });
    }

    fn memory<T>(&self, uid: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(uid.to_string()).or_default())
    }

    fn forget(&self, uid: &str) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

struct Reconciler {
    ctx: Arc<JobsContext>,
    scaled_jobs: Store<ScaledJob>,
    jobs: Store<Job>,
    pods: Store<Pod>,
}

/// What a reconcile depends on: spec (generation), the pause annotation, deletion; not
/// status writes.
fn relevant(sj: &ScaledJob) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sj.metadata.generation.hash(&mut h);
    paused_by_annotation(sj.metadata.annotations.as_ref()).hash(&mut h);
    sj.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Drop what counting never reads from a Job kept in memory.
fn slim_job(job: &mut Job) {
    job.metadata.managed_fields = None;
    if let Some(spec) = job.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// Drop what counting never reads from a pod kept in memory.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.spec = None;
    if let Some(s) = pod.status.as_mut() {
        s.container_statuses = None;
        s.init_container_statuses = None;
    }
}

/// Run the executor until the watches end (every replica runs it; each reconciles only
/// the ScaledJobs it owns).
pub async fn run(ctx: Arc<JobsContext>) {
    let client = ctx.client.clone();
    let labelled = watcher::Config::default().labels(SCALED_JOB_NAME_LABEL);
    let (jobs, jobs_writer) = reflector::store();
    let jobs_watch = reflector(
        jobs_writer,
        watcher(Api::<Job>::all(client.clone()), labelled.clone()).modify(slim_job),
    )
    .default_backoff()
    .for_each(|e| async move {
        if let Err(e) = e {
            warn!(error = %e, "watching the ScaledJobs' Jobs");
        }
    });
    let (pods, pods_writer) = reflector::store();
    let pods_watch = reflector(
        pods_writer,
        watcher(Api::<Pod>::all(client.clone()), labelled).modify(slim_pod),
    )
    .default_backoff()
    .for_each(|e| async move {
        if let Err(e) = e {
            warn!(error = %e, "watching the ScaledJobs' pods");
        }
    });
    let (sj_reader, sj_writer) = reflector::store();
    let sj_stream = reflector(
        sj_writer,
        watcher(Api::<ScaledJob>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(relevant, PredicateConfig::default());
    let shard_changes = ctx.shard.changes();
    let reconciler = Arc::new(Reconciler {
        ctx,
        scaled_jobs: sj_reader.clone(),
        jobs: jobs.clone(),
        pods: pods.clone(),
    });
    let controller = async move {
        // Count nothing before both watches have listed: a Job not yet seen would be
        // created again.
        if jobs.wait_until_ready().await.is_err() || pods.wait_until_ready().await.is_err() {
            return;
        }
        info!("ScaledJob executor started");
        Controller::for_stream(sj_stream, sj_reader)
            .reconcile_all_on(shard_changes)
            .shutdown_on_signal()
            .run(reconcile, error_policy, reconciler)
            .for_each(|res| async move {
                match res {
                    Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                    Err(controller::Error::ObjectNotFound(obj)) => {
                        debug!(%obj, "ScaledJob gone before its reconcile")
                    }
                    Err(e) => warn!(error = %e, "ScaledJob controller error"),
                }
            })
            .await;
    };
    tokio::select! {
        _ = jobs_watch => {}
        _ = pods_watch => {}
        _ = controller => {}
    }
}

fn error_policy(sj: Arc<ScaledJob>, error: &JobsError, _r: Arc<Reconciler>) -> Action {
    warn!(scaledjob = %format!("{}/{}", sj.namespace().unwrap_or_default(), sj.name_any()), error = %error, "ScaledJob reconcile failed; retrying in 10s");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(sj: Arc<ScaledJob>, r: Arc<Reconciler>) -> Result<Action, JobsError> {
    let key = format!("{}/{}", sj.namespace().unwrap_or_default(), sj.name_any());
    let span = tracing::info_span!("scaledjob", scaledjob = %key);
    reconcile_one(&sj, &r).instrument(span).await
}

/// An Event to publish once the status is written.
type Note = (EventType, EventReason, String);

async fn reconcile_one(sj: &ScaledJob, r: &Reconciler) -> Result<Action, JobsError> {
    let ctx = &r.ctx;
    let uid = sj.metadata.uid.clone().unwrap_or_default();
    let namespace = sj.namespace().unwrap_or_default();
    if !ctx.shard.owns(
        crate::membership::kinds::SCALED_JOB,
        &namespace,
        &sj.name_any(),
    ) {
        // Another replica's; what this one knew of it may be stale when it comes back.
        // Every ScaledJob is reconciled again when the group changes.
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    if sj.metadata.deletion_timestamp.is_some() {
        // Its Jobs go with it: they are owned by it (garbage collection).
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    let current = sj.status.clone().unwrap_or_default();
    let mut status = initialised(&current, sj);
    let mut notes: Vec<Note> = Vec::new();
    let was_paused = current.condition_is(ConditionType::Paused, ConditionStatus::True);
    if paused_by_annotation(sj.metadata.annotations.as_ref()) {
        if !was_paused {
            status.set_condition(Condition::new(
                ConditionType::Paused,
                ConditionStatus::True,
                Reason::ScaledJobPaused,
                "ScaledJob is paused",
            ));
            notes.push((
                EventType::Normal,
                EventReason::ScaledJobPaused,
                "ScaledJob is paused".into(),
            ));
        }
        status.set_condition(ready("ScaledJob is paused, skipping reconcile loop"));
        finish(sj, r, &current, status, notes).await?;
        return Ok(Action::await_change());
    }
    if was_paused {
        status.set_condition(Condition::new(
            ConditionType::Paused,
            ConditionStatus::False,
            Reason::ScaledJobUnpaused,
            "ScaledJob is unpaused",
        ));
        notes.push((
            EventType::Normal,
            EventReason::ScaledJobUnpaused,
            "ScaledJob is unpaused".into(),
        ));
    }
    let generation = sj.metadata.generation.unwrap_or(0);
    ctx.prune(&r.scaled_jobs);
    // The spec is checked once per generation; polls in between find it as it was.
    let checked = ctx.memory(&uid, |m| m.checked) == Some(generation);
    let problem = if checked {
        Ok(())
    } else {
        check(sj, &ctx.client, &ctx.version).await
    };
    if let Err(msg) = problem {
        warn!(reason = %msg, "ScaledJob check failed");
        status.set_condition(Condition::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::ScaledJobCheckFailed,
            msg.clone(),
        ));
        status.set_condition(Condition::new(
            ConditionType::Active,
            ConditionStatus::Unknown,
            Reason::UnknownState,
            "ScaledJob check failed",
        ));
        notes.push((EventType::Warning, EventReason::ScaledJobCheckFailed, msg));
        finish(sj, r, &current, status, notes).await?;
        return Ok(Action::await_change());
    }
    ctx.memory(&uid, |m| m.checked = Some(generation));
    if ctx.memory(&uid, |m| m.rolled_out) != Some(generation) {
        if let Err(msg) = roll_out(sj, r, generation, &mut notes).await {
            status.set_condition(Condition::new(
                ConditionType::Ready,
                ConditionStatus::False,
                Reason::ScaledJobCheckFailed,
                msg,
            ));
            finish(sj, r, &current, status, notes).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        ctx.memory(&uid, |m| m.rolled_out = Some(generation));
    }
    let (strategy, warning) = Strategy::of(sj.spec.scaling_strategy.as_ref());
    if let Some(w) = warning {
        if ctx.memory(&uid, |m| m.warned.replace(generation)) != Some(generation) {
            warn!(reason = %w, "scaling strategy");
            notes.push((
                EventType::Warning,
                EventReason::ScaledJobStrategyDefaulted,
                w,
            ));
        }
    }
    let view = as_scaled_object(sj);
    let polled = poll(sj, &view, r, strategy, &mut notes).await;
    let now = Utc::now();
    let remembered = ctx.memory(&uid, |m| {
        if polled.active {
            m.last_active = Some(now);
        }
        m.last_active
    });
    after_poll(&mut status, &current, &polled, now, remembered, &mut notes);
    finish(sj, r, &current, status, notes).await?;
    Ok(Action::requeue(Duration::from_secs(
        ctx.runtimes.interval_of(&view).max(1) as u64,
    )))
}

/// The current status with KEDA's initial conditions where there are none, and the
/// `Triggers` and `Authentications` columns.
fn initialised(current: &ScaledJobStatus, sj: &ScaledJob) -> ScaledJobStatus {
    let mut status = current.clone();
    scaler_core::conditions::initialise(&mut status.conditions);
    let (types, auths) = triggers_and_authentications_types(&sj.spec.triggers);
    status.triggers_types = Some(types);
    status.authentications_types = Some(auths);
    status
}

fn ready(message: &str) -> Condition {
    Condition::new(
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::ScaledJobReady,
        message,
    )
}

/// What the spec alone, and the apiserver's validation of the Job it makes, say is wrong;
/// KEDA's messages where KEDA checks the same thing.
async fn check(sj: &ScaledJob, client: &Client, version: &str) -> Result<(), String> {
    scaler_core::validation::validate_triggers(&sj.spec.triggers).map_err(|e| e.to_string())?;
    if sj
        .spec
        .triggers
        .iter()
        .any(|t| t.metric_type.as_deref().is_some_and(|m| !m.is_empty()))
    {
        return Err("Cannot set metricType in ScaledJob triggers".into());
    }
    // The Job as it would be created, validated by the apiserver without being stored:
    // an invalid JobSpec is reported here, with the apiserver's words, not at every poll.
    let job = job_for(sj, version).map_err(|e| format!("spec.jobTargetRef: {e}"))?;
    let api: Api<Job> = Api::namespaced(client.clone(), &sj.namespace().unwrap_or_default());
    let dry = PostParams {
        dry_run: true,
        field_manager: Some(MANAGER.into()),
    };
    match api.create(&dry, &job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => Err(format!(
            "spec.jobTargetRef: the Job it makes is invalid: {}",
            e.message
        )),
        // Not the spec's fault (the apiserver busy, no RBAC for a dry run): the first
        // real create reports it.
        Err(e) => {
            debug!(error = %e, "dry run of the Job failed");
            Ok(())
        }
    }
}

/// Delete the Jobs of earlier generations, unless the rollout is gradual.
async fn roll_out(
    sj: &ScaledJob,
    r: &Reconciler,
    generation: i64,
    notes: &mut Vec<Note>,
) -> Result<(), String> {
    if sj.spec.gradual_rollout() {
        debug!("rollout gradual: Jobs of earlier generations run on");
        return Ok(());
    }
    let jobs = own(&r.jobs, sj);
    let old = previous_generation_jobs(&jobs, generation);
    if old.is_empty() {
        return Ok(());
    }
    notes.push((
        EventType::Normal,
        EventReason::ScaledJobRolloutCleanupStarted,
        format!(
            "Deleting {} jobs owned by the previous version of the scaledJob",
            old.len()
        ),
    ));
    let policy = if sj.spec.foreground_rollout() {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    let api: Api<Job> = Api::namespaced(r.ctx.client.clone(), &sj.namespace().unwrap_or_default());
    for name in &old {
        if let Err(e) = delete(&api, name, policy.clone()).await {
            notes.push((
                EventType::Warning,
                EventReason::ScaledJobRolloutCleanupFailed,
                format!("Failed to delete job {name}: {e}"),
            ));
            return Err(format!("Not able to delete job: {name}"));
        }
    }
    info!(jobs = old.len(), "deleted the Jobs of earlier generations");
    notes.push((
        EventType::Normal,
        EventReason::ScaledJobRolloutCleanupCompleted,
        format!(
            "Deleted {} jobs owned by the previous version of the scaledJob",
            old.len()
        ),
    ));
    Ok(())
}

/// Delete a Job; one already gone is no error.
async fn delete(api: &Api<Job>, name: &str, policy: PropagationPolicy) -> Result<(), kube::Error> {
    let params = DeleteParams {
        propagation_policy: Some(policy),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The ScaledJob's Jobs as the watch sees them (KEDA finds them by label).
fn own(jobs: &Store<Job>, sj: &ScaledJob) -> Vec<Job> {
    let ns = sj.namespace();
    let name = sj.name_any();
    jobs.state()
        .iter()
        .filter(|j| j.namespace() == ns && j.labels().get(SCALED_JOB_NAME_LABEL) == Some(&name))
        .map(|j| (**j).clone())
        .collect()
}

/// What a poll found and did.
#[derive(Debug, Default)]
struct Polled {
    /// Active (a trigger, or a minimum above 0).
    active: bool,
    /// Some trigger failed.
    error: bool,
    /// Activity by metric name.
    per_metric: BTreeMap<String, bool>,
}

/// One poll of `sj` (`view`: the ScaledJob seen as a ScaledObject, its runtime's key).
async fn poll(
    sj: &ScaledJob,
    view: &scaler_core::ScaledObject,
    r: &Reconciler,
    strategy: Strategy,
    notes: &mut Vec<Note>,
) -> Polled {
    let ctx = &r.ctx;
    let min = sj.spec.min_replicas();
    let max = sj.spec.max_replicas_above_min();
    let runtime = ctx.runtimes.get(view).await;
    let samples = runtime.sample_where(&sj.spec.triggers, |_| true).await;
    let mut polled = Polled::default();
    let mut metrics = Vec::with_capacity(samples.len());
    let mut records = Vec::with_capacity(samples.len());
    for (index, sample) in samples {
        records.push(SampleRecord::of(index, &sample, Source::Live));
        match sample.result {
            Ok(s) => {
                let target = match runtime.scaler(index) {
                    Some(Ok(scaler)) => scaler.metric_spec().target.value(),
                    _ => 0.0,
                };
                polled.per_metric.insert(sample.metric.clone(), s.active);
                metrics.push(ScalerMetric::new(s.value, target, s.active, max));
            }
            Err(e) => {
                polled.error = true;
                warn!(trigger = index, error = %e, "Error getting scaler metrics and activity, but continue");
                notes.push((EventType::Warning, EventReason::KEDAScalerFailed, e));
            }
        }
    }
    let scaling = sj.spec.scaling_strategy.as_ref();
    let demand = demand(&metrics, Calculation::of(scaling), min, max);
    polled.active = demand.active;

    let uid = sj.metadata.uid.clone().unwrap_or_default();
    let mut jobs = own(&r.jobs, sj);
    // Jobs created but not yet shown by the watch count as running and pending.
    let unseen: Vec<String> = ctx.memory(&uid, |m| {
        let seen: Vec<&str> = jobs
            .iter()
            .filter_map(|j| j.metadata.name.as_deref())
            .collect();
        m.unseen
            .retain(|(name, at)| !seen.contains(&name.as_str()) && at.elapsed() < UNSEEN_FOR);
        m.unseen.iter().map(|(n, _)| n.clone()).collect()
    });
    let pods: Vec<Pod> = r
        .pods
        .state()
        .iter()
        .filter(|p| p.namespace() == sj.namespace())
        .map(|p| (**p).clone())
        .collect();
    let conditions: Vec<String> = scaling
        .and_then(|s| s.pending_pod_conditions.clone())
        .unwrap_or_default();
    let (mut running, mut pending) = count_jobs(&jobs, &pods, &conditions);
    running += unseen.len() as i64;
    pending += unseen.len() as i64;
    let decision = decide(strategy, min, max, running, pending, demand);
    log_decision(&decision, &demand);
    let mut created = 0;
    if decision.create > 0 {
        let decided = Instant::now();
        created = create(sj, r, decision.create, notes).await;
        if created > 0 {
            ctx.observer.jobs_created(created, decided.elapsed());
        }
    }
    let (ns, name) = (sj.namespace().unwrap_or_default(), sj.name_any());
    let at = chrono::Utc::now();
    ctx.runtimes.trace.poll(&ns, &name, at, records);
    ctx.runtimes.trace.job(
        &ns,
        &name,
        JobRecord {
            at,
            demand,
            decision: Some(decision),
            created: i64::try_from(created).unwrap_or(i64::MAX),
        },
    );
    // History limits, every poll, active or not.
    jobs.retain(|j| j.metadata.deletion_timestamp.is_none());
    let extra = history_to_delete(
        &jobs,
        sj.spec.successful_history_limit(),
        sj.spec.failed_history_limit(),
    );
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &sj.namespace().unwrap_or_default());
    for name in extra {
        match delete(&api, &name, PropagationPolicy::Background).await {
            Ok(()) => info!(job = %name, "Remove a job by reaching the historyLimit"),
            Err(e) => {
                warn!(job = %name, error = %e, "Failed to cleanUp jobs");
                break;
            }
        }
    }
    polled
}

fn log_decision(d: &Decision, demand: &scaler_core::job_scaling::Demand) {
    debug!(
        running = d.running,
        pending = d.pending,
        queue = demand.scale_to,
        max_scale = demand.max_scale,
        effective = d.effective,
        create = d.create,
        active = demand.active,
        "ScaledJob poll"
    );
}

/// Create `n` Jobs one after the other (stopping at the first failure); how many were
/// created.
async fn create(sj: &ScaledJob, r: &Reconciler, n: i64, notes: &mut Vec<Note>) -> u64 {
    let ctx = &r.ctx;
    let uid = sj.metadata.uid.clone().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &sj.namespace().unwrap_or_default());
    let params = PostParams {
        dry_run: false,
        field_manager: Some(MANAGER.into()),
    };
    let mut created = 0;
    for _ in 0..n {
        let job = match job_for(sj, &ctx.version) {
            Ok(j) => j,
            Err(e) => {
                notes.push((EventType::Warning, EventReason::KEDAJobCreateFailed, e));
                break;
            }
        };
        match api.create(&params, &job).await {
            Ok(j) => {
                created += 1;
                let name = j.name_any();
                ctx.memory(&uid, |m| m.unseen.push((name, Instant::now())));
            }
            Err(e) => {
                warn!(error = %e, "Failed to create a new Job");
                notes.push((
                    EventType::Warning,
                    EventReason::KEDAJobCreateFailed,
                    format!("Failed to create job {}-: {e}", sj.name_any()),
                ));
                break;
            }
        }
    }
    if created > 0 {
        info!(jobs = created, "Created jobs");
        notes.push((
            EventType::Normal,
            EventReason::KEDAJobsCreated,
            format!("Created {created} jobs"),
        ));
    }
    created
}

/// The status after a poll, and the Events of its transitions: Ready by the triggers'
/// errors, Active by the demand, `lastActiveTime` written when the ScaledJob becomes
/// active and when it stops (the last active poll), not at every active poll.
fn after_poll(
    status: &mut ScaledJobStatus,
    current: &ScaledJobStatus,
    polled: &Polled,
    now: DateTime<Utc>,
    remembered: Option<DateTime<Utc>>,
    notes: &mut Vec<Note>,
) {
    let was_ready = current.condition_is(ConditionType::Ready, ConditionStatus::True);
    let ready_condition = match (polled.error, polled.active) {
        (true, true) => Condition::new(
            ConditionType::Ready,
            ConditionStatus::Unknown,
            Reason::PartialTriggerError,
            "Some triggers defined in ScaledJob are not working correctly",
        ),
        (true, false) => Condition::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::TriggerError,
            "Triggers defined in ScaledJob are not working correctly",
        ),
        _ => ready("ScaledJob is defined correctly and is ready for scaling"),
    };
    if !was_ready && ready_condition.status == "True" {
        notes.push((
            EventType::Normal,
            EventReason::ScaledJobReady,
            "ScaledJob is ready for scaling".into(),
        ));
    }
    status.set_condition(ready_condition);
    let was_active = current.condition_is(ConditionType::Active, ConditionStatus::True);
    if polled.active {
        status.set_condition(Condition::new(
            ConditionType::Active,
            ConditionStatus::True,
            Reason::ScalerActive,
            "Scaling is performed because triggers are active",
        ));
        if !was_active {
            notes.push((
                EventType::Normal,
                EventReason::ScaledJobActive,
                "Scaling is performed because triggers are active".into(),
            ));
        }
    } else {
        status.set_condition(Condition::new(
            ConditionType::Active,
            ConditionStatus::False,
            Reason::ScalerNotActive,
            "Scaling is not performed because triggers are not active",
        ));
        if was_active {
            notes.push((
                EventType::Normal,
                EventReason::ScaledJobInactive,
                "Scaling is not performed because triggers are not active".into(),
            ));
        }
    }
    status.last_active_time = crate::scale::last_active_time(
        current.last_active_time.as_deref(),
        was_active,
        polled.active,
        now,
        remembered,
    );
    status.triggers_activity = Some(
        polled
            .per_metric
            .iter()
            .map(|(m, a)| (m.clone(), TriggerActivity { is_active: *a }))
            .collect(),
    );
}

/// Write the status when it changed, then publish the Events.
async fn finish(
    sj: &ScaledJob,
    r: &Reconciler,
    current: &ScaledJobStatus,
    status: ScaledJobStatus,
    notes: Vec<Note>,
) -> Result<(), JobsError> {
    crate::status::write_if_changed(&r.ctx.client, sj, current, &status).await?;
    for (type_, reason, note) in notes {
        publish(&r.ctx.recorder, sj, type_, reason, note).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(conditions: &[(ConditionType, ConditionStatus)]) -> ScaledJobStatus {
        let mut s = ScaledJobStatus::default();
        for (t, st) in conditions {
            s.set_condition(Condition::unset(*t, *st));
        }
        s
    }

    fn reasons(notes: &[Note]) -> Vec<&'static str> {
        notes.iter().map(|(_, r, _)| r.as_str()).collect()
    }

    #[test]
    fn a_poll_sets_kedas_conditions_and_events_on_transitions_only() {
        let now = Utc::now();
        let current = status_of(&[
            (ConditionType::Ready, ConditionStatus::Unknown),
            (ConditionType::Active, ConditionStatus::Unknown),
        ]);
        let active = Polled {
            active: true,
            error: false,
            per_metric: BTreeMap::from([("s0-mysql".into(), true)]),
        };
        let mut next = current.clone();
        let mut notes = Vec::new();
        after_poll(&mut next, &current, &active, now, Some(now), &mut notes);
        assert_eq!(reasons(&notes), ["ScaledJobReady", "ScaledJobActive"]);
        assert!(next.condition_is(ConditionType::Ready, ConditionStatus::True));
        assert!(next.condition_is(ConditionType::Active, ConditionStatus::True));
        assert!(next.last_active_time.is_some());
        assert_eq!(
            next.triggers_activity
                .as_ref()
                .and_then(|a| a.get("s0-mysql"))
                .map(|a| a.is_active),
            Some(true)
        );
        // The same poll again: no write, no Event.
        let again = next.clone();
        let mut notes = Vec::new();
        let mut after = again.clone();
        after_poll(
            &mut after,
            &again,
            &active,
            now + chrono::Duration::seconds(30),
            Some(now + chrono::Duration::seconds(30)),
            &mut notes,
        );
        assert!(notes.is_empty());
        assert_eq!(after, again, "a steady active poll writes nothing");
        // Inactive: the last active poll is written, and one Event.
        let idle = Polled {
            per_metric: BTreeMap::from([("s0-mysql".into(), false)]),
            ..Default::default()
        };
        let last = now + chrono::Duration::seconds(30);
        let mut notes = Vec::new();
        let mut off = again.clone();
        after_poll(
            &mut off,
            &again,
            &idle,
            now + chrono::Duration::seconds(60),
            Some(last),
            &mut notes,
        );
        assert_eq!(reasons(&notes), ["ScaledJobInactive"]);
        assert_eq!(
            off.last_active_time,
            Some(last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        );
    }

    #[test]
    fn failing_triggers_set_kedas_ready_reasons() {
        let current = ScaledJobStatus::default();
        for (active, status, reason) in [
            (true, "Unknown", "PartialTriggerError"),
            (false, "False", "TriggerError"),
        ] {
            let polled = Polled {
                active,
                error: true,
                per_metric: BTreeMap::new(),
            };
            let mut next = current.clone();
            let mut notes = Vec::new();
            after_poll(&mut next, &current, &polled, Utc::now(), None, &mut notes);
            let ready = next.condition(ConditionType::Ready).expect("Ready");
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_deref()),
                (status, Some(reason))
            );
            assert!(!reasons(&notes).contains(&"ScaledJobReady"));
        }
    }

    #[test]
    fn initial_conditions_and_columns_are_kedas() {
        let sj: ScaledJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": {"jobTargetRef": {"template": {}},
                     "triggers": [{"type": "mysql", "metadata": {}, "authenticationRef": {"name": "db"}},
                                  {"type": "cron", "metadata": {}}]}
        }))
        .expect("ScaledJob");
        let s = initialised(&ScaledJobStatus::default(), &sj);
        let conds: Vec<(&str, &str)> = s
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            conds,
            [
                ("Ready", "Unknown"),
                ("Active", "Unknown"),
                ("Fallback", "Unknown"),
                ("Paused", "False")
            ]
        );
        assert_eq!(s.triggers_types.as_deref(), Some("mysql,cron"));
        assert_eq!(s.authentications_types.as_deref(), Some("db"));
    }
}
