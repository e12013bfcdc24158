//! Writing a file so that it appears whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{MigrateError, Result};

/// A file written under a temporary name beside its destination and renamed
/// into place by [`OutputFile::commit`]; dropped without a commit (an
/// error, or a caller that stops on a signal), the temporary file is
/// removed and nothing appears.
///
/// Only a regular file is ever replaced: a destination that is a FIFO, a
/// device, a directory or a symlink is refused
/// ([`MigrateError::NotRegularFile`]), since renaming over it would replace
/// the special file itself (`/dev/null`, as root) rather than write to it.
#[derive(Debug)]
pub struct OutputFile {
    temp: BufWriter<tempfile::NamedTempFile>,
    path: PathBuf,
    overwrite: bool,
}

impl OutputFile {
    /// Starts writing `path`. An existing regular file is refused unless
    /// `overwrite`; anything else that exists there always is.
    pub fn create(path: &Path, overwrite: bool) -> Result<OutputFile> {
        check_destination(path, overwrite)?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Named after the destination, so that a file left by a killed
        // process (SIGKILL leaves no chance to clean up) says what it was.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(MigrateError::io(format!(
                "creating a file in {}",
                dir.display()
            )))?;
        Ok(OutputFile {
            temp: BufWriter::with_capacity(1 << 20, temp),
            path: path.to_path_buf(),
            overwrite,
        })
    }

    /// The writer.
    pub fn writer(&mut self) -> &mut BufWriter<tempfile::NamedTempFile> {
        &mut self.temp
    }

    /// The temporary file being written, removed unless committed.
    pub fn temporary_path(&self) -> &Path {
        self.temp.get_ref().path()
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<()> {
        let context = format!("writing {}", self.path.display());
        let temp = self
            .temp
            .into_inner()
            .map_err(|e| MigrateError::io(context.clone())(e.into_error()))?;
        temp.as_file()
            .sync_all()
            .map_err(MigrateError::io(context.clone()))?;
        // Again: something may have appeared there while writing.
        check_destination(&self.path, self.overwrite)?;
        let persisted = if self.overwrite {
            temp.persist(&self.path)
        } else {
            temp.persist_noclobber(&self.path)
        };
        let file: File = persisted.map_err(|e| MigrateError::io(context)(e.error))?;
        drop(file);
        Ok(())
    }
}

/// Writes go to the temporary file; nothing appears before
/// [`OutputFile::commit`].
impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.temp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.temp.flush()
    }
}

/// Refuses a destination that exists and is not a regular file (looked at
/// itself, not through a symlink), or a regular file unless `overwrite`.
fn check_destination(path: &Path, overwrite: bool) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(MigrateError::io(format!("looking at {}", path.display()))(
                e,
            ));
        }
    };
    let file_type = meta.file_type();
    if file_type.is_file() {
        return if overwrite {
            Ok(())
        } else {
            Err(MigrateError::FileExists(path.to_path_buf()))
        };
    }
    Err(MigrateError::NotRegularFile {
        path: path.to_path_buf(),
        kind: kind_of(&file_type),
    })
}

/// What a non-regular file is, for the error message.
fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_symlink() {
        return "a symbolic link";
    }
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn appears_whole_on_commit_and_not_at_all_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.sql");
        let mut file = OutputFile::create(&path, false).expect("create");
        file.writer().write_all(b"partial").expect("write");
        let temp = file.temporary_path().to_path_buf();
        assert!(temp.exists());
        assert!(
            temp.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".out.sql.")),
            "{}",
            temp.display()
        );
        drop(file);
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

        let mut file = OutputFile::create(&path, false).expect("create");
        file.writer().write_all(b"whole").expect("write");
        file.commit().expect("commit");
        assert_eq!(entries(dir.path()), ["out.sql"]);
        assert_eq!(std::fs::read(&path).expect("read"), b"whole");
        assert!(matches!(
            OutputFile::create(&path, false),
            Err(MigrateError::FileExists(_))
        ));
        OutputFile::create(&path, true).expect("overwrite a regular file");
    }

    #[cfg(unix)]
    #[test]
    fn special_files_and_symlinks_are_refused_whatever_overwrite_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("real.sql");
        std::fs::write(&target, b"kept").expect("write");
        let link = dir.path().join("link.sql");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        for (path, kind) in [
            (Path::new("/dev/null"), "a device"),
            (link.as_path(), "a symbolic link"),
            (dir.path(), "a directory"),
        ] {
            for overwrite in [false, true] {
                let err = OutputFile::create(path, overwrite).expect_err("refused");
                assert!(
                    matches!(&err, MigrateError::NotRegularFile { kind: k, .. } if *k == kind),
                    "{err}"
                );
                assert!(
                    err.to_string().contains(&path.display().to_string()),
                    "{err}"
                );
            }
        }
        assert_eq!(std::fs::read(&target).expect("read"), b"kept");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
    }
}
