//! The HTTPScaledObject controller: for each HTTPScaledObject, the ScaledObject of the same
//! name whose `external-push` trigger reads the interceptors — so scaling, cooldown,
//! fallback and the HPA are the ScaledObject machinery. [`plan`] decides, purely; the
//! reconcile reads the ScaledObject, carries the plan out and writes the status.
//!
//! As the add-on does: the ScaledObject is owned by the HTTPScaledObject (deleted with it),
//! re-applied when edited, and left to the user (an existing one deleted) when the
//! `httpscaledobject.keda.sh/skip-scaledobject-creation` annotation is `true`. Unlike the
//! add-on, a ScaledObject of that name that the HTTPScaledObject does not own is never
//! overwritten: the status says so.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use scaler_core::conditions::{ConditionStatus, ConditionType};
use scaler_core::http_scaled_object::{
    scaled_object_for, HttpScaledObject, HttpScaledObjectStatus, SKIP_SCALED_OBJECT_ANNOTATION,
};
use scaler_core::scaled_object::Condition;
use scaler_core::validation::validate_spec;
use scaler_core::ScaledObject;
use tracing::{info, warn};

use crate::events::{self, EventReason};
use crate::Error;

/// The field manager of the ScaledObjects this controller applies.
pub const MANAGER: &str = "eventscale-http";
/// The Ready condition's reason when the ScaledObject is in line (the add-on's).
pub const RECONCILED: &str = "Reconciled";
/// The Ready condition's reason when it is not (the add-on's).
pub const CREATE_ERROR: &str = "CreateError";

/// What the controller needs.
pub struct HttpContext {
    /// The client.
    pub client: Client,
    /// Publishes Events about HTTPScaledObjects.
    pub recorder: Recorder,
    /// The interceptors' external scaler, as the ScaledObjects' triggers name it.
    pub scaler_address: String,
    /// Which HTTPScaledObjects this replica owns: it reconciles only those.
    pub shard: crate::membership::Shard,
}

impl HttpContext {
    /// A context whose ScaledObjects point at `scaler_address`.
    pub fn new(
        client: Client,
        scaler_address: String,
        shard: crate::membership::Shard,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), Reporter::from(MANAGER.to_string()));
        Arc::new(Self {
            client,
            recorder,
            scaler_address,
            shard,
        })
    }
}

/// What to do for one HTTPScaledObject.
#[derive(Debug, Clone)]
pub enum HttpPlan {
    /// Apply this ScaledObject.
    Apply(Box<ScaledObject>),
    /// Delete the ScaledObject this HTTPScaledObject owns (skip annotation).
    DeleteOwned,
    /// Nothing to write but the status.
    Nothing,
}

/// The plan and the status to write.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What to do with the ScaledObject.
    pub plan: HttpPlan,
    /// The status afterwards, when the plan succeeds.
    pub status: HttpScaledObjectStatus,
}

fn ready(status: ConditionStatus, reason: &str, message: String) -> Condition {
    Condition {
        type_: ConditionType::Ready.as_str().into(),
        status: status.as_str().into(),
        reason: Some(reason.into()),
        message: Some(message),
    }
}

/// Whether `so` is owned by the HTTPScaledObject `name` (by kind and name, as the add-on
/// checks, so that one made for an earlier object of the same name still counts).
pub fn owned_by(so: &ScaledObject, name: &str) -> bool {
    so.owner_references()
        .iter()
        .any(|o| o.kind.eq_ignore_ascii_case("HTTPScaledObject") && o.name == name)
}

/// The failed status, in the add-on's words.
pub fn failed(message: impl std::fmt::Display) -> HttpScaledObjectStatus {
    HttpScaledObjectStatus {
        conditions: Some(vec![ready(
            ConditionStatus::False,
            CREATE_ERROR,
            format!("Failed to create scaled objects: {message}"),
        )]),
        ..HttpScaledObjectStatus::default()
    }
}

