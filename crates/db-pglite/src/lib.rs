//! The hub's database traits on embedded PostgreSQL: PGlite (PostgreSQL 17
//! compiled to WebAssembly) through `pglite-oxide`.
//!
//! One PGlite instance is one PostgreSQL backend session. [`PglitePool`] owns
//! it on a driver thread, speaks the wire protocol to it directly (binary
//! values, cached prepared statements, one round trip per statement), and
//! turns it into many logical sessions that take turns: a held
//! [`PgliteClient`] or an open transaction owns the backend, the others wait
//! in FIFO order, so no statement ever runs inside another session's
//! transaction. Advisory locks are kept in process, because inside one
//! backend PostgreSQL's own would exclude nobody.

mod backup;
mod client;
mod data_dir;
mod driver;
mod handoff;
pub mod health;
mod lock;
mod memory_dir;
pub mod metadata;
mod pool;
mod restore;
mod spare_cpu;
mod wire;

pub use backup::{ArchiveSize, archive_data_dir_to};
pub use client::PgliteClient;
pub use lock::PgliteLock;
pub use pool::PglitePool;
pub use restore::{POSTGRES_MAJOR_VERSION, RestoreError, restore_data_dir};
