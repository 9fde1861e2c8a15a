//! Authentication as kube-apiserver delegates it to extension servers: front-proxy
//! request headers, client certificates, bearer tokens through TokenReview, anonymous.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use rustls::pki_types::CertificateDer;
use tracing::debug;

use super::cache::TtlCache;
use super::config::{subject, AuthnConfig};
use super::{Reviews, User};
use crate::api::percent_decode;
use crate::status::ApiError;
use crate::telemetry::{AuthnMethod, Telemetry};

/// The group every authenticated user belongs to.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The anonymous user.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The anonymous user's group.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";

/// How long a TokenReview answer is reused.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// The current [`AuthnConfig`] with a generation that changes on every update, so verdicts
/// cached per connection are recomputed after the ConfigMap changes.
#[derive(Default)]
pub struct ConfigHolder(RwLock<Arc<(u64, AuthnConfig)>>);

impl ConfigHolder {
    /// The current configuration.
    pub fn current(&self) -> Arc<(u64, AuthnConfig)> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the configuration.
    pub fn set(&self, config: AuthnConfig) {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        let generation = guard.0 + 1;
        *guard = Arc::new((generation, config));
    }
}

/// What a client certificate proves under one configuration.
#[derive(Debug, Clone)]
struct CertVerdict {
    /// Ok when the chain may assert identities in request headers.
    front_proxy: Option<Result<(), String>>,
    /// The user and groups when the chain verifies against `client-ca-file`.
    client: Option<Result<(String, Vec<String>), String>>,
}

/// The client certificate chain of one TLS connection, with its verdict cached for the
/// connection's lifetime (recomputed when the authentication configuration changes).
pub struct PeerCerts {
    chain: Vec<CertificateDer<'static>>,
    verdict: Mutex<Option<(u64, Arc<CertVerdict>)>>,
}

impl PeerCerts {
    /// The chain the client presented, leaf first.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        Self {
            chain,
            verdict: Mutex::new(None),
        }
    }

    fn verdict(&self, generation: u64, cfg: &AuthnConfig) -> Arc<CertVerdict> {
        let mut cached = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, v)) = cached.as_ref() {
            if *g == generation {
                return v.clone();
            }
        }
        let front_proxy = cfg.request_header.as_ref().map(|rh| {
            rh.ca
                .verify(&self.chain)
                .map_err(|e| format!("front-proxy client certificate: {e}"))?;
            if rh.allowed_names.is_empty() {
                return Ok(());
            }
            let (cn, _) = subject(&self.chain[0])?;
            if rh.allowed_names.contains(&cn) {
                Ok(())
            } else {
                Err(format!(
                    "client certificate common name {cn:?} is not in requestheader-allowed-names {:?}",
                    rh.allowed_names
                ))
            }
        });
        let client = cfg.client_ca.as_ref().map(|ca| {
            ca.verify(&self.chain)
                .map_err(|e| format!("client certificate: {e}"))?;
            subject(&self.chain[0])
        });
        let v = Arc::new(CertVerdict {
            front_proxy,
            client,
        });
        *cached = Some((generation, v.clone()));
        v
    }
}

/// Outcome of authenticating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    /// Identity asserted by the front proxy (the aggregator).
    RequestHeader(User),
    /// Identity from a client certificate signed by `client-ca-file`.
    ClientCert(User),
    /// Identity from a bearer token confirmed by TokenReview.
    Token(User),
    /// No credentials.
    Anonymous(User),
}

impl Authenticated {
    /// How the user was established, for metrics.
    pub fn method(&self) -> AuthnMethod {
        match self {
            Self::RequestHeader(_) => AuthnMethod::Requestheader,
            Self::ClientCert(_) => AuthnMethod::ClientCert,
            Self::Token(_) => AuthnMethod::Token,
            Self::Anonymous(_) => AuthnMethod::Anonymous,
        }
    }

    /// The user, whichever way it was established.
    pub fn user(&self) -> &User {
        match self {
            Self::RequestHeader(u) | Self::ClientCert(u) | Self::Token(u) | Self::Anonymous(u) => u,
        }
    }
}

/// The authenticator shared by all requests.
pub struct Authenticator {
    config: Arc<ConfigHolder>,
    reviews: Arc<dyn Reviews>,
    tokens: TtlCache<[u8; 32], Option<User>>,
    anonymous: bool,
    telemetry: Arc<Telemetry>,
}

