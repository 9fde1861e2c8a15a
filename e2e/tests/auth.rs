//! Authentication and authorization of eventscale's API server, over real TLS on loopback,
//! with the real apiserver answering TokenReview and SubjectAccessReview, and through the
//! real aggregator with `kubectl get --raw`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{apply, cluster, curl, kubectl, service_account_token, Namespace};

/// A metric path whose ScaledObject does not exist: a caller who gets past authentication
/// and authorization receives 404 NotFound, anyone else 401 or 403.
fn probe_path(ns: &str) -> String {
    format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/s0-cron-x?labelSelector=scaledobject.keda.sh%2Fname%3Dabsent"
    )
}

fn cert_args(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "--cert".into(),
        dir.join(format!("{name}.crt")).display().to_string(),
        "--key".into(),
        dir.join(format!("{name}.key")).display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Client certificates made with the cluster's own helpers: one from the front-proxy CA
/// with a CN not in requestheader-allowed-names, one from a CA nobody trusts.
fn extra_certs() -> PathBuf {
    let c = cluster();
    let dir = std::env::temp_dir().join(format!("eventscale-e2e-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for f in ["front-proxy-ca.crt", "front-proxy-ca.key"] {
        std::fs::copy(c.state_dir.join("pki").join(f), dir.join(f)).expect("copy front-proxy CA");
    }
    let script = format!(
        r#"set -e; source "{pki}"; pki_leaf "{d}" intruder front-proxy-ca "/CN=intruder" clientAuth
           pki_ca "{d}" stranger-ca stranger-ca
           pki_leaf "{d}" stranger stranger-ca "/CN=front-proxy-client" clientAuth"#,
        pki = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../certs/pki.sh")
            .display(),
        d = dir.display()
    );
    let ok = Command::new("bash")
        .args(["-c", &script])
        .status()
        .expect("bash");
    assert!(ok.success(), "making test certificates failed");
    dir
}

fn assert_status(got: &(u16, Value), code: u16, reason: &str, what: &str) {
    assert_eq!(got.0, code, "{what}: {}", got.1);
    assert_eq!(got.1["kind"], "Status", "{what}: {}", got.1);
    assert_eq!(got.1["reason"], reason, "{what}: {}", got.1);
    assert_eq!(got.1["code"], code, "{what}: {}", got.1);
}

#[tokio::test]
async fn authentication_and_authorization_matrix() {
    let c = cluster();
    let ns = Namespace::create("e2e-auth");
    let reader_user = format!("e2e-reader-{}", std::process::id());
    // A reader role for one user and one ServiceAccount, only in this namespace.
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: nobody}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: external-metrics-reader}}
rules:
- apiGroups: ["external.metrics.k8s.io"]
  resources: ["*"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: external-metrics-reader}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: external-metrics-reader}}
