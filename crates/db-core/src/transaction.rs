//! Transactions and savepoints as guards, shared by every backend, and the
//! one record of what a session's server has said about it.

use std::ops::{Deref, DerefMut};

use futures::StreamExt as _;

use crate::error::{Error, Result, TransactionLoss};
use crate::executor::{Client, Executor};
use crate::lex::{Token, Tokens};
use crate::row::QueryResult;
use crate::stream::RowStream;
use crate::tx_options::TxOptions;
use crate::value::Value;

/// The transaction status of a session, as its server last reported it
/// (the `ReadyForQuery` status byte), or `Unknown` since a statement that
/// may have changed it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Outside a transaction block (`I`).
    #[default]
    Idle,
    /// In a transaction block (`T`).
    InTransaction,
    /// In a failed transaction block (`E`): statements are refused until
    /// it is rolled back.
    Failed,
    /// Not known: a statement that can end or open a transaction ran (or was
    /// cancelled) since the server last said. Ask before relying on it.
    Unknown,
}

impl TxStatus {
    /// The status of a `ReadyForQuery` status byte.
    pub fn from_ready_byte(byte: u8) -> TxStatus {
        match byte {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Unknown,
        }
    }
}

/// What a statement may change besides data, decided before it is sent.
///
/// Only a gate for asking the server: a statement is `Plain` when its first
/// keyword is one of `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`,
/// `WITH`, `VALUES`, `TABLE` (none of which can open or end a transaction)
/// and it calls no session-changing function by name (`set_config`, the
/// advisory lock functions) and is no `SELECT ... INTO`. DDL (`CREATE`,
/// `ALTER`, `DROP`, `COMMENT`, `GRANT`, `REVOKE`, `TRUNCATE`, `LOCK`,
/// `REFRESH`, `REINDEX`) is `Session`: it may make temporary objects, but
/// PostgreSQL's grammar gives no such statement a way to open or end a
/// transaction (only `BEGIN`, `START`, `COMMIT`, `END`, `ROLLBACK`, `ABORT`,
/// `SAVEPOINT`, `RELEASE`, `PREPARE TRANSACTION` and the procedures run by
/// `CALL` and `DO` have one), so a DDL-heavy transaction needs no question
/// to the server after each statement. Everything else, and every script,
/// counts as `Control`: the transaction status is asked of the server
/// afterwards and the session is reset on release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads or writes rows; changes neither the transaction status (beyond
    /// failing an open transaction) nor the session.
    Plain,
    /// May change session settings or objects (a `set_config` call), but
    /// cannot open or end a transaction.
    Session,
    /// May open or end a transaction and change anything in the session.
    Control,
}

