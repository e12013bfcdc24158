//! `cargo xtask bench`: runs every contender on every workload in one
//! invocation, alternating contenders round by round, and prints medians,
//! p99 and the ratios the project tracks; `--json FILE` writes the same.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a report generator's job is printing

mod changefeed;
mod contender;
mod hub;
mod machine;
mod migrate;
mod node;
mod schema_sync;
mod stats;
mod test_databases;
mod workloads;

use std::path::PathBuf;

use serde::Serialize;

use crate::stats::Summary;

/// Command-line options, passed by `cargo xtask bench`.
#[derive(Debug, Default)]
struct Options {
    quick: bool,
    json: Option<PathBuf>,
    postgres_url: Option<String>,
    node_dir: Option<PathBuf>,
    embedded_only: bool,
    /// `--only GROUP[,GROUP...]`: run only these workload groups
    /// ([`GROUPS`]); all when empty.
    only: Vec<String>,
    /// `--cocalc-db PATH`: the binary the migrate workload runs (default:
    /// the one beside this benchmark).
    cocalc_db: Option<PathBuf>,
    /// `--runs N`: how many times the core workloads run in each condition
    /// (default 5, 2 with `--quick`).
    runs: Option<usize>,
}

/// The workload groups `--only` selects from.
const GROUPS: &[&str] = &["core", "changefeed", "schema-sync", "migrate", "hub"];

