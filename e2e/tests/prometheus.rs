//! A prometheus trigger end to end: eventscale queries the real Prometheus of
//! `e2e/sources.sh` on every HPA read, and the real HPA controller scales on it. The server
//! address comes from the target's environment (`serverAddressFromEnv`, itself from a
//! ConfigMap) in one test and credentials from a TriggerAuthentication in the other.

use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;

use crate::cron::{hpa_api, raw_metric, wait_for_hpa};
use crate::{apply, client, eventually, wait_for_replicas, Namespace};

/// Start the Prometheus servers and read one variable of `sources.sh env`.
fn source_env(name: &str) -> String {
    crate::sources::sources_env(&["prometheus"])
        .remove(name)
        .unwrap_or_else(|| panic!("sources.sh env printed no {name}"))
}

/// Tests that count Prometheus's requests run alone among the tests using it.
pub static PROMETHEUS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn prometheus_url() -> String {
    source_env("EVENTSCALE_PROMETHEUS_URL")
}

#[tokio::test]
async fn prometheus_value_scales_the_deployment() {
    let _shared = PROMETHEUS.lock().await;
    let url = prometheus_url();
    let ns = Namespace::create("e2e-prometheus");
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: localhost/eventscale/demo:v1
        imagePullPolicy: Never
        env:
        - name: PROM_URL
          valueFrom: {{configMapKeyRef: {{name: web-config, key: prometheus}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config}}
data: {{prometheus: "{url}"}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  maxReplicaCount: 10
  triggers:
  - type: prometheus
    metadata:
      serverAddressFromEnv: PROM_URL
      query: vector(35)
      threshold: "5"
"#
        ),
    );
    let client = client().await;
    let hpa = wait_for_hpa(&hpa_api(client.clone(), &ns.0)).await;
    let ext = &hpa.data["spec"]["metrics"][0]["external"];
    assert_eq!(ext["metric"]["name"], "s0-prometheus");
    assert_eq!(ext["target"]["averageValue"], "5");

    let list = raw_metric(&ns.0, "s0-prometheus", "web");
    assert_eq!(list["items"][0]["value"], "35", "{list}");

    // 35 / 5 → 7 replicas, decided by the real HPA controller.
    wait_for_replicas(&ns.0, "web", 7).await;
}

/// Basic auth from a TriggerAuthentication: missing at first (a clear error on the
/// ScaledObject naming authenticationRef), then created with its Secret, after which the
/// HPA appears and reads the protected server's value.
#[tokio::test]
async fn trigger_authentication_from_a_secret() {
    let _shared = PROMETHEUS.lock().await;
    let url = source_env("EVENTSCALE_PROMETHEUS_AUTH_URL");
    let user = source_env("EVENTSCALE_PROMETHEUS_USER");
    let password = source_env("EVENTSCALE_PROMETHEUS_PASSWORD");
    let ns = Namespace::create("e2e-triggerauth");
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: localhost/eventscale/demo:v1, imagePullPolicy: Never}}]}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  triggers:
  - type: prometheus
    metadata:
      serverAddress: {url}
      query: vector(12)
      threshold: "4"
      authModes: basic
    authenticationRef: {{name: prom-auth}}
"#
        ),
    );
    let client = client().await;
    let sos: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.0,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
            "scaledobjects",
        ),
    );
    let message = eventually(
        Duration::from_secs(60),
        "Ready=False naming authenticationRef",
        || async {
            let so = sos.get("web").await.ok()?;
            let ready = so.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["status"] == "False")
                .then(|| ready["message"].as_str().unwrap_or_default().to_string())
        },
    )
    .await;
    assert!(
        message.contains("spec.triggers[0].authenticationRef (prometheus): TriggerAuthentication \"prom-auth\" not found"),
        "{message}"
    );

    apply(
        &ns.0,
        &format!(
            "{}---\n{}",
            crate::sources::prometheus_creds(&user, &password),
            crate::sources::PROMETHEUS_AUTH
        ),
    );
    wait_for_hpa(&hpa_api(client.clone(), &ns.0)).await;
    let list = raw_metric(&ns.0, "s0-prometheus", "web");
    assert_eq!(list["items"][0]["value"], "12", "{list}");
    wait_for_replicas(&ns.0, "web", 3).await;
}

