//! The routes of the external metrics API.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::auth::{self, Auth};
use crate::provider::{ExternalMetricValue, MetricsProvider};
use crate::request::{MetricRequest, METRICS_PREFIX};
use crate::status::ApiError;
use crate::telemetry::Telemetry;
use crate::trace;

use crate::api::GROUP_VERSION;
pub use crate::api::{GROUP, VERSION};

/// Shared state of the handlers.
pub type SharedProvider = Arc<dyn MetricsProvider>;

/// The whole application: the routes behind authentication and authorization, every
/// request counted by `telemetry` (outermost, so 401s and 403s are counted too).
pub fn app(provider: SharedProvider, auth: Arc<Auth>, telemetry: Arc<Telemetry>) -> Router {
    router(provider)
        .layer(axum::middleware::from_fn_with_state(auth, auth::layer))
        .layer(axum::middleware::from_fn_with_state(
            telemetry,
            crate::telemetry::track,
        ))
}

/// The routes over `provider`, without authentication (see [`app`]).
pub fn router(provider: SharedProvider) -> Router {
    Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(readyz))
        .route("/apis", get(api_group_list))
        .route("/apis/external.metrics.k8s.io", get(api_group))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(api_resource_list),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
            get(external_metric),
        )
        .route("/apis/explain.eventscale.sh", get(trace_api_group))
        .route(
            "/apis/explain.eventscale.sh/v1alpha1",
            get(trace_resource_list),
        )
        .route(
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/{namespace}/{resource}/{name}/trace",
            get(trace),
        )
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3))
        .route(
            "/openapi/v3/apis/external.metrics.k8s.io/v1beta1",
            get(openapi_v3_group_version),
        )
        .route(
            "/openapi/v3/apis/explain.eventscale.sh/v1alpha1",
            get(openapi_v3_group_version),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(provider)
}

async fn ok() -> &'static str {
    "ok"
}

async fn readyz(State(p): State<SharedProvider>) -> Result<&'static str, ApiError> {
    if p.ready() {
        Ok("ok")
    } else {
        Err(ApiError::unavailable(
            "the ScaledObject cache has not synced yet",
        ))
    }
}

fn group_json() -> Value {
    let gv = json!({"groupVersion": GROUP_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [gv], "preferredVersion": gv})
}

fn trace_group_json() -> Value {
    let gv = json!({"groupVersion": trace::GROUP_VERSION, "version": trace::VERSION});
    json!({"name": trace::GROUP, "versions": [gv], "preferredVersion": gv})
}

async fn api_group_list() -> Json<Value> {
    Json(json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group_json(), trace_group_json()],
    }))
}

async fn trace_api_group() -> Json<Value> {
    let mut g = trace_group_json();
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Json(g)
}

/// Only the `trace` subresources: a `scaledobjects` resource of this group would stand
/// beside keda.sh's in kubectl's resource names; subresources are not in them.
async fn trace_resource_list() -> Json<Value> {
    let resources: Vec<Value> = trace::TraceKind::ALL
        .iter()
        .map(|k| {
            json!({
                "name": format!("{}/trace", k.resource()),
                "singularName": "",
                "namespaced": true,
                "kind": trace::KIND,
                "verbs": ["get"],
            })
        })
        .collect();
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": trace::GROUP_VERSION,
        "resources": resources,
    }))
}

/// A trace: from the owner replica when another one owns the object.
async fn trace(
    State(p): State<SharedProvider>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Result<Json<trace::ScalingTrace>, ApiError> {
    let (kind, namespace, name) = trace::parse_path(uri.path()).ok_or_else(|| {
        ApiError::not_found(format!(
            "the server could not find the requested resource: {}",
            uri.path()
        ))
    })?;
    let t = p
        .trace(kind, &namespace, &name, forwarded(&headers))
        .instrument(tracing::debug_span!("trace", %namespace, %name, kind = kind.kind()))
        .await?;
    Ok(Json(t))
}

async fn api_group() -> Json<Value> {
    let mut g = group_json();
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Json(g)
}

/// One fixed placeholder resource: a per-metric list over thousands of ScaledObjects is
/// what timed out discovery elsewhere, and an empty list makes kubectl warn.
async fn api_resource_list() -> Json<Value> {
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [{
            "name": "externalmetrics",
            "singularName": "",
            "namespaced": true,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"],
        }],
    }))
}

