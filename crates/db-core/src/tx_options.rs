//! How a transaction starts: [`TxOptions`] and [`IsolationLevel`].

use std::time::Duration;

/// A transaction isolation level (PostgreSQL's four; `READ COMMITTED` is
/// the server's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// `READ UNCOMMITTED`, which PostgreSQL runs as `READ COMMITTED` (and
    /// reports as `read uncommitted`).
    ReadUncommitted,
    /// `READ COMMITTED`: each statement sees what was committed before it
    /// began.
    ReadCommitted,
    /// `REPEATABLE READ`: every statement sees the snapshot taken by the
    /// first; a write conflicting with a concurrent commit fails with
    /// `40001`.
    RepeatableRead,
    /// `SERIALIZABLE`: as if the transactions ran one after another; one
    /// that cannot be fails with `40001` (at any statement or at commit).
    Serializable,
}

impl IsolationLevel {
    /// The level as SQL writes it (`REPEATABLE READ`).
    pub fn as_sql(self) -> &'static str {
        match self {
            IsolationLevel::ReadUncommitted => "READ UNCOMMITTED",
            IsolationLevel::ReadCommitted => "READ COMMITTED",
            IsolationLevel::RepeatableRead => "REPEATABLE READ",
            IsolationLevel::Serializable => "SERIALIZABLE",
        }
    }
}

/// How a transaction starts: isolation level, access mode, deferrability
/// (each the server's default unless set), and, for
/// [`Pool::transaction_with`](crate::Pool::transaction_with), how many times
/// it may run.
///
/// ```
/// use db_core::{IsolationLevel, TxOptions};
///
/// let report = TxOptions::new()
///     .isolation(IsolationLevel::Serializable)
///     .read_only(true)
///     .deferrable(true);
/// assert_eq!(report.isolation_level(), Some(IsolationLevel::Serializable));
/// assert_eq!(TxOptions::new().max_attempts(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxOptions {
    isolation: Option<IsolationLevel>,
    read_only: Option<bool>,
    deferrable: Option<bool>,
    attempts: u32,
}

impl Default for TxOptions {
    fn default() -> Self {
        TxOptions {
            isolation: None,
            read_only: None,
            deferrable: None,
            attempts: TxOptions::DEFAULT_ATTEMPTS,
        }
    }
}

impl TxOptions {
    /// How many times [`Pool::transaction`](crate::Pool::transaction) runs a
    /// transaction that keeps losing conflicts.
    pub const DEFAULT_ATTEMPTS: u32 = 3;

    /// The server's defaults, and [`TxOptions::DEFAULT_ATTEMPTS`].
    pub fn new() -> TxOptions {
        TxOptions::default()
    }

    /// Sets the isolation level.
    #[must_use]
    pub fn isolation(mut self, level: IsolationLevel) -> TxOptions {
        self.isolation = Some(level);
        self
    }

    /// `READ ONLY` (`true`: writes fail with `25006`) or `READ WRITE`.
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> TxOptions {
        self.read_only = Some(read_only);
        self
    }

    /// `DEFERRABLE` or `NOT DEFERRABLE`. Only a `SERIALIZABLE READ ONLY`
    /// transaction is affected: a deferrable one waits at its start for a
    /// snapshot no concurrent transaction can invalidate, and then never
    /// fails with `40001`.
    #[must_use]
    pub fn deferrable(mut self, deferrable: bool) -> TxOptions {
        self.deferrable = Some(deferrable);
        self
    }

    /// How many times [`Pool::transaction_with`](crate::Pool::transaction_with)
    /// may run the transaction in all (at least once; 0 counts as 1).
    /// Starting a transaction with `begin_with` runs it once and ignores
    /// this.
    #[must_use]
    pub fn attempts(mut self, attempts: u32) -> TxOptions {
        self.attempts = attempts.max(1);
        self
    }

    /// The isolation level set, if any.
    pub fn isolation_level(&self) -> Option<IsolationLevel> {
        self.isolation
    }

