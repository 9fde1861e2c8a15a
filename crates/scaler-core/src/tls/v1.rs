//! X.509 version 1 certificates: what `openssl x509 -req` makes without an extensions file.
//!
//! webpki (under rustls) takes a v1 certificate only as a trust anchor; Go's crypto/x509, and
//! so KEDA and kube-apiserver, also accept a v1 leaf. (Neither accepts a v1 intermediate: Go
//! requires basicConstraints of one, which a v1 certificate cannot carry.) This module covers
//! what webpki refuses, with webpki's and rustls' own signature code and algorithms (no
//! SHA-1, as Go):
//! - the signature a v1 leaf's key makes over the TLS handshake ([`verify_tls12_signature`],
//!   [`verify_tls13_signature`]);
//! - a v1 client certificate issued directly by a trusted CA ([`verify_client_cert`]): its
//!   signature, validity period, and the inner and outer signature algorithms agreeing. It
//!   has no extensions, so no extended key usage to check. One issued through an
//!   intermediate is refused: that path would need webpki's chain building, which does not
//!   take v1 leaves.
//!
//! A v1 *server* certificate stays refused when verified: it cannot carry a subjectAltName,
//! and Go matches host names only against those ("certificate relies on legacy Common Name
//! field"). [`ServerVerifier`] says so instead of webpki's `UnsupportedCertVersion`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, TrustAnchor, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, InconsistentKeys,
    OtherError, PeerMisbehaved, RootCertStore, SignatureScheme,
};
use x509_parser::asn1_rs::{Any, FromDer as _};
use x509_parser::prelude::{X509Certificate, X509Version};

/// Why a v1 certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V1Error {
    /// Not DER, or not a certificate.
    #[error("unparsable certificate: {0}")]
    Unparsable(String),
    /// Not a v1 certificate (the caller's mistake: webpki handles those).
    #[error("not an X.509 version 1 certificate")]
    NotV1,
    /// Before its notBefore.
    #[error("the X.509 v1 certificate is not valid yet (notBefore {not_before}, now {now}, Unix seconds)")]
    NotYetValid {
        /// notBefore, Unix seconds.
        not_before: i64,
        /// The time of the check.
        now: i64,
    },
    /// After its notAfter.
    #[error(
        "the X.509 v1 certificate has expired (notAfter {not_after}, now {now}, Unix seconds)"
    )]
    Expired {
        /// notAfter, Unix seconds.
        not_after: i64,
        /// The time of the check.
        now: i64,
    },
    /// No trusted CA with the certificate's issuer name and a matching signature.
    #[error(
        "the X.509 v1 certificate is not signed by a trusted CA (a v1 certificate is accepted \
         only when issued directly by one of the trusted CAs, not through an intermediate)"
    )]
    UnknownIssuer,
    /// The issuing CA has name constraints, which a v1 certificate cannot be checked against.
    #[error("the X.509 v1 certificate's issuer has name constraints; a v1 certificate cannot be checked against them")]
    NameConstrainedIssuer,
    /// A v1 server certificate, verified for a host name.
    #[error(
        "the server's certificate is X.509 version 1, which cannot carry a subjectAltName, so it \
         cannot be verified for {0:?} (Go, and so KEDA, refuse it too: \"certificate relies on \
         legacy Common Name field\"); give the server a certificate with a subjectAltName, or \
         set unsafeSsl"
    )]
    ServerName(String),
}

/// The parts of a v1 certificate the checks use, as slices of its DER.
struct V1Cert<'a> {
    /// TBSCertificate, tag and length included: what the issuer signed.
    tbs: &'a [u8],
    /// The outer signatureAlgorithm's contents (webpki's form of an algorithm identifier).
    signature_algorithm: &'a [u8],
    /// The signature's bits.
    signature: &'a [u8],
    /// The issuer name's contents (as webpki keeps a trust anchor's subject).
    issuer: &'a [u8],
    /// subjectPublicKeyInfo, tag and length included.
    spki: &'a [u8],
    not_before: i64,
    not_after: i64,
}

/// One DER element read off the front of some input.
struct Element<'a> {
    /// The whole element: tag, length and contents.
    whole: &'a [u8],
    /// Its contents.
    contents: &'a [u8],
    /// What follows it.
    rest: &'a [u8],
}

fn element(input: &[u8]) -> Result<Element<'_>, V1Error> {
    let (rest, any) = Any::from_der(input).map_err(|e| V1Error::Unparsable(format!("DER: {e}")))?;
    Ok(Element {
        whole: &input[..input.len() - rest.len()],
        contents: any.data,
        rest,
    })
}

