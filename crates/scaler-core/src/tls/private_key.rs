//! Encrypted client keys (`keyPassword`), read as KEDA reads them (`pkg/util/tls_config.go`
//! with Go's `youmark/pkcs8`): the key's first PEM block must be an encrypted PKCS#8 key
//! (`ENCRYPTED PRIVATE KEY`, PBES2 with PBKDF2 or scrypt); legacy PEM encryption
//! (`Proc-Type: 4,ENCRYPTED`), PBES1 and an unencrypted key with a password are refused,
//! as KEDA refuses them, but with a message that says which and what to do.

use pkcs8::der::pem::LineEnding;
use pkcs8::pkcs5::pbes2::Kdf;
use pkcs8::pkcs5::EncryptionScheme;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use x509_parser::asn1_rs::{Any, FromDer as _};

/// PBKDF2 rounds accepted: OpenSSL makes 2048, password-storage advice reaches 600 000.
/// The parameters come with the key, from whoever wrote the Secret, and are paid for on
/// every build of the trigger.
pub const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;
/// scrypt memory accepted (128·r·N bytes): OpenSSL's `-scrypt` default takes 16 MiB.
pub const MAX_SCRYPT_MEMORY: u64 = 64 << 20;
/// scrypt parallelization accepted (`p`, run one after another here).
pub const MAX_SCRYPT_PARALLELIZATION: u16 = 16;

/// The command that turns any key into one this module reads.
const CONVERT: &str = "openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key-encrypted.pem";

/// Why an encrypted key could not be read. The text never includes key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No PEM block at all.
    #[error("the key is not PEM (no -----BEGIN ...----- line)")]
    NotPem,
    /// A PEM block that does not end, or whose base64 is broken.
    #[error("the key's PEM is malformed: {0}")]
    BadPem(String),
    /// OpenSSL's legacy encryption of a PKCS#1 or SEC1 key.
    #[error(
        "the key uses legacy PEM encryption (Proc-Type: 4,ENCRYPTED), which KEDA does not read \
         either; convert it to encrypted PKCS#8: {CONVERT}"
    )]
    LegacyPemEncryption,
    /// A key that is not encrypted, given with a password.
    #[error(
        "the key (PEM {0:?}) is not encrypted, so keyPassword does not apply (KEDA refuses this \
         too): remove keyPassword, or give the key as encrypted PKCS#8 \
         (-----BEGIN ENCRYPTED PRIVATE KEY-----)"
    )]
    NotEncrypted(String),
    /// Encrypted PKCS#8 that cannot be decoded (including a cipher or KDF not supported).
    #[error("the key is not a readable encrypted PKCS#8 key: {0}")]
    Malformed(String),
    /// PBES1 or PKCS#12 encryption (`openssl pkcs8 -v1 ...`).
    #[error("the key is not encrypted with PBES2 (but PBES1 or PKCS#12's, as openssl's -v1 makes), which KEDA does not read either; convert it: {CONVERT}")]
    NotPbes2,
    /// Key-derivation parameters that would cost too much to run.
    #[error("the key's {0}; eventscale refuses to spend that much on every build of the trigger: re-encrypt it with the defaults: {CONVERT}")]
    TooCostly(String),
    /// Decryption failed: a wrong password, almost always.
    #[error("the key cannot be decrypted with keyPassword (a wrong password?)")]
    WrongPassword,
}

/// The first PEM block of `text` (Go's `pem.Decode` skips anything before it): its label and
/// the block itself, from `-----BEGIN` to the end of its `-----END` line.
fn first_block(text: &str) -> Result<(&str, &str), KeyError> {
    let start = text.find("-----BEGIN ").ok_or(KeyError::NotPem)?;
    let rest = &text[start..];
    let label_end = rest["-----BEGIN ".len()..]
        .find("-----")
        .ok_or_else(|| KeyError::BadPem("unterminated BEGIN line".into()))?;
    let label = &rest["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
    let end_line = format!("-----END {label}-----");
    let end = rest
        .find(&end_line)
        .ok_or_else(|| KeyError::BadPem(format!("no {end_line:?} line")))?;
    Ok((label, &rest[..end + end_line.len()]))
}

/// PBES2's OID (1.2.840.113549.1.5.13), DER contents.
const PBES2_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];

/// The encryption algorithm's OID (DER contents) of a DER EncryptedPrivateKeyInfo.
fn algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    // The first element's contents, three times: the structure, its AlgorithmIdentifier,
    // the algorithm's OID.
    fn first(b: &[u8]) -> Option<&[u8]> {
        Any::from_der(b).ok().map(|(_, any)| any.data)
    }
    first(der).and_then(first).and_then(first)
}

