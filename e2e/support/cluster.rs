//! The local cluster for the end-to-end test binaries: `e2e/cluster.sh up` once per
//! process, an admin client, kubectl, namespaces, waiting. Included with `#[path]` by
//! `e2e/tests/main.rs` and `e2e/disruptive/main.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

/// Paths the cluster's `env` printed.
pub struct Cluster {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// kubectl matching the apiserver.
    pub kubectl: PathBuf,
    /// The cluster's state directory (PKI, certificates, logs).
    pub state_dir: PathBuf,
    /// eventscale's own TLS endpoint, reached directly.
    pub adapter_url: String,
    /// eventscale's own Prometheus metrics.
    pub metrics_url: String,
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Bring the cluster up once per test process and read its environment.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let script = repo_root().join("e2e/cluster.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg("up")
            .env("EVENTSCALE_BIN", env!("CARGO_BIN_EXE_eventscale"))
            .status()
            .expect("running e2e/cluster.sh up");
        assert!(
            status.success(),
            "e2e/cluster.sh up failed; see its message above"
        );
        start_watchdog();
        let out = Command::new("bash")
            .arg(&script)
            .arg("env")
            .output()
            .expect("cluster.sh env");
        let env = String::from_utf8_lossy(&out.stdout).to_string();
        let get = |name: &str| -> PathBuf {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("cluster.sh env printed no {name}: {env}"))
        };
        Cluster {
            kubeconfig: get("KUBECONFIG"),
            kubectl: get("EVENTSCALE_KUBECTL"),
            state_dir: get("EVENTSCALE_STATE_DIR"),
            adapter_url: get("EVENTSCALE_ADAPTER_URL").to_string_lossy().into_owned(),
            metrics_url: get("EVENTSCALE_METRICS_URL").to_string_lossy().into_owned(),
        }
    })
}

/// A test binary that hangs would hold CI until its own limit and report nothing: once the
/// cluster is up, the whole binary gets `EVENTSCALE_E2E_MINUTES` (default 25) minutes, then
/// exits with a message naming the limit.
fn start_watchdog() {
    let minutes = std::env::var("EVENTSCALE_E2E_MINUTES")
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(25);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(minutes * 60));
        eprintln!(
            "e2e watchdog: this test binary is still running {minutes} minutes after the \
             cluster came up; a test is hung (see the tests still reported as running). \
             Exiting; raise EVENTSCALE_E2E_MINUTES if the machine is only slow."
        );
        std::process::exit(101);
    });
}

/// An admin client for the cluster.
pub async fn client() -> Client {
    let c = cluster();
    let kc = Kubeconfig::read_from(&c.kubeconfig).expect("admin kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(cfg).expect("client")
}

/// Run kubectl; returns (success, stdout, stderr).
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    kubectl_stdin(args, None)
}

