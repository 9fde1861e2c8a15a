//! The prometheus scaler with a Google service-account key, against a token endpoint and a
//! Prometheus stand-in on loopback (one hyper server). The endpoint verifies each JWT
//! assertion with the public half of a key pair made here, checks its claims as Google
//! would, and hands out short-lived tokens; the stand-in answers only the newest token.

#[path = "../../../e2e/support/pki.rs"]
mod pki;
mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use scaler_core::gcp::{self, Claims, ServiceAccountKey, TokenSource};
use scaler_core::scaled_object::ScaleTriggers;
use scaler_core::scalers::prometheus::PrometheusScaler;
use scaler_core::scalers::{with_env, AuthParams, Scaler, TriggerContext};

/// What the token endpoint saw and gave.
#[derive(Default)]
struct Seen {
    /// Tokens handed out, in order.
    issued: Vec<String>,
    /// Assertions refused, and why.
    refused: Vec<String>,
    /// `Authorization` headers of the queries.
    queries: Vec<String>,
}

struct Server {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Server {
    fn token_uri(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("lock"))
    }
}

/// The form fields of a urlencoded body (test-sized: no `+` or `%` in what is sent here
/// but `%3A` in the grant type).
fn form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":")))
        .collect()
}

/// The token endpoint's check of one assertion, as Google's: RS256 by the account's key,
/// `kid` the key's id, `iss` the account, `aud` this endpoint, the monitoring scope, `iat`
/// a little in the past and `exp` an hour after it.
fn check_assertion(
    public_pem: &str,
    token_uri: &str,
    fields: &BTreeMap<String, String>,
) -> Result<(), String> {
    if fields.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err(format!("grant_type {:?}", fields.get("grant_type")));
    }
    let assertion = fields.get("assertion").ok_or("no assertion")?;
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[token_uri]);
    validation.set_issuer(&["scaler@project.iam.gserviceaccount.com"]);
    let data = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
        .map_err(|e| format!("signature or claims: {e}"))?;
    if data.header.kid.as_deref() != Some("key-id-1") || data.header.typ.as_deref() != Some("JWT") {
        return Err(format!("header {:?}", data.header));
    }
    let c = data.claims;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    if c.scope != gcp::SCOPE_MONITORING_READ
        || c.exp != c.iat + 3600
        || !(now - 15..=now - 5).contains(&c.iat)
    {
        return Err(format!("claims {c:?} at {now}"));
    }
    Ok(())
}

/// A token endpoint at `/token` (tokens valid `lifetime` seconds, each answer after
/// `delay`) and a Prometheus stand-in at `/api/v1/query` that takes only the newest token.
async fn start(public_pem: String, lifetime: u64, delay: Duration) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let token_uri = format!("http://{addr}/token");
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (seen, public_pem, token_uri) =
                (state.clone(), public_pem.clone(), token_uri.clone());
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (seen, public_pem, token_uri) =
                    (seen.clone(), public_pem.clone(), token_uri.clone());
                async move {
                    let path = req.uri().path().to_string();
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let (status, text) = if path == "/token" {
                        tokio::time::sleep(delay).await;
                        let mut seen = seen.lock().expect("lock");
                        match check_assertion(&public_pem, &token_uri, &form(&body)) {
                            Ok(()) => {
                                let token = format!("ya29.token-{}", seen.issued.len() + 1);
                                seen.issued.push(token.clone());
                                (
                                    StatusCode::OK,
                                    format!(
                                        r#"{{"access_token":"{token}","expires_in":{lifetime},"token_type":"Bearer"}}"#
                                    ),
                                )
                            }
                            Err(why) => {
                                seen.refused.push(why);
                                (StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#.to_string())
                            }
                        }
                    } else {
                        let mut seen = seen.lock().expect("lock");
                        seen.queries.push(auth.clone());
                        let newest = seen.issued.last().map(|t| format!("Bearer {t}"));
                        if newest.as_deref() == Some(auth.as_str()) {
                            (
                                StatusCode::OK,
                                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"42"]}]}}"#.to_string(),
                            )
                        } else {
                            (StatusCode::UNAUTHORIZED, "unauthorized".to_string())
                        }
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(text)));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Server { addr, seen }
}

/// An RSA key pair: (private PEM, public PEM).
fn key_pair(pki: &pki::Pki, name: &str) -> (String, String) {
    (pki.key(name, pki::KeyType::Rsa), pki.public_key(name))
}