/// A rotated Secret is picked up without a restart: the ScaledObject's scalers are built
/// once, and the watch of Secrets (metadata only) makes the next read rebuild them with
/// the new value. Read through the aggregator every 100 ms: the first read with the new
/// credentials comes within seconds of the change, in both directions.
#[tokio::test]
async fn a_rotated_secret_is_picked_up_without_a_restart() {
    let _shared = PROMETHEUS.lock().await;
    let url = source_env("EVENTSCALE_PROMETHEUS_AUTH_URL");
    let user = source_env("EVENTSCALE_PROMETHEUS_USER");
    let password = source_env("EVENTSCALE_PROMETHEUS_PASSWORD");
    let ns = Namespace::create("e2e-secret-rotation");
    let secret = |password: &str| crate::sources::prometheus_creds(&user, password);
    apply(&ns.0, &secret("wrong-password"));
    apply(
        &ns.0,
        &format!(
            r#"
{deployment}
---
{auth}---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  pollingInterval: 300
  triggers:
  - type: prometheus
    metadata:
      serverAddress: {url}
      query: vector(12)
      threshold: "4"
      authModes: basic
    authenticationRef: {{name: prom-auth}}
"#,
            deployment = crate::deployment("web", 1, &[]),
            auth = crate::sources::PROMETHEUS_AUTH,
        ),
    );
    let path = crate::cron::metric_path(&ns.0, "s0-prometheus", "web");
    let read = || crate::kubectl(&["get", "--raw", &path]);
    // Until the first rotation every read fails (the source refuses the password).
    eventually(
        Duration::from_secs(60),
        "reads refused with the wrong password",
        || async {
            let (ok, _, err) = read();
            (!ok && err.contains("401")).then_some(())
        },
    )
    .await;
    for (password, should_read) in [
        (password.as_str(), true),
        ("wrong-again", false),
        (password.as_str(), true),
    ] {
        apply(&ns.0, &secret(password));
        let changed = std::time::Instant::now();
        eventually(
            Duration::from_secs(30),
            "the rotated Secret in use",
            || async {
                let (ok, out, _) = read();
                (ok == should_read && (!ok || out.contains("\"12\""))).then_some(())
            },
        )
        .await;
        // pollingInterval is 300 s: a poll cannot be what picked the change up.
        println!(
            "rotation to a {} password seen by HPA reads after {:?}",
            if should_read { "valid" } else { "wrong" },
            changed.elapsed()
        );
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "{:?}",
            changed.elapsed()
        );
    }
}

/// scalingModifiers: two prometheus triggers combined by a formula into the one
/// `composite-metric` the HPA reads; (10 + 20) / 2 = 15 with target 5 → 3 replicas.
#[tokio::test]
async fn scaling_modifiers_composite_metric() {
    let _shared = PROMETHEUS.lock().await;
    let url = prometheus_url();
    let ns = Namespace::create("e2e-modifiers");
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: localhost/eventscale/demo:v1, imagePullPolicy: Never}}]}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  advanced:
    scalingModifiers:
      formula: "(queue_a + queue_b) / 2"
      target: "5"
      activationTarget: "1"
  triggers:
  - type: prometheus
    name: queue_a
    metadata: {{serverAddress: "{url}", query: "vector(10)", threshold: "100"}}
  - type: prometheus
    name: queue_b
    metadata: {{serverAddress: "{url}", query: "vector(20)", threshold: "100"}}
"#
        ),
    );
    let client = client().await;
    let hpa = wait_for_hpa(&hpa_api(client, &ns.0)).await;
    let metrics = hpa.data["spec"]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert_eq!(metrics[0]["external"]["metric"]["name"], "composite-metric");
    assert_eq!(metrics[0]["external"]["target"]["averageValue"], "5");
    let list = raw_metric(&ns.0, "composite-metric", "web");
    assert_eq!(list["items"][0]["value"], "15", "{list}");
    wait_for_replicas(&ns.0, "web", 3).await;
}

/// The scale target's environment as KEDA resolves it: the server address is built by
/// `$(VAR)` from an `envFrom` ConfigMap (after an optional one that does not exist) in the
/// container `envSourceContainerName` names, not the first; the password comes through a
/// TriggerAuthentication `env` entry from a `valueFrom` Secret; and a parameter whose
/// Secret does not exist is left empty, as KEDA leaves it, so basic auth still works.
#[tokio::test]
async fn target_environment_and_a_missing_optional_secret_as_keda() {
    let _shared = PROMETHEUS.lock().await;
    let url = source_env("EVENTSCALE_PROMETHEUS_AUTH_URL");
    let (host, port) = url
        .trim_start_matches("http://")
        .split_once(':')
        .expect("host:port");
    let user = source_env("EVENTSCALE_PROMETHEUS_USER");
    let password = source_env("EVENTSCALE_PROMETHEUS_PASSWORD");
    let ns = Namespace::create("e2e-target-env");
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: prom-parts}}
data: {{HOST: "{host}", PORT: "{port}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: prom-creds}}
stringData: {{user: {user}, password: {password}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: sidecar
        image: localhost/eventscale/demo:v1
        imagePullPolicy: Never
        env: [{{name: PROM_URL, value: "http://127.0.0.1:1"}}, {{name: PORT, value: "8081"}}]
      - name: main
        image: localhost/eventscale/demo:v1
        imagePullPolicy: Never
        envFrom:
        - configMapRef: {{name: not-there, optional: true}}
        - configMapRef: {{name: prom-parts}}
        env:
        - {{name: PROM_URL, value: "http://$(HOST):$(PORT)"}}
        - name: PROM_PW
          valueFrom: {{secretKeyRef: {{name: prom-creds, key: password}}}}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: prom-auth}}
spec:
  env:
  - {{parameter: password, name: PROM_PW, containerName: main}}
  secretTargetRef:
  - {{parameter: username, name: prom-creds, key: user}}
  - {{parameter: bearerToken, name: no-such-secret, key: token}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web, envSourceContainerName: main}}
  minReplicaCount: 1
  triggers:
  - type: prometheus
    metadata:
      serverAddressFromEnv: PROM_URL
      query: vector(21)
      threshold: "7"
      authModes: basic
    authenticationRef: {{name: prom-auth}}
"#
        ),
    );
    let client = client().await;
    wait_for_hpa(&hpa_api(client, &ns.0)).await;
    let list = raw_metric(&ns.0, "s0-prometheus", "web");
    assert_eq!(list["items"][0]["value"], "21", "{list}");
    wait_for_replicas(&ns.0, "web", 3).await;
}
