//! `cocalc-db`: the hub database's command-line tool.
//!
//! It runs on either backend of the `db` crate. Unlike the library, whose
//! default is a PostgreSQL server, the binary defaults to the embedded
//! backend with its data in `~/.cocalc/pglite`, as the packaged single-binary
//! edition does (see `config.rs` for the precedence rules).
//!
//! Output goes through `std::io::Write` on locked handles (see `output.rs`),
//! so a closed pipe is not a panic.

mod backup;
mod check;
mod config;
mod csv;
mod exit_status;
mod feed;
mod interrupt;
mod json;
mod output;
mod progress_bar;
mod schema;
mod sql;
mod text;
mod transfer;

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The top-level help's note on configuration and standard error.
const ENVIRONMENT: &str = "\
Configuration, highest precedence first: the flags above; the environment \
(COCALC_DB=postgres|pglite, COCALC_PGLITE_DATA_DIR, COCALC_PGLITE_RELAXED_DURABILITY=1, \
DATABASE_URL, PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD); then this binary's \
defaults: the embedded backend with its data in ~/.cocalc/pglite.

Standard error: a command that writes to a database (sql, schema sync, feed, watch, \
import, migrate, restore) first prints `cocalc-db <command>: target: <data directory \
or server, password redacted>`; a failure is one line `cocalc-db <command>: <cause>`. \
NO_COLOR (set, not empty) turns colour off; without a terminal there is none.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "cocalc-db",
    version,
    about = "Health check and SQL shell for the CoCalc hub's database (PostgreSQL or embedded PGlite)",
    after_help = format!("{ENVIRONMENT}\n\n{}", exit_status::ALL)
)]
struct Cli {
    /// Database selection, shared by every command.
    #[command(flatten)]
    db: config::DbArgs,

    /// Log to stderr: -v info, -vv debug, -vvv trace [default: warn];
    /// RUST_LOG adds per-target directives
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Boot-time health check: resolve the configuration, check the data
    /// directory, open the database, run a query; report each step's time.
    /// Exits 1 with one line on stderr on failure.
    #[command(after_help = exit_status::PLAIN)]
    Check,
    /// Run SQL (an argument, -f FILE or standard input) and print its rows
    /// as a table, JSON or CSV.
    #[command(after_help = exit_status::SQL)]
    Sql(sql::SqlArgs),
    /// Declarative schema sync: plan, sync, introspect.
    #[command(subcommand, after_help = exit_status::SCHEMA)]
    Schema(schema::SchemaCommand),
    /// Change feeds: enable, disable, list.
    #[command(subcommand, after_help = exit_status::PLAIN)]
    Feed(feed::FeedCommand),
    /// Print the changes to a table as they happen, one JSON object per
    /// event, until Ctrl-C or SIGTERM.
    #[command(after_help = exit_status::WATCH)]
    Watch(feed::WatchArgs),
    /// Write a logical SQL export of the embedded database (pg_dump's schema
    /// plus every row), with a manifest of row counts and checksums.
    #[command(after_help = exit_status::STOPPABLE)]
    Export(transfer::ExportArgs),
    /// Load an export into a PostgreSQL server (13 or newer) in one
    /// transaction, and verify every table's rows and checksum.
    #[command(after_help = exit_status::PLAIN)]
    Import(transfer::ImportArgs),
    /// Export the embedded database, import it into a PostgreSQL server and
    /// verify it, in one step.
    #[command(after_help = exit_status::STOPPABLE)]
    Migrate(transfer::MigrateArgs),
    /// Write a physical archive of the embedded data directory.
    #[command(after_help = exit_status::STOPPABLE)]
    Backup(backup::BackupArgs),
    /// Restore a physical archive into the embedded data directory.
    #[command(after_help = exit_status::PLAIN)]
    Restore(backup::RestoreArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_tracing(cli.verbose);
    let _file_size_limit = outlive_file_size_limit();
    match &cli.command {
        Command::Check => check::run(&cli.db).await,
        Command::Sql(args) => sql::run(&cli.db, args).await,
        Command::Schema(command) => schema::run(&cli.db, command).await,
        Command::Feed(command) => feed::run_feed(&cli.db, command).await,
        Command::Watch(args) => feed::run_watch(&cli.db, args).await,
        Command::Export(args) => transfer::run_export(&cli.db, args).await,
        Command::Import(args) => transfer::run_import(args).await,
        Command::Migrate(args) => transfer::run_migrate(&cli.db, args).await,
        Command::Backup(args) => backup::run_backup(&cli.db, args).await,
        Command::Restore(args) => backup::run_restore(&cli.db, args).await,
    }
}

/// Keeps a file size limit (`ulimit -f`) from ending the process: with a
/// handler for SIGXFSZ in place, the write that crosses it fails with
/// `EFBIG` ("File too large") instead, so a half-made data directory is
/// removed and the error says why. (PostgreSQL ignores SIGXFSZ too.) The
/// handler lives as long as the returned value.
#[cfg(target_os = "linux")]
fn outlive_file_size_limit() -> Option<tokio::signal::unix::Signal> {
    // SIGXFSZ's number on Linux.
    const SIGXFSZ: i32 = 25;
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ)).ok()
}

#[cfg(not(target_os = "linux"))]
fn outlive_file_size_limit() {}

/// Logs to stderr. The overall level is warn, or what `-v` asks for;
/// `RUST_LOG` adds per-target directives (`RUST_LOG=db=debug`) and, without
/// `-v`, may also change the overall level.
fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // Logging, not database configuration: `Config::from_env` stays the only
    // reader of the database variables.
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    // Of two directives for the same target, the later one wins.
    // The WebAssembly runtime warns about the guest's exit code when
    // PostgreSQL fails to start, and pglite-oxide and the driver about a
    // crash of the backend; the error that follows says what happened, once.
    let directives = if verbose == 0 {
        format!("{level},wasmer_wasix=error,pglite_oxide=error,db_pglite::crash=off,{rust_log}")
    } else {
        format!("{rust_log},{level}")
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::builder().parse_lossy(directives))
        .with_writer(std::io::stderr)
        .with_ansi(output::stderr_color())
        .init();
}

/// Prints clap's message (help and version go to standard output and
/// succeed) and exits 64, sysexits' `EX_USAGE`: not clap's 2, which
/// `schema plan` gives to "changes pending", so that a gate in CI can tell
/// a typo from a plan.
fn usage_error(error: &clap::Error) -> ExitCode {
    // Nothing sensible is left to do if the terminal is gone.
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(64)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["cocalc-db", "sql", "select 1", "--json", "--db", "pglite"])
            .expect("parse");
        assert_eq!(cli.db.db, Some(config::DbChoice::Pglite));
        assert!(matches!(cli.command, Command::Sql(ref a) if a.json));
    }

    #[test]
    fn data_dir_and_database_url_conflict() {
        let r = Cli::try_parse_from([
            "cocalc-db",
            "--data-dir",
            "/x",
            "--database-url",
            "postgres://h/db",
            "check",
        ]);
        assert!(r.is_err());
    }
}
