//! The ScaledObject's status as the reconcile sees it: hpaName, externalMetricNames, the
//! target's kind, originalReplicaCount, the Ready and Paused conditions. Written only when
//! it changes, so a steady state costs no writes.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use scaler_core::activation::Pause;
use scaler_core::hpa::MANAGER;
use scaler_core::scaled_object::{Condition, ScaledObjectStatus};
use scaler_core::ScaledObject;

fn upsert(conditions: &mut Vec<Condition>, c: Condition) {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => *x = c,
        None => conditions.push(c),
    }
}

/// Set one condition in `status`, by type.
pub(crate) fn set_condition(status: &mut ScaledObjectStatus, c: Condition) {
    upsert(status.conditions.get_or_insert_with(Vec::new), c);
}

/// Ready True, `ScaledObjectReady`.
pub(crate) fn ready_condition() -> Condition {
    Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("ScaledObjectReady".into()),
        message: Some("ScaledObject is defined correctly and is ready for scaling".into()),
    }
}

/// Whether `c` is a Ready problem the scale loop owns (its triggers failing).
fn trigger_problem(c: &Condition) -> bool {
    c.type_ == "Ready"
        && matches!(
            c.reason.as_deref(),
            Some("TriggerError") | Some("PartialTriggerError")
        )
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
    /// The resolved scale target.
    pub target: Option<&'a crate::target::Target>,
    /// `originalReplicaCount` to record (kept once set).
    pub original: Option<i32>,
    /// Paused by annotation.
    pub paused: Option<Pause>,
}

/// Whether the status says the ScaledObject is paused.
pub(crate) fn was_paused(so: &ScaledObject) -> bool {
    so.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Paused" && c.status == "True")
}

/// The status for this reconcile's outcome, given the current one.
pub(crate) fn next_status(current: &ScaledObjectStatus, o: &Observed<'_>) -> ScaledObjectStatus {
    let (hpa_name, metric_names, problem) = (o.hpa_name, o.metric_names, o.problem);
    let mut status = current.clone();
    let mut conditions = status.conditions.take().unwrap_or_default();
    for (t, s) in [
        ("Ready", "Unknown"),
        ("Active", "Unknown"),
        ("Fallback", "Unknown"),
        ("Paused", "False"),
    ] {
        if !conditions.iter().any(|c| c.type_ == t) {
            conditions.push(Condition {
                type_: t.into(),
                status: s.into(),
                reason: None,
                message: None,
            });
        }
    }
    let ready = match problem {
        // A valid spec does not clear the scale loop's report of failing triggers; the
        // loop clears it when they recover (two writers, no flapping).
        None if conditions.iter().any(trigger_problem) => None,
        None => Some(ready_condition()),
        Some(msg) => Some(Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("ScaledObjectCheckFailed".into()),
            message: Some(msg.to_string()),
        }),
    };
    if let Some(ready) = ready {
        upsert(&mut conditions, ready);
    }
    status.conditions = Some(conditions);
    if let Some(h) = hpa_name {
        status.hpa_name = Some(h.to_string());
    }
    if problem.is_none() {
        status.external_metric_names = Some(metric_names.to_vec());
    }
    if let Some(t) = o.target {
        status.scale_target_kind = Some(t.kind_string());
        status.scale_target_gvkr = Some(t.gvkr.clone());
    }
    if status.original_replica_count.is_none() {
        status.original_replica_count = o.original;
    }
    let paused_before = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Paused" && c.status == "True");
    match o.paused {
        Some(p) => {
            set_condition(
                &mut status,
                Condition {
                    type_: "Paused".into(),
                    status: "True".into(),
                    reason: Some("ScaledObjectPaused".into()),
                    message: Some("ScaledObject is paused".into()),
                },
            );
            status.paused_replica_count = match p {
                Pause::Replicas(n) => Some(n),
                _ => None,
            };
        }
        None if paused_before => {
            set_condition(
                &mut status,
                Condition {
                    type_: "Paused".into(),
                    status: "False".into(),
                    reason: Some("ScaledObjectUnpaused".into()),
                    message: Some("pause annotation removed for ScaledObject".into()),
                },
            );
            status.paused_replica_count = None;
        }
        None => {}
    }
    status
}

/// Write the status if it differs from the current one; returns whether it was written.
pub(crate) async fn report(
    client: &Client,
    so: &ScaledObject,
    observed: &Observed<'_>,
) -> Result<bool, crate::Error> {
    let current = so.status.clone().unwrap_or_default();
    let mut next = next_status(&current, observed);
    let (triggers, auths) =
        scaler_core::scaled_object::triggers_and_authentications_types(&so.spec.triggers);
    next.triggers_types = Some(triggers);
    next.authentications_types = Some(auths);
    write_if_changed(client, so, &current, &next).await
}

/// Write `next` as the status when it differs from `current`; returns whether it wrote.
pub(crate) async fn write_if_changed(
    client: &Client,
    so: &ScaledObject,
    current: &ScaledObjectStatus,
    next: &ScaledObjectStatus,
) -> Result<bool, crate::Error> {
    if next == current {
        return Ok(false);
    }
    let api: Api<ScaledObject> =
        Api::namespaced(client.clone(), &so.namespace().unwrap_or_default());
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
