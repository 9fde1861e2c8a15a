//! KEDA's ScaledJob decisions as pure functions: how the triggers' queue lengths combine
//! ([`demand`]), how many Jobs a poll creates under each scaling strategy ([`decide`]), which
//! Jobs count as running and pending ([`count_jobs`]), which finished Jobs the history
//! limits remove ([`history_to_delete`]), which Jobs a rollout removes
//! ([`previous_generation_jobs`]), and the Job a ScaledJob creates ([`job_for`]).
//!
//! The executor lists, creates and deletes; everything it decides is here and table-tested
//! against KEDA's own cases (`pkg/scaling/executor/scale_jobs_test.go`,
//! `pkg/scaling/scale_handler_test.go`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use crate::scaled_job::{
    ScaledJob, ScalingStrategy, EXCLUDED_LABELS_ANNOTATION, GENERATION_ANNOTATION,
    SCALED_JOB_NAME_LABEL,
};
use crate::scaled_object::LAST_APPLIED;

/// A scaling strategy, parsed once from `spec.scalingStrategy`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// Create what the queue asks for, less the Jobs running.
    Default,
    /// Deduct a fixed number and a share of the running Jobs.
    Custom {
        /// `customScalingQueueLengthDeduction`.
        deduction: i64,
        /// `customScalingRunningJobPercentage`.
        running_share: f64,
    },
    /// Count pending Jobs against the queue, capped at the maximum.
    Accurate,
    /// Fill every free slot while there is a queue.
    Eager,
}

impl Strategy {
    /// KEDA's `NewScalingStrategy`. `custom` without a readable
    /// `customScalingRunningJobPercentage` is `default`, as in KEDA; the second value then
    /// says so, naming the field, for the controller to report (KEDA only logs it).
    pub fn of(s: Option<&ScalingStrategy>) -> (Self, Option<String>) {
        let Some(s) = s else {
            return (Self::Default, None);
        };
        match s.strategy.as_deref() {
            Some("custom") => {
                let raw = s.custom_scaling_running_job_percentage.as_deref();
                match raw.map(str::trim).map(str::parse::<f64>) {
                    Some(Ok(share)) if share.is_finite() => (
                        Self::Custom {
                            deduction: s.custom_scaling_queue_length_deduction.map_or(0, i64::from),
                            running_share: share,
                        },
                        None,
                    ),
                    _ => (
                        Self::Default,
                        Some(format!(
                            "spec.scalingStrategy.customScalingRunningJobPercentage: {:?} is not a number; the custom strategy needs one, so the default strategy applies",
                            raw.unwrap_or("")
                        )),
                    ),
                }
            }
            Some("accurate") => (Self::Accurate, None),
            Some("eager") => (Self::Eager, None),
            _ => (Self::Default, None),
        }
    }

    /// KEDA's `GetEffectiveMaxScale`: (Jobs that may be created, Jobs the queue asks for).
    /// `running` is the running Jobs above the minimum, `max` the room above it.
    pub fn effective_max_scale(
        self,
        max_scale: i64,
        running: i64,
        pending: i64,
        max: i64,
        scale_to: i64,
    ) -> (i64, i64) {
        match self {
            Self::Default => (max_scale - running, scale_to),
            Self::Custom {
                deduction,
                running_share,
            } => {
                // Go's int64(float64) truncates toward zero.
                let share = (running as f64 * running_share).trunc() as i64;
                ((max_scale - deduction - share).min(max), scale_to)
            }
            Self::Accurate => {
                if max_scale + running - pending > max {
                    (max - running, scale_to)
                } else {
                    (max_scale - pending, scale_to)
                }
            }
            Self::Eager => ((max - running - pending).min(max_scale), max),
        }
    }
}

/// `multipleScalersCalculation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calculation {
    /// The active trigger with the longest queue (default).
    Max,
    /// The active trigger with the shortest queue.
    Min,
    /// The average over the active triggers.
    Avg,
    /// The sum over the active triggers.
    Sum,
}

impl Calculation {
    /// From `spec.scalingStrategy.multipleScalersCalculation` (anything else is `max`, as
    /// in KEDA; the CRD's enum refuses other values).
    pub fn of(s: Option<&ScalingStrategy>) -> Self {
        match s.and_then(|s| s.multiple_scalers_calculation.as_deref()) {
            Some("min") => Self::Min,
            Some("avg") => Self::Avg,
            Some("sum") => Self::Sum,
            _ => Self::Max,
        }
    }
}

