//! activator: eventscale's write path.
//!
//! A controller in the shape of kube-rs `controller-rs`: one [`reconcile`] and one
//! [`error_policy`], a [`Context`] carrying the client. For each ScaledObject it applies the
//! HPA that `scaler_core::hpa::desired_hpa` describes, in `autoscaling/v2` where the server
//! serves it and `autoscaling/v2beta2` otherwise, and reports the outcome in the
//! ScaledObject's status. Scale to and from zero arrives with its own issue.

pub mod leader;
pub mod scale;
mod status;
pub mod target;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::predicates;
use kube::runtime::reflector;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use scaler_core::activation::{pause_of, Pause};
use scaler_core::hpa::{desired_hpa, HpaError, MANAGER};
use scaler_core::runtime::Runtimes;
use scaler_core::validation::{
    claimed_first, gvk_string, ownership, validate_spec, ExistingHpa, OtherScaledObject,
};
use scaler_core::{ScaledObject, ScalerError, TriggerError};
use target::{Target, TargetError};
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
    /// The scale target could not be read or scaled.
    #[error("scale target: {0}")]
    Target(#[from] target::TargetError),
    /// Adding or removing the finalizer, or the work around it, failed.
    #[error("{0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
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
    /// The ScaledObjects' runtimes (their scalers, built once), shared with the scale loop
    /// and HPA reads.
    pub runtimes: Arc<Runtimes>,
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

impl Context {
    /// The controller's context: the HPA version found by discovery, an Event recorder.
    pub async fn new(
        client: Client,
        operator_namespace: String,
        runtimes: Arc<Runtimes>,
    ) -> Result<Arc<Self>, Error> {
        let hpa = discover_hpa_resource(&client).await?;
        info!(api_version = %hpa.api_version, "HPAs will be written with this API version");
        let recorder = Recorder::new(client.clone(), Reporter::from(MANAGER.to_string()));
        Ok(Arc::new(Context {
            client,
            hpa,
            recorder,
            operator_namespace,
            runtimes,
        }))
    }
}

/// Run the controller until the stream ends.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let hpa = ctx.hpa.clone();
    let sos: Api<ScaledObject> = Api::all(client.clone());
    let hpas: Api<DynamicObject> = Api::all_with(client, &hpa);
    // Reconcile on what the reconcile reads: spec (generation), annotations (pause,
    // transfer), labels, finalizers and deletion; not on status writes, ours included.
    // HPAs only on spec changes (not on their status, which changes every sync).
    let (reader, writer) = reflector::store();
    let so_stream = reflector(
        writer,
        watcher(sos, watcher::Config::default()).modify(scaler_core::scaled_object::slim),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(reconcile_relevant, PredicateConfig::default());
    let hpa_stream = watcher(hpas, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    Controller::for_stream(so_stream, reader)
        .owns_stream_with(hpa_stream, hpa)
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

/// A hash of what a reconcile depends on, so status writes do not trigger one.
fn reconcile_relevant(so: &ScaledObject) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    so.metadata.generation.hash(&mut h);
    so.metadata.annotations.hash(&mut h);
    so.metadata.labels.hash(&mut h);
    so.metadata.finalizers.hash(&mut h);
    so.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// What went wrong with a ScaledObject's configuration (reported, not retried).
#[derive(Debug)]
enum Invalid {
    Trigger(TriggerError),
    Hpa(HpaError),
    Annotation(String),
    Target(String),
    Spec(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Trigger(e) => e.fmt(f),
            Invalid::Hpa(e) => e.fmt(f),
            Invalid::Annotation(e) => write!(f, "metadata.annotations: {e}"),
            Invalid::Target(e) | Invalid::Spec(e) => f.write_str(e),
        }
    }
}

/// The finalizer that lets a deleted ScaledObject restore its target first.
pub const FINALIZER: &str = "finalizer.keda.sh";

/// Bring one ScaledObject's HPA and status in line with its spec; on deletion, restore
/// the target's replicas when asked and let it go.
#[tracing::instrument(skip_all, fields(scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any())))]
pub async fn reconcile(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<ScaledObject> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, so, |event| async {
        match event {
            FinalizerEvent::Apply(so) => apply(so, ctx.clone()).await,
            FinalizerEvent::Cleanup(so) => cleanup(so, ctx.clone()).await,
        }
    })
    .await
    .or_else(|e| match e {
        // Deleted while the finalizer was being removed (two reconciles raced): done.
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) if s.code == 404 => {
            Ok(Action::await_change())
        }
        e => Err(Error::Finalizer(Box::new(e))),
    })
}

