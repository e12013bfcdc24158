//! Exclusive use of a data directory by one process, with the holder's PID.
//!
//! An `flock` on a file inside the directory is released by the kernel when
//! the process dies, even by `kill -9`, so a crashed hub never leaves the
//! directory locked; the PID written into the file lets the next process say
//! who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use db_core::{Error, Result};

pub(crate) const LOCK_FILE: &str = "cocalc-db.pid";

/// Holds the lock until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::backend(format!("creating the data directory {}", dir.display()), e)
        })?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::backend(format!("opening {}", path.display()), e))?;
        if file.try_lock().is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::DataDirLocked {
                path: dir.display().to_string(),
                pid: pid.trim().parse().ok(),
            });
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        written.map_err(|e| Error::backend(format!("writing {}", path.display()), e))?;
        Ok(DirLock { _file: file })
    }
}
