//! Replicas that share the work (docs/operations.md), measured on the real local cluster:
//! - sources with 2 and 3 replicas: the question N ScaledObjects share, asked of
//!   Prometheus once per interval whatever the number of replicas (rows of `sources`);
//! - `shards`: many ScaledObjects (half cron, half Prometheus over ten questions) held by 1
//!   and then 3 metrics-only replicas: time to ready, RSS of each replica, p99 of HPA
//!   reads through the real aggregator (kube-apiserver → APIService → the replica on the
//!   APIService's port, which forwards the cached reads of the objects it does not poll),
//!   and failover: from SIGKILL of a replica to its share owned again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::pki_types::ServerName;

use crate::cluster::{
    clean, create_mix, prometheus_url, queries_per_interval, restore, rss_mib, sample_paths,
    stop_cluster_eventscale, Eventscale, BENCH_GROUP,
};
use crate::cluster_support::{group_settled, kubectl};
use crate::load::{self, Target};
use crate::report::{Report, Row};

/// Ports of replicas 1 and 2 (replica 0 has the figure's own).
const MORE_PORTS: [(u16, u16); 2] = [(16456, 16457), (16466, 16467)];
/// The cluster's eventscale port: the APIService's Service sends the aggregator there.
const CLUSTER_PORT: u16 = 16444;
const CLUSTER_METRICS_PORT: u16 = 16445;

/// Wait until replicas `0..n` of the bench's group have settled.
async fn wait_settled(n: usize) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let started = Instant::now();
    while !group_settled(BENCH_GROUP, &ids) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "replicas {ids:?} not settled after a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Remove the bench group's Leases.
fn forget_group() {
    crate::cluster_support::forget_group(BENCH_GROUP);
}

/// Start replicas `1..n` beside a running replica 0 and wait until all have settled.
async fn more_replicas(interval: i32, n: usize) -> anyhow::Result<Vec<Eventscale>> {
    let mut more = Vec::new();
    for (i, (port, metrics)) in MORE_PORTS.iter().enumerate().take(n.saturating_sub(1)) {
        let mut r = Eventscale::start_replica(interval, i + 1, *port, *metrics)?;
        r.ready(Instant::now()).await?;
        more.push(r);
    }
    wait_settled(n).await?;
    Ok(more)
}

/// The `sources` rows with 2 and 3 replicas: `have` ScaledObjects of one question are in
/// place and replica 0 runs. The worst queries per interval.
pub async fn sources_with_replicas(
    report: &mut Report,
    url: &str,
    interval: i64,
    idle: f64,
    have: usize,
) -> anyhow::Result<f64> {
    let mut worst: f64 = 0.0;
    for n in [2, 3] {
        let more = more_replicas(interval as i32, n).await?;
        // The new owners poll their share at their next instants.
        tokio::time::sleep(Duration::from_secs(2 * interval as u64)).await;
        let q = queries_per_interval(url, interval, 5).await? - idle;
        worst = worst.max(q);
        report.push(Row::new(
            "sources",
            &format!("{have} ScaledObjects, one identical query, {n} replicas"),
            vec![("queries/interval", q)],
            format!("pollingInterval {interval} s, 5 intervals; the objects shared among {n} metrics-only replicas, the question polled by one of them"),
        ));
        drop(more);
        forget_group_except_zero();
    }
    Ok(worst)
}

/// Remove the Leases of replicas other than 0 (stopped), so the next step starts afresh.
fn forget_group_except_zero() {
    for i in 1..=MORE_PORTS.len() {
        let _ = kubectl(&[
            "-n",
            "eventscale",
            "delete",
            "lease",
            &format!("{BENCH_GROUP}-bench-{i}"),
            "--ignore-not-found",
        ]);
    }
}

/// A client of kube-apiserver as the HPA controller is, through the aggregator: the
/// cluster's admin certificate (the HPA's own account reads the same way).
fn apiserver_target(paths: Vec<String>) -> anyhow::Result<Target> {
    let tls = crate::cluster::tls_client("admin", "pki/ca.crt")?;
    Ok(Target {
        addr: ([127, 0, 0, 1], 16443).into(),
        tls: Arc::new(tls),
        server_name: ServerName::try_from("127.0.0.1")?.to_owned(),
        paths: Arc::new(paths),
        headers: Arc::new(Vec::new()),
        http2_connections: None,
    })
}

/// Whether `log` (written after the kill) has the group changed to one without `gone`,
/// this replica acting.
fn taken_over(log: &str, gone: &str) -> bool {
    log.lines().any(|l| {
        l.contains("replicas' group changed") && l.contains("acting=true") && !l.contains(gone)
    })
}

