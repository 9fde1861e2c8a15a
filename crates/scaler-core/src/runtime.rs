//! One runtime per ScaledObject: its scalers built once, with their authentication
//! resolved once, shared by the scale loop, HPA reads, the controller and `eval`.
//!
//! A runtime is built for one (ScaledObject uid, generation) and the versions of what its
//! build read: TriggerAuthentications, ClusterTriggerAuthentications, Secrets, ConfigMaps
//! and the scale target's container environment (each a [`Dep`]). It is rebuilt when the
//! ScaledObject changes or when [`Versions`] (watches of those objects) says one of its
//! dependencies changed; otherwise using it costs no request to the apiserver. After a
//! query error the failing trigger's scaler is rebuilt from the inputs already resolved
//! and asked once more, as KEDA refreshes a failing scaler.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::fallback::HealthTracker;
use crate::metrics::{MetricError, MetricSample};
use crate::poll::{MetricCache, TriggerSample};
use crate::pools::Pools;
use crate::scaled_object::{ScaleTriggers, ScaledObject};
use crate::scalers::{
    build_scaler, explain, external, reads_env, with_env, AuthParams, Scaler, ScalerError,
    TriggerContext, TriggerError,
};
use crate::trigger_auth::{trigger_params, Sources};

/// What a build read, whose change makes the runtime stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dep {
    /// A Secret `namespace/name`.
    Secret(String, String),
    /// A ConfigMap `namespace/name`.
    ConfigMap(String, String),
    /// A TriggerAuthentication `namespace/name`.
    TriggerAuthentication(String, String),
    /// A ClusterTriggerAuthentication.
    ClusterTriggerAuthentication(String),
    /// The environment of one container of a scale target (for `FromEnv`).
    TargetEnv {
        /// The target's kind, `group/version/Kind`.
        gvk: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The container (`None`: the first).
        container: Option<String>,
    },
}

/// The version of a dependency: a resourceVersion, or a digest of a target container's
/// environment (a target's resourceVersion changes with every scale and status update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// The object does not exist.
    Missing,
    /// The object at this version.
    At(String),
}

/// The current versions of dependencies, as watches see them.
pub trait Versions: Send + Sync {
    /// `dep`'s current version; `None` when not known (not watched, or the watch has not
    /// listed yet), which never makes a runtime stale.
    fn current(&self, dep: &Dep) -> Option<Version>;

    /// A scale target's desired replicas as a watch last saw them (`gvk` is
    /// `group/version/Kind`); `None` when not watched (read `/scale` instead).
    fn replicas(&self, _gvk: &str, _namespace: &str, _name: &str) -> Option<i32> {
        None
    }
}

/// No watches: a runtime is only rebuilt when its ScaledObject changes (`eval`, tests).
pub struct Unwatched;

impl Versions for Unwatched {
    fn current(&self, _dep: &Dep) -> Option<Version> {
        None
    }
}

/// Where scalers' query times and outcomes are reported (eventscale's own metrics).
pub trait Observer: Send + Sync {
    /// One query of a scaler of type `scaler_type` took `elapsed`, and succeeded or not.
    fn scaler_query(&self, scaler_type: &'static str, elapsed: Duration, ok: bool);
}

/// Reports nowhere.
pub struct Unobserved;

impl Observer for Unobserved {
    fn scaler_query(&self, _: &'static str, _: Duration, _: bool) {}
}

/// Where a build reads authentication and the target's environment, and which client a
/// trigger that reads the cluster (kubernetes-workload) uses.
pub struct BuildInputs<'a> {
    /// Secrets, ConfigMaps, TriggerAuthentications, the target's environment.
    pub sources: &'a dyn Sources,
    /// The cluster, `None` outside one (`eval`).
    pub client: Option<&'a kube::Client>,
    /// eventscale's namespace (ClusterTriggerAuthentications' Secrets).
    pub operator_namespace: &'a str,
    /// The shared clients.
    pub pools: &'a Pools,
}

/// One trigger as built: its scaler, or why it has none.
pub struct BuiltTrigger {
    /// The trigger's `name` (scalingModifiers' variable), when set.
    pub name: Option<String>,
    /// The scaler.
    pub scaler: Result<Arc<dyn Scaler>, TriggerError>,
    /// The trigger with `FromEnv` resolved and its authentication parameters: what the
    /// scaler was built from, to build it again after an error without reading anything.
    resolved: Option<Arc<Resolved>>,
}

/// A trigger with `FromEnv` resolved, and its authentication parameters.
pub type Resolved = (ScaleTriggers, AuthParams);

/// What makes two triggers' scalers the same: the trigger as resolved, its authentication
/// parameters, its index (in the metric name) and whether it feeds a formula.
fn share_key(
    index: usize,
    as_metric_source: bool,
    trigger: &ScaleTriggers,
    auth: &AuthParams,
) -> String {
    format!(
        "{index}\u{0}{as_metric_source}\u{0}{}\u{0}{}",
        serde_json::to_string(trigger).unwrap_or_default(),
        serde_json::to_string(auth).unwrap_or_default()
    )
}

impl std::fmt::Debug for BuiltTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The resolved inputs hold secrets: never printed.
        f.debug_struct("BuiltTrigger")
            .field("scaler", &self.scaler)
            .finish_non_exhaustive()
    }
}

