//! HTTP clients shared by the scalers that speak HTTP (prometheus, rabbitmq's management
//! API): one connection pool per TLS configuration, dropped (with its credentials) once
//! unused for 15 minutes.

use crate::idle_map::{self, IdleMap};
use crate::scalers::ScalerError;
use crate::tls;

/// One client per TLS configuration.
pub struct HttpClients {
    clients: IdleMap<tls::Settings, reqwest::Client>,
}

impl Default for HttpClients {
    fn default() -> Self {
        Self {
            clients: IdleMap::new(idle_map::IDLE),
        }
    }
}

impl std::fmt::Debug for HttpClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClients").finish_non_exhaustive()
    }
}

impl HttpClients {
    /// The client for `settings`, made on first use. Unusable settings are an error
    /// naming their parameter (`ca`, `cert`, `key`).
    pub fn client(&self, settings: &tls::Settings) -> Result<reqwest::Client, ScalerError> {
        drop(self.clients.sweep());
        if let Some(c) = self.clients.get(settings) {
            return Ok(c);
        }
        // The shared TLS configuration: X.509 v1 certificates where Go takes them, too.
        let tls = settings
            .client_config()
            .map_err(|e| ScalerError::InvalidParameter {
                param: e.param.to_string(),
                message: format!("error parsing {e}"),
            })?;
        let c = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| ScalerError::Query(format!("building the HTTP client: {e}")))?;
        self.clients.insert(settings.clone(), c.clone());
        Ok(c)
    }
}
