//! The core of the hub's database layer: the traits every backend implements
//! ([`Pool`], [`Client`], [`Executor`]), transactions as guards, the value and
//! row model, errors and configuration.
//!
//! This crate holds no backend code. `db-postgres` implements the traits on a
//! PostgreSQL server, `db-pglite` on embedded PGlite, and the `db` facade
//! picks one from [`Config`]. What only those backend crates need (the
//! [`backend::Session`] hooks of a client, the session bookkeeping, span
//! helpers) is in [`backend`], not at the crate root.
//!
//! # Features
//!
//! | feature | adds |
//! |---|---|
//! | `rust_decimal` | `numeric` as `rust_decimal::Decimal` (parameter and column type) |
//! | `time` | `time::Date`, `Time`, `PrimitiveDateTime`, `OffsetDateTime` as `date`, `time`, `timestamp`, `timestamptz`, also inside [`Infinite`] |
//!
//! Without features, `chrono` covers dates and times, [`Infinite`] their
//! infinities, and `chrono::TimeDelta` converts to and from [`Interval`].

pub mod backend;
mod codec;
mod config;
mod convert;
#[cfg(feature = "rust_decimal")]
mod convert_decimal;
#[cfg(feature = "time")]
mod convert_time;
mod copy;
mod error;
mod executor;
mod ident;
mod json;
pub mod lex;
mod notify;
mod row;
mod sqlstate;
mod stats;
mod stream;
mod trace;
mod transaction;
mod tx_options;
mod types;
mod value;

pub use codec::{CodecError, decode, encode};
pub use config::{
    BackendKind, Config, ConfigError, DataDir, InvalidDuration, PgliteConfig, PostgresConfig,
    SessionTimeouts, connect_timeout_secs, parse_connect_timeout, parse_duration, redact_url,
    split_connect_timeout,
};
pub use convert::{FromValue, FromValueError, SqlType};
pub use copy::{CopyDirection, check_copy_statement};
pub use db_macros::FromRow;
pub use error::{
    BoxDynError, DbError, Error, Result, StorageProblem, TimeoutPhase, TransactionLoss,
};
pub use executor::{AdvisoryLock, BoxFuture, Client, Executor, Pool, single};
pub use ident::quote_ident;
pub use json::Json;
pub use notify::{ListenEvent, Notification, NotificationStream};
pub use row::{Column, ColumnIndex, FromRow, QueryResult, Row};
pub use sqlstate::SqlState;
pub use stats::{AcquireStats, PoolStats};
pub use stream::RowStream;
pub use transaction::Transaction;
pub use tx_options::{IsolationLevel, TxOptions};
pub use types::Type;
pub use value::{
    Array, BitString, Inet, Infinite, Interval, IntervalError, Numeric, ParseNumericError, Value,
};

/// The start of the `COMMENT ON TABLE` text by which a component (the
/// changefeed: `cocalc-component:changefeed`) declares a table its own.
/// Schema tools leave such tables out of their view: schema-sync neither
/// plans changes to them nor reports them as drift.
pub const COMPONENT_MARK: &str = "cocalc-component:";
