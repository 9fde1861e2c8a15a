//! `eventscale certs`: a CA and a serving certificate for the adapter, made in Rust, kept
//! in a directory or a Secret, renewed before expiry while the CA stays, and the CA put
//! into the APIService's `caBundle`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};
use tracing::{info, warn};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The APIService eventscale serves.
pub const APISERVICE: &str = "v1beta1.external.metrics.k8s.io";

/// What to generate and when to renew.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// The Service name the APIService points at.
    pub service: String,
    /// The Service's namespace.
    pub namespace: String,
    /// CA lifetime in days.
    pub ca_days: i64,
    /// Serving certificate lifetime in days.
    pub leaf_days: i64,
    /// Renew a certificate expiring within this many days.
    pub renew_before_days: i64,
    /// Replace everything, CA included.
    pub force: bool,
}

impl CertOptions {
    /// KEDA's defaults: CA 10 years, leaf 1 year, renewal 90 days before expiry.
    pub fn new(service: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            namespace: namespace.into(),
            ca_days: 3650,
            leaf_days: 365,
            renew_before_days: 90,
            force: false,
        }
    }
}

/// The four PEM documents, as stored (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pems {
    /// CA certificate.
    pub ca_crt: String,
    /// CA private key.
    pub ca_key: String,
    /// Serving certificate.
    pub tls_crt: String,
    /// Serving key.
    pub tls_key: String,
}

/// What [`plan`] decided.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// A new CA was made (clients must be given the new `caBundle`).
    pub ca_created: bool,
    /// A new serving certificate was issued.
    pub leaf_issued: bool,
    /// Why, for logs.
    pub reason: String,
    /// The documents to store.
    pub pems: Pems,
}

impl Outcome {
    /// Whether anything must be written.
    pub fn changed(&self) -> bool {
        self.ca_created || self.leaf_issued
    }
}

/// The DNS names the aggregator and in-cluster clients use for the Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn parse_pem_cert(pem: &str) -> Result<CertificateDer<'static>, String> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or("no certificate")?
        .map_err(|e| format!("invalid PEM: {e}"))
}

/// Seconds until the certificate's notAfter.
fn seconds_left(der: &CertificateDer<'_>, now: OffsetDateTime) -> Result<i64, String> {
    let (_, c) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    Ok(c.validity().not_after.timestamp() - now.unix_timestamp())
}

/// Why the CA cannot be kept, if it cannot.
fn ca_problem(p: &Pems, opts: &CertOptions, now: OffsetDateTime) -> Option<String> {
    if p.ca_crt.is_empty() || p.ca_key.is_empty() {
        return Some("no CA yet".into());
    }
    let der = match parse_pem_cert(&p.ca_crt) {
        Ok(d) => d,
        Err(e) => return Some(format!("ca.crt: {e}")),
    };
    match seconds_left(&der, now) {
        Err(e) => return Some(format!("ca.crt: {e}")),
        Ok(left) if left < opts.renew_before_days * 86_400 => {
            return Some(format!("the CA expires in {} days", left / 86_400))
        }
        Ok(_) => {}
    }
    if let Err(e) = KeyPair::from_pem(&p.ca_key) {
        return Some(format!("ca.key: {e}"));
    }
    None
}

