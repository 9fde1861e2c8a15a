//! End-to-end tests that stop or replace parts of the local cluster: eventscale replicas
//! and their leader election, kube-apiserver itself. They run in a test binary of their
//! own (cargo runs test binaries one after another, so the other end-to-end tests never
//! see the disruption) and one at a time.

#[path = "../support/sources.rs"]
mod sources;

#[path = "../support/kafka.rs"]
mod kafka_support;

#[path = "../support/cluster.rs"]
mod cluster_support;

#[path = "../support/workloads.rs"]
mod workloads;

#[path = "../support/helm.rs"]
mod helm_support;

mod leader;
mod rbac;
mod restart;

pub use cluster_support::*;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One disruption at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The PID recorded by `e2e/cluster.sh` for `component`.
pub fn pid_of(component: &str) -> Option<u32> {
    let file = cluster()
        .state_dir
        .join("pids")
        .join(format!("{component}.pid"));
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Send `signal` to `pid` and wait until it is gone (10 s at most).
pub fn stop(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// `e2e/cluster.sh up` again: restarts whatever a test stopped (idempotent).
pub fn cluster_up() {
    let status = Command::new("bash")
        .arg(repo_root().join("e2e/cluster.sh"))
        .arg("up")
        .env("EVENTSCALE_BIN", env!("CARGO_BIN_EXE_eventscale"))
        .status()
        .expect("cluster.sh up");
    assert!(status.success(), "e2e/cluster.sh up failed");
}

/// The HPA API of v1.20 (autoscaling/v2beta2).
pub fn hpa_api(client: kube::Client, ns: &str) -> kube::Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    kube::Api::namespaced_with(
        client,
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers"),
    )
}
