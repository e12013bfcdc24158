//! Loading an export into a database, in one transaction.

use std::io::BufRead;

use db_core::{Client, Executor, Pool};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::allow;
use crate::catalog;
use crate::compat::{Rewrite, SkippedSetting, TargetSettings};
use crate::error::{MigrateError, Result};
use crate::manifest::{EndMarker, MANIFEST_FORMAT, Manifest};
use crate::progress::Progress;
use crate::script::{Item, ScriptReader};
use crate::verify::{self, Verification};

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    force: bool,
    chunk_bytes: usize,
    unverified: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            force: false,
            chunk_bytes: 4 << 20,
            unverified: false,
        }
    }
}

impl ImportOptions {
    /// Refuse a target that holds tables; COPY data in 4 MiB chunks.
    pub fn new() -> Self {
        ImportOptions::default()
    }

    /// Import even into a target that already holds tables. Objects of the
    /// export that clash with existing ones still fail the import, which
    /// then changes nothing.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Load a script that lacks the manifest or the end marker, or whose
    /// end marker does not match (hand-made SQL, an export of an older
    /// version, an edited export). Off by default: such a file may be cut
    /// short, and nothing tells. What a manifest it does have lists is
    /// still verified.
    pub fn unverified(mut self, unverified: bool) -> Self {
        self.unverified = unverified;
        self
    }

    /// Send COPY data in chunks of about this many bytes (whole rows).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }
}

/// What an import did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImportReport {
    /// The export's manifest, when it had one.
    pub manifest: Option<Manifest>,
    /// What the import verified against the manifest (`None` without one).
    pub verification: Option<Verification>,
    /// The end marker, which matched the file (`None` without one, only
    /// with [`ImportOptions::unverified`]).
    pub end_marker: Option<EndMarker>,
    /// Setting statements skipped because the target lacks the setting.
    pub skipped_settings: Vec<SkippedSetting>,
    /// Statements run (COPY included).
    pub statements: u64,
    /// Rows loaded by COPY.
    pub rows: u64,
}

/// Loads the export read from `input` into the database behind `pool`.
///
/// `input` is read on a thread of its own, never on the async runtime
/// (reading a file or a pipe blocks), at most a few items ahead of the
/// statements running on the target, so memory stays bounded whatever the
/// export's size. Should the import fail, the reading stops at the reader's
/// next item.
///
/// Refuses a target that already holds tables unless
/// [`ImportOptions::force`], and any statement an export does not contain
/// ([`MigrateError::Refused`], see the crate docs). Unless
/// [`ImportOptions::unverified`], the export must start with its manifest
/// ([`MigrateError::NoManifest`]) and end with its end marker, which must
/// match the text before it ([`MigrateError::Incomplete`],
/// [`MigrateError::Altered`]). Everything runs in one
/// transaction: setting
/// statements the target lacks are skipped and reported (see
/// [`ImportReport::skipped_settings`]), the rest runs as written, and when
/// the export has a manifest, every table's rows and checksum, every
/// sequence and the schema's objects (those the import created must be
/// exactly the manifest's) are verified before the commit, so a failure or a mismatch
/// (or an error reading `input`) leaves the target as it was.
///
/// ```no_run
/// # async fn demo<P: db_core::Pool>(pool: P) -> Result<(), migrate::MigrateError> {
/// let file = std::io::BufReader::new(std::fs::File::open("hub.sql").expect("file"));
/// let report = migrate::import(&pool, file, &migrate::ImportOptions::new(), &mut migrate::NoProgress).await?;
/// for skipped in &report.skipped_settings {
///     println!("skipped {} (line {})", skipped.statement, skipped.line);
/// }
/// # Ok(()) }
/// ```
pub async fn import<P: Pool, R: BufRead + Send + 'static>(
    pool: &P,
    input: R,
    options: &ImportOptions,
    progress: &mut dyn Progress,
) -> Result<ImportReport> {
    run(pool, input, options, progress)
        .instrument(tracing::info_span!("migrate.import"))
        .await
}

