//! Google service-account keys and the OAuth 2.0 access tokens they buy, as Go's
//! `golang.org/x/oauth2/google` (KEDA's `pkg/scalers/gcp`) gets them: a JWT signed with the
//! account's RSA key (RS256) is exchanged at the key's `token_uri` (RFC 7523's JWT-bearer
//! grant) for an access token, which is reused until shortly before it expires. One
//! [`TokenSource`] belongs to one scaler; concurrent callers share one exchange.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderValue;
use serde_json::Value;

/// The scope KEDA's prometheus scaler asks for (Google Managed Service for Prometheus).
pub const SCOPE_MONITORING_READ: &str = "https://www.googleapis.com/auth/monitoring.read";
/// Where a key without `token_uri` is exchanged (Go's `google.JWTTokenURL`).
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// A token is replaced this long before it expires (Go's oauth2 `expiryDelta`).
pub const EXPIRY_DELTA: Duration = Duration::from_secs(10);
/// The longest lifetime believed of a token answer (a day): more is a broken server.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// RFC 7523's grant type.
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The assertion's `iat` is set back this much, for clocks ahead of Google's (Go's jws).
const CLOCK_SKEW_SECS: u64 = 10;
/// The assertion is valid for an hour from its `iat` (Go's jws).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// The largest token answer read (Go reads at most 1 MiB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A service-account key (the JSON `gcloud iam service-accounts keys create` writes).
#[derive(Clone)]
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: String,
    token_uri: reqwest::Url,
    audience: String,
    key: EncodingKey,
    /// SHA-256 of the JSON: tells two keys apart without keeping or printing the secret.
    fingerprint: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is never printed.
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri.as_str())
            .finish()
    }
}

impl PartialEq for ServiceAccountKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for ServiceAccountKey {}

/// A string field of the key file; absent and `null` are empty, as Go decodes them.
fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("field {name:?} is not a string")),
    }
}