impl StatementKind {
    /// Classifies one statement (sent through the extended protocol, which
    /// refuses a second one).
    pub fn of_statement(sql: &str) -> StatementKind {
        const PLAIN: [&str; 8] = [
            "select", "insert", "update", "delete", "merge", "with", "values", "table",
        ];
        // Names whose use may change the session: settings (`set_config`,
        // the `pg_settings` view's update rule), sequence state, advisory
        // locks (matched as a part of the name).
        const SESSION: [&str; 5] = ["set_config", "pg_settings", "nextval", "setval", "currval"];
        const DDL: [&str; 10] = [
            "create", "alter", "drop", "comment", "grant", "revoke", "truncate", "lock", "refresh",
            "reindex",
        ];
        let mut tokens = Tokens::new(sql);
        let first = loop {
            match tokens.next() {
                Some(Token::Open) => {}
                Some(Token::Word(w)) => break w,
                _ => return StatementKind::Control,
            }
        };
        if DDL.iter().any(|k| first.eq_ignore_ascii_case(k)) {
            return StatementKind::Session;
        }
        if !PLAIN.iter().any(|k| first.eq_ignore_ascii_case(k)) {
            return StatementKind::Control;
        }
        // `SELECT ... INTO` (also after `WITH`) creates a table.
        let makes_tables =
            first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with");
        let mut kind = StatementKind::Plain;
        while let Some(token) = tokens.next() {
            let name = match token {
                Token::Word(w) => w,
                // A quoted identifier names the same functions and views.
                Token::Other => tokens
                    .token_text()
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or_default(),
                Token::Invalid => return StatementKind::Control,
                _ => continue,
            };
            if (makes_tables && name.eq_ignore_ascii_case("into"))
                || SESSION.iter().any(|k| name.eq_ignore_ascii_case(k))
                || contains_ignore_case(name, "advisory")
            {
                kind = StatementKind::Session;
            }
        }
        kind
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Returns a session outside a transaction to a fresh session's state, on
/// both backends: cursors, session authorization and role, every setting
/// (back to what the connection or backend started with), temporary objects,
/// sequence state, session-level advisory locks, and prepared statements
/// made with SQL `PREPARE` (the drivers' own protocol-level statements are
/// kept). `LISTEN` is left alone: the embedded backend's listeners share the
/// session; a server backend adds `UNLISTEN *`.
pub const RESET_SESSION_SQL: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     DISCARD TEMP; DISCARD SEQUENCES; SELECT pg_advisory_unlock_all(); \
     DO $db_reset$ DECLARE s text; BEGIN \
     FOR s IN SELECT name FROM pg_prepared_statements WHERE from_sql LOOP \
     EXECUTE format('DEALLOCATE %I', s); END LOOP; END $db_reset$";

/// Transaction bookkeeping of one session: the one place that knows what
/// the guards opened, what is pending, and what the server said.
///
/// Guards record what must be undone *before* they await anything, so a
/// cancelled future or a dropped guard leaves a note here, and the session
/// rolls back before it runs the next statement or goes back to the pool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionState {
    depth: u32,
    pending_rollback_to: Option<u32>,
    epoch: u64,
    status: TxStatus,
    /// Settings, temporary objects, prepared statements, cursors or locks
    /// may differ from a fresh session's.
    dirty: bool,
    /// A statement was sent and its answer not read (yet, or ever: its
    /// future may have been dropped).
    in_flight: bool,
    /// Why guards were last lost, for those that find out later.
    loss: Option<TransactionLoss>,
    /// A statement that can end or start transactions ran since the guards'
    /// transaction was last known to be theirs.
    unverified: bool,
    /// Numbers the guarded transactions of the session: each marks itself
    /// with it ([`GUARD_MARK`]), so a transaction that SQL text ended and
    /// began anew in one go (`COMMIT AND CHAIN`, `COMMIT; BEGIN`) is told
    /// from the guards' own.
    serial: u64,
    /// A statement of the guarded transaction (or its commit) failed with
    /// a serialization failure or a deadlock since it began: at which guard
    /// depth (the lowest, if several). Rolling back the savepoint it
    /// happened in undoes it: the work went on without it.
    conflict: Option<u32>,
}

/// The transaction-local setting a guarded transaction carries its serial
/// number in.
const GUARD_MARK: &str = "db.guard";

impl SessionState {
    /// Open guard levels (0 outside a guarded transaction).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The transaction status as last known.
    pub fn status(&self) -> TxStatus {
        if self.in_flight {
            TxStatus::Unknown
        } else {
            self.status
        }
    }

    /// Whether the session may hold an open transaction and must be rolled
    /// back (after asking the server, when [`SessionState::status`] is
    /// `Unknown`) before anyone else uses it.
    pub fn needs_rollback(&self) -> bool {
        self.depth > 0 || self.pending_rollback_to.is_some() || self.status() != TxStatus::Idle
    }

    /// Whether the session may differ from a fresh one (settings, temporary
    /// objects, cursors, prepared statements, locks) and must be reset
    /// before it is reused.
    pub fn needs_reset(&self) -> bool {
        self.dirty
    }