/// What the reading thread hands to the import, in the script's order.
enum Piece {
    /// The script's first item, with the manifest read before it.
    First {
        manifest: Option<Manifest>,
        item: Item,
    },
    /// Any later item.
    Item(Item),
    /// The end of the script: the manifest and the end marker read.
    End {
        manifest: Option<Manifest>,
        end_marker: Option<EndMarker>,
    },
    /// Reading stopped here; the import fails with this.
    Failed(MigrateError),
}

/// How many pieces the reading thread may be ahead of the import: a few
/// COPY chunks of [`ImportOptions::chunk_bytes`] each at most, so reading
/// overlaps the target's work without holding much of the file.
const PIECES_AHEAD: usize = 4;

/// Reads the script from `input` on a thread of its own (not a task of
/// the async runtime, whose shutdown would wait for a read that blocks
/// forever, as one from a pipe can). The thread stops after the end of the
/// script, after an error, or once the receiver is dropped.
fn read_on_a_thread<R: BufRead + Send + 'static>(
    input: R,
    options: &ImportOptions,
) -> Result<mpsc::Receiver<Piece>> {
    let (sender, receiver) = mpsc::channel(PIECES_AHEAD);
    let mut reader =
        ScriptReader::new(input, options.chunk_bytes).require_end_marker(!options.unverified);
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("migrate-import-reader".into())
        .spawn(move || {
            let _span = span.entered();
            let mut first = true;
            loop {
                let piece = match reader.next_item() {
                    Ok(Some(item)) if first => {
                        first = false;
                        Piece::First {
                            manifest: reader.manifest().cloned(),
                            item,
                        }
                    }
                    Ok(Some(item)) => Piece::Item(item),
                    Ok(None) => Piece::End {
                        manifest: reader.manifest().cloned(),
                        end_marker: reader.end_marker().cloned(),
                    },
                    Err(e) => Piece::Failed(e),
                };
                let last = matches!(piece, Piece::End { .. } | Piece::Failed(_));
                // An error means the import is gone (it failed, or its
                // future was dropped): nothing more is wanted.
                if sender.blocking_send(piece).is_err() || last {
                    return;
                }
            }
        })
        .map_err(MigrateError::io(
            "starting the thread that reads the export",
        ))?;
    Ok(receiver)
}