impl Options {
    /// Whether the workload group `group` is to run.
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--embedded-only" => o.embedded_only = true,
            "--json" => o.json = Some(args.next().ok_or("--json needs a file")?.into()),
            "--postgres-url" => {
                o.postgres_url = Some(args.next().ok_or("--postgres-url needs a URL")?)
            }
            "--cocalc-db" => {
                o.cocalc_db = Some(args.next().ok_or("--cocalc-db needs a file")?.into())
            }
            "--runs" => {
                let n = args.next().ok_or("--runs needs a number")?;
                o.runs = Some(
                    n.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("--runs needs a positive number, not {n}"))?,
                );
            }
            "--node-dir" => {
                o.node_dir = Some(args.next().ok_or("--node-dir needs a directory")?.into())
            }
            "--only" => {
                let groups = args.next().ok_or("--only needs a workload group")?;
                for g in groups.split(',') {
                    if !GROUPS.contains(&g) {
                        return Err(format!("unknown workload group {g} (known: {GROUPS:?})"));
                    }
                    o.only.push(g.to_owned());
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// One contender's figures on one workload.
#[derive(Debug, Serialize)]
struct Entry {
    contender: String,
    summary: Option<Summary>,
    note: Option<String>,
}

/// One workload's table.
#[derive(Debug, Serialize)]
struct Workload {
    name: String,
    /// The machine's condition while it ran (`idle`, `busy`), for the
    /// workloads run in both.
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<String>,
    unit: String,
    entries: Vec<Entry>,
}

/// A tracked ratio and its target.
#[derive(Debug, Serialize)]
struct Ratio {
    what: String,
    value: Option<f64>,
    target: String,
    met: Option<bool>,
}

/// One step of a process run as a child: its time and peak memory.
#[derive(Debug, Serialize)]
struct Step {
    name: String,
    /// Rows moved.
    rows: u64,
    seconds: f64,
    /// Peak resident set size of the process (`VmHWM`), when measured.
    peak_rss_mb: Option<f64>,
}

/// The whole report.
#[derive(Debug, Default, Serialize)]
struct Report {
    workloads: Vec<Workload>,
    ratios: Vec<Ratio>,
    figures: Vec<(String, String)>,
    /// Steps of the migrate workload.
    steps: Vec<Step>,
    /// The hub workload: requests/s and latency per backend and level.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hub: Vec<hub::HubRow>,
}

impl Report {
    /// The summary of `contender` on `workload` run in `condition`.
    fn summary(&self, condition: Option<&str>, workload: &str, contender: &str) -> Option<Summary> {
        self.workloads
            .iter()
            .find(|w| w.name == workload && w.condition.as_deref() == condition)?
            .entries
            .iter()
            .find(|e| e.contender == contender)?
            .summary
    }

    fn ratio(&mut self, what: &str, value: Option<f64>, target: &str, met: impl Fn(f64) -> bool) {
        self.ratios.push(Ratio {
            what: what.to_owned(),
            value,
            target: target.to_owned(),
            met: value.map(met),
        });
    }

    fn print(&self) {
        for w in &self.workloads {
            match &w.condition {
                Some(c) => println!("\n## {} ({}; {c} machine)", w.name, w.unit),
                None => println!("\n## {} ({})", w.name, w.unit),
            }
            println!(
                "{:<36} {:>12} {:>12} {:>9}  spread of runs (median, p99)",
                "contender", "median µs", "p99 µs", "samples"
            );
            for e in &w.entries {
                match (&e.summary, &e.note) {
                    (Some(s), _) => println!(
                        "{:<36} {:>12.1} {:>12.1} {:>9}  {}",
                        e.contender,
                        s.median_us,
                        s.p99_us,
                        s.samples,
                        s.spread.map_or_else(String::new, |r| format!(
                            "{} runs: {:.1}-{:.1}, {:.1}-{:.1}",
                            r.runs, r.median_lo_us, r.median_hi_us, r.p99_lo_us, r.p99_hi_us
                        ))
                    ),
                    (None, Some(note)) => println!("{:<36} {note}", e.contender),
                    (None, None) => println!("{:<36} -", e.contender),
                }
            }
        }
        if !self.hub.is_empty() {
            println!(
                "\n## hub request mix (requests/s: median of runs; p50/p99: medians of the runs')"
            );
            hub::HubRow::print_header();
            for row in &self.hub {
                row.print();
            }
        }
        if !self.figures.is_empty() {
            println!("\n## figures");
            for (k, v) in &self.figures {
                println!("{k:<58} {v}");
            }
        }
        if !self.steps.is_empty() {
            println!("\n## migrate steps (child processes)");
            println!(
                "{:<70} {:>9} {:>10} {:>12}",
                "step", "seconds", "rows/s", "peak RSS MB"
            );
            for step in &self.steps {
                let rate = step.rows as f64 / step.seconds.max(1e-9);
                let rss = step
                    .peak_rss_mb
                    .map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"));
                println!(
                    "{:<70} {:>9.2} {:>10.0} {:>12}",
                    step.name, step.seconds, rate, rss
                );
            }
        }
        println!("\n## ratios");
        for r in &self.ratios {
            let value = r
                .value
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
            let met = match r.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            println!("{:<58} {:>8}  target {:<10} {met}", r.what, value, r.target);
        }
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--burn") {
        machine::burn();
        return;
    }
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(&options));
    match result {
        Ok(report) if options.embedded_only => {
            // Child mode: the peak memory of a process running only the
            // embedded backend, for the parent to report.
            let _ = report;
            println!("{}", stats_peak_rss_kib().unwrap_or(0));
        }
        Ok(report) => {
            report.print();
            if let Some(path) = &options.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => {
                        if let Err(e) = std::fs::write(path, json) {
                            eprintln!("bench: writing {}: {e}", path.display());
                            std::process::exit(1);
                        }
                    }
                    Err(e) => eprintln!("bench: {e}"),
                }
            }
        }
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the selected workload groups into one report.
async fn run(o: &Options) -> contender::BenchResult<Report> {
    let mut report = if o.wants("core") {
        workloads::run(o).await?
    } else {
        Report::default()
    };
    if !o.embedded_only {
        if o.wants("changefeed") {
            changefeed::run(&mut report, o).await?;
        }
        if o.wants("schema-sync") {
            schema_sync::run(&mut report, o).await?;
        }
        if o.wants("migrate") {
            migrate::run(&mut report, o).await?;
        }
        if o.wants("hub") {
            hub::run(&mut report, o).await?;
        }
    }
    Ok(report)
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
fn stats_peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
