//! Faults injected into the running cluster while eventscale works, each with what must
//! hold through it: etcd restarted; eventscale killed (SIGKILL) while the HPA controller
//! reads its metrics, and while a target is being activated from zero; the owner of
//! objects killed as it activates them, beside another replica; the serving certificate
//! found expired, without and with `--renew-certs`; a Secret a TriggerAuthentication reads
//! rotated, deleted and recreated. What must hold: nothing is scaled to zero by a fault,
//! each activation is written once, `originalReplicaCount` is kept and restored on delete,
//! and metrics are served again; the time that takes is measured and printed
//! (`[faults] ...` lines).

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, ResourceExt as _};

use crate::replicas::{cluster_identity, logs, wait_settled, Replica, RestoreCluster};
use crate::sources::sources_env;
use crate::workloads::{produce, setup};
use crate::{
    apply, client, cluster, cluster_up, condition_of, deployment, deployment_json, eventually,
    kafka_support, kubectl, kubectl_json, pid_of, stop, wait_for_replicas,
    wait_for_replicas_at_least, Namespace,
};

/// Stops a background task when dropped.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every value of `spec.replicas` each Deployment of a namespace has had since the watch
/// began, in order and with when the watch saw it (a value seen twice in a row counts
/// once): what was written to the targets, whoever wrote it.
#[derive(Clone, Default)]
struct ReplicaHistory(Arc<Mutex<BTreeMap<String, Vec<Seen>>>>);

/// A value of `spec.replicas` and when the watch saw it.
type Seen = (Instant, i32);

impl ReplicaHistory {
    async fn watch(ns: &str) -> (Self, Abort) {
        let api: Api<Deployment> = Api::namespaced(client().await, ns);
        let history = Self::default();
        let seen = history.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                let Ok(d) = event else { continue };
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let mut all = seen.0.lock().unwrap_or_else(PoisonError::into_inner);
                let values = all.entry(d.name_any()).or_default();
                if values.last().map(|(_, r)| *r) != Some(replicas) {
                    values.push((Instant::now(), replicas));
                }
            }
        });
        // The watch's first list gives the values the test starts from.
        eventually(Duration::from_secs(30), "the Deployments' watch", || {
            let listed = !history
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
            async move { listed.then_some(()) }
        })
        .await;
        (history, Abort(task))
    }

    fn seen(&self, name: &str) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    fn of(&self, name: &str) -> Vec<i32> {
        self.seen(name).into_iter().map(|(_, r)| r).collect()
    }

    /// When `name` was first seen going from zero to more at or after `from`.
    fn activated_after(&self, name: &str, from: Instant) -> Option<Instant> {
        self.seen(name)
            .windows(2)
            .find_map(|w| (w[1].0 >= from && w[0].1 == 0 && w[1].1 > 0).then_some(w[1].0))
    }

    /// How many times `name` went from zero to more.
    fn activations(&self, name: &str) -> usize {
        self.of(name)
            .windows(2)
            .filter(|w| w[0] == 0 && w[1] > 0)
            .count()
    }

    /// How many times `name` went to zero.
    fn deactivations(&self, name: &str) -> usize {
        self.of(name)
            .windows(2)
            .filter(|w| w[0] > 0 && w[1] == 0)
            .count()
    }
}

/// One read of a metric through the aggregator: when, and what went wrong if it failed.
type Read = (Instant, Result<(), String>);

/// A metric read through the aggregator (kube-apiserver → APIService → eventscale) every
/// 250 ms in the background, as the HPA controller reads it, each read recorded.
struct Reads {
    log: Arc<Mutex<Vec<Read>>>,
    _task: Abort,
}

impl Reads {
    async fn start(path: String) -> Self {
        let client = client().await;
        let log: Arc<Mutex<Vec<Read>>> = Arc::default();
        let record = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let at = Instant::now();
                let result = match http::Request::get(&path).body(Vec::new()) {
                    Err(e) => Err(e.to_string()),
                    Ok(req) => {
                        match tokio::time::timeout(Duration::from_secs(5), client.request_text(req))
                            .await
                        {
                            Ok(Ok(body)) if body.contains("\"value\"") => Ok(()),
                            Ok(Ok(body)) => Err(format!("no value: {body}")),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err("no answer in 5 s".into()),
                        }
                    }
                };
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((at, result));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let reads = Self {
            log,
            _task: Abort(task),
        };
        reads
            .ok_after(Instant::now(), "the first metric read")
            .await;
        reads
    }

