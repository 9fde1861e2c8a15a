//! Watches of what ScaledObjects' runtimes depend on, so a change is seen without asking:
//! Secrets, ConfigMaps, TriggerAuthentications and ClusterTriggerAuthentications by
//! metadata only (a resourceVersion each, never their data), and scale targets by kind
//! (their replicas and their containers' environment sources, nothing else).
//!
//! A watch that cannot run (no `list`/`watch` permission, a kind the server does not
//! serve) leaves its objects' versions unknown: runtimes then change only with their
//! ScaledObject, and the controller reads the target's replicas from `/scale`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tracing::{info, warn};

use crate::resolve::env_version;
use crate::runtime::{Dep, Version, Versions};
use crate::trigger_auth::{ClusterTriggerAuthentication, TriggerAuthentication};

/// A store and whether its first list has arrived.
struct Watched<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    ready: Arc<AtomicBool>,
}

impl<K: Resource + Clone + 'static> Watched<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn get(&self, r: &ObjectRef<K>) -> Option<Option<Arc<K>>> {
        self.ready
            .load(Ordering::Acquire)
            .then(|| self.store.get(r))
    }
}

/// Run `stream` into a store made from `writer`, forever (the watcher retries with
/// backoff); `what` names it in the log.
fn spawn_store<K, S>(what: String, writer: reflector::store::Writer<K>, stream: S) -> Watched<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let store = writer.as_reader();
    let ready = Arc::new(AtomicBool::new(false));
    let (s, flag) = (store.clone(), ready.clone());
    tokio::spawn(async move {
        if s.wait_until_ready().await.is_ok() {
            flag.store(true, Ordering::Release);
        }
    });
    tokio::spawn(async move {
        let mut warned = false;
        let mut events = std::pin::pin!(reflector::reflector(writer, stream).default_backoff());
        while let Some(e) = events.next().await {
            if let Err(e) = e {
                if !warned {
                    warn!(watch = %what, error = %e, "watch failed (retrying): changes to these objects are not seen until it works");
                    warned = true;
                }
            }
        }
    });
    Watched { store, ready }
}

/// A scale target kind's store, `None` while discovery has not answered (or failed).
type TargetKind = Arc<Mutex<Option<(ApiResource, Watched<DynamicObject>)>>>;

/// Keep of a target only what eventscale reads: replicas and containers' env sources.
fn slim_target(o: &mut DynamicObject) {
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
    o.metadata.labels = None;
    let replicas = o.data["spec"]["replicas"].clone();
    let containers: Vec<serde_json::Value> = o.data["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    serde_json::json!({"name": c["name"], "env": c["env"], "envFrom": c["envFrom"]})
                })
                .collect()
        })
        .unwrap_or_default();
    o.data = serde_json::json!({
        "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}
    });
}

/// The watches, started by [`ClusterVersions::start`].
pub struct ClusterVersions {
    client: Client,
    secrets: Watched<PartialObjectMeta<Secret>>,
    config_maps: Watched<PartialObjectMeta<ConfigMap>>,
    trigger_auths: Watched<PartialObjectMeta<TriggerAuthentication>>,
    cluster_trigger_auths: Watched<PartialObjectMeta<ClusterTriggerAuthentication>>,
    targets: Mutex<HashMap<String, TargetKind>>,
}

