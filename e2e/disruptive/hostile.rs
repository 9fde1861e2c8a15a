//! Hostile clients on eventscale's API port (the one the APIService points at), while the
//! HPA's path keeps reading: thousands of idle connections, connections that never
//! handshake, slowloris, oversized headers and URIs, HTTP/2 rapid reset and CONTINUATION
//! floods, and malformed TLS. What must hold: every legitimate read through the real
//! aggregator (kube-apiserver → APIService → eventscale) succeeds during each attack, the
//! port closes what it must, eventscale's memory stays bounded, and the process is the
//! same at the end. The reads' latency during each attack is printed beside the
//! baseline's; the figures are in docs/reliability.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::sources::sources_env;
use crate::{apply, client, cluster, eventscale_metric, eventually, pid_of, Namespace};

/// eventscale's default `--max-connections`.
const MAX_CONNECTIONS: usize = 1000;

/// Reads through the aggregator at 20 per second while `attack` runs (and for 3 s at
/// least): their latencies, and what went wrong with any that failed.
async fn reading_during<F: std::future::Future<Output = T>, T>(
    path: &str,
    attack: F,
) -> (T, Reads) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (stop, path) = (stop.clone(), path.to_string());
        async move {
            let client = client().await;
            let mut reads = Reads::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let req = http::Request::get(&path).body(Vec::new()).expect("request");
                match tokio::time::timeout(Duration::from_secs(10), client.request_text(req)).await
                {
                    Ok(Ok(body)) if body.contains("\"value\"") => {
                        reads.latencies.push(started.elapsed())
                    }
                    Ok(Ok(body)) => reads.failures.push(format!("no value: {body}")),
                    Ok(Err(e)) => reads.failures.push(e.to_string()),
                    Err(_) => reads.failures.push("no answer in 10 s".into()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            reads
        }
    });
    // Reads go on for at least 3 s, so a quick attack still has enough reads beside it.
    let (out, ()) = tokio::join!(attack, tokio::time::sleep(Duration::from_secs(3)));
    stop.store(true, Ordering::Relaxed);
    (out, reader.await.expect("reader"))
}

#[derive(Default)]
struct Reads {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl Reads {
    fn quantile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Print the figures and assert every read succeeded.
    fn check(&self, phase: &str) {
        eprintln!(
            "hostile: {phase:<34} reads {:>4}  p50 {:>6.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  failed {}",
            self.latencies.len(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0)),
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{phase}: legitimate reads failed: {:?}",
            self.failures
        );
        assert!(self.latencies.len() >= 10, "{phase}: too few reads to tell");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// eventscale's resident memory, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn adapter_addr() -> std::net::SocketAddr {
    cluster()
        .adapter_url
        .trim_start_matches("https://")
        .parse()
        .expect("the adapter's address")
}

/// A TLS connection to the API port offering `alpn` (an attacker checks no certificate).
async fn tls(alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let mut cfg = scaler_core::tls::client_config(&scaler_core::tls::ClientSettings {
        ca: None,
        cert_key: None,
        unsafe_ssl: true,
    })
    .map_err(std::io::Error::other)?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(adapter_addr()).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// Whether the server has closed `stream` (end of stream or an error) within `wait`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A GOAWAY or an answer: read on until the end.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Count of `streams` the server closed within `wait`, all waited on together.
async fn count_closed<S: tokio::io::AsyncRead + Unpin + Send + 'static>(
    streams: Vec<S>,
    wait: Duration,
) -> usize {
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::spawn(async move { closed_within(&mut s, wait).await }))
        .collect();
    let mut n = 0;
    for t in tasks {
        n += usize::from(t.await.unwrap_or(false));
    }
    n
}

