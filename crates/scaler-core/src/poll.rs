//! The polling loop's store: per ScaledObject, the last value of each trigger that sets
//! `useCachedMetrics`, so HPA reads of those metrics never reach the source; and what a
//! poll says for activation ([`activity`]).
//!
//! Polls are aligned to multiples of `pollingInterval` since the Unix epoch, so identical
//! queries from many ScaledObjects with the same interval go out at the same instant and
//! are coalesced into one request (see [`crate::coalesce`]).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// One trigger's last poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The value (when the poll succeeded).
    pub value: Result<f64, String>,
    /// Whether the trigger was active.
    pub active: bool,
    /// When it was polled.
    pub at: Instant,
    /// The metric's target and type, for fallback.
    pub target: Option<(f64, crate::scalers::MetricTargetType)>,
}

/// Per metric (lowercase name), the last poll of one ScaledObject: a list, as an object
/// has one to a few cached triggers (a map's table would be most of the entry's memory).
type Metrics = Box<[(String, Cached)]>;

/// Per namespace, per ScaledObject name, the last poll of each metric: nested so that a
/// read looks up by the `&str`s it has, allocating nothing.
#[derive(Default)]
pub struct MetricCache {
    entries: RwLock<HashMap<String, HashMap<String, Metrics>>>,
}

impl MetricCache {
    /// The last poll of `metric` of ScaledObject `namespace/name`, if it is younger than
    /// `max_age`.
    pub fn get(
        &self,
        namespace: &str,
        name: &str,
        metric: &str,
        max_age: Duration,
    ) -> Option<Cached> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let so = entries.get(namespace)?.get(name)?;
        let find = |m: &str| so.iter().find(|(k, _)| k == m).map(|(_, c)| c);
        let found = if metric.bytes().any(|b| b.is_ascii_uppercase()) {
            find(&metric.to_ascii_lowercase())
        } else {
            find(metric)
        };
        found.filter(|c| c.at.elapsed() <= max_age).cloned()
    }

    /// Replace what is stored for `namespace/name`. The same metrics as at the last poll
    /// (nearly always) are updated in place: a poll allocates nothing that outlives it, so
    /// the long-lived entries are not spread among each round's short-lived allocations.
    pub fn put(&self, namespace: &str, name: &str, metrics: HashMap<String, Cached>) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(stored) = entries.get_mut(namespace).and_then(|n| n.get_mut(name)) {
            let slot = |stored: &[(String, Cached)], m: &str| {
                stored.iter().position(|(k, _)| k.eq_ignore_ascii_case(m))
            };
            if stored.len() == metrics.len() && metrics.keys().all(|m| slot(stored, m).is_some()) {
                for (m, v) in metrics {
                    if let Some(i) = slot(stored, &m) {
                        stored[i].1 = v;
                    }
                }
                return;
            }
        }
        let metrics: Metrics = metrics
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        match entries.get_mut(namespace) {
            Some(names) => match names.get_mut(name) {
                Some(stored) => *stored = metrics,
                None => {
                    names.insert(name.to_string(), metrics);
                }
            },
            None => {
                entries.insert(
                    namespace.to_string(),
                    HashMap::from([(name.to_string(), metrics)]),
                );
            }
        }
    }

    /// Keep only the ScaledObjects `keep` says still exist.
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        for (ns, names) in entries.iter_mut() {
            names.retain(|name, _| keep(ns, name));
        }
        entries.retain(|_, names| !names.is_empty());
    }

    /// How many ScaledObjects have entries.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One trigger's answer in a poll of the scale loop.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSample {
    /// The trigger's `name`, when set (scalingModifiers' variables).
    pub trigger_name: Option<String>,
    /// The metric name (`s<i>-...`), empty when the trigger could not be built.
    pub metric: String,
    /// What the source said, or why it could not be asked.
    pub result: Result<crate::scalers::Sample, String>,
}

/// What a poll says for activation: KEDA's `isActive` and `isError`, and each metric's
/// activity for `status.triggersActivity`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Activity {
    /// Any trigger active (with scalingModifiers: the composite above its
    /// activationTarget and no trigger failing).
    pub active: bool,
    /// Any trigger failed.
    pub error: bool,
    /// Activity by metric name.
    pub per_metric: std::collections::BTreeMap<String, bool>,
    /// When `error`: the first failing trigger's error, for the Event that reports it.
    pub failure: Option<String>,
}

