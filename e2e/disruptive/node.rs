//! The node against what a machine does to it: its processes killed with no `down` (as when
//! a session or a CI run ends), and `down`, which must undo every host change it made.

use std::path::Path;
use std::process::Command;

use crate::{
    apply, cluster, cluster_up, deployment, endpoint_ips, http, kubectl, pid_of, repo_root,
    service, stop, wait_for_ready, Namespace,
};

const BRIDGE: &str = "eventscale0";
const DATA: &str = "/var/lib/eventscale-node";
const RUN: &str = "/run/eventscale-node";
const CGROUP: &str = "/sys/fs/cgroup/pids/eventscale-node";

fn output(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// PIDs whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    crate::pids_where(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(needle))
            .unwrap_or(false)
    })
}

/// Every process of the node, its shims and its pods with SIGKILL, as the end of a session
/// leaves them: no `down` runs.
fn kill_the_node() {
    for c in ["kubelet", "kube-proxy", "kube-scheduler", "containerd"] {
        if let Some(pid) = pid_of(c) {
            stop(pid, "-KILL");
        }
    }
    for pid in pids_mentioning(&format!("{RUN}/containerd.sock")) {
        stop(pid, "-KILL");
    }
    let pods = output(
        "sh",
        &[
            "-c",
            &format!("find {CGROUP} -name cgroup.procs -exec cat {{}} +"),
        ],
    )
    .1;
    for pid in pods.split_whitespace().filter_map(|p| p.parse().ok()) {
        stop(pid, "-KILL");
    }
}

/// The node's processes killed with its pods running, then `up`: the next start clears what
/// the last one left (network namespaces, IP leases, mounts), and the pods run again.
#[tokio::test]
async fn up_after_the_node_was_killed_starts_clean() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let ns = Namespace::create("e2e-node-killed");
    apply(
        &ns.0,
        &format!("{}\n---\n{}", deployment("web", 2, &[]), service("web")),
    );
    wait_for_ready(&ns.0, "web", 2, Some("web")).await;
    kill_the_node();
    assert!(pids_mentioning(&format!("{RUN}/containerd.sock")).is_empty());
    cluster_up();
    wait_for_ready(&ns.0, "web", 2, Some("web")).await;
    for ip in endpoint_ips(&ns.0, "web") {
        let (code, body) = http("GET", &format!("{ip}:8080"), "/");
        assert_eq!(code, 200, "{ip}: {body}");
        assert!(body.starts_with("hello from web-"), "{body}");
    }
    // Only the node's pods hold IP leases: the killed run's were cleared, not leaked.
    crate::eventually(
        std::time::Duration::from_secs(30),
        "no more IP leases than pods on the node",
        || {
            let leases = std::fs::read_dir(format!("{DATA}/cni/eventscale-pods"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10.244."))
                .count();
            let (ok, pods, _) = kubectl(&[
                "get",
                "pods",
                "-A",
                "--field-selector",
                "spec.nodeName=eventscale-node,status.phase!=Succeeded,status.phase!=Failed",
                "-o",
                "name",
            ]);
            let pods = pods.lines().count();
            async move { (ok && leases > 0 && leases <= pods).then_some(()) }
        },
    )
    .await;
}

/// `down` undoes every host change the node made (bridge, routes, iptables rules and chains,
/// the hosts-file line, kernel settings, mounts, runtime state); `up` then brings it back.
#[tokio::test]
async fn down_undoes_every_host_change_and_up_restores_the_node() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let saved = std::fs::read_to_string(format!("{DATA}/sysctl.orig"))
        .expect("the kernel settings recorded before the node started");
    let script = repo_root().join("e2e/cluster.sh");
    let down = Command::new("bash")
        .arg(&script)
        .arg("down")
        .status()
        .expect("cluster.sh down");
    assert!(down.success(), "e2e/cluster.sh down failed");

    let (_, links) = output("ip", &["-br", "link"]);
    assert!(!links.contains(BRIDGE), "{links}");
    let (_, routes) = output("ip", &["route"]);
    assert!(!routes.contains("10.96.0.0/12"), "{routes}");
    for table in ["filter", "nat", "mangle"] {
        let (_, rules) = output("iptables", &["-t", table, "-S"]);
        for left in ["KUBE-", "EVENTSCALE-", "169.254.169.254"] {
            assert!(!rules.contains(left), "{table} still has {left}: {rules}");
        }
    }
    let hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
    assert!(!hosts.contains("eventscale-node"), "{hosts}");
    for line in saved.lines() {
        let (name, value) = line.split_once('=').expect("name=value");
        let (_, now) = output("sysctl", &["-n", name]);
        assert_eq!(now.trim(), value.trim(), "{name} not restored");
    }
    // Nothing mounted from or onto the node's directories (its pods' mounts, network
    // namespaces, and the bind mounts of /var/log/pods and /var/log/containers).
    let (_, mounts) = output("findmnt", &["-rn", "-o", "TARGET,FSROOT"]);
    assert!(
        !mounts.lines().any(|m| m.contains(DATA) || m.contains(RUN)),
        "{mounts}"
    );
    assert!(!Path::new(DATA).exists() && !Path::new(RUN).exists());
    assert!(!Path::new(CGROUP).exists());
    assert!(pids_mentioning(&format!("{RUN}/containerd.sock")).is_empty());

    cluster_up();
    let ns = Namespace::create("e2e-node-back");
    apply(&ns.0, &deployment("web", 1, &[]));
    wait_for_ready(&ns.0, "web", 1, None).await;
}
