//! `cocalc-db backup --out FILE` and `cocalc-db restore --from FILE`:
//! physical archives of the embedded data directory, for the same
//! PostgreSQL major version.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use db::{BackendKind, DataDir, PglitePool, Pool};
use migrate::{MigrateError, OutputFile};

use crate::config::{self, DbArgs};
use crate::interrupt::Shutdown;
use crate::output;
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

/// Runs `backup`.
pub(crate) async fn run_backup(db: &DbArgs, args: &BackupArgs) -> ExitCode {
    let name = "backup";
    let fail = |e: MigrateError| output::fail(name, &output::error_chain(&e));
    let result = async {
        let config = data_dir(db, name)?;
        let mut shutdown = Shutdown::listen();
        let stdout = is_stdout(&args.out);
        let mut file = if stdout {
            None
        } else {
            Some(OutputFile::create(&args.out, args.force).map_err(fail)?)
        };
        let pool = PglitePool::open(&config)
            .await
            .map_err(|e| output::fail(name, &format!("open: {}", output::error_chain(&e))))?;
        let archive = tokio::select! {
            archive = migrate::backup(&pool) => Ok(archive),
            stop = shutdown.recv() => Err(stop),
        };
        pool.close().await;
        let archive = match archive {
            Ok(archive) => archive.map_err(fail)?,
            // Returning drops the file: its temporary file goes.
            Err(stop) => {
                return Err(interrupted(
                    name,
                    stop,
                    file.is_some().then_some(&*args.out),
                ));
            }
        };
        let written = match file.as_mut() {
            Some(file) => file.writer().write_all(&archive),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(&archive).and_then(|()| out.flush())
            }
        };
        written.map_err(|e| output::fail(name, &format!("writing {}: {e}", args.out.display())))?;
        if let Some(file) = file {
            file.commit().map_err(fail)?;
        }
        if stdout {
            // Standard output carries the archive.
            return Ok(ExitCode::SUCCESS);
        }
        Ok(output::print(
            name,
            &format!(
                "wrote {} ({} bytes) from {}\n",
                args.out.display(),
                archive.len(),
                config.pglite.data_dir
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
        let archive = std::fs::read(&args.from)
            .map_err(|e| output::fail(name, &format!("reading {}: {e}", args.from.display())))?;
        migrate::restore(&archive, dir, args.force)
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