    fn since(&self, from: Instant) -> Vec<Read> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(at, _)| *at >= from)
            .cloned()
            .collect()
    }

    /// When the first read begun at `from` or later succeeded (60 s at most).
    async fn ok_after(&self, from: Instant, what: &str) -> Instant {
        eventually(Duration::from_secs(60), what, || {
            let ok = self
                .since(from)
                .into_iter()
                .find_map(|(at, r)| r.is_ok().then_some(at));
            async move { ok }
        })
        .await
    }

    /// The reads begun in `from..to`: (succeeded, failed, the distinct errors).
    fn between(&self, from: Instant, to: Instant) -> (usize, usize, Vec<String>) {
        let reads: Vec<Read> = self
            .since(from)
            .into_iter()
            .filter(|(at, _)| *at < to)
            .collect();
        let mut errors: Vec<String> = reads
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(|e| e.chars().take(160).collect()))
            .collect();
        let failed = errors.len();
        errors.sort();
        errors.dedup();
        (reads.len() - failed, failed, errors)
    }
}

/// The path of `metric` of ScaledObject `so` in `ns` on the external metrics API.
fn metric_path(ns: &str, metric: &str, so: &str) -> String {
    format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{so}"
    )
}

/// A Deployment `name` and its ScaledObject asking Prometheus at `url` for 21 with
/// threshold 7 (the HPA holds it at 3 replicas), polled every 2 s; the question is cached
/// (polled by the object's owner, reads answered from that) when `cached`.
fn steady(name: &str, url: &str, cached: bool) -> String {
    format!(
        r#"
{deployment}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: {name}}}
spec:
  scaleTargetRef: {{name: {name}}}
  pollingInterval: 2
  minReplicaCount: 1
  maxReplicaCount: 5
  triggers:
  - type: prometheus
    useCachedMetrics: {cached}
    metadata: {{serverAddress: "{url}", query: "vector(21)", threshold: "7"}}
"#,
        deployment = deployment(name, 1, &[]),
    )
}

/// `metadata.generation` of Deployment `ns/name`: it moves with every write of
/// `spec.replicas`, whoever makes it.
fn generation(ns: &str, name: &str) -> i64 {
    deployment_json(ns, name)
        .and_then(|d| d["metadata"]["generation"].as_i64())
        .unwrap_or(-1)
}

/// `spec.replicas` of Deployment `ns/name` (-1 when it cannot be read).
fn replicas_of(ns: &str, name: &str) -> i64 {
    deployment_json(ns, name)
        .and_then(|d| d["spec"]["replicas"].as_i64())
        .unwrap_or(-1)
}

/// How many times ScaledObject `so` in `ns` was reported activated (KEDAScaleTargetActivated
/// Events, with their counts).
fn activation_events(ns: &str, so: &str) -> u64 {
    let events = kubectl_json(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        "reason=KEDAScaleTargetActivated",
        "-o",
        "json",
    ]);
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == so)
        // An Event published again is counted in its series (events.k8s.io), or in its
        // count (core/v1).
        .map(|e| {
            e["series"]["count"]
                .as_u64()
                .or(e["count"].as_u64())
                .unwrap_or(1)
        })
        .sum()
}

/// The messages of the Events in `ns` (any object) that contain `needle`.
fn events_naming(ns: &str, needle: &str) -> Vec<String> {
    let events = kubectl_json(&["-n", ns, "get", "events", "-o", "json"]);
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let m = e["message"].as_str()?;
            m.contains(needle).then(|| {
                format!(
                    "{} {}/{}: {m}",
                    e["reason"].as_str().unwrap_or_default(),
                    e["involvedObject"]["kind"].as_str().unwrap_or_default(),
                    e["involvedObject"]["name"].as_str().unwrap_or_default()
                )
            })
        })
        .collect()
}

/// The cluster's eventscale log.
fn eventscale_log() -> PathBuf {
    cluster().state_dir.join("logs/eventscale.log")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What was appended to `path` after byte `from`.
fn appended(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(std::io::SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_string(&mut text);
        }
    }
    text
}

