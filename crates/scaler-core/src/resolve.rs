//! Building a ScaledObject's scalers with their authentication resolved from the cluster:
//! TriggerAuthentication / ClusterTriggerAuthentication, their Secrets and ConfigMaps, and
//! the scale target's container environment.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use kube::api::{DynamicObject, GroupVersionKind};
use kube::{Api, Client};

use crate::scaled_object::{ScaleTarget, ScaledObject};
use crate::scalers::{
    build_scaler, reads_env, with_env, AuthParams, Scaler, ScalerError, TriggerContext,
    TriggerError,
};
use crate::trigger_auth::{
    secret_data, trigger_params, AuthError, ClusterTriggerAuthentication, Sources,
    TriggerAuthentication, TriggerAuthenticationSpec,
};

/// Every read from the apiserver made while resolving.
const TIMEOUT: Duration = Duration::from_secs(5);

async fn timed<T>(
    what: String,
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, AuthError> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(AuthError::Api {
            what,
            message: e.to_string(),
        }),
        Err(_) => Err(AuthError::Api {
            what,
            message: format!("no answer within {TIMEOUT:?}"),
        }),
    }
}

/// [`Sources`] read from the cluster for one ScaledObject.
pub struct KubeSources {
    client: Client,
    namespace: String,
    target: ScaleTarget,
}

impl KubeSources {
    /// Sources for a ScaledObject in `namespace` scaling `target`.
    pub fn new(client: Client, namespace: &str, target: &ScaleTarget) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            target: target.clone(),
        }
    }
}

#[async_trait]
impl Sources for KubeSources {
    async fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
        let api: Api<TriggerAuthentication> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("TriggerAuthentication {namespace}/{name}");
        Ok(timed(what, api.get_opt(name)).await?.map(|t| t.spec))
    }

    async fn cluster_trigger_authentication(
        &self,
        name: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
        let api: Api<ClusterTriggerAuthentication> = Api::all(self.client.clone());
        let what = format!("ClusterTriggerAuthentication {name}");
        Ok(timed(what, api.get_opt(name)).await?.map(|t| t.spec.inner))
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        Ok(
            timed(format!("Secret {namespace}/{name}"), api.get_opt(name))
                .await?
                .map(secret_data),
        )
    }

    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        Ok(
            timed(format!("ConfigMap {namespace}/{name}"), api.get_opt(name))
                .await?
                .map(|c| c.data.unwrap_or_default()),
        )
    }

    async fn container_env(
        &self,
        container: Option<&str>,
    ) -> Result<BTreeMap<String, String>, AuthError> {
        let (api, what) = target_api(&self.client, &self.namespace, &self.target).await?;
        let obj = timed(what.clone(), api.get(&self.target.name)).await?;
        let containers: Vec<Container> =
            serde_json::from_value(obj.data["spec"]["template"]["spec"]["containers"].clone())
                .unwrap_or_default();
        let wanted = container.or(self.target.env_source_container_name.as_deref());
        let Some(c) = (match wanted {
            Some(n) => containers.iter().find(|c| c.name == n),
            None => containers.first(),
        }) else {
            return Err(AuthError::Api {
                what,
                message: format!(
                    "no container {}",
                    wanted
                        .map(|n| format!("{n:?}"))
                        .unwrap_or_else(|| "at all".into())
                ),
            });
        };
        let mut env = BTreeMap::new();
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let data = if let Some(s) = &from.secret_ref {
                self.secret(&self.namespace, &s.name).await?
            } else if let Some(m) = &from.config_map_ref {
                self.config_map(&self.namespace, &m.name).await?
            } else {
                None
            };
            for (k, v) in data.unwrap_or_default() {
                env.insert(format!("{prefix}{k}"), v);
            }
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                Some(v.clone())
            } else if let Some(from) = &e.value_from {
                if let Some(s) = &from.secret_key_ref {
                    self.secret(&self.namespace, &s.name)
                        .await?
                        .and_then(|d| d.get(&s.key).cloned())
                } else if let Some(m) = &from.config_map_key_ref {
                    self.config_map(&self.namespace, &m.name)
                        .await?
                        .and_then(|d| d.get(&m.key).cloned())
                } else {
                    None
                }
            } else {
                None
            };
            if let Some(v) = value {
                env.insert(e.name.clone(), v);
            }
        }
        Ok(env)
    }
}

