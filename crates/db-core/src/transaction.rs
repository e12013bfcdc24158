//! Transactions and savepoints as guards, shared by every backend.

use std::future::Future;

use crate::error::{Error, Result};
use crate::executor::{Client, Executor};
use crate::row::QueryResult;
use crate::value::Value;

/// Transaction bookkeeping of one session.
///
/// Guards record what must be undone *before* they await anything, so a
/// cancelled future or a dropped guard leaves a note here, and the session
/// rolls back before it runs the next statement or goes back to the pool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionState {
    depth: u32,
    pending_rollback_to: Option<u32>,
    epoch: u64,
    untracked: bool,
}

impl SessionState {
    /// Open transaction levels (0 outside a transaction).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Whether the session may hold an open transaction and must be rolled
    /// back before anyone else uses it.
    pub fn needs_reset(&self) -> bool {
        self.depth > 0 || self.pending_rollback_to.is_some() || self.untracked
    }

    /// Notes a statement that may open a transaction behind the guards' back
    /// (`BEGIN` sent as plain SQL).
    pub fn note_statement(&mut self, sql: &str) {
        let head = sql.trim_start().get(..5).unwrap_or("");
        if head.eq_ignore_ascii_case("begin") || head.eq_ignore_ascii_case("start") {
            self.untracked = true;
        }
    }

    /// Forgets everything, after the backend has rolled the session back.
    pub fn reset(&mut self) {
        let epoch = self.epoch + u64::from(self.depth > 0);
        *self = SessionState {
            epoch,
            ..SessionState::default()
        };
    }

    fn schedule_rollback_to(&mut self, target: u32) {
        self.pending_rollback_to = Some(self.pending_rollback_to.map_or(target, |t| t.min(target)));
    }

    /// The statement that undoes what is pending, and the depth it returns to.
    fn pending_sql(&self) -> Option<(String, u32)> {
        let target = self.pending_rollback_to?;
        let sql = if target == 0 {
            "ROLLBACK".to_owned()
        } else {
            let sp = savepoint_name(target + 1);
            format!("ROLLBACK TO SAVEPOINT {sp}; RELEASE SAVEPOINT {sp}")
        };
        Some((sql, target))
    }
}

fn savepoint_name(level: u32) -> String {
    format!("db_savepoint_{level}")
}

/// Runs whatever rollback a dropped guard or a cancelled future left pending.
///
/// Backends call this at the start of every statement. If a savepoint cannot
/// be rolled back to (its creation was cancelled before it reached the
/// server), the whole transaction is rolled back and its guards report
/// [`Error::TransactionLost`].
pub async fn flush_pending<C: Client>(client: &mut C) -> Result<()> {
    let Some((sql, target)) = client.session_state().pending_sql() else {
        return Ok(());
    };
    match client.simple_raw(&sql).await {
        Ok(()) => {
            let state = client.session_state();
            state.pending_rollback_to = None;
            state.depth = target;
            Ok(())
        }
        Err(e) if target > 0 && e.as_db_error().is_some() => {
            client.simple_raw("ROLLBACK").await?;
            client.session_state().reset();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// An open transaction (or, nested, a savepoint) on a [`Client`].
///
/// Commit with [`Transaction::commit`]. Dropping it, by `?`, panic or a
/// cancelled future, rolls it back before the session runs anything else.
#[must_use = "a transaction rolls back when dropped; call commit()"]
pub struct Transaction<'c, C: Client> {
    client: &'c mut C,
    depth: u32,
    epoch: u64,
    finished: bool,
}

impl<C: Client> std::fmt::Debug for Transaction<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("depth", &self.depth)
            .finish()
    }
}

impl<'c, C: Client> Transaction<'c, C> {
    pub(crate) async fn start(client: &'c mut C) -> Result<Self> {
        flush_pending(client).await?;
        let state = client.session_state();
        let depth = state.depth + 1;
        let epoch = state.epoch;
        let sql = if depth == 1 {
            "BEGIN".to_owned()
        } else {
            format!("SAVEPOINT {}", savepoint_name(depth))
        };
        // Recorded before the await: if this future is dropped midway the
        // session undoes whatever part of BEGIN reached the server.
        state.schedule_rollback_to(depth - 1);
        tracing::debug!(target: "db::transaction", depth, "begin");
        client.simple_raw(&sql).await?;
        let state = client.session_state();
        state.pending_rollback_to = None;
        state.depth = depth;
        Ok(Transaction {
            client,
            depth,
            epoch,
            finished: false,
        })
    }

    /// Nesting level: 1 for a transaction, 2 and up for savepoints.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Starts a savepoint inside this transaction, itself a guard.
    pub fn begin(&mut self) -> impl Future<Output = Result<Transaction<'_, C>>> + Send {
        let valid = self.check();
        let client = &mut *self.client;
        async move {
            valid?;
            Transaction::start(client).await
        }
    }

    /// Commits (or releases the savepoint).
    pub async fn commit(mut self) -> Result<()> {
        self.check()?;
        let sql = if self.depth == 1 {
            "COMMIT".to_owned()
        } else {
            format!("RELEASE SAVEPOINT {}", savepoint_name(self.depth))
        };
        self.finish(&sql).await
    }

    /// Rolls back (to the savepoint) now and reports failures.
    pub async fn rollback(mut self) -> Result<()> {
        self.check()?;
        let sql = if self.depth == 1 {
            "ROLLBACK".to_owned()
        } else {
            let sp = savepoint_name(self.depth);
            format!("ROLLBACK TO SAVEPOINT {sp}; RELEASE SAVEPOINT {sp}")
        };
        self.finish(&sql).await
    }

    async fn finish(&mut self, sql: &str) -> Result<()> {
        self.finished = true;
        tracing::debug!(target: "db::transaction", depth = self.depth, statement = sql, "finish");
        let state = self.client.session_state();
        state.schedule_rollback_to(self.depth - 1);
        self.client.simple_raw(sql).await?;
        let state = self.client.session_state();
        state.pending_rollback_to = None;
        state.depth = self.depth - 1;
        Ok(())
    }

    fn check(&mut self) -> Result<()> {
        if self.client.session_state().epoch == self.epoch {
            Ok(())
        } else {
            Err(Error::TransactionLost)
        }
    }
}

impl<C: Client> Drop for Transaction<'_, C> {
    fn drop(&mut self) {
        if !self.finished {
            let state = self.client.session_state();
            if state.epoch == self.epoch {
                state.schedule_rollback_to(self.depth - 1);
            }
        }
    }
}

impl<C: Client> Executor for Transaction<'_, C> {
    async fn run(&mut self, sql: &str, params: &[Value]) -> Result<QueryResult> {
        self.check()?;
        self.client.run(sql, params).await
    }

    async fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.check()?;
        self.client.batch_execute(sql).await
    }

    async fn copy_in(&mut self, statement: &str, data: &[u8]) -> Result<u64> {
        self.check()?;
        self.client.copy_in(statement, data).await
    }

    async fn copy_out<'a, F>(&'a mut self, statement: &'a str, sink: F) -> Result<u64>
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        self.check()?;
        self.client.copy_out(statement, sink).await
    }
}