/// Fold a poll's samples into [`Activity`] as KEDA's scale loop does. A trigger failing
/// past its fallback's `failureThreshold` (by `health`) counts as active and not as an
/// error: the HPA is being served the fallback value, and the target must be up for it.
pub fn activity(
    so: &crate::ScaledObject,
    samples: &[TriggerSample],
    health: &std::collections::BTreeMap<String, crate::scaled_object::HealthStatus>,
) -> Activity {
    let fallback = so
        .spec
        .fallback
        .as_ref()
        .filter(|_| crate::fallback::has_valid_fallback(&so.spec));
    let falling_back = |s: &TriggerSample| {
        s.result.is_err()
            && fallback.is_some_and(|f| {
                health
                    .get(&s.metric.to_ascii_lowercase())
                    .is_some_and(|h| crate::fallback::falling_back(f, h))
            })
    };
    // Under the `scalingModifiers` behaviour a trigger past its threshold is nil for the
    // formula (as on the metric path), not a fallback: the composite decides activity.
    let nil_for_formula = fallback.is_some_and(|f| {
        crate::fallback::behavior(f) == Ok(crate::fallback::Behavior::ScalingModifiers)
    }) && crate::modifiers::of_scaled_object(so).is_some();
    let any_fallback = !nil_for_formula && samples.iter().any(falling_back);
    let failing = |s: &&TriggerSample| s.result.is_err() && !(nil_for_formula && falling_back(s));
    let failure = if any_fallback {
        None
    } else {
        samples
            .iter()
            .find(failing)
            .and_then(|s| s.result.as_ref().err().cloned())
    };
    let error = failure.is_some();
    let per_metric: std::collections::BTreeMap<String, bool> = samples
        .iter()
        .filter(|s| !s.metric.is_empty())
        .map(|s| {
            let active = s.result.as_ref().is_ok_and(|r| r.active) || falling_back(s);
            (s.metric.clone(), active)
        })
        .collect();
    let active = any_fallback
        || match crate::modifiers::of_scaled_object(so) {
            Some(Ok(m)) => match composite_read(so, &m, samples, health) {
                CompositeRead::Value { active, .. } => active,
                CompositeRead::Fallback => true,
                CompositeRead::Error(_) => false,
            },
            // An invalid formula is the reconcile's error to report; nothing is active.
            Some(Err(_)) => false,
            None => per_metric.values().any(|a| *a),
        };
    Activity {
        active,
        error,
        per_metric,
        failure,
    }
}

/// What `composite-metric` reads now under scalingModifiers.
#[derive(Debug, Clone, PartialEq)]
pub enum CompositeRead {
    /// The formula's value, and whether it is above `activationTarget`.
    Value {
        /// The value.
        value: f64,
        /// Above `activationTarget`.
        active: bool,
    },
    /// A trigger is past its fallback's `failureThreshold` (under a behaviour other than
    /// `scalingModifiers`): the fallback value is served for the composite target.
    Fallback,
    /// A trigger failed and no fallback covers it.
    Error(String),
}

/// KEDA's composite read from one round of samples, for HPA reads, the scale loop's
/// activity and `eval` alike: each named trigger's value or failure, a failure past the
/// fallback's `failureThreshold` (by `health`, lowercase metric names) turned into nil
/// for the formula or into the fallback value as the behaviour says, then the formula.
pub fn composite_read(
    so: &crate::ScaledObject,
    m: &crate::modifiers::Modifiers,
    samples: &[TriggerSample],
    health: &std::collections::BTreeMap<String, crate::scaled_object::HealthStatus>,
) -> CompositeRead {
    use crate::modifiers::{composite, plan, Outcome, Plan};
    let fallback = so
        .spec
        .fallback
        .as_ref()
        .filter(|_| crate::fallback::has_valid_fallback(&so.spec));
    let behavior_is_modifiers = fallback.is_some_and(|f| {
        crate::fallback::behavior(f) == Ok(crate::fallback::Behavior::ScalingModifiers)
    });
    let outcomes: Vec<(String, Outcome)> = samples
        .iter()
        .filter_map(|s| {
            let outcome = match &s.result {
                Ok(r) => Outcome::Value(r.value),
                Err(error) => Outcome::Failed {
                    error: error.clone(),
                    past_threshold: fallback.is_some_and(|f| {
                        health
                            .get(&s.metric.to_ascii_lowercase())
                            .is_some_and(|h| crate::fallback::falling_back(f, h))
                    }),
                },
            };
            Some((s.trigger_name.clone()?, outcome))
        })
        .collect();
    match plan(behavior_is_modifiers, &outcomes) {
        Plan::Evaluate(vars) => {
            let replicas = so.spec.fallback.as_ref().map(|f| f.replicas);
            match composite(m, &vars, false, replicas) {
                Ok((value, active)) => CompositeRead::Value { value, active },
                Err(e) => CompositeRead::Error(e.to_string()),
            }
        }
        Plan::Fallback => CompositeRead::Fallback,
        Plan::Error(e) => CompositeRead::Error(e),
    }
}