// ---- HTTP/2 frames, written by hand: an attacker's frames are the point of the test ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `high`.
fn hpack_int(out: &mut Vec<u8>, high: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header field, not indexed, new name.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// `GET /apis` over https (static-table entries, and :authority by indexed name).
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x87];
    b.push(0x04); // :path, literal without indexing, indexed name 4
    hpack_int(&mut b, 0, 7, "/apis".len());
    b.extend_from_slice(b"/apis");
    b.push(0x01); // :authority
    hpack_int(&mut b, 0, 7, "localhost".len());
    b.extend_from_slice(b"localhost");
    b
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// What a flood of frames met.
struct Flooded {
    /// Frames written before the connection failed (or all of them).
    sent: usize,
    /// Whether the server sent a GOAWAY.
    goaway: bool,
    /// Whether the server closed the connection (rather than going silent for 15 s).
    closed: bool,
}

/// Writes `frames` until the server closes the connection (or all are written).
async fn flood(tls: TlsStream<TcpStream>, frames: impl Iterator<Item = Vec<u8>>) -> Flooded {
    let (mut rd, mut wr) = tokio::io::split(tls);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Err(_) => break false,
                Ok(Ok(n)) => {
                    seen.extend_from_slice(&buf[..n]);
                    // Only the start is walked for frames; keep a bounded prefix.
                    seen.truncate(1 << 20);
                }
            }
        };
        (goaway_in(&seen), closed)
    });
    let mut sent = 0;
    if wr.write_all(PREFACE).await.is_err()
        || wr.write_all(&frame(SETTINGS, 0, 0, &[])).await.is_err()
    {
        let (goaway, closed) = reader.await.unwrap_or((false, false));
        return Flooded {
            sent: 0,
            goaway,
            closed,
        };
    }
    let mut batch = Vec::new();
    for f in frames {
        batch.extend_from_slice(&f);
        sent += 1;
        if batch.len() >= 16 * 1024 {
            if wr.write_all(&batch).await.is_err() {
                break;
            }
            batch.clear();
        }
    }
    let _ = wr.write_all(&batch).await;
    let _ = wr.flush().await;
    // Done sending: the server closes, or the reader gives up after 15 s of silence.
    let (goaway, closed) = reader.await.unwrap_or((false, false));
    Flooded {
        sent,
        goaway,
        closed,
    }
}

/// Whether the bytes a server sent hold a GOAWAY frame (walking frames from the start).
fn goaway_in(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        if bytes[at + 3] == GOAWAY {
            return true;
        }
        at += 9 + len;
    }
    false
}

