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
//! - **PGlite**: one embedded backend per process holds the schema, and
//!   tests take turns on it (a test holds it from `database()` until its
//!   [`TestDatabase`] is dropped, so tests running in parallel never see each
//!   other's data), reset in between.
//!
//! The setup should be schema only: rows it inserts are removed by the first
//! reset.
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

mod pglite;
mod postgres;
pub use postgres::with_database;
mod reset;

use db::{AnyPool, BackendKind, Config, Result};

/// A factory of isolated test databases sharing one setup.
#[derive(Debug)]
pub struct TestDatabases {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Pglite(pglite::Shared),
    Postgres(postgres::Template),
}

impl TestDatabases {
    /// Databases on the backend `config` selects, each starting with `setup`
    /// applied. Nothing is opened until the first [`database`](Self::database).
    pub fn new(config: Config, setup: impl Into<String>) -> TestDatabases {
        let setup = setup.into();
        let inner = match config.backend {
            BackendKind::Pglite => Inner::Pglite(pglite::Shared::new(config, setup)),
            _ => Inner::Postgres(postgres::Template::new(config, setup)),
        };
        TestDatabases { inner }
    }

    /// A database for one test, as the setup left it.
    pub async fn database(&self) -> Result<TestDatabase> {
        match &self.inner {
            Inner::Pglite(shared) => shared.database().await,
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
    Pglite { _turn: pglite::Turn },
    Postgres { _database: postgres::Lease },
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

/// A short, stable name for a setup script.
fn setup_hash(setup: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(setup.as_bytes())[..8])
}
