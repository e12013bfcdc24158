//! Boot-time checks that fail fast with one clear line instead of a deep
//! pglite-oxide error: the runtime cache can be written, the data directory
//! can be written, and it was written by a compatible version.
//!
//! [`PglitePool::open`](crate::PglitePool::open) runs them all; `cocalc-db
//! check` runs them as steps of its own. Whether another process holds the
//! directory is found when the pool takes its lock.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use db_core::{DataDir, Error, PgliteConfig, Result, StorageProblem};

use crate::POSTGRES_MAJOR_VERSION;
use crate::{data_dir, metadata};

/// The directory pglite-oxide unpacks its runtime and compiled modules into,
/// resolved as pglite-oxide resolves it: `$XDG_CACHE_HOME/pglite-oxide`, else
/// `~/.cache/pglite-oxide`.
pub fn runtime_cache_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("dev", "pglite-oxide", "pglite-oxide")
        .map(|dirs| dirs.cache_dir().to_path_buf())
}

/// Runs every check `config` calls for.
pub fn check(config: &PgliteConfig) -> Result<()> {
    check_runtime_cache()?;
    if let DataDir::Path(dir) = &config.data_dir {
        check_data_dir(dir)?;
    }
    Ok(())
}

/// The runtime cache directory can be created and written. pglite-oxide
/// unpacks into it on first use and takes lock files in it when it creates
/// a cluster; a read-only cache is refused even when already filled, so the
/// problem shows at boot rather than on the first new cluster.
pub fn check_runtime_cache() -> Result<()> {
    let _span = tracing::debug_span!("db.pglite.check_runtime_cache").entered();
    let Some(dir) = runtime_cache_dir() else {
        return Err(Error::RuntimeCacheUnavailable {
            path: "$XDG_CACHE_HOME/pglite-oxide".to_owned(),
            problem: StorageProblem::Other("no home directory to put it under".to_owned()),
        });
    };
    probe_writable(&dir).map_err(|e| Error::RuntimeCacheUnavailable {
        path: dir.display().to_string(),
        problem: StorageProblem::from_io(&e),
    })
}

/// The data directory is missing, empty or an embedded cluster of ours
/// (anything else is [`Error::DataDirForeign`] and left alone), can be
/// created (owner-only) and written, and its cluster and record are of
/// versions this build reads.
pub fn check_data_dir(dir: &Path) -> Result<()> {
    let _span = tracing::debug_span!("db.pglite.check_data_dir", dir = %dir.display()).entered();
    data_dir::require_ours(dir)?;
    probe_writable(dir).map_err(|e| Error::DataDirUnwritable {
        path: dir.display().to_string(),
        problem: StorageProblem::from_io(&e),
    })?;
    check_compatible(dir)
}

/// The cluster's `PG_VERSION` is this build's PostgreSQL major, and the
/// record's format is one this build reads.
fn check_compatible(dir: &Path) -> Result<()> {
    let file = metadata::pgdata(dir).join("PG_VERSION");
    match fs::read_to_string(&file) {
        Ok(version) => {
            let version = version.trim();
            if version != POSTGRES_MAJOR_VERSION.to_string() {
                return Err(Error::DataDirIncompatible {
                    path: dir.display().to_string(),
                    found: format!("PostgreSQL {version}"),
                    supported: format!("PostgreSQL {POSTGRES_MAJOR_VERSION}"),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::backend(format!("reading {}", file.display()), e)),
    }
    // A damaged record is reported and replaced when the cluster opens; it
    // never keeps the data from being read.
    metadata::read_record(dir).map(drop)
}

/// A one-line warning when group members or others may use the data
/// directory `dir` (PostgreSQL refuses to start on such a directory), with
/// the command that fixes it; `None` when it is owner-only or missing.
pub fn permission_warning(dir: &Path) -> Option<String> {
    let mode = fs::metadata(dir).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the embedded data directory {} has mode {mode:o}: others may read the database; \
             make it private with `chmod 700 {}`",
            dir.display(),
            dir.display()
        )
    })
}

/// Creates `dir` if needed, then creates, writes, syncs and removes a probe
/// file in it.
fn probe_writable(dir: &Path) -> io::Result<()> {
    data_dir::create_private(dir)?;
    let probe = dir.join(format!(".cocalc-db-probe-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(b"cocalc-db\n")?;
            f.sync_all()
        });
    // Remove it even when writing failed (a full disk lets it be created).
    let removed = fs::remove_file(&probe);
    written?;
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probing_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("new").join("data");
        check_data_dir(&dir).expect("writable");
        assert_eq!(fs::read_dir(&dir).expect("read dir").count(), 0);
    }

    #[test]
    fn a_path_through_a_file_is_not_a_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("file");
        fs::write(&file, "x").expect("write");
        let err = check_data_dir(&file.join("data")).expect_err("unusable");
        assert!(
            matches!(
                &err,
                Error::DataDirUnwritable {
                    problem: StorageProblem::NotADirectory,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn another_postgres_major_is_incompatible() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pgdata = metadata::pgdata(tmp.path());
        fs::create_dir_all(&pgdata).expect("mkdir");
        fs::write(pgdata.join("PG_VERSION"), "16\n").expect("write");
        let err = check_data_dir(tmp.path()).expect_err("incompatible");
        let msg = err.to_string();
        assert!(
            msg.contains("written by PostgreSQL 16") && msg.contains("supports PostgreSQL 17"),
            "{msg}"
        );
    }
}