impl ClusterVersions {
    /// Start the watches of Secrets, ConfigMaps and the authentication objects; target
    /// kinds are watched from their first use. Must be called inside a Tokio runtime.
    pub fn start(client: Client) -> Arc<Self> {
        let cfg = watcher::Config::default;
        Arc::new(Self {
            secrets: spawn_store(
                "Secrets (metadata)".into(),
                reflector::store::Writer::default(),
                watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), cfg()),
            ),
            config_maps: spawn_store(
                "ConfigMaps (metadata)".into(),
                reflector::store::Writer::default(),
                watcher(
                    Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()),
                    cfg(),
                ),
            ),
            trigger_auths: spawn_store(
                "TriggerAuthentications (metadata)".into(),
                reflector::store::Writer::default(),
                watcher(
                    Api::<PartialObjectMeta<TriggerAuthentication>>::all(client.clone()),
                    cfg(),
                ),
            ),
            cluster_trigger_auths: spawn_store(
                "ClusterTriggerAuthentications (metadata)".into(),
                reflector::store::Writer::default(),
                watcher(
                    Api::<PartialObjectMeta<ClusterTriggerAuthentication>>::all(client.clone()),
                    cfg(),
                ),
            ),
            targets: Mutex::new(HashMap::new()),
            client,
        })
    }

    /// The store of target kind `gvk` (`group/version/Kind`), starting its watch on first
    /// use.
    fn target_kind(&self, gvk: &str) -> Option<TargetKind> {
        let mut kinds = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = kinds.get(gvk) {
            return Some(k.clone());
        }
        let slot: TargetKind = Arc::default();
        kinds.insert(gvk.to_string(), slot.clone());
        let (client, gvk_s, fill) = (self.client.clone(), gvk.to_string(), slot.clone());
        let (group_version, kind) = gvk.rsplit_once('/').unwrap_or(("", gvk));
        let (group, version) = group_version.split_once('/').unwrap_or(("", group_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        tokio::runtime::Handle::try_current().ok()?.spawn(async move {
            let ar: ApiResource = match kube::discovery::pinned_kind(&client, &gvk).await {
                Ok((ar, _)) => ar,
                Err(e) => {
                    warn!(kind = %gvk_s, error = %e, "scale target kind not found by discovery; not watched");
                    return;
                }
            };
            info!(kind = %gvk_s, "watching scale targets of this kind");
            let api: Api<DynamicObject> = Api::all_with(client, &ar);
            let stream = watcher(api, watcher::Config::default()).modify(slim_target);
            let writer = reflector::store::Writer::new(ar.clone());
            let w = spawn_store(format!("{gvk_s} (scale targets)"), writer, stream);
            *fill.lock().unwrap_or_else(|p| p.into_inner()) = Some((ar, w));
        });
        Some(slot)
    }

    fn target(&self, gvk: &str, namespace: &str, name: &str) -> Option<Option<Arc<DynamicObject>>> {
        let slot = self.target_kind(gvk)?;
        let guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        let (ar, w) = guard.as_ref()?;
        w.get(&ObjectRef::new_with(name, ar.clone()).within(namespace))
    }
}

fn version<K: Resource>(found: Option<Option<Arc<K>>>) -> Option<Version> {
    Some(match found? {
        None => Version::Missing,
        Some(o) => Version::At(o.meta().resource_version.clone().unwrap_or_default()),
    })
}

impl Versions for ClusterVersions {
    /// The target's `spec.replicas` as the watch last saw it, for the kinds whose
    /// `/scale` is `spec.replicas` (Deployments, StatefulSets, ReplicaSets); `None` when
    /// not known (the caller reads `/scale`).
    fn replicas(&self, gvk: &str, namespace: &str, name: &str) -> Option<i32> {
        let (group_version, kind) = gvk.rsplit_once('/')?;
        if group_version != "apps/v1"
            || !matches!(kind, "Deployment" | "StatefulSet" | "ReplicaSet")
        {
            return None;
        }
        let obj = self.target(gvk, namespace, name)??;
        Some(
            obj.data["spec"]["replicas"]
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                // The API server defaults an absent spec.replicas to 1.
                .unwrap_or(1),
        )
    }

    fn current(&self, dep: &Dep) -> Option<Version> {
        match dep {
            Dep::Secret(ns, name) => version(self.secrets.get(&ObjectRef::new(name).within(ns))),
            Dep::ConfigMap(ns, name) => {
                version(self.config_maps.get(&ObjectRef::new(name).within(ns)))
            }
            Dep::TriggerAuthentication(ns, name) => {
                version(self.trigger_auths.get(&ObjectRef::new(name).within(ns)))
            }
            Dep::ClusterTriggerAuthentication(name) => {
                version(self.cluster_trigger_auths.get(&ObjectRef::new(name)))
            }
            Dep::TargetEnv {
                gvk,
                namespace,
                name,
                container,
            } => Some(match self.target(gvk, namespace, name)? {
                None => Version::Missing,
                Some(o) => env_version(
                    crate::resolve::template_containers(
                        &o.data,
                        gvk.rsplit('/').next().unwrap_or(""),
                    ),
                    container.as_deref(),
                ),
            }),
        }
    }
}
