//! The pool: [`PgPool`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use db_core::backend::ListenerHub;
use db_core::{
    BackendKind, Client, Config, Error, Executor, NotificationStream, Pool, PostgresConfig,
    QueryResult, Result, Value, redact_url,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode, Postgres};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{BreakClock, PgClient, Shared, run_setup};
use crate::error::Target;
use crate::listener::ListenerTask;
use crate::lock::PgAdvisoryLock;

/// Events each subscriber may have buffered before it is told it lagged.
const LISTEN_BUFFER: usize = 1024;
/// A pooled connection idle this long is pinged before it is handed out.
const PING_WHEN_IDLE: Duration = Duration::from_secs(10);

/// A pool of connections to a PostgreSQL server; cheap to clone (all clones
/// share one pool).
///
/// Built by [`PgPool::connect`] from [`Config`]; used through
/// [`db_core::Pool`].
///
/// * At most `config.postgres.max_connections` connections, waited for up to
///   `config.acquire_timeout`; each caches up to
///   `config.postgres.statement_cache_capacity` prepared statements.
/// * Every session's `TimeZone` is `UTC`.
/// * Notifications use one more connection of their own, opened on the first
///   [`Pool::listen`] and not counted against `max_connections`.
/// * A pool-level lock guard ([`PgAdvisoryLock`]) holds one pooled connection
///   while it lives.
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<Inner>,
}

struct Inner {
    pool: sqlx::Pool<Postgres>,
    waits: db_core::AcquireStats,
    /// Connections opened for `pool` since it was made.
    opened: Arc<AtomicU64>,
    target: Target,
    shared: Arc<Shared>,
    hub: Arc<ListenerHub>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for PgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPool")
            .field("server", &self.inner.target.description())
            .field("size", &self.inner.pool.size())
            .field("idle", &self.inner.pool.num_idle())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The sqlx connect options for `config`.
///
/// Starts from `config.url` when set, then overrides host, port, user,
/// database and password with the fields that are `Some`. This crate never
/// reads the environment itself ([`Config::from_env`] does), but sqlx fills
/// what neither the URL nor the fields give from libpq's variables (`PGHOST`,
/// `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`,
/// `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGAPPNAME`, `PGOPTIONS`) and
/// libpq's defaults, as libpq would. With a URL the driver also reads the
/// password file (`PGPASSFILE`, `~/.pgpass`) for a password the URL lacks;
/// without one it does not. TLS follows `sslmode` (libpq's meaning; default
/// `prefer`) with rustls, trusting the system's roots or `sslrootcert`.
/// `connect_timeout` is taken out of the URL and applied by
/// [`PgPool::connect`].
fn connect_options(config: &PostgresConfig) -> Result<PgConnectOptions> {
    if let Some(url) = &config.url {
        check_url_parameters(url)?;
    }
    let mut options = match &config.url {
        Some(url) => db_core::split_connect_timeout(url)
            .0
            .parse::<PgConnectOptions>()
            .map_err(|e| Error::backend(format!("invalid postgres URL {}", redact_url(url)), e))?,
        None => PgConnectOptions::new_without_pgpass(),
    };
    if let Some(host) = &config.host {
        options = options.host(host);
    }
    if let Some(port) = config.port {
        options = options.port(port);
    }
    if let Some(user) = &config.user {
        options = options.username(user);
    }
    if let Some(database) = &config.database {
        options = options.database(database);
    }
    if let Some(password) = &config.password {
        options = options.password(password);
    }
    // libpq: with a root certificate named, `require` (and `prefer`)
    // verify the server's certificate against it, as `verify-ca` does; the
    // driver would ignore the file and accept any certificate.
    let names_root = config.url.as_deref().is_some_and(|url| {
        url::Url::parse(url).is_ok_and(|u| {
            u.query_pairs()
                .any(|(k, v)| k == "sslrootcert" && !v.is_empty())
        })
    });
    if names_root
        && matches!(
            options.get_ssl_mode(),
            PgSslMode::Prefer | PgSslMode::Require
        )
    {
        options = options.ssl_mode(PgSslMode::VerifyCa);
    }
    // sqlx already sends `TimeZone=UTC` as a startup parameter; the option
    // states it where it is configured. sqlx's own statement logging would
    // print whole statements, literals and all: the `db.query` spans and
    // the slow-statement warning (without literals) replace it.
    Ok(options
        .statement_cache_capacity(config.statement_cache_capacity)
        .options([("TimeZone", "UTC")])
        .disable_statement_logging())
}

/// The URL parameters the driver applies (libpq's names, as libpq spells
/// them: case matters), and `connect_timeout`, which [`PgPool::connect`]
/// applies.
const URL_PARAMETERS: [&str; 14] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "connect_timeout",
    "statement-cache-capacity",
];

