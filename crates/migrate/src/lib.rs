//! Outgrowing the embedded database: a logical export of PGlite as plain
//! SQL, its import into PostgreSQL 13 and newer (or into PGlite), the
//! verification that every table arrived intact, and physical backups of
//! the embedded data directory.
//!
//! ```no_run
//! # async fn demo(source: db_pglite::PglitePool, target: impl db_core::Pool) -> Result<(), migrate::MigrateError> {
//! use migrate::{ExportOptions, ImportOptions, NoProgress};
//! // Export to a buffer (any `std::io::Write`), import from it (any
//! // `BufRead` that can move to the thread that reads it).
//! let mut sql = Vec::new();
//! let manifest = migrate::export(&source, &mut sql, &ExportOptions::new(), &mut NoProgress).await?;
//! let input = std::io::Cursor::new(sql);
//! let report = migrate::import(&target, input, &ImportOptions::new(), &mut NoProgress).await?;
//! // The import verified rows and checksums before committing; verify again at will.
//! migrate::verify(&target, &manifest).await?;
//! # let _ = report; Ok(()) }
//! ```
//!
//! [`transfer`] does both at once, through a bounded pipe.
//!
//! # The export
//!
//! One SQL file that psql could also load: a `-- cocalc-db-manifest: {json}`
//! line with every table's row count and checksum, every sequence's state
//! and the schema's objects by kind ([`SchemaObjects`]), pg_dump's pre-data
//! section, each table's rows as a `COPY ... FROM stdin` block, `setval` for
//! each sequence, pg_dump's post-data section, and the end marker
//! ([`EndMarker`]): the length and SHA-256 of everything before it. Without
//! [`ImportOptions::unverified`], an import refuses a file without a
//! manifest or whose end marker is missing or does not match.
//!
//! Tables are read in pieces of about [`ExportOptions::chunk_bytes`] each,
//! by primary key (a table without one by page), so memory stays bounded
//! whatever a table's size; a table's rows come in the order of its
//! primary key (of its pages without one).
//!
//! The checksum of a table is `sum` over its rows of the first 64 bits of
//! `md5(row::text)`, with the output settings pinned (UTC, ISO dates,
//! `postgres` intervals, shortest exact floats, hex bytea), so it is the same
//! on PGlite 17 and PostgreSQL 13 and newer, whatever the row order.
//!
//! # The import
//!
//! One transaction. The input is read and split into statements on a
//! thread of its own, a few COPY chunks ahead of the target at most, so
//! the async runtime never waits for a read. The export comes from PostgreSQL 17's pg_dump, whose
//! preamble sets settings older servers lack (`transaction_timeout`); such
//! setting statements are skipped and reported, nothing else is.
//!
//! Only what an export contains runs: schema statements (`CREATE` / `ALTER`
//! of tables, sequences, indexes, functions, triggers, types, views),
//! `COMMENT`, `SET` of pg_dump's session settings,
//! `pg_catalog.setval` / `set_config` with literal arguments and `COPY table
//! FROM stdin`. Any other statement (transaction control, `COPY ... TO
//! PROGRAM`, `DO`, roles, extensions, `DROP`, other `SELECT`s, ...) fails the
//! import with [`MigrateError::Refused`] naming its line, and the target is
//! left as it was.

mod allow;
mod backup;
mod catalog;
mod chunks;
mod compat;
mod error;
mod export;
mod import;
mod manifest;
mod output_file;
mod pipe;
mod progress;
mod script;
mod transfer;
mod verify;

pub use backup::{archive_major_version, backup, backup_file, backup_to, restore, restore_file};
pub use compat::SkippedSetting;
pub use error::{MigrateError, Result};
pub use export::{ExportOptions, export};
pub use import::{ImportOptions, ImportReport, import};
pub use manifest::{
    END_PREFIX, EndMarker, MANIFEST_FORMAT, Manifest, SchemaObjects, SequenceState, TableSummary,
};
pub use output_file::OutputFile;
pub use progress::{NoProgress, Progress};
pub use transfer::{Transfer, transfer};
pub use verify::{Verification, verify, verify_spec};