fn with_authenticated(mut user: User) -> User {
    if !user.groups.iter().any(|g| g == AUTHENTICATED) {
        user.groups.push(AUTHENTICATED.to_string());
    }
    user
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Authenticator {
    /// An authenticator reading `config`, reviewing tokens with `reviews`; anonymous
    /// requests are allowed through (to authorization) when `anonymous` is set.
    pub fn new(
        config: Arc<ConfigHolder>,
        reviews: Arc<dyn Reviews>,
        anonymous: bool,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            config,
            reviews,
            tokens: TtlCache::new(TOKEN_CACHE_TTL, 10_000),
            anonymous,
            telemetry,
        }
    }

    /// Who sent the request, or a 401 Status naming every reason the credentials failed.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerCerts>,
    ) -> Result<Authenticated, ApiError> {
        let cfg = self.config.current();
        let (generation, cfg) = (&cfg.0, &cfg.1);
        let mut errors = Vec::new();
        if let Some(peer) = peer.filter(|p| !p.chain.is_empty()) {
            let verdict = peer.verdict(*generation, cfg);
            if let (Some(rh), Some(fp)) = (&cfg.request_header, &verdict.front_proxy) {
                match fp {
                    Ok(()) => {
                        if let Some(user) = user_from_headers(rh, headers) {
                            return Ok(Authenticated::RequestHeader(with_authenticated(user)));
                        }
                    }
                    Err(e) => errors.push(e.clone()),
                }
            }
            match &verdict.client {
                Some(Ok((name, groups))) => {
                    return Ok(Authenticated::ClientCert(with_authenticated(User {
                        name: name.clone(),
                        groups: groups.clone(),
                        ..User::default()
                    })))
                }
                Some(Err(e)) => errors.push(e.clone()),
                None => {}
            }
        }
        if let Some(token) = bearer_token(headers) {
            match self.review_token(token).await {
                Ok(Some(user)) => return Ok(Authenticated::Token(with_authenticated(user))),
                Ok(None) => errors.push("invalid bearer token".to_string()),
                Err(e) => errors.push(format!("TokenReview failed: {e}")),
            }
        }
        if !errors.is_empty() {
            debug!(errors = ?errors, "authentication failed");
            return Err(ApiError::unauthorized(format!(
                "Unauthorized: {}",
                errors.join("; ")
            )));
        }
        if !self.anonymous {
            return Err(ApiError::unauthorized(
                "Unauthorized: no credentials and anonymous requests are disabled",
            ));
        }
        Ok(Authenticated::Anonymous(User {
            name: ANONYMOUS_USER.to_string(),
            groups: vec![UNAUTHENTICATED.to_string()],
            ..User::default()
        }))
    }

    async fn review_token(&self, token: &str) -> Result<Option<User>, String> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let cached = self.tokens.get(&key);
        self.telemetry.token_cache(cached.is_some());
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let answer = self.reviews.token_review(token).await?;
        self.tokens.insert(key, answer.clone());
        Ok(answer)
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn user_from_headers(rh: &super::config::RequestHeader, headers: &HeaderMap) -> Option<User> {
    let name = rh
        .username_headers
        .iter()
        .find_map(|h| header_values(headers, h).next())?
        .to_string();
    let groups = rh
        .group_headers
        .iter()
        .flat_map(|h| header_values(headers, h))
        .map(str::to_string)
        .collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (h, v) in headers {
        let h = h.as_str();
        for prefix in &rh.extra_prefixes {
            if let Some(rest) = h.strip_prefix(prefix.as_str()) {
                if let (Some(key), Ok(v)) = (percent_decode(rest), v.to_str()) {
                    extra
                        .entry(key.to_lowercase())
                        .or_default()
                        .push(v.to_string());
                }
            }
        }
    }
    Some(User {
        name,
        groups,
        extra,
        uid: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::config::tests::{client_cert, configmap_data, test_ca};
    use super::super::tests::FakeReviews;
    use super::*;

    fn setup(
        allowed: &[&str],
    ) -> (
        Authenticator,
        Vec<rcgen::Issuer<'static, rcgen::KeyPair>>,
        Arc<FakeReviews>,
    ) {
        let (client_pem, client_ca) = test_ca("client-ca");
        let (fp_pem, fp_ca) = test_ca("front-proxy-ca");
        let data = configmap_data(&client_pem, &fp_pem, allowed);
        let (cfg, errors) = AuthnConfig::from_data(&data);
        assert!(errors.is_empty());
        let holder = Arc::new(ConfigHolder::default());
        holder.set(cfg);
        let reviews = Arc::new(FakeReviews::default());
        (
            Authenticator::new(holder, reviews.clone(), true, Telemetry::new()),
            vec![client_ca, fp_ca],
            reviews,
        )
    }

    fn remote_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-remote-user", "bob".parse().expect("header"));
        h.append("x-remote-group", "dev".parse().expect("header"));
        h.append("x-remote-group", "ops".parse().expect("header"));
        h.append("x-remote-extra-scopes%2Fa", "x".parse().expect("header"));
        h
    }

    #[tokio::test]
    async fn front_proxy_with_an_allowed_name_asserts_the_headers() {
        let (a, cas, _) = setup(&["front-proxy-client"]);
        let peer = PeerCerts::new(client_cert(&cas[1], "front-proxy-client", &[]));
        let got = a
            .authenticate(&remote_headers(), Some(&peer))
            .await
            .expect("authenticated");
        let Authenticated::RequestHeader(u) = got else {
            panic!("expected requestheader, got {got:?}")
        };
        assert_eq!(u.name, "bob");
        assert_eq!(u.groups, ["dev", "ops", AUTHENTICATED]);
        assert_eq!(
            u.extra.get("scopes/a").map(Vec::as_slice),
            Some(&["x".to_string()][..])
        );
    }

    #[tokio::test]
    async fn front_proxy_with_another_name_is_rejected() {
        let (a, cas, _) = setup(&["front-proxy-client"]);
        let peer = PeerCerts::new(client_cert(&cas[1], "intruder", &[]));
        let err = a
            .authenticate(&remote_headers(), Some(&peer))
            .await
            .expect_err("rejected");
        assert_eq!(err.code.as_u16(), 401);
        assert!(
            err.message
                .contains("\"intruder\" is not in requestheader-allowed-names"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn headers_from_a_client_ca_cert_are_not_trusted() {
        // Chains to client-ca-file, not to the requestheader CA: the headers are ignored
        // and the certificate's own subject is the user.
        let (a, cas, _) = setup(&[]);
        let peer = PeerCerts::new(client_cert(&cas[0], "alice", &["team"]));
        let got = a
            .authenticate(&remote_headers(), Some(&peer))
            .await
            .expect("ok");
        assert_eq!(
            got,
            Authenticated::ClientCert(User {
                name: "alice".into(),
                groups: vec!["team".into(), AUTHENTICATED.into()],
                ..User::default()
            })
        );
    }

    #[tokio::test]
    async fn unknown_ca_is_rejected() {
        let (a, _, _) = setup(&[]);
        let (_, stranger) = test_ca("stranger");
        let peer = PeerCerts::new(client_cert(&stranger, "front-proxy-client", &[]));
        let err = a
            .authenticate(&remote_headers(), Some(&peer))
            .await
            .expect_err("401");
        assert_eq!(err.code.as_u16(), 401);
    }

    #[tokio::test]
    async fn tokens_are_reviewed_once_then_cached() {
        let (a, _, reviews) = setup(&[]);
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer good".parse().expect("header"),
        );
        for _ in 0..3 {
            let got = a.authenticate(&h, None).await.expect("token");
            assert!(
                matches!(got, Authenticated::Token(ref u) if u.name == "token-user"),
                "{got:?}"
            );
        }
        h.insert(header::AUTHORIZATION, "Bearer bad".parse().expect("header"));
        let err = a.authenticate(&h, None).await.expect_err("bad token");
        assert!(
            err.message.contains("invalid bearer token"),
            "{}",
            err.message
        );
        assert_eq!(reviews.token_calls(), 2, "one review per distinct token");
    }

    #[tokio::test]
    async fn anonymous_can_be_turned_off() {
        let holder = Arc::new(ConfigHolder::default());
        holder.set(AuthnConfig::default());
        let a = Authenticator::new(
            holder,
            Arc::new(FakeReviews::default()),
            false,
            Telemetry::new(),
        );
        let err = a
            .authenticate(&HeaderMap::new(), None)
            .await
            .expect_err("401");
        assert_eq!(err.code.as_u16(), 401);
        assert!(
            err.message.contains("anonymous requests are disabled"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn no_credentials_is_anonymous() {
        let (a, _, _) = setup(&[]);
        let got = a
            .authenticate(&HeaderMap::new(), None)
            .await
            .expect("anonymous");
        assert_eq!(got.user().name, ANONYMOUS_USER);
        assert_eq!(got.user().groups, [UNAUTHENTICATED]);
    }
}