/// Why the serving pair cannot be kept under the CA in `p`, if it cannot.
fn leaf_problem(p: &Pems, opts: &CertOptions, now: OffsetDateTime) -> Option<String> {
    if p.tls_crt.is_empty() || p.tls_key.is_empty() {
        return Some("no serving certificate yet".into());
    }
    let (ca, leaf) = match (parse_pem_cert(&p.ca_crt), parse_pem_cert(&p.tls_crt)) {
        (Ok(ca), Ok(leaf)) => (ca, leaf),
        (_, Err(e)) => return Some(format!("tls.crt: {e}")),
        (Err(e), _) => return Some(format!("ca.crt: {e}")),
    };
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca).is_err() {
        return Some("ca.crt is not a usable CA".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider,
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return Some(format!("ca.crt: {e}")),
    };
    let when = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or_default(),
    ));
    // Chain, validity and every name the aggregator or a client may use.
    for name in service_dns_names(&opts.service, &opts.namespace) {
        let Ok(server_name) = ServerName::try_from(name.clone()) else {
            return Some(format!("{name:?} is not a DNS name"));
        };
        if let Err(e) = verifier.verify_server_cert(&leaf, &[], &server_name, &[], when) {
            return Some(format!(
                "the serving certificate does not verify for {name}: {e}"
            ));
        }
    }
    match seconds_left(&leaf, now) {
        Err(e) => return Some(format!("tls.crt: {e}")),
        Ok(left) if left < opts.renew_before_days * 86_400 => {
            return Some(format!(
                "the serving certificate expires in {} days",
                left / 86_400
            ))
        }
        Ok(_) => {}
    }
    let key_matches = rustls_pemfile::private_key(&mut p.tls_key.as_bytes())
        .ok()
        .flatten()
        .and_then(|k| rustls::crypto::ring::sign::any_supported_type(&k).ok())
        .is_some_and(|k| {
            rustls::sign::CertifiedKey::new(vec![leaf.clone()], k)
                .keys_match()
                .is_ok()
        });
    (!key_matches).then(|| "tls.key does not match tls.crt".into())
}

fn new_ca(opts: &CertOptions, now: OffsetDateTime) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("eventscale-ca@{}", now.unix_timestamp()),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(opts.ca_days);
    let cert = ca.self_signed(&key).context("signing the CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn new_leaf(
    opts: &CertOptions,
    ca_crt: &str,
    ca_key: &str,
    now: OffsetDateTime,
) -> anyhow::Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key).context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_crt, ca_key).context("reading the CA certificate")?;
    let names = service_dns_names(&opts.service, &opts.namespace);
    let mut leaf =
        CertificateParams::new(names.clone()).context("building the serving certificate")?;
    leaf.distinguished_name
        .push(DnType::CommonName, names[2].clone());
    // Loopback names let local probes (`curl https://127.0.0.1:...`) verify too.
    leaf.subject_alt_names.push(SanType::DnsName(
        "localhost".try_into().context("localhost SAN")?,
    ));
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::hours(1);
    leaf.not_after = now + Duration::days(opts.leaf_days);
    let key = KeyPair::generate().context("generating the serving key")?;
    let cert = leaf
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Decide, from what is stored, what must be (re)made, and make it. Pure but for key
/// generation: the CA is kept unless missing, unusable or expiring (or `force`); the
/// serving pair is reissued when missing, unusable, not signed by the CA, missing one of
/// the Service names, or expiring within `renew_before_days`.
pub fn plan(existing: &Pems, opts: &CertOptions, now: OffsetDateTime) -> anyhow::Result<Outcome> {
    let ca_reason = if opts.force {
        Some("forced".to_string())
    } else {
        ca_problem(existing, opts, now)
    };
    let mut pems = existing.clone();
    if let Some(reason) = ca_reason {
        (pems.ca_crt, pems.ca_key) = new_ca(opts, now)?;
        (pems.tls_crt, pems.tls_key) = new_leaf(opts, &pems.ca_crt, &pems.ca_key, now)?;
        return Ok(Outcome {
            ca_created: true,
            leaf_issued: true,
            reason,
            pems,
        });
    }
    match leaf_problem(existing, opts, now) {
        None => Ok(Outcome {
            ca_created: false,
            leaf_issued: false,
            reason: "all certificates are valid".into(),
            pems,
        }),
        Some(reason) => {
            (pems.tls_crt, pems.tls_key) = new_leaf(opts, &pems.ca_crt, &pems.ca_key, now)?;
            Ok(Outcome {
                ca_created: false,
                leaf_issued: true,
                reason,
                pems,
            })
        }
    }
}

const FILES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