    /// Notes a statement about to be sent: call before the first `.await`.
    pub fn before(&mut self, kind: StatementKind) {
        self.settle_in_flight();
        match kind {
            StatementKind::Plain => {}
            StatementKind::Session => self.dirty = true,
            StatementKind::Control => {
                self.dirty = true;
                self.status = TxStatus::Unknown;
                self.unverified = true;
            }
        }
        self.in_flight = true;
    }

    /// Notes the answer to the statement noted by [`SessionState::before`]:
    /// the status the server reported with it when the driver sees it
    /// (`Some`), else whether it failed with a server error.
    pub fn after(&mut self, reported: Option<TxStatus>, server_error: bool) {
        self.in_flight = false;
        match reported {
            Some(status) => self.status = status,
            // Any error the server reports inside a transaction block aborts it.
            None if server_error && self.status == TxStatus::InTransaction => {
                self.status = TxStatus::Failed;
            }
            None => {}
        }
    }

    /// Records the status a server reported, or that a probe found.
    pub fn observe(&mut self, status: TxStatus) {
        self.in_flight = false;
        self.status = status;
    }

    /// Forgets everything, after the backend has rolled the session back
    /// and reset it; open guards are lost.
    pub fn reset(&mut self) {
        *self = SessionState {
            epoch: self.epoch + 1,
            serial: self.serial,
            ..SessionState::default()
        };
    }

    /// A statement whose answer was never read leaves the status unknown.
    fn settle_in_flight(&mut self) {
        if self.in_flight {
            self.in_flight = false;
            self.status = TxStatus::Unknown;
        }
    }

    /// The backend crashed and was restarted: the session is a fresh one,
    /// outside any transaction, and open guards are lost.
    pub fn crashed(&mut self) {
        self.lose_guards(TransactionLoss::BackendCrashed);
        self.dirty = false;
        self.status = TxStatus::Idle;
    }

    /// The guards are gone: the transaction ended without them.
    fn lose_guards(&mut self, loss: TransactionLoss) {
        let dirty = self.dirty;
        let status = self.status;
        self.reset();
        self.dirty = dirty;
        self.status = status;
        self.loss = Some(loss);
    }

    /// Records a conflict met at the current guard depth.
    fn note_conflict(&mut self) {
        let depth = self.depth;
        self.conflict = Some(self.conflict.map_or(depth, |d| d.min(depth)));
    }

