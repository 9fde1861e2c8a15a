//! Test fixtures, in the manner of kube-rs `controller-rs`: ScaledObjects and HPAs as the
//! API server holds them, stores filled with them, and a scripted API server
//! (tower-test's mock service) that checks each request a reconcile sends, answers it, and
//! fails the test on any request the script did not foresee.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::Client;
use scaler_core::scaled_object::GroupVersionKindResource;
use scaler_core::ScaledObject;
use serde_json::{json, Value};

use crate::stores::Stores;
use crate::{Context, Reconciler};

/// The ScaledObject's namespace in every fixture.
pub const NS: &str = "ns";
/// The ScaledObject's uid.
pub const UID: &str = "uid-web";

/// A valid cron trigger (building it reads nothing from the cluster).
pub fn cron_trigger() -> Value {
    json!({"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "0 6 * * *",
                                        "end": "0 20 * * *", "desiredReplicas": "2"}})
}

/// ScaledObject `web` on Deployment `web`, stored (uid, creation time) and finalized;
/// `spec` and `annotations` are merged in.
pub fn scaled_object(spec: Value, annotations: Value) -> ScaledObject {
    let mut s = json!({"scaleTargetRef": {"name": "web"}, "triggers": [cron_trigger()]});
    if let (Some(o), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        o.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "web", "namespace": NS, "uid": UID,
                     "creationTimestamp": "2026-01-01T00:00:00Z",
                     "finalizers": [crate::FINALIZER], "annotations": annotations},
        "spec": s
    }))
    .expect("ScaledObject")
}

/// Another ScaledObject `name` in the namespace, created before `web`, on `target`.
pub fn other_scaled_object(name: &str, target: &str) -> ScaledObject {
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"scaleTargetRef": {"name": target}, "triggers": [cron_trigger()]}
    }))
    .expect("ScaledObject")
}

/// What discovery says of Deployments.
pub fn deployment() -> GroupVersionKindResource {
    GroupVersionKindResource {
        group: "apps".into(),
        version: "v1".into(),
        kind: "Deployment".into(),
        resource: "deployments".into(),
    }
}

/// The HPA resource eventscale writes in these tests.
pub fn hpa_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler");
    ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers")
}

/// HPA `name` on Deployment `target`, owned by the ScaledObject `owner` (name, uid) if any.
pub fn hpa(name: &str, target: &str, owner: Option<(&str, &str)>) -> DynamicObject {
    let owners: Vec<Value> = owner
        .map(|(n, uid)| {
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": n,
                   "uid": uid, "controller": true, "blockOwnerDeletion": true})
        })
        .into_iter()
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "resourceVersion": "1", "ownerReferences": owners},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "maxReplicas": 4, "metrics": []}
    }))
    .expect("HPA")
}

/// A writer whose store has listed `objects`.
fn filled<K>(dyntype: K::DynamicType, objects: Vec<K>) -> Writer<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut w = Writer::new(dyntype);
    w.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        w.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
    w
}

/// A watch of scale targets that saw every target at the same replicas (or none).
struct Watched(Option<i32>);

impl scaler_core::runtime::Versions for Watched {
    fn current(&self, _dep: &scaler_core::runtime::Dep) -> Option<scaler_core::runtime::Version> {
        None
    }

    fn replicas(&self, _gvk: &str, _namespace: &str, _name: &str) -> Option<i32> {
        self.0
    }
}

/// The mocked API server's side: the next requests, in order.
type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A reconciler over a mocked API server and stores the test fills.
pub struct Harness {
    /// The reconciler under test.
    pub reconciler: Arc<Reconciler>,
    sos: Writer<ScaledObject>,
    hpas: Writer<DynamicObject>,
    server: Handle,
}

impl Harness {
    /// Stores holding `sos` and `hpas`; Deployments already resolved, so no discovery.
    pub fn new(sos: Vec<ScaledObject>, hpas: Vec<DynamicObject>) -> Self {
        Self::watching(sos, hpas, None)
    }

