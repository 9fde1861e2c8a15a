//! The `kubernetes-workload` trigger: the number of pods in the ScaledObject's namespace
//! that match `podSelector` (not Succeeded or Failed), or of the nodes they run on.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use super::params::{Defaulted, Param, Required};
use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::label_selector::Selector;
use crate::quantity::MilliQuantity;

/// Listing pods may take this long.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Parsed `kubernetes-workload` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadMetadata {
    /// The selector as written (sent to the apiserver).
    pub pod_selector: String,
    /// Target per replica.
    pub value: f64,
    /// Active strictly above this.
    pub activation_value: f64,
    /// Count distinct nodes instead of pods.
    pub group_by_node: bool,
}

/// `podSelector`: which pods to count.
const POD_SELECTOR: Param<Required> = Param::new("podSelector").required();
/// `value`: the target per replica.
const VALUE: Param<Defaulted> = Param::new("value").default("0");
/// `activationValue`: active strictly above this.
const ACTIVATION_VALUE: Param<Defaulted> = Param::new("activationValue").default("0");
/// `groupByNode`: count the nodes the pods run on instead.
const GROUP_BY_NODE: Param<Defaulted> = Param::new("groupByNode").default("false");

impl WorkloadMetadata {
    /// Parse with KEDA's rules and in its order: the parameters, `value` above 0, then the
    /// selector.
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        let pod_selector = params.text(&POD_SELECTOR)?.to_string();
        let value = params.float(&VALUE)?;
        let activation_value = params.float(&ACTIVATION_VALUE)?;
        let group_by_node = params.flag(&GROUP_BY_NODE)?;
        // KEDA: `value` must be above 0, except for a ScaledObject with scalingModifiers,
        // whose formula does the scaling (`AsMetricSource`); a negative one is refused
        // there too.
        if value < 0.0 || (value == 0.0 && !ctx.as_metric_source) {
            return Err(ScalerError::invalid(
                "value",
                "value must be a float greater than 0",
            ));
        }
        pod_selector.parse::<Selector>().map_err(|e| {
            ScalerError::invalid("podSelector", format!("invalid podSelector: {e}"))
        })?;
        Ok(Self {
            pod_selector,
            value,
            activation_value,
            group_by_node,
        })
    }
}

/// The kubernetes-workload scaler.
#[derive(Clone)]
pub struct WorkloadScaler {
    metadata: WorkloadMetadata,
    spec: MetricSpec,
    namespace: String,
    client: Option<Client>,
}

impl std::fmt::Debug for WorkloadScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadScaler")
            .field("metadata", &self.metadata)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The value from the pods: running (not Succeeded/Failed) pods, or their distinct nodes.
pub fn count(pods: &[Pod], group_by_node: bool) -> f64 {
    let live = pods.iter().filter(|p| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        )
    });
    if group_by_node {
        let nodes: BTreeSet<&str> = live
            .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
            .filter(|n| !n.is_empty())
            .collect();
        nodes.len() as f64
    } else {
        live.count() as f64
    }
}

impl WorkloadScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = WorkloadMetadata::parse(&ctx)?;
        Ok(Self {
            spec: MetricSpec {
                name: ctx.metric_name(&format!("workload-{}", ctx.namespace)),
                target_type: ctx.target_type()?,
                target: MilliQuantity::from_value(metadata.value),
            },
            metadata,
            namespace: ctx.namespace.to_string(),
            client: ctx.client.cloned(),
        })
    }
}

