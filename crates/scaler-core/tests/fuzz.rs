//! Every fuzz target of `fuzz/` (the parsers of what users, clients, brokers and Prometheus
//! send) runs for a few seconds in `cargo test`: built with coverage instrumentation on the
//! stable toolchain by `fuzz/run.sh build`, then run by libFuzzer from the committed corpus
//! (`fuzz/corpus/<target>`, only read: new inputs go to a scratch directory, removed
//! afterwards). A crash, failed assertion, timeout or out-of-memory fails the test, naming
//! the target and the input libFuzzer saved. `EVENTSCALE_SKIP_FUZZ=1` skips it (for quick
//! local runs; CI runs it). See docs/fuzzing.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// How long each target is fuzzed.
const SECONDS_PER_TARGET: u32 = 12;
/// Targets fuzzed at once.
const PARALLEL: usize = 2;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The build directory this test was built in (where `fuzz/run.sh` puts `fuzz/`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| root().join("target"))
}

/// Where this run's targets write what they find: per process, so that two `cargo test`
/// runs in one checkout never share one.
fn scratch_dir() -> PathBuf {
    target_dir()
        .join("fuzz/bounded")
        .join(std::process::id().to_string())
}

fn run_sh(args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    Command::new("bash")
        .arg(root().join("fuzz/run.sh"))
        .args(args)
        .env("CARGO", cargo)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap_or_else(|e| panic!("running fuzz/run.sh: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What went wrong in one target's run, if anything.
fn fuzz(bins: &Path, target: &str) -> Result<String, String> {
    let scratch = scratch_dir().join(target);
    let artifacts = target_dir().join("fuzz/artifacts").join(target);
    let _ = std::fs::remove_dir_all(&scratch);
    for dir in [&scratch, &artifacts] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let corpus = root().join("fuzz/corpus").join(target);
    let out = Command::new(bins.join(target))
        .arg(&scratch)
        .arg(&corpus)
        .arg(format!("-max_total_time={SECONDS_PER_TARGET}"))
        .arg("-rss_limit_mb=2048")
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .map_err(|e| format!("running {target}: {e}"))?;
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map_or("?", str::trim)
            .to_string()
    };
    let crashed = !out.status.success()
        || log.contains("ERROR: libFuzzer")
        || log.contains("SUMMARY: libFuzzer");
    if !crashed {
        return Ok(format!(
            "{target}: {} runs, {} exec/s",
            stat("number_of_executed_units"),
            stat("average_exec_per_sec")
        ));
    }
    let saved = log
        .lines()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, f)| f.trim()))
        .unwrap_or("(no input saved)");
    // The panic's location and message (the line after), and libFuzzer's verdict.
    let lines: Vec<&str> = log.lines().collect();
    let why: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.contains("panicked at")
                || l.contains("ERROR: libFuzzer")
                || l.contains("memory allocation of")
        })
        .flat_map(|(i, l)| {
            let message = l
                .contains("panicked at")
                .then(|| lines.get(i + 1))
                .flatten();
            std::iter::once(*l).chain(message.copied())
        })
        .collect();
    Err(format!(
        "fuzz target {target} failed ({}): input saved as {saved}\n{}\n\
         reproduce: {} {saved}\n--- end of its output ---\n{}",
        out.status,
        why.join("\n"),
        bins.join(target).display(),
        tail(&log, 30)
    ))
}

#[test]
fn every_fuzz_target_survives_a_short_run() {
    if std::env::var_os("EVENTSCALE_SKIP_FUZZ").is_some_and(|v| v == "1") {
        eprintln!("EVENTSCALE_SKIP_FUZZ=1: fuzz targets not run");
        return;
    }
    let started = Instant::now();
    let build = run_sh(&["build"]);
    assert!(
        build.status.success(),
        "building the fuzz targets failed:\n{}",
        tail(&text(&build.stderr), 60)
    );
    let bins = PathBuf::from(text(&build.stdout).trim());
    println!("fuzz targets built in {:.0?}", started.elapsed());

    let listed = run_sh(&["list"]);
    let targets: Vec<String> = text(&listed.stdout).lines().map(str::to_string).collect();
    assert!(targets.len() >= 9, "fuzz targets: {targets:?}");

    let ran = Instant::now();
    let mut failures = Vec::new();
    for batch in targets.chunks(PARALLEL) {
        let results: Vec<Result<String, String>> = std::thread::scope(|s| {
            let runs: Vec<_> = batch.iter().map(|t| s.spawn(|| fuzz(&bins, t))).collect();
            runs.into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err("a runner thread panicked".into()))
                })
                .collect()
        });
        for r in results {
            match r {
                Ok(stats) => println!("{stats}"),
                Err(e) => failures.push(e),
            }
        }
    }
    println!("fuzz targets ran in {:.0?}", ran.elapsed());
    let _ = std::fs::remove_dir_all(scratch_dir());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
