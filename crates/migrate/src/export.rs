//! Logical export of the embedded database as one plain-SQL file.
//!
//! Layout: a manifest comment line (source version, every table's rows and
//! checksum, every sequence's state), pg_dump's pre-data section (schemas,
//! tables, sequences, functions), every table's rows as `COPY ... FROM
//! stdin` blocks, the sequences' `setval` calls, and pg_dump's post-data
//! section (indexes, constraints, triggers), so rows load before indexes;
//! last, the end marker: the length and SHA-256 of everything before it.
//! psql can load the file too. Each table's rows are read in pieces of
//! bounded size (see the `chunks` module).

use std::io::Write;

use db_core::{Client, Executor, Pool};
use db_pglite::PglitePool;
use tracing::Instrument;

use crate::catalog;
use crate::chunks::{KeyColumn, RelationSize, TableChunks};
use crate::error::{MigrateError, Result};
use crate::manifest::{Digesting, MANIFEST_FORMAT, Manifest, TableSummary, qualified};
use crate::pipe::PipeWriter;
use crate::progress::Progress;

/// pg_dump arguments shared by both sections: no ownership or privileges,
/// which belong to the source and would fail on another server.
const DUMP_ARGS: [&str; 2] = ["--no-owner", "--no-acl"];

/// Bytes gathered before they are handed to the output: COPY pieces of
/// small tables travel together, a large piece on its own.
const OUTPUT_BUFFER: usize = 1 << 20;

/// How an export runs.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    chunk_bytes: usize,
    without_data: Vec<(String, String)>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            chunk_bytes: 8 << 20,
            without_data: Vec::new(),
        }
    }
}

impl ExportOptions {
    /// Tables are read in pieces of about 8 MiB of COPY text.
    pub fn new() -> Self {
        ExportOptions::default()
    }

    /// Reads each table in pieces of about this many bytes of COPY text
    /// (whole rows; a piece holds at least one row). The embedded backend
    /// returns a statement's output in one buffer, so this bounds the
    /// memory an export takes beyond the database's own.
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// Exports table `schema.name` without its rows: its definition goes,
    /// and the manifest records it as empty, so that the import verifies it
    /// empty (a change log, say, whose rows are not the data). A table
    /// that does not exist is ignored.
    pub fn without_data_of(mut self, schema: impl Into<String>, name: impl Into<String>) -> Self {
        self.without_data.push((schema.into(), name.into()));
        self
    }

    fn skips_data_of(&self, table: &TableSummary) -> bool {
        self.without_data
            .iter()
            .any(|(schema, name)| *schema == table.schema && *name == table.name)
    }
}

/// Writes a logical export of the database behind `pool` to `out` and
/// returns its manifest.
///
/// The embedded backend is held for the whole export, so nothing else in
/// this process writes meanwhile and the manifest, the schema and the rows
/// are one consistent state. `out` is written as the export runs; tables
/// are read in pieces ([`ExportOptions::chunk_bytes`]), ordered by their
/// primary key (by their place on disk without one).
///
/// ```no_run
/// # async fn demo(pool: db_pglite::PglitePool) -> Result<(), migrate::MigrateError> {
/// use migrate::{ExportOptions, NoProgress};
/// let mut file = std::io::BufWriter::new(std::fs::File::create("hub.sql").expect("file"));
/// let manifest = migrate::export(&pool, &mut file, &ExportOptions::new(), &mut NoProgress).await?;
/// println!("exported {} rows", manifest.total_rows());
/// # Ok(()) }
/// ```
pub async fn export<W: Write + Send>(
    pool: &PglitePool,
    out: &mut W,
    options: &ExportOptions,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    run(pool, Output::Writer(out), options, progress).await
}

/// Where an export goes.
pub(crate) enum Output<'a> {
    /// A writer.
    Writer(&'a mut (dyn Write + Send)),
    /// An import reading at the same time, and a copy for a writer.
    Pipe {
        pipe: &'a PipeWriter,
        copy: Option<&'a mut (dyn Write + Send)>,
    },
}

