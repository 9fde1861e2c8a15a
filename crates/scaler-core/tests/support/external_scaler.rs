//! A small external scaler speaking KEDA's `externalscaler.ExternalScaler` gRPC protocol on
//! loopback, for the tests of the `external` and `external-push` triggers: values and
//! activity set by the test (per ScaledObject or for all), pushes on `StreamIsActive`, an
//! optional `StreamMetricSpec`, streams cut on demand, calls that hang, TLS that requires a
//! client certificate, and counts of the connections and calls it took.
//!
//! Served with hyper (HTTP/2 only) so that every connection is counted and can be cut.
//! Shared by scaler-core's tests and the end-to-end tests (included with `#[path]`).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use scaler_core::externalscaler as pb;
use scaler_core::externalscaler::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use tokio::sync::{broadcast, watch};
use tonic::{Request, Response, Status};

/// What the scaler answers for one ScaledObject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    /// `GetMetrics`' value (sent as metricValueFloat).
    pub value: f64,
    /// `IsActive`'s result.
    pub active: bool,
}

#[derive(Default)]
struct State {
    metric: Mutex<(String, f64)>,
    answers: Mutex<HashMap<String, Answer>>,
    default: Mutex<Option<Answer>>,
    hang: AtomicBool,
    metric_spec_stream: bool,
    spec_changes: Option<watch::Sender<(String, f64)>>,
    pushes: Option<broadcast::Sender<(Option<String>, bool)>>,
    cut: Option<watch::Sender<u64>>,
    connections: AtomicU64,
    closed: AtomicU64,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    refs: Mutex<Vec<pb::ScaledObjectRef>>,
    metric_names: Mutex<Vec<String>>,
    open_streams: AtomicU64,
}

impl State {
    fn call(&self, name: &'static str, r: &pb::ScaledObjectRef) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += 1;
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        if refs.len() < 10_000 {
            refs.push(r.clone());
        }
    }

    fn answer(&self, r: &pb::ScaledObjectRef) -> Option<Answer> {
        let key = format!("{}/{}", r.namespace, r.name);
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
            .or(*self.default.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn maybe_hang(&self) {
        if self.hang.load(Ordering::Relaxed) {
            futures::future::pending::<()>().await;
        }
    }
}

#[derive(Clone)]
struct Service(Arc<State>);

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The stream of `items`, ended with Unavailable when the test cuts streams.
fn cuttable<T: Send + 'static>(
    state: Arc<State>,
    items: impl Stream<Item = T> + Send + 'static,
) -> Streamed<T> {
    use futures::StreamExt;
    let mut cut = state.cut.as_ref().map(|c| c.subscribe());
    let gen = cut.as_ref().map(|c| *c.borrow()).unwrap_or(0);
    state.open_streams.fetch_add(1, Ordering::Relaxed);
    let guard = OpenStream(state.clone());
    let cut_signal = async move {
        if let Some(c) = cut.as_mut() {
            let _ = c.wait_for(|g| *g != gen).await;
        } else {
            futures::future::pending::<()>().await;
        }
    };
    let items = items.map(Ok);
    let ended = futures::stream::once(cut_signal)
        .map(|()| Err(Status::unavailable("stream cut by the test")));
    // Items until the cut, which ends the stream with its error.
    Box::pin(
        futures::stream::select(items, ended)
            .scan(false, |done, r| {
                let out = if *done {
                    None
                } else {
                    *done = r.is_err();
                    Some(r)
                };
                futures::future::ready(out)
            })
            .map(move |r| {
                let _open = &guard;
                r
            }),
    )
}

struct OpenStream(Arc<State>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl ExternalScaler for Service {
    async fn is_active(
        &self,
        r: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        self.0.call("IsActive", r.get_ref());
        self.0.maybe_hang().await;
        let answer = self
            .0
            .answer(r.get_ref())
            .ok_or_else(|| Status::unavailable("no answer set"))?;
        Ok(Response::new(pb::IsActiveResponse {
            result: answer.active,
        }))
    }

    type StreamIsActiveStream = Streamed<pb::IsActiveResponse>;

    async fn stream_is_active(
        &self,
        r: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        use futures::StreamExt;
        self.0.call("StreamIsActive", r.get_ref());
        self.0.maybe_hang().await;
        let key = format!("{}/{}", r.get_ref().namespace, r.get_ref().name);
        let Some(pushes) = self.0.pushes.as_ref() else {
            return Err(Status::unavailable("not ready"));
        };
        let rx = pushes.subscribe();
        let items = futures::stream::unfold(rx, move |mut rx| {
            let key = key.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok((to, active)) if to.as_deref().is_none_or(|t| t == key) => {
                            return Some((pb::IsActiveResponse { result: active }, rx))
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
        .boxed();
        Ok(Response::new(cuttable(self.0.clone(), items)))
    }

    async fn get_metric_spec(
        &self,
        r: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        self.0.call("GetMetricSpec", r.get_ref());
        self.0.maybe_hang().await;
        let (name, target) = self
            .0
            .metric
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(Response::new(spec_answer(&name, target)))
    }

    async fn get_metrics(
        &self,
        r: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let reference = r.get_ref().scaled_object_ref.clone().unwrap_or_default();
        self.0.call("GetMetrics", &reference);
        self.0
            .metric_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r.get_ref().metric_name.clone());
        self.0.maybe_hang().await;
        let answer = self
            .0
            .answer(&reference)
            .ok_or_else(|| Status::unavailable("no answer set"))?;
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue {
                metric_name: r.get_ref().metric_name.clone(),
                metric_value: answer.value as i64,
                metric_value_float: answer.value,
            }],
        }))
    }

