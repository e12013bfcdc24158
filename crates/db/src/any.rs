//! Enum dispatch over the two backends, or over the one a build has (the
//! `pglite` and `postgres` features): a left-out backend's variants are gone,
//! and a configuration selecting it fails to connect.

use std::future::Future;
use std::time::Duration;

#[cfg(not(all(feature = "pglite", feature = "postgres")))]
use db_core::ConfigError;
use db_core::backend::{Session, SessionState, TxStatus};
use db_core::{
    AdvisoryLock, BackendKind, Client, Config, Executor, NotificationStream, Pool, QueryResult,
    Result, Row, RowStream, Value,
};
#[cfg(feature = "pglite")]
use db_pglite::{PgliteClient, PgliteLock, PglitePool};
#[cfg(feature = "postgres")]
use db_postgres::{PgAdvisoryLock, PgClient, PgPool};
use futures::TryFutureExt;
#[cfg(all(feature = "pglite", feature = "postgres"))]
use futures::future::Either;

/// A pool on whichever backend the configuration selected.
#[derive(Debug, Clone)]
pub enum AnyPool {
    /// A PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
    /// The embedded backend.
    #[cfg(feature = "pglite")]
    Pglite(PglitePool),
}

/// A held session of an [`AnyPool`].
#[derive(Debug)]
pub enum AnyClient {
    /// On a PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres(PgClient),
    /// On the embedded backend.
    #[cfg(feature = "pglite")]
    Pglite(PgliteClient),
}

/// A pool-level advisory lock of an [`AnyPool`].
#[derive(Debug)]
pub enum AnyLock {
    /// On a PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres(PgAdvisoryLock),
    /// On the embedded backend.
    #[cfg(feature = "pglite")]
    Pglite(PgliteLock),
}

impl AnyPool {
    /// Opens the backend `config` selects.
    ///
    /// On PostgreSQL it first warns (`tracing::warn!`, once per process and
    /// directory) when the embedded data directory holds data that was never
    /// exported, or changed since it was: see `db::embedded::unexported_data_warning`
    /// (a build without the `pglite` feature cannot read that directory and
    /// does not warn).
    ///
    /// A backend this build left out (see the crate's features) is an
    /// [`Error::Config`](db_core::Error::Config) with
    /// [`ConfigError::BackendNotBuilt`](db_core::ConfigError::BackendNotBuilt).
    pub async fn connect(config: &Config) -> Result<AnyPool> {
        match config.backend {
            #[cfg(feature = "pglite")]
            BackendKind::Pglite => PglitePool::open(config).await.map(AnyPool::Pglite),
            #[cfg(not(feature = "pglite"))]
            BackendKind::Pglite => Err(not_built(BackendKind::Pglite)),
            #[cfg(feature = "postgres")]
            _ => {
                #[cfg(feature = "pglite")]
                crate::embedded::warn_once(config);
                PgPool::connect(config).await.map(AnyPool::Postgres)
            }
            #[cfg(not(feature = "postgres"))]
            _ => Err(not_built(BackendKind::Postgres)),
        }
    }

    /// Opens the backend the environment selects ([`Config::from_env`]).
    pub async fn from_env() -> Result<AnyPool> {
        AnyPool::connect(&Config::from_env()?).await
    }
}

/// The error for a configuration selecting a backend this build left out.
#[cfg(not(all(feature = "pglite", feature = "postgres")))]
fn not_built(backend: BackendKind) -> db_core::Error {
    ConfigError::BackendNotBuilt {
        backend,
        krate: "db",
    }
    .into()
}

/// Runs `$pg` on a `Postgres` variant, `$lite` on a `Pglite` one (the same
/// `$body` when given one), as one future type: an `Either` of the two when
/// both backends are built, else the one backend's future as it is.
#[cfg(all(feature = "pglite", feature = "postgres"))]
macro_rules! both {
    ($self:expr, $name:ident => $body:expr) => {
        both!($self, $name => $body, $body)
    };
    ($self:expr, $name:ident => $pg:expr, $lite:expr) => {
        match $self {
            Self::Postgres($name) => Either::Left($pg),
            Self::Pglite($name) => Either::Right($lite),
        }
    };
}

/// See the two-backend definition above.
#[cfg(not(all(feature = "pglite", feature = "postgres")))]
macro_rules! both {
    ($self:expr, $name:ident => $body:expr) => {
        both!($self, $name => $body, $body)
    };
    ($self:expr, $name:ident => $pg:expr, $lite:expr) => {
        match $self {
            #[cfg(feature = "postgres")]
            Self::Postgres($name) => $pg,
            #[cfg(feature = "pglite")]
            Self::Pglite($name) => $lite,
        }
    };
}