/// One trigger's reading at a poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerMetric {
    /// The trigger's metric value: the queue's length.
    pub queue_length: f64,
    /// Jobs the queue asks for: queue / target, capped at the room above the minimum.
    pub max_value: f64,
    /// The trigger's own activity (its activation threshold).
    pub active: bool,
}

impl ScalerMetric {
    /// KEDA's `CalculateQueueLengthAndMaxValue` for one trigger with one metric: its value
    /// over its target (0 with a zero target), capped at `max` (the room above the minimum).
    pub fn new(queue_length: f64, target: f64, active: bool, max: i64) -> Self {
        let max_value = if target == 0.0 {
            0.0
        } else {
            (queue_length / target).min(max as f64)
        };
        Self {
            queue_length,
            max_value,
            active,
        }
    }
}

/// What the triggers ask for at a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    /// Whether the ScaledJob is active (a trigger, or a minimum above 0).
    pub active: bool,
    /// The combined queue length, rounded up: the most Jobs a poll creates.
    pub scale_to: i64,
    /// The combined queue over target, rounded up and capped at the room above the minimum.
    pub max_scale: i64,
}

/// KEDA's `IsScaledJobActive`: the active triggers' readings combined by `calc`. With a
/// minimum above 0 the ScaledJob is always active.
pub fn demand(metrics: &[ScalerMetric], calc: Calculation, min: i64, max: i64) -> Demand {
    let active: Vec<&ScalerMetric> = metrics.iter().filter(|m| m.active).collect();
    let (mut is_active, mut ql, mut mv) = (false, 0.0_f64, 0.0_f64);
    match calc {
        Calculation::Max => {
            // KEDA takes a trigger only when its queue is strictly longer than the pick so
            // far (starting at 0): an active trigger with an empty queue leaves it inactive.
            for m in &active {
                if m.queue_length > ql {
                    (is_active, ql, mv) = (true, m.queue_length, m.max_value);
                }
            }
        }
        Calculation::Min => {
            // KEDA's order: a pick with an empty queue is replaced by the next active one.
            for m in &active {
                if ql == 0.0 || m.queue_length < ql {
                    (is_active, ql, mv) = (true, m.queue_length, m.max_value);
                }
            }
        }
        Calculation::Avg | Calculation::Sum => {
            if !active.is_empty() {
                is_active = true;
                ql = active.iter().map(|m| m.queue_length).sum();
                mv = active.iter().map(|m| m.max_value).sum();
                if calc == Calculation::Avg {
                    let n = active.len() as f64;
                    (ql, mv) = (ql / n, mv / n);
                }
            }
        }
    }
    if min > 0 {
        is_active = true;
    }
    mv = mv.min(max as f64);
    Demand {
        active: is_active,
        scale_to: ceil(ql),
        max_scale: ceil(mv),
    }
}

/// Go's `int64(math.Ceil(v))`, saturating instead of overflowing.
fn ceil(v: f64) -> i64 {
    if v.is_nan() {
        0
    } else {
        v.ceil() as i64
    }
}

/// What a poll does, and the numbers it was decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Jobs not finished (pending included).
    pub running: i64,
    /// Running Jobs whose pods do not run yet.
    pub pending: i64,
    /// Jobs that may be created (the strategy's effective max scale, never below 0).
    pub effective: i64,
    /// Jobs the queue asks for.
    pub scale_to: i64,
    /// Jobs to create now.
    pub create: i64,
}

/// KEDA's `getScalingDecision` and `createJobs`: below the minimum, the difference;
/// otherwise the strategy over the running Jobs above the minimum. Nothing is created
/// while inactive.
pub fn decide(
    strategy: Strategy,
    min: i64,
    max: i64,
    running: i64,
    pending: i64,
    demand: Demand,
) -> Decision {
    let (effective, scale_to) = if running < min {
        (min - running, min - running)
    } else {
        strategy.effective_max_scale(
            demand.max_scale,
            running - min,
            pending,
            max,
            demand.scale_to,
        )
    };
    let effective = effective.max(0);
    let create = if demand.active && effective > 0 {
        scale_to.min(effective).max(0)
    } else {
        0
    };
    Decision {
        running,
        pending,
        effective,
        scale_to,
        create,
    }
}

