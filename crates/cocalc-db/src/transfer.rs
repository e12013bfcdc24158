//! `cocalc-db export`, `import` and `migrate`: moving the embedded database
//! to a PostgreSQL server.
//!
//! - `export [--out FILE]` writes a logical SQL export of the embedded
//!   database (to standard output without `--out`).
//! - `import --from FILE --to URL [--force] [--spec FILE]` loads an export
//!   into a server and verifies it.
//! - `migrate --to URL [--force] [--spec FILE] [--keep FILE]` does both at
//!   once: the export streams into the import through a bounded pipe.
//!
//! Exit status 0 on success, 1 on any failure, including a verification
//! mismatch, whose message names the table.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use db::{AnyPool, BackendKind, Config, DataDir, PglitePool, Pool};
use migrate::{ExportOptions, ImportOptions, ImportReport, Manifest, MigrateError, OutputFile};

use crate::config::{self, DbArgs};
use crate::interrupt::{Shutdown, Stop};
use crate::output;
use crate::progress_bar::Bar;
use crate::schema::read_spec;

/// Arguments of `export`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ExportArgs {
    /// Write the export to this file (written beside it and renamed into
    /// place; a FIFO, device or symlink there is refused), or to standard
    /// output with `-` (the default).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) log: ChangeLogArgs,
}

/// Whether an export carries the change feed's log.
#[derive(Debug, Clone, Args)]
pub(crate) struct ChangeLogArgs {
    /// Also export the change feed's log (every retained change, with the
    /// row images of updated and deleted rows). Without it the log's
    /// tables go empty, and subscribers resuming on the target resync.
    #[arg(long)]
    pub(crate) with_changefeed_log: bool,
}

impl ChangeLogArgs {
    /// The export's options.
    fn export_options(&self) -> ExportOptions {
        let options = ExportOptions::new();
        if self.with_changefeed_log {
            return options;
        }
        changefeed::log_tables()
            .into_iter()
            .fold(options, |o, (schema, table)| {
                o.without_data_of(schema, table)
            })
    }
}

impl ExportArgs {
    /// The file to write, `None` for standard output.
    fn file(&self) -> Option<&std::path::Path> {
        self.out.as_deref().filter(|p| !is_stdout(p))
    }
}

/// Whether an `--out` names standard output (`-`).
pub(crate) fn is_stdout(path: &std::path::Path) -> bool {
    path.as_os_str() == "-"
}

/// The target of `import` and `migrate`.
#[derive(Debug, Clone, Args)]
pub(crate) struct TargetArgs {
    /// Where to load: a PostgreSQL server (postgres:// or postgresql://),
    /// or the path of an embedded data directory; other URLs, memory:// and
    /// an empty value are refused.
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    /// Load even into a database that already holds tables.
    #[arg(long)]
    pub(crate) force: bool,
    /// After loading, check that the schema plan for this spec is empty.
    #[arg(long, value_name = "FILE")]
    pub(crate) spec: Option<PathBuf>,
}

/// Arguments of `import`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ImportArgs {
    /// The export to load.
    #[arg(long, value_name = "FILE")]
    pub(crate) from: PathBuf,
    /// Load a file without a manifest or end marker (hand-made SQL): it may
    /// be incomplete, and nothing tells.
    #[arg(long)]
    pub(crate) unverified: bool,
    /// Where to load it.
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

/// Arguments of `migrate`.
#[derive(Debug, Clone, Args)]
pub(crate) struct MigrateArgs {
    /// Where to load the embedded database.
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Also write the export to this file, as it goes; it appears once the
    /// export is complete (and stays should the import then fail).
    #[arg(long, value_name = "FILE")]
    pub(crate) keep: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) log: ChangeLogArgs,
}

/// A failure already reported, as its exit code.
type Outcome<T> = Result<T, ExitCode>;

/// Runs `export`. The data directory records the export only when it went
/// to a regular file (standard output included, when redirected to one):
/// what went into a pipe or a device may not be kept.
pub(crate) async fn run_export(db: &DbArgs, args: &ExportArgs) -> ExitCode {
    let name = "export";
    let code = async {
        let mut shutdown = Shutdown::listen();
        let pool = open_embedded(db, name).await?;
        let data_dir = pool.data_dir().map(std::path::Path::to_path_buf);
        let options = args.log.export_options();
        let result = export_to(&pool, args.file(), &options, name, &mut shutdown).await;
        pool.close().await;
        let (manifest, next_xid) = result?;
        if args.file().is_some() || stdout_is_a_regular_file() {
            record_export_in_data_dir(data_dir.as_deref(), next_xid, name)?;
        }
        let place = args
            .file()
            .map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
        report_export(name, &manifest, &place);
        Ok(ExitCode::SUCCESS)
    }
    .await;
    code.unwrap_or_else(|c| c)
}

