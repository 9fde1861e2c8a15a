//! Replicas share the work: three eventscale replicas (the cluster's own and two started
//! here) split the ScaledObjects; a question asked by many ScaledObjects is asked of the
//! source once per interval whatever the number of replicas; cached reads reaching a
//! replica that does not poll them are forwarded to the one that does; the share of a
//! replica killed without a word is taken over within its Lease's duration; a replica
//! frozen past its deadline to act comes back joining anew, not acting on the share the
//! others took; and objects activated while replicas join and leave are each activated
//! exactly once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sources::{prometheus_query_requests, sources_env};
use crate::{apply, cluster, cluster_up, eventually, kubectl, kubectl_json, Namespace};

pub(crate) const LEASE_SECONDS: u64 = 6;
const GROUP: &str = "eventscale-leader";

/// An eventscale replica run by the test, under eventscale's own ServiceAccount.
pub(crate) struct Replica(pub(crate) Child, String);

impl Replica {
    pub(crate) fn start(identity: &str, port: u16) -> Self {
        Self::start_with(identity, port, &[])
    }

    /// A replica started with `extra` arguments after the usual ones.
    pub(crate) fn start_with(identity: &str, port: u16, extra: &[&str]) -> Self {
        let c = cluster();
        let log_path = c.state_dir.join(format!("logs/replica-{identity}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_eventscale"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(c.state_dir.join("eventscale.kubeconfig"))
            .args([
                "--secure-port",
                &port.to_string(),
                "--bind-address",
                "127.0.0.1",
            ])
            .arg("--cert-dir")
            .arg(c.state_dir.join("eventscale-certs"))
            .args(["--metrics-port", "0", "--identity", identity])
            .args(["--lease-duration-seconds", &LEASE_SECONDS.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("eventscale runs");
        let replica = Replica(child, identity.to_string());
        let ready = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(200));
            Command::new("curl")
                .args(["-fsSk", &format!("https://127.0.0.1:{port}/readyz")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ready, "replica {identity} never became ready");
        replica
    }

    /// SIGKILL: no goodbye, its Lease stays until it expires.
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM: it stops acting and deletes its Lease.
    pub(crate) fn stop(&mut self) {
        crate::stop(self.0.id(), "-TERM");
        let _ = self.0.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        let _ = kubectl(&[
            "-n",
            "eventscale",
            "delete",
            "lease",
            &format!("{GROUP}-{}", self.1),
            "--ignore-not-found",
        ]);
    }
}

pub(crate) async fn wait_settled(ids: &[&str]) {
    eventually(
        Duration::from_secs(40),
        &format!("{ids:?} settled"),
        || async { crate::group_settled(GROUP, ids).then_some(()) },
    )
    .await;
}

pub(crate) fn cluster_identity() -> String {
    let pid = crate::pid_of("eventscale").expect("the cluster's eventscale PID file");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{pid}", host.trim())
}

/// The log of each replica: the cluster's and the test's.
pub(crate) fn logs(ids: &[&str]) -> Vec<(String, String)> {
    let dir = cluster().state_dir.join("logs");
    ids.iter()
        .map(|id| {
            let file = if id.starts_with("e2e-") {
                dir.join(format!("replica-{id}.log"))
            } else {
                dir.join("eventscale.log")
            };
            (
                id.to_string(),
                std::fs::read_to_string(file).unwrap_or_default(),
            )
        })
        .collect()
}

fn raw_value(ns: &str, so: &str) -> Option<String> {
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/s0-prometheus?labelSelector=scaledobject.keda.sh%2Fname%3D{so}"
    );
    let (ok, out, _) = kubectl(&["get", "--raw", &path]);
    let v: Value = serde_json::from_str(&out).ok()?;
    ok.then(|| v["items"][0]["value"].as_str().map(str::to_string))
        .flatten()
}

/// Prometheus queries per `interval` over `intervals` intervals.
async fn queries_per_interval(url: &str, interval: u64, intervals: u64) -> f64 {
    let before = prometheus_query_requests(url);
    tokio::time::sleep(Duration::from_secs(interval * intervals)).await;
    (prometheus_query_requests(url) - before) / intervals as f64
}

#[tokio::test]
async fn replicas_share_the_objects_and_ask_each_question_once() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let _restore = RestoreCluster;
    let env = sources_env(&["prometheus"]);
    let url = env["EVENTSCALE_PROMETHEUS_URL"].clone();
    let a = cluster_identity();
    let mut b = Replica::start("e2e-replica-b", 16451);
    let mut c = Replica::start("e2e-replica-c", 16452);
    wait_settled(&[&a, "e2e-replica-b", "e2e-replica-c"]).await;

    // Nine ScaledObjects asking Prometheus the same question every 2 s.
    const N: usize = 9;
    const INTERVAL: u64 = 2;
    let ns = Namespace::create("e2e-replicas");
    let yaml = crate::scaled_deployments(N, &crate::one_cached_question(&url, INTERVAL));
    apply(&ns.0, &yaml);
    // Every object's HPA, each applied by exactly one replica, and all three at work.
    let ids = [a.as_str(), "e2e-replica-b", "e2e-replica-c"];
    let owners = eventually(Duration::from_secs(60), "every HPA applied", || async {
        let logs = logs(&ids);
        let mut owners = Vec::new();
        for i in 0..N {
            let hpa = format!("hpa=keda-hpa-web{i} ");
            let by: Vec<&str> = logs
                .iter()
                .filter(|(_, log)| {
                    log.lines()
                        .any(|l| l.contains(&ns.0) && l.contains(&hpa) && l.contains("HPA applied"))
                })
                .map(|(id, _)| id.as_str())
                .collect();
            if by.len() != 1 {
                return None;
            }
            owners.push(by[0].to_string());
        }
        Some(owners)
    })
    .await;
    let mut distinct = owners.clone();
    distinct.sort();
    distinct.dedup();
    eprintln!("[replicas] owners: {owners:?}");
    assert!(distinct.len() >= 2, "the objects are shared: {owners:?}");

    // Every read through the aggregator (which reaches the cluster's replica) is answered,
    // the objects other replicas poll included.
    for i in 0..N {
        let so = format!("web{i}");
        eventually(Duration::from_secs(30), &format!("{so}'s value"), || {
            let v = raw_value(&ns.0, &so);
            async move { (v.as_deref() == Some("21")).then_some(()) }
        })
        .await;
    }
    // Each object's trace, read through the aggregator (which reaches the cluster's
    // replica), comes from its owner: the owner built it, and decided on it.
    for (i, owner) in owners.iter().enumerate() {
        let path = format!(
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/{}/scaledobjects/web{i}/trace",
            ns.0
        );
        let t: Value = eventually(Duration::from_secs(20), "a decided trace", || {
            let (ok, out, _) = kubectl(&["get", "--raw", &path]);
            let t = ok
                .then(|| serde_json::from_str::<Value>(&out).ok())
                .flatten()
                .filter(|t| t["activation"]["rule"].is_string());
            async move { t }
        })
        .await;
        assert_eq!(
            (
                t["servedBy"]["replica"].as_str(),
                t["servedBy"]["isOwner"].as_bool()
            ),
            (Some(owner.as_str()), Some(true)),
            "web{i}'s trace comes from its owner: {t}"
        );
        assert_eq!(t["warnings"], serde_json::json!([]), "web{i}: {t}");
    }
    // None of them failed over to a local query (the logs of every replica, this
    // namespace's lines).
    let failed: Vec<String> = logs(&ids)
        .iter()
        .flat_map(|(_, log)| log.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.contains(&ns.0) && (l.contains("failed") || l.contains("refused")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");

    // One question, three replicas: asked about once per interval.
    let rate = queries_per_interval(&url, INTERVAL, 10).await;
    eprintln!("[replicas] Prometheus queries per {INTERVAL} s interval, 3 replicas, {N} ScaledObjects: {rate:.2}");
    assert!(rate <= 1.5, "{rate} queries per interval with 3 replicas");

    // A replica dies without a word: its share is polled again within the Lease duration.
    let seen = logs(&[a.as_str()])[0].1.len();
    let killed = Instant::now();
    c.kill();
    // Who acts is what counts (an expired Lease stays listed until removed): the
    // cluster's replica logs every change of the group; one after the kill without c.
    let took = eventually(Duration::from_secs(30), "c gone from the group", || async {
        let log = &logs(&[a.as_str()])[0].1;
        log.get(seen..)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.contains("replicas' group changed")
                    && l.contains("acting=true")
                    && !l.contains("e2e-replica-c")
            })
            .then(|| killed.elapsed())
    })
    .await;
    eprintln!("[replicas] failover: c's share polled again {:.1} s after SIGKILL (Lease {LEASE_SECONDS} s)", took.as_secs_f64());
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS),
        "failover took {took:?}"
    );
    for i in 0..N {
        let so = format!("web{i}");
        eventually(
            Duration::from_secs(20),
            &format!("{so}'s value after failover"),
            || {
                let v = raw_value(&ns.0, &so);
                async move { (v.as_deref() == Some("21")).then_some(()) }
            },
        )
        .await;
    }
    let rate = queries_per_interval(&url, INTERVAL, 5).await;
    eprintln!("[replicas] after the failover, 2 replicas: {rate:.2} queries per interval");
    assert!(rate <= 1.5, "{rate} queries per interval with 2 replicas");
    // Nothing was scaled to zero by it (the HPA holds them at 21 / 7 = 3).
    for i in 0..N {
        let d = crate::deployment_json(&ns.0, &format!("web{i}")).expect("deployment");
        assert!(
            d["spec"]["replicas"].as_i64() >= Some(1),
            "web{i}: {}",
            d["spec"]
        );
    }
    b.stop();
}

