//! Export and import at the same time, through a bounded pipe.

use db_core::Pool;
use db_pglite::PglitePool;

use crate::error::{MigrateError, Result};
use crate::export::{self, ExportOptions, Output};
use crate::import::{ImportOptions, ImportReport, import};
use crate::manifest::Manifest;
use crate::output_file::OutputFile;
use crate::pipe::{PipeWriter, pipe};
use crate::progress::{NoProgress, Progress};

/// Pieces of the export in flight between the export and the import, each
/// at most about an [`ExportOptions::chunk_bytes`] piece of a table.
const PIPE_PIECES: usize = 4;

/// What a [`transfer`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Transfer {
    /// The export's manifest.
    pub manifest: Manifest,
    /// What the import did, verification included.
    pub report: ImportReport,
}

/// Exports the embedded database behind `source` and imports it into
/// `target` at the same time: the export's text goes through a bounded
/// in-memory pipe (a few table pieces) into the import, which reads it on a
/// thread of its own, so the two overlap and the export is never held
/// whole, neither in memory nor on disk. With `keep`, the export is also
/// written to that file as it goes (the same bytes an
/// [`export`](crate::export) writes), which is committed once the export is
/// complete, before the import's verification (so it is kept when that
/// fails); an export that does not complete leaves no file.
///
/// The import is the one [`import`](crate::import) runs (one transaction,
/// verified before its commit). Should either side fail, the other stops
/// and the target is left as it was; the error is the one that came first
/// (an export that fails makes the import fail, and the other way round).
/// `progress` counts the rows the import loads.
///
/// ```no_run
/// # async fn demo<P: db_core::Pool>(source: db_pglite::PglitePool, target: P) -> Result<(), migrate::MigrateError> {
/// use migrate::{ExportOptions, ImportOptions, NoProgress};
/// let options = (ExportOptions::new(), ImportOptions::new());
/// let done = migrate::transfer(&source, &target, None, &options.0, &options.1, &mut NoProgress).await?;
/// println!("{} rows moved and verified", done.report.rows);
/// # Ok(()) }
/// ```
pub async fn transfer<P: Pool>(
    source: &PglitePool,
    target: &P,
    keep: Option<OutputFile>,
    export_options: &ExportOptions,
    import_options: &ImportOptions,
    progress: &mut dyn Progress,
) -> Result<Transfer> {
    let (writer, reader) = pipe(PIPE_PIECES);
    let exporting = export_into(source, writer, keep, export_options);
    let importing = import(target, reader, import_options, progress);
    match tokio::join!(exporting, importing) {
        (Ok(manifest), Ok(report)) => Ok(Transfer { manifest, report }),
        // The export stopped because the import had failed.
        (Err(ExportEnd::ImportGone), Err(e)) => Err(e),
        (Err(ExportEnd::Failed(e)), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        // An import succeeds only after the end of the export, which needs
        // the import to read it; still, not a reason to panic.
        (Err(ExportEnd::ImportGone), Ok(_)) => Err(MigrateError::Io {
            context: "writing the export".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the import stopped reading it",
            ),
        }),
    }
}

/// Why the export side of a transfer stopped.
enum ExportEnd {
    /// The import no longer reads (it failed).
    ImportGone,
    /// The export failed on its own.
    Failed(MigrateError),
}

async fn export_into(
    source: &PglitePool,
    writer: PipeWriter,
    mut keep: Option<OutputFile>,
    options: &ExportOptions,
) -> std::result::Result<Manifest, ExportEnd> {
    let output = Output::Pipe {
        pipe: &writer,
        copy: keep
            .as_mut()
            .map(|file| file.writer() as &mut (dyn std::io::Write + Send)),
    };
    // The import reports progress; the two run at the same pace.
    let exported = export::run(source, output, options, &mut NoProgress)
        .await
        .and_then(|manifest| {
            keep.map_or(Ok(()), OutputFile::commit)?;
            Ok(manifest)
        });
    match exported {
        Ok(manifest) => match writer.finish().await {
            Ok(()) => Ok(manifest),
            Err(_) => Err(ExportEnd::ImportGone),
        },
        Err(_) if writer.is_closed() => Err(ExportEnd::ImportGone),
        Err(e) => {
            // The import must not take what it read for a whole export.
            writer.fail(e.to_string()).await;
            Err(ExportEnd::Failed(e))
        }
    }
}
