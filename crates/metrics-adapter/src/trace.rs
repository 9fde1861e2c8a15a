//! "Why N replicas?": a ScaledObject's (or ScaledJob's) scaling trace, built from what
//! the scale loop last saw and did ([`scaler_core::trace`]), the fallback's failure
//! counts, the HPA as the API server has it, and the HPA's own arithmetic
//! ([`scaler_core::hpa_math`]) on the values served. [`build`] is pure, so the server,
//! `eventscale explain` and `eventscale eval --explain` show one shape, and
//! [`render_text`] prints it for people.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use scaler_core::activation::{self, cooldown_state, Pause, Rule};
use scaler_core::fallback;
use scaler_core::hpa_math::{self, Replicas};
use scaler_core::poll::{composite_read, CompositeRead, TriggerSample};
use scaler_core::scaled_object::HealthStatus;
use scaler_core::scalers::{MetricTargetType, Sample};
use scaler_core::trace::{Record, Served, Source, WriteOutcome};
use scaler_core::ScaledObject;
use serde::{Deserialize, Serialize};

/// The API group of traces.
pub const GROUP: &str = "explain.eventscale.sh";
/// Its version.
pub const VERSION: &str = "v1alpha1";
/// `GROUP/VERSION`.
pub const GROUP_VERSION: &str = "explain.eventscale.sh/v1alpha1";
/// Paths of traces start with this: `{namespace}/{resource}/{name}/trace` follows.
pub const PREFIX: &str = "/apis/explain.eventscale.sh/v1alpha1/namespaces/";
/// The kind of a trace.
pub const KIND: &str = "ScalingTrace";

/// The objects a trace can be asked for, by the resource name in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceKind {
    /// `scaledobjects`.
    ScaledObject,
    /// `scaledjobs`.
    ScaledJob,
    /// `httpscaledobjects`: the trace of the ScaledObject made for it.
    HttpScaledObject,
}

impl TraceKind {
    /// Every kind.
    pub const ALL: [TraceKind; 3] = [
        TraceKind::ScaledObject,
        TraceKind::ScaledJob,
        TraceKind::HttpScaledObject,
    ];

    /// The resource in paths (plural, lowercase).
    pub fn resource(self) -> &'static str {
        match self {
            TraceKind::ScaledObject => "scaledobjects",
            TraceKind::ScaledJob => "scaledjobs",
            TraceKind::HttpScaledObject => "httpscaledobjects",
        }
    }

    /// The object's kind.
    pub fn kind(self) -> &'static str {
        match self {
            TraceKind::ScaledObject => "ScaledObject",
            TraceKind::ScaledJob => "ScaledJob",
            TraceKind::HttpScaledObject => "HTTPScaledObject",
        }
    }

    /// The object's API group (what a caller must be allowed to `get`).
    pub fn group(self) -> &'static str {
        match self {
            TraceKind::HttpScaledObject => "http.keda.sh",
            _ => "keda.sh",
        }
    }

    /// The kind a resource name, singular or plural or kind, names (as `kubectl` takes).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        let s = s.split('.').next().unwrap_or_default();
        TraceKind::ALL.into_iter().find(|k| {
            let plural = k.resource();
            s == plural || s == &plural[..plural.len() - 1] || s == k.kind().to_ascii_lowercase()
        })
    }

    /// The path of `namespace/name`'s trace.
    pub fn path(self, namespace: &str, name: &str) -> String {
        format!("{PREFIX}{namespace}/{}/{name}/trace", self.resource())
    }
}

/// `(kind, namespace, name)` of a trace path, percent-decoded; `None` for any other path.
pub fn parse_path(path: &str) -> Option<(TraceKind, String, String)> {
    let rest = path.strip_prefix(PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, resource, name, "trace"] = parts[..] else {
        return None;
    };
    let kind = TraceKind::ALL
        .into_iter()
        .find(|k| k.resource() == resource)?;
    let namespace = crate::api::percent_decode(namespace)?;
    let name = crate::api::percent_decode(name)?;
    (!namespace.is_empty() && !name.is_empty()).then_some((kind, namespace, name))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A number as people and quantities write it (no trailing zeros).
pub fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The object a trace is of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracedObject {
    /// ScaledObject, ScaledJob or HTTPScaledObject.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Its generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// Which replica answered, and how it stands to the object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedBy {
    /// This replica's identity (`eval` for an offline trace).
    pub replica: String,
    /// The replica that owns the object (polls, decides, scales), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether the answering replica is the owner.
    pub is_owner: bool,
    /// `full` (eventscale activates and owns the HPA), `metricsOnly` or `eval`.
    pub mode: String,
}

/// The answer in one line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// What holds the replica count where it is: `Active`, `Inactive`, `Cooldown`,
    /// `InitialCooldown`, `Paused`, `PausedReplicas`, `Fallback`, `SourceDown`,
    /// `ActivePartialError`, `ScaleInPaused`, `ScaleOutPaused`, `BelowMin`,
    /// `NotAccepted`, `NotPolledYet`, `MetricsOnly`.
    pub cause: String,
    /// The cause, explained with its numbers.
    pub message: String,
    /// The target's replicas now (`spec.replicas`), when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// The scale loop of the object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleLoop {
    /// `pollingInterval`, seconds.
    pub polling_interval_seconds: i64,
    /// When the triggers were last polled (by this replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_at: Option<String>,
    /// Seconds since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_age_seconds: Option<i64>,
}

/// The last HPA read of a metric this replica answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaReadTrace {
    /// When.
    pub at: String,
    /// The value served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `cache`, `live`, `fallback`, `composite` or `replica:<identity>`.
    pub served: String,
}

/// One trigger's failure count, as the fallback counts it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthTrace {
    /// Consecutive failures.
    pub number_of_failures: i32,
    /// `Happy` or `Failing`.
    pub status: String,
    /// Past `failureThreshold`: the fallback is served for it.
    pub falling_back: bool,
}

/// One trigger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerTrace {
    /// Index in `spec.triggers`.
    pub index: usize,
    /// `name`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The trigger type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The metric name the HPA asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
    /// `AverageValue` or `Value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
    /// The target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// Active strictly above this (where activity is a threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_threshold: Option<f64>,
    /// `useCachedMetrics`.
    pub use_cached_metrics: bool,
    /// The last value polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Whether it was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// The last poll's error, or why the trigger has no scaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    /// `live` (asked of the source here) or `replica:<identity>` (of the replica polling
    /// its question).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The last HPA read of its metric this replica answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_read: Option<HpaReadTrace>,
    /// Its failure count (only with a fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthTrace>,
}

/// `scalingModifiers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModifiersTrace {
    /// The formula.
    pub formula: String,
    /// The composite target.
    pub target: f64,
    /// Active strictly above this.
    pub activation_target: f64,
    /// The formula over the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Above the activation target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// The fallback value is served for the composite metric.
    pub fallback: bool,
    /// Why it has no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `spec.fallback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FallbackTrace {
    /// Failures tolerated.
    pub failure_threshold: i32,
    /// The fallback's replicas.
    pub replicas: i32,
    /// Its behavior.
    pub behavior: String,
    /// Whether KEDA's rules let it apply (AverageValue triggers, …).
    pub valid: bool,
    /// Some trigger is past the threshold: the HPA is served the fallback.
    pub active: bool,
}

/// The last activation decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationTrace {
    /// When.
    pub decided_at: String,
    /// The rule of the decision table that fired.
    pub rule: String,
    /// What it means.
    pub reason: String,
    /// Some trigger (or its fallback) active, or `force-activation`.
    pub active: bool,
    /// Some trigger failed.
    pub error: bool,
    /// The first failing trigger's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The target's replicas the decision saw.
    pub current: i32,
    /// `minReplicaCount`.
    pub min: i32,
    /// `idleReplicaCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<i32>,
    /// The count it scaled to, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to: Option<i32>,
    /// `status.lastActiveTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_last_active: Option<String>,
    /// The last activity the cooldown counted from (this replica's memory when newer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
}

