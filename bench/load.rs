//! The load client every read figure uses: HTTP/1.1 keep-alive connections, or HTTP/2
//! streams over a few shared connections (as the aggregator multiplexes), over rustls;
//! closed loop (as fast as the server answers) or open loop (a fixed request rate), with
//! every request's latency kept for exact percentiles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where and what to read.
#[derive(Clone)]
pub struct Target {
    /// The server.
    pub addr: SocketAddr,
    /// The TLS client configuration (trust, and a client certificate or none).
    pub tls: Arc<rustls::ClientConfig>,
    /// Name the server certificate is checked against.
    pub server_name: ServerName<'static>,
    /// Request targets (path and query), used in turn.
    pub paths: Arc<Vec<String>>,
    /// Extra request headers (the front proxy's X-Remote-User and X-Remote-Group).
    pub headers: Arc<Vec<(String, String)>>,
    /// HTTP/2 over this many connections, every task a stream on one of them (the TLS
    /// configuration must offer `h2` by ALPN); `None` for HTTP/1.1, a connection per task.
    pub http2_connections: Option<usize>,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests answered otherwise, or failed.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of every 200, in nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// Open loop only: requests sent more than 2 ms after their slot (the client or the
    /// server fell behind the schedule).
    pub late: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Answered requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile(&self.latencies, q) as f64 / 1e6
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.late += other.late;
        self.latencies.extend(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The nearest-rank `q` quantile of `sorted` (0 when empty).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One connection (HTTP/1.1), or a handle on a shared one (HTTP/2).
#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Empty<Bytes>>>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

async fn connect(t: &Target) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(t.addr)
        .await
        .with_context(|| format!("connecting to {}", t.addr))?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(t.tls.clone())
        .connect(t.server_name.clone(), tcp)
        .await
        .context("TLS handshake")?;
    if t.http2_connections.is_some() {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        return Ok(Sender::H2(sender));
    }
    let (sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Sender::H1(Arc::new(tokio::sync::Mutex::new(sender))))
}

/// One GET; (status, body).
async fn request(sender: &mut Sender, t: &Target, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let mut req = hyper::Request::get(path);
    if let Sender::H1(_) = sender {
        req = req.header(hyper::header::HOST, "eventscale");
    } else {
        req = req.uri(format!("https://eventscale{path}"));
    }
    for (k, v) in t.headers.iter() {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::new()).context("request")?;
    let resp = match sender {
        Sender::H1(s) => {
            // Each task owns its HTTP/1.1 connection: the lock is never contended.
            let mut s = s.lock().await;
            s.ready().await.context("connection closed")?;
            s.send_request(req).await
        }
        Sender::H2(s) => {
            s.ready().await.context("connection closed")?;
            s.send_request(req).await
        }
    }
    .context("request failed")?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the body")?;
    Ok((code, body.to_bytes()))
}

/// One GET; Ok(true) for a 200 whose body was read whole.
async fn get(sender: &mut Sender, t: &Target, path: &str) -> anyhow::Result<bool> {
    let (code, body) = request(sender, t, path).await?;
    anyhow::ensure!(!body.is_empty(), "empty body");
    Ok(code == 200)
}

/// Read one answer of `path` (for checks before a run).
pub async fn fetch(t: &Target, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = connect(t).await?;
    let (code, body) = request(&mut s, t, path).await?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The shared connections of an HTTP/2 run (none for HTTP/1.1).
async fn pool(t: &Target) -> anyhow::Result<Vec<Sender>> {
    let mut senders = Vec::new();
    for _ in 0..t.http2_connections.unwrap_or(0) {
        senders.push(connect(t).await?);
    }
    Ok(senders)
}

/// Task `c`'s connection: its own (HTTP/1.1) or one of the shared ones (HTTP/2); or the
/// failure counted in `out`.
async fn open(t: &Target, c: usize, shared: &[Sender], out: &mut Outcome) -> Option<Sender> {
    if !shared.is_empty() {
        return Some(shared[c % shared.len()].clone());
    }
    match connect(t).await {
        Ok(s) => Some(s),
        Err(e) => {
            out.errors += 1;
            out.first_error = Some(format!("{e:#}"));
            None
        }
    }
}

/// One read on `sender`, counted in `out`; after a failure the connection is replaced.
/// False when no new connection could be made (the caller stops).
async fn step(sender: &mut Sender, t: &Target, path: &str, out: &mut Outcome) -> bool {
    let sent = Instant::now();
    match get(sender, t, path).await {
        Ok(true) => {
            out.ok += 1;
            out.latencies.push(sent.elapsed().as_nanos() as u64);
        }
        Ok(false) => {
            out.errors += 1;
            out.first_error
                .get_or_insert_with(|| format!("non-200 answer to {path}"));
        }
        Err(e) => {
            out.errors += 1;
            out.first_error.get_or_insert_with(|| format!("{e:#}"));
            match connect(t).await {
                Ok(s) => *sender = s,
                Err(_) => return false,
            }
        }
    }
    true
}

/// `connections` connections reading as fast as answers come, for `duration`.
pub async fn closed_loop(t: &Target, connections: usize, duration: Duration) -> Outcome {
    let shared = match pool(t).await {
        Ok(p) => Arc::new(p),
        Err(e) => return failed(e),
    };
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (t, shared) = (t.clone(), shared.clone());
            tokio::spawn(async move {
                let mut out = Outcome::default();
                let Some(mut sender) = open(&t, c, &shared, &mut out).await else {
                    return out;
                };
                let mut i = c;
                while Instant::now() < deadline {
                    let path = &t.paths[i % t.paths.len()];
                    i += 1;
                    if !step(&mut sender, &t, path, &mut out).await {
                        return out;
                    }
                }
                out
            })
        })
        .collect();
    collect(tasks, started).await
}

