//! The hub's database entry point: [`AnyPool`] opens PostgreSQL or embedded
//! PGlite from a [`Config`] and dispatches by `match` on a two-variant enum,
//! with no boxing or dynamic dispatch per query.
//!
//! # Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `postgres` | yes | the PostgreSQL server backend (`db-postgres`, on sqlx): `AnyPool::Postgres`, `PgPool` |
//! | `pglite` | yes | the embedded backend (`db-pglite`, PGlite on the wasmer WebAssembly runtime, the bulk of a build): `AnyPool::Pglite`, `PglitePool`, [`embedded`] |
//! | `rust_decimal`, `time` | no | more column types (see `db_core`) |
//!
//! A server that only ever talks to PostgreSQL builds without the WebAssembly
//! runtime with `db = { ..., default-features = false, features = ["postgres"] }`.
//! Such a build's `AnyPool` has no `Pglite` variant, and
//! [`AnyPool::connect`] with a configuration selecting the embedded backend
//! fails with [`Error::Config`] (`ConfigError::BackendNotBuilt`): "this
//! build has no embedded backend: enable the `pglite` feature of `db`". A
//! build with only `pglite` likewise refuses PostgreSQL. At least one of the
//! two is required.
//!
//! The workspace README follows.
#![doc = include_str!("../../../README.md")]

#[cfg(not(any(feature = "pglite", feature = "postgres")))]
compile_error!(
    "the `db` crate needs a backend: enable its `postgres` or `pglite` feature (both are default)"
);

mod any;
#[cfg(feature = "pglite")]
pub mod embedded;

pub use any::{AnyClient, AnyLock, AnyPool};
pub use db_core::*;
#[cfg(feature = "pglite")]
pub use db_pglite::{PgliteClient, PgliteLock, PglitePool};
#[cfg(feature = "postgres")]
pub use db_postgres::{PgAdvisoryLock, PgClient, PgPool};
