//! The HPA a ScaledObject should have, as a pure function of the ScaledObject and its
//! triggers' metric specs. The activator writes what this returns.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec as HpaMetricSpec, MetricTarget,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Resource;

use crate::scaled_object::ScaledObject;
use crate::scalers::{MetricSpec, MetricTargetType};
use crate::SCALED_OBJECT_NAME_LABEL;

/// The field manager and `app.kubernetes.io/managed-by` value of what eventscale writes.
pub const MANAGER: &str = "eventscale";

/// Longest label value, and so longest ScaledObject and HPA name.
pub const MAX_NAME_LENGTH: usize = 63;

/// Why no HPA can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpaError {
    /// The ScaledObject has no uid yet (it was never stored).
    #[error("ScaledObject {0} has no metadata.uid; it must come from the API server")]
    MissingUid(String),
    /// A name does not fit in a label value.
    #[error("{field} {value:?} is longer than {MAX_NAME_LENGTH} characters")]
    NameTooLong {
        /// Which name.
        field: &'static str,
        /// The name.
        value: String,
    },
    /// `spec.advanced.scalingModifiers` is invalid.
    #[error("{0}")]
    Modifiers(#[from] crate::modifiers::FormulaError),
    /// Two triggers produce the same metric name.
    #[error("metricName {metric} defined multiple times in ScaledObject {so}")]
    DuplicateMetric {
        /// The metric.
        metric: String,
        /// The ScaledObject's name.
        so: String,
    },
}

/// The HPA's name: `advanced.horizontalPodAutoscalerConfig.name` or `keda-hpa-<name>`.
pub fn hpa_name(so: &ScaledObject) -> String {
    match so.spec.custom_hpa_name() {
        Some(n) => n.to_string(),
        None => format!(
            "keda-hpa-{}",
            so.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// `scaledobject.keda.sh/hpa-excluded-labels`: ScaledObject labels not copied to the HPA.
pub const EXCLUDED_LABELS: &str = "scaledobject.keda.sh/hpa-excluded-labels";

/// The user's behavior, with scale-in (`paused-scale-in`) or scale-out
/// (`paused-scale-out`) disabled by `selectPolicy: Disabled`.
fn behavior(
    so: &ScaledObject,
    annotations: &BTreeMap<String, String>,
) -> Option<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior> {
    use crate::activation::{annotation_flag, PAUSED_SCALE_IN, PAUSED_SCALE_OUT};
    let mut b = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
        .and_then(|c| c.behavior.clone());
    let disable = |rules: &mut Option<k8s_openapi::api::autoscaling::v2::HPAScalingRules>| {
        rules.get_or_insert_with(Default::default).select_policy = Some("Disabled".into());
    };
    if annotation_flag(annotations, PAUSED_SCALE_IN) {
        disable(&mut b.get_or_insert_with(Default::default).scale_down);
    }
    if annotation_flag(annotations, PAUSED_SCALE_OUT) {
        disable(&mut b.get_or_insert_with(Default::default).scale_up);
    }
    b
}

/// The desired HPA (in autoscaling/v2 shape; v2beta2 has the same fields for what is set).
pub fn desired_hpa(
    so: &ScaledObject,
    metrics: &[MetricSpec],
) -> Result<HorizontalPodAutoscaler, HpaError> {
    let so_name = so.metadata.name.clone().unwrap_or_default();
    if so_name.len() > MAX_NAME_LENGTH {
        return Err(HpaError::NameTooLong {
            field: "metadata.name",
            value: so_name,
        });
    }
    let name = hpa_name(so);
    if name.len() > MAX_NAME_LENGTH {
        return Err(HpaError::NameTooLong {
            field: "spec.advanced.horizontalPodAutoscalerConfig.name",
            value: name,
        });
    }
    let owner = so
        .controller_owner_ref(&())
        .ok_or_else(|| HpaError::MissingUid(so_name.clone()))?;

    let mut seen = std::collections::BTreeSet::new();
    for m in metrics {
        if !seen.insert(m.name.to_ascii_lowercase()) {
            return Err(HpaError::DuplicateMetric {
                metric: m.name.clone(),
                so: so_name,
            });
        }
    }

    let annotations = so.metadata.annotations.clone().unwrap_or_default();
    // Labels listed in `scaledobject.keda.sh/hpa-excluded-labels` stay off the HPA.
    let excluded: Vec<&str> = annotations
        .get(EXCLUDED_LABELS)
        .map(|v| v.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = so.metadata.labels.clone().unwrap_or_default();
    labels.retain(|k, _| !excluded.contains(&k.as_str()));
    labels.insert("app.kubernetes.io/name".into(), name.clone());
    labels.insert(
        "app.kubernetes.io/version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    labels.insert("app.kubernetes.io/part-of".into(), so_name.clone());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());

    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            SCALED_OBJECT_NAME_LABEL.to_string(),
            so_name.clone(),
        )])),
        ..Default::default()
    };
    // With scalingModifiers the HPA reads one composite metric instead of the triggers'.
    let composite;
    let metrics = match crate::modifiers::of_scaled_object(so) {
        Some(m) => {
            composite = [crate::modifiers::composite_spec(so, &m?)];
            &composite[..]
        }
        None => metrics,
    };
    let hpa_metrics = metrics
        .iter()
        .map(|m| {
            let q = Some(Quantity(m.target.to_string()));
            let target = match m.target_type {
                MetricTargetType::AverageValue => MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: q,
                    ..Default::default()
                },
                MetricTargetType::Value => MetricTarget {
                    type_: "Value".into(),
                    value: q,
                    ..Default::default()
                },
            };
            HpaMetricSpec {
                type_: "External".into(),
                external: Some(ExternalMetricSource {
                    metric: MetricIdentifier {
                        name: m.name.clone(),
                        selector: Some(selector.clone()),
                    },
                    target,
                }),
                ..Default::default()
            }
        })
        .collect();

    let target = &so.spec.scale_target_ref;
    Ok(HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: so.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations.clone()).filter(|a| !a.is_empty()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(target.api_version_or_default().to_string()),
                kind: target.kind_or_default().to_string(),
                name: target.name.clone(),
            },
            min_replicas: Some(so.spec.hpa_min_replicas()),
            max_replicas: so.spec.max_replicas(),
            metrics: Some(hpa_metrics),
            behavior: behavior(so, &annotations),
        }),
        status: None,
    })
}

