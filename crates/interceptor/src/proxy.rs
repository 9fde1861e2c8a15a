//! The proxy: route, count, hold while the workload starts, forward to the least busy ready
//! pod, and answer for what went wrong with the status code that says it (404 no route,
//! 503 queue full, 504 no ready endpoint in time or no response headers in time, 502 the
//! workload failed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::{debug, warn, Instrument as _};

use crate::backends::{Lease, Pool};
use crate::body::{self, plain, AttemptBody, Guarded, ProxyBody, Replayable};
use crate::counts::InFlight;
use crate::{Route, Shared};

/// The response header that says whether the request waited for the workload to start.
pub const COLD_START_HEADER: &str = "x-keda-http-cold-start";
/// How many backends a request tries when connections are refused.
const CONNECT_ATTEMPTS: usize = 3;

/// The clients that talk to pods: HTTP/1.1, and HTTP/2 without TLS for requests that came
/// as HTTP/2 (gRPC and the like).
#[derive(Debug, Clone)]
pub struct Upstreams {
    http1: Client<HttpConnector, AttemptBody>,
    http2: Client<HttpConnector, AttemptBody>,
}

impl Upstreams {
    /// Clients with `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(90))
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
            b
        };
        Self {
            http1: builder().build(connector.clone()),
            http2: builder().http2_only(true).build(connector),
        }
    }
}

