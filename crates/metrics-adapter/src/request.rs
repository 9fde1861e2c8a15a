//! Parsing a metric request's path and query: a pure function, fuzzed (see `fuzz/`), that
//! turns anything a client sends into either a request or a 400 Status.

use scaler_core::label_selector::Selector;

use crate::api::percent_decode;
use crate::status::ApiError;

/// Longest path plus query accepted, in bytes; longer is a 400 before any other work.
pub const MAX_URI_BYTES: usize = 8 * 1024;

pub use crate::api::METRICS_PREFIX;

/// A well-formed metric read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRequest {
    /// Namespace (an RFC 1123 label).
    pub namespace: String,
    /// Metric name as sent (matched case-insensitively later).
    pub metric: String,
    /// The label selector; everything when absent.
    pub selector: Selector,
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Decode an `application/x-www-form-urlencoded` component (`+` is a space).
fn form_decode(s: &str) -> Option<String> {
    percent_decode(&s.replace('+', " "))
}

/// The `labelSelector` of a raw query string (the first, as Go's `url.Values.Get`).
fn label_selector(query: &str) -> Result<Option<String>, ApiError> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(k).as_deref() == Some("labelSelector") {
            return form_decode(v).map(Some).ok_or_else(|| {
                ApiError::bad_request("labelSelector is not valid percent-encoded UTF-8")
            });
        }
    }
    Ok(None)
}

impl MetricRequest {
    /// Parse `path` (percent-encoded, as received) and the raw `query`.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Self, ApiError> {
        let len = path.len() + query.map_or(0, str::len);
        if len > MAX_URI_BYTES {
            return Err(ApiError::bad_request(format!(
                "request URI is {len} bytes; at most {MAX_URI_BYTES} are accepted"
            )));
        }
        let rest = path
            .strip_prefix(METRICS_PREFIX)
            .ok_or_else(|| ApiError::not_found(format!("no metric at {path}")))?;
        let (ns_raw, metric_raw) = rest
            .split_once('/')
            .filter(|(_, m)| !m.contains('/'))
            .ok_or_else(|| ApiError::not_found(format!("no metric at {path}")))?;
        let namespace = percent_decode(ns_raw)
            .ok_or_else(|| ApiError::bad_request("namespace is not valid percent-encoded UTF-8"))?;
        if !is_dns1123_label(&namespace) {
            return Err(ApiError::bad_request(format!(
                "namespace {namespace:?} is invalid: it must be a lowercase RFC 1123 label \
                 (a-z, 0-9 and '-', starting and ending with a letter or digit, at most 63 characters)"
            )));
        }
        let metric = percent_decode(metric_raw).ok_or_else(|| {
            ApiError::bad_request("metric name is not valid percent-encoded UTF-8")
        })?;
        if metric.is_empty() || metric == "." || metric == ".." || metric.contains(['/', '%']) {
            return Err(ApiError::bad_request(format!(
                "metric name {metric:?} is invalid: it may not be empty, '.' or '..', or contain '/' or '%'"
            )));
        }
        let selector = label_selector(query.unwrap_or(""))?
            .unwrap_or_default()
            .parse::<Selector>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Self {
            namespace,
            metric,
            selector,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/";

    #[test]
    fn well_formed_requests() {
        let r = MetricRequest::parse(
            &format!("{P}ns-1/s0-cron-x"),
            Some("labelSelector=scaledobject.keda.sh%2Fname%3Dweb&x=1"),
        )
        .expect("ok");
        assert_eq!(
            (r.namespace.as_str(), r.metric.as_str()),
            ("ns-1", "s0-cron-x")
        );
        assert_eq!(
            r.selector.exact_value("scaledobject.keda.sh/name"),
            Some("web")
        );
        let r = MetricRequest::parse(&format!("{P}ns/m"), None).expect("no selector");
        assert_eq!(r.selector, Selector::default());
        let r = MetricRequest::parse(
            &format!("{P}ns/m"),
            Some("labelSelector=env+in+(a,b),!gone"),
        )
        .expect("set-based");
        assert!(r.selector.exact_value("env").is_none());
        // KEDA names a mysql metric after everything past the DSN's last `/`, options
        // included; the HPA sends the `?` escaped.
        let r = MetricRequest::parse(&format!("{P}ns/s0-mysql-app%3Ftls=false"), None)
            .expect("escaped question mark");
        assert_eq!(r.metric, "s0-mysql-app?tls=false");
    }

    #[test]
    fn bad_input_is_a_clear_400_or_404() {
        let long = "a".repeat(MAX_URI_BYTES);
        let cases: &[(String, Option<&str>, u16, &str)] = &[
            (
                format!("{P}ns/%2E%2E"),
                None,
                400,
                "metric name \"..\" is invalid",
            ),
            (
                format!("{P}ns/.."),
                None,
                400,
                "metric name \"..\" is invalid",
            ),
            (format!("{P}ns/a%25b"), None, 400, "contain '/' or '%'"),
            (format!("{P}ns/a%2Fb"), None, 400, "contain '/' or '%'"),
            (
                format!("{P}ns/%ff"),
                None,
                400,
                "not valid percent-encoded UTF-8",
            ),
            (
                format!("{P}ns/%zz"),
                None,
                400,
                "not valid percent-encoded UTF-8",
            ),
            (
                format!("{P}Bad_NS/m"),
                None,
                400,
                "namespace \"Bad_NS\" is invalid",
            ),
            (format!("{P}-ns/m"), None, 400, "RFC 1123"),
            (
                format!("{P}ns/m"),
                Some("labelSelector=a%20in%20("),
                400,
                "invalid label selector",
            ),
            (
                format!("{P}ns/m"),
                Some("labelSelector=%ff"),
                400,
                "labelSelector is not valid",
            ),
            (format!("{P}ns/m"), Some(&long), 400, "bytes; at most 8192"),
            (format!("{P}ns"), None, 404, "no metric at"),
            (format!("{P}ns/m/x"), None, 404, "no metric at"),
        ];
        for (path, query, code, text) in cases {
            let e = MetricRequest::parse(path, *query).expect_err(path);
            assert_eq!(e.code.as_u16(), *code, "{path} {query:?}: {}", e.message);
            assert!(e.message.contains(text), "{path} {query:?}: {}", e.message);
        }
    }

    /// Stable-toolchain stand-in for the fuzz target: many pseudo-random inputs built from
    /// the characters that matter, none may panic.
    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet: Vec<char> = "aZ09-_./%+=&,!()~ \u{e9}\u{0}inotexists=!=="
            .chars()
            .collect();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let (a, b) = s.split_at(s.char_indices().nth(len / 2).map_or(s.len(), |(i, _)| i));
            let _ = MetricRequest::parse(&format!("{P}{a}"), Some(b));
            let _ =
                MetricRequest::parse(&format!("{P}ns/{a}"), Some(&format!("labelSelector={b}")));
            let _ = s.parse::<Selector>();
        }
    }
}
