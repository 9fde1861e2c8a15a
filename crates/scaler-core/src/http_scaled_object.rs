//! `HTTPScaledObject` (`http.keda.sh/v1alpha1`): KEDA's HTTP add-on's object, in both the
//! shape of the add-on's early releases (`host`, `scaleTargetRef.deployment`,
//! `targetPendingRequests`) and its current one (`hosts`, `pathPrefixes`, `headers`,
//! `scaleTargetRef {name, kind, apiVersion}`, `scalingMetric`), so either YAML applies
//! unchanged.
//!
//! Parse, don't validate: [`HttpScaledObject::route`] turns a spec into an [`HttpRoute`]
//! once, with the add-on's defaults, or into an error naming the field. The interceptor
//! routes and counts by the route; the controller derives the ScaledObject from it
//! ([`scaled_object_for`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::go_duration;
use crate::scaled_object::{
    AdvancedConfig, Condition, ScaleTarget, ScaleTriggers, ScaledObject, ScaledObjectSpec,
};

/// The annotation that keeps routing but leaves the ScaledObject to the user.
pub const SKIP_SCALED_OBJECT_ANNOTATION: &str =
    "httpscaledobject.keda.sh/skip-scaledobject-creation";
/// The ScaledObject trigger's metadata key naming the HTTPScaledObject.
pub const HTTP_SCALED_OBJECT_KEY: &str = "httpScaledObject";
/// The add-on's default `replicas.max`.
pub const DEFAULT_MAX_REPLICAS: i32 = 100;
/// The add-on's default `scaledownPeriod`, seconds.
pub const DEFAULT_SCALEDOWN_PERIOD: i32 = 300;
/// The add-on's default target, for `targetPendingRequests` and both scaling metrics.
pub const DEFAULT_TARGET_VALUE: i32 = 100;
/// The add-on's default `coldStartTimeoutFailoverRef.timeoutSeconds`.
pub const DEFAULT_FAILOVER_TIMEOUT_SECONDS: i32 = 30;
/// The add-on's default `scalingMetric.requestRate.window`.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60);
/// The add-on's default `scalingMetric.requestRate.granularity`.
pub const DEFAULT_RATE_GRANULARITY: Duration = Duration::from_secs(1);
/// The ScaledObject's polling interval, as the add-on's operator sets it.
pub const SCALED_OBJECT_POLLING_INTERVAL: i32 = 15;
/// How long a request waits for a ready endpoint unless its route says otherwise (the
/// add-on's `KEDA_CONDITION_WAIT_TIMEOUT`).
pub const DEFAULT_CONDITION_WAIT: Duration = Duration::from_secs(20);
/// How long a workload may take to send response headers unless its route says otherwise
/// (the add-on's `KEDA_HTTP_RESPONSE_HEADER_TIMEOUT`).
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(300);

/// The desired state of an HTTPScaledObject.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "http.keda.sh",
    version = "v1alpha1",
    kind = "HTTPScaledObject",
    root = "HttpScaledObject",
    plural = "httpscaledobjects",
    shortname = "httpso",
    namespaced,
    status = "HttpScaledObjectStatus",
    printcolumn = r#"{"name":"TargetWorkload","type":"string","jsonPath":".status.targetWorkload"}"#,
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".status.targetService"}"#,
    printcolumn = r#"{"name":"MinReplicas","type":"integer","jsonPath":".spec.replicas.min"}"#,
    printcolumn = r#"{"name":"MaxReplicas","type":"integer","jsonPath":".spec.replicas.max"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schemars::transform::RecursiveTransform(crate::crd_schema::bound_int32))]
pub struct HttpScaledObjectSpec {
    /// The host to route (the add-on's early releases); `hosts` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Hosts to route: exact, `*.example.com` wildcards, or `*` (or none) for every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Path prefixes to route (default `/`); the longest matching prefix wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefixes: Option<Vec<String>>,
    /// Headers a request must carry (all of them); without a value, only present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatchSpec>>,
    /// The workload to scale and the Service that fronts it.
    pub scale_target_ref: HttpScaleTargetRef,
    /// Replica bounds (default 0 and 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaBounds>,
    /// Pending requests per replica (the add-on's early releases); `scalingMetric` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pending_requests: Option<i32>,
    /// Seconds without traffic before scaling to zero (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledown_period: Option<i32>,
    /// Seconds after creation before the first scale to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<i32>,
    /// What to scale on: concurrency or request rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_metric: Option<ScalingMetricSpec>,
    /// Where to send requests that waited too long for the workload to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_timeout_failover_ref: Option<FailoverRef>,
    /// Timeouts of this route, overriding the interceptor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpTimeouts>,
}