/// A minimal valid Swagger 2.0 document: the aggregator fetches it every minute and older
/// apiservers log a warning on each 404.
async fn openapi_v2() -> Json<Value> {
    Json(json!({
        "swagger": "2.0",
        "info": {"title": "eventscale external metrics", "version": VERSION},
        "paths": {},
    }))
}

/// The OpenAPI v3 discovery document: one group-version.
async fn openapi_v3() -> Json<Value> {
    Json(json!({"paths": {
        "apis/external.metrics.k8s.io/v1beta1": {
            "serverRelativeURL": "/openapi/v3/apis/external.metrics.k8s.io/v1beta1",
        },
        "apis/explain.eventscale.sh/v1alpha1": {
            "serverRelativeURL": "/openapi/v3/apis/explain.eventscale.sh/v1alpha1",
        },
    }}))
}

async fn openapi_v3_group_version() -> Json<Value> {
    Json(json!({
        "openapi": "3.0.0",
        "info": {"title": "eventscale external metrics", "version": VERSION},
        "paths": {},
        "components": {},
    }))
}

async fn external_metric(
    State(p): State<SharedProvider>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let body = metric_value_list(p.as_ref(), uri.path(), uri.query(), forwarded(&headers)).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

/// Whether another replica forwarded the request (it is answered here, not forwarded on).
fn forwarded(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(crate::forward::FORWARDED_HEADER)
}

/// The `ExternalMetricValueList` answering a read of `path` and `query`, serialized;
/// `forwarded`: another replica sent it.
pub async fn metric_value_list(
    p: &dyn MetricsProvider,
    path: &str,
    query: Option<&str>,
    forwarded: bool,
) -> Result<Bytes, ApiError> {
    let MetricRequest {
        namespace,
        metric,
        selector,
    } = MetricRequest::parse(path, query)?;
    // A debug span: at the default level it costs nothing, and what the read logs names
    // the ScaledObject and metric itself.
    let items = p
        .external_metric(&namespace, &metric, &selector, forwarded)
        .instrument(tracing::debug_span!("external_metric", %namespace, %metric))
        .await?;
    Ok(write_list(&items))
}

/// Serialize a list straight into one buffer (no intermediate JSON tree): this is the
/// answer to every HPA read.
fn write_list(items: &[ExternalMetricValue]) -> Bytes {
    const HEAD: &str = concat!(
        r#"{"kind":"ExternalMetricValueList","apiVersion":"#,
        r#""external.metrics.k8s.io/v1beta1","metadata":{},"items":"#
    );
    let mut out = Vec::with_capacity(HEAD.len() + 2 + items.len() * 160);
    out.extend_from_slice(HEAD.as_bytes());
    // Serializing plain strings and maps into a Vec cannot fail.
    if serde_json::to_writer(&mut out, items).is_err() {
        out.truncate(HEAD.len());
        out.extend_from_slice(b"[]");
    }
    out.push(b'}');
    Bytes::from(out)
}

/// Metric reads answered without the router: the request path of every HPA sync, kept
/// short. Authentication, authorization and request metrics are the router's own
/// ([`auth::check`], [`Telemetry::observe`]), so both paths answer alike.
pub struct MetricReads {
    provider: SharedProvider,
    auth: Arc<Auth>,
    telemetry: Arc<Telemetry>,
}

impl MetricReads {
    /// Reads answered from `provider`, checked by `auth`, counted in `telemetry`.
    pub fn new(provider: SharedProvider, auth: Arc<Auth>, telemetry: Arc<Telemetry>) -> Self {
        Self {
            provider,
            auth,
            telemetry,
        }
    }

    /// Whether a request is a metric read this path answers: a GET of
    /// `.../namespaces/{namespace}/{metric}`.
    pub fn handles(method: &axum::http::Method, path: &str) -> bool {
        method == axum::http::Method::GET
            && path
                .strip_prefix(METRICS_PREFIX)
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(ns, m)| !ns.is_empty() && !m.is_empty() && !m.contains('/'))
    }

    /// Answer one read.
    pub async fn answer(
        &self,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
        peer: Option<&crate::auth::authn::PeerCerts>,
    ) -> axum::response::Response {
        let _in_flight = self.telemetry.in_flight();
        let started = std::time::Instant::now();
        let result = async {
            auth::check(&self.auth, uri.path(), headers, peer).await?;
            metric_value_list(
                self.provider.as_ref(),
                uri.path(),
                uri.query(),
                forwarded(headers),
            )
            .await
        }
        .await;
        let resp = match result {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => e.into_response(),
        };
        self.telemetry.observe(
            crate::telemetry::Route::Metric,
            resp.status().as_u16(),
            started.elapsed(),
        );
        resp
    }
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError {
        code: StatusCode::METHOD_NOT_ALLOWED,
        reason: "MethodNotAllowed",
        message: format!(
            "the server does not allow this method on the requested resource: {method}"
        ),
    }
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    let e = ApiError::not_found(format!(
        "the server could not find the requested resource {}",
        uri.path()
    ));
    (StatusCode::NOT_FOUND, Json(e.body()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use scaler_core::label_selector::Selector;
    use tower::ServiceExt;

    /// Answers one metric of ScaledObject `so` in `ns`; 404 for everything else.
    struct Fake;

    #[async_trait::async_trait]
    impl MetricsProvider for Fake {
        async fn external_metric(
            &self,
            namespace: &str,
            metric: &str,
            selector: &Selector,
            _forwarded: bool,
        ) -> Result<Vec<ExternalMetricValue>, ApiError> {
            match (
                namespace,
                metric,
                selector.exact_value("scaledobject.keda.sh/name"),
            ) {
                ("ns", "s0-m", Some("so")) => Ok(vec![ExternalMetricValue {
                    metric_name: "s0-m".into(),
                    metric_labels: Default::default(),
                    timestamp: "2026-11-22T00:00:00Z".into(),
                    value: "2500m".into(),
                }]),
                _ => Err(ApiError::not_found("nope")),
            }
        }

        fn ready(&self) -> bool {
            false
        }

        async fn trace(
            &self,
            kind: trace::TraceKind,
            namespace: &str,
            name: &str,
            forwarded: bool,
        ) -> Result<trace::ScalingTrace, ApiError> {
            match (kind, namespace, name) {
                (trace::TraceKind::ScaledObject, "ns", "so") => Ok(trace::ScalingTrace {
                    kind: trace::KIND.into(),
                    api_version: trace::GROUP_VERSION.into(),
                    summary: trace::Summary {
                        cause: if forwarded { "Forwarded" } else { "Active" }.into(),
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                _ => Err(ApiError::not_found(format!(
                    "scaledobjects.keda.sh \"{name}\" not found"
                ))),
            }
        }
    }

    async fn get(path: &str) -> (StatusCode, Value) {
        call(router(Arc::new(Fake)), "GET", path).await
    }

    async fn call(app: Router, method: &str, path: &str) -> (StatusCode, Value) {
        let resp = app
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn serves_values_and_status_errors() {
        let (code, body) = get("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/s0-m?labelSelector=scaledobject.keda.sh%2Fname%3Dso").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["kind"], "ExternalMetricValueList");
        assert_eq!(body["items"][0]["value"], "2500m");

        let (code, body) = get(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/s0-m?labelSelector=a%20in%20(",
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            (
                body["kind"].as_str(),
                body["reason"].as_str(),
                body["code"].as_u64()
            ),
            (Some("Status"), Some("BadRequest"), Some(400))
        );

        let (code, body) = get("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/other?labelSelector=scaledobject.keda.sh%2Fname%3Dso").await;
        assert_eq!(
            (code, body["reason"].as_str()),
            (StatusCode::NOT_FOUND, Some("NotFound"))
        );

        let (code, body) = get("/no/such/path").await;
        assert_eq!(
            (code, body["kind"].as_str()),
            (StatusCode::NOT_FOUND, Some("Status"))
        );

        let (code, body) = get("/readyz").await;
        assert_eq!(
            (code, body["reason"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("ServiceUnavailable"))
        );
    }

    #[tokio::test]
    async fn discovery_documents() {
        let (code, body) = get("/apis/external.metrics.k8s.io/v1beta1").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["resources"].as_array().map(Vec::len), Some(1));
        let (_, body) = get("/apis").await;
        assert_eq!(body["groups"][0]["name"], GROUP);
        let (_, body) = get("/apis/external.metrics.k8s.io").await;
        assert_eq!(body["preferredVersion"]["groupVersion"], GROUP_VERSION);
    }

    #[tokio::test]
    async fn traces_are_served_under_their_own_group() {
        let (_, body) = get("/apis").await;
        assert_eq!(body["groups"][1]["name"], trace::GROUP);
        let (_, body) = get("/apis/explain.eventscale.sh").await;
        assert_eq!(
            body["preferredVersion"]["groupVersion"],
            trace::GROUP_VERSION
        );
        let (code, body) = get("/apis/explain.eventscale.sh/v1alpha1").await;
        assert_eq!(code, StatusCode::OK);
        let names: Vec<&str> = body["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        // Subresources only: nothing of this group stands beside keda.sh's resources.
        assert_eq!(
            names,
            [
                "scaledobjects/trace",
                "scaledjobs/trace",
                "httpscaledobjects/trace"
            ]
        );
        let (code, body) =
            get("/apis/explain.eventscale.sh/v1alpha1/namespaces/ns/scaledobjects/so/trace").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["kind"], "ScalingTrace");
        assert_eq!(body["summary"]["cause"], "Active");
        let (code, body) =
            get("/apis/explain.eventscale.sh/v1alpha1/namespaces/ns/scaledobjects/gone/trace")
                .await;
        assert_eq!(
            (code, &body["reason"]),
            (StatusCode::NOT_FOUND, &json!("NotFound"))
        );
        let (code, _) =
            get("/apis/explain.eventscale.sh/v1alpha1/namespaces/ns/pods/so/trace").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (_, body) = get("/openapi/v3").await;
        assert!(body["paths"]["apis/explain.eventscale.sh/v1alpha1"].is_object());
    }

    /// A trace is refused to whoever may not `get` the object, in kube-apiserver's words
    /// for a `get` of it, and counted on its own route.
    #[tokio::test]
    async fn a_trace_needs_get_on_the_object() {
        use crate::auth::authn::ConfigHolder;
        use crate::auth::config::AuthnConfig;
        let holder = Arc::new(ConfigHolder::default());
        holder.set(AuthnConfig::default());
        let reviews = Arc::new(crate::auth::tests::FakeReviews::default());
        let telemetry = Telemetry::new();
        let auth = Arc::new(Auth::new(holder, reviews, true, telemetry.clone()));
        let (code, body) = call(
            app(Arc::new(Fake), auth, telemetry.clone()),
            "GET",
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/ns/scaledobjects/so/trace",
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            body["message"],
            "scaledobjects.keda.sh \"so\" is forbidden: User \"system:anonymous\" cannot get resource \"scaledobjects\" in API group \"keda.sh\" in the namespace \"ns\": no RBAC"
        );
        let text = telemetry.encode();
        assert_eq!(
            crate::telemetry::tests::sample(
                &text,
                "eventscale_apiserver_requests_total{route=\"Trace\",code=\"403\"}"
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[tokio::test]
    async fn openapi_and_method_errors_are_json() {
        let (code, body) = get("/openapi/v2").await;
        assert_eq!(
            (code, body["swagger"].as_str()),
            (StatusCode::OK, Some("2.0"))
        );
        let (_, body) = get("/openapi/v3").await;
        let url = body["paths"]["apis/external.metrics.k8s.io/v1beta1"]["serverRelativeURL"]
            .as_str()
            .expect("v3 discovery names the group-version")
            .to_string();
        let (code, body) = get(&url).await;
        assert_eq!(
            (code, body["openapi"].as_str()),
            (StatusCode::OK, Some("3.0.0"))
        );

        let app = router(Arc::new(Fake));
        let (code, body) = call(app, "POST", "/apis/external.metrics.k8s.io/v1beta1").await;
        assert_eq!(
            (code, body["kind"].as_str(), body["reason"].as_str()),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Some("Status"),
                Some("MethodNotAllowed")
            )
        );
        let (code, body) = get("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/%2E%2E").await;
        assert_eq!(
            (code, body["reason"].as_str()),
            (StatusCode::BAD_REQUEST, Some("BadRequest"))
        );
    }

    #[test]
    fn the_direct_path_takes_metric_gets_only() {
        use axum::http::Method;
        let p = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/s0-m";
        assert!(MetricReads::handles(&Method::GET, p));
        assert!(!MetricReads::handles(&Method::POST, p));
        for other in [
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/s0-m/",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces//s0-m",
            "/apis/external.metrics.k8s.io/v1beta1",
            "/livez",
        ] {
            assert!(!MetricReads::handles(&Method::GET, other), "{other}");
        }
    }

    /// The direct path and the router answer a read alike: refused without rights,
    /// counted, and the same list when allowed.
    #[tokio::test]
    async fn the_direct_path_answers_as_the_router_does() {
        use crate::auth::authn::ConfigHolder;
        use crate::auth::config::AuthnConfig;
        let holder = Arc::new(ConfigHolder::default());
        holder.set(AuthnConfig::default());
        let reviews = Arc::new(crate::auth::tests::FakeReviews::default());
        let telemetry = Telemetry::new();
        let auth = Arc::new(Auth::new(holder, reviews, true, telemetry.clone()));
        let reads = MetricReads::new(Arc::new(Fake), auth.clone(), telemetry.clone());
        let uri: axum::http::Uri = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/s0-m?labelSelector=scaledobject.keda.sh%2Fname%3Dso"
            .parse()
            .expect("uri");
        let direct = reads.answer(&uri, &Default::default(), None).await;
        let (code, body) = (
            direct.status(),
            serde_json::from_slice::<Value>(
                &to_bytes(direct.into_body(), 1 << 20).await.expect("body"),
            )
            .unwrap_or(Value::Null),
        );
        let (rcode, rbody) = call(
            app(Arc::new(Fake), auth, telemetry.clone()),
            "GET",
            &uri.to_string(),
        )
        .await;
        assert_eq!((code, &body), (rcode, &rbody));
        assert_eq!(code, StatusCode::FORBIDDEN);
        let text = telemetry.encode();
        assert_eq!(
            crate::telemetry::tests::sample(
                &text,
                "eventscale_apiserver_requests_total{route=\"Metric\",code=\"403\"}"
            ),
            Some(2.0),
            "{text}"
        );
        // Allowed: the same ExternalMetricValueList the router's handler writes.
        let list = write_list(
            &Fake
                .external_metric(
                    "ns",
                    "s0-m",
                    &"scaledobject.keda.sh/name=so".parse().expect("selector"),
                    false,
                )
                .await
                .expect("value"),
        );
        let v: Value = serde_json::from_slice(&list).expect("json");
        assert_eq!(
            v,
            json!({"kind": "ExternalMetricValueList", "apiVersion": GROUP_VERSION, "metadata": {},
                   "items": [{"metricName": "s0-m", "metricLabels": {},
                              "timestamp": "2026-11-22T00:00:00Z", "value": "2500m"}]})
        );
    }

    #[tokio::test]
    async fn the_app_authorizes_before_answering() {
        use crate::auth::authn::ConfigHolder;
        use crate::auth::config::AuthnConfig;
        let holder = Arc::new(ConfigHolder::default());
        holder.set(AuthnConfig::default());
        let reviews = Arc::new(crate::auth::tests::FakeReviews::default());
        let telemetry = Telemetry::new();
        let auth = Arc::new(Auth::new(holder, reviews, true, telemetry.clone()));
        let app = app(Arc::new(Fake), auth, telemetry.clone());
        let (code, body) = call(
            app.clone(),
            "GET",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/s0-m?labelSelector=scaledobject.keda.sh%2Fname%3Dso",
        )
        .await;
        assert_eq!(
            (code, body["reason"].as_str()),
            (StatusCode::FORBIDDEN, Some("Forbidden")),
            "{body}"
        );
        assert!(
            body["message"].as_str().is_some_and(
                |m| m.contains("User \"system:anonymous\" cannot list resource \"s0-m\"")
            )
        );
        let (code, _) = call(app, "GET", "/livez").await;
        assert_eq!(code, StatusCode::OK, "health needs no credentials");
        let text = telemetry.encode();
        let count = |series: &str| crate::telemetry::tests::sample(&text, series);
        assert_eq!(
            count("eventscale_apiserver_requests_total{route=\"Metric\",code=\"403\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            count("eventscale_authentication_total{method=\"Anonymous\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            count("eventscale_authorization_total{result=\"Denied\"}"),
            Some(1.0),
            "{text}"
        );
    }
}