/// Checks the URL's parameters before the driver sees them:
/// - one it does not apply fails, naming it but not its value, as libpq
///   does (the driver would warn with the value, a mistyped `PASSWORD=`
///   included, and go on without it: a mistyped `SSLMODE=` in plain text);
/// - a TLS file it names (`sslrootcert`, `sslcert`, `sslkey`) that cannot
///   be read fails naming the parameter and the file (the driver would say
///   only "No such file or directory" at connect).
fn check_url_parameters(url: &str) -> Result<()> {
    // A URL that does not parse is reported by the driver's own parser.
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    for (key, value) in parsed.query_pairs() {
        if !URL_PARAMETERS.contains(&key.as_ref()) {
            return Err(Error::backend(
                "the postgres URL",
                format!(
                    "parameter `{key}` is not supported (supported: {})",
                    URL_PARAMETERS.join(", ")
                ),
            ));
        }
        if matches!(key.as_ref(), "sslrootcert" | "sslcert" | "sslkey")
            && !value.is_empty()
            && let Err(e) = std::fs::File::open(value.as_ref()).and_then(|f| {
                // A directory opens, and fails only when read.
                match f.metadata()?.is_dir() {
                    true => Err(std::io::Error::other("it is a directory")),
                    false => Ok(()),
                }
            })
        {
            return Err(Error::backend(
                format!("reading {key}={value} given in the postgres URL"),
                e,
            ));
        }
    }
    Ok(())
}

/// How long opening a connection may take: the URL's `connect_timeout`
/// (libpq's precedence: the URL first), else the configured one, else the
/// acquire timeout.
fn connect_timeout(config: &Config) -> Result<Duration> {
    let from_url = config
        .postgres
        .url
        .as_deref()
        .and_then(|url| db_core::split_connect_timeout(url).1);
    let timeout = match from_url {
        Some(value) => db_core::parse_connect_timeout(&value).map_err(|reason| {
            Error::backend(
                format!("invalid connect_timeout={value:?} in the postgres URL: {reason}"),
                std::io::Error::other(reason),
            )
        })?,
        None => config.postgres.connect_timeout,
    };
    Ok(timeout.unwrap_or(config.acquire_timeout))
}

