//! Kubernetes quantities as KEDA writes them: milli-units, canonical decimal-SI form.

/// The milli-value KEDA sends for `v`: `int64(v * 1000)`; NaN, infinities and negatives are 0.
pub fn milli(v: f64) -> i64 {
    if !v.is_finite() || v <= 0.0 {
        return 0;
    }
    let m = v * 1000.0;
    if m >= i64::MAX as f64 {
        i64::MAX
    } else {
        // Go's int64() truncates toward zero; so does `as`.
        m as i64
    }
}

/// Canonical decimal-SI form of a milli-value, as `resource.NewMilliQuantity(m).String()`:
/// `2500m`, `4`, `1k`, `0`.
pub fn format_milli(m: i64) -> String {
    if m == 0 {
        return "0".to_string();
    }
    if m % 1000 != 0 {
        return format!("{m}m");
    }
    let mut v = m / 1000;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let mut i = 0;
    while v % 1000 == 0 && i + 1 < SUFFIXES.len() {
        v /= 1000;
        i += 1;
    }
    format!("{v}{}", SUFFIXES[i])
}

/// The value of a quantity in the forms [`format_milli`] writes (`2500m`, `4`, `1k`), and
/// plain decimals (`2.5`); `None` for anything else.
pub fn parse_quantity(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 7] = [
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let s = s.trim();
    for (suffix, factor) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix) {
            return n
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| v * factor);
        }
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `format_milli(milli(v))`: the quantity string for a metric value or target.
pub fn quantity_string(v: f64) -> String {
    format_milli(milli(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes() {
        for v in [0.0, 0.001, 2.5, 4.0, 1000.0, 1_500_000.0] {
            assert_eq!(parse_quantity(&quantity_string(v)), Some(v), "{v}");
        }
        assert_eq!(parse_quantity("2.5"), Some(2.5));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(parse_quantity("1Q"), None);
    }

    #[test]
    fn formats_like_kubernetes() {
        let cases = [
            (2.5, "2500m"),
            (4.0, "4"),
            (100.0, "100"),
            (0.0, "0"),
            (-3.0, "0"),
            (f64::NAN, "0"),
            (f64::INFINITY, "0"),
            (0.0015, "1m"),
            (1000.0, "1k"),
            (1500.0, "1500"),
            (2_000_000.0, "2M"),
            (12.345, "12345m"),
        ];
        for (v, want) in cases {
            assert_eq!(quantity_string(v), want, "value {v}");
        }
    }
}