/// Refuse key-derivation parameters beyond the limits above.
fn check_cost(scheme: &EncryptionScheme<'_>) -> Result<(), KeyError> {
    let EncryptionScheme::Pbes2(params) = scheme else {
        return Err(KeyError::NotPbes2);
    };
    match &params.kdf {
        Kdf::Pbkdf2(p) if p.iteration_count > MAX_PBKDF2_ITERATIONS => {
            Err(KeyError::TooCostly(format!(
                "PBKDF2 iteration count {} is above {MAX_PBKDF2_ITERATIONS}",
                p.iteration_count
            )))
        }
        Kdf::Scrypt(p) => {
            let memory = 128u64
                .saturating_mul(u64::from(p.block_size))
                .saturating_mul(p.cost_parameter);
            if memory > MAX_SCRYPT_MEMORY || p.parallelization > MAX_SCRYPT_PARALLELIZATION {
                Err(KeyError::TooCostly(format!(
                    "scrypt parameters N={} r={} p={} need {} MiB (at most {} MiB, p at most {MAX_SCRYPT_PARALLELIZATION})",
                    p.cost_parameter,
                    p.block_size,
                    p.parallelization,
                    memory >> 20,
                    MAX_SCRYPT_MEMORY >> 20
                )))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// `key_pem` decrypted with `password`, as unencrypted PKCS#8 PEM (`PRIVATE KEY`).
pub fn decrypt(key_pem: &str, password: &str) -> Result<String, KeyError> {
    let (label, block) = first_block(key_pem)?;
    if block.contains("Proc-Type:") && block.contains("ENCRYPTED") {
        return Err(KeyError::LegacyPemEncryption);
    }
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(KeyError::NotEncrypted(label.to_string()));
    }
    let (_, der) = pkcs8::der::pem::decode_vec(block.as_bytes())
        .map_err(|e| KeyError::BadPem(e.to_string()))?;
    let info = EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| {
        // pkcs5 knows PBES2's algorithms only: name the scheme when that is the cause.
        match algorithm_oid(&der) {
            Some(oid) if oid != PBES2_OID => KeyError::NotPbes2,
            _ => KeyError::Malformed(e.to_string()),
        }
    })?;
    check_cost(&info.encryption_algorithm)?;
    let plain = info
        .decrypt(password)
        .map_err(|_| KeyError::WrongPassword)?;
    // A wrong password passes the padding check about once in 256 tries; what comes out
    // is then not a key.
    PrivateKeyInfo::try_from(plain.as_bytes()).map_err(|_| KeyError::WrongPassword)?;
    plain
        .to_pem("PRIVATE KEY", LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| KeyError::Malformed(e.to_string()))
}

/// Whether `key_pem` is an encrypted key (PKCS#8 or legacy PEM), which needs `keyPassword`.
pub fn is_encrypted(key_pem: &str) -> bool {
    key_pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || (key_pem.contains("Proc-Type:") && key_pem.contains("ENCRYPTED"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_pki as pki;

    /// Keys encrypted by openssl as users make them, each decrypted to the same key.
    #[test]
    fn decrypts_what_openssl_encrypts() {
        let pki = pki::Pki::new("private-key");
        pki.key("ec", pki::KeyType::Ec);
        pki.key("rsa", pki::KeyType::Rsa);
        let der = |pem: &str| pkcs8::der::pem::decode_vec(pem.as_bytes()).expect("pem").1;
        // (key, openssl pkcs8 options)
        let cases: &[(&str, &[&str])] = &[
            ("ec", &["-v2", "aes-256-cbc"]),
            ("rsa", &["-v2", "aes-256-cbc"]),
            ("ec", &["-v2", "aes-128-cbc"]),
            ("ec", &["-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA512"]),
            ("ec", &["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA1"]),
            ("ec", &["-v2", "des3"]),
            ("ec", &["-scrypt"]),
            ("ec", &["-v2", "aes-256-cbc", "-iter", "100000"]),
        ];
        for (key, options) in cases {
            let encrypted = pki.encrypted_key(key, "s3cret", options);
            assert!(is_encrypted(&encrypted), "{options:?}");
            let got = decrypt(&encrypted, "s3cret").unwrap_or_else(|e| panic!("{options:?}: {e}"));
            assert_eq!(
                der(&got),
                der(&pki.read(&format!("{key}.key"))),
                "{options:?}"
            );
            assert_eq!(
                decrypt(&encrypted, "wrong"),
                Err(KeyError::WrongPassword),
                "{options:?}"
            );
            // Text before the block (openssl's "Bag Attributes") is skipped, as by Go.
            let preamble = format!("Bag Attributes\n    localKeyID: 01\n{encrypted}");
            assert!(decrypt(&preamble, "s3cret").is_ok(), "{options:?}");
        }

        // What KEDA refuses as well, each with its own explanation.
        let legacy = pki.openssl(&["ec", "-in", "ec.key", "-aes256", "-passout", "pass:s3cret"]);
        assert_eq!(
            decrypt(&legacy, "s3cret"),
            Err(KeyError::LegacyPemEncryption)
        );
        assert!(is_encrypted(&legacy));
        let pbes1 = pki.encrypted_key("ec", "s3cret", &["-v1", "PBE-SHA1-3DES"]);
        assert_eq!(decrypt(&pbes1, "s3cret"), Err(KeyError::NotPbes2));
        let costly = pki.encrypted_key("ec", "s3cret", &["-v2", "aes-256-cbc", "-iter", "1000001"]);
        assert!(
            matches!(decrypt(&costly, "s3cret"), Err(KeyError::TooCostly(m)) if m.contains("1000001")),
        );
        // (openssl itself refuses to make scrypt parameters above 32 MiB.)
        let costly = pki.encrypted_key(
            "ec",
            "s3cret",
            &["-scrypt", "-scrypt_N", "1024", "-scrypt_p", "17"],
        );
        assert!(
            matches!(decrypt(&costly, "s3cret"), Err(KeyError::TooCostly(m)) if m.contains("p=17"))
        );
    }

    /// The limits on key derivation, at their edges.
    #[test]
    fn key_derivation_cost_limits() {
        use pkcs8::pkcs5::pbes2::{self, Pbkdf2Params, Pbkdf2Prf, ScryptParams};
        let iv = [0u8; 16];
        let scheme = |kdf| {
            EncryptionScheme::Pbes2(pbes2::Parameters {
                kdf,
                encryption: pbes2::EncryptionScheme::Aes256Cbc { iv: &iv },
            })
        };
        let pbkdf2 = |iteration_count| {
            scheme(Kdf::Pbkdf2(Pbkdf2Params {
                salt: b"salt",
                iteration_count,
                key_length: None,
                prf: Pbkdf2Prf::HmacWithSha256,
            }))
        };
        let scrypt = |n: u64, r: u16, p: u16| {
            scheme(Kdf::Scrypt(ScryptParams {
                salt: b"salt",
                cost_parameter: n,
                block_size: r,
                parallelization: p,
                key_length: Some(32),
            }))
        };
        assert!(check_cost(&pbkdf2(2048)).is_ok());
        assert!(check_cost(&pbkdf2(MAX_PBKDF2_ITERATIONS)).is_ok());
        assert!(check_cost(&pbkdf2(MAX_PBKDF2_ITERATIONS + 1)).is_err());
        assert!(check_cost(&scrypt(16384, 8, 1)).is_ok());
        assert!(check_cost(&scrypt(65536, 8, 1)).is_ok(), "64 MiB");
        assert!(check_cost(&scrypt(131072, 8, 1)).is_err(), "128 MiB");
        assert!(
            check_cost(&scrypt(1 << 40, u16::MAX, 1)).is_err(),
            "no overflow"
        );
        assert!(check_cost(&scrypt(16384, 8, MAX_SCRYPT_PARALLELIZATION)).is_ok());
        assert!(check_cost(&scrypt(16384, 8, MAX_SCRYPT_PARALLELIZATION + 1)).is_err());
    }

    #[test]
    fn refuses_what_is_not_an_encrypted_pkcs8_key() {
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::NotPem),
            ("not a key", KeyError::NotPem),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                KeyError::NotEncrypted("PRIVATE KEY".into()),
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                KeyError::NotEncrypted("RSA PRIVATE KEY".into()),
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n",
                KeyError::BadPem("no \"-----END ENCRYPTED PRIVATE KEY-----\" line".into()),
            ),
            (
                "-----BEGIN ENCRYPTED",
                KeyError::BadPem("unterminated BEGIN line".into()),
            ),
        ];
        for (pem, want) in cases {
            assert_eq!(decrypt(pem, "p").as_ref(), Err(want), "{pem:?}");
        }
        let junk =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(decrypt(junk, "p"), Err(KeyError::Malformed(_))));
        assert!(!is_encrypted("-----BEGIN PRIVATE KEY-----"));
    }
}
