//! End-to-end tests that stop or replace parts of the local cluster: eventscale replicas
//! sharing the work, kube-apiserver itself, the node. They run in a test binary of their
//! own (cargo runs test binaries one after another, so the other end-to-end tests never
//! see the disruption) and one at a time.

#[path = "../support/sources.rs"]
mod sources;

#[path = "../support/kafka.rs"]
mod kafka_support;

#[path = "../support/cluster.rs"]
mod cluster_support;

#[path = "../support/workloads.rs"]
mod workloads;

#[path = "../support/helm.rs"]
mod helm_support;

mod faults;
mod hostile;
mod node;
mod rbac;
mod replicas;
mod restart;

pub use cluster_support::*;

/// One disruption at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The HPA API of v1.20 (autoscaling/v2beta2).
pub fn hpa_api(client: kube::Client, ns: &str) -> kube::Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    kube::Api::namespaced_with(
        client,
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers"),
    )
}
