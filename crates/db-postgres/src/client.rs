//! A held server session: [`PgClient`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use db_core::backend::{
    RESET_SESSION_SQL, RowSender, Session, SessionState, StatementKind, TxStatus,
    copy_out_extra_messages, finish_query_span, flush_pending, query_span,
};
use db_core::{
    Client, Column, CopyDirection, Error, Executor, QueryResult, Result, RowStream, Value,
    check_copy_statement,
};
use futures::TryStreamExt as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, Postgres};
use sqlx::{Connection as _, Either, Executor as _, Row as _, Statement as _};
use tracing::Instrument as _;

use crate::encode;
use crate::error::{breaks_connection, from_sqlx};

/// The `db.system.name` of every span.
const SYSTEM: &str = "postgresql";

/// How long the clean-up of a dirty session may take before the connection
/// is closed instead of reused.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The first and the longest pause between two tries of an advisory lock.
const LOCK_BACKOFF: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(50));

/// Settings every client of a pool shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Statements slower than this are logged at WARN.
    pub(crate) slow: Duration,
    /// Whether statements are prepared as named, cached statements
    /// (`false` when the statement cache is disabled).
    pub(crate) persistent: bool,
    /// Released sessions still being rolled back or reset in the
    /// background (a statement their owner stopped waiting for may still
    /// be running on them).
    pub(crate) cleanups: Arc<AtomicUsize>,
    /// [`db_core::Config::setup_sql`], run again after a reset.
    pub(crate) setup: Arc<[String]>,
    /// When a connection of the pool was last found broken.
    pub(crate) last_break: BreakClock,
}

/// When a connection was last found broken. A server that ended one
/// connection (a restart, a failover, an administrator) has likely ended
/// every connection idle at that moment, so those are pinged before they
/// are lent: a restart costs one failed statement, not one per connection.
#[derive(Debug)]
pub(crate) struct BreakClock {
    epoch: Instant,
    /// Nanoseconds after `epoch`; 0 for never.
    nanos: AtomicU64,
}

impl BreakClock {
    pub(crate) fn new() -> BreakClock {
        BreakClock {
            epoch: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    /// Notes a broken connection now.
    fn note(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(nanos.max(1), Ordering::Relaxed);
    }

    /// Whether a connection idle for `idle_for` was already idle when a
    /// connection was last found broken.
    pub(crate) fn idle_since_a_break(&self, idle_for: Duration) -> bool {
        let nanos = self.nanos.load(Ordering::Relaxed);
        nanos != 0 && {
            let since_break = self
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_nanos(nanos));
            idle_for >= since_break
        }
    }
}

/// A server session held exclusively until dropped; from
/// [`Pool::acquire`](db_core::Pool::acquire) on a [`PgPool`](crate::PgPool).
///
/// Statements are prepared (and cached per connection) and exchange values in
/// binary format; [`Executor::batch_execute`] uses the simple query protocol.
///
/// # Release
///
/// Dropping a client returns its connection to the pool, clean: if a
/// transaction may be open (a dropped [`Transaction`](db_core::Transaction),
/// a cancelled statement, a raw `BEGIN`) or advisory locks may be held, a
/// task is spawned on the current Tokio runtime that runs `ROLLBACK` and
/// `SELECT pg_advisory_unlock_all()` before the connection goes back. If that
/// fails, takes longer than 10 s, or no runtime is available, the connection
/// is closed instead of reused. A connection that saw an I/O or protocol
/// error is always closed.
///
/// # Cancel safety
///
/// Every method may be cancelled: what a cancelled statement leaves behind is
/// recorded before its first `.await` and undone before the session runs
/// anything else or goes back to the pool.
pub struct PgClient {
    conn: Option<PoolConnection<Postgres>>,
    state: SessionState,
    /// Hold counts of the advisory locks taken through [`Client::lock`].
    locks: HashMap<i64, u32>,
    /// Advisory locks may be held that `locks` does not count: taken by raw
    /// SQL, or by a lock call that was cancelled midway.
    untracked_locks: bool,
    /// The connection saw an I/O or protocol error and must not be reused.
    broken: bool,
    /// A `COPY` was cancelled midway (or could not be cleaned up after), so
    /// the connection may be out of step with the server: every later use
    /// fails, and it is closed on release.
    out_of_step: bool,
    shared: Arc<Shared>,
}

impl fmt::Debug for PgClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgClient")
            .field("state", &self.state)
            .field("locks", &self.locks)
            .field("broken", &self.broken)
            .field("out_of_step", &self.out_of_step)
            .finish_non_exhaustive()
    }
}