/// The ScaledObject field an HPA field comes from: `spec.behavior…` from
/// `spec.advanced.horizontalPodAutoscalerConfig.behavior…`, metric `i` from trigger `i` (or
/// from `scalingModifiers`), the bounds from the replica counts, the name from the
/// ScaledObject's or the custom one.
pub fn scaled_object_field(so: &ScaledObject, hpa_field: &str) -> String {
    const CUSTOM_NAME: &str = "spec.advanced.horizontalPodAutoscalerConfig.name";
    if let Some(rest) = hpa_field.strip_prefix("spec.metrics[") {
        if so.spec.uses_modifiers() {
            return "spec.advanced.scalingModifiers".into();
        }
        // The HPA carries one metric per trigger, in order.
        if let Some((i, _)) = rest.split_once(']') {
            return format!("spec.triggers[{i}]");
        }
    }
    if hpa_field == "metadata.name" {
        return match so.spec.custom_hpa_name() {
            Some(_) => CUSTOM_NAME.into(),
            None => "metadata.name".into(),
        };
    }
    let renames = [
        (
            "spec.behavior",
            "spec.advanced.horizontalPodAutoscalerConfig.behavior",
        ),
        ("spec.minReplicas", "spec.minReplicaCount"),
        ("spec.maxReplicas", "spec.maxReplicaCount"),
        ("spec.scaleTargetRef", "spec.scaleTargetRef"),
        ("metadata.labels", "metadata.labels"),
        ("metadata.annotations", "metadata.annotations"),
    ];
    for (from, to) in renames {
        if let Some(rest) = hpa_field.strip_prefix(from) {
            if rest.is_empty() || rest.starts_with(['.', '[']) {
                return format!("{to}{rest}");
            }
        }
    }
    "spec".into()
}

