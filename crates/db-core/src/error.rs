//! The one error type of the database layer.

use std::fmt;
use std::time::Duration;

use crate::codec::CodecError;
use crate::config::ConfigError;
use crate::convert::FromValueError;
use crate::copy::CopyDirection;
use crate::sqlstate::SqlState;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a dependency, kept as the `source()` of an [`Error`].
pub type BoxDynError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to a database through this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server reported an error; SQLSTATE and every field are kept.
    #[error(transparent)]
    Database(Box<DbError>),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Waiting for a session timed out.
    #[error("timed out after {waited:?} waiting to {phase}{}", holder_suffix(.holder))]
    PoolTimedOut {
        /// What was being waited for.
        phase: TimeoutPhase,
        /// How long.
        waited: Duration,
        /// Where the embedded backend is held, when known.
        holder: Option<String>,
        /// The last connection error, when connecting was what failed.
        #[source]
        source: Option<BoxDynError>,
    },
    /// The calling task already holds the embedded backend and asked for another
    /// session, which could never be granted.
    #[error(
        "would deadlock: this task already holds the embedded database session acquired at {held_at}; \
         use that session (or its transaction) instead of the pool"
    )]
    WouldDeadlock {
        /// `file:line:column` of the acquire that holds the backend.
        held_at: String,
    },
    /// The pool or backend was closed.
    #[error("the database pool is closed")]
    Closed,
    /// `query_one` found no row.
    #[error("query returned no rows where exactly one was expected")]
    RowNotFound,
    /// `query_one` / `query_opt` found more than one row.
    #[error("query returned {0} rows where at most one was expected")]
    TooManyRows(usize),
    /// A column name that the row does not have.
    #[error("no column named {0:?} in the result")]
    ColumnNotFound(String),
    /// A column position past the end of the row.
    #[error("column index {index} is out of range for a row of {len} columns")]
    ColumnIndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The number of columns.
        len: usize,
    },
    /// A row was read as a tuple (or a scalar) of another number of
    /// columns than the result has.
    #[error(
        "the result has {found} column{} where {expected} {} expected (one per tuple element)",
        if *.found == 1 { "" } else { "s" },
        if *.expected == 1 { "was" } else { "were" }
    )]
    ColumnCount {
        /// The number of columns asked for.
        expected: usize,
        /// The number of columns of the result.
        found: usize,
    },
    /// A column value did not convert to the requested Rust type.
    #[error("column {column:?}: {source}")]
    ColumnDecode {
        /// The column name.
        column: String,
        /// Why.
        #[source]
        source: FromValueError,
    },
    /// A result value could not be decoded from the wire.
    #[error("decoding column {column:?}: {source}")]
    Decode {
        /// The column name.
        column: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// A parameter could not be encoded.
    #[error("encoding parameter ${position}: {source}")]
    Encode {
        /// 1-based parameter position.
        position: usize,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// A transaction guard can no longer be used: its transaction ended
    /// without it, for the reason given. Nothing run after that point
    /// through the guard reached the server.
    #[error("the transaction is gone: {0}")]
    TransactionLost(TransactionLoss),
    /// `commit()` found the transaction (or savepoint) failed: an earlier
    /// statement's error had aborted it, so the server could only roll it
    /// back, and did. Nothing of it was committed; an enclosing transaction
    /// goes on.
    #[error(
        "the {} had already failed (an earlier statement's error aborted it) and was rolled \
         back instead of committed",
        if *.depth > 1 { "savepoint" } else { "transaction" }
    )]
    TransactionAborted {
        /// The level that was rolled back: 1 for the transaction, 2 and up
        /// for savepoints.
        depth: u32,
    },
    /// A statement on the embedded backend outlived the configured
    /// `statement_timeout`. That backend cannot interrupt a running
    /// statement, so the caller stopped waiting while the statement runs on
    /// to its end: the transaction it is in is then aborted, as a server's
    /// timeout would (`commit()` gives [`Error::TransactionAborted`]); an
    /// autocommit statement's effects are kept if it completes. Later
    /// statements wait for it.
    #[error(
        "the statement did not finish within the statement timeout of {timeout:?}; the embedded \
         database cannot cancel it, so it runs on (the transaction it is in is aborted after it; \
         an autocommit statement's effects are kept if it completes)"
    )]
    StatementTimeout {
        /// The configured `statement_timeout`.
        timeout: Duration,
    },
    /// The embedded backend crashed running this statement (a WebAssembly
    /// trap, such as its call stack running out before PostgreSQL's own
    /// `max_stack_depth` check). It was stopped without running anything
    /// more inside it and reopened from its files through WAL recovery, as
    /// after `kill -9`: nothing of the open transaction was kept, what was
    /// committed before is there, and the pool goes on serving.
    #[error(
        "the embedded database crashed running this statement{}; the open transaction, if any, \
         was rolled back ({detail})",
        match .reopen_error {
            None => " and was restarted from its files".to_owned(),
            Some(e) => format!(
                "; reopening it failed ({e}), and the next statement tries again"
            ),
        }
    )]
    BackendCrashed {
        /// What the WebAssembly runtime reported.
        detail: String,
        /// Why reopening the database after the crash failed, if it did.
        reopen_error: Option<String>,
    },
    /// This session was lost in an earlier crash of the embedded backend
    /// ([`Error::BackendCrashed`]): its transaction, settings (`SET ROLE`,
    /// `search_path`, ...), temporary objects and advisory locks are gone, so
    /// nothing more runs on it, as on a server connection whose backend
    /// died. Release it and acquire another.
    #[error(
        "this session was lost when the embedded database crashed (its transaction, settings, \
         temporary objects and locks are gone); release it and acquire another"
    )]
    SessionLost,
    /// `begin()` on a session where SQL text (`BEGIN`, `START TRANSACTION`)
    /// opened a transaction that no guard tracks: end it with SQL first.
    #[error(
        "a transaction opened by SQL text is open on this session; end it with COMMIT or \
         ROLLBACK before starting a guarded one"
    )]
    UntrackedTransaction,
    /// `begin_with` inside a transaction asked for transaction modes
    /// (isolation level, `READ ONLY`, `DEFERRABLE`), which belong to the
    /// whole transaction: a savepoint cannot take them. Nothing was sent.
    #[error(
        "transaction options (isolation level, read only, deferrable) apply to a whole \
         transaction, and this begin_with would start a savepoint (depth {depth}) inside one; \
         pass them to the begin_with that starts the transaction"
    )]
    SavepointOptions {
        /// The level the savepoint would have had (2 and up).
        depth: u32,
    },
    /// An advisory lock was not acquired in time.
    #[error("advisory lock {key} was not acquired within {timeout:?}")]
    LockTimeout {
        /// The lock key.
        key: i64,
        /// How long was waited.
        timeout: Duration,
    },
    /// An embedded data directory is in use by another process.
    #[error("the embedded data directory {path} is in use by {}", holder_pid(.pid))]
    DataDirLocked {
        /// The directory.
        path: String,
        /// The PID holding it, when it could be read.
        pid: Option<u32>,
    },
    /// The embedded backend's runtime (about 100 MB, unpacked from the
    /// binary on first use) cannot be written to its cache directory.
    #[error(
        "cannot unpack the embedded PostgreSQL runtime into {path}: {problem} \
         (set XDG_CACHE_HOME to a writable directory)"
    )]
    RuntimeCacheUnavailable {
        /// The cache directory.
        path: String,
        /// What is wrong with it.
        problem: StorageProblem,
    },
    /// An embedded data directory cannot be created or written.
    #[error("the embedded data directory {path} is unusable: {problem}")]
    DataDirUnwritable {
        /// The directory.
        path: String,
        /// What is wrong with it.
        problem: StorageProblem,
    },
    /// An embedded data directory was written by a version this build cannot
    /// read.
    #[error(
        "the embedded data directory {path} was written by {found}; this build supports {supported}"
    )]
    DataDirIncompatible {
        /// The directory.
        path: String,
        /// What wrote it, for example `PostgreSQL 16`.
        found: String,
        /// What this build reads, for example `PostgreSQL 17`.
        supported: String,
    },
    /// A directory given as the embedded data directory holds something
    /// other than an embedded cluster (a server's PGDATA, a home directory):
    /// it is not touched.
    #[error(
        "{path} is not an embedded cluster of cocalc-db: it holds {found}; \
         refusing to use it (give an empty or new directory)"
    )]
    DataDirForeign {
        /// The directory.
        path: String,
        /// What was found, for example `other files (a, b and 3 more)`.
        found: String,
    },
    /// `copy_in` was given something other than one `COPY ... FROM STDIN`
    /// statement, or `copy_out` other than one `COPY ... TO STDOUT`; nothing
    /// was sent to the server.
    #[error("{direction} needs one `{}` statement; got {statement:?}", direction.statement_shape())]
    NotCopy {
        /// The method that was called.
        direction: CopyDirection,
        /// The statement it was given.
        statement: String,
    },
    /// A statement of [`Config::setup_sql`](crate::Config::setup_sql)
    /// failed when a session was opened or reset.
    #[error("session setup statement {position} ({statement}) failed: {source}")]
    SessionSetup {
        /// Its place in the list, from 1.
        position: usize,
        /// Its first words (no literals: setup may hold secrets).
        statement: String,
        /// Why it failed; the server's error keeps its SQLSTATE.
        #[source]
        source: Box<Error>,
    },
    /// The server sent something this layer does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A failure in the backend library or the connection, outside SQL.
    #[error("{context}: {source}")]
    Backend {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxDynError,
    },
}

