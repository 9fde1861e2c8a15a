//! What the scalers of every ScaledObject share: one HTTP client per Prometheus TLS setup,
//! one MySQL pool per DSN, one Kafka client per cluster configuration, one gRPC connection
//! per external scaler, and the maps that let identical queries in flight share one round
//! trip.
//!
//! One [`Pools`] is made by whoever runs the scalers (`eventscale run`, `eval`, a test) and
//! handed to every scaler it builds; nothing of it is process-global, so two of them (two
//! tests) never see each other's connections.

use std::sync::Arc;

use crate::kafka::KafkaClients;
use crate::scalers::external::ExternalClients;
use crate::scalers::mysql::MysqlPools;
use crate::scalers::prometheus::PrometheusClients;

/// The shared clients of one process (or one test).
#[derive(Default)]
pub struct Pools {
    /// HTTP clients by TLS settings, and Prometheus queries in flight.
    pub prometheus: Arc<PrometheusClients>,
    /// Connection pools by DSN, and MySQL queries in flight.
    pub mysql: Arc<MysqlPools>,
    /// Kafka clients by bootstrap servers and security settings.
    pub kafka: Arc<KafkaClients>,
    /// Connections to external scalers by address and TLS settings, and where
    /// `external-push` streams deliver.
    pub external: Arc<ExternalClients>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys hold credentials: never printed.
        f.debug_struct("Pools").finish_non_exhaustive()
    }
}
