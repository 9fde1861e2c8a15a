//! KEDA's validation of a ScaledObject, with KEDA's messages: what the spec alone decides
//! ([`validate_spec`]) and who already manages the target ([`ownership`], given what the
//! cluster holds). The controller reports a failure as Ready False and scales nothing.

use crate::gvk::Gvk;
use crate::scaled_object::{ScaleTriggers, ScaledObject};

/// The annotation that lets a ScaledObject take over an existing HPA it names.
pub const TRANSFER_HPA_OWNERSHIP: &str = "scaledobject.keda.sh/transfer-hpa-ownership";

/// Triggers, replica bounds and fallback, as KEDA checks them.
pub fn validate_spec(so: &ScaledObject) -> Result<(), String> {
    let spec = &so.spec;
    validate_triggers(&spec.triggers)?;
    let min = match spec.min_replica_count {
        Some(_) => spec.hpa_min_replicas(),
        None => 0,
    };
    let max = spec.max_replicas();
    if min > max {
        return Err(format!(
            "MinReplicaCount={min} must be less than MaxReplicaCount={max}"
        ));
    }
    if let Some(idle) = spec.idle_replica_count {
        if idle >= min {
            return Err(format!(
                "IdleReplicaCount={idle} must be less than MinReplicaCount={min}"
            ));
        }
    }
    if spec.fallback.is_some() && !spec.uses_modifiers() {
        // KEDA's message names AverageValue, but any trigger other than cpu/memory counts.
        let usable = spec
            .triggers
            .iter()
            .any(|t| !matches!(t.type_.as_str(), "cpu" | "memory"));
        if !usable {
            return Err("at least one trigger (that is not cpu or memory) has to have the `AverageValue` type for the fallback to be enabled".into());
        }
    }
    Ok(())
}

/// KEDA's `ValidateTriggers`, shared by ScaledObjects and ScaledJobs: at least one trigger,
/// unique trigger names, no `useCachedMetrics` where KEDA refuses it.
pub fn validate_triggers(triggers: &[ScaleTriggers]) -> Result<(), String> {
    if triggers.is_empty() {
        return Err("no triggers defined in the ScaledObject/ScaledJob".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for t in triggers {
        if t.use_cached_metrics == Some(true)
            && matches!(t.type_.as_str(), "cpu" | "memory" | "cron")
        {
            return Err(format!(
                "property \"useCachedMetrics\" is not supported for {:?} scaler",
                t.type_
            ));
        }
        if let Some(n) = t.name.as_deref().filter(|n| !n.is_empty()) {
            if !names.insert(n) {
                return Err(format!(
                    "triggerName {n:?} is defined multiple times in the ScaledObject/ScaledJob, but it must be unique"
                ));
            }
        }
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
) -> Result<(), String> {
    let name = so.metadata.name.as_deref().unwrap_or("");
    let target = &so.spec.scale_target_ref.name;
    for o in others.iter().filter(|o| o.name != name) {
        if &o.target_gvk == target_gvk && &o.target_name == target {
            return Err(format!(
                "the workload '{target}' of type '{target_gvk}' is already managed by the ScaledObject '{}'",
                o.name
            ));
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
            return Err(format!(
                "the workload '{target}' of type '{target_gvk}' is already managed by the hpa '{}'",
                h.name
            ));
        }
        if so.spec.custom_hpa_name() != Some(h.name.as_str()) {
            return Err(format!(
                "the existing hpa '{}' for workload '{target}' of type '{target_gvk}' must be specified by name in advanced settings to enable ownership transfer",
                h.name
            ));
        }
    }
    let hpa = crate::hpa::hpa_name(so);
    if let Some(o) = others.iter().find(|o| o.name != name && o.hpa_name == hpa) {
        return Err(format!(
            "the HPA '{hpa}' is already managed by the ScaledObject '{}'",
            o.name
        ));
    }
    Ok(())
}

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
                    let e = got.expect_err(&spec.to_string());
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
        assert_eq!(e, "the workload 'web' of type 'apps/v1.Deployment' is already managed by the hpa 'legacy'");
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
            e.contains("must be specified by name in advanced settings"),
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
        assert_eq!(e, "the workload 'web' of type 'apps/v1.Deployment' is already managed by the ScaledObject 'first'");
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
            e,
            "the HPA 'keda-hpa-so' is already managed by the ScaledObject 'first'"
        );
    }
}
