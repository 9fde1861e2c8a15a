//! The local cluster's real node (`eventscale-node`: kubelet, containerd, kube-proxy, a CNI
//! bridge): pods run, become Ready through real probes and answer HTTP; `kubectl logs` and
//! `exec` work; images are never pulled; the network guards are in place; a broken image or a
//! crash-looping pod shows in `kubectl get pods` and its events, and does not confuse
//! eventscale.

use std::time::Duration;

use serde_json::Value;

use crate::cron::{hpa_api, open_window, wait_for_hpa_named, wait_for_metric, TZ};
use crate::{
    apply, client, cluster, deployment, deployment_with, endpoint_ips, eventually, http, kubectl,
    kubectl_json, service, wait_for_ready, wait_for_replicas, Namespace,
};

const NODE: &str = "eventscale-node";

/// The first pod matching `selector` in `ns`, as JSON.
fn first_pod(ns: &str, selector: &str) -> Value {
    kubectl_json(&["-n", ns, "get", "pods", "-l", selector, "-o", "json"])["items"][0].clone()
}

/// Wait until a pod matching `selector` has a container waiting for one of `reasons`;
/// returns that pod.
async fn wait_for_waiting(ns: &str, selector: &str, reasons: &[&str]) -> Value {
    eventually(
        Duration::from_secs(120),
        &format!("a pod {selector} waiting with {reasons:?}"),
        || {
            let pod = first_pod(ns, selector);
            let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            async move { reasons.contains(&reason.as_str()).then_some(pod) }
        },
    )
    .await
}

/// Events of `ns` whose reason is `reason`, their messages.
fn event_messages(ns: &str, reason: &str) -> Vec<String> {
    let field = format!("reason={reason}");
    kubectl_json(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        &field,
        "-o",
        "json",
    ])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// The node is Ready, has no taint (users' manifests need no toleration), and is the
/// kubelet v1.20.2 on containerd this project starts.
#[test]
fn the_node_is_ready_and_schedulable() {
    let node = kubectl_json(&["get", "node", NODE, "-o", "json"]);
    let ready = node["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready["status"], "True", "{ready}");
    assert!(node["spec"]["taints"].is_null(), "{}", node["spec"]);
    assert!(node["spec"]["unschedulable"].is_null(), "{}", node["spec"]);
    let info = &node["status"]["nodeInfo"];
    assert_eq!(info["kubeletVersion"], "v1.20.2", "{info}");
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://")),
        "{info}"
    );
    let addresses = node["status"]["addresses"].to_string();
    assert!(addresses.contains("10.244.0.1"), "{addresses}");
}

