//! Every seed example (the YAML users copy from the articles, unchanged) is accepted by the
//! real apiserver against eventscale's generated CRDs, and nothing in it is pruned: what
//! the server would store is what the file says.

use serde_json::Value;

use crate::{kubectl_stdin, Namespace};

/// The kinds eventscale serves or the examples need beside them.
const KINDS: [&str; 7] = [
    "ScaledObject",
    "ScaledJob",
    "HTTPScaledObject",
    "TriggerAuthentication",
    "Secret",
    "Deployment",
    "Service",
];

/// `b` holds everything `a` holds (the server may add defaults, never drop a field).
fn contains(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a.iter().try_for_each(|(k, v)| {
            let p = format!("{path}.{k}");
            b.get(k)
                .ok_or_else(|| format!("{p} was dropped"))
                .and_then(|w| contains(v, w, &p))
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .try_for_each(|(i, (v, w))| contains(v, w, &format!("{path}[{i}]"))),
        // Quantities and ints-or-strings come back in canonical form.
        (Value::String(x), Value::Number(n)) | (Value::Number(n), Value::String(x))
            if x == &n.to_string() =>
        {
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} became {b}")),
    }
}

/// A server-side dry run of `value` stores everything it says (Secrets: accepted only).
fn apply_unchanged(default_namespace: &str, value: &Value, label: &str) {
    let kind = value["kind"].as_str().unwrap_or_default();
    let json = serde_json::to_string(value).expect("JSON");
    // A dry run stores nothing, so a document naming its namespace keeps it.
    let namespace = value["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_namespace);
    let (ok, out, err) = kubectl_stdin(
        &[
            "-n",
            namespace,
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(&json),
    );
    assert!(ok, "{label} ({kind}) refused: {err}");
    let stored: Value = serde_json::from_str(&out).expect("kubectl -o json");
    for part in ["spec", "data", "stringData"] {
        if value.get(part).is_none() || kind == "Secret" {
            continue;
        }
        if let Err(e) = contains(&value[part], &stored[part], part) {
            panic!("{label} ({kind}): {e}");
        }
    }
}

/// Every field of KEDA's TriggerAuthentication, ClusterTriggerAuthentication, ScaledObject
/// and ScaledJob schemas, written as KEDA's docs do, is accepted and kept, including the
/// providers eventscale does not implement (it reports those on the ScaledObject).
#[test]
fn every_keda_field_applies_unchanged() {
    let ns = Namespace::create("e2e-keda-fields");
    let auth_spec = r#"
  podIdentity: {provider: azure-workload, identityId: id-1, identityTenantId: t-1, identityAuthorityHost: h, roleArn: arn, identityOwner: keda}
  secretTargetRef: [{parameter: password, name: s, key: k}]
  env: [{parameter: user, name: USER, containerName: main}]
  configMapTargetRef: [{parameter: host, name: c, key: k}]
  hashiCorpVault:
    address: https://vault:8200
    namespace: ns
    authentication: kubernetes
    role: r
    mount: m
    credential: {token: t, serviceAccount: /var/run/secrets/token, serviceAccountName: sa}
    secrets: [{parameter: p, key: k, path: secret/data/x, type: secretV2, pkiData: {commonName: cn, altNames: a, ipSans: i, uriSans: u, otherSans: o, ttl: 1h, format: pem}}]
  azureKeyVault:
    vaultUri: https://v.vault.azure.net
    credentials: {clientId: c, tenantId: t, clientSecret: {valueFrom: {secretKeyRef: {name: s, key: k}}}}
    podIdentity: {provider: azure-workload}
    cloud: {type: AzurePublicCloud}
    secrets: [{parameter: p, name: n, version: v}]
  awsSecretManager:
    podIdentity: {provider: aws}
    credentials: {accessKey: {valueFrom: {secretKeyRef: {name: s, key: k}}}, accessSecretKey: {valueFrom: {secretKeyRef: {name: s, key: k2}}}}
    region: eu-west-1
    secrets: [{parameter: p, name: n, versionId: v, versionStage: AWSCURRENT, secretKey: sk}]
  gcpSecretManager:
    credentials: {clientSecret: {valueFrom: {secretKeyRef: {name: s, key: k}}}}
    podIdentity: {provider: gcp}
    secrets: [{parameter: p, id: i, version: "1"}]
  boundServiceAccountToken: [{parameter: token, serviceAccountName: sa}]
  oauth2:
    type: clientCredentials
    tokenUrl: https://auth/token
    clientId: c
    clientSecret: {valueFrom: {secretKeyRef: {name: s, key: k}}}
    scopes: [read, write]
    tokenUrlParams: {audience: api}
"#;
    let docs = [
        format!("apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {{name: every-field}}\nspec:{auth_spec}"),
        format!("apiVersion: keda.sh/v1alpha1\nkind: ClusterTriggerAuthentication\nmetadata: {{name: every-field}}\nspec:{auth_spec}  filePath: creds/auth.json\n"),
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: every-field
  annotations: {autoscaling.keda.sh/paused: "false", scaledobject.keda.sh/transfer-hpa-ownership: "true"}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web, envSourceContainerName: main}
  pollingInterval: 30
  initialCooldownPeriod: 0
  cooldownPeriod: 300
  idleReplicaCount: 0
  minReplicaCount: 1
  maxReplicaCount: 100
  fallback: {failureThreshold: 3, replicas: 6, behavior: currentReplicasIfHigher}
  advanced:
    restoreToOriginalReplicaCount: true
    horizontalPodAutoscalerConfig:
      name: custom-hpa
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 300
          selectPolicy: Max
          policies: [{type: Percent, value: 100, periodSeconds: 15}]
        scaleUp: {stabilizationWindowSeconds: 0, policies: [{type: Pods, value: 4, periodSeconds: 15}]}
    scalingModifiers: {formula: "a + b", target: "5", activationTarget: "1", metricType: AverageValue}
  triggers:
  - type: prometheus
    name: a
    metricType: AverageValue
    useCachedMetrics: true
    metadata: {serverAddress: "http://prometheus:9090", query: up, threshold: "1"}
    authenticationRef: {name: every-field, kind: ClusterTriggerAuthentication}
  - type: cron
    name: b
    metadata: {timezone: Etc/UTC, start: 0 * * * *, end: 30 * * * *, desiredReplicas: "2"}
"#
        .to_string(),
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: every-field
  labels: {team: a, secret: b}
  annotations: {autoscaling.keda.sh/paused: "true", scaledjob.keda.sh/job-excluded-labels: secret}
spec:
  jobTargetRef:
    parallelism: 1
    completions: 1
    activeDeadlineSeconds: 600
    backoffLimit: 6
    template:
      metadata: {labels: {app: worker}}
      spec:
        restartPolicy: Never
        containers:
        - name: worker
          image: localhost/eventscale/demo:v1
          args: [job]
          env: [{name: QUEUE, value: jobs}]
          resources: {requests: {cpu: 10m, memory: 16Mi}}
  pollingInterval: 30
  successfulJobsHistoryLimit: 5
  failedJobsHistoryLimit: 5
  envSourceContainerName: worker
  minReplicaCount: 0
  maxReplicaCount: 100
  rolloutStrategy: gradual
  rollout: {strategy: gradual, propagationPolicy: foreground}
  scalingStrategy:
    strategy: custom
    customScalingQueueLengthDeduction: 1
    customScalingRunningJobPercentage: "0.5"
    pendingPodConditions: [Ready, PodScheduled, AnyOtherCustomPodCondition]
    multipleScalersCalculation: max
  triggers:
  - type: mysql
    name: queue
    metadata: {queryValue: "4", activationQueryValue: "1", query: "SELECT COUNT(*) FROM jobs"}
    authenticationRef: {name: every-field}
"#
        .to_string(),
    ];
    for doc in docs {
        let value: Value = serde_yaml::from_str(&doc).expect("YAML");
        apply_unchanged(&ns.0, &value, "KEDA's fields");
    }
}

#[test]
fn seed_examples_apply_unchanged_to_the_crds() {
    let dir = crate::repo_root().join("examples");
    let ns = Namespace::create("e2e-seeds");
    let mut applied = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the repository's examples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in text.split("\n---") {
            let value: Value = match serde_yaml::from_str(doc) {
                Ok(v) => v,
                Err(e) => panic!("{}: not YAML: {e}", path.display()),
            };
            let kind = value["kind"].as_str().unwrap_or_default();
            if !KINDS.contains(&kind) {
                continue;
            }
            apply_unchanged(&ns.0, &value, &path.display().to_string());
            applied += 1;
        }
    }
    assert!(applied >= 8, "only {applied} documents applied");
}