/// The same expression on whichever variant `$self` is, where both arms have
/// one type (no `Either` needed).
macro_rules! each {
    ($self:expr, $name:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "postgres")]
            Self::Postgres($name) => $body,
            #[cfg(feature = "pglite")]
            Self::Pglite($name) => $body,
        }
    };
}

impl Pool for AnyPool {
    type Client = AnyClient;
    type Lock = AnyLock;

    fn backend(&self) -> BackendKind {
        match self {
            #[cfg(feature = "postgres")]
            AnyPool::Postgres(_) => BackendKind::Postgres,
            #[cfg(feature = "pglite")]
            AnyPool::Pglite(_) => BackendKind::Pglite,
        }
    }

    #[track_caller]
    fn acquire(&self) -> impl Future<Output = Result<AnyClient>> + Send {
        both!(self, p => p.acquire().map_ok(AnyClient::Postgres), p.acquire().map_ok(AnyClient::Pglite))
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
        each!(self, p => p.fetch(sql, params))
    }

    fn lock(&self, key: i64, timeout: Duration) -> impl Future<Output = Result<AnyLock>> + Send {
        both!(
            self,
            p => p.lock(key, timeout).map_ok(AnyLock::Postgres),
            p.lock(key, timeout).map_ok(AnyLock::Pglite)
        )
    }

    fn try_lock(&self, key: i64) -> impl Future<Output = Result<Option<AnyLock>>> + Send {
        both!(
            self,
            p => p.try_lock(key).map_ok(|l| l.map(AnyLock::Postgres)),
            p.try_lock(key).map_ok(|l| l.map(AnyLock::Pglite))
        )
    }

    #[track_caller]
    fn listen(&self, channel: &str) -> impl Future<Output = Result<NotificationStream>> + Send {
        both!(self, p => p.listen(channel))
    }

    fn close(&self) -> impl Future<Output = ()> + Send {
        both!(self, p => p.close())
    }

    fn stats(&self) -> db_core::PoolStats {
        each!(self, p => p.stats())
    }
}

// Each statement on a session of its own, as [`Pool::run`] (through a
// clone of the pool: `&mut pool.clone()`), so a function taking
// `&mut impl Executor` accepts a pool as well as a client or transaction.
db_core::backend::executor_for_pool!(AnyPool);

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
        each!(self, c => c.fetch(sql, params))
    }
}

impl Session for AnyClient {
    fn session_state(&mut self) -> &mut SessionState {
        each!(self, c => c.session_state())
    }

    fn simple_raw<'a>(&'a mut self, sql: &'a str) -> impl Future<Output = Result<()>> + Send + 'a {
        both!(self, c => c.simple_raw(sql))
    }

    fn probe_status(&mut self) -> impl Future<Output = Result<TxStatus>> + Send {
        both!(self, c => c.probe_status())
    }
}

impl Client for AnyClient {
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
        each!(self, l => l.key())
    }

    fn unlock(self) -> impl Future<Output = Result<()>> + Send {
        both!(self, l => l.unlock())
    }
}

#[cfg(all(test, not(all(feature = "pglite", feature = "postgres"))))]
mod tests {
    use super::*;
    use db_core::{ConfigError, Error};

    /// Connects with a configuration selecting `backend`, which this build
    /// left out, and expects the configuration error naming its feature.
    async fn refused(config: Config, backend: BackendKind, message: &str) {
        let err = AnyPool::connect(&config)
            .await
            .expect_err("the backend is not built");
        assert!(
            matches!(
                &err,
                Error::Config(ConfigError::BackendNotBuilt { backend: b, krate: "db" }) if *b == backend
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), message);
    }

    /// A build without the embedded backend refuses a configuration that
    /// selects it, saying which feature is missing, rather than panicking.
    #[cfg(not(feature = "pglite"))]
    #[tokio::test]
    async fn embedded_config_without_pglite_feature_is_a_config_error() {
        refused(
            Config::new().pglite(db_core::DataDir::Memory),
            BackendKind::Pglite,
            "this build has no embedded backend: enable the `pglite` feature of `db`",
        )
        .await;
    }

    /// Likewise a build with only the embedded backend and a server URL.
    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn server_config_without_postgres_feature_is_a_config_error() {
        refused(
            Config::new().postgres_url("postgres://hub@db.example/hub"),
            BackendKind::Postgres,
            "this build has no PostgreSQL backend: enable the `postgres` feature of `db`",
        )
        .await;
    }
}
