//! Fallback: failure counting per metric, the replica count each behaviour falls back to,
//! the metric value that makes the HPA choose that count, and the Fallback condition.

use std::str::FromStr;

use std::collections::BTreeMap;

use crate::conditions::{ConditionStatus, ConditionType, Reason};
use crate::scaled_object::{Condition, Fallback, HealthStatus};
use crate::scalers::MetricTargetType;

/// `fallback.behavior`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// `static` (default): `fallback.replicas`.
    Static,
    /// `currentReplicas`: keep the current count.
    CurrentReplicas,
    /// `currentReplicasIfHigher`: max(current, fallback.replicas).
    CurrentReplicasIfHigher,
    /// `currentReplicasIfLower`: min(current, fallback.replicas).
    CurrentReplicasIfLower,
    /// `scalingModifiers`: the composite metric falls back to `fallback.replicas` (as static).
    ScalingModifiers,
}

const BEHAVIORS: [&str; 5] = [
    "static",
    "currentReplicas",
    "currentReplicasIfHigher",
    "currentReplicasIfLower",
    "scalingModifiers",
];

impl FromStr for Behavior {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" | "static" => Self::Static,
            "currentReplicas" => Self::CurrentReplicas,
            "currentReplicasIfHigher" => Self::CurrentReplicasIfHigher,
            "currentReplicasIfLower" => Self::CurrentReplicasIfLower,
            "scalingModifiers" => Self::ScalingModifiers,
            other => {
                return Err(format!(
                    "spec.fallback.behavior: value {other:?} must be one of {BEHAVIORS:?}"
                ))
            }
        })
    }
}

/// `fallback.behavior` of `f`, typed (absent is `static`).
pub fn behavior(f: &Fallback) -> Result<Behavior, String> {
    f.behavior.as_deref().unwrap_or("").parse()
}

/// Status `Happy`.
pub const HAPPY: &str = "Happy";
/// Status `Failing`.
pub const FAILING: &str = "Failing";

/// Count one outcome (a poll or an HPA read) into a metric's health: success resets to 0
/// and `Happy`, failure adds one and marks `Failing`.
pub fn record(health: &HealthStatus, ok: bool) -> HealthStatus {
    if ok {
        HealthStatus {
            number_of_failures: Some(0),
            status: Some(HAPPY.into()),
        }
    } else {
        HealthStatus {
            number_of_failures: Some(health.number_of_failures.unwrap_or(0).saturating_add(1)),
            status: Some(FAILING.into()),
        }
    }
}

/// Whether `health` has crossed `fallback`'s threshold (strictly more failures).
pub fn falling_back(fallback: &Fallback, health: &HealthStatus) -> bool {
    health.number_of_failures.unwrap_or(0) > fallback.failure_threshold
}

/// The replica count to fall back to.
pub fn replicas(fallback: &Fallback, behavior: Behavior, current: i32) -> i32 {
    match behavior {
        Behavior::Static | Behavior::ScalingModifiers => fallback.replicas,
        Behavior::CurrentReplicas => current,
        Behavior::CurrentReplicasIfHigher => current.max(fallback.replicas),
        Behavior::CurrentReplicasIfLower => current.min(fallback.replicas),
    }
}

