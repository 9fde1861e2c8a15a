//! The provider seam: what the HTTP layer asks, answered from the ScaledObjects in the
//! cluster and scaler-core.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use scaler_core::fallback;
use scaler_core::label_selector::Selector;
use scaler_core::modifiers;
use scaler_core::poll::{composite_read, CompositeRead};
use scaler_core::quantity::quantity_string;
use scaler_core::resolve::{ready_pods, target_scale};
use scaler_core::runtime::Runtimes;
use scaler_core::scaled_object::Fallback;
use scaler_core::trace::{HpaRead, Served};
use scaler_core::MetricTargetType;
use scaler_core::{MetricError, ScaledObject, SCALED_OBJECT_NAME_LABEL};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::forward::Forwarder;
use crate::status::ApiError;
use crate::telemetry::Telemetry;
use crate::trace::{ScalingTrace, TraceKind};
use activator::membership::{kinds, Shard};

/// One item of an `ExternalMetricValueList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValue {
    /// The metric's name.
    pub metric_name: String,
    /// Labels of the series (KEDA sends none).
    #[serde(default)]
    pub metric_labels: std::collections::BTreeMap<String, String>,
    /// RFC 3339 time of the sample.
    pub timestamp: String,
    /// The value as a Kubernetes quantity.
    pub value: String,
}

/// Answers metric reads.
#[async_trait]
pub trait MetricsProvider: Send + Sync {
    /// The values of `metric` in `namespace` for the ScaledObject the selector names;
    /// `forwarded`: another replica forwarded the read, answer it here.
    async fn external_metric(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
        forwarded: bool,
    ) -> Result<Vec<ExternalMetricValue>, ApiError>;

    /// Whether the provider has what it needs to answer (its caches are filled).
    fn ready(&self) -> bool;

    /// The scaling trace of `kind` `namespace/name`, from the replica that owns it when
    /// this one does not (`forwarded`: another replica forwarded the request, answer it
    /// here).
    async fn trace(
        &self,
        kind: TraceKind,
        namespace: &str,
        name: &str,
        forwarded: bool,
    ) -> Result<ScalingTrace, ApiError> {
        let _ = (kind, forwarded);
        Err(ApiError::not_found(format!(
            "no trace of {namespace}/{name}: traces are not served here"
        )))
    }
}

/// What traces need beyond what metric reads do.
pub struct TraceConfig {
    /// This replica's identity.
    pub identity: String,
    /// `full` or `metricsOnly`.
    pub mode: &'static str,
    /// The ScaledJobs' runtimes (full mode).
    pub jobs: Option<Arc<Runtimes>>,
    /// The HPA tolerance the arithmetic uses.
    pub tolerance: f64,
    /// The HPA resource, found once.
    hpa: tokio::sync::OnceCell<kube::core::ApiResource>,
}

impl TraceConfig {
    /// A configuration for replica `identity`.
    pub fn new(
        identity: String,
        mode: &'static str,
        jobs: Option<Arc<Runtimes>>,
        tolerance: f64,
    ) -> Self {
        Self {
            identity,
            mode,
            jobs,
            tolerance,
            hpa: tokio::sync::OnceCell::new(),
        }
    }
}

/// The provider backed by a reflector store of ScaledObjects.
#[derive(Clone)]
pub struct ScaledObjectProvider {
    store: Store<ScaledObject>,
    client: Client,
    runtimes: Arc<Runtimes>,
    synced: Arc<AtomicBool>,
    telemetry: Arc<Telemetry>,
    shard: Shard,
    forwarder: Option<Arc<Forwarder>>,
    traces: Option<Arc<TraceConfig>>,
}

