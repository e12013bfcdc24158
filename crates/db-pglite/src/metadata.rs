//! What the data directory records about itself: which backend created it,
//! whether it is open, and whether it changed since its last export.
//!
//! The record is `cocalc-db.json` beside the cluster, replaced atomically
//! (written to a temporary file, synced, renamed, directory synced), so it is
//! either the old or the new version after a crash, never a torn one.
//!
//! "Changed since the last export" is decided without opening the cluster
//! (a server in Postgres mode must not pay PGlite's start-up for a warning)
//! from PostgreSQL's next transaction id: every writing transaction consumes
//! one, reading ones do not. The pool records it when it closes the cluster
//! cleanly and an export records it before dumping, so data written after the
//! dump started counts as changed. Between open and a clean close the record
//! says `open`: if the process died, whether anything was written is unknown.
//!
//! An exporter records its export like this:
//!
//! ```no_run
//! use db_core::{Config, DataDir, Pool};
//! use db_pglite::{PglitePool, metadata};
//! # async fn export() -> db_core::Result<()> {
//! let pool = PglitePool::open(&Config::new().pglite(DataDir::Path("/srv/db".into()))).await?;
//! let next_xid = pool.next_xid().await?;
//! // ... dump the database ...
//! if let Some(dir) = pool.data_dir() {
//!     metadata::record_export(dir, next_xid)?;
//! }
//! pool.close().await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use db_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The record's file name inside the data directory.
pub const FILE_NAME: &str = "cocalc-db.json";

/// The newest record format this build reads and the one it writes.
pub const FORMAT: u32 = 1;

/// The version of pglite-oxide this build embeds (checked against
/// `Cargo.lock` by a test).
pub const PGLITE_OXIDE_VERSION: &str = "0.5.1";

/// The SQL that reads the next transaction id: `xmax` of the current
/// snapshot is the first id not yet assigned, on every PostgreSQL since 13.
pub(crate) const NEXT_XID_SQL: &str = "SELECT txid_snapshot_xmax(txid_current_snapshot())::text";

/// Parses [`NEXT_XID_SQL`]'s result.
pub(crate) fn parse_next_xid(text: &str) -> Result<u64> {
    text.parse()
        .map_err(|_| Error::Protocol(format!("unexpected next transaction id {text:?}")))
}

/// The record in `cocalc-db.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// The record's format, [`FORMAT`] when written by this build.
    pub format: u32,
    /// What created the cluster.
    pub created_by: CreatedBy,
    /// When this record was created: the cluster's creation, or the first
    /// open by this layer of a cluster created before records existed.
    pub created_at: DateTime<Utc>,
    /// The next transaction id right after creation; `None` for a cluster
    /// that existed before its record (its history is unknown).
    pub created_next_xid: Option<u64>,
    /// A process has the cluster open, or died without closing it.
    pub open: bool,
    /// The next transaction id at the last clean close.
    pub closed_next_xid: Option<u64>,
    /// The last export, if any.
    pub last_export: Option<Export>,
}

/// The software that created a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreatedBy {
    /// Always `pglite`.
    pub backend: String,
    /// The pglite-oxide version.
    pub pglite_oxide: String,
    /// PostgreSQL's `server_version`.
    pub postgres: String,
    /// The version of this crate.
    pub db_pglite: String,
}

/// An export of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Export {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// The next transaction id before the dump started.
    pub next_xid: u64,
}

/// Whether a data directory holds data that was not exported.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmbeddedDataStatus {
    /// No cluster there.
    NoData,
    /// A cluster nothing was ever written to.
    Unused,
    /// Exported, and unchanged since.
    Exported {
        /// When.
        at: DateTime<Utc>,
    },
    /// Holds data that was never exported.
    NeverExported,
    /// Written to after its last export.
    ChangedSinceExport {
        /// When it was exported.
        exported_at: DateTime<Utc>,
    },
    /// In use right now, or its last user died without closing it: whether
    /// it changed since it was exported is unknown.
    NotClosedCleanly {
        /// When it was last exported, if ever.
        exported_at: Option<DateTime<Utc>>,
    },
}