    type StreamMetricSpecStream = Streamed<pb::GetMetricSpecResponse>;

    async fn stream_metric_spec(
        &self,
        r: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        use futures::StreamExt;
        self.0.call("StreamMetricSpec", r.get_ref());
        let Some(changes) = self
            .0
            .spec_changes
            .as_ref()
            .filter(|_| self.0.metric_spec_stream)
        else {
            return Err(Status::unimplemented("StreamMetricSpec"));
        };
        let rx = changes.subscribe();
        let items = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let (name, target) = rx.borrow_and_update().clone();
            Some((spec_answer(&name, target), (rx, false)))
        })
        .boxed();
        Ok(Response::new(cuttable(self.0.clone(), items)))
    }
}

fn spec_answer(name: &str, target: f64) -> pb::GetMetricSpecResponse {
    pb::GetMetricSpecResponse {
        metric_specs: vec![pb::MetricSpec {
            metric_name: name.to_string(),
            target_size: target as i64,
            target_size_float: target,
        }],
    }
}

/// How the scaler is served.
#[derive(Default, Clone)]
pub struct Options {
    /// Serve `StreamMetricSpec` (otherwise it answers Unimplemented, as older scalers do).
    pub metric_spec_stream: bool,
    /// Serve TLS with this certificate chain and key (PEM).
    pub tls: Option<(String, String)>,
    /// With TLS, require a client certificate issued by this CA (PEM).
    pub client_ca: Option<String>,
    /// Listen here (to come back on the address of a scaler that was stopped).
    pub addr: Option<SocketAddr>,
}

