//! The routing table: which HTTPScaledObject a request belongs to, by host, path prefix and
//! headers. Built whole from the routes and swapped atomically by the caller; a lookup
//! never locks.
//!
//! Order: the exact host, then `*.` wildcards from the longest suffix to the shortest, then
//! the catch-all routes (no hosts, or `*`). Within each, the longest path prefix that
//! matches on a segment boundary (`/api` matches `/api` and `/api/x`, never `/apiv2`), and
//! among equal prefixes the route with more header matches. A request that matches no
//! route of a host falls through to the next, less specific one.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use scaler_core::http_scaled_object::{HeaderMatch, HttpRoute};

/// One route of the table, with what the proxy keeps per route.
#[derive(Debug)]
struct Entry<T> {
    prefix: String,
    headers: Vec<HeaderMatch>,
    key: String,
    value: Arc<T>,
}

/// Routes by host and path; `T` is what a lookup hands back (the proxy's per-route state).
#[derive(Debug)]
pub struct RoutingTable<T> {
    exact: HashMap<String, Vec<Entry<T>>>,
    /// By the suffix after `*.` (`example.com` for `*.example.com`).
    wildcard: HashMap<String, Vec<Entry<T>>>,
    catch_all: Vec<Entry<T>>,
    len: usize,
}

impl<T> Default for RoutingTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            catch_all: Vec::new(),
            len: 0,
        }
    }
}

impl<T> RoutingTable<T> {
    /// A table of `routes`, each with its value.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a HttpRoute, Arc<T>)>) -> Self {
        let mut table = Self::default();
        for (route, value) in routes {
            table.len += 1;
            for prefix in &route.path_prefixes {
                let entry = || Entry {
                    prefix: prefix.clone(),
                    headers: route.headers.clone(),
                    key: route.key.clone(),
                    value: value.clone(),
                };
                if route.hosts.is_empty() {
                    table.catch_all.push(entry());
                }
                for host in &route.hosts {
                    match host.strip_prefix("*.") {
                        Some(suffix) => table
                            .wildcard
                            .entry(suffix.to_string())
                            .or_default()
                            .push(entry()),
                        None => table.exact.entry(host.clone()).or_default().push(entry()),
                    }
                }
            }
        }
        let order = |v: &mut Vec<Entry<T>>| {
            // Longest prefix first; then more headers; then by key, so that two routes that
            // claim the same requests resolve the same way on every replica.
            v.sort_by(|a, b| {
                b.prefix
                    .len()
                    .cmp(&a.prefix.len())
                    .then(b.headers.len().cmp(&a.headers.len()))
                    .then(a.key.cmp(&b.key))
            })
        };
        table.exact.values_mut().for_each(order);
        table.wildcard.values_mut().for_each(order);
        order(&mut table.catch_all);
        table
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no route.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The route of a request, with its key: `host` as sent (a port and a trailing dot are
    /// ignored, case too), `path` without the query.
    pub fn lookup<'a>(
        &'a self,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<(&'a str, &'a Arc<T>)> {
        let host = normalise_host(host);
        let pick = |entries: &[Entry<T>]| -> Option<usize> {
            entries
                .iter()
                .position(|e| prefix_matches(&e.prefix, path) && headers_match(&e.headers, headers))
        };
        let within = |entries: &'a [Entry<T>]| pick(entries).map(|i| &entries[i]);
        let hit = self
            .exact
            .get(host.as_ref())
            .and_then(|e| within(e))
            .or_else(|| {
                // `a.b.example.com` tries `b.example.com`, then `example.com`.
                let mut rest = host.as_ref();
                while let Some((_, suffix)) = rest.split_once('.') {
                    if let Some(e) = self.wildcard.get(suffix).and_then(|e| within(e)) {
                        return Some(e);
                    }
                    rest = suffix;
                }
                None
            })
            .or_else(|| within(&self.catch_all))?;
        Some((hit.key.as_str(), &hit.value))
    }
}

