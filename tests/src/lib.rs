//! Support for the conformance suite in `tests/conformance`: fresh, isolated
//! databases on the backend the test matrix selects.
//!
//! `COCALC_DB` selects the backend as everywhere else; unset, the suite runs
//! on PGlite so that plain `cargo test` needs no server. On PGlite each test
//! gets an in-memory database of its own; on Postgres, a database of its own
//! on the server in `DATABASE_URL` from `db-testing`, which resets a
//! database an earlier test is done with rather than creating one.

use std::sync::LazyLock;

use db::{AnyPool, BackendKind, Config, DataDir, Pool, Result};
use db_testing::{TestDatabase, TestDatabases};

/// A database for one test, removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    /// The pool on the test's own database.
    pub pool: AnyPool,
    /// The configuration it was opened with.
    pub config: Config,
    /// The test's database on a server, given back when the test ends.
    _database: Option<TestDatabase>,
}

/// The configuration of the backend under test, before per-test changes.
pub fn base_config() -> Config {
    match db_testing::config_from_env() {
        Ok(c) => c,
        Err(e) => panic!("invalid test configuration: {e}"),
    }
}

/// The suite's empty test databases, recycled between tests on every backend.
static DATABASES: LazyLock<TestDatabases> = LazyLock::new(|| TestDatabases::new(base_config(), ""));

impl TestDb {
    /// A fresh database with default settings: an empty one from
    /// `db-testing`, which some earlier test may have used and that was
    /// reset since.
    pub async fn new() -> TestDb {
        match DATABASES.database().await {
            Ok(database) => TestDb {
                pool: database.pool().clone(),
                config: database.config().clone(),
                _database: Some(database),
            },
            Err(e) => panic!("could not create a test database: {e}"),
        }
    }

    /// A fresh database with settings adjusted by `adjust`.
    pub async fn with_config(adjust: impl FnOnce(Config) -> Config) -> TestDb {
        match TestDb::try_with_config(adjust).await {
            Ok(db) => db,
            Err(e) => panic!("could not create a test database: {e}"),
        }
    }

    /// Like [`TestDb::with_config`], returning the error instead of panicking.
    pub async fn try_with_config(adjust: impl FnOnce(Config) -> Config) -> Result<TestDb> {
        let base = base_config();
        if base.backend == BackendKind::Pglite {
            // A backend of its own per test: PGlite runs one session at a
            // time, and a shared one would run the suite's tests one by one.
            let config = adjust(base.pglite(DataDir::Memory));
            let pool = AnyPool::connect(&config).await?;
            return Ok(TestDb {
                pool,
                config,
                _database: None,
            });
        }
        // On a server, a database some earlier test is done with, reset.
        let database = DATABASES.database().await?;
        let config = adjust(database.config().clone());
        let pool = AnyPool::connect(&config).await?;
        Ok(TestDb {
            pool,
            config,
            _database: Some(database),
        })
    }

    /// Which backend is under test.
    pub fn backend(&self) -> BackendKind {
        self.pool.backend()
    }

    /// Runs one statement without parameters on the pool; returns the rows
    /// it affected and panics, naming the statement, if it fails.
    pub async fn sql(&self, sql: &str) -> u64 {
        match self.pool.execute(sql, &[]).await {
            Ok(n) => n,
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}