/// Build every trigger's scaler of `so`, each result kept apart so that one bad trigger
/// does not hide the others; authentication failures name `authenticationRef`, a missing
/// `FromEnv` variable is named in the error of the parameter it left empty.
pub async fn build_triggers(so: &ScaledObject, inputs: &BuildInputs<'_>) -> Vec<BuiltTrigger> {
    let namespace = so.metadata.namespace.as_deref().unwrap_or("");
    let name = so.metadata.name.as_deref().unwrap_or("");
    let env_container = so
        .spec
        .scale_target_ref
        .env_source_container_name
        .as_deref();
    let owner = Owner::of(so);
    let mut out = Vec::with_capacity(so.spec.triggers.len());
    for (index, trigger) in so.spec.triggers.iter().enumerate() {
        let error = |source| TriggerError {
            index,
            trigger_type: trigger.type_.clone(),
            source,
        };
        let failed = |e| BuiltTrigger {
            name: trigger.name.clone(),
            scaler: Err(e),
            resolved: None,
        };
        let (trigger, env_unresolved) = if reads_env(trigger) {
            match inputs.sources.container_env(env_container).await {
                // An external scaler is sent the metadata as KEDA sends it.
                Ok(env) if external::is_external(&trigger.type_) => {
                    (external::resolve_env(trigger, &env), BTreeMap::new())
                }
                Ok(env) => with_env(trigger, &env),
                Err(e) => {
                    out.push(failed(error(ScalerError::Query(format!(
                        "reading the scale target's environment: {e}"
                    )))));
                    continue;
                }
            }
        } else {
            (trigger.clone(), BTreeMap::new())
        };
        let auth = match trigger_params(so, index, inputs.operator_namespace, inputs.sources).await
        {
            Ok(auth) => auth,
            Err(e) => {
                out.push(failed(error(ScalerError::Authentication(e.to_string()))));
                continue;
            }
        };
        for (param, why) in &auth.unresolved {
            debug!(scaledobject = %format!("{namespace}/{name}"), trigger = index, param = %param, "authentication parameter left empty: {why}");
        }
        // A scaler built from the same inputs for another ScaledObject is shared.
        let key = crate::pools::SharedScalers::shareable(&trigger.type_)
            .then(|| share_key(index, owner.as_metric_source, &trigger, &auth.params));
        if let Some((scaler, resolved)) = key.as_deref().and_then(|k| inputs.pools.scalers.get(k)) {
            out.push(BuiltTrigger {
                name: trigger.name.clone(),
                scaler: Ok(scaler),
                resolved: Some(resolved),
            });
            continue;
        }
        let scaler = build_one(
            &owner,
            index,
            &trigger,
            &auth.params,
            inputs.client,
            inputs.pools,
        )
        .await
        .map_err(|e| error(auth.explain(explain(e, &env_unresolved))));
        // A build that failed on its source (an external scaler not answering yet: the
        // only build that asks its source) is tried again at the next query; one that
        // failed on its parameters is not.
        let retry = match &scaler {
            Ok(_) => true,
            Err(e) => {
                external::is_external(&trigger.type_) && matches!(e.source, ScalerError::Query(_))
            }
        };
        let name = trigger.name.clone();
        let resolved = retry.then(|| Arc::new((trigger, auth.params)));
        if let (Some(key), Ok(scaler), Some(resolved)) = (key, &scaler, &resolved) {
            inputs
                .pools
                .scalers
                .put(key, &(scaler.clone(), resolved.clone()));
        }
        out.push(BuiltTrigger {
            name,
            resolved,
            scaler,
        });
    }
    out
}

