//! The reconcile as a pure plan. From what the executor gathered (the ScaledObject, its
//! triggers' metric specs or errors, its resolved target, the stores' view of its
//! namespace, what this run last applied) the plan says which HPA to apply or delete,
//! the status to write, the events to publish and when to look again. Nothing here
//! touches the cluster; `lib.rs` gathers the inputs and carries the plan out, so a
//! steady state is provably free of writes.

use std::time::Duration;

use kube::runtime::events::EventType;
use kube::ResourceExt;
use scaler_core::activation::{pause_of, Pause};
use scaler_core::gvk::Gvk;
use scaler_core::hpa::{desired_hpa, HpaError};
use scaler_core::scaled_object::{GroupVersionKindResource, ScaledObjectStatus};
use scaler_core::validation::{check, ownership, ExistingHpa, OtherScaledObject, Problem};
use scaler_core::{MetricSpec, ScaledObject, ScalerError, TriggerError};

use crate::events::EventReason;
use crate::status::{self, Observed};

/// How soon a valid (or hopelessly invalid) ScaledObject is looked at again.
pub(crate) const REQUEUE: Duration = Duration::from_secs(300);
/// How soon one waiting on something that may appear any time (a Secret, a
/// TriggerAuthentication, the target) is looked at again.
pub(crate) const REQUEUE_SOON: Duration = Duration::from_secs(15);

/// An HPA in the ScaledObject's namespace, as the store holds it.
#[derive(Debug, Clone)]
pub(crate) struct HpaFacts {
    /// What ownership checks read.
    pub hpa: ExistingHpa,
    /// Its uid (a deletion's precondition).
    pub uid: String,
    /// The uids of its owners.
    pub owner_uids: Vec<String>,
    /// See [`crate::stores::fingerprint`].
    pub fingerprint: u64,
}

/// What an apply wrote, remembered per ScaledObject: a hash of the body sent and the
/// fingerprint of the HPA the API server returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Hash of the applied body.
    pub body: u64,
    /// Fingerprint of the HPA after the apply.
    pub hpa: u64,
}

/// The target's replicas, read by the executor when [`needs_replicas`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplicaRead {
    /// `/scale` says this many.
    Replicas(i32),
    /// The target does not exist.
    NotFound,
}

/// Everything one reconcile of a live ScaledObject depends on.
pub(crate) struct Inputs<'a> {
    /// The ScaledObject.
    pub so: &'a ScaledObject,
    /// Each trigger's metric spec, or why its scaler cannot be built.
    pub built: &'a [Result<MetricSpec, TriggerError>],
    /// The target's kind as discovery resolved it, or why it could not.
    pub target: Result<&'a GroupVersionKindResource, String>,
    /// ScaledObjects of the namespace that claimed first (see `Stores::others`).
    pub others: &'a [OtherScaledObject],
    /// HPAs of the namespace that matter (see `Stores::hpas`).
    pub hpas: &'a [HpaFacts],
    /// What this run last applied for the ScaledObject.
    pub applied: Option<Applied>,
    /// The HPA `apiVersion` to write.
    pub hpa_api_version: &'a str,
    /// The target's replicas, when [`needs_replicas`] asked for them.
    pub replicas: Option<ReplicaRead>,
}

/// What went wrong with a ScaledObject's configuration (reported, not retried).
#[derive(Debug)]
enum Invalid {
    /// The object or a trigger (see `scaler_core::validation::check`).
    Found(Problem),
    Hpa(HpaError),
    Target(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Found(e) => e.fmt(f),
            Invalid::Hpa(e) => e.fmt(f),
            Invalid::Target(e) => f.write_str(e),
        }
    }
}

/// The HPA to server-side-apply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HpaApply {
    /// Its name.
    pub name: String,
    /// The body, with `apiVersion` and `kind`.
    pub body: serde_json::Value,
    /// Hash of the body, remembered once applied.
    pub hash: u64,
}

