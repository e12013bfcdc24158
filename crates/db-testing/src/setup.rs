//! What every test database starts with: setup SQL, a schema-sync spec, and
//! seed rows.

use db::{AnyPool, Error, Pool, Result};

/// What every test database of a [`TestDatabases`](crate::TestDatabases)
/// starts with, applied once per database made (never per test):
///
/// 1. the setup SQL, a `;`-separated script ([`Setup::sql`]);
/// 2. a schema-sync spec, applied by `schema_sync::sync` as the hub applies
///    it, so a test starts on a converged database ([`Setup::spec`]);
/// 3. the seed SQL ([`Setup::seed`]).
///
/// Rows that exist once all three ran (seed rows, rows the setup SQL
/// inserted, schema-sync's own bookkeeping) are part of the starting point:
/// each test starts with exactly them, whatever the tests before it
/// deleted, changed or added.
///
/// ```
/// use db_testing::Setup;
///
/// let setup = Setup::new()
///     .sql("CREATE TABLE plans (id int PRIMARY KEY, name text)")
///     .seed("INSERT INTO plans VALUES (1, 'free'), (2, 'pro')");
/// # let _ = setup;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Setup {
    sql: String,
    spec: Option<Box<schema_sync::Schema>>,
    seed: String,
}

impl Setup {
    /// Nothing: an empty database.
    pub fn new() -> Setup {
        Setup::default()
    }

    /// Setup SQL: a `;`-separated script run by the simple query protocol.
    #[must_use]
    pub fn sql(mut self, sql: impl Into<String>) -> Setup {
        self.sql = sql.into();
        self
    }

    /// A schema-sync spec, applied after the setup SQL.
    #[must_use]
    pub fn spec(mut self, spec: schema_sync::Schema) -> Setup {
        self.spec = Some(Box::new(spec));
        self
    }

    /// [`Setup::spec`] from a spec file's contents: TOML when `name` ends in
    /// `.toml`, else JSON (the interchange format of `shared/fixtures`).
    /// `name` only picks the format and names the file in errors.
    pub fn spec_text(self, name: &str, text: &str) -> Result<Setup> {
        let spec = if name.ends_with(".toml") {
            schema_sync::Schema::from_toml(text)
        } else {
            schema_sync::Schema::from_json(text)
        };
        spec.map(|spec| self.spec(spec))
            .map_err(|e| Error::backend(format!("db-testing: schema spec {name}"), e))
    }

    /// Seed SQL, run after the setup SQL and the spec: the rows every test
    /// starts with.
    #[must_use]
    pub fn seed(mut self, sql: impl Into<String>) -> Setup {
        self.seed = sql.into();
        self
    }

    /// A short, stable name for this setup: databases made from equal
    /// setups are interchangeable.
    pub(crate) fn hash(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for part in [
            self.sql.as_str(),
            &self
                .spec
                .as_ref()
                .map(|s| format!("{s:?}"))
                .unwrap_or_default(),
            &self.seed,
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hex::encode(&hasher.finalize()[..8])
    }

    /// Applies the setup to the fresh database behind `pool`.
    pub(crate) async fn apply(&self, pool: &AnyPool) -> Result<()> {
        if !self.sql.trim().is_empty() {
            pool.batch_execute(&self.sql).await?;
        }
        if let Some(spec) = &self.spec {
            schema_sync::sync(pool, spec, &schema_sync::Options::new())
                .await
                .map_err(|e| Error::backend("db-testing: applying the schema spec", e))?;
        }
        if !self.seed.trim().is_empty() {
            pool.batch_execute(&self.seed).await?;
        }
        Ok(())
    }
}

impl From<&str> for Setup {
    fn from(sql: &str) -> Setup {
        Setup::new().sql(sql)
    }
}

impl From<String> for Setup {
    fn from(sql: String) -> Setup {
        Setup::new().sql(sql)
    }
}
