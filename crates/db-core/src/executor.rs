//! The traits the hub codes against: [`Executor`], [`Client`] and [`Pool`].

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt as _};

use crate::backend::Session;
use crate::config::BackendKind;
use crate::convert::FromValue;
use crate::error::{Error, Result};
use crate::notify::NotificationStream;
use crate::row::{FromRow, QueryResult, Row};
use crate::stream::RowStream;
use crate::transaction::Transaction;
use crate::tx_options::{TxOptions, retry_pause};
use crate::value::Value;

/// The future a [`Pool::transaction`] closure returns: boxed, so that it can
/// borrow the transaction and still be `Send` (`|tx| Box::pin(async move {
/// ... })`).
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;

/// Runs statements: implemented by held sessions ([`Client`]s), by
/// [`Transaction`]s, and by pools (each statement on a session of its own,
/// as [`Pool::run`]), so that one function serves all three:
///
/// ```no_run
/// use db_core::{Client, Executor, Pool, params};
///
/// async fn email(db: &mut impl Executor, id: i64) -> db_core::Result<Option<String>> {
///     db.query_opt_scalar("SELECT email FROM accounts WHERE id = $1", &params![id]).await
/// }
///
/// # async fn demo(pool: impl Pool + Executor) -> db_core::Result<()> {
/// email(&mut pool.clone(), 1).await?;
/// let mut tx = pool.begin().await?;
/// email(&mut tx, 1).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// Parameters are `$1`, `$2`, ... bound from `params`; build them with
/// [`params!`](crate::params) or `Value::from`. Each way of reading the
/// result comes as a `query`, `query_one` (exactly one row) and
/// `query_opt` (at most one row): as [`Row`]s, as `T: FromRow` (`_as`:
/// tuples and derived structs) or as the value of a one-column result
/// (`_scalar`).
///
/// # Cancel safety
///
/// Dropping a returned future before it completes never leaves the session in
/// a state another caller can observe: a statement that already reached the
/// server finishes there, and an open transaction it leaves behind is rolled
/// back before the session runs anything else.
pub trait Executor: Send {
    /// Runs one statement and returns its rows and command-tag row count.
    fn run<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<QueryResult>> + Send + 'a;

    /// Runs one or more `;`-separated statements without parameters (the
    /// simple query protocol), for scripts such as DDL.
    fn batch_execute<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Runs `COPY ... FROM STDIN` with `data` as the whole input (text, CSV
    /// or binary as the statement says); returns the rows copied.
    ///
    /// Feed a large input by calling this repeatedly with chunks of whole
    /// rows (and, for the binary format, the header in the first chunk and
    /// the trailer in the last). Bad input fails with [`Error::Database`]
    /// (`22P02` and the line in the message for a malformed value, say); as
    /// with any failed statement, an open transaction is then aborted. A
    /// statement that is not one `COPY ... FROM STDIN` fails with
    /// [`Error::NotCopy`] before anything is sent.
    ///
    /// ```no_run
    /// # async fn demo(client: &mut impl db_core::Executor) -> db_core::Result<()> {
    /// let rows = client
    ///     .copy_in("COPY users (id, name) FROM STDIN (FORMAT csv)", b"1,ada\n2,grace\n")
    ///     .await?;
    /// assert_eq!(rows, 2);
    /// # Ok(()) }
    /// ```
    fn copy_in<'a>(
        &'a mut self,
        statement: &'a str,
        data: &'a [u8],
    ) -> impl Future<Output = Result<u64>> + Send + 'a;