/// Decides, from the HTTPScaledObject and the ScaledObject of its name (if any).
pub fn plan(
    o: &HttpScaledObject,
    existing: Option<&ScaledObject>,
    scaler_address: &str,
) -> Decision {
    let name = o.name_any();
    let route = match o.route() {
        Ok(r) => r,
        Err(e) => {
            return Decision {
                plan: HttpPlan::Nothing,
                status: failed(e),
            }
        }
    };
    let mut status = HttpScaledObjectStatus {
        conditions: None,
        target_workload: Some(route.target_workload()),
        target_service: Some(route.target_service()),
    };
    let owned = existing.is_some_and(|so| owned_by(so, &name));
    if o.skips_scaled_object() {
        status.conditions = Some(vec![ready(
            ConditionStatus::True,
            RECONCILED,
            format!(
                "ScaledObject creation skipped ({SKIP_SCALED_OBJECT_ANNOTATION} is true): requests are routed and counted, the ScaledObject is the user's"
            ),
        )]);
        let plan = if owned {
            HttpPlan::DeleteOwned
        } else {
            HttpPlan::Nothing
        };
        return Decision { plan, status };
    }
    if existing.is_some() && !owned {
        return Decision {
            plan: HttpPlan::Nothing,
            status: HttpScaledObjectStatus {
                conditions: failed(format!(
                    "ScaledObject {} exists and is not owned by this HTTPScaledObject; delete it, or set the annotation {SKIP_SCALED_OBJECT_ANNOTATION}: \"true\" to keep it",
                    route.key
                ))
                .conditions,
                ..status
            },
        };
    }
    let so = scaled_object_for(o, &route, scaler_address);
    // What the ScaledObject controller would refuse (a name too long for a label value) is
    // said on the HTTPScaledObject, rather than created as an object that never scales.
    if let Err(e) = validate_spec(&so) {
        return Decision {
            plan: HttpPlan::Nothing,
            status: HttpScaledObjectStatus {
                conditions: failed(format!("the ScaledObject it derives is invalid: {e}"))
                    .conditions,
                ..status
            },
        };
    }
    status.conditions = Some(vec![ready(
        ConditionStatus::True,
        RECONCILED,
        "ScaledObject created and configured".into(),
    )]);
    Decision {
        plan: HttpPlan::Apply(Box::new(so)),
        status,
    }
}

/// Whether the API server serves HTTPScaledObjects (their CRD is installed).
pub async fn served(client: &Client) -> bool {
    let api: Api<HttpScaledObject> = Api::all(client.clone());
    api.list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .is_ok()
}

