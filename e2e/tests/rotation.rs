//! Serving-certificate rotation while the real HPA controller keeps reading metrics through
//! the aggregator: the leaf is reissued under the same CA (`eventscale certs
//! --renew-before-days` larger than its lifetime), eventscale picks each new pair up from
//! disk without a restart, and the HPA never fails a metric read.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cron::{hpa_api, manifests, open_window, wait_for_hpa, TZ};
use crate::{apply, client, cluster, eventually, kubectl, Namespace};

/// The serial number of the certificate eventscale serves to a new connection.
fn served_serial() -> String {
    let c = cluster();
    let addr = c.adapter_url.trim_start_matches("https://");
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial"
            ),
        ])
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ca_pem() -> String {
    let ca = cluster().state_dir.join("eventscale-certs/ca.crt");
    std::fs::read_to_string(ca).expect("ca.crt")
}

/// The HPA's ScalingActive condition and the FailedGetExternalMetric events so far.
fn hpa_health(ns: &str) -> (String, usize) {
    let (_, out, _) = kubectl(&[
        "-n",
        ns,
        "get",
        "hpa.v2beta2.autoscaling",
        "keda-hpa-web",
        "-o",
        "json",
    ]);
    let hpa: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let active = hpa["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "ScalingActive"))
        .map(|c| format!("{} {} {}", c["status"], c["reason"], c["message"]))
        .unwrap_or_default();
    let (_, out, _) = kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        "reason=FailedGetExternalMetric",
        "-o",
        "json",
    ]);
    let events: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    (active, events["items"].as_array().map_or(0, Vec::len))
}

#[tokio::test]
async fn serving_certificate_rotates_without_a_failed_hpa_read() {
    let c = cluster();
    let ns = Namespace::create("e2e-rotation");
    let (start, end, _) = open_window();
    apply(&ns.0, &manifests(&start, &end, TZ));
    let client = client().await;
    wait_for_hpa(&hpa_api(client, &ns.0)).await;
    // The HPA controller reads the metric successfully before anything rotates.
    eventually(Duration::from_secs(60), "ScalingActive=True", || {
        let (active, _) = hpa_health(&ns.0);
        async move { active.starts_with("\"True\"").then_some(()) }
    })
    .await;

    let ca_before = ca_pem();
    let mut serials = vec![served_serial()];
    assert!(!serials[0].is_empty(), "no serial read from eventscale");
    for round in 0..3 {
        let out = Command::new(env!("CARGO_BIN_EXE_eventscale"))
            .args([
                "certs",
                "--renew-before-days",
                "400",
                "--service",
                "eventscale-metrics-apiserver",
                "--namespace",
                "eventscale",
                "--dir",
            ])
            .arg(c.state_dir.join("eventscale-certs"))
            .output()
            .expect("eventscale certs");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("issued a new serving certificate under the existing CA"),
            "{said}"
        );
        let previous = serials.last().cloned().unwrap_or_default();
        let next = eventually(
            Duration::from_secs(30),
            "the new certificate being served",
            || {
                let s = served_serial();
                let changed = !s.is_empty() && s != previous;
                async move { changed.then_some(s) }
            },
        )
        .await;
        serials.push(next);
        // Let the HPA controller (2 s sync) read through the new certificate a few times.
        for _ in 0..8 {
            let (active, failures) = hpa_health(&ns.0);
            assert!(
                active.starts_with("\"True\""),
                "round {round}: ScalingActive is {active}"
            );
            assert_eq!(
                failures, 0,
                "round {round}: the HPA failed to read a metric"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert_eq!(ca_pem(), ca_before, "the CA stayed");
    let mut unique = serials.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{serials:?}");
}