/// The export's text on its way out: counted and hashed for the end
/// marker, gathered in `pending` and handed to the output in pieces.
struct Sink<'a> {
    out: Output<'a>,
    digest: Digesting<std::io::Sink>,
    pending: Vec<u8>,
}

impl Sink<'_> {
    fn text(&mut self, text: &str) {
        self.pending.extend_from_slice(text.as_bytes());
    }

    /// Hands what is pending to the output once there is enough of it.
    async fn flush_if_full(&mut self) -> Result<()> {
        if self.pending.len() >= OUTPUT_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.digest.absorb(&self.pending);
        let bytes = std::mem::take(&mut self.pending);
        self.emit(bytes).await
    }

    /// Writes `bytes` without counting them (the end marker), or counted
    /// already by [`Sink::flush`].
    async fn emit(&mut self, bytes: Vec<u8>) -> Result<()> {
        let written = |e| MigrateError::io("writing the export")(e);
        match &mut self.out {
            Output::Writer(writer) => writer.write_all(&bytes).map_err(written),
            Output::Pipe { pipe, copy } => {
                if let Some(copy) = copy {
                    copy.write_all(&bytes).map_err(written)?;
                }
                pipe.send(bytes).await
            }
        }
    }

    /// Writes the end marker and flushes the writers.
    async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        let marker = self.digest.marker().line();
        self.emit(marker.into_bytes()).await?;
        let flushed = match &mut self.out {
            Output::Writer(writer) => writer.flush(),
            Output::Pipe { copy, .. } => copy.as_mut().map_or(Ok(()), |c| c.flush()),
        };
        flushed.map_err(MigrateError::io("writing the export"))
    }
}

/// The export into `out`; [`export`] and [`transfer`](crate::transfer).
pub(crate) async fn run(
    pool: &PglitePool,
    out: Output<'_>,
    options: &ExportOptions,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    write_export(pool, out, options, progress)
        .instrument(tracing::info_span!("migrate.export"))
        .await
}

async fn write_export(
    pool: &PglitePool,
    out: Output<'_>,
    options: &ExportOptions,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    // Everything goes through the digest but the end marker itself.
    let mut sink = Sink {
        out,
        digest: Digesting::new(std::io::sink()),
        pending: Vec::new(),
    };
    let mut client = pool
        .acquire()
        .await
        .map_err(MigrateError::db("holding the embedded database"))?;
    let source_version = client
        .query_one("SHOW server_version", &[])
        .await
        .and_then(|r| r.try_get::<String, _>(0))
        .map_err(MigrateError::db("reading the server version"))?;
    let pre_data = dump_section(&mut client, "pre-data").await?;
    let post_data = dump_section(&mut client, "post-data").await?;

    let mut tx = client
        .begin()
        .await
        .map_err(MigrateError::db("starting the export transaction"))?;
    tx.batch_execute(catalog::PINNED_OUTPUT)
        .await
        .map_err(MigrateError::db("pinning the output settings"))?;
    let mut tables = catalog::summarize_all(&mut tx).await?;
    for table in tables.iter_mut().filter(|t| options.skips_data_of(t)) {
        table.rows = 0;
        table.checksum = catalog::EMPTY_CHECKSUM.to_owned();
    }
    let sequences = catalog::sequence_states(&mut tx).await?;
    let schema = catalog::schema_objects(&mut tx).await?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        source_version,
        tables,
        sequences,
        schema: Some(schema),
    };

    let line = manifest.to_line().map_err(|e| MigrateError::Io {
        context: "writing the manifest".into(),
        source: std::io::Error::other(e),
    })?;
    sink.text("-- cocalc-db export of the embedded database\n");
    sink.text(&line);
    sink.text("\n");
    sink.text(&pre_data);
    sink.flush().await?;

    progress.start(manifest.total_rows());
    for table in &manifest.tables {
        copy_table(&mut tx, &mut sink, table, options, progress).await?;
    }
    tx.commit()
        .await
        .map_err(MigrateError::db("ending the export transaction"))?;
    progress.finish();

    sink.text("\n--\n-- Sequence values\n--\n\n");
    for seq in &manifest.sequences {
        let name = qualified(&seq.schema, &seq.name).replace('\'', "''");
        sink.text(&format!(
            "SELECT pg_catalog.setval('{name}', {}, {});\n",
            seq.last_value, seq.is_called
        ));
    }
    sink.text("\n");
    sink.text(&post_data);
    sink.finish().await?;
    tracing::info!(
        tables = manifest.tables.len(),
        rows = manifest.total_rows(),
        "exported the embedded database"
    );
    Ok(manifest)
}

