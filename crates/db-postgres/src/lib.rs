//! The hub's database layer on a PostgreSQL server: [`db_core`]'s traits
//! implemented with `sqlx`.
//!
//! [`PgPool`] implements [`db_core::Pool`], [`PgClient`] (a held session)
//! implements [`db_core::Client`] and [`db_core::Executor`], and
//! [`PgAdvisoryLock`] is the pool-level advisory lock guard.
//!
//! * Statements are prepared and cached per connection; parameters and
//!   results travel in binary format through [`db_core::encode`] and
//!   [`db_core::decode`], so values are identical on every backend.
//! * Row counts are the server's command tag, `SELECT n` included.
//! * Server errors become [`db_core::Error::Database`] with the SQLSTATE and
//!   every field the server sent.
//! * Advisory locks are real session locks; a session is rolled back and its
//!   locks released before its connection is reused (see [`PgClient`]).
//! * `LISTEN` runs on one connection per pool that is re-established when
//!   lost, after which subscribers get
//!   [`ListenEvent::Reconnected`](db_core::ListenEvent::Reconnected).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use db_core::{Client, Config, Executor, ListenEvent, Pool, params};
//! use db_postgres::PgPool;
//!
//! # async fn demo() -> db_core::Result<()> {
//! let pool = PgPool::connect(&Config::from_env()?).await?;
//!
//! let n: i64 = pool.query_one("SELECT $1::int8 + 1", &params![41_i64]).await?.try_get(0)?;
//! assert_eq!(n, 42);
//!
//! let mut client = pool.acquire().await?;
//! let tx = client.begin().await?;
//! // ... statements on `tx` ...
//! tx.commit().await?;
//!
//! let lock = pool.lock(7, Duration::from_secs(5)).await?;
//! db_core::AdvisoryLock::unlock(lock).await?;
//!
//! let mut changes = pool.listen("changes").await?;
//! pool.execute("SELECT pg_notify('changes', 'hello')", &[]).await?;
//! if let ListenEvent::Notification(n) = changes.recv().await? {
//!     assert_eq!(n.payload, "hello");
//! }
//! pool.close().await;
//! # Ok(())
//! # }
//! ```

mod client;
mod encode;
mod error;
mod listener;
mod lock;
mod pool;

pub use client::PgClient;
pub use lock::PgAdvisoryLock;
pub use pool::PgPool;
