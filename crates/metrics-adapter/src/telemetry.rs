//! eventscale's own metrics, served as Prometheus text on a separate plain-HTTP port.
//!
//! Labels are bounded enums and trigger types, never paths or metric names, so the series
//! count stays fixed however many ScaledObjects there are.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tracing::info;

/// What kind of request, for the `route` label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Route {
    /// `/apis`, the group and the group-version lists.
    Discovery,
    /// A metric value read.
    Metric,
    /// A scaling trace.
    Trace,
    /// `/openapi/...`.
    Openapi,
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// Anything else.
    Other,
}

/// How a caller was authenticated.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum AuthnMethod {
    /// Front-proxy request headers.
    Requestheader,
    /// Client certificate from client-ca-file.
    ClientCert,
    /// Bearer token through TokenReview.
    Token,
    /// No credentials.
    Anonymous,
    /// Credentials that failed (401).
    Failed,
}

/// The route of a request path.
pub fn route_of(path: &str) -> Route {
    const GV: &str = "/apis/external.metrics.k8s.io/v1beta1";
    if let Some(rest) = path.strip_prefix(GV) {
        return match rest {
            "" | "/" => Route::Discovery,
            r if r.starts_with("/namespaces/") && r.matches('/').count() == 3 => Route::Metric,
            _ => Route::Other,
        };
    }
    if crate::trace::parse_path(path).is_some() {
        return Route::Trace;
    }
    if let Some(rest) = path.strip_prefix("/apis/explain.eventscale.sh") {
        if matches!(rest, "" | "/" | "/v1alpha1" | "/v1alpha1/") {
            return Route::Discovery;
        }
    }
    match path {
        "/apis" | "/apis/" | "/apis/external.metrics.k8s.io" | "/apis/external.metrics.k8s.io/" => {
            Route::Discovery
        }
        p if p == "/openapi" || p.starts_with("/openapi/") => Route::Openapi,
        p if crate::api::is_health(p) => Route::Health,
        _ => Route::Other,
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: AuthnMethod,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Outcome {
    Hit,
    Miss,
    Allowed,
    Denied,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScalerLabels {
    scaler: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The registry and every metric in it.
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<RouteLabels>,
    in_flight: Gauge,
    authn: Family<MethodLabels, Counter>,
    token_cache: Family<ResultLabels, Counter>,
    authz: Family<ResultLabels, Counter>,
    authz_cache: Family<ResultLabels, Counter>,
    scaler_latency: Histograms<ScalerLabels>,
    scaler_errors: Family<ScalerLabels, Counter>,
    metric_cache: Family<ResultLabels, Counter>,
    forwarded: Family<ForwardLabels, Counter>,
    connections: Gauge,
    connections_closed: Family<ClosedLabels, Counter>,
    job_create_latency: Histogram,
    jobs_created: Counter,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

fn hit(hit: bool) -> ResultLabels {
    ResultLabels {
        result: if hit { Outcome::Hit } else { Outcome::Miss },
    }
}

impl Telemetry {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("eventscale");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_requests",
            "Requests to the external metrics API server by route and HTTP code",
            requests.clone(),
        );
        let latency: Histograms<RouteLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to answer a request, authentication and authorization included",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "apiserver_requests_in_flight",
            "Requests being answered",
            in_flight.clone(),
        );
        let authn = Family::<MethodLabels, Counter>::default();
        registry.register(
            "authentication",
            "Requests by how the caller was authenticated",
            authn.clone(),
        );
        let token_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "authentication_token_cache",
            "TokenReview cache lookups (hit or miss)",
            token_cache.clone(),
        );
        let authz = Family::<ResultLabels, Counter>::default();
        registry.register(
            "authorization",
            "Authorization decisions (allowed or denied)",
            authz.clone(),
        );
        let authz_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "authorization_cache",
            "SubjectAccessReview cache lookups (hit or miss)",
            authz_cache.clone(),
        );
        let scaler_latency: Histograms<ScalerLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "scaler_query_duration_seconds",
            "Time to query an event source, by trigger type",
            scaler_latency.clone(),
        );
        let scaler_errors = Family::<ScalerLabels, Counter>::default();
        registry.register(
            "scaler_query_errors",
            "Failed event source queries, by trigger type",
            scaler_errors.clone(),
        );
        let metric_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "metric_cache",
            "Metric reads answered from the polling cache (hit) or queried live (miss)",
            metric_cache.clone(),
        );
        let forwarded = Family::<ForwardLabels, Counter>::default();
        registry.register(
            "metric_reads_forwarded",
            "Cached metric reads forwarded to the replica that owns the ScaledObject, by result (ok, failed: answered here instead)",
            forwarded.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "apiserver_connections",
            "Connections open on the API port",
            connections.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "apiserver_connections_closed",
            "Connections the API port closed itself, by reason (idle: no request in time; evicted: to make room for a new one; refused: every connection was answering a request)",
            connections_closed.clone(),
        );
        let job_create_latency = latency_histogram();
        registry.register(
            "scaledjob_decision_to_created_seconds",
            "Time from a ScaledJob poll's decision to the last of its Jobs created",
            job_create_latency.clone(),
        );
        let jobs_created = Counter::default();
        registry.register(
            "scaledjob_jobs_created",
            "Jobs created for ScaledJobs",
            jobs_created.clone(),
        );
        registry.register(
            "build",
            "eventscale's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
            in_flight,
            authn,
            token_cache,
            authz,
            authz_cache,
            scaler_latency,
            scaler_errors,
            metric_cache,
            forwarded,
            connections,
            connections_closed,
            job_create_latency,
            jobs_created,
        })
    }

    /// Count an authentication outcome.
    pub fn authn(&self, method: AuthnMethod) {
        self.authn.get_or_create(&MethodLabels { method }).inc();
    }

    /// Count a TokenReview cache lookup.
    pub fn token_cache(&self, is_hit: bool) {
        self.token_cache.get_or_create(&hit(is_hit)).inc();
    }

    /// Count an authorization decision.
    pub fn authz(&self, allowed: bool) {
        let result = if allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        };
        self.authz.get_or_create(&ResultLabels { result }).inc();
    }

    /// Count a SubjectAccessReview cache lookup.
    pub fn authz_cache(&self, is_hit: bool) {
        self.authz_cache.get_or_create(&hit(is_hit)).inc();
    }

    /// Record one event-source query.
    pub fn scaler_query(&self, scaler: &'static str, elapsed: Duration, ok: bool) {
        let labels = ScalerLabels { scaler };
        self.scaler_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.scaler_errors.get_or_create(&labels).inc();
        }
    }

    /// Count a metric read answered from the cache or not.
    pub fn metric_cache(&self, is_hit: bool) {
        self.metric_cache.get_or_create(&hit(is_hit)).inc();
    }

    /// Count a read forwarded to the owner of its ScaledObject.
    pub fn forwarded(&self, ok: bool) {
        self.forwarded
            .get_or_create(&ForwardLabels {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// Count a connection as open until the guard is dropped.
    pub fn connection_open(&self) -> InFlight {
        self.connections.inc();
        InFlight(self.connections.clone())
    }

    /// Count a connection the API port closed itself.
    pub fn connection_closed(&self, why: crate::connections::Closed) {
        self.connections_closed
            .get_or_create(&ClosedLabels {
                reason: why.label(),
            })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Serve `GET /metrics` on `listener` (plain HTTP) until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        info!(addr = %listener.local_addr()?, "serving eventscale's own metrics on /metrics");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found; try /metrics\n") })
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.encode(),
    )
        .into_response()
}

/// Decrements its gauge (requests in flight, connections open) however the request or
/// connection ends (a client going away drops the future mid-way).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Telemetry {
    /// Count a request as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Record an answered request.
    pub fn observe(&self, route: Route, code: u16, elapsed: Duration) {
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels { route, code })
            .inc();
    }
}