impl EmbeddedDataStatus {
    /// Whether the data may be lost unless it is exported.
    pub fn needs_export(&self) -> bool {
        matches!(
            self,
            EmbeddedDataStatus::NeverExported
                | EmbeddedDataStatus::ChangedSinceExport { .. }
                | EmbeddedDataStatus::NotClosedCleanly { .. }
        )
    }

    /// The one-line warning for a server running on PostgreSQL while `dir`
    /// holds embedded data that needs exporting, with the commands to run.
    pub fn warning(&self, dir: &Path) -> Option<String> {
        let dir = dir.display();
        let what = match self {
            EmbeddedDataStatus::NeverExported => "holds data that was never exported".to_owned(),
            EmbeddedDataStatus::ChangedSinceExport { exported_at } => {
                format!(
                    "changed since its last export at {}",
                    timestamp(exported_at)
                )
            }
            EmbeddedDataStatus::NotClosedCleanly { exported_at } => format!(
                "is in use or was not closed cleanly, so it may hold data {}",
                exported_at.map_or_else(
                    || "that was never exported".to_owned(),
                    |at| format!("changed since its last export at {}", timestamp(&at))
                )
            ),
            _ => return None,
        };
        Some(format!(
            "the embedded data directory {dir} {what}, but this server uses PostgreSQL; \
             keep it with `cocalc-db --data-dir {dir} export --out FILE` or move it with \
             `cocalc-db --data-dir {dir} migrate --to URL`"
        ))
    }
}

impl fmt::Display for EmbeddedDataStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbeddedDataStatus::NoData => f.write_str("no data"),
            EmbeddedDataStatus::Unused => f.write_str("nothing written"),
            EmbeddedDataStatus::Exported { at } => write!(f, "exported at {}", timestamp(at)),
            EmbeddedDataStatus::NeverExported => f.write_str("never exported"),
            EmbeddedDataStatus::ChangedSinceExport { exported_at } => {
                write!(f, "changed since the export at {}", timestamp(exported_at))
            }
            EmbeddedDataStatus::NotClosedCleanly { .. } => {
                f.write_str("in use or not closed cleanly")
            }
        }
    }
}

fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The record's path in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The cluster (`PGDATA`) inside a pglite-oxide root.
pub(crate) fn pgdata(dir: &Path) -> PathBuf {
    dir.join("tmp").join("pglite").join("base")
}

/// Whether `dir` holds a cluster.
pub fn has_cluster(dir: &Path) -> bool {
    pgdata(dir).join("PG_VERSION").is_file()
}

/// Reads the record of `dir`; `None` when there is none.
///
/// A record of a newer format is [`Error::DataDirIncompatible`]: this build
/// cannot tell what it means. A damaged one is an error naming the file and
/// the command that recreates it (opening the directory replaces it).
pub fn read(dir: &Path) -> Result<Option<Metadata>> {
    match read_record(dir)? {
        Record::Missing => Ok(None),
        Record::Found(meta) => Ok(Some(meta)),
        Record::Damaged(why) => Err(Error::backend(
            format!(
                "{} is damaged; recreate it with `cocalc-db --data-dir {} check`",
                path(dir).display(),
                dir.display()
            ),
            why,
        )),
    }
}

/// What `cocalc-db.json` holds.
#[derive(Debug)]
pub(crate) enum Record {
    /// No record.
    Missing,
    /// A sound record.
    Found(Metadata),
    /// A record that does not parse: why.
    Damaged(String),
}

/// Reads the record of `dir`, telling a damaged one apart. Only a record
/// of a newer format, or one that cannot be read at all, is an error.
pub(crate) fn read_record(dir: &Path) -> Result<Record> {
    let file = path(dir);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Record::Missing),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Ok(Record::Damaged(e.to_string()));
        }
        Err(e) => return Err(Error::backend(format!("reading {}", file.display()), e)),
    };
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let format = match serde_json::from_str::<Format>(&text) {
        Ok(Format { format }) => format,
        Err(e) => return Ok(Record::Damaged(e.to_string())),
    };
    if format > FORMAT {
        return Err(Error::DataDirIncompatible {
            path: dir.display().to_string(),
            found: format!("a newer cocalc-db ({FILE_NAME} format {format})"),
            supported: format!("format {FORMAT} and older"),
        });
    }
    Ok(match serde_json::from_str(&text) {
        Ok(meta) => Record::Found(meta),
        Err(e) => Record::Damaged(e.to_string()),
    })
}