impl PgPool {
    /// Connects to the server described by `config.postgres` (whatever
    /// `config.backend` says).
    ///
    /// One connection is opened and closed first, so an unreachable server,
    /// a refused connection or bad credentials fail here at once with their
    /// real cause (`Error::Database` with the SQLSTATE for errors the server
    /// reports, otherwise an error naming the server, password redacted).
    /// Waiting longer than `config.acquire_timeout` for it fails with
    /// [`Error::PoolTimedOut`] in the connect phase. Pool connections are
    /// then opened on demand.
    ///
    /// Must be called within a Tokio runtime: the pool spawns its
    /// notification task here.
    pub async fn connect(config: &Config) -> Result<PgPool> {
        // The configured time limits are startup settings: each session
        // starts with them, and a reset (`RESET ALL`) returns to them.
        let mut options = connect_options(&config.postgres)?.options(config.timeouts.settings());
        // The URL's application_name (or PGAPPNAME, which the driver reads)
        // wins, as in libpq; else the configured or the program's name.
        if options.get_application_name().is_none() {
            options = options.application_name(&config.effective_application_name());
        }
        let target = Target::new(options.clone());
        let setup: Arc<[String]> = config.setup_sql.clone().into();
        let mut probe = target.connect(connect_timeout(config)?).await?;
        let checked = run_setup(&mut probe, &setup).await;
        let _ = probe.close().await;
        checked.map_err(|e| target.connect_error(e))?;

        let shared = Arc::new(Shared {
            cleanups: Arc::new(AtomicUsize::new(0)),
            slow: config.slow_statement_threshold,
            persistent: config.postgres.statement_cache_capacity > 0,
            setup: Arc::clone(&setup),
            last_break: BreakClock::new(),
        });
        let opened = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&opened);
        let on_connect = Arc::clone(&setup);
        let max = config.postgres.max_connections.max(1);
        let min = config.postgres.min_connections.min(max);
        let max_lifetime = config.postgres.max_lifetime;
        let checks = Arc::clone(&shared);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _| {
                counter.fetch_add(1, Ordering::Relaxed);
                let setup = Arc::clone(&on_connect);
                Box::pin(async move { run_setup(conn, &setup).await })
            })
            .min_connections(min)
            .idle_timeout(config.postgres.idle_timeout)
            .max_lifetime(config.postgres.max_lifetime)
            // sqlx pings every connection it hands out: a round trip per
            // statement, a third of a local autocommit INSERT. Only a
            // connection idle long enough for a server, proxy or firewall to
            // have dropped it is checked (the pattern sqlx documents); a
            // broken busy one fails its statement and is replaced, and the
            // connections idle since are checked (`BreakClock`).
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let suspect = checks.last_break.idle_since_a_break(meta.idle_for);
                Box::pin(async move {
                    // sqlx checks the lifetime when a connection comes back
                    // and in a periodic sweep; an idle connection that grew
                    // too old in between is not handed out either.
                    if max_lifetime.is_some_and(|limit| meta.age >= limit) {
                        return Ok(false);
                    }
                    if suspect || meta.idle_for >= PING_WHEN_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options.clone());
        // The minimum is there when `connect` returns (sqlx only tops it up
        // after closing an idle or old connection).
        let mut opening = Vec::with_capacity(min as usize);
        for _ in 0..min {
            opening.push(pool.acquire().await.map_err(|e| target.connect_error(e))?);
        }
        drop(opening);
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options);

        let (hub, commands) = ListenerHub::new(LISTEN_BUFFER);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = ListenerTask {
            hub: Arc::clone(&hub),
            commands,
            shutdown: shutdown_rx,
            pool: listen_pool,
            target: target.clone(),
        };
        let listener = tokio::spawn(task.run());
        tracing::debug!(target: "db::pool", server = target.description(), "postgres pool ready");

        Ok(PgPool {
            inner: Arc::new(Inner {
                pool,
                waits: db_core::AcquireStats::default(),
                opened,
                target,
                shared,
                hub,
                closed: AtomicBool::new(false),
                shutdown,
                listener: Mutex::new(Some(listener)),
            }),
        })
    }

    /// [`PgPool::connect`] with the defaults of [`Config::new`] and the server
    /// at `url` (`postgres://user:password@host:port/database`).
    pub async fn connect_url(url: &str) -> Result<PgPool> {
        PgPool::connect(&Config::new().postgres_url(url)).await
    }

    /// How many server connections the pool has opened since it was made
    /// (connections replaced after errors, idle timeouts or a failed reset
    /// count again).
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Whether no released session is still being cleaned up in the
    /// background: after a statement whose caller stopped waiting (a
    /// dropped future), its session is drained, rolled back and reset
    /// before its connection is reused, and until then that statement may
    /// still take effect.
    pub fn is_quiescent(&self) -> bool {
        self.inner.shared.cleanups.load(Ordering::Acquire) == 0
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl Pool for PgPool {
    type Client = PgClient;
    type Lock = PgAdvisoryLock;

    fn backend(&self) -> BackendKind {
        BackendKind::Postgres
    }

    /// Checks out a connection, waiting up to `config.acquire_timeout`.
    ///
    /// A timeout is [`Error::PoolTimedOut`] with the time waited; its phase
    /// is `Connect`, with the connection error as its source, when the pool
    /// could not open a connection (sqlx keeps retrying a refused
    /// connection until the timeout), otherwise `Acquire`.
    async fn acquire(&self) -> Result<PgClient> {
        self.check_open()?;
        let inner = &self.inner;
        let started = Instant::now();
        match inner.waits.track(inner.pool.acquire()).await {
            Ok(conn) => Ok(PgClient::new(conn, Arc::clone(&inner.shared))),
            Err(sqlx::Error::PoolTimedOut) => {
                let connecting = inner.pool.size() < inner.pool.options().get_max_connections();
                Err(inner.target.timed_out(started.elapsed(), connecting).await)
            }
            Err(e) => Err(inner.target.connect_error(e)),
        }
    }

    async fn run(&self, sql: &str, params: &[Value]) -> Result<QueryResult> {
        // Through a client, so a statement that leaves a transaction open
        // is rolled back before the connection is reused.
        self.acquire().await?.run(sql, params).await
    }

    async fn batch_execute(&self, sql: &str) -> Result<()> {
        self.acquire().await?.batch_execute(sql).await
    }

    async fn copy_in(&self, statement: &str, data: &[u8]) -> Result<u64> {
        self.acquire().await?.copy_in(statement, data).await
    }

    async fn copy_out<'a, F>(&'a self, statement: &'a str, sink: F) -> Result<u64>
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        self.acquire().await?.copy_out(statement, sink).await
    }

    /// Checks out a connection and polls `pg_try_advisory_lock` on it until
    /// `timeout` (which includes the wait for the connection).
    async fn lock(&self, key: i64, timeout: Duration) -> Result<PgAdvisoryLock> {
        let deadline = Instant::now() + timeout;
        let mut client = self.acquire().await?;
        let left = deadline.saturating_duration_since(Instant::now());
        match client.lock(key, left).await {
            Ok(()) => Ok(PgAdvisoryLock::new(key, client)),
            Err(Error::LockTimeout { key, .. }) => Err(Error::LockTimeout { key, timeout }),
            Err(e) => Err(e),
        }
    }

    async fn try_lock(&self, key: i64) -> Result<Option<PgAdvisoryLock>> {
        let mut client = self.acquire().await?;
        Ok(client
            .try_lock(key)
            .await?
            .then(|| PgAdvisoryLock::new(key, client)))
    }

    async fn listen(&self, channel: &str) -> Result<NotificationStream> {
        self.check_open()?;
        self.inner.hub.subscribe(channel).await
    }

    /// Closes the pool: ends every notification stream, stops the listening
    /// task, then waits for checked-out clients and lock guards to be
    /// returned and closes every connection.
    fn stats(&self) -> db_core::PoolStats {
        let pool = &self.inner.pool;
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        self.inner.waits.stats(pool.size(), idle)
    }

    async fn close(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        inner.hub.close();
        inner.shutdown.send_replace(true);
        let listener = inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        inner.pool.close().await;
    }
}

