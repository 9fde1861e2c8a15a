//! `ScaledObject` (`keda.sh/v1alpha1`) with KEDA's field names, so existing YAML applies unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// KEDA's default `pollingInterval`, seconds.
pub const DEFAULT_POLLING_INTERVAL: i32 = 30;
/// KEDA's default `cooldownPeriod`, seconds.
pub const DEFAULT_COOLDOWN_PERIOD: i32 = 300;
/// KEDA's default `maxReplicaCount`.
pub const DEFAULT_MAX_REPLICA_COUNT: i32 = 100;

/// The desired state of a ScaledObject.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    plural = "scaledobjects",
    shortname = "so",
    namespaced,
    status = "Box<ScaledObjectStatus>",
    printcolumn = r#"{"name":"ScaleTargetKind","type":"string","jsonPath":".status.scaleTargetKind"}"#,
    printcolumn = r#"{"name":"ScaleTargetName","type":"string","jsonPath":".spec.scaleTargetRef.name"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minReplicaCount"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxReplicaCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.conditions[?(@.type==\"Active\")].status"}"#,
    printcolumn = r#"{"name":"Fallback","type":"string","jsonPath":".status.conditions[?(@.type==\"Fallback\")].status"}"#,
    printcolumn = r#"{"name":"Paused","type":"string","jsonPath":".status.conditions[?(@.type==\"Paused\")].status"}"#,
    printcolumn = r#"{"name":"Triggers","type":"string","jsonPath":".status.triggersTypes"}"#,
    printcolumn = r#"{"name":"Authentications","type":"string","jsonPath":".status.authenticationsTypes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schemars::transform::RecursiveTransform(crate::crd_schema::bound_int32))]
pub struct ScaledObjectSpec {
    /// The workload to scale.
    pub scale_target_ref: ScaleTarget,
    /// Seconds between polls of the triggers (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// Seconds after creation before the first scale to zero (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_cooldown_period: Option<i32>,
    /// Seconds after the last active trigger before scaling to zero (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cooldown_period: Option<i32>,
    /// Replicas while no trigger is active, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub idle_replica_count: Option<i32>,
    /// Lowest replica count (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replica_count: Option<i32>,
    /// Highest replica count (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replica_count: Option<i32>,
    /// HPA configuration and other advanced settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<Box<AdvancedConfig>>,
    /// The event sources.
    #[schemars(length(min = 1))]
    pub triggers: Vec<ScaleTriggers>,
    /// Replicas to use while triggers fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// `spec.scaleTargetRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    /// Name of the target in the ScaledObject's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// apiVersion of the target (default `apps/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// kind of the target (default `Deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Container whose environment `...FromEnv` parameters read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

impl ScaleTarget {
    /// apiVersion with KEDA's default.
    pub fn api_version_or_default(&self) -> &str {
        self.api_version
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or("apps/v1")
    }

    /// kind with KEDA's default.
    pub fn kind_or_default(&self) -> &str {
        self.kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or("Deployment")
    }
}

/// `spec.advanced`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedConfig {
    /// Settings passed to the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HorizontalPodAutoscalerConfig>,
    /// Restore the target's original replica count when the ScaledObject is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_to_original_replica_count: Option<bool>,
    /// A formula combining the triggers into one composite metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ScalingModifiers>,
}

/// `spec.advanced.horizontalPodAutoscalerConfig`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    /// A custom HPA name instead of `keda-hpa-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// autoscaling/v2 behavior, passed through to the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// `spec.advanced.scalingModifiers`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingModifiers {
    /// The formula over trigger names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    /// The composite metric's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The composite metric's activation target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<String>,
    /// AverageValue (default) or Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["AverageValue", "Value"]))]
    pub metric_type: Option<String>,
}

/// One entry of `spec.triggers`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTriggers {
    /// Scaler type, such as `cron` or `prometheus`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub type_: String,
    /// Optional trigger name (used by scalingModifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scaler parameters.
    #[serde(default)]
    pub metadata: crate::trigger_metadata::TriggerMetadata,
    /// Reference to a TriggerAuthentication or ClusterTriggerAuthentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    /// AverageValue (default), Value or Utilization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
    /// Answer HPA reads from the polling loop's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
}