subjects:
- {{kind: User, name: {reader_user}, apiGroup: rbac.authorization.k8s.io}}
- {{kind: ServiceAccount, name: reader, namespace: {ns}}}
"#,
            ns = ns.0
        ),
    );
    let path = probe_path(&ns.0);
    let pki = c.state_dir.join("pki");
    let extra = extra_certs();
    let front_proxy = cert_args(&pki, "front-proxy-client");

    // Front proxy with an allowed CN asserting a user RBAC allows: SAR allows, so the
    // request reaches the handler (404 for the absent ScaledObject).
    let user_header = format!("X-Remote-User: {reader_user}");
    let mut args = strs(&front_proxy);
    args.extend(["-H", &user_header, "-H", "X-Remote-Group: e2e"]);
    assert_status(
        &curl(&path, &args),
        404,
        "NotFound",
        "front proxy, allowed user",
    );

    // The same proxy asserting a user without RBAC: our SubjectAccessReview denies.
    let mut args = strs(&front_proxy);
    args.extend(["-H", "X-Remote-User: e2e-nobody"]);
    let got = curl(&path, &args);
    assert_status(&got, 403, "Forbidden", "front proxy, user without RBAC");
    assert!(
        got.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"e2e-nobody\" cannot list resource \"s0-cron-x\"")),
        "{}",
        got.1
    );

    // A front-proxy certificate whose CN is not allowed, and one from an unknown CA.
    let intruder = cert_args(&extra, "intruder");
    let mut args = strs(&intruder);
    args.extend(["-H", &user_header]);
    let got = curl(&path, &args);
    assert_status(&got, 401, "Unauthorized", "front-proxy CA, CN not allowed");
    assert!(
        got.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"intruder\" is not in requestheader-allowed-names")),
        "{}",
        got.1
    );
    let stranger = cert_args(&extra, "stranger");
    let mut args = strs(&stranger);
    args.extend(["-H", &user_header]);
    assert_status(&curl(&path, &args), 401, "Unauthorized", "unknown CA");

    // A client certificate from client-ca-file: CN admin, O system:masters.
    assert_status(
        &curl(&path, &strs(&cert_args(&pki, "admin"))),
        404,
        "NotFound",
        "admin client certificate",
    );

    // Bearer tokens checked by the apiserver's TokenReview.
    let token = service_account_token(&ns.0, "reader");
    let bearer = format!("Authorization: Bearer {token}");
    assert_status(
        &curl(&path, &["-H", &bearer]),
        404,
        "NotFound",
        "valid token with RBAC",
    );
    let nobody = format!(
        "Authorization: Bearer {}",
        service_account_token(&ns.0, "nobody")
    );
    assert_status(
        &curl(&path, &["-H", &nobody]),
        403,
        "Forbidden",
        "valid token without RBAC",
    );
    assert_status(
        &curl(&path, &["-H", "Authorization: Bearer not-a-token"]),
        401,
        "Unauthorized",
        "invalid token",
    );

    // No credentials: anonymous, which RBAC does not allow.
    let got = curl(&path, &[]);
    assert_status(&got, 403, "Forbidden", "anonymous");
    assert!(got.1["message"]
        .as_str()
        .is_some_and(|m| m.contains("system:anonymous")));
    // Health needs no credentials.
    assert_eq!(curl("/livez", &[]).0, 200);

    // Through the aggregator: the admin, a user impersonated with RBAC (the aggregator
    // asserts them to us by front-proxy headers), and one without.
    let (ok, out, err) = kubectl(&["get", "--raw", &path]);
    assert!(!ok, "absent ScaledObject is an error: {out}");
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "admin: {err}"
    );
    let (ok, _, err) = kubectl(&["get", "--raw", &path, "--as", &reader_user]);
    assert!(
        !ok && (err.contains("NotFound") || err.contains("not found")),
        "reader: {err}"
    );
    let (ok, _, err) = kubectl(&["get", "--raw", &path, "--as", "e2e-nobody"]);
    assert!(
        !ok && (err.contains("Forbidden") || err.contains("forbidden")),
        "nobody: {err}"
    );

    // eventscale's own metrics saw it: 401s and 403s on the metric route, the ways callers
    // were authenticated, denials, and SubjectAccessReviews that were not yet cached.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", &c.metrics_url])
        .output()
        .expect("curl /metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    for series in [
        "eventscale_apiserver_requests_total{route=\"Metric\",code=\"401\"}",
        "eventscale_apiserver_requests_total{route=\"Metric\",code=\"403\"}",
        "eventscale_authentication_total{method=\"Requestheader\"}",
        "eventscale_authentication_total{method=\"Token\"}",
        "eventscale_authorization_total{result=\"Denied\"}",
        "eventscale_authorization_cache_total{result=\"Miss\"}",
    ] {
        assert!(value(series) >= 1.0, "{series} missing from:\n{text}");
    }

    let _ = std::fs::remove_dir_all(&extra);
}

/// Bad input over real TLS, as an admin (so every request reaches the handler): each is a
/// JSON `metav1.Status` with the right code, and the server keeps serving.
#[test]
fn bad_input_is_a_clear_status_over_tls() {
    let c = cluster();
    let admin = cert_args(&c.state_dir.join("pki"), "admin");
    let mut args = strs(&admin);
    args.push("--path-as-is");
    let gv = "/apis/external.metrics.k8s.io/v1beta1";
    let huge = format!("{gv}/namespaces/ns/m?labelSelector={}", "a".repeat(20_000));
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("{gv}/namespaces/ns/%ff"), 400, "BadRequest"),
        (format!("{gv}/namespaces/ns/.."), 400, "BadRequest"),
        (format!("{gv}/namespaces/ns/a%25b"), 400, "BadRequest"),
        (format!("{gv}/namespaces/Bad_NS/m"), 400, "BadRequest"),
        (
            format!("{gv}/namespaces/ns/m?labelSelector=a%20in%20("),
            400,
            "BadRequest",
        ),
        (
            format!("{gv}/namespaces/ns/m?labelSelector=%ff"),
            400,
            "BadRequest",
        ),
        (huge, 400, "BadRequest"),
        (
            format!(
                "{gv}/namespaces/no-such-namespace/m?labelSelector=scaledobject.keda.sh%2Fname%3Dx"
            ),
            404,
            "NotFound",
        ),
        (format!("{gv}/namespaces/ns/m"), 400, "BadRequest"),
        ("/no/such/path".to_string(), 404, "NotFound"),
    ];
    for (path, code, reason) in &cases {
        let shown = &path[..path.len().min(100)];
        assert_status(&curl(path, &args), *code, reason, shown);
    }
    let mut post = args.clone();
    post.extend(["-X", "POST"]);
    assert_status(&curl(gv, &post), 405, "MethodNotAllowed", "POST");
    assert_eq!(curl("/readyz", &[]).0, 200, "still serving");
}
