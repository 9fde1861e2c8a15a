//! What one controller run knows without asking the API server: the reflector stores of
//! ScaledObjects and HPAs its watches fill, read as the facts the plan needs (who else
//! claims a target, which HPAs exist and whose they are), and what this run last applied
//! for each ScaledObject. A reconcile at steady state reads only these.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use scaler_core::gvk::Gvk;
use scaler_core::hpa::hpa_name;
use scaler_core::validation::{claimed_first, ExistingHpa, OtherScaledObject};
use scaler_core::ScaledObject;

use crate::plan::{Applied, HpaFacts};
use crate::Error;

/// How long a reconcile waits for a store's first list before it fails (and is retried).
const READY_WAIT: Duration = Duration::from_secs(30);

/// A hash of what an HPA's writers (eventscale's apply, or another hand) set: spec,
/// labels, annotations and owners. The HPA controller's status writes leave it alone, so
/// an HPA whose fingerprint is what the last apply returned still holds that apply.
pub(crate) fn fingerprint(hpa: &DynamicObject) -> u64 {
    let m = &hpa.metadata;
    let written = serde_json::json!([
        hpa.data.get("spec"),
        m.labels,
        m.annotations,
        m.owner_references
    ]);
    hash(written.to_string().as_bytes())
}

/// A stable hash of `bytes` within this process (the memory of applies never leaves it).
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Drop what the store need not hold: the managed fields and the status (which the HPA
/// controller rewrites at every sync and nothing here reads).
pub(crate) fn slim_hpa(hpa: &mut DynamicObject) {
    hpa.metadata.managed_fields = None;
    if let Some(o) = hpa.data.as_object_mut() {
        o.remove("status");
    }
}

/// The HPA as the plan sees it.
pub(crate) fn facts(hpa: &DynamicObject) -> HpaFacts {
    let t = &hpa.data["spec"]["scaleTargetRef"];
    let owners = hpa.owner_references();
    HpaFacts {
        hpa: ExistingHpa {
            name: hpa.name_any(),
            target_gvk: Gvk::from_api_version(
                t["apiVersion"].as_str().unwrap_or(""),
                t["kind"].as_str().unwrap_or(""),
            ),
            target_name: t["name"].as_str().unwrap_or("").to_string(),
            owner_scaled_object: owners
                .iter()
                .find(|o| o.kind == "ScaledObject")
                .map(|o| o.name.clone()),
        },
        uid: hpa.metadata.uid.clone().unwrap_or_default(),
        owner_uids: owners.iter().map(|o| o.uid.clone()).collect(),
        fingerprint: fingerprint(hpa),
    }
}

/// One controller run's stores and memory.
pub(crate) struct Stores {
    /// Every ScaledObject (slimmed).
    pub scaled_objects: Store<ScaledObject>,
    /// Every HPA of the version eventscale writes (slimmed).
    pub hpas: Store<DynamicObject>,
    /// What was last applied, by ScaledObject uid.
    applied: Mutex<HashMap<String, Applied>>,
}

impl Stores {
    /// Stores a controller run fills.
    pub fn new(scaled_objects: Store<ScaledObject>, hpas: Store<DynamicObject>) -> Self {
        Self {
            scaled_objects,
            hpas,
            applied: Mutex::default(),
        }
    }

    /// Wait until both stores hold their first list: before that, a missing HPA may only
    /// be missing from the store, and a foreign one must never be overlooked.
    pub async fn ready(&self) -> Result<(), Error> {
        let both = async {
            self.scaled_objects.wait_until_ready().await?;
            self.hpas.wait_until_ready().await
        };
        match tokio::time::timeout(READY_WAIT, both).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Error::StoresNotReady),
        }
    }

    /// The ScaledObjects of `so`'s namespace that claimed its target or HPA name first.
    pub fn others(&self, so: &ScaledObject) -> Vec<OtherScaledObject> {
        let ns = so.metadata.namespace.as_deref();
        let target = &so.spec.scale_target_ref.name;
        let hpa = hpa_name(so);
        self.scaled_objects
            .state()
            .iter()
            .filter(|o| {
                o.metadata.namespace.as_deref() == ns
                    && o.metadata.deletion_timestamp.is_none()
                    && claimed_first(o, so)
            })
            .map(|o| OtherScaledObject {
                name: o.name_any(),
                target_gvk: Gvk::of_scale_target(&o.spec.scale_target_ref),
                target_name: o.spec.scale_target_ref.name.clone(),
                hpa_name: hpa_name(o),
            })
            // Only these can conflict: the rest need not be carried to the plan.
            .filter(|o| &o.target_name == target || o.hpa_name == hpa)
            .collect()
    }

    /// The HPAs of `so`'s namespace that matter to it: those on its target's name, those
    /// it owns and the one of its HPA's name.
    pub fn hpas(&self, so: &ScaledObject) -> Vec<HpaFacts> {
        let ns = so.metadata.namespace.as_deref();
        let uid = so.metadata.uid.as_deref();
        let target = so.spec.scale_target_ref.name.as_str();
        let name = hpa_name(so);
        self.hpas
            .state()
            .iter()
            .filter(|h| {
                h.metadata.namespace.as_deref() == ns
                    && (h.data["spec"]["scaleTargetRef"]["name"].as_str() == Some(target)
                        || h.metadata.name.as_deref() == Some(name.as_str())
                        || h.owner_references()
                            .iter()
                            .any(|o| Some(o.uid.as_str()) == uid))
            })
            .map(|h| facts(h))
            .collect()
    }

    /// What this run last applied for the ScaledObject `uid`.
    pub fn applied(&self, uid: &str) -> Option<Applied> {
        self.lock().get(uid).copied()
    }

    /// Remember an apply (or, with `None`, forget it: the HPA is gone or going).
    pub fn remember(&self, uid: &str, applied: Option<Applied>) {
        match applied {
            Some(a) => self.lock().insert(uid.to_string(), a),
            None => self.lock().remove(uid),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Applied>> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}
