//! `cargo xtask test`: the backend × test-suite matrix.
//!
//! Each cell is one `cargo test` run with the environment that selects a
//! backend; its output is streamed live and the libtest summaries are counted.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::{env, fs};

use crate::flags::TestFlags;
use crate::postgres::Tls;
use crate::{Result, postgres, project_root};

/// PostgreSQL major versions tested when neither `--pg` nor `DATABASE_URL` says otherwise.
const DEFAULT_PG: [u32; 6] = [13, 14, 15, 16, 17, 18];

/// Runs the requested cells, prints the matrix, and fails if any cell did.
pub(crate) fn run(flags: &TestFlags) -> Result<()> {
    let mut cells = Vec::new();
    if flags.db.includes_pglite() {
        // Every crate's own unit tests, doctests and CLI tests (they need no
        // server: what they open is embedded), then the conformance suite.
        let mut cargo = cargo_test(
            &["--workspace", "--exclude", "conformance"],
            &flags.cargo_args,
        );
        cargo.env("COCALC_DB", "pglite").env_remove("DATABASE_URL");
        cells.push(run_cell("unit, doc and CLI tests".into(), cargo));
        let mut cargo = cargo_test(&["-p", "conformance"], &flags.cargo_args);
        cargo.env("COCALC_DB", "pglite").env_remove("DATABASE_URL");
        cells.push(run_cell(pglite_label(), cargo));
    }
    if flags.db.includes_postgres() {
        let existing = env::var("DATABASE_URL").ok().filter(|url| !url.is_empty());
        match (&flags.pg, existing) {
            (None, Some(url)) => cells.push(run_cell(
                "postgres (DATABASE_URL)".into(),
                conformance_against(&url, &[], &flags.cargo_args),
            )),
            (versions, _) => {
                let versions = versions.as_deref().unwrap_or(&DEFAULT_PG);
                for &major in versions {
                    cells.push(postgres_cell(major, Tls::Off, &flags.cargo_args));
                }
                // The TLS-only cell, on the newest version asked for.
                if let Some(&newest) = versions.iter().max() {
                    cells.push(postgres_cell(newest, Tls::Only, &flags.cargo_args));
                }
            }
        }
    }
    print_matrix(&cells);
    let failed = cells.iter().filter(|cell| cell.verdict().is_err()).count();
    match failed {
        0 => Ok(()),
        _ => Err(format!("{failed} of {} backend cells failed", cells.len())),
    }
}

/// One row of the matrix.
struct Cell {
    label: String,
    outcome: Outcome,
}

enum Outcome {
    /// `cargo test` ran to completion (successfully or not).
    Ran { counts: Counts, status: ExitStatus },
    /// The backend could not be set up, so nothing ran.
    NotProvisioned(String),
}

/// libtest's counts, summed over every test binary of one `cargo test`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Cell {
    /// `Ok` if the cell passed, otherwise why not. Running zero tests is a
    /// failure: it usually means a filter or a build matched nothing.
    fn verdict(&self) -> Result<(), String> {
        match &self.outcome {
            Outcome::NotProvisioned(reason) => Err(format!("not provisioned: {reason}")),
            Outcome::Ran { counts, .. } if counts.failed > 0 => Err("FAILED".into()),
            // E.g. a build error: nothing failed, yet cargo did.
            Outcome::Ran { status, .. } if !status.success() => {
                Err(format!("FAILED (cargo test {status})"))
            }
            Outcome::Ran { counts, .. } if counts.passed == 0 => {
                Err("FAILED (no tests ran)".into())
            }
            Outcome::Ran { .. } => Ok(()),
        }
    }
}