/// Why the API server refused the HPA `hpa` made for `so`, each of its `causes` (field,
/// message) named by the ScaledObject field it comes from; `message` when it gave none.
pub fn refusal(so: &ScaledObject, hpa: &str, causes: &[(String, String)], message: &str) -> String {
    if causes.is_empty() {
        return format!("spec: the API server refused the HPA {hpa:?} it makes: {message}");
    }
    causes
        .iter()
        .map(|(field, why)| {
            format!(
                "{}: {why} (the API server refused {field} of the HPA {hpa:?} it makes)",
                scaled_object_field(so, field)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_directions_and_excluded_labels() {
        let mut s = so("");
        s.metadata.labels = Some(BTreeMap::from([
            ("team".to_string(), "a".to_string()),
            ("secret-tier".to_string(), "x".to_string()),
        ]));
        s.metadata.annotations = Some(BTreeMap::from([
            (
                crate::activation::PAUSED_SCALE_IN.to_string(),
                "true".to_string(),
            ),
            (
                EXCLUDED_LABELS.to_string(),
                "secret-tier, other".to_string(),
            ),
        ]));
        let h = desired_hpa(&s, &[spec("s0-cron")]).expect("hpa");
        let labels = h.metadata.labels.unwrap_or_default();
        assert!(labels.contains_key("team") && !labels.contains_key("secret-tier"));
        let b = h.spec.and_then(|s| s.behavior).expect("behavior");
        assert_eq!(
            b.scale_down.and_then(|r| r.select_policy).as_deref(),
            Some("Disabled")
        );
        assert!(b.scale_up.is_none(), "scale-out untouched");
    }

    fn so(extra: &str) -> ScaledObject {
        let yaml = format!(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web, namespace: ns1, uid: 1234, labels: {{team: a}}}}
spec:
  scaleTargetRef: {{name: web-deploy}}
  {extra}
  triggers: [{{type: cron, metadata: {{}}}}]
"#
        );
        serde_yaml::from_str(&yaml).expect("valid")
    }

    fn spec(name: &str) -> MetricSpec {
        MetricSpec {
            name: name.into(),
            target_type: MetricTargetType::AverageValue,
            target: crate::quantity::MilliQuantity::from_value(1.0),
        }
    }

    #[test]
    fn refused_hpa_fields_are_named_as_the_scaled_object_names_them() {
        let plain = so("");
        let custom = so("advanced: {horizontalPodAutoscalerConfig: {name: mine}}");
        let modified = so("advanced: {scalingModifiers: {formula: \"a\", target: \"1\"}}");
        for (s, hpa_field, want) in [
            (&plain, "spec.behavior.scaleDown.stabilizationWindowSeconds", "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds"),
            (&plain, "spec.behavior", "spec.advanced.horizontalPodAutoscalerConfig.behavior"),
            (&plain, "spec.metrics[2].external.target.averageValue", "spec.triggers[2]"),
            (&modified, "spec.metrics[0].external.target.value", "spec.advanced.scalingModifiers"),
            (&plain, "spec.minReplicas", "spec.minReplicaCount"),
            (&plain, "spec.maxReplicas", "spec.maxReplicaCount"),
            (&plain, "metadata.name", "metadata.name"),
            (&custom, "metadata.name", "spec.advanced.horizontalPodAutoscalerConfig.name"),
            (&plain, "metadata.labels[x]", "metadata.labels[x]"),
            (&plain, "spec.behaviorX", "spec"),
            (&plain, "status", "spec"),
        ] {
            assert_eq!(scaled_object_field(s, hpa_field), want, "{hpa_field}");
        }
        let causes = [(
            "spec.behavior.scaleDown.stabilizationWindowSeconds".to_string(),
            "Invalid value: 7200: must be less than or equal to 3600".to_string(),
        )];
        assert_eq!(
            refusal(&plain, "keda-hpa-web", &causes, "ignored"),
            "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds: Invalid value: 7200: must be less than or equal to 3600 (the API server refused spec.behavior.scaleDown.stabilizationWindowSeconds of the HPA \"keda-hpa-web\" it makes)"
        );
        assert_eq!(
            refusal(&plain, "keda-hpa-web", &[], "forbidden"),
            "spec: the API server refused the HPA \"keda-hpa-web\" it makes: forbidden"
        );
    }

    #[test]
    fn scaling_modifiers_put_one_composite_metric_on_the_hpa() {
        let with = |formula: &str, target: &str| {
            let mut so = so("minReplicaCount: 1");
            so.spec.triggers[0].name = Some("trig_one".into());
            so.spec.advanced = serde_yaml::from_str(&format!(
                "scalingModifiers: {{formula: \"{formula}\", target: \"{target}\", metricType: Value}}"
            ))
            .expect("advanced");
            so
        };
        let hpa = desired_hpa(&with("trig_one * 2", "2.5"), &[spec("s0-cron-UTC-x")]).expect("hpa");
        let metrics = hpa.spec.and_then(|s| s.metrics).expect("metrics");
        assert_eq!(metrics.len(), 1);
        let ext = metrics[0].external.as_ref().expect("external");
        assert_eq!(ext.metric.name, "composite-metric");
        assert_eq!(ext.target.type_, "Value");
        assert_eq!(ext.target.value, Some(Quantity("2500m".into())));
        let err = desired_hpa(&with("trig_two + 1", "2"), &[spec("s0-cron-UTC-x")])
            .expect_err("unknown name");
        assert_eq!(
            err.to_string(),
            "error compiling formula: unknown name trig_two"
        );
        let err = desired_hpa(&with("trig_one", "0"), &[]).expect_err("target");
        assert!(err.to_string().contains("scalingModifiers.target"), "{err}");
    }

    #[test]
    fn builds_kedas_hpa() {
        let hpa = desired_hpa(&so("minReplicaCount: 1"), &[spec("s0-cron-UTC-x")]).expect("hpa");
        assert_eq!(hpa.metadata.name.as_deref(), Some("keda-hpa-web"));
        let labels = hpa.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["app.kubernetes.io/part-of"], "web");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "eventscale");
        assert_eq!(labels["team"], "a");
        let owner = &hpa.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ScaledObject", Some(true))
        );
        let spec_ = hpa.spec.as_ref().expect("spec");
        assert_eq!((spec_.min_replicas, spec_.max_replicas), (Some(1), 100));
        assert_eq!(spec_.scale_target_ref.kind, "Deployment");
        assert_eq!(
            spec_.scale_target_ref.api_version.as_deref(),
            Some("apps/v1")
        );
        let ext = spec_.metrics.as_ref().expect("metrics")[0]
            .external
            .as_ref()
            .expect("external");
        assert_eq!(ext.metric.name, "s0-cron-UTC-x");
        assert_eq!(
            ext.metric
                .selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .map(|m| m[SCALED_OBJECT_NAME_LABEL].as_str()),
            Some("web")
        );
        assert_eq!(ext.target.type_, "AverageValue");
        assert_eq!(ext.target.average_value, Some(Quantity("1".into())));
    }

    #[test]
    fn min_zero_or_unset_is_one_and_custom_name_is_used() {
        for extra in ["", "minReplicaCount: 0"] {
            let hpa = desired_hpa(&so(extra), &[]).expect("hpa");
            assert_eq!(hpa.spec.and_then(|s| s.min_replicas), Some(1), "{extra:?}");
        }
        let hpa = desired_hpa(
            &so("advanced: {horizontalPodAutoscalerConfig: {name: mine}}\n  maxReplicaCount: 7"),
            &[],
        )
        .expect("hpa");
        assert_eq!(hpa.metadata.name.as_deref(), Some("mine"));
        assert_eq!(hpa.spec.map(|s| s.max_replicas), Some(7));
    }

    #[test]
    fn rejects_duplicates_long_names_and_unsaved_objects() {
        let err = desired_hpa(&so(""), &[spec("s0-a"), spec("S0-A")]).expect_err("dup");
        assert_eq!(
            err.to_string(),
            "metricName S0-A defined multiple times in ScaledObject web"
        );
        let mut long = so("");
        long.metadata.name = Some("x".repeat(64));
        assert!(matches!(
            desired_hpa(&long, &[]),
            Err(HpaError::NameTooLong { .. })
        ));
        let mut unsaved = so("");
        unsaved.metadata.uid = None;
        assert!(matches!(
            desired_hpa(&unsaved, &[]),
            Err(HpaError::MissingUid(_))
        ));
    }
}