/// The walkthrough's Deployment and Service, unchanged: its image name is the demo image's
/// second tag, so the pod runs, becomes Ready, answers `hello from <pod>` on its IP and
/// through the Service's ClusterIP (kube-proxy), and `kubectl logs` and `exec` reach it.
/// Inside, the pod has no default route and no resolver.
#[tokio::test]
async fn the_walkthrough_deployment_runs_and_serves() {
    let ns = Namespace::create("e2e-node-walkthrough");
    let yaml = std::fs::read_to_string(crate::repo_root().join("examples/deployment.yaml"))
        .expect("examples/deployment.yaml");
    apply(&ns.0, &yaml);
    wait_for_ready(&ns.0, "go-helloworld", 1, None).await;
    let ip = eventually(
        Duration::from_secs(60),
        "go-helloworld in its Service's Endpoints",
        || {
            let ips = endpoint_ips(&ns.0, "go-helloworld");
            async move { (ips.len() == 1).then(|| ips[0].clone()) }
        },
    )
    .await;
    let pod = first_pod(&ns.0, "app=go-helloworld");
    let name = pod["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    assert_eq!(pod["spec"]["nodeName"], NODE);
    assert_eq!(pod["status"]["podIP"], ip.as_str());

    let (code, body) = http("GET", &format!("{ip}:8080"), "/");
    assert_eq!(
        (code, body.as_str()),
        (200, format!("hello from {name}\n").as_str())
    );
    let svc = kubectl_json(&["-n", &ns.0, "get", "service", "go-helloworld", "-o", "json"]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().expect("a ClusterIP");
    // kube-proxy's rules may take a moment after the Endpoints change.
    eventually(
        Duration::from_secs(30),
        "an answer through the ClusterIP",
        || {
            let (code, body) = http("GET", &format!("{cluster_ip}:8080"), "/");
            let want = format!("hello from {name}\n");
            async move { (code == 200 && body == want).then_some(()) }
        },
    )
    .await;

    let (ok, logs, err) = kubectl(&["-n", &ns.0, "logs", &name]);
    assert!(ok, "kubectl logs: {err}");
    assert!(logs.contains("serving on 0.0.0.0:8080"), "{logs}");
    let (ok, inside, err) = kubectl(&[
        "-n",
        &ns.0,
        "exec",
        &name,
        "--",
        "/eventscale-demo",
        "cat",
        "/proc/net/route",
        "/etc/resolv.conf",
    ]);
    assert!(ok, "kubectl exec: {err}");
    // /proc/net/route: Iface, Destination, Gateway, ... in hex; a default route has
    // destination 00000000.
    let routes: Vec<&str> = inside.lines().filter(|l| l.starts_with("eth0")).collect();
    assert!(!routes.is_empty(), "{inside}");
    assert!(
        routes
            .iter()
            .all(|r| r.split_whitespace().nth(1) != Some("00000000")),
        "a pod has a default route: {inside}"
    );
    // No resolver: the only server named is the pod's own loopback, where nothing listens.
    let servers: Vec<&str> = inside
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    assert_eq!(servers, ["127.0.0.1"], "a pod has a resolver: {inside}");
}

/// Nothing is ever pulled: a pod naming an image that was not imported (`nginx`, as many
/// manifests do, or another registry's) fails to pull, and the only registry containerd
/// tried is the closed port on loopback.
#[tokio::test]
async fn images_that_were_not_imported_are_never_pulled() {
    let ns = Namespace::create("e2e-node-no-pull");
    for (name, image) in [
        ("nginx", "nginx"),
        ("elsewhere", "rg.fr-par.scw.cloud/novigrad/other:1"),
    ] {
        apply(
            &ns.0,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\n\
                 spec: {{containers: [{{name: c, image: '{image}'}}]}}\n"
            ),
        );
    }
    for name in ["nginx", "elsewhere"] {
        wait_for_waiting(
            &ns.0,
            &format!("app={name}"),
            &["ErrImagePull", "ImagePullBackOff"],
        )
        .await;
    }
    let failed = eventually(Duration::from_secs(60), "Failed pull events", || {
        let messages = event_messages(&ns.0, "Failed");
        async move { (messages.len() >= 2).then_some(messages) }
    })
    .await;
    for m in failed.iter().filter(|m| m.contains("pull")) {
        assert!(m.contains("127.0.0.1:1"), "a pull went elsewhere: {m}");
    }
}

/// The guards of the network rule are in place while the node runs: the metadata service
/// is rejected, the kubelet runs with AWS_EC2_METADATA_DISABLED, only bridge-to-bridge
/// traffic is forwarded, the Service range is routed onto the bridge, and the node name
/// resolves from /etc/hosts. No pod has tried to leave the bridge (the drop counters).
#[test]
fn the_network_guards_are_in_place() {
    let _ = cluster();
    let iptables = |args: &[&str]| {
        let out = std::process::Command::new("iptables")
            .args(args)
            .output()
            .expect("iptables runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, _) = iptables(&["-C", "OUTPUT", "-d", "169.254.169.254/32", "-j", "REJECT"]);
    assert!(ok, "no OUTPUT reject rule for the metadata service");
    // Its counter: nothing on this machine has tried the metadata service since the node's
    // guards went in (the kubelet would, without AWS_EC2_METADATA_DISABLED).
    let (_, output) = iptables(&["-L", "OUTPUT", "-v", "-x", "-n"]);
    let metadata = output
        .lines()
        .find(|l| l.contains("169.254.169.254"))
        .expect("the metadata rule in OUTPUT");
    assert_eq!(
        metadata.split_whitespace().next(),
        Some("0"),
        "something tried the metadata service: {output}"
    );
    let (ok, _) = iptables(&["-t", "mangle", "-C", "FORWARD", "-j", "EVENTSCALE-FORWARD"]);
    assert!(ok, "mangle FORWARD does not jump to EVENTSCALE-FORWARD");
    let (ok, _) = iptables(&["-C", "OUTPUT", "-j", "EVENTSCALE-OUTPUT"]);
    assert!(ok, "OUTPUT does not jump to EVENTSCALE-OUTPUT");
    let (ok, rules) = iptables(&["-t", "mangle", "-L", "EVENTSCALE-FORWARD", "-v", "-x", "-n"]);
    assert!(ok, "no EVENTSCALE-FORWARD chain");
    let drops: Vec<&str> = rules.lines().filter(|l| l.contains("DROP")).collect();
    assert_eq!(drops.len(), 3, "{rules}");
    for rule in drops {
        assert_eq!(
            rule.split_whitespace().next(),
            Some("0"),
            "a packet was dropped at the bridge's edge: {rules}"
        );
    }

    let pid = crate::pid_of("kubelet").expect("the kubelet's PID");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the kubelet's environment");
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"AWS_EC2_METADATA_DISABLED=true"),
        "the kubelet runs without AWS_EC2_METADATA_DISABLED=true"
    );

    let route = std::process::Command::new("ip")
        .args(["route", "get", "10.96.0.10"])
        .output()
        .expect("ip route");
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(route.contains("dev eventscale0"), "{route}");
    let hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("10.244.0.1 eventscale-node ")),
        "{hosts}"
    );
}

