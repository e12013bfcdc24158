//! In-process advisory locks.
//!
//! Inside one PGlite backend `pg_advisory_lock` succeeds for every logical
//! session, so it excludes nobody. This table gives the same semantics as
//! PostgreSQL's session-level advisory locks (re-entrant per session,
//! exclusive across sessions) among the sessions of this process, which are
//! the only ones that can reach the data directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use db_core::{AdvisoryLock, Error, Result};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Identifies a logical session (a client, or a pool-level lock guard).
pub(crate) type SessionId = u64;

#[derive(Default)]
pub(crate) struct LockTable {
    held: Mutex<HashMap<i64, (SessionId, u32)>>,
    /// One wake-up per key somebody waits for: a release wakes the waiters
    /// of its own keys only.
    waiters: Mutex<HashMap<i64, Arc<Notify>>>,
}

impl LockTable {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (SessionId, u32)>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn try_lock(&self, key: i64, session: SessionId) -> bool {
        let mut held = self.held();
        match held.get_mut(&key) {
            Some((owner, count)) if *owner == session => {
                *count += 1;
                true
            }
            Some(_) => false,
            None => {
                held.insert(key, (session, 1));
                true
            }
        }
    }

    pub(crate) async fn lock(&self, key: i64, session: SessionId, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let notify = Arc::clone(self.waiters().entry(key).or_default());
        let outcome = loop {
            let released = notify.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.try_lock(key, session) {
                break Ok(());
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                break Err(Error::LockTimeout { key, timeout });
            }
        };
        // The last waiter of a key removes its wake-up.
        let mut waiters = self.waiters();
        if Arc::strong_count(&notify) == 2 {
            waiters.remove(&key);
        }
        outcome
    }

    fn wake(&self, keys: &[i64]) {
        let waiters = self.waiters();
        for key in keys {
            if let Some(notify) = waiters.get(key) {
                notify.notify_waiters();
            }
        }
    }

    pub(crate) fn unlock(&self, key: i64, session: SessionId) -> bool {
        let mut held = self.held();
        let (released, freed) = match held.get_mut(&key) {
            Some((owner, count)) if *owner == session => {
                *count -= 1;
                let freed = *count == 0;
                if freed {
                    held.remove(&key);
                }
                (true, freed)
            }
            _ => (false, false),
        };
        drop(held);
        if freed {
            self.wake(&[key]);
        }
        released
    }

    pub(crate) fn release_all(&self, session: SessionId) {
        let mut held = self.held();
        let freed: Vec<i64> = held
            .iter()
            .filter(|(_, (owner, _))| *owner == session)
            .map(|(key, _)| *key)
            .collect();
        for key in &freed {
            held.remove(key);
        }
        drop(held);
        if !freed.is_empty() {
            self.wake(&freed);
        }
    }
}

/// A pool-level advisory lock on the embedded backend. It does not hold the
/// backend itself, so other sessions keep working while it is held.
pub struct PgliteLock {
    table: Arc<LockTable>,
    key: i64,
    session: SessionId,
}

impl std::fmt::Debug for PgliteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgliteLock")
            .field("key", &self.key)
            .finish()
    }
}

impl PgliteLock {
    pub(crate) fn new(table: Arc<LockTable>, key: i64, session: SessionId) -> Self {
        PgliteLock {
            table,
            key,
            session,
        }
    }
}

impl AdvisoryLock for PgliteLock {
    fn key(&self) -> i64 {
        self.key
    }

    async fn unlock(self) -> Result<()> {
        // Dropping releases it.
        Ok(())
    }
}

impl Drop for PgliteLock {
    fn drop(&mut self) {
        self.table.release_all(self.session);
    }
}