fn holder_suffix(holder: &Option<String>) -> String {
    holder
        .as_ref()
        .map(|h| format!("; the embedded database session is held at {h}"))
        .unwrap_or_default()
}

fn holder_pid(pid: &Option<u32>) -> String {
    pid.map_or_else(|| "another process".to_owned(), |p| format!("process {p}"))
}

impl Error {
    /// Wraps a dependency's error with what was being done.
    pub fn backend(context: impl Into<String>, source: impl Into<BoxDynError>) -> Self {
        Error::Backend {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A failure of [`Config::setup_sql`](crate::Config::setup_sql)'s entry
    /// at `index` (from 0), `sql`, named by its first words.
    pub fn session_setup(index: usize, sql: &str, source: Error) -> Self {
        Error::SessionSetup {
            position: index + 1,
            statement: crate::lex::summary(sql),
            source: Box::new(source),
        }
    }

    /// The [`Error::SessionSetup`] of an entry that left a transaction open:
    /// every later statement of the session would be part of it, and rolled
    /// back when the session is released.
    pub fn session_setup_left_transaction(index: usize, sql: &str) -> Self {
        Error::session_setup(
            index,
            sql,
            Error::backend(
                "it left a transaction open",
                "setup may not open a transaction: the session's writes would be rolled back \
                 when it is released",
            ),
        )
    }

    /// Whether a statement was stopped by `statement_timeout`: the server's
    /// `57014` (which a cancel request also gives) or, on the embedded
    /// backend, [`Error::StatementTimeout`].
    pub fn is_statement_timeout(&self) -> bool {
        matches!(self, Error::StatementTimeout { .. })
            || self.code() == Some(&SqlState::QUERY_CANCELED)
    }

    /// The server error, if this is one.
    pub fn as_db_error(&self) -> Option<&DbError> {
        match self {
            Error::Database(e) => Some(e),
            Error::SessionSetup { source, .. } => source.as_db_error(),
            _ => None,
        }
    }

    /// The SQLSTATE of a server error (tokio-postgres's and sqlx's name for
    /// it); `None` for errors that are not the server's.
    pub fn code(&self) -> Option<&SqlState> {
        self.as_db_error().map(|e| &e.code)
    }

    /// Whether this is a unique violation (`23505`): a row with the same
    /// key exists. [`DbError::constraint`] names the index.
    pub fn is_unique_violation(&self) -> bool {
        self.code() == Some(&SqlState::UNIQUE_VIOLATION)
    }

    /// Whether this is a foreign key violation (`23503`): a referenced row
    /// is missing, or a row being deleted or changed is still referenced.
    /// [`DbError::constraint`] names the foreign key.
    pub fn is_foreign_key_violation(&self) -> bool {
        self.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
    }

    /// Whether this is a check violation (`23514`): a `CHECK` constraint of
    /// a table (named by [`DbError::constraint`]) or of a domain refused a
    /// value.
    pub fn is_check_violation(&self) -> bool {
        self.code() == Some(&SqlState::CHECK_VIOLATION)
    }

    /// Whether this is a not-null violation (`23502`): NULL in a `NOT NULL`
    /// column, named by [`DbError::column`].
    pub fn is_not_null_violation(&self) -> bool {
        self.code() == Some(&SqlState::NOT_NULL_VIOLATION)
    }

    /// Whether this is a serialization failure (`40001`): a `REPEATABLE
    /// READ` or `SERIALIZABLE` transaction conflicted with a concurrent one
    /// and was aborted. See [`Error::is_retryable`].
    pub fn is_serialization_failure(&self) -> bool {
        self.code() == Some(&SqlState::SERIALIZATION_FAILURE)
    }

    /// Whether the server broke a deadlock by aborting this transaction
    /// (`40P01`). See [`Error::is_retryable`].
    pub fn is_deadlock(&self) -> bool {
        self.code() == Some(&SqlState::DEADLOCK_DETECTED)
    }

    /// Whether the transaction lost a conflict with a concurrent one and
    /// running it again from its start may succeed: a serialization failure
    /// (`40001`) or a deadlock (`40P01`). Nothing of the transaction was
    /// kept; roll it back (or drop its guard) and retry the whole of it,
    /// not the statement.
    pub fn is_retryable(&self) -> bool {
        self.is_serialization_failure() || self.is_deadlock()
    }

    /// Whether the connection or pool is gone.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::Database(Box::new(e))
    }
}

/// Why a directory cannot be written, from the operating system's error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageProblem {
    /// The file system is mounted read-only.
    ReadOnly,
    /// The permissions forbid writing.
    PermissionDenied,
    /// No space left on the device, or the quota is exhausted.
    DiskFull,
    /// A component of the path is a file, not a directory.
    NotADirectory,
    /// Anything else, as the operating system described it.
    Other(String),
}

