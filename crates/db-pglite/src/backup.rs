//! A physical archive of a closed data directory, streamed: files go from
//! disk through gzip to the writer one buffer at a time, so memory does not
//! grow with the database (pglite-oxide's own archive is built in memory).
//!
//! pglite-oxide keeps a new cluster as an overlay: the files it changed in
//! the data directory, over a read-only template in its runtime cache, with
//! `.wh.<name>` files hiding template entries that were deleted. The archive
//! is of the merged view, as pglite-oxide's would be, so it restores into a
//! standalone cluster.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use db_core::{Error, Result};
use pglite_oxide::Pglite;
use serde::Deserialize;

use crate::data_dir::{self, DirLock};
use crate::{health, metadata};

/// Runtime files of a cluster, and overlay bookkeeping: never archived.
const SKIPPED: &[&str] = &["postmaster.pid", "postmaster.opts", OVERLAY_MANIFEST];

/// pglite-oxide's record of the template a data directory overlays.
const OVERLAY_MANIFEST: &str = ".pglite-oxide-pgdata-overlay.json";

/// The prefix of an overlay entry that hides a template entry.
const WHITEOUT: &str = ".wh.";

/// Where pglite-oxide 0.5 unpacks the template under its runtime cache.
const TEMPLATE_CACHE: &str = "pgdata-template/v2";

/// What [`archive_data_dir_to`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveSize {
    /// Files archived.
    pub files: u64,
    /// Bytes of those files, before compression.
    pub bytes: u64,
    /// Bytes written to the writer.
    pub compressed: u64,
}

/// Writes a gzipped tar of the cluster in the closed data directory `dir`
/// to `out`, and gives `out` back. The directory is locked meanwhile (one
/// in use fails with [`Error::DataDirLocked`]); a cluster that was not
/// closed cleanly is started and stopped first, so the archive holds what
/// was committed.
pub async fn archive_data_dir_to<W>(dir: &Path, out: W) -> Result<(W, ArchiveSize)>
where
    W: Write + Send + 'static,
{
    let span = tracing::info_span!("db.pglite.backup", data_dir = %dir.display());
    let dir = dir.to_path_buf();
    data_dir::on_runtime_thread("pglite-backup", span, move || archive(&dir, out)).await?
}

fn archive<W: Write>(dir: &Path, out: W) -> Result<(W, ArchiveSize)> {
    if !metadata::has_cluster(dir) {
        return Err(Error::backend(
            format!("archiving {}", dir.display()),
            "it holds no embedded cluster",
        ));
    }
    let _lock = DirLock::acquire(dir)?;
    let clean = matches!(metadata::read(dir), Ok(Some(m)) if !m.open);
    if !clean {
        // Recovery replays the WAL and a clean shutdown checkpoints, so the
        // files on disk are the committed state.
        Pglite::builder()
            .path(dir.to_path_buf())
            .open()
            .and_then(|mut pglite| pglite.close())
            .map_err(|e| Error::backend(format!("recovering {}", dir.display()), e))?;
    }
    let pgdata = metadata::pgdata(dir);
    let entries = merged_view(&pgdata)?;
    write_archive(entries, out)
        .map_err(|e| Error::backend(format!("archiving {}", dir.display()), e))
}

/// A file or directory of the merged view, by path relative to PGDATA.
#[derive(Debug)]
enum Source {
    Dir,
    File(PathBuf),
}

/// The cluster as PostgreSQL sees it: the template (if any), then the
/// data directory's own entries and whiteouts over it.
fn merged_view(pgdata: &Path) -> Result<BTreeMap<PathBuf, Source>> {
    let mut entries = BTreeMap::new();
    let read = |e: io::Error, at: &Path| Error::backend(format!("reading {}", at.display()), e);
    if let Some(template) = template_of(pgdata)? {
        walk(&template, &template, false, &mut entries).map_err(|e| read(e, &template))?;
    }
    walk(pgdata, pgdata, true, &mut entries).map_err(|e| read(e, pgdata))?;
    Ok(entries)
}

/// The template directory `pgdata` overlays, `None` for a standalone
/// cluster (a restored one, say).
fn template_of(pgdata: &Path) -> Result<Option<PathBuf>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Overlay {
        template_archive_sha256: String,
        #[serde(default)]
        extension_sql_names: Vec<String>,
    }
    let file = pgdata.join(OVERLAY_MANIFEST);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::backend(format!("reading {}", file.display()), e)),
    };
    let unsupported = |why: String| {
        Error::backend(
            format!("archiving the cluster in {}", pgdata.display()),
            format!("its template overlay is not one this build can read: {why}"),
        )
    };
    let overlay: Overlay =
        serde_json::from_str(&text).map_err(|e| unsupported(format!("{}: {e}", file.display())))?;
    if !overlay.extension_sql_names.is_empty() {
        return Err(unsupported(format!(
            "extensions {}",
            overlay.extension_sql_names.join(", ")
        )));
    }
    let cache = health::runtime_cache_dir()
        .ok_or_else(|| unsupported("no runtime cache directory".into()))?;
    let template = cache
        .join(TEMPLATE_CACHE)
        .join(&overlay.template_archive_sha256)
        .join("base");
    if !template.join("global").join("pg_control").is_file() {
        return Err(unsupported(format!(
            "its template {} is missing",
            template.display()
        )));
    }
    Ok(Some(template))
}

/// Adds the entries under `at` (relative to `root`) to `entries`, in name
/// order; with `whiteouts`, a `.wh.<name>` removes `<name>` and everything
/// below it.
fn walk(
    root: &Path,
    at: &Path,
    whiteouts: bool,
    entries: &mut BTreeMap<PathBuf, Source>,
) -> io::Result<()> {
    let mut children = fs::read_dir(at)?.collect::<io::Result<Vec<_>>>()?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let path = child.path();
        let relative = path
            .strip_prefix(root)
            .map_err(io::Error::other)?
            .to_path_buf();
        let name = child.file_name().to_string_lossy().into_owned();
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            if whiteouts {
                let target = relative.with_file_name(hidden);
                entries.retain(|p, _| !p.starts_with(&target));
            }
            continue;
        }
        if SKIPPED.iter().any(|s| relative == Path::new(s)) {
            continue;
        }
        let kind = child.file_type()?;
        if kind.is_dir() {
            entries.insert(relative, Source::Dir);
            walk(root, &path, whiteouts, entries)?;
        } else if kind.is_file() {
            entries.insert(relative, Source::File(path));
        }
    }
    Ok(())
}

/// Counts the bytes that pass through to the writer.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_archive<W: Write>(
    entries: BTreeMap<PathBuf, Source>,
    out: W,
) -> io::Result<(W, ArchiveSize)> {
    let counting = Counting {
        inner: out,
        written: 0,
    };
    let gz = flate2::write::GzEncoder::new(counting, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let (mut files, mut bytes) = (0, 0);
    for (relative, source) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        match source {
            Source::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o700);
                header.set_size(0);
                tar.append_data(&mut header, &relative, io::empty())?;
            }
            Source::File(path) => {
                let file = File::open(&path)?;
                let size = file.metadata()?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o600);
                header.set_size(size);
                // A file that changed size meanwhile would corrupt the
                // archive; the directory is locked and the cluster stopped,
                // so it cannot, but `take` keeps the promise regardless.
                tar.append_data(&mut header, &relative, io::Read::take(file, size))?;
                files += 1;
                bytes += size;
            }
        }
    }
    let gz = tar.into_inner()?;
    let counting = gz.finish()?;
    let size = ArchiveSize {
        files,
        bytes,
        compressed: counting.written,
    };
    Ok((counting.inner, size))
}