impl PgClient {
    pub(crate) fn new(conn: PoolConnection<Postgres>, shared: Arc<Shared>) -> Self {
        PgClient {
            conn: Some(conn),
            state: SessionState::default(),
            locks: HashMap::new(),
            untracked_locks: false,
            broken: false,
            out_of_step: false,
            shared,
        }
    }

    fn conn(&mut self) -> Result<&mut PgConnection> {
        if self.out_of_step {
            return Err(Error::Protocol(
                "an interrupted COPY left this session's connection out of step with \
                 the server; acquire another session"
                    .into(),
            ));
        }
        self.conn.as_deref_mut().ok_or(Error::Closed)
    }

    /// Notes what a statement about to run may leave behind, before its
    /// first await.
    fn note(&mut self, kind: StatementKind) {
        self.state.before(kind);
        if kind != StatementKind::Plain {
            // It may take advisory locks the hold counts do not know of.
            self.untracked_locks = true;
        }
    }

    /// Notes a statement's outcome: a server error inside a transaction
    /// block aborts it (this driver does not see the status byte).
    fn noted<T>(&mut self, result: &Result<T>) {
        let server_error = matches!(result, Err(Error::Database(_)));
        self.state.after(None, server_error);
    }

    /// Maps a sqlx error from running `sql`, remembering a broken connection.
    fn fail(&mut self, error: sqlx::Error, sql: &str) -> Error {
        if breaks_connection(&error) {
            self.broken = true;
            self.shared.last_break.note();
        }
        let mut error = from_sqlx(error, || "running a statement on postgres".to_owned());
        if let Error::Database(db) = &mut error {
            // A position past the end points into the parameter-type comment
            // appended by `encode::statement_text`: it means "end of input".
            let end = u32::try_from(sql.chars().count() + 1).unwrap_or(u32::MAX);
            if db.position.is_some_and(|p| p > end) {
                db.position = Some(end);
            }
        }
        error
    }

    /// Runs `sql` with `params` as a prepared statement.
    async fn prepared(&mut self, sql: &str, params: &[Value]) -> Result<QueryResult> {
        let args = encode::arguments(params)?;
        let text = encode::statement_text(sql, params);
        let persistent = self.shared.persistent;
        let conn = self.conn()?;
        let mut stream = conn.fetch_many(sqlx::query_with(&text, args).persistent(persistent));
        let mut result = QueryResult::default();
        let mut columns: Option<Arc<[Column]>> = None;
        let mut described: Option<Arc<[Column]>> = None;
        loop {
            match stream.try_next().await {
                Ok(Some(Either::Left(done))) => {
                    result.rows_affected += done.rows_affected();
                    columns = None;
                }
                Ok(Some(Either::Right(row))) => {
                    let columns = match &columns {
                        Some(c) => c,
                        None => columns.insert(encode::columns(&row)?),
                    };
                    described.get_or_insert_with(|| Arc::clone(columns));
                    result.rows.push(encode::decode_row(&row, columns)?);
                }
                Ok(None) => break,
                Err(e) => {
                    drop(stream);
                    return Err(self.fail(e, sql));
                }
            }
        }
        drop(stream);
        result.columns = match described {
            Some(columns) => columns,
            None => self.statement_columns(&text, params).await?,
        };
        Ok(result)
    }

