//! The serving certificate, reloaded from disk when its files change: no restart, no
//! dropped requests (a handshake uses the pair current when it starts).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{debug, info, warn};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Warn when the serving certificate expires within this long.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// While it does, repeat the warning this often (and at every new pair).
const EXPIRY_WARNING_EVERY: Duration = Duration::from_secs(3600);

/// While the served certificate stays expired, its renewal is asked for again this often
/// (a renewal that fails, in a read-only directory say, is not retried at every check).
const RENEWAL_RETRY: Duration = Duration::from_secs(60);

/// The shortest watch interval; zero would make `tokio::time::interval` panic.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The contents of the certificate file and the key file.
type Files = (Vec<u8>, Vec<u8>);

/// What is being served: the pair, the file contents it came from, and facts for logs.
struct Current {
    key: Arc<CertifiedKey>,
    files: Files,
    serial: String,
    not_after: i64,
}

/// Something wrong with the files, remembered so that a pair that stays broken is
/// reported once rather than at every check.
#[derive(Debug, PartialEq)]
enum Problem {
    Unreadable(String),
    Unusable(Files),
}

/// A `ResolvesServerCert` over `tls.crt`/`tls.key` files that may be replaced at any time
/// (by `eventscale certs`, cert-manager, or a Secret volume's symlink swap).
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    /// Swapped whole; the lock is only held to clone or replace the `Arc`.
    current: RwLock<Arc<Current>>,
    last_problem: Mutex<Option<Problem>>,
    expiry_warned: Mutex<Option<Instant>>,
    renewal: Mutex<Option<Renewal>>,
}

/// Who renews the files (`--renew-certs`), and when it was last asked to.
struct Renewal {
    wake: Arc<tokio::sync::Notify>,
    asked: Option<Instant>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// A poisoned lock only means another thread panicked while holding it; the value (an
/// `Arc` or a note for logs) is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read(cert: &Path, key: &Path) -> anyhow::Result<Files> {
    Ok((
        std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
        std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
    ))
}

/// The pair in `files` (the contents of `cert` and `key`, which name them in errors),
/// refused unless the key belongs to the first certificate.
fn build(cert: &Path, key: &Path, files: Files) -> anyhow::Result<Current> {
    let chain = rustls_pemfile::certs(&mut files.0.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let private = rustls_pemfile::private_key(&mut files.1.as_slice())
        .with_context(|| format!("parsing {}", key.display()))?
        .with_context(|| format!("no private key in {}", key.display()))?;
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
    let leaf = certified
        .end_entity_cert()
        .with_context(|| format!("no certificate in {}", cert.display()))?;
    let (_, parsed) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: unparsable certificate: {e}", cert.display()))?;
    Ok(Current {
        serial: parsed.raw_serial_as_string(),
        not_after: parsed.validity().not_after.timestamp(),
        key: Arc::new(certified),
        files,
    })
}

/// A warning for a certificate ending at `not_after` seen at `now` (Unix seconds): the
/// message and the hours left (negative once expired).
fn expiry_warning(not_after: i64, now: i64) -> Option<(&'static str, i64)> {
    let left = not_after - now;
    let hours = left.div_euclid(3600);
    if left <= 0 {
        Some((
            "the serving certificate has EXPIRED; clients refuse it until it is renewed",
            hours,
        ))
    } else if left < EXPIRY_WARNING.as_secs() as i64 {
        Some(("the serving certificate expires within 7 days", hours))
    } else {
        None
    }
}

/// Unix seconds as RFC 3339, for logs.
fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| secs.to_string())
}

