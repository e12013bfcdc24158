//! Loading a physical archive of a data directory (from
//! [`PgliteClient::archive_data_dir`](crate::PgliteClient::archive_data_dir))
//! into a persistent data directory, atomically.
//!
//! The archive is streamed (bounded memory) into a staging directory beside
//! the target, `.<name>.restoring`, checked there (every entry read, the
//! major version, the cluster started and stopped once), made owner-only,
//! synced, and only then exchanged with the target in one `renameat2`
//! (`RENAME_EXCHANGE`). Until that rename the target is untouched; after
//! it, the target is the whole new cluster. A restore that fails removes
//! its staging directory; one that was killed leaves it, and the next
//! restore of the same target clears it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use db_core::Error;
use pglite_oxide::Pglite;

use crate::data_dir::{self, Contents, DIR_MODE, DirLock, FILE_MODE, LOCK_FILE};
use crate::metadata;

/// The PostgreSQL major version of the bundled PGlite; a data-directory
/// archive loads only into the same major version.
pub const POSTGRES_MAJOR_VERSION: u32 = 17;

/// Files of a running or template cluster that a restored one must not
/// inherit (pglite-oxide drops the same).
const SKIPPED: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    ".pglite-oxide-pgdata-overlay.json",
];

/// Why a restore failed. In every case the target directory is as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The archive holds a cluster of another PostgreSQL major version.
    #[error(
        "the archive is of PostgreSQL {archive}; this build restores PostgreSQL {bundled} only \
         (use export and import across versions)"
    )]
    VersionMismatch {
        /// The archive's `PG_VERSION`.
        archive: String,
        /// [`POSTGRES_MAJOR_VERSION`].
        bundled: u32,
    },
    /// The archive cannot be read to its end, or is not of a cluster:
    /// truncated, corrupt, or something else altogether.
    #[error("the archive is damaged or not a data-directory archive: {0}")]
    Archive(String),
    /// The target holds a cluster, and replacing it was not asked for.
    #[error("the data directory {} is not empty; restore into it only when asked to replace it", .0.display())]
    NotEmpty(PathBuf),
    /// The file system or the embedded database failed (the target is in
    /// use, holds something other than a cluster, the disk is full...).
    #[error(transparent)]
    Db(#[from] Error),
}

/// Replaces the data directory `dir` with the cluster in `archive` (a
/// gzipped or plain tar of PGDATA), read as a stream.
///
/// A directory that is missing or empty is restored into; one holding a
/// cluster only when `replace`; one holding anything else never
/// ([`Error::DataDirForeign`]). The target is locked throughout, so one in
/// use fails with [`Error::DataDirLocked`], and it changes only in the last
/// step, by an atomic rename: any failure, or the process being killed,
/// leaves it exactly as it was.
pub async fn restore_data_dir<R>(dir: &Path, archive: R, replace: bool) -> Result<(), RestoreError>
where
    R: Read + Send + 'static,
{
    let span = tracing::info_span!("db.pglite.restore", data_dir = %dir.display());
    let dir = dir.to_path_buf();
    data_dir::on_runtime_thread("pglite-restore", span, move || {
        restore(&dir, archive, replace)
    })
    .await?
}

fn restore(dir: &Path, archive: impl Read, replace: bool) -> Result<(), RestoreError> {
    let io_err = |what: String| move |e: io::Error| RestoreError::Db(Error::backend(what, e));
    let before = data_dir::require_ours(dir)?;
    if before == Contents::Ours && !replace {
        return Err(RestoreError::NotEmpty(dir.to_path_buf()));
    }
    // Held from here on: nobody may open the old cluster (their writes
    // would be lost in the swap) or restore into it meanwhile.
    let target_lock = match before {
        Contents::Missing => None,
        _ => Some(DirLock::acquire(dir)?),
    };
    let staging = staging_dir(dir)?;
    let staging_lock = DirLock::acquire(&staging)?;
    let result = clear_dir(&staging)
        .map_err(io_err(format!("clearing {}", staging.display())))
        .and_then(|()| fill(&staging, archive))
        .and_then(|()| swap(dir, &staging, target_lock.is_none()));
    drop(staging_lock);
    match &result {
        // `staging` now holds the old cluster.
        Ok(()) => remove_dir(&staging),
        Err(_) => {
            remove_dir(&staging);
            if let Some(lock) = target_lock {
                lock.discard();
            }
        }
    }
    result
}

/// `.<name>.restoring` beside `dir`, on the same file system.
fn staging_dir(dir: &Path) -> Result<PathBuf, Error> {
    let name = dir.file_name().ok_or_else(|| {
        Error::backend(
            format!("restoring into {}", dir.display()),
            "the path has no final component",
        )
    })?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| Error::backend(format!("creating {}", parent.display()), e))?;
    Ok(parent.join(format!(".{}.restoring", name.to_string_lossy())))
}

