//! Figure 1: cached metric reads over TLS. eventscale's real server, router, authentication,
//! authorization and provider, over a store of ScaledObjects and a filled metric cache,
//! against a bare hyper+rustls server answering the same bytes as a constant, with the same
//! TLS configuration, the same listener and the same client, in the same run.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kube::runtime::{reflector, watcher};
use metrics_adapter::auth::authn::ConfigHolder;
use metrics_adapter::auth::authz::{Attributes, Decision};
use metrics_adapter::auth::config::AuthnConfig;
use metrics_adapter::auth::{Auth, Reviews, User};
use metrics_adapter::provider::ScaledObjectProvider;
use metrics_adapter::telemetry::Telemetry;
use metrics_adapter::{certs, routes, server};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use scaler_core::poll::{Cached, MetricCache};
use scaler_core::ScaledObject;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::load::{self, Outcome, Target};
use crate::report::{Report, Row};

/// ScaledObjects in the store.
const OBJECTS: usize = 1_000;
/// Distinct ScaledObjects the client reads, in turn.
const READ: usize = 64;
const NAMESPACE: &str = "bench";
const METRIC: &str = "s0-prometheus";

/// What the HPA controller's reads carry through the aggregator.
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

/// Answers every review "allowed" and counts them. The reviews' answers are cached for
/// 10 s, so a run asks once per distinct caller and path: this figure measures the cache
/// hit, which is what every read but the first costs.
#[derive(Default)]
struct AllowAll(std::sync::atomic::AtomicU64);

#[async_trait]
impl Reviews for AllowAll {
    async fn token_review(&self, _: &str) -> Result<Option<User>, String> {
        Ok(None)
    }
    async fn access_review(&self, _: &User, _: &Attributes) -> Result<Decision, String> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Decision {
            allowed: true,
            reason: String::new(),
        })
    }
}

fn scaled_object(i: usize) -> anyhow::Result<ScaledObject> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": format!("so-{i}"), "namespace": NAMESPACE,
                     "uid": format!("00000000-0000-0000-0000-{i:012}"), "resourceVersion": "1"},
        "spec": {"scaleTargetRef": {"name": format!("web-{i}")}, "pollingInterval": 30,
                 "triggers": [{"type": "prometheus", "useCachedMetrics": true, "metadata": {
                     "serverAddress": "http://127.0.0.1:19090",
                     "query": "sum(rate(http_requests_total[1m]))", "threshold": "10"}}]}
    }))?)
}

fn fill(cache: &MetricCache) {
    for i in 0..OBJECTS {
        let entry = Cached {
            value: Ok(2.5 + i as f64),
            active: true,
            at: Instant::now(),
            target: Some((10.0, scaler_core::MetricTargetType::AverageValue)),
        };
        cache.put(
            NAMESPACE,
            &format!("so-{i}"),
            HashMap::from([(METRIC.to_string(), entry)]),
        );
    }
}

/// A CA and a client certificate it signed, as the front proxy (the aggregator) holds.
fn front_proxy() -> anyhow::Result<(String, CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "bench-front-proxy-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, "front-proxy-client");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((
        ca_cert.pem(),
        cert.der().clone(),
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| anyhow::anyhow!(e))?,
    ))
}

fn client_config(
    ca_pem: &str,
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    http2: bool,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => b.with_client_auth_cert(vec![cert], key)?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(cfg))
}

