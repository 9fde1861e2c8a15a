//! Building a ScaledObject's scalers with their authentication resolved from the cluster:
//! TriggerAuthentication / ClusterTriggerAuthentication, their Secrets and ConfigMaps, and
//! the scale target's container environment.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{DynamicObject, GroupVersionKind};
use kube::{Api, Client};

use crate::scaled_object::{ScaleTarget, ScaledObject};
use crate::scalers::{
    build_scaler, explain, reads_env, with_env, Scaler, ScalerError, TriggerContext, TriggerError,
};
use tracing::debug;

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

/// [`Sources`] read from the cluster for one ScaledObject. The scale target's
/// environment is read once per container and kept for the object's life (one build of
/// the ScaledObject's scalers).
pub struct KubeSources {
    client: Client,
    namespace: String,
    target: ScaleTarget,
    envs: std::sync::Mutex<BTreeMap<Option<String>, BTreeMap<String, String>>>,
}

impl KubeSources {
    /// Sources for a ScaledObject in `namespace` scaling `target`.
    pub fn new(client: Client, namespace: &str, target: &ScaleTarget) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            target: target.clone(),
            envs: Default::default(),
        }
    }

    /// KEDA's `resolveEnv`: `envFrom` first (a missing Secret or ConfigMap is an error
    /// unless `optional`), then `env` in order: `value` with `$(VAR)` expanded, or
    /// `valueFrom` a Secret or ConfigMap key (a missing object is an error unless
    /// `optional`; a missing key is ""); `fieldRef` and `resourceFieldRef` are skipped.
    async fn resolve_env(&self, c: &Container) -> Result<BTreeMap<String, String>, AuthError> {
        let ns = &self.namespace;
        let missing = |what: String| AuthError::Reference {
            kind: format!("the scale target's container {:?}", c.name),
            name: self.target.name.clone(),
            what,
        };
        let mut env = BTreeMap::new();
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.as_deref().unwrap_or_default();
            let (data, optional, what) = if let Some(r) = &from.secret_ref {
                let d = self.secret(ns, &r.name).await?;
                (
                    d,
                    r.optional,
                    format!("envFrom Secret {ns}/{} not found", r.name),
                )
            } else if let Some(r) = &from.config_map_ref {
                let d = self.config_map(ns, &r.name).await?;
                (
                    d,
                    r.optional,
                    format!("envFrom ConfigMap {ns}/{} not found", r.name),
                )
            } else {
                continue;
            };
            match data {
                Some(d) => env.extend(d.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
                None if optional == Some(true) => {}
                None => return Err(missing(what)),
            }
        }
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) if !v.is_empty() => crate::trigger_auth::expand_env_refs(v, &env),
                (_, Some(from)) => {
                    let (data, key, optional, what) = if let Some(r) = &from.secret_key_ref {
                        let d = self.secret(ns, &r.name).await?;
                        (
                            d,
                            &r.key,
                            r.optional,
                            format!("Secret {ns}/{} (env {}) not found", r.name, e.name),
                        )
                    } else if let Some(r) = &from.config_map_key_ref {
                        let d = self.config_map(ns, &r.name).await?;
                        (
                            d,
                            &r.key,
                            r.optional,
                            format!("ConfigMap {ns}/{} (env {}) not found", r.name, e.name),
                        )
                    } else {
                        continue;
                    };
                    match data {
                        Some(d) => d.get(key).cloned().unwrap_or_default(),
                        None if optional == Some(true) => continue,
                        None => return Err(missing(what)),
                    }
                }
                _ => String::new(),
            };
            env.insert(e.name.clone(), value);
        }
        Ok(env)
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
        // An empty name is no name: the first container.
        let container = container.filter(|c| !c.is_empty());
        let key = container.map(str::to_string);
        if let Some(env) = self
            .envs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(env.clone());
        }
        let (api, what) = target_api(&self.client, &self.namespace, &self.target).await?;
        let obj = timed(what.clone(), api.get(&self.target.name)).await?;
        let containers: Vec<Container> =
            serde_json::from_value(obj.data["spec"]["template"]["spec"]["containers"].clone())
                .unwrap_or_default();
        let found = match container {
            Some(n) => containers.iter().find(|c| c.name == n),
            None => containers.first(),
        };
        let Some(c) = found else {
            return Err(AuthError::Reference {
                kind: what,
                name: self.target.name.clone(),
                what: match container {
                    Some(n) => format!("couldn't find container with name {n} on Target object"),
                    None => "target object doesn't have containers".into(),
                },
            });
        };
        let env = self.resolve_env(c).await?;
        self.envs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, env.clone());
        Ok(env)
    }
}