/// The demo application: `?delay_ms=` holds a request that long; `/healthz` follows
/// `POST /healthz/fail` and `/healthz/pass`, and the kubelet's readiness probe takes the
/// pod out of the Service's Endpoints and back.
#[tokio::test]
async fn readiness_follows_the_probe_and_requests_can_be_held() {
    let ns = Namespace::create("e2e-node-probe");
    apply(
        &ns.0,
        &format!("{}\n---\n{}", deployment("web", 1, &[]), service("web")),
    );
    wait_for_ready(&ns.0, "web", 1, Some("web")).await;
    let ip = endpoint_ips(&ns.0, "web")[0].clone();
    let addr = format!("{ip}:8080");

    let started = std::time::Instant::now();
    let (code, body) = http("GET", &addr, "/?delay_ms=400");
    assert_eq!(code, 200, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let (code, body) = http("GET", &addr, "/?delay_ms=soon");
    assert_eq!(code, 400, "{body}");

    assert_eq!(http("POST", &addr, "/healthz/fail").0, 200);
    assert_eq!(http("GET", &addr, "/healthz").0, 503);
    wait_for_ready(&ns.0, "web", 0, None).await;
    assert!(endpoint_ips(&ns.0, "web").is_empty());
    assert_eq!(http("POST", &addr, "/healthz/pass").0, 200);
    wait_for_ready(&ns.0, "web", 1, Some("web")).await;
}

/// `job SECONDS` sleeps and exits 0: a Job of it completes.
#[tokio::test]
async fn a_job_runs_to_completion() {
    let ns = Namespace::create("e2e-node-job");
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: sleeper}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: {}
        imagePullPolicy: Never
        args: [job, "1"]
"#,
            crate::DEMO_IMAGE
        ),
    );
    eventually(Duration::from_secs(120), "Job sleeper succeeded", || {
        let job = kubectl_json(&["-n", &ns.0, "get", "job", "sleeper", "-o", "json"]);
        async move { (job["status"]["succeeded"] == 1).then_some(()) }
    })
    .await;
}

/// A Deployment whose image was never imported, and one whose pods crash: each shows in
/// `kubectl get pods` (ImagePullBackOff, CrashLoopBackOff) and in its events, while
/// eventscale serves their ScaledObjects' metrics and the HPA scales them as usual.
#[tokio::test]
async fn broken_pods_are_visible_and_do_not_confuse_eventscale() {
    let ns = Namespace::create("e2e-node-broken");
    let (start, end, metric) = open_window();
    let so = |name: &str| {
        format!(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: {name}}}
spec:
  scaleTargetRef: {{name: {name}}}
  minReplicaCount: 1
  triggers:
  - type: cron
    metadata: {{timezone: {TZ}, start: "{start}", end: "{end}", desiredReplicas: "2"}}
"#
        )
    };
    apply(
        &ns.0,
        &format!(
            "{}\n---\n{}\n---\n{}\n---\n{}",
            deployment_with(
                "web",
                1,
                &[],
                "{name: c, image: localhost/eventscale/missing:v1}"
            ),
            deployment_with(
                "crash",
                1,
                &[],
                &format!(
                    "{{name: c, image: {}, imagePullPolicy: Never, args: [no-such-command]}}",
                    crate::DEMO_IMAGE
                )
            ),
            so("web"),
            so("crash"),
        ),
    );
    wait_for_waiting(&ns.0, "app=web", &["ErrImagePull", "ImagePullBackOff"]).await;
    let crashing = wait_for_waiting(&ns.0, "app=crash", &["CrashLoopBackOff"]).await;
    assert!(
        crashing["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1),
        "{}",
        crashing["status"]
    );
    let (ok, table, err) = kubectl(&["-n", &ns.0, "get", "pods"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("ImagePullBackOff") || table.contains("ErrImagePull"),
        "{table}"
    );
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    // The kubelet's events say why, for each (they may trail the pods' status a little).
    eventually(
        Duration::from_secs(60),
        "BackOff events for the pull and for the crashing container",
        || {
            let messages = event_messages(&ns.0, "BackOff");
            let pull = messages.iter().any(|m| m.contains("pulling image"));
            let restart = messages
                .iter()
                .any(|m| m.contains("restarting failed container"));
            async move { (pull && restart).then_some(()) }
        },
    )
    .await;

    // The cron window is open: 2 replicas for both, whatever their pods do.
    let hpas = hpa_api(client().await, &ns.0);
    for name in ["web", "crash"] {
        wait_for_hpa_named(&hpas, &format!("keda-hpa-{name}")).await;
        wait_for_metric(&ns.0, &metric, name, "2", false).await;
    }
    for name in ["web", "crash"] {
        wait_for_replicas(&ns.0, name, 2).await;
        let so = crate::workloads::so_json_named(&ns.0, name).await;
        assert_eq!(
            crate::workloads::condition(&so, "Ready"),
            ("True".to_string(), "ScaledObjectReady".to_string()),
            "{so}"
        );
    }
}
