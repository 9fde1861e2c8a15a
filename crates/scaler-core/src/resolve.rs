//! Building a ScaledObject's scalers with their authentication resolved from the cluster:
//! TriggerAuthentication / ClusterTriggerAuthentication, their Secrets and ConfigMaps, and
//! the scale target's container environment.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{DynamicObject, GroupVersionKind};
use kube::{Api, Client};

use crate::runtime::{Dep, RecordingSources, SourceFactory, Version};
use crate::scaled_object::{ScaleTarget, ScaledObject};

use crate::trigger_auth::{
    secret_data, AuthError, ClusterTriggerAuthentication, Sources, TriggerAuthentication,
    TriggerAuthenticationSpec,
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

/// [`Sources`] read from the cluster for one build of a ScaledObject's scalers,
/// remembering every object read at the version read. The scale target's environment is
/// read once per container.
pub struct KubeSources {
    client: Client,
    namespace: String,
    target: ScaleTarget,
    envs: std::sync::Mutex<BTreeMap<Option<String>, BTreeMap<String, String>>>,
    deps: std::sync::Mutex<Vec<(Dep, Version)>>,
}

fn version_of(
    meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> Version {
    match meta {
        None => Version::Missing,
        Some(m) => Version::At(m.resource_version.clone().unwrap_or_default()),
    }
}

/// The version of one container's environment sources (`env`, `envFrom`) in a pod
/// template's `containers`: what `FromEnv` parameters depend on. A digest, since the
/// target's own resourceVersion moves with every scale and status update.
pub fn env_version(containers: &serde_json::Value, container: Option<&str>) -> Version {
    use std::hash::{Hash, Hasher};
    let list = containers.as_array().map(Vec::as_slice).unwrap_or_default();
    let found = match container.filter(|c| !c.is_empty()) {
        Some(n) => list.iter().find(|c| c["name"].as_str() == Some(n)),
        None => list.first(),
    };
    let Some(c) = found else {
        return Version::Missing;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c["name"].to_string().hash(&mut h);
    c["env"].to_string().hash(&mut h);
    c["envFrom"].to_string().hash(&mut h);
    Version::At(format!("{:016x}", h.finish()))
}

/// The pod template's `containers` of a scale target's object: `spec.template` for
/// workloads, `spec.jobTargetRef.template` for a ScaledJob (whose triggers read `FromEnv`
/// from the Job it creates, as KEDA's do).
pub fn template_containers<'a>(data: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    let spec = &data["spec"];
    let spec = if kind == "ScaledJob" {
        &spec["jobTargetRef"]
    } else {
        spec
    };
    &spec["template"]["spec"]["containers"]
}

/// Builds read the cluster through [`KubeSources`].
pub struct KubeSourceFactory {
    client: Client,
}

impl KubeSourceFactory {
    /// Sources over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl SourceFactory for KubeSourceFactory {
    fn sources(&self, so: &ScaledObject) -> Box<dyn RecordingSources> {
        Box::new(KubeSources::new(
            self.client.clone(),
            so.metadata.namespace.as_deref().unwrap_or(""),
            &so.spec.scale_target_ref,
        ))
    }
}

impl RecordingSources for KubeSources {
    fn deps(&self) -> Vec<(Dep, Version)> {
        self.deps.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn as_sources(&self) -> &dyn Sources {
        self
    }
}

impl KubeSources {
    /// Sources for a ScaledObject in `namespace` scaling `target`.
    pub fn new(client: Client, namespace: &str, target: &ScaleTarget) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            target: target.clone(),
            envs: Default::default(),
            deps: Default::default(),
        }
    }

    fn read(&self, dep: Dep, version: Version) {
        self.deps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((dep, version));
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
        let t = timed(what, api.get_opt(name)).await?;
        self.read(
            Dep::TriggerAuthentication(namespace.into(), name.into()),
            version_of(t.as_ref().map(|t| &t.metadata)),
        );
        Ok(t.map(|t| t.spec))
    }

    async fn cluster_trigger_authentication(
        &self,
        name: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
        let api: Api<ClusterTriggerAuthentication> = Api::all(self.client.clone());
        let what = format!("ClusterTriggerAuthentication {name}");
        let t = timed(what, api.get_opt(name)).await?;
        self.read(
            Dep::ClusterTriggerAuthentication(name.into()),
            version_of(t.as_ref().map(|t| &t.metadata)),
        );
        Ok(t.map(|t| t.spec.inner))
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let s = timed(format!("Secret {namespace}/{name}"), api.get_opt(name)).await?;
        self.read(
            Dep::Secret(namespace.into(), name.into()),
            version_of(s.as_ref().map(|s| &s.metadata)),
        );
        Ok(s.map(secret_data))
    }

    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let c = timed(format!("ConfigMap {namespace}/{name}"), api.get_opt(name)).await?;
        self.read(
            Dep::ConfigMap(namespace.into(), name.into()),
            version_of(c.as_ref().map(|c| &c.metadata)),
        );
        Ok(c.map(|c| c.data.unwrap_or_default()))
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
        let raw = template_containers(&obj.data, self.target.kind_or_default());
        self.read(
            Dep::TargetEnv {
                gvk: target_gvk(&self.target),
                namespace: self.namespace.clone(),
                name: self.target.name.clone(),
                container: container.map(str::to_string),
            },
            env_version(raw, container),
        );
        let containers: Vec<Container> = serde_json::from_value(raw.clone()).unwrap_or_default();
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

/// The target's kind as `group/version/Kind` (`apps/v1/Deployment`; core kinds `v1/Kind`).
pub fn target_gvk(target: &ScaleTarget) -> String {
    format!(
        "{}/{}",
        target.api_version.as_deref().unwrap_or("apps/v1"),
        target.kind_or_default()
    )
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
    /// `status.replicas`.
    pub status_replicas: i32,
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
        status_replicas: scale.data["status"]["replicas"]
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