/// `rate` requests per second spread over `connections` connections, for `duration`.
/// Latency is measured from the moment each request is sent; requests the schedule had
/// to send late (more than 2 ms) are counted in [`Outcome::late`].
pub async fn open_loop(t: &Target, connections: usize, rate: f64, duration: Duration) -> Outcome {
    let shared = match pool(t).await {
        Ok(p) => Arc::new(p),
        Err(e) => return failed(e),
    };
    let started = Instant::now() + Duration::from_millis(50);
    let per_conn = Duration::from_secs_f64(connections as f64 / rate);
    let total = (rate * duration.as_secs_f64()) as u64;
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (t, shared) = (t.clone(), shared.clone());
            tokio::spawn(async move {
                let mut out = Outcome::default();
                let Some(mut sender) = open(&t, c, &shared, &mut out).await else {
                    return out;
                };
                let offset = per_conn.mul_f64(c as f64 / connections as f64);
                let mut k: u64 = 0;
                loop {
                    let n = k * connections as u64 + c as u64;
                    if n >= total {
                        break;
                    }
                    let slot = started + offset + per_conn.mul_f64(k as f64);
                    k += 1;
                    tokio::time::sleep_until(slot.into()).await;
                    if Instant::now().duration_since(slot) > Duration::from_millis(2) {
                        out.late += 1;
                    }
                    let path = &t.paths[(n as usize) % t.paths.len()];
                    if !step(&mut sender, &t, path, &mut out).await {
                        return out;
                    }
                }
                out
            })
        })
        .collect();
    let mut out = collect(tasks, Instant::now()).await;
    out.elapsed = started.elapsed();
    out
}

fn failed(e: anyhow::Error) -> Outcome {
    Outcome {
        errors: 1,
        first_error: Some(format!("{e:#}")),
        ..Outcome::default()
    }
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Outcome>>, started: Instant) -> Outcome {
    let mut out = Outcome::default();
    for t in tasks {
        match t.await {
            Ok(o) => out.merge(o),
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out.elapsed = started.elapsed();
    out.latencies.sort_unstable();
    out
}