/// Runs `import`.
pub(crate) async fn run_import(args: &ImportArgs) -> ExitCode {
    let name = "import";
    import_from(name, &args.from, &args.target, args.unverified)
        .await
        .unwrap_or_else(|c| c)
}

/// Runs `migrate`: exports the embedded database and imports it at the
/// same time (through a bounded pipe, with `--keep` also into a file),
/// verifies; only then does the data directory record the export, so that
/// a migrate that failed (at login, say) leaves the "changed since its last
/// export" warning in place.
pub(crate) async fn run_migrate(db: &DbArgs, args: &MigrateArgs) -> ExitCode {
    let name = "migrate";
    let code = async {
        // Before exporting: a bad target must not cost an export (nor
        // record one).
        let to = Target::parse(&args.target.to).map_err(|e| output::fail(name, &e.to_string()))?;
        let spec = args
            .target
            .spec
            .as_deref()
            .map(read_spec)
            .transpose()
            .map_err(|e| output::fail(name, &e))?;
        let mut shutdown = Shutdown::listen();
        let source = open_embedded(db, name).await?;
        let data_dir = source.data_dir().map(std::path::Path::to_path_buf);
        let result = migrate_into(&source, &to, args, spec.as_ref(), &mut shutdown).await;
        source.close().await;
        let (done, next_xid) = result?;
        record_export_in_data_dir(data_dir.as_deref(), next_xid, name)?;
        let place = match &args.keep {
            Some(keep) => format!("the import and {}", keep.display()),
            None => "the import".to_owned(),
        };
        report_export(name, &done.manifest, &place);
        Ok(output::print(
            name,
            &import_summary(&done.report, spec.is_some()),
        ))
    }
    .await;
    code.unwrap_or_else(|c| c)
}

/// The export and import of `migrate`, and the next transaction id before
/// the export. Ctrl-C or SIGTERM stops both: the import rolls back and a
/// `--keep` file that was not complete is removed.
async fn migrate_into(
    source: &PglitePool,
    to: &Target,
    args: &MigrateArgs,
    spec: Option<&schema_sync::Schema>,
    shutdown: &mut Shutdown,
) -> Outcome<(migrate::Transfer, u64)> {
    let name = "migrate";
    let fail = |e: MigrateError| output::fail(name, &output::error_chain(&e));
    if let (Target::Directory(dir), Some(source_dir)) = (to, source.data_dir())
        && same_directory(dir, source_dir)
    {
        return Err(output::fail(
            name,
            &format!(
                "--to {} is the embedded database being exported; load it elsewhere",
                dir.display()
            ),
        ));
    }
    let next_xid = source
        .next_xid()
        .await
        .map_err(|e| output::fail(name, &output::error_chain(&e)))?;
    let target = connect(to, name).await?;
    let keep = args
        .keep
        .as_deref()
        .map(|path| OutputFile::create(path, true))
        .transpose();
    let keep = match keep {
        Ok(keep) => keep,
        Err(e) => {
            target.close().await;
            return Err(fail(e));
        }
    };
    let options = ImportOptions::new().force(args.target.force);
    let mut bar = Bar::new("migrating");
    let moved = async {
        let done = migrate::transfer(
            source,
            &target,
            keep,
            &args.log.export_options(),
            &options,
            &mut bar,
        )
        .await?;
        if let Some(spec) = spec {
            migrate::verify_spec(&target, spec).await?;
        }
        Ok::<_, MigrateError>(done)
    };
    let result = tokio::select! {
        done = moved => done,
        stop = shutdown.recv() => {
            // The transfer is dropped: its transaction rolls back.
            target.close().await;
            let _ = output::fail(name, "interrupted: nothing was imported");
            return Err(stop.exit_code());
        }
    };
    target.close().await;
    let done = result.map_err(fail)?;
    Ok((done, next_xid))
}