impl ServiceAccountKey {
    /// Parse and check a key file: JSON of `"type": "service_account"` with `client_email`
    /// and an RSA `private_key` that signs; `token_uri` defaults to Google's. The messages
    /// never quote the file, which holds the secret.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| {
            // serde's syntax errors give a position, never the text.
            format!("not a JSON service account key: {e}")
        })?;
        if !v.is_object() {
            return Err("not a JSON service account key: not an object".into());
        }
        let kind = field(&v, "type")?;
        if kind != "service_account" {
            return Err(format!(
                "google: expected credential type \"service_account\", found {kind:?}"
            ));
        }
        let client_email = field(&v, "client_email")?;
        if client_email.is_empty() {
            return Err("the service account key has no client_email".into());
        }
        let pem = field(&v, "private_key")?;
        if pem.is_empty() {
            return Err("the service account key has no private_key".into());
        }
        // PKCS#8 or PKCS#1 PEM, as Go's `internal.ParseKey` reads; RSA only.
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
            format!("the service account key's private_key is not an RSA PEM key: {e}")
        })?;
        // jsonwebtoken checks the key only when signing: sign once now, so that a bad key
        // fails the trigger rather than every poll.
        jsonwebtoken::crypto::sign(b"probe", &key, Algorithm::RS256).map_err(|e| {
            format!("the service account key's private_key cannot sign (RS256): {e}")
        })?;
        let uri = match field(&v, "token_uri")? {
            "" => DEFAULT_TOKEN_URI,
            uri => uri,
        };
        let token_uri = reqwest::Url::parse(uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                format!("the service account key's token_uri {uri:?} is not an http(s) URL")
            })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
        Ok(Self {
            client_email: client_email.to_string(),
            private_key_id: field(&v, "private_key_id")?.to_string(),
            // Go's jwt config takes the file's `audience` over the token URI when set.
            audience: match field(&v, "audience")? {
                "" => token_uri.to_string(),
                aud => aud.to_string(),
            },
            token_uri,
            key,
            fingerprint: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// The service account's e-mail address (the assertion's issuer).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// Where tokens are bought.
    pub fn token_uri(&self) -> &reqwest::Url {
        &self.token_uri
    }

    /// A SHA-256 of the key file, for telling keys apart (e.g. in cache keys).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The JWT claims of Google's service-account flow.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The service account.
    pub iss: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The token URI (or the key's `audience`).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
}

/// The claims of an assertion made at `now` (Unix seconds), as Go's jws sets them: `iat`
/// [`CLOCK_SKEW_SECS`] back, `exp` an hour after `iat`.
pub fn claims(key: &ServiceAccountKey, scope: &str, now: u64) -> Claims {
    let iat = now.saturating_sub(CLOCK_SKEW_SECS);
    Claims {
        iss: key.client_email.clone(),
        scope: scope.to_string(),
        aud: key.audience.clone(),
        exp: iat + ASSERTION_LIFETIME_SECS,
        iat,
    }
}

/// Until when a token received at `received`, valid for `expires_in`, is used: until
/// [`EXPIRY_DELTA`] before it expires (at once for a lifetime shorter than that), as Go's
/// oauth2 does. A token answered without a lifetime is kept for ever (`None`), as Go keeps
/// it; a lifetime beyond [`MAX_TOKEN_LIFETIME`] is cut to it.
pub fn use_until(received: Instant, expires_in: Option<Duration>) -> Option<Instant> {
    let lifetime = expires_in.filter(|d| !d.is_zero())?.min(MAX_TOKEN_LIFETIME);
    Some(received + lifetime.saturating_sub(EXPIRY_DELTA))
}

/// Whether a token usable until `until` (see [`use_until`]) may still be used at `now`.
pub fn is_fresh(until: Option<Instant>, now: Instant) -> bool {
    until.is_none_or(|until| now < until)
}

/// Why no access token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The assertion could not be signed.
    #[error("signing the JWT assertion: {0}")]
    Sign(String),
    /// The token endpoint could not be reached or read.
    #[error("oauth2: cannot fetch token from {uri}: {message}")]
    Fetch {
        /// The token URI.
        uri: String,
        /// What failed.
        message: String,
    },
    /// The token endpoint said no.
    #[error("oauth2: cannot fetch token from {uri}: {status}\nResponse: {body}")]
    Refused {
        /// The token URI.
        uri: String,
        /// HTTP status.
        status: u16,
        /// The start of its answer (error answers hold no token).
        body: String,
    },
    /// The token endpoint's answer is not a token.
    #[error("oauth2: cannot fetch token from {uri}: {message}")]
    Answer {
        /// The token URI.
        uri: String,
        /// What is wrong with the answer.
        message: String,
    },
}

/// A token and until when it is used.
struct Token {
    authorization: HeaderValue,
    until: Option<Instant>,
}

/// Access tokens for one service-account key and scope, bought when needed and kept.
pub struct TokenSource {
    key: ServiceAccountKey,
    scope: String,
    client: reqwest::Client,
    timeout: Duration,
    /// Held across an exchange: callers meanwhile wait for its token instead of buying
    /// their own (what Go's `ReuseTokenSource` does with its mutex).
    token: tokio::sync::Mutex<Option<Token>>,
    exchanges: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("key", &self.key)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenSource {
    /// Tokens for `key` with `scope`, each exchange bounded by `timeout`.
    pub fn new(key: ServiceAccountKey, scope: &str, timeout: Duration) -> Result<Self, String> {
        // Its own client, verified against the system's roots: the trigger's TLS settings
        // (`unsafeSsl`, `ca`) are for the event source, not for Google (KEDA's oauth2 uses
        // Go's default client too).
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .build()
            .map_err(|e| format!("building the HTTP client for the token endpoint: {e}"))?;
        Ok(Self {
            key,
            scope: scope.to_string(),
            client,
            timeout,
            token: tokio::sync::Mutex::new(None),
            exchanges: AtomicU64::new(0),
        })
    }

    /// The key tokens are bought with.
    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    /// How many exchanges this source has made (for tests and logs).
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// The `Authorization` header value: the kept token while fresh, else a new one.
    pub async fn authorization(&self) -> Result<HeaderValue, TokenError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| is_fresh(t.until, Instant::now())) {
            return Ok(t.authorization.clone());
        }
        let token = self.exchange().await?;
        let authorization = token.authorization.clone();
        *slot = Some(token);
        Ok(authorization)
    }

    /// One JWT-bearer exchange at the token URI.
    async fn exchange(&self) -> Result<Token, TokenError> {
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        let uri = self.key.token_uri.to_string();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key.private_key_id.clone()).filter(|k| !k.is_empty());
        let assertion =
            jsonwebtoken::encode(&header, &claims(&self.key, &self.scope, now), &self.key.key)
                .map_err(|e| TokenError::Sign(e.to_string()))?;
        let fetch = |message: String| TokenError::Fetch {
            uri: uri.clone(),
            message,
        };
        let mut resp = self
            .client
            .post(self.key.token_uri.clone())
            .timeout(self.timeout)
            .form(&[
                ("grant_type", GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| fetch(crate::scalers::error_chain(&e)))?;
        let received = Instant::now();
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| fetch(crate::scalers::error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(fetch("the answer is larger than 1 MiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        if !(200..300).contains(&status) {
            return Err(TokenError::Refused {
                uri,
                status,
                body: String::from_utf8_lossy(&body).chars().take(512).collect(),
            });
        }
        parse_answer(&body, received).map_err(|message| TokenError::Answer { uri, message })
    }
}

/// A token endpoint's answer (`access_token`, `token_type`, `expires_in`) as a token.
fn parse_answer(body: &[u8], received: Instant) -> Result<Token, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let access_token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no access_token")?;
    let expires_in = match v.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_i64()
                .ok_or("expires_in is not a whole number of seconds")?,
        ),
    };
    // Go's `Token.Type`: bearer, mac and basic are capitalised; none is Bearer.
    let kind = match v.get("token_type").and_then(Value::as_str).unwrap_or("") {
        "" => "Bearer".to_string(),
        t if t.eq_ignore_ascii_case("bearer") => "Bearer".to_string(),
        t if t.eq_ignore_ascii_case("mac") => "MAC".to_string(),
        t if t.eq_ignore_ascii_case("basic") => "Basic".to_string(),
        t => t.to_string(),
    };
    let mut authorization = HeaderValue::from_str(&format!("{kind} {access_token}"))
        .map_err(|_| "the access token is not a valid header value")?;
    authorization.set_sensitive(true);
    let lifetime = expires_in
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs);
    Ok(Token {
        authorization,
        until: use_until(received, lifetime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_pki as pki;

    /// A key file for `email` with an RSA key made by openssl (`traditional`: PKCS#1).
    pub(crate) fn key_json(
        pki: &pki::Pki,
        email: &str,
        traditional: bool,
        token_uri: &str,
    ) -> String {
        let pem = if traditional {
            pki.openssl(&["genrsa", "-traditional", "2048"])
        } else {
            pki.key("sa", pki::KeyType::Rsa)
        };
        serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-1",
            "private_key": pem,
            "client_email": email,
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[test]
    fn key_files_are_checked_when_read() {
        let pki = pki::Pki::new("gcp-key");
        for traditional in [false, true] {
            let json = key_json(&pki, "sa@p.iam.gserviceaccount.com", traditional, "");
            let key = ServiceAccountKey::from_json(&json).expect("a key");
            assert_eq!(key.token_uri().as_str(), DEFAULT_TOKEN_URI);
            assert_eq!(key.client_email(), "sa@p.iam.gserviceaccount.com");
            assert!(!format!("{key:?}").contains("PRIVATE"), "never printed");
        }
        let good: Value =
            serde_json::from_str(&key_json(&pki, "sa@p", false, "http://127.0.0.1:1/token"))
                .expect("json");
        let ec = pki.key("ec", pki::KeyType::Ec);
        let with = |k: &str, v: Value| {
            let mut j = good.clone();
            j[k] = v;
            j.to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            ("{".into(), "not a JSON service account key: EOF"),
            ("[]".into(), "not an object"),
            (
                with("type", "authorized_user".into()),
                "google: expected credential type \"service_account\", found \"authorized_user\"",
            ),
            (with("type", Value::Null), "found \"\""),
            (with("client_email", "".into()), "no client_email"),
            (with("private_key", Value::Null), "no private_key"),
            (
                with("private_key", "secret-text".into()),
                "is not an RSA PEM key",
            ),
            (with("private_key", ec.into()), "private_key"),
            (
                with("token_uri", "ftp://x/token".into()),
                "token_uri \"ftp://x/token\" is not an http(s) URL",
            ),
            (
                with("client_email", 7.into()),
                "field \"client_email\" is not a string",
            ),
        ];
        for (json, want) in cases {
            let err = ServiceAccountKey::from_json(&json).expect_err(want);
            assert!(err.contains(want), "{want}: {err}");
            assert!(
                !err.contains("secret-text") && !err.contains("BEGIN"),
                "{err}"
            );
        }
        let audience =
            ServiceAccountKey::from_json(&with("audience", "https://aud".into())).expect("key");
        assert_eq!(claims(&audience, "s", 100).aud, "https://aud");
    }

    #[test]
    fn assertion_claims_follow_go() {
        let pki = pki::Pki::new("gcp-claims");
        let key = ServiceAccountKey::from_json(&key_json(
            &pki,
            "sa@p",
            false,
            "http://127.0.0.1:9/token",
        ))
        .expect("key");
        assert_eq!(
            claims(&key, SCOPE_MONITORING_READ, 1_700_000_000),
            Claims {
                iss: "sa@p".into(),
                scope: SCOPE_MONITORING_READ.into(),
                aud: "http://127.0.0.1:9/token".into(),
                iat: 1_700_000_000 - 10,
                exp: 1_700_000_000 - 10 + 3600,
            }
        );
    }

    /// When a kept token is replaced: [`EXPIRY_DELTA`] before it expires.
    #[test]
    fn refresh_timing() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (expires_in, checked at, fresh)
        let cases: &[(Option<u64>, u64, bool)] = &[
            (Some(3600), 0, true),
            (Some(3600), 3589, true),
            (Some(3600), 3590, false),
            (Some(3600), 4000, false),
            (Some(11), 0, true),
            (Some(11), 1, false),
            (Some(10), 0, false),
            (Some(5), 0, false),
            // No lifetime (or 0): kept, as Go keeps it.
            (None, 1_000_000, true),
            (Some(0), 1_000_000, true),
            // Beyond a day is a day.
            (Some(u64::MAX), 86_389, true),
            (Some(u64::MAX), 86_390, false),
        ];
        for (expires_in, at, fresh) in cases {
            let until = use_until(t0, expires_in.map(s));
            assert_eq!(
                is_fresh(until, t0 + s(*at)),
                *fresh,
                "{expires_in:?} at +{at}s"
            );
        }
    }

    #[test]
    fn token_answers() {
        let t0 = Instant::now();
        let header = |body: &str| {
            parse_answer(body.as_bytes(), t0)
                .map(|t| t.authorization.to_str().map(str::to_string).expect("ascii"))
        };
        assert_eq!(
            header(r#"{"access_token":"a","expires_in":3599,"token_type":"Bearer"}"#),
            Ok("Bearer a".into())
        );
        assert_eq!(
            header(r#"{"access_token":"a","token_type":"bearer"}"#),
            Ok("Bearer a".into())
        );
        assert_eq!(header(r#"{"access_token":"a"}"#), Ok("Bearer a".into()));
        assert_eq!(
            header(r#"{"access_token":"a","token_type":"mac"}"#),
            Ok("MAC a".into())
        );
        assert_eq!(
            header(r#"{"access_token":"a","token_type":"DPoP"}"#),
            Ok("DPoP a".into())
        );
        assert_eq!(
            header(r#"{"access_token":""}"#),
            Err("the answer has no access_token".into())
        );
        assert_eq!(
            header(r#"{"expires_in":1}"#),
            Err("the answer has no access_token".into())
        );
        assert_eq!(
            header(r#"{"access_token":"a","expires_in":"60"}"#),
            Err("expires_in is not a whole number of seconds".into())
        );
        assert_eq!(
            header(r#"{"access_token":"a\nb"}"#),
            Err("the access token is not a valid header value".into())
        );
        assert!(header("<html>").is_err_and(|e| e.starts_with("the answer is not JSON")));
        let kept = parse_answer(br#"{"access_token":"a","expires_in":60}"#, t0).expect("token");
        assert!(kept.authorization.is_sensitive());
        assert_eq!(kept.until, Some(t0 + Duration::from_secs(50)));
    }
}