/// On deletion: remove the HPA, then put the target back at `status.originalReplicaCount`
/// when `restoreToOriginalReplicaCount` is set (a target already gone is fine).
async fn cleanup(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = so.namespace().unwrap_or_default();
    let hpa_name = so
        .status
        .as_ref()
        .and_then(|s| s.hpa_name.clone())
        .unwrap_or_else(|| scaler_core::hpa::hpa_name(&so));
    // Best effort, as KEDA: a failure here is logged, and the finalizer still goes, so a
    // ScaledObject (and its namespace) is never stuck on a permission or a conflict.
    if let Err(e) = delete_owned_hpa(&ctx, &so, &ns, &hpa_name).await {
        warn!(hpa = %hpa_name, error = %e, "deleting the HPA on delete failed");
    }
    let restore = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.restore_to_original_replica_count)
        .unwrap_or(false);
    let original = so.status.as_ref().and_then(|s| s.original_replica_count);
    if let (true, Some(n)) = (restore, original) {
        match Target::resolve(&ctx.client, &so).await {
            Ok(t) => match t.scale(n).await {
                Ok(()) => info!(replicas = n, "restored the target's original replica count"),
                Err(TargetError::Api(kube::Error::Api(e))) if e.code == 404 => {}
                Err(e) => warn!(error = %e, "restoring the original replica count failed"),
            },
            Err(e) => warn!(error = %e, "the target cannot be resolved; nothing to restore"),
        }
    }
    Ok(Action::await_change())
}

/// Whether the target or the HPA name is already another HPA's or ScaledObject's (the
/// outer error is an API failure, the inner one the conflict in KEDA's words).
async fn check_ownership(
    ctx: &Context,
    so: &ScaledObject,
    target: &Target,
) -> Result<Result<(), String>, Error> {
    let ns = so.namespace().unwrap_or_default();
    let sos: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
    let others: Vec<OtherScaledObject> = sos
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none() && claimed_first(o, so))
        .map(|o| OtherScaledObject {
            name: o.name_any(),
            target_gvk: gvk_string(
                o.spec.scale_target_ref.api_version_or_default(),
                o.spec.scale_target_ref.kind_or_default(),
            ),
            target_name: o.spec.scale_target_ref.name.clone(),
            hpa_name: scaler_core::hpa::hpa_name(o),
        })
        .collect();
    let hpas: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.hpa);
    let existing: Vec<ExistingHpa> = hpas
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|h| {
            let t = &h.data["spec"]["scaleTargetRef"];
            ExistingHpa {
                name: h.name_any(),
                target_gvk: gvk_string(
                    t["apiVersion"].as_str().unwrap_or(""),
                    t["kind"].as_str().unwrap_or(""),
                ),
                target_name: t["name"].as_str().unwrap_or("").to_string(),
                owner_scaled_object: h
                    .owner_references()
                    .iter()
                    .find(|o| o.kind == "ScaledObject")
                    .map(|o| o.name.clone()),
            }
        })
        .collect();
    let g = &target.gvkr;
    let target_gvk = format!("{}/{}.{}", g.group, g.version, g.kind);
    Ok(ownership(so, &target_gvk, &others, &existing))
}

/// Delete the HPA `name` in `ns` if this ScaledObject owns it (a rejected ScaledObject
/// whose HPA name collides with another's must not delete that one's HPA).
async fn delete_owned_hpa(
    ctx: &Context,
    so: &ScaledObject,
    ns: &str,
    name: &str,
) -> Result<bool, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ctx.hpa);
    let Some(hpa) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let ours = hpa
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == so.metadata.uid.as_ref());
    if !ours {
        return Ok(false);
    }
    delete_hpa(ctx, ns, name).await
}

