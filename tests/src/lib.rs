//! Support for the conformance suite in `tests/conformance`: fresh, isolated
//! databases on the backend the test matrix selects.
//!
//! `COCALC_DB` selects the backend as everywhere else; unset, the suite runs
//! on PGlite so that plain `cargo test` needs no server. On Postgres each test
//! gets a database of its own, created from `template0` on the server in
//! `DATABASE_URL` and dropped afterwards.

use std::sync::atomic::{AtomicU64, Ordering};

use db::{AnyPool, BackendKind, Config, DataDir, Pool, Result, quote_ident};
use db_testing::{DropOnExit, with_database};

/// A database for one test, removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    /// The pool on the test's own database.
    pub pool: AnyPool,
    /// The configuration it was opened with.
    pub config: Config,
    /// Drops the test's database on a server when the test ends.
    _drop_database: Option<DropOnExit>,
}

/// The configuration of the backend under test, before per-test changes.
pub fn base_config() -> Config {
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => panic!("invalid test configuration: {e}"),
    };
    if std::env::var_os("COCALC_DB").is_none() {
        config = config.pglite(DataDir::Memory);
    }
    config
}

fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("conformance_{}_{n}_{nanos}", std::process::id())
}

impl TestDb {
    /// A fresh database with default settings.
    pub async fn new() -> TestDb {
        TestDb::with_config(|c| c).await
    }

    /// A fresh database with settings adjusted by `adjust`.
    pub async fn with_config(adjust: impl FnOnce(Config) -> Config) -> TestDb {
        match TestDb::try_with_config(adjust).await {
            Ok(db) => db,
            Err(e) => panic!("could not create a test database: {e}"),
        }
    }

    async fn try_with_config(adjust: impl FnOnce(Config) -> Config) -> Result<TestDb> {
        let base = base_config();
        if base.backend == BackendKind::Pglite {
            let config = adjust(base.pglite(DataDir::Memory));
            let pool = AnyPool::connect(&config).await?;
            return Ok(TestDb {
                pool,
                config,
                _drop_database: None,
            });
        }
        let admin_url = base
            .postgres
            .url
            .clone()
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1/postgres".to_owned());
        let name = unique_name();
        let admin = AnyPool::connect(
            &Config::new()
                .postgres_url(admin_url.clone())
                .max_connections(1),
        )
        .await?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&name)
            ))
            .await?;
        admin.close().await;
        let config = adjust(base.postgres_url(with_database(&admin_url, &name)));
        let pool = AnyPool::connect(&config).await?;
        Ok(TestDb {
            pool,
            config,
            _drop_database: Some(DropOnExit::new(admin_url, name)),
        })
    }

    /// Which backend is under test.
    pub fn backend(&self) -> BackendKind {
        self.pool.backend()
    }
}