#[tokio::test]
async fn hostile_clients_on_the_api_port_leave_the_hpa_reads_served() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let env = sources_env(&["prometheus"]);
    let url = env["EVENTSCALE_PROMETHEUS_URL"].clone();
    let ns = Namespace::create("e2e-hostile");
    apply(
        &ns.0,
        &crate::scaled_deployments(1, &crate::one_cached_question(&url, 2)),
    );
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/s0-prometheus?labelSelector=scaledobject.keda.sh%2Fname%3Dweb0",
        ns.0
    );
    let reader = client().await;
    eventually(Duration::from_secs(60), "the metric is served", || {
        let (reader, path) = (reader.clone(), path.clone());
        async move {
            let req = http::Request::get(&path).body(Vec::new()).ok()?;
            reader
                .request_text(req)
                .await
                .ok()
                .filter(|b| b.contains("\"value\""))
        }
    })
    .await;
    let pid = pid_of("eventscale").expect("eventscale's PID file");
    let metric = |s: &str| eventscale_metric(&format!("eventscale_{s}"));

    let ((), baseline) = reading_during(&path, tokio::time::sleep(Duration::from_secs(5))).await;
    baseline.check("baseline");
    let rss_before = rss_mib(pid);

    // 1. Twice the cap of idle TLS connections: the port evicts the ones that never sent a
    //    request, keeps at most the cap open, and the aggregator's connection is not among
    //    the evicted.
    let evicted_before = metric("apiserver_connections_closed_total{reason=\"evicted\"}");
    let ((held, rss_peak), reads) = reading_during(&path, async {
        let mut held = Vec::new();
        let mut peak = 0f64;
        for _ in 0..(2 * MAX_CONNECTIONS / 100) {
            let batch = futures::future::join_all((0..100).map(|_| tls(b"h2"))).await;
            held.extend(batch.into_iter().filter_map(Result::ok));
            peak = peak.max(rss_mib(pid));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        (held, peak.max(rss_mib(pid)))
    })
    .await;
    reads.check("2,000 idle TLS connections");
    let open = metric("apiserver_connections");
    let evicted = metric("apiserver_connections_closed_total{reason=\"evicted\"}") - evicted_before;
    let handshaken = held.len();
    let closed = count_closed(held, Duration::from_secs(3)).await;
    eprintln!(
        "hostile: idle flood: {handshaken} handshakes, {evicted} evicted, {closed} seen closed, \
         {open} open; RSS {rss_before:.1} -> {rss_peak:.1} MiB ({:.1} KiB per connection held)",
        (rss_peak - rss_before) * 1024.0 / MAX_CONNECTIONS as f64
    );
    assert!(
        handshaken >= 2 * MAX_CONNECTIONS - 50,
        "handshakes: {handshaken}"
    );
    assert!(
        open <= (MAX_CONNECTIONS + 5) as f64,
        "open connections {open} above the cap"
    );
    assert!(
        evicted >= (handshaken - MAX_CONNECTIONS) as f64 - 5.0,
        "only {evicted} evicted for {handshaken} connections"
    );
    assert!(
        closed + 50 >= handshaken - MAX_CONNECTIONS,
        "{closed} of the evicted saw their connection closed"
    );
    assert!(
        rss_peak - rss_before < 256.0,
        "RSS grew {:.1} MiB under the idle flood",
        rss_peak - rss_before
    );

    // 2. Connections that never start the TLS handshake are closed after its 10 s.
    let ((), reads) = reading_during(&path, async {
        let mut bare = Vec::new();
        for _ in 0..200 {
            if let Ok(s) = TcpStream::connect(adapter_addr()).await {
                bare.push(s);
            }
        }
        let n = bare.len();
        let closed = count_closed(bare, Duration::from_secs(14)).await;
        eprintln!("hostile: {closed} of {n} silent TCP connections closed within 14 s");
        assert_eq!(closed, n, "silent connections left open");
    })
    .await;
    reads.check("200 silent TCP connections");

    // 3. Malformed TLS: garbage instead of a ClientHello is refused at once; a record
    //    header promising a ClientHello that never comes waits out the handshake timeout.
    let ((), reads) = reading_during(&path, async {
        let mut garbage = Vec::new();
        for i in 0..100u32 {
            if let Ok(mut s) = TcpStream::connect(adapter_addr()).await {
                let junk: Vec<u8> = (0..1024u32).map(|j| (i * 31 + j * 17) as u8).collect();
                let _ = s.write_all(&junk).await;
                garbage.push(s);
            }
        }
        let n = garbage.len();
        let closed = count_closed(garbage, Duration::from_secs(2)).await;
        assert_eq!(closed, n, "garbage TLS left open");
        let mut truncated = Vec::new();
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect(adapter_addr()).await {
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01]).await;
                truncated.push(s);
            }
        }
        let n = truncated.len();
        let closed = count_closed(truncated, Duration::from_secs(14)).await;
        assert_eq!(closed, n, "truncated ClientHellos left open");
    })
    .await;
    reads.check("malformed TLS");

    // 4. Slowloris: HTTP/1.1 headers a byte at a time are cut off after the 32 s a request
    //    header may take, as kube-apiserver's own port does.
    let ((), reads) = reading_during(&path, async {
        let mut slow = Vec::new();
        for _ in 0..100 {
            if let Ok(mut s) = tls(b"http/1.1").await {
                let _ = s
                    .write_all(b"GET /apis HTTP/1.1\r\nHost: localhost\r\n")
                    .await;
                slow.push(s);
            }
        }
        let n = slow.len();
        let started = Instant::now();
        let mut open: Vec<_> = slow.into_iter().map(Some).collect();
        while started.elapsed() < Duration::from_secs(40) && open.iter().any(Option::is_some) {
            for s in open.iter_mut() {
                let Some(stream) = s else { continue };
                if stream.write_all(b"X").await.is_err()
                    || closed_within(stream, Duration::from_millis(1)).await
                {
                    *s = None;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let left = open.iter().filter(|s| s.is_some()).count();
        eprintln!(
            "hostile: slowloris: {} of {n} cut off within {:.0} s",
            n - left,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(left, 0, "slowloris connections still open after 40 s");
    })
    .await;
    reads.check("100 slowloris connections");

    // 5. Oversized URI and headers: a Status for a URI over the limit, 431 or a closed
    //    connection for a header block beyond 64 KiB; never a 2xx.
    let ((), reads) = reading_during(&path, async {
        let mut s = tls(b"http/1.1").await.expect("TLS");
        let long = "a".repeat(16 * 1024);
        let req = format!(
            "GET /apis/external.metrics.k8s.io/v1beta1/namespaces/x/{long} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        // Unauthenticated, so refused before the URI is looked at: a Status either way.
        assert!(answer.starts_with("HTTP/1.1 4"), "long URI: {answer}");
        assert!(answer.contains("\"kind\":\"Status\""), "long URI: {answer}");

        for size in [100 * 1024, 4 << 20] {
            let mut s = tls(b"http/1.1").await.expect("TLS");
            let head = format!("GET /apis HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "b".repeat(size));
            let _ = s.write_all(head.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
                "a {size}-byte header got: {answer}"
            );
        }
    })
    .await;
    reads.check("oversized URI and headers");

    // 6. HTTP/2 rapid reset: requests cancelled as soon as they are sent.
    let (reset, reads) = reading_during(&path, async {
        let conn = tls(b"h2").await.expect("TLS");
        let block = get_block();
        let frames = (0..50_000u32).flat_map(move |i| {
            let id = 2 * i + 1;
            [
                frame(HEADERS, END_HEADERS | END_STREAM, id, &block),
                frame(RST_STREAM, 0, id, &8u32.to_be_bytes()),
            ]
        });
        flood(conn, frames).await
    })
    .await;
    eprintln!(
        "hostile: rapid reset: {} streams sent, GOAWAY {}, closed {}",
        reset.sent / 2,
        reset.goaway,
        reset.closed
    );
    reads.check("HTTP/2 rapid reset");
    assert!(
        reset.goaway && reset.closed && reset.sent < 100_000,
        "rapid reset: {} streams went through with no GOAWAY and close",
        reset.sent / 2
    );

    // 7. CONTINUATION flood: one header block that never ends.
    let (continued, reads) = reading_during(&path, async {
        let conn = tls(b"h2").await.expect("TLS");
        let mut chunk = Vec::new();
        while chunk.len() < 16 * 1024 - 600 {
            hpack_literal(&mut chunk, "x-flood", &"c".repeat(500));
        }
        let first = frame(HEADERS, END_STREAM, 1, &get_block());
        let frames = std::iter::once(first)
            .chain(std::iter::repeat_with(move || frame(CONTINUATION, 0, 1, &chunk)).take(1024));
        flood(conn, frames).await
    })
    .await;
    eprintln!(
        "hostile: CONTINUATION flood: {} frames (about {} KiB) written before the close, GOAWAY {}, closed {}",
        continued.sent,
        continued.sent * 16,
        continued.goaway,
        continued.closed
    );
    reads.check("HTTP/2 CONTINUATION flood");
    assert!(
        continued.closed && continued.sent < 1024,
        "the whole 16 MiB header block was taken"
    );

    let rss_after = rss_mib(pid);
    eprintln!("hostile: RSS before {rss_before:.1} MiB, peak under the idle flood {rss_peak:.1} MiB, after {rss_after:.1} MiB");
    assert_eq!(pid_of("eventscale"), Some(pid), "eventscale restarted");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "eventscale is gone"
    );
}
