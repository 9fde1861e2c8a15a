//! The chart's checked-in files against what the code generates: the CRDs in
//! `helm/eventscale/crds/` must be exactly `eventscale crds`, so a change to the Rust types
//! cannot ship with stale CRDs.

use std::path::Path;
use std::process::Command;

#[test]
fn checked_in_crds_match_the_generator() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventscale"))
        .arg("crds")
        .output()
        .expect("eventscale crds");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../helm/eventscale/crds/keda.sh.yaml");
    let checked_in = std::fs::read_to_string(&path).expect("helm/eventscale/crds/keda.sh.yaml");
    assert!(
        generated == checked_in,
        "helm/eventscale/crds/keda.sh.yaml differs from `eventscale crds`; regenerate it with\n  \
         cargo run -q -p metrics-adapter --bin eventscale -- crds > helm/eventscale/crds/keda.sh.yaml\n\
         first differing line: {:?}",
        generated
            .lines()
            .zip(checked_in.lines())
            .find(|(a, b)| a != b)
            .or(Some(("(length differs)", "")))
    );
    for kind in [
        "ScaledObject",
        "TriggerAuthentication",
        "ClusterTriggerAuthentication",
        "HTTPScaledObject",
    ] {
        assert!(
            generated.contains(&format!("kind: {kind}\n")),
            "{kind} missing from the generated CRDs"
        );
    }
}
