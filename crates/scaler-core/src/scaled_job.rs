//! `ScaledJob` (`keda.sh/v1alpha1`) with KEDA's field names, defaults and printer columns,
//! so existing YAML applies unchanged. The decisions over it are in [`crate::job_scaling`].

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::scaled_object::{Condition, ScaleTriggers, TriggerActivity};

/// KEDA's default `successfulJobsHistoryLimit` and `failedJobsHistoryLimit`.
pub const DEFAULT_HISTORY_LIMIT: i32 = 100;
/// KEDA's default `maxReplicaCount` for a ScaledJob.
pub const DEFAULT_MAX_REPLICA_COUNT: i32 = 100;
/// The label that ties a Job (and its pods) to its ScaledJob; Jobs are found by it.
pub const SCALED_JOB_NAME_LABEL: &str = "scaledjob.keda.sh/name";
/// The annotation on each Job naming the ScaledJob generation that created it.
pub const GENERATION_ANNOTATION: &str = "scaledjob.keda.sh/generation";
/// ScaledJob label keys, comma separated, not copied onto its Jobs.
pub const EXCLUDED_LABELS_ANNOTATION: &str = "scaledjob.keda.sh/job-excluded-labels";

/// The desired state of a ScaledJob.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledJob",
    plural = "scaledjobs",
    shortname = "sj",
    namespaced,
    status = "ScaledJobStatus",
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minReplicaCount"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxReplicaCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.conditions[?(@.type==\"Active\")].status"}"#,
    printcolumn = r#"{"name":"Paused","type":"string","jsonPath":".status.conditions[?(@.type==\"Paused\")].status"}"#,
    printcolumn = r#"{"name":"Triggers","type":"string","jsonPath":".status.triggersTypes"}"#,
    printcolumn = r#"{"name":"Authentications","type":"string","jsonPath":".status.authenticationsTypes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schemars::transform::RecursiveTransform(crate::crd_schema::bound_int32))]
pub struct ScaledJobSpec {
    /// The Job each unit of work runs as.
    pub job_target_ref: JobSpec,
    /// Seconds between polls of the triggers (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// Finished Jobs kept (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub successful_jobs_history_limit: Option<i32>,
    /// Failed Jobs kept (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failed_jobs_history_limit: Option<i32>,
    /// Deprecated: `rollout.strategy`. (KEDA's CRD takes `gradual` and `immediate`; its
    /// docs name the latter `default`, which is taken too and means the same.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["gradual", "immediate", "default"]))]
    pub rollout_strategy: Option<String>,
    /// What happens to running Jobs when the ScaledJob changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Container whose environment `...FromEnv` parameters read (default: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
    /// Jobs kept running at all times (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replica_count: Option<i32>,
    /// Most Jobs at once (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replica_count: Option<i32>,
    /// How many Jobs to create from the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_strategy: Option<ScalingStrategy>,
    /// The event sources.
    #[schemars(length(min = 1))]
    pub triggers: Vec<ScaleTriggers>,
}

/// `spec.rollout`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `immediate` (or `default`, as KEDA's docs call it; the default): Jobs of an earlier
    /// generation are deleted; `gradual`: they run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["gradual", "immediate", "default"]))]
    pub strategy: Option<String>,
    /// How those Jobs are deleted: `background` (default) or `foreground`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["foreground", "background"]))]
    pub propagation_policy: Option<String>,
}

/// `spec.scalingStrategy`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStrategy {
    /// `default`, `custom`, `accurate` or `eager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["default", "custom", "accurate", "eager"]))]
    pub strategy: Option<String>,
    /// `custom`: Jobs deducted from the queue's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_queue_length_deduction: Option<i32>,
    /// `custom`: the share of running Jobs deducted, a decimal such as `"0.5"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_running_job_percentage: Option<String>,
    /// Pod condition types that, all True, make a Job's pod count as running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_pod_conditions: Option<Vec<String>>,
    /// How several triggers combine: `max` (default), `min`, `avg` or `sum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["min", "avg", "sum", "max"]))]
    pub multiple_scalers_calculation: Option<String>,
}

