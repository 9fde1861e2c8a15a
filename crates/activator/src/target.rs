//! The scale target: `scaleTargetRef` resolved to a resource by discovery (Deployments,
//! StatefulSets, any custom resource with a `/scale` subresource), and its replicas read
//! and set through `/scale`.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::autoscaling::v1::Scale;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use scaler_core::gvk::Gvk;
use scaler_core::hpa::MANAGER;
use scaler_core::scaled_object::GroupVersionKindResource;
use scaler_core::ScaledObject;

/// A target that cannot be scaled, in words naming the field.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Discovery does not know the kind.
    #[error("spec.scaleTargetRef: {api_version}/{kind} is not served by the cluster: {message}")]
    Unknown {
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
        /// Why.
        message: String,
    },
    /// The kind has no `/scale` subresource.
    #[error("spec.scaleTargetRef: {0} has no /scale subresource, so it cannot be scaled")]
    NoScale(String),
    /// Reading or writing `/scale` failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
}

/// Scale-target kinds already resolved by discovery, kept by the activator's context
/// (discovery's answers change only with CRDs, so each kind is asked about once).
#[derive(Default)]
pub struct TargetKinds(Mutex<HashMap<GroupVersionKind, ApiResource>>);

impl TargetKinds {
    fn get(&self, gvk: &GroupVersionKind) -> Option<ApiResource> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(gvk)
            .cloned()
    }

    pub(crate) fn insert(&self, gvk: GroupVersionKind, resource: ApiResource) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(gvk, resource);
    }
}

/// The resolved target of one ScaledObject.
#[derive(Clone)]
pub struct Target {
    api: Api<DynamicObject>,
    /// The target's name.
    pub name: String,
    /// Its group, version, kind and resource.
    pub gvkr: GroupVersionKindResource,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind_string(), self.name)
    }
}

impl Target {
    /// Resolve `so`'s `scaleTargetRef` (apiVersion `apps/v1` and kind `Deployment` by
    /// default) through discovery, unless `kinds` already knows the kind.
    pub async fn resolve(
        client: &Client,
        kinds: &TargetKinds,
        so: &ScaledObject,
    ) -> Result<Self, TargetError> {
        let r = &so.spec.scale_target_ref;
        let (api_version, kind) = (r.api_version_or_default(), r.kind_or_default());
        let wanted = Gvk::of_scale_target(r);
        let gvk = GroupVersionKind::gvk(&wanted.group, &wanted.version, &wanted.kind);
        let resource = match kinds.get(&gvk) {
            Some(ar) => ar,
            None => {
                let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
                    .await
                    .map_err(|e| TargetError::Unknown {
                        api_version: api_version.to_string(),
                        kind: kind.to_string(),
                        message: e.to_string(),
                    })?;
                if !caps.subresources.iter().any(|(s, _)| s.plural == "scale") {
                    return Err(TargetError::NoScale(format!("{api_version}.{kind}")));
                }
                kinds.insert(gvk, ar.clone());
                ar
            }
        };
        let ns = so.namespace().unwrap_or_default();
        Ok(Self {
            api: Api::namespaced_with(client.clone(), &ns, &resource),
            name: r.name.clone(),
            gvkr: GroupVersionKindResource {
                group: resource.group.clone(),
                version: resource.version.clone(),
                kind: resource.kind.clone(),
                resource: resource.plural.clone(),
            },
        })
    }

    /// The kind discovery resolved.
    pub fn gvk(&self) -> Gvk {
        Gvk::from(&self.gvkr)
    }

    /// `apps/v1.Deployment`, as `status.scaleTargetKind` says it.
    pub fn kind_string(&self) -> String {
        self.gvk().scale_target_kind()
    }

    /// The replicas `/scale` reports as desired (`spec.replicas`).
    pub async fn replicas(&self) -> Result<i32, TargetError> {
        Ok(desired(&self.read().await?))
    }

    /// The target's `/scale` as the API server holds it now.
    pub async fn read(&self) -> Result<Scale, TargetError> {
        Ok(self.api.get_scale(&self.name).await?)
    }

    /// Set `spec.replicas` to `to` only if the target has not changed since `scale` was
    /// read ([`Target::read`]): the merge patch carries `scale`'s resourceVersion, which
    /// the API server takes as a precondition, so a writer in between (the HPA, a user)
    /// makes it a conflict, answered `Ok(false)`, and its replicas are never overwritten by
    /// a decision made on what it replaced.
    pub async fn scale_from(&self, scale: &Scale, to: i32) -> Result<bool, TargetError> {
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": scale.metadata.resource_version },
            "spec": { "replicas": to },
        });
        match self.patch(&patch).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Set `spec.replicas` through `/scale`.
    pub async fn scale(&self, replicas: i32) -> Result<(), TargetError> {
        self.patch(&serde_json::json!({ "spec": { "replicas": replicas } }))
            .await?;
        Ok(())
    }

    /// Merge `patch` into `/scale` as eventscale's field manager.
    async fn patch(&self, patch: &serde_json::Value) -> Result<Scale, kube::Error> {
        self.api
            .patch_scale(
                &self.name,
                &PatchParams::apply(MANAGER),
                &Patch::Merge(patch),
            )
            .await
    }
}

/// The replicas a `/scale` asks for (`spec.replicas`; absent is 0).
pub fn desired(scale: &Scale) -> i32 {
    scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}
