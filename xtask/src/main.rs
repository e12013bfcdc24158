//! `cargo xtask`: project automation for this workspace (run `cargo xtask help`).
//!
//! - `cargo xtask test` runs the test suite against every database backend
//!   (embedded PGlite and real PostgreSQL servers) and prints a result matrix.
//! - `cargo xtask pg` starts a throwaway PostgreSQL server for running tests by
//!   hand.
//! - `cargo xtask bench` runs the benchmark contenders side by side.

// xtask is a command-line tool: talking to the terminal is its job, so the
// workspace's "no printing" lints (meant for library code) do not apply.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod codegen;
mod flags;
mod postgres;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Every failure ends up in front of a person, so errors are plain messages.
type Result<T, E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let command = match flags::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("error: {message}\n\n{}", flags::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        flags::Command::Help => {
            print!("{}", flags::USAGE);
            Ok(())
        }
        flags::Command::Test(flags) => test::run(&flags),
        flags::Command::Pg { major, tls } => postgres::serve(major, tls),
        flags::Command::Bench(flags) => bench::run(&flags),
        flags::Command::Codegen { check } => codegen::run(check),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, whatever directory `cargo xtask` was started from.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one directory below the workspace root")
        .to_path_buf()
}
