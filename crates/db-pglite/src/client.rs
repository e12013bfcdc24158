//! A held session: exclusive use of the embedded backend.

use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::backend::{RowSender, Session, SessionState, StatementKind, TxStatus};
use db_core::{Client, CopyDirection, Error, Executor, QueryResult, Result, RowStream, Value};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::driver::{Request, Response};
use crate::handoff::{self, Reply, ReplySender};
use crate::lock::SessionId;
use crate::pool::Shared;
use crate::wire;

/// A session holding the embedded backend until dropped.
///
/// While it is alive no statement of any other session runs on the backend;
/// dropping it rolls back anything it left open and releases its advisory
/// locks before the next session gets the backend.
pub struct PgliteClient {
    shared: Arc<Shared>,
    /// The lease on the backend; `None` only while (or after failing) to
    /// take it back after waiting for an advisory lock.
    permit: Option<OwnedSemaphorePermit>,
    /// Where the client was acquired, for deadlock and timeout messages.
    location: &'static Location<'static>,
    /// The answer to the abort that follows a statement this session
    /// stopped waiting for; awaited before its next statement.
    abandoned: Option<Reply<Result<Response>>>,
    session: SessionId,
    state: SessionState,
    /// The backend crashed under this session: nothing more runs on it.
    lost: bool,
}

impl std::fmt::Debug for PgliteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgliteClient")
            .field("session", &self.session)
            .field("state", &self.state)
            .finish()
    }
}

impl PgliteClient {
    pub(crate) fn new(
        shared: Arc<Shared>,
        permit: OwnedSemaphorePermit,
        location: &'static Location<'static>,
    ) -> Self {
        let session = shared.session_id();
        PgliteClient {
            shared,
            permit: Some(permit),
            location,
            abandoned: None,
            session,
            state: SessionState::default(),
            lost: false,
        }
    }

    /// Sends a request and waits for its response, recording the transaction
    /// status the backend reported with it. `kind` is noted before the first
    /// await: a cancelled wait leaves the status unknown, and the release
    /// rolls back and resets whatever the statement may have left.
    async fn call(
        &mut self,
        kind: StatementKind,
        limited: Limit,
        make: impl FnOnce(ReplySender<Result<Response>>) -> Request,
    ) -> Result<Response> {
        if self.lost {
            return Err(Error::SessionLost);
        }
        if self.permit.is_none() {
            // A `lock` call cancelled while this session had given the
            // backend back: take it again first (it had nothing open).
            self.permit = Some(self.shared.lease(self.location, true).await?);
        }
        if let Some(abandoned) = self.abandoned.take() {
            // The statement this session stopped waiting for runs to its
            // end first; this one's own time limit starts after it.
            self.state.before(StatementKind::Plain);
            let status = abandoned.await.ok().and_then(Result::ok).map(|r| r.status);
            self.state
                .after(status.map(TxStatus::from_ready_byte), false);
        }
        self.state.before(kind);
        self.shared.touch();
        let (reply, answer) = handoff::reply(&self.shared.reply_spin);
        self.shared.send(make(reply))?;
        let timeout = match limited {
            Limit::StatementTimeout => self.shared.statement_timeout,
            Limit::None => None,
        };
        let response = match timeout {
            None => answer.await.map_err(|_| Error::Closed)?,
            Some(timeout) => match tokio::time::timeout(timeout, answer).await {
                Ok(answer) => answer.map_err(|_| Error::Closed)?,
                Err(_) => {
                    // The statement runs on. As a server's timeout would,
                    // it aborts the transaction it is in (once it ends);
                    // the session's next statement waits for that.
                    let (reply, abandoned) = handoff::reply(&self.shared.reply_spin);
                    self.shared.send(Request::AbortTransaction { reply })?;
                    self.abandoned = Some(abandoned);
                    return Err(Error::StatementTimeout { timeout });
                }
            },
        };
        match &response {
            // A row stream's statement runs on: still in flight.
            Ok(r) if r.suspended => {}
            Ok(r) => self
                .state
                .after(Some(TxStatus::from_ready_byte(r.status)), false),
            Err(Error::BackendCrashed { .. }) => {
                self.lost = true;
                self.state.crashed();
            }
            Err(_) => self.state.after(None, false),
        }
        response
    }

    async fn simple(&mut self, sql: &str, kind: StatementKind, limit: Limit) -> Result<()> {
        let span = db_core::backend::query_span("pglite", sql);
        let started = Instant::now();
        let response = self
            .call(kind, limit, |reply| Request::Simple {
                sql: sql.to_owned(),
                reply,
            })
            .instrument(span.clone())
            .await;
        let result = response.and_then(|r| wire::read_result(&r.data, None, false));
        let outcome = result.as_ref().map(|r| (0, r.rows_affected));
        db_core::backend::finish_query_span(
            &span,
            sql,
            started,
            self.shared.slow_statement,
            outcome,
        );
        result.map(drop)
    }
}