/// `spec.headers[]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HeaderMatchSpec {
    /// Header name (case-insensitive).
    pub name: String,
    /// Value the header must have; any value when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `spec.scaleTargetRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpScaleTargetRef {
    /// The Deployment to scale (the add-on's early releases); `name` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Name of the workload to scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kind of the workload (default `Deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// apiVersion of the workload (default `apps/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The Service in front of the workload.
    pub service: String,
    /// The Service's port (exactly one of `port` and `portName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The Service's port by name (exactly one of `port` and `portName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
}

/// `spec.replicas`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReplicaBounds {
    /// Lowest replica count (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    /// Highest replica count (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

/// `spec.scalingMetric`: one of the two.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingMetricSpec {
    /// Requests in flight per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// Requests per second per replica, averaged over a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RequestRateSpec>,
}

/// `spec.scalingMetric.concurrency`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencySpec {
    /// Target requests in flight per replica (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_value: Option<i32>,
}

/// `spec.scalingMetric.requestRate`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRateSpec {
    /// Target requests per second per replica (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_value: Option<i32>,
    /// The window the rate is averaged over, a Go duration (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The width of the window's buckets, a Go duration (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<String>,
}

/// `spec.coldStartTimeoutFailoverRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRef {
    /// The failover Service, in the HTTPScaledObject's namespace.
    pub service: String,
    /// Its port (exactly one of `port` and `portName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Its port by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Seconds to wait for the workload before failing over (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// `spec.timeouts`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTimeouts {
    /// How long a request waits for a ready endpoint, a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_wait: Option<String>,
    /// How long the workload may take to send response headers, a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<String>,
}

/// The observed state of an HTTPScaledObject.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpScaledObjectStatus {
    /// `Ready`, with reason `Reconciled` or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// `<apiVersion>/<kind>/<name>` of the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_workload: Option<String>,
    /// `<service>:<port>` requests go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_service: Option<String>,
}

/// A Service port, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// `port`.
    Number(u16),
    /// `portName`.
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// A Service in the route's namespace and one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// The port.
    pub port: PortRef,
}

/// What a route scales on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalingMetric {
    /// Requests in flight (held ones included), target per replica.
    Concurrency {
        /// Target per replica.
        target: f64,
    },
    /// Requests per second over `window`, counted in buckets of `granularity`.
    RequestRate {
        /// Target per replica.
        target: f64,
        /// The window.
        window: Duration,
        /// The bucket width.
        granularity: Duration,
    },
}

impl ScalingMetric {
    /// The target per replica.
    pub fn target(&self) -> f64 {
        match *self {
            Self::Concurrency { target } | Self::RequestRate { target, .. } => target,
        }
    }
}

/// A header a request must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lower-case name.
    pub name: String,
    /// Exact value, or any.
    pub value: Option<String>,
}

/// Where held requests go when the workload did not start in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    /// The failover Service.
    pub service: ServiceRef,
    /// How long a request waits before it fails over.
    pub timeout: Duration,
}

/// One HTTPScaledObject, parsed: what the interceptor routes and the controller scales.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    /// `namespace/name`, the key of counts and of `/queue`.
    pub key: String,
    /// Namespace of the HTTPScaledObject.
    pub namespace: String,
    /// Name of the HTTPScaledObject.
    pub name: String,
    /// Lower-case hosts without ports; empty for every host.
    pub hosts: Vec<String>,
    /// Path prefixes, each starting with `/`.
    pub path_prefixes: Vec<String>,
    /// Headers a request must carry.
    pub headers: Vec<HeaderMatch>,
    /// The workload to scale.
    pub target: ScaleTarget,
    /// The Service requests go to.
    pub service: ServiceRef,
    /// Replica bounds.
    pub min_replicas: i32,
    /// Replica bounds.
    pub max_replicas: i32,
    /// Seconds without traffic before scaling to zero.
    pub scaledown_period: i32,
    /// Seconds after creation before the first scale to zero.
    pub initial_cooldown_period: Option<i32>,
    /// What to scale on.
    pub metric: ScalingMetric,
    /// The failover, if any.
    pub failover: Option<Failover>,
    /// How long a request waits for a ready endpoint, when the route sets it.
    pub condition_wait: Option<Duration>,
    /// How long the workload may take to answer with headers, when the route sets it.
    pub response_header: Option<Duration>,
}

