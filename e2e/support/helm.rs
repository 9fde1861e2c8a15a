//! Helm's own engine for the chart tests: `e2e/helm.sh` (helm-python-sdk, Helm v4's Go SDK)
//! on `helm/eventscale`. Included with `#[path]`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::cluster_support::{cluster, repo_root};

/// The chart's directory.
pub fn chart() -> PathBuf {
    repo_root().join("helm/eventscale")
}

/// Run `e2e/helm.sh args...`: (success, stdout, stderr).
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("bash")
        .arg(repo_root().join("e2e/helm.sh"))
        .args(args)
        .output()
        .expect("e2e/helm.sh runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `values` as a JSON file for helm.py (kept in the system's temporary directory), one
/// file per call: tests rendering the same release side by side must not share one.
pub fn values_file(tag: &str, values: &Value) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "eventscale-values-{tag}-{}-{seq}.json",
        std::process::id()
    ));
    std::fs::write(&path, values.to_string()).expect("write the values file");
    path.to_string_lossy().into_owned()
}

/// Render the chart as release `name` in `namespace`; against the cluster (lookup and its
/// capabilities) when `live`. Panics with Helm's message when rendering fails.
pub fn render(name: &str, namespace: &str, values: &Value, live: bool) -> String {
    let file = values_file(name, values);
    let chart = chart();
    let chart = chart.to_string_lossy();
    let mut args = vec!["render", &chart, name, namespace, &file];
    let kubeconfig = cluster().kubeconfig.to_string_lossy().into_owned();
    if live {
        args.extend(["--kubeconfig", &kubeconfig]);
    }
    let (ok, out, err) = helm(&args);
    assert!(ok, "rendering the chart with {values} failed: {err}");
    out
}

/// The documents of a YAML stream as JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// The rendered object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}
