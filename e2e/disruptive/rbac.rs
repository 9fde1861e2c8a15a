//! Least privilege, checked on the real cluster. The chart's RBAC (rendered by Helm's own
//! engine) is applied for a ServiceAccount of its own, and eventscale runs with that
//! account's token (not the admin certificate) in place of the cluster's replica, behind the
//! real APIService. A scenario of named steps, the cron scale-out among them, passes with
//! the chart's rules as they are. Then every verb of every rule, and every binding to a
//! built-in role, is removed in turn: each removal must make a named step fail (the one the
//! table below gives), so no permission is dead weight.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helm_support::{documents, render};
use crate::sources::sources_env;
use crate::{cluster, cluster_up, kubectl, kubectl_stdin, pid_of, stop};

const RELEASE: &str = "rbac";
const NS: &str = "eventscale";
/// The chart's full name for release `rbac`.
const NAME: &str = "rbac-eventscale";
const PORT: u16 = 16444;
/// The user who reads traces in the scenario.
const TRACE_USER: &str = "rbac-trace-reader";

/// A trace read through kube-apiserver as [`TRACE_USER`]: Ok once it is a trace.
fn trace_as_user(resource: &str, name: &str) -> Result<(), String> {
    let path = format!(
        "/apis/explain.eventscale.sh/v1alpha1/namespaces/{}/{resource}/{name}/trace",
        sns()
    );
    let (ok, out, err) = kubectl(&["get", "--raw", &path, "--as", TRACE_USER]);
    let t: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    (ok && t["kind"] == "ScalingTrace")
        .then_some(())
        .ok_or_else(|| format!("trace of {resource}/{name}: {err}"))
}
/// The scenario's namespace of the current run (a new one per run: a namespace being
/// deleted cannot be created again until the namespace controller is done with it).
static SCENARIO: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn sns() -> String {
    SCENARIO.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The step each permission is needed for: (kind/name of the role or binding, resource,
/// verb) → step. Bindings to built-in roles are keyed by the role they bind.
const NEEDED_BY: &[(&str, &str, &str)] = &[
    ("scaledobjects", "list", "ready"),
    ("scaledobjects", "watch", "reconcile"),
    ("scaledobjects", "patch", "reconcile"),
    ("scaledobjects/status", "patch", "status"),
    ("triggerauthentications", "get", "trigger-authentication"),
    ("triggerauthentications", "list", "rotation"),
    ("triggerauthentications", "watch", "rotation"),
    (
        "clustertriggerauthentications",
        "get",
        "cluster-trigger-authentication",
    ),
    ("clustertriggerauthentications", "list", "rotation"),
    ("clustertriggerauthentications", "watch", "rotation"),
    ("secrets", "get", "trigger-authentication"),
    ("secrets", "list", "rotation"),
    ("secrets", "watch", "rotation"),
    ("configmaps", "get", "trigger-authentication"),
    ("configmaps", "list", "rotation"),
    ("configmaps", "watch", "rotation"),
    ("deployments", "get", "env-from-deployment"),
    ("deployments", "list", "rotation"),
    ("deployments", "watch", "rotation"),
    ("statefulsets", "get", "env-from-statefulset"),
    ("statefulsets", "list", "rotation"),
    ("statefulsets", "watch", "rotation"),
    ("pods", "list", "kubernetes-workload"),
    // Without this watch the ScaledJob executor still works, on lists repeated with a
    // backoff: a step seeing it late (`scaled-job-changes`) is not in the scenario yet.
    ("pods", "watch", "scaled-job-changes"),
    ("scaledjobs", "get", "scaled-job-ready"),
    ("scaledjobs", "list", "scaled-job-ready"),
    ("scaledjobs", "watch", "scaled-job-ready"),
    ("scaledjobs/status", "patch", "scaled-job-ready"),
    ("jobs", "list", "scaled-job-ready"),
    ("jobs", "watch", "scaled-job-history"),
    ("jobs", "create", "scaled-job-creates"),
    ("jobs", "delete", "scaled-job-history"),
    ("*/scale", "get", "reconcile"),
    ("*/scale", "patch", "activation"),
    ("horizontalpodautoscalers", "get", "pause"),
    ("horizontalpodautoscalers", "list", "reconcile"),
    ("horizontalpodautoscalers", "watch", "hpa-reads-metric"),
    ("horizontalpodautoscalers", "create", "reconcile"),
    ("horizontalpodautoscalers", "patch", "reconcile"),
    ("horizontalpodautoscalers", "delete", "pause"),
    ("events", "create", "event"),
    ("events", "patch", "event-series"),
    ("leases", "get", "lease"),
    ("leases", "create", "lease"),
    // The Lease is written once more when the replica settles.
    ("leases", "update", "lease"),
    ("leases", "list", "lease"),
    // On shutdown, and for Leases of replicas long gone: no step sees it yet
    // (`lease-released` is not in the scenario).
    ("leases", "delete", "lease-released"),
    // ("*", "list") of eventscale's own ClusterRole, for reads forwarded between
    // replicas, shares its key with the HPA controller's: the scenario runs one replica,
    // so no step needs it yet (`forwarded-read` is not in the scenario).
    ("*", "list", "forwarded-read"),
    // A trace asked of a replica that does not own the object is forwarded to the owner
    // and authorized there as a get: one replica here, so no step needs it yet.
    ("scaledobjects", "get", "forwarded-trace"),
    // The trace-reader role lets kube-apiserver pass a user's trace request on.
    ("scaledobjects/trace", "get", "trace"),
    ("scaledjobs/trace", "get", "scaled-job-trace"),
    ("*", "list", "hpa-reads-metric"),
    ("system:auth-delegator", "bind", "hpa-reads-metric"),
    ("extension-apiserver-authentication-reader", "bind", "ready"),
];

/// One permission to take away.
#[derive(Debug, Clone)]
enum Removal {
    /// `verb` from rule `rule` of the role document `doc`.
    Verb {
        doc: usize,
        rule: usize,
        resource: String,
        verb: String,
    },
    /// The binding document `doc` (to a built-in role).
    Binding { doc: usize, role: String },
}

impl Removal {
    fn key(&self) -> (String, String) {
        match self {
            Removal::Verb { resource, verb, .. } => (resource.clone(), verb.clone()),
            Removal::Binding { role, .. } => (role.clone(), "bind".into()),
        }
    }
}

/// The chart's RBAC for release `rbac`: ServiceAccount, roles and bindings. Without the
/// interceptor: its permissions (and eventscale's for HTTPScaledObjects) have no steps here
/// yet; `e2e/tests/helm.rs` checks them rule by rule and `e2e/tests/http.rs` exercises them.
fn chart_rbac() -> Vec<Value> {
    documents(&render(
        RELEASE,
        NS,
        &json!({"interceptor": {"enabled": false}}),
        false,
    ))
    .into_iter()
    .filter(|d| {
        matches!(
            d["kind"].as_str(),
            Some("ServiceAccount" | "ClusterRole" | "Role" | "ClusterRoleBinding" | "RoleBinding")
        )
    })
    .collect()
}

fn removals(docs: &[Value]) -> Vec<Removal> {
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        match d["kind"].as_str() {
            Some("ClusterRole" | "Role") => {
                for (r, rule) in d["rules"].as_array().into_iter().flatten().enumerate() {
                    for resource in rule["resources"].as_array().into_iter().flatten() {
                        for verb in rule["verbs"].as_array().into_iter().flatten() {
                            out.push(Removal::Verb {
                                doc: i,
                                rule: r,
                                resource: resource.as_str().unwrap_or_default().into(),
                                verb: verb.as_str().unwrap_or_default().into(),
                            });
                        }
                    }
                }
            }
            Some("ClusterRoleBinding" | "RoleBinding") => {
                let role = d["roleRef"]["name"].as_str().unwrap_or_default();
                if !role.starts_with(NAME) {
                    out.push(Removal::Binding {
                        doc: i,
                        role: role.into(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

fn apply_docs(docs: &[Value]) {
    let yaml = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    let (ok, _, err) = kubectl_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(ok, "applying the chart's RBAC: {err}");
}

/// Apply the chart's RBAC with `removal` taken out (none: as rendered).
fn apply_rbac(docs: &[Value], removal: Option<&Removal>) {
    let mut docs = docs.to_vec();
    match removal {
        Some(Removal::Verb {
            doc,
            rule,
            resource,
            verb,
        }) => {
            let rules = docs[*doc]["rules"].as_array_mut().expect("rules");
            let r = &mut rules[*rule];
            let resources: Vec<Value> = r["resources"].as_array().cloned().unwrap_or_default();
            let verbs: Vec<Value> = r["verbs"].as_array().cloned().unwrap_or_default();
            // Split the rule: the other resources keep every verb, this one loses `verb`.
            let mut others = r.clone();
            others["resources"] = Value::Array(
                resources
                    .iter()
                    .filter(|x| x.as_str() != Some(resource))
                    .cloned()
                    .collect(),
            );
            let mut this = r.clone();
            this["resources"] = json!([resource]);
            this["verbs"] = Value::Array(
                verbs
                    .iter()
                    .filter(|v| v.as_str() != Some(verb))
                    .cloned()
                    .collect(),
            );
            rules.remove(*rule);
            for x in [others, this] {
                let empty = |k: &str| x[k].as_array().is_none_or(|a| a.is_empty());
                if !empty("resources") && !empty("verbs") {
                    rules.push(x);
                }
            }
            apply_docs(&docs);
        }
        Some(Removal::Binding { doc, .. }) => {
            let d = docs.remove(*doc);
            apply_docs(&docs);
            let ns = d["metadata"]["namespace"].as_str().map(String::from);
            let kind = d["kind"].as_str().unwrap_or_default().to_lowercase();
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            let mut args = vec!["delete", &kind, name, "--ignore-not-found"];
            if let Some(ns) = ns.as_deref() {
                args.extend(["-n", ns]);
            }
            let (ok, _, err) = kubectl(&args);
            assert!(ok, "{err}");
        }
        None => apply_docs(&docs),
    }
    // The authorizer reads RBAC from its informers: give them a moment.
    std::thread::sleep(Duration::from_millis(1000));
}

/// A kubeconfig with the token of the chart's ServiceAccount.
fn service_account_kubeconfig() -> PathBuf {
    let token = crate::service_account_token(NS, NAME);
    let c = cluster();
    let admin = std::fs::read_to_string(c.state_dir.join("eventscale.kubeconfig"))
        .expect("the cluster's eventscale kubeconfig");
    let kc: String = admin
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("token:") {
                format!("    token: {token}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = c.state_dir.join("rbac-probe.kubeconfig");
    std::fs::write(&path, kc).expect("write kubeconfig");
    path
}

/// eventscale under the chart's account, on the APIService's port.
struct Probe {
    child: Child,
    log: PathBuf,
}

impl Probe {
    fn start(kubeconfig: &PathBuf, lease: &str) -> Self {
        let c = cluster();
        let log = c.state_dir.join(format!("logs/rbac-probe-{lease}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_eventscale"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--secure-port",
                &PORT.to_string(),
                "--bind-address",
                "127.0.0.1",
            ])
            .arg("--cert-dir")
            .arg(c.state_dir.join("eventscale-certs"))
            .args(["--metrics-port", "0", "--identity", "rbac-probe"])
            .args([
                "--leader-election-id",
                lease,
                "--lease-duration-seconds",
                "3",
            ])
            .args(["--namespace", NS, "--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("eventscale runs");
        Probe { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SIGTERM: the Lease is released.
        stop(self.child.id(), "-TERM");
        let _ = self.child.wait();
    }
}

fn get_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let (ok, out, _) = kubectl(&a);
    if !ok {
        return Value::Null;
    }
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

/// Ok when the `kind` object `name` of the scenario is Ready.
fn ready_of(kind: &str, name: &str) -> Result<(), String> {
    let (status, reason, message) = crate::condition_of(&sns(), kind, name, "Ready");
    if status == "True" {
        Ok(())
    } else {
        Err(format!("{name} Ready: {reason:?} {message:?}"))
    }
}

fn ready(so: &str) -> Result<(), String> {
    ready_of("scaledobject", so)
}

/// The scenario's ScaledJob: one Job at a time, each done in a second and removed at the
/// next poll (history limit 0); its trigger reads the Job template's env (get on the
/// ScaledJob). Applied when its steps begin, so that what it is refused shows during them.
fn scaled_job_yaml(prom: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {{name: sj}}\nspec:\n  pollingInterval: 1\n  \
         successfulJobsHistoryLimit: 0\n  failedJobsHistoryLimit: 0\n  jobTargetRef:\n    template:\n      spec:\n        \
         restartPolicy: Never\n        containers: [{{name: c, image: localhost/eventscale/demo:v1, imagePullPolicy: Never, \
         args: [job, '1'], env: [{{name: PROM_URL, value: '{prom}'}}]}}]\n  triggers:\n  - type: prometheus\n    \
         metadata: {{serverAddressFromEnv: PROM_URL, query: 'vector(1)', threshold: '1'}}\n"
    )
}

/// The names of the scenario ScaledJob's Jobs.
fn scaled_job_jobs() -> Vec<String> {
    let v = get_json(&[
        "-n",
        &sns(),
        "get",
        "jobs",
        "-l",
        "scaledjob.keda.sh/name=sj",
    ]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn replicas(kind: &str, name: &str) -> i64 {
    get_json(&["-n", &sns(), "get", kind, name])["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

fn hpa(name: &str) -> Value {
    get_json(&["-n", &sns(), "get", "hpa.v2beta2.autoscaling", name])
}

fn activation_events() -> Vec<Value> {
    get_json(&["-n", &sns(), "get", "events.v1.events.k8s.io"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["reason"] == "KEDAScaleTargetActivated" && e["regarding"]["name"] == "web")
        .collect()
}

fn lease(name: &str) -> Value {
    get_json(&["-n", NS, "get", "lease", name])
}

/// The scenario's objects: targets, authentication, and one ScaledObject per thing to
/// resolve, each polled every second.
fn scenario_yaml(prom: &str, prom_auth: &str, user: &str) -> String {
    let deployment = |name: &str, replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
             selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
             spec: {{containers: [{{name: c, image: localhost/eventscale/demo:v1, imagePullPolicy: Never, env: [{{name: PROM_URL, value: '{prom}'}}]}}]}}\n"
        )
    };
    let so = |name: &str, kind: &str, trigger: &str| {
        format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: {name}}}\nspec:\n  \
             scaleTargetRef: {{name: {name}, kind: {kind}}}\n  pollingInterval: 1\n  minReplicaCount: 1\n  \
             maxReplicaCount: 3\n  triggers:\n{trigger}"
        )
    };
    let prom_trigger = |extra: &str| {
        format!(
            "  - type: prometheus\n    metadata: {{serverAddress: '{prom_auth}', query: 'vector(1)', threshold: '5', authModes: basic}}\n{extra}"
        )
    };
    let docs = [
        deployment("web", 0),
        (
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: web}\nspec:\n  \
             scaleTargetRef: {name: web}\n  pollingInterval: 1\n  cooldownPeriod: 300\n  minReplicaCount: 0\n  \
             maxReplicaCount: 5\n  triggers:\n  - type: cron\n    metadata: {timezone: Etc/UTC, start: '0 0 * * *', \
             end: '59 23 * * *', desiredReplicas: '2'}\n"
        ).to_string(),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: prom-password}\nstringData: {password: PASSWORD}\n"
            .to_string(),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: prom-user}}\ndata: {{username: {user}}}\n"),
        "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: prom}\nspec:\n  \
         secretTargetRef: [{parameter: password, name: prom-password, key: password}]\n  \
         configMapTargetRef: [{parameter: username, name: prom-user, key: username}]\n"
            .to_string(),
        deployment("ta", 1),
        so("ta", "Deployment", &prom_trigger("    authenticationRef: {name: prom}\n")),
        format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ClusterTriggerAuthentication\nmetadata: {{name: {NAME}-probe}}\nspec:\n  \
             secretTargetRef: [{{parameter: password, name: {NAME}-probe, key: password}}, \
             {{parameter: username, name: {NAME}-probe, key: username}}]\n"
        ),
        deployment("cta", 1),
        so(
            "cta",
            "Deployment",
            &format!(
                "  - type: prometheus\n    metadata: {{serverAddress: '{prom_auth}', query: 'vector(1)', threshold: '5', \
                 authModes: basic}}\n    authenticationRef: {{name: {NAME}-probe, kind: ClusterTriggerAuthentication}}\n"
            ),
        ),
        deployment("env", 1),
        so(
            "env",
            "Deployment",
            "  - type: prometheus\n    metadata: {serverAddressFromEnv: PROM_URL, query: 'vector(1)', threshold: '5'}\n",
        ),
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  replicas: 1\n  serviceName: db\n  \
             selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    \
             spec: {{containers: [{{name: c, image: localhost/eventscale/demo:v1, imagePullPolicy: Never, env: [{{name: PROM_URL, value: '{prom}'}}]}}]}}\n"
        ),
        so(
            "db",
            "StatefulSet",
            "  - type: prometheus\n    metadata: {serverAddressFromEnv: PROM_URL, query: 'vector(1)', threshold: '5'}\n",
        ),
        deployment("pods", 1),
        so(
            "pods",
            "Deployment",
            "  - type: kubernetes-workload\n    metadata: {podSelector: 'app=nothing-here', value: '1'}\n",
        ),
        // A user who may read the objects, and so their traces.
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: object-reader}}\nrules:\n\
             - apiGroups: [keda.sh]\n  resources: [scaledobjects, scaledjobs]\n  verbs: [get]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: object-reader}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: object-reader}}\n\
             subjects: [{{kind: User, name: {TRACE_USER}, apiGroup: rbac.authorization.k8s.io}}]\n"
        ),
    ];
    docs.join("---\n")
}

/// What a step waits for: Ok when done, Err with what it saw.
type Check<'a> = Box<dyn FnMut() -> Result<(), String> + 'a>;

/// Wait for `check`; give up early (after a short grace) once eventscale logged a refusal
/// from the apiserver during this step, or after `limit`. A refusal logged before the step
/// began, which the earlier steps passed despite, is a later step's (the ScaledJob
/// executor's watches are refused from the start, its steps come last): this step gets
/// its whole `limit`.
fn wait_step(probe: &Probe, name: &str, limit: Duration, mut check: Check) -> Result<(), String> {
    let start = Instant::now();
    let refused = |log: &str| log.contains("forbidden") || log.contains("Forbidden");
    let refused_before = refused(&probe.log());
    let mut refused_at: Option<Instant> = None;
    loop {
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let log = probe.log();
        if refused_at.is_none() && !refused_before && refused(&log) {
            refused_at = Some(Instant::now());
        }
        let grace = refused_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3));
        if grace || start.elapsed() > limit {
            let refusal = log
                .lines()
                .find(|l| l.contains("orbidden"))
                .unwrap_or("(no refusal in eventscale's log)")
                .to_string();
            return Err(format!("step {name}: {last}; {refusal}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Run the scenario under `probe` until a step fails: Ok, or (failed step, detail).
/// `group` is the probe's `--leader-election-id`.
fn scenario(
    probe: &Probe,
    group: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    let lease_name = &format!("{group}-rbac-probe");
    let s = Duration::from_secs(15);
    let mut renew_seen: Option<String> = None;
    let steps: Vec<(&str, Duration, Check)> = vec![
        (
            "ready",
            s,
            Box::new(|| {
                let ok = Command::new("curl")
                    .args(["-fsSk", &format!("https://127.0.0.1:{PORT}/readyz")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|st| st.success());
                ok.then_some(()).ok_or_else(|| "readyz not ok".into())
            }),
        ),
        (
            "lease",
            s,
            Box::new(|| {
                // Its own Lease, written again once it listed the group and settled.
                let l = lease(lease_name);
                let settled = l["metadata"]["annotations"]["eventscale.sh/settled-at"]
                    .as_str()
                    .is_some_and(|t| t.parse::<i64>().is_ok());
                (l["spec"]["holderIdentity"] == "rbac-probe" && settled)
                    .then_some(())
                    .ok_or_else(|| {
                        format!(
                            "lease holder {}, settled-at {}",
                            l["spec"]["holderIdentity"],
                            l["metadata"]["annotations"]["eventscale.sh/settled-at"]
                        )
                    })
            }),
        ),
        (
            "lease-renewal",
            Duration::from_secs(8),
            Box::new(|| {
                let t = lease(lease_name)["spec"]["renewTime"].to_string();
                match &renew_seen {
                    Some(first) if *first != t => Ok(()),
                    Some(_) => Err(format!("renewTime still {t}")),
                    None => {
                        renew_seen = Some(t);
                        Err("first look".into())
                    }
                }
            }),
        ),
        (
            "reconcile",
            s,
            Box::new(|| {
                let h = hpa("keda-hpa-web");
                let so = get_json(&["-n", &sns(), "get", "scaledobject", "web"]);
                let fin = so["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "finalizer.keda.sh"));
                (h.is_object() && fin)
                    .then_some(())
                    .ok_or_else(|| format!("HPA present {}, finalizer {fin}", h.is_object()))
            }),
        ),
        ("status", s, Box::new(|| ready("web"))),
        ("trigger-authentication", s, Box::new(|| ready("ta"))),
        (
            "cluster-trigger-authentication",
            s,
            Box::new(|| ready("cta")),
        ),
        ("env-from-deployment", s, Box::new(|| ready("env"))),
        ("env-from-statefulset", s, Box::new(|| ready("db"))),
        ("kubernetes-workload", s, Box::new(|| ready("pods"))),
        (
            "activation",
            s,
            Box::new(|| {
                let n = replicas("deployment", "web");
                (n >= 1).then_some(()).ok_or_else(|| format!("web at {n}"))
            }),
        ),
        (
            "event",
            s,
            Box::new(|| {
                (!activation_events().is_empty())
                    .then_some(())
                    .ok_or_else(|| "no KEDAScaleTargetActivated Event".into())
            }),
        ),
        (
            "hpa-reads-metric",
            Duration::from_secs(40),
            Box::new(|| {
                let n = replicas("deployment", "web");
                let h = hpa("keda-hpa-web");
                (n == 2).then_some(()).ok_or_else(|| {
                    format!("web at {n}; HPA conditions {}", h["status"]["conditions"])
                })
            }),
        ),
        (
            "trace",
            s,
            Box::new(|| trace_as_user("scaledobjects", "web")),
        ),
        (
            "hpa-drift",
            s,
            Box::new({
                let mut patched = false;
                move || {
                    if !patched {
                        let (ok, _, err) = kubectl(&[
                            "-n",
                            &sns(),
                            "patch",
                            "hpa.v2beta2.autoscaling",
                            "keda-hpa-web",
                            "--type=merge",
                            "-p",
                            r#"{"spec":{"maxReplicas":9}}"#,
                        ]);
                        patched = ok;
                        return Err(format!("patching the HPA: {err}"));
                    }
                    let m = hpa("keda-hpa-web")["spec"]["maxReplicas"].clone();
                    (m == 5)
                        .then_some(())
                        .ok_or_else(|| format!("maxReplicas {m}"))
                }
            }),
        ),
        (
            "event-series",
            s,
            Box::new({
                let mut scaled = false;
                move || {
                    if !scaled {
                        // Back to 0 by hand while the trigger is active: activated again,
                        // the same Event, which the recorder patches into a series.
                        let (ok, _, err) =
                            kubectl(&["-n", &sns(), "scale", "deployment", "web", "--replicas=0"]);
                        scaled = ok;
                        return Err(format!("scaling web to 0: {err}"));
                    }
                    let e = activation_events();
                    let count = e
                        .iter()
                        .map(|e| e["series"]["count"].as_i64().unwrap_or(1))
                        .max();
                    (count >= Some(2)).then_some(()).ok_or_else(|| {
                        format!("activation Events: {} with counts up to {count:?}", e.len())
                    })
                }
            }),
        ),
        (
            "pause",
            s,
            Box::new({
                let mut paused = false;
                move || {
                    if !paused {
                        let (ok, _, err) = kubectl(&[
                            "-n",
                            &sns(),
                            "annotate",
                            "scaledobject",
                            "web",
                            "autoscaling.keda.sh/paused=true",
                        ]);
                        paused = ok;
                        return Err(format!("annotating: {err}"));
                    }
                    let h = hpa("keda-hpa-web");
                    h.is_null()
                        .then_some(())
                        .ok_or_else(|| "HPA still there".into())
                }
            }),
        ),
        (
            "scaled-job-ready",
            s,
            Box::new({
                let mut applied = false;
                move || {
                    if !applied {
                        let yaml = scaled_job_yaml(&env["EVENTSCALE_PROMETHEUS_URL"]);
                        let (ok, _, err) =
                            kubectl_stdin(&["-n", &sns(), "apply", "-f", "-"], Some(&yaml));
                        applied = ok;
                        return Err(format!("applying the ScaledJob: {err}"));
                    }
                    ready_of("scaledjob", "sj")
                }
            }),
        ),
        (
            "scaled-job-creates",
            s,
            Box::new(|| {
                (!scaled_job_jobs().is_empty())
                    .then_some(())
                    .ok_or_else(|| "no Job of sj".into())
            }),
        ),
        (
            "scaled-job-trace",
            s,
            Box::new(|| trace_as_user("scaledjobs", "sj")),
        ),
        (
            "scaled-job-history",
            s,
            Box::new({
                let mut first: Option<String> = None;
                move || {
                    let now = scaled_job_jobs();
                    match &first {
                        None => {
                            first = now.first().cloned();
                            Err("first look".into())
                        }
                        Some(f) if now.contains(f) => Err(format!("{f} still kept")),
                        Some(_) => Ok(()),
                    }
                }
            }),
        ),
    ];
    for (name, limit, check) in steps {
        if let Err(e) = wait_step(probe, name, limit, check) {
            return Err((name.to_string(), e));
        }
    }
    Ok(())
}

/// Create the scenario's namespace and objects (and the ClusterTriggerAuthentication's
/// Secret in eventscale's namespace).
fn scenario_up(env: &std::collections::BTreeMap<String, String>, run: &str) {
    scenario_down();
    *SCENARIO.lock().unwrap_or_else(|p| p.into_inner()) =
        format!("e2e-rbac-{run}-{}", std::process::id());
    let (ok, _, err) = kubectl(&["create", "namespace", &sns()]);
    assert!(ok, "{err}");
    let prom = &env["EVENTSCALE_PROMETHEUS_URL"];
    let prom_auth = &env["EVENTSCALE_PROMETHEUS_AUTH_URL"];
    let user = &env["EVENTSCALE_PROMETHEUS_USER"];
    let password = &env["EVENTSCALE_PROMETHEUS_PASSWORD"];
    let yaml = scenario_yaml(prom, prom_auth, user).replace("PASSWORD", password);
    let (ok, _, err) = kubectl_stdin(&["-n", &sns(), "apply", "-f", "-"], Some(&yaml));
    assert!(ok, "scenario objects: {err}");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {NAME}-probe, namespace: {NS}}}\nstringData: {{password: '{password}', username: '{user}'}}\n"
    );
    let (ok, _, err) = kubectl_stdin(&["apply", "-f", "-"], Some(&secret));
    assert!(ok, "{err}");
}

/// Remove the scenario, finalizers included (the probe may have lacked the rights to).
fn scenario_down() {
    if sns().is_empty() {
        return;
    }
    let (_, out, _) = kubectl(&["-n", &sns(), "get", "scaledobjects", "-o", "name"]);
    for so in out.lines() {
        let _ = kubectl(&[
            "-n",
            &sns(),
            "patch",
            so,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }
    let _ = kubectl(&[
        "delete",
        "namespace",
        &sns(),
        "--ignore-not-found",
        "--wait=true",
        "--timeout=60s",
    ]);
}

/// Brings the cluster's own replica and RBAC back when the test ends, passed or not.
struct RestoreCluster;

impl Drop for RestoreCluster {
    fn drop(&mut self) {
        scenario_down();
        cluster_up();
    }
}

/// The chart's RBAC applied for its own ServiceAccount, the cluster's replica stopped (its
/// Lease released) and the cluster's own grant to the HPA controller removed, so only the
/// chart's rules count. Returns what the runs need; the cluster is restored on drop.
fn setup() -> (
    Vec<Value>,
    PathBuf,
    std::collections::BTreeMap<String, String>,
    RestoreCluster,
) {
    cluster();
    let env = sources_env(&["prometheus"]);
    let docs = chart_rbac();
    apply_rbac(&docs, None);
    let kubeconfig = service_account_kubeconfig();
    let restore = RestoreCluster;
    stop(
        pid_of("eventscale").expect("the cluster's eventscale PID"),
        "-TERM",
    );
    // The cluster's own bindings of what the chart binds would grant it whatever the
    // chart's roles lose (the restore applies them again).
    for binding in [
        "eventscale:hpa-controller-external-metrics",
        "eventscale:trace-readers",
    ] {
        let (ok, _, err) = kubectl(&[
            "delete",
            "clusterrolebinding",
            binding,
            "--ignore-not-found",
        ]);
        assert!(ok, "{err}");
    }
    (docs, kubeconfig, env, restore)
}

/// As rendered, the chart's RBAC is enough: eventscale under the chart's ServiceAccount
/// passes every step, the cron scale-out by the real HPA included, and is refused nothing.
#[tokio::test]
async fn the_charts_rbac_is_enough() {
    let _serial = crate::SERIAL.lock().await;
    let (_docs, kubeconfig, env, _restore) = setup();
    scenario_up(&env, "full");
    let probe = Probe::start(&kubeconfig, "rbac-full");
    if let Err((step, e)) = scenario(&probe, "rbac-full", &env) {
        panic!(
            "with the chart's RBAC as rendered, step {step} failed: {e}\n{}",
            probe.log()
        );
    }
    assert!(
        !probe.log().contains("orbidden"),
        "refusals with the full RBAC: {}",
        probe.log()
    );
    drop(probe);
    let _ = kubectl(&[
        "-n",
        NS,
        "delete",
        "lease",
        "rbac-full-rbac-probe",
        "--ignore-not-found",
    ]);
}

/// Every permission is needed: each verb of each rule and each binding to a built-in role
/// is removed in turn, and the step the table names must be the one that fails. About a
/// minute per permission (40 of them), so it runs on request:
/// `cargo test -p metrics-adapter --test e2e_disruptive -- --ignored rbac`
/// (`EVENTSCALE_RBAC_ONLY=<resource>[,<resource>...]` narrows it to those resources or
/// roles).
#[tokio::test]
#[ignore = "about half an hour: run with --ignored"]
async fn every_permission_of_the_chart_is_needed() {
    let _serial = crate::SERIAL.lock().await;
    let (docs, kubeconfig, env, _restore) = setup();
    let all = removals(&docs);
    // Every permission has a step that needs it, and the table names nothing the chart
    // does not grant.
    for r in &all {
        let (resource, verb) = r.key();
        assert!(
            NEEDED_BY
                .iter()
                .any(|(res, v, _)| *res == resource && *v == verb),
            "the chart grants {verb} on {resource}, which no step of this test needs"
        );
    }
    assert_eq!(all.len(), NEEDED_BY.len(), "{all:?}");
    let only = std::env::var("EVENTSCALE_RBAC_ONLY").ok();

    let mut wrong = Vec::new();
    for (i, r) in all.iter().enumerate() {
        let (resource, verb) = r.key();
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == resource))
        {
            continue;
        }
        let expected = NEEDED_BY
            .iter()
            .find(|(res, v, _)| *res == resource && *v == verb)
            .map(|(_, _, s)| *s)
            .unwrap_or_default();
        apply_rbac(&docs, Some(r));
        scenario_up(&env, &i.to_string());
        let lease_name = format!("rbac-{i}");
        let outcome = {
            let probe = Probe::start(&kubeconfig, &lease_name);
            scenario(&probe, &lease_name, &env)
        };
        eprintln!(
            "[rbac] without {verb} on {resource}: {:?}",
            outcome.as_ref().map_err(|e| &e.0)
        );
        match outcome {
            Ok(()) => wrong.push(format!("without {verb} on {resource} every step passed")),
            Err((step, e)) if step != expected => wrong.push(format!(
                "without {verb} on {resource} step {step} failed, expected {expected}: {e}"
            )),
            Err(_) => {}
        }
        apply_rbac(&docs, None);
        let _ = kubectl(&[
            "-n",
            NS,
            "delete",
            "lease",
            &format!("{lease_name}-rbac-probe"),
            "--ignore-not-found",
        ]);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