/// A field of an HTTPScaledObject that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTPScaledObject {object}: {field}: {message}")]
pub struct InvalidHttpScaledObject {
    /// `namespace/name`.
    pub object: String,
    /// The field's path, such as `spec.scaleTargetRef.port`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl HttpRoute {
    /// The metric the interceptors serve for this route: `http-<namespace>/<name>`, with
    /// every character but `-`, `.`, digits and ASCII letters written `_XXXX` (hex), as the
    /// add-on names it.
    pub fn metric_name(&self) -> String {
        let mut out = String::with_capacity(self.key.len() + 16);
        for c in format!("http-{}", self.key).chars() {
            if c == '-' || c == '.' || c.is_ascii_alphanumeric() {
                out.push(c);
            } else {
                out.push_str(&format!("_{:04X}", u32::from(c)));
            }
        }
        out
    }

    /// How long a request waits for a ready endpoint: the failover's timeout, else the
    /// route's `timeouts.conditionWait`, else `default`.
    pub fn cold_start_timeout(&self, default: Duration) -> Duration {
        self.failover
            .as_ref()
            .map(|f| f.timeout)
            .or(self.condition_wait)
            .unwrap_or(default)
    }

    /// `<apiVersion>/<kind>/<name>` of the workload, for the status.
    pub fn target_workload(&self) -> String {
        format!(
            "{}/{}/{}",
            self.target.api_version_or_default(),
            self.target.kind_or_default(),
            self.target.name
        )
    }

    /// `<service>:<port>`, for the status.
    pub fn target_service(&self) -> String {
        format!("{}:{}", self.service.name, self.service.port)
    }
}

impl HttpScaledObject {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    /// Whether the user owns the ScaledObject (the skip-creation annotation is `true`).
    pub fn skips_scaled_object(&self) -> bool {
        self.annotations()
            .get(SKIP_SCALED_OBJECT_ANNOTATION)
            .is_some_and(|v| v == "true")
    }

    /// The spec, parsed, with the add-on's defaults; or the first field that is wrong.
    pub fn route(&self) -> Result<HttpRoute, InvalidHttpScaledObject> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let key = format!("{namespace}/{name}");
        let invalid = |field: &str, message: String| InvalidHttpScaledObject {
            object: key.clone(),
            field: field.into(),
            message,
        };
        let spec = &self.spec;

        let hosts = parse_hosts(spec).map_err(|(f, m)| invalid(f, m))?;
        let path_prefixes = parse_path_prefixes(spec).map_err(|(f, m)| invalid(f, m))?;
        let headers = parse_headers(spec).map_err(|(f, m)| invalid(f, m))?;

        let r = &spec.scale_target_ref;
        let target_name = match (non_empty(&r.name), non_empty(&r.deployment)) {
            (Some(n), _) | (None, Some(n)) => n.to_string(),
            (None, None) => {
                return Err(invalid(
                    "spec.scaleTargetRef.name",
                    "the workload's name is required (or the older `deployment`)".into(),
                ))
            }
        };
        let target = ScaleTarget {
            name: target_name,
            api_version: non_empty(&r.api_version).map(str::to_string),
            kind: non_empty(&r.kind).map(str::to_string),
            env_source_container_name: None,
        };
        if r.service.trim().is_empty() {
            return Err(invalid(
                "spec.scaleTargetRef.service",
                "the Service in front of the workload is required".into(),
            ));
        }
        let port = port_ref(r.port, &r.port_name, "spec.scaleTargetRef")
            .map_err(|(f, m)| invalid(&f, m))?;
        let service = ServiceRef {
            namespace: namespace.clone(),
            name: r.service.clone(),
            port,
        };