    /// `Some(true)` for `READ ONLY`, `Some(false)` for `READ WRITE`.
    pub fn is_read_only(&self) -> Option<bool> {
        self.read_only
    }

    /// `Some(true)` for `DEFERRABLE`, `Some(false)` for `NOT DEFERRABLE`.
    pub fn is_deferrable(&self) -> Option<bool> {
        self.deferrable
    }

    /// The attempts [`Pool::transaction_with`](crate::Pool::transaction_with)
    /// makes at most.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether any transaction mode (level, access, deferrability) is set.
    pub(crate) fn sets_modes(&self) -> bool {
        self.isolation.is_some() || self.read_only.is_some() || self.deferrable.is_some()
    }

    /// The `BEGIN` statement with these modes, written from the enums (no
    /// caller text reaches it).
    pub(crate) fn begin_statement(&self) -> String {
        let mut modes: Vec<&str> = Vec::new();
        let level;
        if let Some(isolation) = self.isolation {
            level = format!("ISOLATION LEVEL {}", isolation.as_sql());
            modes.push(&level);
        }
        match self.read_only {
            Some(true) => modes.push("READ ONLY"),
            Some(false) => modes.push("READ WRITE"),
            None => {}
        }
        match self.deferrable {
            Some(true) => modes.push("DEFERRABLE"),
            Some(false) => modes.push("NOT DEFERRABLE"),
            None => {}
        }
        if modes.is_empty() {
            "BEGIN".to_owned()
        } else {
            format!("BEGIN {}", modes.join(", "))
        }
    }
}

/// The pause before attempt `next` (2, 3, ...) of a transaction that lost
/// a conflict: growing from about 5 ms to at most about 160 ms, with
/// jitter, so that the two sides of a conflict do not meet again at once.
pub(crate) fn retry_pause(next: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = 5u64 << next.saturating_sub(2).min(5);
    // A random number without a dependency: the hasher's per-process keys.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(next);
    let jitter = hasher.finish() % (base + 1);
    Duration::from_millis(base / 2 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_statements_are_written_from_the_options() {
        let cases = [
            (TxOptions::new(), "BEGIN"),
            (
                TxOptions::new().isolation(IsolationLevel::Serializable),
                "BEGIN ISOLATION LEVEL SERIALIZABLE",
            ),
            (
                TxOptions::new()
                    .isolation(IsolationLevel::RepeatableRead)
                    .read_only(true),
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            ),
            (
                TxOptions::new()
                    .isolation(IsolationLevel::ReadUncommitted)
                    .read_only(false)
                    .deferrable(false),
                "BEGIN ISOLATION LEVEL READ UNCOMMITTED, READ WRITE, NOT DEFERRABLE",
            ),
            (
                TxOptions::new()
                    .isolation(IsolationLevel::ReadCommitted)
                    .deferrable(true),
                "BEGIN ISOLATION LEVEL READ COMMITTED, DEFERRABLE",
            ),
            (TxOptions::new().attempts(7), "BEGIN"),
        ];
        for (options, sql) in cases {
            assert_eq!(options.begin_statement(), sql);
        }
        assert!(!TxOptions::new().attempts(5).sets_modes());
        assert!(TxOptions::new().read_only(false).sets_modes());
    }

    #[test]
    fn attempts_are_at_least_one() {
        assert_eq!(TxOptions::new().attempts(0).max_attempts(), 1);
        assert_eq!(TxOptions::new().attempts(4).max_attempts(), 4);
    }

    #[test]
    fn retry_pauses_grow_and_stay_short() {
        for next in 2..40 {
            let pause = retry_pause(next);
            assert!(pause <= Duration::from_millis(240), "{next}: {pause:?}");
            assert!(pause >= Duration::from_millis(2), "{next}: {pause:?}");
        }
        assert!(retry_pause(2) <= Duration::from_millis(8));
    }
}