/// What a cache shared through the Kubernetes API would cost: every replica would read
/// values from its watch (as fast as its own cache, measured by [`forwarded_or_local`]),
/// but every question's value would be written at every interval. Measured here: how many
/// such writes kube-apiserver takes, 32 writers updating one ConfigMap each for 5 s, as
/// fast as it answers. Returns writes per second.
async fn api_write_capacity(client: &kube::Client) -> anyhow::Result<f64> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    let ns = "bench-shared-cache";
    crate::cluster::namespace(client, ns).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for i in 0..32 {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("question-{i}")}, "data": {"value": "0"}
        }))?;
        api.create(&PostParams::default(), &cm).await?;
    }
    let until = Instant::now() + Duration::from_secs(5);
    let writers = (0..32).map(|i| {
        let api = api.clone();
        async move {
            let (mut ok, mut n) = (0u64, 0u64);
            while Instant::now() < until {
                n += 1;
                let patch = serde_json::json!({"data": {"value": n.to_string()}});
                let name = format!("question-{i}");
                if api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        }
    });
    let started = Instant::now();
    let done: u64 = futures::future::join_all(writers).await.into_iter().sum();
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Reads of cached metrics sent straight to replica 0 (as the aggregator sends them):
/// those of objects it polls itself (answered from its cache) beside those of objects
/// replicas 1 and 2 poll (forwarded to them), at the same rate.
async fn forwarded_or_local(
    report: &mut Report,
    paths: &[String],
    rate: f64,
    read_for: Duration,
) -> anyhow::Result<()> {
    let members: Vec<scaler_core::shard::Member> = (0..3)
        .map(|i| scaler_core::shard::Member {
            identity: format!("bench-{i}"),
            address: None,
            settled_at_ms: 0,
            expires_at_ms: i64::MAX,
            acts_until_ms: i64::MAX,
        })
        .collect();
    let view = scaler_core::shard::view("bench-0", &members, 10_000, 10_000);
    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    for p in paths.iter().filter(|p| p.contains("s0-prometheus")) {
        // .../namespaces/<ns>/s0-prometheus?labelSelector=...%3D<name>
        let ns = p
            .split("/namespaces/")
            .nth(1)
            .and_then(|r| r.split('/').next());
        let name = p.rsplit("%3D").next();
        let (Some(ns), Some(name)) = (ns, name) else {
            continue;
        };
        if view.owns(&scaler_core::shard::key("ScaledObject", ns, name)) {
            local.push(p.clone());
        } else {
            forwarded.push(p.clone());
        }
    }
    anyhow::ensure!(
        !local.is_empty() && !forwarded.is_empty(),
        "no objects on both sides"
    );
    for (what, set) in [
        ("its own (cache)", local),
        ("another replica's (forwarded)", forwarded),
    ] {
        let target = crate::cluster::aggregator_target(CLUSTER_PORT, set.clone())?;
        load::closed_loop(&target, 4, Duration::from_secs(1)).await;
        let o = load::open_loop(&target, 8, rate, read_for).await;
        report.push(Row::new(
            "shards",
            &format!("cached reads at replica 0 of {what} objects"),
            vec![
                ("p50 ms", o.quantile_ms(0.5)),
                ("p99 ms", o.quantile_ms(0.99)),
                ("errors", o.errors as f64),
            ],
            format!(
                "open loop at {rate} req/s, 8 connections, front-proxy cert, straight to replica 0; {} distinct objects",
                set.len()
            ),
        ));
    }
    Ok(())
}

/// The `shards` figure: `total` objects under 1 and then 3 replicas.
pub async fn run(
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
    forget_group();
    let result = async {
        let namespaces = create_mix(report, &client, &url, total, interval).await?;
        let paths = sample_paths(&namespaces, total / namespaces.len());
        let mut one_replica_rss = f64::NAN;
        for n in [1usize, 3] {
            let started = Instant::now();
            // Replica 0 on the cluster's port: the aggregator's reads reach it.
            let mut zero =
                Eventscale::start_replica(interval as i32, 0, CLUSTER_PORT, CLUSTER_METRICS_PORT)?;
            let mut ready = zero.ready(started).await?;
            let mut more = Vec::new();
            for (i, (port, metrics)) in MORE_PORTS.iter().enumerate().take(n - 1) {
                let mut r = Eventscale::start_replica(interval as i32, i + 1, *port, *metrics)?;
                ready = ready.max(r.ready(started).await?);
                more.push(r);
            }
            wait_settled(n).await?;
            // Two intervals: every owner has polled its share.
            tokio::time::sleep(Duration::from_secs(2 * interval as u64 + 2)).await;
            let mut rss: Vec<(f64, f64)> = vec![rss_mib(zero.pid())];
            rss.extend(more.iter().map(|r| rss_mib(r.pid())));
            let target = apiserver_target(paths.clone())?;
            let (code, body) = load::fetch(&target, &paths[1]).await?;
            anyhow::ensure!(code == 200, "reading {} through the aggregator: {code} {body}", paths[1]);
            load::closed_loop(&target, 4, Duration::from_secs(1)).await;
            let o = load::open_loop(&target, 8, rate, read_for).await;
            let max_rss = rss.iter().map(|r| r.0).fold(0.0, f64::max);
            if n == 1 {
                one_replica_rss = max_rss;
            }
            let mut cols = vec![("ready s", ready.as_secs_f64())];
            let names = ["RSS MiB replica 0", "RSS MiB replica 1", "RSS MiB replica 2"];
            for (i, (now, _)) in rss.iter().enumerate() {
                cols.push((names[i], *now));
            }
            cols.push(("peak MiB", rss.iter().map(|r| r.1).fold(0.0, f64::max)));
            report.push(Row::new(
                "shards",
                &format!("{total} ScaledObjects, {n} replica{}", if n == 1 { "" } else { "s" }),
                cols,
                format!("metrics-only; half cron, half Prometheus (useCachedMetrics, 10 questions), pollingInterval {interval} s; ready: every replica's /readyz from the first start"),
            ));
            report.push(Row::new(
                "shards",
                &format!("HPA reads through the aggregator, {n} replica{}", if n == 1 { "" } else { "s" }),
                vec![
                    ("req/s", o.throughput()),
                    ("p50 ms", o.quantile_ms(0.5)),
                    ("p99 ms", o.quantile_ms(0.99)),
                    ("max ms", o.quantile_ms(1.0)),
                    ("errors", o.errors as f64),
                ],
                format!(
                    "open loop at {rate} req/s, 8 connections to kube-apiserver (admin certificate) → APIService → replica 0{}; {} distinct objects{}",
                    if n == 1 { "" } else { ", which forwards the cached reads of the objects it does not poll" },
                    paths.len(),
                    o.first_error.as_deref().map(|e| format!("; first error: {e}")).unwrap_or_default()
                ),
            ));
            if n == 3 {
                forwarded_or_local(report, &paths, rate, read_for).await?;
                // Failover: replica 2 dies without a word; replica 0 logs the group without
                // it once a list begun after replica 2's deadline to act (two thirds of the
                // Lease after its last renewal, and the skew margin) shows no renewal.
                let mut victim = more.pop().context("replica 2")?;
                let seen = zero.log().len();
                let killed = Instant::now();
                victim.kill();
                let took = loop {
                    let log = zero.log();
                    if taken_over(log.get(seen..).unwrap_or_default(), "bench-2") {
                        break killed.elapsed();
                    }
                    anyhow::ensure!(
                        killed.elapsed() < Duration::from_secs(60),
                        "replica 2's share not taken over after a minute"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                report.push(Row::new(
                    "shards",
                    "failover: SIGKILL of a replica → its share owned again",
                    vec![("s", took.as_secs_f64()), ("Lease s", crate::cluster::BENCH_LEASE_SECONDS as f64)],
                    "measured on replica 0's log; the new owners poll the share at once".into(),
                ));
                report.check(
                    "shards",
                    "failover within the Lease duration",
                    format!("{:.1} s", took.as_secs_f64()),
                    &format!("<= {} s", crate::cluster::BENCH_LEASE_SECONDS),
                    took.as_secs_f64() <= crate::cluster::BENCH_LEASE_SECONDS as f64,
                );
            }
            drop(more);
            drop(zero);
            forget_group();
        }
        // The shared cache's writes, with no replica running: the best the API gives.
        let capacity = api_write_capacity(&client).await?;
        let questions = total / 2;
        report.push(Row::new(
            "shards",
            "a shared cache in the API: writes kube-apiserver takes",
            vec![
                ("writes/s", capacity),
                (
                    "needed/s, distinct questions",
                    questions as f64 / interval as f64,
                ),
            ],
            format!(
                "32 writers patching one ConfigMap each for 5 s; needed: one write per question per {interval} s interval if each of the {questions} cached ScaledObjects asked its own question (this figure's share ten, which would need 1/s)"
            ),
        ));
        report.check(
            "shards",
            &format!("RSS of one replica holding all {total} ScaledObjects"),
            format!("{one_replica_rss:.0} MiB"),
            "< 300 MB",
            one_replica_rss * 1.048_576 < 300.0,
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    result.and(restore(&client).await)
}
