//! KEDA's metric naming: `s<index>-<normalized scaler name>`.

/// Replace the characters KEDA replaces (`/ . : % ( )`) with `-`.
pub fn normalize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '/' | '.' | ':' | '%' | '(' | ')' => '-',
            c => c,
        })
        .collect()
}

/// The External metric name of trigger `index`: `s<index>-<normalized name>`.
pub fn with_index(index: usize, name: &str) -> String {
    format!("s{index}-{}", normalize(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_keda() {
        assert_eq!(
            normalize("cron-Etc/UTC-a.b:c%d(e)"),
            "cron-Etc-UTC-a-b-c-d-e-"
        );
        assert_eq!(with_index(3, "prometheus"), "s3-prometheus");
    }
}
