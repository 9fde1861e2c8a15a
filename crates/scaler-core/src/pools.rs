//! What the scalers of every ScaledObject share: one HTTP client per TLS setup, one MySQL
//! pool per DSN, one PostgreSQL client per connection string, one Redis
//! connection per server and database, one Kafka client per cluster configuration, one gRPC connection
//! per external scaler, the maps that let identical queries in flight share one round
//! trip, and the scalers themselves where ScaledObjects ask the same question
//! ([`SharedScalers`]).
//!
//! One [`Pools`] is made by whoever runs the scalers (`eventscale run`, `eval`, a test) and
//! handed to every scaler it builds; nothing of it is process-global, so two of them (two
//! tests) never see each other's connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::http_clients::HttpClients;
use crate::kafka::KafkaClients;
use crate::scalers::external::ExternalClients;
use crate::scalers::mysql::MysqlPools;
use crate::scalers::postgresql::PostgresClients;
use crate::scalers::prometheus::PrometheusClients;
use crate::scalers::rabbitmq::RabbitClients;
use crate::scalers::redis::RedisClients;

/// The shared clients of one process (or one test).
#[derive(Default)]
pub struct Pools {
    /// HTTP clients by TLS settings (prometheus, rabbitmq's management API).
    pub http: Arc<HttpClients>,
    /// Prometheus queries in flight.
    pub prometheus: Arc<PrometheusClients>,
    /// Connection pools by DSN, and MySQL queries in flight.
    pub mysql: Arc<MysqlPools>,
    /// PostgreSQL clients by connection string, and queries in flight.
    pub postgresql: Arc<PostgresClients>,
    /// RabbitMQ AMQP connections, and questions in flight.
    pub rabbitmq: Arc<RabbitClients>,
    /// Redis connections by address, database, credentials and TLS, and questions in flight.
    pub redis: Arc<RedisClients>,
    /// Kafka clients by bootstrap servers and security settings.
    pub kafka: Arc<KafkaClients>,
    /// Connections to external scalers by address and TLS settings, and where
    /// `external-push` streams deliver.
    pub external: Arc<ExternalClients>,
    /// Built scalers, shared by the triggers built from the same inputs.
    pub scalers: SharedScalers,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys hold credentials: never printed.
        f.debug_struct("Pools").finish_non_exhaustive()
    }
}

/// A scaler and the inputs it was built from, as a runtime holds them.
pub type Built = (
    Arc<dyn crate::scalers::Scaler>,
    Arc<crate::runtime::Resolved>,
);

/// The shared scalers by the key of their inputs, held weakly.
type Weakly = HashMap<
    String,
    (
        Weak<dyn crate::scalers::Scaler>,
        Weak<crate::runtime::Resolved>,
    ),
>;

/// Scalers built from identical inputs, shared: 50,000 ScaledObjects asking ten Prometheus
/// questions hold ten scalers, not 50,000. Only the types whose scaler depends on nothing
/// but its inputs (not on the ScaledObject's name or namespace, and keeping no state
/// between polls) are shared; see [`SharedScalers::shareable`]. Entries are weak: a scaler
/// lives as long as a runtime holds it.
#[derive(Default)]
pub struct SharedScalers {
    built: Mutex<Weakly>,
    /// The map's size after its last clean-up of dead entries.
    cleaned_at: std::sync::atomic::AtomicUsize,
}

impl SharedScalers {
    /// Whether a `trigger_type` scaler is the same for every trigger built from the same
    /// inputs. kubernetes-workload reads the ScaledObject's namespace, Kafka keeps the
    /// offsets it saw last, external scalers are told the ScaledObject: not shared.
    pub fn shareable(trigger_type: &str) -> bool {
        matches!(
            trigger_type,
            "prometheus" | "cron" | "mysql" | "postgresql" | "rabbitmq" | "redis" | "redis-streams"
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Weakly> {
        self.built.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scaler built from `key`'s inputs, while one is held.
    pub fn get(&self, key: &str) -> Option<Built> {
        let built = self.lock();
        let (scaler, resolved) = built.get(key)?;
        Some((scaler.upgrade()?, resolved.upgrade()?))
    }

    /// Share `built` under `key`. Dead entries are dropped whenever the map has doubled
    /// since the last time.
    pub fn put(&self, key: String, built: &Built) {
        use std::sync::atomic::Ordering;
        let mut map = self.lock();
        map.insert(key, (Arc::downgrade(&built.0), Arc::downgrade(&built.1)));
        if map.len() > 2 * self.cleaned_at.load(Ordering::Relaxed).max(64) {
            map.retain(|_, (s, r)| s.strong_count() > 0 && r.strong_count() > 0);
            self.cleaned_at.store(map.len(), Ordering::Relaxed);
        }
    }
}
