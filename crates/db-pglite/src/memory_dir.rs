//! The scratch directories of in-memory databases (`memory://`).
//!
//! A directory is removed when its backend shuts down, but a process that
//! exits with a pool still open (a `static` one, say, as test harnesses
//! keep) never gets there. So each directory is named after its process,
//! and the first in-memory database a process opens removes those of
//! processes that no longer run.

use std::path::Path;
use std::sync::Once;

use db_core::backend::process_running;
use tempfile::TempDir;

/// Every in-memory database's directory name starts with this, then the
/// process ID and `-`.
const PREFIX: &str = "cocalc-db-memory-";

/// A new scratch directory in the system's temporary directory.
pub(crate) fn create() -> std::io::Result<TempDir> {
    static REAPED: Once = Once::new();
    REAPED.call_once(|| reap_in(&std::env::temp_dir()));
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir()
}

/// Removes the scratch directories in `dir` of processes that ended.
fn reap_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        // `file_type` does not follow a symbolic link: only a directory of
        // that name is removed, never what a link points to.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let Some(pid) = pid
            && is_dir
            && pid != std::process::id()
            && !process_running(pid)
        {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::debug!(path = %entry.path().display(), "removed the scratch directory of an ended process")
                }
                Err(e) => {
                    tracing::debug!(path = %entry.path().display(), error = %e, "could not remove an abandoned scratch directory")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_of_ended_processes_are_removed() {
        let dir = tempfile::tempdir().expect("test setup");
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("test setup");
        let ended = child.id();
        child.wait().expect("test setup");
        let own = std::process::id();
        let names = [
            format!("{PREFIX}{ended}-abc"),
            format!("{PREFIX}{own}-abc"),
            format!("{PREFIX}notapid"),
            format!("other-{ended}-abc"),
        ];
        for name in &names {
            std::fs::create_dir(dir.path().join(name)).expect("test setup");
            std::fs::write(dir.path().join(name).join("f"), b"x").expect("test setup");
        }
        // A link named like an ended process's directory, to a directory
        // that must survive.
        let target = tempfile::tempdir().expect("test setup");
        std::fs::write(target.path().join("keep"), b"x").expect("test setup");
        let link = dir.path().join(format!("{PREFIX}{ended}-link"));
        std::os::unix::fs::symlink(target.path(), &link).expect("test setup");
        reap_in(dir.path());
        assert!(
            !dir.path().join(&names[0]).exists(),
            "an ended process's directory stays"
        );
        for name in &names[1..] {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
        assert!(target.path().join("keep").exists());
    }
}
