//! The scalers: one module per trigger type behind the [`Scaler`] trait.
//!
//! Building a scaler parses and validates its trigger's metadata once, into a typed struct;
//! querying it never looks at the raw strings again.

pub mod cloud_auth;
pub mod cron;
pub mod external;
pub mod kafka;
pub mod kubernetes_workload;
pub mod mysql;
pub mod params;
pub mod postgresql;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod redis_streams;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::metric_name;
use crate::quantity::MilliQuantity;
use crate::scaled_object::ScaleTriggers;

/// How the HPA compares a metric with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricTargetType {
    /// Value divided by the number of pods (KEDA's default).
    AverageValue,
    /// The value as it is.
    Value,
}

impl MetricTargetType {
    /// The HPA's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricTargetType::AverageValue => "AverageValue",
            MetricTargetType::Value => "Value",
        }
    }
}

/// The External metric a trigger puts on the HPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSpec {
    /// `s<index>-<scaler name>`.
    pub name: String,
    /// AverageValue or Value.
    pub target_type: MetricTargetType,
    /// The target, a quantity (`1`, `2500m`).
    pub target: MilliQuantity,
}

/// What one query of an event source says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The metric value.
    pub value: f64,
    /// Whether the trigger is active (value above its activation threshold).
    pub active: bool,
}

/// A trigger's metadata or query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScalerError {
    /// A required parameter is absent or empty (KEDA's words: where it was looked for).
    #[error("missing required parameter {names:?} in {from}")]
    MissingParameter {
        /// The parameter (its first name).
        param: String,
        /// KEDA's name for it: all its names, joined by `,`.
        names: String,
        /// Where it was looked for.
        from: params::Order,
    },
    /// A parameter has a value the scaler cannot use.
    #[error("{message}")]
    InvalidParameter {
        /// The metadata key.
        param: String,
        /// KEDA's wording of the problem.
        message: String,
    },
    /// `metricType` is not one the trigger supports.
    #[error("metricType {0:?} is not supported for external metrics: use AverageValue or Value")]
    UnsupportedMetricType(String),
    /// No scaler of that type exists (yet).
    #[error("no scaler for trigger type {0:?}")]
    UnsupportedTrigger(String),
    /// The event source could not be queried.
    #[error("{0}")]
    Query(String),
    /// The trigger's `authenticationRef` could not be resolved.
    #[error("{0}")]
    Authentication(String),
}

impl ScalerError {
    /// The metadata key at fault, when there is one.
    pub fn param(&self) -> Option<&str> {
        match self {
            ScalerError::MissingParameter { param, .. } => Some(param),
            ScalerError::InvalidParameter { param, .. } => Some(param),
            _ => None,
        }
    }

    fn invalid(param: &str, message: impl Into<String>) -> Self {
        ScalerError::InvalidParameter {
            param: param.to_string(),
            message: message.into(),
        }
    }
}

/// An error with its causes, `outer: cause: root`, skipping causes the outer message
/// already contains (HTTP clients tend to hide "connection refused" in the chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `text` with the userinfo of every URL in it (`scheme://user:password@`) replaced by
/// `user:password@`, as KEDA anonymizes its errors. The userinfo runs to the last `@`
/// before the URL's path, so a raw password holding `@` or a space is hidden whole.
pub fn anonymize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..end];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                out.push_str("user:password@");
                out.push_str(&authority[at + 1..]);
            }
            _ => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// An HTTP answer's body, refused past `max` bytes rather than read into memory whole.
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {} MiB", max >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A [`ScalerError`] with the trigger it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TriggerError {
    /// Index in `spec.triggers`.
    pub index: usize,
    /// The trigger's `type`.
    pub trigger_type: String,
    /// What went wrong.
    #[source]
    pub source: ScalerError,
}

impl TriggerError {
    /// The path of the field at fault, as `spec.triggers[0].metadata.threshold`.
    pub fn field(&self) -> String {
        let at = match &self.source {
            ScalerError::MissingParameter { .. } | ScalerError::InvalidParameter { .. } => self
                .source
                .param()
                .map(|p| format!(".metadata.{p}"))
                .unwrap_or_default(),
            ScalerError::UnsupportedMetricType(_) => ".metricType".into(),
            ScalerError::UnsupportedTrigger(_) => ".type".into(),
            ScalerError::Authentication(_) => ".authenticationRef".into(),
            ScalerError::Query(_) => String::new(),
        };
        format!("spec.triggers[{}]{at}", self.index)
    }
}

impl fmt::Display for TriggerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.field(),
            self.trigger_type,
            self.source
        )
    }
}

