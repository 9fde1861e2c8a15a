//! activator: eventscale's write path.
//!
//! A controller in the shape of kube-rs `controller-rs`: one [`reconcile`] and one
//! [`error_policy`], a [`Context`] carrying the client. For each ScaledObject it applies the
//! HPA that `scaler_core::hpa::desired_hpa` describes, in `autoscaling/v2` where the server
//! serves it and `autoscaling/v2beta2` otherwise, and reports the outcome in the
//! ScaledObject's status. Scale to and from zero arrives with its own issue.

mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use scaler_core::hpa::{desired_hpa, HpaError, MANAGER};
use scaler_core::resolve::build_scalers_resolved;
use scaler_core::{ScaledObject, ScalerError, TriggerError};
use tracing::{debug, info, warn};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The HPA could not be serialized (a bug, not bad input).
    #[error("serializing the HPA: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Discovery found no HPA version this build can write.
    #[error("the API server serves neither autoscaling/v2 nor autoscaling/v2beta2")]
    NoHpaVersion,
}

/// Shared state of the controller.
pub struct Context {
    /// The client.
    pub client: Client,
    /// The HPA resource chosen by discovery.
    pub hpa: ApiResource,
    /// Publishes Kubernetes Events about ScaledObjects.
    pub recorder: Recorder,
    /// eventscale's namespace: where ClusterTriggerAuthentications' Secrets live.
    pub operator_namespace: String,
}

/// The HPA API version to write: `autoscaling/v2` when served, else `autoscaling/v2beta2`.
pub async fn discover_hpa_resource(client: &Client) -> Result<ApiResource, Error> {
    let group = kube::discovery::group(client, "autoscaling").await?;
    let versions: Vec<String> = group.versions().map(str::to_string).collect();
    for version in ["v2", "v2beta2"] {
        if versions.iter().any(|v| v == version) {
            let gvk = GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler");
            return Ok(ApiResource::from_gvk_with_plural(
                &gvk,
                "horizontalpodautoscalers",
            ));
        }
    }
    Err(Error::NoHpaVersion)
}

/// Run the controller until the stream ends.
pub async fn run(client: Client, operator_namespace: String) -> Result<(), Error> {
    let hpa = discover_hpa_resource(&client).await?;
    info!(api_version = %hpa.api_version, "HPAs will be written with this API version");
    let recorder = Recorder::new(client.clone(), Reporter::from(MANAGER.to_string()));
    let ctx = Arc::new(Context {
        client: client.clone(),
        hpa: hpa.clone(),
        recorder,
        operator_namespace,
    });
    let sos: Api<ScaledObject> = Api::all(client.clone());
    let hpas: Api<DynamicObject> = Api::all_with(client, &hpa);
    Controller::new(sos, watcher::Config::default())
        .owns_with(hpas, hpa, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) => {}
                // error_policy has logged these already.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                // A deletion raced the queue: nothing to do.
                Err(controller::Error::ObjectNotFound(obj)) => {
                    debug!(%obj, "object gone before its reconcile")
                }
                Err(e) => warn!(error = %e, "controller error"),
            }
        })
        .await;
    Ok(())
}

/// What went wrong with a ScaledObject's configuration (reported, not retried).
#[derive(Debug)]
enum Invalid {
    Trigger(TriggerError),
    Hpa(HpaError),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Trigger(e) => e.fmt(f),
            Invalid::Hpa(e) => e.fmt(f),
        }
    }
}

/// Bring one ScaledObject's HPA and status in line with its spec.
#[tracing::instrument(skip_all, fields(scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any())))]
pub async fn reconcile(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    if so.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = so.namespace().unwrap_or_default();
    let mut metric_names = Vec::new();
    let mut specs = Vec::new();
    let mut invalid = None;
    for built in build_scalers_resolved(&ctx.client, &so, &ctx.operator_namespace).await {
        match built {
            Ok(s) => {
                metric_names.push(s.metric_spec().name.clone());
                specs.push(s.metric_spec().clone());
            }
            Err(e) => {
                invalid.get_or_insert(Invalid::Trigger(e));
            }
        }
    }
    let hpa = match invalid {
        Some(_) => None,
        None => match desired_hpa(&so, &specs) {
            Ok(h) => Some(h),
            Err(e) => {
                invalid = Some(Invalid::Hpa(e));
                None
            }
        },
    };

    if let Some(problem) = &invalid {
        // Nothing is applied for an invalid object; the user learns why from the status,
        // an Event and the log, each naming the field.
        warn!(error = %problem, "ScaledObject is invalid; its HPA is left as it is");
        let changed = status::report(
            &ctx.client,
            &so,
            None,
            &metric_names,
            Some(&problem.to_string()),
        )
        .await?;
        if changed {
            publish(
                &ctx,
                &so,
                EventType::Warning,
                "ScaledObjectCheckFailed",
                problem.to_string(),
            )
            .await;
        }
        // A missing TriggerAuthentication or Secret may appear at any time: look again soon.
        let auth_problem = matches!(&invalid, Some(Invalid::Trigger(e)) if matches!(e.source, ScalerError::Authentication(_)));
        let again = if auth_problem { 15 } else { 300 };
        return Ok(Action::requeue(Duration::from_secs(again)));
    }

    let Some(hpa) = hpa else {
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    let hpa_name = hpa.metadata.name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(&hpa)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), ctx.hpa.api_version.clone().into());
        obj.insert("kind".into(), "HorizontalPodAutoscaler".into());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.hpa);
    let params = PatchParams::apply(MANAGER).force();
    match api.patch(&hpa_name, &params, &Patch::Apply(&value)).await {
        Ok(_) => {}
        // The namespace is being deleted, and the ScaledObject with it.
        Err(e) if namespace_terminating(&e) => {
            debug!("namespace is terminating; not recreating the HPA");
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    }
    let changed = status::report(&ctx.client, &so, Some(&hpa_name), &metric_names, None).await?;
    if changed {
        info!(hpa = %hpa_name, metrics = ?metric_names, "HPA applied");
        publish(
            &ctx,
            &so,
            EventType::Normal,
            "ScaledObjectReady",
            format!("HPA {hpa_name} is in sync"),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

async fn publish(ctx: &Context, so: &ScaledObject, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &so.object_ref(&())).await {
        warn!(error = %e, "publishing an Event failed");
    }
}

/// Retry API failures after a pause.
pub fn error_policy(so: Arc<ScaledObject>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any()), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}
