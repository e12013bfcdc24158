//! The error type of export, import, verification, backup and restore.

use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = MigrateError> = std::result::Result<T, E>;

/// What went wrong moving data in or out of a database, and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A database operation failed; `context` says which (the SQLSTATE is
    /// kept in the source).
    #[error("{context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// The database error.
        #[source]
        source: db_core::Error,
    },
    /// A statement of the export script failed on the target.
    #[error("line {line} of the export: {source} (statement: {statement})")]
    Statement {
        /// 1-based line where the statement starts.
        line: u64,
        /// The statement, shortened.
        statement: String,
        /// The database error.
        #[source]
        source: db_core::Error,
    },
    /// A statement of the export is not one an export contains, so it was
    /// not run (and the import changed nothing).
    #[error("line {line} of the export: refused: {reason} (statement: {statement})")]
    Refused {
        /// 1-based line where the statement starts.
        line: u64,
        /// The statement, shortened.
        statement: String,
        /// Why it is refused.
        reason: String,
    },
    /// Reading a table for an export went wrong: a piece of it could not
    /// be continued, or the pieces did not add up to the table's rows.
    #[error("exporting {table}: {message}")]
    Export {
        /// Qualified table name.
        table: String,
        /// What went wrong.
        message: String,
    },
    /// Reading or writing a file or stream failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The export script cannot be read.
    #[error("line {line} of the export: {message}")]
    Script {
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The manifest line of the export is not valid.
    #[error("line {line} of the export: invalid manifest: {source}")]
    Manifest {
        /// 1-based line.
        line: u64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The export has no manifest line before its first statement, so
    /// nothing it holds can be verified.
    #[error(
        "the export has no manifest (a `-- cocalc-db-manifest:` line before its first statement, \
         line {line}): it was not written by `cocalc-db export`, or was edited; \
         to load hand-made SQL, import it with --unverified"
    )]
    NoManifest {
        /// 1-based line of the first statement.
        line: u64,
    },
    /// The manifest is of a format that does not cover everything an
    /// import verifies.
    #[error(
        "the export's manifest is format {format}, but this version verifies format {expected}; \
         export again with this version, or import with --unverified"
    )]
    ManifestFormat {
        /// The manifest's format.
        format: u32,
        /// The format this version writes.
        expected: u32,
    },
    /// The export ends without its end marker: it was cut short.
    #[error(
        "the export is incomplete: its end marker (a last `-- cocalc-db-end:` line) is missing; \
         the file stops at line {line}, {place}; import with --unverified only if that is intended"
    )]
    Incomplete {
        /// The last line read.
        line: u64,
        /// Where the file stops and what arrived (for example "inside the
        /// COPY data of \"public\".\"items\", after the data of 2 of the manifest's 6 tables").
        place: String,
    },
    /// The text before the end marker is not what the marker describes.
    #[error(
        "line {line} of the export: the end marker says {} bytes with SHA-256 {}, \
         but the {actual_bytes} bytes before it have SHA-256 {actual_sha256}: \
         the file was altered or cut and joined",
        .expected.bytes, .expected.sha256
    )]
    Altered {
        /// 1-based line of the end marker.
        line: u64,
        /// What the marker says.
        expected: crate::manifest::EndMarker,
        /// Bytes before the marker.
        actual_bytes: u64,
        /// Their SHA-256.
        actual_sha256: String,
    },
    /// The schema's objects of one kind differ from the manifest's.
    #[error(
        "schema: expected {expected} {kind}, found {found}{}{}",
        names("; missing", .missing), names("; not in the export", .unexpected)
    )]
    SchemaMismatch {
        /// The kind (`indexes`, `constraints`, ...).
        kind: String,
        /// How many the manifest lists.
        expected: usize,
        /// How many the target holds (of those the import created).
        found: usize,
        /// Names in the manifest the target lacks (the first few).
        missing: Vec<String>,
        /// Names on the target the manifest lacks (the first few).
        unexpected: Vec<String>,
    },
    /// The target already holds tables and the import was not forced.
    #[error(
        "the target already holds {} table(s) ({}); import only into an empty database, or force it",
        .tables.len(), list(.tables)
    )]
    TargetNotEmpty {
        /// Qualified names of the tables found (at most a few).
        tables: Vec<String>,
    },
    /// A table's row count or content checksum differs from the source's.
    #[error(
        "table {table}: expected {expected_rows} rows with checksum {expected_checksum}, \
         found {actual_rows} rows with checksum {actual_checksum}"
    )]
    TableMismatch {
        /// Qualified table name.
        table: String,
        /// Rows in the source.
        expected_rows: i64,
        /// Checksum in the source.
        expected_checksum: String,
        /// Rows in the target.
        actual_rows: i64,
        /// Checksum in the target.
        actual_checksum: String,
    },
    /// A table of the source is missing on the target.
    #[error("table {table} of the source is missing on the target")]
    MissingTable {
        /// Qualified table name.
        table: String,
    },
    /// A sequence's state differs from the source's, or would hand out a
    /// value its column already holds.
    #[error("sequence {sequence}: {problem}")]
    SequenceMismatch {
        /// Qualified sequence name.
        sequence: String,
        /// What is wrong.
        problem: String,
    },
    /// After the import, the schema does not match the given spec.
    #[error("the schema plan for the spec is not empty after the import:\n{plan}")]
    SchemaDrift {
        /// The plan, as text.
        plan: String,
    },
    /// Schema sync failed while checking the spec.
    #[error("checking the spec: {0}")]
    Spec(#[from] schema_sync::SyncError),
    /// A physical archive is not usable.
    #[error("the archive is damaged or not a data-directory backup: {0}")]
    Archive(String),
    /// A physical archive is of another PostgreSQL major version.
    #[error(
        "the archive holds a PostgreSQL {archive} data directory, but the embedded database is PostgreSQL {bundled}"
    )]
    VersionMismatch {
        /// The archive's `PG_VERSION`.
        archive: String,
        /// The bundled major version.
        bundled: u32,
    },
    /// Restore refused to overwrite a data directory that holds files.
    #[error("{} is not empty; restore only into an empty directory, or force it", .0.display())]
    DirectoryNotEmpty(PathBuf),
    /// An output path exists and is not a regular file, so it is not
    /// replaced.
    #[error(
        "{} is {kind}; write to a regular file (or to standard output with --out -)",
        .path.display()
    )]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is (`a FIFO`, `a device`, `a symbolic link`, ...).
        kind: &'static str,
    },
    /// A backup refused to overwrite an existing file.
    #[error("{} already exists; choose another file, or force it", .0.display())]
    FileExists(PathBuf),
}

fn list(tables: &[String]) -> String {
    tables.join(", ")
}

fn names(label: &str, names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("{label}: {}", names.join(", "))
    }
}

impl MigrateError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(db_core::Error) -> MigrateError {
        let context = context.into();
        move |source| MigrateError::Database { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> MigrateError {
        let context = context.into();
        move |source| MigrateError::Io { context, source }
    }
}