/// A service-account key file for the private key `pem`, exchanged at `token_uri`.
fn key_file(pem: &str, token_uri: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "project",
        "private_key_id": "key-id-1",
        "private_key": pem,
        "client_email": "scaler@project.iam.gserviceaccount.com",
        "client_id": "1",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

fn scaler(
    server: &Server,
    query: &str,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> PrometheusScaler {
    let address = format!("http://{}", server.addr);
    let mut m = vec![
        ("serverAddress", address.as_str()),
        ("query", query),
        ("threshold", "10"),
    ];
    m.extend_from_slice(meta);
    support::build("prometheus", "gcp", &m, auth, PrometheusScaler::new).expect("valid trigger")
}

/// A token is bought with a verified assertion, sent as the bearer, kept while fresh (and
/// over a custom Authorization header), and replaced 10 s before it expires: tokens here
/// live 11 s, so the kept one is stale after one.
#[tokio::test]
async fn tokens_are_bought_sent_kept_and_refreshed() {
    let pki = pki::Pki::new("gcp-prometheus");
    let (private, public) = key_pair(&pki, "sa");
    let server = start(public, 11, Duration::ZERO).await;
    let key = key_file(&private, &server.token_uri());
    let s = scaler(
        &server,
        "up",
        &[("customHeaders", "Authorization=Basic stale,X-Scope=1")],
        &[("GoogleApplicationCredentials", &key)],
    );
    let v = s.sample().await.expect("authorized");
    assert_eq!((v.value, v.active), (42.0, true));
    assert_eq!(
        server.seen(|s| (s.issued.len(), s.refused.clone())),
        (1, vec![])
    );
    // Within the token's life: no new exchange.
    s.sample().await.expect("kept token");
    assert_eq!(server.seen(|s| s.issued.len()), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale now (under 10 s left): a new token, which the server alone accepts.
    s.sample().await.expect("refreshed token");
    assert_eq!(server.seen(|s| s.issued.len()), 2);
    let queries = server.seen(|s| s.queries.clone());
    assert_eq!(
        queries.first().map(String::as_str),
        Some("Bearer ya29.token-1")
    );
    assert_eq!(
        queries.last().map(String::as_str),
        Some("Bearer ya29.token-2")
    );
}

/// Concurrent callers of one token source (what a scaler and its clones share) wait for
/// one exchange, as with Go's ReuseTokenSource; the next stale token is one more.
#[tokio::test]
async fn one_exchange_for_concurrent_callers() {
    let pki = pki::Pki::new("gcp-single-flight");
    let (private, public) = key_pair(&pki, "sa");
    let server = start(public, 3600, Duration::from_millis(300)).await;
    let key = key_file(&private, &server.token_uri());
    let source = Arc::new(
        TokenSource::new(
            ServiceAccountKey::from_json(&key).expect("key"),
            gcp::SCOPE_MONITORING_READ,
            Duration::from_secs(5),
        )
        .expect("source"),
    );
    let calls = (0..20).map(|_| {
        let source = source.clone();
        async move { source.authorization().await }
    });
    let headers = futures::future::join_all(calls).await;
    assert!(
        headers
            .iter()
            .all(|h| h.as_ref().is_ok_and(|h| h == "Bearer ya29.token-1")),
        "{headers:?}"
    );
    assert_eq!(source.exchanges(), 1);
    assert_eq!(server.seen(|s| s.issued.len()), 1);
}

/// A key the endpoint cannot verify is refused there; the error says so, and Prometheus
/// is never asked.
#[tokio::test]
async fn a_refused_assertion_fails_the_query() {
    let pki = pki::Pki::new("gcp-refused");
    let (_, public) = key_pair(&pki, "sa");
    let (other, _) = key_pair(&pki, "other");
    let server = start(public, 3600, Duration::ZERO).await;
    let s = scaler(
        &server,
        "up",
        &[],
        &[(
            "GoogleApplicationCredentials",
            &key_file(&other, &server.token_uri()),
        )],
    );
    let e = s.sample().await.expect_err("refused").to_string();
    assert!(
        e.contains("getting a Google access token for scaler@project.iam.gserviceaccount.com")
            && e.contains("oauth2: cannot fetch token")
            && e.contains("400")
            && e.contains("invalid_grant"),
        "{e}"
    );
    assert_eq!(
        server.seen(|s| (s.issued.len(), s.refused.len(), s.queries.len())),
        (0, 1, 0)
    );
}

/// `credentialsFromEnv` (the JSON in a container variable) and `credentialsFromEnvFile` (a
/// variable holding a path on eventscale's filesystem), resolved as the controller
/// resolves a trigger's environment.
#[tokio::test]
async fn keys_from_the_container_environment() {
    let pki = pki::Pki::new("gcp-env");
    let (private, public) = key_pair(&pki, "sa");
    let server = start(public, 3600, Duration::ZERO).await;
    let key = key_file(&private, &server.token_uri());
    let path = pki.dir().join("key.json");
    std::fs::write(&path, &key).expect("key file");
    let env: BTreeMap<String, String> = [
        ("GCP_CREDS".to_string(), key.clone()),
        ("GCP_CREDS_PATH".to_string(), path.display().to_string()),
    ]
    .into();
    let address = format!("http://{}", server.addr);
    for (param, var) in [
        ("credentialsFromEnv", "GCP_CREDS"),
        ("credentialsFromEnvFile", "GCP_CREDS_PATH"),
    ] {
        let raw = ScaleTriggers {
            type_: "prometheus".into(),
            metadata: [
                ("serverAddress", address.as_str()),
                ("query", "up"),
                ("threshold", "1"),
                (param, var),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        };
        let (trigger, _) = with_env(&raw, &env);
        let auth = AuthParams::new();
        let s = PrometheusScaler::new(TriggerContext {
            index: 0,
            trigger: &trigger,
            auth: &auth,
            namespace: "ns",
            name: "env",
            client: None,
            as_metric_source: false,
            pools: &scaler_core::pools::Pools::default(),
        })
        .unwrap_or_else(|e| panic!("{param}: {e}"));
        assert_eq!(
            s.sample()
                .await
                .unwrap_or_else(|e| panic!("{param}: {e}"))
                .value,
            42.0
        );
    }
    assert_eq!(server.seen(|s| s.refused.len()), 0);
}
