//! Loading an export into a database, in one transaction.

use std::io::BufRead;

use db_core::{Client, Executor, Pool};
use tracing::Instrument;

use crate::allow;
use crate::catalog;
use crate::compat::{Rewrite, SkippedSetting, TargetSettings};
use crate::error::{MigrateError, Result};
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::script::{Item, ScriptReader};
use crate::verify::{self, Verification};

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    force: bool,
    chunk_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            force: false,
            chunk_bytes: 4 << 20,
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
    /// Setting statements skipped because the target lacks the setting.
    pub skipped_settings: Vec<SkippedSetting>,
    /// Statements run (COPY included).
    pub statements: u64,
    /// Rows loaded by COPY.
    pub rows: u64,
}

/// Loads the export read from `input` into the database behind `pool`.
///
/// Refuses a target that already holds tables unless
/// [`ImportOptions::force`], and any statement an export does not contain
/// ([`MigrateError::Refused`], see the crate docs). Everything runs in one
/// transaction: setting
/// statements the target lacks are skipped and reported (see
/// [`ImportReport::skipped_settings`]), the rest runs as written, and when
/// the export has a manifest, every table's rows and checksum and every
/// sequence are verified before the commit, so a failure or a mismatch
/// leaves the target as it was.
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
pub async fn import<P: Pool, R: BufRead + Send>(
    pool: &P,
    input: R,
    options: &ImportOptions,
    progress: &mut dyn Progress,
) -> Result<ImportReport> {
    run(pool, input, options, progress)
        .instrument(tracing::info_span!("migrate.import"))
        .await
}

async fn run<P: Pool, R: BufRead + Send>(
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
    let mut reader = ScriptReader::new(input, options.chunk_bytes);
    let mut report = ImportReport {
        manifest: None,
        verification: None,
        skipped_settings: Vec::new(),
        statements: 0,
        rows: 0,
    };
    let mut copy: Option<(String, u64)> = None;
    let mut started = false;
    while let Some(item) = reader.next_item()? {
        if !started && let Some(manifest) = reader.manifest() {
            progress.start(manifest.total_rows());
            started = true;
        }
        match item {
            Item::Statement { sql, line } => {
                let run = match settings.rewrite(&sql) {
                    Rewrite::Keep => {
                        allow::check(&sql).map_err(|reason| refused(line, &sql, reason))?;
                        sql.clone()
                    }
                    Rewrite::Local(local) => {
                        allow::check(&sql).map_err(|reason| refused(line, &sql, reason))?;
                        local
                    }
                    // Never sent, so harmless whatever it says.
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
    report.manifest = reader.manifest().cloned();
    if let Some(manifest) = &report.manifest {
        report.verification = Some(verify::verify_in_transaction(&mut tx, manifest).await?);
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
