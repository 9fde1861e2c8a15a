//! The benchmark's read figure, run briefly as a test: the load client, the bare server and
//! eventscale's direct metric path all answer, every request gets a 200, and the report is
//! complete. It asserts nothing about speed (`cargo bench` measures that).
#![allow(dead_code)]

#[path = "../../../bench/load.rs"]
mod load;
#[path = "../../../bench/reads.rs"]
mod reads;
#[path = "../../../bench/report.rs"]
mod report;

use std::time::Duration;

#[test]
fn the_read_benchmark_runs_and_every_read_succeeds() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut report = report::Report::new(&repo);
    reads::run(
        &mut report,
        &reads::Settings {
            connections: 4,
            duration: Duration::from_millis(300),
            rate: 500.0,
            rounds: 2,
        },
    )
    .expect("the read figure runs");
    assert_eq!(
        report.len(),
        10,
        "five servers and protocols, two runs each"
    );
    assert_eq!(report.errors(), 0.0, "{}", report.markdown("test"));
}