impl PgliteClient {
    /// Runs one `COPY` exchange (`message`, from `wire::copy_in` or
    /// `wire::copy_out`) in a query span, and reads its response with `read`.
    async fn copy(
        &mut self,
        statement: &str,
        direction: CopyDirection,
        message: impl FnOnce() -> Result<Vec<u8>>,
        read: impl FnOnce(&[u8]) -> Result<u64>,
    ) -> Result<u64> {
        db_core::check_copy_statement(statement, direction)?;
        db_core::backend::flush_pending(self).await?;
        let span = db_core::backend::query_span("pglite", statement);
        let started = Instant::now();
        let result = async {
            let message = message()?;
            let response = self
                .call(StatementKind::Plain, Limit::StatementTimeout, |reply| {
                    Request::Copy { message, reply }
                })
                .await?;
            read(&response.data)
        }
        .instrument(span.clone())
        .await;
        let outcome = result.as_ref().map(|rows| (0, *rows));
        db_core::backend::finish_query_span(
            &span,
            statement,
            started,
            self.shared.slow_statement,
            outcome,
        );
        result
    }

    /// Runs the bundled `pg_dump` (PostgreSQL 17) against the database and
    /// returns its SQL text. `args` are extra `pg_dump` arguments such as
    /// `--schema-only` or `--no-owner`; the output file, format, host and
    /// database are managed here and refused.
    ///
    /// The session must be outside a transaction: the dump sees committed
    /// data only, in a snapshot of its own.
    pub async fn pg_dump(&mut self, args: &[&str]) -> Result<String> {
        db_core::backend::flush_pending(self).await?;
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let (reply, response) = handoff::reply(&self.shared.reply_spin);
        self.shared.send(Request::Dump { args, reply })?;
        response.await.map_err(|_| Error::Closed)?
    }

    /// A physical archive (gzipped tar) of the data directory, loadable by
    /// the same pglite-oxide and PostgreSQL version. The backend is
    /// checkpointed, stopped while the files are read, and restarted; the
    /// session must be outside a transaction.
    pub async fn archive_data_dir(&mut self) -> Result<Vec<u8>> {
        db_core::backend::flush_pending(self).await?;
        let (reply, response) = handoff::reply(&self.shared.reply_spin);
        self.shared.send(Request::Archive { reply })?;
        response.await.map_err(|_| Error::Closed)?
    }
}

/// The rows of a row stream's first batch.
const FIRST_BATCH_ROWS: u32 = 64;
/// The most rows of one batch.
const MAX_BATCH_ROWS: u32 = 4096;
/// The response size a batch aims at: later batches ask for as many rows
/// as fit, judged by the size of the rows so far.
const BATCH_BYTES: usize = 512 * 1024;

impl PgliteClient {
    /// Runs `sql` as a row stream: its portal executed a batch at a time
    /// (the driver keeps it open in between), each batch's rows handed to
    /// `tx` before the next is asked for. Returns the error that ends the
    /// statement, if any.
    async fn stream_rows(&mut self, sql: &str, params: &[Value], tx: &RowSender) -> Result<()> {
        db_core::backend::flush_pending(self).await?;
        let span = db_core::backend::query_span("pglite", sql);
        let started = Instant::now();
        let mut count = 0usize;
        let mut affected = 0u64;
        let result = async {
            let params = wire::encode_params(params)?;
            let mut max_rows = FIRST_BATCH_ROWS;
            let first = self
                .call(
                    StatementKind::of_statement(sql),
                    Limit::StatementTimeout,
                    |reply| Request::Fetch {
                        sql: sql.to_owned(),
                        params,
                        max_rows,
                        reply,
                    },
                )
                .await?;
            let columns = first.columns.clone();
            let mut response = first;
            loop {
                let batch = wire::read_batch(&response.data, columns.as_ref())?;
                if let Some(per_row) = response.data.len().checked_div(batch.rows.len()) {
                    let fit = u32::try_from(BATCH_BYTES / per_row.max(1)).unwrap_or(u32::MAX);
                    max_rows = fit.clamp(1, MAX_BATCH_ROWS);
                }
                drop(response);
                affected = batch.rows_affected;
                for row in batch.rows {
                    count += 1;
                    tx.send(Ok(row)).await;
                }
                if let Some(e) = batch.error {
                    return Err(e);
                }
                if !batch.suspended {
                    return Ok(());
                }
                response = self
                    .call(StatementKind::Plain, Limit::StatementTimeout, |reply| {
                        Request::FetchMore { max_rows, reply }
                    })
                    .await?;
            }
        }
        .instrument(span.clone())
        .await;
        let outcome = result.as_ref().map(|()| (count, affected));
        db_core::backend::finish_query_span(
            &span,
            sql,
            started,
            self.shared.slow_statement,
            outcome,
        );
        result
    }
}

/// Whether a call is subject to the configured `statement_timeout`.
#[derive(Debug, Clone, Copy)]
enum Limit {
    StatementTimeout,
    None,
}