/// Provisions a server of the given major version for the duration of one
/// conformance run.
fn postgres_cell(major: u32, tls: Tls, cargo_args: &[String]) -> Cell {
    let suffix = match tls {
        Tls::Off => "",
        Tls::Only => " TLS verify-full",
    };
    match postgres::Cluster::start(major, tls) {
        // `cluster` lives until the end of this arm: the server is stopped and
        // deleted as soon as its tests are done, before the next one starts.
        Ok(cluster) => {
            let mut cargo = match cluster.tls_files() {
                None => conformance_against(&cluster.url(), &[], cargo_args),
                // The TLS tests need the cluster's CAs; they are built only
                // for this cell.
                Some(files) => {
                    let mut cargo = conformance_against(
                        &cluster.url(),
                        &["--features", "conformance/tls-tests"],
                        cargo_args,
                    );
                    cargo
                        .env("COCALC_TEST_TLS_CA", &files.ca)
                        .env("COCALC_TEST_TLS_OTHER_CA", &files.other_ca)
                        .env("COCALC_TEST_TLS_CLIENT", &files.client)
                        .env("COCALC_TEST_TLS_OTHER_CLIENT", &files.other_client);
                    cargo
                }
            };
            // A throwaway server of our own: the restart test may crash it.
            cargo.env("COCALC_TEST_SERVER_RESTARTABLE", "1");
            run_cell(format!("postgres {}{suffix}", cluster.version()), cargo)
        }
        Err(reason) => {
            eprintln!("==> PostgreSQL {major}{suffix} not provisioned: {reason}");
            Cell {
                label: format!("postgres {major}{suffix}"),
                outcome: Outcome::NotProvisioned(first_line(&reason).to_owned()),
            }
        }
    }
}

/// The conformance suite against the server at `url`; it creates its own
/// per-test databases there.
fn conformance_against(url: &str, features: &[&str], cargo_args: &[String]) -> Command {
    let selection: Vec<&str> = ["-p", "conformance"]
        .iter()
        .chain(features)
        .copied()
        .collect();
    let mut cargo = cargo_test(&selection, cargo_args);
    cargo.env("COCALC_DB", "postgres").env("DATABASE_URL", url);
    cargo
}

/// `cargo test <selection> --no-fail-fast <extra>`. `--no-fail-fast` keeps one
/// failing test binary from hiding the results of the others in the matrix.
fn cargo_test(selection: &[&str], extra: &[String]) -> Command {
    // `cargo xtask` runs us through cargo, which says where it lives.
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    cargo
        .current_dir(project_root())
        .arg("test")
        .args(selection)
        .arg("--no-fail-fast")
        .args(extra);
    // The session model test's case count in the matrix (its own default is
    // smaller, for a quick local `cargo test`).
    if env::var_os("SESSION_MODEL_CASES").is_none() {
        cargo.env("SESSION_MODEL_CASES", SESSION_MODEL_CASES);
    }
    cargo
}

/// Generated cases of `session_model` per backend cell: about 35 s on
/// PGlite and 20 s on PostgreSQL 15 in a debug build on a 2-core machine.
const SESSION_MODEL_CASES: &str = "2000";

/// Runs one `cargo test`, streaming its output while counting results.
fn run_cell(label: String, mut cargo: Command) -> Cell {
    let envs = cargo.get_envs().filter_map(|(name, value)| {
        Some(format!(
            "{}={}",
            name.to_string_lossy(),
            value?.to_string_lossy()
        ))
    });
    let args = cargo
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned());
    let shown: Vec<_> = envs.chain(["cargo".into()]).chain(args).collect();
    eprintln!("\n==> {label}: {}", shown.join(" "));
    let outcome = match tee_stdout(&mut cargo) {
        Ok((status, output)) => Outcome::Ran {
            counts: parse_counts(&output),
            status,
        },
        Err(error) => Outcome::NotProvisioned(format!("cannot run cargo: {error}")),
    };
    Cell { label, outcome }
}