impl StorageProblem {
    /// Classifies an I/O error.
    pub fn from_io(e: &std::io::Error) -> StorageProblem {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::ReadOnlyFilesystem => StorageProblem::ReadOnly,
            ErrorKind::PermissionDenied => StorageProblem::PermissionDenied,
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StorageProblem::DiskFull,
            ErrorKind::NotADirectory => StorageProblem::NotADirectory,
            _ => StorageProblem::Other(e.to_string()),
        }
    }
}

impl fmt::Display for StorageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageProblem::ReadOnly => f.write_str("not writable (read-only file system)"),
            StorageProblem::PermissionDenied => f.write_str("not writable (permission denied)"),
            StorageProblem::DiskFull => f.write_str("not writable (disk full)"),
            StorageProblem::NotADirectory => f.write_str("not a directory"),
            StorageProblem::Other(e) => write!(f, "not writable ({e})"),
        }
    }
}

/// Why a [`Transaction`](crate::Transaction) guard lost its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionLoss {
    /// An operation on it was cancelled midway and the session had to roll
    /// the whole transaction back.
    Cancelled,
    /// A statement run on it (`COMMIT`, `ROLLBACK`, ... as SQL text) ended
    /// the transaction behind the guard's back.
    EndedBySql,
    /// The embedded backend crashed ([`Error::BackendCrashed`]) and was
    /// restarted: the transaction was rolled back with it.
    BackendCrashed,
}

