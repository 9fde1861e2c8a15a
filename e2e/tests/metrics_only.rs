//! `eventscale run --metrics-only` beside another operator: it serves metric values and
//! writes nothing. It runs here as a second process under a ServiceAccount holding only
//! the read-only RBAC of `apiservice/rbac-metrics-only.yaml`, so any attempt to manage an
//! HPA would be refused by the real apiserver and show in its log.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cron::{manifests, open_window, TZ};
use crate::{
    apply, cluster, curl_at, eventually, kubectl, kubectl_stdin, service_account_token, Namespace,
};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn metrics_only_serves_values_and_writes_nothing() {
    let c = cluster();
    let ns = Namespace::create("e2e-metrics-only");
    let binding = format!("e2e-metrics-only-{}", std::process::id());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rbac = std::fs::read_to_string(repo.join("apiservice/rbac-metrics-only.yaml"))
        .expect("rbac-metrics-only.yaml");
    // The ClusterRole as shipped; bindings for this test's ServiceAccount.
    let role = rbac
        .split("\n---\n")
        .next()
        .expect("the ClusterRole comes first");
    let (ok, _, err) = kubectl_stdin(&["apply", "-f", "-"], Some(role));
    assert!(ok, "{err}");
    apply(
        &ns.0,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: adapter}\n",
    );
    for (name, role) in [
        (binding.clone(), "eventscale-metrics-only"),
        (format!("{binding}-delegator"), "system:auth-delegator"),
    ] {
        let (ok, _, err) = kubectl(&[
            "create",
            "clusterrolebinding",
            &name,
            "--clusterrole",
            role,
            "--serviceaccount",
            &format!("{}:adapter", ns.0),
        ]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = kubectl(&[
        "-n",
        "kube-system",
        "create",
        "rolebinding",
        &binding,
        "--role",
        "extension-apiserver-authentication-reader",
        "--serviceaccount",
        &format!("{}:adapter", ns.0),
    ]);
    assert!(ok, "{err}");
    // The replicas' Leases (in eventscale's namespace), for a group of its own: it shares
    // nothing with the cluster's full-mode replica.
    let (ok, _, err) = kubectl(&[
        "-n",
        "eventscale",
        "create",
        "rolebinding",
        &binding,
        "--role",
        "eventscale:leader-election",
        "--serviceaccount",
        &format!("{}:adapter", ns.0),
    ]);
    assert!(ok, "{err}");

    // A kubeconfig for the ServiceAccount: the admin's cluster entry with its token.
    let admin = std::fs::read_to_string(&c.kubeconfig).expect("admin kubeconfig");
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&admin).expect("kubeconfig YAML");
    kc["users"][0]["user"] = serde_yaml::from_str(&format!(
        "{{token: {}}}",
        service_account_token(&ns.0, "adapter")
    ))
    .expect("user");
    let dir = std::env::temp_dir().join(format!("eventscale-e2e-mo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, serde_yaml::to_string(&kc).expect("yaml")).expect("write");
    let log_path = dir.join("eventscale.log");
    let port = free_port();
    let _adapter = Process(
        Command::new(env!("CARGO_BIN_EXE_eventscale"))
            .args([
                "run",
                "--metrics-only",
                "--bind-address",
                "127.0.0.1",
                "--metrics-port",
                "0",
            ])
            .arg("--secure-port")
            .arg(port.to_string())
            .args(["--leader-election-id", &binding])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cert-dir")
            .arg(c.state_dir.join("eventscale-certs"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("eventscale starts"),
    );

    let (start, end, metric) = open_window();
    apply(&ns.0, &manifests(&start, &end, TZ));
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3Dweb",
        ns.0
    );
    let base = format!("https://127.0.0.1:{port}");
    let pki = c.state_dir.join("pki");
    let admin_cert = [
        "--cert".to_string(),
        pki.join("admin.crt").display().to_string(),
        "--key".to_string(),
        pki.join("admin.key").display().to_string(),
    ];
    let args: Vec<&str> = admin_cert.iter().map(String::as_str).collect();
    let value = eventually(
        Duration::from_secs(60),
        "the metrics-only adapter's value",
        || {
            let got = curl_at(&base, &path, &args);
            async move { (got.0 == 200).then(|| got.1["items"][0]["value"].clone()) }
        },
    )
    .await;
    assert_eq!(value, "4");
    // Its trace: the values it serves, the HPA the other operator made (read with the
    // metrics-only RBAC), and no decision of its own.
    let trace_path = format!(
        "/apis/explain.eventscale.sh/v1alpha1/namespaces/{}/scaledobjects/web/trace",
        ns.0
    );
    let (code, t) = curl_at(&base, &trace_path, &args);
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["servedBy"]["mode"], "metricsOnly", "{t}");
    assert_eq!(t["summary"]["cause"], "MetricsOnly", "{t}");
    assert!(t["activation"].is_null(), "{t}");
    assert!(t["hpa"]["error"].is_null(), "the HPA is readable: {t}");
    assert_eq!(t["triggers"][0]["hpaRead"]["value"], 4.0, "{t}");

    // Long enough for a controller to have acted on the ScaledObject several times over.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(log.contains("metrics-only mode"), "{log}");
    for bad in ["forbidden", "Forbidden", "ERROR", "WARN"] {
        assert!(
            !log.contains(bad),
            "the metrics-only adapter logged {bad:?}:\n{log}"
        );
    }

    for b in [binding.clone(), format!("{binding}-delegator")] {
        let _ = kubectl(&["delete", "clusterrolebinding", &b]);
    }
    let _ = kubectl(&["-n", "kube-system", "delete", "rolebinding", &binding]);
    let _ = kubectl(&["-n", "eventscale", "delete", "rolebinding", &binding]);
    crate::forget_group(&binding);
    let _ = std::fs::remove_dir_all(&dir);
}
