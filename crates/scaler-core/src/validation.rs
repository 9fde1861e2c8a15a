//! KEDA's validation of a ScaledObject, with KEDA's messages, each naming the field at
//! fault (`spec.minReplicaCount: MinReplicaCount=5 must be less than MaxReplicaCount=3`):
//! what the spec alone decides ([`validate_spec`]), what the object and its triggers'
//! scalers decide ([`check`]), and who already manages the target ([`ownership`], given
//! what the cluster holds). The controller reports a failure as Ready False, with a Warning
//! Event, and scales nothing.

use kube::ResourceExt;

use crate::activation::{pause_of, PAUSED_REPLICAS};
use crate::gvk::Gvk;
use crate::hpa::{hpa_name, MAX_NAME_LENGTH};
use crate::modifiers::FormulaError;
use crate::quantity::MilliQuantity;
use crate::scaled_object::{ScaleTriggers, ScaledObject};
use crate::{MetricSpec, TriggerError, SCALED_OBJECT_NAME_LABEL};

/// The annotation that lets a ScaledObject take over an existing HPA it names.
pub const TRANSFER_HPA_OWNERSHIP: &str = "scaledobject.keda.sh/transfer-hpa-ownership";

/// A field the validation refuses: its path in the object and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's path, as `spec.triggers[1].name`.
    pub field: String,
    /// What is wrong, in KEDA's words where KEDA has them.
    pub message: String,
}

impl FieldError {
    /// `field` is wrong: `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a ScaledObject cannot be scaled, as far as it and its triggers' scalers tell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A field of the object.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// A trigger whose scaler cannot be built.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
}

impl Problem {
    /// The path of the field at fault.
    pub fn field(&self) -> String {
        match self {
            Problem::Field(e) => e.field.clone(),
            Problem::Trigger(e) => e.field(),
        }
    }
}

/// The first problem of `so` that the object and its triggers' scalers (`built`, one per
/// trigger) show, in the order reported: the spec (KEDA's checks, before any scaler, as
/// KEDA's controller checks it), each trigger's scaler, the metric targets the HPA would
/// carry, the pause annotation. What the cluster holds is asked apart ([`ownership`]).
pub fn check(so: &ScaledObject, built: &[Result<MetricSpec, TriggerError>]) -> Result<(), Problem> {
    validate_spec(so)?;
    if let Some(e) = built.iter().find_map(|b| b.as_ref().err()) {
        return Err(e.clone().into());
    }
    metric_targets(so, built)?;
    pause_of(so.annotations())
        .map_err(|e| FieldError::new(format!("metadata.annotations[{PAUSED_REPLICAS}]"), e))?;
    Ok(())
}

/// Triggers, replica bounds, fallback, scalingModifiers and names, as KEDA checks them.
pub fn validate_spec(so: &ScaledObject) -> Result<(), FieldError> {
    let spec = &so.spec;
    validate_triggers(&spec.triggers)?;
    let min = match spec.min_replica_count {
        Some(_) => spec.hpa_min_replicas(),
        None => 0,
    };
    let max = spec.max_replicas();
    if min > max {
        return Err(FieldError::new(
            "spec.minReplicaCount",
            format!("MinReplicaCount={min} must be less than MaxReplicaCount={max}"),
        ));
    }
    if let Some(idle) = spec.idle_replica_count {
        if idle >= min {
            return Err(FieldError::new(
                "spec.idleReplicaCount",
                format!("IdleReplicaCount={idle} must be less than MinReplicaCount={min}"),
            ));
        }
    }
    validate_fallback(so)?;
    validate_modifiers(so)?;
    validate_names(so)
}