/// Whether two paths name the same directory (as far as the file system
/// can tell; a directory that does not exist yet is no other's).
fn same_directory(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Connects to the target of `import` or `migrate`.
async fn connect(to: &Target, name: &str) -> Outcome<AnyPool> {
    let config = to.config();
    output::target(name, &config);
    AnyPool::connect(&config).await.map_err(|e| {
        output::fail(
            name,
            &format!(
                "connecting to {}: {}",
                to.redacted(),
                output::error_chain(&e)
            ),
        )
    })
}

/// The embedded database the configuration selects; `export` and `migrate`
/// read only that backend.
async fn open_embedded(db: &DbArgs, name: &str) -> Outcome<PglitePool> {
    let config =
        config::from_process(db).map_err(|e| output::fail(name, &format!("configuration: {e}")))?;
    if config.backend != BackendKind::Pglite {
        return Err(output::fail(
            name,
            "the configuration selects PostgreSQL; export reads the embedded database \
             (pass --data-dir or --db pglite)",
        ));
    }
    // Reading must not create: a mistyped directory would otherwise become
    // an empty cluster, exported or migrated with exit 0.
    if let DataDir::Path(dir) = &config.pglite.data_dir
        && !db::embedded::metadata::has_cluster(dir)
    {
        return Err(output::fail(
            name,
            &format!("no embedded database at {}", dir.display()),
        ));
    }
    PglitePool::open(&config)
        .await
        .map_err(|e| output::fail(name, &format!("open: {}", output::error_chain(&e))))
}

/// Exports to `out` (atomically) or to standard output: the manifest, and
/// the next transaction id before the export, for the data directory's
/// record. Ctrl-C or SIGTERM stops it, and the partial file is removed.
async fn export_to(
    pool: &PglitePool,
    out: Option<&std::path::Path>,
    options: &ExportOptions,
    name: &str,
    shutdown: &mut Shutdown,
) -> Outcome<(Manifest, u64)> {
    let fail = |e: MigrateError| output::fail(name, &output::error_chain(&e));
    let next_xid = pool
        .next_xid()
        .await
        .map_err(|e| output::fail(name, &output::error_chain(&e)))?;
    let mut bar = Bar::new("exporting");
    let manifest = match out {
        Some(path) => {
            let mut file = OutputFile::create(path, true).map_err(fail)?;
            let exported = tokio::select! {
                exported = migrate::export(pool, file.writer(), options, &mut bar) => exported,
                stop = shutdown.recv() => {
                    // Returning drops the file: its temporary file goes.
                    return Err(interrupted(name, stop, Some(path)));
                }
            };
            let manifest = exported.map_err(fail)?;
            file.commit().map_err(fail)?;
            manifest
        }
        None => {
            let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            let exported = tokio::select! {
                exported = migrate::export(pool, &mut stdout, options, &mut bar) => exported,
                stop = shutdown.recv() => return Err(interrupted(name, stop, None)),
            };
            let manifest = exported.map_err(fail)?;
            stdout
                .flush()
                .map_err(|e| output::fail(name, &format!("writing the export: {e}")))?;
            manifest
        }
    };
    Ok((manifest, next_xid))
}

/// Reports a command stopped by a signal; its exit code.
pub(crate) fn interrupted(name: &str, stop: Stop, file: Option<&std::path::Path>) -> ExitCode {
    let what = match file {
        Some(path) => format!("{} was not written", path.display()),
        None => "the output is incomplete".to_owned(),
    };
    let _ = output::fail(name, &format!("interrupted: {what}"));
    stop.exit_code()
}

/// Whether standard output is a regular file (`export > hub.sql`), not a
/// pipe, terminal or device.
fn stdout_is_a_regular_file() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.file_type().is_file())
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Records in the data directory (`None` for an in-memory database) that it
/// was exported, so that switching the hub to PostgreSQL does not warn about
/// unexported data.
fn record_export_in_data_dir(
    dir: Option<&std::path::Path>,
    next_xid: u64,
    name: &str,
) -> Outcome<()> {
    let Some(dir) = dir else {
        return Ok(());
    };
    db::embedded::metadata::record_export(dir, next_xid).map_err(|e| {
        output::fail(
            name,
            &format!("recording the export: {}", output::error_chain(&e)),
        )
    })
}