/// KEDA's `isJobFinished`: a `Complete` or `Failed` condition that is True.
pub fn job_finished(job: &Job) -> bool {
    finished_as(job).is_some()
}

/// `Complete` or `Failed`, by the first such condition that is True.
fn finished_as(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"))
        .map(|c| c.type_.as_str())
}

/// Whether `pod` belongs to `job`: its controller owner reference, or else the `job-name`
/// label Kubernetes puts on a Job's pods (how KEDA finds them).
fn pod_of(pod: &Pod, job: &Job) -> bool {
    let uid = job.metadata.uid.as_deref();
    let owned = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "Job" && Some(o.uid.as_str()) == uid);
    owned
        || (pod.metadata.namespace == job.metadata.namespace
            && job.metadata.name.is_some()
            && pod.metadata.labels.as_ref().and_then(|l| l.get("job-name"))
                == job.metadata.name.as_ref())
}

/// KEDA's pending test for an unfinished Job: pending unless some pod runs (phase
/// `Running` or `Succeeded`), or, with `pending_pod_conditions`, unless some pod has every
/// listed condition True. A Job without pods is pending.
pub fn job_pending<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    pending_pod_conditions: &[String],
) -> bool {
    // KEDA compares a count of matched types with the list's length, so a listed
    // duplicate would leave every Job pending; each type is asked for once here.
    let wanted: BTreeSet<&str> = pending_pod_conditions.iter().map(String::as_str).collect();
    let runs = |pod: &Pod| {
        let status = pod.status.as_ref();
        if wanted.is_empty() {
            matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Running" | "Succeeded")
            )
        } else {
            let met: BTreeSet<&str> = status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.status == "True")
                .map(|c| c.type_.as_str())
                .collect();
            wanted.is_subset(&met)
        }
    };
    !pods.into_iter().any(runs)
}

/// (running, pending) over a ScaledJob's Jobs: running counts every unfinished Job,
/// pending those of them whose pods do not run yet.
pub fn count_jobs(jobs: &[Job], pods: &[Pod], pending_pod_conditions: &[String]) -> (i64, i64) {
    let mut running = 0;
    let mut pending = 0;
    for job in jobs.iter().filter(|j| !job_finished(j)) {
        running += 1;
        if job_pending(
            pods.iter().filter(|p| pod_of(p, job)),
            pending_pod_conditions,
        ) {
            pending += 1;
        }
    }
    (running, pending)
}