/// `der` as a v1 certificate; [`V1Error::NotV1`] for any other version.
fn parse(der: &[u8]) -> Result<V1Cert<'_>, V1Error> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| V1Error::Unparsable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(V1Error::Unparsable("data after the certificate".into()));
    }
    if cert.version() != X509Version::V1 {
        return Err(V1Error::NotV1);
    }
    if !cert.extensions().is_empty() {
        return Err(V1Error::Unparsable(
            "a version 1 certificate with extensions".into(),
        ));
    }
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let outer = element(der)?;
    let tbs = element(outer.contents)?;
    let signature_algorithm = element(tbs.rest)?;
    let bits = element(signature_algorithm.rest)?.contents;
    let signature_algorithm = signature_algorithm.contents;
    // v1 TBSCertificate ::= SEQUENCE { serialNumber, signature, issuer, validity, subject,
    // subjectPublicKeyInfo } (no version field)
    let serial = element(tbs.contents)?;
    let inner_algorithm = element(serial.rest)?;
    let issuer = element(inner_algorithm.rest)?;
    let validity = element(issuer.rest)?;
    let subject = element(validity.rest)?;
    let spki = element(subject.rest)?.whole;
    let (tbs, issuer, inner_algorithm) = (tbs.whole, issuer.contents, inner_algorithm.contents);
    if inner_algorithm != signature_algorithm {
        return Err(V1Error::Unparsable(
            "the signature algorithms inside and outside the signed part differ".into(),
        ));
    }
    // A BIT STRING's first byte counts the unused bits: none in a signature.
    let signature = match bits.split_first() {
        Some((0, signature)) => signature,
        _ => return Err(V1Error::Unparsable("malformed signature".into())),
    };
    Ok(V1Cert {
        tbs,
        signature_algorithm,
        signature,
        issuer,
        spki,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Whether `cert` is an X.509 version 1 certificate (false when unparsable: webpki then says
/// what is wrong with it).
pub fn is_v1(cert: &CertificateDer<'_>) -> bool {
    matches!(X509Certificate::from_der(cert.as_ref()), Ok((_, c)) if c.version() == X509Version::V1)
}

/// The public key of `cert` when it is a well-formed v1 certificate.
fn v1_public_key(cert: &CertificateDer<'_>) -> Option<SubjectPublicKeyInfoDer<'static>> {
    parse(cert.as_ref())
        .ok()
        .map(|c| SubjectPublicKeyInfoDer::from(c.spki.to_vec()))
}

/// rustls' `verify_tls12_signature`, also for a v1 certificate's key: each algorithm of
/// `dss`'s scheme is tried until one fits the key, as rustls does.
pub fn verify_tls12_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    let Some(spki) = v1_public_key(cert) else {
        return rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms);
    };
    let key = webpki::RawPublicKeyEntity::try_from(&spki)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, algs)| *algs)
        .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
    for alg in candidates {
        match key.verify_signature(*alg, message, dss.signature()) {
            Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => continue,
            Err(_) => break,
        }
    }
    Err(Error::InvalidCertificate(CertificateError::BadSignature))
}

/// rustls' `verify_tls13_signature`, also for a v1 certificate's key.
pub fn verify_tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    match v1_public_key(cert) {
        Some(spki) => {
            rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algorithms)
        }
        None => rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms),
    }
}

/// Whether `anchor`'s key made `cert`'s signature, with an algorithm of `algorithms`.
fn signed_by(
    cert: &V1Cert<'_>,
    anchor: &TrustAnchor<'_>,
    algorithms: &WebPkiSupportedAlgorithms,
) -> bool {
    let spki = webpki::spki_for_anchor(anchor);
    let Ok(key) = webpki::RawPublicKeyEntity::try_from(&spki) else {
        return false;
    };
    algorithms
        .all
        .iter()
        .filter(|alg| alg.signature_alg_id().as_ref() == cert.signature_algorithm)
        .any(|alg| key.verify_signature(*alg, cert.tbs, cert.signature).is_ok())
}