impl ScaledObjectProvider {
    /// A provider over `store`; it reports ready once the store's first list arrived.
    /// Cached reads of ScaledObjects `shard` gives another replica go to it through
    /// `forwarder`. Must be called inside a Tokio runtime.
    pub fn new(
        store: Store<ScaledObject>,
        client: Client,
        runtimes: Arc<Runtimes>,
        telemetry: Arc<Telemetry>,
        shard: Shard,
        forwarder: Option<Arc<Forwarder>>,
    ) -> Self {
        let synced = Arc::new(AtomicBool::new(false));
        let (s, flag) = (store.clone(), synced.clone());
        tokio::spawn(async move {
            if s.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
            }
        });
        Self {
            store,
            client,
            runtimes,
            synced,
            telemetry,
            shard,
            forwarder,
            traces: None,
        }
    }

    /// Serve traces with `config`.
    pub fn with_traces(mut self, config: TraceConfig) -> Self {
        self.traces = Some(Arc::new(config));
        self
    }

    /// Ask the owner of `so` for a cached metric it polls; `None` when this replica
    /// answers (it owns the object, has no forwarder, or the owner could not be asked).
    async fn forwarded(
        &self,
        so: &ScaledObject,
        metric: &str,
    ) -> Option<(String, Result<Vec<ExternalMetricValue>, ApiError>)> {
        let forwarder = self.forwarder.as_ref()?;
        let (namespace, name) = (
            so.metadata.namespace.as_deref().unwrap_or_default(),
            so.metadata.name.as_deref().unwrap_or_default(),
        );
        let owner = self
            .shard
            .other_owner(kinds::SCALED_OBJECT, namespace, name)?;
        match forwarder.forward(&owner, namespace, metric, name).await {
            Ok(answer) => {
                self.telemetry.forwarded(true);
                Some((owner.identity.clone(), answer))
            }
            Err(e) => {
                self.telemetry.forwarded(false);
                warn!(scaledobject = %format!("{namespace}/{name}"), %metric, error = %e, "forwarding a cached read to its owner failed; answering it here");
                None
            }
        }
    }
}

/// The labels of an answer: none for the HPA; for another replica (a forwarded read),
/// the trigger's activity, which its poll needs.
fn activity_label(forwarded: bool, active: bool) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    if forwarded {
        labels.insert(crate::forward::ACTIVE_LABEL.to_string(), active.to_string());
    }
    labels
}

/// Whether any trigger of `so` has `useCachedMetrics`.
pub fn uses_cache(so: &ScaledObject) -> bool {
    so.spec
        .triggers
        .iter()
        .any(|t| t.use_cached_metrics == Some(true))
}

fn metric_error(e: MetricError) -> ApiError {
    match e {
        MetricError::UnknownMetric { .. } => ApiError::not_found(e.to_string()),
        MetricError::InvalidTrigger { .. } | MetricError::Query { .. } => {
            warn!(error = %e, "metric request failed");
            ApiError::internal(e.to_string())
        }
    }
}

impl ScaledObjectProvider {
    /// The scalingModifiers formula over every named trigger's value, with KEDA's
    /// fallback: failures are counted per trigger metric; past `failureThreshold` the
    /// `scalingModifiers` behaviour makes the trigger nil for the formula, the other
    /// behaviours serve the fallback value for the composite target.
    async fn composite(
        &self,
        so: &ScaledObject,
        m: &modifiers::Modifiers,
    ) -> Result<f64, ApiError> {
        let namespace = so.metadata.namespace.as_deref().unwrap_or_default();
        let name = so.metadata.name.as_deref().unwrap_or_default();
        let rt = self.runtimes.get(so).await;
        let samples: Vec<_> = rt
            .sample_where(&so.spec.triggers, |t| t.name.is_some())
            .await
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        // Health is kept only where a fallback can use it, as KEDA keeps it.
        if so.spec.fallback.is_some() {
            for s in samples.iter().filter(|s| !s.metric.is_empty()) {
                self.runtimes
                    .health
                    .record(namespace, name, &s.metric, s.result.is_ok());
            }
        }
        for s in &samples {
            if let (Some(trigger), Err(error)) = (&s.trigger_name, &s.result) {
                warn!(scaledobject = %format!("{namespace}/{name}"), %trigger, %error, "trigger of the composite metric failed");
            }
        }
        let health = self.runtimes.health.snapshot(namespace, name);
        let failed =
            |e: String| ApiError::internal(format!("ScaledObject {namespace}/{name}: {e}"));
        match composite_read(so, m, &samples, &health) {
            CompositeRead::Value { value, .. } => Ok(value),
            CompositeRead::Fallback => {
                let fb = so
                    .spec
                    .fallback
                    .as_ref()
                    .ok_or_else(|| failed("no fallback".into()))?;
                let kind = modifiers::composite_spec(so, m).target_type;
                self.fallback_value(so, fb, m.target, kind).await
            }
            CompositeRead::Error(e) => Err(failed(e)),
        }
    }

