//! The kubernetes-workload trigger on the real cluster: pods of another Deployment, running
//! on the node, drive the HPA of the target.

use crate::cron::{hpa_api, wait_for_hpa, wait_for_metric};
use crate::{apply, client, deployment, kubectl, wait_for_ready, wait_for_replicas, Namespace};

#[tokio::test]
async fn pods_matching_the_selector_scale_the_target() {
    let ns = Namespace::create("e2e-workload");
    apply(&ns.0, &deployment("worker", 3, &[]));
    apply(&ns.0, &deployment("web", 1, &[]));
    apply(
        &ns.0,
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web}
spec:
  scaleTargetRef: {name: web}
  minReplicaCount: 1
  triggers:
  - type: kubernetes-workload
    metadata: {podSelector: "app=worker", value: "1"}
"#,
    );
    let metric = format!("s0-workload-{}", ns.0);
    let client = client().await;
    let hpa = wait_for_hpa(&hpa_api(client.clone(), &ns.0)).await;
    assert_eq!(
        hpa.data["spec"]["metrics"][0]["external"]["metric"]["name"],
        metric.as_str()
    );
    // Three worker pods Running and Ready on the node: 3, and the target follows.
    wait_for_ready(&ns.0, "worker", 3, None).await;
    let (ok, out, err) = kubectl(&[
        "-n",
        &ns.0,
        "get",
        "pods",
        "-l",
        "app=worker",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "name",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    wait_for_metric(&ns.0, &metric, "web", "3", false).await;
    wait_for_replicas(&ns.0, "web", 3).await;
    wait_for_ready(&ns.0, "web", 3, None).await;
    // Two more workers: 5 pods, 5 replicas.
    let (ok, _, err) = kubectl(&["-n", &ns.0, "scale", "deployment", "worker", "--replicas=5"]);
    assert!(ok, "{err}");
    wait_for_ready(&ns.0, "worker", 5, None).await;
    wait_for_metric(&ns.0, &metric, "web", "5", false).await;
    wait_for_replicas(&ns.0, "web", 5).await;
}

/// Node objects for the test (no kubelet behind them), deleted when dropped. Pods bound
/// to a node that does not exist would be collected by the pod garbage collector.
struct Nodes(Vec<String>);

impl Drop for Nodes {
    fn drop(&mut self) {
        let mut args = vec!["delete", "node", "--wait=false"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = crate::kubectl(&args);
    }
}

/// groupByNode counts the distinct nodes of the matching pods (bound here by setting
/// `nodeName`, as the scheduler would), a Failed pod does not count, and activity is
/// strictly above `activationValue`: 2 nodes with `activationValue: 3` is inactive and the
/// target goes to 0; 4 nodes is active and the HPA takes it to 4; one of them Failed
/// brings the value back to 3.
#[tokio::test]
async fn group_by_node_activation_and_failed_pods() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};

    let ns = Namespace::create("e2e-workload-nodes");
    let nodes = Nodes(
        (1..=4)
            .map(|i| format!("e2e-node-{}-{i}", std::process::id()))
            .collect(),
    );
    for n in &nodes.0 {
        apply(
            &ns.0,
            &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n"),
        );
    }
    apply(&ns.0, &deployment("web", 1, &[]));
    apply(
        &ns.0,
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web}
spec:
  scaleTargetRef: {name: web}
  pollingInterval: 1
  cooldownPeriod: 0
  triggers:
  - type: kubernetes-workload
    metadata: {podSelector: "role=worker", value: "1", activationValue: "3", groupByNode: "true"}
"#,
    );
    let pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{role: worker}}}}\nspec: {{nodeName: {node}, containers: [{{name: c, image: registry.invalid/w:1}}]}}\n"
        )
    };
    for (name, node) in [("p1", 0), ("p2", 0), ("p3", 1)] {
        apply(&ns.0, &pod(name, &nodes.0[node]));
    }
    let metric = format!("s0-workload-{}", ns.0);
    let value_is = |want: &'static str| wait_for_metric(&ns.0, &metric, "web", want, false);
    wait_for_hpa(&hpa_api(client().await, &ns.0)).await;
    value_is("2").await;
    // 2 is not above 3: inactive, and with cooldownPeriod 0 the target goes to zero.
    wait_for_replicas(&ns.0, "web", 0).await;

    apply(&ns.0, &pod("p4", &nodes.0[2]));
    apply(&ns.0, &pod("p5", &nodes.0[3]));
    value_is("4").await;
    wait_for_replicas(&ns.0, "web", 4).await;

    let pods: kube::Api<Pod> = kube::Api::namespaced(client().await, &ns.0);
    pods.patch_status(
        "p5",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": "Failed"}})),
    )
    .await
    .expect("pod status");
    value_is("3").await;
}