/// Build every trigger's scaler with its authentication resolved from the cluster; a
/// trigger whose authentication fails gets that error, naming `authenticationRef`.
pub async fn build_scalers_resolved(
    client: &Client,
    so: &ScaledObject,
    operator_namespace: &str,
) -> Vec<Result<Box<dyn Scaler>, TriggerError>> {
    let namespace = so.metadata.namespace.as_deref().unwrap_or("");
    let name = so.metadata.name.as_deref().unwrap_or("");
    // One set of sources for every trigger: the target's environment is read once.
    let sources = KubeSources::new(client.clone(), namespace, &so.spec.scale_target_ref);
    let env_container = so
        .spec
        .scale_target_ref
        .env_source_container_name
        .as_deref();
    let mut out = Vec::with_capacity(so.spec.triggers.len());
    for (index, trigger) in so.spec.triggers.iter().enumerate() {
        let error = |source| TriggerError {
            index,
            trigger_type: trigger.type_.clone(),
            source,
        };
        let (trigger, env_unresolved) = if reads_env(trigger) {
            match sources.container_env(env_container).await {
                Ok(env) => with_env(trigger, &env),
                Err(e) => {
                    out.push(Err(error(ScalerError::Query(format!(
                        "reading the scale target's environment: {e}"
                    )))));
                    continue;
                }
            }
        } else {
            (trigger.clone(), BTreeMap::new())
        };
        let trigger = &trigger;
        let built = match trigger_params(so, index, operator_namespace, &sources).await {
            Ok(auth) => {
                // Attached to the scaler's error when the scaler needs the parameter; else
                // only worth a debug line (this runs on every live read).
                for (param, why) in &auth.unresolved {
                    debug!(scaledobject = %format!("{namespace}/{name}"), trigger = index, param = %param, "authentication parameter left empty: {why}");
                }
                build_scaler(TriggerContext {
                    index,
                    trigger,
                    auth: &auth.params,
                    namespace,
                    name,
                    client: Some(client),
                    as_metric_source: so.spec.uses_modifiers(),
                })
                .map_err(|e| error(auth.explain(explain(e, &env_unresolved))))
            }
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

/// What a fallback reads of the scale target's `/scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetScale {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.selector`: the label selector of the target's pods.
    pub selector: Option<String>,
}

/// The scale target's `/scale`.
pub async fn target_scale(client: &Client, so: &ScaledObject) -> Result<TargetScale, AuthError> {
    let target = &so.spec.scale_target_ref;
    let namespace = so.metadata.namespace.clone().unwrap_or_default();
    let (api, what) = target_api(client, &namespace, target).await?;
    let scale = timed(what, api.get_subresource("scale", &target.name)).await?;
    Ok(TargetScale {
        replicas: scale.data["spec"]["replicas"]
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0),
        selector: scale.data["status"]["selector"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    })
}

/// Whether a pod counts as ready, as KEDA's fallback and the HPA count: phase Running and
/// condition Ready True.
pub fn pod_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .is_some_and(|c| c.status == "True")
}

/// The ready pods among those `selector` matches in `namespace`.
pub async fn ready_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<i32, AuthError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = kube::api::ListParams::default().labels(selector);
    let pods = timed(format!("pods {namespace}/{selector}"), api.list(&lp)).await?;
    Ok(i32::try_from(pods.items.iter().filter(|p| pod_ready(p)).count()).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_means_running_with_the_ready_condition_true() {
        let pod = |phase: &str, ready: Option<&str>| -> Pod {
            let conditions: Vec<serde_json::Value> = ready
                .map(|r| vec![serde_json::json!({"type": "Ready", "status": r})])
                .unwrap_or_default();
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "status": {"phase": phase, "conditions": conditions},
            }))
            .expect("pod")
        };
        assert!(pod_ready(&pod("Running", Some("True"))));
        assert!(!pod_ready(&pod("Running", Some("False"))));
        assert!(!pod_ready(&pod("Running", None)));
        assert!(!pod_ready(&pod("Pending", Some("True"))));
        assert!(!pod_ready(&Pod::default()));
    }
}