/// Run kubectl with `stdin` piped in.
pub fn kubectl_stdin(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let c = cluster();
    let mut cmd = Command::new(&c.kubectl);
    cmd.arg("--kubeconfig").arg(&c.kubeconfig).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("kubectl finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `kubectl ARGS -o json`'s output (the args include `-o json`), asserting success.
pub fn kubectl_json(args: &[&str]) -> Value {
    let (ok, out, err) = kubectl(args);
    assert!(ok, "kubectl {args:?}: {err}");
    serde_json::from_str(&out).expect("JSON")
}

/// Condition `type_` of the `kind` object `ns/name`: (status, reason, message), empty
/// strings when the object or the condition is not there (yet).
pub fn condition_of(ns: &str, kind: &str, name: &str, type_: &str) -> (String, String, String) {
    let (ok, out, _) = kubectl(&["-n", ns, "get", kind, name, "-o", "json"]);
    let v: Value = if ok {
        serde_json::from_str(&out).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
        .unwrap_or_default()
}

/// The value of `series` (name and labels, as printed) in eventscale's own metrics; 0
/// when absent.
pub fn eventscale_metric(series: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", &cluster().metrics_url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// `kubectl apply -f -` of `yaml` in `namespace`, asserting success.
pub fn apply(namespace: &str, yaml: &str) {
    let (ok, out, err) = kubectl_stdin(&["-n", namespace, "apply", "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply failed: {out}{err}\n{yaml}");
}

/// The image of the project's demo application (`e2e/demo`), built and imported into the
/// node by `e2e/cluster.sh up`: it serves `hello from <pod>` on :8080 and `/healthz`.
pub const DEMO_IMAGE: &str = "localhost/eventscale/demo:v1";

/// A Deployment `name` of `replicas` pods labelled `app: <name>` and `labels`, running the
/// demo application on the real node; a pod is Ready once its readiness probe (`/healthz`,
/// every second) passes.
pub fn deployment(name: &str, replicas: u32, labels: &[(&str, &str)]) -> String {
    deployment_with(
        name,
        replicas,
        labels,
        &format!(
            "{{name: c, image: {DEMO_IMAGE}, imagePullPolicy: Never, \
             ports: [{{containerPort: 8080, name: http}}], \
             readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}}}"
        ),
    )
}

/// `n` Deployments `web<i>` of one pod each and a ScaledObject `web<i>` for each, whose
/// spec after `scaleTargetRef` is `spec` (its lines, indented by two spaces), as YAML.
pub fn scaled_deployments(n: usize, spec: &str) -> String {
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str(&format!(
            "\n---\n{deployment}\n---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\n\
             metadata: {{name: web{i}}}\nspec:\n  scaleTargetRef: {{name: web{i}}}\n{spec}",
            deployment = deployment(&format!("web{i}"), 1, &[]),
        ));
    }
    yaml
}

/// The spec lines [`scaled_deployments`] takes for ScaledObjects that all ask Prometheus at
/// `url` the same cached question (`vector(21)`, threshold 7) every `interval` seconds.
pub fn one_cached_question(url: &str, interval: u64) -> String {
    format!(
        r#"  pollingInterval: {interval}
  minReplicaCount: 1
  triggers:
  - type: prometheus
    useCachedMetrics: true
    metadata: {{serverAddress: "{url}", query: "vector(21)", threshold: "7"}}
"#
    )
}

/// The replicas of eventscale's group `group` (its `--leader-election-id`), as their
/// Leases in the `eventscale` namespace say: (identity, settled at least 1.5 s ago). Empty
/// when the Leases cannot be read.
pub fn group_members(group: &str) -> Vec<(String, bool)> {
    let (_, out, _) = kubectl(&[
        "-n",
        "eventscale",
        "get",
        "lease",
        "-l",
        &format!("eventscale.sh/member-of={group}"),
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_default();
    let now = chrono::Utc::now().timestamp_millis();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let id = l["spec"]["holderIdentity"].as_str()?.to_string();
            let settled = l["metadata"]["annotations"]["eventscale.sh/settled-at"]
                .as_str()
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t + 1_500 < now);
            Some((id, settled))
        })
        .collect()
}

/// Whether every one of `ids` is a settled member of `group`.
pub fn group_settled(group: &str, ids: &[&str]) -> bool {
    let members = group_members(group);
    ids.iter()
        .all(|id| members.iter().any(|(m, settled)| m == id && *settled))
}

/// Delete the Leases of eventscale's group `group`.
pub fn forget_group(group: &str) {
    let _ = kubectl(&[
        "-n",
        "eventscale",
        "delete",
        "lease",
        "-l",
        &format!("eventscale.sh/member-of={group}"),
    ]);
}

/// A Deployment `name` of `replicas` pods labelled `app: <name>` and `labels`, whose pods
/// run `containers` (the YAML flow mappings of the containers, comma-separated).
pub fn deployment_with(
    name: &str,
    replicas: u32,
    labels: &[(&str, &str)],
    containers: &str,
) -> String {
    let extra: String = labels.iter().map(|(k, v)| format!(", {k}: {v}")).collect();
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}{extra}}}}}
    spec:
      terminationGracePeriodSeconds: 5
      enableServiceLinks: false
      containers: [{containers}]
"#
    )
}

/// A Service `name` in front of the pods labelled `app: <name>` (port 80 to 8080).
pub fn service(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080, name: http}}]
"#
    )
}

/// Deployment `namespace/name` as the cluster has it, as JSON.
pub fn deployment_json(namespace: &str, name: &str) -> Option<Value> {
    let (ok, out, _) = kubectl(&["-n", namespace, "get", "deployment", name, "-o", "json"]);
    ok.then(|| serde_json::from_str(&out).ok()).flatten()
}

