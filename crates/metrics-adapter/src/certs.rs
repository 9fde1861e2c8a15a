//! `eventscale certs`: a CA and a serving certificate for the adapter, made in Rust.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// What to generate.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Directory receiving `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
    pub dir: PathBuf,
    /// The Service name the APIService points at.
    pub service: String,
    /// The Service's namespace.
    pub namespace: String,
    /// CA lifetime in days.
    pub ca_days: i64,
    /// Serving certificate lifetime in days.
    pub leaf_days: i64,
    /// Replace existing files.
    pub force: bool,
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

fn write(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}

/// Generate the CA and serving pair unless all four files exist (or `force`).
/// Returns whether anything was written.
pub fn ensure(opts: &CertOptions) -> anyhow::Result<bool> {
    let files = ["ca.crt", "ca.key", "tls.crt", "tls.key"].map(|f| opts.dir.join(f));
    if !opts.force && files.iter().all(|f| f.is_file()) {
        return Ok(false);
    }
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let now = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate().context("generating the CA key")?;
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
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

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
    let leaf_key = KeyPair::generate().context("generating the serving key")?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .context("signing the serving certificate")?;

    write(&files[0], &ca_cert.pem(), false)?;
    write(&files[1], &ca_key_pem, true)?;
    write(&files[2], &leaf_cert.pem(), false)?;
    write(&files[3], &leaf_key.serialize_pem(), true)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_the_pair_loads() {
        let dir =
            std::env::temp_dir().join(format!("eventscale-certs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = CertOptions {
            dir: dir.clone(),
            service: "svc".into(),
            namespace: "ns".into(),
            ca_days: 3650,
            leaf_days: 365,
            force: false,
        };
        assert!(ensure(&opts).expect("generated"));
        assert!(!ensure(&opts).expect("kept"), "existing files are reused");
        let cfg = crate::server::tls_config(&dir.join("tls.crt"), &dir.join("tls.key"));
        assert!(cfg.is_ok(), "{:?}", cfg.err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_cover_the_service_forms() {
        assert_eq!(
            service_dns_names("a", "b"),
            ["a", "a.b", "a.b.svc", "a.b.svc.cluster.local"]
        );
    }
}