    /// Runs `COPY ... TO STDOUT`, passing each chunk the server sends (one
    /// `CopyData` message, i.e. one row in text/CSV format) to `sink` in
    /// order; returns the rows copied. An error from `sink` aborts the copy
    /// and is returned.
    ///
    /// After a `sink` error no more chunks are passed on and the session
    /// stays usable: a server sends the rest of the output, which is read
    /// and discarded. On PGlite the backend hands over a statement's whole
    /// output at once, so memory there grows with the output; on a server
    /// the output is read as it arrives. A statement that is not one
    /// `COPY ... TO STDOUT` fails with [`Error::NotCopy`] before anything is
    /// sent.
    ///
    /// ```no_run
    /// # async fn demo(client: &mut impl db_core::Executor) -> db_core::Result<()> {
    /// let mut csv = Vec::new();
    /// let rows = client
    ///     .copy_out("COPY users TO STDOUT (FORMAT csv)", |chunk| {
    ///         csv.extend_from_slice(chunk);
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    fn copy_out<'a, F>(
        &'a mut self,
        statement: &'a str,
        sink: F,
    ) -> impl Future<Output = Result<u64>> + Send + 'a
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a;

    /// Runs a statement and returns the row count of its command tag
    /// (`SELECT n` included).
    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        async move { Ok(self.run(sql, params).await?.rows_affected) }
    }

    /// Runs a statement and returns its rows.
    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        async move { Ok(self.run(sql, params).await?.rows) }
    }

    /// Runs a statement that returns exactly one row.
    fn query_one<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Row>> + Send + 'a {
        async move { self.query_opt(sql, params).await?.ok_or(Error::RowNotFound) }
    }

    /// Runs a statement that returns at most one row.
    fn query_opt<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<Row>>> + Send + 'a {
        async move { single(self.run(sql, params).await?.rows) }
    }

    /// [`Executor::query`], each row read as `T` (a tuple, or a struct that
    /// derives [`FromRow`]).
    ///
    /// ```no_run
    /// # async fn demo(client: &mut impl db_core::Executor) -> db_core::Result<()> {
    /// #[derive(db_core::FromRow)]
    /// # #[db(crate = "db_core")]
    /// struct Account { id: i64, email: Option<String> }
    ///
    /// let accounts: Vec<Account> = client
    ///     .query_as("SELECT id, email FROM accounts WHERE id > $1", &db_core::params![10_i64])
    ///     .await?;
    /// let pairs = client.query_as::<(i64, String)>("SELECT id, name FROM projects", &[]).await?;
    /// # Ok(()) }
    /// ```
    fn query_as<'a, T: FromRow>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<T>>> + Send + 'a {
        async move {
            self.query(sql, params)
                .await?
                .iter()
                .map(T::from_row)
                .collect()
        }
    }

    /// [`Executor::query_one`], the row read as `T`.
    fn query_one_as<'a, T: FromRow>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        async move { self.query_one(sql, params).await?.decode() }
    }

    /// [`Executor::query_opt`], the row read as `T`.
    fn query_opt_as<'a, T: FromRow>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<T>>> + Send + 'a {
        async move {
            self.query_opt(sql, params)
                .await?
                .map(|r| r.decode())
                .transpose()
        }
    }

    /// [`Executor::query`] of a one-column result, each row's value read
    /// as `T`. A result of more columns is [`Error::ColumnCount`].
    fn query_scalar<'a, T: FromValue>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<T>>> + Send + 'a {
        async move { self.query(sql, params).await?.iter().map(scalar).collect() }
    }

    /// [`Executor::query_one`] of a one-column result, its value read as
    /// `T` (an `Option` for a value that may be NULL).
    ///
    /// ```no_run
    /// # async fn demo(client: &mut impl db_core::Executor) -> db_core::Result<()> {
    /// let n: i64 = client.query_one_scalar("SELECT count(*) FROM accounts", &[]).await?;
    /// let newest: Option<i64> = client.query_one_scalar("SELECT max(id) FROM accounts", &[]).await?;
    /// # Ok(()) }
    /// ```
    fn query_one_scalar<'a, T: FromValue>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        async move { scalar(&self.query_one(sql, params).await?) }
    }

    /// [`Executor::query_opt`] of a one-column result, its value read as `T`.
    fn query_opt_scalar<'a, T: FromValue>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<T>>> + Send + 'a {
        async move {
            self.query_opt(sql, params)
                .await?
                .as_ref()
                .map(scalar)
                .transpose()
        }
    }

    /// Runs a statement and returns its rows as a [`RowStream`], read as
    /// they arrive instead of collected first: memory holds a bounded
    /// number of rows however large the result.
    ///
    /// Nothing runs until the stream is first polled. An error (a failing
    /// statement, or one that fails at some row) is the last item. Dropping
    /// the stream early is safe, as dropping a statement's future is: the
    /// session discards the rest of the result before its next statement,
    /// and a transaction it runs in stays open (or failed) as it was.
    ///
    /// On a server, rows are read from the connection as they arrive. On
    /// PGlite the result is read in batches of a bounded number of rows (a
    /// portal executed with a row limit), and the stream holds the embedded
    /// backend's one session until it ends or is dropped.
    ///
    /// ```no_run
    /// use futures::TryStreamExt as _;
    /// # async fn demo(client: &mut impl db_core::Executor) -> db_core::Result<()> {
    /// let owner = db_core::params![7_i64];
    /// let mut rows = client.fetch("SELECT id, name FROM projects WHERE owner = $1", &owner);
    /// while let Some(row) = rows.try_next().await? {
    ///     let (id, name): (i64, String) = row.decode()?;
    ///     // ... handle one project at a time ...
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// The default implementation runs the statement with
    /// [`Executor::run`] and streams the collected rows; the backends
    /// override it to stream.
    fn fetch<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> RowStream<'a> {
        RowStream::generate(move |tx| async move {
            match self.run(sql, params).await {
                Ok(result) => {
                    for row in result.rows {
                        tx.send(Ok(row)).await;
                    }
                }
                Err(e) => tx.send(Err(e)).await,
            }
        })
    }

    /// [`Executor::fetch`], each row read as `T` (a tuple, or a struct that
    /// derives [`FromRow`]). A row that does not fit `T` is an `Err` item.
    ///
    /// ```no_run
    /// use futures::TryStreamExt as _;
    /// # async fn demo(client: &mut impl db_core::Executor) -> db_core::Result<()> {
    /// let mut accounts = client.fetch_as::<(i64, Option<String>)>("SELECT id, email FROM accounts", &[]);
    /// while let Some((id, email)) = accounts.try_next().await? {
    ///     // ...
    /// }
    /// # Ok(()) }
    /// ```
    fn fetch_as<'a, T: FromRow + 'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Stream<Item = Result<T>> + Send + Unpin + 'a {
        self.fetch(sql, params)
            .map(|row| row.and_then(|row| T::from_row(&row)))
    }
}

