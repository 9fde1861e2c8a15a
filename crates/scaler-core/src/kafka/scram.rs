//! The client side of SCRAM (RFC 5802) with SHA-256 or SHA-512 (RFC 7677), as Kafka's
//! `SCRAM-SHA-256` / `SCRAM-SHA-512` SASL mechanisms use it: no channel binding, no
//! extensions.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};

/// The hash a SCRAM mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// Iteration counts above this are refused: Kafka's own maximum (brokers store no more),
/// and a hostile server could otherwise make every connection burn seconds of CPU.
const MAX_ITERATIONS: u32 = 16_384;

/// A SCRAM exchange that went wrong, in words for the trigger's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SCRAM authentication: {0}")]
pub struct ScramError(pub String);

fn err(m: impl Into<String>) -> ScramError {
    ScramError(m.into())
}

/// `saslname` escaping: `=` → `=3D`, `,` → `=2C`.
fn sasl_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

fn hmac_sign(alg: hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg, key), data)
        .as_ref()
        .to_vec()
}

/// One SCRAM conversation: `client_first`, then `client_final` with the server's first
/// message, then `verify_server_final` with its last.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// The signature the server must prove it can compute, set by `client_final`.
    expected_server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A conversation for `user` with a fresh random nonce.
    pub fn new(hash: ScramHash, user: &str, password: &str) -> Result<Self, ScramError> {
        let mut raw = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| err("no random numbers for the client nonce"))?;
        Ok(Self::with_nonce(hash, user, password, &B64.encode(raw)))
    }

    /// A conversation with a given nonce (tests use RFC 7677's).
    pub fn with_nonce(hash: ScramHash, user: &str, password: &str, nonce: &str) -> Self {
        Self {
            hash,
            password: password.to_string(),
            client_nonce: nonce.to_string(),
            client_first_bare: format!("n={},r={nonce}", sasl_name(user)),
            expected_server_signature: None,
        }
    }

    /// The client's first message.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The client's final message, answering the server's first.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", v)) => return Err(err(format!("the server refused: {v}"))),
                Some(("m", _)) => return Err(err("the server requires an extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| err("no nonce in the server's first message"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(err("the server's nonce does not extend the client's"));
        }
        let salt = B64
            .decode(salt.ok_or_else(|| err("no salt in the server's first message"))?)
            .map_err(|_| err("the server's salt is not base64"))?;
        let iterations: u32 = iterations
            .and_then(|i| i.parse().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| err("missing or unacceptable iteration count from the server"))?;

        let h = self.hash;
        let mut salted = vec![0u8; h.len()];
        pbkdf2::derive(
            h.pbkdf2(),
            std::num::NonZeroU32::new(iterations).ok_or_else(|| err("zero iterations"))?,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sign(h.hmac(), &salted, b"Client Key");
        let stored_key = digest::digest(h.digest(), &client_key);
        // "biws" is base64 of "n,,": no channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac_sign(h.hmac(), stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac_sign(h.hmac(), &salted, b"Server Key");
        self.expected_server_signature =
            Some(hmac_sign(h.hmac(), &server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Check the server's final message: it must prove it knows the password too.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(err(format!("the server refused: {e}")));
        }
        let v = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| err("no verifier in the server's final message"))?;
        let got = B64
            .decode(v)
            .map_err(|_| err("the server's verifier is not base64"))?;
        let expected = self
            .expected_server_signature
            .as_ref()
            .ok_or_else(|| err("the server's final message came before the client's"))?;
        // Both sides are public once sent; a plain comparison leaks nothing.
        if got != *expected {
            return Err(err(
                "the server's signature is wrong (it does not know the password)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn rfc7677_example() {
        let mut c =
            ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            c.client_final(server_first).expect("final"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("the RFC's server signature verifies");
        assert!(c
            .verify_server_final("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .is_err());
        assert!(c
            .verify_server_final("e=invalid-proof")
            .expect_err("refused")
            .to_string()
            .contains("invalid-proof"));
    }

    #[test]
    fn hostile_server_messages_are_refused() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha512, "a=b,c", "pw", "abc");
        assert_eq!(c.client_first(), "n,,n=a=3Db=2Cc,r=abc");
        for bad in [
            "r=xyz123,s=c2FsdA==,i=4096",     // nonce not ours
            "r=abc,s=c2FsdA==,i=4096",        // nonce not extended
            "r=abcd,s=!!,i=4096",             // salt not base64
            "r=abcd,s=c2FsdA==,i=0",          // no iterations
            "r=abcd,s=c2FsdA==,i=16385",      // above Kafka's maximum
            "r=abcd,s=c2FsdA==",              // missing
            "m=ext,r=abcd,s=c2FsdA==,i=4096", // mandatory extension
            "e=unknown-user",
        ] {
            assert!(c.client_final(bad).is_err(), "{bad}");
        }
        // A final message before the exchange is an error, not a pass.
        assert!(c.verify_server_final("v=AAAA").is_err());
    }
}
