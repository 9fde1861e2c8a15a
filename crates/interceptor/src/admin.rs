//! The admin port: `/queue` (the counts, in the shape the walkthrough shows,
//! `{"default/go-helloworld":0}`, or per route in detail with `?detailed=true`), `/livez`,
//! `/readyz` and `/metrics`. The counts are this replica's: the external scaler sums them
//! over every replica (`peers`).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::body::{self, plain, ProxyBody};
use crate::Shared;

/// The response header naming the replica that answered `/queue` (so that a replica reading
/// its peers knows its own answer).
pub const INSTANCE_HEADER: &str = "x-eventscale-interceptor";

/// One route's counts in `/queue?detailed=true`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct QueueDetail {
    /// Requests in flight, held ones included.
    pub concurrency: u64,
    /// Requests routed since the interceptor started.
    pub request_count: u64,
    /// Requests the workload is serving (what a concurrency route scales on).
    pub serving: u64,
    /// Requests per second over the route's window (a request-rate route).
    pub request_rate: f64,
    /// Requests waiting for a ready endpoint.
    pub held: u64,
    /// Ready endpoints of the route's Service.
    pub ready_endpoints: usize,
}

impl Default for QueueDetail {
    fn default() -> Self {
        Self {
            concurrency: 0,
            request_count: 0,
            serving: 0,
            request_rate: 0.0,
            held: 0,
            ready_endpoints: 0,
        }
    }
}

/// The counts of every route, in detail.
pub fn queue_detail(shared: &Shared) -> BTreeMap<String, QueueDetail> {
    shared
        .routes
        .load()
        .by_key
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                QueueDetail {
                    concurrency: r.counts.in_flight(),
                    request_count: r.counts.requests(),
                    serving: r.counts.serving(),
                    request_rate: r.counts.rate(),
                    held: r.counts.held(),
                    ready_endpoints: r.pool.backends().len(),
                },
            )
        })
        .collect()
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(body::text(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Answers one admin request.
pub fn handle<B>(shared: &Arc<Shared>, req: &Request<B>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/queue" => {
            let detailed = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|p| p == "detailed=true" || p == "detailed")
            });
            let detail = queue_detail(shared);
            let mut r = if detailed {
                json(StatusCode::OK, &detail)
            } else {
                let simple: BTreeMap<_, _> = detail
                    .into_iter()
                    .map(|(k, d)| (k, d.concurrency))
                    .collect();
                json(StatusCode::OK, &simple)
            };
            if let Ok(v) = HeaderValue::from_str(&shared.instance) {
                r.headers_mut().insert(INSTANCE_HEADER, v);
            }
            r
        }
        "/livez" => plain(StatusCode::OK, "ok\n"),
        "/readyz" if shared.ready() => plain(StatusCode::OK, "ok\n"),
        "/readyz" if shared.draining.load(std::sync::atomic::Ordering::Acquire) => {
            plain(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/readyz" => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "routes, Services and Endpoints not listed yet\n",
        ),
        "/metrics" => {
            let out = shared.telemetry.render(&shared.routes.load());
            let mut r = Response::new(body::text(out));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        _ => plain(StatusCode::NOT_FOUND, "Not Found\n"),
    }
}
