//! "Why N replicas?" on the real cluster: each ScaledObject's trace, read through
//! kube-apiserver and the traces' APIService (`kubectl get --raw` and `eventscale
//! explain`), names what holds its replicas: a cooldown after activity, a pause, a
//! fallback, a source that is down, activity with the HPA's arithmetic; and a ScaledJob's
//! trace its demand. A user who may `get` the ScaledObject reads its trace; one who may
//! not is refused with 403.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{apply, eventually, kubectl, wait_for_replicas, Namespace};

fn trace_path(ns: &str, resource: &str, name: &str) -> String {
    format!("/apis/explain.eventscale.sh/v1alpha1/namespaces/{ns}/{resource}/{name}/trace")
}

/// The trace of `resource` `name` as kubectl reads it (through the aggregator).
fn trace(ns: &str, resource: &str, name: &str) -> Result<Value, String> {
    let (ok, out, err) = kubectl(&["get", "--raw", &trace_path(ns, resource, name)]);
    if !ok {
        return Err(err);
    }
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

/// Wait until the trace of ScaledObject `name` says `cause` (and `rule`, when given).
async fn trace_saying(ns: &str, name: &str, cause: &str, rule: Option<&str>) -> Value {
    let what = format!("the trace of {name} to say {cause}");
    eventually(Duration::from_secs(90), &what, || {
        let got = trace(ns, "scaledobjects", name).ok().filter(|t| {
            t["summary"]["cause"] == cause && rule.is_none_or(|r| t["activation"]["rule"] == r)
        });
        async move { got }
    })
    .await
}

fn explain(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventscale"))
        .arg("explain")
        .args(args)
        .env("KUBECONFIG", &crate::cluster().kubeconfig)
        .output()
        .expect("eventscale explain runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn deployment(name: &str, replicas: u32) -> String {
    format!("{}---\n", crate::deployment(name, replicas, &[]))
}

fn scaled_object(name: &str, annotations: &str, extra: &str, trigger: &str) -> String {
    format!(
        r#"apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: {name}, annotations: {{{annotations}}}}}
spec:
  scaleTargetRef: {{name: {name}}}
  pollingInterval: 1
  minReplicaCount: 0
  maxReplicaCount: 4
{extra}
  triggers:
  - {trigger}
---
"#
    )
}

const DOWN: &str = r#"type: prometheus
    metadata: {serverAddress: "http://127.0.0.1:1", query: "up", threshold: "1"}"#;

#[tokio::test]
async fn each_trace_names_what_holds_the_replicas() {
    // Real pods starting and stopping: a load the k6 walkthrough must not share.
    let _node = crate::NODE_LOAD.read().await;
    let ns = Namespace::create("e2e-explain");
    let n = &ns.0;
    let mut yaml = String::new();
    // Pods counted by the workload triggers: `load` drives `cool`, `busy` drives `active`.
    yaml += &deployment("load", 1);
    yaml += &deployment("busy", 2);
    yaml += &deployment("cool", 0);
    yaml += &scaled_object(
        "cool",
        "",
        "  cooldownPeriod: 600",
        r#"type: kubernetes-workload
    metadata: {podSelector: "app=load", value: "1"}"#,
    );
    yaml += &deployment("paused", 2);
    yaml += &scaled_object(
        "paused",
        r#"autoscaling.keda.sh/paused-replicas: "1""#,
        "",
        r#"type: kubernetes-workload
    metadata: {podSelector: "app=busy", value: "1"}"#,
    );
    yaml += &deployment("fb", 1);
    yaml += &scaled_object(
        "fb",
        "",
        "  fallback: {failureThreshold: 2, replicas: 2}",
        DOWN,
    );
    yaml += &deployment("down", 1);
    yaml += &scaled_object("down", "", "", DOWN);
    yaml += &deployment("active", 0);
    yaml += &scaled_object(
        "active",
        "",
        "",
        r#"type: kubernetes-workload
    metadata: {podSelector: "app=busy", value: "1"}"#,
    );
    apply(n, &yaml);

    // Active: two busy pods over a target of 1, scaled from zero, the HPA at 2.
    wait_for_replicas(n, "active", 2).await;
    let t = trace_saying(n, "active", "Active", Some("ActiveHpaScales")).await;
    assert_eq!(t["kind"], "ScalingTrace", "{t}");
    assert_eq!(t["servedBy"]["isOwner"], true, "{t}");
    let trigger = &t["triggers"][0];
    assert_eq!(
        (
            trigger["type"].as_str(),
            trigger["value"].as_f64(),
            trigger["active"].as_bool()
        ),
        (Some("kubernetes-workload"), Some(2.0), Some(true)),
        "{t}"
    );
    assert_eq!(trigger["activationThreshold"].as_f64(), Some(0.0), "{t}");
    let hpa = &t["hpa"];
    assert_eq!(hpa["name"], "keda-hpa-active", "{t}");
    assert_eq!(
        hpa["clamped"].as_i64(),
        Some(2),
        "the HPA's arithmetic: {t}"
    );
    assert!(
        hpa["metrics"][0]["formula"]
            .as_str()
            .is_some_and(|f| f.contains('2')),
        "{t}"
    );
    assert_eq!(hpa["desiredReplicas"].as_i64(), Some(2), "{t}");
    assert!(
        t["summary"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("value 2 over target 1")),
        "{t}"
    );
    let write = &t["lastScaleWrite"];
    assert_eq!(
        (
            write["from"].as_i64(),
            write["to"].as_i64(),
            write["rule"].as_str(),
            write["result"].as_str()
        ),
        (Some(0), Some(1), Some("Activate"), Some("Scaled")),
        "scaled from zero by eventscale, then by the HPA: {t}"
    );

    // Held by the cooldown: active while `load` ran, then inactive with 600 s to wait.
    wait_for_replicas(n, "cool", 1).await;
    let (ok, _, err) = kubectl(&["-n", n, "scale", "deployment/load", "--replicas=0"]);
    assert!(ok, "{err}");
    let t = trace_saying(n, "cool", "Cooldown", Some("Cooldown")).await;
    let c = &t["cooldown"];
    assert_eq!(
        (c["kind"].as_str(), c["holding"].as_bool()),
        (Some("Cooldown"), Some(true)),
        "{t}"
    );
    let left = c["remainingSeconds"].as_i64().unwrap_or(0);
    assert!((500..=600).contains(&left), "{left}: {t}");
    assert_eq!(c["seconds"].as_i64(), Some(600), "{t}");
    assert_eq!(t["summary"]["replicas"].as_i64(), Some(1), "{t}");
    assert!(
        t["summary"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cooldownPeriod 600s") && m.contains("scales to 0 in")),
        "{t}"
    );
    assert_eq!(t["triggers"][0]["value"].as_f64(), Some(0.0), "{t}");

    // Paused at paused-replicas 1: scaled from 2 to 1 under that rule.
    wait_for_replicas(n, "paused", 1).await;
    let t = trace_saying(n, "paused", "PausedReplicas", Some("PausedReplicas")).await;
    assert_eq!(t["pause"]["replicas"].as_i64(), Some(1), "{t}");
    assert!(
        t["summary"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("autoscaling.keda.sh/paused-replicas=1")),
        "{t}"
    );
    assert_eq!(t["lastScaleWrite"]["rule"], "PausedReplicas", "{t}");
    assert!(
        t["hpa"]["exists"] == false,
        "the HPA is removed while paused: {t}"
    );

    // The source is down, no fallback: nothing is scaled, the error is shown.
    let t = trace_saying(n, "down", "SourceDown", Some("TriggerError")).await;
    let error = t["triggers"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("127.0.0.1:1"), "{t}");
    assert!(
        t["summary"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no fallback")),
        "{t}"
    );
    assert_eq!(t["summary"]["replicas"].as_i64(), Some(1), "{t}");

    // The same source with a fallback: past the threshold, the fallback is served.
    let t = trace_saying(n, "fb", "Fallback", None).await;
    assert_eq!(t["fallback"]["active"], true, "{t}");
    let failures = t["triggers"][0]["health"]["numberOfFailures"]
        .as_i64()
        .unwrap_or(0);
    assert!(failures > 2, "{t}");
    assert!(
        t["summary"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("failureThreshold 2") && m.contains("2 replicas")),
        "{t}"
    );

    // `eventscale explain`, through the same API: text and JSON.
    let (ok, out, err) = explain(&[&format!("{n}/down")]);
    assert!(ok, "{err}");
    assert!(out.contains("Cause:    SourceDown"), "{out}");
    assert!(out.contains("Decision: rule TriggerError"), "{out}");
    let (ok, out, err) = explain(&["cool", "-n", n, "-o", "json"]);
    assert!(ok, "{err}");
    let t: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(t["summary"]["cause"], "Cooldown", "{t}");
    let (ok, _, err) = explain(&[&format!("{n}/missing")]);
    assert!(!ok);
    assert!(
        err.contains("Error from server (NotFound)") && err.contains("missing"),
        "{err}"
    );
}

/// Whoever may `get` a ScaledObject reads its trace; whoever may not is refused by
/// eventscale with kube-apiserver's words for that `get`. A ScaledJob's trace shows its
/// demand.
#[tokio::test]
async fn a_trace_is_read_by_whoever_may_get_the_object() {
    let ns = Namespace::create("e2e-explain-rbac");
    let n = &ns.0;
    let reader = format!("e2e-explain-reader-{}", std::process::id());
    let stranger = format!("e2e-explain-stranger-{}", std::process::id());
    apply(
        n,
        &format!(
            r#"{deployment}apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  pollingInterval: 1
  triggers:
  - type: cron
    metadata: {{timezone: UTC, start: "0 0 1 1 *", end: "5 0 1 1 *", desiredReplicas: "2"}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {{name: jobs}}
spec:
  pollingInterval: 1
  maxReplicaCount: 2
  jobTargetRef:
    template:
      spec:
        restartPolicy: Never
        containers: [{{name: c, image: localhost/eventscale/demo:v1, imagePullPolicy: Never, args: [job, "1"]}}]
  triggers:
  - {DOWN}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: so-reader}}
rules:
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: so-reader}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: so-reader}}
subjects:
- {{kind: User, name: {reader}, apiGroup: rbac.authorization.k8s.io}}
"#,
            deployment = deployment("web", 1)
        ),
    );
    let path = trace_path(n, "scaledobjects", "web");
    // The reader: 200 (once the object is seen and polled).
    let t: Value = eventually(Duration::from_secs(60), "the reader's trace", || {
        let (ok, out, _) = kubectl(&["get", "--raw", &path, "--as", &reader]);
        let t = ok
            .then(|| serde_json::from_str::<Value>(&out).ok())
            .flatten()
            .filter(|t| t["activation"]["rule"] == "Inactive");
        async move { t }
    })
    .await;
    assert_eq!(t["object"]["name"], "web", "{t}");
    assert_eq!(
        t["activation"]["rule"], "Inactive",
        "outside its window, at 0: {t}"
    );
    assert_eq!(t["summary"]["replicas"].as_i64(), Some(0), "{t}");
    // The stranger passes kube-apiserver (every authenticated user may ask) and is refused
    // by eventscale's SubjectAccessReview.
    let (ok, _, err) = kubectl(&["get", "--raw", &path, "--as", &stranger]);
    assert!(
        !ok,
        "a user who may not get the ScaledObject read its trace"
    );
    assert!(
        err.contains("Forbidden")
            && err.contains(&format!(
                "scaledobjects.keda.sh \"web\" is forbidden: User \"{stranger}\" cannot get resource \"scaledobjects\" in API group \"keda.sh\" in the namespace \"{n}\""
            )),
        "{err}"
    );
    // The reader may not get ScaledJobs: refused for that trace.
    let (ok, _, err) = kubectl(&[
        "get",
        "--raw",
        &trace_path(n, "scaledjobs", "jobs"),
        "--as",
        &reader,
    ]);
    assert!(
        !ok && err.contains("cannot get resource \"scaledjobs\""),
        "{err}"
    );
    // The ScaledJob's own trace (as the admin): its source is down, no Jobs are created.
    let t = eventually(Duration::from_secs(60), "the ScaledJob's trace", || {
        let t = trace(n, "scaledjobs", "jobs")
            .ok()
            .filter(|t| t["job"].is_object());
        async move { t }
    })
    .await;
    assert_eq!(t["object"]["kind"], "ScaledJob", "{t}");
    assert_eq!(t["summary"]["cause"], "SourceDown", "{t}");
    assert_eq!(t["job"]["active"], false, "{t}");
    assert_eq!(t["job"]["created"].as_i64(), Some(0), "{t}");
}
