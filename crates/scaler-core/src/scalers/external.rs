//! The `external` and `external-push` triggers: KEDA's external scaler protocol
//! (`externalscaler.ExternalScaler`, gRPC), with eventscale as the client.
//!
//! - Parameters as KEDA reads them: `scalerAddress` (`host:port`), `enableTLS`, `unsafeSsl`
//!   from the metadata; `caCert`, `tlsClientCert`, `tlsClientKey` from the authentication
//!   parameters. TLS is used when `enableTLS` is true or a certificate is given.
//! - The scaler is sent the trigger's metadata as `scalerMetadata`, each `<key>FromEnv`
//!   carrying the environment's value ([`resolve_env`]).
//! - The metric is `s<index>-<metricName>` with the name and target the scaler's
//!   `GetMetricSpec` gives (`targetSizeFloat` when above 0, else `targetSize`); each poll
//!   asks `GetMetrics` (the index prefix removed) then `IsActive`, each call bounded by
//!   [`CALL_TIMEOUT`].
//! - One HTTP/2 connection per (address, TLS settings), shared by every trigger that uses
//!   it and closed when the last of them is gone ([`ExternalClients`]).
//! - `external-push` also keeps one `StreamIsActive` stream (and `StreamMetricSpec`, when the
//!   server has it) per trigger, reconnecting with KEDA's backoff, and hands every answer to
//!   the [`PushSink`] at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use super::params::{Param, Required, Source::*};
use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::externalscaler as pb;
use crate::externalscaler::external_scaler_client::ExternalScalerClient;
use crate::quantity::MilliQuantity;
use crate::scaled_object::ScaleTriggers;

const SCALER_ADDRESS: Param<Required> = Param::new("scalerAddress").from(&[Meta]).required();
const ENABLE_TLS: Param = Param::new("enableTLS").from(&[Meta]);
const UNSAFE_SSL: Param = Param::new("unsafeSsl").from(&[Meta]);
const CA_CERT: Param = Param::new("caCert").from(&[Auth]).secret();
const TLS_CLIENT_CERT: Param = Param::new("tlsClientCert").from(&[Auth]).secret();
const TLS_CLIENT_KEY: Param = Param::new("tlsClientKey").from(&[Auth]).secret();

/// The longest one call (GetMetricSpec, GetMetrics, IsActive) may take: a hung scaler
/// fails its own triggers' polls, and only theirs.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP keepalive, so a stream to a scaler that vanished (its host gone, no reset sent) is
/// noticed and reopened: probes after a minute idle, every 10 s, 3 unanswered. Not HTTP/2
/// pings, which grpc-go's servers (KEDA's scalers) answer with GOAWAY `too_many_pings`
/// when sent more often than every 5 minutes.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// KEDA's backoff between stream attempts: 2 s, doubled up to a minute, back to 2 s after
/// a stream that ended cleanly or delivered an answer.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between stream attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Whether `type_` is served by this module.
pub fn is_external(type_: &str) -> bool {
    type_ == "external" || type_ == "external-push"
}

/// `trigger` as KEDA hands it to an external scaler: every key kept, a `<key>FromEnv` key
/// carrying the value of the variable it names (dropped when that is unset or empty), no
/// other key added.
pub fn resolve_env(trigger: &ScaleTriggers, env: &BTreeMap<String, String>) -> ScaleTriggers {
    let mut out = trigger.clone();
    out.metadata = trigger
        .metadata
        .iter()
        .filter_map(|(k, v)| {
            if k.ends_with("FromEnv") {
                env.get(v.trim())
                    .filter(|val| !val.is_empty())
                    .map(|val| (k.to_string(), val.clone()))
            } else {
                Some((k.to_string(), v.to_string()))
            }
        })
        .collect();
    out
}

/// What tells two connections apart: the address and every TLS setting.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ConnKey {
    address: String,
    tls: bool,
    unsafe_ssl: bool,
    ca: Option<String>,
    cert_key: Option<(String, String)>,
}

/// One shared connection to an external scaler.
pub struct Connection {
    channel: Channel,
    address: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// A push answer from an `external-push` trigger's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// `StreamIsActive` sent `result`.
    Active(bool),
    /// `StreamMetricSpec` sent a metric spec other than the one the trigger was built with.
    SpecChanged,
    /// `StreamIsActive` opened again after it was lost: what was pushed meanwhile is lost,
    /// so the trigger should be asked.
    Reopened,
}

