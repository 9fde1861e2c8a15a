//! The HPA controller's arithmetic on external metrics, as a pure function, so a trace can
//! show what the HPA will do with the values eventscale serves: each metric's usage ratio,
//! whether it is inside the tolerance (then the count is kept), the count it proposes, the
//! largest proposal, clamped to the HPA's bounds. As kube-controller-manager's replica
//! calculator does it: values in milli-units as served (truncated), an `AverageValue` target against
//! the target's `status.replicas`, a `Value` target against `spec.replicas` and the ready
//! pods. The HPA's `behavior` (stabilisation windows, rate limits) comes after this and is
//! not simulated: its own `status.desiredReplicas` says where it ended.

use crate::scalers::MetricTargetType;

/// kube-controller-manager's `--horizontal-pod-autoscaler-tolerance` default.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// The replica counts the arithmetic starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// The target's `spec.replicas`.
    pub spec: i32,
    /// The target's `status.replicas`.
    pub status: i32,
    /// Its ready pods (used by `Value` targets only).
    pub ready: i32,
}

/// One metric's part.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricProposal {
    /// value / (target × replicas) for `AverageValue`, value / target for `Value`.
    pub ratio: f64,
    /// |1 − ratio| ≤ tolerance: the current count is kept.
    pub within_tolerance: bool,
    /// The count this metric proposes.
    pub replicas: i32,
    /// How it was reached, for people: `ceil(12 / 5) = 3`.
    pub formula: String,
}

/// A served value in milli-units: as eventscale serves it (truncated, as KEDA does), which
/// is what the HPA computes on.
fn served_milli(v: f64) -> f64 {
    crate::quantity::milli(v) as f64
}

/// A target in milli-units, rounded up, as `Quantity::MilliValue` reads the HPA's spec.
fn target_milli(v: f64) -> f64 {
    (v * 1000.0).ceil()
}

fn to_i32(v: f64) -> i32 {
    if v >= f64::from(i32::MAX) {
        i32::MAX
    } else if v <= 0.0 {
        0
    } else {
        v as i32
    }
}