impl Drop for PgliteClient {
    fn drop(&mut self) {
        match self.permit.take() {
            Some(permit) => {
                let state = &self.state;
                self.shared.release(
                    self.session,
                    permit,
                    state.needs_rollback(),
                    state.needs_reset(),
                );
            }
            // Between giving the backend back for a lock wait and taking it
            // again (a cancelled `lock`): only the locks are left to release.
            None => self.shared.locks.release_all(self.session),
        }
    }
}

impl Executor for PgliteClient {
    async fn run(&mut self, sql: &str, params: &[Value]) -> Result<QueryResult> {
        db_core::backend::flush_pending(self).await?;
        let span = db_core::backend::query_span("pglite", sql);
        let started = Instant::now();
        let encoded = wire::encode_params(params);
        let result = async {
            let params = encoded?;
            let response = self
                .call(
                    StatementKind::of_statement(sql),
                    Limit::StatementTimeout,
                    |reply| Request::Run {
                        sql: sql.to_owned(),
                        params,
                        reply,
                    },
                )
                .await?;
            wire::read_result(&response.data, response.columns, true)
        }
        .instrument(span.clone())
        .await;
        let outcome = result.as_ref().map(|r| (r.rows.len(), r.rows_affected));
        db_core::backend::finish_query_span(
            &span,
            sql,
            started,
            self.shared.slow_statement,
            outcome,
        );
        result
    }

    async fn batch_execute(&mut self, sql: &str) -> Result<()> {
        db_core::backend::flush_pending(self).await?;
        // A script may do anything to the session.
        self.simple(sql, StatementKind::Control, Limit::StatementTimeout)
            .await
    }

    /// Reads the result in batches of at most 4096 rows (fewer for wide
    /// rows, about 512 KiB each), so neither the backend's answer nor this
    /// process holds the whole result. The backend stays this session's,
    /// as always, until the stream ends or is dropped; `statement_timeout`
    /// limits each batch.
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
            || wire::copy_in(statement, data),
            |response| wire::read_copy_in(response, statement),
        )
        .await
    }

    /// The embedded backend returns a statement's whole output at once; it
    /// is passed to `sink` from that buffer without further copies.
    async fn copy_out<'a, F>(&'a mut self, statement: &'a str, sink: F) -> Result<u64>
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        self.copy(
            statement,
            CopyDirection::Out,
            || wire::copy_out(statement),
            |response| wire::read_copy_out(response, statement, sink),
        )
        .await
    }
}

impl Session for PgliteClient {
    fn session_state(&mut self) -> &mut SessionState {
        &mut self.state
    }

    /// The guards' own statements leave nothing to reset; the status they
    /// leave is recorded from the backend's answer.
    async fn simple_raw(&mut self, sql: &str) -> Result<()> {
        // Not subject to the caller's deadline: a server does not cut a
        // COMMIT short by `statement_timeout` either.
        self.simple(sql, StatementKind::Plain, Limit::None).await
    }

    /// The driver knows the status of its one backend session without a
    /// round trip to PostgreSQL.
    async fn probe_status(&mut self) -> Result<TxStatus> {
        let (reply, status) = handoff::reply(&self.shared.reply_spin);
        self.shared.send(Request::Status { reply })?;
        let status = status.await.map_err(|_| Error::Closed)?;
        Ok(TxStatus::from_ready_byte(status))
    }
}

impl Client for PgliteClient {
    /// Takes the in-process advisory lock `key`, waiting up to `timeout`.
    ///
    /// A session with nothing open (no transaction, nothing to reset) gives
    /// the backend back while it waits and takes it again after, so the
    /// lock's holder can finish its work on the backend meanwhile: nothing
    /// of the session can be seen to change. A session in a transaction
    /// keeps the backend, and everyone else waits with it.
    async fn lock(&mut self, key: i64, timeout: Duration) -> Result<()> {
        if self.lost {
            return Err(Error::SessionLost);
        }
        let locks = Arc::clone(&self.shared.locks);
        if locks.try_lock(key, self.session) {
            return Ok(());
        }
        let state = &self.state;
        if state.needs_rollback() || state.needs_reset() {
            return locks.lock(key, self.session, timeout).await;
        }
        let Some(permit) = self.permit.take() else {
            return Err(Error::Closed);
        };
        self.shared.yield_lease(permit);
        let waited = locks.lock(key, self.session, timeout).await;
        match self.shared.lease(self.location, true).await {
            Ok(permit) => {
                self.permit = Some(permit);
                waited
            }
            Err(e) => {
                locks.release_all(self.session);
                Err(e)
            }
        }
    }

    async fn try_lock(&mut self, key: i64) -> Result<bool> {
        if self.lost {
            return Err(Error::SessionLost);
        }
        Ok(self.shared.locks.try_lock(key, self.session))
    }

    async fn unlock(&mut self, key: i64) -> Result<bool> {
        Ok(self.shared.locks.unlock(key, self.session))
    }
}
