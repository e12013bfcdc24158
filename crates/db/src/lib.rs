//! The hub's database entry point: [`AnyPool`] opens PostgreSQL or embedded
//! PGlite from a [`Config`] and dispatches by `match` on a two-variant enum,
//! with no boxing or dynamic dispatch per query. The workspace README follows.
#![doc = include_str!("../../../README.md")]

mod any;
pub mod embedded;

pub use any::{AnyClient, AnyLock, AnyPool};
pub use db_core::*;
pub use db_pglite::{PgliteClient, PgliteLock, PglitePool};
pub use db_postgres::{PgAdvisoryLock, PgClient, PgPool};