/// What a scaler is built for: its ScaledObject's namespace and name and whether the
/// triggers feed a formula (kept instead of the whole ScaledObject).
#[derive(Debug, Clone)]
struct Owner {
    namespace: String,
    name: String,
    as_metric_source: bool,
}

impl Owner {
    fn of(so: &ScaledObject) -> Self {
        Self {
            namespace: so.metadata.namespace.clone().unwrap_or_default(),
            name: so.metadata.name.clone().unwrap_or_default(),
            as_metric_source: so.spec.uses_modifiers(),
        }
    }
}

async fn build_one(
    owner: &Owner,
    index: usize,
    trigger: &ScaleTriggers,
    auth: &AuthParams,
    client: Option<&kube::Client>,
    pools: &Pools,
) -> Result<Arc<dyn Scaler>, ScalerError> {
    build_scaler(TriggerContext {
        index,
        trigger,
        auth,
        namespace: &owner.namespace,
        name: &owner.name,
        client,
        as_metric_source: owner.as_metric_source,
        pools,
    })
    .await
    .map(Arc::from)
}

/// A digest of `so`'s triggers.
fn triggers_digest(so: &ScaledObject) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&so.spec.triggers)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// The ScaledObject's scalers, built once, and what they were built from.
pub struct Runtime {
    uid: Option<String>,
    generation: Option<i64>,
    /// Without a generation (objects not from an apiserver: tests, `eval`), a digest of
    /// the triggers tells a changed object.
    triggers_digest: Option<u64>,
    owner: Owner,
    triggers: Vec<RwLock<BuiltTrigger>>,
    deps: Vec<(Dep, Version)>,
    with: Arc<With>,
}

/// What every runtime of one [`Runtimes`] uses, held once (a client's clone alone
/// allocates): the shared clients, the cluster, the observer.
pub struct With {
    pools: Arc<Pools>,
    client: Option<kube::Client>,
    observer: Arc<dyn Observer>,
}

