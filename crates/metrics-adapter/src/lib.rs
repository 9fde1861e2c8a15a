//! metrics-adapter: the `external.metrics.k8s.io/v1beta1` API server and the `eventscale`
//! binary's subcommands.
//!
//! The HTTP layer (routes, Status errors, TLS) knows nothing of scalers: it asks a
//! [`provider::MetricsProvider`] for "metric M in namespace N for selector S".

pub mod api;
pub mod auth;
pub mod cert_reload;
pub mod certs;
pub mod connections;
pub mod eval;
pub mod forward;
pub mod memory;
pub mod poller;
pub mod provider;
pub mod request;
pub mod routes;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod trace;

/// Certificates and keys made with openssl, shared with the other crates' tests.
#[cfg(test)]
#[path = "../../../e2e/support/pki.rs"]
mod test_pki;
