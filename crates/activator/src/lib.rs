//! activator: eventscale's write path.
//!
//! A controller in the shape of kube-rs `controller-rs`: one [`reconcile`] and one
//! [`error_policy`], a [`Context`] carrying the client. For each ScaledObject the
//! reconcile gathers its inputs (the reflector stores' view of the namespace, the
//! resolved target, the triggers' metric specs), lets `plan` decide — purely — which HPA
//! to apply (in `autoscaling/v2` where the server serves it, `autoscaling/v2beta2`
//! otherwise) or delete, the status to write and the events to publish, and carries that
//! out. At steady state the plan is empty and the reconcile sends no request.

pub mod events;
pub mod http;
pub mod jobs;
pub mod membership;
mod plan;
pub mod scale;
mod status;
mod stores;
pub mod target;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use scaler_core::hpa::MANAGER;
use scaler_core::runtime::Runtimes;
use scaler_core::{MetricSpec, ScaledObject, TriggerError};
use target::{Target, TargetError, TargetKinds};
use tracing::{debug, info, warn};

use plan::{Applied, DeleteWhy, HpaDeletion, Plan, ReplicaRead};
use stores::Stores;

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
    /// The watches of ScaledObjects and HPAs have not listed them yet.
    #[error("the ScaledObject and HPA caches are not filled yet")]
    StoresNotReady,
}

/// Shared state of the activator: the controller's and the scale loop's.
pub struct Context {
    /// The client.
    pub client: Client,
    /// The HPA resource chosen by discovery.
    pub hpa: ApiResource,
    /// Publishes Kubernetes Events about ScaledObjects.
    pub recorder: Recorder,
    /// eventscale's namespace: where ClusterTriggerAuthentications' Secrets live.
    pub operator_namespace: String,
    /// Scale-target kinds already resolved by discovery.
    pub target_kinds: TargetKinds,
    /// When each ScaledObject was last seen active by this replica.
    pub last_active: scale::LastActive,
    /// The ScaledObjects' runtimes (their scalers, built once), shared with the scale loop
    /// and HPA reads.
    pub runtimes: Arc<Runtimes>,
    /// Which ScaledObjects this replica owns: it reconciles, polls and scales only those.
    pub shard: membership::Shard,
    /// ScaledObjects to reconcile again though nothing of theirs changed in the API (an
    /// external scaler changed its metric spec).
    recheck: tokio::sync::broadcast::Sender<ObjectRef<ScaledObject>>,
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
    /// The activator's context: the HPA version found by discovery, an Event recorder.
    pub async fn new(
        client: Client,
        operator_namespace: String,
        runtimes: Arc<Runtimes>,
        shard: membership::Shard,
    ) -> Result<Arc<Self>, Error> {
        let hpa = discover_hpa_resource(&client).await?;
        info!(api_version = %hpa.api_version, "HPAs will be written with this API version");
        Ok(Self::with_hpa_resource(
            client,
            operator_namespace,
            hpa,
            runtimes,
            shard,
        ))
    }