    /// As [`Harness::new`], with a watch of Deployments that saw the target at `replicas`
    /// (`None`: no such watch, the target is read from `/scale`).
    pub fn watching(
        sos: Vec<ScaledObject>,
        hpas: Vec<DynamicObject>,
        replicas: Option<i32>,
    ) -> Self {
        let (service, server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NS);
        // Scalers built from no sources: the fixtures' ScaledObjects use no authentication.
        let runtimes = Arc::new(scaler_core::runtime::Runtimes::new(
            Arc::new(scaler_core::runtime::NoSourceFactory),
            Arc::new(Watched(replicas)),
            None,
            "eventscale".into(),
            Arc::new(scaler_core::runtime::Unobserved),
        ));
        let ctx = Context::with_hpa_resource(
            client,
            "eventscale".into(),
            hpa_resource(),
            runtimes,
            crate::membership::Shard::whole("test"),
        );
        ctx.target_kinds.insert(
            GroupVersionKind::gvk("apps", "v1", "Deployment"),
            ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        );
        let sos = filled((), sos);
        let hpas = filled(hpa_resource(), hpas);
        let reconciler = Arc::new(Reconciler {
            ctx,
            stores: Stores::new(sos.as_reader(), hpas.as_reader()),
        });
        Self {
            reconciler,
            sos,
            hpas,
            server,
        }
    }

    /// The HPA store sees `hpa` (as the watch would, slimmed).
    pub fn store_hpa(&mut self, mut hpa: DynamicObject) {
        crate::stores::slim_hpa(&mut hpa);
        self.hpas.apply_watcher_event(&watcher::Event::Apply(hpa));
    }

    /// The ScaledObject store sees `so`.
    pub fn store_so(&mut self, so: &ScaledObject) {
        self.sos
            .apply_watcher_event(&watcher::Event::Apply(so.clone()));
    }

    /// Reconcile `so` while the API server answers `script`, in order: the outcome and
    /// the requests seen. Fails on a request out of script, and on a script left unused.
    pub async fn reconcile(
        &mut self,
        so: &ScaledObject,
        script: Vec<Expect>,
    ) -> (
        Result<kube::runtime::controller::Action, crate::Error>,
        Vec<Seen>,
    ) {
        let reconciler = self.reconciler.clone();
        self.scripted(
            crate::reconcile(Arc::new(so.clone()), reconciler),
            script,
            "reconcile",
        )
        .await
    }

    /// Carry out one poll of `so` whose triggers are all `active`, as [`Harness::reconcile`]
    /// does a reconcile.
    pub async fn act(
        &mut self,
        so: &ScaledObject,
        active: bool,
        script: Vec<Expect>,
    ) -> (Result<(), crate::Error>, Vec<Seen>) {
        let activity = scaler_core::poll::Activity {
            active,
            error: false,
            per_metric: std::collections::BTreeMap::from([("s0-cron".to_string(), active)]),
            failure: None,
        };
        let reconciler = self.reconciler.clone();
        let poll = async move {
            crate::scale::act(
                &reconciler.ctx,
                so,
                &activity,
                &std::collections::BTreeMap::new(),
                &|| true,
            )
            .await
        };
        self.scripted(poll, script, "poll").await
    }

    async fn scripted<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
        script: Vec<Expect>,
        what: &str,
    ) -> (T, Vec<Seen>) {
        let mut seen = Vec::new();
        let expected: Vec<String> = script.iter().map(|e| e.to_string()).collect();
        let run = async { tokio::join!(work, serve(&mut self.server, script, &mut seen)).0 };
        let result = tokio::time::timeout(Duration::from_secs(5), run).await;
        let Ok(result) = result else {
            panic!("the {what} hung or left the script unused: expected {expected:?}");
        };
        // Anything the reconcile sent is answered by now, or it would not have returned.
        assert!(
            futures::FutureExt::now_or_never(self.server.next_request()).is_none(),
            "a request out of script"
        );
        (result, seen)
    }
}

/// A request the script expects, and how it is answered.
pub struct Expect {
    method: Method,
    /// The path; with a trailing `*`, its beginning.
    path: String,
    answer: fn(&Value) -> (StatusCode, Value),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

impl Expect {
    fn matches(&self, method: &Method, path: &str) -> bool {
        let path_ok = match self.path.strip_suffix('*') {
            Some(start) => path.starts_with(start),
            None => path == self.path,
        };
        method == self.method && path_ok
    }
}

/// A request the API server saw (its method and path are the script's).
#[derive(Debug, Clone)]
pub struct Seen {
    /// Query string.
    pub query: String,
    /// The body, as JSON (`Null` when empty).
    pub body: Value,
}

const SO_PATH: &str = "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/web";
const SCALE_PATH: &str = "/apis/apps/v1/namespaces/ns/deployments/web/scale";

fn hpa_path(name: &str) -> String {
    format!("/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/{name}")
}

/// A metav1.Status failure answer.
fn failure(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "code": code.as_u16(), "message": message}),
    )
}

/// The resourceVersion of every `/scale` the fixtures answer.
pub const SCALE_VERSION: &str = "7";

fn scale(replicas: i32) -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
           "metadata": {"name": "web", "namespace": NS, "resourceVersion": SCALE_VERSION},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
}

