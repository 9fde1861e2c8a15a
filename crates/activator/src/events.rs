//! The Kubernetes Events the activator publishes about ScaledObjects (with KEDA's reasons)
//! and HTTPScaledObjects (with the HTTP add-on's).

use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;
use tracing::warn;

/// An Event's `reason`, as KEDA names them.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReason {
    /// The HPA is applied and the ScaledObject is valid.
    ScaledObjectReady,
    /// The ScaledObject is invalid.
    ScaledObjectCheckFailed,
    /// Paused by annotation.
    ScaledObjectPaused,
    /// The pause annotation was removed.
    ScaledObjectUnpaused,
    /// Scaled from zero (or idle).
    KEDAScaleTargetActivated,
    /// Scaled to zero (or idle).
    KEDAScaleTargetDeactivated,
    /// Scaling from zero failed.
    KEDAScaleTargetActivationFailed,
    /// Scaling to zero failed.
    KEDAScaleTargetDeactivationFailed,
    /// An HTTPScaledObject's ScaledObject is in line with it.
    HTTPScaledObjectReconciled,
    /// An HTTPScaledObject is invalid or its ScaledObject could not be written.
    HTTPScaledObjectCreateError,
    /// A ScaledJob is valid again, or for the first time.
    ScaledJobReady,
    /// A ScaledJob is invalid.
    ScaledJobCheckFailed,
    /// A ScaledJob paused by annotation.
    ScaledJobPaused,
    /// A ScaledJob's pause annotation removed.
    ScaledJobUnpaused,
    /// A ScaledJob's triggers became active.
    ScaledJobActive,
    /// A ScaledJob's triggers stopped being active.
    ScaledJobInactive,
    /// Jobs created at a poll.
    KEDAJobsCreated,
    /// A Job could not be created.
    KEDAJobCreateFailed,
    /// A ScaledJob's trigger failed at a poll.
    KEDAScalerFailed,
    /// Deleting the Jobs of an earlier ScaledJob generation.
    ScaledJobRolloutCleanupStarted,
    /// The Jobs of an earlier ScaledJob generation deleted.
    ScaledJobRolloutCleanupCompleted,
    /// A Job of an earlier ScaledJob generation could not be deleted.
    ScaledJobRolloutCleanupFailed,
    /// `scalingStrategy` asks for `custom` without a usable percentage: `default` applies.
    ScaledJobStrategyDefaulted,
}

impl EventReason {
    /// The reason as published.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ScaledObjectReady => "ScaledObjectReady",
            Self::ScaledObjectCheckFailed => "ScaledObjectCheckFailed",
            Self::ScaledObjectPaused => "ScaledObjectPaused",
            Self::ScaledObjectUnpaused => "ScaledObjectUnpaused",
            Self::KEDAScaleTargetActivated => "KEDAScaleTargetActivated",
            Self::KEDAScaleTargetDeactivated => "KEDAScaleTargetDeactivated",
            Self::KEDAScaleTargetActivationFailed => "KEDAScaleTargetActivationFailed",
            Self::KEDAScaleTargetDeactivationFailed => "KEDAScaleTargetDeactivationFailed",
            Self::HTTPScaledObjectReconciled => "Reconciled",
            Self::HTTPScaledObjectCreateError => "CreateError",
            Self::ScaledJobReady => "ScaledJobReady",
            Self::ScaledJobCheckFailed => "ScaledJobCheckFailed",
            Self::ScaledJobPaused => "ScaledJobPaused",
            Self::ScaledJobUnpaused => "ScaledJobUnpaused",
            Self::ScaledJobActive => "ScaledJobActive",
            Self::ScaledJobInactive => "ScaledJobInactive",
            Self::KEDAJobsCreated => "KEDAJobsCreated",
            Self::KEDAJobCreateFailed => "KEDAJobCreateFailed",
            Self::KEDAScalerFailed => "KEDAScalerFailed",
            Self::ScaledJobRolloutCleanupStarted => "ScaledJobRolloutCleanupStarted",
            Self::ScaledJobRolloutCleanupCompleted => "ScaledJobRolloutCleanupCompleted",
            Self::ScaledJobRolloutCleanupFailed => "ScaledJobRolloutCleanupFailed",
            Self::ScaledJobStrategyDefaulted => "ScaledJobStrategyDefaulted",
        }
    }
}

/// The longest note an `events.k8s.io/v1` Event may carry, in bytes: the API server
/// refuses a longer one, so a message quoting a huge value is cut to it.
const MAX_NOTE_BYTES: usize = 1024;

/// Publish an Event about `so`; a failure is logged, not returned (an Event is a
/// courtesy, never a reason to retry the work it reports).
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    so: &K,
    type_: EventType,
    reason: EventReason,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.as_str().into(),
        note: Some(scaler_core::conditions::truncate_message(
            note,
            MAX_NOTE_BYTES,
        )),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &so.object_ref(&())).await {
        warn!(error = %e, "publishing an Event failed");
    }
}