    /// A context writing HPAs as `hpa`, with no discovery (tests, or a caller that knows).
    pub fn with_hpa_resource(
        client: Client,
        operator_namespace: String,
        hpa: ApiResource,
        runtimes: Arc<Runtimes>,
        shard: membership::Shard,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), Reporter::from(MANAGER.to_string()));
        Arc::new(Context {
            client,
            hpa,
            recorder,
            operator_namespace,
            target_kinds: TargetKinds::default(),
            last_active: scale::LastActive::default(),
            runtimes,
            shard,
            recheck: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// Reconcile `ns/name` again (its HPA brought in line with its triggers' metric specs
    /// as they are now), when this replica runs the controller.
    pub fn recheck(&self, namespace: &str, name: &str) {
        // A replica that does not own it skips the reconcile.
        let _ = self.recheck.send(ObjectRef::new(name).within(namespace));
    }
}

/// What the reconciles of one controller run share: the context, and the run's stores
/// and memory of applies.
pub struct Reconciler {
    ctx: Arc<Context>,
    stores: Stores,
}

/// Run the controller until the stream ends.
pub async fn run(ctx: Arc<Context>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let hpa = ctx.hpa.clone();
    let sos: Api<ScaledObject> = Api::all(client.clone());
    let hpas: Api<DynamicObject> = Api::all_with(client, &hpa);
    // Reconcile on what the reconcile reads: spec (generation), annotations (pause,
    // transfer), labels, finalizers and deletion; not on status writes, ours included.
    // HPAs only when what their writers set changes (not on their status, which changes
    // every sync); every HPA is kept in a store, for ownership and for skipping applies
    // that would change nothing.
    let (so_reader, so_writer) = reflector::store();
    let so_stream = reflector(
        so_writer,
        watcher(sos, watcher::Config::default()).modify(scaler_core::scaled_object::slim),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(reconcile_relevant, PredicateConfig::default());
    let hpa_writer = reflector::store::Writer::new(hpa.clone());
    let hpa_reader = hpa_writer.as_reader();
    let hpa_stream = reflector(
        hpa_writer,
        watcher(hpas, watcher::Config::default()).modify(stores::slim_hpa),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(
        |h: &DynamicObject| Some(stores::fingerprint(h)),
        PredicateConfig::default(),
    );
    let rechecks = futures::stream::unfold(ctx.recheck.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(r) => return Some((r, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let shard_changes = ctx.shard.changes();
    let reconciler = Arc::new(Reconciler {
        ctx,
        stores: Stores::new(so_reader.clone(), hpa_reader),
    });
    Controller::for_stream(so_stream, so_reader)
        .owns_stream_with(hpa_stream, hpa)
        .reconcile_on(rechecks)
        .reconcile_all_on(shard_changes)
        .shutdown_on_signal()
        .run(reconcile, error_policy, reconciler)
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

/// The finalizer that lets a deleted ScaledObject restore its target first.
pub const FINALIZER: &str = "finalizer.keda.sh";

/// Bring one ScaledObject's HPA and status in line with its spec; on deletion, restore
/// the target's replicas when asked and let it go.
#[tracing::instrument(skip_all, fields(scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any())))]
pub async fn reconcile(so: Arc<ScaledObject>, r: Arc<Reconciler>) -> Result<Action, Error> {
    // Another replica's: when the group changes every object is reconciled again.
    if !r.ctx.shard.owns(
        membership::kinds::SCALED_OBJECT,
        &so.namespace().unwrap_or_default(),
        &so.name_any(),
    ) {
        return Ok(Action::await_change());
    }
    let api: Api<ScaledObject> =
        Api::namespaced(r.ctx.client.clone(), &so.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, so, |event| async {
        match event {
            FinalizerEvent::Apply(so) => apply(&so, &r).await,
            FinalizerEvent::Cleanup(so) => cleanup(&so, &r).await,
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

/// Each trigger's metric spec, or why its scaler cannot be built: the one call that gives
/// the plan its triggers (it may read TriggerAuthentications, Secrets and the target's
/// environment).
async fn metric_specs(ctx: &Context, so: &ScaledObject) -> Vec<Result<MetricSpec, TriggerError>> {
    let rt = ctx.runtimes.get(so).await;
    rt.refresh().await;
    rt.scalers()
        .into_iter()
        .map(|built| built.map(|s| s.metric_spec().clone()))
        .collect()
}

fn uid(so: &ScaledObject) -> &str {
    so.metadata.uid.as_deref().unwrap_or("")
}

/// Gather what the plan needs (the stores, the target, the triggers; the target's
/// replicas only the first time), plan, and carry the plan out.
async fn apply(so: &ScaledObject, r: &Reconciler) -> Result<Action, Error> {
    let ctx = &r.ctx;
    r.stores.ready().await?;
    let target = Target::resolve(&ctx.client, &ctx.target_kinds, so).await;
    let built = metric_specs(ctx, so).await;
    let others = r.stores.others(so);
    let hpas = r.stores.hpas(so);
    let mut inputs = plan::Inputs {
        so,
        built: &built,
        target: target.as_ref().map(|t| &t.gvkr).map_err(|e| e.to_string()),
        others: &others,
        hpas: &hpas,
        applied: r.stores.applied(uid(so)),
        hpa_api_version: &ctx.hpa.api_version,
        replicas: None,
    };
    if let (true, Ok(t)) = (plan::needs_replicas(&inputs), &target) {
        inputs.replicas = Some(match t.replicas().await {
            Ok(n) => ReplicaRead::Replicas(n),
            Err(TargetError::Api(kube::Error::Api(e))) if e.code == 404 => ReplicaRead::NotFound,
            Err(e) => return Err(e.into()),
        });
    }
    let plan = plan::plan(&inputs)?;
    carry_out(so, r, plan).await
}

/// Carry out `plan`: apply, delete, write the status, publish the events.
async fn carry_out(so: &ScaledObject, r: &Reconciler, mut plan: Plan) -> Result<Action, Error> {
    let ctx = &r.ctx;
    let ns = so.namespace().unwrap_or_default();
    if let Some(a) = plan.apply.take() {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.hpa);
        let params = PatchParams::apply(MANAGER).force();
        match api.patch(&a.name, &params, &Patch::Apply(&a.body)).await {
            Ok(hpa) => {
                info!(hpa = %a.name, metrics = ?plan.metric_names, "HPA applied");
                let applied = Applied {
                    body: a.hash,
                    hpa: stores::fingerprint(&hpa),
                };
                r.stores.remember(uid(so), Some(applied));
            }
            // The namespace is being deleted, and the ScaledObject with it.
            Err(e) if namespace_terminating(&e) => {
                debug!("namespace is terminating; not recreating the HPA");
                return Ok(Action::await_change());
            }
            // The HPA it makes is invalid (a field the API server checks and the spec's
            // validation does not): the ScaledObject's problem, reported, not retried.
            Err(kube::Error::Api(s)) if s.code == 422 => {
                let causes: Vec<(String, String)> = s
                    .details
                    .iter()
                    .flat_map(|d| &d.causes)
                    .map(|c| (c.field.clone(), c.message.clone()))
                    .collect();
                let message = scaler_core::hpa::refusal(so, &a.name, &causes, &s.message);
                r.stores.remember(uid(so), None);
                plan = plan::refused(so, message, std::mem::take(&mut plan.metric_names));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(problem) = &plan.problem {
        warn!(error = %problem, "ScaledObject is invalid; its HPA is left as it is");
    }
    for d in &plan.delete {
        if d.why == DeleteWhy::Paused {
            // Unpaused, the HPA must be applied again even if the store still shows it.
            r.stores.remember(uid(so), None);
        }
        if delete_hpa(ctx, &ns, d).await? {
            match d.why {
                DeleteWhy::Paused => info!(hpa = %d.name, "paused: HPA deleted"),
                DeleteWhy::Renamed => {
                    let new = scaler_core::hpa::hpa_name(so);
                    info!(old = %d.name, %new, "HPA renamed: the old one is deleted")
                }
                DeleteWhy::Deleted => info!(hpa = %d.name, "HPA deleted"),
            }
        }
    }
    if let Some(next) = &plan.status {
        let current = so.status.clone().unwrap_or_default();
        status::write_if_changed(&ctx.client, so, &*current, next).await?;
    }
    for e in plan.events {
        events::publish(&ctx.recorder, so, e.type_, e.reason, e.note).await;
    }
    Ok(Action::requeue(plan.requeue))
}

/// On deletion: remove the ScaledObject's HPAs, then put the target back at
/// `status.originalReplicaCount` when `restoreToOriginalReplicaCount` is set (a target
/// already gone is fine).
async fn cleanup(so: &ScaledObject, r: &Reconciler) -> Result<Action, Error> {
    let ctx = &r.ctx;
    let ns = so.namespace().unwrap_or_default();
    r.stores.remember(uid(so), None);
    // Best effort, as KEDA: a failure here is logged, and the finalizer still goes, so a
    // ScaledObject (and its namespace) is never stuck on a permission or a conflict. The
    // HPAs carry the ScaledObject as owner, so the garbage collector removes any left.
    let hpas = match r.stores.ready().await {
        Ok(()) => r.stores.hpas(so),
        Err(e) => {
            warn!(error = %e, "the HPAs are not known; the garbage collector will remove them");
            Vec::new()
        }
    };
    let plan = plan::cleanup(so, &hpas);
    for d in &plan.delete {
        if let Err(e) = delete_hpa(ctx, &ns, d).await {
            warn!(hpa = %d.name, error = %e, "deleting the HPA on delete failed");
        }
    }
    if let Some(n) = plan.restore {
        match Target::resolve(&ctx.client, &ctx.target_kinds, so).await {
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

/// Delete one of the ScaledObject's HPAs, its uid as precondition; one gone, or replaced
/// by someone else's since the store saw it, is left alone. Whether it was deleted.
async fn delete_hpa(ctx: &Context, ns: &str, d: &HpaDeletion) -> Result<bool, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ctx.hpa);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(d.uid.clone()).filter(|u| !u.is_empty()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&d.name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

/// A Kubernetes timestamp as a chrono time (`None` only outside chrono's range).
pub(crate) fn chrono_time(
    t: k8s_openapi::jiff::Timestamp,
) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
}

/// Retry API failures after a pause.
pub fn error_policy(so: Arc<ScaledObject>, error: &Error, _r: Arc<Reconciler>) -> Action {
    warn!(scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any()), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The reconcile against a scripted API server: each request checked and answered in
/// order, none allowed beyond the script.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, hpa, scaled_object, Expect, Harness, Seen, UID};
    use serde_json::json;

    fn requeue_300() -> Action {
        Action::requeue(Duration::from_secs(300))
    }

    /// `so` with the status patch in `seen` applied, as the API server would store it.
    fn with_status_patch(so: &ScaledObject, seen: &Seen) -> ScaledObject {
        let mut status = serde_json::to_value(so.status.clone().unwrap_or_default()).expect("JSON");
        fixtures::merge(&mut status, &seen.body["status"]);
        let mut next = so.clone();
        next.status = Some(Box::new(serde_json::from_value(status).expect("status")));
        next
    }

    /// The first reconcile of a finalized, valid `so`: replicas read, HPA applied under
    /// the field manager `eventscale`, status written, Event published; the stores then
    /// see both. The ScaledObject and the HPA as the API server holds them after it.
    async fn first_reconcile(h: &mut Harness, so: &ScaledObject) -> (ScaledObject, DynamicObject) {
        let (r, seen) = h
            .reconcile(
                so,
                vec![
                    Expect::get_scale_2(),
                    Expect::apply_hpa("keda-hpa-web"),
                    Expect::patch_status(),
                    Expect::event(),
                ],
            )
            .await;
        assert_eq!(r.expect("reconcile"), requeue_300());
        let apply = &seen[1];
        assert!(
            apply.query.contains("fieldManager=eventscale") && apply.query.contains("force=true"),
            "{}",
            apply.query
        );
        assert_eq!(apply.body["apiVersion"], "autoscaling/v2");
        assert_eq!(apply.body["kind"], "HorizontalPodAutoscaler");
        assert_eq!(apply.body["metadata"]["ownerReferences"][0]["uid"], UID);
        assert_eq!(apply.body["spec"]["scaleTargetRef"]["name"], "web");
        assert!(
            seen[2].query.contains("fieldManager=eventscale"),
            "{}",
            seen[2].query
        );
        assert_eq!(seen[3].body["reason"], "ScaledObjectReady");
        assert_eq!(seen[3].body["note"], "HPA keda-hpa-web is in sync");
        let so = with_status_patch(so, &seen[2]);
        let stored: DynamicObject =
            serde_json::from_value(fixtures::applied(&apply.body)).expect("HPA");
        h.store_hpa(stored.clone());
        h.store_so(&so);
        (so, stored)
    }

    fn condition(so: &ScaledObject, type_: &str) -> (String, String, String) {
        let c = so
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == type_)
            .expect(type_);
        let reason = c.reason.clone().unwrap_or_default();
        (
            c.status.clone(),
            reason,
            c.message.clone().unwrap_or_default(),
        )
    }

    /// A new ScaledObject gets the finalizer; then its HPA is applied under the field
    /// manager `eventscale`, its status written and an Event published; then, with nothing
    /// changed, reconciles send no request at all; an HPA changed by someone else is
    /// applied again, and only that.
    #[tokio::test]
    async fn new_then_steady_then_restored() {
        let mut new = scaled_object(json!({}), json!({}));
        new.metadata.finalizers = None;
        let mut h = Harness::new(vec![new.clone()], vec![]);

        let (r, seen) = h.reconcile(&new, vec![Expect::patch_finalizers()]).await;
        assert_eq!(r.expect("reconcile"), Action::await_change());
        assert!(
            seen[0].body.to_string().contains(FINALIZER),
            "{}",
            seen[0].body
        );

        let so = scaled_object(json!({}), json!({}));
        h.store_so(&so);
        let (so, stored) = first_reconcile(&mut h, &so).await;
        let status = so.status.clone().expect("status");
        assert_eq!(status.original_replica_count, Some(2));
        assert_eq!(status.hpa_name.as_deref(), Some("keda-hpa-web"));
        assert_eq!(condition(&so, "Ready").1, "ScaledObjectReady");
        for _ in 0..3 {
            let (r, seen) = h.reconcile(&so, vec![]).await;
            assert_eq!(r.expect("reconcile"), requeue_300());
            assert!(seen.is_empty(), "{seen:?}");
        }
        // The HPA controller's status writes change nothing either.
        let mut synced = stored.clone();
        synced.data["status"] = json!({"currentReplicas": 4});
        synced.metadata.resource_version = Some("5".into());
        h.store_hpa(synced);
        let (r, seen) = h.reconcile(&so, vec![]).await;
        assert_eq!(r.expect("reconcile"), requeue_300());
        assert!(seen.is_empty(), "{seen:?}");

        // Another writer changes the spec: restored, and nothing else is written.
        let mut changed = stored;
        changed.data["spec"]["maxReplicas"] = 9.into();
        h.store_hpa(changed);
        let (r, seen) = h
            .reconcile(&so, vec![Expect::apply_hpa("keda-hpa-web")])
            .await;
        assert_eq!(r.expect("reconcile"), requeue_300());
        assert_eq!(seen[0].body["spec"]["maxReplicas"], 100);
        let restored: DynamicObject =
            serde_json::from_value(fixtures::applied(&seen[0].body)).expect("HPA");
        h.store_hpa(restored);
        let (_, seen) = h.reconcile(&so, vec![]).await;
        assert!(seen.is_empty(), "{seen:?}");
    }

    /// Deleting with `restoreToOriginalReplicaCount`: the HPA is deleted (its uid as
    /// precondition), `/scale` set back to the recorded count, the finalizer removed.
    #[tokio::test]
    async fn deletion_restores_the_original_replica_count() {
        let mut so = scaled_object(
            json!({"advanced": {"restoreToOriginalReplicaCount": true}}),
            json!({}),
        );
        so.status = Some(Box::new(scaler_core::ScaledObjectStatus {
            original_replica_count: Some(3),
            hpa_name: Some("keda-hpa-web".into()),
            ..Default::default()
        }));
        so.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-02T00:00:00Z".parse().expect("time"),
            ));
        let owned = hpa("keda-hpa-web", "web", Some(("web", UID)));
        let foreign = hpa("legacy", "web", None);
        let mut h = Harness::new(vec![so.clone()], vec![owned, foreign]);
        let (r, seen) = h
            .reconcile(
                &so,
                vec![
                    Expect::delete_hpa("keda-hpa-web"),
                    Expect::patch_scale(),
                    Expect::patch_finalizers(),
                ],
            )
            .await;
        assert_eq!(r.expect("reconcile"), Action::await_change());
        assert_eq!(seen[0].body["preconditions"]["uid"], "uid-keda-hpa-web");
        assert_eq!(seen[1].body["spec"]["replicas"], 3);
        assert!(
            seen[2].body.to_string().contains("remove"),
            "{}",
            seen[2].body
        );
    }

    /// A foreign HPA on the target: Ready False with KEDA's message, a Warning Event, no
    /// HPA written; then nothing until something changes.
    #[tokio::test]
    async fn a_foreign_hpa_blocks_the_scaled_object() {
        let so = scaled_object(json!({}), json!({}));
        let mut h = Harness::new(vec![so.clone()], vec![hpa("legacy", "web", None)]);
        let (r, seen) = h
            .reconcile(&so, vec![Expect::patch_status(), Expect::event()])
            .await;
        assert_eq!(r.expect("reconcile"), requeue_300());
        let so = with_status_patch(&so, &seen[0]);
        let message = "spec.scaleTargetRef: the workload 'web' of type 'apps/v1.Deployment' is already managed by the hpa 'legacy'";
        assert_eq!(
            condition(&so, "Ready"),
            (
                "False".into(),
                "ScaledObjectCheckFailed".into(),
                message.into()
            )
        );
        assert_eq!(seen[1].body["reason"], "ScaledObjectCheckFailed");
        assert_eq!(seen[1].body["type"], "Warning");
        assert_eq!(seen[1].body["note"], message);
        h.store_so(&so);
        let (_, seen) = h.reconcile(&so, vec![]).await;
        assert!(seen.is_empty(), "{seen:?}");
    }

    /// Paused: the HPA deleted, Paused True; unpaused at once, while the store may still
    /// show the deleted HPA: applied again.
    #[tokio::test]
    async fn pause_then_unpause() {
        let so = scaled_object(json!({}), json!({}));
        let mut h = Harness::new(vec![so.clone()], vec![]);
        let (so, _) = first_reconcile(&mut h, &so).await;
        // The store keeps showing the HPA: the deletion's event is not needed to unpause.

        let mut paused = so.clone();
        paused.metadata.annotations =
            Some([("autoscaling.keda.sh/paused-replicas".into(), "4".into())].into());
        let (r, seen) = h
            .reconcile(
                &paused,
                vec![
                    Expect::delete_hpa("keda-hpa-web"),
                    Expect::patch_status(),
                    Expect::event(),
                ],
            )
            .await;
        assert_eq!(r.expect("reconcile"), requeue_300());
        let paused = with_status_patch(&paused, &seen[1]);
        assert_eq!(condition(&paused, "Paused").1, "ScaledObjectPaused");
        assert_eq!(
            paused.status.as_ref().and_then(|s| s.paused_replica_count),
            Some(4)
        );
        assert_eq!(seen[2].body["reason"], "ScaledObjectPaused");

        let mut unpaused = paused.clone();
        unpaused.metadata.annotations = None;
        let (_, seen) = h
            .reconcile(
                &unpaused,
                vec![
                    Expect::apply_hpa("keda-hpa-web"),
                    Expect::patch_status(),
                    Expect::event(),
                    Expect::event_again(),
                ],
            )
            .await;
        let unpaused = with_status_patch(&unpaused, &seen[1]);
        assert_eq!(condition(&unpaused, "Paused").1, "ScaledObjectUnpaused");
        assert_eq!(seen[2].body["reason"], "ScaledObjectUnpaused");
        assert_eq!(seen[3].body["reason"], "ScaledObjectReady");
        assert_eq!(seen[3].body["series"]["count"], 2);
    }

    /// A target that does not exist: Ready False naming it, looked at again soon; nothing
    /// applied.
    #[tokio::test]
    async fn a_missing_target_is_reported_and_retried_soon() {
        let so = scaled_object(json!({}), json!({}));
        let mut h = Harness::new(vec![so.clone()], vec![]);
        let (r, seen) = h
            .reconcile(
                &so,
                vec![
                    Expect::get_scale_not_found(),
                    Expect::patch_status(),
                    Expect::event(),
                ],
            )
            .await;
        assert_eq!(
            r.expect("reconcile"),
            Action::requeue(Duration::from_secs(15))
        );
        let so = with_status_patch(&so, &seen[1]);
        assert_eq!(
            condition(&so, "Ready").2,
            "spec.scaleTargetRef: apps/v1.Deployment ns/web not found"
        );
        assert_eq!(so.status.and_then(|s| s.original_replica_count), None);
    }
}