/// Why an HPA is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeleteWhy {
    /// The ScaledObject is paused: no HPA while it is.
    Paused,
    /// The ScaledObject's HPA has another name now.
    Renamed,
    /// The ScaledObject is being deleted.
    Deleted,
}

/// An HPA of this ScaledObject's to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HpaDeletion {
    /// Its name.
    pub name: String,
    /// Its uid, the deletion's precondition (an HPA recreated by someone else since the
    /// store saw it is not ours to delete).
    pub uid: String,
    /// Why.
    pub why: DeleteWhy,
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// KEDA's reason.
    pub reason: EventReason,
    /// The message.
    pub note: String,
}

/// What a reconcile does, in this order: apply, delete, write the status, publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The HPA to apply; `None` when none is wanted or the last apply still holds.
    pub apply: Option<HpaApply>,
    /// HPAs of this ScaledObject to delete.
    pub delete: Vec<HpaDeletion>,
    /// The status to write; `None` when it would not change.
    pub status: Option<ScaledObjectStatus>,
    /// Events, published after the writes.
    pub events: Vec<PlannedEvent>,
    /// When to look again.
    pub requeue: Duration,
    /// The configuration problem, when the ScaledObject is invalid.
    pub problem: Option<String>,
    /// The triggers' metric names, for the log.
    pub metric_names: Vec<String>,
}

/// The first configuration problem, in the order they are reported: the spec, a trigger,
/// the metric targets, the pause annotation (`check`), the target's kind, someone else
/// owning the target.
fn problem(i: &Inputs<'_>) -> Option<Invalid> {
    if let Err(e) = check(i.so, i.built) {
        return Some(Invalid::Found(e));
    }
    let target = match &i.target {
        Ok(t) => Gvk::from(*t),
        Err(e) => return Some(Invalid::Target(e.clone())),
    };
    let hpas: Vec<ExistingHpa> = i.hpas.iter().map(|h| h.hpa.clone()).collect();
    ownership(i.so, &target, i.others, &hpas)
        .err()
        .map(|e| Invalid::Found(e.into()))
}

/// Whether the plan needs the target's replicas: the first time the ScaledObject is
/// found valid, to record `originalReplicaCount` (and to learn the target exists).
pub(crate) fn needs_replicas(i: &Inputs<'_>) -> bool {
    original_recorded(i.so).is_none() && problem(i).is_none()
}

fn original_recorded(so: &ScaledObject) -> Option<i32> {
    so.status.as_ref().and_then(|s| s.original_replica_count)
}

fn uid(so: &ScaledObject) -> &str {
    so.metadata.uid.as_deref().unwrap_or("")
}

/// HPAs in `hpas` that `so` owns.
fn owned<'h>(so: &ScaledObject, hpas: &'h [HpaFacts]) -> impl Iterator<Item = &'h HpaFacts> {
    let uid = uid(so).to_string();
    hpas.iter()
        .filter(move |h| !uid.is_empty() && h.owner_uids.contains(&uid))
}

/// The body to apply: the desired HPA with its `apiVersion` and `kind`.
fn body(
    hpa: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    api_version: &str,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut value = serde_json::to_value(hpa)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), api_version.into());
        obj.insert("kind".into(), "HorizontalPodAutoscaler".into());
    }
    Ok(value)
}

