//! The data directory on disk: exclusive use by one process, with the
//! holder's PID; owner-only permissions; and telling our clusters from
//! directories that belong to someone else.
//!
//! An `flock` on a file inside the directory is released by the kernel when
//! the process dies, even by `kill -9`, so a crashed hub never leaves the
//! directory locked; the PID written into the file lets the next process say
//! who holds it. The kernel releases the lock only once the whole process
//! is torn down (a large WebAssembly heap takes a while to unmap), so a
//! holder that is already dead or a zombie is waited for, briefly.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use db_core::{DataDir, Error, Result};

use crate::metadata;

pub(crate) const LOCK_FILE: &str = "cocalc-db.pid";

/// pglite-oxide's own lock file at the root of a data directory.
pub(crate) const PGLITE_LOCK_FILE: &str = ".pglite-oxide.lock";

/// How long a lock held by a dead or exiting process is waited for.
const DEAD_HOLDER_WAIT: Duration = Duration::from_secs(5);

/// Mode of every directory of a data directory: owner only, as PostgreSQL
/// requires of its own.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Mode of every file of a data directory.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Holds the lock until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
    /// The lock file, when this acquisition created it.
    created: Option<std::path::PathBuf>,
}

impl DirLock {
    /// Locks `dir` (created owner-only if missing), or fails with
    /// [`Error::DataDirLocked`] naming a live holder at once. A holder that
    /// is gone or a zombie is waited for up to [`DEAD_HOLDER_WAIT`].
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        create_private(dir).map_err(|e| {
            Error::backend(format!("creating the data directory {}", dir.display()), e)
        })?;
        let path = dir.join(LOCK_FILE);
        let created = (!path.exists()).then(|| path.clone());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::backend(format!("opening {}", path.display()), e))?;
        restrict(&path, FILE_MODE)
            .map_err(|e| Error::backend(format!("restricting {}", path.display()), e))?;
        if file.try_lock().is_err() {
            wait_for_dead_holder(dir, &mut file)?;
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        written.map_err(|e| Error::backend(format!("writing {}", path.display()), e))?;
        Ok(DirLock { file, created })
    }

    /// Releases the lock and removes the lock file if this acquisition
    /// created it, so a directory left alone is left as it was.
    pub(crate) fn discard(self) {
        if let Some(path) = &self.created {
            let _ = fs::remove_file(path);
        }
        drop(self.file);
    }
}

/// Returns once `file` is locked by us. Fails at once when its holder is
/// alive (or unknown), else when the kernel has not released it in time.
fn wait_for_dead_holder(dir: &Path, file: &mut File) -> Result<()> {
    let pid = holder_pid(file);
    let locked = || Error::DataDirLocked {
        path: dir.display().to_string(),
        pid,
    };
    let Some(state) = pid.map(process_state) else {
        return Err(locked());
    };
    if state == ProcessState::Alive {
        return Err(locked());
    }
    let pid = pid.unwrap_or_default();
    tracing::warn!(
        "the embedded data directory {} is locked by process {pid}, which is {state}; \
         waiting up to {}s for the system to release it",
        dir.display(),
        DEAD_HOLDER_WAIT.as_secs()
    );
    let started = Instant::now();
    while started.elapsed() < DEAD_HOLDER_WAIT {
        std::thread::sleep(Duration::from_millis(50));
        if file.try_lock().is_ok() {
            return Ok(());
        }
    }
    Err(locked())
}

fn holder_pid(file: &mut File) -> Option<u32> {
    let mut pid = String::new();
    file.read_to_string(&mut pid).ok()?;
    pid.trim().parse().ok()
}

/// What is known of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcessState {
    /// Running, or not known to be otherwise.
    Alive,
    /// Exited, waiting to be reaped (its resources may still be released).
    Zombie,
    /// No such process.
    Gone,
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProcessState::Alive => "running",
            ProcessState::Zombie => "exiting",
            ProcessState::Gone => "gone",
        })
    }
}

/// The state of `pid` from `/proc`; where there is no `/proc`, every
/// process counts as alive, so nothing is waited for.
fn process_state(pid: u32) -> ProcessState {
    if !Path::new("/proc/self").exists() {
        return ProcessState::Alive;
    }
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ProcessState::Gone,
        Err(_) => return ProcessState::Alive,
    };
    // `pid (comm) S ...`: the state follows the last `)`, as comm may hold
    // anything.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    match state {
        Some("Z" | "X" | "x") => ProcessState::Zombie,
        _ if kill_pending(pid) => ProcessState::Zombie,
        _ => ProcessState::Alive,
    }
}

