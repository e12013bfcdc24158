//! What a pool is doing: [`PoolStats`], and the waiting counts both backends
//! keep the same way ([`AcquireStats`]).

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::Instrument;

/// A pool's state at one moment, from [`Pool::stats`](crate::Pool::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Sessions open: connections on a server; 1 on the embedded backend,
    /// which has one backend session.
    pub size: u32,
    /// Sessions open and not lent out.
    pub idle: u32,
    /// Sessions lent out (held clients, running statements).
    pub in_use: u32,
    /// Callers waiting for a session now.
    pub waiting: u32,
    /// The longest any caller has waited for a session so far.
    pub longest_wait: Duration,
}

/// The waiters of a pool and the longest wait seen, kept by the backends
/// around their acquire.
#[derive(Debug, Default)]
pub struct AcquireStats {
    waiting: AtomicU32,
    longest_nanos: AtomicU64,
}

/// Counts a waiter out however its wait ends (cancelled included).
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AcquireStats {
    /// Runs `acquire` as one wait for a session: counted while it waits, in a
    /// `db.acquire` span that records how long it waited (`wait_us`).
    pub async fn track<T>(&self, acquire: impl Future<Output = T>) -> T {
        let span = tracing::debug_span!("db.acquire", wait_us = tracing::field::Empty);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&self.waiting);
        let started = Instant::now();
        let out = acquire.instrument(span.clone()).await;
        drop(waiting);
        let waited = started.elapsed();
        span.record(
            "wait_us",
            u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
        );
        self.longest_nanos.fetch_max(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        out
    }

    /// Callers waiting now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The longest wait so far.
    pub fn longest_wait(&self) -> Duration {
        Duration::from_nanos(self.longest_nanos.load(Ordering::Relaxed))
    }

    /// [`PoolStats`] from the sessions' counts and these waits.
    pub fn stats(&self, size: u32, idle: u32) -> PoolStats {
        PoolStats {
            size,
            idle: idle.min(size),
            in_use: size.saturating_sub(idle),
            waiting: self.waiting(),
            longest_wait: self.longest_wait(),
        }
    }
}
