//! Loading a physical archive of a data directory (from
//! [`PgliteClient::archive_data_dir`](crate::PgliteClient::archive_data_dir))
//! into a persistent data directory.

use std::path::Path;

use db_core::{Error, Result};
use pglite_oxide::Pglite;
use tracing::Instrument;

use crate::data_dir::{DirLock, LOCK_FILE};

/// The PostgreSQL major version of the bundled PGlite; a data-directory
/// archive loads only into the same major version.
pub const POSTGRES_MAJOR_VERSION: u32 = 17;

/// Replaces the contents of the data directory `dir` with the cluster in
/// `archive` (a gzipped or plain tar of PGDATA), then opens and closes it
/// once so the result is known to start.
///
/// Everything in `dir` is removed first: callers decide whether a non-empty
/// directory may be overwritten. The directory is locked meanwhile, so one in
/// use by another process fails with [`Error::DataDirLocked`]. Checking that
/// the archive is of [`POSTGRES_MAJOR_VERSION`] is also the caller's job.
pub async fn restore_data_dir(dir: &Path, archive: Vec<u8>) -> Result<()> {
    let span = tracing::info_span!("db.pglite.restore", data_dir = %dir.display());
    restore(dir, archive).instrument(span).await
}

async fn restore(dir: &Path, archive: Vec<u8>) -> Result<()> {
    let lock = DirLock::acquire(dir)?;
    clear_dir(dir)?;
    let root = dir.to_path_buf();
    let (reply, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pglite-restore".into())
        // The WebAssembly runtime recurses deeply while starting up.
        .stack_size(32 * 1024 * 1024)
        .spawn(move || {
            let opened = Pglite::builder()
                .path(root)
                .load_data_dir_archive(archive)
                .open()
                .and_then(|mut pglite| pglite.close());
            let _ = reply.send(opened);
        })
        .map_err(|e| Error::backend("starting the PGlite restore thread", e))?;
    let result = done
        .await
        .map_err(|_| Error::Protocol("the PGlite restore thread exited early".into()))?;
    drop(lock);
    result.map_err(|e| Error::backend(format!("loading the archive into {}", dir.display()), e))
}

/// Removes everything in `dir` but the lock file.
fn clear_dir(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::backend(format!("reading {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::backend(format!("reading {}", dir.display()), e))?;
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::backend(format!("removing {}", path.display()), e))?;
    }
    Ok(())
}
