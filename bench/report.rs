//! The figures of one run: printed as a table, each target marked met or missed, and kept
//! as Markdown and JSON under `target/bench/` with the commit they were taken at.

use std::fmt::Write as _;
use std::path::Path;

/// One measured line.
pub struct Row {
    figure: &'static str,
    name: String,
    values: Vec<(&'static str, f64)>,
    note: String,
}

impl Row {
    /// A row of `figure`.
    pub fn new(
        figure: &'static str,
        name: &str,
        values: Vec<(&'static str, f64)>,
        note: String,
    ) -> Self {
        Self {
            figure,
            name: name.to_string(),
            values,
            note,
        }
    }
}

/// A target and whether this run met it.
pub struct Check {
    figure: &'static str,
    what: String,
    measured: String,
    target: String,
    met: bool,
}

/// Everything one run measured.
pub struct Report {
    /// `git describe --always --dirty` of the tree measured.
    pub commit: String,
    rows: Vec<Row>,
    checks: Vec<Check>,
    notes: Vec<String>,
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    /// An empty report for the tree at `repo`.
    pub fn new(repo: &Path) -> Self {
        let commit = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty", "--abbrev=7"])
            .current_dir(repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Self {
            commit,
            rows: Vec::new(),
            checks: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Add a measured line (printed at once, so a long run shows progress).
    pub fn push(&mut self, row: Row) {
        let values: Vec<String> = row
            .values
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt(*v)))
            .collect();
        println!(
            "[{}] {}: {}  ({})",
            row.figure,
            row.name,
            values.join(", "),
            row.note
        );
        self.rows.push(row);
    }

    /// Record a target: `measured` against `target`.
    pub fn check(
        &mut self,
        figure: &'static str,
        what: &str,
        measured: String,
        target: &str,
        met: bool,
    ) {
        println!(
            "[{figure}] {what}: {measured} (target {target}) {}",
            if met { "MET" } else { "MISSED" }
        );
        self.checks.push(Check {
            figure,
            what: what.to_string(),
            measured,
            target: target.to_string(),
            met,
        });
    }

    /// Record a ratio target.
    pub fn ratio(&mut self, figure: &'static str, what: &str, value: f64, target: &str, met: bool) {
        self.check(figure, what, format!("{value:.2}x"), target, met);
    }

    /// A line of context for the report.
    pub fn note(&mut self, note: String) {
        println!("{note}");
        self.notes.push(note);
    }

    /// Failed requests over every row that counts them.
    pub fn errors(&self) -> f64 {
        self.rows
            .iter()
            .flat_map(|r| &r.values)
            .filter(|(k, _)| *k == "errors")
            // From 0.0: an empty f64 sum is -0.0, printed "-0".
            .fold(0.0, |sum, (_, v)| sum + v)
    }

    /// How many rows were measured.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether every target was met.
    pub fn all_met(&self) -> bool {
        self.checks.iter().all(|c| c.met)
    }

    /// The report as Markdown.
    pub fn markdown(&self, machine: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Commit `{}`; {machine}.\n", self.commit);
        let _ = writeln!(s, "| figure | target | measured | met |");
        let _ = writeln!(s, "|---|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "| {}: {} | {} | {} | {} |",
                c.figure,
                c.what,
                c.target,
                c.measured,
                if c.met { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(s, "\n| figure | run | measured | how |");
        let _ = writeln!(s, "|---|---|---|---|");
        for r in &self.rows {
            let values: Vec<String> = r
                .values
                .iter()
                .map(|(k, v)| format!("{k} {}", fmt(*v)))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.figure,
                r.name,
                values.join(", "),
                r.note
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s);
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "commit": self.commit,
            "checks": self.checks.iter().map(|c| serde_json::json!({
                "figure": c.figure, "what": c.what, "measured": c.measured,
                "target": c.target, "met": c.met,
            })).collect::<Vec<_>>(),
            "rows": self.rows.iter().map(|r| serde_json::json!({
                "figure": r.figure, "name": r.name, "note": r.note,
                "values": r.values.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                    .collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}
