//! The chart under Helm's own engine (helm-python-sdk): strict lint, renders with the
//! defaults and with other values, every rendered object through a server-side dry run on
//! the real kube-apiserver, and a real install and upgrade that keeps the certificate.

use serde_json::{json, Value};

use crate::helm_support::{chart, documents, find, helm, render, values_file};
use crate::{kubectl, kubectl_stdin, Namespace};

/// Objects of API groups the local cluster does not serve (cert-manager's) are left out of
/// the dry run; everything else must be accepted by the apiserver as rendered.
fn dry_run(yaml: &str) {
    let docs: Vec<Value> = documents(yaml)
        .into_iter()
        .filter(|d| {
            !d["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .starts_with("cert-manager.io/")
        })
        .collect();
    assert!(!docs.is_empty());
    let stream = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    let (ok, out, err) = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&stream));
    assert!(
        ok,
        "server-side dry run refused the chart's objects: {err}\n{out}"
    );
    assert_eq!(
        out.lines().count(),
        docs.len(),
        "every object answered: {out}"
    );
}

/// Render offline (every object) and against the cluster (an install with a server-side dry
/// run: the cluster's capabilities and `lookup`). The live one leaves the APIService out (the
/// cluster's own eventscale holds it and Helm refuses to adopt it) and cert-manager.
fn render_both(ns: &str, values: &Value) -> (Vec<Value>, String) {
    let offline = documents(&render("es-render", ns, values, false));
    let mut live_values = values.clone();
    live_values["apiService"] = json!({"create": false});
    // cert-manager's kinds are unknown to the local cluster; they are checked offline only.
    live_values["certManager"] = json!({"enabled": false});
    let live = render("es-render", ns, &live_values, true);
    (offline, live)
}

/// Every object of the live render, and the offline render's APIService, through the
/// apiserver's dry run.
fn dry_run_both(ns: &str, offline: &[Value], live: &str) {
    let _ = ns;
    dry_run(live);
    // The objects only the offline render has: the APIService and the CRDs of crds/.
    let extra = offline
        .iter()
        .filter(|d| d["kind"] == "APIService" || d["kind"] == "CustomResourceDefinition")
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    dry_run(&extra);
}