/// The cooldown the object is in, or the one that would apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CooldownTrace {
    /// `Cooldown` (since the last activity) or `InitialCooldown` (since creation).
    pub kind: String,
    /// Whether it holds the target now (the last decision waited for it).
    pub holding: bool,
    /// Its start.
    pub since: String,
    /// Its length, seconds.
    pub seconds: i64,
    /// Its end.
    pub ends_at: String,
    /// Seconds left.
    pub remaining_seconds: i64,
}

/// The pause annotations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseTrace {
    /// `paused` or `paused-replicas` set.
    pub paused: bool,
    /// `paused-replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// `paused-scale-in`.
    pub scale_in: bool,
    /// `paused-scale-out`.
    pub scale_out: bool,
    /// `force-activation`.
    pub force_activation: bool,
    /// An invalid annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One HPA metric and what the HPA makes of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaMetricTrace {
    /// The metric name.
    pub name: String,
    /// `AverageValue` or `Value`.
    pub target_type: String,
    /// The target.
    pub target: f64,
    /// The value the arithmetic uses (eventscale's last value for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The value the HPA last saw (its `status.currentMetrics`; per pod for an
    /// `AverageValue` target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_current: Option<f64>,
    /// The usage ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Inside the tolerance: the count is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_tolerance: Option<bool>,
    /// The count this metric proposes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<i32>,
    /// How.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
}

/// A condition of the HPA.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaCondition {
    /// Its type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False, Unknown.
    pub status: String,
    /// Its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The HPA and its arithmetic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaTrace {
    /// Its name.
    pub name: String,
    /// Whether it exists.
    pub exists: bool,
    /// `spec.minReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// `spec.maxReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// `status.currentReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// `status.desiredReplicas`: the HPA's own answer, after its behavior.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// `status.lastScaleTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// The tolerance the arithmetic uses.
    pub tolerance: f64,
    /// Its metrics.
    pub metrics: Vec<HpaMetricTrace>,
    /// The largest proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<i32>,
    /// Clamped to `[minReplicas, maxReplicas]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamped: Option<i32>,
    /// Its conditions.
    pub conditions: Vec<HpaCondition>,
    /// What to keep in mind reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last write of the target's replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteTrace {
    /// When.
    pub at: String,
    /// From.
    pub from: i32,
    /// To.
    pub to: i32,
    /// The rule that decided it.
    pub rule: String,
    /// `Scaled`, `Conflicts` or `Failed`.
    pub result: String,
    /// The failure, or the conflicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A ScaledJob's last poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTrace {
    /// When.
    pub at: String,
    /// Active.
    pub active: bool,
    /// The combined queue length.
    pub queue_length: i64,
    /// Queue over target, capped.
    pub max_scale: i64,
    /// Jobs not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<i64>,
    /// Of which pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// The strategy's room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<i64>,
    /// Jobs to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<i64>,
    /// Jobs created.
    pub created: i64,
}

/// The HTTPScaledObject a trace was asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpTrace {
    /// Its name.
    pub name: String,
    /// The ScaledObject made for it, whose trace this is.
    pub scaled_object: String,
}

/// The whole trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingTrace {
    /// `ScalingTrace`.
    pub kind: String,
    /// `explain.eventscale.sh/v1alpha1`.
    pub api_version: String,
    /// Of what.
    pub object: TracedObject,
    /// When it was put together.
    pub generated_at: String,
    /// By whom.
    pub served_by: ServedBy,
    /// The answer.
    pub summary: Summary,
    /// The scale loop.
    pub scale_loop: ScaleLoop,
    /// Every trigger.
    pub triggers: Vec<TriggerTrace>,
    /// `scalingModifiers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ModifiersTrace>,
    /// `fallback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackTrace>,
    /// The last activation decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationTrace>,
    /// The cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<CooldownTrace>,
    /// The pause annotations.
    pub pause: PauseTrace,
    /// The HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<HpaTrace>,
    /// The last write of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_write: Option<WriteTrace>,
    /// A ScaledJob's poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobTrace>,
    /// The HTTPScaledObject asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTrace>,
    /// The ScaledObject's conditions, as `Type=Status (Reason)`.
    pub conditions: Vec<String>,
    /// What may make the trace partial.
    pub warnings: Vec<String>,
}

/// What one trigger's scaler says of itself (or why it has none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerSpec {
    /// The metric name.
    pub metric: String,
    /// Its target type.
    pub target_type: Option<MetricTargetType>,
    /// The target.
    pub target: f64,
    /// The activation threshold.
    pub activation_threshold: Option<f64>,
    /// Why there is no scaler.
    pub error: Option<String>,
}

/// The HPA as read from the API server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HpaView {
    /// Its name.
    pub name: String,
    /// Its JSON (`None`: not found).
    pub object: Option<serde_json::Value>,
}

/// The target's replica counts, or why they could not be read.
pub type TargetView = Result<Replicas, String>;

/// Everything a trace is built from.
pub struct Inputs<'a> {
    /// The object (a ScaledJob as its ScaledObject view).
    pub so: &'a ScaledObject,
    /// What kind it really is.
    pub kind: TraceKind,
    /// What the scale loop kept.
    pub record: Option<Record>,
    /// Failure counts by lowercase metric name.
    pub health: BTreeMap<String, HealthStatus>,
    /// Each trigger's scaler, in `spec.triggers` order.
    pub specs: Vec<TriggerSpec>,
    /// The HPA (`None`: not read, as for a ScaledJob or offline), or why not.
    pub hpa: Option<Result<HpaView, String>>,
    /// The target.
    pub target: Option<TargetView>,
    /// The tolerance.
    pub tolerance: f64,
    /// Now.
    pub now: DateTime<Utc>,
    /// Who answers.
    pub served_by: ServedBy,
    /// `pollingInterval` in effect.
    pub polling_interval: i64,
    /// Notes from the caller.
    pub warnings: Vec<String>,
}

fn served(s: &Served) -> String {
    match s {
        Served::Cache => "cache".into(),
        Served::Live => "live".into(),
        Served::Fallback => "fallback".into(),
        Served::Composite => "composite".into(),
        Served::Forwarded(r) => format!("replica:{r}"),
    }
}

fn pause_trace(so: &ScaledObject, kind: TraceKind) -> PauseTrace {
    let a = so.metadata.annotations.clone().unwrap_or_default();
    if kind == TraceKind::ScaledJob {
        // A ScaledJob knows `paused` only.
        return PauseTrace {
            paused: scaler_core::scaled_job::paused_by_annotation(Some(&a)),
            ..PauseTrace::default()
        };
    }
    let (paused, replicas, error) = match activation::pause_of(&a) {
        Ok(Pause::No) => (false, None, None),
        Ok(Pause::Freeze) => (true, None, None),
        Ok(Pause::Replicas(n)) => (true, Some(n), None),
        Err(e) => (true, None, Some(e)),
    };
    PauseTrace {
        paused,
        replicas,
        scale_in: activation::annotation_flag(&a, activation::PAUSED_SCALE_IN),
        scale_out: activation::annotation_flag(&a, activation::PAUSED_SCALE_OUT),
        force_activation: activation::annotation_flag(&a, activation::FORCE_ACTIVATION),
        error,
    }
}

fn i32_at(v: &serde_json::Value, path: &[&str]) -> Option<i32> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_i64().and_then(|n| i32::try_from(n).ok())
}

fn str_at(v: &serde_json::Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str().map(str::to_string)
}