/// One trigger's scaler.
#[async_trait]
pub trait Scaler: Send + Sync + fmt::Debug {
    /// The trigger type this scaler serves (`cron`, ...), for metrics and logs.
    fn scaler_type(&self) -> &'static str;

    /// The External metric this trigger contributes.
    fn metric_spec(&self) -> &MetricSpec;

    /// Query the event source.
    async fn sample(&self) -> Result<Sample, ScalerError>;

    /// The value the metric must exceed for the trigger to be active (KEDA's
    /// `activation*` parameter), for people reading a trace; `None` where activity is not
    /// a threshold (cron's window, an external scaler's `IsActive`).
    fn activation_threshold(&self) -> Option<f64> {
        None
    }

    /// Whether a failed query is worth asking once more of a scaler built afresh (KEDA's
    /// refresh). Not for a scaler whose connection reconnects by itself and whose build
    /// asks the source again (external).
    fn refresh_on_error(&self) -> bool {
        true
    }

    /// Whether the source now gives this trigger another metric (name or target) than the
    /// one it was built with; asked at each reconcile. Only an external scaler's can change.
    async fn spec_changed(&self) -> bool {
        false
    }
}

/// Authentication parameters resolved from a trigger's TriggerAuthentication.
pub type AuthParams = BTreeMap<String, String>;

/// What a scaler is built from.
#[derive(Clone, Copy)]
pub struct TriggerContext<'a> {
    /// Index in `spec.triggers`.
    pub index: usize,
    /// The trigger.
    pub trigger: &'a ScaleTriggers,
    /// Its resolved authentication parameters (empty without `authenticationRef`).
    pub auth: &'a AuthParams,
    /// The ScaledObject's namespace.
    pub namespace: &'a str,
    /// The ScaledObject's name (scalers that keep state between polls key it by this).
    pub name: &'a str,
    /// A client of the cluster, for triggers that read it (kubernetes-workload); `None`
    /// outside a cluster (`eventscale eval`).
    pub client: Option<&'a kube::Client>,
    /// The ScaledObject uses `scalingModifiers`: its triggers feed the formula (KEDA's
    /// `AsMetricSource`), and kubernetes-workload's `value` may be left out.
    pub as_metric_source: bool,
    /// The clients shared with every other scaler of the process.
    pub pools: &'a crate::pools::Pools,
}

impl std::fmt::Debug for TriggerContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Authentication parameters are secrets: never printed.
        f.debug_struct("TriggerContext")
            .field("index", &self.index)
            .field("type", &self.trigger.type_)
            .field("namespace", &self.namespace)
            .field("cluster", &self.client.is_some())
            .finish()
    }
}

impl<'a> TriggerContext<'a> {
    /// `s<index>-<name>`, normalized as KEDA does.
    pub fn metric_name(&self, name: &str) -> String {
        metric_name::with_index(self.index, name)
    }

    /// The trigger's target type: "" → AverageValue, Value → Value, anything else an error.
    pub fn target_type(&self) -> Result<MetricTargetType, ScalerError> {
        match self.trigger.metric_type.as_deref().unwrap_or("") {
            "" | "AverageValue" => Ok(MetricTargetType::AverageValue),
            "Value" => Ok(MetricTargetType::Value),
            other => Err(ScalerError::UnsupportedMetricType(other.to_string())),
        }
    }

    /// The reader of the trigger's parameters: its metadata and authentication parameters.
    pub fn params(&self) -> params::Params<'a> {
        params::Params::new(&self.trigger.metadata, self.auth, self.index)
    }
}

/// Whether any metadata key of `trigger` is a `<param>FromEnv` or `<param>FromEnvFile`
/// reference.
pub fn reads_env(trigger: &ScaleTriggers) -> bool {
    trigger.metadata.keys().any(|k| {
        (k.len() > 7 && k.ends_with("FromEnv")) || (k.len() > 11 && k.ends_with("FromEnvFile"))
    })
}

