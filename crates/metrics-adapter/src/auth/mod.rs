//! Authentication and authorization as kube-apiserver expects of an extension API server,
//! applied to every request by one tower layer ([`layer`]).
//!
//! Order: health paths pass untouched; then the caller is authenticated
//! ([`authn::Authenticator`]) and the request authorized ([`authz::Authorizer`]); the
//! [`User`] is left in the request's extensions for handlers and logs.

pub mod authn;
pub mod authz;
pub mod cache;
pub mod config;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::api::{is_health, GROUP, VERSION};
use crate::status::ApiError;
use crate::telemetry::{AuthnMethod, Telemetry};
use authn::{Authenticator, ConfigHolder, PeerCerts};
use authz::{Attributes, Authorizer, Decision};

/// Every call to the apiserver made while a request waits.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated (or anonymous) user, as Kubernetes describes one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct User {
    /// User name.
    pub name: String,
    /// UID, when the authenticator knows one.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (lowercase keys).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The apiserver's reviews, behind a trait so the decision logic is testable alone.
#[async_trait]
pub trait Reviews: Send + Sync {
    /// The user a bearer token belongs to; `None` when the apiserver does not know it.
    async fn token_review(&self, token: &str) -> Result<Option<User>, String>;
    /// Whether `user` may do `attrs`.
    async fn access_review(&self, user: &User, attrs: &Attributes) -> Result<Decision, String>;
}

/// [`Reviews`] by TokenReview and SubjectAccessReview against the apiserver.
pub struct KubeReviews {
    client: Client,
}

impl KubeReviews {
    /// Reviews through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REVIEW_TIMEOUT, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {REVIEW_TIMEOUT:?}")),
    }
}

#[async_trait]
impl Reviews for KubeReviews {
    async fn token_review(&self, token: &str) -> Result<Option<User>, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let got = timed(
            "creating a TokenReview",
            api.create(&PostParams::default(), &review),
        )
        .await?;
        let status = got.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let u = status.user.unwrap_or_default();
        Ok(Some(User {
            name: u.username.unwrap_or_default(),
            uid: u.uid.unwrap_or_default(),
            groups: u.groups.unwrap_or_default(),
            extra: u.extra.unwrap_or_default(),
        }))
    }

    async fn access_review(&self, user: &User, attrs: &Attributes) -> Result<Decision, String> {
        let (resource_attributes, non_resource_attributes) = match attrs {
            Attributes::Metric { namespace, metric } => (
                Some(ResourceAttributes {
                    namespace: Some(namespace.clone()),
                    verb: Some("list".into()),
                    group: Some(GROUP.into()),
                    version: Some(VERSION.into()),
                    resource: Some(metric.clone()),
                    ..ResourceAttributes::default()
                }),
                None,
            ),
            Attributes::Trace {
                kind,
                namespace,
                name,
            } => (
                Some(ResourceAttributes {
                    namespace: Some(namespace.clone()),
                    verb: Some("get".into()),
                    group: Some(kind.group().into()),
                    resource: Some(kind.resource().into()),
                    name: Some(name.clone()),
                    ..ResourceAttributes::default()
                }),
                None,
            ),
            Attributes::NonResource { path } => (
                None,
                Some(NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some("get".into()),
                }),
            ),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes,
                non_resource_attributes,
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let got = timed(
            "creating a SubjectAccessReview",
            api.create(&PostParams::default(), &review),
        )
        .await?;
        let status = got.status.unwrap_or_default();
        Ok(Decision {
            allowed: status.allowed && status.denied != Some(true),
            reason: status.reason.unwrap_or_default(),
        })
    }
}

/// Authentication and authorization for the router.
pub struct Auth {
    config: Arc<ConfigHolder>,
    telemetry: Arc<Telemetry>,
    /// Who is calling.
    pub authn: Authenticator,
    /// Whether they may.
    pub authz: Authorizer,
}

impl Auth {
    /// Auth over `config`, asking `reviews`; `anonymous` lets credential-less requests reach
    /// authorization as `system:anonymous`.
    pub fn new(
        config: Arc<ConfigHolder>,
        reviews: Arc<dyn Reviews>,
        anonymous: bool,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            authn: Authenticator::new(
                config.clone(),
                reviews.clone(),
                anonymous,
                telemetry.clone(),
            ),
            authz: Authorizer::new(reviews, telemetry.clone()),
            config,
            telemetry,
        }
    }
}