/// The HPA's spec, status and its arithmetic on `values` (by lowercase metric name).
fn hpa_trace(
    view: &HpaView,
    values: &BTreeMap<String, f64>,
    target: Option<&TargetView>,
    tolerance: f64,
) -> HpaTrace {
    let mut t = HpaTrace {
        name: view.name.clone(),
        tolerance,
        ..HpaTrace::default()
    };
    let Some(hpa) = &view.object else {
        return t;
    };
    t.exists = true;
    t.min_replicas = i32_at(hpa, &["spec", "minReplicas"]).or(Some(1));
    t.max_replicas = i32_at(hpa, &["spec", "maxReplicas"]);
    t.current_replicas = i32_at(hpa, &["status", "currentReplicas"]);
    t.desired_replicas = i32_at(hpa, &["status", "desiredReplicas"]);
    t.last_scale_time = str_at(hpa, &["status", "lastScaleTime"]);
    for c in hpa["status"]["conditions"].as_array().into_iter().flatten() {
        t.conditions.push(HpaCondition {
            type_: str_at(c, &["type"]).unwrap_or_default(),
            status: str_at(c, &["status"]).unwrap_or_default(),
            reason: str_at(c, &["reason"]),
            message: str_at(c, &["message"]),
        });
    }
    let mut seen = BTreeMap::new();
    for m in hpa["status"]["currentMetrics"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let ext = &m["external"];
        let Some(name) = str_at(ext, &["metric", "name"]) else {
            continue;
        };
        let current = |field: &str| {
            str_at(ext, &["current", field])
                .as_deref()
                .and_then(scaler_core::quantity::parse_quantity)
        };
        seen.insert(
            name.to_ascii_lowercase(),
            (current("averageValue"), current("value")),
        );
    }
    let replicas = target.and_then(|r| r.as_ref().ok()).copied();
    let mut proposals = Vec::new();
    for m in hpa["spec"]["metrics"].as_array().into_iter().flatten() {
        let ext = &m["external"];
        let Some(name) = str_at(ext, &["metric", "name"]) else {
            continue;
        };
        let kind = str_at(ext, &["target", "type"]).unwrap_or_default();
        let (target_type, quantity) = if kind == "Value" {
            (MetricTargetType::Value, str_at(ext, &["target", "value"]))
        } else {
            (
                MetricTargetType::AverageValue,
                str_at(ext, &["target", "averageValue"]),
            )
        };
        let target_value = quantity
            .as_deref()
            .and_then(scaler_core::quantity::parse_quantity)
            .unwrap_or(0.0);
        let key = name.to_ascii_lowercase();
        let value = values.get(&key).copied();
        // The HPA shows an AverageValue target's value per pod.
        let hpa_current = seen
            .get(&key)
            .and_then(|(average, value)| match target_type {
                MetricTargetType::AverageValue => *average,
                MetricTargetType::Value => *value,
            });
        let mut mt = HpaMetricTrace {
            name,
            target_type: kind,
            target: target_value,
            value,
            hpa_current,
            ..HpaMetricTrace::default()
        };
        if let (Some(v), Some(r)) = (value, replicas) {
            if let Some(p) = hpa_math::metric_proposal(target_type, v, target_value, r, tolerance) {
                mt.ratio = Some(p.ratio);
                mt.within_tolerance = Some(p.within_tolerance);
                mt.proposal = Some(p.replicas);
                mt.formula = Some(p.formula.clone());
                proposals.push(p);
            }
        }
        t.metrics.push(mt);
    }
    if let (Some(min), Some(max)) = (t.min_replicas, t.max_replicas) {
        if let Some((raw, clamped)) = hpa_math::proposal(&proposals, min, max) {
            t.proposal = Some(raw);
            t.clamped = Some(clamped);
        }
    }
    t.note = Some(match replicas {
        Some(r) if r.spec == 0 => {
            "the target is at 0: the HPA does not scale it (ScalingActive False); \
            eventscale's activation takes it from 0"
                .into()
        }
        Some(_) => "the HPA's behavior (stabilization windows, rate policies) applies after this \
            proposal; desiredReplicas is its own answer"
            .into(),
        None => "the target's replicas could not be read: no arithmetic".into(),
    });
    t
}

fn trigger_traces(i: &Inputs, record: Option<&Record>) -> Vec<TriggerTrace> {
    let poll = record.and_then(|r| r.poll.as_ref());
    let fb = i.so.spec.fallback.as_ref();
    i.so.spec
        .triggers
        .iter()
        .enumerate()
        .map(|(index, t)| {
            let spec = i.specs.get(index).cloned().unwrap_or_default();
            let mut tt = TriggerTrace {
                index,
                name: t.name.clone(),
                type_: t.type_.clone(),
                use_cached_metrics: t.use_cached_metrics == Some(true),
                error: spec.error.clone(),
                ..TriggerTrace::default()
            };
            if spec.error.is_none() {
                tt.metric_name = Some(spec.metric.clone());
                tt.metric_type = spec.target_type.map(|k| k.as_str().to_string());
                tt.target = Some(spec.target);
                tt.activation_threshold = spec.activation_threshold;
            }
            if let Some((p, s)) =
                poll.and_then(|p| p.samples.iter().find(|s| s.index == index).map(|s| (p, s)))
            {
                tt.read_at = Some(time(p.at));
                tt.source = Some(match &s.source {
                    Source::Live => "live".into(),
                    Source::Replica(r) => format!("replica:{r}"),
                });
                match &s.result {
                    Ok((v, a)) => {
                        tt.value = Some(*v);
                        tt.active = Some(*a);
                    }
                    Err(e) => tt.error = Some(e.clone()),
                }
            }
            let key = spec.metric.to_ascii_lowercase();
            if let Some(r) = record.and_then(|r| r.hpa_read(&key)) {
                tt.hpa_read = Some(HpaReadTrace {
                    at: time(r.at),
                    value: r.result.as_ref().ok().copied(),
                    error: r.result.as_ref().err().cloned(),
                    served: served(&r.served),
                });
            }
            if let (Some(f), Some(h)) = (fb, i.health.get(&key)) {
                tt.health = Some(HealthTrace {
                    number_of_failures: h.number_of_failures.unwrap_or(0),
                    status: h.status.clone().unwrap_or_default(),
                    falling_back: fallback::falling_back(f, h),
                });
            }
            tt
        })
        .collect()
}