fn args(docs: &[Value], deployment: &str) -> Vec<String> {
    find(docs, "Deployment", deployment).expect("the Deployment")["spec"]["template"]["spec"]
        ["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect()
}

fn rule_verbs(role: &Value, resource: &str) -> Vec<String> {
    role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
        })
        .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn lint_render_and_server_side_dry_run() {
    let path = chart();
    let path = path.to_string_lossy();
    // Strict lint (warnings fail) for the cluster here and a current one, defaults and not.
    let other = json!({"mode": "metrics-only", "replicaCount": 1, "logging": {"level": "debug", "format": "json"},
        "certManager": {"enabled": true}, "defaultPollingInterval": 10});
    let other_file = values_file("lint", &other);
    for kube in ["v1.20.2", "v1.30.0"] {
        let (ok, out, err) = helm(&["lint", &path, "--kube-version", kube]);
        assert!(ok, "helm lint ({kube}, defaults): {out}{err}");
        let (ok, out, err) = helm(&["lint", &path, &other_file, "--kube-version", kube]);
        assert!(ok, "helm lint ({kube}, {other}): {out}{err}");
    }

    let ns = Namespace::create("e2e-helm-render");
    // Defaults: full mode, 2 replicas, PDB, generated certificate in a Secret whose CA is the
    // APIService's caBundle.
    let (docs, live) = render_both(&ns.0, &json!({}));
    let name = "es-render-eventscale";
    let a = args(&docs, name);
    assert!(!a.contains(&"--metrics-only".to_string()), "{a:?}");
    assert!(
        a.contains(&format!("--leader-election-id={name}-leader")),
        "{a:?}"
    );
    assert!(a.contains(&format!("--namespace={}", ns.0)), "{a:?}");
    let deployment = find(&docs, "Deployment", name).expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert!(container["resources"]["limits"]["memory"].is_string());
    let pdb = find(&docs, "PodDisruptionBudget", name).expect("PDB with 2 replicas");
    assert_eq!(
        pdb["apiVersion"], "policy/v1",
        "offline: a current Kubernetes"
    );
    // The local cluster is v1.20: policy/v1 is not served there, the chart picks v1beta1.
    let live_docs = documents(&live);
    let pdb = find(&live_docs, "PodDisruptionBudget", name).expect("PDB");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    let secret = find(&docs, "Secret", &format!("{name}-certs")).expect("certificate Secret");
    let apiservice =
        find(&docs, "APIService", "v1beta1.external.metrics.k8s.io").expect("APIService");
    assert_eq!(apiservice["spec"]["caBundle"], secret["data"]["ca.crt"]);
    assert_eq!(
        apiservice["spec"]["service"]["name"],
        format!("{name}-metrics-apiserver")
    );
    // The traces' APIService: the same Service and CA.
    let traces =
        find(&docs, "APIService", "v1alpha1.explain.eventscale.sh").expect("traces APIService");
    assert_eq!(traces["spec"]["caBundle"], secret["data"]["ca.crt"]);
    assert_eq!(traces["spec"]["service"], apiservice["spec"]["service"]);
    let reader = find(
        &docs,
        "ClusterRoleBinding",
        &format!("{name}:trace-readers"),
    )
    .expect("trace readers");
    assert_eq!(reader["subjects"][0]["name"], "system:authenticated");
    let role = find(&docs, "ClusterRole", name).expect("ClusterRole");
    assert_eq!(rule_verbs(role, "horizontalpodautoscalers").len(), 6);
    assert!(find(&docs, "Role", &format!("{name}:leader-election")).is_some());
    for crd in [
        "scaledobjects.keda.sh",
        "triggerauthentications.keda.sh",
        "clustertriggerauthentications.keda.sh",
        "scaledjobs.keda.sh",
    ] {
        assert!(
            find(&docs, "CustomResourceDefinition", crd).is_some(),
            "{crd}"
        );
    }
    dry_run_both(&ns.0, &docs, &live);

    // Other values: metrics-only beside KEDA, one replica, cert-manager, json logs.
    let (docs, live) = render_both(&ns.0, &other);
    let a = args(&docs, name);
    for flag in [
        "--metrics-only",
        "--log-level=debug",
        "--log-format=json",
        "--default-polling-interval=10",
    ] {
        assert!(a.contains(&flag.to_string()), "{flag} in {a:?}");
    }
    assert!(
        find(&docs, "PodDisruptionBudget", name).is_none(),
        "no PDB for one replica"
    );
    assert!(find(&docs, "Secret", &format!("{name}-certs")).is_none());
    // Metrics-only replicas share the polling of cached triggers too.
    let lease_role = find(&docs, "Role", &format!("{name}:leader-election")).expect("Role");
    assert_eq!(
        rule_verbs(lease_role, "leases"),
        ["get", "list", "create", "update", "delete"]
    );
    assert!(
        a.contains(&format!("--leader-election-id={name}-leader")),
        "{a:?}"
    );
    let role = find(&docs, "ClusterRole", name).expect("ClusterRole");
    assert_eq!(rule_verbs(role, "*"), ["list"], "forwarded reads: {role}");
    assert_eq!(
        rule_verbs(role, "horizontalpodautoscalers"),
        ["get"],
        "metrics-only: the other operator's HPA, read for traces only: {role}"
    );
    assert_eq!(rule_verbs(role, "*/scale"), ["get"], "{role}");
    let apiservice =
        find(&docs, "APIService", "v1beta1.external.metrics.k8s.io").expect("APIService");
    assert_eq!(
        apiservice["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{}/{name}-serving", ns.0)
    );
    assert!(apiservice["spec"]["caBundle"].is_null());
    let certificate = find(&docs, "Certificate", &format!("{name}-serving")).expect("Certificate");
    assert_eq!(
        certificate["spec"]["dnsNames"][2],
        format!("{name}-metrics-apiserver.{}.svc", ns.0)
    );
    dry_run_both(&ns.0, &docs, &live);

    // Values that cannot work are refused, naming the value.
    let file = values_file("bad", &json!({"mode": "operator"}));
    let (ok, _, err) = helm(&["render", &path, "es-render", &ns.0, &file]);
    assert!(
        !ok && err.contains("mode must be full or metrics-only"),
        "{err}"
    );
}