impl ReloadingCert {
    /// Load the pair; an error names the file at fault, or both when the key does not
    /// belong to the certificate.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let current = build(cert, key, read(cert, key)?)?;
        let this = Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(current)),
            last_problem: Mutex::new(None),
            expiry_warned: Mutex::new(None),
            renewal: Mutex::new(None),
        });
        info!(
            cert = %cert.display(),
            serial = %this.current().serial,
            not_after = %rfc3339(this.current().not_after),
            "serving certificate loaded"
        );
        this.check_expiry(true);
        Ok(this)
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The serial number (hex, colon-separated) and notAfter (Unix seconds) served now.
    pub fn serving(&self) -> (String, i64) {
        let c = self.current();
        (c.serial.clone(), c.not_after)
    }

    /// Warn when the served certificate has expired or expires soon: always when
    /// `always`, else at most once per [`EXPIRY_WARNING_EVERY`].
    fn check_expiry(&self, always: bool) {
        let c = self.current();
        let Some((message, hours_left)) =
            expiry_warning(c.not_after, chrono::Utc::now().timestamp())
        else {
            return;
        };
        let mut warned = lock(&self.expiry_warned);
        if !always && warned.is_some_and(|t| t.elapsed() < EXPIRY_WARNING_EVERY) {
            return;
        }
        *warned = Some(Instant::now());
        warn!(
            cert = %self.cert.display(),
            serial = %c.serial,
            not_after = %rfc3339(c.not_after),
            hours_left,
            "{message}"
        );
    }

    /// Wake `renewer` (the `--renew-certs` loop) when a check finds the served certificate
    /// expired: at once, then at most every [`RENEWAL_RETRY`] while it stays expired. The
    /// loop's own schedule is hourly; a pair that arrives expired (a stale Secret, a
    /// restored backup) would otherwise be served, and refused by every client, until then.
    pub fn renew_when_expired(&self, renewer: Arc<tokio::sync::Notify>) {
        *lock(&self.renewal) = Some(Renewal {
            wake: renewer,
            asked: None,
        });
    }

    /// Ask for a renewal when the served certificate has expired at `now` (Unix seconds)
    /// and one was not asked for within [`RENEWAL_RETRY`]; whether it was asked.
    fn ask_renewal_if_expired(&self, now: i64) -> bool {
        let c = self.current();
        if c.not_after > now {
            return false;
        }
        let mut renewal = lock(&self.renewal);
        let Some(r) = renewal.as_mut() else {
            return false;
        };
        if r.asked.is_some_and(|t| t.elapsed() < RENEWAL_RETRY) {
            return false;
        }
        r.asked = Some(Instant::now());
        r.wake.notify_one();
        info!(
            cert = %self.cert.display(),
            serial = %c.serial,
            not_after = %rfc3339(c.not_after),
            "the serving certificate has expired; renewing it now"
        );
        true
    }

    /// Log a problem with the files the first time it is seen.
    fn report(&self, problem: Problem, error: &anyhow::Error) {
        let mut last = lock(&self.last_problem);
        if last.as_ref() == Some(&problem) {
            debug!(
                error = format!("{error:#}"),
                "certificate files still not usable"
            );
            return;
        }
        let message = match problem {
            Problem::Unreadable(_) => {
                "the certificate files cannot be read; keeping the current pair"
            }
            // Possibly a writer half-way through replacing the pair: the next check retries.
            Problem::Unusable(_) => {
                "the new certificate files are not usable yet; keeping the current pair"
            }
        };
        warn!(
            cert = %self.cert.display(),
            key = %self.key.display(),
            error = format!("{error:#}"),
            "{message}"
        );
        *last = Some(problem);
    }

    /// Read the files again; swap in the pair when they changed and are valid together.
    /// Returns whether a new pair is served. Blocking (file reads): call it off the async
    /// workers, as [`Self::spawn_watch`] does.
    pub fn reload(&self) -> bool {
        let files = match read(&self.cert, &self.key) {
            Ok(f) => f,
            Err(e) => {
                self.report(Problem::Unreadable(format!("{e:#}")), &e);
                return false;
            }
        };
        // Contents, not times: a Secret volume swaps a symlink and keeps old mtimes.
        if self.current().files == files {
            // Back to the served pair (a broken write undone): report the next problem.
            *lock(&self.last_problem) = None;
            return false;
        }
        match build(&self.cert, &self.key, files.clone()) {
            Ok(next) => {
                info!(
                    cert = %self.cert.display(),
                    serial = %next.serial,
                    not_after = %rfc3339(next.not_after),
                    "serving a new certificate"
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
                *lock(&self.last_problem) = None;
                self.check_expiry(true);
                true
            }
            Err(e) => {
                self.report(Problem::Unusable(files), &e);
                false
            }
        }
    }

    /// Check the files every `interval` (10 ms at least) until the task is aborted or
    /// the runtime stops; also repeats the expiry warning hourly while it applies, and asks
    /// for a renewal while the served certificate has expired (see
    /// [`Self::renew_when_expired`]).
    pub fn spawn_watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(MIN_INTERVAL));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let me = this.clone();
                // File reads and parsing off the async workers.
                let checked = tokio::task::spawn_blocking(move || {
                    me.reload();
                    me.check_expiry(false);
                    me.ask_renewal_if_expired(chrono::Utc::now().timestamp());
                })
                .await;
                if let Err(e) = checked {
                    warn!(cert = %this.cert.display(), error = %e, "checking the certificate files failed");
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{ensure_dir, CertOptions};
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("eventscale-reload-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Certificates in `dir`: made when missing, and with `rotate: Leaf` a new serving
    /// pair under the same CA, with `rotate: All` a new CA too.
    fn certs(dir: &Path, rotate: Rotate) {
        let mut opts = CertOptions::new("svc", "ns");
        match rotate {
            Rotate::No => {}
            // A renewal window longer than the leaf's life reissues the leaf, CA kept.
            Rotate::Leaf => opts.renew_before_days = 400,
            Rotate::All => opts.force = true,
        }
        ensure_dir(dir, &opts).expect("certificates");
    }

    #[derive(Clone, Copy)]
    enum Rotate {
        No,
        Leaf,
        All,
    }

    /// The serial a TLS client trusting `ca_pem` sees for `localhost`, or why it could not.
    async fn served_serial(addr: std::net::SocketAddr, ca_pem: &[u8]) -> Result<String, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &*ca_pem) {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no peer certificate")?
            .clone();
        let mut buf = [0u8; 1];
        let _ = tls.read(&mut buf).await;
        let (_, parsed) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| e.to_string())?;
        Ok(parsed.raw_serial_as_string())
    }

    /// A TLS server on 127.0.0.1 serving whatever `certs` resolves.
    async fn serve(certs: Arc<ReloadingCert>) -> std::net::SocketAddr {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(certs);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
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
        addr
    }

    /// Wait, up to 10 s, until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the watch has looked at the files as they are now and refused them.
    fn refused_current_files(r: &ReloadingCert) -> bool {
        let files = read(&r.cert, &r.key).expect("files");
        *lock(&r.last_problem) == Some(Problem::Unusable(files))
    }

    #[tokio::test]
    async fn rotation_on_disk_is_served_and_a_bad_pair_is_ignored() {
        let dir = dir("rotate");
        certs(&dir, Rotate::No);
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let ca = std::fs::read(dir.join("ca.crt")).expect("ca");
        let reloading = ReloadingCert::load(&crt, &key).expect("load");
        let addr = serve(reloading.clone()).await;
        let first = served_serial(addr, &ca).await.expect("first");
        assert_eq!(first, reloading.serving().0);
        assert!(!reloading.reload(), "unchanged files are not reloaded");

        // A new serving pair under the same CA: the watch serves it, clients holding the
        // CA they had keep trusting it.
        let watch = reloading.spawn_watch(Duration::from_millis(20));
        certs(&dir, Rotate::Leaf);
        assert_eq!(std::fs::read(dir.join("ca.crt")).expect("ca"), ca);
        until("the watch serves the new leaf", || {
            reloading.serving().0 != first
        })
        .await;
        let second = served_serial(addr, &ca).await.expect("second");
        assert_ne!(second, first);
        assert_eq!(second, reloading.serving().0);

        // Garbage in tls.crt: the watch refuses it and the old pair stays.
        std::fs::write(&crt, "not a certificate").expect("write");
        until("the watch refuses garbage", || {
            refused_current_files(&reloading)
        })
        .await;
        assert!(!reloading.reload());
        assert_eq!(served_serial(addr, &ca).await.expect("kept"), second);

        // A certificate that does not match the key: refused too.
        let other = dir.join("other");
        certs(&other, Rotate::No);
        std::fs::copy(other.join("tls.crt"), &crt).expect("copy");
        until("the watch refuses a mismatch", || {
            refused_current_files(&reloading)
        })
        .await;
        assert_eq!(served_serial(addr, &ca).await.expect("kept"), second);

        // `eventscale certs` repairs the directory; the watch serves the repaired pair.
        certs(&dir, Rotate::No);
        until("the watch serves the repaired pair", || {
            reloading.serving().0 != second
        })
        .await;
        let third = served_serial(addr, &ca).await.expect("third");
        assert_eq!(third, reloading.serving().0);
        assert!(lock(&reloading.last_problem).is_none());

        // A new CA: its leaf is served, and only clients given the new CA trust it.
        certs(&dir, Rotate::All);
        until("the watch serves the new CA's leaf", || {
            reloading.serving().0 != third
        })
        .await;
        let new_ca = std::fs::read(dir.join("ca.crt")).expect("ca");
        assert_eq!(
            served_serial(addr, &new_ca).await.expect("new CA"),
            reloading.serving().0
        );
        let refused = served_serial(addr, &ca).await.expect_err("old CA");
        // The new CA has the old one's subject, so the verifier finds the old CA as the
        // issuer by name and then the signature does not match.
        assert!(
            refused.contains("BadSignature") || refused.contains("UnknownIssuer"),
            "{refused}"
        );
        watch.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_names_the_file_at_fault() {
        let dir = dir("load");
        certs(&dir, Rotate::No);
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let missing = dir.join("missing.crt");
        let err = format!(
            "{:#}",
            ReloadingCert::load(&missing, &key).expect_err("missing")
        );
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let junk = dir.join("junk.key");
        std::fs::write(&junk, "junk").expect("write");
        let err = format!("{:#}", ReloadingCert::load(&crt, &junk).expect_err("junk"));
        assert_eq!(err, format!("no private key in {}", junk.display()));

        let other = dir.join("other");
        certs(&other, Rotate::No);
        let err = format!(
            "{:#}",
            ReloadingCert::load(&crt, &other.join("tls.key")).expect_err("mismatch")
        );
        assert!(err.contains("do not belong together"), "{err}");
        assert!(err.contains(&crt.display().to_string()), "{err}");

        let ok = ReloadingCert::load(&crt, &key).expect("load");
        let (serial, not_after) = ok.serving();
        assert!(!serial.is_empty());
        let days = (not_after - chrono::Utc::now().timestamp()) / 86_400;
        assert!((364..=365).contains(&days), "{days}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expiry_is_warned_a_week_ahead() {
        let now = 1_000_000_000;
        let day = 86_400;
        assert_eq!(expiry_warning(now + 30 * day, now), None);
        assert_eq!(expiry_warning(now + 7 * day, now), None);
        assert_eq!(
            expiry_warning(now + 7 * day - 1, now).map(|w| w.1),
            Some(167)
        );
        assert_eq!(expiry_warning(now + 3600, now).map(|w| w.1), Some(1));
        let expired = expiry_warning(now - 1, now).expect("expired");
        assert!(expired.0.contains("EXPIRED"));
        assert_eq!(expired.1, -1);
        assert!(expiry_warning(now, now)
            .expect("ends now")
            .0
            .contains("EXPIRED"));
    }

    /// A pair valid for `localhost` that expired an hour ago, self-signed (the reloader
    /// checks that the key matches, not who signed).
    fn write_expired(crt: &Path, key: &Path) {
        let k = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(2);
        p.not_after = now - time::Duration::hours(1);
        let c = p.self_signed(&k).expect("sign");
        std::fs::write(key, k.serialize_pem()).expect("key");
        std::fs::write(crt, c.pem()).expect("crt");
    }

    #[tokio::test]
    async fn an_expired_pair_wakes_the_renewal_at_once_then_once_a_minute() {
        let dir = dir("expired");
        certs(&dir, Rotate::No);
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let reloading = ReloadingCert::load(&crt, &key).expect("load");
        let wake = Arc::new(tokio::sync::Notify::new());
        let now = chrono::Utc::now().timestamp();
        // Nobody to wake: nothing asked, whatever the certificate.
        write_expired(&crt, &key);
        assert!(reloading.reload());
        assert!(!reloading.ask_renewal_if_expired(now));

        // The watch finds the expired pair and wakes the renewer.
        reloading.renew_when_expired(wake.clone());
        let watch = reloading.spawn_watch(Duration::from_millis(20));
        tokio::time::timeout(Duration::from_secs(10), wake.notified())
            .await
            .expect("the renewer is woken");
        // Still expired at the following checks: not asked again within a minute.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!reloading.ask_renewal_if_expired(chrono::Utc::now().timestamp()));
        watch.abort();
        // A minute later it is asked again.
        lock(&reloading.renewal).as_mut().expect("renewal").asked =
            Instant::now().checked_sub(RENEWAL_RETRY);
        assert!(reloading.ask_renewal_if_expired(chrono::Utc::now().timestamp()));
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("woken again");

        // A valid pair asks for nothing, however long since the last ask.
        certs(&dir, Rotate::Leaf);
        assert!(reloading.reload());
        lock(&reloading.renewal).as_mut().expect("renewal").asked = None;
        assert!(!reloading.ask_renewal_if_expired(chrono::Utc::now().timestamp()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