/// The plan for a live ScaledObject.
pub(crate) fn plan(i: &Inputs<'_>) -> Result<Plan, serde_json::Error> {
    let so = i.so;
    let specs: Vec<MetricSpec> = i
        .built
        .iter()
        .filter_map(|b| b.as_ref().ok())
        .cloned()
        .collect();
    let metric_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut invalid = problem(i);
    // The replicas before eventscale touched the target, once, for restore on delete; a
    // target that does not exist (yet) is a problem to report, looked at again soon.
    let mut original = original_recorded(so);
    if let (None, None) = (&invalid, original) {
        match (i.replicas, &i.target) {
            (Some(ReplicaRead::Replicas(n)), _) => original = Some(n),
            (Some(ReplicaRead::NotFound), Ok(t)) => {
                invalid = Some(Invalid::Target(format!(
                    "spec.scaleTargetRef: {} {}/{} not found",
                    Gvk::from(*t).scale_target_kind(),
                    so.namespace().unwrap_or_default(),
                    so.spec.scale_target_ref.name
                )));
            }
            _ => {}
        }
    }
    let hpa = match invalid {
        Some(_) => None,
        None => match desired_hpa(so, &specs) {
            Ok(h) => Some(h),
            Err(e) => {
                invalid = Some(Invalid::Hpa(e));
                None
            }
        },
    };
    let current = so.status.as_deref().cloned().unwrap_or_default();
    let changed = |next: ScaledObjectStatus| (next != current).then_some(next);

    if let Some(problem) = &invalid {
        // A missing TriggerAuthentication, Secret or target, or an external scaler not
        // answering yet, may appear at any time: look again soon.
        let waiting = match problem {
            Invalid::Found(Problem::Trigger(e)) => {
                matches!(
                    e.source,
                    ScalerError::Authentication(_) | ScalerError::Query(_)
                )
            }
            Invalid::Target(_) => true,
            _ => false,
        };
        let requeue = if waiting { REQUEUE_SOON } else { REQUEUE };
        return Ok(rejected(so, problem.to_string(), metric_names, requeue));
    }

    let (Some(hpa), Ok(target)) = (hpa, &i.target) else {
        // Unreachable: a valid ScaledObject has both.
        return Ok(Plan {
            apply: None,
            delete: Vec::new(),
            status: None,
            events: Vec::new(),
            requeue: REQUEUE,
            problem: None,
            metric_names,
        });
    };
    let hpa_name = hpa.metadata.name.clone().unwrap_or_default();
    let paused = match pause_of(so.annotations()) {
        Ok(Pause::No) | Err(_) => None,
        Ok(p) => Some(p),
    };
    let observed = Observed {
        hpa_name: Some(&hpa_name),
        metric_names: &metric_names,
        target: Some(target),
        original,
        paused,
        ..Default::default()
    };
    let status = changed(status::reconciled_status(so, &observed));
    let was_paused = status::was_paused(so);

    if paused.is_some() {
        // Paused: no HPA; the scale loop holds paused-replicas or freezes.
        let delete = owned(so, i.hpas)
            .map(|h| HpaDeletion {
                name: h.hpa.name.clone(),
                uid: h.uid.clone(),
                why: DeleteWhy::Paused,
            })
            .collect();
        let events = (status.is_some() && !was_paused)
            .then(|| PlannedEvent {
                type_: EventType::Normal,
                reason: EventReason::ScaledObjectPaused,
                note: "ScaledObject is paused".into(),
            })
            .into_iter()
            .collect();
        return Ok(Plan {
            apply: None,
            delete,
            status,
            events,
            requeue: REQUEUE,
            problem: None,
            metric_names,
        });
    }

    let body = body(&hpa, i.hpa_api_version)?;
    let hash = crate::stores::hash(body.to_string().as_bytes());
    // Applied before, and the HPA still as that apply left it: nothing to send.
    let in_place = i
        .hpas
        .iter()
        .find(|h| h.hpa.name == hpa_name)
        .is_some_and(|h| {
            i.applied
                == Some(Applied {
                    body: hash,
                    hpa: h.fingerprint,
                })
        });
    let apply = (!in_place).then(|| HpaApply {
        name: hpa_name.clone(),
        body,
        hash,
    });
    // A renamed HPA replaces the old one (any other HPA this ScaledObject owns).
    let delete = owned(so, i.hpas)
        .filter(|h| h.hpa.name != hpa_name)
        .map(|h| HpaDeletion {
            name: h.hpa.name.clone(),
            uid: h.uid.clone(),
            why: DeleteWhy::Renamed,
        })
        .collect();
    let mut events = Vec::new();
    if was_paused {
        events.push(PlannedEvent {
            type_: EventType::Normal,
            reason: EventReason::ScaledObjectUnpaused,
            note: "pause annotation removed for ScaledObject".into(),
        });
    }
    if status.is_some() {
        events.push(PlannedEvent {
            type_: EventType::Normal,
            reason: EventReason::ScaledObjectReady,
            note: format!("HPA {hpa_name} is in sync"),
        });
    }
    Ok(Plan {
        apply,
        delete,
        status,
        events,
        requeue: REQUEUE,
        problem: None,
        metric_names,
    })
}