/// Verify a v1 client certificate as Go does for one issued directly by a root of `roots`:
/// the issuer's signature (an anchor whose subject is the certificate's issuer) and the
/// validity period at `now`.
pub fn verify_client_cert(
    leaf: &CertificateDer<'_>,
    roots: &RootCertStore,
    now: UnixTime,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<(), V1Error> {
    let cert = parse(leaf.as_ref())?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < cert.not_before {
        return Err(V1Error::NotYetValid {
            not_before: cert.not_before,
            now,
        });
    }
    if now > cert.not_after {
        return Err(V1Error::Expired {
            not_after: cert.not_after,
            now,
        });
    }
    let issuer = roots
        .roots
        .iter()
        .filter(|anchor| anchor.subject.as_ref() == cert.issuer)
        .find(|anchor| signed_by(&cert, anchor, algorithms))
        .ok_or(V1Error::UnknownIssuer)?;
    if issuer.name_constraints.is_some() {
        return Err(V1Error::NameConstrainedIssuer);
    }
    Ok(())
}

/// `chain` (leaf first) and `key` as one certified key, checked to belong together as rustls'
/// `CertifiedKey::from_der` does, and also when the leaf is v1 (which rustls cannot read).
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let signing = provider.key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(chain, signing);
    let leaf = certified.end_entity_cert()?;
    if !is_v1(leaf) {
        return match certified.keys_match() {
            // rustls does not fail a key whose public half it cannot tell.
            Ok(()) | Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
            Err(e) => Err(e),
        };
    }
    let leaf_key =
        v1_public_key(leaf).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    match certified.key.public_key() {
        Some(k) if k != leaf_key => Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch)),
        _ => Ok(certified),
    }
}