/// The owners a "replicas' group changed" line names, when `line` is one that acts.
fn acting_owners(line: &str) -> Option<&str> {
    if !(line.contains("replicas' group changed") && line.contains("acting=true")) {
        return None;
    }
    let from = line.find("owners=[")?;
    let rest = &line[from..];
    Some(&rest[..rest.find(']')? + 1])
}

/// A replica frozen (SIGSTOP) past its deadline to act: the others take its share, and
/// when it runs again (SIGCONT) it joins anew and counts itself an owner only after the
/// settling delay, never at once on the share the others took meanwhile.
#[tokio::test]
async fn a_replica_frozen_past_its_deadline_joins_again_instead_of_acting() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let _restore = RestoreCluster;
    let a = cluster_identity();
    let b = Replica::start("e2e-frozen-b", 16453);
    wait_settled(&[&a, "e2e-frozen-b"]).await;
    let signal = |s: &str| {
        let ok = Command::new("kill")
            .args([s, &b.0.id().to_string()])
            .status()
            .is_ok_and(|st| st.success());
        assert!(ok, "kill {s}");
    };
    let (seen_a, seen_b) = (
        logs(&[a.as_str()])[0].1.len(),
        logs(&["e2e-frozen-b"])[0].1.len(),
    );
    signal("-STOP");
    let frozen = Instant::now();
    let took = eventually(Duration::from_secs(20), "b's share taken over", || async {
        let log = &logs(&[a.as_str()])[0].1;
        log.get(seen_a..)
            .unwrap_or_default()
            .lines()
            .filter_map(acting_owners)
            .any(|owners| !owners.contains("e2e-frozen-b"))
            .then(|| frozen.elapsed())
    })
    .await;
    eprintln!(
        "[replicas] frozen b's share taken over {:.1} s after SIGSTOP (Lease {LEASE_SECONDS} s)",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(LEASE_SECONDS), "took {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal("-CONT");
    let resumed = Instant::now();
    // b says it joins again, and counts itself an owner only once settled anew.
    let owner_again = eventually(Duration::from_secs(30), "b an owner again", || async {
        let log = &logs(&["e2e-frozen-b"])[0].1;
        log.get(seen_b..)
            .unwrap_or_default()
            .lines()
            .filter_map(acting_owners)
            .any(|owners| owners.contains("e2e-frozen-b"))
            .then(|| resumed.elapsed())
    })
    .await;
    let log = logs(&["e2e-frozen-b"])[0]
        .1
        .get(seen_b..)
        .unwrap_or_default()
        .to_string();
    assert!(
        log.contains("joining again"),
        "b did not join again:\n{log}"
    );
    // Settling takes two thirds of the longest Lease in the group and a second: at least
    // that of b's own.
    let settle = LEASE_SECONDS as f64 * 2.0 / 3.0 + 1.0;
    eprintln!(
        "[replicas] b an owner again {:.1} s after SIGCONT (settling takes {settle:.0} s or more)",
        owner_again.as_secs_f64()
    );
    assert!(
        owner_again.as_secs_f64() >= settle - 1.0,
        "b owned objects {owner_again:?} after it ran again, before settling anew:\n{log}"
    );
    wait_settled(&[&a, "e2e-frozen-b"]).await;
}