/// Runs `command` with its stdout copied live to ours and captured (libtest
/// prints its summaries there); stderr, where cargo reports compilation, goes
/// straight to the terminal.
fn tee_stdout(command: &mut Command) -> io::Result<(ExitStatus, String)> {
    let mut child = command.stdout(Stdio::piped()).spawn()?;
    let mut tee = Tee(Vec::new());
    let copied = match child.stdout.take() {
        Some(mut stdout) => io::copy(&mut stdout, &mut tee).map(drop),
        None => Ok(()),
    };
    // Always reap the child, even if copying failed.
    let status = child.wait()?;
    copied?;
    Ok((status, String::from_utf8_lossy(&tee.0).into_owned()))
}

/// A writer that forwards everything to our stdout and keeps a copy.
struct Tee(Vec<u8>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        // Flush per chunk so partial lines ("test foo ... ") show up at once.
        // A closed stdout (e.g. piped into `head`) must neither stop the tests
        // nor lose the counts, so its errors are ignored.
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(buf).and_then(|()| stdout.flush());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sums libtest's summary lines, e.g.
/// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
fn parse_counts(output: &str) -> Counts {
    let mut total = Counts::default();
    for line in output.lines() {
        let Some(summary) = line.trim_start().strip_prefix("test result: ") else {
            continue;
        };
        for part in summary.split(';') {
            let words: Vec<_> = part.split_whitespace().collect();
            let [.., count, kind] = words[..] else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => total.passed += count,
                "failed" => total.failed += count,
                "ignored" => total.ignored += count,
                _ => {}
            }
        }
    }
    total
}

/// Labels the pglite cell with the pglite-oxide release resolved in
/// Cargo.lock: that crate pins the embedded PostgreSQL build, and it is known
/// without starting the server.
fn pglite_label() -> String {
    let lock = fs::read_to_string(project_root().join("Cargo.lock")).unwrap_or_default();
    let version = lock.split("[[package]]").find_map(|package| {
        let mut lines = package.lines().map(str::trim);
        lines.find(|&line| line == r#"name = "pglite-oxide""#)?;
        lines.find_map(|line| line.strip_prefix(r#"version = ""#)?.strip_suffix('"'))
    });
    match version {
        Some(version) => format!("pglite (pglite-oxide {version})"),
        None => "pglite".into(),
    }
}

/// Prints the matrix, then a one-line total in the `N passed, N failed` form
/// that log readers recognise.
fn print_matrix(cells: &[Cell]) {
    let width = cells
        .iter()
        .map(|cell| cell.label.len())
        .chain(["backend".len()])
        .max()
        .unwrap_or_default()
        + 2;
    println!(
        "\n{:<width$}{:>6}{:>8}{:>9}  status",
        "backend", "passed", "failed", "skipped"
    );
    let mut total = Counts::default();
    for cell in cells {
        let numbers = match &cell.outcome {
            Outcome::Ran { counts, .. } => {
                total.passed += counts.passed;
                total.failed += counts.failed;
                total.ignored += counts.ignored;
                [counts.passed, counts.failed, counts.ignored].map(|n| n.to_string())
            }
            Outcome::NotProvisioned(_) => ["-", "-", "-"].map(str::to_owned),
        };
        let status = cell.verdict().err().unwrap_or_else(|| "ok".into());
        let [passed, failed, skipped] = numbers;
        println!(
            "{:<width$}{passed:>6}{failed:>8}{skipped:>9}  {status}",
            cell.label
        );
    }
    println!(
        "\ntotal: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    );
}

/// Keeps the matrix on one line per cell when a reason spans several.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_summaries_of_all_test_binaries() {
        let output = "\
running 2 tests
test a ... ok
test b ... FAILED
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 5 filtered out; finished in 1.50s
   Doc-tests db
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        let expected = Counts {
            passed: 13,
            failed: 1,
            ignored: 3,
        };
        assert_eq!(parse_counts(output), expected);
    }

    #[test]
    fn no_summary_means_no_counts() {
        assert_eq!(
            parse_counts("error[E0425]: cannot find value"),
            Counts::default()
        );
    }
}