/// The metric value that makes the HPA choose `replicas`: `target × replicas` for an
/// AverageValue target (the HPA divides by the target); for a Value target the HPA scales
/// the current ready pods by value/target, so the value is divided by them. With no ready
/// pod there is no such value (`None`), and KEDA serves no fallback either.
pub fn value(
    target: f64,
    metric_type: MetricTargetType,
    replicas: i32,
    ready_pods: i32,
) -> Option<f64> {
    let v = target * f64::from(replicas);
    match metric_type {
        MetricTargetType::AverageValue => Some(v),
        MetricTargetType::Value if ready_pods > 0 => Some(v / f64::from(ready_pods)),
        MetricTargetType::Value => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(threshold: i32, replicas: i32) -> Fallback {
        Fallback {
            failure_threshold: threshold,
            replicas,
            behavior: None,
        }
    }

    #[test]
    fn behaviours_and_their_errors() {
        let cases = [
            ("", Behavior::Static, 5),
            ("static", Behavior::Static, 5),
            ("currentReplicas", Behavior::CurrentReplicas, 3),
            (
                "currentReplicasIfHigher",
                Behavior::CurrentReplicasIfHigher,
                5,
            ),
            (
                "currentReplicasIfLower",
                Behavior::CurrentReplicasIfLower,
                3,
            ),
            ("scalingModifiers", Behavior::ScalingModifiers, 5),
        ];
        for (text, behavior, want) in cases {
            assert_eq!(text.parse::<Behavior>(), Ok(behavior), "{text}");
            assert_eq!(replicas(&fb(3, 5), behavior, 3), want, "{text} at 3");
        }
        assert_eq!(replicas(&fb(3, 5), Behavior::CurrentReplicasIfHigher, 8), 8);
        assert_eq!(replicas(&fb(3, 5), Behavior::CurrentReplicasIfLower, 8), 5);
        let err = "Static".parse::<Behavior>().expect_err("case matters");
        assert!(
            err.starts_with("spec.fallback.behavior: value \"Static\" must be one of"),
            "{err}"
        );
    }

    #[test]
    fn failures_count_up_and_reset_and_the_threshold_is_strict() {
        let f = fb(2, 4);
        let mut h = HealthStatus::default();
        let mut seen = Vec::new();
        for ok in [false, false, false, true, false] {
            h = record(&h, ok);
            seen.push((h.number_of_failures, falling_back(&f, &h)));
        }
        assert_eq!(
            seen,
            [
                (Some(1), false),
                (Some(2), false),
                (Some(3), true),
                (Some(0), false),
                (Some(1), false)
            ]
        );
        assert_eq!(h.status.as_deref(), Some(FAILING));
        assert_eq!(record(&h, true).status.as_deref(), Some(HAPPY));
    }

    #[test]
    fn values_make_the_hpa_choose_the_replicas() {
        // AverageValue: ceil(value / target) = replicas.
        assert_eq!(value(5.0, MetricTargetType::AverageValue, 4, 7), Some(20.0));
        assert_eq!(value(5.0, MetricTargetType::AverageValue, 4, 0), Some(20.0));
        // Value: ceil(ready × value / target) = replicas.
        assert_eq!(value(5.0, MetricTargetType::Value, 4, 2), Some(10.0));
        // No ready pod: no value makes the HPA choose, and KEDA serves none.
        assert_eq!(value(5.0, MetricTargetType::Value, 4, 0), None);
    }
}

/// Whether `spec.fallback` can be used, as KEDA's `HasValidFallback`: a non-negative
/// threshold and replica count, and with scalingModifiers a whole positive target.
pub fn has_valid_fallback(spec: &crate::ScaledObjectSpec) -> bool {
    let Some(f) = &spec.fallback else {
        return false;
    };
    let modifiers_ok = match spec
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref())
    {
        Some(m) => m
            .target
            .as_deref()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .is_some_and(|t| t > 0),
        None => true,
    };
    f.failure_threshold >= 0 && f.replicas >= 0 && modifiers_ok
}

/// The `Fallback` condition KEDA sets from `status.health`: True (`FallbackExists`) when
/// any metric is failing past the threshold, else False (`NoFallbackFound`). `None` when
/// the ScaledObject has no valid fallback (KEDA then leaves the condition alone).
pub fn condition(
    spec: &crate::ScaledObjectSpec,
    health: &BTreeMap<String, HealthStatus>,
) -> Option<Condition> {
    let fallback = spec
        .fallback
        .as_ref()
        .filter(|_| has_valid_fallback(spec))?;
    let exceeded = health
        .values()
        .any(|h| h.status.as_deref() == Some(FAILING) && falling_back(fallback, h));
    Some(if exceeded {
        Condition::new(
            ConditionType::Fallback,
            ConditionStatus::True,
            Reason::FallbackExists,
            "At least one trigger is falling back on this scaled object",
        )
    } else {
        Condition::new(
            ConditionType::Fallback,
            ConditionStatus::False,
            Reason::NoFallbackFound,
            "No fallbacks are active on this scaled object",
        )
    })
}

/// Failure counts per ScaledObject metric, shared by the polling loop and HPA reads.
#[derive(Default)]
pub struct HealthTracker {
    entries: std::sync::Mutex<std::collections::HashMap<(String, String, String), HealthStatus>>,
}

impl HealthTracker {
    /// Record one outcome for `namespace/name` metric `metric`; the health after it.
    pub fn record(&self, namespace: &str, name: &str, metric: &str, ok: bool) -> HealthStatus {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (
            namespace.to_string(),
            name.to_string(),
            metric.to_ascii_lowercase(),
        );
        let next = record(entries.get(&key).unwrap_or(&HealthStatus::default()), ok);
        entries.insert(key, next.clone());
        next
    }

