//! The figures measured on the real local cluster (`e2e/cluster.sh up`) and the real
//! Prometheus (`e2e/sources.sh up prometheus`):
//! - activation: source crossing its threshold → `/scale` of a target at 0 (full mode,
//!   the cluster's own eventscale);
//! - writes: eventscale's writes to the apiserver per ScaledObject per minute at steady
//!   state, from the apiserver's own request counters (full mode);
//! - sources: queries Prometheus received per polling interval, from its own counters,
//!   for N identical ScaledObjects (a metrics-only eventscale started by the bench);
//! - scale: 10,000 ScaledObjects in the apiserver: initial sync, RSS, read latency;
//! - push: an external scaler's push → `/scale` of a target at 0, and the connections
//!   1,000 ScaledObjects on one external scaler take (full mode, the cluster's eventscale).
//!
//! While `sources` and `scale` run, the cluster's eventscale is stopped (it would manage
//! HPAs for thousands of bench objects); `e2e/cluster.sh up` restarts it afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use scaler_core::ScaledObject;
use serde_json::{json, Value};

use crate::cluster_support::{cluster, kubectl, pid_of, stop, try_cluster_up};
use crate::load::{self, Target};
use crate::report::{Report, Row};

/// Namespaces the bench makes carry this label, and are deleted before and after.
const LABEL: &str = "eventscale-bench";
/// Ports of the bench's own metrics-only eventscale.
const BENCH_PORT: u16 = 16446;
const BENCH_METRICS_PORT: u16 = 16447;
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

pub(crate) fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub(crate) fn prometheus_url() -> String {
    let env = crate::sources::sources_env(&["prometheus"]);
    env.get("EVENTSCALE_PROMETHEUS_URL")
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:19090".into())
}

/// The value of label `key` in a Prometheus text-format series line.
fn label<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("{key}=\"");
    line.find(&pat)
        .map(|i| &line[i + pat.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// The apiserver's write counts by (resource, subresource), from `apiserver_request_total`.
pub(crate) fn apiserver_writes() -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let (ok, out, err) = kubectl(&["get", "--raw", "/metrics"]);
    anyhow::ensure!(ok, "kubectl get --raw /metrics: {err}");
    let mut writes = BTreeMap::new();
    for l in out
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        if ![
            "POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE",
        ]
        .contains(&label(l, "verb"))
        {
            continue;
        }
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *writes
            .entry((
                label(l, "resource").to_string(),
                label(l, "subresource").to_string(),
            ))
            .or_insert(0.0) += v;
    }
    Ok(writes)
}

pub(crate) async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {LABEL: "true"}}
    }))?;
    api.create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    // The namespace's default ServiceAccount is not needed: nothing runs in it.
    Ok(())
}

/// Delete the ScaledObjects of every bench namespace (at once: they carry no finalizers
/// when no full-mode eventscale ran) so a restarted eventscale never sees them.
async fn delete_scaled_objects(client: &Client) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{LABEL}=true"));
    for ns in api.list(&lp).await?.items {
        let sos: Api<ScaledObject> = Api::namespaced(client.clone(), &ns.name_any());
        sos.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .with_context(|| format!("deleting the ScaledObjects of {}", ns.name_any()))?;
    }
    Ok(())
}

/// After a figure that stopped the cluster's eventscale: the objects first (eventscale
/// must not see them when it comes back), then eventscale (the namespace controller waits
/// for its APIService), then the namespaces.
pub(crate) async fn restore(client: &Client) -> anyhow::Result<()> {
    let deleted = delete_scaled_objects(client).await;
    let up = cluster_up();
    let cleaned = clean(client).await;
    deleted.and(up).and(cleaned)
}

/// Delete every bench namespace and wait until they are gone (their objects with them).
/// The namespace controller needs every aggregated API available to finish, so the
/// cluster's eventscale must be running.
pub(crate) async fn clean(client: &Client) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{LABEL}=true"));
    for ns in api.list(&lp).await?.items {
        let _ = api.delete(&ns.name_any(), &DeleteParams::default()).await;
    }
    let started = Instant::now();
    while !api.list(&lp).await?.items.is_empty() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "bench namespaces still terminating after 10 minutes"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

pub(crate) async fn create_all<K>(
    api: &Api<K>,
    objects: Vec<K>,
    concurrency: usize,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    futures::stream::iter(objects)
        .map(|o| async move {
            api.create(&PostParams::default(), &o)
                .await
                .with_context(|| format!("creating {}", o.meta().name.as_deref().unwrap_or("")))
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn deployment(ns: &str, name: &str, replicas: i32) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "localhost/eventscale/demo:v1", "imagePullPolicy": "Never"}]}}}
    }))?)
}

pub(crate) fn scaled_object(ns: &str, name: &str, spec: Value) -> anyhow::Result<ScaledObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))?)
}

pub(crate) fn prometheus_trigger(url: &str, query: &str, cached: bool) -> Value {
    json!({"type": "prometheus", "useCachedMetrics": cached, "metadata": {
        "serverAddress": url, "query": query, "threshold": "1", "activationThreshold": "0"}})
}