/// Runs the controller until the stream ends.
pub async fn run(ctx: Arc<HttpContext>) {
    if !served(&ctx.client).await {
        info!("HTTPScaledObjects are not served (their CRD is not installed): HTTP scaling is off until a restart");
        return;
    }
    let objects: Api<HttpScaledObject> = Api::all(ctx.client.clone());
    let sos: Api<ScaledObject> = Api::all(ctx.client.clone());
    // Reconcile on what the reconcile reads, never on status writes (ours, or the
    // activator's on the ScaledObjects).
    let (reader, writer) = reflector::store();
    let objects = reflector(writer, watcher(objects, watcher::Config::default()))
        .default_backoff()
        .applied_objects()
        .predicate_filter(relevant, PredicateConfig::default());
    let owned = watcher(sos, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .predicate_filter(relevant, PredicateConfig::default());
    Controller::for_stream(objects, reader)
        .owns_stream(owned)
        .reconcile_all_on(ctx.shard.changes())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// A hash of what the reconcile depends on: spec, annotations, labels, owners, deletion.
fn relevant<K: kube::Resource>(o: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let m = o.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.generation.hash(&mut h);
    m.annotations.hash(&mut h);
    m.labels.hash(&mut h);
    m.owner_references
        .as_ref()
        .map(|v| v.iter().map(|r| (&r.kind, &r.name)).collect::<Vec<_>>())
        .hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Brings one HTTPScaledObject's ScaledObject and status in line.
#[tracing::instrument(skip_all, fields(httpscaledobject = %format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())))]
pub async fn reconcile(o: Arc<HttpScaledObject>, ctx: Arc<HttpContext>) -> Result<Action, Error> {
    let ns = o.namespace().unwrap_or_default();
    let name = o.name_any();
    if !ctx
        .shard
        .owns(crate::membership::kinds::HTTP_SCALED_OBJECT, &ns, &name)
    {
        // Another replica's; every object is reconciled again when the group changes.
        return Ok(Action::await_change());
    }
    let sos: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = sos.get_opt(&name).await?;
    let decision = plan(&o, existing.as_ref(), &ctx.scaler_address);
    let done = match &decision.plan {
        HttpPlan::Apply(so) => sos
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(so.as_ref()),
            )
            .await
            .map(drop),
        HttpPlan::DeleteOwned => match sos.delete(&name, &DeleteParams::default()).await {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            r => r.map(drop),
        },
        HttpPlan::Nothing => Ok(()),
    };
    let status = match &done {
        Ok(()) => decision.status,
        Err(e) => failed(e),
    };
    write_status(&ctx, &o, status).await?;
    done?;
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &HttpContext,
    o: &HttpScaledObject,
    status: HttpScaledObjectStatus,
) -> Result<(), Error> {
    if o.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.is(ConditionType::Ready))
        .cloned();
    let api: Api<HttpScaledObject> =
        Api::namespaced(ctx.client.clone(), &o.namespace().unwrap_or_default());
    let patch = serde_json::json!({"status": status});
    api.patch_status(
        &o.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    if let Some(c) = ready {
        let was = o
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|x| x.is(ConditionType::Ready)));
        if was.map(|w| (&w.status, &w.reason)) != Some((&c.status, &c.reason)) {
            let failed = c.status == ConditionStatus::False.as_str();
            let (type_, reason) = if failed {
                (EventType::Warning, EventReason::HTTPScaledObjectCreateError)
            } else {
                (EventType::Normal, EventReason::HTTPScaledObjectReconciled)
            };
            events::publish(
                &ctx.recorder,
                o,
                type_,
                reason,
                c.message.unwrap_or_default(),
            )
            .await;
        }
    }
    Ok(())
}

