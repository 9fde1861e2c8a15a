//! Two eventscale replicas and the leader Lease: both serve metrics, only the holder
//! activates; when the holder is killed the other takes over within the Lease's duration,
//! without scaling twice, and metrics are served throughout.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workloads::{produce, setup};
use crate::{cluster, cluster_up, eventually, kubectl, pid_of, stop, wait_for_replicas, Namespace};

const LEASE_SECONDS: u64 = 6;

/// An eventscale replica run by the test, under eventscale's own ServiceAccount.
struct Replica(Child);

impl Replica {
    fn start(identity: &str, port: u16) -> Self {
        let c = cluster();
        let log = std::fs::File::create(c.state_dir.join(format!("logs/replica-{identity}.log")))
            .expect("log file");
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("eventscale runs");
        let replica = Replica(child);
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

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn holder() -> String {
    let (_, out, _) = kubectl(&[
        "-n",
        "eventscale",
        "get",
        "lease",
        "eventscale-leader",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    out.trim().to_string()
}

async fn wait_for_holder(who: &str, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(within, &format!("Lease held by {who}"), || async {
        (holder() == who).then_some(())
    })
    .await;
    started.elapsed()
}

/// Activation events ("from 0 to 1") in `ns`.
fn activations(ns: &str) -> usize {
    let (_, out, _) = kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        "reason=KEDAScaleTargetActivated",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("from 0 to 1"))
                })
                .map(|e| e["count"].as_u64().unwrap_or(1) as usize)
                .sum()
        })
        .unwrap_or(0)
}

fn metric_served(ns: &str, metric: &str) -> bool {
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3Dweb"
    );
    kubectl(&["get", "--raw", &path]).0
}

#[tokio::test]
async fn the_other_replica_takes_over_when_the_leader_is_killed() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    // Replica c first; then the cluster's own replica stops (releasing the Lease on
    // SIGTERM), so c leads; then b takes the cluster's port, which the APIService uses.
    let _restore = RestoreCluster;
    // The cluster's replica leads first (it may have just been restarted with this build).
    let pid = pid_of("eventscale").expect("the cluster's eventscale PID file");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    wait_for_holder(&format!("{}-{pid}", host.trim()), Duration::from_secs(30)).await;
    let mut c = Replica::start("e2e-replica-c", 16446);
    stop(pid, "-TERM");
    let took = wait_for_holder("e2e-replica-c", Duration::from_secs(20)).await;
    assert!(
        took < Duration::from_secs(LEASE_SECONDS + 5),
        "a released Lease is taken at the next look, took {took:?}"
    );
    let mut b = Replica::start("e2e-replica-b", 16444);

    let ns = Namespace::create("e2e-leader");
    let (env, topic, group) = setup(&ns.0, 1, "  minReplicaCount: 0\n  cooldownPeriod: 0");
    let metric = format!("s0-kafka-{topic}");
    wait_for_replicas(&ns.0, "web", 0).await;
    produce(&env, &topic, 0, 3);
    wait_for_replicas(&ns.0, "web", 1).await;
    assert_eq!(activations(&ns.0), 1, "one replica activated");
    assert!(
        metric_served(&ns.0, &metric),
        "b serves metrics while c leads"
    );

    // The leader dies without a word: b takes over within the Lease's duration.
    c.kill();
    assert!(
        metric_served(&ns.0, &metric),
        "metrics served right after the kill"
    );
    let took = wait_for_holder("e2e-replica-b", Duration::from_secs(30)).await;
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS + LEASE_SECONDS / 3 + 2),
        "takeover took {took:?} with a {LEASE_SECONDS} s Lease"
    );
    // b acts: caught up → 0, lag again → 1, each exactly once.
    crate::kafka_support::commit(&env, &group, &topic, 0, 3);
    wait_for_replicas(&ns.0, "web", 0).await;
    produce(&env, &topic, 1, 2);
    wait_for_replicas(&ns.0, "web", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(activations(&ns.0), 2, "no double activation");
    assert!(metric_served(&ns.0, &metric));

    b.kill();
}

/// Brings the cluster's own replica back when the test ends, passed or not.
struct RestoreCluster;

impl Drop for RestoreCluster {
    fn drop(&mut self) {
        // Declared before the test's replicas, so dropped after them: the port is free.
        cluster_up();
    }
}