/// The plan for an invalid ScaledObject: nothing applied, Ready False
/// `ScaledObjectCheckFailed` with `message` (which names the field), a Warning Event when
/// the status changes.
fn rejected(
    so: &ScaledObject,
    message: String,
    metric_names: Vec<String>,
    requeue: Duration,
) -> Plan {
    let current = so.status.as_deref().cloned().unwrap_or_default();
    let status = status::reconciled_status(
        so,
        &Observed {
            problem: Some(&message),
            metric_names: &metric_names,
            ..Default::default()
        },
    );
    let status = (status != current).then_some(status);
    let events = status
        .iter()
        .map(|_| PlannedEvent {
            type_: EventType::Warning,
            reason: EventReason::ScaledObjectCheckFailed,
            note: message.clone(),
        })
        .collect();
    Plan {
        apply: None,
        delete: Vec::new(),
        status,
        events,
        requeue,
        problem: Some(message),
        metric_names,
    }
}

/// The plan once the API server refused the HPA a valid-looking ScaledObject makes (an
/// HPA field it validates and KEDA does not, such as a behavior's limits): reported as the
/// ScaledObject's problem, its field named by `scaler_core::hpa::refusal`.
pub(crate) fn refused(so: &ScaledObject, message: String, metric_names: Vec<String>) -> Plan {
    rejected(so, message, metric_names, REQUEUE)
}

/// What deleting a ScaledObject does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CleanupPlan {
    /// Its HPAs (best effort: a failure is logged and the finalizer still goes).
    pub delete: Vec<HpaDeletion>,
    /// Put the target back at this many replicas (`restoreToOriginalReplicaCount`).
    pub restore: Option<i32>,
}

