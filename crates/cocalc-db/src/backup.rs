//! `cocalc-db backup --out FILE` and `cocalc-db restore --from FILE`:
//! physical archives of the embedded data directory, for the same
//! PostgreSQL major version.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use db::{BackendKind, DataDir};

use crate::config::{self, DbArgs};
use crate::output;
use crate::progress_bar::Bar;

/// Arguments of `backup`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BackupArgs {
    /// The archive to write (a gzipped tar of the data directory).
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
        let size = migrate::backup_file(dir, &args.out, args.force, Bar::bytes("backup"))
            .await
            .map_err(|e| output::fail(name, &output::error_chain(&e)))?;
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