/// What a push stream reports, and for which trigger.
#[derive(Debug, Clone)]
pub struct PushEvent {
    /// The ScaledObject's namespace.
    pub namespace: String,
    /// The ScaledObject's name.
    pub name: String,
    /// Index of the trigger in `spec.triggers`.
    pub trigger: usize,
    /// What was pushed.
    pub pushed: Pushed,
    /// When it arrived.
    pub at: Instant,
}

/// Where push answers go: nowhere until [`PushSink::connect`] (the scale loop of a full
/// eventscale calls it); without it `external-push` triggers open no streams (`eval`, a
/// metrics-only eventscale, whose pushes nobody would act on).
#[derive(Default)]
pub struct PushSink {
    tx: OnceLock<mpsc::UnboundedSender<PushEvent>>,
}

impl PushSink {
    /// Start receiving push answers; `None` when already connected.
    pub fn connect(&self) -> Option<mpsc::UnboundedReceiver<PushEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx.set(tx).ok().map(|()| rx)
    }

    fn sender(&self) -> Option<mpsc::UnboundedSender<PushEvent>> {
        self.tx.get().cloned()
    }
}

/// The connections to external scalers, one per (address, TLS settings), each alive while
/// a trigger uses it; and where push answers go.
#[derive(Default)]
pub struct ExternalClients {
    conns: Mutex<HashMap<ConnKey, Weak<Connection>>>,
    /// Where `external-push` streams deliver.
    pub push: PushSink,
}

impl std::fmt::Debug for ExternalClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalClients").finish_non_exhaustive()
    }
}