/// `helm install` as a user runs it (here without the APIService, which the cluster's own
/// eventscale holds): the objects are created, and an upgrade keeps the generated CA.
#[test]
fn install_and_upgrade_keep_the_certificate() {
    let ns = Namespace::create("e2e-helm-install");
    let kubeconfig = crate::cluster().kubeconfig.to_string_lossy().into_owned();
    let path = chart();
    let path = path.to_string_lossy();
    let values = values_file("install", &json!({"apiService": {"create": false}}));
    let (ok, out, err) = helm(&["install", &path, "es-install", &ns.0, &kubeconfig, &values]);
    assert!(ok, "helm install: {err}{out}");
    let name = "es-install-eventscale";
    for (kind, n) in [
        ("deployment", name.to_string()),
        ("serviceaccount", name.to_string()),
        ("service", format!("{name}-metrics-apiserver")),
        ("secret", format!("{name}-certs")),
        ("poddisruptionbudget", name.to_string()),
        ("role", format!("{name}:leader-election")),
    ] {
        let (ok, _, err) = kubectl(&["-n", &ns.0, "get", kind, &n]);
        assert!(ok, "{kind} {n} after helm install: {err}");
    }
    let ca = |ns: &str| {
        let (ok, out, err) = kubectl(&[
            "-n",
            ns,
            "get",
            "secret",
            &format!("{name}-certs"),
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]);
        assert!(ok, "{err}");
        out
    };
    let before = ca(&ns.0);
    assert!(!before.is_empty());
    let (ok, out, err) = helm(&["install", &path, "es-install", &ns.0, &kubeconfig, &values]);
    assert!(ok, "helm upgrade: {err}{out}");
    assert_eq!(
        ca(&ns.0),
        before,
        "an upgrade must keep the CA the APIService trusts"
    );
    let (ok, _, err) = helm(&["uninstall", "es-install", &ns.0, &kubeconfig]);
    assert!(ok, "helm uninstall: {err}");
    let (ok, _, _) = kubectl(&["get", "clusterrole", name]);
    assert!(!ok, "the ClusterRole is removed with the release");
}