/// On deletion: remove the HPAs the ScaledObject owns, then put the target back at
/// `status.originalReplicaCount` when `restoreToOriginalReplicaCount` is set.
pub(crate) fn cleanup(so: &ScaledObject, hpas: &[HpaFacts]) -> CleanupPlan {
    let restore = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.restore_to_original_replica_count)
        .unwrap_or(false);
    CleanupPlan {
        delete: owned(so, hpas)
            .map(|h| HpaDeletion {
                name: h.hpa.name.clone(),
                uid: h.uid.clone(),
                why: DeleteWhy::Deleted,
            })
            .collect(),
        restore: original_recorded(so).filter(|_| restore),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, deployment, hpa, other_scaled_object, scaled_object};
    use scaler_core::{MetricTargetType, ScalerError};
    use serde_json::json;

    /// One reconcile's inputs, owned.
    struct Case {
        so: ScaledObject,
        built: Vec<Result<MetricSpec, TriggerError>>,
        target: Result<GroupVersionKindResource, String>,
        others: Vec<ScaledObject>,
        hpas: Vec<kube::api::DynamicObject>,
        applied: Option<Applied>,
        replicas: Option<ReplicaRead>,
    }

    fn metric() -> MetricSpec {
        MetricSpec {
            name: "s0-cron-Etc-UTC-06xx-020xx".into(),
            target_type: MetricTargetType::AverageValue,
            target: scaler_core::quantity::MilliQuantity::from_value(1.0),
        }
    }

    /// A valid ScaledObject with `spec` and `annotations` merged in, reconciled for the
    /// first time.
    fn case(spec: serde_json::Value, annotations: serde_json::Value) -> Case {
        Case {
            so: scaled_object(spec, annotations),
            built: vec![Ok(metric())],
            target: Ok(deployment()),
            others: Vec::new(),
            hpas: Vec::new(),
            applied: None,
            replicas: Some(ReplicaRead::Replicas(2)),
        }
    }

    impl Case {
        fn with(mut self, f: impl FnOnce(&mut Case)) -> Self {
            f(&mut self);
            self
        }

        fn plan(&self) -> Plan {
            let others: Vec<OtherScaledObject> = self
                .others
                .iter()
                .map(|o| OtherScaledObject {
                    name: o.name_any(),
                    target_gvk: Gvk::of_scale_target(&o.spec.scale_target_ref),
                    target_name: o.spec.scale_target_ref.name.clone(),
                    hpa_name: scaler_core::hpa::hpa_name(o),
                })
                .collect();
            let hpas: Vec<HpaFacts> = self.hpas.iter().map(crate::stores::facts).collect();
            let inputs = Inputs {
                so: &self.so,
                built: &self.built,
                target: self.target.as_ref().map_err(Clone::clone),
                others: &others,
                hpas: &hpas,
                applied: self.applied,
                hpa_api_version: "autoscaling/v2",
                replicas: None,
            };
            let inputs = Inputs {
                replicas: if needs_replicas(&inputs) {
                    self.replicas
                } else {
                    None
                },
                ..inputs
            };
            plan(&inputs).expect("plan")
        }

        /// This case after the plan was carried out: the status written, the HPA applied
        /// (and seen by the store), the ones deleted gone.
        fn settled(mut self) -> Self {
            let p = self.plan();
            if let Some(s) = p.status {
                self.so.status = Some(Box::new(s));
            }
            self.hpas.retain(|h| {
                !p.delete
                    .iter()
                    .any(|d| Some(&d.name) == h.metadata.name.as_ref())
            });
            if let Some(a) = p.apply {
                let stored: kube::api::DynamicObject =
                    serde_json::from_value(fixtures::applied(&a.body)).expect("HPA");
                self.hpas
                    .retain(|h| h.metadata.name.as_ref() != Some(&a.name));
                self.applied = Some(Applied {
                    body: a.hash,
                    hpa: crate::stores::fingerprint(&stored),
                });
                self.hpas.push(stored);
            }
            self
        }
    }

    /// What a plan does, in short: (applied HPA, deleted HPAs, Ready (status, reason) when
    /// the status is written, event reasons, requeue seconds).
    type Summary = (
        Option<String>,
        Vec<(String, DeleteWhy)>,
        Option<(String, String)>,
        Vec<&'static str>,
        u64,
    );

    fn summary(p: &Plan) -> Summary {
        let ready = p.status.as_ref().map(|s| {
            let c = s
                .condition(scaler_core::conditions::ConditionType::Ready)
                .expect("Ready");
            (c.status.clone(), c.reason.clone().unwrap_or_default())
        });
        (
            p.apply.as_ref().map(|a| a.name.clone()),
            p.delete.iter().map(|d| (d.name.clone(), d.why)).collect(),
            ready,
            p.events.iter().map(|e| e.reason.as_str()).collect(),
            p.requeue.as_secs(),
        )
    }

    fn ready(status: &str, reason: &str) -> Option<(String, String)> {
        Some((status.into(), reason.into()))
    }

    fn trigger_error(source: ScalerError) -> TriggerError {
        TriggerError {
            index: 0,
            trigger_type: "cron".into(),
            source,
        }
    }

    /// (what, case, summary, words the Ready message or the problem holds)
    fn rows() -> Vec<(&'static str, Case, Summary, &'static str)> {
        let none = json!({});
        // Rejected, looked at again after `requeue` seconds.
        let failed = |requeue| -> Summary {
            (
                None,
                vec![],
                ready("False", "ScaledObjectCheckFailed"),
                vec!["ScaledObjectCheckFailed"],
                requeue,
            )
        };
        // HPA `name` applied, Ready.
        let applied = |name: &str| -> Summary {
            (
                Some(name.into()),
                vec![],
                ready("True", "ScaledObjectReady"),
                vec!["ScaledObjectReady"],
                300,
            )
        };
        // Nothing written, or only the HPA applied again.
        let quiet = || -> Summary { (None, vec![], None, vec![], 300) };
        let reapplied = || -> Summary { (Some("keda-hpa-web".into()), vec![], None, vec![], 300) };
        vec![
            (
                "invalid trigger",
                case(json!({}), json!({})).with(|c| {
                    c.built = vec![Err(trigger_error(ScalerError::InvalidParameter {
                        param: "start".into(),
                        message: "error parsing start schedule".into(),
                    }))]
                }),
                failed(300),
                "spec.triggers[0].metadata.start (cron): error parsing start schedule",
            ),
            (
                "missing TriggerAuthentication: looked at again soon",
                case(json!({}), json!({})).with(|c| {
                    c.built = vec![Err(trigger_error(ScalerError::Authentication(
                        "TriggerAuthentication ns/a not found".into(),
                    )))]
                }),
                failed(15),
                "spec.triggers[0].authenticationRef (cron): TriggerAuthentication ns/a",
            ),
            (
                "invalid spec",
                case(json!({"minReplicaCount": 5, "maxReplicaCount": 3}), json!({})),
                failed(300),
                "spec.minReplicaCount: MinReplicaCount=5 must be less than MaxReplicaCount=3",
            ),
            (
                "invalid spec and trigger: the spec first, as KEDA checks it",
                case(json!({"minReplicaCount": 5, "maxReplicaCount": 3}), json!({})).with(|c| {
                    c.built = vec![Err(trigger_error(ScalerError::UnsupportedTrigger(
                        "cron".into(),
                    )))]
                }),
                failed(300),
                "spec.minReplicaCount: MinReplicaCount=5",
            ),
            (
                "a metric target of 0, which the HPA would refuse",
                case(json!({}), json!({})).with(|c| {
                    c.built = vec![Ok(MetricSpec {
                        target: scaler_core::quantity::MilliQuantity::from_value(0.0001),
                        ..metric()
                    })]
                }),
                failed(300),
                "spec.triggers[0]: (cron) the target must be at least 0.001",
            ),
            (
                "bad pause annotation",
                case(
                    json!({}),
                    json!({"autoscaling.keda.sh/paused-replicas": "three"}),
                ),
                failed(300),
                "metadata.annotations[autoscaling.keda.sh/paused-replicas]: annotation autoscaling.keda.sh/paused-replicas value \"three\" is not a valid int32",
            ),
            (
                "target kind not served",
                case(json!({}), json!({})).with(|c| {
                    c.target = Err("spec.scaleTargetRef: apps/v1/Nope is not served".into())
                }),
                failed(15),
                "apps/v1/Nope is not served",
            ),
            (
                "missing target",
                case(json!({}), json!({})).with(|c| c.replicas = Some(ReplicaRead::NotFound)),
                failed(15),
                "spec.scaleTargetRef: apps/v1.Deployment ns/web not found",
            ),
            (
                "another ScaledObject owns the target",
                case(json!({}), json!({}))
                    .with(|c| c.others = vec![other_scaled_object("first", "web")]),
                failed(300),
                "the workload 'web' of type 'apps/v1.Deployment' is already managed by the ScaledObject 'first'",
            ),
            (
                "a ScaledObject on another target is no conflict",
                case(json!({}), json!({}))
                    .with(|c| c.others = vec![other_scaled_object("first", "api")]),
                applied("keda-hpa-web"),
                "",
            ),
            (
                "a foreign HPA owns the target",
                case(json!({}), json!({})).with(|c| c.hpas = vec![hpa("legacy", "web", None)]),
                failed(300),
                "the workload 'web' of type 'apps/v1.Deployment' is already managed by the hpa 'legacy'",
            ),
            (
                "a foreign HPA taken over by name",
                case(
                    json!({"advanced": {"horizontalPodAutoscalerConfig": {"name": "legacy"}}}),
                    json!({"scaledobject.keda.sh/transfer-hpa-ownership": "true"}),
                )
                .with(|c| c.hpas = vec![hpa("legacy", "web", None)]),
                applied("legacy"),
                "",
            ),
            (
                "first reconcile",
                case(json!({}), json!({})),
                applied("keda-hpa-web"),
                "",
            ),
            (
                "paused: the HPA goes",
                case(json!({}), none.clone())
                    .settled()
                    .with(|c| {
                        c.so.metadata.annotations = Some(
                            [("autoscaling.keda.sh/paused-replicas".into(), "3".into())].into(),
                        )
                    }),
                (
                    None,
                    vec![("keda-hpa-web".into(), DeleteWhy::Paused)],
                    ready("True", "ScaledObjectReady"),
                    vec!["ScaledObjectPaused"],
                    300,
                ),
                "",
            ),
            (
                "unpaused: the HPA comes back",
                case(json!({}), json!({"autoscaling.keda.sh/paused": "true"}))
                    .settled()
                    .with(|c| c.so.metadata.annotations = None),
                (
                    Some("keda-hpa-web".into()),
                    vec![],
                    ready("True", "ScaledObjectReady"),
                    vec!["ScaledObjectUnpaused", "ScaledObjectReady"],
                    300,
                ),
                "",
            ),
            (
                "renamed HPA: the old one goes",
                case(
                    json!({"advanced": {"horizontalPodAutoscalerConfig": {"name": "custom-a"}}}),
                    json!({}),
                )
                .settled()
                .with(|c| {
                    c.so.spec.advanced = serde_json::from_value(
                        json!({"horizontalPodAutoscalerConfig": {"name": "custom-b"}}),
                    )
                    .expect("advanced")
                }),
                (
                    Some("custom-b".into()),
                    vec![("custom-a".into(), DeleteWhy::Renamed)],
                    ready("True", "ScaledObjectReady"),
                    vec!["ScaledObjectReady"],
                    300,
                ),
                "",
            ),
            (
                "steady state: nothing at all",
                case(json!({}), json!({})).settled(),
                quiet(),
                "",
            ),
            (
                "steady while paused: nothing at all",
                case(json!({}), json!({"autoscaling.keda.sh/paused": "true"})).settled(),
                quiet(),
                "",
            ),
            (
                "steady while invalid: nothing at all",
                case(json!({"minReplicaCount": 5, "maxReplicaCount": 3}), json!({})).settled(),
                quiet(),
                "",
            ),
            (
                "the HPA changed by another writer: applied again, nothing else",
                case(json!({}), json!({})).settled().with(|c| {
                    for h in &mut c.hpas {
                        h.data["spec"]["maxReplicas"] = 9.into();
                    }
                }),
                reapplied(),
                "",
            ),
            (
                "the HPA's status changed: nothing",
                case(json!({}), json!({})).settled().with(|c| {
                    for h in &mut c.hpas {
                        h.data["status"] = json!({"currentReplicas": 3});
                        h.metadata.resource_version = Some("3".into());
                    }
                }),
                quiet(),
                "",
            ),
            (
                "the HPA deleted by someone: applied again",
                case(json!({}), json!({}))
                    .settled()
                    .with(|c| c.hpas.clear()),
                reapplied(),
                "",
            ),
            (
                "a restart (nothing remembered): one apply, no status write",
                case(json!({}), json!({})).settled().with(|c| c.applied = None),
                reapplied(),
                "",
            ),
            (
                "the spec changed: applied again",
                case(json!({}), json!({}))
                    .settled()
                    .with(|c| c.so.spec.max_replica_count = Some(7)),
                reapplied(),
                "",
            ),
        ]
    }

    #[test]
    fn the_reconcile_table() {
        for (what, case, want, words) in rows() {
            let p = case.plan();
            assert_eq!(summary(&p), want, "{what}: {p:#?}");
            if !words.is_empty() {
                let message = p
                    .status
                    .as_ref()
                    .and_then(|s| s.condition(scaler_core::conditions::ConditionType::Ready))
                    .and_then(|c| c.message.clone())
                    .unwrap_or_default();
                assert!(message.contains(words), "{what}: {message}");
                assert_eq!(p.problem.as_deref(), Some(message.as_str()), "{what}");
                assert_eq!(p.events[0].note, message, "{what}");
                assert_eq!(p.events[0].type_, EventType::Warning, "{what}");
            }
            for d in &p.delete {
                assert_eq!(d.uid, format!("uid-{}", d.name), "{what}: the store's uid");
            }
        }
    }
}