impl fmt::Display for TransactionLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransactionLoss::Cancelled => {
                "an operation on it was cancelled midway and the session rolled it back"
            }
            TransactionLoss::BackendCrashed => {
                "the embedded database crashed and was restarted, which rolled it back"
            }
            TransactionLoss::EndedBySql => {
                "a statement run on it (COMMIT, ROLLBACK, ... as SQL text) ended it outside its guard"
            }
        })
    }
}

/// Which wait timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Waiting for a free session.
    Acquire,
    /// Opening a new connection.
    Connect,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Acquire => "acquire a session",
            TimeoutPhase::Connect => "connect",
        })
    }
}

/// An error reported by the server, with every field it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// The SQLSTATE.
    pub code: SqlState,
    /// The primary message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
    /// Hint, if any.
    pub hint: Option<String>,
    /// 1-based character position in the statement, if any.
    pub position: Option<u32>,
    /// Schema name, if any.
    pub schema: Option<String>,
    /// Table name, if any.
    pub table: Option<String>,
    /// Column name, if any.
    pub column: Option<String>,
    /// Constraint name, if any.
    pub constraint: Option<String>,
    /// Data type name, if any.
    pub data_type: Option<String>,
    /// Where it happened (`W`): the call stack of functions and triggers,
    /// one per line, innermost first; the only pointer into a failing
    /// trigger or PL/pgSQL function.
    pub where_: Option<String>,
    /// 1-based position in an internally generated query (`p`), if any.
    pub internal_position: Option<u32>,
    /// That internally generated query (`q`), if any.
    pub internal_query: Option<String>,
    /// PostgreSQL's source file that reported it (`F`).
    pub file: Option<String>,
    /// PostgreSQL's source line that reported it (`L`).
    pub line: Option<u32>,
    /// PostgreSQL's source routine that reported it (`R`); unlike the
    /// message it is not translated, so it identifies a condition whatever
    /// the server's language.
    pub routine: Option<String>,
}

