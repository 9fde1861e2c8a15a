//! What the served API is, below every layer that needs it: the group and version, the
//! path prefix of metric values, the health paths, and the percent-decoding both the
//! request parser and authorization use.

/// The API group served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// The version served.
pub const VERSION: &str = "v1beta1";
/// `GROUP/VERSION`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
/// Paths of metric values start with this; `{namespace}/{metric}` follows.
pub const METRICS_PREFIX: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/";

/// Decode `%XX` escapes; `None` when an escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits, as Go's url.PathUnescape wants (from_str_radix alone would
            // take a sign: `%+f`).
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `path` is a health endpoint (`/healthz`, `/livez`, `/readyz` or below).
pub fn is_health(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(percent_decode("%+f"), None, "a sign is no hex digit");
        assert_eq!(percent_decode("%-0"), None);
    }
}