/// The observed state of a ScaledJob, in KEDA's shape.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobStatus {
    /// When a trigger was last active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_active_time: Option<String>,
    /// Ready, Active, Fallback, Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// KEDA's field of this name (capital P); KEDA writes nothing to it, nor do we.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "Paused")]
    pub paused: Option<String>,
    /// The trigger types, each once, comma separated (the `Triggers` column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// The authenticationRef names, each once, comma separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
    /// Per-metric activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivity>>,
}

impl ScaledJobSpec {
    /// KEDA's `MinReplicaCount()`: `minReplicaCount`, clamped to `maxReplicaCount` when above.
    pub fn min_replicas(&self) -> i64 {
        match (self.min_replica_count, self.max_replica_count) {
            (Some(min), Some(max)) if min > max => i64::from(max),
            (Some(min), _) => i64::from(min),
            (None, _) => 0,
        }
    }

    /// KEDA's `MaxReplicaCount()`: the room above the minimum, `max - min` (100 when max is
    /// unset, whatever the minimum; `max` when min > max).
    pub fn max_replicas_above_min(&self) -> i64 {
        match (self.max_replica_count, self.min_replica_count) {
            (None, _) => i64::from(DEFAULT_MAX_REPLICA_COUNT),
            (Some(max), Some(min)) if min > max => i64::from(max),
            (Some(max), _) => i64::from(max) - self.min_replicas(),
        }
    }

    /// `successfulJobsHistoryLimit` with KEDA's default.
    pub fn successful_history_limit(&self) -> usize {
        limit(self.successful_jobs_history_limit)
    }

    /// `failedJobsHistoryLimit` with KEDA's default.
    pub fn failed_history_limit(&self) -> usize {
        limit(self.failed_jobs_history_limit)
    }

    /// Whether Jobs of earlier generations run on (`gradual`): the deprecated
    /// `rolloutStrategy` when set, else `rollout.strategy`.
    pub fn gradual_rollout(&self) -> bool {
        let strategy = self
            .rollout_strategy
            .as_deref()
            .filter(|s| !s.is_empty())
            .or_else(|| self.rollout.as_ref()?.strategy.as_deref());
        strategy == Some("gradual")
    }

    /// Whether earlier generations' Jobs are deleted in the foreground.
    pub fn foreground_rollout(&self) -> bool {
        self.rollout
            .as_ref()
            .and_then(|r| r.propagation_policy.as_deref())
            == Some("foreground")
    }
}

fn limit(v: Option<i32>) -> usize {
    usize::try_from(v.unwrap_or(DEFAULT_HISTORY_LIMIT)).unwrap_or(0)
}

/// The ScaledJob seen as a ScaledObject, for what both share: building its triggers'
/// scalers (one runtime per ScaledJob, as per ScaledObject). Its scale target is the
/// ScaledJob itself, so `FromEnv` parameters read the Job template's containers; uid and
/// generation are the ScaledJob's, so a change of its spec rebuilds the scalers.
pub fn as_scaled_object(sj: &ScaledJob) -> crate::ScaledObject {
    let metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: sj.metadata.name.clone(),
        namespace: sj.metadata.namespace.clone(),
        uid: sj.metadata.uid.clone(),
        generation: sj.metadata.generation,
        ..Default::default()
    };
    crate::ScaledObject {
        metadata,
        spec: crate::ScaledObjectSpec {
            scale_target_ref: crate::scaled_object::ScaleTarget {
                name: sj.metadata.name.clone().unwrap_or_default(),
                api_version: Some("keda.sh/v1alpha1".into()),
                kind: Some("ScaledJob".into()),
                env_source_container_name: sj.spec.env_source_container_name.clone(),
            },
            polling_interval: sj.spec.polling_interval,
            triggers: sj.spec.triggers.clone(),
            ..Default::default()
        },
        status: None,
    }
}

