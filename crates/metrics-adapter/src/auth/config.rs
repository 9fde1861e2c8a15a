//! The delegated authentication settings kube-apiserver publishes in
//! `kube-system/extension-apiserver-authentication`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use scaler_core::tls::v1;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Namespace of the authentication ConfigMap.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
/// Name of the authentication ConfigMap.
pub const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

/// A problem with one key of the ConfigMap.
#[derive(Debug, thiserror::Error)]
#[error("{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} key {key}: {message}")]
pub struct ConfigError {
    /// The ConfigMap key.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Verifies client certificate chains against one CA bundle (with ClientAuth usage), X.509
/// version 1 leaves included, as kube-apiserver (Go) accepts them.
#[derive(Clone)]
pub struct CaVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    /// The bundle, for v1 leaves, which webpki does not read.
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for CaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaVerifier")
    }
}

impl CaVerifier {
    /// A verifier trusting the certificates in `pem`.
    pub fn from_pem(key: &'static str, pem: &str) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError { key, message };
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            let cert = cert.map_err(|e| err(format!("invalid PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| err(format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(err("no CA certificate in the bundle".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let roots = Arc::new(roots);
        let webpki = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| err(format!("building the verifier: {e}")))?;
        Ok(Self {
            webpki,
            roots,
            algorithms,
        })
    }

    /// Whether `chain` (leaf first) chains to this bundle and may authenticate a client.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        self.verify_at(chain, UnixTime::now())
    }

    /// [`Self::verify`] at `now`.
    pub fn verify_at(
        &self,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Result<(), String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no client certificate")?;
        if v1::is_v1(leaf) {
            return v1::verify_client_cert(leaf, &self.roots, now, &self.algorithms)
                .map_err(|e| e.to_string());
        }
        self.webpki
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Front-proxy (requestheader) authentication settings.
#[derive(Debug, Clone)]
pub struct RequestHeader {
    /// The CA the front proxy's client certificate must chain to.
    pub ca: CaVerifier,
    /// Common names allowed to assert identities; empty allows any the CA signed.
    pub allowed_names: Vec<String>,
    /// Headers carrying the user name, first non-empty wins (lowercase).
    pub username_headers: Vec<String>,
    /// Headers carrying groups (lowercase).
    pub group_headers: Vec<String>,
    /// Prefixes of headers carrying extra attributes (lowercase).
    pub extra_prefixes: Vec<String>,
}

/// Everything the authenticator needs from the ConfigMap.
#[derive(Debug, Clone, Default)]
pub struct AuthnConfig {
    /// Verifier for `client-ca-file`.
    pub client_ca: Option<CaVerifier>,
    /// Front-proxy settings, when `requestheader-client-ca-file` is set.
    pub request_header: Option<RequestHeader>,
}

fn string_list(
    data: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Vec<String>, ConfigError> {
    match data.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(Vec::new()),
        Some(raw) => serde_json::from_str::<Vec<String>>(raw).map_err(|e| ConfigError {
            key,
            message: format!("expected a JSON array of strings: {e}"),
        }),
    }
}

impl AuthnConfig {
    /// Parse the ConfigMap's data. A bad key disables only what depends on it; the errors
    /// are returned beside the usable part so they can be logged.
    pub fn from_data(data: &BTreeMap<String, String>) -> (Self, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let client_ca = match data.get("client-ca-file") {
            Some(pem) => CaVerifier::from_pem("client-ca-file", pem)
                .map_err(|e| errors.push(e))
                .ok(),
            None => None,
        };
        let request_header = match data.get("requestheader-client-ca-file") {
            None => None,
            Some(pem) => {
                let parts = (
                    CaVerifier::from_pem("requestheader-client-ca-file", pem),
                    string_list(data, "requestheader-allowed-names"),
                    string_list(data, "requestheader-username-headers"),
                    string_list(data, "requestheader-group-headers"),
                    string_list(data, "requestheader-extra-headers-prefix"),
                );
                match parts {
                    (Ok(ca), Ok(allowed_names), Ok(user), Ok(group), Ok(extra)) => {
                        let lower = |v: Vec<String>| {
                            v.into_iter().map(|h| h.to_ascii_lowercase()).collect()
                        };
                        Some(RequestHeader {
                            ca,
                            allowed_names,
                            username_headers: lower(user),
                            group_headers: lower(group),
                            extra_prefixes: lower(extra),
                        })
                    }
                    (a, b, c, d, e) => {
                        errors.extend(a.err());
                        errors.extend(b.err());
                        errors.extend(c.err());
                        errors.extend(d.err());
                        errors.extend(e.err());
                        None
                    }
                }
            }
        };
        (
            Self {
                client_ca,
                request_header,
            },
            errors,
        )
    }
}

/// The subject of a client certificate: common name and organizations.
pub fn subject(cert: &CertificateDer<'_>) -> Result<(String, Vec<String>), String> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("unparsable client certificate: {e}"))?;
    let subject = parsed.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let orgs = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    Ok((cn, orgs))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    /// A CA for tests: its PEM and an issuer.
    pub(crate) fn test_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).expect("ca");
        (cert.pem(), Issuer::new(p, key))
    }

    /// A client certificate chain (leaf only) with `cn` and organizations `orgs`.
    pub(crate) fn client_cert(
        issuer: &Issuer<'static, KeyPair>,
        cn: &str,
        orgs: &[&str],
    ) -> Vec<CertificateDer<'static>> {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, issuer).expect("leaf");
        vec![cert.der().clone()]
    }