/// The middleware: use with `axum::middleware::from_fn_with_state(auth, auth::layer)`.
pub async fn layer(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_health(path) {
        if path == "/readyz" && auth.config.current().0 == 0 {
            return ApiError::unavailable(format!(
                "the authentication configuration {}/{} has not been read yet",
                config::CONFIGMAP_NAMESPACE,
                config::CONFIGMAP_NAME
            ))
            .into_response();
        }
        return next.run(req).await;
    }
    let peer = req.extensions().get::<Arc<PeerCerts>>().cloned();
    match check(&auth, req.uri().path(), req.headers(), peer.as_deref()).await {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Authenticate the caller of a request for `path` and authorize the request: the
/// middleware's work for every path but health, shared with the server's direct path for
/// metric reads ([`crate::routes::MetricReads`]).
pub async fn check(
    auth: &Auth,
    path: &str,
    headers: &axum::http::HeaderMap,
    peer: Option<&PeerCerts>,
) -> Result<authn::Authenticated, ApiError> {
    let who = match auth.authn.authenticate(headers, peer).await {
        Ok(who) => who,
        Err(e) => {
            auth.telemetry.authn(AuthnMethod::Failed);
            return Err(e);
        }
    };
    auth.telemetry.authn(who.method());
    let attrs = Attributes::of_path(path);
    auth.authz.authorize(who.user(), &attrs).await?;
    Ok(who)
}

/// Keep `holder` in step with `kube-system/extension-apiserver-authentication` until the
/// watch ends; errors are logged and retried with backoff.
pub async fn watch_config(client: Client, holder: Arc<ConfigHolder>) {
    let api: Api<ConfigMap> = Api::namespaced(client, config::CONFIGMAP_NAMESPACE);
    let wc =
        watcher::Config::default().fields(&format!("metadata.name={}", config::CONFIGMAP_NAME));
    let events = watcher(api, wc).default_backoff();
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                let (cfg, errors) = config::AuthnConfig::from_data(&cm.data.unwrap_or_default());
                for e in &errors {
                    warn!(error = %e, "ignoring part of the authentication configuration");
                }
                info!(
                    client_ca = cfg.client_ca.is_some(),
                    requestheader = cfg.request_header.is_some(),
                    allowed_names = ?cfg.request_header.as_ref().map(|r| r.allowed_names.clone()),
                    "loaded {}/{}",
                    config::CONFIGMAP_NAMESPACE,
                    config::CONFIGMAP_NAME
                );
                holder.set(cfg);
            }
            Ok(watcher::Event::Delete(_)) => {
                warn!(
                    "{}/{} was deleted: client certificates and front-proxy headers are no longer trusted",
                    config::CONFIGMAP_NAMESPACE,
                    config::CONFIGMAP_NAME
                );
                holder.set(config::AuthnConfig::default());
            }
            Ok(_) => {}
            Err(e) => warn!(
                error = %e,
                "cannot watch {}/{} (does the adapter's account hold the extension-apiserver-authentication-reader Role?); retrying",
                config::CONFIGMAP_NAMESPACE,
                config::CONFIGMAP_NAME
            ),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Reviews by rule: token "good" is `token-user`; user "allowed" is allowed, "error"
    /// fails, everyone else is denied with reason "no RBAC".
    #[derive(Default)]
    pub(crate) struct FakeReviews {
        tokens: AtomicUsize,
        access: AtomicUsize,
    }

    impl FakeReviews {
        pub(crate) fn token_calls(&self) -> usize {
            self.tokens.load(Ordering::SeqCst)
        }
        pub(crate) fn access_calls(&self) -> usize {
            self.access.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Reviews for FakeReviews {
        async fn token_review(&self, token: &str) -> Result<Option<User>, String> {
            self.tokens.fetch_add(1, Ordering::SeqCst);
            Ok((token == "good").then(|| User {
                name: "token-user".into(),
                ..User::default()
            }))
        }
        async fn access_review(&self, user: &User, _: &Attributes) -> Result<Decision, String> {
            self.access.fetch_add(1, Ordering::SeqCst);
            match user.name.as_str() {
                "allowed" => Ok(Decision {
                    allowed: true,
                    reason: String::new(),
                }),
                "error" => Err("apiserver unreachable".into()),
                _ => Ok(Decision {
                    allowed: false,
                    reason: "no RBAC".into(),
                }),
            }
        }
    }

    #[test]
    fn health_paths() {
        for p in ["/healthz", "/livez", "/readyz", "/healthz/ping"] {
            assert!(is_health(p), "{p}");
        }
        for p in ["/healthzz", "/apis", "/"] {
            assert!(!is_health(p), "{p}");
        }
    }
}