fn show(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What one external metric of `kind` with `target` proposes for `value`; `None` for a
/// target of 0 or a value that is not finite (the HPA refuses those).
pub fn metric_proposal(
    kind: MetricTargetType,
    value: f64,
    target: f64,
    replicas: Replicas,
    tolerance: f64,
) -> Option<MetricProposal> {
    let (usage, target_m) = (served_milli(value), target_milli(target));
    if !value.is_finite() || target_m <= 0.0 {
        return None;
    }
    let (v, t) = (show(usage / 1000.0), show(target_m / 1000.0));
    Some(match kind {
        MetricTargetType::AverageValue => {
            let current = replicas.status;
            let ratio = usage / (target_m * f64::from(current));
            if current > 0 && (1.0 - ratio).abs() <= tolerance {
                MetricProposal {
                    ratio,
                    within_tolerance: true,
                    replicas: current,
                    formula: format!(
                        "{v} / ({t} × {current}) = {} is within the tolerance {}: stays at {current}",
                        show(ratio),
                        show(tolerance)
                    ),
                }
            } else {
                let n = to_i32((usage / target_m).ceil());
                MetricProposal {
                    ratio,
                    within_tolerance: false,
                    replicas: n,
                    formula: format!("ceil({v} / {t}) = {n}"),
                }
            }
        }
        MetricTargetType::Value => {
            let ratio = usage / target_m;
            if replicas.spec == 0 {
                let n = to_i32(ratio.ceil());
                MetricProposal {
                    ratio,
                    within_tolerance: false,
                    replicas: n,
                    formula: format!("ceil({v} / {t}) = {n}"),
                }
            } else if (1.0 - ratio).abs() <= tolerance {
                MetricProposal {
                    ratio,
                    within_tolerance: true,
                    replicas: replicas.spec,
                    formula: format!(
                        "{v} / {t} = {} is within the tolerance {}: stays at {}",
                        show(ratio),
                        show(tolerance),
                        replicas.spec
                    ),
                }
            } else {
                let n = to_i32((ratio * f64::from(replicas.ready)).ceil());
                MetricProposal {
                    ratio,
                    within_tolerance: false,
                    replicas: n,
                    formula: format!("ceil({v} / {t} × {} ready) = {n}", replicas.ready),
                }
            }
        }
    })
}

/// The HPA's proposal over several metrics: the largest, clamped to `[min, max]`.
/// `None` when no metric proposes anything.
pub fn proposal(proposals: &[MetricProposal], min: i32, max: i32) -> Option<(i32, i32)> {
    let raw = proposals.iter().map(|p| p.replicas).max()?;
    Some((raw, raw.clamp(min.min(max), max)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetricTargetType::{AverageValue, Value};

    fn r(spec: i32, status: i32, ready: i32) -> Replicas {
        Replicas {
            spec,
            status,
            ready,
        }
    }

    #[test]
    fn average_value_against_the_status_replicas() {
        // 12 over 5 from 1 replica: 3.
        let p = metric_proposal(AverageValue, 12.0, 5.0, r(1, 1, 1), 0.1).expect("p");
        assert_eq!((p.replicas, p.within_tolerance), (3, false));
        assert_eq!(p.formula, "ceil(12 / 5) = 3");
        // 31 over 10 at 3 replicas: ratio 1.033, inside 0.1: kept at 3.
        let p = metric_proposal(AverageValue, 31.0, 10.0, r(3, 3, 3), 0.1).expect("p");
        assert!(p.within_tolerance, "{p:?}");
        assert_eq!(p.replicas, 3);
        // Just outside: 34 over 10 at 3 → ratio 1.133 → ceil(3.4) = 4.
        let p = metric_proposal(AverageValue, 34.0, 10.0, r(3, 3, 3), 0.1).expect("p");
        assert_eq!((p.replicas, p.within_tolerance), (4, false));
        // The comparison is `≤`, in float64 as the controller does it: |1 − 33 / 30| is
        // 0.10000000000000009 there too, so exactly 10 % over is outside.
        let p = metric_proposal(AverageValue, 33.0, 10.0, r(3, 3, 3), 0.1).expect("p");
        assert!(!p.within_tolerance, "{p:?}");
        let p = metric_proposal(AverageValue, 27.0, 10.0, r(3, 3, 3), 0.1).expect("p");
        assert!(p.within_tolerance, "0.9: {p:?}");
        // No replicas yet: ceil(value / target).
        let p = metric_proposal(AverageValue, 7.0, 3.0, r(0, 0, 0), 0.1).expect("p");
        assert_eq!(p.replicas, 3);
        // A larger tolerance keeps more.
        let p = metric_proposal(AverageValue, 34.0, 10.0, r(3, 3, 3), 0.2).expect("p");
        assert!(p.within_tolerance);
    }

    #[test]
    fn value_against_the_spec_replicas_and_ready_pods() {
        // 20 over 10 with 2 ready of 3: ceil(2 × 2) = 4.
        let p = metric_proposal(Value, 20.0, 10.0, r(3, 3, 2), 0.1).expect("p");
        assert_eq!(p.replicas, 4);
        assert_eq!(p.formula, "ceil(20 / 10 × 2 ready) = 4");
        // Within the tolerance: the spec count.
        let p = metric_proposal(Value, 10.5, 10.0, r(3, 1, 1), 0.1).expect("p");
        assert_eq!((p.replicas, p.within_tolerance), (3, true));
        // At zero: ceil(ratio).
        let p = metric_proposal(Value, 25.0, 10.0, r(0, 0, 0), 0.1).expect("p");
        assert_eq!(p.replicas, 3);
    }

    #[test]
    fn values_as_served_and_bad_targets_propose_nothing() {
        // 0.0001 is served as 0 (milli-units, truncated): the HPA proposes 0.
        let p = metric_proposal(AverageValue, 0.0001, 5.0, r(0, 0, 0), 0.1).expect("p");
        assert_eq!(p.replicas, 0);
        // 4.0002 is served as 4: ceil(4 / 2) = 2, not 3.
        let p = metric_proposal(AverageValue, 4.0002, 2.0, r(0, 0, 0), 0.1).expect("p");
        assert_eq!(p.replicas, 2);
        assert_eq!(
            metric_proposal(AverageValue, 1.0, 0.0, r(1, 1, 1), 0.1),
            None
        );
        assert_eq!(metric_proposal(Value, f64::NAN, 1.0, r(1, 1, 1), 0.1), None);
        let huge = metric_proposal(AverageValue, 1e30, 1.0, r(1, 1, 1), 0.1).expect("p");
        assert_eq!(huge.replicas, i32::MAX);
    }

    #[test]
    fn the_largest_proposal_clamped() {
        let ps: Vec<_> = [(12.0, 5.0), (2.0, 1.0)]
            .iter()
            .filter_map(|(v, t)| metric_proposal(AverageValue, *v, *t, r(1, 1, 1), 0.1))
            .collect();
        assert_eq!(proposal(&ps, 1, 10), Some((3, 3)));
        assert_eq!(proposal(&ps, 1, 2), Some((3, 2)));
        assert_eq!(proposal(&ps, 5, 10), Some((3, 5)));
        assert_eq!(proposal(&[], 1, 10), None);
    }
}