// Each statement on a session of its own, as [`Pool::run`] (through a
// clone of the pool: `&mut pool.clone()`), so a function taking
// `&mut impl Executor` accepts a pool as well as a client or transaction.
db_core::backend::executor_for_pool!(PgPool);

#[cfg(test)]
mod tests {
    use super::*;

    /// libpq refuses a parameter it does not know; the driver would only
    /// warn, printing its value (a mistyped `PASSWORD=` included), and
    /// connect without it (a mistyped `SSLMODE=` in plain text).
    #[test]
    fn unknown_url_parameters_are_refused_without_their_value() {
        for (query, key) in [
            ("PASSWORD=SECRET2", "PASSWORD"),
            ("sslpassword=KEYPASS1", "sslpassword"),
            ("SSLMODE=verify-full", "SSLMODE"),
            ("ssl_mode=verify-full", "ssl_mode"),
            ("target_session_attrs=read-write", "target_session_attrs"),
        ] {
            let mut config = PostgresConfig::default();
            config.url = Some(format!("postgres://u@h/db?sslmode=disable&{query}"));
            let error = connect_options(&config).expect_err(query).to_string();
            assert!(error.contains(&format!("`{key}`")), "{error}");
            let value = query.split_once('=').map(|(_, v)| v).unwrap_or_default();
            assert!(!error.contains(value), "{error}");
        }
        let mut config = PostgresConfig::default();
        config.url = Some(
            "postgres://u@h/db?sslmode=disable&application_name=a&options=-c%20x%3D1\
             &connect_timeout=3&statement-cache-capacity=5&host=h2&port=5&dbname=d&user=v\
             &password=p&sslrootcert=&sslcert=&sslkey="
                .into(),
        );
        connect_options(&config).expect("libpq's parameters are accepted");
    }