/// The ready addresses of Endpoints `namespace/name` (pod IPs).
pub fn endpoint_ips(namespace: &str, name: &str) -> Vec<String> {
    let (ok, out, _) = kubectl(&["-n", namespace, "get", "endpoints", name, "-o", "json"]);
    let v: Value = if ok {
        serde_json::from_str(&out).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    v["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().into_iter().flatten())
        .filter_map(|a| a["ip"].as_str().map(str::to_string))
        .collect()
}

/// Wait until exactly `ready` pods of Deployment `namespace/name` are Ready on the node
/// (its `readyReplicas`; 120 s at most) and, with `service`, that Service's Endpoints hold
/// exactly that many addresses. Pods that are going away may linger for a minute (the
/// kubelet deletes their objects late), so readiness and Endpoints are what is waited on.
pub async fn wait_for_ready(namespace: &str, name: &str, ready: i64, service: Option<&str>) {
    eventually(
        Duration::from_secs(120),
        &format!("Deployment {name} with {ready} ready replicas"),
        || {
            let d = deployment_json(namespace, name).unwrap_or(Value::Null);
            let now = d["status"]["readyReplicas"].as_i64().unwrap_or(0);
            let endpoints_match =
                service.is_none_or(|s| endpoint_ips(namespace, s).len() as i64 == ready);
            async move { (now == ready && endpoints_match).then_some(()) }
        },
    )
    .await;
}

/// `METHOD http://ADDR/PATH` with curl (ADDR: a pod's `IP:8080` on the node's bridge, or a
/// ClusterIP and port); (HTTP code, body), code 0 when nothing answered.
pub fn http(method: &str, addr: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A fresh namespace, deleted when dropped.
pub struct Namespace(pub String);

impl Namespace {
    /// Create `<prefix>-<pid>`. Each prefix may be used once per test process: tests run
    /// in parallel, and a second test with the same prefix would delete the first one's
    /// namespace (the stale-namespace clean-up below) and then wait for it.
    pub fn create(prefix: &str) -> Self {
        static USED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        {
            let mut used = USED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            assert!(
                !used.iter().any(|p| p == prefix),
                "namespace prefix {prefix:?} is used by two tests of this binary; give each test its own"
            );
            used.push(prefix.to_string());
        }
        let name = format!("{prefix}-{}", std::process::id());
        let _ = kubectl(&["delete", "namespace", &name, "--wait=false"]);
        // A namespace still terminating from an earlier run with the same pid: wait it out.
        let mut last = String::new();
        for _ in 0..60 {
            let (ok, _, err) = kubectl(&["create", "namespace", &name]);
            if ok {
                return Namespace(name);
            }
            last = err;
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("could not create namespace {name} in 60 s; kubectl said: {last}");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
    }
}

/// Poll `f` every 500 ms until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// GET `path` on eventscale directly with curl and `extra` arguments; (HTTP code, body).
pub fn curl(path: &str, extra: &[&str]) -> (u16, Value) {
    curl_at(&cluster().adapter_url, path, extra)
}

/// GET `base` + `path` with curl, trusting eventscale's CA; (HTTP code, body).
pub fn curl_at(base: &str, path: &str, extra: &[&str]) -> (u16, Value) {
    let c = cluster();
    let ca = c.state_dir.join("eventscale-certs/ca.crt");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .args(extra)
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{base}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl printed no status: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The token of ServiceAccount `sa` in `ns` (v1.20 still makes token Secrets).
pub fn service_account_token(ns: &str, sa: &str) -> String {
    for _ in 0..50 {
        let (_, out, _) = kubectl(&["-n", ns, "get", "secrets", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let token = v["items"].as_array().and_then(|items| {
            items.iter().find_map(|s| {
                (s["type"] == "kubernetes.io/service-account-token"
                    && s["metadata"]["annotations"]["kubernetes.io/service-account.name"] == sa)
                    .then(|| s["data"]["token"].as_str().map(str::to_string))
                    .flatten()
            })
        });
        if let Some(t) = token {
            let out = Command::new("base64")
                .args(["-d"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().expect("stdin").write_all(t.as_bytes())?;
                    child.wait_with_output()
                })
                .expect("base64 -d");
            return String::from_utf8_lossy(&out.stdout).to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("no token Secret for ServiceAccount {ns}/{sa}");
}

/// Wait until Deployment `namespace/name` wants `replicas` (set by the real HPA or
/// eventscale); 90 s at most.
pub async fn wait_for_replicas(namespace: &str, name: &str, replicas: i32) {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client().await, namespace);
    eventually(
        Duration::from_secs(90),
        &format!("Deployment {name} at {replicas} replicas"),
        || async {
            let d = deployments.get(name).await.ok()?;
            (d.spec?.replicas == Some(replicas)).then_some(())
        },
    )
    .await;
}

/// Wait until Deployment `namespace/name` wants at least `replicas` (the HPA may take it
/// further right after an activation); 90 s at most.
pub async fn wait_for_replicas_at_least(namespace: &str, name: &str, replicas: i32) {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client().await, namespace);
    eventually(
        Duration::from_secs(90),
        &format!("Deployment {name} at {replicas} replicas or more"),
        || async {
            let d = deployments.get(name).await.ok()?;
            (d.spec?.replicas? >= replicas).then_some(())
        },
    )
    .await;
}

/// The PID recorded by `e2e/cluster.sh` for `component`.
pub fn pid_of(component: &str) -> Option<u32> {
    let file = cluster()
        .state_dir
        .join("pids")
        .join(format!("{component}.pid"));
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The PIDs of this machine for which `keep` says yes.
pub fn pids_where(keep: impl Fn(u32) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| keep(*pid))
        .collect()
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
    if let Err(e) = try_cluster_up() {
        panic!("{e}");
    }
}

/// [`cluster_up`], failing with a message rather than a panic.
pub fn try_cluster_up() -> Result<(), String> {
    let status = Command::new("bash")
        .arg(repo_root().join("e2e/cluster.sh"))
        .arg("up")
        .env("EVENTSCALE_BIN", env!("CARGO_BIN_EXE_eventscale"))
        .status()
        .map_err(|e| format!("running e2e/cluster.sh up: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("e2e/cluster.sh up failed".into())
    }
}
