//! End-to-end tests on the real local cluster of `e2e/cluster.sh`: kube-apiserver and
//! kube-controller-manager v1.20.2 (with its HPA controller), the aggregator calling
//! eventscale over TLS, and `kubectl`. Nothing here is faked.
//!
//! The first test to run brings the cluster up with `e2e/cluster.sh up` (idempotent; on a
//! cold cache this builds Kubernetes, about 10 minutes) using the eventscale binary cargo
//! built for this test run.

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

#[path = "../support/fault_proxy.rs"]
mod fault_proxy;

#[path = "../../crates/scaler-core/tests/support/external_scaler.rs"]
mod external_scaler;

pub use cluster_support::*;

/// The node's CPU, for the tests that measure under load (the k6 walkthrough takes it
/// alone, `write`) and the tests that start bursts of pods (the ScaledJob tests share it,
/// `read`): a burst of pod starts on the 2-core machine stalls the walkthrough's app for a
/// second and its queue with it.
pub static NODE_LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

mod activation;
mod auth;
mod bad_objects;
mod cache;
mod certs;
mod cooldown;
mod cron;
mod external;
mod fallback;
mod helm;
mod http;
mod kafka;
mod lifecycle;
mod metrics_only;
mod node;
mod prometheus;
mod rotation;
mod scaled_job;
mod seed_behaviour;
mod seeds;
mod source_faults;
mod workload;