    fn schedule_rollback_to(&mut self, target: u32) {
        self.pending_rollback_to = Some(self.pending_rollback_to.map_or(target, |t| t.min(target)));
    }
}

fn savepoint_name(level: u32) -> String {
    format!("db_savepoint_{level}")
}

/// Runs one of the guards' own control statements and records the status it
/// leaves: the one the server reported when the backend sees it, otherwise
/// `expected(ok)`.
async fn control<C: Client>(
    client: &mut C,
    sql: &str,
    expected: impl FnOnce(bool) -> TxStatus,
) -> Result<()> {
    let state = client.session_state();
    state.settle_in_flight();
    state.status = TxStatus::Unknown;
    let result = client.simple_raw(sql).await;
    let state = client.session_state();
    if state.status == TxStatus::Unknown {
        state.status = expected(result.is_ok());
    }
    result
}

/// The status of a session as its server says, asking when it is unknown.
async fn status<C: Client>(client: &mut C) -> Result<TxStatus> {
    client.session_state().settle_in_flight();
    let status = client.session_state().status;
    if status != TxStatus::Unknown {
        return Ok(status);
    }
    let status = client.probe_status().await?;
    client.session_state().observe(status);
    Ok(status)
}

/// Brings a session's bookkeeping in line before its next statement: runs
/// whatever rollback a dropped guard or a cancelled future left pending,
/// and notices a guarded transaction that SQL text ended.
///
/// Backends call this at the start of every statement. If a savepoint cannot
/// be rolled back to (its creation was cancelled before it reached the
/// server), the whole transaction is rolled back and its guards report
/// [`Error::TransactionLost`].
pub async fn flush_pending<C: Client>(client: &mut C) -> Result<()> {
    let state = client.session_state();
    state.settle_in_flight();
    if let Some(target) = state.pending_rollback_to {
        // Each step can be cancelled midway and run again: `ROLLBACK` and
        // `ROLLBACK TO SAVEPOINT` (which keeps the savepoint) undo the same
        // whether or not an earlier try got through. `RELEASE` is not
        // repeatable, so it is tried once, after the pending note is gone:
        // cut short, it leaves a savepoint nobody names, harmless until the
        // transaction ends.
        let (undo, after) = if target == 0 {
            ("ROLLBACK".to_owned(), TxStatus::Idle)
        } else {
            let sp = savepoint_name(target + 1);
            (
                format!("ROLLBACK TO SAVEPOINT {sp}"),
                TxStatus::InTransaction,
            )
        };
        match control(
            client,
            &undo,
            |ok| if ok { after } else { TxStatus::Unknown },
        )
        .await
        {
            Ok(()) => {
                let state = client.session_state();
                state.pending_rollback_to = None;
                if state.conflict.is_some_and(|depth| depth > target) {
                    state.conflict = None;
                }
                if state.depth > target {
                    // Only dropped guards normally sat above `target`; a
                    // live one there was given up (a cancelled or timed-out
                    // statement) and learns so from `loss`.
                    state.loss = Some(TransactionLoss::Cancelled);
                }
                state.depth = target;
                if target > 0 {
                    let release = format!("RELEASE SAVEPOINT {}", savepoint_name(target + 1));
                    control(client, &release, |ok| {
                        if ok {
                            TxStatus::InTransaction
                        } else {
                            TxStatus::Failed
                        }
                    })
                    .await?;
                }
            }
            Err(e) if target > 0 && e.as_db_error().is_some() => {
                // The savepoint is gone (a cancelled commit of it may have
                // released it): only the whole transaction can be undone.
                control(client, "ROLLBACK", |_| TxStatus::Idle).await?;
                client
                    .session_state()
                    .lose_guards(TransactionLoss::Cancelled);
            }
            Err(e) => return Err(e),
        }
    }
    if client.session_state().depth > 0 && status(client).await? == TxStatus::Idle {
        client
            .session_state()
            .lose_guards(TransactionLoss::EndedBySql);
    }
    Ok(())
}

/// How a transaction holds its session: borrowed from a held client
/// ([`Client::begin`]), or its own, taken from the pool ([`Pool::begin`]).
///
/// [`Pool::begin`]: crate::Pool::begin
enum Session<'c, C> {
    Borrowed(&'c mut C),
    Owned(C),
}

impl<C> Deref for Session<'_, C> {
    type Target = C;

    fn deref(&self) -> &C {
        match self {
            Session::Borrowed(c) => c,
            Session::Owned(c) => c,
        }
    }
}

impl<C> DerefMut for Session<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        match self {
            Session::Borrowed(c) => c,
            Session::Owned(c) => c,
        }
    }
}

/// An open transaction (or, nested, a savepoint) on a [`Client`].
///
/// Commit with [`Transaction::commit`]. Dropping it, by `?`, panic or a
/// cancelled future, rolls it back before the session runs anything else.
///
/// A transaction from [`Client::begin`] borrows the client; one from
/// [`Pool::begin`](crate::Pool::begin) holds a session of its own
/// (`Transaction<'static, _>`: it can be stored or moved into another
/// task), which goes back to the pool when the transaction ends, rolled
/// back first if it was not committed.
#[must_use = "a transaction rolls back when dropped; call commit()"]
pub struct Transaction<'c, C: Client> {
    client: Session<'c, C>,
    depth: u32,
    epoch: u64,
    finished: bool,
    /// Why the guard was lost, once it was.
    lost: Option<TransactionLoss>,
}

