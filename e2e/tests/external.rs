//! External scalers on the real cluster: eventscale as the client of a gRPC external scaler
//! (the test support's, on loopback, speaking KEDA's protocol), its value served to the real
//! HPA through the aggregator, and `external-push` activating a workload at zero the moment
//! the scaler pushes, with `pollingInterval: 300` so no poll can be what did it.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::WatchEvent;
use kube::Api;

use crate::cron::{raw_metric, wait_for_metric};
use crate::external_scaler::{Options, TestScaler};
use crate::workloads::wait_for_condition;
use crate::{apply, client, eventually, wait_for_ready, wait_for_replicas, Namespace};

/// Deployment `ns/name`'s replicas as they change, until `done` holds; when it held.
async fn watch_replicas_until(
    deployments: &Api<Deployment>,
    name: &str,
    done: impl Fn(i32) -> bool,
) -> Instant {
    let current = deployments.get(name).await.expect("the Deployment");
    if current
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .is_some_and(&done)
    {
        return Instant::now();
    }
    let rv = current.metadata.resource_version.unwrap_or_default();
    let params = kube::api::WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(60);
    let mut events = deployments
        .watch(&params, &rv)
        .await
        .expect("watching the Deployment")
        .boxed();
    while let Some(e) = events.try_next().await.expect("the watch") {
        if let WatchEvent::Modified(d) = e {
            if d.spec.and_then(|s| s.replicas).is_some_and(&done) {
                return Instant::now();
            }
        }
    }
    panic!("Deployment {name}: the wanted replica count never came within a minute");
}

/// Cut the scaler's connections, as its host restarting would, and wait until its
/// streams are closed.
async fn drop_connections(scaler: &TestScaler) {
    scaler.drop_connections();
    scaler
        .wait(Duration::from_secs(5), "the stream closed", |s| {
            s.open_streams() == 0
        })
        .await;
}

// Multi-threaded: the test scaler answers eventscale while the test blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_push_activates_at_once_and_the_hpa_reads_the_external_value() {
    let scaler = TestScaler::start("pending", 2.0, Options::default()).await;
    let ns = Namespace::create("e2e-external");
    let so = format!("{}/web", ns.0);
    scaler.set_for(&so, 0.0, false);
    apply(
        &ns.0,
        &format!(
            r#"
{deployment}
---
{service}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  pollingInterval: 300
  cooldownPeriod: 0
  minReplicaCount: 0
  maxReplicaCount: 5
  triggers:
  - type: external-push
    metadata: {{scalerAddress: "{addr}", queue: orders}}
"#,
            deployment = crate::deployment("web", 1, &[]),
            service = crate::service("web"),
            addr = scaler.addr,
        ),
    );
    scaler
        .wait(
            Duration::from_secs(60),
            "eventscale's StreamIsActive",
            |s| s.open_streams() >= 1,
        )
        .await;
    // Inactive: to zero (cooldown 0). A push of `false` has it polled at once (the first
    // poll may come before the reconcile accepted the object, and the next is 300 s on).
    let deployments: Api<Deployment> = Api::namespaced(client().await, &ns.0);
    eventually(Duration::from_secs(90), "scaled to zero", || async {
        scaler.push(Some(&so), false);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d = deployments.get("web").await.ok()?;
        (d.spec?.replicas? == 0).then_some(())
    })
    .await;
    wait_for_condition(&ns.0, "Active", "False", "ScalerNotActive").await;
    let sent = scaler.refs();
    let r = sent
        .iter()
        .find(|r| r.namespace == ns.0)
        .expect("a call for the ScaledObject");
    assert_eq!(r.name, "web");
    assert_eq!(
        r.scaler_metadata.get("queue").map(String::as_str),
        Some("orders")
    );

    let mut latencies = Vec::new();
    for round in 0..3 {
        // A push of `true`: eventscale activates at once (0 → 1) and the HPA takes it on.
        scaler.set_for(&so, 6.0, true);
        let watching = {
            let d = deployments.clone();
            tokio::spawn(async move { watch_replicas_until(&d, "web", |n| n >= 1).await })
        };
        // The watch is open before the push.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pushed = Instant::now();
        scaler.push(Some(&so), true);
        let activated = watching.await.expect("the watch");
        let took = activated.saturating_duration_since(pushed);
        println!("round {round}: push → /scale 0 → 1 seen by a watch in {took:?}");
        assert!(
            took < Duration::from_secs(10),
            "activation took {took:?}: it waited for a poll (pollingInterval is 300 s)"
        );
        latencies.push(took);
        if round == 0 {
            // The HPA reads the external scaler's value through the aggregator and takes
            // the target to ceil(6 / 2) = 3 real pods.
            let list = raw_metric(&ns.0, "s0-pending", "web");
            assert_eq!(list["items"][0]["value"], "6", "{list}");
            wait_for_replicas(&ns.0, "web", 3).await;
            wait_for_ready(&ns.0, "web", 3, Some("web")).await;
        }
        // A push of `false` has every trigger polled at once: inactive, back to zero.
        scaler.set_for(&so, 0.0, false);
        scaler.push(Some(&so), false);
        wait_for_replicas(&ns.0, "web", 0).await;
    }

    // The scaler's connections drop (its host restarted): eventscale reopens the stream
    // after KEDA's backoff, and pushes activate again.
    drop_connections(&scaler).await;
    scaler
        .wait(Duration::from_secs(30), "the stream reopened", |s| {
            s.open_streams() >= 1
        })
        .await;
    scaler.set_for(&so, 6.0, true);
    scaler.push(Some(&so), true);
    eventually(
        Duration::from_secs(10),
        "activated after reconnecting",
        || async {
            let d = deployments.get("web").await.ok()?;
            (d.spec?.replicas? >= 1).then_some(())
        },
    )
    .await;
    wait_for_metric(&ns.0, "s0-pending", "web", "6", false).await;

    // A push sent while the stream is down is lost, but the stream's return has the
    // object polled at once: activity set meanwhile is seen on reconnection.
    scaler.set_for(&so, 0.0, false);
    scaler.push(Some(&so), false);
    wait_for_replicas(&ns.0, "web", 0).await;
    drop_connections(&scaler).await;
    scaler.set_for(&so, 6.0, true);
    scaler.push(Some(&so), true);
    eventually(
        Duration::from_secs(20),
        "activated on reconnection",
        || async {
            let d = deployments.get("web").await.ok()?;
            (d.spec?.replicas? >= 1).then_some(())
        },
    )
    .await;
    println!("push activation latencies: {latencies:?}");
}