/// KEDA's `NeedToBePausedByAnnotation`: absent is not paused; a value Go's `ParseBool`
/// reads decides; any other value pauses. `paused-replicas` means nothing to a ScaledJob.
pub fn paused_by_annotation(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations.is_some_and(|a| crate::activation::annotation_flag(a, crate::activation::PAUSED))
}

/// The ScaledJob CRD, with the descriptions inside `jobTargetRef` left out: the whole
/// JobSpec documented is over 500 KB, more than `kubectl apply` (client side) can keep in
/// its last-applied annotation (256 KiB); without them the CRD is about 60 KB of JSON.
/// The schema itself (types, required fields, enums) is kept whole, so the apiserver still
/// validates and prunes a JobSpec.
pub fn crd(
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = ScaledJob::crd();
    for v in &mut crd.spec.versions {
        let Some(spec) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
        else {
            continue;
        };
        if let Some(job) = spec.get_mut("jobTargetRef") {
            let description = job.description.take();
            strip_descriptions(job);
            job.description = description;
        }
    }
    crd
}

fn strip_descriptions(
    s: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    s.description = None;
    for p in s.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_descriptions(p);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(i)) = s.items.as_mut() {
        strip_descriptions(i);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(a)) = s.additional_properties.as_mut() {
        strip_descriptions(a);
    }
    for list in [&mut s.all_of, &mut s.any_of, &mut s.one_of]
        .into_iter()
        .flatten()
    {
        list.iter_mut().for_each(strip_descriptions);
    }
}

impl ScaledJobStatus {
    /// Set `c`, replacing the condition of its type (appended when there is none).
    pub fn set_condition(&mut self, c: Condition) {
        crate::conditions::set_in(&mut self.conditions, c);
    }

    /// The condition of `type_`, when the status has one.
    pub fn condition(&self, type_: crate::conditions::ConditionType) -> Option<&Condition> {
        crate::conditions::find(&self.conditions, type_)
    }

    /// Whether the condition of `type_` has `status`.
    pub fn condition_is(
        &self,
        type_: crate::conditions::ConditionType,
        status: crate::conditions::ConditionStatus,
    ) -> bool {
        self.condition(type_)
            .is_some_and(|c| c.is_status(type_, status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_has_kedas_identity_and_columns() {
        let crd = ScaledJob::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("scaledjobs.keda.sh"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["sj".to_string()]));
        let v = &crd.spec.versions[0];
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Min",
                "Max",
                "Ready",
                "Active",
                "Paused",
                "Triggers",
                "Authentications",
                "Age"
            ]
        );
        let schema = serde_json::to_value(&v.schema).expect("schema");
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        let required: Vec<_> = spec["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
            .collect();
        assert_eq!(required, ["jobTargetRef", "triggers"]);
        assert!(spec["properties"]["jobTargetRef"]["properties"]["template"].is_object());
        // KEDA's CRD values and the one its docs use.
        let strategies = &spec["properties"]["rollout"]["properties"]["strategy"]["enum"];
        assert_eq!(
            strategies,
            &serde_json::json!(["gradual", "immediate", "default"])
        );

        let slim = serde_json::to_string(&super::crd()).expect("JSON");
        assert!(slim.len() < 128 * 1024, "{} bytes", slim.len());
        let slim: serde_json::Value = serde_json::from_str(&slim).expect("JSON");
        let v = &slim["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let job = &v["properties"]["jobTargetRef"];
        assert!(
            job["description"].is_string(),
            "its own description is kept"
        );
        let template = &job["properties"]["template"];
        assert!(template["description"].is_null());
        let containers = &template["properties"]["spec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert!(containers["items"]["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "name")));
        assert!(containers["items"]["properties"]["image"]["description"].is_null());
        assert!(v["properties"]["pollingInterval"]["description"].is_string());
    }