/// `triggers[].authenticationRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    /// Name of the authentication object.
    pub name: String,
    /// TriggerAuthentication (default) or ClusterTriggerAuthentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["TriggerAuthentication", "ClusterTriggerAuthentication"]))]
    pub kind: Option<String>,
}

/// `spec.fallback`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Failures tolerated before falling back.
    #[schemars(range(min = 0))]
    pub failure_threshold: i32,
    /// Replicas while falling back.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// static (default), currentReplicas, currentReplicasIfHigher, currentReplicasIfLower,
    /// scalingModifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "enum" = ["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower", "scalingModifiers"],
        "default" = "static"
    ))]
    pub behavior: Option<String>,
}

/// The observed state of a ScaledObject, in KEDA's shape.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schemars::transform::RecursiveTransform(crate::crd_schema::bound_int32))]
pub struct ScaledObjectStatus {
    /// `apps/v1.Deployment` and the like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_kind: Option<String>,
    /// Group, version, kind and resource of the target.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "scaleTargetGVKR"
    )]
    pub scale_target_gvkr: Option<GroupVersionKindResource>,
    /// Replicas the target had before the first reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replica_count: Option<i32>,
    /// When a trigger was last active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_active_time: Option<String>,
    /// External metric names on the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_metric_names: Option<Vec<String>>,
    /// Resource metric names on the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_metric_names: Option<Vec<String>>,
    /// The composite scaler's name with scalingModifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_scaler_name: Option<String>,
    /// Ready, Active, Fallback, Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Per-metric failure counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BTreeMap<String, HealthStatus>>,
    /// Per-metric activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivity>>,
    /// Replicas held while paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replica_count: Option<i32>,
    /// The HPA this ScaledObject owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_name: Option<String>,
    /// The trigger types, each once, comma separated (the `Triggers` column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// The authenticationRef names, each once, comma separated (the `Authentications`
    /// column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
}

/// KEDA's `CombinedTriggersAndAuthenticationsTypes`: the trigger types and the
/// authenticationRef names, each once in order of first use, comma separated.
pub fn triggers_and_authentications_types(triggers: &[ScaleTriggers]) -> (String, String) {
    let mut types: Vec<&str> = Vec::new();
    let mut auths: Vec<&str> = Vec::new();
    for t in triggers {
        if !types.contains(&t.type_.as_str()) {
            types.push(&t.type_);
        }
        if let Some(r) = &t.authentication_ref {
            if !auths.contains(&r.name.as_str()) {
                auths.push(&r.name);
            }
        }
    }
    (types.join(","), auths.join(","))
}

/// `status.scaleTargetGVKR`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GroupVersionKindResource {
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource.
    pub resource: String,
}

/// A KEDA status condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Condition {
    /// Ready, Active, Fallback or Paused.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `status.health[metric]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// Consecutive failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_failures: Option<i32>,
    /// Happy or Failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `status.triggersActivity[metric]`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerActivity {
    /// Whether the trigger was active at the last poll.
    pub is_active: bool,
}

impl ScaledObjectSpec {
    /// `maxReplicaCount` with KEDA's default.
    pub fn max_replicas(&self) -> i32 {
        self.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICA_COUNT)
    }

    /// The HPA's minReplicas: `minReplicaCount` when above 0, else 1 (an HPA cannot hold 0).
    pub fn hpa_min_replicas(&self) -> i32 {
        match self.min_replica_count {
            Some(m) if m > 0 => m,
            _ => 1,
        }
    }

    /// The custom HPA name, if one is set.
    pub fn custom_hpa_name(&self) -> Option<&str> {
        self.advanced
            .as_ref()?
            .horizontal_pod_autoscaler_config
            .as_ref()?
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
    }

    /// KEDA's `IsUsingModifiers`: any non-empty `scalingModifiers`. Triggers are then
    /// metric sources for the formula (KEDA's `AsMetricSource`).
    pub fn uses_modifiers(&self) -> bool {
        self.advanced
            .as_ref()
            .and_then(|a| a.scaling_modifiers.as_ref())
            .is_some_and(|m| {
                m.formula.is_some()
                    || m.target.is_some()
                    || m.activation_target.is_some()
                    || m.metric_type.is_some()
            })
    }
}