/// A running test scaler; stopped when dropped.
pub struct TestScaler {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TestScaler {
    /// A scaler on a free loopback port whose metric is `metric` with target `target`.
    pub async fn start(metric: &str, target: f64, options: Options) -> Self {
        let (pushes, _) = broadcast::channel(1024);
        let (cut, _) = watch::channel(0);
        let (spec_changes, _) = watch::channel((metric.to_string(), target));
        let state = Arc::new(State {
            metric: Mutex::new((metric.to_string(), target)),
            metric_spec_stream: options.metric_spec_stream,
            spec_changes: Some(spec_changes),
            pushes: Some(pushes),
            cut: Some(cut),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind(
            options
                .addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .await
        .expect("binding the test scaler");
        let addr = listener.local_addr().expect("its address");
        let acceptor = options
            .tls
            .as_ref()
            .map(|(cert, key)| tls_acceptor(cert, key, options.client_ca.as_deref()));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let svc = ExternalScalerServer::new(Service(state.clone()));
        let (st, conns) = (state.clone(), connections.clone());
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::Relaxed);
                let svc = svc.clone();
                let acceptor = acceptor.clone();
                let st2 = st.clone();
                let task = tokio::spawn(async move {
                    let service = hyper_util::service::TowerToHyperService::new(svc);
                    let mut builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .http2_only();
                    // No limit on concurrent streams, as grpc-go's servers (KEDA's
                    // scalers, the HTTP add-on's) have none: one stream per push trigger.
                    builder.http2().max_concurrent_streams(None);
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = builder
                                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                                .await;
                        }
                    }
                    st2.closed.fetch_add(1, Ordering::Relaxed);
                });
                conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(task.abort_handle());
            }
        });
        Self {
            addr,
            state,
            server,
            connections,
        }
    }

    /// Answer `value`/`active` for every ScaledObject without an answer of its own.
    pub fn set(&self, value: f64, active: bool) {
        *self.state.default.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Answer { value, active });
    }

    /// Answer `value`/`active` for ScaledObject `ns/name`.
    pub fn set_for(&self, so: &str, value: f64, active: bool) {
        self.state
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(so.to_string(), Answer { value, active });
    }

    /// Push `active` on the `StreamIsActive` streams of `so` (`ns/name`), or of all.
    pub fn push(&self, so: Option<&str>, active: bool) {
        if let Some(p) = &self.state.pushes {
            let _ = p.send((so.map(str::to_string), active));
        }
    }

    /// Change the metric spec (streamed to `StreamMetricSpec` subscribers).
    pub fn set_metric(&self, metric: &str, target: f64) {
        *self.state.metric.lock().unwrap_or_else(|p| p.into_inner()) = (metric.to_string(), target);
        if let Some(s) = &self.state.spec_changes {
            s.send_replace((metric.to_string(), target));
        }
    }

    /// Make every call, and every stream's opening, hang (or answer again).
    pub fn hang(&self, on: bool) {
        self.state.hang.store(on, Ordering::Relaxed);
    }

    /// End every open stream with Unavailable (the connections stay).
    pub fn cut_streams(&self) {
        if let Some(c) = &self.state.cut {
            c.send_modify(|g| *g += 1);
        }
    }

    /// Close every connection at once, as a crashed scaler's host would.
    pub fn drop_connections(&self) {
        for c in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Connections the client closed (or that failed their handshake).
    pub fn closed(&self) -> u64 {
        self.state.closed.load(Ordering::Relaxed)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> u64 {
        self.state.open_streams.load(Ordering::Relaxed)
    }

    /// Calls of `rpc` so far.
    pub fn calls(&self, rpc: &str) -> u64 {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(rpc)
            .copied()
            .unwrap_or(0)
    }

    /// The ScaledObject references the calls carried.
    pub fn refs(&self) -> Vec<pb::ScaledObjectRef> {
        self.state
            .refs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The metric names `GetMetrics` was asked for.
    pub fn metric_names(&self) -> Vec<String> {
        self.state
            .metric_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Wait until `cond` holds, for at most `limit`.
    pub async fn wait(&self, limit: Duration, what: &str, cond: impl Fn(&Self) -> bool) {
        let until = tokio::time::Instant::now() + limit;
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < until,
                "test scaler: {what} did not happen within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestScaler {
    fn drop(&mut self) {
        self.server.abort();
        self.drop_connections();
    }
}

/// A TLS acceptor for `cert`/`key`, requiring a client certificate from `client_ca` when
/// given.
fn tls_acceptor(cert: &str, key: &str, client_ca: Option<&str>) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("the test scaler's certificate");
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .expect("the test scaler's key")
        .expect("a key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
                roots
                    .add(c.expect("the client CA"))
                    .expect("adding the client CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .expect("the test scaler's certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
