//! `eventscale certs` against the real apiserver: certificates kept in a Secret, renewed
//! under the same CA, and an APIService's caBundle set to that CA.

use std::process::Command;

use serde_json::Value;

use crate::{cluster, kubectl, kubectl_stdin, Namespace};

fn certs(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_eventscale"))
        .arg("certs")
        .args(args)
        .arg("--kubeconfig")
        .arg(&cluster().kubeconfig)
        .output()
        .expect("eventscale certs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    said
}

fn secret(ns: &str) -> Value {
    let (ok, out, err) = kubectl(&["-n", ns, "get", "secret", "adapter-certs", "-o", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("JSON")
}

#[test]
fn certificates_in_a_secret_and_the_apiservice_ca_bundle() {
    let ns = Namespace::create("e2e-certs");
    let apiservice = format!("v1alpha1.e2e-{}.eventscale.test", std::process::id());
    // An APIService of our own, so the cluster's real one is left alone.
    let (ok, _, err) = kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: {apiservice}}}
spec:
  group: e2e-{pid}.eventscale.test
  version: v1alpha1
  service: {{name: nowhere, namespace: {ns}, port: 443}}
  groupPriorityMinimum: 100
  versionPriority: 100
"#,
            pid = std::process::id(),
            ns = ns.0
        )),
    );
    assert!(ok, "{err}");
    let target = format!("{}/adapter-certs", ns.0);
    let common = [
        "--secret",
        &target,
        "--service",
        "adapter",
        "--namespace",
        &ns.0,
        "--patch-apiservice",
        &apiservice,
    ];

    let said = certs(&common);
    assert!(said.contains("made a new CA"), "{said}");
    let first = secret(&ns.0);
    assert_eq!(first["type"], "kubernetes.io/tls");
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(
            first["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} missing"
        );
    }
    let (_, bundle, _) = kubectl(&[
        "get",
        "apiservice",
        &apiservice,
        "-o",
        "jsonpath={.spec.caBundle}",
    ]);
    assert_eq!(
        bundle,
        first["data"]["ca.crt"].as_str().unwrap_or_default(),
        "caBundle is the CA"
    );

    // Idempotent: nothing changes.
    let said = certs(&common);
    assert!(said.contains("kept the existing certificates"), "{said}");
    assert_eq!(secret(&ns.0)["data"], first["data"]);

    // Renewal: a window longer than the leaf's life reissues the leaf, the CA stays.
    let mut renew = common.to_vec();
    renew.extend(["--renew-before-days", "400"]);
    let said = certs(&renew);
    assert!(said.contains("under the existing CA"), "{said}");
    let renewed = secret(&ns.0);
    assert_eq!(renewed["data"]["ca.crt"], first["data"]["ca.crt"]);
    assert_eq!(renewed["data"]["ca.key"], first["data"]["ca.key"]);
    assert_ne!(renewed["data"]["tls.crt"], first["data"]["tls.crt"]);

    // A bad --secret is a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_eventscale"))
        .args(["certs", "--secret", "no-slash"])
        .output()
        .expect("eventscale certs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--secret \"no-slash\": expected namespace/name"),
        "{err}"
    );

    let _ = kubectl(&["delete", "apiservice", &apiservice]);
}