/// The lines appended to `path` after byte `from` that contain every one of `needles`.
fn lines_with(path: &Path, from: u64, needles: &[&str]) -> Vec<String> {
    appended(path, from)
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// SIGKILL `pid` now, without waiting for a `kill` program to start.
fn sigkill(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a pid and a signal number reads and writes no memory of ours.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Watch `path` from byte `from` (every 2 ms, `limit` at most) for a line containing every
/// one of `needles`, and SIGKILL `pid` the moment one is written; the line.
fn kill_on_line(path: &Path, from: u64, needles: &[&str], pid: u32, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut offset = from;
    let mut partial = String::new();
    loop {
        let text = appended(path, offset);
        offset += text.len() as u64;
        partial.push_str(&text);
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            if needles.iter().all(|n| line.contains(n)) {
                sigkill(pid);
                return line.trim_end().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needles:?} in {} within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILL `pid` the moment `log` (from byte `from`) says it scaled a ScaledObject whose
/// name starts with `object` (`scaledobject=<ns>/<name>`) from zero (60 s at most), off the
/// async workers; the line.
async fn kill_on_scale_from_zero(log: &Path, from: u64, object: &str, pid: u32) -> String {
    let (log, object) = (log.to_path_buf(), object.to_string());
    tokio::task::spawn_blocking(move || {
        kill_on_line(
            &log,
            from,
            &["scaled the target", &object, "from=0"],
            pid,
            Duration::from_secs(60),
        )
    })
    .await
    .expect("the log watched")
}

/// Wait (10 s at most) until process `pid` is gone.
fn wait_gone(pid: u32) {
    for _ in 0..1000 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} still there 10 s after SIGKILL");
}

/// `e2e/cluster.sh up` off the async workers (the tests' background reads and watches
/// go on meanwhile); when it returned.
async fn restart_cluster() -> Instant {
    tokio::task::spawn_blocking(cluster_up)
        .await
        .expect("cluster.sh up");
    Instant::now()
}

/// When the process recorded for `component` was started (its PID file's time), as an
/// `Instant`.
fn started_at(component: &str) -> Instant {
    let file = cluster().state_dir.join(format!("pids/{component}.pid"));
    let ago = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// etcd stopped for 8 s while lag arrives for a target at zero, and started again: metric
/// reads are answered throughout, the activation is made once when etcd is back, the steady
/// target is never written, `originalReplicaCount` is kept and restored on delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_scales_nothing_wrongly_and_loses_no_state() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let url = sources_env(&["prometheus"])["EVENTSCALE_PROMETHEUS_URL"].clone();
    let ns = Namespace::create("e2e-fault-etcd");
    let (env, topic, _) = setup(
        &ns.0,
        1,
        "  minReplicaCount: 0\n  cooldownPeriod: 0\n  advanced: {restoreToOriginalReplicaCount: true}",
    );
    apply(&ns.0, &steady("steady", &url, false));
    wait_for_replicas(&ns.0, "web", 0).await;
    wait_for_replicas(&ns.0, "steady", 3).await;
    let (history, _watch) = ReplicaHistory::watch(&ns.0).await;
    let reads = Reads::start(metric_path(&ns.0, "s0-prometheus", "steady")).await;
    let steady_generation = generation(&ns.0, "steady");

    // etcd goes away for 8 s; lag arrives for `web` meanwhile.
    let pid = pid_of("etcd").expect("etcd PID file");
    let stopped = Instant::now();
    stop(pid, "-TERM");
    produce(&env, &topic, 0, 12);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (ok, failed, errors) = reads.between(stopped, Instant::now());
    eprintln!("[faults] etcd down: {ok} metric reads answered, {failed} failed {errors:?}");
    let restarting = Instant::now();
    restart_cluster().await;
    let etcd_up = started_at("etcd");
    eprintln!(
        "[faults] etcd restarted; cluster.sh up took {:.1} s",
        secs(restarting.elapsed())
    );

    // Back: the activation the lag asks for is made once, from the state kept.
    wait_for_replicas_at_least(&ns.0, "web", 1).await;
    let activated = history
        .activated_after("web", stopped)
        .expect("the activation seen by the watch");
    wait_for_replicas(&ns.0, "web", 3).await;
    let (_, failed, _) = reads.between(stopped, Instant::now());
    eprintln!(
        "[faults] etcd restart: web activated {:.1} s after etcd started again; {failed} metric reads failed from the stop on",
        secs(activated.saturating_duration_since(etcd_up))
    );
    assert_eq!(failed, 0, "metric reads failed");
    let (status, reason, _) = condition_of(&ns.0, "scaledobject", "web", "Active");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ScalerActive"));
    let so = kubectl_json(&["-n", &ns.0, "get", "scaledobject", "web", "-o", "json"]);
    assert_eq!(so["status"]["originalReplicaCount"], 1, "state kept: {so}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(history.activations("web"), 1, "{:?}", history.of("web"));
    assert_eq!(activation_events(&ns.0, "web"), 1);
    // The steady object was never scaled, by anyone.
    assert!(
        history.of("steady").iter().all(|r| *r == 3),
        "{:?}",
        history.of("steady")
    );
    assert_eq!(generation(&ns.0, "steady"), steady_generation);
    // Restore on delete still done.
    let (ok, _, err) = kubectl(&["-n", &ns.0, "delete", "scaledobject", "web"]);
    assert!(ok, "{err}");
    wait_for_replicas(&ns.0, "web", 1).await;
}

/// eventscale SIGKILLed while its metrics (a direct and a cached trigger) are read through
/// the aggregator four times a second, then started again: reads are answered again, and
/// all along once they are (while the killed process's Lease runs out and the new one takes
/// the objects over); neither target is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventscale_killed_during_hpa_reads_serves_them_again_and_scales_nothing() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let url = sources_env(&["prometheus"])["EVENTSCALE_PROMETHEUS_URL"].clone();
    let ns = Namespace::create("e2e-fault-reads");
    apply(
        &ns.0,
        &format!(
            "{}\n---\n{}",
            steady("direct", &url, false),
            steady("cached", &url, true)
        ),
    );
    wait_for_replicas(&ns.0, "direct", 3).await;
    wait_for_replicas(&ns.0, "cached", 3).await;
    let (history, _watch) = ReplicaHistory::watch(&ns.0).await;
    let direct = Reads::start(metric_path(&ns.0, "s0-prometheus", "direct")).await;
    let cached = Reads::start(metric_path(&ns.0, "s0-prometheus", "cached")).await;
    let generations = [generation(&ns.0, "direct"), generation(&ns.0, "cached")];
    tokio::time::sleep(Duration::from_secs(2)).await;

    let pid = pid_of("eventscale").expect("eventscale PID file");
    let log_from = file_len(&eventscale_log());
    let killed = Instant::now();
    sigkill(pid);
    wait_gone(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    restart_cluster().await;
    let started = started_at("eventscale");
    let mut served = Vec::new();
    for (name, reads) in [("direct", &direct), ("cached", &cached)] {
        let at = reads
            .ok_after(started, "a metric read after the restart")
            .await;
        let (_, failed, errors) = reads.between(killed, at);
        eprintln!(
            "[faults] eventscale SIGKILL during reads: {name} metric served again {:.1} s after the new process started ({:.1} s after the kill, restart included); {failed} reads failed meanwhile: {errors:?}",
            secs(at.saturating_duration_since(started)),
            secs(at.duration_since(killed))
        );
        served.push(at);
    }
    // Past the killed process's Lease (15 s) and the new one's settling: the new process
    // owns and polls the objects; every read is answered all along.
    tokio::time::sleep(Duration::from_secs(20)).await;
    for (name, reads, from) in [
        ("direct", &direct, served[0]),
        ("cached", &cached, served[1]),
    ] {
        let (ok, failed, errors) = reads.between(from, Instant::now());
        eprintln!("[faults] after recovery, {name}: {ok} reads answered, {failed} failed");
        assert_eq!(failed, 0, "{name}: {errors:?}");
    }
    // Nothing was scaled: no write of either target's replicas.
    for (name, before) in [("direct", generations[0]), ("cached", generations[1])] {
        assert!(
            history.of(name).iter().all(|r| *r == 3),
            "{name}: {:?}",
            history.of(name)
        );
        assert_eq!(generation(&ns.0, name), before, "{name} was written");
    }
    let log = appended(&eventscale_log(), log_from);
    assert!(!log.contains("panicked"), "{log}");
}

/// When the test kills eventscale in an activation.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// As soon as the lag is produced: the poll that sees it may be under way.
    LagProduced,
    /// The moment eventscale logs that it scaled the target from zero: the `/scale` write
    /// is done, the Event and the status may not be.
    ScaleWritten,
}

/// eventscale SIGKILLed in an activation from zero, twice: as the lag is produced (before
/// the `/scale` write), and the moment it logs the write (before the status); after each
/// restart the target is activated exactly once and reaches the HPA's count, the status
/// is completed by the new process, and restore on delete still puts the original count
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventscale_killed_mid_activation_activates_once_and_still_restores() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let ns = Namespace::create("e2e-fault-activation");
    let (env, topic, group) = setup(
        &ns.0,
        1,
        "  minReplicaCount: 0\n  cooldownPeriod: 0\n  advanced: {restoreToOriginalReplicaCount: true}",
    );
    wait_for_replicas(&ns.0, "web", 0).await;
    let (history, _watch) = ReplicaHistory::watch(&ns.0).await;
    let log = eventscale_log();
    let log_from = file_len(&log);
    let me = format!("scaledobject={}/web", ns.0);
    for (round, kill_at) in [KillAt::LagProduced, KillAt::ScaleWritten]
        .into_iter()
        .enumerate()
    {
        let pid = pid_of("eventscale").expect("eventscale PID file");
        let from = file_len(&log);
        let from_round = Instant::now();
        let events_before = activation_events(&ns.0, "web");
        produce(&env, &topic, 0, 12);
        let line = match kill_at {
            KillAt::LagProduced => {
                sigkill(pid);
                String::new()
            }
            KillAt::ScaleWritten => kill_on_scale_from_zero(&log, from, &me, pid).await,
        };
        wait_gone(pid);
        let at_kill = replicas_of(&ns.0, "web");
        let (active, _, _) = condition_of(&ns.0, "scaledobject", "web", "Active");
        eprintln!(
            "[faults] activation round {round}: eventscale killed at {kill_at:?} {line}; the target was at {at_kill}, Active={active}, {} activation Event(s) published this round",
            activation_events(&ns.0, "web") - events_before
        );
        let killed = Instant::now();
        restart_cluster().await;
        let started = started_at("eventscale");
        wait_for_replicas_at_least(&ns.0, "web", 1).await;
        let activated = history
            .activated_after("web", killed)
            .unwrap_or_else(|| history.activated_after("web", from_round).unwrap_or(killed));
        wait_for_replicas(&ns.0, "web", 3).await;
        eprintln!(
            "[faults] activation round {round}: target above zero {:.1} s after the kill ({:.1} s after the new process started), at 3 after {:.1} s",
            secs(activated.saturating_duration_since(killed)),
            secs(activated.saturating_duration_since(started)),
            secs(killed.elapsed())
        );
        // The status the killed process may not have written is written by the new one
        // once it owns the object (after the killed one's Lease).
        eventually(Duration::from_secs(60), "Active=True", || {
            let (status, reason, _) = condition_of(&ns.0, "scaledobject", "web", "Active");
            async move { (status == "True" && reason == "ScalerActive").then_some(()) }
        })
        .await;
        eprintln!(
            "[faults] activation round {round}: Active=True {:.1} s after the kill",
            secs(killed.elapsed())
        );
        if round == 0 {
            // Caught up: back to zero for the next round.
            kafka_support::commit(&env, &group, &topic, 0, 12);
            wait_for_replicas(&ns.0, "web", 0).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each round one activation, one deactivation between them, whatever was killed when.
    assert_eq!(history.activations("web"), 2, "{:?}", history.of("web"));
    assert_eq!(history.deactivations("web"), 1, "{:?}", history.of("web"));
    let writes = lines_with(&log, log_from, &["scaled the target", &me, "from=0"]);
    assert!(writes.len() <= 2, "{writes:#?}");
    let events = activation_events(&ns.0, "web");
    eprintln!(
        "[faults] activation: replicas {:?}, {} activation Event(s)",
        history.of("web"),
        events
    );
    assert!(events <= 2, "{events} activation Events");
    let so = kubectl_json(&["-n", &ns.0, "get", "scaledobject", "web", "-o", "json"]);
    assert_eq!(so["status"]["originalReplicaCount"], 1, "{so}");
    let (ok, _, err) = kubectl(&["-n", &ns.0, "delete", "scaledobject", "web"]);
    assert!(ok, "{err}");
    wait_for_replicas(&ns.0, "web", 1).await;
    let appended = appended(&log, log_from);
    assert!(!appended.contains("panicked"), "{appended}");
}

/// Two replicas share eight targets at zero; lag makes them all active and the test
/// SIGKILLs the second replica the moment it has scaled its first target from zero: the
/// cluster's replica takes its share over within the Lease and activates the rest, and
/// each target is activated exactly once (never written back below the HPA's count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_as_it_activates_is_replaced_and_each_object_activates_once() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let _restore = RestoreCluster;
    let env = sources_env(&["kafka"]);
    let a = cluster_identity();
    const B: &str = "e2e-fault-owner-b";
    let mut b = Replica::start(B, 16455);
    wait_settled(&[&a, B]).await;

    // Eight targets at zero, each with a ScaledObject on the lag of its own group on one
    // topic of three partitions: records produced make them all active at once (and the
    // HPA takes each to ceil(12 / 6) = 2; the lag is capped at 6 per partition).
    const N: usize = 8;
    let ns = Namespace::create("e2e-fault-owner");
    let topic = kafka_support::topic_with(&env, 3, &[]);
    let mut yaml = String::new();
    for i in 0..N {
        let group = kafka_support::unique(&format!("g{i}"));
        for p in 0..3 {
            kafka_support::commit(&env, &group, &topic, p, 0);
        }
        yaml.push_str(&format!(
            r#"
---
{deployment}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web{i}}}
spec:
  scaleTargetRef: {{name: web{i}}}
  pollingInterval: 1
  minReplicaCount: 0
  maxReplicaCount: 5
  cooldownPeriod: 0
  advanced: {{restoreToOriginalReplicaCount: true}}
  triggers:
  - type: kafka
    metadata: {{bootstrapServers: "{bootstrap}", consumerGroup: {group}, topic: {topic}, lagThreshold: "6"}}
"#,
            deployment = deployment(&format!("web{i}"), 1, &[]),
            bootstrap = env["EVENTSCALE_KAFKA_BOOTSTRAP"],
        ));
    }
    apply(&ns.0, &yaml);
    for i in 0..N {
        wait_for_replicas(&ns.0, &format!("web{i}"), 0).await;
    }
    // Who owns what: the objects whose HPA B applied.
    let owned_by_b: Vec<usize> = (0..N)
        .filter(|i| {
            let hpa = format!("hpa=keda-hpa-web{i} ");
            logs(&[B])[0]
                .1
                .lines()
                .any(|l| l.contains(&ns.0) && l.contains(&hpa) && l.contains("HPA applied"))
        })
        .collect();
    eprintln!("[faults] owner killed: {B} owns web{owned_by_b:?} of {N}");
    assert!(
        !owned_by_b.is_empty() && owned_by_b.len() < N,
        "the objects are shared: {owned_by_b:?}"
    );
    let (history, _watch) = ReplicaHistory::watch(&ns.0).await;
    let dir = cluster().state_dir.join("logs");
    let (a_log, b_log) = (
        dir.join("eventscale.log"),
        dir.join(format!("replica-{B}.log")),
    );
    let (a_from, b_from) = (file_len(&a_log), file_len(&b_log));

    // The lag arrives; B is killed the moment it has scaled its first object from zero.
    produce(&env, &topic, 0, 12);
    let b_pid = b.0.id();
    let needle = format!("scaledobject={}/", ns.0);
    let line = kill_on_scale_from_zero(&b_log, b_from, &needle, b_pid).await;
    let killed = Instant::now();
    b.kill();
    let at_kill: Vec<i64> = (0..N)
        .map(|i| replicas_of(&ns.0, &format!("web{i}")))
        .collect();
    eprintln!("[faults] owner killed at: {line}\n[faults] targets at the kill: {at_kill:?}");

    // A takes B's share over and activates what B had not; nothing is activated twice.
    let mut last = Duration::ZERO;
    for i in 0..N {
        wait_for_replicas_at_least(&ns.0, &format!("web{i}"), 1).await;
        if owned_by_b.contains(&i) {
            last = last.max(killed.elapsed());
        }
    }
    eprintln!(
        "[faults] owner killed: every object of its share activated {:.1} s after the kill (Lease {} s)",
        secs(last),
        crate::replicas::LEASE_SECONDS
    );
    for i in 0..N {
        wait_for_replicas(&ns.0, &format!("web{i}"), 2).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..N {
        let name = format!("web{i}");
        assert_eq!(
            history.activations(&name),
            1,
            "{name}: {:?}",
            history.of(&name)
        );
        assert_eq!(
            history.deactivations(&name),
            0,
            "{name}: {:?}",
            history.of(&name)
        );
        let me = format!("scaledobject={}/{name} ", ns.0);
        let writes: Vec<String> = [(&a_log, a_from), (&b_log, b_from)]
            .iter()
            .flat_map(|(log, from)| lines_with(log, *from, &["scaled the target", &me, "from=0"]))
            .collect();
        assert!(
            writes.len() <= 1,
            "{name} scaled from zero twice: {writes:#?}"
        );
        let events = activation_events(&ns.0, &name);
        assert!(events <= 1, "{name}: {events} activation Events");
    }
    // Restore on delete, by the replica left.
    let (ok, _, err) = kubectl(&["-n", &ns.0, "delete", "scaledobject", "--all"]);
    assert!(ok, "{err}");
    for i in 0..N {
        wait_for_replicas(&ns.0, &format!("web{i}"), 1).await;
    }
}

/// The serving pair in eventscale's certificate directory as the test found it, put back
/// when the test ends, passed or not.
struct KeepPair {
    dir: PathBuf,
    crt: String,
    key: String,
}

impl KeepPair {
    fn save(dir: &Path) -> Self {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("the serving pair");
        Self {
            dir: dir.to_path_buf(),
            crt: read("tls.crt"),
            key: read("tls.key"),
        }
    }

    fn put_back(&self) {
        write_pair(&self.dir, &self.crt, &self.key);
    }
}

impl Drop for KeepPair {
    fn drop(&mut self) {
        self.put_back();
    }
}

/// Replace the serving pair in `dir` as `eventscale certs` does: each file through a
/// rename, the key first.
fn write_pair(dir: &Path, crt: &str, key: &str) {
    for (name, text) in [("tls.key", key), ("tls.crt", crt)] {
        let tmp = dir.join(format!(".{name}.e2e.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

/// A serving pair for eventscale's Service names under the CA in `dir`, which expired an
/// hour ago: (certificate, key, its notAfter as eventscale logs it).
fn expired_pair(dir: &Path) -> (String, String, String) {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("the CA");
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")).expect("ca.key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.crt"), ca_key).expect("ca.crt");
    let service = "eventscale-metrics-apiserver";
    let mut names: Vec<String> = [
        "",
        ".eventscale",
        ".eventscale.svc",
        ".eventscale.svc.cluster.local",
    ]
    .iter()
    .map(|s| format!("{service}{s}"))
    .collect();
    names.push("localhost".into());
    let mut params = rcgen::CertificateParams::new(names).expect("names");
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv4Addr::LOCALHOST.into(),
    ));
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole seconds");
    params.not_before = now - time::Duration::hours(2);
    params.not_after = now - time::Duration::hours(1);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("signed");
    let not_after = chrono::DateTime::from_timestamp(params.not_after.unix_timestamp(), 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    (cert.pem(), key.serialize_pem(), not_after)
}

/// A new TLS client's view of eventscale's port: Ok when it verifies the served
/// certificate against the CA, else curl's complaint.
fn new_client_accepts() -> Result<(), String> {
    let c = cluster();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "5", "--cacert"])
        .arg(c.state_dir.join("eventscale-certs/ca.crt"))
        .arg(format!("{}/readyz", c.adapter_url))
        .output()
        .expect("curl");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// An expired serving pair (under the same CA) written into eventscale's certificate
/// directory: reported naming the file and its expiry, refused by new TLS clients, served
/// again once a valid pair is back; with `--renew-certs`, renewed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_serving_certificate_is_reported_and_renewed() {
    let _serial = crate::SERIAL.lock().await;
    let c = cluster();
    let _restore = RestoreCluster;
    let dir = c.state_dir.join("eventscale-certs");
    let kept = KeepPair::save(&dir);
    let url = sources_env(&["prometheus"])["EVENTSCALE_PROMETHEUS_URL"].clone();
    let ns = Namespace::create("e2e-fault-cert");
    apply(&ns.0, &steady("web", &url, false));
    wait_for_replicas(&ns.0, "web", 3).await;
    let reads = Reads::start(metric_path(&ns.0, "s0-prometheus", "web")).await;
    let crt_path = dir.join("tls.crt").display().to_string();

    // 1. The cluster's eventscale (no --renew-certs) finds an expired pair: it says so,
    // naming the file and the expiry; new clients refuse it; a valid pair put back is
    // served again without a restart.
    let (crt, key, not_after) = expired_pair(&dir);
    let log = eventscale_log();
    let from = file_len(&log);
    let written = Instant::now();
    write_pair(&dir, &crt, &key);
    let said = eventually(Duration::from_secs(20), "the expiry reported", || {
        let l = lines_with(&log, from, &["EXPIRED", &crt_path]);
        async move { l.into_iter().next() }
    })
    .await;
    eprintln!(
        "[faults] expired pair reported {:.1} s after it was written: {said}",
        secs(written.elapsed())
    );
    assert!(said.contains(&format!("not_after={not_after}")), "{said}");
    let refused = eventually(Duration::from_secs(20), "new clients refusing", || {
        let r = new_client_accepts().err();
        async move { r }
    })
    .await;
    assert!(refused.contains("expired"), "{refused}");
    let fixed = Instant::now();
    kept.put_back();
    eventually(Duration::from_secs(30), "the valid pair served", || {
        let ok = new_client_accepts().is_ok();
        async move { ok.then_some(()) }
    })
    .await;
    let accepted = fixed.elapsed();
    let read = reads.ok_after(fixed, "a metric read after the fix").await;
    let (_, failed, errors) = reads.between(written, fixed);
    eprintln!(
        "[faults] expired certificate without --renew-certs: {failed} HPA-path reads failed while it was served {errors:?}; valid pair put back: new clients accept it after {:.1} s, reads answered after {:.1} s",
        secs(accepted),
        secs(read.saturating_duration_since(fixed))
    );

    // 2. An eventscale with --renew-certs in its place (the cluster's stopped, one on the
    // same port started): the expired pair is renewed at once, not at the hourly pass.
    stop(pid_of("eventscale").expect("eventscale PID file"), "-TERM");
    let mut renewing = Replica::start_with(
        "e2e-fault-renew",
        16444,
        &["--cert-reload-seconds", "2", "--renew-certs"],
    );
    let replica_log = c.state_dir.join("logs/replica-e2e-fault-renew.log");
    reads
        .ok_after(Instant::now(), "a metric read from the renewing replica")
        .await;
    let (crt, key, not_after) = expired_pair(&dir);
    let from = file_len(&replica_log);
    let written = Instant::now();
    write_pair(&dir, &crt, &key);
    let renewed = eventually(
        Duration::from_secs(30),
        "the expired pair renewed and served",
        || {
            let issued = lines_with(&replica_log, from, &["issued a new serving certificate"]);
            let ok = !issued.is_empty()
                && std::fs::read_to_string(dir.join("tls.crt")).is_ok_and(|now| now != crt)
                && new_client_accepts().is_ok();
            async move { ok.then(|| issued.join("\n")) }
        },
    )
    .await;
    let took = written.elapsed();
    let said = lines_with(&replica_log, from, &["EXPIRED", &crt_path]);
    assert!(
        said.iter()
            .any(|l| l.contains(&format!("not_after={not_after}"))),
        "{said:#?}"
    );
    assert!(renewed.contains("has expired"), "{renewed}");
    let read = reads
        .ok_after(written, "a metric read after the renewal")
        .await;
    let (_, failed, _) = reads.between(written, Instant::now());
    eprintln!(
        "[faults] expired certificate with --renew-certs: renewed and accepted by new clients {:.1} s after it was written ({failed} HPA-path reads failed; first read answered after {:.1} s): {renewed}",
        secs(took),
        secs(read.saturating_duration_since(written))
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    renewing.stop();
    drop(kept);
}

/// The Secret a TriggerAuthentication reads: with a wrong password the trigger fails and
/// the target is not scaled to zero; rotated to the right one it is used at the next poll
/// (no restart); deleted, a Warning Event on the ScaledObject names the Secret and the key
/// and the replicas stay; recreated, reads and polls recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_used_at_the_next_poll_and_a_deleted_one_is_named() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let env = sources_env(&["prometheus"]);
    let (url, user, password) = (
        &env["EVENTSCALE_PROMETHEUS_AUTH_URL"],
        &env["EVENTSCALE_PROMETHEUS_USER"],
        &env["EVENTSCALE_PROMETHEUS_PASSWORD"],
    );
    let ns = Namespace::create("e2e-fault-secret");
    let secret = |password: &str| crate::sources::prometheus_creds(user, password);
    const INTERVAL: u64 = 5;
    apply(&ns.0, &secret("wrong-password"));
    apply(
        &ns.0,
        &format!(
            r#"
{deployment}
---
{auth}---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  pollingInterval: {INTERVAL}
  minReplicaCount: 0
  maxReplicaCount: 5
  cooldownPeriod: 0
  triggers:
  - type: prometheus
    metadata: {{serverAddress: "{url}", query: "vector(12)", threshold: "4", authModes: basic}}
    authenticationRef: {{name: prom-auth}}
"#,
            deployment = deployment("web", 1, &[]),
            auth = crate::sources::PROMETHEUS_AUTH,
        ),
    );
    let (history, _watch) = ReplicaHistory::watch(&ns.0).await;
    let ready = |ns: &str| condition_of(ns, "scaledobject", "web", "Ready");
    let active = |ns: &str| condition_of(ns, "scaledobject", "web", "Active");

    // The source refuses the password: the trigger fails, and the target is not scaled
    // to zero for it (cooldown 0, minReplicaCount 0).
    let failing = eventually(
        Duration::from_secs(60),
        "Ready=False (trigger error)",
        || {
            let r = ready(&ns.0);
            async move { (r.0 == "False").then_some(r) }
        },
    )
    .await;
    eprintln!(
        "[faults] wrong password: Ready {failing:?}; Events: {:#?}",
        events_naming(&ns.0, "401")
    );
    tokio::time::sleep(Duration::from_secs(2 * INTERVAL)).await;
    assert_eq!(history.of("web"), [1], "scaled while the trigger failed");

    // Rotated to the right password: used at the next poll, no restart.
    let rotated = Instant::now();
    apply(&ns.0, &secret(password));
    eventually(
        Duration::from_secs(30),
        "Active=True after the rotation",
        || {
            let a = active(&ns.0);
            async move { (a.0 == "True").then_some(()) }
        },
    )
    .await;
    let took = rotated.elapsed();
    eprintln!(
        "[faults] Secret rotated: used by the poll {:.1} s after the change (pollingInterval {INTERVAL} s)",
        secs(took)
    );
    assert!(
        took <= Duration::from_secs(INTERVAL + 3),
        "{took:?}: not the next poll"
    );
    wait_for_replicas(&ns.0, "web", 3).await;
    let reads = Reads::start(metric_path(&ns.0, "s0-prometheus", "web")).await;

    // Deleted: a Warning Event on the ScaledObject names the Secret and the key (and
    // the HPA's own Events carry the same words); the replicas stay.
    let (ok, _, err) = kubectl(&["-n", &ns.0, "delete", "secret", "prom-creds"]);
    assert!(ok, "{err}");
    let deleted = Instant::now();
    let missing = format!("Secret {}/prom-creds not found (key \"user\")", ns.0);
    let named = eventually(
        Duration::from_secs(30),
        "an Event on the ScaledObject naming the deleted Secret and key",
        || {
            let said = events_naming(&ns.0, &missing);
            let on_the_object = said
                .iter()
                .any(|e| e.starts_with("KEDAScalerFailed ScaledObject/web:"));
            async move { on_the_object.then_some(said) }
        },
    )
    .await;
    eprintln!(
        "[faults] Secret deleted: named {:.1} s later: {named:#?}",
        secs(deleted.elapsed())
    );
    let (status, reason, _) = ready(&ns.0);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TriggerError")
    );
    tokio::time::sleep(Duration::from_secs(2 * INTERVAL)).await;
    let (_, failed, errors) = reads.between(deleted, Instant::now());
    eprintln!("[faults] Secret deleted: {failed} metric reads failed: {errors:?}");
    assert_eq!(replicas_of(&ns.0, "web"), 3);

    // Recreated: served and polled again.
    let recreated = Instant::now();
    apply(&ns.0, &secret(password));
    let read = reads
        .ok_after(recreated, "a metric read after the Secret came back")
        .await;
    eventually(Duration::from_secs(30), "Ready=True again", || {
        let r = ready(&ns.0);
        async move { (r.0 == "True").then_some(()) }
    })
    .await;
    eprintln!(
        "[faults] Secret recreated: metric read answered {:.1} s later, Ready=True {:.1} s later",
        secs(read.saturating_duration_since(recreated)),
        secs(recreated.elapsed())
    );
    // Never at zero, from the first failing poll to the end.
    assert!(!history.of("web").contains(&0), "{:?}", history.of("web"));
    assert_eq!(replicas_of(&ns.0, "web"), 3);
}
