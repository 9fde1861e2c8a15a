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
/// alone, `write`) and the tests that start bursts of pods or load the machine for long
/// (the ScaledJob, source-fault and bad-object tests share it, `read`): on the 2-core
/// machine they stall the walkthrough's app (requests of 45 ms taking 300 ms, its queue
/// at 31 and the HPA asking for a second replica at 100 req/s).
pub static NODE_LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

mod activation;
mod auth;
mod bad_objects;
mod cache;
mod certs;
mod cooldown;
mod cron;
mod explain;
mod external;
mod fallback;
mod helm;
mod http;
mod kafka;
mod lifecycle;
mod metrics_only;
mod node;
mod prometheus;
mod queues;
mod rotation;
mod scaled_job;
mod seed_behaviour;
mod seeds;
mod source_faults;
mod workload;