    /// The health of `namespace/name` metric `metric`.
    pub fn get(&self, namespace: &str, name: &str, metric: &str) -> HealthStatus {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(
                namespace.to_string(),
                name.to_string(),
                metric.to_ascii_lowercase(),
            ))
            .cloned()
            .unwrap_or_default()
    }

    /// Every metric's health for `namespace/name`: `status.health` as KEDA writes it.
    pub fn snapshot(&self, namespace: &str, name: &str) -> BTreeMap<String, HealthStatus> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((ns, n, _), _)| ns == namespace && n == name)
            .map(|((_, _, metric), h)| (metric.clone(), h.clone()))
            .collect()
    }

    /// Forget ScaledObjects that no longer exist.
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(ns, name, _), _| keep(ns, name));
    }
}

#[cfg(test)]
mod tracker_tests {
    use super::*;

    #[test]
    fn counts_per_metric_and_resets() {
        let t = HealthTracker::default();
        assert_eq!(
            t.record("ns", "so", "s0-x", false).number_of_failures,
            Some(1)
        );
        assert_eq!(
            t.record("ns", "so", "S0-X", false).number_of_failures,
            Some(2)
        );
        assert_eq!(
            t.record("ns", "so", "s1-y", false).number_of_failures,
            Some(1)
        );
        assert_eq!(
            t.record("ns", "so", "s0-x", true).number_of_failures,
            Some(0)
        );
        let snap = t.snapshot("ns", "so");
        assert_eq!(snap.len(), 2);
        assert_eq!(snap["s0-x"].status.as_deref(), Some(HAPPY));
        assert_eq!(snap["s1-y"].number_of_failures, Some(1));
        assert!(t.snapshot("ns", "other").is_empty());
        t.retain(|_, _| false);
        assert_eq!(
            t.record("ns", "so", "s1-y", false).number_of_failures,
            Some(1)
        );
    }
}

#[cfg(test)]
mod condition_tests {
    use super::*;
    use crate::ScaledObjectSpec;

    fn spec(threshold: i32, replicas: i32) -> ScaledObjectSpec {
        serde_json::from_value(serde_json::json!({
            "scaleTargetRef": {"name": "web"},
            "triggers": [],
            "fallback": {"failureThreshold": threshold, "replicas": replicas},
        }))
        .expect("spec")
    }

    fn health(entries: &[(&str, i32, &str)]) -> BTreeMap<String, HealthStatus> {
        entries
            .iter()
            .map(|(m, n, s)| {
                (
                    m.to_string(),
                    HealthStatus {
                        number_of_failures: Some(*n),
                        status: Some(s.to_string()),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn condition_follows_the_threshold() {
        let s = spec(3, 4);
        let c = condition(&s, &health(&[("s0-x", 3, FAILING), ("s1-y", 0, HAPPY)])).expect("set");
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()),
            ("Fallback", "False", Some("NoFallbackFound")),
            "at the threshold: not yet"
        );
        let c = condition(&s, &health(&[("s0-x", 4, FAILING), ("s1-y", 0, HAPPY)])).expect("set");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            (
                "True",
                Some("FallbackExists"),
                Some("At least one trigger is falling back on this scaled object")
            )
        );
        // A count left over from before a success does not count once Happy.
        let c = condition(&s, &health(&[("s0-x", 9, HAPPY)])).expect("set");
        assert_eq!(c.status, "False");
        assert!(condition(&s, &BTreeMap::new()).is_some_and(|c| c.status == "False"));
    }

    #[test]
    fn no_condition_without_a_valid_fallback() {
        let mut s = spec(3, 4);
        s.fallback = None;
        assert_eq!(condition(&s, &health(&[("s0-x", 9, FAILING)])), None);
        assert!(!has_valid_fallback(&spec(-1, 4)));
        assert!(!has_valid_fallback(&spec(3, -1)));
        assert!(has_valid_fallback(&spec(0, 0)));
        let with_modifiers = |target: &str| {
            let mut s = spec(3, 4);
            s.advanced = serde_json::from_value(serde_json::json!({
                "scalingModifiers": {"formula": "a", "target": target}
            }))
            .expect("advanced");
            s
        };
        assert!(has_valid_fallback(&with_modifiers("5")));
        assert!(!has_valid_fallback(&with_modifiers("2.5")));
        assert!(!has_valid_fallback(&with_modifiers("0")));
    }
}