impl With {
    /// Runtimes using `pools`, reading the cluster through `client` (kubernetes-workload),
    /// their queries observed by `observer`.
    pub fn new(
        pools: Arc<Pools>,
        client: Option<kube::Client>,
        observer: Arc<dyn Observer>,
    ) -> Arc<Self> {
        Arc::new(Self {
            pools,
            client,
            observer,
        })
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("uid", &self.uid)
            .field("generation", &self.generation)
            .field("triggers", &self.triggers.len())
            .field("deps", &self.deps.len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Build `so`'s runtime from `inputs`, recording `deps` (what the sources read, at the
    /// versions they read); rebuilt triggers use `with`.
    pub async fn build(
        so: &ScaledObject,
        inputs: &BuildInputs<'_>,
        deps: Vec<(Dep, Version)>,
        with: Arc<With>,
    ) -> Self {
        let built = build_triggers(so, inputs).await;
        Self {
            uid: so.metadata.uid.clone(),
            generation: so.metadata.generation,
            triggers_digest: so
                .metadata
                .generation
                .is_none()
                .then(|| triggers_digest(so)),
            owner: Owner::of(so),
            triggers: built.into_iter().map(RwLock::new).collect(),
            deps,
            with,
        }
    }

    /// Whether this runtime was built for `so` as it is now.
    fn built_for(&self, so: &ScaledObject) -> bool {
        self.uid == so.metadata.uid
            && self.generation == so.metadata.generation
            // Objects without a generation (tests, eval) compare their triggers.
            && (so.metadata.generation.is_some() || self.triggers_digest == Some(triggers_digest(so)))
    }

    /// The first dependency whose version differs from the one built with.
    fn stale_dep(&self, versions: &dyn Versions) -> Option<&Dep> {
        self.deps
            .iter()
            .find(|(dep, seen)| versions.current(dep).is_some_and(|now| now != *seen))
            .map(|(dep, _)| dep)
    }

    /// What this runtime's build read.
    pub fn deps(&self) -> impl Iterator<Item = &Dep> {
        self.deps.iter().map(|(d, _)| d)
    }

    /// How many triggers.
    pub fn len(&self) -> usize {
        self.triggers.len()
    }

    /// Whether the ScaledObject has no triggers.
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// Trigger `index`'s scaler, or why it has none.
    pub fn scaler(&self, index: usize) -> Option<Result<Arc<dyn Scaler>, TriggerError>> {
        self.triggers
            .get(index)
            .map(|t| t.read().unwrap_or_else(|p| p.into_inner()).scaler.clone())
    }

    /// Every trigger's scaler, or why it has none, in `spec.triggers` order.
    pub fn scalers(&self) -> Vec<Result<Arc<dyn Scaler>, TriggerError>> {
        (0..self.triggers.len())
            .filter_map(|i| self.scaler(i))
            .collect()
    }

    /// Build trigger `index`'s scaler again from the inputs it was built from (no API
    /// read), after its query (or its build) failed. `None` when it cannot be.
    async fn rebuild(&self, index: usize) -> Option<Arc<dyn Scaler>> {
        let slot = self.triggers.get(index)?;
        let resolved = slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .resolved
            .clone()?;
        let (trigger, auth) = &*resolved;
        // A shared scaler another ScaledObject has already built afresh is taken as it is:
        // a source down for 5,000 ScaledObjects is not 5,000 new scalers.
        let key = crate::pools::SharedScalers::shareable(&trigger.type_)
            .then(|| share_key(index, self.owner.as_metric_source, trigger, auth));
        if let Some((fresh, _)) = key.as_deref().and_then(|k| self.with.pools.scalers.get(k)) {
            let mut slot = slot.write().unwrap_or_else(|p| p.into_inner());
            let same = |s: &Arc<dyn Scaler>| {
                std::ptr::eq(
                    Arc::as_ptr(s).cast::<()>(),
                    Arc::as_ptr(&fresh).cast::<()>(),
                )
            };
            if !slot.scaler.as_ref().is_ok_and(same) {
                slot.scaler = Ok(fresh.clone());
                return Some(fresh);
            }
        }
        let built = build_one(
            &self.owner,
            index,
            trigger,
            auth,
            self.with.client.as_ref(),
            &self.with.pools,
        )
        .await;
        let mut slot = slot.write().unwrap_or_else(|p| p.into_inner());
        match built {
            Ok(scaler) => {
                slot.scaler = Ok(scaler.clone());
                if let Some(key) = key {
                    self.with
                        .pools
                        .scalers
                        .put(key, &(scaler.clone(), resolved.clone()));
                }
                Some(scaler)
            }
            Err(source) => {
                // A trigger that has no scaler keeps the newest reason; a working scaler
                // is kept until one built afresh works.
                if slot.scaler.is_err() {
                    slot.scaler = Err(TriggerError {
                        index,
                        trigger_type: trigger.type_.clone(),
                        source,
                    });
                }
                None
            }
        }
    }

    /// Ask trigger `index`'s source, timing the query for the observer. A failed query
    /// is asked once more of a scaler built afresh (KEDA's refresh of a failing scaler).
    pub async fn sample(&self, index: usize) -> TriggerSample {
        let trigger_name = self
            .triggers
            .get(index)
            .and_then(|t| t.read().unwrap_or_else(|p| p.into_inner()).name.clone());
        let scaler = match self.scaler(index) {
            Some(Ok(s)) => s,
            // Its build failed on its source: try it again.
            Some(Err(_)) if self.retryable(index) => match self.rebuild(index).await {
                Some(s) => s,
                None => return self.failed(index, trigger_name),
            },
            _ => return self.failed(index, trigger_name),
        };
        let mut result = self.timed(&*scaler).await;
        if result.is_err() && scaler.refresh_on_error() {
            if let Some(fresh) = self.rebuild(index).await {
                result = self.timed(&*fresh).await;
            }
        }
        TriggerSample {
            trigger_name,
            metric: scaler.metric_spec().name.clone(),
            result: result.map_err(|e| e.to_string()),
        }
    }

    /// Build again every trigger whose build failed on its source, or whose source now
    /// gives another metric spec (the reconcile calls this before it reads the metric
    /// specs, so a scaler that came up, or changed its target, is put on the HPA).
    pub async fn refresh(&self) {
        for index in 0..self.triggers.len() {
            let changed = match self.scaler(index) {
                Some(Ok(s)) => s.spec_changed().await,
                _ => self.retryable(index),
            };
            if changed {
                self.rebuild(index).await;
            }
        }
    }

    /// Whether trigger `index` failed to build on its source and can be built again.
    fn retryable(&self, index: usize) -> bool {
        self.triggers.get(index).is_some_and(|t| {
            let t = t.read().unwrap_or_else(|p| p.into_inner());
            t.scaler.is_err() && t.resolved.is_some()
        })
    }

    /// Trigger `index`'s answer when it has no scaler: why.
    fn failed(&self, index: usize, trigger_name: Option<String>) -> TriggerSample {
        let why = match self.scaler(index) {
            Some(Err(e)) => e.to_string(),
            _ => format!("no trigger {index}"),
        };
        TriggerSample {
            trigger_name,
            metric: String::new(),
            result: Err(why),
        }
    }

    async fn timed(&self, scaler: &dyn Scaler) -> Result<crate::scalers::Sample, ScalerError> {
        let started = Instant::now();
        let result = scaler.sample().await;
        self.with
            .observer
            .scaler_query(scaler.scaler_type(), started.elapsed(), result.is_ok());
        result
    }

    /// Ask the triggers of `triggers` (the ScaledObject's) that `which` selects,
    /// concurrently; answers in trigger order.
    pub async fn sample_where(
        &self,
        triggers: &[ScaleTriggers],
        which: impl Fn(&ScaleTriggers) -> bool,
    ) -> Vec<(usize, TriggerSample)> {
        let polls = triggers
            .iter()
            .take(self.triggers.len())
            .enumerate()
            .filter(|(_, t)| which(t))
            .map(|(i, _)| async move { (i, self.sample(i).await) });
        futures::future::join_all(polls).await
    }

    /// The value of `metric` (matched case-insensitively) from its trigger. When no
    /// valid trigger serves it and some trigger is invalid, that trigger's error is the
    /// answer: its metric may be the one asked for, and the HPA's event then names the
    /// real problem rather than "not found".
    pub async fn sample_metric(&self, metric: &str) -> Result<MetricSample, MetricError> {
        let (namespace, name) = (self.owner.namespace.clone(), self.owner.name.clone());
        let mut first_error = None;
        for (index, built) in self.scalers().into_iter().enumerate() {
            match built {
                Ok(scaler) if scaler.metric_spec().name.eq_ignore_ascii_case(metric) => {
                    let sample = self.sample(index).await;
                    return match sample.result {
                        Ok(s) => Ok(MetricSample {
                            metric_name: scaler.metric_spec().name.clone(),
                            value: s.value,
                            active: s.active,
                            scaler_type: scaler.scaler_type(),
                        }),
                        Err(e) => Err(MetricError::Query {
                            namespace,
                            name,
                            metric: metric.to_string(),
                            scaler_type: scaler.scaler_type(),
                            source: ScalerError::Query(e),
                        }),
                    };
                }
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(match first_error {
            Some(source) => MetricError::InvalidTrigger {
                namespace,
                name,
                source,
            },
            None => MetricError::UnknownMetric {
                namespace,
                name,
                metric: metric.to_string(),
            },
        })
    }
}

/// How a registry reads the cluster: a fresh set of recording sources per build.
pub trait SourceFactory: Send + Sync {
    /// Sources for one build of `so`; [`RecordingSources::deps`] afterwards says what
    /// they read.
    fn sources(&self, so: &ScaledObject) -> Box<dyn RecordingSources>;
}

/// [`Sources`] that remember what they read.
pub trait RecordingSources: Sources {
    /// Every object read, at the version read.
    fn deps(&self) -> Vec<(Dep, Version)>;
    /// As plain sources.
    fn as_sources(&self) -> &dyn Sources;
}

/// Builds with nothing to read: every referenced object is missing (tests, and runs
/// without a cluster).
pub struct NoSourceFactory;

impl RecordingSources for crate::trigger_auth::NoSources {
    fn deps(&self) -> Vec<(Dep, Version)> {
        Vec::new()
    }
    fn as_sources(&self) -> &dyn Sources {
        self
    }
}

impl SourceFactory for NoSourceFactory {
    fn sources(&self, _: &ScaledObject) -> Box<dyn RecordingSources> {
        Box::new(crate::trigger_auth::NoSources)
    }
}

/// Per ScaledObject `namespace/name`, its runtime (built on first use, single-flight).
type Slots = HashMap<(String, String), Arc<tokio::sync::Mutex<Option<Arc<Runtime>>>>>;

/// Every ScaledObject's runtime, and everything they share: created once by whoever runs
/// eventscale (`run`, `eval`, a test) and handed down; nothing of it is global.
pub struct Runtimes {
    slots: Mutex<Slots>,
    factory: Arc<dyn SourceFactory>,
    versions: Arc<dyn Versions>,
    client: Option<kube::Client>,
    operator_namespace: String,
    /// The shared clients.
    pub pools: Arc<Pools>,
    /// Own metrics.
    pub observer: Arc<dyn Observer>,
    /// Results of `useCachedMetrics` triggers.
    pub cache: Arc<MetricCache>,
    /// Failure counts for fallback.
    pub health: Arc<HealthTracker>,
    /// What the scale loop last saw and did, for traces.
    pub trace: Arc<crate::trace::TraceStore>,
    builds: AtomicU64,
    default_interval: i32,
    with: Arc<With>,
}

impl Runtimes {
    /// A registry building from `factory`'s sources, stale when `versions` says so.
    pub fn new(
        factory: Arc<dyn SourceFactory>,
        versions: Arc<dyn Versions>,
        client: Option<kube::Client>,
        operator_namespace: String,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let pools = Arc::new(Pools::default());
        Self {
            slots: Mutex::new(HashMap::new()),
            factory,
            versions,
            with: With::new(pools.clone(), client.clone(), observer.clone()),
            client,
            operator_namespace,
            pools,
            observer,
            cache: Arc::new(MetricCache::default()),
            health: Arc::new(HealthTracker::default()),
            trace: Arc::default(),
            builds: AtomicU64::new(0),
            default_interval: crate::scaled_object::DEFAULT_POLLING_INTERVAL,
        }
    }

    /// The pollingInterval of ScaledObjects that set none (at least 1 second).
    pub fn with_default_interval(mut self, seconds: i32) -> Self {
        self.default_interval = seconds.max(1);
        self
    }

    /// `so`'s pollingInterval in seconds, the default when it sets none.
    pub fn interval_of(&self, so: &ScaledObject) -> i64 {
        i64::from(
            so.spec
                .polling_interval
                .unwrap_or(self.default_interval)
                .max(1),
        )
    }

    /// How long a cached result answers HPA reads: two intervals, so one slow or failed
    /// poll does not send reads to the source.
    pub fn max_age(&self, so: &ScaledObject) -> Duration {
        Duration::from_secs(2 * self.interval_of(so) as u64)
    }

    /// `so`'s scale target's replicas as the watches see them, when they do.
    pub fn known_replicas(&self, so: &ScaledObject) -> Option<i32> {
        let target = &so.spec.scale_target_ref;
        self.versions.replicas(
            &crate::resolve::target_gvk(target),
            so.metadata.namespace.as_deref().unwrap_or(""),
            &target.name,
        )
    }

    /// eventscale's namespace.
    pub fn operator_namespace(&self) -> &str {
        &self.operator_namespace
    }

    /// How many runtimes have been built (each build reads the cluster once).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// How many ScaledObjects have a runtime.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no ScaledObject has a runtime.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `so`'s runtime: the one built for this generation and these dependencies, or a new
    /// one. Concurrent callers for one ScaledObject wait for a single build.
    pub async fn get(&self, so: &ScaledObject) -> Arc<Runtime> {
        let key = (
            so.metadata.namespace.clone().unwrap_or_default(),
            so.metadata.name.clone().unwrap_or_default(),
        );
        let slot = self.lock().entry(key.clone()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(rt) = slot.as_ref() {
            if !rt.built_for(so) {
                debug!(scaledobject = %format!("{}/{}", key.0, key.1), "ScaledObject changed: rebuilding its scalers");
            } else if let Some(dep) = rt.stale_dep(&*self.versions) {
                debug!(scaledobject = %format!("{}/{}", key.0, key.1), ?dep, "a dependency changed: rebuilding its scalers");
            } else {
                return rt.clone();
            }
        }
        let sources = self.factory.sources(so);
        let inputs = BuildInputs {
            sources: sources.as_sources(),
            client: self.client.as_ref(),
            operator_namespace: &self.operator_namespace,
            pools: &self.pools,
        };
        let mut rt = Runtime::build(so, &inputs, Vec::new(), self.with.clone()).await;
        rt.deps = sources.deps();
        self.builds.fetch_add(1, Ordering::Relaxed);
        let rt = Arc::new(rt);
        *slot = Some(rt.clone());
        rt
    }

    /// Drop the runtimes, cached metrics and failure counts of ScaledObjects `keep`
    /// rejects (deleted ones): everything kept per ScaledObject goes in one place.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.lock().retain(|(ns, name), _| keep(ns, name));
        self.cache.retain(&keep);
        self.health.retain(&keep);
        self.trace.retain(&keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger_auth::{AuthError, TriggerAuthenticationSpec};
    use async_trait::async_trait;

    /// Sources over fixed Secrets, counting reads; versions set by the test.
    #[derive(Default)]
    struct World {
        secrets: Mutex<HashMap<String, (String, String)>>,
        reads: AtomicU64,
    }

    struct Reader(Arc<World>, Mutex<Vec<(Dep, Version)>>);

    #[async_trait]
    impl Sources for Reader {
        async fn secret(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
            self.0.reads.fetch_add(1, Ordering::Relaxed);
            let s = self.0.secrets.lock().unwrap().get(name).cloned();
            let dep = Dep::Secret(namespace.into(), name.into());
            let version = s
                .as_ref()
                .map_or(Version::Missing, |(rv, _)| Version::At(rv.clone()));
            self.1.lock().unwrap().push((dep, version));
            Ok(s.map(|(_, v)| BTreeMap::from([("token".to_string(), v)])))
        }
        async fn config_map(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
            Ok(None)
        }
        async fn trigger_authentication(
            &self,
            _: &str,
            name: &str,
        ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
            self.0.reads.fetch_add(1, Ordering::Relaxed);
            Ok(Some(
                serde_json::from_value(serde_json::json!({
                    "secretTargetRef": [{"parameter": "bearerToken", "name": name, "key": "token"}]
                }))
                .unwrap(),
            ))
        }
        async fn cluster_trigger_authentication(
            &self,
            _: &str,
        ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
            Ok(None)
        }
        async fn container_env(
            &self,
            _: Option<&str>,
        ) -> Result<BTreeMap<String, String>, AuthError> {
            Ok(BTreeMap::new())
        }
    }

    impl RecordingSources for Reader {
        fn deps(&self) -> Vec<(Dep, Version)> {
            self.1.lock().unwrap().clone()
        }
        fn as_sources(&self) -> &dyn Sources {
            self
        }
    }

    struct Factory(Arc<World>);
    impl SourceFactory for Factory {
        fn sources(&self, _: &ScaledObject) -> Box<dyn RecordingSources> {
            Box::new(Reader(self.0.clone(), Mutex::default()))
        }
    }

    /// Versions as the watches would report them: the world's current ones.
    struct Watched(Arc<World>);
    impl Versions for Watched {
        fn current(&self, dep: &Dep) -> Option<Version> {
            match dep {
                Dep::Secret(_, name) => Some(
                    self.0
                        .secrets
                        .lock()
                        .unwrap()
                        .get(name)
                        .map_or(Version::Missing, |(rv, _)| Version::At(rv.clone())),
                ),
                _ => None,
            }
        }
    }

    fn so(generation: i64) -> ScaledObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "so", "namespace": "ns", "uid": "u1", "generation": generation},
            "spec": {"scaleTargetRef": {"name": "web"}, "triggers": [{
                "type": "prometheus",
                "metadata": {"serverAddress": "http://127.0.0.1:1", "threshold": "1", "query": "up", "authModes": "bearer"},
                "authenticationRef": {"name": "creds"}
            }]}
        }))
        .unwrap()
    }

    fn secret_version(rt: &Runtime) -> Option<Version> {
        rt.deps
            .iter()
            .find(|(d, _)| matches!(d, Dep::Secret(..)))
            .map(|(_, v)| v.clone())
    }

    #[tokio::test]
    async fn built_once_then_rebuilt_only_on_change() {
        let world = Arc::new(World::default());
        world
            .secrets
            .lock()
            .unwrap()
            .insert("creds".into(), ("1".into(), "up".into()));
        let rts = Runtimes::new(
            Arc::new(Factory(world.clone())),
            Arc::new(Watched(world.clone())),
            None,
            "keda".into(),
            Arc::new(Unobserved),
        );
        let first = rts.get(&so(1)).await;
        let reads = world.reads.load(Ordering::Relaxed);
        assert_eq!(reads, 2, "the TriggerAuthentication and its Secret");
        for _ in 0..100 {
            let again = rts.get(&so(1)).await;
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(
            world.reads.load(Ordering::Relaxed),
            reads,
            "no reads at steady state"
        );
        assert_eq!(rts.builds(), 1);
        assert_eq!(secret_version(&first), Some(Version::At("1".into())));

        // The Secret rotates: the next use rebuilds with the new value.
        world
            .secrets
            .lock()
            .unwrap()
            .insert("creds".into(), ("2".into(), "down".into()));
        let rotated = rts.get(&so(1)).await;
        assert!(!Arc::ptr_eq(&first, &rotated));
        assert_eq!(secret_version(&rotated), Some(Version::At("2".into())));
        assert_eq!(rts.builds(), 2);

        // A new generation rebuilds; deleting the ScaledObject forgets its runtime.
        let next = rts.get(&so(2)).await;
        assert!(!Arc::ptr_eq(&rotated, &next));
        assert_eq!(rts.builds(), 3);
        rts.retain(|_, _| false);
        assert!(rts.is_empty());
    }

    #[tokio::test]
    async fn concurrent_first_uses_build_once() {
        let world = Arc::new(World::default());
        let rts = Runtimes::new(
            Arc::new(Factory(world.clone())),
            Arc::new(Unwatched),
            None,
            "keda".into(),
            Arc::new(Unobserved),
        );
        let so = so(1);
        let all = futures::future::join_all((0..50).map(|_| rts.get(&so))).await;
        assert!(all.iter().all(|r| Arc::ptr_eq(r, &all[0])));
        assert_eq!(rts.builds(), 1);
        // The Secret is missing: the bearer token comes out empty, and the error says why.
        let e = all[0].scaler(0).unwrap().unwrap_err();
        assert!(e.to_string().contains("creds"), "{e}");
    }

    fn one_trigger(ns: &str, name: &str, trigger: serde_json::Value) -> ScaledObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "uid": name, "generation": 1},
            "spec": {"scaleTargetRef": {"name": "web"}, "triggers": [trigger]}
        }))
        .unwrap()
    }

    fn same(a: &Arc<dyn Scaler>, b: &Arc<dyn Scaler>) -> bool {
        std::ptr::eq(Arc::as_ptr(a).cast::<()>(), Arc::as_ptr(b).cast::<()>())
    }

    #[tokio::test]
    async fn identical_triggers_share_one_scaler_and_others_do_not() {
        let rts = Runtimes::new(
            Arc::new(NoSourceFactory),
            Arc::new(Unwatched),
            None,
            "keda".into(),
            Arc::new(Unobserved),
        );
        let prom = |q: &str| {
            serde_json::json!({"type": "prometheus", "metadata":
                {"serverAddress": "http://127.0.0.1:1", "threshold": "1", "query": q}})
        };
        let scaler = |so: &ScaledObject| {
            let rts = &rts;
            let so = so.clone();
            async move { rts.get(&so).await.scaler(0).unwrap().unwrap() }
        };
        // Same question, other namespaces and names: one scaler.
        let a = scaler(&one_trigger("a", "x", prom("up"))).await;
        let b = scaler(&one_trigger("b", "y", prom("up"))).await;
        assert!(same(&a, &b));
        // Another query, or the same one as a second trigger (another metric name): not.
        let c = scaler(&one_trigger("a", "z", prom("down"))).await;
        assert!(!same(&a, &c));
        let two: ScaledObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "two", "namespace": "a", "uid": "two", "generation": 1},
            "spec": {"scaleTargetRef": {"name": "web"}, "triggers": [prom("down"), prom("up")]}
        }))
        .unwrap();
        let second = rts.get(&two).await.scaler(1).unwrap().unwrap();
        assert!(!same(&a, &second));
        assert_eq!(second.metric_spec().name, "s1-prometheus");
        // kubernetes-workload reads its ScaledObject's namespace: never shared.
        let workload = serde_json::json!({"type": "kubernetes-workload",
            "metadata": {"podSelector": "app=web", "value": "1"}});
        let w1 = scaler(&one_trigger("a", "w", workload.clone())).await;
        let w2 = scaler(&one_trigger("b", "w", workload)).await;
        assert!(!same(&w1, &w2));
        // Held weakly: gone with the last runtime that holds it.
        let key = share_key(
            0,
            false,
            &ScaleTriggers {
                type_: "prometheus".into(),
                metadata: crate::trigger_metadata::TriggerMetadata::from([
                    (
                        "serverAddress".to_string(),
                        "http://127.0.0.1:1".to_string(),
                    ),
                    ("threshold".to_string(), "1".to_string()),
                    ("query".to_string(), "up".to_string()),
                ]),
                ..Default::default()
            },
            &AuthParams::new(),
        );
        assert!(rts.pools.scalers.get(&key).is_some());
        rts.retain(|_, _| false);
        drop((a, b, c, second, w1, w2));
        assert!(rts.pools.scalers.get(&key).is_none());
    }
}