/// The value of a one-column row.
fn scalar<T: FromValue>(row: &Row) -> Result<T> {
    row.decode::<(T,)>().map(|(value,)| value)
}

/// The one row of `rows`, `None` for none, an error for more.
pub fn single(mut rows: Vec<Row>) -> Result<Option<Row>> {
    match rows.len() {
        0 => Ok(None),
        1 => Ok(rows.pop()),
        n => Err(Error::TooManyRows(n)),
    }
}

/// A session held exclusively by its owner until dropped, when it goes back
/// to the pool (rolled back and with its advisory locks released).
///
/// Backends also implement [`backend::Session`](crate::backend::Session),
/// the driver-side hooks transactions run on.
pub trait Client: Executor + Session + Sized {
    /// Starts a transaction. It rolls back when dropped without
    /// [`Transaction::commit`].
    fn begin(&mut self) -> impl Future<Output = Result<Transaction<'_, Self>>> + Send {
        Transaction::start_on(self, TxOptions::new())
    }

    /// Starts a transaction with `options` (isolation level, `READ ONLY`,
    /// `DEFERRABLE`), as `BEGIN ISOLATION LEVEL ...` does.
    ///
    /// ```no_run
    /// use db_core::{Client, Executor, IsolationLevel, TxOptions};
    /// # async fn demo(client: &mut impl Client) -> db_core::Result<()> {
    /// let options = TxOptions::new().isolation(IsolationLevel::RepeatableRead).read_only(true);
    /// let mut tx = client.begin_with(options).await?;
    /// let n: i64 = tx.query_one_scalar("SELECT count(*) FROM accounts", &[]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    fn begin_with(
        &mut self,
        options: TxOptions,
    ) -> impl Future<Output = Result<Transaction<'_, Self>>> + Send {
        Transaction::start_on(self, options)
    }

    /// Takes the session-level advisory lock `key`, waiting up to `timeout`.
    /// Re-entrant: each successful call needs one [`Client::unlock`].
    fn lock(&mut self, key: i64, timeout: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Takes the advisory lock `key` if it is free (or already ours).
    fn try_lock(&mut self, key: i64) -> impl Future<Output = Result<bool>> + Send;

    /// Releases one hold of `key`; `false` if this session did not hold it.
    fn unlock(&mut self, key: i64) -> impl Future<Output = Result<bool>> + Send;
}

