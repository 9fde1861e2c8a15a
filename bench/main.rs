//! eventscale's benchmark suite: `cargo bench -p metrics-adapter --bench eventscale`.
//!
//! Prints each figure of `docs/benchmarks.md` as it is measured, marks every target met or
//! missed, and keeps the run as `target/bench/results.{md,json}` with the commit it was
//! taken at. Figures are ratios and counts within one run; nothing here is a timed test.
//!
//! Arguments (after `--`): the figures to run (`reads`, `activation`, `push`, `writes`,
//! `requests`, `sources`, `scale`, `http`, `jobs`, `shards`; all by default), `--quick` for shorter runs, `--strict` to
//! exit non-zero when a target is missed.

#[path = "../e2e/support/cluster.rs"]
mod cluster_support;
#[path = "../crates/scaler-core/tests/support/external_scaler.rs"]
mod external_scaler;
#[path = "../e2e/support/sources.rs"]
mod sources;

mod cluster;
mod http;
mod jobs;
mod load;
mod reads;
mod report;
mod shards;

use std::time::Duration;

use report::Report;

/// In the order they run: the cluster's own eventscale first, then the bench's.
const FIGURES: [&str; 10] = [
    "reads",
    "activation",
    "push",
    "writes",
    "requests",
    "sources",
    "scale",
    "http",
    "jobs",
    "shards",
];

fn main() -> std::process::ExitCode {
    // cargo passes `--bench`; anything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let quick = args.iter().any(|a| a == "--quick");
    let strict = args.iter().any(|a| a == "--strict");
    let mut wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(bad) = wanted.iter().find(|w| !FIGURES.contains(w)) {
        eprintln!("unknown figure {bad:?}; the figures are {FIGURES:?}");
        return std::process::ExitCode::from(2);
    }
    if wanted.is_empty() {
        wanted = FIGURES.to_vec();
    }
    // Logging as `eventscale run` has it by default (info, text), written nowhere: spans
    // and events on the request path cost what they cost in production.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::io::sink)
        .try_init();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let mut report = Report::new(&repo);
    println!("eventscale benchmarks at {}", report.commit);
    // The e2e support's watchdog ends a hung test binary; the bench runs longer than a test.
    if std::env::var_os("EVENTSCALE_E2E_MINUTES").is_none() {
        std::env::set_var("EVENTSCALE_E2E_MINUTES", "120");
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for figure in wanted {
        let result = match figure {
            "reads" => reads::run(
                &mut report,
                &reads::Settings {
                    connections: 32,
                    duration: Duration::from_secs(if quick { 2 } else { 4 }),
                    rate: 5_000.0,
                    rounds: if quick { 1 } else { 5 },
                },
            ),
            "activation" => rt.block_on(cluster::activation(&mut report, 5)),
            "push" => rt.block_on(cluster::push(
                &mut report,
                if quick { 100 } else { 1_000 },
                if quick { 5 } else { 20 },
            )),
            "writes" => rt.block_on(cluster::writes(
                &mut report,
                Duration::from_secs(if quick { 30 } else { 60 }),
            )),
            "requests" => rt.block_on(cluster::requests(
                &mut report,
                Duration::from_secs(if quick { 30 } else { 60 }),
            )),
            "sources" => rt.block_on(cluster::sources(
                &mut report,
                if quick {
                    &[1, 10, 100]
                } else {
                    &[1, 10, 100, 1000]
                },
            )),
            "scale" => rt.block_on(cluster::scale(
                &mut report,
                if quick { 2_000 } else { 10_000 },
                1_000.0,
                Duration::from_secs(if quick { 3 } else { 10 }),
            )),
            "http" => rt.block_on(http::run(&mut report, quick)),
            "jobs" => rt.block_on(jobs::run(&mut report, quick)),
            "shards" => rt.block_on(shards::run(
                &mut report,
                if quick { 10_000 } else { 100_000 },
                200.0,
                Duration::from_secs(if quick { 5 } else { 10 }),
            )),
            other => Err(anyhow::anyhow!("unknown figure {other}")),
        };
        if let Err(e) = result {
            eprintln!("[{figure}] failed: {e:#}");
            failed = true;
        }
    }
    println!(
        "{} figures measured, {} failed requests, targets {}",
        report.len(),
        report.errors(),
        if report.all_met() {
            "all met"
        } else {
            "NOT all met"
        }
    );
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find_map(|l| l
                .strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())))
            .unwrap_or_else(|| "unknown CPU".into())
    );
    let out = repo.join("target/bench");
    let written = std::fs::create_dir_all(&out)
        .and_then(|_| std::fs::write(out.join("results.md"), report.markdown(&machine)))
        .and_then(|_| {
            std::fs::write(
                out.join("results.json"),
                serde_json::to_string_pretty(&report.json()).unwrap_or_default(),
            )
        });
    match written {
        Ok(()) => println!("results: {}", out.join("results.md").display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
    if failed || (strict && !report.all_met()) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
