//! `eventscale certs`: a CA and a serving certificate for the adapter, made in Rust
//! (rcgen), kept in a directory or a Secret, the serving certificate renewed before expiry
//! under a CA that stays, and the CA put into the APIService's `caBundle`.
//!
//! [`plan`] is the whole decision (pure but for key generation); [`ensure_dir`] and
//! [`ensure_secret`] read and write the two kinds of store around it; [`renew_loop`] runs
//! it periodically inside `eventscale run`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
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

/// The APIService eventscale serves metrics under.
pub const APISERVICE: &str = "v1beta1.external.metrics.k8s.io";

/// Both APIServices eventscale serves (metrics, then traces), as `--patch-apiservice`
/// takes a list.
pub const APISERVICES: &str = "v1beta1.external.metrics.k8s.io,v1alpha1.explain.eventscale.sh";

/// The Secret type the serving pair is kept under.
const SECRET_TYPE: &str = "kubernetes.io/tls";

/// The longest lifetime or renewal window accepted, in days (100 years).
const MAX_DAYS: i64 = 36_500;

const DAY_SECONDS: i64 = 86_400;

/// The longest one pass of [`renew_loop`] may take (Kubernetes calls included).
const PASS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// Renew a certificate expiring within this many days. At least `leaf_days` reissues
    /// the serving certificate on every pass (a way to force a rotation).
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

    /// Refuse options that cannot work: lifetimes outside 1 day to 100 years, a renewal
    /// window that would replace the CA on every pass, Service names that are not DNS names.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, days) in [("--ca-days", self.ca_days), ("--leaf-days", self.leaf_days)] {
            anyhow::ensure!(
                (1..=MAX_DAYS).contains(&days),
                "{flag} {days}: expected 1 to {MAX_DAYS} days"
            );
        }
        anyhow::ensure!(
            (0..self.ca_days).contains(&self.renew_before_days),
            "--renew-before-days {}: expected 0 or more and less than the CA's lifetime \
             ({} days), or the CA would be replaced on every run",
            self.renew_before_days,
            self.ca_days
        );
        for name in service_dns_names(&self.service, &self.namespace) {
            anyhow::ensure!(
                matches!(
                    ServerName::try_from(name.as_str()),
                    Ok(ServerName::DnsName(_))
                ),
                "--service {:?} --namespace {:?}: {name:?} is not a DNS name",
                self.service,
                self.namespace
            );
        }
        Ok(())
    }
}

/// Parse a number of days, `90` or `90d` (the `--renew-before` flag).
pub fn parse_days(s: &str) -> Result<i64, String> {
    s.strip_suffix('d')
        .unwrap_or(s)
        .parse::<i64>()
        .ok()
        .filter(|d| (0..=MAX_DAYS).contains(d))
        .ok_or_else(|| format!("{s:?}: expected a number of days such as 90d"))
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

/// What [`plan`] decided (and the ensure functions stored).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// A new CA was made (clients must be given the new `caBundle`).
    pub ca_created: bool,
    /// A new serving certificate was issued.
    pub leaf_issued: bool,
    /// Why, for logs.
    pub reason: String,
    /// The documents as they are now stored.
    pub pems: Pems,
}

impl Outcome {
    /// Whether anything must be (or was) written.
    pub fn changed(&self) -> bool {
        self.ca_created || self.leaf_issued
    }

    /// The CA certificate (PEM): what the APIService's `caBundle` must hold.
    pub fn ca_pem(&self) -> &str {
        &self.pems.ca_crt
    }

    /// What was done, in words.
    pub fn summary(&self) -> &'static str {
        match (self.ca_created, self.leaf_issued) {
            (true, _) => "made a new CA and serving certificate",
            (false, true) => "issued a new serving certificate under the existing CA",
            (false, false) => "kept the existing certificates",
        }
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

fn parse_x509<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    X509Certificate::from_der(der.as_ref())
        .map(|(_, c)| c)
        .map_err(|e| format!("unparsable certificate: {e}"))
}

/// Why a certificate with `left` seconds of validity must be replaced, if it must.
fn expiry_problem(what: &str, left: i64, opts: &CertOptions) -> Option<String> {
    if left <= 0 {
        Some(format!("{what} has expired"))
    } else if left < opts.renew_before_days * DAY_SECONDS {
        Some(format!("{what} expires in {} days", left / DAY_SECONDS))
    } else {
        None
    }
}

