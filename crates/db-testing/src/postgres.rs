//! PostgreSQL: a template database per setup, cloned per test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use db::{AnyPool, Config, Error, Pool, Result, quote_ident};
use tokio::sync::OnceCell;

use crate::{Hold, TestDatabase, setup_hash};

#[derive(Debug)]
pub(crate) struct Template {
    config: Config,
    setup: String,
    name: String,
    created: OnceCell<()>,
}

/// Drops a database when dropped: what ends a test's database on a server.
#[derive(Debug)]
pub struct DropOnExit {
    admin_url: String,
    name: String,
}

impl DropOnExit {
    /// Drops database `name` through the maintenance database at
    /// `admin_url` when this value is dropped.
    pub fn new(admin_url: impl Into<String>, name: impl Into<String>) -> Self {
        DropOnExit {
            admin_url: admin_url.into(),
            name: name.into(),
        }
    }
}

fn admin_url(config: &Config) -> String {
    config
        .postgres
        .url
        .clone()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1/postgres".to_owned())
}

/// Replaces the database name in a `postgres://` URL, keeping its query.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{database}?{q}"),
        None => format!("{host}/{database}"),
    }
}

/// A connection to the server's maintenance database, made per use: pools
/// of the server backend belong to the runtime that made them, and every
/// test has a runtime of its own.
async fn admin(url: &str) -> Result<AnyPool> {
    // Two: the advisory lock guard holds one connection while the other works.
    AnyPool::connect(&Config::new().postgres_url(url).max_connections(2)).await
}

impl Template {
    pub(crate) fn new(config: Config, setup: String) -> Template {
        let name = format!("db_testing_template_{}", setup_hash(&setup));
        Template {
            config,
            setup,
            name,
            created: OnceCell::new(),
        }
    }

    /// Creates the template unless an earlier run (or another test process,
    /// serialized by an advisory lock) already did.
    async fn create(&self) -> Result<()> {
        let url = admin_url(&self.config);
        let admin = admin(&url).await?;
        let key = i64::from_str_radix(&setup_hash(&self.setup)[..15], 16).unwrap_or(0);
        let lock = admin.lock(key, Duration::from_secs(120)).await?;
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[self.name.as_str().into()],
            )
            .await?
            .is_some();
        if !exists {
            // Built under a temporary name and renamed when complete, so an
            // interrupted setup never leaves a half-made template behind.
            let building = format!("{}_building", self.name);
            let drop = format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&building)
            );
            admin.batch_execute(&drop).await?;
            let create = format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&building)
            );
            admin.batch_execute(&create).await?;
            let pool = AnyPool::connect(
                &self
                    .config
                    .clone()
                    .postgres_url(with_database(&url, &building)),
            )
            .await?;
            let applied = pool.batch_execute(&self.setup).await;
            pool.close().await;
            applied?;
            let rename = format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(&building),
                quote_ident(&self.name)
            );
            // The setup pool is closed, but the server may not have seen its
            // sessions end yet; they belong to nobody else.
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    &[building.as_str().into()],
                )
                .await?;
            let mut tries = 0;
            loop {
                match admin.batch_execute(&rename).await {
                    Err(e) if e.code() == Some(&db::SqlState::OBJECT_IN_USE) && tries < 250 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => break other?,
                }
            }
        }
        drop(lock);
        admin.close().await;
        Ok(())
    }

    pub(crate) async fn database(&self) -> Result<TestDatabase> {
        self.created.get_or_try_init(|| self.create()).await?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "db_testing_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            setup_hash(&format!("{:?}", std::time::SystemTime::now()))
        );
        let url = admin_url(&self.config);
        let admin = admin(&url).await?;
        let create = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(&self.name)
        );
        let created = admin.batch_execute(&create).await;
        admin.close().await;
        created?;
        let hold = DropOnExit::new(url.clone(), name.clone());
        let pool = AnyPool::connect(&self.config.clone().postgres_url(with_database(&url, &name)))
            .await
            .map_err(|e| Error::backend(format!("connecting to test database {name}"), e))?;
        Ok(TestDatabase {
            pool,
            _hold: Hold::Postgres { _database: hold },
        })
    }
}

impl Drop for DropOnExit {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on; a
        // short-lived runtime on its own thread removes the database.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = admin(&url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&name));
                    if let Err(e) = admin.batch_execute(&sql).await {
                        tracing::warn!(error = %e, database = name, "dropping a test database failed");
                    }
                    admin.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            with_database("postgres://u@h/p?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