fn report_export(name: &str, manifest: &Manifest, place: &str) {
    note(
        name,
        &format!(
            "exported {} tables, {} rows and {} sequences (PostgreSQL {}) to {place}",
            manifest.tables.len(),
            manifest.total_rows(),
            manifest.sequences.len(),
            manifest.source_version
        ),
    );
}

/// A line on standard error, which stays free for the export on stdout.
fn note(name: &str, text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "cocalc-db {name}: {text}");
}

async fn import_from(
    name: &str,
    from: &std::path::Path,
    target: &TargetArgs,
    unverified: bool,
) -> Outcome<ExitCode> {
    let to = Target::parse(&target.to).map_err(|e| output::fail(name, &e.to_string()))?;
    let spec = target
        .spec
        .as_deref()
        .map(read_spec)
        .transpose()
        .map_err(|e| output::fail(name, &e))?;
    let file = std::fs::File::open(from)
        .map_err(|e| output::fail(name, &format!("opening {}: {e}", from.display())))?;
    let input = BufReader::with_capacity(1 << 20, file);
    let pool = connect(&to, name).await?;
    let options = ImportOptions::new()
        .force(target.force)
        .unverified(unverified);
    let mut bar = Bar::new("importing");
    let result = async {
        let report = migrate::import(&pool, input, &options, &mut bar).await?;
        if let Some(spec) = &spec {
            migrate::verify_spec(&pool, spec).await?;
        }
        Ok::<_, MigrateError>(report)
    }
    .await;
    pool.close().await;
    let report = result.map_err(|e| output::fail(name, &output::error_chain(&e)))?;
    Ok(output::print(
        name,
        &import_summary(&report, spec.is_some()),
    ))
}

/// What `--to` accepts, for error messages.
const ACCEPTED_TARGETS: &str =
    "--to takes a postgres:// or postgresql:// URL, or the path of an embedded data directory";

/// Where `import` and `migrate` load, as `--to` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A PostgreSQL server: the URL, its scheme in lower case.
    Server(String),
    /// An embedded data directory.
    Directory(PathBuf),
}

/// A `--to` that names no place to load into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TargetError {
    /// Nothing at all (an unset shell variable, say), which would otherwise
    /// put the database files into the current directory.
    #[error("--to is empty; {ACCEPTED_TARGETS}")]
    Empty,
    /// An in-memory database, gone when the command ends.
    #[error(
        "--to memory:// would load into a database that vanishes when the command ends; {ACCEPTED_TARGETS}"
    )]
    Memory,
    /// A URL of another kind, or a misspelt one. Only the scheme is
    /// repeated: the rest may hold a password.
    #[error("--to {scheme}://...: not a PostgreSQL URL; {ACCEPTED_TARGETS}")]
    UnknownScheme {
        /// The scheme as given.
        scheme: String,
    },
    /// `postgres:` (or `memory:`) without `//` after it.
    #[error(
        "--to {scheme}:...: not a URL (the scheme must be followed by //); {ACCEPTED_TARGETS} \
         (a directory whose name starts with {scheme}: is written ./{scheme}:...)"
    )]
    MalformedUrl {
        /// The scheme as given.
        scheme: String,
    },
}

impl Target {
    /// Parses `--to`: a `postgres://` or `postgresql://` URL (the scheme in
    /// any case), or a directory path. Anything else shaped like a URL
    /// (`scheme://...`) is an error rather than a directory named after it.
    fn parse(to: &str) -> Result<Target, TargetError> {
        let trimmed = to.trim();
        if trimmed.is_empty() {
            return Err(TargetError::Empty);
        }
        let Some((scheme, rest)) = trimmed.split_once("://").filter(|(s, _)| is_scheme(s)) else {
            // `postgres:/...`, `postgres:user@host`, `memory:`: a URL with a
            // typo, never meant as a directory (which would be created, with
            // a password in its name). `./postgres:x` names such a directory.
            if let Some((scheme, _)) = trimmed.split_once(':')
                && ["postgres", "postgresql", "memory"]
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(scheme))
            {
                return Err(TargetError::MalformedUrl {
                    scheme: scheme.to_owned(),
                });
            }
            return Ok(Target::Directory(PathBuf::from(to)));
        };
        let lower = scheme.to_ascii_lowercase();
        match lower.as_str() {
            "postgres" | "postgresql" => Ok(Target::Server(format!("{lower}://{rest}"))),
            "memory" => Err(TargetError::Memory),
            _ => Err(TargetError::UnknownScheme {
                scheme: scheme.to_owned(),
            }),
        }
    }

    fn config(&self) -> Config {
        match self {
            Target::Server(url) => Config::new().postgres_url(url),
            Target::Directory(path) => Config::new().pglite(DataDir::Path(path.clone())),
        }
    }

    /// The target for messages, without a password.
    fn redacted(&self) -> String {
        match self {
            Target::Server(url) => db::redact_url(url),
            Target::Directory(path) => path.display().to_string(),
        }
    }
}

