//! Fast, isolated databases for tests, with a schema already applied.
//!
//! [`TestDatabases`] is made once per test process (a `static` is the usual
//! home) with the configuration under test and the setup SQL (the schema);
//! each test then calls [`TestDatabases::database`] and gets a database of
//! its own that starts exactly as the setup left it.
//!
//! Both backends share one trick, the *reset*: it undoes only what the last
//! test did (drops every object created after the setup, empties the tables
//! that have rows, restarts the sequences that moved), which costs far less
//! than making a database. If a test changed the schema of the setup itself
//! (altered a setup table, say), the reset notices it from a catalog
//! fingerprint and the database is made afresh instead.
//!
//! - **PostgreSQL**: the setup runs once into a template database (named by
//!   a hash of the setup, so later runs reuse it). A test gets a database
//!   some earlier test of the process is done with, reset, or else a new
//!   `CREATE DATABASE ... TEMPLATE` clone; as many databases exist as tests
//!   ran at once. A process cannot clean up as it exits, so the next process
//!   on the same host drops the databases of processes that have ended.
//! - **PGlite**: embedded backends are made as tests ask for them, each
//!   held by one test from `database()` until its [`TestDatabase`] is
//!   dropped (so tests running in parallel never see each other's data)
//!   and reset before the next test gets it: as many exist as databases
//!   were held at once.
//!
//! The setup is SQL, a schema-sync spec, seed rows, or all three
//! ([`Setup`]). Rows that exist once it ran are copied aside and put back
//! by every reset: each test starts with exactly them.
//!
//! The shortest form is the attribute [`test`]: a test function that takes
//! the [`TestDatabase`], on the backend the environment selects (`COCALC_DB`,
//! `DATABASE_URL`; unset, embedded and in memory):
//!
//! ```no_run
//! use db::Pool;
//!
//! #[db_testing::test(
//!     setup = "CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL)",
//!     seed = "INSERT INTO plans VALUES (1, 'free')",
//! )]
//! async fn plans_start_with_free(db: db_testing::TestDatabase) -> db::Result<()> {
//!     let names: Vec<String> = db.pool().query_scalar("SELECT name FROM plans", &[]).await?;
//!     assert_eq!(names, ["free"]);
//!     Ok(())
//! }
//! ```
//!
//! `spec = "path/to/schema.json"` (relative to the crate's `Cargo.toml`,
//! read at compile time; `.toml` for the TOML form) applies a schema-sync
//! spec after `setup`. Tests with equal arguments share their databases.
//!
//! The same without the attribute, with a [`TestDatabases`] of your own:
//!
//! ```no_run
//! use std::sync::LazyLock;
//! use db::{Config, Executor, Pool};
//! use db_testing::TestDatabases;
//!
//! static DATABASES: LazyLock<TestDatabases> = LazyLock::new(|| {
//!     TestDatabases::new(Config::from_env().expect("configuration"), "CREATE TABLE t (id int8 PRIMARY KEY)")
//! });
//!
//! #[tokio::test]
//! async fn inserts_one_row() {
//!     let db = DATABASES.database().await.expect("a test database");
//!     db.pool().execute("INSERT INTO t VALUES (1)", &[]).await.expect("insert");
//! }
//! ```

#[cfg(feature = "pglite")]
mod pglite;
mod postgres;
pub use postgres::with_database;
mod reset;
mod setup;
pub use setup::Setup;

/// A test that gets a fresh database: see the [crate] documentation.
///
/// Arguments, all optional: `setup = <expression of a &str>` (setup SQL),
/// `spec = "path"` (a schema-sync spec file, relative to the crate's
/// `Cargo.toml`), `seed = <expression of a &str>` (rows every test starts
/// with). The function is `async`, takes one argument (the
/// [`TestDatabase`]) and returns what a `#[test]` may return. It runs on a
/// multi-threaded tokio runtime of its own.
pub use db_macros::db_testing_test as test;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use db::{AnyPool, BackendKind, Config, DataDir, Result};