    /// The result columns of the prepared statement `text`, which just ran
    /// (for a result without rows, whose rows would have carried them).
    ///
    /// The statement is in sqlx's cache, so this costs no round trip. With
    /// the cache off sqlx keeps no description of the unnamed statement it
    /// ran, and asking the server would leave a named statement behind on
    /// it: the columns are then left empty.
    async fn statement_columns(&mut self, text: &str, params: &[Value]) -> Result<Arc<[Column]>> {
        if !self.shared.persistent {
            return Ok(Arc::from(Vec::new()));
        }
        let types = encode::parameter_types(params);
        let conn = self.conn()?;
        match conn.prepare_with(text, &types).await {
            Ok(statement) => encode::statement_columns(statement.columns()),
            Err(e) => Err(self.fail(e, text)),
        }
    }

    /// Runs `sql` with `params` as a prepared statement, handing each row to
    /// `tx` as it arrives; `count` counts them. Returns the command tag's
    /// row count.
    async fn stream_prepared(
        &mut self,
        sql: &str,
        params: &[Value],
        tx: &RowSender,
        count: &mut usize,
    ) -> Result<u64> {
        let args = encode::arguments(params)?;
        let text = encode::statement_text(sql, params);
        let persistent = self.shared.persistent;
        let conn = self.conn()?;
        let mut stream = conn.fetch_many(sqlx::query_with(&text, args).persistent(persistent));
        let mut columns: Option<Arc<[Column]>> = None;
        let mut affected = 0;
        let failure = loop {
            match stream.try_next().await {
                Ok(Some(Either::Left(done))) => {
                    affected += done.rows_affected();
                    columns = None;
                }
                Ok(Some(Either::Right(row))) => {
                    let columns = match &columns {
                        Some(c) => c,
                        None => match encode::columns(&row) {
                            Ok(c) => columns.insert(c),
                            Err(e) => break Some(Err(e)),
                        },
                    };
                    match encode::decode_row(&row, columns) {
                        Ok(row) => {
                            *count += 1;
                            tx.send(Ok(row)).await;
                        }
                        Err(e) => break Some(Err(e)),
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(Ok(e)),
            }
        };
        // An error of ours leaves the rest of the result unread; sqlx reads
        // it before the connection's next statement.
        drop(stream);
        match failure {
            None => Ok(affected),
            Some(Ok(e)) => Err(self.fail(e, sql)),
            Some(Err(e)) => Err(e),
        }
    }

    /// Runs `sql` as a row stream (see [`Executor::fetch`]), with the
    /// bookkeeping, retry and span of [`Executor::run`].
    async fn stream_rows(&mut self, sql: &str, params: &[Value], tx: &RowSender) -> Result<()> {
        flush_pending(self).await?;
        let kind = StatementKind::of_statement(sql);
        self.note(kind);
        let span = query_span(SYSTEM, sql);
        let started = Instant::now();
        let mut count = 0;
        let mut result = self
            .stream_prepared(sql, params, tx, &mut count)
            .instrument(span.clone())
            .await;
        self.noted(&result);
        // As in `run`: a stale cached statement fails before any row.
        let stale = matches!(&result, Err(Error::Database(e)) if e.is_stale_cached_plan());
        if stale && count == 0 && self.state.depth() == 0 && self.state.status() == TxStatus::Idle {
            if let Ok(conn) = self.conn() {
                let _ = sqlx::Connection::clear_cached_statements(conn).await;
            }
            self.note(kind);
            result = self
                .stream_prepared(sql, params, tx, &mut count)
                .instrument(span.clone())
                .await;
            self.noted(&result);
        }
        finish_query_span(
            &span,
            sql,
            started,
            self.shared.slow,
            result.as_ref().map(|affected| (count, *affected)),
        );
        result.map(drop)
    }

    /// Runs `sql` through the simple query protocol, in a span of its own.
    async fn simple(&mut self, sql: &str) -> Result<()> {
        let span = query_span(SYSTEM, sql);
        let started = Instant::now();
        let result = async {
            let conn = self.conn()?;
            // A `&str` query runs through the simple query protocol. (sqlx's
            // `raw_sql(..).execute(..)` is an unboxed generic future that
            // fails the `Send` check of trait futures.)
            match conn.execute(sql).await {
                Ok(done) => Ok(done.rows_affected()),
                Err(e) => Err(self.fail(e, sql)),
            }
        }
        .instrument(span.clone())
        .await;
        finish_query_span(
            &span,
            sql,
            started,
            self.shared.slow,
            result.as_ref().map(|affected| (0, *affected)),
        );
        result.map(drop)
    }

    /// Runs one `COPY` in a query span: `copy` drives it on the connection.
    ///
    /// The connection counts as out of step while the copy runs: a copy
    /// cancelled midway leaves it in copy mode.
    async fn copy<F>(&mut self, statement: &str, direction: CopyDirection, copy: F) -> Result<u64>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<u64, CopyError>,
    {
        check_copy_statement(statement, direction)?;
        flush_pending(self).await?;
        self.conn()?;
        self.note(StatementKind::Plain);
        let span = query_span(SYSTEM, statement);
        let started = Instant::now();
        self.out_of_step = true;
        let result = match self.conn.as_deref_mut() {
            Some(conn) => copy(conn).instrument(span.clone()).await,
            None => Err(CopyError::Ours(Error::Closed)),
        };
        self.out_of_step = matches!(result, Err(CopyError::OutOfStep(_)));
        let result = result.map_err(|e| match e {
            CopyError::Sqlx(e) | CopyError::Refused(e) | CopyError::OutOfStep(e) => {
                self.fail(e, statement)
            }
            CopyError::Ours(e) => e,
        });
        self.noted(&result);
        finish_query_span(
            &span,
            statement,
            started,
            self.shared.slow,
            result.as_ref().map(|rows| (0, *rows)),
        );
        result
    }

    /// Runs a one-row, one-boolean advisory lock function on `key`. The hold
    /// counts track what it takes, so it does not make the session dirty.
    async fn lock_call(&mut self, sql: &str, key: i64) -> Result<bool> {
        // Until the caller counts the outcome (and restores this), a lock
        // may be held that the counts do not know of: a call cancelled
        // midway leaves it set, so the release unlocks everything.
        self.untracked_locks = true;
        flush_pending(self).await?;
        self.state.before(StatementKind::Plain);
        let result = self.prepared(sql, &[Value::Int8(key)]).await;
        self.noted(&result);
        let row = db_core::single(result?.rows)?.ok_or(Error::RowNotFound)?;
        row.try_get::<bool, _>(0)
    }
}

/// How a `COPY` failed: in sqlx (mapped with the connection's bookkeeping),
/// or in this crate.
enum CopyError {
    Sqlx(sqlx::Error),
    /// The server refused a `COPY ... TO STDOUT`; see
    /// [`skip_stray_ready_for_query`].
    Refused(sqlx::Error),
    OutOfStep(sqlx::Error),
    Ours(Error),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Sqlx(e)
    }
}

/// Sends `data` to a `COPY ... FROM STDIN` and finishes it.
async fn copy_in(conn: &mut PgConnection, statement: &str, data: &[u8]) -> Result<u64, CopyError> {
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(data).await?;
    Ok(copy.finish().await?)
}

/// Reads a `COPY ... TO STDOUT` to its end, passing each chunk to `sink`
/// until it fails; the rest is read and discarded, which keeps the
/// connection in step with the server.
async fn copy_out(
    conn: &mut PgConnection,
    statement: &str,
    sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64, CopyError> {
    match read_copy_out(conn, statement, sink).await {
        Err(CopyError::Refused(e)) => Err(match skip_stray_ready_for_query(conn).await {
            Ok(()) => CopyError::Sqlx(e),
            Err(_) => CopyError::OutOfStep(e),
        }),
        other => other,
    }
}

async fn read_copy_out(
    conn: &mut PgConnection,
    statement: &str,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64, CopyError> {
    let extra = copy_out_extra_messages(statement).map_err(CopyError::Ours)?;
    let mut stream = conn.copy_out_raw(statement).await.map_err(|e| match e {
        sqlx::Error::Database(_) => CopyError::Refused(e),
        e => CopyError::Sqlx(e),
    })?;
    let mut messages = 0u64;
    let mut sink_error = None;
    while let Some(chunk) = stream.try_next().await? {
        messages += 1;
        if sink_error.is_none()
            && let Err(e) = sink(&chunk)
        {
            sink_error = Some(e);
        }
    }
    match sink_error {
        Some(e) => Err(CopyError::Ours(e)),
        // sqlx drops the command tag; every message but the header line or
        // the binary trailer is one row.
        None => Ok(messages.saturating_sub(extra)),
    }
}

/// Reads the `ReadyForQuery` that sqlx 0.8's `copy_out_raw` leaves unread
/// when the server refuses the statement; the next statement would take it
/// for its own answer and see no rows.
///
/// `describe` sends Parse, Describe and Sync, counts the Sync as pending, and
/// fails on the stray `ReadyForQuery` before reading its own answer; `ping`
/// then reads through the last `ReadyForQuery`. `describe` only parses, so
/// nothing runs (the server keeps the parsed statement until the connection
/// closes), and parsing a `ROLLBACK` is allowed even in an aborted
/// transaction. Should sqlx ever read the stray message itself, both calls
/// simply succeed.
async fn skip_stray_ready_for_query(conn: &mut PgConnection) -> sqlx::Result<()> {
    // A text of its own, so that sqlx never finds it in its statement cache
    // and skips the round trip.
    let _ = conn
        .describe("ROLLBACK /* db-postgres: after a refused COPY TO STDOUT */")
        .await;
    conn.ping().await
}

impl Executor for PgClient {
    async fn run(&mut self, sql: &str, params: &[Value]) -> Result<QueryResult> {
        flush_pending(self).await?;
        let kind = StatementKind::of_statement(sql);
        self.note(kind);
        let span = query_span(SYSTEM, sql);
        let started = Instant::now();
        let mut result = self.prepared(sql, params).instrument(span.clone()).await;
        self.noted(&result);
        // DDL changed the result type of a cached statement. Outside a
        // transaction nothing ran and preparing it again is safe: retry once,
        // as the embedded backend does, so both behave the same.
        let stale = matches!(&result, Err(Error::Database(e)) if e.is_stale_cached_plan());
        if stale && self.state.depth() == 0 && self.state.status() == TxStatus::Idle {
            if let Ok(conn) = self.conn() {
                let _ = sqlx::Connection::clear_cached_statements(conn).await;
            }
            self.note(kind);
            result = self.prepared(sql, params).instrument(span.clone()).await;
            self.noted(&result);
        }
        finish_query_span(
            &span,
            sql,
            started,
            self.shared.slow,
            result.as_ref().map(|r| (r.rows.len(), r.rows_affected)),
        );
        result
    }

    async fn batch_execute(&mut self, sql: &str) -> Result<()> {
        flush_pending(self).await?;
        // A script may do anything to the session.
        self.note(StatementKind::Control);
        let result = self.simple(sql).await;
        self.noted(&result);
        result
    }

    /// Rows are decoded as they arrive from the connection. A stream
    /// dropped early leaves the rest of the result unread on the
    /// connection: it is read and discarded before the session's next
    /// statement (the statement itself already ran to its end on the
    /// server, committed if outside a transaction).
    fn fetch<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> RowStream<'a> {
        RowStream::generate(move |tx| async move {
            if let Err(e) = self.stream_rows(sql, params, &tx).await {
                tx.send(Err(e)).await;
            }
        })
    }

    async fn copy_in(&mut self, statement: &str, data: &[u8]) -> Result<u64> {
        self.copy(
            statement,
            CopyDirection::In,
            async |conn: &mut PgConnection| copy_in(conn, statement, data).await,
        )
        .await
    }

    async fn copy_out<'a, F>(&'a mut self, statement: &'a str, sink: F) -> Result<u64>
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        self.copy(
            statement,
            CopyDirection::Out,
            async |conn: &mut PgConnection| copy_out(conn, statement, sink).await,
        )
        .await
    }
}

impl Session for PgClient {
    fn session_state(&mut self) -> &mut SessionState {
        &mut self.state
    }

