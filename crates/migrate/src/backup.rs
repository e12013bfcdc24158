//! Physical backup and restore of the embedded data directory: a gzipped
//! tar of PGDATA, loadable only by the same PostgreSQL major version.

use std::io::{Read, Write};
use std::path::Path;

use db_core::Pool as _;
use db_pglite::{ArchiveSize, PglitePool, RestoreError};

use crate::{OutputFile, Progress};

use crate::error::{MigrateError, Result};

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

/// Writes a physical archive of the closed data directory `dir` to the file
/// `out` (replacing one only when `force`), streamed: memory stays bounded
/// whatever the size of the database. The file appears only once complete.
/// The directory must not be open (it is locked meanwhile). `progress`
/// counts the archive's bytes as they are written (the total is not known
/// in advance: `start(0)`).
pub async fn backup_file(
    dir: &Path,
    out: &Path,
    force: bool,
    mut progress: impl Progress + 'static,
) -> Result<ArchiveSize> {
    let file = OutputFile::create(out, force)?;
    // The archive is written on a thread of its own, which outlives this
    // future when it is dropped (a signal, a timeout): the unfinished file
    // goes with the future, not with the process's exit.
    let mut unfinished = RemoveOnDrop(Some(file.temporary_path().to_owned()));
    progress.start(0);
    let writer = Counted {
        inner: Some(file),
        progress,
    };
    let (mut writer, size) = db_pglite::archive_data_dir_to(dir, writer)
        .await
        .map_err(MigrateError::db(format!("archiving {}", dir.display())))?;
    let file = writer
        .inner
        .take()
        .ok_or_else(|| MigrateError::Archive("the archive writer was already taken".into()))?;
    drop(writer);
    unfinished.0 = None;
    file.commit()?;
    tracing::info!(
        files = size.files,
        bytes = size.bytes,
        compressed = size.compressed,
        "archived the data directory"
    );
    Ok(size)
}

/// Writes a physical archive of the closed data directory `dir` to `out`
/// (standard output, say), streamed as [`backup_file`] does.
pub async fn backup_to<W: std::io::Write + Send + 'static>(
    dir: &Path,
    out: W,
) -> Result<ArchiveSize> {
    let (mut out, size) = db_pglite::archive_data_dir_to(dir, out)
        .await
        .map_err(MigrateError::db(format!("archiving {}", dir.display())))?;
    out.flush()
        .map_err(MigrateError::io("writing the archive".to_owned()))?;
    Ok(size)
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
/// The archive must be of the bundled PostgreSQL major version. A missing
/// or empty directory is restored into; one holding a cluster only when
/// `force`, which replaces it; one holding anything else never. The archive
/// is unpacked and started beside `dir` and swapped in by one atomic
/// rename, so a damaged archive, a failure or a kill leaves `dir` as it was.
///
/// ```no_run
/// # async fn demo() -> Result<(), migrate::MigrateError> {
/// let archive = std::fs::read("hub.backup").expect("file");
/// migrate::restore(&archive, std::path::Path::new("/srv/hub/pglite"), false).await?;
/// # Ok(()) }
/// ```
pub async fn restore(archive: &[u8], dir: &Path, force: bool) -> Result<()> {
    restore_from(std::io::Cursor::new(archive.to_vec()), dir, force).await
}

/// [`restore`] from the archive file `file`, read as a stream: memory stays
/// bounded whatever the size of the database. `progress` counts the bytes
/// of the file read, out of its size.
pub async fn restore_file(
    file: &Path,
    dir: &Path,
    force: bool,
    mut progress: impl Progress + 'static,
) -> Result<()> {
    let archive = std::fs::File::open(file)
        .map_err(MigrateError::io(format!("opening {}", file.display())))?;
    progress.start(archive.metadata().map(|m| m.len()).unwrap_or(0));
    let archive = Counted {
        inner: Some(archive),
        progress,
    };
    restore_from(archive, dir, force).await
}

/// A reader or writer that reports the bytes passing through it, and
/// finishes its progress when dropped (however the work ended).
struct Counted<T, P: Progress> {
    /// Always `Some` until taken back by [`backup_file`].
    inner: Option<T>,
    progress: P,
}

impl<T, P: Progress> Counted<T, P> {
    fn inner(&mut self) -> std::io::Result<&mut T> {
        self.inner
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the stream was already taken"))
    }
}

impl<T: Read, P: Progress> Read for Counted<T, P> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner()?.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

impl<T: Write, P: Progress> Write for Counted<T, P> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner()?.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner()?.flush()
    }
}

impl<T, P: Progress> Drop for Counted<T, P> {
    fn drop(&mut self) {
        self.progress.finish();
    }
}

async fn restore_from(archive: impl Read + Send + 'static, dir: &Path, force: bool) -> Result<()> {
    db_pglite::restore_data_dir(dir, archive, force)
        .await
        .map_err(|e| match e {
            RestoreError::VersionMismatch { archive, bundled } => {
                MigrateError::VersionMismatch { archive, bundled }
            }
            RestoreError::Archive(why) => MigrateError::Archive(why),
            RestoreError::NotEmpty(dir) => MigrateError::DirectoryNotEmpty(dir),
            RestoreError::Db(e) => MigrateError::db(format!("restoring into {}", dir.display()))(e),
            other => MigrateError::db(format!("restoring into {}", dir.display()))(
                db_core::Error::backend("restoring", other.to_string()),
            ),
        })?;
    tracing::info!(data_dir = %dir.display(), "restored the data directory");
    Ok(())
}

/// Removes a file when dropped, unless disarmed (`.0 = None`).
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