    #[test]
    fn a_named_root_certificate_is_checked_under_require_and_prefer() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        for (mode, expected) in [
            ("require", PgSslMode::VerifyCa),
            ("prefer", PgSslMode::VerifyCa),
            ("verify-full", PgSslMode::VerifyFull),
            ("disable", PgSslMode::Disable),
        ] {
            let mut config = PostgresConfig::default();
            config.url = Some(format!(
                "postgres://u@h/db?sslmode={mode}&sslrootcert={root}"
            ));
            let o = connect_options(&config).expect("options");
            assert_eq!(
                format!("{:?}", o.get_ssl_mode()),
                format!("{expected:?}"),
                "{mode}"
            );
        }
    }

    #[test]
    fn fields_override_the_url() {
        let mut config = PostgresConfig::default();
        config.url = Some("postgres://alice:secret@db.example:6543/app".into());
        let o = connect_options(&config).expect("options");
        assert_eq!(
            (o.get_host(), o.get_port(), o.get_username()),
            ("db.example", 6543, "alice")
        );
        assert_eq!(o.get_database(), Some("app"));
        assert!(o.get_options().is_some_and(|s| s.contains("TimeZone=UTC")));

        config.host = Some("/run/pg".into());
        config.port = Some(5433);
        config.user = Some("bob".into());
        config.database = Some("other".into());
        let o = connect_options(&config).expect("options");
        assert_eq!(
            (o.get_host(), o.get_port(), o.get_username()),
            ("/run/pg", 5433, "bob")
        );
        assert_eq!(o.get_database(), Some("other"));
        let target = Target::new(o);
        assert_eq!(target.description(), "postgres://bob@/run/pg:5433/other");
    }

    /// A server that accepts TCP connections and never answers: the
    /// connect timeout (the URL's, then the configured one) ends the wait.
    #[tokio::test]
    async fn a_silent_server_fails_within_the_connect_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = listener.local_addr().expect("address").port();
        let url = format!("postgres://u@127.0.0.1:{port}/db?connect_timeout=2&sslmode=disable");
        for config in [
            Config::new().postgres_url(&url),
            Config::new()
                .postgres_url(format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable"))
                .connect_timeout(Duration::from_secs(2)),
        ] {
            let started = Instant::now();
            let err = PgPool::connect(&config).await.expect_err("silent server");
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
                "{waited:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("timed out") && text.contains("connect"),
                "{text}"
            );
        }
        drop(listener);
    }

    #[test]
    fn connect_timeout_reads_as_libpq_reads_it() {
        let (url, value) =
            db_core::split_connect_timeout("postgres://h/db?a=1&connect_timeout=7&b=2");
        assert_eq!(
            (url.as_str(), value.as_deref()),
            ("postgres://h/db?a=1&b=2", Some("7"))
        );
        let config = Config::new().postgres_url("postgres://h/db?connect_timeout=0");
        assert_eq!(connect_timeout(&config).ok(), Some(config.acquire_timeout));
        let config = Config::new().postgres_url("postgres://h/db?connect_timeout=1");
        assert_eq!(connect_timeout(&config).ok(), Some(Duration::from_secs(2)));
        let config = Config::new().postgres_url("postgres://u:pw@h/db?connect_timeout=soon");
        let err = connect_timeout(&config).expect_err("not a number");
        assert!(err.to_string().contains("connect_timeout"), "{err}");
    }

    #[test]
    fn a_bad_url_is_an_error_without_the_password() {
        let mut config = PostgresConfig::default();
        config.url = Some("postgres://u:secret@host:notaport/db".into());
        let err = connect_options(&config).expect_err("bad URL");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
