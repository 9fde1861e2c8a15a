//! The ScaledObject's status: hpaName, externalMetricNames and the Ready condition.
//! Written only when it changes, so a steady state costs no writes.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use scaler_core::hpa::MANAGER;
use scaler_core::scaled_object::{Condition, ScaledObjectStatus};
use scaler_core::ScaledObject;

fn upsert(conditions: &mut Vec<Condition>, c: Condition) {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => *x = c,
        None => conditions.push(c),
    }
}

/// The status for this reconcile's outcome, given the current one.
pub(crate) fn next_status(
    current: &ScaledObjectStatus,
    hpa_name: Option<&str>,
    metric_names: &[String],
    problem: Option<&str>,
) -> ScaledObjectStatus {
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
        None => Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("ScaledObjectReady".into()),
            message: Some("ScaledObject is defined correctly and is ready for scaling".into()),
        },
        Some(msg) => Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("ScaledObjectCheckFailed".into()),
            message: Some(msg.to_string()),
        },
    };
    upsert(&mut conditions, ready);
    status.conditions = Some(conditions);
    if let Some(h) = hpa_name {
        status.hpa_name = Some(h.to_string());
    }
    if problem.is_none() {
        status.external_metric_names = Some(metric_names.to_vec());
    }
    status
}

/// Write the status if it differs from the current one; returns whether it was written.
pub(crate) async fn report(
    client: &Client,
    so: &ScaledObject,
    hpa_name: Option<&str>,
    metric_names: &[String],
    problem: Option<&str>,
) -> Result<bool, kube::Error> {
    let current = so.status.clone().unwrap_or_default();
    let next = next_status(&current, hpa_name, metric_names, problem);
    if next == current {
        return Ok(false);
    }
    let api: Api<ScaledObject> =
        Api::namespaced(client.clone(), &so.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": next });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_the_outcome_and_steady_state_is_unchanged() {
        let names = vec!["s0-cron-x".to_string()];
        let first = next_status(
            &ScaledObjectStatus::default(),
            Some("keda-hpa-a"),
            &names,
            None,
        );
        let ready = first
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .cloned();
        assert_eq!(ready.map(|c| c.status), Some("True".to_string()));
        assert_eq!(first.hpa_name.as_deref(), Some("keda-hpa-a"));
        assert_eq!(first.external_metric_names, Some(names.clone()));
        // Reconciling again with the same outcome changes nothing, so nothing is written.
        assert_eq!(next_status(&first, Some("keda-hpa-a"), &names, None), first);
        let failed = next_status(
            &first,
            None,
            &[],
            Some("spec.triggers[0].metadata.start (cron): bad"),
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