impl DbError {
    /// Builds an error from the fields of a protocol `ErrorResponse`, given
    /// as `(field type byte, value)` pairs.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (u8, &'a str)>) -> Self {
        let mut e = DbError {
            severity: String::new(),
            code: SqlState::from_code(""),
            message: String::new(),
            detail: None,
            hint: None,
            position: None,
            schema: None,
            table: None,
            column: None,
            constraint: None,
            data_type: None,
            where_: None,
            internal_position: None,
            internal_query: None,
            file: None,
            line: None,
            routine: None,
        };
        for (kind, value) in fields {
            let v = || Some(value.to_owned());
            match kind {
                b'V' => e.severity = value.to_owned(),
                b'S' if e.severity.is_empty() => e.severity = value.to_owned(),
                b'C' => e.code = SqlState::from_code(value),
                b'M' => e.message = value.to_owned(),
                b'D' => e.detail = v(),
                b'H' => e.hint = v(),
                b'P' => e.position = value.parse().ok(),
                b's' => e.schema = v(),
                b't' => e.table = v(),
                b'c' => e.column = v(),
                b'n' => e.constraint = v(),
                b'd' => e.data_type = v(),
                b'W' => e.where_ = v(),
                b'p' => e.internal_position = value.parse().ok(),
                b'q' => e.internal_query = v(),
                b'F' => e.file = v(),
                b'L' => e.line = value.parse().ok(),
                b'R' => e.routine = v(),
                _ => {}
            }
        }
        e
    }
}

impl DbError {
    /// Whether a cached prepared statement was refused because DDL changed
    /// its result type since it was prepared (`0A000` from PostgreSQL's
    /// `RevalidateCachedQuery`, "cached plan must not change result type").
    /// Nothing ran; preparing it again succeeds. Recognised by the routine,
    /// which servers do not translate.
    pub fn is_stale_cached_plan(&self) -> bool {
        self.code == SqlState::FEATURE_NOT_SUPPORTED
            && self.routine.as_deref() == Some("RevalidateCachedQuery")
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity,
            self.code.code(),
            self.message
        )?;
        if let Some(detail) = &self.detail {
            write!(f, " (DETAIL: {detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (HINT: {hint})")?;
        }
        if let Some(place) = &self.where_ {
            write!(f, " (CONTEXT: {})", place.replace('\n', "; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_problems_name_the_cause() {
        // ENOSPC, EROFS, EACCES on Linux.
        let enospc = std::io::Error::from_raw_os_error(28);
        assert_eq!(StorageProblem::from_io(&enospc), StorageProblem::DiskFull);
        assert_eq!(
            StorageProblem::DiskFull.to_string(),
            "not writable (disk full)"
        );
        let erofs = std::io::Error::from_raw_os_error(30);
        assert_eq!(StorageProblem::from_io(&erofs), StorageProblem::ReadOnly);
        let eacces = std::io::Error::from_raw_os_error(13);
        assert_eq!(
            StorageProblem::from_io(&eacces),
            StorageProblem::PermissionDenied
        );
        let err = Error::RuntimeCacheUnavailable {
            path: "/c".into(),
            problem: StorageProblem::DiskFull,
        };
        assert!(!err.to_string().contains('\n'));
    }
}