/// The bare server: the same listener and TLS configuration, one constant answer.
async fn bare(listener: TcpListener, tls: Arc<rustls::ServerConfig>, body: Bytes) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // As eventscale's server sets it.
        let _ = stream.set_nodelay(true);
        let (acceptor, body) = (acceptor.clone(), body.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |_req| {
                let body = body.clone();
                async move {
                    hyper::Response::builder()
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(body))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

struct Servers {
    eventscale: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    reviews: Arc<AllowAll>,
    ca_pem: String,
    front_proxy: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

/// Start eventscale's server on `rt` (its own runtime and worker threads, as `run` has).
fn start(rt: &tokio::runtime::Runtime, dir: &Path) -> anyhow::Result<Servers> {
    certs::ensure_dir(dir, &certs::CertOptions::new("eventscale", NAMESPACE))?;
    let tls = server::tls_config(&dir.join("tls.crt"), &dir.join("tls.key"))?;
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt"))?;
    let (fp_ca, fp_cert, fp_key) = front_proxy()?;
    let reviews = Arc::new(AllowAll::default());
    let reviews2 = reviews.clone();
    let tls2 = tls.clone();
    let eventscale = rt.block_on(async move {
        let telemetry = Telemetry::new();
        let (store, mut writer) = reflector::store::<ScaledObject>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for i in 0..OBJECTS {
            writer.apply_watcher_event(&watcher::Event::InitApply(scaled_object(i)?));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        // Never called: every read is answered from the cache.
        let client = kube::Client::try_from(kube::Config::new("https://127.0.0.1:9".parse()?))?;
        let runtimes = Arc::new(scaler_core::runtime::Runtimes::new(
            Arc::new(scaler_core::resolve::KubeSourceFactory::new(client.clone())),
            Arc::new(scaler_core::runtime::Unwatched),
            None,
            "eventscale".into(),
            telemetry.clone(),
        ));
        let cache = runtimes.cache.clone();
        fill(&cache);
        // The poller refreshes the cache every interval; so does this, every 10 s.
        let c2 = cache.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                fill(&c2);
            }
        });
        let provider = Arc::new(ScaledObjectProvider::new(
            store,
            client,
            runtimes,
            telemetry.clone(),
            activator::membership::Shard::whole("bench"),
            None,
        ));
        let holder = Arc::new(ConfigHolder::default());
        let data = BTreeMap::from([
            ("requestheader-client-ca-file".to_string(), fp_ca),
            (
                "requestheader-allowed-names".into(),
                r#"["front-proxy-client"]"#.into(),
            ),
            (
                "requestheader-username-headers".into(),
                r#"["X-Remote-User"]"#.into(),
            ),
            (
                "requestheader-group-headers".into(),
                r#"["X-Remote-Group"]"#.into(),
            ),
            (
                "requestheader-extra-headers-prefix".into(),
                r#"["X-Remote-Extra-"]"#.into(),
            ),
        ]);
        let (cfg, errors) = AuthnConfig::from_data(&data);
        anyhow::ensure!(errors.is_empty(), "front-proxy configuration: {errors:?}");
        holder.set(cfg);
        let auth = Arc::new(Auth::new(holder, reviews2, true, telemetry.clone()));
        // As `eventscale run` serves: metric reads directly, the rest by the router.
        let reads = Arc::new(routes::MetricReads::new(
            provider.clone(),
            auth.clone(),
            telemetry.clone(),
        ));
        let app = routes::app(provider, auth, telemetry.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let serving = server::Serving {
            telemetry,
            ..Default::default()
        };
        tokio::spawn(async move {
            let _ = server::serve_with(
                listener,
                tls2,
                app,
                Some(reads),
                serving,
                std::future::pending(),
            )
            .await;
        });
        Ok::<_, anyhow::Error>(addr)
    })?;
    Ok(Servers {
        eventscale,
        tls,
        reviews,
        ca_pem,
        front_proxy: (fp_cert, fp_key),
    })
}

/// Knobs of the figure.
pub struct Settings {
    /// Closed-loop connections.
    pub connections: usize,
    /// Length of each measured run.
    pub duration: Duration,
    /// The fixed rate of the latency runs.
    pub rate: f64,
    /// Closed-loop rounds per server (the median is reported).
    pub rounds: usize,
}

fn row(report: &mut Report, name: &str, o: &Outcome, note: String) {
    report.push(Row::new(
        "reads",
        name,
        vec![
            ("req/s", o.throughput()),
            ("p50 ms", o.quantile_ms(0.50)),
            ("p99 ms", o.quantile_ms(0.99)),
            ("max ms", o.quantile_ms(1.0)),
            ("errors", o.errors as f64),
        ],
        note,
    ));
}

/// Run figure 1 and add its rows to `report`.
pub fn run(report: &mut Report, s: &Settings) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("eventscale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // eventscale's process has one worker per core; the client gets a runtime of its own.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("client")
        .build()?;
    let servers = start(&server_rt, &dir)?;
    let name = ServerName::try_from("localhost")?.to_owned();
    let paths: Arc<Vec<String>> = Arc::new(
        (0..READ)
            .map(|i| {
                format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{METRIC}?labelSelector=scaledobject.keda.sh%2Fname%3Dso-{i}")
            })
            .collect(),
    );
    let cert = || {
        Some((
            servers.front_proxy.0.clone(),
            servers.front_proxy.1.clone_key(),
        ))
    };
    let with_cert = client_config(&servers.ca_pem, cert(), false)?;
    let authenticated = Target {
        addr: servers.eventscale,
        tls: with_cert.clone(),
        server_name: name.clone(),
        paths: paths.clone(),
        headers: Arc::new(vec![
            ("X-Remote-User".into(), HPA_USER.into()),
            ("X-Remote-Group".into(), "system:serviceaccounts".into()),
            (
                "X-Remote-Group".into(),
                "system:serviceaccounts:kube-system".into(),
            ),
            ("X-Remote-Group".into(), "system:authenticated".into()),
        ]),
        http2_connections: None,
    };
    let anonymous = Target {
        tls: client_config(&servers.ca_pem, None, false)?,
        headers: Arc::new(Vec::new()),
        ..authenticated.clone()
    };
    // What eventscale answers is what the bare server answers, byte for byte.
    let (code, body) = client_rt.block_on(load::fetch(&authenticated, &paths[0]))?;
    anyhow::ensure!(
        code == 200 && body.contains("ExternalMetricValueList"),
        "eventscale answered {code}: {body}"
    );
    let (code, anon_body) = client_rt.block_on(load::fetch(&anonymous, &paths[0]))?;
    anyhow::ensure!(code == 200, "anonymous read answered {code}: {anon_body}");
    let tls = servers.tls.clone();
    let bare_addr = server_rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(bare(listener, tls, Bytes::from(body)));
        Ok::<_, anyhow::Error>(addr)
    })?;
    let bare_target = Target {
        addr: bare_addr,
        ..authenticated.clone()
    };
    // HTTP/2 as the aggregator speaks it: every task a stream, over two connections.
    let authenticated_h2 = Target {
        tls: client_config(&servers.ca_pem, cert(), true)?,
        http2_connections: Some(2),
        ..authenticated.clone()
    };
    let bare_h2 = Target {
        addr: bare_addr,
        ..authenticated_h2.clone()
    };
    if let Some(secs) = std::env::var("EVENTSCALE_BENCH_PROFILE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        // For a profiler attached to this process: one path only (eventscale's
        // authenticated one unless EVENTSCALE_BENCH_PROFILE_TARGET says bare or anonymous).
        let which = std::env::var("EVENTSCALE_BENCH_PROFILE_TARGET").unwrap_or_default();
        let t = match which.as_str() {
            "bare" => &bare_target,
            "anonymous" => &anonymous,
            _ => &authenticated,
        };
        let o = client_rt.block_on(load::closed_loop(
            t,
            s.connections,
            Duration::from_secs(secs),
        ));
        row(report, "profile run", &o, "EVENTSCALE_BENCH_PROFILE".into());
        return Ok(());
    }
    let targets = [
        ("bare hyper+rustls (constant body)", &bare_target),
        (
            "eventscale, front-proxy cert + SAR cache hit",
            &authenticated,
        ),
        ("eventscale, anonymous (no client cert)", &anonymous),
        ("bare hyper+rustls (constant body), HTTP/2", &bare_h2),
        (
            "eventscale, front-proxy cert + SAR cache hit, HTTP/2",
            &authenticated_h2,
        ),
    ];
    // Rounds, each running every server in a rotated order, so drift in the machine's
    // speed (the other core's load, frequency) falls on all alike; each server's row is
    // its median round.
    for (_, t) in targets {
        // Warm up: connections, the SAR cache, the allocator.
        let warm = s.duration.min(Duration::from_secs(1));
        client_rt.block_on(load::closed_loop(t, s.connections, warm));
    }
    let mut runs: Vec<Vec<Outcome>> = vec![Vec::new(); targets.len()];
    for round in 0..s.rounds.max(1) {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let o = client_rt.block_on(load::closed_loop(targets[i].1, s.connections, s.duration));
            runs[i].push(o);
        }
    }
    let mut throughput = Vec::new();
    for ((label, _), mut outcomes) in targets.iter().zip(runs) {
        outcomes.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
        let all: Vec<String> = outcomes
            .iter()
            .map(|o| format!("{:.0}", o.throughput()))
            .collect();
        let median = outcomes.swap_remove(outcomes.len() / 2);
        throughput.push(median.throughput());
        let note = format!(
            "closed loop, {} connections; median of {} rounds (req/s {})",
            s.connections,
            all.len(),
            all.join(", ")
        );
        row(report, &format!("{label}: max throughput"), &median, note);
    }
    for (label, t) in targets {
        let o = client_rt.block_on(load::open_loop(t, 16, s.rate, s.duration));
        let late = 100.0 * o.late as f64 / (o.ok + o.errors).max(1) as f64;
        let note = format!(
            "open loop at {} req/s over 16 connections; {late:.1}% sent >2 ms late",
            s.rate
        );
        row(report, &format!("{label}: fixed rate"), &o, note);
        if label.starts_with("eventscale") {
            let p99 = o.quantile_ms(0.99);
            let kept_up = o.throughput() >= 0.98 * s.rate && o.errors == 0;
            report.check(
                "reads",
                &format!("{label}: p99 at {} req/s", s.rate),
                format!("{p99:.2} ms ({:.0} req/s answered)", o.throughput()),
                "< 2 ms",
                p99 < 2.0 && kept_up,
            );
        }
    }
    // Each eventscale path against the bare server over the same protocol.
    for (i, (label, _)) in targets.iter().enumerate() {
        if !label.starts_with("eventscale") {
            continue;
        }
        let h2 = label.ends_with("HTTP/2");
        let base = targets
            .iter()
            .position(|(l, _)| l.starts_with("bare") && l.ends_with("HTTP/2") == h2)
            .map_or(1e-9, |b| throughput[b].max(1e-9));
        report.ratio(
            "reads",
            &format!("{label} / bare throughput"),
            throughput[i] / base,
            ">= 0.8",
            throughput[i] / base >= 0.8,
        );
    }
    report.note(format!(
        "reads: {} SubjectAccessReviews asked in all (the rest were cache hits)",
        servers.reviews.0.load(std::sync::atomic::Ordering::Relaxed)
    ));
    server_rt.shutdown_background();
    client_rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
