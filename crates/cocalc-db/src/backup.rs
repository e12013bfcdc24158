//! `cocalc-db backup --out FILE` and `cocalc-db restore --from FILE`:
//! physical archives of the embedded data directory, for the same
//! PostgreSQL major version.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use db::{BackendKind, DataDir};

use crate::config::{self, DbArgs};
use crate::interrupt::Shutdown;
use crate::output;
use crate::progress_bar::Bar;
use crate::transfer::{interrupted, is_stdout};

/// Arguments of `backup`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BackupArgs {
    /// The archive to write (a gzipped tar of the data directory), beside
    /// it and renamed into place (a FIFO, device or symlink there is
    /// refused); `-` for standard output.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub(crate) force: bool,
}

/// Arguments of `restore`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RestoreArgs {
    /// The archive written by `backup`.
    #[arg(long, value_name = "FILE")]
    pub(crate) from: PathBuf,
    /// Replace the contents of a data directory that is not empty.
    #[arg(long)]
    pub(crate) force: bool,
}

/// The persistent data directory the configuration selects.
fn data_dir(db: &DbArgs, name: &str) -> Result<db::Config, ExitCode> {
    let config =
        config::from_process(db).map_err(|e| output::fail(name, &format!("configuration: {e}")))?;
    if config.backend != BackendKind::Pglite {
        return Err(output::fail(
            name,
            "the configuration selects PostgreSQL; backups are of the embedded data directory \
             (pass --data-dir or --db pglite)",
        ));
    }
    if !matches!(config.pglite.data_dir, DataDir::Path(_)) {
        return Err(output::fail(
            name,
            "memory:// is not a data directory; pass --data-dir PATH",
        ));
    }
    Ok(config)
}

/// Runs `backup`: streamed from the closed data directory, so memory does
/// not grow with the database.
pub(crate) async fn run_backup(db: &DbArgs, args: &BackupArgs) -> ExitCode {
    let name = "backup";
    let result = async {
        let config = data_dir(db, name)?;
        let DataDir::Path(dir) = &config.pglite.data_dir else {
            return Err(output::fail(name, "memory:// is not a data directory"));
        };
        let mut shutdown = Shutdown::listen();
        if is_stdout(&args.out) {
            // Standard output carries the archive, and nothing else.
            let archived = tokio::select! {
                archived = migrate::backup_to(dir, std::io::stdout()) => archived,
                stop = shutdown.recv() => return Err(interrupted(name, stop, None)),
            };
            archived.map_err(|e| output::fail(name, &output::error_chain(&e)))?;
            return Ok(ExitCode::SUCCESS);
        }
        let backup = migrate::backup_file(dir, &args.out, args.force, Bar::bytes("backup"));
        let size = tokio::select! {
            size = backup => size.map_err(|e| output::fail(name, &output::error_chain(&e)))?,
            // The unfinished file is a temporary one beside the target,
            // removed when the archiving thread drops it.
            stop = shutdown.recv() => return Err(interrupted(name, stop, Some(&args.out))),
        };
        Ok(output::print(
            name,
            &format!(
                "wrote {} ({} bytes, {} files of {} bytes) from {}\n",
                args.out.display(),
                size.compressed,
                size.files,
                size.bytes,
                dir.display()
            ),
        ))
    }
    .await;
    result.unwrap_or_else(|c| c)
}

/// Runs `restore`.
pub(crate) async fn run_restore(db: &DbArgs, args: &RestoreArgs) -> ExitCode {
    let name = "restore";
    let result = async {
        let config = data_dir(db, name)?;
        output::target(name, &config);
        let DataDir::Path(dir) = &config.pglite.data_dir else {
            return Err(output::fail(name, "memory:// is not a data directory"));
        };
        migrate::restore_file(&args.from, dir, args.force, Bar::bytes("restore"))
            .await
            .map_err(|e| output::fail(name, &output::error_chain(&e)))?;
        Ok(output::print(
            name,
            &format!("restored {} into {}\n", args.from.display(), dir.display()),
        ))
    }
    .await;
    result.unwrap_or_else(|c| c)
}