/// One trigger's reading, for [`expected_replicas`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The metric value.
    pub value: f64,
    /// The metric target.
    pub target: f64,
    /// Whether the trigger is active.
    pub active: bool,
}

/// The replica count eventscale and the HPA would settle on for these readings, with the
/// target at 1 replica: inactive with `idleReplicaCount` set → it, inactive with
/// `minReplicaCount` 0 → 0;
/// otherwise each metric proposes ceil(value / target) (the AverageValue rule; for a Value
/// target that is the proposal from one replica), the largest wins, clamped to the HPA's
/// min and max. Failed triggers are left out by the caller.
pub fn expected_replicas(spec: &crate::ScaledObjectSpec, readings: &[Reading]) -> i32 {
    let active = readings.iter().any(|r| r.active);
    if !active {
        if let Some(idle) = spec.idle_replica_count {
            return idle;
        }
        if spec.min_replica_count.unwrap_or(0) == 0 {
            return 0;
        }
    }
    let proposal = readings
        .iter()
        .filter(|r| r.target > 0.0 && r.value.is_finite())
        .map(|r| (r.value / r.target).ceil())
        .fold(0.0_f64, f64::max);
    let proposal = if proposal >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        proposal as i32
    };
    proposal.clamp(
        spec.hpa_min_replicas(),
        spec.max_replicas().max(spec.hpa_min_replicas()),
    )
}