/// Objects activated from zero while replicas join and leave: each exactly once.
#[tokio::test]
async fn activation_during_membership_changes_happens_once() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let _restore = RestoreCluster;
    let a = cluster_identity();
    let mut b = Replica::start("e2e-churn-b", 16451);
    wait_settled(&[&a, "e2e-churn-b"]).await;

    // Eight ScaledObjects at zero whose cron window opens at the next minute (at least
    // 25 s away), so the activation falls amid the churn.
    const N: usize = 8;
    let now = chrono::Utc::now();
    let mut start = now + chrono::TimeDelta::seconds(25);
    start = start + chrono::TimeDelta::seconds(60 - i64::from(chrono::Timelike::second(&start)));
    let minute = chrono::Timelike::minute(&start);
    let ns = Namespace::create("e2e-churn");
    let end = (minute + 2) % 60;
    let yaml = crate::scaled_deployments(
        N,
        &format!(
            r#"  pollingInterval: 1
  minReplicaCount: 0
  cooldownPeriod: 0
  triggers:
  - type: cron
    metadata: {{timezone: UTC, start: "{minute} * * * *", end: "{end} * * * *", desiredReplicas: "1"}}
"#
        ),
    );
    apply(&ns.0, &yaml);
    for i in 0..N {
        crate::wait_for_replicas(&ns.0, &format!("web{i}"), 0).await;
    }
    // Churn until well after the window opens: c joins, b leaves, b joins again, c leaves.
    let until = start + chrono::TimeDelta::seconds(15);
    let mut round = 0;
    let mut c: Option<Replica> = None;
    while chrono::Utc::now() < until {
        round += 1;
        match round % 4 {
            1 => c = Some(Replica::start("e2e-churn-c", 16452)),
            2 => b.stop(),
            3 => b = Replica::start("e2e-churn-b", 16451),
            _ => {
                if let Some(mut r) = c.take() {
                    r.stop();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    eprintln!("[replicas] {round} membership changes around the activation");
    for i in 0..N {
        crate::wait_for_replicas(&ns.0, &format!("web{i}"), 1).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = kubectl_json(&[
        "-n",
        &ns.0,
        "get",
        "events",
        "--field-selector",
        "reason=KEDAScaleTargetActivated",
        "-o",
        "json",
    ]);
    for i in 0..N {
        let so = format!("web{i}");
        let count: u64 = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["name"] == so.as_str())
            .filter(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("from 0 to 1"))
            })
            .map(|e| e["count"].as_u64().unwrap_or(1))
            .sum();
        assert_eq!(count, 1, "{so} activated {count} times");
    }
    drop(c);
    b.stop();
}

/// Brings the cluster's own replica back when the test ends, passed or not.
pub(crate) struct RestoreCluster;

impl Drop for RestoreCluster {
    fn drop(&mut self) {
        // Declared before the test's replicas, so dropped after them: the port is free.
        cluster_up();
    }
}