/// A URL scheme as RFC 3986 defines it: a letter, then letters, digits,
/// `+`, `-` or `.`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn import_summary(report: &ImportReport, spec_checked: bool) -> String {
    let mut text = String::new();
    for skipped in &report.skipped_settings {
        text.push_str(&format!(
            "skipped line {}: {} (the target has no setting {})\n",
            skipped.line, skipped.statement, skipped.name
        ));
    }
    text.push_str(&format!(
        "imported {} statements and {} rows\n",
        report.statements, report.rows
    ));
    match &report.end_marker {
        Some(end) => text.push_str(&format!(
            "verified the file: {} bytes with the SHA-256 of its end marker\n",
            end.bytes
        )),
        None => text.push_str(
            "not verified (--unverified): nothing shows that the file is whole and unaltered\n",
        ),
    }
    match &report.verification {
        Some(v) => text.push_str(&format!(
            "verified {} tables ({} rows, counts and checksums), {} sequences and {} schema objects\n",
            v.tables, v.rows, v.sequences, v.schema_objects
        )),
        None => text.push_str("not verified (--unverified): the file has no manifest\n"),
    }
    if spec_checked {
        text.push_str("the schema plan for the spec is empty\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_postgres_urls_in_any_case_or_directories() {
        for (to, url) in [
            ("postgres://u:pw@host/db", "postgres://u:pw@host/db"),
            ("postgresql://host/db", "postgresql://host/db"),
            ("POSTGRES://u@host/db", "postgres://u@host/db"),
            (
                "PostgreSQL://host:5433/db?sslmode=require",
                "postgresql://host:5433/db?sslmode=require",
            ),
            (" postgres://host/db\n", "postgres://host/db"),
        ] {
            assert_eq!(Target::parse(to), Ok(Target::Server(url.into())), "{to}");
        }
        for dir in [
            "target",
            "./data/pglite",
            "/var/lib/hub",
            "städte",
            "a:b",
            "C:\\data",
            "./x://y",
        ] {
            assert_eq!(
                Target::parse(dir),
                Ok(Target::Directory(dir.into())),
                "{dir}"
            );
        }
    }

    #[test]
    fn other_urls_memory_and_nothing_are_refused_without_a_password() {
        for (to, expected) in [
            ("", TargetError::Empty),
            ("  ", TargetError::Empty),
            ("memory://", TargetError::Memory),
            ("MEMORY://", TargetError::Memory),
            (
                "postgress://user:secret@host/db",
                TargetError::UnknownScheme {
                    scheme: "postgress".into(),
                },
            ),
            (
                "mysql://user:secret@host/db",
                TargetError::UnknownScheme {
                    scheme: "mysql".into(),
                },
            ),
            (
                "file:///tmp/x",
                TargetError::UnknownScheme {
                    scheme: "file".into(),
                },
            ),
            (
                "postgres:/alice:secret@127.0.0.1:5432/tx",
                TargetError::MalformedUrl {
                    scheme: "postgres".into(),
                },
            ),
            (
                "Postgres:\\alice:secret@h/db",
                TargetError::MalformedUrl {
                    scheme: "Postgres".into(),
                },
            ),
            (
                "postgresql:alice:secret@h/db",
                TargetError::MalformedUrl {
                    scheme: "postgresql".into(),
                },
            ),
            (
                "memory:",
                TargetError::MalformedUrl {
                    scheme: "memory".into(),
                },
            ),
        ] {
            let err = Target::parse(to).expect_err(to);
            assert_eq!(err, expected, "{to}");
            let message = err.to_string();
            assert!(
                message.contains("postgres:// or postgresql://"),
                "{message}"
            );
            assert!(!message.contains("secret"), "{message}");
        }
    }
}