impl<C: Client> std::fmt::Debug for Transaction<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("depth", &self.depth)
            .finish()
    }
}

impl<'c, C: Client> Transaction<'c, C> {
    /// Starts a transaction on a borrowed client.
    pub(crate) async fn start_on(client: &'c mut C, options: TxOptions) -> Result<Self> {
        Transaction::start(Session::Borrowed(client), options).await
    }

    /// Starts a transaction that holds `client` until it ends.
    pub(crate) async fn start_owned(client: C, options: TxOptions) -> Result<Self> {
        Transaction::start(Session::Owned(client), options).await
    }

    async fn start(mut session: Session<'c, C>, options: TxOptions) -> Result<Self> {
        let client = &mut *session;
        flush_pending(client).await?;
        let depth = client.session_state().depth + 1;
        if depth > 1 && options.sets_modes() {
            return Err(Error::SavepointOptions { depth });
        }
        if depth == 1 && status(client).await? != TxStatus::Idle {
            return Err(Error::UntrackedTransaction);
        }
        let state = client.session_state();
        let epoch = state.epoch;
        let sql = if depth == 1 {
            state.serial += 1;
            state.unverified = false;
            state.conflict = None;
            format!(
                "{}; SET LOCAL {GUARD_MARK} = '{}'",
                options.begin_statement(),
                state.serial
            )
        } else {
            format!("SAVEPOINT {}", savepoint_name(depth))
        };
        // Recorded before the await: if this future is dropped midway, a
        // BEGIN that reached the server is rolled back before anything else
        // runs. A cut-short SAVEPOINT needs nothing: nothing ran after it,
        // and a savepoint nobody names is harmless.
        if depth == 1 {
            state.schedule_rollback_to(0);
        }
        tracing::debug!(target: "db::transaction", depth, "begin");
        let started = control(client, &sql, |ok| match (ok, depth) {
            (true, _) => TxStatus::InTransaction,
            // A refused SAVEPOINT (in a failed transaction) leaves it failed.
            (false, 1) => TxStatus::Unknown,
            (false, _) => TxStatus::Failed,
        })
        .await;
        if let Err(e) = started {
            if e.as_db_error().is_some() {
                // The server refused it: there is nothing to undo, and the
                // enclosing transaction goes on as it was.
                client.session_state().pending_rollback_to = None;
            }
            return Err(e);
        }
        let state = client.session_state();
        state.pending_rollback_to = None;
        state.depth = depth;
        Ok(Transaction {
            client: session,
            depth,
            epoch,
            finished: false,
            lost: None,
        })
    }

