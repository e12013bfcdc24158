//! Pool-level advisory locks: [`PgAdvisoryLock`].

use std::fmt;

use db_core::{AdvisoryLock, Client, Result};

use crate::client::PgClient;

/// A session-level advisory lock held on a pooled connection of its own;
/// from [`Pool::lock`](db_core::Pool::lock) or
/// [`Pool::try_lock`](db_core::Pool::try_lock) on a [`PgPool`](crate::PgPool).
///
/// The guard keeps its connection checked out until it is released, so each
/// held guard takes one of the pool's `max_connections`: a small pool can be
/// exhausted by guards.
///
/// [`AdvisoryLock::unlock`] runs `pg_advisory_unlock` and returns the
/// connection. Dropping the guard releases the lock too, from a spawned task
/// (`pg_advisory_unlock_all`), or by closing the connection when that is not
/// possible; see [`PgClient`]'s release rules.
pub struct PgAdvisoryLock {
    key: i64,
    client: PgClient,
}

impl fmt::Debug for PgAdvisoryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgAdvisoryLock")
            .field("key", &self.key)
            .finish()
    }
}

impl PgAdvisoryLock {
    /// A guard for `key`, which `client` holds.
    pub(crate) fn new(key: i64, client: PgClient) -> Self {
        PgAdvisoryLock { key, client }
    }
}

impl AdvisoryLock for PgAdvisoryLock {
    fn key(&self) -> i64 {
        self.key
    }

    async fn unlock(mut self) -> Result<()> {
        let released = self.client.unlock(self.key).await?;
        if !released {
            tracing::warn!(
                target: "db::lock",
                key = self.key,
                "advisory lock was no longer held by its guard's session"
            );
        }
        Ok(())
    }
}
