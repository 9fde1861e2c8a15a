//! The TLS client configuration for a Kafka connection: the system's roots plus the given
//! CA, an optional client certificate, or no verification at all with `unsafeSsl`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::TlsSettings;

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    if pem.contains("ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(
            "key: encrypted private keys (keyPassword) are not supported yet; \
                    give the key unencrypted"
                .into(),
        );
    }
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| format!("key: not a PEM private key: {e}"))?
        .ok_or_else(|| "key: no PEM private key found".to_string())
}

/// Build the rustls configuration `settings` describe; errors name the parameter.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if settings.unsafe_ssl {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        // The system's roots, and `ca` added to them (as KEDA appends it to the system
        // pool): a broker with a public certificate still verifies when a CA is given.
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            // A system root rustls cannot use is skipped, as browsers do.
            let _ = roots.add(c);
        }
        if let Some(ca) = &settings.ca {
            for c in certs(ca, "ca")? {
                roots
                    .add(c)
                    .map_err(|e| format!("ca: unusable certificate: {e}"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&settings.cert, &settings.key) {
        (Some(cert), Some(k)) => builder
            .with_client_auth_cert(certs(cert, "cert")?, key(k)?)
            .map_err(|e| format!("cert/key: {e}")),
        _ => Ok(builder.with_no_client_auth()),
    }
    .map(Arc::new)
}

/// `unsafeSsl: true`: accept any server certificate (signatures are still checked, so the
/// handshake is well formed, but anyone can impersonate the broker).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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