/// An advisory lock held by a pool-level guard; released by
/// [`AdvisoryLock::unlock`] or when dropped.
pub trait AdvisoryLock: Send + Sync {
    /// The lock key.
    fn key(&self) -> i64;

    /// Releases the lock now and reports failures (dropping also releases it).
    fn unlock(self) -> impl Future<Output = Result<()>> + Send;
}

/// A cloneable handle to a backend: the entry point of the hub.
pub trait Pool: Clone + Send + Sync + 'static {
    /// A held session.
    type Client: Client + 'static;
    /// A pool-level advisory lock guard.
    type Lock: AdvisoryLock + 'static;

    /// Which backend this is.
    fn backend(&self) -> BackendKind;

    /// Holds a session until the returned client is dropped.
    ///
    /// On PGlite a held session owns the whole backend: calling this again
    /// from the task that holds one fails at once with
    /// [`Error::WouldDeadlock`].
    fn acquire(&self) -> impl Future<Output = Result<Self::Client>> + Send;

    /// Starts a transaction on a session of its own, held by the returned
    /// transaction until it ends (no borrow of the pool: it can be kept in
    /// a struct or moved into another task). It rolls back when dropped
    /// without [`Transaction::commit`], before the session goes back to the
    /// pool.
    ///
    /// On PGlite the transaction owns the whole backend, as a held client
    /// does: calling this from a task that holds a session fails at once
    /// with [`Error::WouldDeadlock`].
    ///
    /// ```no_run
    /// use db_core::{Executor, Pool, params};
    /// # async fn demo(pool: impl Pool) -> db_core::Result<()> {
    /// let mut tx = pool.begin().await?;
    /// tx.execute("INSERT INTO accounts (id) VALUES ($1)", &params![1_i64]).await?;
    /// let task = tokio::spawn(async move {
    ///     tx.execute("INSERT INTO accounts (id) VALUES ($1)", &params![2_i64]).await?;
    ///     tx.commit().await
    /// });
    /// # task.await.map_err(|e| db_core::Error::backend("join", e))??;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    fn begin(&self) -> impl Future<Output = Result<Transaction<'static, Self::Client>>> + Send {
        self.begin_with(TxOptions::new())
    }

    /// [`Pool::begin`] with `options` (isolation level, `READ ONLY`,
    /// `DEFERRABLE`).
    ///
    /// ```no_run
    /// use db_core::{Executor, IsolationLevel, Pool, TxOptions};
    /// # async fn demo(pool: impl Pool) -> db_core::Result<()> {
    /// let report = TxOptions::new()
    ///     .isolation(IsolationLevel::Serializable)
    ///     .read_only(true)
    ///     .deferrable(true);
    /// let mut tx = pool.begin_with(report).await?;
    /// let total: Option<i64> = tx.query_one_scalar("SELECT sum(balance)::int8 FROM accounts", &[]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    fn begin_with(
        &self,
        options: TxOptions,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Client>>> + Send {
        let client = self.acquire();
        async move { Transaction::start_owned(client.await?, options).await }
    }

    /// Runs `f` in a transaction of its own and commits, running the whole
    /// of it again when it loses a conflict with a concurrent transaction,
    /// up to [`TxOptions::DEFAULT_ATTEMPTS`] times in all; see
    /// [`Pool::transaction_with`].
    ///
    /// `f` returns its future boxed (`|tx| Box::pin(async move { ... })`),
    /// which lets the future borrow the transaction and be `Send`: the
    /// returned future can be spawned.
    ///
    /// ```no_run
    /// use db_core::{Executor, Pool, params};
    /// # async fn demo(pool: impl Pool) -> db_core::Result<()> {
    /// let (from, to, amount) = (1_i64, 2_i64, 100_i64);
    /// let task = tokio::spawn(async move {
    ///     pool.transaction(|tx| {
    ///         Box::pin(async move {
    ///             tx.execute(
    ///                 "UPDATE accounts SET balance = balance - $2 WHERE id = $1",
    ///                 &params![from, amount],
    ///             )
    ///             .await?;
    ///             tx.execute(
    ///                 "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
    ///                 &params![to, amount],
    ///             )
    ///             .await?;
    ///             tx.query_one_scalar::<i64>("SELECT balance FROM accounts WHERE id = $1", &params![from])
    ///                 .await
    ///         })
    ///     })
    ///     .await
    /// });
    /// # let _left: i64 = task.await.map_err(|e| db_core::Error::backend("join", e))??;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    fn transaction<'a, T, E, F>(&'a self, f: F) -> BoxFuture<'a, std::result::Result<T, E>>
    where
        F: for<'t> FnMut(
                &'t mut Transaction<'a, Self::Client>,
            ) -> BoxFuture<'t, std::result::Result<T, E>>
            + Send
            + 'a,
        T: Send + 'a,
        E: From<Error> + Send + 'a,
    {
        self.transaction_with(TxOptions::new(), f)
    }

    /// Runs `f` in a transaction started with `options` and commits it;
    /// returns what `f` returned.
    ///
    /// When the attempt fails because its transaction lost a conflict with a
    /// concurrent one (a statement of it, or its `COMMIT`, failed with a
    /// serialization failure `40001` or a deadlock `40P01`: see
    /// [`Transaction::saw_conflict`]), it is rolled back and, after a short
    /// pause (a few milliseconds, growing), `f` runs again in a fresh
    /// transaction, up to `options.max_attempts()` times in all; then the
    /// last attempt's error is returned. Any other error of `f` (or of the
    /// commit) rolls the transaction back and is returned at once, and so
    /// is an error starting the transaction. `f` should do nothing but
    /// database work, or work that may be repeated.
    ///
    /// The error type is yours: anything `From<db_core::Error>`, so `?` works
    /// on statements inside `f`. Whether to retry is decided by the
    /// transaction's own statements, not by the error `f` returns, so a
    /// conflict wrapped in an error of yours (or in `anyhow`) is retried all
    /// the same; a conflict met on another session is not.
    ///
    /// Dropping the returned future rolls back the attempt in progress.
    ///
    /// ```no_run
    /// use db_core::{Executor, IsolationLevel, Pool, TxOptions, params};
    /// # async fn demo(pool: impl Pool) -> db_core::Result<()> {
    /// let options = TxOptions::new().isolation(IsolationLevel::Serializable).attempts(5);
    /// let id: i64 = pool
    ///     .transaction_with(options, |tx| {
    ///         Box::pin(async move {
    ///             let next: i64 = tx
    ///                 .query_one_scalar("SELECT coalesce(max(id), 0) + 1 FROM accounts", &[])
    ///                 .await?;
    ///             tx.execute("INSERT INTO accounts (id) VALUES ($1)", &params![next]).await?;
    ///             Ok::<_, db_core::Error>(next)
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    fn transaction_with<'a, T, E, F>(
        &'a self,
        options: TxOptions,
        mut f: F,
    ) -> BoxFuture<'a, std::result::Result<T, E>>
    where
        F: for<'t> FnMut(
                &'t mut Transaction<'a, Self::Client>,
            ) -> BoxFuture<'t, std::result::Result<T, E>>
            + Send
            + 'a,
        T: Send + 'a,
        E: From<Error> + Send + 'a,
    {
        // The first begin is made here, where the caller's location is
        // known (PGlite names it when the backend is held too long).
        let mut first = Some(self.begin_with(options));
        // Boxed: an unboxed future of a trait method, generic over a
        // closure with higher-ranked lifetimes, cannot be proven `Send`
        // where a caller spawns it from generic code (a rustc limitation);
        // one allocation per transaction, not per statement.
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                let started = match first.take() {
                    Some(begin) => begin.await,
                    None => self.begin_with(options).await,
                };
                let mut tx: Transaction<'a, Self::Client> = started?;
                let outcome = f(&mut tx).await;
                let conflict = tx.saw_conflict();
                let (error, retry) = match outcome {
                    Ok(value) => match tx.commit().await {
                        Ok(()) => return Ok(value),
                        Err(e) => {
                            let retry = conflict || e.is_retryable();
                            (E::from(e), retry)
                        }
                    },
                    Err(e) => {
                        // Rolled back now rather than on release, so the
                        // locks it holds go before the pause.
                        if let Err(rollback) = tx.rollback().await {
                            tracing::debug!(
                                target: "db::transaction",
                                error = %rollback,
                                "rolling back a failed attempt"
                            );
                        }
                        (e, conflict)
                    }
                };
                if !retry || attempt >= options.max_attempts() {
                    return Err(error);
                }
                attempt += 1;
                tracing::debug!(
                    target: "db::transaction",
                    attempt,
                    "the transaction lost a conflict; running it again"
                );
                tokio::time::sleep(retry_pause(attempt)).await;
            }
        })
    }

    /// Runs one statement on a session of its own (autocommit).
    fn run<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<QueryResult>> + Send + 'a;

    /// Runs a `;`-separated script on a session of its own.
    fn batch_execute<'a>(&'a self, sql: &'a str) -> impl Future<Output = Result<()>> + Send + 'a;

    /// [`Executor::copy_in`] on a session of its own (autocommit).
    fn copy_in<'a>(
        &'a self,
        statement: &'a str,
        data: &'a [u8],
    ) -> impl Future<Output = Result<u64>> + Send + 'a;

    /// [`Executor::copy_out`] on a session of its own.
    fn copy_out<'a, F>(
        &'a self,
        statement: &'a str,
        sink: F,
    ) -> impl Future<Output = Result<u64>> + Send + 'a
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a;

    /// [`Pool::run`], returning the command tag's row count.
    fn execute<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        async move { Ok(self.run(sql, params).await?.rows_affected) }
    }

    /// [`Pool::run`], returning the rows.
    fn query<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        async move { Ok(self.run(sql, params).await?.rows) }
    }

    /// [`Pool::run`] for exactly one row.
    fn query_one<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Row>> + Send + 'a {
        async move { single(self.run(sql, params).await?.rows)?.ok_or(Error::RowNotFound) }
    }

    /// [`Pool::run`] for at most one row.
    fn query_opt<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<Row>>> + Send + 'a {
        async move { single(self.run(sql, params).await?.rows) }
    }

    /// [`Executor::query_as`] on a session of its own.
    fn query_as<'a, T: FromRow>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<T>>> + Send + 'a {
        async move {
            self.query(sql, params)
                .await?
                .iter()
                .map(T::from_row)
                .collect()
        }
    }

    /// [`Executor::query_one_as`] on a session of its own.
    fn query_one_as<'a, T: FromRow>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        async move { self.query_one(sql, params).await?.decode() }
    }

    /// [`Executor::query_opt_as`] on a session of its own.
    fn query_opt_as<'a, T: FromRow>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<T>>> + Send + 'a {
        async move {
            self.query_opt(sql, params)
                .await?
                .map(|r| r.decode())
                .transpose()
        }
    }

    /// [`Executor::query_scalar`] on a session of its own.
    fn query_scalar<'a, T: FromValue>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<T>>> + Send + 'a {
        async move { self.query(sql, params).await?.iter().map(scalar).collect() }
    }

    /// [`Executor::query_one_scalar`] on a session of its own.
    fn query_one_scalar<'a, T: FromValue>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        async move { scalar(&self.query_one(sql, params).await?) }
    }

    /// [`Executor::query_opt_scalar`] on a session of its own.
    fn query_opt_scalar<'a, T: FromValue>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<T>>> + Send + 'a {
        async move {
            self.query_opt(sql, params)
                .await?
                .as_ref()
                .map(scalar)
                .transpose()
        }
    }

    /// [`Executor::fetch`] on a session of its own, which the stream holds
    /// until it ends or is dropped.
    ///
    /// On PGlite that session is the backend's only one: while the stream
    /// is alive every other caller waits, and the task holding it gets
    /// [`Error::WouldDeadlock`] from the pool (as from a second
    /// [`Pool::acquire`]) instead of waiting forever. Read it to its end, or
    /// drop it, before using the pool again from the same task.
    ///
    /// ```no_run
    /// use futures::TryStreamExt as _;
    /// # async fn demo(pool: &impl db_core::Pool) -> db_core::Result<()> {
    /// let mut rows = pool.fetch("SELECT id FROM accounts", &[]);
    /// while let Some(row) = rows.try_next().await? {
    ///     let id: i64 = row.try_get(0)?;
    /// }
    /// # Ok(()) }
    /// ```
    fn fetch<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> RowStream<'a> {
        RowStream::generate(move |tx| async move {
            let mut client = match self.acquire().await {
                Ok(client) => client,
                Err(e) => return tx.send(Err(e)).await,
            };
            let mut rows = client.fetch(sql, params);
            while let Some(row) = rows.next().await {
                tx.send(row).await;
            }
        })
    }

    /// [`Pool::fetch`], each row read as `T` (see [`Executor::fetch_as`]).
    fn fetch_as<'a, T: FromRow + 'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Stream<Item = Result<T>> + Send + Unpin + 'a {
        self.fetch(sql, params)
            .map(|row| row.and_then(|row| T::from_row(&row)))
    }

    /// Takes advisory lock `key` for a guard of its own, polling until
    /// `timeout`. Exclusive against every other session, in this process and,
    /// on a server, in every other.
    fn lock(&self, key: i64, timeout: Duration) -> impl Future<Output = Result<Self::Lock>> + Send;

    /// Takes advisory lock `key` if it is free.
    fn try_lock(&self, key: i64) -> impl Future<Output = Result<Option<Self::Lock>>> + Send;

    /// Subscribes to notifications on `channel`. `LISTEN` is in effect when
    /// this returns; the stream reports lost notifications explicitly
    /// ([`ListenEvent::Lagged`](crate::ListenEvent::Lagged),
    /// [`ListenEvent::Reconnected`](crate::ListenEvent::Reconnected)).
    fn listen(&self, channel: &str) -> impl Future<Output = Result<NotificationStream>> + Send;

    /// The server's `server_version` (for example `15.18` or `17.5`).
    fn server_version(&self) -> impl Future<Output = Result<String>> + Send {
        self.query_one_scalar("SHOW server_version", &[])
    }

    /// Closes the pool: waits for held sessions to finish, then shuts the
    /// backend down. Later calls fail with [`Error::Closed`].
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// The pool's sessions and waiters now ([`PoolStats`](crate::PoolStats)).
    fn stats(&self) -> crate::PoolStats;
}

/// Builds a `&[Value]` parameter list from anything convertible to [`Value`].
///
/// ```
/// let params = db_core::params![1_i64, "two", None::<String>];
/// assert_eq!(params.len(), 3);
/// ```
#[macro_export]
macro_rules! params {
    () => { [] as [$crate::Value; 0] };
    ($($v:expr),+ $(,)?) => { [$($crate::Value::from($v)),+] };
}