impl ExternalClients {
    /// How many shared connections are in use.
    pub fn open(&self) -> usize {
        self.lock()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnKey, Weak<Connection>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connection(&self, key: &ConnKey) -> Result<Arc<Connection>, ScalerError> {
        let mut conns = self.lock();
        if let Some(c) = conns.get(key).and_then(Weak::upgrade) {
            return Ok(c);
        }
        conns.retain(|_, w| w.strong_count() > 0);
        let c = Arc::new(connect(key)?);
        conns.insert(key.clone(), Arc::downgrade(&c));
        Ok(c)
    }
}

/// `scalerAddress` split as a dial target: host (no brackets) and port. `host:port`,
/// `[v6]:port` and gRPC's `dns:///host:port` are taken.
fn parse_address(address: &str) -> Result<(String, u16), ScalerError> {
    let bad = |why: &str| {
        ScalerError::invalid(
            "scalerAddress",
            format!("scalerAddress {address:?} {why}: give host:port"),
        )
    };
    let a = address.strip_prefix("dns:///").unwrap_or(address);
    if a.contains("://") || a.contains('/') {
        return Err(bad("is not an address"));
    }
    let (host, port) = a.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(':') && !a.starts_with('[') {
        return Err(bad("has no host, or an IPv6 host without brackets"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("has no valid port"))?;
    Ok((host.to_string(), port))
}

/// Any stream the connector returns.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// A lazily connected channel for `key`: nothing is dialled until the first call, and a
/// lost connection is dialled again by the next call.
fn connect(key: &ConnKey) -> Result<Connection, ScalerError> {
    let (host, port) = parse_address(&key.address)?;
    let tls = if key.tls {
        let mut config = crate::tls::client_config(&crate::tls::ClientSettings {
            ca: key.ca.as_deref(),
            cert_key: key.cert_key.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
            unsafe_ssl: key.unsafe_ssl,
        })
        .map_err(|e| {
            let param = match e.param {
                "ca" => "caCert",
                "cert" => "tlsClientCert",
                "key" => "tlsClientKey",
                other => other,
            };
            ScalerError::invalid(param, format!("error parsing {e}"))
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| ScalerError::invalid("scalerAddress", format!("{host:?}: {e}")))?;
        Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    } else {
        None
    };
    // The URI only names the authority for HTTP/2's :authority; the connector dials.
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| ScalerError::invalid("scalerAddress", e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let connector = tower::service_fn(move |_: http::Uri| {
        let (host, tls) = (host.clone(), tls.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            socket2::SockRef::from(&tcp).set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(TCP_KEEPALIVE_IDLE)
                    .with_interval(TCP_KEEPALIVE_INTERVAL)
                    .with_retries(TCP_KEEPALIVE_RETRIES),
            )?;
            let io: Box<dyn Io> = match tls {
                Some((connector, name)) => Box::new(connector.connect(name, tcp).await?),
                None => Box::new(tcp),
            };
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
        }
    });
    Ok(Connection {
        channel: endpoint.connect_with_connector_lazy(connector),
        address: key.address.clone(),
    })
}

/// A failed call, with the address and the call named.
fn call_error(address: &str, call: &str, status: &tonic::Status) -> ScalerError {
    let message = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    };
    ScalerError::Query(format!("external scaler {address}: {call}: {message}"))
}

/// `call` bounded by [`CALL_TIMEOUT`].
async fn bounded<T>(
    address: &str,
    name: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ScalerError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(call_error(address, name, &status)),
        Err(_) => Err(ScalerError::Query(format!(
            "external scaler {address}: {name}: no answer within {}s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// A stream's opening bounded by [`CALL_TIMEOUT`] (a scaler that takes the call and never
/// answers it counts as failed, and is asked again after the backoff).
async fn bounded_open<T>(
    open: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    tokio::time::timeout(CALL_TIMEOUT, open)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {}s",
                CALL_TIMEOUT.as_secs()
            )))
        })
}

/// KEDA's reading of the protocol's number pairs: the float when above 0, else the
/// (deprecated) integer.
fn float_or_int(float: f64, int: i64) -> f64 {
    if float > 0.0 {
        float
    } else {
        int as f64
    }
}

/// The target a metric spec gives: `targetSizeFloat` when above 0, else `targetSize`.
fn target_of(spec: &pb::MetricSpec) -> f64 {
    float_or_int(spec.target_size_float, spec.target_size)
}

/// The metric a `GetMetricSpec` answer names (its first spec): name and target, to
/// compare with what a trigger was built with.
fn announced(answer: &pb::GetMetricSpecResponse) -> Option<(String, MilliQuantity)> {
    answer.metric_specs.first().map(|s| {
        (
            s.metric_name.clone(),
            MilliQuantity::from_value(target_of(s)),
        )
    })
}

/// The value of a `GetMetrics` answer: each value's `metricValueFloat` when above 0, else
/// its `metricValue`, summed (as the HPA sums the values of an External metric).
fn value_of(answer: &pb::GetMetricsResponse) -> Option<f64> {
    if answer.metric_values.is_empty() {
        return None;
    }
    Some(
        answer
            .metric_values
            .iter()
            .map(|v| float_or_int(v.metric_value_float, v.metric_value))
            .sum(),
    )
}

/// Aborts a task when dropped: a push stream lives exactly as long as its scaler.
#[derive(Debug)]
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// The `external` / `external-push` scaler of one trigger.
#[derive(Debug)]
pub struct ExternalScaler {
    push: bool,
    spec: MetricSpec,
    /// The metric's name as the scaler gave it (sent back in `GetMetrics`).
    remote_name: String,
    reference: pb::ScaledObjectRef,
    conn: Arc<Connection>,
    _streams: Option<AbortOnDrop>,
}

impl ExternalScaler {
    /// Read the trigger, share its connection, and ask the scaler for its metric spec;
    /// for `external-push`, start its streams when pushes are listened to.
    pub async fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let push = ctx.trigger.type_ == "external-push";
        let params = ctx.params();
        let address = params.text(&SCALER_ADDRESS)?.to_string();
        let enable_tls = params.flag(&ENABLE_TLS)?.unwrap_or(false);
        let unsafe_ssl = params.flag(&UNSAFE_SSL)?.unwrap_or(false);
        let ca = params.text(&CA_CERT)?.map(str::to_string);
        let cert = params.text(&TLS_CLIENT_CERT)?;
        let key = params.text(&TLS_CLIENT_KEY)?;
        let cert_key = match (cert, key) {
            (Some(c), Some(k)) => Some((c.to_string(), k.to_string())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ScalerError::invalid(
                    "tlsClientKey",
                    "tlsClientCert is given without tlsClientKey",
                ))
            }
            (None, Some(_)) => {
                return Err(ScalerError::invalid(
                    "tlsClientCert",
                    "tlsClientKey is given without tlsClientCert",
                ))
            }
        };
        let target_type = ctx.target_type()?;
        let conn_key = ConnKey {
            tls: enable_tls || ca.is_some() || cert_key.is_some(),
            address,
            unsafe_ssl,
            ca,
            cert_key,
        };
        let clients = &ctx.pools.external;
        let conn = clients.connection(&conn_key)?;
        let reference = pb::ScaledObjectRef {
            name: ctx.name.to_string(),
            namespace: ctx.namespace.to_string(),
            scaler_metadata: ctx
                .trigger
                .metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut client = ExternalScalerClient::new(conn.channel.clone());
        let answer = bounded(
            &conn.address,
            "GetMetricSpec",
            client.get_metric_spec(reference.clone()),
        )
        .await?;
        let (remote_name, target) = first_spec(&conn.address, &answer, ctx.namespace, ctx.name)?;
        let spec = MetricSpec {
            name: format!("s{}-{remote_name}", ctx.index),
            target_type,
            target: MilliQuantity::from_value(target),
        };
        let streams = match clients.push.sender() {
            Some(sink) if push => Some(start_streams(
                conn.clone(),
                reference.clone(),
                sink,
                (ctx.namespace.to_string(), ctx.name.to_string(), ctx.index),
                (remote_name.clone(), spec.target),
            )),
            _ => None,
        };
        Ok(Self {
            push,
            spec,
            remote_name,
            reference,
            conn,
            _streams: streams,
        })
    }
}

/// The metric name and target of a `GetMetricSpec` answer: its first spec (the others are
/// named in a warning: one trigger serves one metric here).
fn first_spec(
    address: &str,
    answer: &pb::GetMetricSpecResponse,
    namespace: &str,
    name: &str,
) -> Result<(String, f64), ScalerError> {
    let Some(first) = answer.metric_specs.first() else {
        return Err(ScalerError::Query(format!(
            "external scaler {address}: GetMetricSpec returned no metric spec"
        )));
    };
    if first.metric_name.trim().is_empty() {
        return Err(ScalerError::Query(format!(
            "external scaler {address}: GetMetricSpec returned a metric spec without metricName"
        )));
    }
    let target = target_of(first);
    if !target.is_finite() || target <= 0.0 {
        return Err(ScalerError::Query(format!(
            "external scaler {address}: GetMetricSpec gave metric {:?} the target {target}: it must be above 0",
            first.metric_name
        )));
    }
    if answer.metric_specs.len() > 1 {
        let ignored: Vec<&str> = answer.metric_specs[1..]
            .iter()
            .map(|s| s.metric_name.as_str())
            .collect();
        warn!(scaledobject = %format!("{namespace}/{name}"), %address, metric = %first.metric_name, ?ignored,
            "the external scaler returned several metric specs; eventscale serves the first");
    }
    Ok((first.metric_name.clone(), target))
}

#[async_trait]
impl Scaler for ExternalScaler {
    fn scaler_type(&self) -> &'static str {
        if self.push {
            "external-push"
        } else {
            "external"
        }
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    async fn spec_changed(&self) -> bool {
        // Asked at every reconcile, as KEDA asks GetMetricSpec whenever it builds the HPA:
        // a scaler without StreamMetricSpec changes its target this way. A failed call
        // keeps the spec (the next reconcile asks again).
        let mut client = ExternalScalerClient::new(self.conn.channel.clone());
        let Ok(answer) = bounded(
            &self.conn.address,
            "GetMetricSpec",
            client.get_metric_spec(self.reference.clone()),
        )
        .await
        else {
            return false;
        };
        announced(&answer).is_some_and(|now| now != (self.remote_name.clone(), self.spec.target))
    }

