//! `TriggerAuthentication` and `ClusterTriggerAuthentication` (`keda.sh/v1alpha1`), and
//! resolving a trigger's authentication parameters from them.
//!
//! Order, later wins: `env` (from the scale target's container) → `configMapTargetRef` →
//! `secretTargetRef`. A ClusterTriggerAuthentication reads its Secrets and ConfigMaps from
//! eventscale's own namespace. External secret stores and pod identity are not supported
//! yet and fail with a message naming the field.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::scalers::AuthParams;

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// `secretTargetRef[]`: parameter ← Secret `name`, key `key`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AuthSecretTargetRef {
    /// The scaler parameter to set.
    pub parameter: String,
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    pub key: String,
}

/// `configMapTargetRef[]`: parameter ← ConfigMap `name`, key `key`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AuthConfigMapTargetRef {
    /// The scaler parameter to set.
    pub parameter: String,
    /// ConfigMap name.
    pub name: String,
    /// Key in the ConfigMap.
    pub key: String,
}

/// `env[]`: parameter ← environment variable `name` of the target's container.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthEnvironment {
    /// The scaler parameter to set.
    pub parameter: String,
    /// Environment variable name.
    pub name: String,
    /// Container (default: the first, or `envSourceContainerName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// The spec both kinds share, with KEDA's field names.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    plural = "triggerauthentications",
    shortname = "ta",
    shortname = "triggerauth",
    namespaced,
    printcolumn = r#"{"name":"PodIdentity","type":"string","jsonPath":".spec.podIdentity.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretTargetRef[*].name"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.env[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    /// Parameters from Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_target_ref: Vec<AuthSecretTargetRef>,
    /// Parameters from ConfigMaps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_map_target_ref: Vec<AuthConfigMapTargetRef>,
    /// Parameters from the target's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<AuthEnvironment>,
    /// Pod identity (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub pod_identity: Option<serde_json::Value>,
    /// HashiCorp Vault (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub hashi_corp_vault: Option<serde_json::Value>,
    /// Azure Key Vault (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub azure_key_vault: Option<serde_json::Value>,
    /// AWS Secrets Manager (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub aws_secret_manager: Option<serde_json::Value>,
    /// GCP Secret Manager (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub gcp_secret_manager: Option<serde_json::Value>,
    /// Bound service account tokens (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub bound_service_account_token: Option<serde_json::Value>,
}

/// The cluster-scoped kind; its Secrets and ConfigMaps live in eventscale's namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ClusterTriggerAuthentication",
    plural = "clustertriggerauthentications",
    shortname = "cta",
    shortname = "clustertriggerauth",
    printcolumn = r#"{"name":"PodIdentity","type":"string","jsonPath":".spec.podIdentity.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretTargetRef[*].name"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.env[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct ClusterTriggerAuthenticationSpec {
    /// The same fields as a TriggerAuthentication.
    #[serde(flatten)]
    pub inner: TriggerAuthenticationSpec,
}

/// Why a trigger's authentication could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The referenced object does not exist.
    #[error("{kind} {name:?} not found{}", namespace.as_deref().map(|n| format!(" in namespace {n:?}")).unwrap_or_default())]
    NotFound {
        /// TriggerAuthentication or ClusterTriggerAuthentication.
        kind: String,
        /// Its name.
        name: String,
        /// Its namespace (none for the cluster kind).
        namespace: Option<String>,
    },
    /// `authenticationRef.kind` is neither kind.
    #[error("authenticationRef.kind {0:?} must be TriggerAuthentication or ClusterTriggerAuthentication")]
    BadKind(String),
    /// A provider eventscale does not implement.
    #[error("{kind} {name:?}: spec.{field} is not supported by eventscale yet; use secretTargetRef, configMapTargetRef or env")]
    Unsupported {
        /// Kind of the authentication object.
        kind: String,
        /// Its name.
        name: String,
        /// The unsupported field.
        field: &'static str,
    },
    /// A referenced Secret, ConfigMap, key or variable is missing.
    #[error("{kind} {name:?}: {what}")]
    Reference {
        /// Kind of the authentication object.
        kind: String,
        /// Its name.
        name: String,
        /// What is missing.
        what: String,
    },
    /// The apiserver could not be asked.
    #[error("reading {what}: {message}")]
    Api {
        /// What was being read.
        what: String,
        /// The error.
        message: String,
    },
}