#[cfg(test)]
mod expected_tests {
    use super::*;

    fn spec(min: Option<i32>, max: Option<i32>, idle: Option<i32>) -> crate::ScaledObjectSpec {
        crate::ScaledObjectSpec {
            min_replica_count: min,
            max_replica_count: max,
            idle_replica_count: idle,
            ..Default::default()
        }
    }

    fn r(value: f64, target: f64, active: bool) -> Reading {
        Reading {
            value,
            target,
            active,
        }
    }

    #[test]
    fn replicas_table() {
        let cases = [
            (
                "lag 12 / 5 → 3",
                spec(None, None, None),
                vec![r(12.0, 5.0, true)],
                3,
            ),
            (
                "inactive, min 0 → 0",
                spec(None, None, None),
                vec![r(0.0, 5.0, false)],
                0,
            ),
            (
                "inactive, idle → idle",
                spec(Some(2), None, Some(0)),
                vec![r(0.0, 5.0, false)],
                0,
            ),
            (
                "inactive, min 0 with idle 1",
                spec(Some(0), None, Some(1)),
                vec![r(0.0, 5.0, false)],
                1,
            ),
            (
                "inactive, min 2 → 2",
                spec(Some(2), None, None),
                vec![r(0.0, 5.0, false)],
                2,
            ),
            (
                "clamped to max",
                spec(None, Some(10), None),
                vec![r(1000.0, 1.0, true)],
                10,
            ),
            (
                "at least 1 when active",
                spec(None, None, None),
                vec![r(0.5, 100.0, true)],
                1,
            ),
            (
                "largest proposal wins",
                spec(None, None, None),
                vec![r(35.0, 5.0, true), r(4.0, 1.0, false)],
                7,
            ),
            ("no readings, min 3", spec(Some(3), None, None), vec![], 3),
        ];
        for (what, s, readings, want) in cases {
            assert_eq!(expected_replicas(&s, &readings), want, "{what}");
        }
    }
}