/// The record of a directory being opened: a damaged one is reported in
/// one line, kept beside as `cocalc-db.json.damaged`, and treated as
/// missing, so the data stays readable and a new record is written.
fn read_for_update(dir: &Path) -> Result<Option<Metadata>> {
    match read_record(dir)? {
        Record::Missing => Ok(None),
        Record::Found(meta) => Ok(Some(meta)),
        Record::Damaged(why) => {
            let file = path(dir);
            let kept = dir.join(format!("{FILE_NAME}.damaged"));
            let moved = fs::rename(&file, &kept);
            tracing::warn!(
                "{} is damaged ({why}); {}; a new record is written, which counts the data as \
                 not exported until `cocalc-db --data-dir {} export` runs",
                file.display(),
                match moved {
                    Ok(()) => format!("kept it as {}", kept.display()),
                    Err(e) => format!("could not keep it as {} ({e})", kept.display()),
                },
                dir.display()
            );
            Ok(None)
        }
    }
}

/// Whether `dir` holds data that was not exported, from its record alone.
///
/// A cluster without a record (created before records existed) counts as
/// never exported.
pub fn status(dir: &Path) -> Result<EmbeddedDataStatus> {
    let Some(meta) = read(dir)? else {
        return Ok(if has_cluster(dir) {
            EmbeddedDataStatus::NeverExported
        } else {
            EmbeddedDataStatus::NoData
        });
    };
    let exported = meta.last_export.as_ref();
    if meta.open {
        return Ok(EmbeddedDataStatus::NotClosedCleanly {
            exported_at: exported.map(|e| e.at),
        });
    }
    Ok(match (exported, meta.closed_next_xid) {
        (Some(e), Some(closed)) if closed <= e.next_xid => {
            EmbeddedDataStatus::Exported { at: e.at }
        }
        (Some(e), _) => EmbeddedDataStatus::ChangedSinceExport { exported_at: e.at },
        (None, Some(closed)) if meta.created_next_xid == Some(closed) => EmbeddedDataStatus::Unused,
        (None, _) => EmbeddedDataStatus::NeverExported,
    })
}

/// Records an export of `dir` whose dump started when the next transaction
/// id was `next_xid` (read with [`PglitePool::next_xid`] before dumping).
///
/// [`PglitePool::next_xid`]: crate::PglitePool::next_xid
pub fn record_export(dir: &Path, next_xid: u64) -> Result<()> {
    let mut meta = read(dir)?.ok_or_else(|| {
        Error::backend(
            format!("recording an export of {}", dir.display()),
            format!("{FILE_NAME} is missing: the directory was never opened by PglitePool"),
        )
    })?;
    meta.last_export = Some(Export {
        at: Utc::now(),
        next_xid,
    });
    write(dir, &meta)
}

/// Marks `dir` open, creating its record on first use. `created_fresh` says
/// the cluster was just created, so its history is known.
pub(crate) fn record_open(
    dir: &Path,
    created_fresh: bool,
    next_xid: u64,
    server_version: &str,
) -> Result<()> {
    let meta = match read_for_update(dir)? {
        Some(meta) => Metadata { open: true, ..meta },
        None => Metadata {
            format: FORMAT,
            created_by: CreatedBy {
                backend: "pglite".to_owned(),
                pglite_oxide: PGLITE_OXIDE_VERSION.to_owned(),
                postgres: server_version.to_owned(),
                db_pglite: env!("CARGO_PKG_VERSION").to_owned(),
            },
            created_at: Utc::now(),
            created_next_xid: created_fresh.then_some(next_xid),
            open: true,
            closed_next_xid: None,
            last_export: None,
        },
    };
    write(dir, &meta)?;
    make_private(dir);
    Ok(())
}

/// Makes the files PGlite created (under the process's umask) owner-only.
/// A failure is reported, not fatal: the directory itself is owner-only.
fn make_private(dir: &Path) {
    if let Err(e) = crate::data_dir::restrict_tree(dir) {
        tracing::warn!(
            "could not make every file in {} owner-only: {e}",
            dir.display()
        );
    }
}