/// KEDA's `CheckFallbackValid` and its check of the `scalingModifiers` behaviour.
fn validate_fallback(so: &ScaledObject) -> Result<(), FieldError> {
    let spec = &so.spec;
    let Some(f) = &spec.fallback else {
        return Ok(());
    };
    if f.failure_threshold < 0 || f.replicas < 0 {
        let field = if f.failure_threshold < 0 {
            "spec.fallback.failureThreshold"
        } else {
            "spec.fallback.replicas"
        };
        return Err(FieldError::new(
            field,
            format!(
                "FailureThreshold={} & Replicas={} must both be greater than or equal to 0",
                f.failure_threshold, f.replicas
            ),
        ));
    }
    if !spec.uses_modifiers() {
        // KEDA's message names AverageValue, but any trigger other than cpu/memory counts.
        let usable = spec
            .triggers
            .iter()
            .any(|t| !matches!(t.type_.as_str(), "cpu" | "memory"));
        if !usable {
            return Err(FieldError::new("spec.fallback", "at least one trigger (that is not cpu or memory) has to have the `AverageValue` type for the fallback to be enabled"));
        }
    }
    let formula = spec
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref())
        .and_then(|m| m.formula.as_deref())
        .is_some_and(|f| !f.is_empty());
    if f.behavior.as_deref() == Some("scalingModifiers") && !formula {
        return Err(FieldError::new(
            "spec.fallback.behavior",
            "scalingModifiers fallback behavior requires scalingModifiers.formula to be defined",
        ));
    }
    Ok(())
}

/// KEDA's `ValidateAndCompileScalingModifiers`, and a composite target the HPA can take.
fn validate_modifiers(so: &ScaledObject) -> Result<(), FieldError> {
    const AT: &str = "spec.advanced.scalingModifiers";
    let Some(m) = crate::modifiers::of_scaled_object(so) else {
        return Ok(());
    };
    let m = m.map_err(|e| match e {
        FormulaError::Field { field, message } => FieldError::new(format!("{AT}.{field}"), message),
        other => FieldError::new(format!("{AT}.formula"), other.to_string()),
    })?;
    if MilliQuantity::from_value(m.target).milli() == 0 {
        return Err(FieldError::new(format!("{AT}.target"), TOO_SMALL));
    }
    Ok(())
}

/// Why a target under a thousandth is refused.
const TOO_SMALL: &str = "the target must be at least 0.001: the HPA takes it in thousandths \
     (int64(target × 1000), as KEDA writes it) and refuses a target of 0";

/// KEDA's `verifyName`: the name is a label value, and so is the HPA's.
fn validate_names(so: &ScaledObject) -> Result<(), FieldError> {
    let name = so.metadata.name.as_deref().unwrap_or("");
    if name.len() > MAX_NAME_LENGTH {
        return Err(FieldError::new(
            "metadata.name",
            format!(
                "scaledobject name {name:?} is {} characters long; must be no more than {MAX_NAME_LENGTH} characters because it is used as the {SCALED_OBJECT_NAME_LABEL:?} label value",
                name.len()
            ),
        ));
    }
    let hpa = hpa_name(so);
    if hpa.len() > MAX_NAME_LENGTH {
        let field = match so.spec.custom_hpa_name() {
            Some(_) => "spec.advanced.horizontalPodAutoscalerConfig.name",
            None => "metadata.name",
        };
        return Err(FieldError::new(
            field,
            format!(
                "HPA name {hpa:?} derived from scaledobject is {} characters long; must be no more than {MAX_NAME_LENGTH} characters; set spec.advanced.horizontalPodAutoscalerConfig.name to a shorter name or shorten the scaledobject name",
                hpa.len()
            ),
        ));
    }
    Ok(())
}