/// A client-certificate verifier that accepts any certificate whose key signed the
/// handshake (v1 ones too), requested but not required, leaving who issued it to the
/// caller (the metrics adapter decides that per request, against the CA bundles of the
/// moment).
#[derive(Debug)]
pub struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    /// Handshake signatures checked with `algorithms`.
    pub fn new(algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { algorithms }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: some clients send their certificate only when a hint matches.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A [`V1Error`] carried in a rustls error, whose text shows it with `Debug`: that prints
/// the message.
struct Refusal(V1Error);

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Refusal {}

/// rustls' certificate verifier for servers, with a v1 server certificate refused in words
/// (see the module's notes) and handshake signatures checked as [`verify_tls12_signature`]
/// and [`verify_tls13_signature`] do.
#[derive(Debug)]
pub struct ServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerVerifier {
    /// A verifier trusting `roots`, with `provider`'s algorithms.
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, rustls::client::VerifierBuilderError> {
        let algorithms = provider.signature_verification_algorithms;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        Ok(Self { inner, algorithms })
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if is_v1(end_entity) {
            let refusal = Refusal(V1Error::ServerName(server_name.to_str().into_owned()));
            return Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(refusal)),
            )));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_pki as pki;
    use pki::{KeyType, Pki};

    fn cert(pki: &Pki, name: &str) -> CertificateDer<'static> {
        CertificateDer::from(pki.der(name))
    }

    fn roots(pki: &Pki, names: &[&str]) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for n in names {
            roots.add(cert(pki, n)).expect("a usable root");
        }
        roots
    }

    fn algorithms() -> WebPkiSupportedAlgorithms {
        rustls::crypto::ring::default_provider().signature_verification_algorithms
    }

    /// Go's rules for client certificates, on what openssl makes: v1 leaves under v1 and v3
    /// roots accepted, while valid and signed by a trusted CA; v1 intermediates never.
    #[test]
    fn v1_client_certificates_as_go_takes_them() {
        let pki = Pki::new("v1-client");
        pki.ca("ca", KeyType::Rsa, false);
        pki.ca("ca-v1", KeyType::Ec, true);
        pki.ca("stranger", KeyType::Ec, false);
        let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n";
        pki.leaf("inter", "/CN=inter", "ca", KeyType::Ec, 2, Some(ca_ext));
        pki.leaf("inter-v1", "/CN=inter-v1", "ca", KeyType::Ec, 2, None);
        pki.leaf("alice", "/CN=alice/O=dev", "ca", KeyType::Ec, 2, None);
        pki.leaf("bob", "/CN=bob", "ca-v1", KeyType::Rsa, 2, None);
        pki.leaf("old", "/CN=old", "ca", KeyType::Ec, -1, None);
        pki.leaf("mallory", "/CN=mallory", "stranger", KeyType::Ec, 2, None);
        pki.leaf("deep", "/CN=deep", "inter", KeyType::Ec, 2, None);
        pki.leaf("under-v1", "/CN=under-v1", "inter-v1", KeyType::Ec, 2, None);
        pki.leaf(
            "v3",
            "/CN=v3",
            "ca",
            KeyType::Ec,
            2,
            Some("extendedKeyUsage=clientAuth\n"),
        );
        for name in ["ca-v1", "alice", "bob", "old", "inter-v1"] {
            assert!(is_v1(&cert(&pki, name)), "{name}");
        }
        assert!(!is_v1(&cert(&pki, "v3")) && !is_v1(&cert(&pki, "inter")));

        let trusted = roots(&pki, &["ca", "ca-v1"]);
        let now = UnixTime::now();
        let expired = |e: &Result<(), V1Error>| matches!(e, Err(V1Error::Expired { .. }));
        type Check = fn(&Result<(), V1Error>) -> bool;
        let cases: &[(&str, Check)] = &[
            ("alice", |r| r.is_ok()),
            ("bob", |r| r.is_ok()),
            ("old", expired),
            ("mallory", |r| *r == Err(V1Error::UnknownIssuer)),
            // Issued through an intermediate: refused (see the module's notes).
            ("deep", |r| *r == Err(V1Error::UnknownIssuer)),
            ("under-v1", |r| *r == Err(V1Error::UnknownIssuer)),
            ("v3", |r| *r == Err(V1Error::NotV1)),
        ];
        for (name, ok) in cases {
            let got = verify_client_cert(&cert(&pki, name), &trusted, now, &algorithms());
            assert!(ok(&got), "{name}: {got:?}");
        }
        // Every certificate of a bundle is a root to Go: an intermediate placed there
        // issues v1 leaves directly.
        let with_inter = roots(&pki, &["inter"]);
        assert_eq!(
            verify_client_cert(&cert(&pki, "deep"), &with_inter, now, &algorithms()),
            Ok(())
        );
        // Not valid yet a day ago.
        let yesterday =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_secs() - 86_400));
        assert!(matches!(
            verify_client_cert(&cert(&pki, "alice"), &trusted, yesterday, &algorithms()),
            Err(V1Error::NotYetValid { .. })
        ));
        // A signature that does not verify: a byte of it changed.
        let mut forged = pki.der("alice");
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            verify_client_cert(&CertificateDer::from(forged), &trusted, now, &algorithms()),
            Err(V1Error::UnknownIssuer)
        );
        // The issuer's name must match, not only its key: alice's CA under another name.
        assert!(matches!(
            verify_client_cert(
                &CertificateDer::from(b"junk".to_vec()),
                &trusted,
                now,
                &algorithms()
            ),
            Err(V1Error::Unparsable(_))
        ));
    }

    /// A v1 leaf's key signs a real handshake, both ways, with TLS 1.2 and 1.3; a v1
    /// server certificate is refused by name unless `unsafe_ssl`.
    #[test]
    fn handshakes_with_v1_certificates() {
        let pki = Pki::new("v1-handshake");
        pki.ca("ca", KeyType::Ec, false);
        pki.leaf("server", "/CN=localhost", "ca", KeyType::Rsa, 2, None);
        pki.leaf("client", "/CN=client", "ca", KeyType::Ec, 2, None);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = |name: &str| {
            rustls_pemfile::private_key(&mut pki.read(&format!("{name}.key")).as_bytes())
                .expect("PEM")
                .expect("a key")
        };
        let certified = |name: &str| {
            certified_key(vec![cert(&pki, name)], key(name), &provider).expect("key pair")
        };
        // A client certificate must match its key, v1 or not.
        assert_eq!(
            certified_key(vec![cert(&pki, "client")], key("server"), &provider).err(),
            Some(Error::InconsistentKeys(InconsistentKeys::KeyMismatch))
        );
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let server = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[version])
                .expect("versions")
                .with_client_cert_verifier(Arc::new(AnyClientCert::new(
                    provider.signature_verification_algorithms,
                )))
                .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified(
                    "server",
                ))));
            // The server offers one version; the client takes what is offered.
            let client = |unsafe_ssl: bool| {
                let ca = pki.read("ca.crt");
                let (cert, key) = (pki.read("client.crt"), pki.read("client.key"));
                crate::tls::client_config(&crate::tls::ClientSettings {
                    ca: Some(&ca),
                    cert_key: Some((&cert, &key)),
                    unsafe_ssl,
                })
                .expect("client config")
            };
            let e = handshake(client(false), server.clone()).expect_err("a v1 server certificate");
            assert!(
                e.to_string()
                    .contains("X.509 version 1, which cannot carry a subjectAltName"),
                "{version:?}: {e}"
            );
            handshake(client(true), server)
                .unwrap_or_else(|e| panic!("{version:?} unsafeSsl: {e}"));
        }
    }

    /// A whole handshake between `client` and `server` in memory, for `localhost`.
    fn handshake(client: rustls::ClientConfig, server: rustls::ServerConfig) -> Result<(), Error> {
        let name = ServerName::try_from("localhost").expect("name");
        let mut c = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut s = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf)
                    .map_err(|e| Error::General(e.to_string()))?;
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                s.read_tls(&mut rd)
                    .map_err(|e| Error::General(e.to_string()))?;
            }
            s.process_new_packets()?;
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf)
                    .map_err(|e| Error::General(e.to_string()))?;
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                c.read_tls(&mut rd)
                    .map_err(|e| Error::General(e.to_string()))?;
            }
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Err(Error::General("the handshake did not finish".into()))
    }
}
