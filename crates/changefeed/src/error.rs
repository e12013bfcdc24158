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
    /// No table has this name (as SQL resolves it: `schema.table`, unquoted
    /// parts folded to lower case, an unqualified name by `search_path`).
    #[error("table {0:?} does not exist")]
    NoSuchTable(String),
    /// A feed cannot be enabled on this relation: one of the feed's own
    /// tables, a partitioned table or a partition, or not a table.
    #[error("cannot enable a change feed on {table}: {reason}")]
    Refused {
        /// The table as it was named.
        table: String,
        /// Why, in a few words.
        reason: String,
    },
    /// The subscription's feed ended: it was disabled, its table dropped, or
    /// its columns changed (subscribe again, from a snapshot, to go on). The
    /// subscription's last event was [`Event::End`](crate::Event::End) or
    /// [`Event::SchemaChanged`](crate::Event::SchemaChanged).
    #[error("the change feed on {table} ended: {reason}")]
    Ended {
        /// The table (its name when the feed ended).
        table: String,
        /// Why.
        reason: EndReason,
    },
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

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// The feed was disabled.
    Disabled,
    /// The table was dropped; the feed is gone with it.
    Dropped,
    /// Columns of the table were added, dropped or changed type (or its
    /// primary key changed): the subscriber must resync.
    SchemaChanged,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndReason::Disabled => "the feed was disabled",
            EndReason::Dropped => "the table was dropped",
            EndReason::SchemaChanged => {
                "the table's columns or key changed, or it was rewritten; resync from a snapshot"
            }
        })
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