/// Delete the HPA `name` in `ns`; one already gone is fine.
async fn delete_hpa(ctx: &Context, ns: &str, name: &str) -> Result<bool, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ctx.hpa);
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn apply(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = so.namespace().unwrap_or_default();
    let pause = pause_of(so.annotations());
    let target = Target::resolve(&ctx.client, &so).await;
    let mut metric_names = Vec::new();
    let mut specs = Vec::new();
    let mut invalid = None;
    for built in ctx.runtimes.get(&so).await.scalers() {
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
    if invalid.is_none() {
        if let Err(e) = validate_spec(&so) {
            invalid = Some(Invalid::Spec(e));
        }
    }
    if invalid.is_none() {
        if let Err(e) = &pause {
            invalid = Some(Invalid::Annotation(e.clone()));
        }
    }
    if invalid.is_none() {
        if let Err(e) = &target {
            invalid = Some(Invalid::Target(e.to_string()));
        }
    }
    let target = target.ok();
    if let (None, Some(t)) = (&invalid, &target) {
        if let Err(e) = check_ownership(&ctx, &so, t).await? {
            invalid = Some(Invalid::Spec(e));
        }
    }
    // The replicas before eventscale touched the target, once, for restore on delete; a
    // target that does not exist (yet) is a problem to report, looked at again soon.
    let mut original = so.status.as_ref().and_then(|s| s.original_replica_count);
    if let (None, None, Some(t)) = (&invalid, original, &target) {
        match t.replicas().await {
            Ok(n) => original = Some(n),
            Err(TargetError::Api(kube::Error::Api(e))) if e.code == 404 => {
                invalid = Some(Invalid::Target(format!(
                    "spec.scaleTargetRef: {} {}/{} not found",
                    t.kind_string(),
                    ns,
                    t.name
                )));
            }
            Err(e) => return Err(e.into()),
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
            &status::Observed {
                problem: Some(&problem.to_string()),
                metric_names: &metric_names,
                ..Default::default()
            },
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
        // A missing TriggerAuthentication, Secret or target may appear at any time: look
        // again soon.
        let auth_problem = matches!(&invalid, Some(Invalid::Trigger(e)) if matches!(e.source, ScalerError::Authentication(_)))
            || matches!(&invalid, Some(Invalid::Target(_)));
        let again = if auth_problem { 15 } else { 300 };
        return Ok(Action::requeue(Duration::from_secs(again)));
    }

    let (Some(hpa), Some(target)) = (hpa, target) else {
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    let hpa_name = hpa.metadata.name.clone().unwrap_or_default();
    let paused = match pause {
        Ok(Pause::No) | Err(_) => None,
        Ok(p) => Some(p),
    };
    if let Some(p) = paused {
        // Paused: no HPA; the scale loop holds paused-replicas or freezes.
        if delete_owned_hpa(&ctx, &so, &ns, &hpa_name).await? {
            info!(hpa = %hpa_name, "paused: HPA deleted");
        }
        let changed = status::report(
            &ctx.client,
            &so,
            &status::Observed {
                hpa_name: Some(&hpa_name),
                metric_names: &metric_names,
                target: Some(&target),
                original,
                paused: Some(p),
                ..Default::default()
            },
        )
        .await?;
        if changed && !status::was_paused(&so) {
            publish(
                &ctx,
                &so,
                EventType::Normal,
                "ScaledObjectPaused",
                "ScaledObject is paused".into(),
            )
            .await;
        }
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
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
    // A renamed HPA replaces the old one.
    if let Some(old) = so
        .status
        .as_ref()
        .and_then(|s| s.hpa_name.as_deref())
        .filter(|old| *old != hpa_name)
    {
        if delete_owned_hpa(&ctx, &so, &ns, old).await? {
            info!(old, new = %hpa_name, "HPA renamed: the old one is deleted");
        }
    }
    let unpaused = status::was_paused(&so);
    let changed = status::report(
        &ctx.client,
        &so,
        &status::Observed {
            hpa_name: Some(&hpa_name),
            metric_names: &metric_names,
            target: Some(&target),
            original,
            ..Default::default()
        },
    )
    .await?;
    if unpaused {
        publish(
            &ctx,
            &so,
            EventType::Normal,
            "ScaledObjectUnpaused",
            "pause annotation removed for ScaledObject".into(),
        )
        .await;
    }
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

pub(crate) async fn publish(
    ctx: &Context,
    so: &ScaledObject,
    type_: EventType,
    reason: &str,
    note: String,
) {
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

/// A Kubernetes timestamp as a chrono time (`None` only outside chrono's range).
pub(crate) fn chrono_time(
    t: k8s_openapi::jiff::Timestamp,
) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
}

/// Retry API failures after a pause.
pub fn error_policy(so: Arc<ScaledObject>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any()), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}
