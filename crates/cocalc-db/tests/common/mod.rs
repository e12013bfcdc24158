//! What the CLI tests share: the built binary with a configuration
//! environment of the test's own, and its exit code and output.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Variables that would make a test depend on the caller's environment.
pub(crate) const CONFIG_VARS: &[&str] = &[
    "COCALC_DB",
    "COCALC_PGLITE_DATA_DIR",
    "COCALC_PGLITE_RELAXED_DURABILITY",
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGCONNECT_TIMEOUT",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGAPPNAME",
    "PGOPTIONS",
    "RUST_LOG",
];

/// The binary, with none of [`CONFIG_VARS`] inherited.
pub(crate) fn clean_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cocalc-db"));
    for var in CONFIG_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The binary on the embedded cluster in `dir`.
pub(crate) fn on_dir(dir: &Path) -> Command {
    let mut cmd = clean_command();
    cmd.args(["--db", "pglite", "--data-dir"]).arg(dir);
    cmd
}

/// Runs `cmd`: its exit code (-1 when killed by a signal), stdout, stderr.
pub(crate) fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run cocalc-db");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The failure line of a failed `command`'s standard error, which holds
/// nothing else but, first, the `target:` line of a command that writes.
pub(crate) fn failure_line<'a>(command: &str, err: &'a str) -> &'a str {
    let target = format!("cocalc-db {command}: target: ");
    let lines: Vec<&str> = err.lines().collect();
    match lines.as_slice() {
        [line] => line,
        [first, line] if first.starts_with(&target) => line,
        _ => panic!("expected the failure as one line (after a target line): {err}"),
    }
}
