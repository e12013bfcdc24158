//! Enum dispatch over the two backends.

use std::future::Future;
use std::time::Duration;

use db_core::{
    AdvisoryLock, BackendKind, Client, Config, Executor, NotificationStream, Pool, QueryResult,
    Result, Row, RowStream, SessionState, TxStatus, Value,
};
use db_pglite::{PgliteClient, PgliteLock, PglitePool};
use db_postgres::{PgAdvisoryLock, PgClient, PgPool};
use futures::TryFutureExt;
use futures::future::Either;

/// A pool on whichever backend the configuration selected.
#[derive(Debug, Clone)]
pub enum AnyPool {
    /// A PostgreSQL server.
    Postgres(PgPool),
    /// The embedded backend.
    Pglite(PglitePool),
}

/// A held session of an [`AnyPool`].
#[derive(Debug)]
pub enum AnyClient {
    /// On a PostgreSQL server.
    Postgres(PgClient),
    /// On the embedded backend.
    Pglite(PgliteClient),
}

/// A pool-level advisory lock of an [`AnyPool`].
#[derive(Debug)]
pub enum AnyLock {
    /// On a PostgreSQL server.
    Postgres(PgAdvisoryLock),
    /// On the embedded backend.
    Pglite(PgliteLock),
}

impl AnyPool {
    /// Opens the backend `config` selects.
    ///
    /// On PostgreSQL it first warns (`tracing::warn!`, once per process and
    /// directory) when the embedded data directory holds data that was never
    /// exported, or changed since it was: see
    /// [`unexported_data_warning`](crate::embedded::unexported_data_warning).
    pub async fn connect(config: &Config) -> Result<AnyPool> {
        match config.backend {
            BackendKind::Pglite => PglitePool::open(config).await.map(AnyPool::Pglite),
            _ => {
                crate::embedded::warn_once(config);
                PgPool::connect(config).await.map(AnyPool::Postgres)
            }
        }
    }

    /// Opens the backend the environment selects ([`Config::from_env`]).
    pub async fn from_env() -> Result<AnyPool> {
        AnyPool::connect(&Config::from_env()?).await
    }
}

macro_rules! both {
    ($self:expr, $name:ident => $body:expr) => {
        match $self {
            Self::Postgres($name) => Either::Left($body),
            Self::Pglite($name) => Either::Right($body),
        }
    };
}

impl Pool for AnyPool {
    type Client = AnyClient;
    type Lock = AnyLock;

    fn backend(&self) -> BackendKind {
        match self {
            AnyPool::Postgres(_) => BackendKind::Postgres,
            AnyPool::Pglite(_) => BackendKind::Pglite,
        }
    }

    #[track_caller]
    fn acquire(&self) -> impl Future<Output = Result<AnyClient>> + Send {
        match self {
            AnyPool::Postgres(p) => Either::Left(p.acquire().map_ok(AnyClient::Postgres)),
            AnyPool::Pglite(p) => Either::Right(p.acquire().map_ok(AnyClient::Pglite)),
        }
    }

    #[track_caller]
    fn run<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<QueryResult>> + Send + 'a {
        both!(self, p => p.run(sql, params))
    }

    #[track_caller]
    fn execute<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        both!(self, p => p.execute(sql, params))
    }

    #[track_caller]
    fn query<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        both!(self, p => p.query(sql, params))
    }

    #[track_caller]
    fn query_one<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Row>> + Send + 'a {
        both!(self, p => p.query_one(sql, params))
    }

    #[track_caller]
    fn query_opt<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<Row>>> + Send + 'a {
        both!(self, p => p.query_opt(sql, params))
    }

    #[track_caller]
    fn batch_execute<'a>(&'a self, sql: &'a str) -> impl Future<Output = Result<()>> + Send + 'a {
        both!(self, p => p.batch_execute(sql))
    }

    #[track_caller]
    fn copy_in<'a>(
        &'a self,
        statement: &'a str,
        data: &'a [u8],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        both!(self, p => p.copy_in(statement, data))
    }

    #[track_caller]
    fn copy_out<'a, F>(
        &'a self,
        statement: &'a str,
        sink: F,
    ) -> impl Future<Output = Result<u64>> + Send + 'a
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        both!(self, p => p.copy_out(statement, sink))
    }

    #[track_caller]
    fn fetch<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> RowStream<'a> {
        match self {
            AnyPool::Postgres(p) => p.fetch(sql, params),
            AnyPool::Pglite(p) => p.fetch(sql, params),
        }
    }

    fn lock(&self, key: i64, timeout: Duration) -> impl Future<Output = Result<AnyLock>> + Send {
        match self {
            AnyPool::Postgres(p) => Either::Left(p.lock(key, timeout).map_ok(AnyLock::Postgres)),
            AnyPool::Pglite(p) => Either::Right(p.lock(key, timeout).map_ok(AnyLock::Pglite)),
        }
    }

    fn try_lock(&self, key: i64) -> impl Future<Output = Result<Option<AnyLock>>> + Send {
        match self {
            AnyPool::Postgres(p) => {
                Either::Left(p.try_lock(key).map_ok(|l| l.map(AnyLock::Postgres)))
            }
            AnyPool::Pglite(p) => Either::Right(p.try_lock(key).map_ok(|l| l.map(AnyLock::Pglite))),
        }
    }

    #[track_caller]
    fn listen(&self, channel: &str) -> impl Future<Output = Result<NotificationStream>> + Send {
        both!(self, p => p.listen(channel))
    }

    fn close(&self) -> impl Future<Output = ()> + Send {
        both!(self, p => p.close())
    }

    fn stats(&self) -> db_core::PoolStats {
        match self {
            Self::Postgres(p) => p.stats(),
            Self::Pglite(p) => p.stats(),
        }
    }
}