    /// The transaction status is left to the guards, who know what their
    /// own statements do.
    async fn simple_raw(&mut self, sql: &str) -> Result<()> {
        self.simple(sql).await
    }

    async fn probe_status(&mut self) -> Result<TxStatus> {
        let conn = self.conn()?;
        match transaction_status(conn).await {
            Ok(status) => Ok(status),
            Err(e) => Err(self.fail(e, "probing the transaction status")),
        }
    }
}

impl Client for PgClient {
    /// Takes the session-level advisory lock `key`, polling
    /// `pg_try_advisory_lock` with a backoff from 2 ms to 50 ms until
    /// `timeout`, then failing with [`Error::LockTimeout`].
    async fn lock(&mut self, key: i64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = LOCK_BACKOFF.0;
        loop {
            if self.try_lock(key).await? {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::LockTimeout { key, timeout });
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(LOCK_BACKOFF.1);
        }
    }

    async fn try_lock(&mut self, key: i64) -> Result<bool> {
        // `note` marks the locks untracked before the statement's first
        // await, so a cancelled call still unlocks on release; once the
        // outcome is counted the mark is lifted again.
        let before = self.untracked_locks;
        let taken = self
            .lock_call("SELECT pg_try_advisory_lock($1)", key)
            .await?;
        if taken {
            *self.locks.entry(key).or_default() += 1;
        }
        self.untracked_locks = before;
        Ok(taken)
    }