    /// The value that makes the HPA choose the fallback replicas.
    async fn fallback_value(
        &self,
        so: &ScaledObject,
        fb: &Fallback,
        target: f64,
        kind: MetricTargetType,
    ) -> Result<f64, ApiError> {
        let behavior = fallback::behavior(fb).map_err(ApiError::internal)?;
        let needs_scale = !matches!(
            behavior,
            fallback::Behavior::Static | fallback::Behavior::ScalingModifiers
        ) || kind == MetricTargetType::Value;
        let scale = if needs_scale {
            Some(target_scale(&self.client, so).await.map_err(|e| {
                ApiError::internal(format!("fallback needs the target's replicas: {e}"))
            })?)
        } else {
            None
        };
        let current = scale.as_ref().map_or(0, |s| s.replicas);
        // A Value target is divided among the ready pods, which KEDA counts as the HPA does.
        let ready = match (kind, scale.as_ref().and_then(|s| s.selector.as_deref())) {
            (MetricTargetType::Value, Some(selector)) => {
                let namespace = so.metadata.namespace.as_deref().unwrap_or_default();
                ready_pods(&self.client, namespace, selector)
                    .await
                    .map_err(|e| {
                        ApiError::internal(format!("fallback needs the ready pods: {e}"))
                    })?
            }
            _ => 0,
        };
        let replicas = fallback::replicas(fb, behavior, current);
        fallback::value(target, kind, replicas, ready).ok_or_else(|| {
            ApiError::internal(format!(
                "ScaledObject {}/{}: no fallback for a Value target while the target has no ready replicas",
                so.metadata.namespace.as_deref().unwrap_or_default(),
                so.metadata.name.as_deref().unwrap_or_default()
            ))
        })
    }
}

/// What [`ScaledObjectProvider::answer`] learnt on the way, for the trace: the
/// ScaledObject's name once it is known, and how the read was answered.
#[derive(Default)]
struct Answered {
    name: Option<String>,
    served: Option<Served>,
}