    #[test]
    fn kedas_documented_yaml_parses() {
        let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: rabbitmq-consumer, namespace: default}
spec:
  jobTargetRef:
    parallelism: 1
    completions: 1
    activeDeadlineSeconds: 600
    backoffLimit: 6
    template:
      spec:
        containers:
        - name: consumer
          image: consumer:1
  pollingInterval: 30
  successfulJobsHistoryLimit: 5
  failedJobsHistoryLimit: 5
  envSourceContainerName: consumer
  minReplicaCount: 10
  maxReplicaCount: 100
  rolloutStrategy: gradual
  rollout: {strategy: gradual, propagationPolicy: foreground}
  scalingStrategy:
    strategy: custom
    customScalingQueueLengthDeduction: 1
    customScalingRunningJobPercentage: "0.5"
    pendingPodConditions: [Ready, PodScheduled, AnyOtherCustomPodCondition]
    multipleScalersCalculation: max
  triggers:
  - type: mysql
    metadata: {queryValue: "4", query: "SELECT 1"}
"#;
        let sj: ScaledJob = serde_yaml::from_str(yaml).expect("KEDA's YAML parses");
        assert_eq!(sj.spec.min_replicas(), 10);
        assert_eq!(sj.spec.max_replicas_above_min(), 90);
        assert_eq!(sj.spec.successful_history_limit(), 5);
        assert!(sj.spec.gradual_rollout());
        assert!(sj.spec.foreground_rollout());
        let s = sj.spec.scaling_strategy.expect("scalingStrategy");
        assert_eq!(
            s.custom_scaling_running_job_percentage.as_deref(),
            Some("0.5")
        );
    }

    /// KEDA's `scaledjob_types_test.go`: (max, min) → (MaxReplicaCount(), MinReplicaCount()).
    #[test]
    fn min_and_max_follow_keda() {
        for (max, min, want_max, want_min) in [
            (Some(10), Some(0), 10, 0),
            (Some(10), None, 10, 0),
            (Some(10), Some(1), 9, 1),
            (None, Some(1), 100, 1),
            (None, None, 100, 0),
            (Some(1), Some(10), 1, 1),
        ] {
            let spec = ScaledJobSpec {
                max_replica_count: max,
                min_replica_count: min,
                ..Default::default()
            };
            assert_eq!(
                (spec.max_replicas_above_min(), spec.min_replicas()),
                (want_max, want_min),
                "max {max:?} min {min:?}"
            );
        }
        let spec = ScaledJobSpec::default();
        assert_eq!(spec.successful_history_limit(), 100);
        assert_eq!(spec.failed_history_limit(), 100);
        assert!(!spec.gradual_rollout());
        assert!(!spec.foreground_rollout());
    }

    #[test]
    fn rollout_prefers_the_deprecated_field_when_set() {
        let spec = ScaledJobSpec {
            rollout_strategy: Some("immediate".into()),
            rollout: Some(Rollout {
                strategy: Some("gradual".into()),
                propagation_policy: None,
            }),
            ..Default::default()
        };
        assert!(!spec.gradual_rollout());
        let spec = ScaledJobSpec {
            rollout_strategy: Some(String::new()),
            ..spec
        };
        assert!(spec.gradual_rollout());
        let spec = ScaledJobSpec {
            rollout_strategy: Some("default".into()),
            ..spec
        };
        assert!(!spec.gradual_rollout());
    }

    #[test]
    fn the_paused_annotation_reads_as_go_parses_it() {
        let a = |v: &str| BTreeMap::from([(crate::activation::PAUSED.to_string(), v.to_string())]);
        assert!(!paused_by_annotation(None));
        assert!(!paused_by_annotation(Some(&BTreeMap::new())));
        for v in ["true", "1", "t", "TRUE", "yes", ""] {
            assert!(paused_by_annotation(Some(&a(v))), "{v:?}");
        }
        for v in ["false", "0", "f", "F", "FALSE", "False"] {
            assert!(!paused_by_annotation(Some(&a(v))), "{v:?}");
        }
    }

    #[test]
    fn status_keeps_kedas_capital_paused_key() {
        let status = ScaledJobStatus {
            paused: Some("x".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(&status).expect("JSON");
        assert_eq!(v, serde_json::json!({"Paused": "x"}));
    }
}
