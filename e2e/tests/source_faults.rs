//! The event source fails under eventscale: down, slow (answers after the scaler's
//! timeout), answering garbage, its answers corrupted, and flapping, for Prometheus, MySQL and Kafka, each real,
//! behind a fault proxy on loopback (e2e/support/fault_proxy.rs).
//!
//! Two Deployments (their pods pinned to no node: only the replica counts matter here),
//! taken from 1 to 2 replicas by the HPA on the same trigger: `kept`, with `minReplicaCount: 0`, a 2 s
//! cooldown and no fallback, and `fb`, the same with `fallback: {failureThreshold: 2,
//! replicas: 5}`. What must hold under every fault: `kept` stays at 2 (an error is never
//! taken for "inactive", so nothing is scaled to zero, and nothing is written), `fb` goes
//! to its fallback 5 and never below 2, and once the source is back the metric is served
//! again and `fb` returns to 2. The time from the source's return until the metric is
//! served again is printed, and checked against a bound.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::Value;

use crate::cron::metric_path;
use crate::fault_proxy::{Fault, FaultProxy};
use crate::sources::sources_env;
use crate::workloads::so_json_named;
use crate::{apply, client, eventually, kubectl, Namespace, DEMO_IMAGE};

/// A Deployment of 1 replica (the HPA takes it to 2 on the metric) whose pods wait for a
/// node that does not exist.
fn unscheduled(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{eventscale.sh/no-such-node: "true"}}
      containers: [{{name: c, image: {DEMO_IMAGE}, imagePullPolicy: Never}}]
"#
    )
}

/// `kept` and `fb` (see the module's comment) on `trigger` (one list item, as YAML lines
/// indented by four spaces), after `extra` documents (a Secret, an authentication).
fn objects(trigger: &str, extra: &str) -> String {
    let so = |name: &str, fallback: &str| {
        format!(
            r#"apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: {name}}}
spec:
  scaleTargetRef: {{name: {name}}}
  pollingInterval: 1
  cooldownPeriod: 2
  minReplicaCount: 0
  maxReplicaCount: 10
{fallback}  advanced:
    horizontalPodAutoscalerConfig:
      behavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}
  triggers:
{trigger}
"#
        )
    };
    format!(
        "{extra}\n---\n{}\n---\n{}\n---\n{}\n---\n{}",
        unscheduled("kept"),
        unscheduled("fb"),
        so("kept", ""),
        so("fb", "  fallback: {failureThreshold: 2, replicas: 5}\n"),
    )
}

/// Replica counts seen while sampling.
#[derive(Debug, Default)]
struct Seen {
    kept: Vec<i32>,
    fb: Vec<i32>,
    /// When `fb` was first seen at its fallback 5, from the start of sampling.
    fb_at_fallback: Option<Duration>,
}

