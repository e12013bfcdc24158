//! Physical backup and restore of the embedded data directory: a gzipped
//! tar of PGDATA, loadable only by the same PostgreSQL major version.

use std::io::Read;
use std::path::Path;

use db_core::Pool as _;
use db_pglite::{POSTGRES_MAJOR_VERSION, PglitePool};

use crate::error::{MigrateError, Result};

/// The lock file every open data directory holds; it alone does not make a
/// directory non-empty.
const LOCK_FILE: &str = "cocalc-db.pid";

/// A physical archive of the data directory behind `pool`. The backend is
/// checkpointed, stopped while its files are read, and restarted; other
/// sessions wait meanwhile.
pub async fn backup(pool: &PglitePool) -> Result<Vec<u8>> {
    let mut client = pool
        .acquire()
        .await
        .map_err(MigrateError::db("holding the embedded database"))?;
    let archive = client
        .archive_data_dir()
        .await
        .map_err(MigrateError::db("archiving the data directory"))?;
    tracing::info!(bytes = archive.len(), "archived the data directory");
    Ok(archive)
}

/// The `PG_VERSION` (major version) recorded in a data-directory archive.
pub fn archive_major_version(archive: &[u8]) -> Result<String> {
    let reader: Box<dyn Read> = if archive.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(archive))
    } else {
        Box::new(archive)
    };
    let mut tar = tar::Archive::new(reader);
    let bad = |e: std::io::Error| MigrateError::Archive(e.to_string());
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let name = path.strip_prefix(".").unwrap_or(&path);
        if name == Path::new("PG_VERSION") {
            let mut version = String::new();
            entry.read_to_string(&mut version).map_err(bad)?;
            return Ok(version.trim().to_owned());
        }
    }
    Err(MigrateError::Archive("it has no PG_VERSION file".into()))
}

/// Restores `archive` into the data directory `dir`.
///
/// The archive must be of the bundled PostgreSQL major version. A directory
/// holding anything (other than the lock file of a closed database) is
/// refused unless `force`, which replaces its contents. The restored
/// cluster is opened once before this returns.
///
/// ```no_run
/// # async fn demo() -> Result<(), migrate::MigrateError> {
/// let archive = std::fs::read("hub.backup").expect("file");
/// migrate::restore(&archive, std::path::Path::new("/srv/hub/pglite"), false).await?;
/// # Ok(()) }
/// ```
pub async fn restore(archive: &[u8], dir: &Path, force: bool) -> Result<()> {
    let version = archive_major_version(archive)?;
    if version != POSTGRES_MAJOR_VERSION.to_string() {
        return Err(MigrateError::VersionMismatch {
            archive: version,
            bundled: POSTGRES_MAJOR_VERSION,
        });
    }
    if !force && holds_files(dir)? {
        return Err(MigrateError::DirectoryNotEmpty(dir.to_path_buf()));
    }
    db_pglite::restore_data_dir(dir, archive.to_vec())
        .await
        .map_err(MigrateError::db(format!(
            "restoring into {}",
            dir.display()
        )))?;
    tracing::info!(data_dir = %dir.display(), "restored the data directory");
    Ok(())
}

fn holds_files(dir: &Path) -> Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(MigrateError::io(format!("reading {}", dir.display()))(e)),
    };
    for entry in entries {
        let entry = entry.map_err(MigrateError::io(format!("reading {}", dir.display())))?;
        if entry.file_name() != LOCK_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}