/// The samples of the last poll, as the scale loop folded them: each with its metric
/// name and its trigger's name (the formula names triggers).
fn samples_of(i: &Inputs, record: Option<&Record>) -> Vec<TriggerSample> {
    record
        .and_then(|r| r.poll.as_ref())
        .map(|p| {
            p.samples
                .iter()
                .map(|s| TriggerSample {
                    trigger_name: i.so.spec.triggers.get(s.index).and_then(|t| t.name.clone()),
                    metric: i
                        .specs
                        .get(s.index)
                        .map(|x| x.metric.clone())
                        .unwrap_or_default(),
                    result: s
                        .result
                        .clone()
                        .map(|(value, active)| Sample { value, active }),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn modifiers_trace(i: &Inputs, record: Option<&Record>) -> Option<ModifiersTrace> {
    let m = scaler_core::modifiers::of_scaled_object(i.so)?;
    let raw =
        i.so.spec
            .advanced
            .as_ref()
            .and_then(|a| a.scaling_modifiers.as_ref());
    let formula = raw.and_then(|m| m.formula.clone()).unwrap_or_default();
    let m = match m {
        Ok(m) => m,
        Err(e) => {
            return Some(ModifiersTrace {
                formula,
                error: Some(e.to_string()),
                ..ModifiersTrace::default()
            })
        }
    };
    let mut t = ModifiersTrace {
        formula,
        target: m.target,
        activation_target: m.activation_target,
        ..ModifiersTrace::default()
    };
    if record.and_then(|r| r.poll.as_ref()).is_none() {
        return Some(t);
    }
    let samples = samples_of(i, record);
    let samples: Vec<_> = samples
        .into_iter()
        .filter(|s| s.trigger_name.is_some())
        .collect();
    match composite_read(i.so, &m, &samples, &i.health) {
        CompositeRead::Value { value, active } => {
            t.value = Some(value);
            t.active = Some(active);
        }
        CompositeRead::Fallback => t.fallback = true,
        CompositeRead::Error(e) => t.error = Some(e),
    }
    Some(t)
}

fn fallback_trace(i: &Inputs, triggers: &[TriggerTrace]) -> Option<FallbackTrace> {
    let f = i.so.spec.fallback.as_ref()?;
    Some(FallbackTrace {
        failure_threshold: f.failure_threshold,
        replicas: f.replicas,
        behavior: f.behavior.clone().unwrap_or_else(|| "static".into()),
        valid: fallback::has_valid_fallback(&i.so.spec),
        active: fallback::has_valid_fallback(&i.so.spec)
            && triggers
                .iter()
                .any(|t| t.health.as_ref().is_some_and(|h| h.falling_back)),
    })
}

fn conditions_of(so: &ScaledObject) -> Vec<String> {
    so.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .flatten()
                .map(|c| match c.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => format!("{}={} ({r})", c.type_, c.status),
                    None => format!("{}={}", c.type_, c.status),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ScaledObject's rejection, when the reconcile refused it.
fn rejected(so: &ScaledObject) -> Option<String> {
    use scaler_core::conditions::{ConditionStatus, ConditionType, Reason};
    let status = so.status.as_ref()?;
    let ready = status.condition(ConditionType::Ready)?;
    (ready.status == ConditionStatus::False.as_str()
        && ready.has_reason(&[Reason::ScaledObjectCheckFailed]))
    .then(|| ready.message.clone().unwrap_or_default())
}

fn failing(triggers: &[TriggerTrace]) -> Option<&TriggerTrace> {
    triggers.iter().find(|t| t.error.is_some())
}

fn trigger_line(t: &TriggerTrace) -> String {
    format!(
        "trigger {} ({})",
        t.name.as_deref().unwrap_or(&t.index.to_string()),
        t.type_
    )
}

/// The values the HPA's arithmetic uses, by lowercase metric name: the fallback or
/// composite value this replica last served, else the last poll's.
fn values_for_hpa(
    triggers: &[TriggerTrace],
    modifiers: Option<&ModifiersTrace>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for t in triggers {
        let Some(metric) = &t.metric_name else {
            continue;
        };
        let served = t
            .hpa_read
            .as_ref()
            .filter(|r| r.served == "fallback")
            .and_then(|r| r.value);
        if let Some(v) = served.or(t.value) {
            out.insert(metric.to_ascii_lowercase(), v);
        }
    }
    if let Some(v) = modifiers.and_then(|m| m.value) {
        out.insert(
            scaler_core::modifiers::COMPOSITE_METRIC.to_ascii_lowercase(),
            v,
        );
    }
    out
}

/// Build the trace.
pub fn build(i: Inputs) -> ScalingTrace {
    let record = i.record.as_ref();
    let so = i.so;
    let triggers = trigger_traces(&i, record);
    let modifiers = modifiers_trace(&i, record);
    let fallback = fallback_trace(&i, &triggers);
    let pause = pause_trace(so, i.kind);
    let decision = record.and_then(|r| r.decision.as_ref());
    let activation = decision.map(|d| ActivationTrace {
        decided_at: time(d.at),
        rule: d.decision.rule.as_str().into(),
        reason: d.decision.reason().into(),
        active: d.input.is_active || d.input.force_activation,
        error: d.input.is_error,
        failure: d.failure.clone(),
        current: d.input.current,
        min: d.input.min,
        idle: d.input.idle,
        scale_to: d.decision.scale_to,
        status_last_active: d.status_last_active.map(time),
        last_active: d.input.last_active.map(time),
    });
    // Never active and no initial cooldown: there is no cooldown to show.
    let cooldown = decision
        .filter(|d| d.input.last_active.is_some() || d.input.initial_cooldown_seconds > 0)
        .map(|d| {
            let c = cooldown_state(&d.input);
            CooldownTrace {
                kind: c.rule.as_str().into(),
                holding: d.decision.cooling_down,
                since: time(c.since),
                seconds: c.seconds,
                ends_at: time(c.ends_at),
                remaining_seconds: c.remaining(i.now),
            }
        });
    let values = values_for_hpa(&triggers, modifiers.as_ref());
    let hpa = i.hpa.as_ref().map(|h| match h {
        Ok(view) => hpa_trace(view, &values, i.target.as_ref(), i.tolerance),
        Err(e) => HpaTrace {
            name: scaler_core::hpa::hpa_name(so),
            tolerance: i.tolerance,
            error: Some(e.clone()),
            ..HpaTrace::default()
        },
    });
    let replicas = match &i.target {
        Some(Ok(r)) => Some(r.spec),
        _ => decision.map(|d| d.input.current),
    };
    let job = record.and_then(|r| r.job.as_ref()).map(|j| JobTrace {
        at: time(j.at),
        active: j.demand.active,
        queue_length: j.demand.scale_to,
        max_scale: j.demand.max_scale,
        running: j.decision.map(|d| d.running),
        pending: j.decision.map(|d| d.pending),
        effective: j.decision.map(|d| d.effective),
        create: j.decision.map(|d| d.create),
        created: j.created,
    });
    let last_scale_write = record.and_then(|r| r.write.as_ref()).map(|w| {
        let (result, error) = match &w.outcome {
            WriteOutcome::Scaled => ("Scaled", None),
            WriteOutcome::Conflicts(n) => (
                "Conflicts",
                Some(format!("the target changed {n} times while it was written")),
            ),
            WriteOutcome::Failed(e) => ("Failed", Some(e.clone())),
        };
        WriteTrace {
            at: time(w.at),
            from: w.from,
            to: w.to,
            rule: w.rule.as_str().into(),
            result: result.into(),
            error,
        }
    });
    let last_poll = record.and_then(|r| r.poll.as_ref()).map(|p| p.at);
    let mut trace = ScalingTrace {
        kind: KIND.into(),
        api_version: GROUP_VERSION.into(),
        object: TracedObject {
            kind: i.kind.kind().into(),
            namespace: so.metadata.namespace.clone().unwrap_or_default(),
            name: so.metadata.name.clone().unwrap_or_default(),
            uid: so.metadata.uid.clone(),
            generation: so.metadata.generation,
        },
        generated_at: time(i.now),
        served_by: i.served_by.clone(),
        summary: Summary::default(),
        scale_loop: ScaleLoop {
            polling_interval_seconds: i.polling_interval,
            last_poll_at: last_poll.map(time),
            last_poll_age_seconds: last_poll.map(|t| (i.now - t).num_seconds().max(0)),
        },
        triggers,
        scaling_modifiers: modifiers,
        fallback,
        activation,
        cooldown,
        pause,
        hpa,
        last_scale_write,
        job,
        http: None,
        conditions: conditions_of(so),
        warnings: i.warnings.clone(),
    };
    trace.summary = summary(&trace, &i, decision.map(|d| d.decision.rule), replicas);
    trace
}

/// What holds the replicas, and why, in words.
fn summary(t: &ScalingTrace, i: &Inputs, rule: Option<Rule>, replicas: Option<i32>) -> Summary {
    let now_at = replicas.map_or_else(String::new, |n| {
        format!(" at {n} replica{}", if n == 1 { "" } else { "s" })
    });
    let say = |cause: &str, message: String| Summary {
        cause: cause.into(),
        message,
        replicas,
    };
    if let Some(e) = &t.pause.error {
        return say(
            "NotAccepted",
            format!("invalid pause annotation: {e}; nothing is scaled"),
        );
    }
    if t.pause.paused && i.kind == TraceKind::ScaledJob {
        return say(
            "Paused",
            format!(
                "paused by annotation {}: no Jobs are created; remove the annotation to resume",
                activation::PAUSED
            ),
        );
    }
    if t.pause.paused {
        return match t.pause.replicas {
            Some(n) => say(
                "PausedReplicas",
                format!(
                    "paused by annotation {}={n}: held at {n}, the HPA removed; \
                    remove the annotation to resume",
                    activation::PAUSED_REPLICAS
                ),
            ),
            None => say(
                "Paused",
                format!(
                    "paused by annotation {}: held{now_at}, the HPA removed; remove \
                    the annotation to resume",
                    activation::PAUSED
                ),
            ),
        };
    }
    if i.kind != TraceKind::ScaledJob {
        if let Some(why) = rejected(i.so) {
            return say(
                "NotAccepted",
                format!(
                    "the ScaledObject is not accepted (Ready False, \
                ScaledObjectCheckFailed): {why}"
                ),
            );
        }
    }
    if let Some(j) = &t.job {
        let running = j.running.map_or_else(String::new, |r| {
            format!(", {r} running ({} pending)", j.pending.unwrap_or(0))
        });
        return if j.active {
            say(
                "Active",
                format!(
                    "active: queue {}, room for {}{running}; {} Job(s) created by the last poll",
                    j.queue_length, j.max_scale, j.created
                ),
            )
        } else if let Some(f) = failing(&t.triggers) {
            say(
                "SourceDown",
                format!(
                    "{} failing: {}; no Jobs are created",
                    trigger_line(f),
                    f.error.as_deref().unwrap_or_default()
                ),
            )
        } else {
            say(
                "Inactive",
                format!("inactive: no trigger active{running}; no Jobs are created"),
            )
        };
    }
    if let Some(f) = &t.fallback {
        if f.active {
            let failing = t
                .triggers
                .iter()
                .find(|x| x.health.as_ref().is_some_and(|h| h.falling_back));
            let detail = failing.map_or_else(String::new, |x| {
                format!(
                    "{} has failed {} times (failureThreshold {}): {}; ",
                    trigger_line(x),
                    x.health.as_ref().map_or(0, |h| h.number_of_failures),
                    f.failure_threshold,
                    x.error.as_deref().unwrap_or("failing")
                )
            });
            return say(
                "Fallback",
                format!(
                    "{detail}the HPA is served the fallback ({} behavior, {} replicas){now_at}",
                    f.behavior, f.replicas
                ),
            );
        }
    }
    if i.served_by.mode == "metricsOnly" {
        let cause = if failing(&t.triggers).is_some() {
            "SourceDown"
        } else {
            "MetricsOnly"
        };
        return say(
            cause,
            format!(
                "metrics-only mode: another operator activates and owns the HPA; \
            eventscale serves the values{}",
                failing(&t.triggers).map_or_else(String::new, |f| format!(
                    " ({} failing: {})",
                    trigger_line(f),
                    f.error.as_deref().unwrap_or_default()
                ))
            ),
        );
    }
    let Some(rule) = rule else {
        return say(
            "NotPolledYet",
            format!(
                "no poll has been decided on here yet{now_at} (polling every {}s)",
                t.scale_loop.polling_interval_seconds
            ),
        );
    };
    let a = t.activation.as_ref();
    let hpa = t.hpa.as_ref().and_then(|h| {
        let m = h
            .metrics
            .iter()
            .filter_map(|m| m.formula.as_ref())
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        h.clamped.map(|c| {
            let desired = h
                .desired_replicas
                .map_or_else(String::new, |d| format!("; HPA desiredReplicas {d}"));
            format!(
                "the HPA: {m}; within [{}, {}]: {c}{desired}",
                h.min_replicas.unwrap_or(1),
                h.max_replicas.unwrap_or(0)
            )
        })
    });
    let actives = t
        .triggers
        .iter()
        .filter(|x| x.active == Some(true))
        .map(|x| {
            format!(
                "{} value {} over target {}",
                trigger_line(x),
                x.value.map_or("-".into(), num),
                x.target.map_or("-".into(), num)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    match rule {
        Rule::Activate | Rule::ActiveHpaScales | Rule::ActivePartialError => {
            let cause = if rule == Rule::ActivePartialError {
                "ActivePartialError"
            } else {
                "Active"
            };
            let who = if actives.is_empty() {
                if t.pause.force_activation {
                    "forced by annotation force-activation".to_string()
                } else {
                    "active".to_string()
                }
            } else {
                format!("active: {actives}")
            };
            let partial = if rule == Rule::ActivePartialError {
                failing(&t.triggers).map_or_else(String::new, |f| {
                    format!(
                        "; {} failing: {}",
                        trigger_line(f),
                        f.error.as_deref().unwrap_or_default()
                    )
                })
            } else {
                String::new()
            };
            let from_zero = match (rule, a.and_then(|a| a.scale_to)) {
                (Rule::Activate, Some(n)) => format!(
                    "; scaled from {} to {n} (minReplicaCount, at least 1), \
                    then the HPA takes over",
                    a.map_or(0, |a| a.current)
                ),
                _ => String::new(),
            };
            say(
                cause,
                format!(
                    "{who}{partial}{from_zero}{}",
                    hpa.map_or_else(String::new, |h| format!("; {h}"))
                ),
            )
        }
        Rule::FallbackHolds | Rule::TriggerError => {
            let f = failing(&t.triggers);
            let what = f.map_or_else(
                || {
                    a.and_then(|a| a.failure.clone())
                        .unwrap_or_else(|| "triggers failing".into())
                },
                |f| {
                    format!(
                        "{} failing: {}",
                        trigger_line(f),
                        f.error.as_deref().unwrap_or_default()
                    )
                },
            );
            let then = match (&t.fallback, f.and_then(|f| f.health.as_ref())) {
                (Some(fb), Some(h)) => format!(
                    "; the fallback ({} replicas) applies after {} failures, {} so \
                    far; the target is left{now_at}",
                    fb.replicas,
                    fb.failure_threshold + 1,
                    h.number_of_failures
                ),
                _ => format!("; no fallback: nothing is scaled, the target is left{now_at}"),
            };
            say("SourceDown", format!("{what}{then}"))
        }
        Rule::Cooldown | Rule::InitialCooldown => {
            let c = t.cooldown.as_ref();
            let (field, since) = if rule == Rule::Cooldown {
                ("cooldownPeriod", "since the last activity at")
            } else {
                ("initialCooldownPeriod", "since creation at")
            };
            let to = a.map_or(0, |a| a.idle.unwrap_or(0));
            say(
                rule.as_str(),
                format!(
                "inactive{now_at}: held by {field} {}s {since} {}; scales to {to} in {}s (at {})",
                c.map_or(0, |c| c.seconds),
                c.map_or_else(String::new, |c| c.since.clone()),
                c.map_or(0, |c| c.remaining_seconds),
                c.map_or_else(String::new, |c| c.ends_at.clone()),
            ),
            )
        }
        Rule::ScaleInPaused => say(
            "ScaleInPaused",
            format!(
                "inactive{now_at}, but annotation {} holds it from scaling in",
                activation::PAUSED_SCALE_IN
            ),
        ),
        Rule::ScaleOutPaused => say(
            "ScaleOutPaused",
            format!(
                "active ({actives}), but annotation {} holds it{now_at}",
                activation::PAUSED_SCALE_OUT
            ),
        ),
        Rule::BelowMin => say(
            "BelowMin",
            format!(
                "below minReplicaCount {}: scaled up to it",
                a.map_or(0, |a| a.min)
            ),
        ),
        Rule::Deactivate => say(
            "Inactive",
            format!(
                "inactive and cooled down: scaled to {}",
                a.and_then(|a| a.scale_to).unwrap_or(0)
            ),
        ),
        Rule::Inactive => {
            let under = t
                .triggers
                .iter()
                .filter_map(|x| match (x.value, x.activation_threshold) {
                    (Some(v), Some(th)) => Some(format!(
                        "{} value {} is not above its activation threshold {}",
                        trigger_line(x),
                        num(v),
                        num(th)
                    )),
                    (Some(v), None) => {
                        Some(format!("{} value {} is inactive", trigger_line(x), num(v)))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("; ");
            let rest = if under.is_empty() {
                String::new()
            } else {
                format!(": {under}")
            };
            // Above minReplicaCount (no idle count) the HPA holds it, down to min.
            match (a, hpa) {
                (Some(a), Some(h)) if a.idle.is_none() && a.current > a.min.max(1) => say(
                    "Inactive",
                    format!(
                        "inactive{now_at}, above minReplicaCount {}: the HPA decides{rest}; {h}",
                        a.min
                    ),
                ),
                _ => say(
                    "Inactive",
                    format!("inactive{now_at}, its resting count{rest}"),
                ),
            }
        }
        Rule::Paused | Rule::PausedReplicas => say(rule.as_str(), format!("paused{now_at}")),
    }
}

/// The trace for people.
pub fn render_text(t: &ScalingTrace) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let owner = if t.served_by.is_owner {
        "the owner".to_string()
    } else {
        match &t.served_by.owner {
            Some(owner) => format!("not the owner; the owner is {owner}"),
            None => "owner unknown".to_string(),
        }
    };
    let _ = writeln!(
        o,
        "{} {}/{}  (served by {}, {}, {} mode, at {})",
        t.object.kind,
        t.object.namespace,
        t.object.name,
        t.served_by.replica,
        owner,
        t.served_by.mode,
        t.generated_at
    );
    if let Some(h) = &t.http {
        let _ = writeln!(
            o,
            "HTTPScaledObject {} → ScaledObject {}",
            h.name, h.scaled_object
        );
    }
    let _ = writeln!(o, "Cause:    {}", t.summary.cause);
    let _ = writeln!(o, "          {}", t.summary.message);
    if let Some(n) = t.summary.replicas {
        let _ = writeln!(o, "Replicas: {n}");
    }
    let _ = writeln!(o);
    let poll = match (
        &t.scale_loop.last_poll_at,
        t.scale_loop.last_poll_age_seconds,
    ) {
        (Some(at), Some(age)) => format!("last poll {at}, {age}s ago"),
        _ => "not polled here yet".into(),
    };
    let _ = writeln!(
        o,
        "Triggers ({poll}; pollingInterval {}s):",
        t.scale_loop.polling_interval_seconds
    );
    for x in &t.triggers {
        let name = x
            .name
            .as_ref()
            .map_or_else(String::new, |n| format!(" {n:?}"));
        let metric = x.metric_name.as_deref().unwrap_or("-");
        let _ = write!(o, "  #{} {}{name} {metric}:", x.index, x.type_);
        match (x.value, &x.error) {
            (_, Some(e)) => {
                let _ = write!(o, " ERROR {e}");
            }
            (Some(v), None) => {
                let _ = write!(o, " value {}", num(v));
            }
            (None, None) => {
                let _ = write!(o, " no value yet");
            }
        }
        if let Some(target) = x.target {
            let _ = write!(
                o,
                ", target {} ({})",
                num(target),
                x.metric_type.as_deref().unwrap_or("-")
            );
        }
        if let Some(a) = x.activation_threshold {
            let _ = write!(o, ", activation > {}", num(a));
        }
        if let Some(a) = x.active {
            let _ = write!(o, ", {}", if a { "active" } else { "inactive" });
        }
        if let Some(s) = &x.source {
            let _ = write!(
                o,
                " [{s}{}]",
                if x.use_cached_metrics {
                    ", useCachedMetrics"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(o);
        if let Some(r) = &x.hpa_read {
            let v = r.value.map_or_else(
                || format!("error {}", r.error.as_deref().unwrap_or_default()),
                num,
            );
            let _ = writeln!(o, "      last HPA read here {}: {v} ({})", r.at, r.served);
        }
        if let Some(h) = &x.health {
            let _ = writeln!(
                o,
                "      failures {} ({}){}",
                h.number_of_failures,
                h.status,
                if h.falling_back { ", falling back" } else { "" }
            );
        }
    }
    if let Some(m) = &t.scaling_modifiers {
        let v = m.value.map_or_else(
            || {
                if m.fallback {
                    "fallback".into()
                } else {
                    m.error.clone().unwrap_or("-".into())
                }
            },
            num,
        );
        let _ = writeln!(
            o,
            "scalingModifiers: {} = {v}, target {}, activation > {}",
            m.formula,
            num(m.target),
            num(m.activation_target)
        );
    }
    match &t.fallback {
        Some(f) => {
            let _ = writeln!(
                o,
                "Fallback: {} replicas after {} failures ({}){}{}",
                f.replicas,
                f.failure_threshold,
                f.behavior,
                if f.valid {
                    ""
                } else {
                    ", NOT VALID for these triggers"
                },
                if f.active { ": ACTIVE" } else { "" }
            );
        }
        None => {
            let _ = writeln!(o, "Fallback: none");
        }
    }
    let p = &t.pause;
    let mut pause = Vec::new();
    if p.paused {
        pause.push(
            p.replicas
                .map_or("paused".to_string(), |n| format!("paused-replicas={n}")),
        );
    }
    if p.scale_in {
        pause.push("paused-scale-in".into());
    }
    if p.scale_out {
        pause.push("paused-scale-out".into());
    }
    if p.force_activation {
        pause.push("force-activation".into());
    }
    if let Some(e) = &p.error {
        pause.push(format!("invalid: {e}"));
    }
    let _ = writeln!(
        o,
        "Pause:    {}",
        if pause.is_empty() {
            "none".into()
        } else {
            pause.join(", ")
        }
    );
    if let Some(a) = &t.activation {
        let _ = writeln!(
            o,
            "Decision: rule {} ({}) at {}",
            a.rule, a.reason, a.decided_at
        );
        let _ = writeln!(
            o,
            "          active={} error={} current={} min={}{}{}",
            a.active,
            a.error,
            a.current,
            a.min,
            a.idle.map_or_else(String::new, |i| format!(" idle={i}")),
            a.scale_to
                .map_or_else(String::new, |n| format!(" → scale to {n}"))
        );
    }
    if let Some(c) = &t.cooldown {
        let _ = writeln!(
            o,
            "Cooldown: {} {}s, from {} to {}: {}",
            c.kind,
            c.seconds,
            c.since,
            c.ends_at,
            if c.holding {
                format!("holding, {}s left", c.remaining_seconds)
            } else {
                "not holding (it counts once the triggers are inactive)".into()
            }
        );
    }
    if let Some(h) = &t.hpa {
        if let Some(e) = &h.error {
            let _ = writeln!(o, "HPA {}: could not be read: {e}", h.name);
        } else if !h.exists {
            let _ = writeln!(o, "HPA {}: does not exist", h.name);
        } else {
            let _ = writeln!(
                o,
                "HPA {}: min {} max {}, current {}, desired {} (tolerance {})",
                h.name,
                h.min_replicas.unwrap_or(1),
                h.max_replicas.unwrap_or(0),
                h.current_replicas.map_or("-".into(), |n| n.to_string()),
                h.desired_replicas.map_or("-".into(), |n| n.to_string()),
                num(h.tolerance)
            );
            for m in &h.metrics {
                let _ = writeln!(
                    o,
                    "  {} ({} {}): {}{}",
                    m.name,
                    m.target_type,
                    num(m.target),
                    m.formula.clone().unwrap_or_else(|| "no value".into()),
                    m.hpa_current.map_or_else(String::new, |c| {
                        let per = if m.target_type == "AverageValue" {
                            " per pod"
                        } else {
                            ""
                        };
                        format!("; the HPA last saw {}{per}", num(c))
                    })
                );
            }
            if let (Some(p), Some(c)) = (h.proposal, h.clamped) {
                let _ = writeln!(o, "  proposal {p}, clamped to {c}");
            }
            for c in h
                .conditions
                .iter()
                .filter(|c| c.status != "True" || c.type_ == "ScalingLimited")
            {
                let _ = writeln!(
                    o,
                    "  {}={} {}: {}",
                    c.type_,
                    c.status,
                    c.reason.as_deref().unwrap_or_default(),
                    c.message.as_deref().unwrap_or_default()
                );
            }
            if let Some(n) = &h.note {
                let _ = writeln!(o, "  note: {n}");
            }
        }
    }
    if let Some(j) = &t.job {
        let _ = writeln!(
            o,
            "Jobs:     at {}: active={} queue {} maxScale {} running {} \
            pending {} create {} (created {})",
            j.at,
            j.active,
            j.queue_length,
            j.max_scale,
            j.running.unwrap_or(0),
            j.pending.unwrap_or(0),
            j.create.unwrap_or(0),
            j.created
        );
    }
    match &t.last_scale_write {
        Some(w) => {
            let _ = writeln!(
                o,
                "Last write: {} {} → {} ({}): {}{}",
                w.at,
                w.from,
                w.to,
                w.rule,
                w.result,
                w.error
                    .as_ref()
                    .map_or_else(String::new, |e| format!(": {e}"))
            );
        }
        None => {
            let _ = writeln!(o, "Last write: none by this replica");
        }
    }
    if !t.conditions.is_empty() {
        let _ = writeln!(o, "Conditions: {}", t.conditions.join(", "));
    }
    for w in &t.warnings {
        let _ = writeln!(o, "Warning: {w}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use scaler_core::activation::{decide, Input};
    use scaler_core::trace::{DecisionRecord, PollRecord, SampleRecord, WriteRecord};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn so(extra: &str) -> ScaledObject {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: worker, namespace: demo, uid: u1, generation: 2}}
spec:
  scaleTargetRef: {{name: worker}}
  cooldownPeriod: 300
{extra}
  triggers:
  - type: prometheus
    metadata: {{serverAddress: "http://127.0.0.1:1", query: q, threshold: "5", activationThreshold: "1"}}
"#
        ))
        .expect("ScaledObject")
    }

    fn specs() -> Vec<TriggerSpec> {
        vec![TriggerSpec {
            metric: "s0-prometheus".into(),
            target_type: Some(MetricTargetType::AverageValue),
            target: 5.0,
            activation_threshold: Some(1.0),
            error: None,
        }]
    }

    fn poll(result: Result<(f64, bool), String>) -> PollRecord {
        PollRecord {
            at: at(990),
            samples: vec![SampleRecord {
                index: 0,
                result,
                source: Source::Live,
            }],
        }
    }

    fn input(so: &ScaledObject, current: i32, active: bool, error: bool) -> Input {
        Input {
            pause: activation::pause_of(&so.metadata.annotations.clone().unwrap_or_default())
                .expect("pause"),
            paused_scale_in: false,
            paused_scale_out: false,
            force_activation: false,
            is_active: active,
            is_error: error,
            fallback: so.spec.fallback.as_ref().is_some_and(|f| f.replicas != 0),
            fallback_configured: so.spec.fallback.is_some(),
            current,
            min: so.spec.min_replica_count.unwrap_or(0),
            idle: so.spec.idle_replica_count,
            last_active: Some(at(800)),
            created: at(0),
            cooldown_seconds: 300,
            initial_cooldown_seconds: 0,
            now: at(1000),
        }
    }

    fn decided(i: Input) -> DecisionRecord {
        DecisionRecord {
            at: at(1000),
            decision: decide(&i),
            status_last_active: i.last_active,
            input: i,
            failure: None,
        }
    }

    fn hpa(min: i32, max: i32) -> HpaView {
        HpaView {
            name: "keda-hpa-worker".into(),
            object: Some(serde_json::json!({
                "spec": {"minReplicas": min, "maxReplicas": max, "metrics": [{"type": "External", "external": {
                    "metric": {"name": "s0-prometheus"},
                    "target": {"type": "AverageValue", "averageValue": "5"}}}]},
                "status": {"currentReplicas": 1, "desiredReplicas": 3,
                    "currentMetrics": [{"type": "External", "external": {"metric": {"name": "s0-prometheus"}, "current": {"averageValue": "12"}}}]},
            })),
        }
    }

    fn trace_of(
        so: &ScaledObject,
        record: Record,
        health: BTreeMap<String, HealthStatus>,
        current: i32,
    ) -> ScalingTrace {
        build(Inputs {
            so,
            kind: TraceKind::ScaledObject,
            record: Some(record),
            health,
            specs: specs(),
            hpa: Some(Ok(hpa(1, 10))),
            target: Some(Ok(Replicas {
                spec: current,
                status: current,
                ready: current,
            })),
            tolerance: 0.1,
            now: at(1000),
            served_by: ServedBy {
                replica: "r0".into(),
                owner: Some("r0".into()),
                is_owner: true,
                mode: "full".into(),
            },
            polling_interval: 30,
            warnings: Vec::new(),
        })
    }

    #[test]
    fn a_target_held_by_the_cooldown_says_how_long() {
        let so = so("");
        let record = Record {
            poll: Some(poll(Ok((0.0, false)))),
            decision: Some(Box::new(decided(input(&so, 1, false, false)))),
            ..Record::default()
        };
        let t = trace_of(&so, record, BTreeMap::new(), 1);
        assert_eq!(t.summary.cause, "Cooldown", "{:?}", t.summary);
        assert!(
            t.summary.message.contains("cooldownPeriod 300s"),
            "{}",
            t.summary.message
        );
        assert!(
            t.summary.message.contains("scales to 0 in 100s"),
            "{}",
            t.summary.message
        );
        let c = t.cooldown.as_ref().expect("cooldown");
        assert_eq!((c.holding, c.remaining_seconds), (true, 100));
        assert_eq!(
            t.activation.as_ref().map(|a| a.rule.as_str()),
            Some("Cooldown")
        );
        let text = render_text(&t);
        assert!(text.contains("Cause:    Cooldown"), "{text}");
        assert!(text.contains("holding, 100s left"), "{text}");
        assert!(text.contains("activation > 1"), "{text}");
    }

    #[test]
    fn a_paused_object_names_the_annotation() {
        let mut so = so("");
        so.metadata.annotations = Some(
            [(activation::PAUSED_REPLICAS.to_string(), "2".to_string())]
                .into_iter()
                .collect(),
        );
        let record = Record {
            decision: Some(Box::new(decided(input(&so, 2, false, false)))),
            ..Record::default()
        };
        let t = trace_of(&so, record, BTreeMap::new(), 2);
        assert_eq!(t.summary.cause, "PausedReplicas");
        assert!(t
            .summary
            .message
            .contains("autoscaling.keda.sh/paused-replicas=2"));
        assert_eq!(t.pause.replicas, Some(2));
        assert_eq!(
            t.activation.as_ref().map(|a| a.rule.as_str()),
            Some("PausedReplicas")
        );
    }

    #[test]
    fn a_source_past_the_fallback_threshold_is_in_fallback() {
        let so = so("  fallback: {failureThreshold: 3, replicas: 4}");
        let health: BTreeMap<String, HealthStatus> = [(
            "s0-prometheus".to_string(),
            HealthStatus {
                number_of_failures: Some(5),
                status: Some("Failing".into()),
            },
        )]
        .into_iter()
        .collect();
        // Past the threshold the poll counts as active: the HPA is served the fallback.
        let record = Record {
            poll: Some(poll(Err("connection refused".into()))),
            decision: Some(Box::new(decided(input(&so, 4, true, false)))),
            ..Record::default()
        };
        let t = trace_of(&so, record, health, 4);
        assert_eq!(t.summary.cause, "Fallback", "{:?}", t.summary);
        assert!(
            t.summary
                .message
                .contains("failed 5 times (failureThreshold 3)"),
            "{}",
            t.summary.message
        );
        assert!(t.summary.message.contains("connection refused"));
        assert!(t.fallback.as_ref().is_some_and(|f| f.active));
        assert!(t.triggers[0]
            .health
            .as_ref()
            .is_some_and(|h| h.falling_back));
    }

    #[test]
    fn a_failing_source_without_fallback_is_down() {
        let so = so("");
        let record = Record {
            poll: Some(poll(Err("connection refused".into()))),
            decision: Some(Box::new(decided(input(&so, 2, false, true)))),
            ..Record::default()
        };
        let t = trace_of(&so, record, BTreeMap::new(), 2);
        assert_eq!(t.summary.cause, "SourceDown", "{:?}", t.summary);
        assert!(
            t.summary.message.contains("no fallback"),
            "{}",
            t.summary.message
        );
        assert!(t.summary.message.contains("connection refused"));
        assert_eq!(
            t.activation.as_ref().map(|a| a.rule.as_str()),
            Some("TriggerError")
        );
        assert_eq!(t.triggers[0].error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn an_active_object_shows_the_hpa_arithmetic() {
        let so = so("");
        let record = Record {
            poll: Some(poll(Ok((12.0, true)))),
            decision: Some(Box::new(decided(input(&so, 1, true, false)))),
            write: Some(Box::new(WriteRecord {
                at: at(500),
                from: 0,
                to: 1,
                rule: Rule::Activate,
                outcome: WriteOutcome::Scaled,
            })),
            ..Record::default()
        };
        let t = trace_of(&so, record, BTreeMap::new(), 1);
        assert_eq!(t.summary.cause, "Active", "{:?}", t.summary);
        let h = t.hpa.as_ref().expect("hpa");
        assert_eq!(
            (h.proposal, h.clamped, h.desired_replicas),
            (Some(3), Some(3), Some(3))
        );
        assert_eq!(h.metrics[0].formula.as_deref(), Some("ceil(12 / 5) = 3"));
        assert_eq!(h.metrics[0].hpa_current, Some(12.0));
        assert!(
            t.summary.message.contains("ceil(12 / 5) = 3"),
            "{}",
            t.summary.message
        );
        assert!(t
            .summary
            .message
            .contains("trigger 0 (prometheus) value 12 over target 5"));
        assert_eq!(
            t.last_scale_write.as_ref().map(|w| (w.from, w.to)),
            Some((0, 1))
        );
        // The JSON shape reads back as it was written.
        let json = serde_json::to_string(&t).expect("json");
        let back: ScalingTrace = serde_json::from_str(&json).expect("back");
        assert_eq!(back, t);
        assert!(json.contains("\"rule\":\"ActiveHpaScales\""), "{json}");
    }

    #[test]
    fn an_inactive_object_says_which_threshold_it_is_under() {
        let so = so("");
        let mut i = input(&so, 0, false, false);
        i.last_active = None;
        let record = Record {
            poll: Some(poll(Ok((1.0, false)))),
            decision: Some(Box::new(decided(i))),
            ..Record::default()
        };
        let t = trace_of(&so, record, BTreeMap::new(), 0);
        assert_eq!(t.summary.cause, "Inactive");
        assert!(
            t.summary
                .message
                .contains("value 1 is not above its activation threshold 1"),
            "{}",
            t.summary.message
        );
        assert!(
            t.cooldown.is_none(),
            "never active, no initial cooldown: nothing to show"
        );
        assert!(t
            .hpa
            .as_ref()
            .and_then(|h| h.note.as_deref())
            .is_some_and(|n| n.contains("at 0")));
    }

    /// Inactive above minReplicaCount: the HPA holds it, not eventscale.
    #[test]
    fn inactive_above_min_is_the_hpas() {
        let so = so("  minReplicaCount: 2");
        let record = Record {
            poll: Some(poll(Ok((0.0, false)))),
            decision: Some(Box::new(decided(input(&so, 4, false, false)))),
            ..Record::default()
        };
        let t = trace_of(&so, record, BTreeMap::new(), 4);
        assert_eq!(
            (
                t.summary.cause.as_str(),
                t.activation.as_ref().map(|a| a.rule.as_str())
            ),
            ("Inactive", Some("Inactive"))
        );
        assert!(
            t.summary
                .message
                .contains("above minReplicaCount 2: the HPA decides"),
            "{}",
            t.summary.message
        );
        assert!(
            t.summary.message.contains("the HPA: ceil(0 / 5) = 0"),
            "{}",
            t.summary.message
        );
    }

    /// A ScaledJob knows `paused` only: `paused-replicas` is no pause for it.
    #[test]
    fn a_scaled_job_is_paused_by_paused_only() {
        let mut so = so("");
        so.metadata.annotations = Some(
            [(activation::PAUSED_REPLICAS.to_string(), "2".to_string())]
                .into_iter()
                .collect(),
        );
        let mut i = inputs_of(&so);
        i.kind = TraceKind::ScaledJob;
        assert!(!build(i).pause.paused);
        so.metadata.annotations = Some(
            [(activation::PAUSED.to_string(), "true".to_string())]
                .into_iter()
                .collect(),
        );
        let mut i = inputs_of(&so);
        i.kind = TraceKind::ScaledJob;
        let t = build(i);
        assert_eq!(t.summary.cause, "Paused");
        assert!(
            t.summary.message.contains("no Jobs are created"),
            "{}",
            t.summary.message
        );
    }

    fn inputs_of(so: &ScaledObject) -> Inputs<'_> {
        Inputs {
            so,
            kind: TraceKind::ScaledObject,
            record: None,
            health: BTreeMap::new(),
            specs: specs(),
            hpa: None,
            target: None,
            tolerance: 0.1,
            now: at(1000),
            served_by: ServedBy::default(),
            polling_interval: 30,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_composite_is_the_formula_over_the_last_poll() {
        let so: ScaledObject = serde_yaml::from_str(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: worker, namespace: demo}
spec:
  scaleTargetRef: {name: worker}
  advanced:
    scalingModifiers: {formula: "a + b", target: "4", activationTarget: "10"}
  triggers:
  - {type: prometheus, name: a, metadata: {serverAddress: "http://127.0.0.1:1", query: q, threshold: "5"}}
  - {type: prometheus, name: b, metadata: {serverAddress: "http://127.0.0.1:1", query: q, threshold: "5"}}
"#,
        )
        .expect("ScaledObject");
        let mut specs = specs();
        specs.push(TriggerSpec {
            metric: "s1-prometheus".into(),
            ..specs[0].clone()
        });
        let sample = |index, v| SampleRecord {
            index,
            result: Ok((v, false)),
            source: Source::Live,
        };
        let t = build(Inputs {
            so: &so,
            kind: TraceKind::ScaledObject,
            record: Some(Record {
                poll: Some(PollRecord {
                    at: at(990),
                    samples: vec![sample(0, 3.0), sample(1, 4.0)],
                }),
                ..Record::default()
            }),
            health: BTreeMap::new(),
            specs,
            hpa: None,
            target: None,
            tolerance: 0.1,
            now: at(1000),
            served_by: ServedBy::default(),
            polling_interval: 30,
            warnings: Vec::new(),
        });
        let m = t.scaling_modifiers.expect("modifiers");
        assert_eq!((m.value, m.active, m.target), (Some(7.0), Some(false), 4.0));
        assert_eq!(m.formula, "a + b");
        assert_eq!(t.triggers[1].metric_name.as_deref(), Some("s1-prometheus"));
    }

    #[test]
    fn no_poll_yet_and_paths() {
        let so = so("");
        let t = trace_of(&so, Record::default(), BTreeMap::new(), 0);
        assert_eq!(t.summary.cause, "NotPolledYet");
        assert_eq!(
            parse_path(
                "/apis/explain.eventscale.sh/v1alpha1/namespaces/demo/scaledobjects/w%2Dx/trace"
            ),
            Some((TraceKind::ScaledObject, "demo".into(), "w-x".into()))
        );
        assert_eq!(
            parse_path("/apis/explain.eventscale.sh/v1alpha1/namespaces/demo/scaledjobs/j/trace"),
            Some((TraceKind::ScaledJob, "demo".into(), "j".into()))
        );
        for bad in [
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/demo/pods/p/trace",
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/demo/scaledobjects/w",
            "/apis/explain.eventscale.sh/v1alpha1/namespaces//scaledobjects/w/trace",
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/demo/scaledobjects/w/trace/x",
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/demo/scaledobjects/%zz/trace",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
        for (s, k) in [
            ("so", None),
            ("ScaledObject", Some(TraceKind::ScaledObject)),
            ("scaledjobs.keda.sh", Some(TraceKind::ScaledJob)),
            ("httpscaledobject", Some(TraceKind::HttpScaledObject)),
        ] {
            assert_eq!(TraceKind::parse(s), k, "{s}");
        }
        assert_eq!(
            TraceKind::HttpScaledObject.path("a", "b"),
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/a/httpscaledobjects/b/trace"
        );
    }
}