/// `trigger` with each `<param>FromEnv: VAR` resolved from the target container's `env`:
/// `<param>` takes `env[VAR]` unless it is already set (a non-empty metadata value wins).
/// A variable that is missing or empty leaves `<param>` unset, as KEDA leaves it; the
/// second map says why, for [`explain`] to attach to the scaler's error.
///
/// `<param>FromEnvFile: VAR` (KEDA's `credentialsFromEnvFile`, whose variable holds a path)
/// is resolved into `<param>File`, always from the environment: the path is read on
/// eventscale's own filesystem, as KEDA reads it on its operator's, so the trigger's own
/// metadata never names it.
pub fn with_env(
    trigger: &ScaleTriggers,
    env: &BTreeMap<String, String>,
) -> (ScaleTriggers, BTreeMap<String, String>) {
    let mut out = trigger.clone();
    let mut unresolved = BTreeMap::new();
    for (key, var) in &trigger.metadata {
        if let Some(param) = key.strip_suffix("FromEnvFile").filter(|p| !p.is_empty()) {
            let file = format!("{param}File");
            match env
                .get(var.trim())
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
            {
                Some(path) => out.metadata.insert(file, path),
                None => out.metadata.remove(&file),
            };
            continue;
        }
        let Some(param) = key.strip_suffix("FromEnv").filter(|p| !p.is_empty()) else {
            continue;
        };
        if trigger
            .metadata
            .get(param)
            .is_some_and(|v| !v.trim().is_empty())
        {
            continue;
        }
        let var = var.trim();
        match env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            Some(v) => {
                out.metadata.insert(param, v);
            }
            None => {
                unresolved.insert(
                    param.to_string(),
                    format!("environment variable {var:?} (named by {key}) is not set in the scale target's container"),
                );
            }
        }
    }
    (out, unresolved)
}

/// `e` with the reason attached when it is about a parameter in `unresolved` (one whose
/// source was missing and that came out empty).
pub fn explain(e: ScalerError, unresolved: &BTreeMap<String, String>) -> ScalerError {
    let Some((param, why)) = e
        .param()
        .and_then(|p| unresolved.get_key_value(p))
        .map(|(p, w)| (p.clone(), w.clone()))
    else {
        return e;
    };
    ScalerError::InvalidParameter {
        message: format!("{e} ({why})"),
        param,
    }
}

/// The metadata parameter a trigger type's metric target comes from, where there is one
/// (cron's target is always 1; an external scaler's comes from the scaler).
pub fn target_parameter(trigger_type: &str) -> Option<&'static str> {
    match trigger_type {
        "prometheus" => Some("threshold"),
        "mysql" => Some("queryValue"),
        "kubernetes-workload" => Some("value"),
        "kafka" => Some("lagThreshold"),
        "postgresql" => Some("targetQueryValue"),
        "redis" => Some("listLength"),
        "rabbitmq" => Some("value"),
        _ => None,
    }
}

/// Build the scaler for one trigger (an external one asks its scaler for its metric).
pub async fn build_scaler(ctx: TriggerContext<'_>) -> Result<Box<dyn Scaler>, ScalerError> {
    match ctx.trigger.type_.as_str() {
        "external" | "external-push" => Ok(Box::new(external::ExternalScaler::new(ctx).await?)),
        "cron" => Ok(Box::new(cron::CronScaler::new(ctx)?)),
        "prometheus" => Ok(Box::new(prometheus::PrometheusScaler::new(ctx)?)),
        "kubernetes-workload" => Ok(Box::new(kubernetes_workload::WorkloadScaler::new(ctx)?)),
        "mysql" => Ok(Box::new(mysql::MysqlScaler::new(ctx)?)),
        "kafka" => Ok(Box::new(kafka::KafkaScaler::new(ctx)?)),
        "postgresql" => Ok(Box::new(postgresql::PostgresScaler::new(ctx)?)),
        "rabbitmq" => Ok(Box::new(rabbitmq::RabbitScaler::new(ctx)?)),
        "redis" => Ok(Box::new(redis::RedisScaler::new(ctx)?)),
        "redis-streams" => Ok(Box::new(redis_streams::RedisStreamsScaler::new(ctx)?)),
        other => Err(ScalerError::UnsupportedTrigger(other.to_string())),
    }
}

