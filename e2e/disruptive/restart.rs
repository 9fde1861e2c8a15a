//! kube-apiserver restarts while eventscale runs: eventscale's watches and clients
//! reconnect, no state is lost, and nothing is scaled wrongly while the apiserver is gone.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::workloads::{produce, setup, wait_for_condition};
use crate::{
    client, cluster, cluster_up, pid_of, stop, wait_for_replicas, wait_for_replicas_at_least,
    Namespace,
};

#[tokio::test]
async fn eventscale_carries_on_after_an_apiserver_restart() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let ns = Namespace::create("e2e-restart");
    let (env, topic, _) = setup(&ns.0, 1, "  minReplicaCount: 0\n  cooldownPeriod: 0");
    wait_for_replicas(&ns.0, "web", 0).await;

    // The apiserver goes away; lag arrives while it is gone.
    let pid = pid_of("kube-apiserver").expect("kube-apiserver PID file");
    stop(pid, "-TERM");
    produce(&env, &topic, 0, 12);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster_up();

    // Back: eventscale activates and the HPA scales, from the state it had (the HPA may
    // take 1 to 3 within one of its 2 s syncs, so 1 may never be seen).
    wait_for_replicas_at_least(&ns.0, "web", 1).await;
    let so = wait_for_condition(&ns.0, "Active", "True", "ScalerActive").await;
    assert_eq!(so["status"]["originalReplicaCount"], 1, "state kept: {so}");
    // ceil(12 / 5) = 3: the HPA reads eventscale's metric again.
    wait_for_replicas(&ns.0, "web", 3).await;
    let deployments: Api<Deployment> = Api::namespaced(client().await, &ns.0);
    let d = deployments.get("web").await.expect("Deployment");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(3));
}
