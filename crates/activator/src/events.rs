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
        }
    }
}

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
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &so.object_ref(&())).await {
        warn!(error = %e, "publishing an Event failed");
    }
}