/// What the scalers' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{AuthParams, TriggerContext};
    use crate::scaled_object::ScaleTriggers;

    /// `f` over the context of a `type_` trigger at index 1 with `meta` and `auth`.
    pub(crate) fn with_ctx<T>(
        type_: &str,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        as_metric_source: bool,
        f: impl FnOnce(TriggerContext<'_>) -> T,
    ) -> T {
        let trigger = ScaleTriggers {
            type_: type_.into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let auth: AuthParams = auth
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pools = crate::pools::Pools::default();
        f(TriggerContext {
            index: 1,
            trigger: &trigger,
            auth: &auth,
            namespace: "ns",
            name: "so",
            client: None,
            as_metric_source,
            pools: &pools,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_env_fills_missing_parameters() {
        let t = ScaleTriggers {
            type_: "prometheus".into(),
            metadata: [
                ("query", "up"),
                ("serverAddressFromEnv", "PROM"),
                ("thresholdFromEnv", "T"),
                ("threshold", "3"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        };
        assert!(reads_env(&t));
        let env: BTreeMap<String, String> = [("PROM", "http://p:9090"), ("T", "99")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (r, unresolved) = with_env(&t, &env);
        assert!(unresolved.is_empty());
        assert_eq!(&r.metadata["serverAddress"], "http://p:9090");
        assert_eq!(
            &r.metadata["threshold"], "3",
            "metadata wins over the environment"
        );
        // A missing variable leaves the parameter unset, as KEDA does; the scaler's
        // error then says why.
        let (r, unresolved) = with_env(&t, &BTreeMap::new());
        assert!(!r.metadata.contains_key("serverAddress"));
        let missing = |p: &str| ScalerError::MissingParameter {
            param: p.into(),
            names: p.into(),
            from: params::Order(&[params::Source::Meta, params::Source::Env]),
        };
        let e = explain(missing("serverAddress"), &unresolved);
        assert_eq!(e.param(), Some("serverAddress"));
        assert_eq!(
            e.to_string(),
            "missing required parameter \"serverAddress\" in [triggerMetadata resolvedEnv] (environment variable \"PROM\" (named by serverAddressFromEnv) is not set in the scale target's container)"
        );
        let other = missing("query");
        assert_eq!(explain(other.clone(), &unresolved), other);
    }

    /// `<param>FromEnvFile` names a variable holding a path: resolved into `<param>File`,
    /// never taken from the metadata itself.
    #[test]
    fn from_env_file_resolves_into_a_path_parameter() {
        let t = ScaleTriggers {
            type_: "prometheus".into(),
            metadata: [
                ("credentialsFromEnvFile", "CREDS_PATH"),
                ("credentialsFile", "/etc/written-by-the-trigger"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        };
        assert!(reads_env(&t));
        let env: BTreeMap<String, String> =
            [("CREDS_PATH".to_string(), "/var/run/key.json".to_string())].into();
        let (r, unresolved) = with_env(&t, &env);
        assert_eq!(&r.metadata["credentialsFile"], "/var/run/key.json");
        assert!(unresolved.is_empty());
        let (r, _) = with_env(&t, &BTreeMap::new());
        assert!(!r.metadata.contains_key("credentialsFile"));
        let plain = ScaleTriggers {
            metadata: [("FromEnvFile".to_string(), "X".to_string())].into(),
            ..Default::default()
        };
        assert!(!reads_env(&plain));
    }

    #[test]
    fn anonymize_hides_whole_userinfos() {
        for (text, want) in [
            (
                "dial amqp://guest:s3cret@h:5672/: refused",
                "dial amqp://user:password@h:5672/: refused",
            ),
            ("amqp://u:p@ss@h/vh", "amqp://user:password@h/vh"),
            ("amqp://u:pa ss@h", "amqp://user:password@h"),
            (
                "http://h:15672/api and https://a:b@x/y",
                "http://h:15672/api and https://user:password@x/y",
            ),
            (
                "mailto-like user@host, no scheme",
                "mailto-like user@host, no scheme",
            ),
        ] {
            assert_eq!(anonymize(text), want, "{text}");
        }
    }

    #[test]
    fn trigger_errors_name_the_field() {
        let e = TriggerError {
            index: 1,
            trigger_type: "cron".into(),
            source: ScalerError::invalid("start", "error parsing start schedule: x"),
        };
        assert_eq!(
            e.to_string(),
            "spec.triggers[1].metadata.start (cron): error parsing start schedule: x"
        );
        let e = TriggerError {
            index: 0,
            trigger_type: "nats".into(),
            source: ScalerError::UnsupportedTrigger("nats".into()),
        };
        assert_eq!(
            e.to_string(),
            "spec.triggers[0].type (nats): no scaler for trigger type \"nats\""
        );
    }

    #[test]
    fn metric_type_follows_keda() {
        let mut t = ScaleTriggers {
            type_: "cron".into(),
            ..Default::default()
        };
        let ctx = |t: &ScaleTriggers| {
            TriggerContext {
                index: 0,
                trigger: t,
                auth: &AuthParams::new(),
                namespace: "",
                name: "test",
                client: None,
                as_metric_source: false,
                pools: &crate::pools::Pools::default(),
            }
            .target_type()
        };
        assert_eq!(ctx(&t), Ok(MetricTargetType::AverageValue));
        t.metric_type = Some("Value".into());
        assert_eq!(ctx(&t), Ok(MetricTargetType::Value));
        t.metric_type = Some("Utilization".into());
        assert!(ctx(&t).is_err());
    }
}
