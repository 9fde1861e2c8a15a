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

fn any_object_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// `status` of both kinds, as KEDA keeps it: the names of the ScaledObjects and
/// ScaledJobs that use the object, comma separated.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TriggerAuthenticationStatus {
    /// ScaledObjects using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledobjects: Option<String>,
    /// ScaledJobs using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledjobs: Option<String>,
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
    status = "TriggerAuthenticationStatus",
    printcolumn = r#"{"name":"PodIdentity","type":"string","jsonPath":".spec.podIdentity.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretTargetRef[*].name"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.env[*].name"}"#,
    printcolumn = r#"{"name":"VaultAddress","type":"string","jsonPath":".spec.hashiCorpVault.address"}"#,
    printcolumn = r#"{"name":"ScaledObjects","type":"string","priority":1,"jsonPath":".status.scaledobjects"}"#,
    printcolumn = r#"{"name":"ScaledJobs","type":"string","priority":1,"jsonPath":".status.scaledjobs"}"#
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
    /// Bound service account tokens (not supported yet): a list, as in KEDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object_list")]
    pub bound_service_account_token: Option<Vec<serde_json::Value>>,
    /// OAuth2 client credentials (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub oauth2: Option<serde_json::Value>,
    /// A JSON file of parameters under the operator's root path (ClusterTriggerAuthentication
    /// only in KEDA; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
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
    status = "TriggerAuthenticationStatus",
    printcolumn = r#"{"name":"PodIdentity","type":"string","jsonPath":".spec.podIdentity.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretTargetRef[*].name"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.env[*].name"}"#,
    printcolumn = r#"{"name":"FilePath","type":"string","jsonPath":".spec.filePath"}"#,
    printcolumn = r#"{"name":"VaultAddress","type":"string","jsonPath":".spec.hashiCorpVault.address"}"#,
    printcolumn = r#"{"name":"ScaledObjects","type":"string","priority":1,"jsonPath":".status.scaledobjects"}"#,
    printcolumn = r#"{"name":"ScaledJobs","type":"string","priority":1,"jsonPath":".status.scaledjobs"}"#
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
    /// A field that KEDA refuses too.
    #[error("{kind} {name:?}: {message}")]
    Invalid {
        /// Kind of the authentication object.
        kind: String,
        /// Its name.
        name: String,
        /// KEDA's words.
        message: String,
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
    /// The environment of the scale target's `container` (the first when `None`), with
    /// `envFrom`, `valueFrom` and `$(VAR)` resolved as KEDA does. A missing container is
    /// an [`AuthError::Reference`].
    async fn container_env(
        &self,
        container: Option<&str>,
    ) -> Result<BTreeMap<String, String>, AuthError>;
}

/// Sources with nothing in them: every object is missing, the target's environment empty
/// (scalers built without a cluster).
pub struct NoSources;

#[async_trait]
impl Sources for NoSources {
    async fn secret(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        Ok(None)
    }
    async fn config_map(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        Ok(None)
    }
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
    async fn container_env(&self, _: Option<&str>) -> Result<BTreeMap<String, String>, AuthError> {
        Ok(BTreeMap::new())
    }
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
) -> Result<Resolved, AuthError> {
    let Some(r) = so
        .spec
        .triggers
        .get(index)
        .and_then(|t| t.authentication_ref.as_ref())
    else {
        return Ok(Resolved::default());
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
) -> Result<Resolved, AuthError> {
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
        ("oauth2", spec.oauth2.is_some()),
        ("filePath", spec.file_path.is_some()),
    ];
    // KEDA's own check comes first: a namespaced object may not read the operator's files.
    if spec.file_path.is_some() && kind != "ClusterTriggerAuthentication" {
        return Err(AuthError::Invalid {
            kind: kind.into(),
            name: name.into(),
            message: format!(
                "filePath is only supported for ClusterTriggerAuthentication, got kind: {kind}"
            ),
        });
    }
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
    // KEDA sets a parameter whose Secret, ConfigMap, key, container or variable is
    // missing to "" and goes on (the scaler then fails if it needs it); eventscale does
    // the same and keeps the reason, for the error and the log. A failed API call is an
    // error, never an empty parameter.
    let mut out = Resolved::default();
    for e in &spec.env {
        // KEDA reads `containerName`, else the first container (not envSourceContainerName).
        let container = e.container_name.as_deref();
        match sources.container_env(container).await {
            Ok(env) => match env.get(&e.name) {
                Some(v) => out.set(&e.parameter, v.clone()),
                None => out.unresolved(
                    &e.parameter,
                    format!(
                        "{kind} {name:?}: environment variable {:?} not found in the scale target's container{}",
                        e.name,
                        container
                            .filter(|c| !c.is_empty())
                            .map(|c| format!(" {c:?}"))
                            .unwrap_or_default()
                    ),
                ),
            },
            Err(AuthError::Reference { what, .. }) => {
                out.unresolved(&e.parameter, format!("{kind} {name:?}: {what}"))
            }
            Err(other) => return Err(other),
        }
    }
    for r in &spec.config_map_target_ref {
        let found = sources.config_map(namespace, &r.name).await?;
        match found.as_ref().map(|d| d.get(&r.key)) {
            Some(Some(v)) => out.set(&r.parameter, v.clone()),
            Some(None) => out.unresolved(
                &r.parameter,
                format!(
                    "{kind} {name:?}: key {:?} not found in ConfigMap {namespace}/{}",
                    r.key, r.name
                ),
            ),
            None => out.unresolved(
                &r.parameter,
                format!(
                    "{kind} {name:?}: ConfigMap {namespace}/{} not found (key {:?})",
                    r.name, r.key
                ),
            ),
        }
    }
    for r in &spec.secret_target_ref {
        let found = sources.secret(namespace, &r.name).await?;
        match found.as_ref().map(|d| d.get(&r.key)) {
            Some(Some(v)) => out.set(&r.parameter, v.clone()),
            Some(None) => out.unresolved(
                &r.parameter,
                format!(
                    "{kind} {name:?}: key {:?} not found in Secret {namespace}/{}",
                    r.key, r.name
                ),
            ),
            None => out.unresolved(
                &r.parameter,
                format!(
                    "{kind} {name:?}: Secret {namespace}/{} not found (key {:?})",
                    r.name, r.key
                ),
            ),
        }
    }
    Ok(out)
}