#[async_trait]
impl Scaler for WorkloadScaler {
    fn scaler_type(&self) -> &'static str {
        "kubernetes-workload"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    fn activation_threshold(&self) -> Option<f64> {
        Some(self.metadata.activation_value)
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let client = self.client.clone().ok_or_else(|| {
            ScalerError::Query("kubernetes-workload counts pods in a cluster; it needs one".into())
        })?;
        let api: Api<Pod> = Api::namespaced(client, &self.namespace);
        let lp = ListParams::default().labels(&self.metadata.pod_selector);
        let pods = match tokio::time::timeout(TIMEOUT, api.list(&lp)).await {
            Ok(Ok(list)) => list.items,
            Ok(Err(e)) => {
                return Err(ScalerError::Query(format!(
                    "listing pods in {} matching {:?}: {e}",
                    self.namespace, self.metadata.pod_selector
                )))
            }
            Err(_) => {
                return Err(ScalerError::Query(format!(
                    "listing pods in {}: no answer within {TIMEOUT:?}",
                    self.namespace
                )))
            }
        };
        let value = count(&pods, self.metadata.group_by_node);
        Ok(Sample {
            value,
            active: value > self.metadata.activation_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaled_object::ScaleTriggers;
    use crate::scalers::AuthParams;

    fn build(meta: &[(&str, &str)]) -> Result<WorkloadScaler, ScalerError> {
        build_as(meta, false)
    }

    fn build_as(
        meta: &[(&str, &str)],
        as_metric_source: bool,
    ) -> Result<WorkloadScaler, ScalerError> {
        let t = ScaleTriggers {
            type_: "kubernetes-workload".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        WorkloadScaler::new(TriggerContext {
            index: 1,
            trigger: &t,
            auth: &AuthParams::new(),
            namespace: "team-a",
            name: "test",
            client: None,
            as_metric_source,
            pools: &crate::pools::Pools::default(),
        })
    }

    #[test]
    fn parse_table() {
        let ok = [
            vec![("podSelector", "app=demo"), ("value", "1")],
            vec![("podSelector", "app in (demo1, demo2)"), ("value", "0.5")],
            vec![
                ("podSelector", "app=demo,deploy notin (x)"),
                ("value", "2"),
                ("activationValue", "3"),
            ],
            vec![
                ("podSelector", "app=demo"),
                ("value", "1"),
                ("groupByNode", "true"),
            ],
            // Go's ParseBool words, as KEDA.
            vec![
                ("podSelector", "app=demo"),
                ("value", "1"),
                ("groupByNode", "T"),
            ],
            // KEDA's namespaced name test.
            vec![
                (
                    "podSelector",
                    "app in (demo1, demo2),deploy in (deploy1, deploy2)",
                ),
                ("value", "1"),
            ],
        ];
        for meta in ok {
            assert!(build(&meta).is_ok(), "{meta:?}: {:?}", build(&meta).err());
        }
        let bad = [
            (
                vec![("value", "1")],
                "missing required parameter \"podSelector\" in [triggerMetadata resolvedEnv]",
            ),
            (
                vec![("podSelector", "app=demo")],
                "value must be a float greater than 0",
            ),
            (
                vec![("podSelector", "app=demo"), ("value", "0")],
                "value must be a float greater than 0",
            ),
            (
                vec![("podSelector", "app=demo"), ("value", "-1")],
                "value must be a float greater than 0",
            ),
            (
                vec![("podSelector", "app=demo"), ("value", "x")],
                "unable to set param \"value\" value \"x\": unable to unmarshal to field type float64: invalid character 'x' looking for beginning of value",
            ),
            (
                vec![("podSelector", "app in (a"), ("value", "1")],
                "invalid podSelector",
            ),
            // KEDA reads and checks the parameters before the selector.
            (
                vec![("podSelector", "app in (a"), ("value", "0")],
                "value must be a float greater than 0",
            ),
            (
                vec![
                    ("podSelector", "app=demo"),
                    ("value", "1"),
                    ("activationValue", "x"),
                ],
                "unable to set param \"activationValue\" value \"x\": unable to unmarshal to field type float64",
            ),
            (
                vec![
                    ("podSelector", "app=demo"),
                    ("value", "1"),
                    ("groupByNode", "maybe"),
                ],
                "unable to set param \"groupByNode\" value \"maybe\": unable to parse boolean value \"maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax",
            ),
        ];
        for (meta, want) in bad {
            let e = build(&meta).expect_err(want).to_string();
            assert!(e.contains(want), "{meta:?}: {e}");
        }
        let s = build(&[("podSelector", "app=demo"), ("value", "2.5")]).expect("ok");
        assert_eq!(s.metric_spec().name, "s1-workload-team-a");
        assert_eq!(s.metric_spec().target, "2500m");
        // With scalingModifiers the formula scales: `value` may be left out (KEDA's own
        // scaling_modifiers e2e test does), but a negative one is still wrong.
        let s = build_as(&[("podSelector", "app=demo")], true).expect("metric source");
        assert_eq!(s.metric_spec().target, "0");
        assert!(build_as(&[("podSelector", "app=demo"), ("value", "-1")], true).is_err());
    }

    fn pod(phase: &str, node: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase},
        }))
        .expect("pod")
    }

    #[test]
    fn counts_live_pods_or_their_nodes() {
        let pods = [
            pod("Running", "n1"),
            pod("Pending", ""),
            pod("Running", "n1"),
            pod("Succeeded", "n2"),
            pod("Failed", "n3"),
            pod("Running", "n4"),
        ];
        assert_eq!(count(&pods, false), 4.0);
        assert_eq!(count(&pods, true), 2.0);
    }
}