/// The cluster's own eventscale: stopped for the figures that run their own.
pub(crate) fn stop_cluster_eventscale() {
    if let Some(pid) = pid_of("eventscale") {
        stop(pid, "-TERM");
    }
}

/// `e2e/cluster.sh up`: restarts the cluster's eventscale (idempotent otherwise).
fn cluster_up() -> anyhow::Result<()> {
    try_cluster_up().map_err(anyhow::Error::msg)
}

/// The replicas' group the bench's own eventscale replicas join (not the cluster's).
pub(crate) const BENCH_GROUP: &str = "eventscale-bench";
/// Their Lease duration.
pub(crate) const BENCH_LEASE_SECONDS: u64 = 6;

/// A metrics-only eventscale run by the bench, killed when dropped.
pub(crate) struct Eventscale {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Eventscale {
    fn start(interval: i32) -> anyhow::Result<Self> {
        Self::start_replica(interval, 0, BENCH_PORT, BENCH_METRICS_PORT)
    }

    /// Replica `index` of the bench's group (identity `bench-<index>`), serving on `port`
    /// and its own metrics on `metrics_port`.
    pub(crate) fn start_replica(
        interval: i32,
        index: usize,
        port: u16,
        metrics_port: u16,
    ) -> anyhow::Result<Self> {
        let c = cluster();
        let log = c.state_dir.join(if index == 0 {
            "logs/bench-eventscale.log".to_string()
        } else {
            format!("logs/bench-eventscale-{index}.log")
        });
        let out = std::fs::File::create(&log)?;
        // EVENTSCALE_BENCH_WRAP runs it under a profiler (`valgrind --tool=massif`, say).
        let wrap = std::env::var("EVENTSCALE_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(env!("CARGO_BIN_EXE_eventscale"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_eventscale")),
        };
        let child = cmd
            .arg("run")
            .arg("--kubeconfig")
            .arg(c.state_dir.join("eventscale.kubeconfig"))
            .args(["--secure-port", &port.to_string()])
            .args(["--bind-address", "127.0.0.1"])
            .arg("--cert-dir")
            .arg(c.state_dir.join("eventscale-certs"))
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--metrics-bind-address", "127.0.0.1"])
            .args(["--default-polling-interval", &interval.to_string()])
            .args(["--identity", &format!("bench-{index}")])
            .args(["--leader-election-id", BENCH_GROUP])
            .args(["--lease-duration-seconds", &BENCH_LEASE_SECONDS.to_string()])
            .args([
                "--metrics-only",
                "--log-level",
                "warn,activator::membership=info",
            ])
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .context("starting eventscale")?;
        Ok(Self { child, log, port })
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, at once.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until `/readyz` answers 200; the time it took from `since`.
    pub(crate) async fn ready(&mut self, since: Instant) -> anyhow::Result<Duration> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("eventscale exited ({status}); see {}", self.log.display());
            }
            let ok = Command::new("curl")
                .args(["-fsSk", "--max-time", "2"])
                .arg(format!("https://127.0.0.1:{}/readyz", self.port))
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(since.elapsed());
            }
            anyhow::ensure!(
                since.elapsed() < Duration::from_secs(300),
                "eventscale not ready after 5 minutes; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Eventscale {
    /// SIGTERM first (a profiler wrapping it writes its report on exit), then SIGKILL.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..300 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (VmRSS, VmHWM) of `pid` in MiB.
pub(crate) fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// An HTTP/1.1 TLS client configuration with the client certificate `name.crt` and
/// `name.key` of the cluster's PKI, trusting the CA in `ca` (under the state directory).
pub(crate) fn tls_client(name: &str, ca: &str) -> anyhow::Result<rustls::ClientConfig> {
    let c = cluster();
    let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
    let pki = c.state_dir.join("pki");
    let cert: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read(pki.join(format!("{name}.crt")))?.as_slice())
            .collect::<Result<_, _>>()?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut read(pki.join(format!("{name}.key")))?.as_slice())?
            .with_context(|| format!("no key in {name}.key"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut read(c.state_dir.join(ca))?.as_slice()) {
        roots.add(ca?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(cert, key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// A client of an eventscale endpoint as the aggregator is: the front-proxy client
/// certificate and the HPA controller's identity in the headers.
pub(crate) fn aggregator_target(port: u16, paths: Vec<String>) -> anyhow::Result<Target> {
    let tls = tls_client("front-proxy-client", "eventscale-certs/ca.crt")?;
    Ok(Target {
        addr: ([127, 0, 0, 1], port).into(),
        tls: Arc::new(tls),
        server_name: ServerName::try_from("localhost")?.to_owned(),
        paths: Arc::new(paths),
        headers: Arc::new(vec![
            ("X-Remote-User".into(), HPA_USER.into()),
            ("X-Remote-Group".into(), "system:serviceaccounts".into()),
            ("X-Remote-Group".into(), "system:authenticated".into()),
        ]),
        http2_connections: None,
    })
}

pub(crate) fn metric_path(ns: &str, metric: &str, so: &str) -> String {
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{so}")
}

/// Sleep until the wall clock reaches `t` (Unix seconds).
async fn sleep_until_wall(t: f64) {
    let d = t - now_s();
    if d > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(d)).await;
    }
}

// --- activation --------------------------------------------------------------------------

/// When each Deployment was first seen wanting replicas, by name.
type FirstSeen<T> = Arc<std::sync::Mutex<BTreeMap<String, T>>>;

/// When each Deployment of `deployments` was first seen wanting replicas (by `clock`), as
/// a watch delivers them; the watch runs until the handle is aborted.
fn first_scaled_up<T: Send + 'static>(
    deployments: &Api<Deployment>,
    clock: fn() -> T,
) -> (tokio::task::JoinHandle<()>, FirstSeen<T>) {
    let seen: FirstSeen<T> = Arc::default();
    let (deployments, out) = (deployments.clone(), seen.clone());
    let watch = tokio::spawn(async move {
        let events = watcher(deployments, watcher::Config::default()).applied_objects();
        futures::pin_mut!(events);
        while let Some(Ok(d)) = events.next().await {
            if d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0 {
                let at = clock();
                out.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(d.name_any())
                    .or_insert(at);
            }
        }
    });
    (watch, seen)
}

/// Figure 5: for each trial a Deployment at 0 and a ScaledObject whose Prometheus query
/// turns from 0 to 1 at a chosen second T (`time() >= bool T`, evaluated by Prometheus at
/// the poll's time); the latency is from T to the watch event showing the Deployment's
/// replicas above 0. The trials' T fall at every second of one polling interval, so they
/// cover every phase of the aligned poll grid.
pub async fn activation(report: &mut Report, interval: i64) -> anyhow::Result<()> {
    let client = crate::cluster_support::client().await;
    let url = prometheus_url();
    let ns = "bench-activation";
    clean(&client).await?;
    namespace(&client, ns).await?;
    // The first T: a poll-grid point far enough ahead for the objects to be reconciled.
    let t0 = ((now_s() as i64 + 30) / interval + 1) * interval;
    let trials: Vec<i64> = (0..interval).map(|k| t0 + k).collect();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    let (watch, seen) = first_scaled_up(&deployments, now_s);
    let mut ds = Vec::new();
    let mut objects = Vec::new();
    for (k, t) in trials.iter().enumerate() {
        let name = format!("act-{k}");
        ds.push(deployment(ns, &name, 0)?);
        objects.push(scaled_object(
            ns,
            &name,
            json!({
                "scaleTargetRef": {"name": name}, "pollingInterval": interval,
                "minReplicaCount": 0, "maxReplicaCount": 2,
                "triggers": [prometheus_trigger(&url, &format!("vector(time() >= bool {t})"), false)],
            }),
        )?);
    }
    create_all(&deployments, ds, 8).await?;
    create_all(&sos, objects, 8).await?;
    // Accepted (originalReplicaCount recorded) well before the first T.
    for k in 0..trials.len() {
        let name = format!("act-{k}");
        loop {
            let so = sos.get(&name).await?;
            if so
                .status
                .as_ref()
                .and_then(|s| s.original_replica_count)
                .is_some()
            {
                break;
            }
            anyhow::ensure!(
                now_s() < (t0 - 2) as f64,
                "ScaledObject {ns}/{name} not reconciled before its trial"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let last = trials.last().copied().unwrap_or(t0);
    sleep_until_wall((last + 2 * interval + 2) as f64).await;
    watch.abort();
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let limit = interval as f64 + 0.2;
    let mut worst: f64 = 0.0;
    let mut all = true;
    for (k, t) in trials.iter().enumerate() {
        let name = format!("act-{k}");
        let latency = seen.get(&name).map(|at| at - *t as f64);
        match latency {
            Some(l) => {
                worst = worst.max(l);
                all &= (0.0..=limit).contains(&l);
                report.push(Row::new(
                    "activation",
                    &format!("crossing {} s after a poll-grid point", (t - t0) % interval),
                    vec![("latency ms", l * 1000.0)],
                    format!("pollingInterval {interval} s"),
                ));
            }
            None => {
                all = false;
                report.note(format!(
                    "activation: {ns}/{name} was not scaled from 0 within two intervals"
                ));
            }
        }
    }
    report.check(
        "activation",
        "worst crossing → /scale latency",
        format!("{:.0} ms", worst * 1000.0),
        &format!("<= pollingInterval + 200 ms = {:.0} ms", limit * 1000.0),
        all,
    );
    clean(&client).await?;
    Ok(())
}

// --- push -------------------------------------------------------------------------------

/// Figure: `n` ScaledObjects with an `external-push` trigger on one external scaler (the
/// test support's, in this process, on loopback), each with its Deployment at 0 and
/// `pollingInterval: 300`; then `trials` of them in turn: the scaler pushes `result: true`
/// and the latency is from that push to the watch event showing the Deployment above 0.
/// Also: how many connections the scaler was opened for all `n` (the cluster's eventscale,
/// one replica).
pub async fn push(report: &mut Report, n: usize, trials: usize) -> anyhow::Result<()> {
    use crate::external_scaler::{Options, TestScaler};
    let client = crate::cluster_support::client().await;
    let ns = "bench-push";
    clean(&client).await?;
    namespace(&client, ns).await?;
    let scaler = TestScaler::start("pending", 1.0, Options::default()).await;
    scaler.set(0.0, false);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    let (mut ds, mut objects) = (Vec::new(), Vec::new());
    for k in 0..n {
        let name = format!("push-{k}");
        ds.push(deployment(ns, &name, 0)?);
        objects.push(scaled_object(
            ns,
            &name,
            json!({
                "scaleTargetRef": {"name": name}, "pollingInterval": 300,
                "minReplicaCount": 0, "maxReplicaCount": 1, "cooldownPeriod": 300,
                "triggers": [{"type": "external-push", "metadata": {"scalerAddress": scaler.addr.to_string()}}],
            }),
        )?);
    }
    let started = Instant::now();
    create_all(&deployments, ds, 8).await?;
    create_all(&sos, objects, 8).await?;
    // Every object accepted, and its stream open.
    loop {
        let accepted = sos
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|so| {
                so.status
                    .as_ref()
                    .and_then(|s| s.original_replica_count)
                    .is_some()
            })
            .count();
        if accepted == n && scaler.open_streams() as usize >= n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "after 10 minutes {accepted} of {n} accepted, {} streams open",
            scaler.open_streams()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    report.push(Row::new(
        "push",
        &format!("{n} ScaledObjects on one external scaler"),
        vec![
            ("connections", scaler.connections() as f64),
            ("streams", scaler.open_streams() as f64),
        ],
        format!("ready in {:.0} s", started.elapsed().as_secs_f64()),
    ));
    report.check(
        "push",
        &format!("connections to one external scaler with {n} ScaledObjects"),
        scaler.connections().to_string(),
        "1",
        scaler.connections() == 1,
    );
    let (watch, seen) = first_scaled_up(&deployments, Instant::now);
    // The watch's initial list is in before the first push.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut worst: f64 = 0.0;
    let mut all = true;
    for k in 0..trials.min(n) {
        let (name, so) = (format!("push-{k}"), format!("{ns}/push-{k}"));
        scaler.set_for(&so, 1.0, true);
        let pushed = Instant::now();
        scaler.push(Some(&so), true);
        let limit = Instant::now() + Duration::from_secs(10);
        let latency = loop {
            if let Some(at) = seen.lock().unwrap_or_else(|p| p.into_inner()).get(&name) {
                break Some(at.saturating_duration_since(pushed).as_secs_f64());
            }
            if Instant::now() > limit {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        match latency {
            Some(l) => {
                worst = worst.max(l);
                all &= l <= 0.1;
                report.push(Row::new(
                    "push",
                    &format!("trial {k}"),
                    vec![("latency ms", l * 1000.0)],
                    "push → /scale 0 → 1, seen by a watch; pollingInterval 300 s".into(),
                ));
            }
            None => {
                all = false;
                report.note(format!(
                    "push: {so} was not activated within 10 s of its push"
                ));
            }
        }
        // Spread the trials over different moments.
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    watch.abort();
    report.check(
        "push",
        "worst push → /scale latency",
        format!("{:.0} ms", worst * 1000.0),
        "<= 100 ms, whatever pollingInterval",
        all,
    );
    drop(scaler);
    clean(&client).await?;
    Ok(())
}

// --- writes -----------------------------------------------------------------------------

/// How many times eventscale has written an Event in `ns`: each Event it reported, as many
/// times as its count (a repeated Event is one object with a count or a series).
pub(crate) async fn eventscale_events(client: &Client, ns: &str) -> anyhow::Result<f64> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|e| {
            e.reporting_component.as_deref() == Some("eventscale")
                || e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("eventscale")
        })
        .map(|e| {
            let series = e.series.as_ref().and_then(|s| s.count);
            f64::from(series.or(e.count).unwrap_or(1).max(1))
        })
        .sum())
}

/// How many of `sos` are Ready (and, with `past_cooldown`, have an Active condition that is
/// not the cooldown's).
fn ready(sos: &[ScaledObject], past_cooldown: bool) -> usize {
    sos.iter()
        .filter(|so| {
            so.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        && (!past_cooldown
                            || c.iter().any(|c| {
                                c.type_ == "Active" && c.reason.as_deref() != Some("ScalerCooldown")
                            }))
                })
        })
        .count()
}

/// Figure 4: a mix of ScaledObjects (active cron, active and idle Prometheus, one scaled
/// to zero) left to settle, then the apiserver's write counters over a window.
pub async fn writes(report: &mut Report, window: Duration) -> anyhow::Result<()> {
    let client = crate::cluster_support::client().await;
    let url = prometheus_url();
    let ns = "bench-writes";
    clean(&client).await?;
    namespace(&client, ns).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    let m = 20;
    let mut ds = Vec::new();
    let mut objects = Vec::new();
    for i in 0..m {
        let name = format!("w-{i}");
        ds.push(deployment(ns, &name, 1)?);
        let trigger = match i % 4 {
            // Active all day but one minute.
            0 => json!({"type": "cron", "metadata": {"timezone": "UTC",
                 "start": "0 0 * * *", "end": "59 23 * * *", "desiredReplicas": "2"}}),
            1 => prometheus_trigger(&url, "vector(3)", true),
            2 => prometheus_trigger(&url, "vector(3)", false),
            // Idle: scaled to zero.
            _ => prometheus_trigger(&url, "vector(0)", false),
        };
        objects.push(scaled_object(
            ns,
            &name,
            json!({"scaleTargetRef": {"name": name}, "pollingInterval": 5, "cooldownPeriod": 5,
                   "minReplicaCount": 0, "maxReplicaCount": 4, "triggers": [trigger]}),
        )?);
    }
    create_all(&deployments, ds, 8).await?;
    create_all(&sos, objects, 8).await?;
    // Settle: every object Ready, the idle ones at zero, the HPA controller's first scale.
    let started = Instant::now();
    loop {
        let ready = ready(&sos.list(&ListParams::default()).await?.items, false);
        let idle_at_zero = {
            let mut n = 0;
            for i in (3..m).step_by(4) {
                let d = deployments.get(&format!("w-{i}")).await?;
                n += usize::from(d.spec.and_then(|s| s.replicas) == Some(0));
            }
            n
        };
        if ready == m && idle_at_zero == m / 4 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "ScaledObjects did not settle in 2 minutes ({ready}/{m} Ready, {idle_at_zero} idle at zero)"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = apiserver_writes()?;
    let ours_before = eventscale_events(&client, ns).await?;
    tokio::time::sleep(window).await;
    let after = apiserver_writes()?;
    let ours_after = eventscale_events(&client, ns).await?;
    let delta = |resource: &str, sub: &str| {
        after
            .get(&(resource.to_string(), sub.to_string()))
            .copied()
            .unwrap_or(0.0)
            - before
                .get(&(resource.to_string(), sub.to_string()))
                .copied()
                .unwrap_or(0.0)
    };
    let minutes = window.as_secs_f64() / 60.0;
    let per = |n: f64| n / m as f64 / minutes;
    let status = delta("scaledobjects", "status");
    let so_spec = delta("scaledobjects", "");
    let hpa = delta("horizontalpodautoscalers", "");
    let scale = delta("deployments", "scale");
    // Events are written by every component (the kubelet's MissingClusterDNS for every
    // pod at every sync, the controllers'): eventscale's are counted from the Events API.
    let all_events = delta("events", "");
    let events = ours_after - ours_before;
    let hpa_status = delta("horizontalpodautoscalers", "status");
    let leases = delta("leases", "");
    report.push(Row::new(
        "writes",
        &format!("{m} ScaledObjects at steady state"),
        vec![
            ("status/SO/min", per(status)),
            ("HPA/SO/min", per(hpa)),
            ("scale/SO/min", per(scale)),
            ("SO spec/SO/min", per(so_spec)),
            ("events/SO/min", per(events)),
        ],
        format!(
            "apiserver_request_total over {:.0} s; for context: the HPA controller's own status \
             writes {hpa_status}, Lease writes {leases} (per process, not per object); Event \
             writes by every component {all_events}, eventscale's counted from the Events API",
            window.as_secs_f64()
        ),
    ));
    report.check(
        "writes",
        "status writes and HPA updates per ScaledObject per minute",
        format!("{:.3}", per(status + hpa + scale + so_spec + events)),
        "0",
        status + hpa + scale + so_spec + events == 0.0,
    );
    clean(&client).await?;
    Ok(())
}

// --- requests ---------------------------------------------------------------------------

/// The apiserver's request counts by (verb, resource, subresource), from
/// `apiserver_request_total`.
fn apiserver_requests() -> anyhow::Result<BTreeMap<(String, String, String), f64>> {
    let (ok, out, err) = kubectl(&["get", "--raw", "/metrics"]);
    anyhow::ensure!(ok, "kubectl get --raw /metrics: {err}");
    let mut all = BTreeMap::new();
    for l in out
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *all.entry((
            label(l, "verb").to_string(),
            label(l, "resource").to_string(),
            label(l, "subresource").to_string(),
        ))
        .or_insert(0.0) += v;
    }
    Ok(all)
}

/// Resources that, at steady state, nothing but eventscale would ask for: a request for
/// one of them (other than a watch being re-established) is eventscale's.
const EVENTSCALE_ONLY: &[&str] = &[
    "secrets",
    "configmaps",
    "triggerauthentications",
    "clustertriggerauthentications",
    "scaledobjects",
];

/// Issue-15 figure: apiserver requests per ScaledObject per minute at steady state, for
/// ScaledObjects whose triggers use `authenticationRef` (a Secret and a ConfigMap) and
/// `FromEnv` (the target's env from a ConfigMap), half with `useCachedMetrics` (so HPA
/// reads go live through the runtime as well).
pub async fn requests(report: &mut Report, window: Duration) -> anyhow::Result<()> {
    let client = crate::cluster_support::client().await;
    let env = crate::sources::sources_env(&["prometheus"]);
    let url = env
        .get("EVENTSCALE_PROMETHEUS_AUTH_URL")
        .cloned()
        .context("sources.sh env has no EVENTSCALE_PROMETHEUS_AUTH_URL")?;
    let user = env
        .get("EVENTSCALE_PROMETHEUS_USER")
        .cloned()
        .unwrap_or_default();
    let password = env
        .get("EVENTSCALE_PROMETHEUS_PASSWORD")
        .cloned()
        .unwrap_or_default();
    let ns = "bench-requests";
    clean(&client).await?;
    namespace(&client, ns).await?;
    let apply = |v: Value| {
        let client = client.clone();
        async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(v)?;
            let gvk = kube::api::GroupVersionKind::try_from(
                obj.types.as_ref().context("apiVersion and kind")?,
            )?;
            let (ar, _) = kube::discovery::pinned_kind(&client, &gvk).await?;
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client, ns, &ar);
            api.create(&PostParams::default(), &obj).await?;
            anyhow::Ok(())
        }
    };
    apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prom-user", "namespace": ns},
                 "stringData": {"username": user}}))
    .await?;
    apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prom-password", "namespace": ns},
                 "data": {"password": password}}))
    .await?;
    apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prom-env", "namespace": ns},
                 "data": {"PROM_URL": url}}))
    .await?;
    apply(json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                 "metadata": {"name": "prom-auth", "namespace": ns},
                 "spec": {"secretTargetRef": [{"parameter": "username", "name": "prom-user", "key": "username"}],
                          "configMapTargetRef": [{"parameter": "password", "name": "prom-password", "key": "password"}]}}))
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    let m = 20;
    let mut ds = Vec::new();
    let mut objects = Vec::new();
    for i in 0..m {
        let name = format!("r-{i}");
        let mut d = deployment(ns, &name, 1)?;
        if let Some(c) = d
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .and_then(|s| s.containers.first_mut())
        {
            c.env_from = Some(vec![serde_json::from_value(
                json!({"configMapRef": {"name": "prom-env"}}),
            )?]);
        }
        ds.push(d);
        // Half active at one replica, half idle at zero.
        let query = if i % 2 == 0 { "vector(1)" } else { "vector(0)" };
        objects.push(scaled_object(
            ns,
            &name,
            json!({"scaleTargetRef": {"name": name}, "pollingInterval": 5, "cooldownPeriod": 5,
                   "minReplicaCount": 0, "maxReplicaCount": 2,
                   "triggers": [{"type": "prometheus", "useCachedMetrics": i % 4 < 2,
                                 "authenticationRef": {"name": "prom-auth"},
                                 "metadata": {"serverAddressFromEnv": "PROM_URL", "authModes": "basic",
                                              "query": query, "threshold": "1"}}]}),
        )?);
    }
    create_all(&deployments, ds, 8).await?;
    create_all(&sos, objects, 8).await?;
    let started = Instant::now();
    loop {
        let ready = ready(&sos.list(&ListParams::default()).await?.items, true);
        if ready == m {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(180),
            "ScaledObjects did not settle in 3 minutes ({ready}/{m} Ready)"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Past the cooldown and the HPA controller's first syncs.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = apiserver_requests()?;
    tokio::time::sleep(window).await;
    let after = apiserver_requests()?;
    let minutes = window.as_secs_f64() / 60.0;
    let per = |n: f64| n / m as f64 / minutes;
    let delta = |keep: &dyn Fn(&str, &str, &str) -> bool| -> f64 {
        after
            .iter()
            .filter(|((v, r, s), _)| keep(v, r, s))
            .map(|(k, n)| n - before.get(k).copied().unwrap_or(0.0))
            .sum()
    };
    let ours = delta(&|verb, resource, _| verb != "WATCH" && EVENTSCALE_ONLY.contains(&resource));
    let watches =
        delta(&|verb, resource, _| verb == "WATCH" && EVENTSCALE_ONLY.contains(&resource));
    let target_reads = delta(&|verb, resource, sub| {
        (verb == "GET" || verb == "LIST") && resource == "deployments" && sub.is_empty()
    });
    let scale_reads =
        delta(&|verb, resource, sub| verb == "GET" && resource == "deployments" && sub == "scale");
    let hpa_reads = delta(&|verb, resource, sub| {
        (verb == "GET" || verb == "LIST")
            && resource == "horizontalpodautoscalers"
            && sub.is_empty()
    });
    let all = delta(&|_, _, _| true);
    report.push(Row::new(
        "requests",
        &format!("{m} ScaledObjects with authenticationRef (Secret + ConfigMap) and FromEnv, steady state"),
        vec![
            ("auth+SO reads/SO/min", per(ours)),
            ("target reads/SO/min", per(target_reads)),
            ("HPA reads/SO/min", per(hpa_reads)),
            ("/scale GETs/SO/min", per(scale_reads)),
        ],
        format!(
            "apiserver_request_total over {:.0} s, all verbs; WATCH requests on those resources by every client \
             (the kubelet, controllers and eventscale) {watches}; /scale GETs are the HPA \
             controller's own (one per HPA per sync: 2 s in the local cluster, so 30 a \
             minute); every client's requests {all}",
            window.as_secs_f64()
        ),
    ));
    let total = ours + target_reads + hpa_reads;
    report.check(
        "requests",
        "apiserver requests per ScaledObject per minute at steady state (authenticationRef + FromEnv)",
        format!("{:.3}", per(total)),
        "0",
        total == 0.0,
    );
    clean(&client).await?;
    Ok(())
}

// --- sources ----------------------------------------------------------------------------

/// Queries per interval Prometheus receives over `intervals` aligned intervals, measured
/// from the middle of one interval to the middle of another, so exactly `intervals` poll
/// instants fall inside.
pub(crate) async fn queries_per_interval(
    url: &str,
    interval: i64,
    intervals: i64,
) -> anyhow::Result<f64> {
    let start = ((now_s() as i64) / interval + 1) * interval;
    sleep_until_wall(start as f64 + interval as f64 / 2.0).await;
    let before = crate::sources::prometheus_query_requests(url);
    sleep_until_wall((start + intervals * interval) as f64 + interval as f64 / 2.0).await;
    let after = crate::sources::prometheus_query_requests(url);
    Ok((after - before) / intervals as f64)
}

/// Figure 3: N ScaledObjects with one identical Prometheus query (useCachedMetrics), for
/// growing N; queries per polling interval from Prometheus's own counter.
pub async fn sources(report: &mut Report, steps: &[usize]) -> anyhow::Result<()> {
    let client = crate::cluster_support::client().await;
    let url = prometheus_url();
    let ns = "bench-sources";
    let interval = 2;
    clean(&client).await?;
    stop_cluster_eventscale();
    let result = async {
        namespace(&client, ns).await?;
        let mut es = Eventscale::start(interval as i32)?;
        es.ready(Instant::now()).await?;
        let sos: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
        let idle = queries_per_interval(&url, interval, 3).await?;
        report.push(Row::new(
            "sources",
            "no ScaledObjects",
            vec![("queries/interval", idle)],
            "baseline".into(),
        ));
        let mut have = 0;
        let mut worst: f64 = 0.0;
        for &n in steps {
            let objects = (have..n)
                .map(|i| {
                    scaled_object(
                        ns,
                        &format!("q-{i}"),
                        json!({"scaleTargetRef": {"name": format!("web-{i}")},
                               "pollingInterval": interval,
                               "triggers": [prometheus_trigger(&url, "vector(42)", true)]}),
                    )
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            create_all(&sos, objects, 32).await?;
            have = n;
            // Every object seen by the reflector and polled once.
            tokio::time::sleep(Duration::from_secs(3 * interval as u64)).await;
            let q = queries_per_interval(&url, interval, 5).await? - idle;
            worst = worst.max(q);
            report.push(Row::new(
                "sources",
                &format!("{n} ScaledObjects, one identical query"),
                vec![("queries/interval", q)],
                format!("pollingInterval {interval} s, 5 intervals, Prometheus's own counter"),
            ));
        }
        // The same objects shared among 2 and 3 replicas.
        let with_more =
            crate::shards::sources_with_replicas(report, &url, interval, idle, have).await?;
        worst = worst.max(with_more);
        report.check(
            "sources",
            "queries per interval, whatever N and the number of replicas",
            format!("{worst:.2} (N up to {have}; 1, 2 and 3 replicas)"),
            "1",
            worst <= 1.0,
        );
        drop(es);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    result.and(restore(&client).await)
}

// --- scale ------------------------------------------------------------------------------

/// `total` ScaledObjects (half cron, half Prometheus with `useCachedMetrics` over ten
/// distinct queries) in ten namespaces `bench-scale-<i>`; their names.
pub(crate) async fn create_mix(
    report: &mut Report,
    client: &Client,
    url: &str,
    total: usize,
    interval: i64,
) -> anyhow::Result<Vec<String>> {
    let namespaces: Vec<String> = (0..10).map(|i| format!("bench-scale-{i}")).collect();
    for ns in &namespaces {
        namespace(client, ns).await?;
    }
    let created = Instant::now();
    let per_ns = total / namespaces.len();
    for (n, ns) in namespaces.iter().enumerate() {
        let objects = (0..per_ns)
            .map(|i| {
                let trigger = if i % 2 == 0 {
                    json!({"type": "cron", "metadata": {"timezone": "UTC",
                           "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "3"}})
                } else {
                    prometheus_trigger(url, &format!("vector({})", (n * per_ns + i) / 2 % 10), true)
                };
                scaled_object(
                    ns,
                    &format!("so-{i}"),
                    json!({"scaleTargetRef": {"name": format!("web-{i}")},
                           "pollingInterval": interval, "triggers": [trigger]}),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sos: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
        create_all(&sos, objects, 32).await?;
    }
    report.note(format!(
        "{total} ScaledObjects created in {:.1} s (32 at a time)",
        created.elapsed().as_secs_f64()
    ));
    Ok(namespaces)
}

/// About 50 read paths per namespace of [`create_mix`]'s objects, cron and Prometheus.
pub(crate) fn sample_paths(namespaces: &[String], per_ns: usize) -> Vec<String> {
    let mut paths = Vec::new();
    for ns in namespaces {
        // An odd step: the samples alternate between cron (even) and Prometheus (odd).
        for i in (0..per_ns).step_by(per_ns.div_ceil(50).max(1) | 1) {
            // KEDA's names: the cron schedule with spaces dropped and `*` as `x`.
            let metric = if i % 2 == 0 {
                "s0-cron-UTC-08xxx-018xxx"
            } else {
                "s0-prometheus"
            };
            paths.push(metric_path(ns, metric, &format!("so-{i}")));
        }
    }
    paths
}

/// Figure 2: `total` ScaledObjects (half cron, half Prometheus with `useCachedMetrics`
/// over ten distinct queries) in ten namespaces; a fresh metrics-only eventscale: time to
/// ready, RSS, CPU at rest, read latency at `rate` reads per second.
pub async fn scale(
    report: &mut Report,
    total: usize,
    rate: f64,
    read_for: Duration,
) -> anyhow::Result<()> {
    let client = crate::cluster_support::client().await;
    let url = prometheus_url();
    let interval = 10;
    clean(&client).await?;
    stop_cluster_eventscale();
    let result = async {
        let namespaces = create_mix(report, &client, &url, total, interval).await?;
        let per_ns = total / namespaces.len();
        let started = Instant::now();
        let mut es = Eventscale::start(interval as i32)?;
        let sync = es.ready(started).await?;
        let (rss_ready, _) = rss_mib(es.pid());
        // Two intervals: every Prometheus object polled and cached.
        tokio::time::sleep(Duration::from_secs(2 * interval as u64 + 2)).await;
        let cpu0 = cpu_seconds(es.pid());
        let q = queries_per_interval(&url, interval, 3).await?;
        let cpu_rest = (cpu_seconds(es.pid()) - cpu0) / (3 * interval) as f64;
        let (rss_polled, _) = rss_mib(es.pid());
        let paths = sample_paths(&namespaces, per_ns);
        let target = aggregator_target(BENCH_PORT, paths.clone())?;
        let (code, body) = load::fetch(&target, &paths[1]).await?;
        anyhow::ensure!(code == 200, "reading {}: {code} {body}", paths[1]);
        let (code, body) = load::fetch(&target, &paths[0]).await?;
        anyhow::ensure!(code == 200, "reading {}: {code} {body}", paths[0]);
        // Warm the SubjectAccessReview cache, then measure.
        load::closed_loop(&target, 4, Duration::from_secs(1)).await;
        let o = load::open_loop(&target, 8, rate, read_for).await;
        let (rss_after, hwm) = rss_mib(es.pid());
        report.push(Row::new(
            "scale",
            &format!("{total} ScaledObjects, metrics-only eventscale"),
            vec![
                ("sync s", sync.as_secs_f64()),
                ("RSS MiB ready", rss_ready),
                ("RSS MiB polled", rss_polled),
                ("RSS MiB after reads", rss_after),
                ("peak MiB", hwm),
                ("CPU % at rest", cpu_rest * 100.0),
            ],
            format!("half cron, half Prometheus (useCachedMetrics, 10 distinct queries), pollingInterval {interval} s"),
        ));
        report.push(Row::new(
            "scale",
            &format!("reads over the {total} objects"),
            vec![
                ("req/s", o.throughput()),
                ("p50 ms", o.quantile_ms(0.5)),
                ("p99 ms", o.quantile_ms(0.99)),
                ("max ms", o.quantile_ms(1.0)),
                ("errors", o.errors as f64),
            ],
            format!(
                "open loop at {rate} req/s, 8 connections, front-proxy cert, real SubjectAccessReviews (cached); {} distinct objects, cron evaluated live, Prometheus from the cache{}",
                paths.len(),
                o.first_error.as_deref().map(|e| format!("; first error: {e}")).unwrap_or_default()
            ),
        ));
        report.push(Row::new(
            "sources",
            &format!("{} Prometheus ScaledObjects over 10 distinct queries", total / 2),
            vec![("queries/interval", q)],
            format!("during the scale figure, pollingInterval {interval} s"),
        ));
        report.check(
            "scale",
            &format!("RSS with {total} ScaledObjects"),
            format!("{:.0} MiB (peak {hwm:.0})", rss_after.max(rss_polled)),
            "< 150 MB",
            rss_after.max(rss_polled) * 1.048_576 < 150.0,
        );
        report.check(
            "scale",
            "p99 read latency",
            format!("{:.2} ms", o.quantile_ms(0.99)),
            "< 5 ms",
            o.quantile_ms(0.99) < 5.0 && o.errors == 0,
        );
        report.check(
            "sources",
            &format!(
                "queries per interval for 10 distinct queries over {} objects",
                total / 2
            ),
            format!("{q:.2}"),
            "10",
            q <= 10.0,
        );
        drop(es);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    result.and(restore(&client).await)
}