        let bounds = spec.replicas.clone().unwrap_or_default();
        let min_replicas = bounds.min.unwrap_or(0);
        let max_replicas = bounds.max.unwrap_or(DEFAULT_MAX_REPLICAS);
        if min_replicas < 0 {
            return Err(invalid(
                "spec.replicas.min",
                format!("{min_replicas} is below 0"),
            ));
        }
        if max_replicas < 1 || max_replicas < min_replicas {
            return Err(invalid(
                "spec.replicas.max",
                format!("{max_replicas} must be at least 1 and at least min ({min_replicas})"),
            ));
        }
        let scaledown_period = spec.scaledown_period.unwrap_or(DEFAULT_SCALEDOWN_PERIOD);
        if scaledown_period < 0 {
            return Err(invalid(
                "spec.scaledownPeriod",
                format!("{scaledown_period} is below 0"),
            ));
        }
        if let Some(p) = spec.initial_cooldown_period.filter(|p| *p < 0) {
            return Err(invalid(
                "spec.initialCooldownPeriod",
                format!("{p} is below 0"),
            ));
        }
        let metric = parse_metric(spec).map_err(|(f, m)| invalid(f, m))?;
        let failover = match &spec.cold_start_timeout_failover_ref {
            None => None,
            Some(f) => {
                if f.service.trim().is_empty() {
                    return Err(invalid(
                        "spec.coldStartTimeoutFailoverRef.service",
                        "the failover Service is required".into(),
                    ));
                }
                let port = port_ref(f.port, &f.port_name, "spec.coldStartTimeoutFailoverRef")
                    .map_err(|(field, m)| invalid(&field, m))?;
                let secs = f
                    .timeout_seconds
                    .unwrap_or(DEFAULT_FAILOVER_TIMEOUT_SECONDS);
                if secs < 1 {
                    return Err(invalid(
                        "spec.coldStartTimeoutFailoverRef.timeoutSeconds",
                        format!("{secs} must be at least 1"),
                    ));
                }
                Some(Failover {
                    service: ServiceRef {
                        namespace: namespace.clone(),
                        name: f.service.clone(),
                        port,
                    },
                    timeout: Duration::from_secs(secs as u64),
                })
            }
        };
        let timeouts = spec.timeouts.clone().unwrap_or_default();
        let condition_wait = duration(&timeouts.condition_wait, "spec.timeouts.conditionWait")
            .map_err(|(f, m)| invalid(f, m))?;
        let response_header = duration(&timeouts.response_header, "spec.timeouts.responseHeader")
            .map_err(|(f, m)| invalid(f, m))?;

        Ok(HttpRoute {
            key,
            namespace,
            name,
            hosts,
            path_prefixes,
            headers,
            target,
            service,
            min_replicas,
            max_replicas,
            scaledown_period,
            initial_cooldown_period: spec.initial_cooldown_period,
            metric,
            failover,
            condition_wait,
            response_header,
        })
    }
}

type FieldError = (&'static str, String);

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_hosts(spec: &HttpScaledObjectSpec) -> Result<Vec<String>, FieldError> {
    let (field, raw): (&'static str, Vec<String>) = match (&spec.hosts, &spec.host) {
        (Some(h), _) if !h.is_empty() => ("spec.hosts", h.clone()),
        (_, Some(h)) if !h.trim().is_empty() => ("spec.host", vec![h.clone()]),
        _ => return Ok(Vec::new()),
    };
    let mut hosts = Vec::with_capacity(raw.len());
    for h in raw {
        let h = h.trim().to_ascii_lowercase();
        // `*` (or an empty entry) routes every host: the catch-all.
        if h.is_empty() || h == "*" {
            return Ok(Vec::new());
        }
        let bare = h.strip_prefix("*.").unwrap_or(&h);
        let valid = !bare.is_empty()
            && !bare.contains('*')
            && bare.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err((
                field,
                format!("{h:?} is not a host name, `*.` wildcard or `*`"),
            ));
        }
        hosts.push(h);
    }
    Ok(hosts)
}

fn parse_path_prefixes(spec: &HttpScaledObjectSpec) -> Result<Vec<String>, FieldError> {
    let raw = spec.path_prefixes.clone().unwrap_or_default();
    if raw.is_empty() {
        return Ok(vec!["/".into()]);
    }
    raw.into_iter()
        .map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return Ok("/".to_string());
            }
            if p.contains(['?', '#', ' ']) {
                return Err((
                    "spec.pathPrefixes",
                    format!("{p:?} is not a path (no query, fragment or space)"),
                ));
            }
            // `/api/` and `api` are the prefix `/api`: matching is by whole segments.
            let p = format!("/{}", p.trim_matches('/'));
            Ok(p)
        })
        .collect()
}

fn parse_headers(spec: &HttpScaledObjectSpec) -> Result<Vec<HeaderMatch>, FieldError> {
    spec.headers
        .iter()
        .flatten()
        .map(|h| {
            let name = h.name.trim().to_ascii_lowercase();
            if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(("spec.headers", format!("{:?} is not a header name", h.name)));
            }
            Ok(HeaderMatch {
                name,
                value: h.value.clone(),
            })
        })
        .collect()
}