    /// The ConfigMap's data as kube-apiserver publishes it.
    pub(crate) fn configmap_data(
        client_ca: &str,
        front_proxy_ca: &str,
        allowed_names: &[&str],
    ) -> BTreeMap<String, String> {
        let allowed = serde_json::to_string(allowed_names).expect("json");
        [
            ("client-ca-file", client_ca),
            ("requestheader-client-ca-file", front_proxy_ca),
            ("requestheader-allowed-names", allowed.as_str()),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn parses_the_configmap_and_reports_bad_keys() {
        let (ca, _) = test_ca("client-ca");
        let (fp, _) = test_ca("front-proxy-ca");
        let data = configmap_data(&ca, &fp, &["front-proxy-client"]);
        let (cfg, errors) = AuthnConfig::from_data(&data);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(cfg.client_ca.is_some());
        let rh = cfg.request_header.expect("requestheader");
        assert_eq!(rh.allowed_names, ["front-proxy-client"]);
        assert_eq!(rh.username_headers, ["x-remote-user"]);
        assert_eq!(rh.extra_prefixes, ["x-remote-extra-"]);

        let mut bad = data.clone();
        bad.insert("requestheader-allowed-names".into(), "front-proxy".into());
        bad.insert("client-ca-file".into(), "not pem".into());
        let (cfg, errors) = AuthnConfig::from_data(&bad);
        assert!(cfg.request_header.is_none() && cfg.client_ca.is_none());
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("key requestheader-allowed-names: expected a JSON array")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("key client-ca-file")),
            "{text:?}"
        );
    }

    #[test]
    fn verifies_chains_against_its_own_bundle_only() {
        let (ca_pem, ca) = test_ca("a");
        let (_, other) = test_ca("b");
        let v = CaVerifier::from_pem("client-ca-file", &ca_pem).expect("verifier");
        assert!(v.verify(&client_cert(&ca, "alice", &["dev"])).is_ok());
        assert!(v.verify(&client_cert(&other, "mallory", &[])).is_err());
        assert!(v.verify(&[]).is_err());
        // rcgen keeps one value per attribute type, so one organization here.
        let (cn, orgs) = subject(&client_cert(&ca, "alice", &["ops"])[0]).expect("subject");
        assert_eq!((cn.as_str(), orgs), ("alice", vec!["ops".to_string()]));
    }

    /// X.509 version 1 client certificates (`openssl x509 -req` without extensions), as
    /// kube-apiserver's Go accepts them: from a trusted CA while valid, under a v1 CA too;
    /// from another CA or expired, refused.
    #[test]
    fn verifies_version_1_client_certificates() {
        use crate::test_pki::{KeyType, Pki};
        let pki = Pki::new("adapter-v1");
        pki.ca("front-proxy-ca", KeyType::Rsa, false);
        pki.ca("v1-ca", KeyType::Ec, true);
        pki.ca("stranger", KeyType::Ec, false);
        let leaf = |name: &str, issuer: &str, days: i32| {
            pki.leaf(
                name,
                "/CN=front-proxy-client/O=proxies",
                issuer,
                KeyType::Ec,
                days,
                None,
            );
            vec![CertificateDer::from(pki.der(name))]
        };
        let (good, under_v1, stranger, expired) = (
            leaf("good", "front-proxy-ca", 2),
            leaf("under-v1", "v1-ca", 2),
            leaf("strangers", "stranger", 2),
            leaf("expired", "front-proxy-ca", -1),
        );
        let bundle = format!(
            "{}{}",
            pki.read("front-proxy-ca.crt"),
            pki.read("v1-ca.crt")
        );
        let v = CaVerifier::from_pem("requestheader-client-ca-file", &bundle).expect("verifier");
        assert_eq!(v.verify(&good), Ok(()));
        assert_eq!(v.verify(&under_v1), Ok(()));
        let e = v.verify(&stranger).expect_err("untrusted");
        assert!(e.contains("not signed by a trusted CA"), "{e}");
        let e = v.verify(&expired).expect_err("expired");
        assert!(e.contains("has expired"), "{e}");
        // Valid for two days from its making: refused three days on.
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            UnixTime::now().as_secs() + 3 * 86_400,
        ));
        assert!(v.verify_at(&good, later).is_err());
        let (cn, orgs) = subject(&good[0]).expect("subject");
        assert_eq!(
            (cn.as_str(), orgs),
            ("front-proxy-client", vec!["proxies".to_string()])
        );
    }
}
