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
    /// A trigger failed at a poll: a ScaledJob's at each such poll, a ScaledObject's when
    /// its triggers start failing.
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

/// The Event's `action`: "Reconcile" and a digest of `note`. kube's Recorder counts an
/// Event published again within six minutes (same object, type, reason and action) on the
/// first one, whose note it keeps: with one action for every note, a new message (another
/// trigger error, another field refused) would show as the old one counted twice. With the
/// note's digest in it, the same message is counted and another is published as itself,
/// as client-go's recorder (KEDA's) keys repeated events on the message too.
fn action(note: &str) -> String {
    use std::hash::{Hash, Hasher};
    // The Recorder's cache lives in this process, so a digest stable within it will do.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    note.hash(&mut h);
    format!("Reconcile-{:016x}", h.finish())
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
    let note = scaler_core::conditions::truncate_message(note, MAX_NOTE_BYTES);
    let event = Event {
        type_,
        reason: reason.as_str().into(),
        action: action(&note),
        note: Some(note),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &so.object_ref(&())).await {
        warn!(error = %e, "publishing an Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use kube::runtime::events::Reporter;

    /// Publish `notes` one after the other about one ScaledObject through one Recorder
    /// over a mocked API server: the method of each request (POST creates an Event, PATCH
    /// counts one again) and the note it carries.
    async fn published(notes: &[&str]) -> Vec<(Method, String)> {
        let (service, mut server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "ns");
        let recorder = Recorder::new(client, Reporter::from("eventscale"));
        let so = crate::fixtures::scaled_object(serde_json::json!({}), serde_json::json!({}));
        let n = notes.len();
        let answering = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..n {
                let Some((request, respond)) = server.next_request().await else {
                    break;
                };
                let method = request.method().clone();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                seen.push((
                    method,
                    body["note"].as_str().unwrap_or_default().to_string(),
                ));
                respond.send_response(
                    Response::builder()
                        .body(Body::from(bytes.to_vec()))
                        .expect("a response"),
                );
            }
            seen
        });
        for note in notes {
            publish(
                &recorder,
                &so,
                EventType::Warning,
                EventReason::KEDAScalerFailed,
                note.to_string(),
            )
            .await;
        }
        answering.await.expect("the mocked API server")
    }

    #[tokio::test]
    async fn a_new_message_is_a_new_event_and_a_repeated_one_is_counted() {
        let seen = published(&[
            "401 Unauthorized",
            "Secret ns/creds not found",
            "401 Unauthorized",
        ])
        .await;
        assert_eq!(
            seen,
            [
                (Method::POST, "401 Unauthorized".to_string()),
                (Method::POST, "Secret ns/creds not found".to_string()),
                (Method::PATCH, "401 Unauthorized".to_string()),
            ]
        );
    }
}