/// A host as routes name it: lower case, without a port or a trailing dot.
pub fn normalise_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = match host.rsplit_once(':') {
        // An IPv6 literal keeps its colons: `[::1]:8080` is `[::1]`.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn headers_match(wanted: &[HeaderMatch], headers: &HeaderMap) -> bool {
    wanted.iter().all(|w| match &w.value {
        None => headers.contains_key(w.name.as_str()),
        Some(v) => headers
            .get_all(w.name.as_str())
            .iter()
            .any(|h| h.as_bytes() == v.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use scaler_core::http_scaled_object::HttpScaledObject;

    fn route(name: &str, spec: serde_json::Value) -> HttpRoute {
        let mut spec = spec;
        spec["scaleTargetRef"] = serde_json::json!({"name": name, "service": name, "port": 80});
        let o: HttpScaledObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": name, "namespace": "ns"}, "spec": spec}))
        .expect("an HTTPScaledObject");
        o.route().expect("a valid route")
    }

    fn table(routes: &[HttpRoute]) -> RoutingTable<String> {
        RoutingTable::new(routes.iter().map(|r| (r, Arc::new(r.name.clone()))))
    }

    fn hit(
        t: &RoutingTable<String>,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("a name"),
                v.parse().expect("a value"),
            );
        }
        t.lookup(host, path, &h).map(|(_, v)| v.to_string())
    }

    #[test]
    fn hosts_route_exact_then_wildcard_then_catch_all() {
        let t = table(&[
            route("exact", serde_json::json!({"hosts": ["api.example.com"]})),
            route("wild", serde_json::json!({"hosts": ["*.example.com"]})),
            route("deeper", serde_json::json!({"hosts": ["*.eu.example.com"]})),
            route("all", serde_json::json!({"hosts": ["*"]})),
            route(
                "legacy",
                serde_json::json!({"host": "helloworld.jourdain.io"}),
            ),
        ]);
        assert_eq!(t.len(), 5);
        let cases = [
            ("api.example.com", "exact"),
            ("API.Example.com:8080", "exact"),
            ("api.example.com.", "exact"),
            ("web.example.com", "wild"),
            ("a.b.example.com", "wild"),
            ("x.eu.example.com", "deeper"),
            ("example.com", "all"),
            ("helloworld.jourdain.io", "legacy"),
            ("other.org", "all"),
            ("", "all"),
        ];
        for (host, want) in cases {
            assert_eq!(
                hit(&t, host, "/", &[]).as_deref(),
                Some(want),
                "host {host:?}"
            );
        }
    }

    #[test]
    fn without_a_catch_all_an_unknown_host_has_no_route() {
        let t = table(&[route("a", serde_json::json!({"hosts": ["a.test"]}))]);
        assert_eq!(hit(&t, "b.test", "/", &[]), None);
        assert_eq!(hit(&t, "a.test", "/", &[]).as_deref(), Some("a"));
    }

    #[test]
    fn the_longest_prefix_wins_on_segment_boundaries() {
        let t = table(&[
            route("root", serde_json::json!({"hosts": ["h"]})),
            route(
                "api",
                serde_json::json!({"hosts": ["h"], "pathPrefixes": ["/api/"]}),
            ),
            route(
                "v1",
                serde_json::json!({"hosts": ["h"], "pathPrefixes": ["/api/v1"]}),
            ),
            route(
                "only",
                serde_json::json!({"hosts": ["o"], "pathPrefixes": ["/only"]}),
            ),
        ]);
        let cases = [
            ("h", "/", Some("root")),
            ("h", "/api", Some("api")),
            ("h", "/api/x", Some("api")),
            ("h", "/apiv2", Some("root")),
            ("h", "/api/v1/users", Some("v1")),
            ("h", "/api/v10", Some("api")),
            ("o", "/only/x", Some("only")),
            ("o", "/", None),
            ("o", "/onlyx", None),
        ];
        for (host, path, want) in cases {
            assert_eq!(hit(&t, host, path, &[]).as_deref(), want, "{host} {path}");
        }
    }

    #[test]
    fn headers_must_all_match_and_the_more_specific_route_wins() {
        let t = table(&[
            route("plain", serde_json::json!({"hosts": ["h"]})),
            route(
                "canary",
                serde_json::json!({"hosts": ["h"],
                "headers": [{"name": "X-Canary", "value": "yes"}, {"name": "x-team"}]}),
            ),
            route(
                "beta",
                serde_json::json!({"hosts": ["h"], "headers": [{"name": "x-beta"}]}),
            ),
        ]);
        assert_eq!(hit(&t, "h", "/", &[]).as_deref(), Some("plain"));
        assert_eq!(
            hit(&t, "h", "/", &[("x-canary", "yes")]).as_deref(),
            Some("plain")
        );
        assert_eq!(
            hit(&t, "h", "/", &[("x-canary", "yes"), ("X-Team", "a")]).as_deref(),
            Some("canary")
        );
        assert_eq!(
            hit(&t, "h", "/", &[("x-canary", "no"), ("x-team", "a")]).as_deref(),
            Some("plain")
        );
        assert_eq!(
            hit(&t, "h", "/", &[("x-beta", "")]).as_deref(),
            Some("beta")
        );
    }

    #[test]
    fn a_more_specific_host_without_a_matching_path_falls_through() {
        let t = table(&[
            route(
                "exact",
                serde_json::json!({"hosts": ["a.example.com"], "pathPrefixes": ["/x"]}),
            ),
            route("wild", serde_json::json!({"hosts": ["*.example.com"]})),
        ]);
        assert_eq!(
            hit(&t, "a.example.com", "/x", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(hit(&t, "a.example.com", "/y", &[]).as_deref(), Some("wild"));
    }

    #[test]
    fn two_routes_claiming_the_same_requests_resolve_by_key_every_time() {
        let a = route("a", serde_json::json!({"hosts": ["h"]}));
        let b = route("b", serde_json::json!({"hosts": ["h"]}));
        assert_eq!(
            hit(&table(&[a.clone(), b.clone()]), "h", "/", &[]).as_deref(),
            Some("a")
        );
        assert_eq!(hit(&table(&[b, a]), "h", "/", &[]).as_deref(), Some("a"));
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalise_host("Example.COM:443"), "example.com");
        assert_eq!(normalise_host("[::1]:8080"), "[::1]");
        assert_eq!(normalise_host("example.com."), "example.com");
        assert_eq!(normalise_host("plain"), "plain");
    }
}