impl ScaledObjectProvider {
    async fn answer(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
        forwarded: bool,
        answered: &mut Answered,
    ) -> Result<Vec<ExternalMetricValue>, ApiError> {
        let name = selector.exact_value(SCALED_OBJECT_NAME_LABEL).ok_or_else(|| {
            ApiError::bad_request(format!(
                "scaledObject name is not specified: the labelSelector must contain {SCALED_OBJECT_NAME_LABEL}=<name>"
            ))
        })?;
        let so = self
            .store
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "scaledobjects.keda.sh \"{name}\" not found in namespace \"{namespace}\""
                ))
            })?;
        answered.name = Some(name.to_string());
        if metric.eq_ignore_ascii_case(modifiers::COMPOSITE_METRIC) {
            if let Some(m) = modifiers::of_scaled_object(&so) {
                let m = m.map_err(|e| {
                    ApiError::internal(format!("ScaledObject {namespace}/{name}: {e}"))
                })?;
                answered.served = Some(Served::Composite);
                let value = self.composite(&so, &m).await?;
                return Ok(vec![ExternalMetricValue {
                    metric_name: modifiers::COMPOSITE_METRIC.to_string(),
                    metric_labels: Default::default(),
                    timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                    value: quantity_string(value),
                }]);
            }
        }
        // useCachedMetrics triggers answer from the polling loop's store; a miss (not
        // polled yet, or too old) falls through to a live query, as KEDA does.
        if let Some(c) =
            self.runtimes
                .cache
                .get(namespace, name, metric, self.runtimes.max_age(&so))
        {
            self.telemetry.metric_cache(true);
            answered.served = Some(Served::Cache);
            let value = match c.value {
                Ok(v) => v,
                Err(e) => {
                    let health = self.runtimes.health.get(namespace, name, metric);
                    match (&so.spec.fallback, c.target) {
                        (Some(fb), Some((target, kind))) if fallback::falling_back(fb, &health) => {
                            answered.served = Some(Served::Fallback);
                            self.fallback_value(&so, fb, target, kind).await?
                        }
                        _ => {
                            warn!(scaledobject = %format!("{namespace}/{name}"), %metric, error = %e, "cached poll failed");
                            return Err(ApiError::internal(format!(
                                "ScaledObject {namespace}/{name} metric {metric:?}: {e}"
                            )));
                        }
                    }
                }
            };
            return Ok(vec![ExternalMetricValue {
                metric_name: metric.to_string(),
                metric_labels: activity_label(forwarded, c.active),
                timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                value: quantity_string(value),
            }]);
        }
        // Only the owner polls: a cached trigger of another replica's object is asked
        // of it (when it cannot be, it is queried here).
        if !forwarded && uses_cache(&so) {
            if let Some((owner, answer)) = self.forwarded(&so, metric).await {
                answered.served = Some(Served::Forwarded(owner));
                return answer;
            }
        }
        self.telemetry.metric_cache(false);
        let rt = self.runtimes.get(&so).await;
        let target = rt
            .scalers()
            .into_iter()
            .filter_map(Result::ok)
            .find(|s| s.metric_spec().name.eq_ignore_ascii_case(metric))
            .map(|s| (s.metric_spec().target.value(), s.metric_spec().target_type));
        // Only a metric the object has is kept for its trace.
        if target.is_some() {
            answered.served = Some(Served::Live);
        }
        let result = rt.sample_metric(metric).await;
        if let Some(fb) = &so.spec.fallback {
            match &result {
                Ok(_) => {
                    self.runtimes.health.record(namespace, name, metric, true);
                }
                Err(MetricError::Query { .. }) => {
                    let health = self.runtimes.health.record(namespace, name, metric, false);
                    if let (true, Some((t, kind))) = (fallback::falling_back(fb, &health), target) {
                        answered.served = Some(Served::Fallback);
                        let value = self.fallback_value(&so, fb, t, kind).await?;
                        if let Err(e) = &result {
                            warn!(error = %e, failures = health.number_of_failures, value, "source failing: serving the fallback value");
                        }
                        return Ok(vec![ExternalMetricValue {
                            metric_name: metric.to_string(),
                            metric_labels: Default::default(),
                            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                            value: quantity_string(value),
                        }]);
                    }
                }
                Err(_) => {}
            }
        }
        let sample = result.map_err(metric_error)?;
        Ok(vec![ExternalMetricValue {
            metric_name: sample.metric_name,
            metric_labels: activity_label(forwarded, sample.active),
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            value: quantity_string(sample.value),
        }])
    }
}

#[async_trait]
impl MetricsProvider for ScaledObjectProvider {
    async fn external_metric(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
        forwarded: bool,
    ) -> Result<Vec<ExternalMetricValue>, ApiError> {
        let mut answered = Answered::default();
        let result = self
            .answer(namespace, metric, selector, forwarded, &mut answered)
            .await;
        // Forwarded reads are another replica's poll, not the HPA's.
        if let (false, Some(name), Some(served)) = (forwarded, answered.name, answered.served) {
            let result = match &result {
                Ok(items) => items
                    .first()
                    .and_then(|i| scaler_core::quantity::parse_quantity(&i.value))
                    .ok_or_else(|| "no value".to_string()),
                Err(e) => Err(e.message.clone()),
            };
            self.runtimes.trace.hpa_read(
                namespace,
                &name,
                metric,
                HpaRead {
                    at: Utc::now(),
                    result,
                    served,
                },
            );
        }
        result
    }