/// Writes the `COPY ... FROM stdin` block of `table`, read in pieces.
async fn copy_table<E: Executor>(
    tx: &mut E,
    sink: &mut Sink<'_>,
    table: &TableSummary,
    options: &ExportOptions,
    progress: &mut dyn Progress,
) -> Result<()> {
    let name = table.qualified();
    let columns = catalog::copy_columns(tx, &table.schema, &table.name).await?;
    sink.text(&format!("\n--\n-- Data for {name}\n--\n\n"));
    sink.text(&format!(
        "COPY {name} ({}) FROM stdin;\n",
        columns.join(", ")
    ));
    if options.skips_data_of(table) {
        sink.text("\\.\n");
        return Ok(());
    }
    let mut chunks = plan_chunks(tx, table, &columns, options).await?;
    let mut exported = 0u64;
    while let Some(statement) = chunks.next_statement() {
        let start = sink.pending.len();
        let pending = &mut sink.pending;
        let rows = tx
            .copy_out(&statement, |data: &[u8]| {
                pending.extend_from_slice(data);
                Ok(())
            })
            .await
            .map_err(MigrateError::db(format!("exporting {name}")))?;
        let piece = sink.pending.get(start..).unwrap_or_default();
        chunks
            .record(rows, piece)
            .map_err(|message| MigrateError::Export {
                table: name.clone(),
                message,
            })?;
        exported += rows;
        progress.advance(rows);
        sink.flush_if_full().await?;
    }
    // A piece that missed or repeated rows would be caught by the import's
    // checksums; caught here, the export fails instead of being written.
    if i64::try_from(exported).ok() != Some(table.rows) {
        return Err(MigrateError::Export {
            table: name,
            message: format!(
                "{exported} rows were copied, but the table holds {}",
                table.rows
            ),
        });
    }
    sink.text("\\.\n");
    Ok(())
}

/// How `table` is read: by primary key when it has one whose columns are
/// all copied (a generated column is not), else by page.
async fn plan_chunks<E: Executor>(
    tx: &mut E,
    table: &TableSummary,
    columns: &[String],
    options: &ExportOptions,
) -> Result<TableChunks> {
    let (pages, bytes) = catalog::relation_size(tx, &table.schema, &table.name).await?;
    let size = RelationSize {
        rows: u64::try_from(table.rows).unwrap_or(0),
        pages,
        bytes,
    };
    let target = u64::try_from(options.chunk_bytes).unwrap_or(u64::MAX);
    let key = catalog::primary_key(tx, &table.schema, &table.name).await?;
    let key: Option<Vec<KeyColumn>> = key
        .into_iter()
        .map(|(column, type_sql)| {
            let name = db_core::quote_ident(&column);
            let position = columns.iter().position(|c| *c == name)?;
            Some(KeyColumn {
                position,
                name,
                type_sql,
            })
        })
        .collect();
    Ok(match key {
        Some(key) if !key.is_empty() => {
            TableChunks::by_key(&table.schema, &table.name, columns, key, size, target)
        }
        _ => TableChunks::by_page(&table.schema, &table.name, columns, size, target),
    })
}

async fn dump_section(client: &mut db_pglite::PgliteClient, section: &str) -> Result<String> {
    let arg = format!("--section={section}");
    let mut args = vec![arg.as_str()];
    args.extend(DUMP_ARGS);
    client
        .pg_dump(&args)
        .await
        .map_err(MigrateError::db(format!(
            "running pg_dump for the {section} section"
        )))
}
