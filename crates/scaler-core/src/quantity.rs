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

/// A metric target as KEDA writes it (`GetMetricTargetMili`): a whole number of
/// milli-units, `int64(v * 1000)`, shown in canonical form (`2500m`, `4`, `1k`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MilliQuantity(i64);

/// The multiplier of each suffix [`format_milli`] writes after a whole number.
const SUFFIX_FACTORS: [f64; 7] = [1.0, 1e3, 1e6, 1e9, 1e12, 1e15, 1e18];

impl MilliQuantity {
    /// KEDA's target for `v`; NaN, infinities and negatives are 0.
    pub fn from_value(v: f64) -> Self {
        MilliQuantity(milli(v))
    }

    /// The milli-units.
    pub fn milli(self) -> i64 {
        self.0
    }

    /// The value the quantity stands for, as the HPA reads it back from its text: the
    /// digits [`format_milli`] writes times their suffix's factor. (`m / 1000.0` can
    /// differ from that in the last bit.)
    pub fn value(self) -> f64 {
        let m = self.0;
        if m % 1000 != 0 {
            return m as f64 * 1e-3;
        }
        let mut v = m / 1000;
        let mut i = 0;
        while v != 0 && v % 1000 == 0 && i + 1 < SUFFIX_FACTORS.len() {
            v /= 1000;
            i += 1;
        }
        v as f64 * SUFFIX_FACTORS[i]
    }
}

impl std::fmt::Display for MilliQuantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_milli(self.0))
    }
}

impl std::fmt::Debug for MilliQuantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MilliQuantity({self})")
    }
}

/// A quantity equals the text it is written as (`target == "2500m"`).
impl PartialEq<&str> for MilliQuantity {
    fn eq(&self, other: &&str) -> bool {
        format_milli(self.0) == *other
    }
}

/// `format_milli(milli(v))`: the quantity string for a metric value or target.
pub fn quantity_string(v: f64) -> String {
    format_milli(milli(v))
}

/// The value of a quantity [`format_milli`] wrote (`2500m`, `4`, `1k`); `None` for any
/// other form.
pub fn parse_quantity(q: &str) -> Option<f64> {
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<i64>().ok().map(|m| m as f64 / 1000.0);
    }
    const SUFFIXES: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
    for (i, suffix) in SUFFIXES.iter().enumerate() {
        if let Some(v) = q.strip_suffix(suffix) {
            return v
                .parse::<i64>()
                .ok()
                .map(|v| v as f64 * SUFFIX_FACTORS[i + 1]);
        }
    }
    q.parse::<i64>().ok().map(|v| v as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_back() {
        for v in [0.0, 0.001, 2.5, 4.0, 21.0, 1000.0, 1500.0, 3e9] {
            assert_eq!(parse_quantity(&quantity_string(v)), Some(v), "{v}");
        }
        assert_eq!(parse_quantity("1.5"), None);
        assert_eq!(parse_quantity("x"), None);
    }

    /// The value of a quantity written by [`format_milli`], read back from its text as the
    /// HPA and, before targets were typed, the adapter did.
    fn read_back(s: &str) -> f64 {
        let suffixes = [("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)];
        let suffixes = suffixes.into_iter().chain([("P", 1e15), ("E", 1e18)]);
        for (suffix, factor) in suffixes {
            if let Some(n) = s.strip_suffix(suffix) {
                return n.parse::<f64>().expect("digits") * factor;
            }
        }
        s.parse().expect("digits")
    }

    #[test]
    fn targets_read_back_as_their_text() {
        let mut values = vec![
            0.0,
            0.001,
            0.0015,
            2.5,
            4.0,
            12.345,
            1000.0,
            1_500_000.0,
            1e20,
        ];
        values.extend([-3.0, f64::NAN, f64::INFINITY, 9.2e15, 0.1 + 0.2]);
        // And many more, spread over the scales.
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let digits = (seed % 1_000_000_007) as f64;
            values.push(digits * 10f64.powi((seed >> 40) as i32 % 24 - 12));
        }
        for v in values {
            let q = MilliQuantity::from_value(v);
            assert_eq!(q.to_string(), quantity_string(v), "{v}");
            assert_eq!(q, quantity_string(v).as_str(), "{v}");
            let back = read_back(&q.to_string());
            assert_eq!(q.value().to_bits(), back.to_bits(), "{v}: {q}");
        }
        assert_eq!(MilliQuantity::from_value(2.5).milli(), 2500);
        assert_eq!(
            format!("{:?}", MilliQuantity::from_value(2.5)),
            "MilliQuantity(2500m)"
        );
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