    fn ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    async fn trace(
        &self,
        kind: TraceKind,
        namespace: &str,
        name: &str,
        forwarded: bool,
    ) -> Result<ScalingTrace, ApiError> {
        let Some(config) = self.traces.clone() else {
            return Err(ApiError::not_found("traces are not served by this server"));
        };
        match kind {
            TraceKind::ScaledObject => {
                self.scaled_object_trace(&config, namespace, name, forwarded)
                    .await
            }
            TraceKind::HttpScaledObject => {
                // The ScaledObject made for it has its name, and it as owner (by kind and
                // name, as the add-on checks).
                self.http_scaled_object(namespace, name).await?;
                let owned = self
                    .store
                    .get(&ObjectRef::new(name).within(namespace))
                    .is_some_and(|so| activator::http::owned_by(&so, name));
                if !owned {
                    return Err(ApiError::not_found(format!(
                        "HTTPScaledObject {namespace}/{name} has no ScaledObject of its own (skipped with httpscaledobject.keda.sh/skip-scaledobject-creation, or not made yet: see its Ready condition)"
                    )));
                }
                let mut trace = self
                    .scaled_object_trace(&config, namespace, name, forwarded)
                    .await
                    .map_err(|e| {
                        if e.code == 404 {
                            ApiError::not_found(format!("HTTPScaledObject {namespace}/{name} has no ScaledObject yet (is the HTTP add-on's reconcile running? see its Ready condition): {}", e.message))
                        } else {
                            e
                        }
                    })?;
                trace.http = Some(crate::trace::HttpTrace {
                    name: name.to_string(),
                    scaled_object: name.to_string(),
                });
                Ok(trace)
            }
            TraceKind::ScaledJob => {
                self.scaled_job_trace(&config, namespace, name, forwarded)
                    .await
            }
        }
    }
}