/// Where the referenced values come from: the cluster in production, a map in tests and
/// in `eventscale eval`.
#[async_trait]
pub trait Sources: Send + Sync {
    /// A Secret's data (decoded), `None` when it does not exist.
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError>;
    /// A ConfigMap's data, `None` when it does not exist.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError>;
    /// The spec of TriggerAuthentication `namespace/name`, `None` when it does not exist.
    async fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError>;
    /// The spec of ClusterTriggerAuthentication `name`, `None` when it does not exist.
    async fn cluster_trigger_authentication(
        &self,
        name: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError>;
    /// The environment of `container` (or the default one) of the scale target, with
    /// `valueFrom` and `envFrom` resolved.
    async fn container_env(
        &self,
        container: Option<&str>,
    ) -> Result<BTreeMap<String, String>, AuthError>;
}

/// A Secret's `data` (decoded) and `stringData`, as one map.
pub fn secret_data(s: k8s_openapi::api::core::v1::Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    out.extend(s.string_data.unwrap_or_default());
    out
}

/// The authentication parameters of trigger `index` of `so`: empty without
/// `authenticationRef`; a ClusterTriggerAuthentication's references are read in
/// `operator_namespace`.
pub async fn trigger_params(
    so: &crate::ScaledObject,
    index: usize,
    operator_namespace: &str,
    sources: &dyn Sources,
) -> Result<AuthParams, AuthError> {
    let Some(r) = so
        .spec
        .triggers
        .get(index)
        .and_then(|t| t.authentication_ref.as_ref())
    else {
        return Ok(AuthParams::new());
    };
    let namespace = so.metadata.namespace.clone().unwrap_or_default();
    match r.kind.as_deref().unwrap_or("TriggerAuthentication") {
        kind @ "TriggerAuthentication" => {
            let spec = sources
                .trigger_authentication(&namespace, &r.name)
                .await?
                .ok_or_else(|| AuthError::NotFound {
                    kind: kind.into(),
                    name: r.name.clone(),
                    namespace: Some(namespace.clone()),
                })?;
            resolve(kind, &r.name, &spec, &namespace, sources).await
        }
        kind @ "ClusterTriggerAuthentication" => {
            let spec = sources
                .cluster_trigger_authentication(&r.name)
                .await?
                .ok_or_else(|| AuthError::NotFound {
                    kind: kind.into(),
                    name: r.name.clone(),
                    namespace: None,
                })?;
            resolve(kind, &r.name, &spec, operator_namespace, sources).await
        }
        other => Err(AuthError::BadKind(other.to_string())),
    }
}

/// Resolve `spec` (of `kind` `name`) into parameters, reading Secrets and ConfigMaps in
/// `namespace`.
pub async fn resolve(
    kind: &str,
    name: &str,
    spec: &TriggerAuthenticationSpec,
    namespace: &str,
    sources: &dyn Sources,
) -> Result<AuthParams, AuthError> {
    let unsupported = [
        ("podIdentity", spec.pod_identity.is_some()),
        ("hashiCorpVault", spec.hashi_corp_vault.is_some()),
        ("azureKeyVault", spec.azure_key_vault.is_some()),
        ("awsSecretManager", spec.aws_secret_manager.is_some()),
        ("gcpSecretManager", spec.gcp_secret_manager.is_some()),
        (
            "boundServiceAccountToken",
            spec.bound_service_account_token.is_some(),
        ),
    ];
    // podIdentity `none` is KEDA's explicit "no identity".
    let pod_identity_none = spec
        .pod_identity
        .as_ref()
        .and_then(|p| p.get("provider"))
        .and_then(|p| p.as_str())
        .is_some_and(|p| p == "none");
    for (field, present) in unsupported {
        if present && !(field == "podIdentity" && pod_identity_none) {
            return Err(AuthError::Unsupported {
                kind: kind.into(),
                name: name.into(),
                field,
            });
        }
    }
    let reference = |what: String| AuthError::Reference {
        kind: kind.into(),
        name: name.into(),
        what,
    };
    let mut params = AuthParams::new();
    for e in &spec.env {
        let env = sources.container_env(e.container_name.as_deref()).await?;
        let value = env.get(&e.name).ok_or_else(|| {
            reference(format!(
                "environment variable {:?} not found in the scale target's container{}",
                e.name,
                e.container_name
                    .as_deref()
                    .map(|c| format!(" {c:?}"))
                    .unwrap_or_default()
            ))
        })?;
        params.insert(e.parameter.clone(), value.clone());
    }
    for r in &spec.config_map_target_ref {
        let data = sources
            .config_map(namespace, &r.name)
            .await?
            .ok_or_else(|| reference(format!("ConfigMap {namespace}/{} not found", r.name)))?;
        let value = data.get(&r.key).ok_or_else(|| {
            reference(format!(
                "key {:?} not found in ConfigMap {namespace}/{}",
                r.key, r.name
            ))
        })?;
        params.insert(r.parameter.clone(), value.clone());
    }
    for r in &spec.secret_target_ref {
        let data = sources
            .secret(namespace, &r.name)
            .await?
            .ok_or_else(|| reference(format!("Secret {namespace}/{} not found", r.name)))?;
        let value = data.get(&r.key).ok_or_else(|| {
            reference(format!(
                "key {:?} not found in Secret {namespace}/{}",
                r.key, r.name
            ))
        })?;
        params.insert(r.parameter.clone(), value.clone());
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    struct Fake;

    #[async_trait]
    impl Sources for Fake {
        async fn trigger_authentication(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
            Ok(None)
        }
        async fn cluster_trigger_authentication(
            &self,
            _: &str,
        ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
            Ok(None)
        }
        async fn secret(
            &self,
            ns: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
            Ok((ns == "app" && name == "creds").then(|| {
                [("user", "from-secret"), ("pass", "s3cret")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }))
        }
        async fn config_map(
            &self,
            ns: &str,
            name: &str,
        ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
            Ok((ns == "app" && name == "settings").then(|| {
                [("user", "from-configmap"), ("mode", "basic")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }))
        }
        async fn container_env(
            &self,
            container: Option<&str>,
        ) -> Result<BTreeMap<String, String>, AuthError> {
            Ok(match container {
                None | Some("main") => [("USER", "from-env"), ("TOKEN", "t0k")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                Some(_) => BTreeMap::new(),
            })
        }
    }

    fn spec(yaml: &str) -> TriggerAuthenticationSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[tokio::test]
    async fn env_then_configmap_then_secret_later_wins() {
        let s = spec(
            r#"
env: [{parameter: username, name: USER}, {parameter: bearerToken, name: TOKEN}]
configMapTargetRef: [{parameter: username, name: settings, key: user}, {parameter: authModes, name: settings, key: mode}]
secretTargetRef: [{parameter: username, name: creds, key: user}, {parameter: password, name: creds, key: pass}]
"#,
        );
        let p = resolve("TriggerAuthentication", "ta", &s, "app", &Fake)
            .await
            .expect("resolved");
        let want: AuthParams = [
            ("authModes", "basic"),
            ("bearerToken", "t0k"),
            ("password", "s3cret"),
            ("username", "from-secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(p, want);
    }

    #[tokio::test]
    async fn missing_references_and_unsupported_providers_are_named() {
        let cases = [
            (
                "secretTargetRef: [{parameter: p, name: nope, key: k}]",
                "TriggerAuthentication \"ta\": Secret app/nope not found",
            ),
            (
                "secretTargetRef: [{parameter: p, name: creds, key: nope}]",
                "key \"nope\" not found in Secret app/creds",
            ),
            (
                "configMapTargetRef: [{parameter: p, name: nope, key: k}]",
                "ConfigMap app/nope not found",
            ),
            (
                "env: [{parameter: p, name: NOPE}]",
                "environment variable \"NOPE\" not found",
            ),
            (
                "env: [{parameter: p, name: USER, containerName: sidecar}]",
                "container \"sidecar\"",
            ),
            (
                "hashiCorpVault: {address: http://vault}",
                "spec.hashiCorpVault is not supported by eventscale yet",
            ),
            (
                "podIdentity: {provider: azure-workload}",
                "spec.podIdentity is not supported",
            ),
            (
                "awsSecretManager: {secrets: []}",
                "spec.awsSecretManager is not supported",
            ),
        ];
        for (yaml, want) in cases {
            let e = resolve("TriggerAuthentication", "ta", &spec(yaml), "app", &Fake)
                .await
                .expect_err(yaml)
                .to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let none = spec("podIdentity: {provider: none}\nsecretTargetRef: [{parameter: p, name: creds, key: pass}]");
        assert!(resolve("TriggerAuthentication", "ta", &none, "app", &Fake)
            .await
            .is_ok());
    }

    #[test]
    fn keda_yaml_applies_and_the_crds_are_structural() {
        let ta: TriggerAuthentication = serde_yaml::from_str(
            r#"
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-trigger-auth-kafka-credential, namespace: default}
spec:
  secretTargetRef:
  - parameter: sasl
    name: keda-kafka-secrets
    key: sasl
  - parameter: username
    name: keda-kafka-secrets
    key: username
"#,
        )
        .expect("KEDA's example parses");
        assert_eq!(ta.spec.secret_target_ref.len(), 2);
        let cta: ClusterTriggerAuthentication = serde_yaml::from_str(
            "apiVersion: keda.sh/v1alpha1\nkind: ClusterTriggerAuthentication\nmetadata: {name: c}\nspec: {env: [{parameter: p, name: N}]}",
        )
        .expect("cluster kind parses");
        assert_eq!(cta.spec.inner.env[0].name, "N");
        let crd = serde_json::to_value(ClusterTriggerAuthentication::crd()).expect("crd");
        assert_eq!(crd["spec"]["scope"], "Cluster");
        let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        assert!(
            props.get("secretTargetRef").is_some(),
            "flattened fields in the schema: {props}"
        );
        assert_eq!(
            props["hashiCorpVault"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        let ta_crd = serde_json::to_value(TriggerAuthentication::crd()).expect("crd");
        assert_eq!(ta_crd["spec"]["scope"], "Namespaced");
        assert_eq!(
            ta_crd["spec"]["names"]["shortNames"],
            serde_json::json!(["ta", "triggerauth"])
        );
    }
}