/// KEDA's `ValidateTriggers`, shared by ScaledObjects and ScaledJobs: at least one trigger,
/// unique trigger names, no `useCachedMetrics` where KEDA refuses it.
pub fn validate_triggers(triggers: &[ScaleTriggers]) -> Result<(), FieldError> {
    if triggers.is_empty() {
        return Err(FieldError::new(
            "spec.triggers",
            "no triggers defined in the ScaledObject/ScaledJob",
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in triggers.iter().enumerate() {
        if t.use_cached_metrics == Some(true)
            && matches!(t.type_.as_str(), "cpu" | "memory" | "cron")
        {
            return Err(FieldError::new(
                format!("spec.triggers[{i}].useCachedMetrics"),
                format!(
                    "property \"useCachedMetrics\" is not supported for {:?} scaler",
                    t.type_
                ),
            ));
        }
        if let Some(n) = t.name.as_deref().filter(|n| !n.is_empty()) {
            if !names.insert(n) {
                return Err(FieldError::new(
                    format!("spec.triggers[{i}].name"),
                    format!("triggerName {n:?} is defined multiple times in the ScaledObject/ScaledJob, but it must be unique"),
                ));
            }
        }
    }
    Ok(())
}

/// Every metric target the HPA would carry can be written: KEDA writes a target in
/// thousandths (`int64(target × 1000)`), so one under 0.001 (or negative) is 0, which the
/// API server refuses in an HPA. KEDA lets the HPA's creation fail; here the trigger's
/// parameter is named. With scalingModifiers the composite target is the HPA's (checked in
/// [`validate_spec`]).
pub fn metric_targets(
    so: &ScaledObject,
    built: &[Result<MetricSpec, TriggerError>],
) -> Result<(), FieldError> {
    if so.spec.uses_modifiers() {
        return Ok(());
    }
    for (i, spec) in built.iter().enumerate() {
        let Ok(spec) = spec else {
            continue;
        };
        if spec.target.milli() > 0 {
            continue;
        }
        let type_ = so
            .spec
            .triggers
            .get(i)
            .map(|t| t.type_.as_str())
            .unwrap_or("");
        let field = match crate::scalers::target_parameter(type_) {
            Some(p) => format!("spec.triggers[{i}].metadata.{p}"),
            None => format!("spec.triggers[{i}]"),
        };
        return Err(FieldError::new(field, format!("({type_}) {TOO_SMALL}")));
    }
    Ok(())
}

/// Whether `other` claimed before `so`: created earlier, or at the same second with a
/// name sorting first (creation times have second precision).
pub fn claimed_first(other: &ScaledObject, so: &ScaledObject) -> bool {
    let key = |o: &ScaledObject| {
        (
            o.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(i64::MAX),
            o.metadata.name.clone().unwrap_or_default(),
        )
    };
    key(other) < key(so)
}

/// Another ScaledObject in the namespace, as far as ownership goes.
#[derive(Debug, Clone)]
pub struct OtherScaledObject {
    /// Its name.
    pub name: String,
    /// Its target's kind.
    pub target_gvk: Gvk,
    /// Its target's name.
    pub target_name: String,
    /// The HPA it owns (or would).
    pub hpa_name: String,
}

/// An HPA in the namespace.
#[derive(Debug, Clone)]
pub struct ExistingHpa {
    /// Its name.
    pub name: String,
    /// Its target's kind.
    pub target_gvk: Gvk,
    /// Its target's name.
    pub target_name: String,
    /// The ScaledObject named among its owners, if any.
    pub owner_scaled_object: Option<String>,
}

/// Whether the target (`target_gvk`, `so`'s target name) or the HPA name is already
/// someone else's, in KEDA's words; another ScaledObject is named before the HPA it owns.
/// `others` are the ScaledObjects that claimed first (see [`claimed_first`]): a newcomer
/// is refused, the first owner keeps working, as with KEDA's admission check. An HPA of another owner may be taken over with
/// `transfer-hpa-ownership: "true"` when the ScaledObject names it as its custom HPA.
pub fn ownership(
    so: &ScaledObject,
    target_gvk: &Gvk,
    others: &[OtherScaledObject],
    hpas: &[ExistingHpa],
) -> Result<(), FieldError> {
    const TARGET: &str = "spec.scaleTargetRef";
    const HPA_NAME: &str = "spec.advanced.horizontalPodAutoscalerConfig.name";
    let name = so.metadata.name.as_deref().unwrap_or("");
    let target = &so.spec.scale_target_ref.name;
    for o in others.iter().filter(|o| o.name != name) {
        if &o.target_gvk == target_gvk && &o.target_name == target {
            return Err(FieldError::new(TARGET, format!(
                "the workload '{target}' of type '{target_gvk}' is already managed by the ScaledObject '{}'",
                o.name
            )));
        }
    }
    for h in hpas {
        if &h.target_gvk != target_gvk || &h.target_name != target {
            continue;
        }
        if h.owner_scaled_object.as_deref() == Some(name) {
            continue;
        }
        let transfer = so
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRANSFER_HPA_OWNERSHIP))
            .is_some_and(|v| v == "true");
        if !transfer {
            return Err(FieldError::new(
                TARGET,
                format!(
                "the workload '{target}' of type '{target_gvk}' is already managed by the hpa '{}'",
                h.name
            ),
            ));
        }
        if so.spec.custom_hpa_name() != Some(h.name.as_str()) {
            return Err(FieldError::new(HPA_NAME, format!(
                "the existing hpa '{}' for workload '{target}' of type '{target_gvk}' must be specified by name in advanced settings to enable ownership transfer",
                h.name
            )));
        }
    }
    let hpa = hpa_name(so);
    if let Some(o) = others.iter().find(|o| o.name != name && o.hpa_name == hpa) {
        let field = match so.spec.custom_hpa_name() {
            Some(_) => HPA_NAME,
            None => "metadata.name",
        };
        return Err(FieldError::new(
            field,
            format!(
                "the HPA '{hpa}' is already managed by the ScaledObject '{}'",
                o.name
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod matrix;

#[cfg(test)]
mod tests {
    use super::*;

    fn so(spec: serde_json::Value, annotations: serde_json::Value) -> ScaledObject {
        let mut s = serde_json::json!({
            "scaleTargetRef": {"name": "web"},
            "triggers": [{"type": "kafka", "metadata": {}}]
        });
        if let (Some(o), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            o.extend(extra.clone());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "so", "namespace": "ns", "annotations": annotations},
            "spec": s
        }))
        .expect("ScaledObject")
    }

    #[test]
    fn spec_checks_with_kedas_messages() {
        let none = serde_json::json!({});
        let cases = [
            (serde_json::json!({}), None),
            (
                serde_json::json!({"triggers": []}),
                Some("no triggers defined"),
            ),
            (
                serde_json::json!({"minReplicaCount": 5, "maxReplicaCount": 3}),
                Some("MinReplicaCount=5 must be less than MaxReplicaCount=3"),
            ),
            (
                serde_json::json!({"minReplicaCount": 3, "maxReplicaCount": 3}),
                None,
            ),
            (
                serde_json::json!({"idleReplicaCount": 0}),
                Some("IdleReplicaCount=0 must be less than MinReplicaCount=0"),
            ),
            (
                serde_json::json!({"idleReplicaCount": 0, "minReplicaCount": 0}),
                None,
            ),
            (
                serde_json::json!({"idleReplicaCount": 2, "minReplicaCount": 2}),
                Some("IdleReplicaCount=2 must be less than MinReplicaCount=2"),
            ),
            (
                serde_json::json!({"triggers": [{"type": "cron", "useCachedMetrics": true, "metadata": {}}]}),
                Some("property \"useCachedMetrics\" is not supported for \"cron\" scaler"),
            ),
            (
                serde_json::json!({"triggers": [{"type": "kafka", "useCachedMetrics": true, "metadata": {}}]}),
                None,
            ),
            (
                serde_json::json!({"triggers": [{"type": "kafka", "name": "a", "metadata": {}}, {"type": "cron", "name": "a", "metadata": {}}]}),
                Some("triggerName \"a\" is defined multiple times"),
            ),
            (
                serde_json::json!({"fallback": {"failureThreshold": 3, "replicas": 2}, "triggers": [{"type": "kafka", "metricType": "Value", "metadata": {}}]}),
                None,
            ),
            (
                serde_json::json!({"fallback": {"failureThreshold": 3, "replicas": 2}, "triggers": [{"type": "cpu", "metadata": {}}]}),
                Some("has to have the `AverageValue` type"),
            ),
            (
                serde_json::json!({"fallback": {"failureThreshold": 3, "replicas": 2}}),
                None,
            ),
        ];
        for (spec, want) in cases {
            let got = validate_spec(&so(spec.clone(), none.clone()));
            match want {
                None => assert!(got.is_ok(), "{spec}: {got:?}"),
                Some(text) => {
                    let e = got.expect_err(&spec.to_string()).to_string();
                    assert!(e.contains(text), "{spec}: {e}");
                }
            }
        }
    }

    #[test]
    fn ownership_conflicts() {
        let deploy = Gvk::from_api_version("apps/v1", "Deployment");
        let plain = so(serde_json::json!({}), serde_json::json!({}));
        let foreign = ExistingHpa {
            name: "legacy".into(),
            target_gvk: deploy.clone(),
            target_name: "web".into(),
            owner_scaled_object: None,
        };
        let e = ownership(&plain, &deploy, &[], std::slice::from_ref(&foreign)).expect_err("taken");
        assert_eq!(e.to_string(), "spec.scaleTargetRef: the workload 'web' of type 'apps/v1.Deployment' is already managed by the hpa 'legacy'");
        // Our own HPA, or one for another workload, is no conflict.
        let ours = ExistingHpa {
            owner_scaled_object: Some("so".into()),
            ..foreign.clone()
        };
        assert!(ownership(&plain, &deploy, &[], &[ours]).is_ok());
        let elsewhere = ExistingHpa {
            target_name: "api".into(),
            ..foreign.clone()
        };
        assert!(ownership(&plain, &deploy, &[], &[elsewhere]).is_ok());
        // Transfer: only with the HPA named as the custom HPA.
        let transfer = so(
            serde_json::json!({}),
            serde_json::json!({TRANSFER_HPA_OWNERSHIP: "true"}),
        );
        let e = ownership(&transfer, &deploy, &[], std::slice::from_ref(&foreign))
            .expect_err("unnamed");
        assert!(
            e.to_string().starts_with("spec.advanced.horizontalPodAutoscalerConfig.name: the existing hpa 'legacy' for workload 'web' of type 'apps/v1.Deployment' must be specified by name in advanced settings"),
            "{e}"
        );
        let named = so(
            serde_json::json!({"advanced": {"horizontalPodAutoscalerConfig": {"name": "legacy"}}}),
            serde_json::json!({TRANSFER_HPA_OWNERSHIP: "true"}),
        );
        assert!(ownership(&named, &deploy, &[], &[foreign]).is_ok());
        // Another ScaledObject on the same target, or with the same HPA name.
        let other = OtherScaledObject {
            name: "first".into(),
            target_gvk: deploy.clone(),
            target_name: "web".into(),
            hpa_name: "keda-hpa-first".into(),
        };
        let e = ownership(&plain, &deploy, std::slice::from_ref(&other), &[]).expect_err("taken");
        assert_eq!(e.to_string(), "spec.scaleTargetRef: the workload 'web' of type 'apps/v1.Deployment' is already managed by the ScaledObject 'first'");
        let statefulset = Gvk::from_api_version("apps/v1", "StatefulSet");
        assert!(
            ownership(&plain, &statefulset, std::slice::from_ref(&other), &[]).is_ok(),
            "same name, other kind"
        );
        let same_hpa = OtherScaledObject {
            target_name: "api".into(),
            hpa_name: "keda-hpa-so".into(),
            ..other
        };
        let e = ownership(&plain, &deploy, &[same_hpa], &[]).expect_err("HPA name taken");
        assert_eq!(
            e.to_string(),
            "metadata.name: the HPA 'keda-hpa-so' is already managed by the ScaledObject 'first'"
        );
    }
}