/// Fallback applies to an external scaler as to any source: it answers at first (so the
/// HPA has its metric), then hangs; past `failureThreshold` the HPA is served the value
/// that makes it choose `fallback.replicas`, while the hung calls time out on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_external_scaler_falls_back() {
    let scaler = TestScaler::start("pending", 5.0, Options::default()).await;
    scaler.set(5.0, true);
    let ns = Namespace::create("e2e-external-fallback");
    apply(&ns.0, &crate::deployment("web", 1, &[]));
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  pollingInterval: 5
  fallback: {{failureThreshold: 2, replicas: 3}}
  triggers:
  - type: external
    metadata: {{scalerAddress: "{addr}"}}
"#,
            addr = scaler.addr
        ),
    );
    wait_for_metric(&ns.0, "s0-pending", "web", "5", false).await;
    scaler.hang(true);
    wait_for_replicas(&ns.0, "web", 3).await;
    // 3 × target 5, through the aggregator.
    wait_for_metric(&ns.0, "s0-pending", "web", "15", true).await;
}

/// An external scaler that streams its metric spec (`StreamMetricSpec`) changes the HPA's
/// target without the ScaledObject changing: the trigger is built again and the HPA
/// reconciled at once. One that is down when the ScaledObject is first seen leaves it
/// Ready False naming the scaler, and the HPA comes when the scaler does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_metric_spec_reaches_the_hpa_and_a_late_scaler_is_picked_up() {
    use crate::cron::{hpa_api, wait_for_hpa};
    use crate::workloads::wait_for_condition;
    // A port nobody listens on yet: the scaler comes up later.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let ns = Namespace::create("e2e-external-spec");
    apply(&ns.0, &crate::deployment("web", 1, &[]));
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  triggers:
  - type: external-push
    metadata: {{scalerAddress: "{addr}"}}
"#
        ),
    );
    let so = wait_for_condition(&ns.0, "Ready", "False", "ScaledObjectCheckFailed").await;
    let message = so["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    assert!(
        message.contains(&format!("external scaler {addr}: GetMetricSpec")),
        "{message}"
    );
    let scaler = TestScaler::start(
        "pending",
        2.0,
        Options {
            metric_spec_stream: true,
            addr: Some(addr),
            ..Default::default()
        },
    )
    .await;
    scaler.set(1.0, true);
    let hpas = hpa_api(client().await, &ns.0);
    let target = |hpa: &kube::api::DynamicObject| {
        hpa.data["spec"]["metrics"][0]["external"]["target"]["averageValue"]
            .as_str()
            .map(str::to_string)
    };
    let hpa = wait_for_hpa(&hpas).await;
    assert_eq!(target(&hpa).as_deref(), Some("2"), "{:?}", hpa.data);
    wait_for_condition(&ns.0, "Ready", "True", "ScaledObjectReady").await;
    scaler
        .wait(Duration::from_secs(30), "both streams open", |s| {
            s.open_streams() >= 2
        })
        .await;
    scaler.set_metric("pending", 4.0);
    eventually(Duration::from_secs(10), "the HPA's target at 4", || async {
        let hpa = hpas.get("keda-hpa-web").await.ok()?;
        (target(&hpa).as_deref() == Some("4")).then_some(())
    })
    .await;
}