    async fn unlock(&mut self, key: i64) -> Result<bool> {
        if !self.untracked_locks && !self.locks.contains_key(&key) {
            // Certainly not held; asking would only make the server warn.
            return Ok(false);
        }
        let before = self.untracked_locks;
        let released = self.lock_call("SELECT pg_advisory_unlock($1)", key).await?;
        if released && let Some(count) = self.locks.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.locks.remove(&key);
            }
        }
        self.untracked_locks = before;
        Ok(released)
    }
}

/// Whether a released session must be rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollback {
    No,
    /// A transaction is open (or failed): certainly.
    Yes,
    /// The status is unknown (SQL text that may open or end a transaction
    /// ran, or a statement was cancelled): only if the server says a
    /// transaction is open (a `ROLLBACK` outside one makes the server warn,
    /// and sqlx log that warning).
    IfOpen,
}

impl Drop for PgClient {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.broken || self.out_of_step {
            conn.close_on_drop();
            return;
        }
        let rollback = match self.state.status() {
            _ if self.state.depth() > 0 => Rollback::Yes,
            TxStatus::InTransaction | TxStatus::Failed => Rollback::Yes,
            TxStatus::Unknown => Rollback::IfOpen,
            TxStatus::Idle if self.state.needs_rollback() => Rollback::IfOpen,
            TxStatus::Idle => Rollback::No,
        };
        let cleanup = if self.state.needs_reset() {
            Cleanup::Reset
        } else if self.untracked_locks || !self.locks.is_empty() {
            Cleanup::Unlock
        } else {
            Cleanup::Nothing
        };
        if rollback == Rollback::No && cleanup == Cleanup::Nothing {
            return; // clean: `conn` goes back to the pool
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let pending = Pending::new(Arc::clone(&self.shared.cleanups));
                let setup = Arc::clone(&self.shared.setup);
                runtime.spawn(async move {
                    clean_up(conn, rollback, cleanup, &setup).await;
                    drop(pending);
                });
            }
            Err(_) => {
                tracing::warn!(
                    target: "db::pool",
                    "a dirty postgres session was dropped outside a Tokio runtime; closing it"
                );
                conn.close_on_drop();
            }
        }
    }
}