/// A trigger's authentication parameters, and why any of them came out empty.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resolved {
    /// The parameters; an unresolved one is `""`, as in KEDA.
    pub params: AuthParams,
    /// Parameter → why it is empty (a Secret, ConfigMap, key, container or variable that
    /// is missing).
    pub unresolved: BTreeMap<String, String>,
}

impl Resolved {
    fn set(&mut self, parameter: &str, value: String) {
        self.unresolved.remove(parameter);
        self.params.insert(parameter.to_string(), value);
    }

    fn unresolved(&mut self, parameter: &str, why: String) {
        self.params.insert(parameter.to_string(), String::new());
        self.unresolved.insert(parameter.to_string(), why);
    }

    /// `e` with the reason attached when it is about a parameter that came out empty.
    pub fn explain(&self, e: crate::scalers::ScalerError) -> crate::scalers::ScalerError {
        let unresolved: BTreeMap<String, String> = self
            .unresolved
            .iter()
            .map(|(p, why)| (p.clone(), format!("from authenticationRef: {why}")))
            .collect();
        crate::scalers::explain(e, &unresolved)
    }
}

/// KEDA's expansion of `$(VAR)` in a container's `env[].value`: `$(VAR)` becomes the value
/// of a variable resolved before it (kept as written when there is none), `$$` becomes
/// `$`. As in KEDA, a `$` with fewer than three characters after it is left alone.
pub fn expand_env_refs(value: &str, env: &BTreeMap<String, String>) -> String {
    let b = value.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 3 < b.len() {
            out.extend_from_slice(&b[checkpoint..cursor]);
            let mut length = 1;
            match b[cursor + 1] {
                b'$' => out.push(b'$'),
                b'(' => match b[cursor + 2..].iter().position(|&c| c == b')') {
                    Some(close) => {
                        let key = String::from_utf8_lossy(&b[cursor + 2..cursor + 2 + close]);
                        match env.get(key.as_ref()) {
                            Some(v) => out.extend_from_slice(v.as_bytes()),
                            None => out.extend_from_slice(&b[cursor..cursor + 3 + close]),
                        }
                        length = close + 2;
                    }
                    None => out.extend_from_slice(b"$("),
                },
                other => out.extend_from_slice(&[b'$', other]),
            }
            cursor += length;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&b[checkpoint.min(b.len())..]);
    String::from_utf8_lossy(&out).into_owned()
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
            match container {
                None | Some("main") => Ok([("USER", "from-env"), ("TOKEN", "t0k")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()),
                Some(n) => Err(AuthError::Reference {
                    kind: "Deployment app/web".into(),
                    name: "web".into(),
                    what: format!("couldn't find container with name {n} on Target object"),
                }),
            }
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
        assert_eq!(p.params, want);
        assert!(p.unresolved.is_empty());
    }

    #[tokio::test]
    async fn unsupported_providers_are_named() {
        let cases = [
            (
                "hashiCorpVault: {address: http://vault}",
                "spec.hashiCorpVault is not supported by eventscale yet",
            ),
            (
                "podIdentity: {provider: azure-workload}",
                "spec.podIdentity is not supported",
            ),
            // Every provider but `none`: none is accepted and then ignored.
            (
                "podIdentity: {provider: gcp}",
                "spec.podIdentity is not supported",
            ),
            (
                "podIdentity: {provider: aws, roleArn: arn:aws:iam::1:role/r}",
                "spec.podIdentity is not supported",
            ),
            (
                "podIdentity: {provider: aws-eks}",
                "spec.podIdentity is not supported",
            ),
            (
                "podIdentity: {provider: azure}",
                "spec.podIdentity is not supported",
            ),
            (
                "awsSecretManager: {secrets: []}",
                "spec.awsSecretManager is not supported",
            ),
            (
                "boundServiceAccountToken: [{parameter: token, serviceAccountName: sa}]",
                "spec.boundServiceAccountToken is not supported",
            ),
            (
                "oauth2: {type: clientCredentials, clientId: c, tokenUrl: http://t}",
                "spec.oauth2 is not supported",
            ),
            (
                "filePath: auth.json",
                "filePath is only supported for ClusterTriggerAuthentication, got kind: TriggerAuthentication",
            ),
        ];
        for (yaml, want) in cases {
            let e = resolve("TriggerAuthentication", "ta", &spec(yaml), "app", &Fake)
                .await
                .expect_err(yaml)
                .to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let e = resolve(
            "ClusterTriggerAuthentication",
            "cta",
            &spec("filePath: auth.json"),
            "eventscale",
            &Fake,
        )
        .await
        .expect_err("file path")
        .to_string();
        assert!(e.contains("spec.filePath is not supported"), "{e}");
        let none = spec("podIdentity: {provider: none}\nsecretTargetRef: [{parameter: p, name: creds, key: pass}]");
        assert!(resolve("TriggerAuthentication", "ta", &none, "app", &Fake)
            .await
            .is_ok());
    }

    /// KEDA leaves a parameter whose source is missing empty and goes on; eventscale does
    /// too, and says why when the scaler then needs it.
    #[tokio::test]
    async fn missing_references_leave_the_parameter_empty_and_say_why() {
        let cases = [
            (
                "secretTargetRef: [{parameter: p, name: nope, key: k}]",
                "TriggerAuthentication \"ta\": Secret app/nope not found (key \"k\")",
            ),
            (
                "secretTargetRef: [{parameter: p, name: creds, key: nope}]",
                "key \"nope\" not found in Secret app/creds",
            ),
            (
                "configMapTargetRef: [{parameter: p, name: nope, key: k}]",
                "ConfigMap app/nope not found (key \"k\")",
            ),
            (
                "configMapTargetRef: [{parameter: p, name: settings, key: nope}]",
                "key \"nope\" not found in ConfigMap app/settings",
            ),
            (
                "env: [{parameter: p, name: NOPE}]",
                "environment variable \"NOPE\" not found",
            ),
            (
                "env: [{parameter: p, name: USER, containerName: sidecar}]",
                "couldn't find container with name sidecar",
            ),
            // A later source wins even when it is missing, as in KEDA.
            (
                "env: [{parameter: p, name: USER}]\nsecretTargetRef: [{parameter: p, name: creds, key: nope}]",
                "key \"nope\" not found in Secret app/creds",
            ),
        ];
        for (yaml, want) in cases {
            let r = resolve("TriggerAuthentication", "ta", &spec(yaml), "app", &Fake)
                .await
                .expect(yaml);
            assert_eq!(r.params.get("p").map(String::as_str), Some(""), "{yaml}");
            let why = r.unresolved.get("p").cloned().unwrap_or_default();
            assert!(why.contains(want), "{yaml}: {why}");
            // The scaler's own error carries the reason.
            let missing = |p: &str| crate::scalers::ScalerError::MissingParameter {
                param: p.into(),
                names: p.into(),
                from: crate::scalers::params::Order(&[crate::scalers::params::Source::Auth]),
            };
            let e = r.explain(missing("p"));
            assert!(
                e.to_string().starts_with(
                    "missing required parameter \"p\" in [authParams] (from authenticationRef: "
                ) && e.to_string().contains(want),
                "{e}"
            );
            assert_eq!(e.param(), Some("p"));
            // Errors about other parameters are left alone.
            let other = missing("q");
            assert_eq!(r.explain(other.clone()), other);
        }
        // A source found later clears an earlier miss.
        let r = resolve(
            "TriggerAuthentication",
            "ta",
            &spec("env: [{parameter: p, name: NOPE}]\nsecretTargetRef: [{parameter: p, name: creds, key: pass}]"),
            "app",
            &Fake,
        )
        .await
        .expect("resolved");
        assert_eq!(r.params.get("p").map(String::as_str), Some("s3cret"));
        assert!(r.unresolved.is_empty());
    }

    #[test]
    fn env_references_expand_as_keda_does() {
        let env: BTreeMap<String, String> = [("HOST", "db"), ("PORT", "3306"), ("E", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cases = [
            ("$(HOST):$(PORT)", "db:3306"),
            ("mysql://$(HOST)/x", "mysql://db/x"),
            ("$(MISSING)-x", "$(MISSING)-x"),
            ("a$(E)b", "ab"),
            ("$$(HOST)xx", "$(HOST)xx"),
            ("cost: $$5 each", "cost: $5 each"),
            ("$(HOST", "$(HOST"),
            ("x$yzw", "x$yzw"),
            ("$(E)", ""),
            // KEDA leaves a `$` with fewer than three characters after it alone.
            ("ab$$", "ab$$"),
            ("$$x", "$$x"),
            ("plain", "plain"),
            ("", ""),
            ("é$(HOST)é", "édbé"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_env_refs(input, &env), want, "{input}");
        }
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
