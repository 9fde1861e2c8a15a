//! The provider seam: what the HTTP layer asks, answered from the ScaledObjects in the
//! cluster and scaler-core.

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
use scaler_core::MetricTargetType;
use scaler_core::{MetricError, ScaledObject, SCALED_OBJECT_NAME_LABEL};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::forward::Forwarder;
use crate::status::ApiError;
use crate::telemetry::Telemetry;
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
        }
    }

    /// Ask the owner of `so` for a cached metric it polls; `None` when this replica
    /// answers (it owns the object, has no forwarder, or the owner could not be asked).
    async fn forwarded(
        &self,
        so: &ScaledObject,
        metric: &str,
    ) -> Option<Result<Vec<ExternalMetricValue>, ApiError>> {
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
                Some(answer)
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

#[async_trait]
impl MetricsProvider for ScaledObjectProvider {
    async fn external_metric(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
        forwarded: bool,
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
        if metric.eq_ignore_ascii_case(modifiers::COMPOSITE_METRIC) {
            if let Some(m) = modifiers::of_scaled_object(&so) {
                let m = m.map_err(|e| {
                    ApiError::internal(format!("ScaledObject {namespace}/{name}: {e}"))
                })?;
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
            let value = match c.value {
                Ok(v) => v,
                Err(e) => {
                    let health = self.runtimes.health.get(namespace, name, metric);
                    match (&so.spec.fallback, c.target) {
                        (Some(fb), Some((target, kind))) if fallback::falling_back(fb, &health) => {
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
            if let Some(answer) = self.forwarded(&so, metric).await {
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
        let result = rt.sample_metric(metric).await;
        if let Some(fb) = &so.spec.fallback {
            match &result {
                Ok(_) => {
                    self.runtimes.health.record(namespace, name, metric, true);
                }
                Err(MetricError::Query { .. }) => {
                    let health = self.runtimes.health.record(namespace, name, metric, false);
                    if let (true, Some((t, kind))) = (fallback::falling_back(fb, &health), target) {
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

    fn ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}
