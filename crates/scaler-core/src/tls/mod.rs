//! TLS pieces shared by the scalers and the metrics adapter: the scalers' client
//! configuration ([`client_config`]), X.509 version 1 certificates where Go accepts them
//! ([`v1`]), and encrypted client keys ([`private_key`]).

pub mod private_key;
pub mod v1;

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A scaler's TLS settings as its trigger gives them (`ca`, `cert`, `key`, `unsafeSsl`).
#[derive(Clone, Copy, Default)]
pub struct ClientSettings<'a> {
    /// PEM CA certificates to trust besides the system's.
    pub ca: Option<&'a str>,
    /// PEM client certificate (chain) and its unencrypted key.
    pub cert_key: Option<(&'a str, &'a str)>,
    /// Accept any server certificate.
    pub unsafe_ssl: bool,
}

/// [`ClientSettings`] owned: what makes two scalers able to share a client (the key of
/// shared HTTP clients and connections).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Settings {
    /// PEM CA certificates to trust besides the system's.
    pub ca: Option<String>,
    /// PEM client certificate (chain) and its unencrypted key.
    pub cert_key: Option<(String, String)>,
    /// Accept any server certificate.
    pub unsafe_ssl: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client key is a secret: only whether there is one is printed.
        f.debug_struct("Settings")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.cert_key.is_some())
            .field("unsafe_ssl", &self.unsafe_ssl)
            .finish()
    }
}

impl Settings {
    /// The rustls client configuration these settings describe ([`client_config`]).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        client_config(&ClientSettings {
            ca: self.ca.as_deref(),
            cert_key: self
                .cert_key
                .as_ref()
                .map(|(c, k)| (c.as_str(), k.as_str())),
            unsafe_ssl: self.unsafe_ssl,
        })
    }
}

/// A TLS setting that cannot be used, with the trigger parameter it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct TlsError {
    /// `ca`, `cert` or `key`; `tls` for the rest.
    pub param: &'static str,
    /// What is wrong.
    pub message: String,
}

fn tls_error(param: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        param,
        message: message.into(),
    }
}

fn certs(pem: &str, param: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(param, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(param, "no PEM certificate found"));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    if private_key::is_encrypted(pem) {
        return Err(tls_error(
            "key",
            "the key is encrypted: give its password as keyPassword where the trigger takes one \
             (kafka), or give the key unencrypted",
        ));
    }
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| tls_error("key", format!("not a PEM private key: {e}")))?
        .ok_or_else(|| tls_error("key", "no PEM private key found"))
}

/// The rustls client configuration `settings` describe: the system's roots plus `ca` (as
/// KEDA appends it to the system pool), a client certificate when given (version 1 ones
/// too), or no verification at all with `unsafe_ssl`.
pub fn client_config(settings: &ClientSettings<'_>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("tls", e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if settings.unsafe_ssl {
        Arc::new(NoVerification(provider.clone()))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            // A system root rustls cannot use is skipped, as browsers do.
            let _ = roots.add(c);
        }
        if let Some(ca) = settings.ca {
            for c in certs(ca, "ca")? {
                roots
                    .add(c)
                    .map_err(|e| tls_error("ca", format!("unusable certificate: {e}")))?;
            }
        }
        Arc::new(
            v1::ServerVerifier::new(Arc::new(roots), provider.clone())
                .map_err(|e| tls_error("ca", e.to_string()))?,
        )
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match settings.cert_key {
        Some((cert, k)) => {
            let certified = v1::certified_key(certs(cert, "cert")?, key(k)?, &provider)
                .map_err(|e| tls_error("key", e.to_string()))?;
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                certified,
            )))
        }
        None => builder.with_no_client_auth(),
    })
}

/// `unsafeSsl: true`: accept any server certificate (signatures are still checked, so the
/// handshake is well formed, but anyone can impersonate the server).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        v1::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        v1::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