/// The next poll time after `now_ms` (Unix milliseconds) for an interval of
/// `interval_s` seconds: the next multiple of the interval.
pub fn next_aligned(now_ms: i64, interval_s: i64) -> i64 {
    let step = interval_s.max(1) * 1000;
    (now_ms.div_euclid(step) + 1) * step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, metric: &str, r: Result<(f64, bool), &str>) -> TriggerSample {
        TriggerSample {
            trigger_name: Some(name.into()),
            metric: metric.into(),
            result: r
                .map(|(value, active)| crate::scalers::Sample { value, active })
                .map_err(str::to_string),
        }
    }

    fn so(extra: serde_json::Value) -> crate::ScaledObject {
        let mut v = serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "so", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"name": "web"}, "triggers": [
                {"type": "cron", "name": "a", "metadata": {}},
                {"type": "cron", "name": "b", "metadata": {}}]}
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).expect("ScaledObject")
    }

    #[test]
    fn the_cache_answers_by_namespace_name_and_metric_any_case() {
        let c = MetricCache::default();
        let entry = |v: f64| Cached {
            value: Ok(v),
            active: true,
            at: Instant::now(),
            target: None,
        };
        c.put(
            "a",
            "so",
            HashMap::from([("S0-Prometheus".to_string(), entry(1.0))]),
        );
        c.put("b", "so", HashMap::from([("s0-x".to_string(), entry(2.0))]));
        let hour = Duration::from_secs(3600);
        assert_eq!(
            c.get("a", "so", "s0-prometheus", hour).map(|c| c.value),
            Some(Ok(1.0))
        );
        assert_eq!(
            c.get("a", "so", "S0-PROMETHEUS", hour).map(|c| c.value),
            Some(Ok(1.0))
        );
        assert_eq!(c.get("b", "so", "s0-prometheus", hour), None);
        assert_eq!(
            c.get("a", "so", "s0-prometheus", Duration::ZERO),
            None,
            "too old"
        );
        assert_eq!(c.len(), 2);
        // Polled again, the same metric: updated in place; other metrics: replaced.
        c.put(
            "a",
            "so",
            HashMap::from([("s0-prometheus".to_string(), entry(3.0))]),
        );
        assert_eq!(
            c.get("a", "so", "S0-Prometheus", hour).map(|c| c.value),
            Some(Ok(3.0))
        );
        c.put(
            "a",
            "so",
            HashMap::from([
                ("s0-prometheus".to_string(), entry(4.0)),
                ("s1-Cron".to_string(), entry(5.0)),
            ]),
        );
        assert_eq!(
            c.get("a", "so", "s1-cron", hour).map(|c| c.value),
            Some(Ok(5.0))
        );
        c.put(
            "a",
            "so",
            HashMap::from([("s1-cron".to_string(), entry(6.0))]),
        );
        assert_eq!(c.get("a", "so", "s0-prometheus", hour), None, "gone");
        assert_eq!(
            c.get("a", "so", "s1-cron", hour).map(|c| c.value),
            Some(Ok(6.0))
        );
        assert_eq!(c.len(), 2);
        c.retain(|ns, _| ns == "b");
        assert_eq!(
            (c.len(), c.get("a", "so", "s0-prometheus", hour)),
            (1, None)
        );
    }

    #[test]
    fn activity_is_any_trigger_or_the_composite() {
        let none = std::collections::BTreeMap::new();
        let plain = so(serde_json::json!({}));
        let a = activity(
            &plain,
            &[
                sample("a", "s0-x", Ok((0.0, false))),
                sample("b", "s1-y", Ok((3.0, true))),
            ],
            &none,
        );
        assert!(a.active && !a.error);
        assert_eq!(a.per_metric.get("s1-y"), Some(&true));
        let a = activity(
            &plain,
            &[
                sample("a", "s0-x", Err("down")),
                sample("b", "s1-y", Ok((0.0, false))),
            ],
            &none,
        );
        assert!(!a.active && a.error);
        assert_eq!(a.per_metric.get("s0-x"), Some(&false));
        assert_eq!(a.failure.as_deref(), Some("down"), "the failure is said");

        let modified = so(serde_json::json!({"advanced": {"scalingModifiers": {
            "formula": "a + b", "target": "5", "activationTarget": "4"}}}));
        let a = activity(
            &modified,
            &[
                sample("a", "s0-x", Ok((2.0, true))),
                sample("b", "s1-y", Ok((2.0, true))),
            ],
            &none,
        );
        assert!(!a.active, "2 + 2 is not above 4, whatever the triggers say");
        let a = activity(
            &modified,
            &[
                sample("a", "s0-x", Ok((2.0, false))),
                sample("b", "s1-y", Ok((3.0, false))),
            ],
            &none,
        );
        assert!(a.active, "2 + 3 is above 4");
        let a = activity(
            &modified,
            &[
                sample("a", "s0-x", Ok((9.0, true))),
                sample("b", "s1-y", Err("down")),
            ],
            &none,
        );
        assert!(
            !a.active && a.error,
            "a failing trigger makes the composite inactive"
        );

        // Past the threshold under the scalingModifiers behaviour the failing trigger is
        // nil for the formula: `(b ?? 0) + a` = 2 is not above 4, so inactive, and not an
        // error; under the static behaviour the fallback keeps the target up.
        let failing = std::collections::BTreeMap::from([(
            "s1-y".to_string(),
            crate::scaled_object::HealthStatus {
                number_of_failures: Some(3),
                status: Some("Failing".into()),
            },
        )]);
        let with_behavior = |behavior: &str| {
            so(serde_json::json!({
                "fallback": {"failureThreshold": 1, "replicas": 4, "behavior": behavior},
                "advanced": {"scalingModifiers": {
                    "formula": "(b ?? 0) + a", "target": "5", "activationTarget": "4"}}}))
        };
        let samples = [
            sample("a", "s0-x", Ok((2.0, false))),
            sample("b", "s1-y", Err("down")),
        ];
        let a = activity(&with_behavior("scalingModifiers"), &samples, &failing);
        assert!(
            !a.active && !a.error && a.failure.is_none(),
            "nil for the formula: 2 is not above 4"
        );
        let a = activity(&with_behavior("static"), &samples, &failing);
        assert!(
            a.active && !a.error && a.failure.is_none(),
            "the fallback keeps the target up"
        );
    }

    #[test]
    fn alignment() {
        assert_eq!(next_aligned(0, 30), 30_000);
        assert_eq!(next_aligned(29_999, 30), 30_000);
        assert_eq!(next_aligned(30_000, 30), 60_000);
        assert_eq!(next_aligned(61_234, 5), 65_000);
        assert_eq!(next_aligned(1_000, 0), 2_000, "interval at least 1 s");
    }

    #[test]
    fn store_and_expire() {
        let c = MetricCache::default();
        let now = Instant::now();
        c.put(
            "ns",
            "so",
            HashMap::from([(
                "s0-Prometheus".to_string(),
                Cached {
                    value: Ok(3.0),
                    active: true,
                    at: now,
                    target: None,
                },
            )]),
        );
        let hit = c
            .get("ns", "so", "S0-PROMETHEUS", Duration::from_secs(10))
            .expect("hit, any case");
        assert_eq!(hit.value, Ok(3.0));
        assert!(c.get("ns", "so", "s1-x", Duration::from_secs(10)).is_none());
        assert!(c
            .get("ns", "other", "s0-prometheus", Duration::from_secs(10))
            .is_none());
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            c.get("ns", "so", "s0-prometheus", Duration::from_millis(10))
                .is_none(),
            "too old"
        );
        c.retain(|_, name| name != "so");
        assert!(c.is_empty());
    }
}