fn remove_dir(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove {}: {e}", dir.display());
    }
}

/// Unpacks, checks and readies the cluster in `staging`.
fn fill(staging: &Path, archive: impl Read) -> Result<(), RestoreError> {
    unpack(archive, &metadata::pgdata(staging))?;
    let started = Pglite::builder()
        .path(staging.to_path_buf())
        .open()
        .and_then(|mut pglite| pglite.close());
    started.map_err(|e| {
        Error::backend(
            format!("starting the restored cluster in {}", staging.display()),
            e,
        )
    })?;
    // PostgreSQL created files at start-up under the process's umask.
    data_dir::restrict_tree(staging)
        .and_then(|()| sync_tree(staging))
        .map_err(|e| Error::backend(format!("finishing {}", staging.display()), e))?;
    Ok(())
}

/// Exchanges `dir` with `staging` in one rename. `created` says `dir` did
/// not exist before the restore (it is created for the exchange).
fn swap(dir: &Path, staging: &Path, created: bool) -> Result<(), RestoreError> {
    // A directory that did not exist is locked only now, so it exists for
    // the exchange; one that appears meanwhile is checked again.
    let _lock = if created {
        let found = data_dir::require_ours(dir)?;
        if found == Contents::Ours {
            return Err(RestoreError::NotEmpty(dir.to_path_buf()));
        }
        Some(DirLock::acquire(dir)?)
    } else {
        None
    };
    let exchanged = rustix::fs::renameat_with(
        rustix::fs::CWD,
        staging,
        rustix::fs::CWD,
        dir,
        rustix::fs::RenameFlags::EXCHANGE,
    );
    exchanged.map_err(|e| {
        Error::backend(
            format!(
                "swapping {} with the restored {}",
                dir.display(),
                staging.display()
            ),
            io::Error::from(e),
        )
    })?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::backend(format!("syncing {}", parent.display()), e))?;
    }
    Ok(())
}

/// Removes everything in `dir` but the lock file.
fn clear_dir(dir: &Path) -> io::Result<()> {
    data_dir::remove_all_but(dir, &[LOCK_FILE.into()])
}

/// Streams the tar (gzipped or not) into `pgdata`, owner-only, and checks
/// it is a whole cluster of [`POSTGRES_MAJOR_VERSION`].
fn unpack(archive: impl Read, pgdata: &Path) -> Result<(), RestoreError> {
    let bad = |e: io::Error| RestoreError::Archive(e.to_string());
    let mut reader = BufReader::with_capacity(1 << 16, archive);
    let gzipped = reader.fill_buf().map_err(bad)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    make_dir(pgdata)?;
    let mut version = None;
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(relative) = relative_path(&path) else {
            return Err(RestoreError::Archive(format!(
                "entry {} leaves the data directory",
                path.display()
            )));
        };
        if relative.as_os_str().is_empty() || SKIPPED.iter().any(|s| relative == Path::new(s)) {
            continue;
        }
        let dest = pgdata.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            make_dir(&dest)?;
            continue;
        }
        if !kind.is_file() {
            return Err(RestoreError::Archive(format!(
                "entry {} is a {kind:?}, not a file or directory",
                path.display()
            )));
        }
        if let Some(parent) = dest.parent() {
            make_dir(parent)?;
        }
        if relative == Path::new("PG_VERSION") {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(bad)?;
            let found = text.trim().to_owned();
            if found != POSTGRES_MAJOR_VERSION.to_string() {
                return Err(RestoreError::VersionMismatch {
                    archive: found,
                    bundled: POSTGRES_MAJOR_VERSION,
                });
            }
            write_file(&dest, &mut text.as_bytes())?;
            version = Some(found);
        } else {
            write_file(&dest, &mut entry)?;
        }
    }
    if version.is_none() {
        return Err(RestoreError::Archive("it has no PG_VERSION file".into()));
    }
    if !pgdata.join("global").join("pg_control").is_file() {
        return Err(RestoreError::Archive(
            "it has no global/pg_control file".into(),
        ));
    }
    Ok(())
}

/// `path` without a leading `./`, or `None` if it is absolute or climbs
/// out with `..`.
fn relative_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn make_dir(dir: &Path) -> Result<(), RestoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::backend(format!("creating {}", dir.display()), e).into())
}

/// Copies `from` into a new owner-only file `dest`, telling a damaged
/// archive (reading) from a failing disk (writing).
fn write_file(dest: &Path, from: &mut impl Read) -> Result<(), RestoreError> {
    let disk =
        |e: io::Error| RestoreError::Db(Error::backend(format!("writing {}", dest.display()), e));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(dest)
        .map_err(disk)?;
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RestoreError::Archive(e.to_string())),
        };
        file.write_all(&buf[..n]).map_err(disk)?;
    }
}

/// Syncs every file and directory under `dir`, and `dir`.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}