    /// Nesting level: 1 for a transaction, 2 and up for savepoints.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Starts a savepoint inside this transaction, itself a guard.
    pub async fn begin(&mut self) -> Result<Transaction<'_, C>> {
        self.begin_with(TxOptions::new()).await
    }

    /// [`Transaction::begin`] with `options`, which a savepoint cannot
    /// take: isolation level, access mode and deferrability belong to the
    /// whole transaction, so setting any of them fails with
    /// [`Error::SavepointOptions`] (nothing is sent to the server).
    pub async fn begin_with(&mut self, options: TxOptions) -> Result<Transaction<'_, C>> {
        self.ready().await?;
        Transaction::start(Session::Borrowed(&mut *self.client), options).await
    }

    /// Whether a statement of this transaction (a savepoint's included)
    /// failed with a serialization failure (`40001`) or a deadlock
    /// (`40P01`) since it began: run again from its start, it may succeed
    /// ([`Error::is_retryable`]). [`Pool::transaction`](crate::Pool::transaction)
    /// retries on it.
    pub fn saw_conflict(&mut self) -> bool {
        let epoch = self.epoch;
        let state = self.client.session_state();
        state.epoch == epoch && state.conflict.is_some()
    }

    /// Notes a statement's result: a retryable failure marks the guarded
    /// transaction as having lost a conflict.
    fn note_conflict<T>(&mut self, result: &Result<T>) {
        if let Err(e) = result
            && e.is_retryable()
        {
            self.client.session_state().note_conflict();
        }
    }

    /// Commits (or releases the savepoint).
    ///
    /// If the transaction (or savepoint) had failed, it is rolled back and
    /// [`Error::TransactionAborted`] says so: a commit that kept nothing is
    /// never reported as one.
    pub async fn commit(mut self) -> Result<()> {
        self.ready().await?;
        if status(&mut *self.client).await? == TxStatus::Failed {
            self.finish_rollback().await?;
            return Err(Error::TransactionAborted { depth: self.depth });
        }
        let depth = self.depth;
        let (sql, after) = if depth == 1 {
            // COMMIT ends the transaction whether it succeeds or not.
            ("COMMIT".to_owned(), TxStatus::Idle)
        } else {
            let sql = format!("RELEASE SAVEPOINT {}", savepoint_name(depth));
            (sql, TxStatus::InTransaction)
        };
        self.finish(&sql, move |ok| {
            if ok || depth == 1 {
                after
            } else {
                TxStatus::Failed
            }
        })
        .await
    }

    /// Rolls back (to the savepoint) now and reports failures.
    pub async fn rollback(mut self) -> Result<()> {
        self.ready().await?;
        self.finish_rollback().await
    }

    async fn finish_rollback(&mut self) -> Result<()> {
        if self.depth == 1 {
            return self.finish("ROLLBACK", |_| TxStatus::Idle).await;
        }
        // The same steps as for a dropped savepoint, safe to cut short.
        self.finished = true;
        tracing::debug!(target: "db::transaction", depth = self.depth, "rollback to savepoint");
        self.client
            .session_state()
            .schedule_rollback_to(self.depth - 1);
        flush_pending(&mut *self.client).await
    }

    async fn finish(&mut self, sql: &str, expected: impl FnOnce(bool) -> TxStatus) -> Result<()> {
        self.finished = true;
        tracing::debug!(target: "db::transaction", depth = self.depth, statement = sql, "finish");
        self.client
            .session_state()
            .schedule_rollback_to(self.depth - 1);
        let result = control(&mut *self.client, sql, expected).await;
        self.note_conflict(&result);
        result?;
        let state = self.client.session_state();
        state.pending_rollback_to = None;
        state.depth = self.depth - 1;
        Ok(())
    }

    /// Flushes what inner guards left pending, then checks that this guard's
    /// transaction is still the session's.
    async fn ready(&mut self) -> Result<()> {
        if let Some(loss) = self.lost {
            return Err(Error::TransactionLost(loss));
        }
        flush_pending(&mut *self.client).await?;
        let state = self.client.session_state();
        if state.epoch == self.epoch && state.depth >= self.depth {
            Ok(())
        } else {
            let loss = state.loss.unwrap_or(TransactionLoss::Cancelled);
            self.lost = Some(loss);
            Err(Error::TransactionLost(loss))
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
        self.ready().await?;
        let result = self.client.run(sql, params).await;
        self.note_conflict(&result);
        self.after_statement().await?;
        result
    }

    async fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.ready().await?;
        let result = self.client.batch_execute(sql).await;
        self.note_conflict(&result);
        self.after_statement().await?;
        result
    }

    async fn copy_in(&mut self, statement: &str, data: &[u8]) -> Result<u64> {
        self.ready().await?;
        let result = self.client.copy_in(statement, data).await;
        self.note_conflict(&result);
        result
    }

    /// The guard's checks run before the first row and after the last, as
    /// for [`Executor::run`]; a stream dropped early leaves its statement
    /// unread, which the session settles before the guard's next statement.
    fn fetch<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> RowStream<'a> {
        RowStream::generate(move |tx| async move {
            if let Err(e) = self.ready().await {
                return tx.send(Err(e)).await;
            }
            let mut rows = self.client.fetch(sql, params);
            let mut conflict = false;
            while let Some(row) = rows.next().await {
                conflict |= row.as_ref().is_err_and(Error::is_retryable);
                tx.send(row).await;
            }
            drop(rows);
            if conflict {
                self.client.session_state().note_conflict();
            }
            if let Err(e) = self.after_statement().await {
                tx.send(Err(e)).await;
            }
        })
    }

    async fn copy_out<'a, F>(&'a mut self, statement: &'a str, sink: F) -> Result<u64>
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        self.ready().await?;
        let result = self.client.copy_out(statement, sink).await;
        self.note_conflict(&result);
        result
    }
}