/// Sample both Deployments' replicas every 250 ms for `window`, or until `enough` holds.
async fn sample(api: &Api<Deployment>, window: Duration, enough: impl Fn(&Seen) -> bool) -> Seen {
    let mut seen = Seen::default();
    let started = Instant::now();
    while started.elapsed() < window && !enough(&seen) {
        let (kept, fb) = replicas(api).await;
        seen.kept.extend(kept);
        seen.fb.extend(fb);
        if fb == Some(5) && seen.fb_at_fallback.is_none() {
            seen.fb_at_fallback = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

/// `kept`'s and `fb`'s replicas now.
async fn replicas(api: &Api<Deployment>) -> (Option<i32>, Option<i32>) {
    let of = |d: Result<Deployment, kube::Error>| d.ok()?.spec?.replicas;
    (of(api.get("kept").await), of(api.get("fb").await))
}

/// The value the aggregator serves for `so`'s metric now, if it does.
fn served(ns: &str, metric: &str, so: &str) -> Option<String> {
    // KEDA's mysql metric names keep the DSN's parameters (`s0-mysql-db?timeout=1s`): the
    // HPA percent-encodes them in the path, and so does this.
    let metric = metric
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('&', "%26")
        .replace('=', "%3D");
    let (ok, out, _) = kubectl(&["get", "--raw", &metric_path(ns, &metric, so)]);
    if !ok {
        return None;
    }
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v["items"][0]["value"].as_str().map(str::to_string))
}

/// Run every fault against the trigger behind `proxy`; `slow` holds each answer past the
/// trigger's timeout.
async fn every_fault(source: &str, ns: &Namespace, proxy: &FaultProxy, slow: Duration) {
    let api: Api<Deployment> = Api::namespaced(client().await, &ns.0);
    let metric = eventually(
        Duration::from_secs(90),
        "the metric's name in kept's status",
        || {
            let ns = ns.0.clone();
            async move {
                let so = so_json_named(&ns, "kept").await;
                so["status"]["externalMetricNames"][0]
                    .as_str()
                    .map(str::to_string)
            }
        },
    )
    .await;
    // Both active at 2 (the trigger's value is twice its target).
    eventually(
        Duration::from_secs(90),
        "kept and fb at 2, metric served",
        || {
            let (api, ns, metric) = (api.clone(), ns.0.clone(), metric.clone());
            async move {
                let now = replicas(&api).await;
                (now == (Some(2), Some(2)) && served(&ns, &metric, "kept").is_some()).then_some(())
            }
        },
    )
    .await;

    let faults: [(&str, Option<Fault>); 5] = [
        ("down", Some(Fault::Down)),
        ("slow", Some(Fault::Slow(slow))),
        ("garbage", Some(Fault::Garbage)),
        ("corrupt", Some(Fault::Corrupt)),
        ("flapping", None),
    ];
    for (name, fault) in faults {
        let started = Instant::now();
        // Sampling ends as soon as enough is seen; the window only bounds a failure. A
        // slow source holds each metric read for the trigger's timeout, and v1.20's HPA
        // controller reads one HPA at a time, so `fb`'s first read after the failures
        // counted may wait for `kept`'s.
        let window = Duration::from_secs(30) + 3 * slow;
        let seen = match fault {
            Some(f) => {
                proxy.set(f);
                // Until fb has been at its fallback for a while, and kept had the time
                // to be (wrongly) scaled to zero after its 2 s cooldown.
                sample(&api, window, |s| {
                    s.fb.iter().filter(|r| **r == 5).count() >= 12
                        && started.elapsed() > Duration::from_secs(8)
                })
                .await
            }
            None => {
                // Down and up every second for 16 s.
                let flapping = async {
                    for i in 0..16 {
                        proxy.set(if i % 2 == 0 { Fault::Down } else { Fault::None });
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                };
                let (seen, ()) =
                    tokio::join!(sample(&api, Duration::from_secs(16), |_| false), flapping);
                seen
            }
        };
        // Fallback True while the fault lasts (looked at for up to 10 s more: the status is
        // written after the reads that count the failures).
        let fallback_condition = if fault.is_some() {
            let ns = ns.0.clone();
            tokio::time::timeout(Duration::from_secs(10), async move {
                loop {
                    let c =
                        crate::workloads::condition(&so_json_named(&ns, "fb").await, "Fallback");
                    if c.0 == "True" {
                        return c;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
            .await
            .unwrap_or_else(|_| ("not True in 10 s".into(), String::new()))
        } else {
            crate::workloads::condition(&so_json_named(&ns.0, "fb").await, "Fallback")
        };
        proxy.set(Fault::None);
        let back = Instant::now();
        let value = eventually(Duration::from_secs(60), "the metric served again", || {
            let (ns, metric) = (ns.0.clone(), metric.clone());
            async move { served(&ns, &metric, "kept") }
        })
        .await;
        let served_after = back.elapsed();
        let seen_after = sample(&api, Duration::from_secs(60), |s| s.fb.last() == Some(&2)).await;
        let fb_after = back.elapsed();
        eprintln!(
            "source faults: {source} {name:<8} kept {:?}..{:?}, fb {:?}..{:?} (at 5 after {:?}; fallback condition {:?}); \
             metric served ({value}) {:.1} s after the source came back, fb at 2 after {:.1} s; \
             after: kept {:?}, fb {:?}",
            seen.kept.iter().min(),
            seen.kept.iter().max(),
            seen.fb.iter().min(),
            seen.fb.iter().max(),
            seen.fb_at_fallback.map(|d| format!("{:.1} s", d.as_secs_f64())),
            fallback_condition,
            served_after.as_secs_f64(),
            fb_after.as_secs_f64(),
            seen_after.kept.last(),
            seen_after.fb.last(),
        );
        assert!(
            seen.kept.iter().all(|r| *r == 2),
            "{source} {name}: kept left 2 (scaled by an error): {:?}",
            seen.kept
        );
        assert!(
            seen.fb.iter().all(|r| *r >= 2),
            "{source} {name}: fb went below 2: {:?}",
            seen.fb
        );
        if fault.is_some() {
            assert!(
                seen.fb.contains(&5),
                "{source} {name}: fb never got its fallback: {:?}",
                seen.fb
            );
            assert_eq!(
                fallback_condition.0, "True",
                "{source} {name}: Fallback condition {fallback_condition:?}"
            );
        }
        assert_eq!(
            seen_after.fb.last(),
            Some(&2),
            "{source} {name}: fb not back at 2: {:?}",
            seen_after.fb
        );
        assert!(
            served_after < Duration::from_secs(15),
            "{source} {name}: metric served again only after {served_after:?}"
        );
    }
}

/// One source after the other, in one test: kube-controller-manager v1.20 syncs HPAs on a
/// single worker, and an HPA whose metric reads wait out a slow source's timeout holds it
/// for every other HPA; two slow sources at once would delay the fallback of the third
/// past its window (seen when they ran as three tests side by side).
#[tokio::test]
async fn sources_down_slow_garbage_corrupt_or_flapping_scale_nothing_wrongly() {
    // Four minutes of polling every second, sampling every 250 ms and HPAs at work: a load
    // on the 2-core machine the k6 walkthrough must not share.
    let _node = crate::NODE_LOAD.read().await;
    prometheus().await;
    mysql().await;
    kafka().await;
}

async fn prometheus() {
    let env = sources_env(&["prometheus"]);
    let upstream = env["EVENTSCALE_PROMETHEUS_URL"]
        .trim_start_matches("http://")
        .parse()
        .expect("Prometheus' address");
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), upstream);
    let ns = Namespace::create("e2e-faults-prom");
    apply(
        &ns.0,
        &objects(
            &format!(
                "  - type: prometheus\n    metadata: {{serverAddress: \"http://{}\", query: \"vector(4)\", threshold: \"2\", timeout: \"1000\"}}",
                proxy.addr
            ),
            "",
        ),
    );
    every_fault("prometheus", &ns, &proxy, Duration::from_millis(2500)).await;
}

async fn mysql() {
    let env = sources_env(&["mysql"]);
    let upstream = format!(
        "{}:{}",
        env["EVENTSCALE_MYSQL_HOST"], env["EVENTSCALE_MYSQL_PORT"]
    )
    .parse()
    .expect("MariaDB's address");
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), upstream);
    let ns = Namespace::create("e2e-faults-mysql");
    let dsn = format!(
        "{}:{}@tcp({})/{}?timeout=1s&readTimeout=1s&writeTimeout=1s",
        env["EVENTSCALE_MYSQL_USER"],
        env["EVENTSCALE_MYSQL_PASSWORD"],
        proxy.addr,
        env["EVENTSCALE_MYSQL_DB"]
    );
    let auth = crate::sources::mysql_dsn_auth(&dsn);
    apply(
        &ns.0,
        &objects(
            "  - type: mysql\n    authenticationRef: {name: db}\n    metadata: {query: \"SELECT 4\", queryValue: \"2\"}",
            &auth,
        ),
    );
    every_fault("mysql", &ns, &proxy, Duration::from_millis(2500)).await;
}

async fn kafka() {
    let env = sources_env(&["kafka"]);
    let upstream = env["EVENTSCALE_KAFKA_FAULT_BROKER"]
        .parse()
        .expect("the broker's address");
    // The broker advertises this port: every connection comes back through the proxy.
    let proxy = FaultProxy::start(
        env["EVENTSCALE_KAFKA_FAULT_PROXY"]
            .parse()
            .expect("the proxy's address"),
        upstream,
    );
    let bootstrap = proxy.addr.to_string();
    // A lag of 4 over 2 partitions: KEDA caps the lag at partitions × lagThreshold unless
    // idle consumers are allowed, so one partition would give 2, not 4.
    let topic = crate::kafka_support::topic_at(&env, &bootstrap, &[], 2, &[2, 2]);
    let ns = Namespace::create("e2e-faults-kafka");
    apply(
        &ns.0,
        &objects(
            &format!(
                "  - type: kafka\n    metadata: {{bootstrapServers: \"{bootstrap}\", consumerGroup: faults, topic: {topic}, lagThreshold: \"2\", offsetResetPolicy: earliest}}"
            ),
            "",
        ),
    );
    // The client's request timeout is 5 s.
    every_fault("kafka", &ns, &proxy, Duration::from_secs(8)).await;
}