async fn run<P: Pool, R: BufRead + Send + 'static>(
    pool: &P,
    input: R,
    options: &ImportOptions,
    progress: &mut dyn Progress,
) -> Result<ImportReport> {
    let mut client = pool
        .acquire()
        .await
        .map_err(MigrateError::db("connecting to the target"))?;
    if !options.force {
        let tables = catalog::some_tables(&mut client, 5).await?;
        if !tables.is_empty() {
            return Err(MigrateError::TargetNotEmpty { tables });
        }
    }
    let settings = TargetSettings::read(&mut client).await?;
    let mut tx = client
        .begin()
        .await
        .map_err(MigrateError::db("starting the import transaction"))?;
    // What the target held before, so that the objects the import created
    // can be told apart from them (with --force).
    let baseline = catalog::schema_objects(&mut tx).await?;
    let mut pieces = read_on_a_thread(input, options)?;
    let mut report = ImportReport {
        manifest: None,
        verification: None,
        end_marker: None,
        skipped_settings: Vec::new(),
        statements: 0,
        rows: 0,
    };
    let mut copy: Option<(String, u64)> = None;
    loop {
        // Dropping `pieces` on any return below stops the reading thread.
        let item = match pieces.recv().await {
            Some(Piece::First { manifest, item }) => {
                if !options.unverified {
                    check_manifest(manifest.as_ref(), &item)?;
                }
                if let Some(manifest) = &manifest {
                    progress.start(manifest.total_rows());
                }
                item
            }
            Some(Piece::Item(item)) => item,
            Some(Piece::End {
                manifest,
                end_marker,
            }) => {
                report.manifest = manifest;
                report.end_marker = end_marker;
                break;
            }
            Some(Piece::Failed(e)) => return Err(e),
            // The thread ended without saying why: the reader panicked.
            None => {
                return Err(MigrateError::Io {
                    context: "reading the export".into(),
                    source: std::io::Error::other("the reading thread stopped unexpectedly"),
                });
            }
        };
        match item {
            Item::Statement { sql, line } => {
                // Checked before anything else: a statement an export never
                // holds is refused even when the target would skip it.
                allow::check(&sql).map_err(|reason| refused(line, &sql, reason))?;
                let run = match settings.rewrite(&sql) {
                    Rewrite::Keep => sql.clone(),
                    Rewrite::Local(local) => local,
                    // A preamble setting the target lacks: never sent.
                    Rewrite::Skip(name) => {
                        tracing::warn!(
                            line,
                            statement = %sql,
                            "skipped: the target has no setting {name}"
                        );
                        report.skipped_settings.push(SkippedSetting {
                            name,
                            statement: sql,
                            line,
                        });
                        continue;
                    }
                };
                // The extended protocol runs exactly one statement: should
                // the server ever see a statement boundary the lexer did
                // not, it fails instead of running a second, unchecked one.
                tx.execute(&run, &[])
                    .await
                    .map_err(|source| statement_error(line, &sql, source))?;
                report.statements += 1;
            }
            Item::CopyStart { sql, line } => {
                allow::check_copy(&sql).map_err(|reason| refused(line, &sql, reason))?;
                report.statements += 1;
                copy = Some((sql, line));
            }
            Item::CopyData(chunk) => {
                let Some((sql, line)) = &copy else {
                    return Err(MigrateError::Script {
                        line: 0,
                        message: "COPY data outside a COPY".into(),
                    });
                };
                let rows = tx
                    .copy_in(sql, &chunk)
                    .await
                    .map_err(|source| statement_error(*line, sql, source))?;
                report.rows += rows;
                progress.advance(rows);
            }
            Item::CopyEnd => copy = None,
        }
    }
    progress.finish();
    if let Some(manifest) = &report.manifest {
        report.verification =
            Some(verify::verify_in_transaction(&mut tx, manifest, Some(&baseline)).await?);
    } else {
        tracing::warn!("the export has no manifest: rows and checksums are not verified");
    }
    tx.commit()
        .await
        .map_err(MigrateError::db("committing the import"))?;
    tracing::info!(
        statements = report.statements,
        rows = report.rows,
        skipped = report.skipped_settings.len(),
        "imported"
    );
    Ok(report)
}

/// Before the first statement runs: a verified import needs a manifest of
/// this version's format.
fn check_manifest(manifest: Option<&Manifest>, first: &Item) -> Result<()> {
    let line = match first {
        Item::Statement { line, .. } | Item::CopyStart { line, .. } => *line,
        Item::CopyData(_) | Item::CopyEnd => 0,
    };
    let Some(manifest) = manifest else {
        return Err(MigrateError::NoManifest { line });
    };
    if manifest.format != MANIFEST_FORMAT || manifest.schema.is_none() {
        return Err(MigrateError::ManifestFormat {
            format: manifest.format,
            expected: MANIFEST_FORMAT,
        });
    }
    Ok(())
}

fn statement_error(line: u64, sql: &str, source: db_core::Error) -> MigrateError {
    MigrateError::Statement {
        line,
        statement: shortened(sql),
        source,
    }
}

/// A statement [`allow::check`] refused. Returning it drops the open
/// transaction, which rolls back everything the import did.
fn refused(line: u64, sql: &str, reason: String) -> MigrateError {
    MigrateError::Refused {
        line,
        statement: shortened(sql),
        reason,
    }
}

/// `sql`, cut after 200 characters for error messages.
fn shortened(sql: &str) -> String {
    const MAX: usize = 200;
    match sql.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", sql.get(..i).unwrap_or_default()),
        None => sql.to_owned(),
    }
}
