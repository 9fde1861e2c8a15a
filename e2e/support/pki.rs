//! Certificates and keys made with the `openssl` command, as operators make them: X.509
//! version 1 certificates (`openssl x509 -req` without an extensions file), expired ones,
//! encrypted keys. Shared by the tests of several crates (included with `#[path]`; each has
//! rustls-pemfile).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of certificates and keys, removed when dropped.
pub struct Pki {
    dir: PathBuf,
}

/// Key types the certificates are made with.
#[derive(Debug, Clone, Copy)]
pub enum KeyType {
    /// ECDSA P-256.
    Ec,
    /// RSA 2048.
    Rsa,
}

impl KeyType {
    /// `openssl req` options making a key of this type.
    fn args(self) -> &'static [&'static str] {
        match self {
            KeyType::Ec => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::Rsa => &["-newkey", "rsa:2048"],
        }
    }

    /// `openssl genpkey` options making a key of this type.
    fn genpkey_args(self) -> &'static [&'static str] {
        match self {
            KeyType::Ec => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::Rsa => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        }
    }
}

impl Pki {
    /// An empty directory for `name` (unique per process and name).
    pub fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("eventscale-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the PKI directory");
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run `openssl args` in the directory; its standard output.
    pub fn openssl(&self, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("the openssl command runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A CA `name` (`name.crt`, `name.key`): version 3 with basicConstraints CA:TRUE, or
    /// with `v1` a self-signed version 1 certificate.
    pub fn ca(&self, name: &str, key: KeyType, v1: bool) {
        let (crt, k, subj) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("/CN={name}"),
        );
        let mut args = vec!["req", "-nodes", "-keyout", &k, "-subj", &subj];
        args.extend_from_slice(key.args());
        if v1 {
            let csr = format!("{name}.csr");
            args.extend_from_slice(&["-new", "-out", &csr]);
            self.openssl(&args);
            self.openssl(&[
                "x509", "-req", "-in", &csr, "-signkey", &k, "-days", "2", "-out", &crt,
            ]);
        } else {
            args.extend_from_slice(&[
                "-x509",
                "-days",
                "2",
                "-out",
                &crt,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            self.openssl(&args);
        }
    }

    /// A certificate `name` for `subject` issued by CA `issuer`, valid for `days` (negative:
    /// expired), version 1 unless `extensions` (openssl extension lines) are given.
    pub fn leaf(
        &self,
        name: &str,
        subject: &str,
        issuer: &str,
        key: KeyType,
        days: i32,
        extensions: Option<&str>,
    ) {
        let (csr, k, crt) = (
            format!("{name}.csr"),
            format!("{name}.key"),
            format!("{name}.crt"),
        );
        let mut args = vec![
            "req", "-new", "-nodes", "-keyout", &k, "-out", &csr, "-subj", subject,
        ];
        args.extend_from_slice(key.args());
        self.openssl(&args);
        let (ca, ca_key, days, ext) = (
            format!("{issuer}.crt"),
            format!("{issuer}.key"),
            days.to_string(),
            format!("{name}.ext"),
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            &days,
            "-out",
            &crt,
        ];
        if let Some(lines) = extensions {
            std::fs::write(self.dir.join(&ext), lines).expect("writing the extensions file");
            args.extend_from_slice(&["-extfile", &ext]);
        }
        self.openssl(&args);
    }

    /// A private key `name` (`name.key`, PKCS#8 PEM): its PEM.
    pub fn key(&self, name: &str, key: KeyType) -> String {
        let file = format!("{name}.key");
        let mut args = vec!["genpkey"];
        args.extend_from_slice(key.genpkey_args());
        args.extend_from_slice(&["-out", &file]);
        self.openssl(&args);
        self.read(&file)
    }

    /// The public half of key `name` (`name.key`), SubjectPublicKeyInfo PEM.
    pub fn public_key(&self, name: &str) -> String {
        self.openssl(&["pkey", "-in", &format!("{name}.key"), "-pubout"])
    }

    /// The text of file `name` in the directory.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).expect("reading a PKI file")
    }

    /// The DER of certificate `name` (`name.crt`).
    pub fn der(&self, name: &str) -> Vec<u8> {
        let pem = self.read(&format!("{name}.crt"));
        let cert = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("a certificate")
            .expect("PEM");
        cert.to_vec()
    }

    /// The key of `name` encrypted as PKCS#8 with `password` (`openssl pkcs8 -topk8` and
    /// `options`, e.g. `-v2 aes-256-cbc`).
    pub fn encrypted_key(&self, name: &str, password: &str, options: &[&str]) -> String {
        let (k, pass) = (format!("{name}.key"), format!("pass:{password}"));
        let mut args = vec!["pkcs8", "-topk8", "-in", &k, "-passout", &pass];
        args.extend_from_slice(options);
        self.openssl(&args)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