    fn refresh_on_error(&self) -> bool {
        // The shared channel reconnects by itself; a new build would only ask
        // GetMetricSpec again of a scaler that just failed (or hung).
        false
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let address = &self.conn.address;
        let mut client = ExternalScalerClient::new(self.conn.channel.clone());
        let answer = bounded(
            address,
            "GetMetrics",
            client.get_metrics(pb::GetMetricsRequest {
                scaled_object_ref: Some(self.reference.clone()),
                metric_name: self.remote_name.clone(),
            }),
        )
        .await?;
        let value = value_of(&answer).ok_or_else(|| {
            ScalerError::Query(format!(
                "external scaler {address}: GetMetrics returned no value for metric {:?}",
                self.remote_name
            ))
        })?;
        let active = bounded(
            address,
            "IsActive",
            client.is_active(self.reference.clone()),
        )
        .await?
        .result;
        Ok(Sample { value, active })
    }
}

/// Start `external-push`'s streams: `StreamIsActive`, and `StreamMetricSpec` until the
/// server says it has none.
fn start_streams(
    conn: Arc<Connection>,
    reference: pb::ScaledObjectRef,
    sink: mpsc::UnboundedSender<PushEvent>,
    (namespace, name, trigger): (String, String, usize),
    built: (String, MilliQuantity),
) -> AbortOnDrop {
    let send = move |pushed: Pushed| {
        // The receiver is gone only when eventscale is stopping.
        let _ = sink.send(PushEvent {
            namespace: namespace.clone(),
            name: name.clone(),
            trigger,
            pushed,
            at: Instant::now(),
        });
    };
    let who = format!("{}/{}", reference.namespace, reference.name);
    let active = tokio::spawn(stream_is_active(
        conn.clone(),
        reference.clone(),
        send.clone(),
        who.clone(),
        trigger,
    ));
    let specs = tokio::spawn(stream_metric_spec(
        conn, reference, send, who, trigger, built,
    ));
    AbortOnDrop(vec![active.abort_handle(), specs.abort_handle()])
}

/// How one stream attempt ended.
enum Ended {
    /// Cleanly, or after delivering answers: the backoff starts again from the first wait.
    Healthy,
    /// Failed before any answer: the backoff grows.
    Failed,
    /// The server has no such call: never ask again.
    Unimplemented,
}

/// KEDA's backoff around `attempt`: 2 s, doubling to a minute, reset after a healthy end.
async fn with_backoff<F, Fut>(mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Ended>,
{
    let mut wait = BACKOFF_FIRST;
    loop {
        match attempt().await {
            Ended::Unimplemented => return,
            Ended::Healthy => wait = BACKOFF_FIRST,
            Ended::Failed => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(BACKOFF_MAX);
    }
}

async fn stream_is_active(
    conn: Arc<Connection>,
    reference: pb::ScaledObjectRef,
    send: impl Fn(Pushed),
    who: String,
    trigger: usize,
) {
    let opened_before = std::sync::atomic::AtomicBool::new(false);
    with_backoff(|| async {
        let mut client = ExternalScalerClient::new(conn.channel.clone());
        let opened = bounded_open(client.stream_is_active(reference.clone())).await;
        let mut stream = match opened {
            Ok(s) => {
                if opened_before.swap(true, Ordering::Relaxed) {
                    send(Pushed::Reopened);
                }
                s.into_inner()
            }
            Err(status) => {
                warn!(scaledobject = %who, trigger, error = %call_error(&conn.address, "StreamIsActive", &status), "push stream not opened; retrying with backoff");
                return Ended::Failed;
            }
        };
        debug!(scaledobject = %who, trigger, address = %conn.address, "StreamIsActive open");
        let mut delivered = false;
        loop {
            match stream.message().await {
                Ok(Some(answer)) => {
                    delivered = true;
                    send(Pushed::Active(answer.result));
                }
                Ok(None) => {
                    debug!(scaledobject = %who, trigger, "StreamIsActive ended by the scaler; reopening");
                    return Ended::Healthy;
                }
                Err(status) => {
                    warn!(scaledobject = %who, trigger, error = %call_error(&conn.address, "StreamIsActive", &status), "push stream lost; reopening with backoff");
                    return if delivered { Ended::Healthy } else { Ended::Failed };
                }
            }
        }
    })
    .await
}

async fn stream_metric_spec(
    conn: Arc<Connection>,
    reference: pb::ScaledObjectRef,
    send: impl Fn(Pushed),
    who: String,
    trigger: usize,
    built: (String, MilliQuantity),
) {
    with_backoff(|| async {
        let mut client = ExternalScalerClient::new(conn.channel.clone());
        let opened = bounded_open(client.stream_metric_spec(reference.clone())).await;
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                debug!(scaledobject = %who, trigger, "the scaler has no StreamMetricSpec; its metric spec is read when the trigger is built");
                return Ended::Unimplemented;
            }
            Err(status) => {
                debug!(scaledobject = %who, trigger, error = %call_error(&conn.address, "StreamMetricSpec", &status), "StreamMetricSpec not opened; retrying with backoff");
                return Ended::Failed;
            }
        };
        let mut delivered = false;
        loop {
            match stream.message().await {
                Ok(Some(answer)) => {
                    delivered = true;
                    // An answer without a spec says nothing new (and is not used).
                    if announced(&answer).is_some_and(|now| now != built) {
                        info!(scaledobject = %who, trigger, "the external scaler changed its metric spec; the trigger is built again and its HPA updated");
                        // The trigger built again has streams of its own, and this one
                        // ends with this scaler.
                        send(Pushed::SpecChanged);
                    }
                }
                Ok(None) => return Ended::Healthy,
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    return Ended::Unimplemented
                }
                Err(_) => return if delivered { Ended::Healthy } else { Ended::Failed },
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(
            parse_address("scaler.ns:9090").ok(),
            Some(("scaler.ns".to_string(), 9090))
        );
        assert_eq!(
            parse_address("dns:///scaler:80").ok(),
            Some(("scaler".to_string(), 80))
        );
        assert_eq!(
            parse_address("[::1]:9090").ok(),
            Some(("::1".to_string(), 9090))
        );
        for bad in [
            "scaler",
            "scaler:",
            ":9090",
            "scaler:0",
            "scaler:x",
            "::1:9090",
            "http://scaler:1",
            "unix:///tmp/s",
        ] {
            let e = parse_address(bad).expect_err(bad);
            assert_eq!(e.param(), Some("scalerAddress"), "{bad}");
            assert!(e.to_string().contains("give host:port"), "{e}");
        }
    }

    #[test]
    fn from_env_keys_carry_the_environment_value() {
        let t = ScaleTriggers {
            type_: "external".into(),
            metadata: [
                ("scalerAddress", "s:1"),
                ("queueFromEnv", "QUEUE"),
                ("tokenFromEnv", "UNSET"),
                ("queue", "kept"),
                ("pathFromEnvFile", "P"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        };
        let env: BTreeMap<String, String> = [("QUEUE", "orders"), ("P", "/x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = resolve_env(&t, &env);
        let want: BTreeMap<String, String> = [
            ("scalerAddress", "s:1"),
            ("queueFromEnv", "orders"),
            ("queue", "kept"),
            ("pathFromEnvFile", "P"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(r.metadata, want.into());
    }

    #[test]
    fn targets_and_values_prefer_floats() {
        let spec = |size, float| pb::MetricSpec {
            metric_name: "m".into(),
            target_size: size,
            target_size_float: float,
        };
        assert_eq!(target_of(&spec(10, 2.5)), 2.5);
        assert_eq!(target_of(&spec(10, 0.0)), 10.0);
        let v = |int, float| pb::MetricValue {
            metric_name: "m".into(),
            metric_value: int,
            metric_value_float: float,
        };
        let answer = pb::GetMetricsResponse {
            metric_values: vec![v(3, 0.0), v(100, 1.5)],
        };
        assert_eq!(value_of(&answer), Some(4.5));
        assert_eq!(value_of(&pb::GetMetricsResponse::default()), None);
    }

    #[test]
    fn metric_specs_are_checked() {
        let answer = |specs: Vec<(&str, i64, f64)>| pb::GetMetricSpecResponse {
            metric_specs: specs
                .into_iter()
                .map(|(n, s, f)| pb::MetricSpec {
                    metric_name: n.into(),
                    target_size: s,
                    target_size_float: f,
                })
                .collect(),
        };
        assert_eq!(
            first_spec(
                "a:1",
                &answer(vec![("q", 5, 0.0), ("r", 1, 0.0)]),
                "ns",
                "so"
            ),
            Ok(("q".to_string(), 5.0))
        );
        for (bad, why) in [
            (answer(vec![]), "no metric spec"),
            (answer(vec![("", 5, 0.0)]), "without metricName"),
            (answer(vec![("q", 0, 0.0)]), "must be above 0"),
            (answer(vec![("q", -3, 0.0)]), "must be above 0"),
        ] {
            let e = first_spec("a:1", &bad, "ns", "so").expect_err(why);
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[tokio::test]
    async fn backoff_doubles_to_a_minute_and_resets_after_a_healthy_stream() {
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let outcomes = Arc::new(Mutex::new(
            vec![
                Ended::Failed,
                Ended::Failed,
                Ended::Failed,
                Ended::Failed,
                Ended::Failed,
                Ended::Failed,
                Ended::Failed,
                Ended::Healthy,
                Ended::Failed,
                Ended::Unimplemented,
            ]
            .into_iter(),
        ));
        let s = seen.clone();
        with_backoff(|| {
            s.lock().expect("lock").push(started.elapsed().as_secs());
            let next = outcomes.lock().expect("lock").next();
            async move { next.unwrap_or(Ended::Unimplemented) }
        })
        .await;
        // Waits: 2, 4, 8, 16, 32, 60, 60, then healthy → 2, 4.
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![0, 2, 6, 14, 30, 62, 122, 182, 184, 188]
        );
    }
}
