//! The errors of this crate.

/// What can go wrong with a feed or a subscription.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The subscriber did not keep up and its buffer filled. Every event up
    /// to and including `last_offset` was delivered; subscribe again with
    /// [`Start::AfterOffset`](crate::Start::AfterOffset)`(last_offset)` to
    /// continue without a gap.
    #[error("the subscriber fell behind; resume after offset {last_offset}")]
    Lagged {
        /// The offset of the last event delivered.
        last_offset: i64,
    },
    /// The change log no longer holds the offsets needed to continue: every
    /// offset before `pruned_before` was pruned. Resynchronise from a
    /// snapshot ([`Start::Snapshot`](crate::Start::Snapshot)).
    #[error(
        "offsets before {pruned_before} were pruned from the change log; resync from a snapshot"
    )]
    ResyncRequired {
        /// The first offset that may still be in the log.
        pruned_before: i64,
    },
    /// No feed is enabled on the table.
    #[error("no change feed is enabled on table {0:?} (enable one first)")]
    NotEnabled(String),
    /// The table does not exist in the feed's schema.
    #[error("table {0:?} does not exist")]
    NoSuchTable(String),
    /// The table has no primary key, which deletes are reported by.
    #[error("table {0:?} has no primary key; a change feed needs one to identify rows")]
    NoPrimaryKey(String),
    /// A filter expression could not be parsed.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// A column named by a filter or a column list is not a column of the
    /// table (names are matched as PostgreSQL matches them: unquoted names
    /// of a filter folded to lower case).
    #[error("column {column:?} does not exist in table {table}")]
    NoSuchColumn {
        /// The table, as the subscription named it.
        table: String,
        /// The column.
        column: String,
    },
    /// A filter's value does not fit its column's type, as in SQL: the
    /// server could not cast the literal to the type, or there is no
    /// operator between them (a number against a text column).
    #[error(
        "filter on column {column:?} ({column_type}): {literal} is not a valid value: {reason}"
    )]
    FilterType {
        /// The column.
        column: String,
        /// The column's type (`format_type` of the catalog).
        column_type: String,
        /// The literal, as the filter writes it.
        literal: String,
        /// Why, in the server's words when it refused the cast.
        reason: String,
        /// The SQLSTATE of the server's error, when it gave one.
        sqlstate: Option<String>,
    },
    /// [`Start::AfterOffset`](crate::Start::AfterOffset) named an offset
    /// the feed has not assigned yet.
    #[error(
        "offset {offset} is beyond the last offset assigned ({head}); resume from an offset a subscription delivered"
    )]
    OffsetAhead {
        /// The offset asked for.
        offset: i64,
        /// The last offset assigned.
        head: i64,
    },
    /// The feed was closed (or its pool was).
    #[error("the change feed is closed")]
    Closed,
    /// A change-log row did not have the expected shape.
    #[error("malformed change-log row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
