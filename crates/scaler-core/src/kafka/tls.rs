//! The TLS client configuration for a Kafka connection, from the shared one in
//! [`crate::tls`].

use std::sync::Arc;

use super::TlsSettings;

/// Build the rustls configuration `settings` describe; errors start with the parameter.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, String> {
    crate::tls::client_config(&crate::tls::ClientSettings {
        ca: settings.ca.as_deref(),
        cert_key: settings.cert.as_deref().zip(settings.key.as_deref()),
        unsafe_ssl: settings.unsafe_ssl,
    })
    .map(Arc::new)
    .map_err(|e| e.to_string())
}
