//! Authorization by SubjectAccessReview, cached, with `system:masters` allowed outright.

use std::sync::Arc;
use std::time::Duration;

use super::cache::TtlCache;
use super::{Reviews, User};
use crate::api::{percent_decode, GROUP, METRICS_PREFIX};
use crate::status::ApiError;
use crate::telemetry::Telemetry;

/// How long a SubjectAccessReview answer (allow or deny) is reused.
pub const DECISION_CACHE_TTL: Duration = Duration::from_secs(10);
/// The group allowed everything without a review.
pub const MASTERS: &str = "system:masters";

/// What a request asks to do, in SubjectAccessReview terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// Reading external metric `metric` in `namespace`: verb `list`.
    Metric {
        /// The namespace in the path.
        namespace: String,
        /// The metric name, the "resource" being listed.
        metric: String,
    },
    /// Reading the trace of an object: `get` on the object itself (whoever may read a
    /// ScaledObject may read why it has its replicas).
    Trace {
        /// What kind of object.
        kind: crate::trace::TraceKind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// Anything else (discovery, OpenAPI): non-resource `get` on the path.
    NonResource {
        /// The request path.
        path: String,
    },
}

impl Attributes {
    /// The attributes of a GET on `path` (as sent, percent-encoded).
    pub fn of_path(path: &str) -> Self {
        if let Some(rest) = path.strip_prefix(METRICS_PREFIX) {
            let parts: Vec<&str> = rest.split('/').collect();
            if let [namespace, metric] = parts[..] {
                if let (Some(namespace), Some(metric)) =
                    (percent_decode(namespace), percent_decode(metric))
                {
                    return Self::Metric { namespace, metric };
                }
            }
        }
        if let Some((kind, namespace, name)) = crate::trace::parse_path(path) {
            return Self::Trace {
                kind,
                namespace,
                name,
            };
        }
        Self::NonResource {
            path: path.to_string(),
        }
    }
}

/// A review's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The authorizer's reason, shown in the Forbidden message.
    pub reason: String,
}

/// The authorizer shared by all requests.
pub struct Authorizer {
    reviews: Arc<dyn Reviews>,
    cache: TtlCache<(User, Attributes), Decision>,
    telemetry: Arc<Telemetry>,
}

impl Authorizer {
    /// An authorizer asking `reviews`.
    pub fn new(reviews: Arc<dyn Reviews>, telemetry: Arc<Telemetry>) -> Self {
        Self {
            reviews,
            cache: TtlCache::new(DECISION_CACHE_TTL, 10_000),
            telemetry,
        }
    }

    /// Ok when `user` may do `attrs`; a 403 Status (or 500 when the review failed).
    pub async fn authorize(&self, user: &User, attrs: &Attributes) -> Result<(), ApiError> {
        if user.groups.iter().any(|g| g == MASTERS) {
            self.telemetry.authz(true);
            return Ok(());
        }
        // Looked up by reference: a hit (nearly every request) copies nothing.
        let cached = self
            .cache
            .get_by((user, attrs), |(u, a)| u == user && a == attrs);
        let decision = match cached {
            Some(d) => {
                self.telemetry.authz_cache(true);
                d
            }
            None => {
                self.telemetry.authz_cache(false);
                let d =
                    self.reviews.access_review(user, attrs).await.map_err(|e| {
                        ApiError::internal(format!("SubjectAccessReview failed: {e}"))
                    })?;
                self.cache.insert((user.clone(), attrs.clone()), d.clone());
                d
            }
        };
        self.telemetry.authz(decision.allowed);
        if decision.allowed {
            return Ok(());
        }
        let reason = if decision.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", decision.reason)
        };
        Err(ApiError::forbidden(match attrs {
            Attributes::Metric { namespace, metric } => format!(
                "{metric}.{GROUP} is forbidden: User {:?} cannot list resource {metric:?} in API group {GROUP:?} in the namespace {namespace:?}{reason}",
                user.name
            ),
            Attributes::Trace {
                kind,
                namespace,
                name,
            } => format!(
                "{}.{} {name:?} is forbidden: User {:?} cannot get resource {:?} in API group {:?} in the namespace {namespace:?}{reason}",
                kind.resource(),
                kind.group(),
                user.name,
                kind.resource(),
                kind.group()
            ),
            Attributes::NonResource { path } => format!(
                "forbidden: User {:?} cannot get path {path:?}{reason}",
                user.name
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::FakeReviews;
    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..User::default()
        }
    }

    #[test]
    fn paths_map_to_review_attributes() {
        assert_eq!(
            Attributes::of_path("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/s0-cron-x"),
            Attributes::Metric {
                namespace: "ns".into(),
                metric: "s0-cron-x".into()
            }
        );
        assert_eq!(
            Attributes::of_path("/apis/external.metrics.k8s.io/v1beta1/namespaces/n%2Fs/m"),
            Attributes::Metric {
                namespace: "n/s".into(),
                metric: "m".into()
            }
        );
        assert_eq!(
            Attributes::of_path(
                "/apis/explain.eventscale.sh/v1alpha1/namespaces/ns/scaledobjects/w/trace"
            ),
            Attributes::Trace {
                kind: crate::trace::TraceKind::ScaledObject,
                namespace: "ns".into(),
                name: "w".into()
            }
        );
        for p in [
            "/apis",
            "/apis/explain.eventscale.sh/v1alpha1",
            "/apis/explain.eventscale.sh/v1alpha1/namespaces/ns/scaledobjects/w",
            "/apis/external.metrics.k8s.io/v1beta1",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/m/extra",
            "/openapi/v2",
        ] {
            assert_eq!(
                Attributes::of_path(p),
                Attributes::NonResource { path: p.into() },
                "{p}"
            );
        }
    }

    #[tokio::test]
    async fn masters_skip_review_and_decisions_are_cached() {
        let reviews = Arc::new(FakeReviews::default());
        let a = Authorizer::new(reviews.clone(), Telemetry::new());
        let m = Attributes::of_path("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/m");
        a.authorize(&user("root", &[MASTERS]), &m)
            .await
            .expect("masters");
        assert_eq!(reviews.access_calls(), 0);
        for _ in 0..3 {
            a.authorize(&user("allowed", &[]), &m)
                .await
                .expect("allowed");
            let e = a
                .authorize(&user("bob", &[]), &m)
                .await
                .expect_err("denied");
            assert_eq!(e.code.as_u16(), 403);
            assert_eq!(
                e.message,
                "m.external.metrics.k8s.io is forbidden: User \"bob\" cannot list resource \"m\" in API group \"external.metrics.k8s.io\" in the namespace \"ns\": no RBAC"
            );
        }
        assert_eq!(reviews.access_calls(), 2, "allow and deny both cached");
        let e = a
            .authorize(&user("bob", &[]), &Attributes::of_path("/apis"))
            .await
            .expect_err("denied");
        assert!(
            e.message.contains("cannot get path \"/apis\""),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_failed_review_is_a_500_and_not_cached() {
        let reviews = Arc::new(FakeReviews::default());
        let a = Authorizer::new(reviews.clone(), Telemetry::new());
        let m = Attributes::of_path("/apis");
        for _ in 0..2 {
            let e = a.authorize(&user("error", &[]), &m).await.expect_err("500");
            assert_eq!(e.code.as_u16(), 500);
        }
        assert_eq!(reviews.access_calls(), 2);
    }
}