fn port_ref(
    port: Option<i32>,
    port_name: &Option<String>,
    parent: &str,
) -> Result<PortRef, (String, String)> {
    match (port, non_empty(port_name)) {
        (Some(_), Some(_)) | (None, None) => Err((
            format!("{parent}.port"),
            "must define either the 'portName' or the 'port'".into(),
        )),
        (Some(p), None) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .map(PortRef::Number)
            .ok_or_else(|| {
                (
                    format!("{parent}.port"),
                    format!("{p} is not a port (1-65535)"),
                )
            }),
        (None, Some(n)) => Ok(PortRef::Name(n.to_string())),
    }
}

fn parse_metric(spec: &HttpScaledObjectSpec) -> Result<ScalingMetric, FieldError> {
    let positive = |v: Option<i32>, field: &'static str| -> Result<f64, FieldError> {
        match v.unwrap_or(DEFAULT_TARGET_VALUE) {
            v if v > 0 => Ok(f64::from(v)),
            v => Err((field, format!("{v} must be above 0"))),
        }
    };
    let m = spec.scaling_metric.clone().unwrap_or_default();
    match (&m.concurrency, &m.request_rate) {
        (Some(_), Some(_)) => Err((
            "spec.scalingMetric",
            ".spec.scalingMetric.concurrency and .spec.scalingMetric.rate are mutually exclusive"
                .into(),
        )),
        (Some(c), None) => Ok(ScalingMetric::Concurrency {
            target: positive(c.target_value, "spec.scalingMetric.concurrency.targetValue")?,
        }),
        (None, Some(r)) => {
            let window = duration(&r.window, "spec.scalingMetric.requestRate.window")?
                .unwrap_or(DEFAULT_RATE_WINDOW);
            let granularity =
                duration(&r.granularity, "spec.scalingMetric.requestRate.granularity")?
                    .unwrap_or(DEFAULT_RATE_GRANULARITY);
            if granularity.is_zero() || granularity > window {
                return Err((
                    "spec.scalingMetric.requestRate.granularity",
                    format!("{granularity:?} must be above 0 and at most the window ({window:?})"),
                ));
            }
            if window.as_nanos() / granularity.as_nanos() > 10_000 {
                return Err((
                    "spec.scalingMetric.requestRate.window",
                    format!("{window:?} holds more than 10000 buckets of {granularity:?}"),
                ));
            }
            Ok(ScalingMetric::RequestRate {
                target: positive(r.target_value, "spec.scalingMetric.requestRate.targetValue")?,
                window,
                granularity,
            })
        }
        // The early releases' `targetPendingRequests` is concurrency by another name.
        (None, None) => Ok(ScalingMetric::Concurrency {
            target: positive(spec.target_pending_requests, "spec.targetPendingRequests")?,
        }),
    }
}

fn duration(v: &Option<String>, field: &'static str) -> Result<Option<Duration>, FieldError> {
    match non_empty(v) {
        None => Ok(None),
        Some(s) => go_duration::parse(s)
            .ok()
            .filter(|nanos| *nanos > 0)
            .map(|nanos| Some(Duration::from_nanos(nanos.unsigned_abs())))
            .ok_or_else(|| {
                (
                    field,
                    format!("{s:?} is not a positive duration such as 30s or 1m"),
                )
            }),
    }
}