/// KEDA's `cleanUp`: the names of the finished Jobs beyond the history limits, oldest
/// first, by completion. A Job with no completion time (a failed Job has none) is dated
/// by its `Failed` condition's transition, then by its creation; KEDA leaves their order
/// to chance.
pub fn history_to_delete(
    jobs: &[Job],
    successful_limit: usize,
    failed_limit: usize,
) -> Vec<String> {
    let mut complete: Vec<&Job> = Vec::new();
    let mut failed: Vec<&Job> = Vec::new();
    for job in jobs {
        match finished_as(job) {
            Some("Complete") => complete.push(job),
            Some(_) => failed.push(job),
            None => {}
        }
    }
    let mut out = Vec::new();
    for (mut group, limit) in [(complete, successful_limit), (failed, failed_limit)] {
        if group.len() <= limit {
            continue;
        }
        group.sort_by(|a, b| {
            finished_at(a)
                .cmp(&finished_at(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let extra = group.len() - limit;
        out.extend(
            group
                .into_iter()
                .take(extra)
                .filter_map(|j| j.metadata.name.clone()),
        );
    }
    out
}

fn finished_at(job: &Job) -> Option<&Time> {
    let status = job.status.as_ref();
    status
        .and_then(|s| s.completion_time.as_ref())
        .or_else(|| {
            status?
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True")?
                .last_transition_time
                .as_ref()
        })
        .or(job.metadata.creation_timestamp.as_ref())
}

/// KEDA's `deletePreviousVersionScaleJobs`: the Jobs (running or finished) that another
/// generation of the ScaledJob created, or that carry no generation.
pub fn previous_generation_jobs(jobs: &[Job], generation: i64) -> Vec<String> {
    let current = generation.to_string();
    jobs.iter()
        .filter(|j| {
            j.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(GENERATION_ANNOTATION))
                != Some(&current)
        })
        .filter_map(|j| j.metadata.name.clone())
        .collect()
}

/// The value of `app.kubernetes.io/managed-by` on Jobs: KEDA's, so that selectors and
/// dashboards written for KEDA's Jobs keep matching.
pub const MANAGED_BY: &str = "keda-operator";

/// The Job a ScaledJob creates, as KEDA builds it: `generateName` `<name>-`, KEDA's five
/// labels under the ScaledJob's own (less `scaledjob.keda.sh/job-excluded-labels`), the
/// generation annotation under the ScaledJob's annotations (less kubectl's last-applied
/// copy), the pod template labelled with the ScaledJob, `restartPolicy` `OnFailure` when
/// unset, and the ScaledJob as controlling owner.
pub fn job_for(sj: &ScaledJob, version: &str) -> Result<Job, String> {
    let meta = &sj.metadata;
    let name = meta.name.as_deref().ok_or("the ScaledJob has no name")?;
    let uid = meta.uid.as_deref().ok_or("the ScaledJob has no uid")?;
    let mut labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name", name),
        ("app.kubernetes.io/version", version),
        ("app.kubernetes.io/part-of", name),
        ("app.kubernetes.io/managed-by", MANAGED_BY),
        (SCALED_JOB_NAME_LABEL, name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let excluded: Vec<&str> = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXCLUDED_LABELS_ANNOTATION))
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    for (k, v) in meta.labels.iter().flatten() {
        if !excluded.contains(&k.as_str()) {
            labels.insert(k.clone(), v.clone());
        }
    }
    let mut annotations = BTreeMap::from([(
        GENERATION_ANNOTATION.to_string(),
        meta.generation.unwrap_or(0).to_string(),
    )]);
    for (k, v) in meta.annotations.iter().flatten() {
        if k != LAST_APPLIED {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let mut spec = sj.spec.job_target_ref.clone();
    let template_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(SCALED_JOB_NAME_LABEL.into(), name.into());
    if let Some(pod) = spec.template.spec.as_mut() {
        if pod.restart_policy.as_deref().unwrap_or("").is_empty() {
            pod.restart_policy = Some("OnFailure".into());
        }
    }
    Ok(Job {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: meta.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "keda.sh/v1alpha1".into(),
                kind: "ScaledJob".into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use serde_json::json;

    fn custom(deduction: Option<i32>, pct: &str) -> ScalingStrategy {
        ScalingStrategy {
            strategy: Some("custom".into()),
            custom_scaling_queue_length_deduction: deduction,
            custom_scaling_running_job_percentage: Some(pct.into()),
            ..Default::default()
        }
    }

    fn named(strategy: &str) -> ScalingStrategy {
        ScalingStrategy {
            strategy: Some(strategy.into()),
            ..Default::default()
        }
    }

    /// KEDA's `scale_jobs_test.go`: (maxScale, running, pending, max, scaleTo) → (effective,
    /// scaleTo), strategy by strategy.
    #[test]
    fn strategies_match_kedas_table() {
        let default = Strategy::of(None).0;
        let cases: Vec<(Strategy, [i64; 5], i64, i64)> = vec![
            (default, [3, 2, 0, 5, 1], 1, 1),
            (default, [2, 0, 0, 5, 1], 2, 1),
            (
                Strategy::of(Some(&custom(Some(1), "0.5"))).0,
                [3, 2, 0, 5, 1],
                1,
                1,
            ),
            (
                Strategy::of(Some(&custom(Some(1), "0.5"))).0,
                [10, 0, 0, 10, 1],
                9,
                1,
            ),
            (
                Strategy::of(Some(&custom(Some(2), "0"))).0,
                [3, 2, 0, 5, 1],
                1,
                1,
            ),
            (
                Strategy::of(Some(&custom(Some(-2), "0"))).0,
                [3, 2, 0, 4, 1],
                4,
                1,
            ),
            (
                Strategy::of(Some(&custom(None, "0.5"))).0,
                [10, 2, 0, 100, 1],
                9,
                1,
            ),
            (
                Strategy::of(Some(&custom(None, "0.5"))).0,
                [10, 0, 0, 100, 1],
                10,
                1,
            ),
            (Strategy::Accurate, [3, 2, 0, 5, 1], 3, 1),
            (Strategy::Accurate, [5, 2, 0, 5, 1], 3, 1),
            (Strategy::Accurate, [3, 4, 2, 10, 1], 1, 1),
            (Strategy::Accurate, [5, 4, 2, 5, 1], 1, 1),
            (Strategy::Accurate, [3, 3, 3, 5, 1], 0, 1),
            (Strategy::Accurate, [15, 15, 15, 20, 1], 0, 1),
            (Strategy::Accurate, [10, 10, 10, 15, 1], 0, 1),
            (Strategy::Accurate, [20, 15, 10, 20, 1], 5, 1),
            (Strategy::Eager, [4, 3, 0, 10, 1], 4, 10),
            (Strategy::Eager, [4, 0, 3, 10, 1], 4, 10),
            (Strategy::Eager, [4, 7, 0, 10, 1], 3, 10),
            (Strategy::Eager, [4, 1, 6, 10, 1], 3, 10),
            (Strategy::Eager, [15, 0, 0, 10, 1], 10, 10),
        ];
        for (s, [max_scale, running, pending, max, scale_to], eff, to) in cases {
            assert_eq!(
                s.effective_max_scale(max_scale, running, pending, max, scale_to),
                (eff, to),
                "{s:?} {max_scale},{running},{pending},{max},{scale_to}"
            );
        }
    }

    /// KEDA's `NewScalingStrategy` cases, and custom without a readable percentage falling
    /// back to default, with the field named.
    #[test]
    fn strategy_parsing_follows_keda_and_names_the_bad_field() {
        assert_eq!(
            Strategy::of(Some(&custom(Some(10), "0"))).0,
            Strategy::Custom {
                deduction: 10,
                running_share: 0.0
            }
        );
        assert_eq!(
            Strategy::of(Some(&named("accurate"))),
            (Strategy::Accurate, None)
        );
        assert_eq!(Strategy::of(Some(&named("eager"))), (Strategy::Eager, None));
        assert_eq!(Strategy::of(Some(&named(""))), (Strategy::Default, None));
        assert_eq!(
            Strategy::of(Some(&named("default"))),
            (Strategy::Default, None)
        );
        for pct in ["", "half", "NaN"] {
            let (s, warning) = Strategy::of(Some(&custom(Some(1), pct)));
            assert_eq!(s, Strategy::Default, "{pct:?}");
            let w = warning.expect("a warning");
            assert!(w.contains("customScalingRunningJobPercentage"), "{w}");
        }
        let (s, w) = Strategy::of(Some(&named("custom")));
        assert_eq!((s, w.is_some()), (Strategy::Default, true));
        // As KEDA's table: the default strategy where custom has nothing to go on.
        assert_eq!(s.effective_max_scale(3, 2, 0, 5, 1), (1, 1));
        assert_eq!(s.effective_max_scale(2, 0, 0, 5, 1), (2, 1));
    }

    /// KEDA's `getScalingDecision` cases (min 2 or 1, max 100).
    #[test]
    fn below_the_minimum_the_difference_is_created() {
        let d = Demand {
            active: true,
            ..Default::default()
        };
        let decide_min = |min: i64, running, demand| {
            decide(Strategy::Default, min, 100 - min, running, 0, demand)
        };
        let r = decide_min(2, 0, d);
        assert_eq!((r.effective, r.scale_to, r.create), (2, 2, 2));
        let r = decide_min(2, 1, d);
        assert_eq!((r.effective, r.scale_to, r.create), (1, 1, 1));
        let r = decide_min(
            1,
            1,
            Demand {
                active: true,
                scale_to: 2,
                max_scale: 2,
            },
        );
        assert_eq!((r.effective, r.scale_to, r.create), (2, 2, 2));
    }

    #[test]
    fn nothing_is_created_while_inactive_or_without_room() {
        let demand = Demand {
            active: false,
            scale_to: 5,
            max_scale: 5,
        };
        assert_eq!(decide(Strategy::Default, 0, 10, 0, 0, demand).create, 0);
        let demand = Demand {
            active: true,
            ..demand
        };
        // 5 asked for, 7 running: the effective scale is negative and clamped to 0.
        let d = decide(Strategy::Default, 0, 10, 7, 0, demand);
        assert_eq!((d.effective, d.create), (0, 0));
        // The queue, not the room, bounds the Jobs created: 10 queued, max 3 → 3.
        let m = ScalerMetric::new(10.0, 1.0, true, 3);
        let demand = super::demand(&[m], Calculation::Max, 0, 3);
        let d = decide(Strategy::Default, 0, 3, 0, 0, demand);
        assert_eq!(d.create, 3);
        // 4 queued at target 5, max 3 → 1 (the docs' table).
        let m = ScalerMetric::new(4.0, 5.0, true, 3);
        let demand = super::demand(&[m], Calculation::Max, 0, 3);
        assert_eq!(decide(Strategy::Default, 0, 3, 0, 0, demand).create, 1);
        // Eager fills every free slot: 3 queued, max 10 → 3 now; 3 more with 3 running → 3.
        let m = ScalerMetric::new(3.0, 1.0, true, 10);
        let demand = super::demand(&[m], Calculation::Max, 0, 10);
        assert_eq!(decide(Strategy::Eager, 0, 10, 0, 0, demand).create, 3);
        assert_eq!(decide(Strategy::Eager, 0, 10, 3, 0, demand).create, 3);
        assert_eq!(decide(Strategy::Default, 0, 10, 3, 0, demand).create, 0);
    }

    /// Never more Jobs than the maximum under default, accurate and eager, whatever the
    /// inputs. (KEDA's custom formula deducts only what it is told to: with running Jobs
    /// and a share below 1 it can go past the maximum, as in KEDA; see the next test.)
    #[test]
    fn default_accurate_and_eager_never_go_past_the_maximum() {
        for s in [Strategy::Default, Strategy::Accurate, Strategy::Eager] {
            for min in 0..3 {
                for max_total in [1_i64, 3, 10] {
                    let min = min.min(max_total);
                    let max = max_total - min;
                    for running in 0..=max_total {
                        for pending in 0..=running {
                            for queue in [0.0, 1.0, 2.5, 7.0, 40.0] {
                                let m = ScalerMetric::new(queue, 1.0, queue > 0.0, max);
                                let demand = demand(&[m], Calculation::Max, min, max);
                                let d = decide(s, min, max, running, pending, demand);
                                assert!(d.create >= 0);
                                assert!(
                                    running + d.create <= max_total.max(min),
                                    "{s:?} min {min} max {max_total} running {running} pending {pending} queue {queue}: {d:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn custom_deducts_only_what_it_is_told() {
        let s = Strategy::Custom {
            deduction: 0,
            running_share: 0.0,
        };
        let m = ScalerMetric::new(10.0, 1.0, true, 10);
        let d = decide(s, 0, 10, 5, 0, demand(&[m], Calculation::Max, 0, 10));
        assert_eq!(
            d.create, 10,
            "5 running + 10 created, as KEDA's formula says"
        );
    }

    /// KEDA's `TestGetScaledJobState`: four triggers (the fourth inactive), each mode.
    #[test]
    fn several_triggers_combine_as_keda_does() {
        let metrics = |max| {
            vec![
                ScalerMetric::new(20.0, 1.0, true, max),
                ScalerMetric::new(10.0, 2.0, true, max),
                ScalerMetric::new(5.0, 3.0, true, max),
                ScalerMetric::new(7.0, 4.0, false, max),
            ]
        };
        for (calc, max, scale_to, max_scale) in [
            (Calculation::Max, 100, 20, 20),
            (Calculation::Min, 100, 5, 2),
            (Calculation::Avg, 100, 12, 9),
            (Calculation::Sum, 100, 35, 27),
            (Calculation::Sum, 25, 35, 25),
        ] {
            assert_eq!(
                demand(&metrics(max), calc, 0, max),
                Demand {
                    active: true,
                    scale_to,
                    max_scale
                },
                "{calc:?} max {max}"
            );
        }
        // One trigger, min 1, max 100 (99 above the minimum): queue 20 at target 2.
        let m = ScalerMetric::new(20.0, 2.0, true, 99);
        assert_eq!(
            demand(&[m], Calculation::Max, 1, 99),
            Demand {
                active: true,
                scale_to: 20,
                max_scale: 10
            }
        );
        // An empty queue with a minimum above 0 is active.
        let m = ScalerMetric::new(0.0, 1.0, true, 99);
        assert_eq!(
            demand(&[m], Calculation::Max, 1, 99),
            Demand {
                active: true,
                scale_to: 0,
                max_scale: 0
            }
        );
        // KEDA's max mode: an active trigger with an empty queue leaves it inactive.
        assert!(!demand(&[m], Calculation::Max, 0, 99).active);
        assert!(demand(&[m], Calculation::Sum, 0, 99).active);
        assert_eq!(Calculation::of(None), Calculation::Max);
        assert_eq!(
            Calculation::of(Some(&ScalingStrategy {
                multiple_scalers_calculation: Some("avg".into()),
                ..Default::default()
            })),
            Calculation::Avg
        );
    }

    fn job(name: &str, finished: Option<(&str, &str)>) -> Job {
        let mut j: Job = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
        }))
        .expect("Job");
        if let Some((kind, at)) = finished {
            j.status = Some(JobStatus {
                completion_time: (kind == "Complete")
                    .then(|| serde_json::from_value(json!(at)).expect("time")),
                conditions: Some(vec![JobCondition {
                    type_: kind.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
        }
        j
    }

    fn at(min: u32) -> String {
        format!("2026-01-01T15:{min:02}:00Z")
    }

    /// KEDA's `cleanUp` cases.
    #[test]
    fn history_limits_remove_the_oldest_finished_jobs() {
        let jobs = [
            job("name1", Some(("Complete", &at(37)))),
            job("name2", Some(("Complete", &at(36)))),
            job("name3", Some(("Complete", &at(38)))),
            job("running", None),
        ];
        assert_eq!(history_to_delete(&jobs, 2, 2), ["name2"]);

        let mut jobs = vec![
            job("success1", Some(("Complete", &at(37)))),
            job("success2", Some(("Complete", &at(36)))),
            job("success3", Some(("Complete", &at(35)))),
        ];
        for (name, min) in [("fail1", 37), ("fail2", 36), ("fail3", 38)] {
            let mut j = job(name, Some(("Failed", "")));
            if let Some(c) = j.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                c[0].last_transition_time =
                    Some(serde_json::from_value(json!(at(min))).expect("time"));
            }
            jobs.push(j);
        }
        let mut deleted = history_to_delete(&jobs, 1, 2);
        deleted.sort();
        assert_eq!(deleted, ["fail2", "success2", "success3"]);

        let mut jobs = vec![job("success0", Some(("Complete", &at(35))))];
        jobs.extend((1..=100).map(|i| job(&format!("success{i}"), Some(("Complete", &at(40))))));
        jobs.push(job("fail101", Some(("Failed", ""))));
        if let Some(c) = jobs
            .last_mut()
            .and_then(|j| j.status.as_mut())
            .and_then(|s| s.conditions.as_mut())
        {
            c[0].last_transition_time = Some(serde_json::from_value(json!(at(35))).expect("time"));
        }
        for i in 102..=201 {
            let mut j = job(&format!("fail{i}"), Some(("Failed", "")));
            if let Some(c) = j.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                c[0].last_transition_time =
                    Some(serde_json::from_value(json!(at(40))).expect("time"));
            }
            jobs.push(j);
        }
        let mut deleted = history_to_delete(&jobs, 100, 100);
        deleted.sort();
        assert_eq!(deleted, ["fail101", "success0"]);
        assert!(history_to_delete(&jobs, 1000, 1000).is_empty());
        assert_eq!(history_to_delete(&jobs, 0, 1000).len(), 101);
    }

    fn pod(job: &str, phase: &str, conditions: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([("job-name".into(), job.into())])),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|c| PodCondition {
                            type_: (*c).into(),
                            status: "True".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// KEDA's `getPendingJobCount` cases.
    #[test]
    fn pending_jobs_are_counted_as_keda_counts_them() {
        let jobs = [job("j", None)];
        for (phase, pending) in [
            ("Succeeded", 0),
            ("Running", 0),
            ("Failed", 1),
            ("Pending", 1),
            ("Unknown", 1),
        ] {
            assert_eq!(
                count_jobs(&jobs, &[pod("j", phase, &[])], &[]),
                (1, pending),
                "{phase}"
            );
        }
        assert_eq!(
            count_jobs(&jobs, &[], &[]),
            (1, 1),
            "a Job without pods is pending"
        );
        let wanted = ["Ready".to_string(), "PodScheduled".to_string()];
        let full: &[&str] = &["Ready", "PodScheduled"];
        let cases: Vec<(Vec<&[&str]>, i64)> = vec![
            (vec![&[]], 1),
            (vec![&["Ready"]], 1),
            (vec![&["PodScheduled"]], 1),
            (vec![full], 0),
            (vec![full, full], 0),
            (vec![full, &["Ready"]], 0),
            (vec![&["Ready"], &["PodScheduled"]], 1),
            (vec![&[], &["Ready"], full], 0),
            (vec![&[], &["Ready"], &["PodScheduled"]], 1),
        ];
        for (conds, pending) in cases {
            let pods: Vec<Pod> = conds.iter().map(|c| pod("j", "Pending", c)).collect();
            assert_eq!(count_jobs(&jobs, &pods, &wanted), (1, pending), "{conds:?}");
        }
        // A listed duplicate is asked for once (KEDA would count every Job as pending).
        let dup = ["Ready".to_string(), "Ready".to_string()];
        assert_eq!(
            count_jobs(&jobs, &[pod("j", "Pending", &["Ready"])], &dup),
            (1, 0)
        );
        assert_eq!(
            count_jobs(&jobs, &[pod("j", "Running", &["Ready"])], &[]),
            (1, 0)
        );
        // Finished Jobs are neither running nor pending; another Job's pods are not this one's.
        let jobs = [job("done", Some(("Complete", &at(1)))), job("j", None)];
        assert_eq!(
            count_jobs(&jobs, &[pod("other", "Running", &[])], &[]),
            (1, 1)
        );
    }

    #[test]
    fn a_rollout_removes_other_generations_jobs() {
        let mut old = job("old", None);
        old.metadata.annotations =
            Some(BTreeMap::from([(GENERATION_ANNOTATION.into(), "1".into())]));
        let mut new = job("new", Some(("Complete", &at(1))));
        new.metadata.annotations =
            Some(BTreeMap::from([(GENERATION_ANNOTATION.into(), "2".into())]));
        let bare = job("bare", None);
        assert_eq!(
            previous_generation_jobs(&[old, new, bare], 2),
            ["old", "bare"]
        );
    }

    /// KEDA's `generateJobs` case, with the excluded labels and the pod template.
    #[test]
    fn the_job_carries_kedas_names_labels_and_owner() {
        let mut sj: ScaledJob = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "test", "namespace": "test", "uid": "u-1", "generation": 3,
                "labels": {"test": "test", "secret": "x"},
                "annotations": {"test": "test", EXCLUDED_LABELS_ANNOTATION: "secret,other",
                                LAST_APPLIED: "{}"}},
            "spec": {"jobTargetRef": {"template": {"metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}},
                "triggers": [{"type": "cron", "metadata": {}}]}
        }))
        .expect("ScaledJob");
        let j = job_for(&sj, "v9").expect("a Job");
        let value = serde_json::to_value(&j).expect("JSON");
        assert_eq!(value["metadata"]["generateName"], "test-");
        assert_eq!(value["metadata"]["namespace"], "test");
        assert_eq!(
            value["metadata"]["labels"],
            json!({"app.kubernetes.io/managed-by": "keda-operator", "app.kubernetes.io/name": "test",
                   "app.kubernetes.io/part-of": "test", "app.kubernetes.io/version": "v9",
                   "scaledjob.keda.sh/name": "test", "test": "test"})
        );
        assert_eq!(
            value["metadata"]["annotations"],
            json!({"test": "test", GENERATION_ANNOTATION: "3", EXCLUDED_LABELS_ANNOTATION: "secret,other"})
        );
        assert_eq!(
            value["metadata"]["ownerReferences"],
            json!([{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "name": "test",
                    "uid": "u-1", "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(
            value["spec"]["template"]["metadata"]["labels"],
            json!({"app": "w", "scaledjob.keda.sh/name": "test"})
        );
        assert_eq!(
            value["spec"]["template"]["spec"]["restartPolicy"],
            "OnFailure"
        );
        if let Some(p) = sj.spec.job_target_ref.template.spec.as_mut() {
            p.restart_policy = Some("Never".into());
        }
        let j = job_for(&sj, "v9").expect("a Job");
        let policy = j
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.restart_policy);
        assert_eq!(policy.as_deref(), Some("Never"));
        sj.metadata.uid = None;
        assert!(job_for(&sj, "v9").is_err());
    }
}
