//! PostgreSQL: a template database per setup, cloned for the first tests
//! and recycled after: a database a test is done with is reset (like the
//! PGlite backend) and handed to the next test, which costs a fraction of
//! `CREATE DATABASE`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use db::backend::process_running;
use db::{AnyPool, Config, Error, Pool, Result, quote_ident};
use tokio::sync::OnceCell;

use crate::reset::{Baseline, MARKER, check_marked, keep_seeds, mark, reset};
use crate::{Hold, Setup, TestDatabase, setup_hash};

/// Every test database's name starts with this, then this host's tag, the
/// process ID and a counter: enough to find the ones a dead process left.
const PREFIX: &str = "db_testing_";

#[derive(Debug)]
pub(crate) struct Template {
    config: Config,
    setup: Setup,
    /// [`Setup::hash`] of `setup`.
    hash: String,
    name: String,
    created: OnceCell<()>,
    /// The setup's state, the same in every clone of the template.
    baseline: OnceCell<Baseline>,
    /// Databases whose test has ended, waiting for the next test.
    free: Arc<Mutex<Vec<String>>>,
}

/// A test's claim on a recycled or new database: gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    name: String,
    free: Arc<Mutex<Vec<String>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(std::mem::take(&mut self.name));
    }
}

fn admin_url(config: &Config) -> String {
    config
        .postgres
        .url
        .clone()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1/postgres".to_owned())
}

/// Replaces the database name in a `postgres://` URL, keeping its query
/// (which may hold paths, such as `sslrootcert=/etc/ca.crt`).
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
    pub(crate) fn new(config: Config, setup: Setup) -> Template {
        let hash = setup.hash();
        let name = format!("db_testing_template_{hash}");
        Template {
            config,
            setup,
            hash,
            name,
            created: OnceCell::new(),
            baseline: OnceCell::new(),
            free: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Drops the test databases that processes of this host which are no
    /// longer running left behind (a recycled database outlives its last
    /// test until its process ends, and nothing runs when a process exits).
    async fn reap(admin: &AnyPool) -> Result<()> {
        let pattern = format!("{}{}\\_%", PREFIX.replace('_', "\\_"), host_tag());
        let names: Vec<String> = admin
            .query(
                "SELECT datname::text FROM pg_catalog.pg_database \
                 WHERE datname LIKE $1 AND pg_catalog.shobj_description(oid, 'pg_database') = $2",
                &[pattern.as_str().into(), MARKER.into()],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_>>()?;
        for name in names {
            let pid = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('_').nth(1))
                .and_then(|pid| pid.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !process_running(pid)
            {
                let sql = format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&name)
                );
                admin.batch_execute(&sql).await?;
            }
        }
        Ok(())
    }

    /// Creates the template unless an earlier run (or another test process,
    /// serialized by an advisory lock) already did.
    async fn create(&self) -> Result<()> {
        let url = admin_url(&self.config);
        let admin = admin(&url).await?;
        let key = i64::from_str_radix(&self.hash[..15], 16).unwrap_or(0);
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
            let applied = match self.setup.apply(&pool).await {
                Ok(()) => keep_seeds(&pool).await,
                Err(e) => Err(e),
            };
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
        let reaped = Template::reap(&admin).await;
        drop(lock);
        admin.close().await;
        if let Err(e) = reaped {
            tracing::warn!(error = %e, "removing test databases of ended processes failed");
        }
        Ok(())
    }

    /// A database a test is done with, reset for the next one; `None` when
    /// there is none, or it could not be reset (then it is dropped).
    async fn recycled(&self) -> Result<Option<(String, AnyPool)>> {
        let Some(baseline) = self.baseline.get() else {
            return Ok(None);
        };
        let url = admin_url(&self.config);
        loop {
            let name = self
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(name) = name else { return Ok(None) };
            let pool = self.connect(&url, &name).await?;
            if let Err(e) = check_marked(&pool).await {
                // Not ours after all: left exactly as it is.
                tracing::warn!(error = %e, database = name, "not reusing a test database");
                pool.close().await;
                continue;
            }
            // Sessions the last test left (a leaked connection, a transaction
            // still open) would hold locks the reset needs.
            let cleaned = pool
                .batch_execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_catalog.pg_backend_pid()",
                )
                .await;
            match cleaned.and(reset(&pool, baseline).await) {
                Ok(true) => return Ok(Some((name, pool))),
                outcome => {
                    if let Err(e) = outcome {
                        tracing::info!(error = %e, database = name, "test database reset failed; dropping it");
                    }
                    pool.close().await;
                    drop_database(&url, &name).await;
                }
            }
        }
    }

    async fn connect(&self, url: &str, name: &str) -> Result<AnyPool> {
        AnyPool::connect(&self.config.clone().postgres_url(with_database(url, name)))
            .await
            .map_err(|e| Error::backend(format!("connecting to test database {name}"), e))
    }

    pub(crate) async fn database(&self) -> Result<TestDatabase> {
        self.created.get_or_try_init(|| self.create()).await?;
        let (name, pool) = match self.recycled().await? {
            Some(recycled) => recycled,
            None => self.clone_template().await?,
        };
        let url = with_database(&admin_url(&self.config), &name);
        Ok(TestDatabase {
            pool,
            config: self.config.clone().postgres_url(url),
            _hold: Hold::Postgres {
                _database: Lease {
                    name,
                    free: Arc::clone(&self.free),
                },
            },
        })
    }

    async fn clone_template(&self) -> Result<(String, AnyPool)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{PREFIX}{}_{}_{}",
            host_tag(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
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
        let pool = match self.connect(&url, &name).await {
            Ok(pool) => pool,
            Err(e) => {
                drop_database(&url, &name).await;
                return Err(e);
            }
        };
        if let Err(e) = mark(&pool).await.and(
            self.baseline
                .get_or_try_init(|| Baseline::capture(&pool))
                .await
                .map(drop),
        ) {
            pool.close().await;
            drop_database(&url, &name).await;
            return Err(e);
        }
        Ok((name, pool))
    }
}

/// Tells this host's test databases from other hosts' on a shared server.
fn host_tag() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    setup_hash(host.trim())
}

/// Drops test database `name`; a failure is logged, not returned: it leaves
/// a database behind, which the next process on this host removes.
async fn drop_database(url: &str, name: &str) {
    let dropped = async {
        let admin = admin(url).await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
        let dropped = admin.batch_execute(&sql).await;
        admin.close().await;
        dropped
    };
    if let Err(e) = dropped.await {
        tracing::warn!(error = %e, database = name, "dropping a test database failed");
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