/// The HPA the API server holds after applying `body`: uid, resourceVersion and a status
/// added.
pub fn applied(body: &Value) -> Value {
    let mut hpa = body.clone();
    let name = hpa["metadata"]["name"].as_str().unwrap_or("").to_string();
    hpa["metadata"]["uid"] = format!("uid-{name}").into();
    hpa["metadata"]["resourceVersion"] = "2".into();
    hpa["status"] = json!({"currentReplicas": 2, "desiredReplicas": 2});
    hpa
}

/// `target` with the JSON merge patch (RFC 7386) `patch` applied, as the API server does.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The ScaledObject after a patch: the tests read nothing from this answer.
fn some_scaled_object(_: &Value) -> (StatusCode, Value) {
    let so = scaled_object(json!({}), json!({}));
    (StatusCode::OK, serde_json::to_value(so).unwrap_or_default())
}

impl Expect {
    /// The finalizer added (or removed) by kube's finalizer helper: a JSON patch.
    pub fn patch_finalizers() -> Self {
        Self {
            method: Method::PATCH,
            path: SO_PATH.into(),
            answer: some_scaled_object,
        }
    }

    /// The status written (a merge patch).
    pub fn patch_status() -> Self {
        Self {
            method: Method::PATCH,
            path: format!("{SO_PATH}/status"),
            answer: some_scaled_object,
        }
    }

    /// A request to the target's `/scale`, answered by `answer`.
    fn on_scale(method: Method, answer: fn(&Value) -> (StatusCode, Value)) -> Self {
        Self {
            method,
            path: SCALE_PATH.into(),
            answer,
        }
    }

    /// The target's `/scale` read: 2 replicas.
    pub fn get_scale_2() -> Self {
        Self::on_scale(Method::GET, |_| (StatusCode::OK, scale(2)))
    }

    /// The target's `/scale` read: 0 replicas.
    pub fn get_scale_0() -> Self {
        Self::on_scale(Method::GET, |_| (StatusCode::OK, scale(0)))
    }

    /// The target's `/scale` read: 3 replicas (the HPA's doing).
    pub fn get_scale_3() -> Self {
        Self::on_scale(Method::GET, |_| (StatusCode::OK, scale(3)))
    }

    /// The target's `/scale` written with a resourceVersion that is no longer current.
    pub fn patch_scale_conflict() -> Self {
        Self::on_scale(Method::PATCH, |_| {
            failure(
                StatusCode::CONFLICT,
                "Conflict",
                "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again",
            )
        })
    }

    /// The target's `/scale` read: no such Deployment.
    pub fn get_scale_not_found() -> Self {
        Self::on_scale(Method::GET, |_| {
            failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                "deployments.apps \"web\" not found",
            )
        })
    }

    /// The target's `/scale` written.
    pub fn patch_scale() -> Self {
        Self::on_scale(Method::PATCH, |body| {
            let n = body["spec"]["replicas"].as_i64().unwrap_or(0);
            (StatusCode::OK, scale(n as i32))
        })
    }

    /// HPA `name` applied: answered with what was sent, stored.
    pub fn apply_hpa(name: &str) -> Self {
        Self {
            method: Method::PATCH,
            path: hpa_path(name),
            answer: |body| (StatusCode::OK, applied(body)),
        }
    }

    /// HPA `name` deleted.
    pub fn delete_hpa(name: &str) -> Self {
        Self {
            method: Method::DELETE,
            path: hpa_path(name),
            answer: |_| {
                (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            },
        }
    }

    /// An Event created.
    pub fn event() -> Self {
        Self {
            method: Method::POST,
            path: "/apis/events.k8s.io/v1/namespaces/ns/events".into(),
            answer: |body| (StatusCode::OK, body.clone()),
        }
    }

    /// An Event published again within kube's Recorder's cache time: its series patched.
    pub fn event_again() -> Self {
        Self {
            method: Method::PATCH,
            path: "/apis/events.k8s.io/v1/namespaces/ns/events/*".into(),
            answer: |body| (StatusCode::OK, body.clone()),
        }
    }
}

/// Answer `script` in order, recording what was asked into `seen`.
async fn serve(server: &mut Handle, script: Vec<Expect>, seen: &mut Vec<Seen>) {
    for expect in script {
        let Some((request, respond)) = server.next_request().await else {
            panic!("the client went away before {expect}");
        };
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        assert!(
            expect.matches(&parts.method, &path),
            "expected {expect}; the request was {} {path}?{query} {body}",
            parts.method
        );
        let (status, answer) = (expect.answer)(&body);
        seen.push(Seen { query, body });
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
            .expect("a response");
        respond.send_response(response);
    }
}