/// The configuration tests run on: [`Config::from_env`], with the embedded
/// backend in memory when `COCALC_DB` is not set (never a persistent data
/// directory the environment may name for the application itself).
pub fn config_from_env() -> Result<Config> {
    let config = Config::from_env()?;
    Ok(if std::env::var_os("COCALC_DB").is_none() {
        config.pglite(DataDir::Memory)
    } else {
        config
    })
}

/// A factory of isolated test databases sharing one setup.
#[derive(Debug)]
pub struct TestDatabases {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    #[cfg(feature = "pglite")]
    Pglite(Box<pglite::Shared>),
    /// PGlite selected in a build without the `pglite` feature.
    #[cfg(not(feature = "pglite"))]
    NoPglite,
    Postgres(Box<postgres::Template>),
}

impl TestDatabases {
    /// Databases on the backend `config` selects, each starting with `setup`
    /// applied. Nothing is opened until the first [`database`](Self::database).
    pub fn new(config: Config, setup: impl Into<Setup>) -> TestDatabases {
        let setup: Setup = setup.into();
        let inner = match config.backend {
            #[cfg(feature = "pglite")]
            BackendKind::Pglite => Inner::Pglite(Box::new(pglite::Shared::new(config, setup))),
            #[cfg(not(feature = "pglite"))]
            BackendKind::Pglite => Inner::NoPglite,
            _ => Inner::Postgres(Box::new(postgres::Template::new(config, setup))),
        };
        TestDatabases { inner }
    }

    /// A database for one test, as the setup left it.
    pub async fn database(&self) -> Result<TestDatabase> {
        match &self.inner {
            #[cfg(feature = "pglite")]
            Inner::Pglite(shared) => shared.database().await,
            #[cfg(not(feature = "pglite"))]
            Inner::NoPglite => Err(db::ConfigError::BackendNotBuilt {
                backend: BackendKind::Pglite,
                krate: "db-testing",
            }
            .into()),
            Inner::Postgres(template) => template.database().await,
        }
    }
}

/// One test's database; dropping it ends the test's use of it.
#[derive(Debug)]
pub struct TestDatabase {
    pool: AnyPool,
    config: Config,
    _hold: Hold,
}

#[derive(Debug)]
enum Hold {
    #[cfg(feature = "pglite")]
    Pglite {
        _turn: pglite::Turn,
    },
    Postgres {
        _database: postgres::Lease,
    },
}

impl TestDatabase {
    /// The pool on this database. Do not close it: on PGlite the backend is
    /// shared with the tests that come after.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The configuration [`pool`](Self::pool) was opened with. On
    /// PostgreSQL it names this database, so a test can open pools of its own
    /// on it with other settings; on PGlite the database lives in this
    /// process only, and only [`pool`](Self::pool) reaches it.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// What [`test`] expands to; not a public API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    use super::*;

    /// Runs one test: its database from the process-wide [`TestDatabases`]
    /// of `setup` on [`config_from_env`], then `test` with it.
    pub fn run<F, Fut, R>(setup: impl FnOnce() -> Result<Setup>, test: F) -> R
    where
        F: FnOnce(TestDatabase) -> Fut,
        Fut: Future<Output = R>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("db_testing::test: cannot start a tokio runtime: {e}"));
        runtime.block_on(async move {
            let databases = setup()
                .and_then(shared)
                .unwrap_or_else(|e| panic!("db_testing::test: invalid setup: {e}"));
            let database = databases
                .database()
                .await
                .unwrap_or_else(|e| panic!("db_testing::test: no test database: {e}"));
            test(database).await
        })
    }

    /// The one [`TestDatabases`] of this process for `setup`.
    fn shared(setup: Setup) -> Result<&'static TestDatabases> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, &'static TestDatabases>>> = OnceLock::new();
        let mut registry = REGISTRY
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = setup.hash();
        if let Some(databases) = registry.get(&key) {
            return Ok(databases);
        }
        // One per distinct setup, for the life of the process, as a
        // `static` would be.
        let databases: &'static TestDatabases =
            Box::leak(Box::new(TestDatabases::new(config_from_env()?, setup)));
        registry.insert(key, databases);
        Ok(databases)
    }
}

/// A short, stable name for a setup script.
fn setup_hash(setup: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(setup.as_bytes())[..8])
}