impl ScaledObjectProvider {
    /// Ask the owner of `kind` `namespace/name` for its trace, when another replica owns
    /// it and the request was not forwarded already: `Ok(None)` when this replica answers
    /// (it owns it, or cannot forward), with the reason as a warning when it could not be
    /// asked.
    async fn trace_of_owner(
        &self,
        kind: TraceKind,
        forwarded: bool,
        namespace: &str,
        name: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Option<ScalingTrace>, ApiError> {
        let shard_kind = match kind {
            TraceKind::ScaledJob => kinds::SCALED_JOB,
            _ => kinds::SCALED_OBJECT,
        };
        if forwarded {
            return Ok(None);
        }
        let Some(owner) = self.shard.other_owner(shard_kind, namespace, name) else {
            return Ok(None);
        };
        let Some(forwarder) = &self.forwarder else {
            warnings.push(format!("{} owns this object and cannot be asked from here (no CA or token to forward with): this replica's view, which may be stale", owner.identity));
            return Ok(None);
        };
        match forwarder
            .get(&owner, &kind.path(namespace, name), &[])
            .await
        {
            Ok(Ok(body)) => serde_json::from_slice(&body).map(Some).map_err(|e| {
                ApiError::internal(format!(
                    "the owner {}'s trace is unreadable: {e}",
                    owner.identity
                ))
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => {
                warnings.push(format!(
                    "the owner could not be asked ({e}): this replica's view, which may be stale"
                ));
                Ok(None)
            }
        }
    }

    fn served_by(
        &self,
        config: &TraceConfig,
        shard_kind: &str,
        namespace: &str,
        name: &str,
    ) -> crate::trace::ServedBy {
        let is_owner = self.shard.owns(shard_kind, namespace, name);
        let owner = if is_owner {
            Some(config.identity.clone())
        } else {
            self.shard
                .other_owner(shard_kind, namespace, name)
                .map(|m| m.identity)
        };
        crate::trace::ServedBy {
            replica: config.identity.clone(),
            owner,
            is_owner,
            mode: config.mode.to_string(),
        }
    }

    async fn hpa_view(
        &self,
        config: &TraceConfig,
        so: &ScaledObject,
    ) -> Result<crate::trace::HpaView, String> {
        let resource = config
            .hpa
            .get_or_try_init(|| async {
                activator::discover_hpa_resource(&self.client)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        let name = scaler_core::hpa::hpa_name(so);
        let api: kube::Api<kube::core::DynamicObject> = kube::Api::namespaced_with(
            self.client.clone(),
            so.metadata.namespace.as_deref().unwrap_or_default(),
            resource,
        );
        let object = api
            .get_opt(&name)
            .await
            .map_err(|e| format!("reading HorizontalPodAutoscaler {name}: {e}"))?
            .map(|o| serde_json::to_value(o).unwrap_or_default());
        Ok(crate::trace::HpaView { name, object })
    }

    async fn target_view(
        &self,
        so: &ScaledObject,
        specs: &[crate::trace::TriggerSpec],
    ) -> crate::trace::TargetView {
        let scale = target_scale(&self.client, so)
            .await
            .map_err(|e| format!("reading the target's /scale: {e}"))?;
        // Only a Value target's arithmetic counts ready pods.
        let values = specs
            .iter()
            .any(|s| s.target_type == Some(MetricTargetType::Value))
            || modifiers::of_scaled_object(so)
                .and_then(Result::ok)
                .is_some_and(|m| {
                    modifiers::composite_spec(so, &m).target_type == MetricTargetType::Value
                });
        let ready = match (&scale.selector, values) {
            (Some(selector), true) => ready_pods(
                &self.client,
                so.metadata.namespace.as_deref().unwrap_or_default(),
                selector,
            )
            .await
            .map_err(|e| format!("counting the target's ready pods: {e}"))?,
            _ => 0,
        };
        Ok(scaler_core::hpa_math::Replicas {
            spec: scale.replicas,
            status: scale.status_replicas,
            ready,
        })
    }

    async fn scaled_object_trace(
        &self,
        config: &TraceConfig,
        namespace: &str,
        name: &str,
        forwarded: bool,
    ) -> Result<ScalingTrace, ApiError> {
        let so = self
            .store
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "scaledobjects.keda.sh \"{name}\" not found in namespace \"{namespace}\""
                ))
            })?;
        let mut warnings = Vec::new();
        if let Some(t) = self
            .trace_of_owner(
                TraceKind::ScaledObject,
                forwarded,
                namespace,
                name,
                &mut warnings,
            )
            .await?
        {
            return Ok(t);
        }
        let served_by = self.served_by(config, kinds::SCALED_OBJECT, namespace, name);
        if !served_by.is_owner && served_by.owner.is_none() && config.mode == "full" {
            warnings.push(
                "no replica owns this object now (none holds a Lease): nothing polls or scales it"
                    .into(),
            );
        }
        if config.mode == "full" && !served_by.is_owner {
            warnings.push("this replica does not own the object: the poll, decision and write it shows are its own (possibly none), not the owner's".into());
        }
        if !served_by.is_owner || config.mode != "full" {
            warnings.push(
                "failure counts are this replica's: each replica counts the HPA reads it serves"
                    .into(),
            );
        }
        let rt = self.runtimes.get(&so).await;
        let specs = trigger_specs(&rt.scalers());
        let hpa = self.hpa_view(config, &so).await;
        let target = self.target_view(&so, &specs).await;
        if let Err(e) = &target {
            warnings.push(e.clone());
        }
        Ok(crate::trace::build(crate::trace::Inputs {
            so: &so,
            kind: TraceKind::ScaledObject,
            record: self.runtimes.trace.get(namespace, name),
            health: self.runtimes.health.snapshot(namespace, name),
            specs,
            hpa: Some(hpa),
            target: Some(target),
            tolerance: config.tolerance,
            now: Utc::now(),
            served_by,
            polling_interval: self.runtimes.interval_of(&so),
            warnings,
        }))
    }

    /// Whether HTTPScaledObject `namespace/name` exists (read by a list of that one name:
    /// eventscale may list HTTPScaledObjects, not get them); NotFound when it or its CRD
    /// does not.
    async fn http_scaled_object(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        let api: kube::Api<scaler_core::http_scaled_object::HttpScaledObject> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let not_found = || {
            ApiError::not_found(format!(
                "httpscaledobjects.http.keda.sh \"{name}\" not found in namespace \"{namespace}\""
            ))
        };
        let found = api
            .list(&kube::api::ListParams::default().fields(&format!("metadata.name={name}")))
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 404 => not_found(),
                e => ApiError::internal(format!("listing HTTPScaledObjects: {e}")),
            })?;
        if found.items.is_empty() {
            return Err(not_found());
        }
        Ok(())
    }

    async fn scaled_job_trace(
        &self,
        config: &TraceConfig,
        namespace: &str,
        name: &str,
        forwarded: bool,
    ) -> Result<ScalingTrace, ApiError> {
        let api: kube::Api<scaler_core::scaled_job::ScaledJob> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let sj = api
            .get_opt(name)
            .await
            .map_err(|e| ApiError::internal(format!("reading ScaledJob {namespace}/{name}: {e}")))?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "scaledjobs.keda.sh \"{name}\" not found in namespace \"{namespace}\""
                ))
            })?;
        let mut warnings = Vec::new();
        if let Some(t) = self
            .trace_of_owner(
                TraceKind::ScaledJob,
                forwarded,
                namespace,
                name,
                &mut warnings,
            )
            .await?
        {
            return Ok(t);
        }
        let Some(runtimes) = config.jobs.clone() else {
            return Err(ApiError::not_found(format!(
                "ScaledJob {namespace}/{name}: ScaledJobs are not run in {} mode",
                config.mode
            )));
        };
        let view = scaler_core::scaled_job::as_scaled_object(&sj);
        let served_by = self.served_by(config, kinds::SCALED_JOB, namespace, name);
        if !served_by.is_owner {
            warnings.push("this replica does not own the ScaledJob: the poll it shows is its own (possibly none), not the owner's".into());
        }
        let rt = runtimes.get(&view).await;
        let specs = trigger_specs(&rt.scalers());
        Ok(crate::trace::build(crate::trace::Inputs {
            so: &view,
            kind: TraceKind::ScaledJob,
            record: runtimes.trace.get(namespace, name),
            health: BTreeMap::new(),
            specs,
            hpa: None,
            target: None,
            tolerance: config.tolerance,
            now: Utc::now(),
            served_by,
            polling_interval: runtimes.interval_of(&view),
            warnings,
        }))
    }
}

/// Each trigger's scaler as a trace shows it.
pub fn trigger_specs(
    scalers: &[Result<Arc<dyn scaler_core::scalers::Scaler>, scaler_core::TriggerError>],
) -> Vec<crate::trace::TriggerSpec> {
    scalers
        .iter()
        .map(|s| match s {
            Ok(s) => crate::trace::TriggerSpec {
                metric: s.metric_spec().name.clone(),
                target_type: Some(s.metric_spec().target_type),
                target: s.metric_spec().target.value(),
                activation_threshold: s.activation_threshold(),
                error: None,
            },
            Err(e) => crate::trace::TriggerSpec {
                error: Some(e.to_string()),
                ..Default::default()
            },
        })
        .collect()
}