/// Each statement on a session of its own, as [`Pool::run`] (through a
/// clone of the pool: `&mut pool.clone()`), so a function taking
/// `&mut impl Executor` accepts a pool as well as a client or transaction.
impl Executor for AnyPool {
    #[track_caller]
    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        Pool::execute(&*self, sql, params)
    }

    #[track_caller]
    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        Pool::query(&*self, sql, params)
    }

    #[track_caller]
    fn query_one<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Row>> + Send + 'a {
        Pool::query_one(&*self, sql, params)
    }

    #[track_caller]
    fn query_opt<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<Row>>> + Send + 'a {
        Pool::query_opt(&*self, sql, params)
    }

    #[track_caller]
    fn run<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<QueryResult>> + Send + 'a {
        Pool::run(&*self, sql, params)
    }

    #[track_caller]
    fn batch_execute<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        Pool::batch_execute(&*self, sql)
    }

    #[track_caller]
    fn copy_in<'a>(
        &'a mut self,
        statement: &'a str,
        data: &'a [u8],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        Pool::copy_in(&*self, statement, data)
    }

    #[track_caller]
    fn copy_out<'a, F>(
        &'a mut self,
        statement: &'a str,
        sink: F,
    ) -> impl Future<Output = Result<u64>> + Send + 'a
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        Pool::copy_out(&*self, statement, sink)
    }
}

impl Executor for AnyClient {
    fn run<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<QueryResult>> + Send + 'a {
        both!(self, c => c.run(sql, params))
    }

    fn batch_execute<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> impl Future<Output = Result<()>> + Send + 'a {
        both!(self, c => c.batch_execute(sql))
    }

    fn copy_in<'a>(
        &'a mut self,
        statement: &'a str,
        data: &'a [u8],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        both!(self, c => c.copy_in(statement, data))
    }

    fn copy_out<'a, F>(
        &'a mut self,
        statement: &'a str,
        sink: F,
    ) -> impl Future<Output = Result<u64>> + Send + 'a
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        both!(self, c => c.copy_out(statement, sink))
    }

    fn fetch<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> RowStream<'a> {
        match self {
            AnyClient::Postgres(c) => c.fetch(sql, params),
            AnyClient::Pglite(c) => c.fetch(sql, params),
        }
    }
}

impl Client for AnyClient {
    fn session_state(&mut self) -> &mut SessionState {
        match self {
            AnyClient::Postgres(c) => c.session_state(),
            AnyClient::Pglite(c) => c.session_state(),
        }
    }

    fn simple_raw<'a>(&'a mut self, sql: &'a str) -> impl Future<Output = Result<()>> + Send + 'a {
        both!(self, c => c.simple_raw(sql))
    }

    fn probe_status(&mut self) -> impl Future<Output = Result<TxStatus>> + Send {
        both!(self, c => c.probe_status())
    }

    fn lock(&mut self, key: i64, timeout: Duration) -> impl Future<Output = Result<()>> + Send {
        both!(self, c => c.lock(key, timeout))
    }

    fn try_lock(&mut self, key: i64) -> impl Future<Output = Result<bool>> + Send {
        both!(self, c => c.try_lock(key))
    }

    fn unlock(&mut self, key: i64) -> impl Future<Output = Result<bool>> + Send {
        both!(self, c => c.unlock(key))
    }
}

impl AdvisoryLock for AnyLock {
    fn key(&self) -> i64 {
        match self {
            AnyLock::Postgres(l) => l.key(),
            AnyLock::Pglite(l) => l.key(),
        }
    }

    fn unlock(self) -> impl Future<Output = Result<()>> + Send {
        match self {
            AnyLock::Postgres(l) => Either::Left(l.unlock()),
            AnyLock::Pglite(l) => Either::Right(l.unlock()),
        }
    }
}