/// Why `file` cannot be used, if it is missing.
fn missing(file: &str, pem: &str) -> Option<String> {
    pem.trim().is_empty().then(|| format!("{file} is missing"))
}

/// Why the CA cannot be kept, if it cannot.
fn ca_problem(p: &Pems, opts: &CertOptions, now: OffsetDateTime) -> Option<String> {
    if p.ca_crt.trim().is_empty() && p.ca_key.trim().is_empty() {
        return Some("no CA yet".into());
    }
    if let Some(m) = missing("ca.crt", &p.ca_crt).or_else(|| missing("ca.key", &p.ca_key)) {
        return Some(m);
    }
    let der = match parse_pem_cert(&p.ca_crt) {
        Ok(d) => d,
        Err(e) => return Some(format!("ca.crt: {e}")),
    };
    let cert = match parse_x509(&der) {
        Ok(c) => c,
        Err(e) => return Some(format!("ca.crt: {e}")),
    };
    if !cert.is_ca() {
        return Some("ca.crt is not a CA certificate".into());
    }
    let left = cert.validity().not_after.timestamp() - now.unix_timestamp();
    if let Some(p) = expiry_problem("the CA", left, opts) {
        return Some(p);
    }
    let key = match KeyPair::from_pem(&p.ca_key) {
        Ok(k) => k,
        Err(e) => return Some(format!("ca.key: {e}")),
    };
    // Signing with a key that is not the CA's would make leaves nobody trusts.
    if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Some("ca.key does not match ca.crt".into());
    }
    None
}

