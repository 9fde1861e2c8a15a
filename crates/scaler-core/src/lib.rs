//! scaler-core: eventscale's model and brains.
//!
//! KEDA's `keda.sh/v1alpha1` types, trigger parsing into typed scalers, KEDA's metric naming
//! and quantity formatting, label selectors, and the desired HPA as a pure function of a
//! ScaledObject. Nothing here speaks HTTP or writes to a cluster.

pub mod activation;
pub mod coalesce;
pub mod conditions;
pub mod crd_schema;
/// KEDA's external scaler protocol (`proto/externalscaler.proto`), generated at build time.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod externalscaler {
    tonic::include_proto!("externalscaler");
}
pub mod fallback;
pub mod gcp;
pub mod go_dsn;
pub mod go_duration;
pub mod gvk;
pub mod hpa;
pub mod hpa_math;
pub mod http_clients;
pub mod http_scaled_object;
pub mod idle_map;
pub mod job_scaling;
pub mod kafka;
pub mod label_selector;
pub mod linux_cron;
pub mod metric_name;
pub mod metrics;
pub mod modifiers;
pub mod poll;
pub mod pools;
pub mod quantity;
pub mod resolve;
pub mod runtime;
pub mod scaled_job;
pub mod scaled_object;
pub mod scalers;
pub mod shard;
pub mod tls;
pub mod trace;
pub mod trigger_auth;
pub mod trigger_metadata;
pub mod validation;
pub mod watch;

/// Certificates and keys made with openssl, shared with the other crates' tests.
#[cfg(test)]
#[path = "../../../e2e/support/pki.rs"]
mod test_pki;

pub use metrics::{evaluate_metric, MetricError, MetricSample};
pub use scaled_object::{ScaledObject, ScaledObjectSpec, ScaledObjectStatus};
pub use scalers::{MetricSpec, MetricTargetType, Scaler, ScalerError, TriggerError};

/// The label the HPA's metric selector carries and the adapter reads back.
pub const SCALED_OBJECT_NAME_LABEL: &str = "scaledobject.keda.sh/name";
