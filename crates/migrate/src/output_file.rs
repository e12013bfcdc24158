//! Writing a file so that it appears whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{MigrateError, Result};

/// A file written under a temporary name beside its destination and renamed
/// into place by [`OutputFile::commit`]; dropped without a commit, nothing
/// appears.
#[derive(Debug)]
pub struct OutputFile {
    temp: BufWriter<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl OutputFile {
    /// Starts writing `path`. An existing file is refused unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<OutputFile> {
        if !overwrite && path.exists() {
            return Err(MigrateError::FileExists(path.to_path_buf()));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp = tempfile::NamedTempFile::new_in(dir).map_err(MigrateError::io(format!(
            "creating a file in {}",
            dir.display()
        )))?;
        Ok(OutputFile {
            temp: BufWriter::with_capacity(1 << 20, temp),
            path: path.to_path_buf(),
        })
    }

    /// The writer.
    pub fn writer(&mut self) -> &mut BufWriter<tempfile::NamedTempFile> {
        &mut self.temp
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
        let file: File = temp
            .persist(&self.path)
            .map_err(|e| MigrateError::io(context)(e.error))?;
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