/// Why a request got no answer from the workload.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no ready endpoint of {service} within {waited:?}")]
    NotReady { service: String, waited: Duration },
    #[error("{held} requests are already waiting for {route} to start")]
    QueueFull { route: String, held: usize },
    #[error("{addr} sent no response headers within {timeout:?}")]
    HeaderTimeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr}: {source}")]
    Upstream {
        addr: SocketAddr,
        source: hyper_util::client::legacy::Error,
    },
    #[error("every ready endpoint refused the connection")]
    Refused,
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotReady { .. } | Self::HeaderTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::QueueFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream { .. } | Self::Refused => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Answers one request that came from `client`.
pub async fn handle(
    shared: Arc<Shared>,
    upstreams: Upstreams,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let host = request_host(&req).unwrap_or_default();
    let routes = shared.routes.load();
    let Some((_, route)) = routes.table.lookup(&host, req.uri().path(), req.headers()) else {
        debug!(%host, path = req.uri().path(), "no route");
        shared
            .telemetry
            .answered("none", 404, start.elapsed().as_secs_f64());
        return plain(StatusCode::NOT_FOUND, "Not Found\n");
    };
    let route = route.clone();
    drop(routes);
    let in_flight = route.counts.begin();
    let key = route.spec.key.clone();
    let span = tracing::debug_span!("request", route = %key, %host);
    let forwarded = forward(&shared, &upstreams, &route, client, &host, req, in_flight)
        .instrument(span)
        .await;
    let (mut response, cold) = match forwarded {
        Ok(r) => r,
        Err((failure, cold)) => {
            let status = failure.status();
            warn!(route = %key, %host, %status, "{failure}");
            let mut r = plain(status, format!("{failure}\n"));
            if matches!(failure, Failure::QueueFull { .. }) {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            (r, cold)
        }
    };
    if cold {
        shared.telemetry.cold_start(&key);
    }
    if shared.config.cold_start_header {
        response.headers_mut().insert(
            HeaderName::from_static(COLD_START_HEADER),
            HeaderValue::from_static(if cold { "true" } else { "false" }),
        );
    }
    shared.telemetry.answered(
        &key,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// Waits for a backend of `pool` until `deadline`; `cold` is set when the request had to wait.
async fn lease(
    shared: &Shared,
    route: &Route,
    pool: &Pool,
    deadline: Instant,
    cold: &mut bool,
) -> Result<Lease, Failure> {
    loop {
        if let Some(l) = pool.pick() {
            return Ok(l);
        }
        let held = route.counts.held() as usize;
        if held >= shared.config.max_held_per_route {
            return Err(Failure::QueueFull {
                route: route.spec.key.clone(),
                held,
            });
        }
        let Ok(_permit) = shared.held.try_acquire() else {
            return Err(Failure::QueueFull {
                route: "all routes".into(),
                held: shared.config.max_held,
            });
        };
        *cold = true;
        let _held = route.counts.hold();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !pool.wait_ready(left).await {
            return Err(Failure::NotReady {
                service: format!(
                    "{}/{}",
                    route.spec.service.namespace, route.spec.service.name
                ),
                waited: route.spec.cold_start_timeout(shared.config.condition_wait),
            });
        }
    }
}

async fn forward(
    shared: &Shared,
    upstreams: &Upstreams,
    route: &Arc<Route>,
    client: SocketAddr,
    host: &str,
    mut req: Request<Incoming>,
    in_flight: InFlight,
) -> Result<(Response<ProxyBody>, bool), (Failure, bool)> {
    let mut cold = false;
    let wait = route.spec.cold_start_timeout(shared.config.condition_wait);
    let deadline = Instant::now() + wait;
    let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let version = req.version();
    let (mut parts, incoming) = req.into_parts();
    prepare_headers(&mut parts.headers, client, host, upgrade.is_some());
    let body = Replayable::new(incoming);

    let mut pool = route.pool.clone();
    let mut failing_over = false;
    let mut refused = 0;
    loop {
        let lease = match lease(shared, route, &pool, deadline, &mut cold).await {
            Ok(l) => l,
            Err(Failure::NotReady { .. }) if !failing_over && route.failover.is_some() => {
                // The workload did not start in time: the failover Service answers.
                failing_over = true;
                pool = route.failover.clone().unwrap_or_else(|| route.pool.clone());
                match pool.pick() {
                    Some(l) => l,
                    None => {
                        return Err((
                            Failure::NotReady {
                                service: "the failover Service".into(),
                                waited: wait,
                            },
                            cold,
                        ))
                    }
                }
            }
            Err(f) => return Err((f, cold)),
        };
        let addr = lease.backend().addr;
        let serving = route.counts.serve();
        let Some(attempt) = body.attempt() else {
            return Err((Failure::Refused, cold));
        };
        let mut up = Request::from_parts(parts.clone(), attempt);
        *up.version_mut() = if version == Version::HTTP_2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *up.uri_mut() = upstream_uri(addr, &parts.uri);
        let client = if version == Version::HTTP_2 {
            &upstreams.http2
        } else {
            &upstreams.http1
        };
        let timeout = route
            .spec
            .response_header
            .unwrap_or(shared.config.response_header_timeout);
        let sent = tokio::time::timeout(timeout, client.request(up)).await;
        let mut response = match sent {
            Err(_) => return Err((Failure::HeaderTimeout { addr, timeout }, cold)),
            Ok(Err(e)) if e.is_connect() => {
                // Never sent: the pod is gone or not listening yet. Pass it over and try
                // another (or wait again) with the same body.
                debug!(%addr, "connection refused: {e}");
                lease.backend().eject();
                refused += 1;
                if Instant::now() >= deadline {
                    return Err((Failure::Refused, cold));
                }
                // Every backend refused in turn: give them a moment before the next round.
                if refused % CONNECT_ATTEMPTS == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
            Ok(Err(source)) => return Err((Failure::Upstream { addr, source }, cold)),
            Ok(Ok(r)) => r,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = upgrade {
                let upstream_side = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    let _hold = (in_flight, serving, lease);
                    match tokio::try_join!(client_side, upstream_side) {
                        Ok((c, u)) => {
                            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                                debug!("upgraded connection ended: {e}");
                            }
                        }
                        Err(e) => debug!("upgrade failed: {e}"),
                    }
                });
                let (parts, _) = response.into_parts();
                return Ok((Response::from_parts(parts, body::text(Bytes::new())), cold));
            }
        }
        strip_hop_by_hop(response.headers_mut(), false);
        let (parts, incoming) = response.into_parts();
        let body = Guarded::new(
            incoming.map_err(Into::into).boxed(),
            (in_flight, serving, lease),
        );
        return Ok((Response::from_parts(parts, body.boxed()), cold));
    }
}

fn upstream_uri(addr: SocketAddr, original: &Uri) -> Uri {
    let path = original
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// The host a request is for: `Host`, else the URI's authority (HTTP/2).
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        if keep_upgrade && n == header::CONNECTION {
            continue;
        }
        headers.remove(n);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// The request's headers as the pod sees them: hop-by-hop ones gone (but an upgrade's),
/// the original Host kept, `X-Forwarded-For`, `-Host` and `-Proto` added.
fn prepare_headers(headers: &mut HeaderMap, client: SocketAddr, host: &str, upgrade: bool) {
    // gRPC's `te: trailers` is the one TE an HTTP/2 hop must keep.
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(headers, upgrade);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let ip = client.ip().to_canonical().to_string();
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
    let xfh = HeaderName::from_static("x-forwarded-host");
    if !headers.contains_key(&xfh) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(xfh, v);
        }
    }
    let xfp = HeaderName::from_static("x-forwarded-proto");
    if !headers.contains_key(&xfp) {
        headers.insert(xfp, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::HOST,
            HeaderValue::from_static("helloworld.jourdain.io"),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let client: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().expect("an address");
        prepare_headers(&mut h, client, "helloworld.jourdain.io", false);
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key("x-private"));
        assert!(!h.contains_key("keep-alive"));
        assert_eq!(h["te"], "trailers");
        assert_eq!(h[header::HOST], "helloworld.jourdain.io");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "helloworld.jourdain.io");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn an_upgrade_keeps_its_connection_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        prepare_headers(
            &mut h,
            "127.0.0.1:1".parse().expect("an address"),
            "h",
            true,
        );
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "Upgrade");
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        assert!(!plain.contains_key(header::UPGRADE));
    }

    #[test]
    fn the_upstream_uri_keeps_path_and_query() {
        let u = upstream_uri(
            "10.1.2.3:8080".parse().expect("an address"),
            &"/a/b?c=1".parse().expect("a URI"),
        );
        assert_eq!(u.to_string(), "http://10.1.2.3:8080/a/b?c=1");
    }
}