#[cfg(test)]
mod first_and_last {
    use super::*;
    use crate::fixtures::{hpa, scaled_object, UID};
    use serde_json::json;

    fn inputs<'a>(
        so: &'a ScaledObject,
        built: &'a [Result<MetricSpec, TriggerError>],
        target: &'a GroupVersionKindResource,
        hpas: &'a [HpaFacts],
    ) -> Inputs<'a> {
        Inputs {
            so,
            built,
            target: Ok(target),
            others: &[],
            hpas,
            applied: None,
            hpa_api_version: "autoscaling/v2",
            replicas: None,
        }
    }

    /// The first valid reconcile reads the target's replicas and records them once; the
    /// paused one records pausedReplicaCount.
    #[test]
    fn original_and_paused_replica_counts() {
        let target = crate::fixtures::deployment();
        let built = vec![];
        let so = scaled_object(json!({}), json!({}));
        let mut i = inputs(&so, &built, &target, &[]);
        assert!(needs_replicas(&i));
        i.replicas = Some(ReplicaRead::Replicas(2));
        let status = plan(&i).expect("plan").status.expect("written");
        assert_eq!(status.original_replica_count, Some(2));
        assert_eq!(status.hpa_name.as_deref(), Some("keda-hpa-web"));
        assert_eq!(
            status.scale_target_kind.as_deref(),
            Some("apps/v1.Deployment")
        );
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(4));
        let mut recorded = so.clone();
        recorded.status = Some(Box::new(status));
        assert!(!needs_replicas(&inputs(&recorded, &built, &target, &[])));

        let paused = scaled_object(
            json!({}),
            json!({"autoscaling.keda.sh/paused-replicas": "3"}),
        );
        let mut paused = paused;
        paused.status = recorded.status.clone();
        let p = plan(&inputs(&paused, &built, &target, &[])).expect("plan");
        let status = p.status.expect("written");
        assert_eq!(status.paused_replica_count, Some(3));
        assert_eq!(status.original_replica_count, Some(2), "kept");
    }

    /// Deleting: every HPA the ScaledObject owns goes (by uid), foreign ones stay; the
    /// target is restored only when asked and when a count was recorded.
    #[test]
    fn cleanup_plans() {
        let hpas: Vec<HpaFacts> = [
            hpa("keda-hpa-web", "web", Some(("web", UID))),
            hpa("legacy", "web", None),
            hpa("theirs", "web", Some(("other", "uid-other"))),
        ]
        .iter()
        .map(crate::stores::facts)
        .collect();
        let mut so = scaled_object(
            json!({"advanced": {"restoreToOriginalReplicaCount": true}}),
            json!({}),
        );
        let p = cleanup(&so, &hpas);
        assert_eq!(
            p.delete,
            vec![HpaDeletion {
                name: "keda-hpa-web".into(),
                uid: "uid-keda-hpa-web".into(),
                why: DeleteWhy::Deleted
            }]
        );
        assert_eq!(p.restore, None, "no count recorded");
        so.status = Some(Box::new(ScaledObjectStatus {
            original_replica_count: Some(3),
            ..Default::default()
        }));
        assert_eq!(cleanup(&so, &hpas).restore, Some(3));
        so.spec.advanced = None;
        assert_eq!(cleanup(&so, &hpas).restore, None, "not asked");
    }
}