/// Why the serving pair cannot be kept under the CA in `p`, if it cannot.
fn leaf_problem(p: &Pems, opts: &CertOptions, now: OffsetDateTime) -> Option<String> {
    if p.tls_crt.trim().is_empty() && p.tls_key.trim().is_empty() {
        return Some("no serving certificate yet".into());
    }
    if let Some(m) = missing("tls.crt", &p.tls_crt).or_else(|| missing("tls.key", &p.tls_key)) {
        return Some(m);
    }
    let (ca, leaf) = match (parse_pem_cert(&p.ca_crt), parse_pem_cert(&p.tls_crt)) {
        (Ok(ca), Ok(leaf)) => (ca, leaf),
        (_, Err(e)) => return Some(format!("tls.crt: {e}")),
        (Err(e), _) => return Some(format!("ca.crt: {e}")),
    };
    let left = match parse_x509(&leaf) {
        Ok(c) => c.validity().not_after.timestamp() - now.unix_timestamp(),
        Err(e) => return Some(format!("tls.crt: {e}")),
    };
    if let Some(p) = expiry_problem("the serving certificate", left, opts) {
        return Some(p);
    }
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
    // The chain to this CA and every name the aggregator or a client may use.
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
    // Path length 0: this CA signs serving certificates, never another CA.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
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

/// A serving certificate for `dns_names` (plus `localhost` and `127.0.0.1`) signed by the
/// CA, valid from an hour before `now` (clock skew) to `not_after`.
fn sign_leaf(
    dns_names: Vec<String>,
    ca_crt: &str,
    ca_key: &str,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> anyhow::Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key).context("reading ca.key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_crt, ca_key).context("reading ca.crt")?;
    let common_name = dns_names.get(2).or(dns_names.first()).cloned();
    let mut leaf = CertificateParams::new(dns_names).context("building the serving certificate")?;
    if let Some(cn) = common_name {
        leaf.distinguished_name.push(DnType::CommonName, cn);
    }
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
    leaf.not_after = not_after;
    let key = KeyPair::generate().context("generating the serving key")?;
    let cert = leaf
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn new_leaf(
    opts: &CertOptions,
    ca_crt: &str,
    ca_key: &str,
    now: OffsetDateTime,
) -> anyhow::Result<(String, String)> {
    let ca_der = parse_pem_cert(ca_crt).map_err(|e| anyhow::anyhow!("ca.crt: {e}"))?;
    let ca_not_after = parse_x509(&ca_der)
        .map(|c| c.validity().not_after.timestamp())
        .map_err(|e| anyhow::anyhow!("ca.crt: {e}"))?;
    let ca_not_after =
        OffsetDateTime::from_unix_timestamp(ca_not_after).context("ca.crt: notAfter")?;
    // A certificate is worth nothing past its issuer's expiry: do not claim longer.
    let not_after = (now + Duration::days(opts.leaf_days)).min(ca_not_after);
    sign_leaf(
        service_dns_names(&opts.service, &opts.namespace),
        ca_crt,
        ca_key,
        now,
        not_after,
    )
}

/// Decide, from what is stored, what must be (re)made, and make it. Pure but for key
/// generation: the CA is kept unless missing, unusable, not matching its key or expiring
/// within `renew_before_days` (or `force`), and a new CA brings a new serving pair; the
/// serving pair is reissued when missing, unusable, not signed by the CA, missing one of
/// the Service names, not matching its key, or expiring within `renew_before_days`.
pub fn plan(existing: &Pems, opts: &CertOptions, now: OffsetDateTime) -> anyhow::Result<Outcome> {
    opts.validate()?;
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

fn read_dir(dir: &Path) -> anyhow::Result<Pems> {
    let read = |f: &str| -> anyhow::Result<String> {
        let path = dir.join(f);
        match std::fs::read(&path) {
            // Not UTF-8 is not PEM: the plan then sees an unusable file and replaces it.
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    Ok(Pems {
        ca_crt: read("ca.crt")?,
        ca_key: read("ca.key")?,
        tls_crt: read("tls.crt")?,
        tls_key: read("tls.key")?,
    })
}

/// Write `contents` to `path` through a temporary file and a rename, so a reader sees the
/// old file or the new one, never half of one; the data is on disk before the name
/// points at it.
fn write_atomic(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Hidden, so readers listing the directory skip it; per process, so writers don't share it.
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The creation mode is masked by the umask, and a stale temporary file keeps its
        // old mode: set it before any key byte is written.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

/// Make sure `dir` holds a usable CA and serving pair; write what changed.
///
/// Nothing is written (and the directory may be read-only) when everything is valid.
/// Otherwise the decision is taken again under an exclusive lock on `dir/.lock`, so two
/// writers (two `eventscale certs` runs, replicas sharing a volume) cannot interleave
/// their files. Each file is replaced atomically, private keys with mode 0600, and a key
/// before its certificate: a reloader catching the new key with the old certificate sees
/// a pair whose key does not match, refuses it and keeps serving the old pair until its
/// next check finds both new files ([`crate::cert_reload`] checks that the key matches).
/// No order of two renames can be atomic for the pair; refusing mismatches is what makes
/// every order safe, and key-first means a crash in between leaves a mismatched pair that
/// the next run reissues rather than a pair that looks complete.
pub fn ensure_dir(dir: &Path, opts: &CertOptions) -> anyhow::Result<Outcome> {
    let now = OffsetDateTime::now_utc();
    let first = plan(&read_dir(dir)?, opts, now)?;
    if !first.changed() {
        return Ok(first);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Another writer may have renewed while this one waited: decide again.
    let outcome = plan(&read_dir(dir)?, opts, now)?;
    let p = &outcome.pems;
    if outcome.ca_created {
        write_atomic(&dir.join("ca.key"), &p.ca_key, 0o600)?;
        write_atomic(&dir.join("ca.crt"), &p.ca_crt, 0o644)?;
    }
    if outcome.leaf_issued {
        write_atomic(&dir.join("tls.key"), &p.tls_key, 0o600)?;
        write_atomic(&dir.join("tls.crt"), &p.tls_crt, 0o644)?;
    }
    // The renames themselves survive a crash once the directory is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(outcome)
}

/// The four documents of a Secret (missing keys and a missing Secret read as empty).
pub fn pems_from_secret(secret: Option<&Secret>) -> Pems {
    let field = |k: &str| -> String {
        secret
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    Pems {
        ca_crt: field("ca.crt"),
        ca_key: field("ca.key"),
        tls_crt: field("tls.crt"),
        tls_key: field("tls.key"),
    }
}

/// The Secret `namespace/name` holding `pems`, built on `existing` (its metadata, other
/// keys and `resourceVersion` are kept, so an update loses to a concurrent writer instead
/// of overwriting it). An existing Secret of another type is an error: the type of a
/// Secret cannot be changed.
pub fn secret_with(
    existing: Option<Secret>,
    namespace: &str,
    name: &str,
    pems: &Pems,
) -> anyhow::Result<Secret> {
    let mut secret = existing.unwrap_or_default();
    if let Some(t) = secret.type_.as_deref().filter(|t| *t != SECRET_TYPE) {
        anyhow::bail!(
            "Secret {namespace}/{name} has type {t}, not {SECRET_TYPE}; a Secret's type \
             cannot be changed: delete it or name another Secret"
        );
    }
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = Some(namespace.to_string());
    secret.type_ = Some(SECRET_TYPE.into());
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    for (k, v) in [
        ("ca.crt", &pems.ca_crt),
        ("ca.key", &pems.ca_key),
        ("tls.crt", &pems.tls_crt),
        ("tls.key", &pems.tls_key),
    ] {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    }
    Ok(secret)
}

/// Make sure Secret `namespace/name` (type `kubernetes.io/tls`, plus `ca.crt`/`ca.key`)
/// holds a usable CA and serving pair; create or update it when something changed. A
/// concurrent writer makes this fail with a conflict rather than be overwritten; the
/// next pass then reads and keeps what that writer stored.
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
    let outcome = plan(
        &pems_from_secret(existing.as_ref()),
        opts,
        OffsetDateTime::now_utc(),
    )
    .with_context(|| format!("certificates for Secret {namespace}/{name}"))?;
    if !outcome.changed() {
        return Ok(outcome);
    }
    let exists = existing.is_some();
    let secret = secret_with(existing, namespace, name, &outcome.pems)?;
    if exists {
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

/// The `spec.caBundle` value for a CA in PEM.
pub fn ca_bundle(ca_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes())
}

/// Set `spec.caBundle` of APIService `name` (apiregistration.k8s.io/v1) to `ca_pem`
/// unless it already is; returns whether it was patched.
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
    let bundle = ca_bundle(ca_pem);
    if current.data["spec"]["caBundle"].as_str() == Some(bundle.as_str()) {
        return Ok(false);
    }
    let patch = serde_json::json!({"spec": {"caBundle": bundle}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching spec.caBundle of APIService {name}"))?;
    Ok(true)
}

/// Where the certificates are kept.
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

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Dir(dir) => write!(f, "directory {}", dir.display()),
            Store::Secret { namespace, name } => write!(f, "Secret {namespace}/{name}"),
        }
    }
}

/// One pass: ensure the certificates in `store`, then, with `apiservice`, make that
/// APIService's `caBundle` the CA (only patched when it differs). A Secret store or an
/// APIService needs `client`.
pub async fn renew_once(
    store: &Store,
    opts: &CertOptions,
    client: Option<&Client>,
    apiservice: Option<&str>,
) -> anyhow::Result<Outcome> {
    let outcome = match store {
        Store::Dir(dir) => {
            let (dir, opts) = (dir.clone(), opts.clone());
            // File I/O and key generation, off the async workers.
            tokio::task::spawn_blocking(move || ensure_dir(&dir, &opts))
                .await
                .context("the certificate task failed")??
        }
        Store::Secret { namespace, name } => {
            let client = client.with_context(|| format!("{store} needs a Kubernetes client"))?;
            ensure_secret(client.clone(), namespace, name, opts).await?
        }
    };
    // A comma-separated list of names.
    for apiservice in apiservice
        .into_iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let client = client.with_context(|| {
            format!("patching APIService {apiservice} needs a Kubernetes client")
        })?;
        if patch_ca_bundle(client.clone(), apiservice, outcome.ca_pem()).await? {
            info!(apiservice, "set the APIService caBundle to the current CA");
        }
    }
    Ok(outcome)
}

/// Keep the certificates in `store` valid for as long as the task runs (`eventscale run
/// --renew-certs`). Contract:
///
/// - A pass ([`renew_once`]) runs at once, then every `every` (at least one second; late
///   ticks are delayed, not bunched), and whenever `wake` is notified (the reload watch
///   does when the served certificate has expired, see
///   [`crate::cert_reload::ReloadingCert::renew_when_expired`]). Each pass is bounded by a
///   timeout of one minute.
/// - It never returns and never panics: a failed pass is logged (warn, naming the store)
///   and retried at the next tick. Stop it by aborting or dropping its task.
/// - A change is logged at info with what was done and why; an unchanged pass is silent.
/// - With `apiservice`, each pass also puts the CA into that APIService's `caBundle` when
///   it differs, so a re-applied manifest's stale value is repaired (needs `client`, as does
///   a Secret store; without it each pass fails and says so).
/// - A renewed pair reaches the TLS server through [`crate::cert_reload::ReloadingCert`]
///   watching the files (for a Secret, once the kubelet refreshes the mounted volume).
/// - Several replicas: give them one Secret store; concurrent updates conflict and the
///   loser keeps the winner's certificates at its next pass. Replicas with a directory
///   each would each make their own CA and fight over the `caBundle`.
pub async fn renew_loop(
    store: Store,
    opts: CertOptions,
    client: Option<Client>,
    apiservice: Option<String>,
    every: std::time::Duration,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = wake.notified() => {}
        }
        let pass = renew_once(&store, &opts, client.as_ref(), apiservice.as_deref());
        match tokio::time::timeout(PASS_TIMEOUT, pass).await {
            Ok(Ok(o)) if o.changed() => info!(
                store = %store,
                ca_created = o.ca_created,
                leaf_issued = o.leaf_issued,
                reason = %o.reason,
                "{}",
                o.summary()
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(
                store = %store,
                error = format!("{e:#}"),
                "certificate renewal failed; retrying at the next check"
            ),
            Err(_) => warn!(
                store = %store,
                timeout_seconds = PASS_TIMEOUT.as_secs(),
                "certificate renewal timed out; retrying at the next check"
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

    /// A fresh, empty directory for one test.
    fn temp_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("eventscale-certs-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn names_cover_the_service_forms() {
        assert_eq!(
            service_dns_names("a", "b"),
            ["a", "a.b", "a.b.svc", "a.b.svc.cluster.local"]
        );
    }

    #[test]
    fn days_and_options_are_checked() {
        for (input, want) in [
            ("90d", Some(90)),
            ("90", Some(90)),
            ("0d", Some(0)),
            ("-1d", None),
            ("90h", None),
            ("d", None),
            ("", None),
            ("99999999999d", None),
        ] {
            assert_eq!(parse_days(input).ok(), want, "{input:?}");
        }
        assert!(opts().validate().is_ok());
        let bad = [
            CertOptions {
                leaf_days: 0,
                ..opts()
            },
            CertOptions {
                ca_days: MAX_DAYS + 1,
                ..opts()
            },
            CertOptions {
                renew_before_days: 3650,
                ..opts()
            },
            CertOptions {
                renew_before_days: -1,
                ..opts()
            },
            CertOptions::new("bad name", "ns"),
        ];
        for o in bad {
            let err = plan(&Pems::default(), &o, OffsetDateTime::now_utc())
                .expect_err("refused")
                .to_string();
            assert!(err.starts_with("--"), "{err}");
        }
        // A renewal window longer than the leaf's life is allowed: it forces a reissue.
        let now = OffsetDateTime::now_utc();
        let force_leaf = CertOptions {
            renew_before_days: 400,
            ..opts()
        };
        let first = plan(&Pems::default(), &opts(), now).expect("plan");
        let o = plan(&first.pems, &force_leaf, now).expect("plan");
        assert!(o.leaf_issued && !o.ca_created, "{}", o.reason);
    }

    #[test]
    fn generates_once_then_keeps_everything() {
        let now = OffsetDateTime::now_utc();
        let first = plan(&Pems::default(), &opts(), now).expect("plan");
        assert!(first.ca_created && first.leaf_issued);
        assert_eq!(first.reason, "no CA yet");
        assert!(first.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let again = plan(&first.pems, &opts(), now).expect("plan");
        assert!(!again.changed(), "{}", again.reason);
        assert_eq!(again.summary(), "kept the existing certificates");
        assert_eq!(again.pems, first.pems);
    }

    #[test]
    fn an_expiring_leaf_is_renewed_under_the_same_ca() {
        let now = OffsetDateTime::now_utc();
        let first = plan(&Pems::default(), &opts(), now).expect("plan");
        // 300 days later the 365-day leaf is within the 90-day window; the CA is not.
        let later = plan(&first.pems, &opts(), now + Duration::days(300)).expect("plan");
        assert!(!later.ca_created && later.leaf_issued, "{}", later.reason);
        assert_eq!(later.reason, "the serving certificate expires in 65 days");
        assert_eq!(
            later.pems.ca_crt, first.pems.ca_crt,
            "the CA stays byte-identical"
        );
        assert_eq!(later.pems.ca_key, first.pems.ca_key);
        assert_ne!(later.pems.tls_crt, first.pems.tls_crt);
        assert_ne!(later.pems.tls_key, first.pems.tls_key);
        // The renewed leaf is accepted as is at that time.
        assert!(!plan(&later.pems, &opts(), now + Duration::days(300))
            .expect("plan")
            .changed());
        // Past its end, the leaf is reported expired.
        let expired = plan(&first.pems, &opts(), now + Duration::days(400)).expect("plan");
        assert_eq!(expired.reason, "the serving certificate has expired");
    }

    #[test]
    fn an_expiring_ca_is_replaced_with_its_leaf_and_leaves_never_outlive_it() {
        let now = OffsetDateTime::now_utc();
        let first = plan(&Pems::default(), &opts(), now).expect("plan");
        let later = now + Duration::days(3600);
        let o = plan(&first.pems, &opts(), later).expect("plan");
        assert!(o.ca_created && o.leaf_issued, "{}", o.reason);
        assert_eq!(o.reason, "the CA expires in 50 days");
        assert_ne!(o.pems.ca_crt, first.pems.ca_crt);
        assert!(!plan(&o.pems, &opts(), later).expect("plan").changed());

        // Under a CA with 200 days left, a 365-day leaf ends with the CA.
        let short_ca = plan(
            &Pems::default(),
            &CertOptions {
                ca_days: 200,
                ..opts()
            },
            now,
        )
        .expect("plan");
        let end = |pem: &str| {
            let der = parse_pem_cert(pem).expect("pem");
            parse_x509(&der)
                .expect("x509")
                .validity()
                .not_after
                .timestamp()
        };
        assert_eq!(
            end(&short_ca.pems.tls_crt),
            end(&short_ca.pems.ca_crt),
            "the leaf is cut at the CA's notAfter"
        );
    }

    #[test]
    fn a_leaf_missing_one_name_is_reissued() {
        let now = OffsetDateTime::now_utc();
        let mine = plan(&Pems::default(), &opts(), now).expect("plan").pems;
        let mut names = service_dns_names("svc", "ns");
        let dropped = names.pop().expect("four names");
        let (tls_crt, tls_key) = sign_leaf(
            names,
            &mine.ca_crt,
            &mine.ca_key,
            now,
            now + Duration::days(365),
        )
        .expect("leaf");
        let partial = Pems {
            tls_crt,
            tls_key,
            ..mine.clone()
        };
        let o = plan(&partial, &opts(), now).expect("plan");
        assert!(o.leaf_issued && !o.ca_created, "{}", o.reason);
        assert!(
            o.reason.starts_with(&format!(
                "the serving certificate does not verify for {dropped}"
            )),
            "{}",
            o.reason
        );
        assert_eq!(o.pems.ca_crt, mine.ca_crt);
        assert!(!plan(&o.pems, &opts(), now).expect("plan").changed());
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
        // Valid names, but signed by another CA.
        let other_ca = plan(&Pems::default(), &opts(), now).expect("plan").pems;
        let foreign = Pems {
            tls_crt: other_ca.tls_crt.clone(),
            tls_key: other_ca.tls_key.clone(),
            ..mine.clone()
        };
        let o = plan(&foreign, &opts(), now).expect("plan");
        assert!(o.leaf_issued && !o.ca_created, "{}", o.reason);
        // Same CA subject, other key: refused by signature (or as an unknown issuer).
        assert!(
            o.reason.contains("BadSignature") || o.reason.contains("UnknownIssuer"),
            "{}",
            o.reason
        );
        let wrong_key = Pems {
            tls_key: other.tls_key.clone(),
            ..mine.clone()
        };
        let o = plan(&wrong_key, &opts(), now).expect("plan");
        assert_eq!(o.reason, "tls.key does not match tls.crt");
        let no_key = Pems {
            tls_key: String::new(),
            ..mine.clone()
        };
        assert_eq!(
            plan(&no_key, &opts(), now).expect("plan").reason,
            "tls.key is missing"
        );
        let garbage_leaf = Pems {
            tls_crt: "junk".into(),
            ..mine.clone()
        };
        let o = plan(&garbage_leaf, &opts(), now).expect("plan");
        assert!(o.leaf_issued && !o.ca_created, "{}", o.reason);
        assert_eq!(o.reason, "tls.crt: no certificate");
    }

    #[test]
    fn an_unusable_ca_is_replaced() {
        let now = OffsetDateTime::now_utc();
        let mine = plan(&Pems::default(), &opts(), now).expect("plan").pems;
        let other = plan(&Pems::default(), &opts(), now).expect("plan").pems;
        for (pems, reason) in [
            (
                Pems {
                    ca_crt: "junk".into(),
                    ..mine.clone()
                },
                "ca.crt: no certificate",
            ),
            (
                Pems {
                    ca_key: other.ca_key.clone(),
                    ..mine.clone()
                },
                "ca.key does not match ca.crt",
            ),
            (
                Pems {
                    ca_key: String::new(),
                    ..mine.clone()
                },
                "ca.key is missing",
            ),
            (
                // A serving certificate is no CA.
                Pems {
                    ca_crt: mine.tls_crt.clone(),
                    ca_key: mine.tls_key.clone(),
                    ..mine.clone()
                },
                "ca.crt is not a CA certificate",
            ),
        ] {
            let o = plan(&pems, &opts(), now).expect("plan");
            assert!(o.ca_created && o.leaf_issued, "{}", o.reason);
            assert_eq!(o.reason, reason);
        }
    }

    #[test]
    fn the_secret_path_decides_from_the_secret_data() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(pems_from_secret(None), Pems::default());
        let first = plan(&pems_from_secret(None), &opts(), now).expect("plan");
        assert!(first.ca_created);

        // Stored, read back, nothing to do; other keys and labels survive an update.
        let mut existing = secret_with(None, "ns", "certs", &first.pems).expect("secret");
        assert_eq!(existing.type_.as_deref(), Some("kubernetes.io/tls"));
        existing
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("extra".into(), ByteString(b"kept".to_vec()));
        existing.metadata.resource_version = Some("7".into());
        let read = pems_from_secret(Some(&existing));
        assert_eq!(read, first.pems);
        assert!(!plan(&read, &opts(), now).expect("plan").changed());

        // Only the CA in it (e.g. written by hand): a leaf is issued under it.
        let mut ca_only = existing.clone();
        if let Some(d) = ca_only.data.as_mut() {
            d.remove("tls.crt");
            d.remove("tls.key");
        }
        let o = plan(&pems_from_secret(Some(&ca_only)), &opts(), now).expect("plan");
        assert!(o.leaf_issued && !o.ca_created, "{}", o.reason);
        assert_eq!(o.pems.ca_crt, first.pems.ca_crt);
        let updated = secret_with(Some(ca_only), "ns", "certs", &o.pems).expect("secret");
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
        let data = updated.data.as_ref().expect("data");
        assert_eq!(
            data.get("extra").map(|b| b.0.as_slice()),
            Some(&b"kept"[..])
        );
        assert_eq!(pems_from_secret(Some(&updated)), o.pems);

        // Bytes that are not PEM: reissued, not a crash.
        let mut binary = existing.clone();
        if let Some(d) = binary.data.as_mut() {
            d.insert("tls.crt".into(), ByteString(vec![0xff, 0xfe, 0x00]));
        }
        let o = plan(&pems_from_secret(Some(&binary)), &opts(), now).expect("plan");
        assert!(o.leaf_issued && !o.ca_created, "{}", o.reason);

        // A Secret of another type cannot become a TLS Secret.
        let opaque = Secret {
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        let err = secret_with(Some(opaque), "ns", "certs", &o.pems)
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with("Secret ns/certs has type Opaque"), "{err}");
    }

    #[test]
    fn the_directory_store_is_idempotent_private_and_loadable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("dir");
        let made = ensure_dir(&dir, &opts()).expect("generated");
        assert!(made.ca_created && made.leaf_issued);
        let files = read_dir(&dir).expect("read");
        assert_eq!(files, made.pems);
        let kept = ensure_dir(&dir, &opts()).expect("kept");
        assert!(!kept.changed(), "{}", kept.reason);
        assert_eq!(read_dir(&dir).expect("read"), files);
        for (file, mode) in [
            ("ca.key", 0o600),
            ("tls.key", 0o600),
            ("ca.crt", 0o644),
            ("tls.crt", 0o644),
        ] {
            let m = std::fs::metadata(dir.join(file)).expect(file).permissions();
            assert_eq!(m.mode() & 0o777, mode, "{file}");
        }
        // No temporary files are left behind.
        let mut names = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        names.sort();
        assert_eq!(names, [".lock", "ca.crt", "ca.key", "tls.crt", "tls.key"]);
        let cfg = crate::server::tls_config(&dir.join("tls.crt"), &dir.join("tls.key"));
        assert!(cfg.is_ok(), "{:?}", cfg.err());

        // A removed serving key: a new pair under the same CA, files replaced in place.
        std::fs::remove_file(dir.join("tls.key")).expect("remove");
        let o = ensure_dir(&dir, &opts()).expect("reissued");
        assert!(o.leaf_issued && !o.ca_created, "{}", o.reason);
        assert_eq!(o.reason, "tls.key is missing");
        let now = read_dir(&dir).expect("read");
        assert_eq!((&now.ca_crt, &now.ca_key), (&files.ca_crt, &files.ca_key));
        assert_ne!(now.tls_crt, files.tls_crt);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_valid_directory_is_only_read() {
        let dir = temp_dir("ro");
        ensure_dir(&dir, &opts()).expect("generated");
        let lock = dir.join(".lock");
        std::fs::remove_file(&lock).expect("lock file");
        let modified = |f: &str| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        };
        let before = ["ca.crt", "ca.key", "tls.crt", "tls.key"].map(modified);
        assert!(!ensure_dir(&dir, &opts()).expect("kept").changed());
        // No lock taken, no file touched: a read-only mount of valid files is fine.
        assert!(!lock.exists());
        assert_eq!(
            ["ca.crt", "ca.key", "tls.crt", "tls.key"].map(modified),
            before
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn renew_once_needs_a_client_for_the_cluster_and_names_the_store() {
        let dir = temp_dir("once");
        let o = renew_once(&Store::Dir(dir.clone()), &opts(), None, None)
            .await
            .expect("dir pass");
        assert!(o.changed());
        let err = renew_once(&Store::Dir(dir.clone()), &opts(), None, Some(APISERVICE))
            .await
            .expect_err("no client")
            .to_string();
        assert_eq!(
            err,
            format!("patching APIService {APISERVICE} needs a Kubernetes client")
        );
        let secret = Store::Secret {
            namespace: "ns".into(),
            name: "certs".into(),
        };
        let err = renew_once(&secret, &opts(), None, None)
            .await
            .expect_err("no client")
            .to_string();
        assert_eq!(err, "Secret ns/certs needs a Kubernetes client");
        // Errors in a directory name it.
        let file = dir.join("ca.crt");
        let err = renew_once(&Store::Dir(file.clone()), &opts(), None, None)
            .await
            .expect_err("not a directory");
        assert!(
            format!("{err:#}").contains(&file.display().to_string()),
            "{err:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The directory's serving pair replaced by one under its CA that expired an hour ago.
    fn expire_leaf(dir: &Path) -> String {
        let pems = read_dir(dir).expect("read");
        let now = OffsetDateTime::now_utc();
        let (crt, key) = sign_leaf(
            service_dns_names("svc", "ns"),
            &pems.ca_crt,
            &pems.ca_key,
            now - Duration::hours(2),
            now - Duration::hours(1),
        )
        .expect("expired leaf");
        write_atomic(&dir.join("tls.key"), &key, 0o600).expect("key");
        write_atomic(&dir.join("tls.crt"), &crt, 0o644).expect("crt");
        crt
    }

    /// Hourly passes, and one at once when woken: an expired leaf put in the directory
    /// after the first pass is reissued without waiting for the hour.
    #[tokio::test]
    async fn a_woken_renewal_loop_renews_at_once() {
        let dir = temp_dir("wake");
        ensure_dir(&dir, &opts()).expect("certificates");
        let expired = expire_leaf(&dir);
        let wake = Arc::new(tokio::sync::Notify::new());
        let renewing = tokio::spawn(renew_loop(
            Store::Dir(dir.clone()),
            opts(),
            None,
            None,
            std::time::Duration::from_secs(3600),
            wake.clone(),
        ));
        let renewed_from = |old: &str| {
            let dir = dir.clone();
            let old = old.to_string();
            async move {
                for _ in 0..500 {
                    let now = std::fs::read_to_string(dir.join("tls.crt")).unwrap_or_default();
                    if now != old && !now.is_empty() {
                        return now;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                panic!("the serving certificate was not renewed within 5 s");
            }
        };
        // The first pass, at once, renews the expired leaf.
        renewed_from(&expired).await;
        // Expired again after it: the next tick is an hour away, a wake renews it now.
        let expired = expire_leaf(&dir);
        wake.notify_one();
        let renewed = renewed_from(&expired).await;
        let pems = read_dir(&dir).expect("read");
        assert_eq!(pems.tls_crt, renewed);
        assert!(leaf_problem(&pems, &opts(), OffsetDateTime::now_utc()).is_none());
        renewing.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
