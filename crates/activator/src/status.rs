//! The ScaledObject's status as the reconcile sees it: hpaName, externalMetricNames, the
//! target's kind, originalReplicaCount, the Ready and Paused conditions. Written only when
//! it changes, so a steady state costs no writes.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use scaler_core::activation::Pause;
use scaler_core::conditions::{ConditionStatus, ConditionType, Reason};
use scaler_core::gvk::Gvk;
use scaler_core::hpa::MANAGER;
use scaler_core::scaled_object::{Condition, GroupVersionKindResource, ScaledObjectStatus};
use scaler_core::ScaledObject;

/// Ready True, `ScaledObjectReady`.
pub(crate) fn ready_condition() -> Condition {
    Condition::new(
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::ScaledObjectReady,
        "ScaledObject is defined correctly and is ready for scaling",
    )
}

/// Whether `c` is a Ready problem the scale loop owns (its triggers failing).
pub(crate) fn trigger_problem(c: &Condition) -> bool {
    c.is(ConditionType::Ready) && c.has_reason(&[Reason::TriggerError, Reason::PartialTriggerError])
}

/// What a reconcile found.
#[derive(Default)]
pub(crate) struct Observed<'a> {
    /// The HPA's name, when one applies.
    pub hpa_name: Option<&'a str>,
    /// External metric names.
    pub metric_names: &'a [String],
    /// A configuration problem (Ready False `ScaledObjectCheckFailed`).
    pub problem: Option<&'a str>,
    /// The scale target's kind, as discovery resolved it.
    pub target: Option<&'a GroupVersionKindResource>,
    /// `originalReplicaCount` to record (kept once set).
    pub original: Option<i32>,
    /// Paused by annotation.
    pub paused: Option<Pause>,
}

/// Whether the status says the ScaledObject is paused.
pub(crate) fn was_paused(so: &ScaledObject) -> bool {
    so.status
        .as_ref()
        .is_some_and(|s| s.condition_is(ConditionType::Paused, ConditionStatus::True))
}

/// The status for this reconcile's outcome, given the current one.
pub(crate) fn next_status(current: &ScaledObjectStatus, o: &Observed<'_>) -> ScaledObjectStatus {
    let (hpa_name, metric_names, problem) = (o.hpa_name, o.metric_names, o.problem);
    let mut status = current.clone();
    scaler_core::conditions::initialise(&mut status.conditions);
    let ready = match problem {
        // A valid spec does not clear the scale loop's report of failing triggers; the
        // loop clears it when they recover (two writers, no flapping).
        None if status.conditions.iter().flatten().any(trigger_problem) => None,
        None => Some(ready_condition()),
        Some(msg) => Some(Condition::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::ScaledObjectCheckFailed,
            msg,
        )),
    };
    if let Some(ready) = ready {
        status.set_condition(ready);
    }
    if let Some(h) = hpa_name {
        status.hpa_name = Some(h.to_string());
    }
    if problem.is_none() {
        status.external_metric_names = Some(metric_names.to_vec());
    }
    if let Some(t) = o.target {
        status.scale_target_kind = Some(Gvk::from(t).scale_target_kind());
        status.scale_target_gvkr = Some(t.clone());
    }
    if status.original_replica_count.is_none() {
        status.original_replica_count = o.original;
    }
    let paused_before = status.condition_is(ConditionType::Paused, ConditionStatus::True);
    match o.paused {
        Some(p) => {
            status.set_condition(Condition::new(
                ConditionType::Paused,
                ConditionStatus::True,
                Reason::ScaledObjectPaused,
                "ScaledObject is paused",
            ));
            status.paused_replica_count = match p {
                Pause::Replicas(n) => Some(n),
                _ => None,
            };
        }
        None if paused_before => {
            status.set_condition(Condition::new(
                ConditionType::Paused,
                ConditionStatus::False,
                Reason::ScaledObjectUnpaused,
                "pause annotation removed for ScaledObject",
            ));
            status.paused_replica_count = None;
        }
        None => {}
    }
    status
}

/// The status a reconcile reports for `so`: [`next_status`] with the triggers' and
/// authentications' types (the printer columns).
pub(crate) fn reconciled_status(so: &ScaledObject, observed: &Observed<'_>) -> ScaledObjectStatus {
    let current = so.status.clone().unwrap_or_default();
    let mut next = next_status(&current, observed);
    let (triggers, auths) =
        scaler_core::scaled_object::triggers_and_authentications_types(&so.spec.triggers);
    next.triggers_types = Some(triggers);
    next.authentications_types = Some(auths);
    next
}

/// Write `next` as the status when it differs from `current`; returns whether it wrote.
pub(crate) async fn write_if_changed<K, S>(
    client: &Client,
    so: &K,
    current: &S,
    next: &S,
) -> Result<bool, crate::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: k8s_openapi::serde::Serialize + PartialEq,
{
    if next == current {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), &so.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "status": merge_patch(&serde_json::to_value(current)?, &serde_json::to_value(next)?)
    });
    api.patch_status(
        &so.name_any(),
        &PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(true)
}

/// The JSON merge patch (RFC 7386) turning `old` into `new`: changed values, and `null`
/// for every key `new` no longer has (a plain merge of `new` would leave those in place).
fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn merge_patch_removes_what_is_gone() {
        let old = serde_json::json!({"a": 1, "b": {"x": 1, "y": 2}, "c": [1], "gone": 5});
        let new = serde_json::json!({"a": 1, "b": {"x": 3}, "c": [2]});
        assert_eq!(
            super::merge_patch(&old, &new),
            serde_json::json!({"b": {"x": 3, "y": null}, "c": [2], "gone": null})
        );
    }

    use super::*;

    #[test]
    fn ready_follows_the_outcome_and_steady_state_is_unchanged() {
        let names = vec!["s0-cron-x".to_string()];
        let ok = Observed {
            hpa_name: Some("keda-hpa-a"),
            metric_names: &names,
            ..Default::default()
        };
        let first = next_status(&ScaledObjectStatus::default(), &ok);
        let ready = first
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .cloned();
        assert_eq!(ready.map(|c| c.status), Some("True".to_string()));
        assert_eq!(first.hpa_name.as_deref(), Some("keda-hpa-a"));
        assert_eq!(first.external_metric_names, Some(names.clone()));
        // Reconciling again with the same outcome changes nothing, so nothing is written.
        assert_eq!(next_status(&first, &ok), first);
        let failed = next_status(
            &first,
            &Observed {
                problem: Some("spec.triggers[0].metadata.start (cron): bad"),
                ..Default::default()
            },
        );
        let ready = failed
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .cloned();
        assert_eq!(ready.as_ref().map(|c| c.status.as_str()), Some("False"));
        assert_eq!(
            ready.and_then(|c| c.reason),
            Some("ScaledObjectCheckFailed".to_string())
        );
        assert_eq!(failed.conditions.as_ref().map(Vec::len), Some(4));
    }
}