/// Logs the failure and retries later.
pub fn error_policy(o: Arc<HttpScaledObject>, error: &Error, _: Arc<HttpContext>) -> Action {
    warn!(
        httpscaledobject = %format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
        error = %error,
        "reconcile failed; retrying in 15s"
    );
    Action::requeue(Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(annotations: serde_json::Value) -> HttpScaledObject {
        serde_json::from_value(json!({
            "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "annotations": annotations},
            "spec": {"hosts": ["h"], "scaleTargetRef": {"name": "web", "service": "web", "port": 80}}}))
        .expect("an HTTPScaledObject")
    }

    fn so(owner: Option<&str>) -> ScaledObject {
        let mut so = scaled_object_for(
            &object(json!({})),
            &object(json!({})).route().expect("valid"),
            "a:1",
        );
        so.metadata.owner_references = owner.map(|n| {
            vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    kind: "HTTPScaledObject".into(),
                    name: n.into(),
                    ..Default::default()
                },
            ]
        });
        so
    }

    fn reason(d: &Decision) -> (String, String) {
        let c = &d.status.conditions.as_ref().expect("conditions")[0];
        (c.status.clone(), c.reason.clone().unwrap_or_default())
    }

    #[test]
    fn the_decision_table() {
        let skip = json!({SKIP_SCALED_OBJECT_ANNOTATION: "true"});
        let ok = ("True".to_string(), RECONCILED.to_string());
        let err = ("False".to_string(), CREATE_ERROR.to_string());
        // (annotations, existing ScaledObject, plan, Ready's (status, reason))
        type Case = (
            serde_json::Value,
            Option<ScaledObject>,
            &'static str,
            (String, String),
        );
        let cases: Vec<Case> = vec![
            (json!({}), None, "apply", ok.clone()),
            (json!({}), Some(so(Some("web"))), "apply", ok.clone()),
            (json!({}), Some(so(None)), "nothing", err.clone()),
            (json!({}), Some(so(Some("other"))), "nothing", err),
            (skip.clone(), Some(so(Some("web"))), "delete", ok.clone()),
            (skip.clone(), Some(so(None)), "nothing", ok.clone()),
            (skip, None, "nothing", ok),
        ];
        for (annotations, existing, want, ready) in cases {
            let d = plan(&object(annotations.clone()), existing.as_ref(), "a:1");
            let got = match d.plan {
                HttpPlan::Apply(_) => "apply",
                HttpPlan::DeleteOwned => "delete",
                HttpPlan::Nothing => "nothing",
            };
            assert_eq!(
                (got, reason(&d)),
                (want, ready),
                "{annotations} {existing:?}"
            );
            assert_eq!(
                d.status.target_workload.as_deref(),
                Some("apps/v1/Deployment/web")
            );
            assert_eq!(d.status.target_service.as_deref(), Some("web:80"));
        }
    }

    /// A name the derived ScaledObject cannot have (its HPA's name, `keda-hpa-<name>`, over
    /// 63 characters) is refused on the HTTPScaledObject; routing alone (skip annotation)
    /// still works. Found by the http_scaled_object fuzz target.
    #[test]
    fn a_name_the_scaled_object_cannot_have_is_refused() {
        let mut o = object(json!({}));
        o.metadata.name = Some("n".repeat(60));
        let d = plan(&o, None, "a:1");
        assert!(matches!(d.plan, HttpPlan::Nothing));
        let c = &d.status.conditions.as_ref().expect("conditions")[0];
        assert_eq!(c.status, "False");
        let msg = c.message.as_deref().unwrap_or_default();
        assert!(
            msg.starts_with(
                "Failed to create scaled objects: the ScaledObject it derives is invalid: metadata.name: HPA name"
            ),
            "{msg}"
        );
        o.metadata.annotations =
            Some([(SKIP_SCALED_OBJECT_ANNOTATION.into(), "true".into())].into());
        assert_eq!(reason(&plan(&o, None, "a:1")).0, "True");
    }

    #[test]
    fn a_foreign_scaled_object_is_named_and_never_overwritten() {
        let d = plan(&object(json!({})), Some(&so(None)), "a:1");
        let msg = d.status.conditions.expect("conditions")[0]
            .message
            .clone()
            .expect("a message");
        assert!(
            msg.starts_with("Failed to create scaled objects: ScaledObject ns/web exists"),
            "{msg}"
        );
        assert!(msg.contains(SKIP_SCALED_OBJECT_ANNOTATION), "{msg}");
    }

    #[test]
    fn an_invalid_object_gets_create_error_naming_the_field() {
        let mut o = object(json!({}));
        o.spec.scale_target_ref.port = None;
        let d = plan(&o, None, "a:1");
        assert!(matches!(d.plan, HttpPlan::Nothing));
        let msg = d.status.conditions.expect("conditions")[0]
            .message
            .clone()
            .expect("a message");
        assert!(msg.contains("spec.scaleTargetRef.port"), "{msg}");
        assert_eq!(d.status.target_workload, None);
    }

    #[test]
    fn the_applied_scaled_object_points_at_the_interceptor() {
        let d = plan(
            &object(json!({})),
            None,
            "eventscale-interceptor.eventscale:9090",
        );
        let HttpPlan::Apply(so) = d.plan else {
            panic!("an apply")
        };
        assert_eq!(
            &so.spec.triggers[0].metadata["scalerAddress"],
            "eventscale-interceptor.eventscale:9090"
        );
        let body = serde_json::to_value(so.as_ref()).expect("JSON");
        assert_eq!(
            (body["apiVersion"].as_str(), body["kind"].as_str()),
            (Some("keda.sh/v1alpha1"), Some("ScaledObject"))
        );
    }
}