/// The annotation `kubectl apply` keeps a whole copy of the object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what eventscale never reads from a ScaledObject it keeps in memory: the
/// managedFields and kubectl's last-applied copy, which together are often larger than
/// the rest of the object, and its resourceVersion. For watch streams feeding a reflector
/// (`.modify(slim)`).
pub fn slim(so: &mut ScaledObject) {
    so.metadata.managed_fields = None;
    // Nothing compares a stored ScaledObject's version (the watch keeps its own).
    so.metadata.resource_version = None;
    if let Some(a) = so.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde::Deserialize;

    #[test]
    fn slim_drops_managed_fields_the_last_applied_copy_and_the_version_only() {
        let mut so: ScaledObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "so", "namespace": "ns", "resourceVersion": "42",
                "annotations": {LAST_APPLIED: "{...}", "autoscaling.keda.sh/paused": "true"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"scaleTargetRef": {"name": "web"}, "triggers": []}
        }))
        .expect("ScaledObject");
        slim(&mut so);
        assert_eq!(so.metadata.managed_fields, None);
        assert_eq!(so.metadata.resource_version, None);
        let a = so.metadata.annotations.expect("annotations kept");
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.get("autoscaling.keda.sh/paused").map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn crd_has_kedas_identity() {
        let crd = ScaledObject::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("scaledobjects.keda.sh"));
        assert_eq!(crd.spec.group, "keda.sh");
        assert_eq!(crd.spec.names.short_names, Some(vec!["so".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "ScaleTargetKind",
                "ScaleTargetName",
                "Min",
                "Max",
                "Ready",
                "Active",
                "Fallback",
                "Paused",
                "Triggers",
                "Authentications",
                "Age"
            ]
        );
    }

    #[test]
    fn triggers_and_authentications_columns_name_each_once() {
        let t = |type_: &str, auth: Option<&str>| ScaleTriggers {
            type_: type_.into(),
            authentication_ref: auth.map(|a| AuthenticationRef {
                name: a.into(),
                kind: None,
            }),
            ..Default::default()
        };
        let triggers = [
            t("cron", None),
            t("kafka", Some("kafka-auth")),
            t("cron", None),
            t("prometheus", Some("kafka-auth")),
            t("kafka", Some("other")),
        ];
        assert_eq!(
            triggers_and_authentications_types(&triggers),
            ("cron,kafka,prometheus".into(), "kafka-auth,other".into())
        );
        assert_eq!(
            triggers_and_authentications_types(&[]),
            (String::new(), String::new())
        );
    }

    #[test]
    fn kedas_documented_yaml_parses() {
        let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: cron-scaledobject, namespace: default}
spec:
  scaleTargetRef: {name: my-deployment}
  minReplicaCount: 1
  cooldownPeriod: 300
  advanced:
    restoreToOriginalReplicaCount: true
    horizontalPodAutoscalerConfig:
      name: custom-hpa
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 300
          policies: [{type: Percent, value: 100, periodSeconds: 15}]
  fallback: {failureThreshold: 3, replicas: 6}
  triggers:
  - type: cron
    metadata: {timezone: Asia/Kolkata, start: 30 * * * *, end: 45 * * * *, desiredReplicas: "10"}
"#;
        let so: ScaledObject = serde_yaml::from_str(yaml).expect("KEDA's YAML parses");
        assert_eq!(so.spec.triggers[0].type_, "cron");
        assert_eq!(so.spec.custom_hpa_name(), Some("custom-hpa"));
        assert_eq!(so.spec.hpa_min_replicas(), 1);
        assert_eq!(so.spec.max_replicas(), 100);
        assert_eq!(so.spec.scale_target_ref.kind_or_default(), "Deployment");
    }

    #[test]
    fn seed_examples_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
        let entries = std::fs::read_dir(dir).expect("the repository's examples/");
        let mut seen = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc).expect("valid YAML");
                if value.get("kind").and_then(|k| k.as_str()) == Some("ScaledObject") {
                    let so: Result<ScaledObject, _> = serde_yaml::from_value(value);
                    assert!(so.is_ok(), "{}: {:?}", path.display(), so.err());
                    seen += 1;
                }
            }
        }
        assert!(seen > 0, "no ScaledObject found in {dir}");
    }
}