/// The middleware counting requests: use with
/// `axum::middleware::from_fn_with_state(telemetry, telemetry::track)` as the outermost
/// layer, so responses made by inner layers (401, 403) are counted too.
pub async fn track(State(t): State<Arc<Telemetry>>, req: Request, next: Next) -> Response {
    let route = route_of(req.uri().path());
    let _guard = t.in_flight();
    let start = Instant::now();
    let resp = next.run(req).await;
    t.observe(route, resp.status().as_u16(), start.elapsed());
    resp
}

impl activator::jobs::JobsObserver for Telemetry {
    fn jobs_created(&self, created: u64, decision_to_created: Duration) {
        self.jobs_created.inc_by(created);
        self.job_create_latency
            .observe(decision_to_created.as_secs_f64());
    }
}

impl scaler_core::runtime::Observer for Telemetry {
    fn scaler_query(&self, scaler_type: &'static str, elapsed: Duration, ok: bool) {
        Telemetry::scaler_query(self, scaler_type, elapsed, ok);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    /// The value of the sample line `name{labels}` in `text`, if present.
    pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn routes_are_bounded() {
        let cases = [
            ("/apis", Route::Discovery),
            ("/apis/external.metrics.k8s.io", Route::Discovery),
            ("/apis/external.metrics.k8s.io/v1beta1", Route::Discovery),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/m",
                Route::Metric,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns",
                Route::Other,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/m/x",
                Route::Other,
            ),
            ("/openapi/v2", Route::Openapi),
            ("/readyz", Route::Health),
            ("/healthz/ping", Route::Health),
            ("/healthzz", Route::Other),
            ("/", Route::Other),
        ];
        for (path, route) in cases {
            assert_eq!(route_of(path), route, "{path}");
        }
    }

    #[tokio::test]
    async fn requests_codes_and_scaler_queries_are_counted() {
        let t = Telemetry::new();
        let app = Router::new()
            .route("/readyz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(t.clone(), track));
        for path in [
            "/readyz",
            "/readyz",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/a/b",
        ] {
            let _ = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                .await
                .expect("response");
        }
        t.scaler_query("cron", Duration::from_millis(2), true);
        t.scaler_query("cron", Duration::from_millis(3), false);
        t.token_cache(true);
        let text = t.encode();
        assert_eq!(
            sample(
                &text,
                "eventscale_apiserver_requests_total{route=\"Health\",code=\"200\"}"
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "eventscale_apiserver_requests_total{route=\"Metric\",code=\"404\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "eventscale_apiserver_requests_in_flight"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "eventscale_scaler_query_duration_seconds_count{scaler=\"cron\"}"
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "eventscale_scaler_query_errors_total{scaler=\"cron\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "eventscale_authentication_token_cache_total{result=\"Hit\"}"
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let t = Telemetry::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(t.serve(listener, async move {
            let _ = stopped.await;
        }));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("eventscale_build_info{version=\""), "{ok}");
        let missing = get("/other").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let _ = stop.send(());
        server.await.expect("join").expect("served");
    }
}