fn read_dir(dir: &Path) -> anyhow::Result<Pems> {
    let read = |f: &str| -> anyhow::Result<String> {
        let path = dir.join(f);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    Ok(Pems {
        ca_crt: read(FILES[0])?,
        ca_key: read(FILES[1])?,
        tls_crt: read(FILES[2])?,
        tls_key: read(FILES[3])?,
    })
}

/// Write `contents` to `path` through a temporary file and a rename, so a reader sees the
/// old file or the new one, never half of one.
fn write_atomic(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    let mode = if private { 0o600 } else { 0o644 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Make sure `dir` holds a usable CA and serving pair; write what changed. The key is
/// replaced before the certificate: a reloader reading in between sees a mismatched pair,
/// refuses it and keeps serving the old one until the next check.
pub fn ensure_dir(dir: &Path, opts: &CertOptions) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let outcome = plan(&read_dir(dir)?, opts, OffsetDateTime::now_utc())?;
    let p = &outcome.pems;
    if outcome.ca_created {
        write_atomic(&dir.join("ca.key"), &p.ca_key, true)?;
        write_atomic(&dir.join("ca.crt"), &p.ca_crt, false)?;
    }
    if outcome.leaf_issued {
        write_atomic(&dir.join("tls.key"), &p.tls_key, true)?;
        write_atomic(&dir.join("tls.crt"), &p.tls_crt, false)?;
    }
    Ok(outcome)
}

/// Make sure Secret `namespace/name` (type `kubernetes.io/tls`, plus `ca.crt`/`ca.key`)
/// holds a usable CA and serving pair; create or update it when something changed.
pub async fn ensure_secret(
    client: Client,
    namespace: &str,
    name: &str,
    opts: &CertOptions,
) -> anyhow::Result<Outcome> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let existing = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading Secret {namespace}/{name}"))?;
    let field = |k: &str| -> String {
        existing
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let stored = Pems {
        ca_crt: field("ca.crt"),
        ca_key: field("ca.key"),
        tls_crt: field("tls.crt"),
        tls_key: field("tls.key"),
    };
    let outcome = plan(&stored, opts, OffsetDateTime::now_utc())?;
    if !outcome.changed() {
        return Ok(outcome);
    }
    let p = &outcome.pems;
    let mut secret = existing.clone().unwrap_or_default();
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = Some(namespace.to_string());
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(
        [
            ("ca.crt", &p.ca_crt),
            ("ca.key", &p.ca_key),
            ("tls.crt", &p.tls_crt),
            ("tls.key", &p.tls_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect(),
    );
    if existing.is_some() {
        api.replace(name, &PostParams::default(), &secret)
            .await
            .with_context(|| format!("updating Secret {namespace}/{name}"))?;
    } else {
        api.create(&PostParams::default(), &secret)
            .await
            .with_context(|| format!("creating Secret {namespace}/{name}"))?;
    }
    Ok(outcome)
}

/// Set `spec.caBundle` of APIService `name` to `ca_pem` unless it already is; returns
/// whether it was patched.
pub async fn patch_ca_bundle(client: Client, name: &str, ca_pem: &str) -> anyhow::Result<bool> {
    let gvk = GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let api: Api<DynamicObject> = Api::all_with(
        client,
        &ApiResource::from_gvk_with_plural(&gvk, "apiservices"),
    );
    let current = api
        .get(name)
        .await
        .with_context(|| format!("reading APIService {name}"))?;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    if current.data["spec"]["caBundle"].as_str() == Some(bundle.as_str()) {
        return Ok(false);
    }
    let patch = serde_json::json!({"spec": {"caBundle": bundle}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching spec.caBundle of APIService {name}"))?;
    Ok(true)
}

/// Where [`renew_loop`] keeps the certificates.
#[derive(Debug, Clone)]
pub enum Store {
    /// A directory of `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
    Dir(PathBuf),
    /// A Secret `namespace/name`.
    Secret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

/// One renewal pass: ensure the certificates in `store`, then (with `client` and
/// `apiservice`) make the APIService trust the CA.
pub async fn renew_once(
    store: &Store,
    opts: &CertOptions,
    client: Option<&Client>,
    apiservice: Option<&str>,
) -> anyhow::Result<Outcome> {
    let outcome = match store {
        Store::Dir(dir) => ensure_dir(dir, opts)?,
        Store::Secret { namespace, name } => {
            let client = client.context("a Secret target needs a Kubernetes client")?;
            ensure_secret(client.clone(), namespace, name, opts).await?
        }
    };
    if let (Some(client), Some(apiservice)) = (client, apiservice) {
        if patch_ca_bundle(client.clone(), apiservice, &outcome.pems.ca_crt).await? {
            info!(apiservice, "set the APIService caBundle to the current CA");
        }
    }
    Ok(outcome)
}

/// Renew forever, every `every`: used by `eventscale run --renew-certs`. Errors are logged
/// and retried at the next tick; a renewed leaf on disk is picked up by the serving
/// certificate's reloader.
pub async fn renew_loop(
    store: Store,
    opts: CertOptions,
    client: Option<Client>,
    apiservice: Option<String>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match renew_once(&store, &opts, client.as_ref(), apiservice.as_deref()).await {
            Ok(o) if o.changed() => info!(
                ?store,
                ca_created = o.ca_created,
                leaf_issued = o.leaf_issued,
                reason = %o.reason,
                "renewed certificates"
            ),
            Ok(_) => {}
            Err(e) => warn!(
                ?store,
                error = format!("{e:#}"),
                "certificate renewal failed; retrying"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CertOptions {
        CertOptions::new("svc", "ns")
    }

    #[test]
    fn names_cover_the_service_forms() {
        assert_eq!(
            service_dns_names("a", "b"),
            ["a", "a.b", "a.b.svc", "a.b.svc.cluster.local"]
        );
    }

    #[test]
    fn generates_once_then_keeps_everything() {
        let now = OffsetDateTime::now_utc();
        let first = plan(&Pems::default(), &opts(), now).expect("plan");
        assert!(first.ca_created && first.leaf_issued);
        let again = plan(&first.pems, &opts(), now).expect("plan");
        assert!(!again.changed(), "{}", again.reason);
        assert_eq!(again.pems, first.pems);
    }

    #[test]
    fn an_expiring_leaf_is_renewed_under_the_same_ca() {
        let now = OffsetDateTime::now_utc();
        let first = plan(&Pems::default(), &opts(), now).expect("plan");
        // 300 days later the 365-day leaf is within the 90-day window; the CA is not.
        let later = plan(&first.pems, &opts(), now + Duration::days(300)).expect("plan");
        assert!(!later.ca_created && later.leaf_issued, "{}", later.reason);
        assert!(later.reason.contains("expires in"), "{}", later.reason);
        assert_eq!(
            later.pems.ca_crt, first.pems.ca_crt,
            "the CA stays byte-identical"
        );
        assert_eq!(later.pems.ca_key, first.pems.ca_key);
        assert_ne!(later.pems.tls_crt, first.pems.tls_crt);
        // The renewed leaf is accepted as is at that time.
        assert!(!plan(&later.pems, &opts(), now + Duration::days(300))
            .expect("plan")
            .changed());
    }

    #[test]
    fn a_leaf_for_other_names_or_another_ca_or_key_is_reissued() {
        let now = OffsetDateTime::now_utc();
        let mine = plan(&Pems::default(), &opts(), now).expect("plan").pems;
        let other = plan(&Pems::default(), &CertOptions::new("other", "ns"), now)
            .expect("plan")
            .pems;
        let wrong_names = Pems {
            tls_crt: other.tls_crt.clone(),
            tls_key: other.tls_key.clone(),
            ..mine.clone()
        };
        let o = plan(&wrong_names, &opts(), now).expect("plan");
        assert!(o.leaf_issued && !o.ca_created, "{}", o.reason);
        assert!(o.reason.contains("does not verify for svc"), "{}", o.reason);
        let wrong_key = Pems {
            tls_key: other.tls_key.clone(),
            ..mine.clone()
        };
        let o = plan(&wrong_key, &opts(), now).expect("plan");
        assert_eq!(o.reason, "tls.key does not match tls.crt");
        let garbage_ca = Pems {
            ca_crt: "junk".into(),
            ..mine.clone()
        };
        let o = plan(&garbage_ca, &opts(), now).expect("plan");
        assert!(
            o.ca_created && o.reason.starts_with("ca.crt:"),
            "{}",
            o.reason
        );
    }

    #[test]
    fn the_directory_store_round_trips_and_the_pair_loads() {
        let dir =
            std::env::temp_dir().join(format!("eventscale-certs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ensure_dir(&dir, &opts()).expect("generated").changed());
        assert!(!ensure_dir(&dir, &opts()).expect("kept").changed());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tls.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let cfg = crate::server::tls_config(&dir.join("tls.crt"), &dir.join("tls.key"));
        assert!(cfg.is_ok(), "{:?}", cfg.err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