/// Whether `pid` has a SIGKILL pending: it is being torn down, and its
/// threads have not all reached the zombie state yet.
fn kill_pending(pid: u32) -> bool {
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status.lines().any(|line| {
        let mask = line
            .strip_prefix("SigPnd:")
            .or_else(|| line.strip_prefix("ShdPnd:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & SIGKILL_BIT != 0)
    })
}

/// Creates `dir` owner-only (whatever the umask) if it does not exist;
/// its parents are created as usual.
pub(crate) fn create_private(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => restrict(dir, DIR_MODE),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets `path`'s mode to `mode` unless it already is.
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Makes everything below `dir` owner-only: directories [`DIR_MODE`],
/// files [`FILE_MODE`]. `dir` itself keeps its mode (the user's choice,
/// which `check` reports); symbolic links are left alone.
pub(crate) fn restrict_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            restrict(&path, DIR_MODE)?;
            restrict_tree(&path)?;
        } else if kind.is_file() {
            restrict(&path, FILE_MODE)?;
        }
    }
    Ok(())
}

/// Flushes every file and directory below `dir` to the disk: PostgreSQL's
/// own fsync is off in this build, so the data files its last checkpoint
/// wrote are synced here, at close.
pub(crate) fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            fs::File::open(&path)?.sync_data()?;
        }
    }
    fs::File::open(dir)?.sync_all()
}

/// Runs `work` on a thread of its own, in `span`, with the stack the
/// WebAssembly runtime needs to start PostgreSQL (it recurses deeply), and
/// waits for it without blocking the async runtime.
pub(crate) async fn on_runtime_thread<T: Send + 'static>(
    name: &str,
    span: tracing::Span,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (reply, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(32 * 1024 * 1024)
        .spawn(move || {
            let _entered = span.entered();
            let _ = reply.send(work());
        })
        .map_err(|e| Error::backend(format!("starting the {name} thread"), e))?;
    done.await
        .map_err(|_| Error::Protocol(format!("the {name} thread exited early")))
}

/// What a directory holds, before anything is written into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Contents {
    /// It does not exist.
    Missing,
    /// Nothing, or only files this layer leaves in a closed directory.
    Empty,
    /// An embedded cluster of this layer, or one being created.
    Ours,
    /// Something else: what was found.
    Foreign(String),
}

/// Whether `name`, at the root of a data directory, is one of ours that
/// does not make the directory non-empty: lock files, probe files and
/// temporary records.
fn is_bookkeeping(name: &str) -> bool {
    name == LOCK_FILE || name == PGLITE_LOCK_FILE || name.starts_with(".cocalc-db")
}

/// Looks at `dir` without changing it.
pub(crate) fn contents(dir: &Path) -> io::Result<Contents> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::Missing),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !is_bookkeeping(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(Contents::Empty);
    }
    // `tmp/pglite` is where pglite-oxide keeps the cluster; a record or
    // that tree (complete or interrupted) marks the directory as ours.
    if names.iter().any(|n| n == metadata::FILE_NAME) || dir.join("tmp").join("pglite").is_dir() {
        return Ok(Contents::Ours);
    }
    names.sort();
    if names.iter().any(|n| n == "PG_VERSION") {
        let version = fs::read_to_string(dir.join("PG_VERSION")).unwrap_or_default();
        return Ok(Contents::Foreign(format!(
            "the data directory of a PostgreSQL {} server (PG_VERSION, {})",
            version.trim(),
            list(names.iter().filter(|n| *n != "PG_VERSION"))
        )));
    }
    Ok(Contents::Foreign(format!(
        "other files ({})",
        list(names.iter())
    )))
}

/// `a, b, c and 4 more`.
fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.collect();
    let shown: Vec<&str> = names.iter().take(3).map(|n| n.as_str()).collect();
    match names.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// `Ok` unless `dir` holds something that is not ours, which is refused
/// with [`Error::DataDirForeign`].
pub(crate) fn require_ours(dir: &Path) -> Result<Contents> {
    let found = contents(dir).map_err(|e| Error::DataDirUnwritable {
        path: dir.display().to_string(),
        problem: db_core::StorageProblem::from_io(&e),
    })?;
    match found {
        Contents::Foreign(found) => Err(Error::DataDirForeign {
            path: dir.display().to_string(),
            found,
        }),
        other => Ok(other),
    }
}

/// A cluster about to be created in a missing or empty directory: what
/// was there before, so that a failed creation can leave nothing behind.
#[derive(Debug)]
pub(crate) struct Creation {
    dir: Option<PathBuf>,
    /// `None` when the directory did not exist, else the (bookkeeping)
    /// names it held.
    before: Option<Vec<std::ffi::OsString>>,
}