/// One background clean-up, counted while it runs (dropped with it, even
/// when its runtime shuts down).
struct Pending(Arc<AtomicUsize>);

impl Pending {
    fn new(count: Arc<AtomicUsize>) -> Pending {
        count.fetch_add(1, Ordering::AcqRel);
        Pending(count)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a released session needs besides a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cleanup {
    Nothing,
    /// Release the advisory locks it may hold.
    Unlock,
    /// Return it to a fresh session's state, locks included.
    Reset,
}

/// Resets a dirty session, then lets it go back to the pool; closes it if the
/// reset fails or takes too long.
async fn clean_up(
    mut conn: PoolConnection<Postgres>,
    rollback: Rollback,
    cleanup: Cleanup,
    setup: &[String],
) {
    let outcome =
        tokio::time::timeout(CLEANUP_TIMEOUT, reset(&mut conn, rollback, cleanup, setup)).await;
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {CLEANUP_TIMEOUT:?}"),
    };
    tracing::warn!(
        target: "db::pool",
        error = %failure,
        "resetting a released postgres session failed; closing it"
    );
    conn.close_on_drop();
}

async fn reset(
    conn: &mut PgConnection,
    rollback: Rollback,
    cleanup: Cleanup,
    setup: &[String],
) -> sqlx::Result<()> {
    let rollback = match rollback {
        Rollback::No => false,
        Rollback::Yes => true,
        Rollback::IfOpen => transaction_status(conn).await? != TxStatus::Idle,
    };
    if rollback {
        conn.execute("ROLLBACK").await?;
    }
    match cleanup {
        Cleanup::Nothing => {}
        Cleanup::Unlock => {
            conn.execute("SELECT pg_advisory_unlock_all()").await?;
        }
        Cleanup::Reset => {
            conn.execute(RESET_SESSION_SQL).await?;
            conn.execute("UNLISTEN *").await?;
            run_setup(conn, setup).await?;
        }
    }
    Ok(())
}

/// Runs [`db_core::Config::setup_sql`] on a new or reset connection: each
/// entry alone through the extended protocol (unnamed, not cached), which
/// refuses a second statement in one entry. A failure is a
/// [`db_core::Error::SessionSetup`] inside a sqlx error, which
/// [`crate::error::from_sqlx`] unwraps.
pub(crate) async fn run_setup(conn: &mut PgConnection, setup: &[String]) -> sqlx::Result<()> {
    for (index, sql) in setup.iter().enumerate() {
        if let Err(e) = sqlx::query(sql).persistent(false).execute(&mut *conn).await {
            let source = crate::error::from_sqlx(e, || "running a session setup statement".into());
            return Err(sqlx::Error::Configuration(Box::new(
                db_core::Error::session_setup(index, sql, source),
            )));
        }
        if transaction_status(conn).await? != TxStatus::Idle {
            conn.execute("ROLLBACK").await?;
            return Err(sqlx::Error::Configuration(Box::new(
                db_core::Error::session_setup_left_transaction(index, sql),
            )));
        }
    }
    Ok(())
}

/// The session's transaction status, asked of the server.
///
/// `now()` is the start of the current transaction and
/// `statement_timestamp()` the start of the current simple-protocol query;
/// PostgreSQL documents them as equal exactly in the first command of a
/// transaction, so they differ only inside a block opened earlier. An
/// aborted block rejects the query with `25P02`.
async fn transaction_status(conn: &mut PgConnection) -> sqlx::Result<TxStatus> {
    match conn.fetch_one("SELECT now() = statement_timestamp()").await {
        Ok(row) => {
            let first_command = row.try_get_raw(0)?.as_str().map_err(sqlx::Error::Decode)?;
            Ok(if first_command == "t" {
                TxStatus::Idle
            } else {
                TxStatus::InTransaction
            })
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P02") => {
            Ok(TxStatus::Failed)
        }
        Err(e) => Err(e),
    }
}
