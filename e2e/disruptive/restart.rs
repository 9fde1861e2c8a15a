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

/// The ScaledJob executor keeps nothing a restart would lose: eventscale killed with 2 of
/// a ScaledJob's Jobs running comes back, counts them (it creates none again), and creates
/// the one a third row asks for.
#[tokio::test]
async fn a_restarted_eventscale_creates_no_job_twice() {
    let _serial = crate::SERIAL.lock().await;
    cluster();
    let env = crate::sources::sources_env(&["mysql"]);
    let table = format!("sj_restart_{}", std::process::id());
    let fill = |rows: usize| crate::sources::mysql_queue(&env, &table, rows);
    fill(2);
    let ns = Namespace::create("e2e-sj-restart");
    let auth = crate::sources::mysql_dsn_auth(&crate::sources::mysql_dsn(&env));
    crate::apply(
        &ns.0,
        &format!(
            r#"{auth}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {{name: worker}}
spec:
  pollingInterval: 1
  jobTargetRef:
    template:
      spec:
        restartPolicy: Never
        containers:
        - {{name: w, image: {image}, imagePullPolicy: Never, args: [job, "600"]}}
  triggers:
  - type: mysql
    metadata: {{query: "SELECT COUNT(*) FROM {table}", queryValue: "1"}}
    authenticationRef: {{name: db}}
"#,
            image = crate::DEMO_IMAGE
        ),
    );
    let jobs = || {
        let (ok, out, err) = crate::kubectl(&[
            "-n",
            &ns.0,
            "get",
            "jobs",
            "-l",
            "scaledjob.keda.sh/name=worker",
            "-o",
            "name",
        ]);
        assert!(ok, "{err}");
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    crate::eventually(Duration::from_secs(60), "2 Jobs", || {
        let n = jobs().len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let pid = pid_of("eventscale").expect("eventscale PID file");
    stop(pid, "-KILL");
    cluster_up();
    // Back and leading again (the Lease of the killed process runs out first): polls
    // every second find the 2 Jobs; a third row gives exactly one more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    fill(3);
    crate::eventually(Duration::from_secs(90), "the third Job", || {
        let n = jobs().len();
        async move { (n >= 3).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(jobs().len(), 3, "{:?}", jobs());
    crate::sources::mariadb(&env, &format!("DROP TABLE {table};"));
}