/// The ScaledObject eventscale keeps for an HTTPScaledObject: same name and namespace, owned
/// by it, with one `external-push` trigger that reads the interceptors at `scaler_address`.
pub fn scaled_object_for(
    httpso: &HttpScaledObject,
    route: &HttpRoute,
    scaler_address: &str,
) -> ScaledObject {
    let owner = OwnerReference {
        api_version: HttpScaledObject::api_version(&()).into_owned(),
        kind: HttpScaledObject::kind(&()).into_owned(),
        name: route.name.clone(),
        uid: httpso.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    // The add-on copies labels and annotations unchanged; so do we.
    let labels = httpso.labels().clone();
    let annotations = httpso.annotations().clone();
    let bounds = httpso.spec.replicas.clone().unwrap_or_default();
    let metadata = BTreeMap::from([
        ("scalerAddress".to_string(), scaler_address.to_string()),
        (HTTP_SCALED_OBJECT_KEY.to_string(), route.name.clone()),
    ]);
    ScaledObject {
        metadata: ObjectMeta {
            name: Some(route.name.clone()),
            namespace: Some(route.namespace.clone()),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: ScaledObjectSpec {
            scale_target_ref: route.target.clone(),
            polling_interval: Some(SCALED_OBJECT_POLLING_INTERVAL),
            initial_cooldown_period: route.initial_cooldown_period,
            // Unset stays unset, so that KEDA's defaults (the same as the add-on's) apply.
            cooldown_period: httpso.spec.scaledown_period,
            idle_replica_count: None,
            min_replica_count: bounds.min,
            max_replica_count: bounds.max,
            advanced: Some(Box::new(AdvancedConfig {
                restore_to_original_replica_count: Some(true),
                ..AdvancedConfig::default()
            })),
            triggers: vec![ScaleTriggers {
                type_: "external-push".into(),
                metadata: metadata.into(),
                ..ScaleTriggers::default()
            }],
            fallback: None,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(spec: serde_json::Value) -> HttpScaledObject {
        serde_json::from_value(json!({
            "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": "go-helloworld", "namespace": "default", "uid": "u-1",
                         "labels": {"team": "a"}, "annotations": {"note": "n"}},
            "spec": spec}))
        .expect("an HTTPScaledObject")
    }

    /// The walkthrough's object, unchanged.
    fn walkthrough() -> serde_json::Value {
        json!({"host": "helloworld.jourdain.io", "targetPendingRequests": 10,
               "scaledownPeriod": 300,
               "scaleTargetRef": {"deployment": "go-helloworld", "service": "go-helloworld",
                                  "port": 8080},
               "replicas": {"min": 0, "max": 10}})
    }

    #[test]
    fn the_walkthroughs_object_routes_its_host_to_its_deployment() {
        let r = object(walkthrough()).route().expect("valid");
        assert_eq!(r.key, "default/go-helloworld");
        assert_eq!(r.hosts, ["helloworld.jourdain.io"]);
        assert_eq!(r.path_prefixes, ["/"]);
        assert_eq!(r.target.name, "go-helloworld");
        assert_eq!(r.target_workload(), "apps/v1/Deployment/go-helloworld");
        assert_eq!(r.service.port, PortRef::Number(8080));
        assert_eq!(r.target_service(), "go-helloworld:8080");
        assert_eq!(
            (r.min_replicas, r.max_replicas, r.scaledown_period),
            (0, 10, 300)
        );
        assert_eq!(r.metric, ScalingMetric::Concurrency { target: 10.0 });
        assert_eq!(
            r.cold_start_timeout(DEFAULT_CONDITION_WAIT),
            DEFAULT_CONDITION_WAIT
        );
        assert_eq!(r.metric_name(), "http-default_002Fgo-helloworld");
    }

    #[test]
    fn the_current_shape_with_every_field() {
        let r = object(json!({
            "hosts": ["Example.com", "*.example.org"], "pathPrefixes": ["/api/", "web"],
            "headers": [{"name": "X-Canary", "value": "yes"}, {"name": "x-team"}],
            "scaleTargetRef": {"name": "app", "kind": "StatefulSet", "apiVersion": "apps/v1",
                               "service": "svc", "portName": "http"},
            "replicas": {"min": 1, "max": 5}, "scaledownPeriod": 60,
            "initialCooldownPeriod": 30,
            "scalingMetric": {"requestRate": {"targetValue": 20, "window": "30s",
                                              "granularity": "500ms"}},
            "coldStartTimeoutFailoverRef": {"service": "sorry", "port": 80},
            "timeouts": {"conditionWait": "5s", "responseHeader": "2s"}}))
        .route()
        .expect("valid");
        assert_eq!(r.hosts, ["example.com", "*.example.org"]);
        assert_eq!(r.path_prefixes, ["/api", "/web"]);
        assert_eq!(
            r.headers[0],
            HeaderMatch {
                name: "x-canary".into(),
                value: Some("yes".into())
            }
        );
        assert_eq!(r.headers[1].value, None);
        assert_eq!(r.target_workload(), "apps/v1/StatefulSet/app");
        assert_eq!(r.target_service(), "svc:http");
        assert_eq!(
            r.metric,
            ScalingMetric::RequestRate {
                target: 20.0,
                window: Duration::from_secs(30),
                granularity: Duration::from_millis(500)
            }
        );
        let f = r.failover.clone().expect("a failover");
        assert_eq!(
            (f.service.name.as_str(), f.timeout),
            ("sorry", Duration::from_secs(30))
        );
        // The failover's timeout is the wait; then conditionWait; then the default.
        assert_eq!(
            r.cold_start_timeout(DEFAULT_CONDITION_WAIT),
            Duration::from_secs(30)
        );
        let no_failover = HttpRoute {
            failover: None,
            ..r.clone()
        };
        assert_eq!(
            no_failover.cold_start_timeout(DEFAULT_CONDITION_WAIT),
            Duration::from_secs(5)
        );
        assert_eq!(r.response_header, Some(Duration::from_secs(2)));
        assert_eq!(r.initial_cooldown_period, Some(30));
    }

    #[test]
    fn defaults_are_the_add_ons() {
        let r = object(json!({"scaleTargetRef": {"name": "a", "service": "a", "port": 80}}))
            .route()
            .expect("valid");
        assert!(r.hosts.is_empty(), "no hosts: every host");
        assert_eq!(
            (r.min_replicas, r.max_replicas, r.scaledown_period),
            (0, 100, 300)
        );
        assert_eq!(r.metric, ScalingMetric::Concurrency { target: 100.0 });
        assert_eq!(r.response_header, None);
        let rate = object(
            json!({"scaleTargetRef": {"name": "a", "service": "a", "port": 80},
                                 "scalingMetric": {"requestRate": {}}}),
        )
        .route()
        .expect("valid");
        assert_eq!(
            rate.metric,
            ScalingMetric::RequestRate {
                target: 100.0,
                window: DEFAULT_RATE_WINDOW,
                granularity: DEFAULT_RATE_GRANULARITY
            }
        );
        for catch_all in [json!(["*"]), json!([""]), json!(["a.test", "*"])] {
            let r = object(json!({"hosts": catch_all,
                                  "scaleTargetRef": {"name": "a", "service": "a", "port": 80}}))
            .route()
            .expect("valid");
            assert!(r.hosts.is_empty(), "{catch_all}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let target = json!({"name": "a", "service": "a", "port": 80});
        let cases = [
            (
                json!({"scaleTargetRef": {"service": "a", "port": 80}}),
                "spec.scaleTargetRef.name",
                "required",
            ),
            (
                json!({"scaleTargetRef": {"name": "a", "service": "", "port": 80}}),
                "spec.scaleTargetRef.service",
                "required",
            ),
            (
                json!({"scaleTargetRef": {"name": "a", "service": "a"}}),
                "spec.scaleTargetRef.port",
                "must define either the 'portName' or the 'port'",
            ),
            (
                json!({"scaleTargetRef": {"name": "a", "service": "a", "port": 80, "portName": "h"}}),
                "spec.scaleTargetRef.port",
                "must define either the 'portName' or the 'port'",
            ),
            (
                json!({"scaleTargetRef": {"name": "a", "service": "a", "port": 70000}}),
                "spec.scaleTargetRef.port",
                "not a port",
            ),
            (
                json!({"scaleTargetRef": target, "hosts": ["a b"]}),
                "spec.hosts",
                "not a host",
            ),
            (
                json!({"scaleTargetRef": target, "hosts": ["a.*.b"]}),
                "spec.hosts",
                "not a host",
            ),
            (
                json!({"scaleTargetRef": target, "host": "x:80"}),
                "spec.host",
                "not a host",
            ),
            (
                json!({"scaleTargetRef": target, "pathPrefixes": ["/a?b"]}),
                "spec.pathPrefixes",
                "not a path",
            ),
            (
                json!({"scaleTargetRef": target, "headers": [{"name": "bad header"}]}),
                "spec.headers",
                "not a header name",
            ),
            (
                json!({"scaleTargetRef": target, "replicas": {"min": -1}}),
                "spec.replicas.min",
                "below 0",
            ),
            (
                json!({"scaleTargetRef": target, "replicas": {"min": 5, "max": 2}}),
                "spec.replicas.max",
                "at least min",
            ),
            (
                json!({"scaleTargetRef": target, "scaledownPeriod": -1}),
                "spec.scaledownPeriod",
                "below 0",
            ),
            (
                json!({"scaleTargetRef": target, "initialCooldownPeriod": -1}),
                "spec.initialCooldownPeriod",
                "below 0",
            ),
            (
                json!({"scaleTargetRef": target, "targetPendingRequests": 0}),
                "spec.targetPendingRequests",
                "above 0",
            ),
            (
                json!({"scaleTargetRef": target,
                    "scalingMetric": {"concurrency": {}, "requestRate": {}}}),
                "spec.scalingMetric",
                "mutually exclusive",
            ),
            (
                json!({"scaleTargetRef": target,
                    "scalingMetric": {"concurrency": {"targetValue": -3}}}),
                "spec.scalingMetric.concurrency.targetValue",
                "above 0",
            ),
            (
                json!({"scaleTargetRef": target,
                    "scalingMetric": {"requestRate": {"window": "soon"}}}),
                "spec.scalingMetric.requestRate.window",
                "not a positive duration",
            ),
            (
                json!({"scaleTargetRef": target,
                    "scalingMetric": {"requestRate": {"window": "1s", "granularity": "2s"}}}),
                "spec.scalingMetric.requestRate.granularity",
                "at most the window",
            ),
            (
                json!({"scaleTargetRef": target,
                    "scalingMetric": {"requestRate": {"window": "1h", "granularity": "1ms"}}}),
                "spec.scalingMetric.requestRate.window",
                "10000 buckets",
            ),
            (
                json!({"scaleTargetRef": target, "coldStartTimeoutFailoverRef": {"service": "f"}}),
                "spec.coldStartTimeoutFailoverRef.port",
                "must define either",
            ),
            (
                json!({"scaleTargetRef": target,
                    "coldStartTimeoutFailoverRef": {"service": "f", "port": 80, "timeoutSeconds": 0}}),
                "spec.coldStartTimeoutFailoverRef.timeoutSeconds",
                "at least 1",
            ),
            (
                json!({"scaleTargetRef": target, "timeouts": {"responseHeader": "0s"}}),
                "spec.timeouts.responseHeader",
                "not a positive duration",
            ),
        ];
        for (spec, field, words) in cases {
            let e = object(spec.clone()).route().expect_err(&spec.to_string());
            assert_eq!(e.field, field, "{spec}");
            assert!(e.message.contains(words), "{spec}: {}", e.message);
            assert!(e
                .to_string()
                .starts_with("HTTPScaledObject default/go-helloworld: "));
        }
    }

    #[test]
    fn the_scaled_object_is_the_add_ons() {
        let o = object(walkthrough());
        let r = o.route().expect("valid");
        let so = scaled_object_for(&o, &r, "eventscale-interceptor.eventscale:9090");
        assert_eq!(so.metadata.name.as_deref(), Some("go-helloworld"));
        assert_eq!(so.metadata.namespace.as_deref(), Some("default"));
        let owner = &so.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.uid.as_str()
            ),
            ("http.keda.sh/v1alpha1", "HTTPScaledObject", "u-1")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert_eq!(so.metadata.labels.as_ref().expect("labels")["team"], "a");
        assert_eq!(
            so.metadata.annotations.as_ref().expect("annotations")["note"],
            "n"
        );
        let s = &so.spec;
        assert_eq!(s.scale_target_ref.name, "go-helloworld");
        assert_eq!(s.polling_interval, Some(15));
        assert_eq!(
            (s.min_replica_count, s.max_replica_count),
            (Some(0), Some(10))
        );
        assert_eq!(s.cooldown_period, Some(300));
        assert_eq!(
            s.advanced
                .as_ref()
                .and_then(|a| a.restore_to_original_replica_count),
            Some(true)
        );
        assert_eq!(s.triggers.len(), 1);
        assert_eq!(s.triggers[0].type_, "external-push");
        assert_eq!(
            s.triggers[0].metadata,
            crate::trigger_metadata::TriggerMetadata::from([
                ("httpScaledObject".to_string(), "go-helloworld".to_string()),
                (
                    "scalerAddress".to_string(),
                    "eventscale-interceptor.eventscale:9090".to_string()
                ),
            ])
        );
        // Unset bounds stay unset: KEDA's defaults are the add-on's.
        let bare = object(json!({"scaleTargetRef": {"name": "a", "service": "a", "port": 80}}));
        let so = scaled_object_for(&bare, &bare.route().expect("valid"), "x:1");
        assert_eq!(
            (
                so.spec.min_replica_count,
                so.spec.max_replica_count,
                so.spec.cooldown_period
            ),
            (None, None, None)
        );
        assert_eq!(
            crate::validation::validate_spec(&so),
            Ok(()),
            "the ScaledObject is valid"
        );
    }

    #[test]
    fn only_true_skips_the_scaled_object() {
        let mut o = object(walkthrough());
        assert!(!o.skips_scaled_object());
        for (v, skips) in [("true", true), ("True", false), ("yes", false)] {
            o.metadata.annotations = Some(BTreeMap::from([(
                SKIP_SCALED_OBJECT_ANNOTATION.to_string(),
                v.to_string(),
            )]));
            assert_eq!(o.skips_scaled_object(), skips, "{v}");
        }
    }
}