/// Marks `dir` cleanly closed with its next transaction id, after its files
/// reached the disk.
pub(crate) fn record_close(dir: &Path, next_xid: u64) -> Result<()> {
    make_private(dir);
    if let Err(e) = crate::data_dir::sync_tree(dir) {
        tracing::warn!("could not flush {} to the disk: {e}", dir.display());
    }
    let Some(meta) = read_for_update(dir)? else {
        return Ok(());
    };
    write(
        dir,
        &Metadata {
            open: false,
            closed_next_xid: Some(next_xid),
            ..meta
        },
    )
}

/// Replaces the record atomically and durably.
fn write(dir: &Path, meta: &Metadata) -> Result<()> {
    let target = path(dir);
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(meta)?;
        json.push(b'\n');
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::data_dir::FILE_MODE)
            .open(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&tmp, &target)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::backend(format!("writing {}", target.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(
        open: bool,
        created: Option<u64>,
        closed: Option<u64>,
        export: Option<u64>,
    ) -> Metadata {
        Metadata {
            format: FORMAT,
            created_by: CreatedBy {
                backend: "pglite".into(),
                pglite_oxide: PGLITE_OXIDE_VERSION.into(),
                postgres: "17.5".into(),
                db_pglite: "0.1.0".into(),
            },
            created_at: Utc::now(),
            created_next_xid: created,
            open,
            closed_next_xid: closed,
            last_export: export.map(|next_xid| Export {
                at: Utc::now(),
                next_xid,
            }),
        }
    }

    fn status_of(m: &Metadata) -> EmbeddedDataStatus {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), m).expect("write");
        status(dir.path()).expect("status")
    }

    #[test]
    fn status_follows_the_transaction_ids() {
        use EmbeddedDataStatus as S;
        assert_eq!(status_of(&meta(false, Some(10), Some(10), None)), S::Unused);
        assert_eq!(
            status_of(&meta(false, Some(10), Some(12), None)),
            S::NeverExported
        );
        assert_eq!(
            status_of(&meta(false, None, Some(12), None)),
            S::NeverExported
        );
        assert!(matches!(
            status_of(&meta(false, Some(10), Some(12), Some(12))),
            S::Exported { .. }
        ));
        assert!(matches!(
            status_of(&meta(false, Some(10), Some(13), Some(12))),
            S::ChangedSinceExport { .. }
        ));
        assert!(matches!(
            status_of(&meta(true, Some(10), Some(12), Some(12))),
            S::NotClosedCleanly {
                exported_at: Some(_)
            }
        ));
    }

    #[test]
    fn no_record_means_no_data_or_never_exported() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            status(dir.path()).expect("status"),
            EmbeddedDataStatus::NoData
        );
        let pgdata = pgdata(dir.path());
        fs::create_dir_all(&pgdata).expect("mkdir");
        fs::write(pgdata.join("PG_VERSION"), "17\n").expect("write");
        assert_eq!(
            status(dir.path()).expect("status"),
            EmbeddedDataStatus::NeverExported
        );
    }

    #[test]
    fn a_newer_format_is_incompatible() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(path(dir.path()), r#"{"format": 99, "whatever": true}"#).expect("write");
        let err = read(dir.path()).expect_err("newer format");
        assert!(matches!(err, Error::DataDirIncompatible { .. }), "{err}");
        assert!(err.to_string().contains("format 99"), "{err}");
    }

    #[test]
    fn warnings_name_the_directory_and_the_commands() {
        let w = EmbeddedDataStatus::NeverExported
            .warning(Path::new("/srv/db"))
            .expect("a warning");
        assert!(w.contains("/srv/db") && w.contains("cocalc-db --data-dir /srv/db export"));
        assert!(w.contains("migrate --to URL"), "{w}");
        assert_eq!(EmbeddedDataStatus::Unused.warning(Path::new("/x")), None);
    }

    #[test]
    fn the_recorded_pglite_oxide_version_is_the_one_built() {
        let lock = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
            .expect("Cargo.lock");
        let entry = format!("name = \"pglite-oxide\"\nversion = \"{PGLITE_OXIDE_VERSION}\"");
        assert!(lock.contains(&entry), "Cargo.lock does not pin {entry}");
    }
}