impl<C: Client> Transaction<'_, C> {
    /// After a statement that may have ended the transaction (SQL text
    /// `COMMIT`), asks the server at once, so the guard refuses the next
    /// statement instead of running it outside any transaction.
    async fn after_statement(&mut self) -> Result<()> {
        let state = self.client.session_state();
        if state.depth == 0 || !state.unverified {
            return Ok(());
        }
        let ours = match status(&mut *self.client).await? {
            TxStatus::Idle => false,
            // Asking needs a working transaction; a failed one is left to
            // its commit or rollback.
            TxStatus::InTransaction => {
                let serial = self.client.session_state().serial.to_string();
                let row = self
                    .client
                    .query_one(
                        "SELECT pg_catalog.current_setting($1, true)",
                        &[Value::from(GUARD_MARK)],
                    )
                    .await?;
                row.try_get::<Option<String>, _>(0)?.as_deref() == Some(serial.as_str())
            }
            TxStatus::Failed | TxStatus::Unknown => true,
        };
        let state = self.client.session_state();
        if ours {
            state.unverified = false;
        } else {
            state.lose_guards(TransactionLoss::EndedBySql);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::StatementKind::{self, Control, Plain, Session};

    #[test]
    fn statements_are_classified_by_what_they_may_change() {
        let cases = [
            ("SELECT 1", Plain),
            ("(select * from t)", Plain),
            ("  insert into t values (1)", Plain),
            (
                "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                Plain,
            ),
            ("-- step one\nBEGIN", Control),
            ("/* c */ start transaction", Control),
            ("commit", Control),
            ("SET application_name = 'x'", Control),
            ("select set_config('search_path', 'x', false)", Session),
            ("SELECT pg_advisory_lock(1)", Session),
            ("SELECT * INTO TEMP t2 FROM t", Session),
            ("SELECT 'set_config' AS name", Plain),
            ("SELECT \"set_config\"('a', 'b', false)", Session),
            ("SELECT \"pg_advisory_lock\"(1)", Session),
            (
                "UPDATE pg_settings SET setting = 'x' WHERE name = 'a'",
                Session,
            ),
            ("WITH x AS (SELECT 1) SELECT * INTO TEMP t3 FROM x", Session),
            ("SELECT nextval('s')", Session),
            ("SELECT \"user\" FROM accounts", Plain),
            ("CREATE TEMP TABLE x (a int)", Session),
            ("-- a comment\n create index i on t (a)", Session),
            ("COMMENT ON INDEX i IS 'x'", Session),
            ("ALTER TABLE t ADD COLUMN b int", Session),
            ("drop table t", Session),
            ("CALL p()", Control),
            ("DO $$ BEGIN COMMIT; END $$", Control),
            ("PREPARE TRANSACTION 'x'", Control),
            ("commit and chain", Control),
            ("SAVEPOINT s", Control),
            ("", Control),
            ("SELECT '", Control),
        ];
        for (sql, kind) in cases {
            assert_eq!(StatementKind::of_statement(sql), kind, "{sql}");
        }
    }
}