/// The plain manifests in `apiservice/` grant what the chart grants (release `eventscale` in
/// namespace `eventscale`): same roles, same rules, same bindings.
#[test]
fn plain_manifests_grant_what_the_chart_grants() {
    let rbac = |docs: Vec<Value>| -> Vec<(String, String, Value)> {
        let mut out: Vec<(String, String, Value)> = docs
            .into_iter()
            .filter(|d| {
                matches!(
                    d["kind"].as_str(),
                    Some("ClusterRole" | "Role" | "ClusterRoleBinding" | "RoleBinding")
                )
            })
            .map(|d| {
                let body = if d["rules"].is_null() {
                    json!({"roleRef": d["roleRef"], "subjects": d["subjects"]})
                } else {
                    json!({"rules": d["rules"]})
                };
                (
                    d["kind"].as_str().unwrap_or_default().to_string(),
                    d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    body,
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    };
    let chart = rbac(documents(&render(
        "eventscale",
        "eventscale",
        &json!({}),
        false,
    )));
    let plain = std::fs::read_to_string(crate::repo_root().join("apiservice/rbac.yaml"))
        .expect("apiservice/rbac.yaml");
    let plain = rbac(documents(&plain));
    assert_eq!(
        chart.iter().map(|c| (&c.0, &c.1)).collect::<Vec<_>>(),
        plain.iter().map(|c| (&c.0, &c.1)).collect::<Vec<_>>(),
        "the same RBAC objects"
    );
    for (c, p) in chart.iter().zip(&plain) {
        assert_eq!(
            c.2, p.2,
            "{} {} differs between the chart and apiservice/rbac.yaml",
            c.0, c.1
        );
    }
}

/// The chart deploys the interceptor (by default): its Deployment under its own account,
/// with labels no eventscale selector matches, the proxy and admin Services, a PDB, RBAC
/// that only reads routes, Services and Endpoints, and eventscale pointed at its scaler.
/// `interceptor.enabled: false` leaves all of it out, and eventscale's HTTP rules too.
#[test]
fn the_chart_deploys_the_interceptor() {
    let ns = Namespace::create("e2e-helm-interceptor");
    let name = "es-render-eventscale";
    let values = json!({"interceptor": {"backendCIDRs": ["10.244.0.0/16"], "replicaCount": 3}});
    let (docs, live) = render_both(&ns.0, &values);
    let interceptor = format!("{name}-interceptor");
    let a = args(&docs, &interceptor);
    for flag in [
        "interceptor".to_string(),
        format!("--peers-service={}/{name}-interceptor-admin", ns.0),
        "--backend-cidrs=10.244.0.0/16".to_string(),
        "--condition-wait-timeout=20s".to_string(),
    ] {
        assert!(a.contains(&flag), "{flag} in {a:?}");
    }
    let d = find(&docs, "Deployment", &interceptor).expect("the interceptor's Deployment");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["serviceAccountName"],
        interceptor
    );
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    let main = find(&docs, "Deployment", name).expect("eventscale's Deployment");
    let main_selector = main["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("a selector");
    assert!(
        !main_selector.iter().all(|(k, v)| &pod_labels[k] == v),
        "eventscale's selector must not match the interceptor's pods: {pod_labels}"
    );
    assert!(args(&docs, name).contains(&format!(
        "--interceptor-scaler-address={name}-interceptor-admin.{}:9091",
        ns.0
    )));
    let proxy = find(&docs, "Service", &format!("{name}-interceptor-proxy")).expect("proxy");
    assert_eq!(proxy["spec"]["ports"][0]["port"], 8080);
    let admin = find(&docs, "Service", &format!("{name}-interceptor-admin")).expect("admin");
    let ports: Vec<_> = admin["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ports, ["admin", "grpc-scaler"]);
    assert!(find(&docs, "PodDisruptionBudget", &interceptor).is_some());
    let role = find(&docs, "ClusterRole", &interceptor).expect("the interceptor's role");
    for resource in ["httpscaledobjects", "services", "endpoints"] {
        assert_eq!(rule_verbs(role, resource), ["list", "watch"], "{resource}");
    }
    assert_eq!(role["rules"].as_array().map(Vec::len), Some(2), "{role}");
    let main_role = find(&docs, "ClusterRole", name).expect("eventscale's role");
    assert_eq!(rule_verbs(main_role, "httpscaledobjects/status"), ["patch"]);
    assert_eq!(
        rule_verbs(main_role, "scaledobjects"),
        ["get", "list", "watch", "patch", "create", "delete"]
    );
    dry_run_both(&ns.0, &docs, &live);

    let (docs, _) = render_both(&ns.0, &json!({"interceptor": {"enabled": false}}));
    for kind in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "PodDisruptionBudget",
    ] {
        assert!(find(&docs, kind, &interceptor).is_none(), "{kind}");
    }
    assert!(!args(&docs, name)
        .iter()
        .any(|a| a.starts_with("--interceptor-scaler-address")));
    let main_role = find(&docs, "ClusterRole", name).expect("eventscale's role");
    assert!(rule_verbs(main_role, "httpscaledobjects").is_empty());
    assert_eq!(
        rule_verbs(main_role, "scaledobjects"),
        ["get", "list", "watch", "patch"],
        "get: traces forwarded to the owner are authorized as a get"
    );
}
