//! The serving certificate, reloaded from disk when its files change: no restart, no
//! dropped requests (a handshake uses the pair current when it starts).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::server::load_pem;

/// Warn when the serving certificate expires within this long.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// What is being served: the pair, the file contents it came from, and facts for logs.
struct Current {
    key: Arc<CertifiedKey>,
    files: (Vec<u8>, Vec<u8>),
    serial: String,
    not_after: i64,
}

/// A `ResolvesServerCert` over `tls.crt`/`tls.key` files that may be replaced at any time
/// (by `eventscale certs`, cert-manager, or a Secret volume's symlink swap).
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Current>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

fn read(cert: &Path, key: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    Ok((
        std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
        std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
    ))
}

fn build(cert: &Path, key: &Path, files: (Vec<u8>, Vec<u8>)) -> anyhow::Result<Current> {
    let (chain, private) = load_pem(cert, key)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private)
        .with_context(|| format!("{}: unsupported private key type", key.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().with_context(|| {
        format!(
            "{} and {} do not belong together",
            cert.display(),
            key.display()
        )
    })?;
    let (_, parsed) = X509Certificate::from_der(certified.cert[0].as_ref())
        .map_err(|e| anyhow::anyhow!("{}: unparsable certificate: {e}", cert.display()))?;
    Ok(Current {
        serial: parsed.raw_serial_as_string(),
        not_after: parsed.validity().not_after.timestamp(),
        key: Arc::new(certified),
        files,
    })
}

impl ReloadingCert {
    /// Load the pair; an error names the file at fault.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let files = read(cert, key)?;
        let current = build(cert, key, files)?;
        let this = Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(current),
        });
        this.check_expiry();
        Ok(this)
    }

    /// The serial number (hex, colon-separated) and notAfter (Unix seconds) served now.
    pub fn serving(&self) -> (String, i64) {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        (c.serial.clone(), c.not_after)
    }

    fn check_expiry(&self) {
        let (serial, not_after) = self.serving();
        let left = not_after - chrono::Utc::now().timestamp();
        if left <= 0 {
            warn!(cert = %self.cert.display(), %serial, not_after, "the serving certificate has EXPIRED; clients will refuse it until it is renewed");
        } else if left < EXPIRY_WARNING.as_secs() as i64 {
            warn!(cert = %self.cert.display(), %serial, not_after, "the serving certificate expires in {} hours", left / 3600);
        }
    }

    /// Read the files again; swap in the pair when they changed and are valid together.
    /// Returns whether a new pair is served.
    pub fn reload(&self) -> bool {
        let files = match read(&self.cert, &self.key) {
            Ok(f) => f,
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "keeping the current serving certificate"
                );
                return false;
            }
        };
        if self.current.read().unwrap_or_else(|p| p.into_inner()).files == files {
            return false;
        }
        match build(&self.cert, &self.key, files) {
            Ok(next) => {
                info!(cert = %self.cert.display(), serial = %next.serial, not_after = next.not_after, "serving a new certificate");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
                self.check_expiry();
                true
            }
            Err(e) => {
                // A writer may be half-way through replacing the pair: try again next tick.
                warn!(
                    error = format!("{e:#}"),
                    "the new certificate files are not usable yet; keeping the current pair"
                );
                false
            }
        }
    }

    /// Check the files every `interval` until the task is dropped.
    pub fn spawn_watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let me = this.clone();
                // File reads and parsing off the async workers.
                let _ = tokio::task::spawn_blocking(move || me.reload()).await;
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .key
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{ensure_dir, CertOptions};
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fresh CA and serving pair in `dir`.
    fn ensure(dir: &Path) -> anyhow::Result<()> {
        let mut opts = CertOptions::new("svc", "ns");
        opts.force = true;
        ensure_dir(dir, &opts).map(|_| ())
    }

    /// The serial a TLS client sees, trusting `ca`.
    async fn served_serial(addr: std::net::SocketAddr, ca: &Path) -> String {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).expect("ca");
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut tls = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        tls.write_all(b"x").await.expect("write");
        let leaf = tls.get_ref().1.peer_certificates().expect("certs")[0].clone();
        let mut buf = [0u8; 1];
        let _ = tls.read(&mut buf).await;
        let (_, parsed) = X509Certificate::from_der(leaf.as_ref()).expect("parse");
        parsed.raw_serial_as_string()
    }

    #[tokio::test]
    async fn rotation_on_disk_is_served_and_a_bad_pair_is_ignored() {
        let dir = std::env::temp_dir().join(format!("eventscale-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ensure(&dir).expect("certs");
        let (crt, key, ca) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"));
        let reloading = ReloadingCert::load(&crt, &key).expect("load");
        let cfg = crate::server::server_config(reloading.clone(), true).expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(s).await {
                        let mut buf = [0u8; 1];
                        let _ = tls.read(&mut buf).await;
                        let _ = tls.write_all(b"y").await;
                    }
                });
            }
        });
        let first = served_serial(addr, &ca).await;
        assert_eq!(first, reloading.serving().0);
        assert!(!reloading.reload(), "unchanged files are not reloaded");

        // A new CA and leaf on disk: served after a reload, trusted through the new CA.
        ensure(&dir).expect("rotate");
        assert!(reloading.reload());
        let second = served_serial(addr, &ca).await;
        assert_ne!(first, second);

        // Garbage in tls.crt: the old pair stays.
        std::fs::write(&crt, "not a certificate").expect("write");
        assert!(!reloading.reload());
        assert_eq!(served_serial(addr, &ca).await, second);

        // A certificate that does not match the key: refused too.
        let other = dir.join("other");
        ensure(&other).expect("other pair");
        std::fs::copy(other.join("tls.crt"), &crt).expect("copy");
        assert!(!reloading.reload());
        assert_eq!(served_serial(addr, &ca).await, second);

        // The watch task picks up a good pair by itself.
        ensure(&dir).expect("rotate again");
        let watch = reloading.spawn_watch(Duration::from_millis(20));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reloading.serving().0 == second {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch never reloaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(served_serial(addr, &ca).await, reloading.serving().0);
        watch.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
