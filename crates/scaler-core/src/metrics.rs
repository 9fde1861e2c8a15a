//! Answering "what is metric M of ScaledObject S now?" — the seam the adapter calls.

use crate::scaled_object::ScaledObject;
use crate::scalers::{ScalerError, TriggerError};

/// One metric's current value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// The metric's name as the HPA spells it (`s0-cron-...`).
    pub metric_name: String,
    /// The value.
    pub value: f64,
    /// Whether the trigger is active.
    pub active: bool,
    /// The trigger type that produced it.
    pub scaler_type: &'static str,
}

/// Why a metric could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// No trigger of the ScaledObject serves that metric.
    #[error("no metric {metric:?} on ScaledObject {namespace}/{name}")]
    UnknownMetric {
        /// Namespace of the ScaledObject.
        namespace: String,
        /// Name of the ScaledObject.
        name: String,
        /// The metric asked for.
        metric: String,
    },
    /// A trigger's configuration is invalid, so its metric cannot be computed.
    #[error("ScaledObject {namespace}/{name}: {source}")]
    InvalidTrigger {
        /// Namespace of the ScaledObject.
        namespace: String,
        /// Name of the ScaledObject.
        name: String,
        /// The first invalid trigger.
        #[source]
        source: TriggerError,
    },
    /// The event source failed.
    #[error("ScaledObject {namespace}/{name} metric {metric:?}: {source}")]
    Query {
        /// Namespace of the ScaledObject.
        namespace: String,
        /// Name of the ScaledObject.
        name: String,
        /// The metric asked for.
        metric: String,
        /// The trigger type queried.
        scaler_type: &'static str,
        /// What the scaler said.
        #[source]
        source: ScalerError,
    },
}

/// Compute `metric` (matched case-insensitively) of `so` by querying its trigger, with
/// no cluster to read authentication from (see [`crate::runtime::Runtime::sample_metric`]).
pub async fn evaluate_metric(so: &ScaledObject, metric: &str) -> Result<MetricSample, MetricError> {
    let pools = std::sync::Arc::new(crate::pools::Pools::default());
    let inputs = crate::runtime::BuildInputs {
        sources: &crate::trigger_auth::NoSources,
        client: None,
        operator_namespace: "",
        pools: &pools,
    };
    let with = crate::runtime::With::new(
        pools.clone(),
        None,
        std::sync::Arc::new(crate::runtime::Unobserved),
    );
    let rt = crate::runtime::Runtime::build(so, &inputs, Vec::new(), with).await;
    rt.sample_metric(metric).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn so(yaml: &str) -> ScaledObject {
        serde_yaml::from_str(yaml).expect("valid ScaledObject")
    }

    const ALWAYS: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web, namespace: ns1}
spec:
  scaleTargetRef: {name: web}
  triggers:
  - type: cron
    metadata: {timezone: UTC, start: "0 0 1 1 *", end: "* * * * *", desiredReplicas: "4"}
"#;

    #[tokio::test]
    async fn finds_the_metric_case_insensitively() {
        // start fires once a year, end every minute: the next end always comes first, so
        // "now" is always inside the window.
        let got = evaluate_metric(&so(ALWAYS), "S0-CRON-UTC-0011X-XXXXX")
            .await
            .expect("metric");
        assert_eq!(got.metric_name, "s0-cron-UTC-0011x-xxxxx");
        assert_eq!(got.value, 4.0);
        assert!(got.active);
    }

    #[tokio::test]
    async fn unknown_metric_and_invalid_trigger() {
        let err = evaluate_metric(&so(ALWAYS), "s1-cron-nope")
            .await
            .expect_err("unknown");
        assert!(matches!(err, MetricError::UnknownMetric { .. }), "{err}");
        let bad = ALWAYS.replace("timezone: UTC", "timezone: Not/AZone");
        let err = evaluate_metric(&so(&bad), "s0-cron-x")
            .await
            .expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "ScaledObject ns1/web: spec.triggers[0].metadata.timezone (cron): unable to load timezone: unknown time zone Not/AZone"
        );
    }
}