impl Creation {
    /// Notes what `data_dir` holds before opening; nothing to undo for
    /// `memory://` or a directory that already holds something.
    pub(crate) fn start(data_dir: &DataDir) -> Creation {
        let none = Creation {
            dir: None,
            before: None,
        };
        let DataDir::Path(dir) = data_dir else {
            return none;
        };
        let before = match contents(dir) {
            Ok(Contents::Missing) => None,
            Ok(Contents::Empty) => match fs::read_dir(dir) {
                Ok(entries) => Some(
                    entries
                        .filter_map(|e| e.ok().map(|e| e.file_name()))
                        .collect(),
                ),
                Err(_) => return none,
            },
            _ => return none,
        };
        Creation {
            dir: Some(dir.clone()),
            before,
        }
    }

    /// After a failed check (nothing locked yet): removes the directory if
    /// this process created it and it is still empty.
    pub(crate) fn undo_check<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err()
            && let (Some(dir), None) = (&self.dir, &self.before)
        {
            let _ = fs::remove_dir(dir);
        }
        result
    }

    /// After a failed creation, with the directory locked by this process:
    /// removes everything it made, so the next open starts afresh, and
    /// returns `error` in one line with the reason.
    pub(crate) fn undo(self, error: Error) -> Error {
        let Some(dir) = self.dir else {
            return error;
        };
        let error = creation_failure(&dir, error);
        let removed = match &self.before {
            None => fs::remove_dir_all(&dir),
            Some(before) => remove_all_but(&dir, before),
        };
        match removed {
            Ok(()) => tracing::debug!("removed the unfinished cluster in {}", dir.display()),
            Err(e) => tracing::warn!(
                "could not remove the unfinished cluster in {}: {e}",
                dir.display()
            ),
        }
        error
    }
}

/// Removes everything in `dir` but the entries named in `keep`.
pub(crate) fn remove_all_but(dir: &Path, keep: &[std::ffi::OsString]) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if keep.contains(&entry.file_name()) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The size of one WAL segment, the largest file a new cluster writes.
const WAL_SEGMENT: usize = 16 << 20;

/// Why creating a cluster in `dir` failed, in one line. pglite-oxide
/// reports a failed start-up as an opaque protocol error, so the directory
/// is asked directly: a file the size of a WAL segment is written, synced
/// and removed, and its error (disk full, quota, file size limit,
/// permissions) is the reason when there is one.
fn creation_failure(dir: &Path, error: Error) -> Error {
    let probe = dir.join(format!(".cocalc-db-probe-{}", std::process::id()));
    let written = create_private(dir)
        .and_then(|()| File::create(&probe))
        .and_then(|mut file| {
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..WAL_SEGMENT / chunk.len() {
                file.write_all(&chunk)?;
            }
            file.sync_all()
        });
    let _ = fs::remove_file(&probe);
    match written {
        Err(e) => Error::DataDirUnwritable {
            path: dir.display().to_string(),
            problem: db_core::StorageProblem::from_io(&e),
        },
        Ok(()) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_told_apart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        assert_eq!(contents(&dir).expect("read"), Contents::Missing);
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join(LOCK_FILE), "1\n").expect("write");
        assert_eq!(contents(&dir).expect("read"), Contents::Empty);
        fs::create_dir_all(dir.join("tmp/pglite/base")).expect("mkdir");
        assert_eq!(contents(&dir).expect("read"), Contents::Ours);

        let other = tmp.path().join("o");
        fs::create_dir(&other).expect("mkdir");
        for name in ["a", "b", "c", "d", "e"] {
            fs::write(other.join(name), "x").expect("write");
        }
        assert_eq!(
            contents(&other).expect("read"),
            Contents::Foreign("other files (a, b, c and 2 more)".into())
        );
        let err = require_ours(&other).expect_err("foreign");
        assert!(err.to_string().contains("not an embedded cluster"), "{err}");
    }

    #[test]
    fn a_missing_holder_is_gone_and_this_process_alive() {
        assert_eq!(process_state(std::process::id()), ProcessState::Alive);
        assert_eq!(process_state(u32::MAX - 1), ProcessState::Gone);
    }

    #[test]
    fn creation_is_private_whatever_the_umask() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a").join("b");
        create_private(&dir).expect("create");
        let mode = fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, DIR_MODE);
        fs::create_dir(dir.join("sub")).expect("mkdir");
        fs::set_permissions(dir.join("sub"), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(dir.join("sub/f"), "x").expect("write");
        fs::set_permissions(dir.join("sub/f"), fs::Permissions::from_mode(0o644)).expect("chmod");
        restrict_tree(&dir).expect("restrict");
        let mode = |p: &str| {
            fs::metadata(dir.join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("sub"), mode("sub/f")), (DIR_MODE, FILE_MODE));
    }
}
