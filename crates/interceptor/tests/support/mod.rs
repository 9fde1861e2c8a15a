//! Real servers on loopback for the interceptor's tests: upstream "pods" (hyper, HTTP/1.1
//! and h2c, on 127.0.0.N sharing one port as a Service's endpoints do), the interceptor
//! itself on ephemeral ports, and its routes, Services and Endpoints fed in directly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use interceptor::server::{serve, Listeners};
use interceptor::{Config, Shared};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use scaler_core::http_scaled_object::{HttpRoute, HttpScaledObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
}

/// One upstream pod.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub in_flight: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free port on 127.0.0.1 (then used on 127.0.0.N too).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    l.local_addr().expect("its address").port()
}

/// `GET /?delay_ms=N` answers `hello from <name>` after N ms; `/close` drops the
/// connection without answering; `/ws` with `Upgrade` answers 101 and echoes bytes;
/// `/slow-headers?delay_ms=N` waits before the headers (as `/` does).
async fn answer(
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicU64>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    seen.lock().expect("seen").push(Seen {
        path: req.uri().to_string(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    in_flight.fetch_add(1, Ordering::SeqCst);
    struct Done(Arc<AtomicU64>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _done = Done(in_flight);
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("delay_ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    match req.uri().path() {
        "/close" => Err(std::io::Error::other("closing without an answer")),
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Full::new(Bytes::new()))
                .expect("a response"))
        }
        "/echo" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?;
            Ok(Response::new(Full::new(body.to_bytes())))
        }
        _ => Ok(Response::new(Full::new(Bytes::from(format!(
            "hello from {name}"
        ))))),
    }
}

impl Upstream {
    /// An upstream named `name` on 127.0.0.`n`:`port`.
    pub async fn start(name: &str, n: u8, port: u16) -> Self {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), port);
        let listener = TcpListener::bind(addr).await.expect("binding an upstream");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let in_flight: Arc<AtomicU64> = Arc::default();
        let (s, f, nm) = (seen.clone(), in_flight.clone(), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (s, f, nm) = (s.clone(), f.clone(), nm.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(nm.clone(), s.clone(), f.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            name: name.into(),
            addr,
            seen,
            in_flight,
            task,
        }
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }
}

/// A route from an HTTPScaledObject spec (JSON) named `name` in `ns`.
pub fn route(ns: &str, name: &str, spec: serde_json::Value) -> HttpRoute {
    let o: HttpScaledObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))
    .expect("an HTTPScaledObject");
    o.route().expect("a valid route")
}

/// A Service with one port named `http`.
pub fn service(ns: &str, name: &str, port: i32) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Endpoints with the ready `addrs` (all on one port, as pods of a Service are).
pub fn endpoints(ns: &str, name: &str, addrs: &[SocketAddr]) -> Endpoints {
    let port = addrs.first().map_or(1, |a| i32::from(a.port()));
    Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(
                addrs
                    .iter()
                    .map(|a| EndpointAddress {
                        ip: a.ip().to_string(),
                        ..EndpointAddress::default()
                    })
                    .collect(),
            ),
            not_ready_addresses: None,
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port,
                ..EndpointPort::default()
            }]),
        }]),
    }
}

/// A running interceptor.
pub struct Running {
    pub shared: Arc<Shared>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub scaler: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts an interceptor with `config` and `routes`, synced.
    pub async fn start(config: Config, routes: Vec<HttpRoute>) -> Self {
        let shared = Shared::new(config);
        shared.set_routes(routes);
        shared.synced.store(true, Ordering::Release);
        let bind = || TcpListener::bind("127.0.0.1:0");
        let listeners = Listeners {
            proxy: bind().await.expect("a proxy port"),
            admin: bind().await.expect("an admin port"),
            scaler: bind().await.expect("a scaler port"),
        };
        let proxy = listeners.proxy.local_addr().expect("address");
        let admin = listeners.admin.local_addr().expect("address");
        let scaler = listeners.scaler.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(shared.clone(), listeners, async {
            let _ = stopped.await;
        }));
        Self {
            shared,
            proxy,
            admin,
            scaler,
            stop: Some(stop),
            task,
        }
    }

    /// Service `ns/name` (port 80, `http`) whose ready endpoints are `addrs`.
    pub fn backends(&self, ns: &str, name: &str, addrs: &[SocketAddr]) {
        self.shared.directory.apply_service(&service(ns, name, 80));
        self.shared
            .directory
            .apply_endpoints(&endpoints(ns, name, addrs));
    }

    /// Begins the drain, as SIGTERM does.
    pub fn terminate(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// `http://<proxy><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `/queue` (or `/queue?detailed=true`) as JSON.
    pub async fn queue(&self, detailed: bool) -> serde_json::Value {
        let q = if detailed { "?detailed=true" } else { "" };
        reqwest::get(format!("http://{}/queue{q}", self.admin))
            .await
            .expect("/queue")
            .json()
            .await
            .expect("JSON")
    }

    /// The status of an admin path.
    pub async fn admin_status(&self, path: &str) -> u16 {
        reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain HTTP/1.1 client with no pooling surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("a client")
}

/// GET `url` with `Host: host`: (status, cold-start header, body).
pub async fn get(c: &reqwest::Client, url: &str, host: &str) -> (u16, String, String) {
    let r = c
        .get(url)
        .header("host", host)
        .send()
        .await
        .expect("a response");
    let status = r.status().as_u16();
    let cold = r
        .headers()
        .get("x-keda-http-cold-start")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, cold, r.text().await.unwrap_or_default())
}

/// Counts of answers by body.
pub fn tally(bodies: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in bodies {
        *m.entry(b).or_default() += 1;
    }
    m
}

/// Polls `cond` every 10 ms for up to `limit`.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