/// The authentication parameters of trigger `index` of `so`, read from the cluster.
pub async fn trigger_auth_params(
    client: &Client,
    so: &ScaledObject,
    index: usize,
    operator_namespace: &str,
) -> Result<AuthParams, AuthError> {
    let namespace = so.metadata.namespace.clone().unwrap_or_default();
    let sources = KubeSources::new(client.clone(), &namespace, &so.spec.scale_target_ref);
    trigger_params(so, index, operator_namespace, &sources).await
}

/// Build every trigger's scaler with its authentication resolved from the cluster; a
/// trigger whose authentication fails gets that error, naming `authenticationRef`.
pub async fn build_scalers_resolved(
    client: &Client,
    so: &ScaledObject,
    operator_namespace: &str,
) -> Vec<Result<Box<dyn Scaler>, TriggerError>> {
    let mut out = Vec::with_capacity(so.spec.triggers.len());
    for (index, trigger) in so.spec.triggers.iter().enumerate() {
        let error = |source| TriggerError {
            index,
            trigger_type: trigger.type_.clone(),
            source,
        };
        let namespace = so.metadata.namespace.as_deref().unwrap_or("");
        let resolved = if reads_env(trigger) {
            let sources = KubeSources::new(client.clone(), namespace, &so.spec.scale_target_ref);
            match sources.container_env(None).await {
                Ok(env) => with_env(trigger, &env),
                Err(e) => Err(ScalerError::Query(format!(
                    "reading the scale target's environment: {e}"
                ))),
            }
        } else {
            Ok(trigger.clone())
        };
        let trigger = match resolved {
            Ok(t) => t,
            Err(e) => {
                out.push(Err(error(e)));
                continue;
            }
        };
        let trigger = &trigger;
        let built = match trigger_auth_params(client, so, index, operator_namespace).await {
            Ok(auth) => build_scaler(TriggerContext {
                index,
                trigger,
                auth: &auth,
                namespace: so.metadata.namespace.as_deref().unwrap_or(""),
                name: so.metadata.name.as_deref().unwrap_or(""),
                client: Some(client),
            })
            .map_err(error),
            Err(e) => Err(error(ScalerError::Authentication(e.to_string()))),
        };
        out.push(built);
    }
    out
}

/// The API of the scale target's kind (found by discovery, so custom resources work) and
/// a description for errors.
async fn target_api(
    client: &Client,
    namespace: &str,
    target: &ScaleTarget,
) -> Result<(Api<DynamicObject>, String), AuthError> {
    let api_version = target.api_version.as_deref().unwrap_or("apps/v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = target.kind_or_default();
    let what = format!("{kind} {namespace}/{}", target.name);
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, _) = timed(what.clone(), kube::discovery::pinned_kind(client, &gvk)).await?;
    Ok((Api::namespaced_with(client.clone(), namespace, &ar), what))
}

/// The scale target's `/scale`: (spec.replicas, status.replicas).
pub async fn target_scale(client: &Client, so: &ScaledObject) -> Result<(i32, i32), AuthError> {
    let target = &so.spec.scale_target_ref;
    let namespace = so.metadata.namespace.clone().unwrap_or_default();
    let (api, what) = target_api(client, &namespace, target).await?;
    let scale = timed(what, api.get_subresource("scale", &target.name)).await?;
    let n = |v: &serde_json::Value| v.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(0);
    Ok((
        n(&scale.data["spec"]["replicas"]),
        n(&scale.data["status"]["replicas"]),
    ))
}
