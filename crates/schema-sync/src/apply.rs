//! Planning against a live database, and applying plans.

use std::time::Duration;

use db_core::{BackendKind, Client, DbError, Executor, Pool, Value, quote_ident};
use sha2::{Digest, Sha256};

use crate::ddl::{create_index, create_table, rel};
use crate::introspect::{LiveSchema, introspect, load_dependents};
use crate::normalize::{is_serial, normalize_type};
use crate::ownership::Ownership;
use crate::plan::{
    Change, ChangeKind, DiffOptions, Drift, DriftKind, HazardKind, Plan, diff_rendered,
};
use crate::spec::{DEFAULT_SCHEMA, Schema, Table};
use crate::validate::{SCRATCH_PREFIX, ValidationErrors, validate};

/// The advisory lock key that serializes schema syncs (`"schemasy"`).
pub const LOCK_KEY: i64 = 0x7363_6865_6d61_7379;

/// The schema a spec describes when it names none (`public`); a spec names
/// its own with [`Schema::schema`].
pub const NAMESPACE: &str = DEFAULT_SCHEMA;

const FORMAT: &str = "schema-sync/1";

/// Everything that can go wrong planning or applying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The spec failed validation; nothing was sent to the server.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// The server rejected part of the spec (a type, default, check or
    /// index expression) while canonicalizing or creating it.
    #[error("table {table:?}{}: the server rejected the spec: {source}", rejected_where(.column, .index))]
    Rejected {
        /// The table.
        table: String,
        /// The column, when the server's error position points into one.
        column: Option<String>,
        /// The index, when an index definition was rejected.
        index: Option<String>,
        /// The server's error.
        #[source]
        source: Box<db_core::Error>,
    },
    /// The spec declares a table that another component declares its own
    /// (`COMMENT ON TABLE ... IS 'cocalc-component:NAME'`); schema-sync
    /// never manages it.
    #[error(
        "table {table:?} belongs to component {component:?} (its comment marks it \
         cocalc-component:{component}); schema-sync does not manage it: remove it from the spec"
    )]
    ComponentTable {
        /// The table.
        table: String,
        /// The component named by its mark.
        component: String,
    },
    /// A column type the server does not know (resolved with `to_regtype`
    /// before any DDL runs).
    #[error("table {table:?}, column {column:?}: {type_:?} is not a type the server knows{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    UnknownType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The type as written.
        type_: String,
        /// The server's error, when it gave one.
        reason: Option<String>,
    },
    /// Rows would violate a NOT NULL the spec asks for, and no
    /// `null_backfill` was given.
    #[error(
        "table {table:?}, column {column:?}: cannot set NOT NULL, {count} row(s) are NULL; \
         give the column a null_backfill expression or fix the rows"
    )]
    NullRows {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// How many rows are NULL.
        count: i64,
    },
    /// The plan is not the one reviewed: its hash is not
    /// [`Options::expect_hash`]; nothing was changed.
    #[error(
        "the plan's hash is {actual}, not the expected {expected}; nothing was changed. The plan:\n{plan}"
    )]
    PlanChanged {
        /// The hash given.
        expected: String,
        /// The hash of the plan the sync would have applied.
        actual: String,
        /// That plan, as text.
        plan: String,
    },
    /// The plan has destructive changes and `allow_destructive` is off.
    #[error("the plan has destructive changes and allow_destructive is off:\n{0}")]
    HazardsNotAllowed(String),
    /// A statement of the sync ran longer than
    /// [`Options::statement_timeout`] and was cancelled (`57014`); the
    /// transaction was rolled back.
    #[error(
        "`{change}` timed out: it ran longer than the statement timeout (or was cancelled) \
         and was rolled back, with the transaction it ran in; raise --statement-timeout or run \
         it when the table is quieter: {source}"
    )]
    StatementTimeout {
        /// The change's description and SQL.
        change: String,
        /// The server's error.
        #[source]
        source: Box<db_core::Error>,
    },
    /// A change failed on the server; the transaction was rolled back.
    #[error("applying `{change}` failed: {source}")]
    ApplyFailed {
        /// The change's description and SQL.
        change: String,
        /// The server's error.
        #[source]
        source: Box<db_core::Error>,
    },
    /// After applying, the database still differs from the spec (a bug in
    /// schema-sync); the transaction was rolled back.
    #[error("the database did not converge; remaining plan:\n{0}")]
    NotConverged(String),
    /// The sync could not get the locks it needs before its deadline
    /// ([`Options::lock_deadline`]); every attempt was rolled back, so
    /// nothing changed, unless `index_build` (a concurrent index build,
    /// which runs after the rest of the plan was committed; then the error
    /// comes inside [`SyncError::PartiallyApplied`]).
    #[error(
        "gave up after {waited:?}: could not lock {}{}{}",
        table.as_deref().map_or_else(|| "the tables".to_owned(), |t| format!("table {t:?}")),
        holders_suffix(.holders),
        if *.index_build { " for a concurrent index build; the index was not built" } else { "; nothing was changed" }
    )]
    LockTimeout {
        /// The table whose lock was not granted.
        table: Option<String>,
        /// How long the sync tried.
        waited: Duration,
        /// The sessions holding locks on it when the sync gave up.
        holders: Vec<LockHolder>,
        /// Whether a concurrent index build gave up.
        index_build: bool,
    },
    /// Another sync held the sync's advisory lock ([`LOCK_KEY`]) until the
    /// lock deadline ([`Options::lock_deadline`], or [`Options::lock_wait`]
    /// when shorter); nothing was changed.
    #[error(
        "gave up after {waited:?}: another schema sync holds the sync lock (advisory lock {LOCK_KEY}){}; nothing was changed",
        holders_suffix(.holders)
    )]
    SyncInProgress {
        /// How long the sync waited.
        waited: Duration,
        /// The sessions holding the lock (PostgreSQL).
        holders: Vec<LockHolder>,
    },
    /// A concurrently built index ended up invalid and was dropped.
    #[error("concurrent build of index {0:?} failed and left an invalid index (dropped)")]
    InvalidIndex(String),
    /// A change that runs outside the transaction (a concurrent index
    /// build) failed after the transactional part of the plan was
    /// committed: those changes, and the builds before it, stay applied.
    /// An invalid index the failed build left was dropped.
    #[error(
        "{source}\nthe plan was applied in part: {} committed before this failed (run the sync again once the cause is fixed):\n{}",
        if .applied.len() == 1 { "1 change was".to_owned() } else { format!("{} changes were", .applied.len()) },
        .applied.join("\n")
    )]
    PartiallyApplied {
        /// The changes that were committed, described (`-- add column "public"."t"."w"`).
        applied: Vec<String>,
        /// Why the change after them failed.
        #[source]
        source: Box<SyncError>,
    },
    /// The catalog returned something unexpected.
    #[error("unexpected catalog contents: {0}")]
    Catalog(String),
    /// The cached canonical schema could not be read or written.
    #[error("schema-sync bookkeeping: {0}")]
    Cache(#[from] serde_json::Error),
    /// Any other database error.
    #[error(transparent)]
    Db(#[from] db_core::Error),
}

/// A session holding a lock a sync waited for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LockHolder {
    /// Its server process id (`pg_terminate_backend` takes it).
    pub pid: i32,
    /// Its `application_name`.
    pub application: String,
    /// How long its transaction (or, outside one, its statement) has run.
    pub held_for: Option<Duration>,
    /// `active`, `idle in transaction`, ...
    pub state: String,
}

fn holders_suffix(holders: &[LockHolder]) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let list: Vec<String> = holders
        .iter()
        .map(|h| {
            let held = h
                .held_for
                .map(|d| format!(", for {:.1} s", d.as_secs_f64()))
                .unwrap_or_default();
            format!(
                "pid {} ({:?}, {}{held})",
                h.pid,
                h.application,
                if h.state.is_empty() { "?" } else { &h.state }
            )
        })
        .collect();
    format!(", held by {}", list.join(", "))
}

fn rejected_where(column: &Option<String>, index: &Option<String>) -> String {
    match (column, index) {
        (Some(c), _) => format!(", column {c:?}"),
        (None, Some(i)) => format!(", index {i:?}"),
        _ => String::new(),
    }
}

/// How [`sync`] and [`plan`] behave.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Drop columns and tables the spec does not declare, and allow
    /// narrowing type changes (hazard `DESTRUCTIVE`).
    pub allow_destructive: bool,
    /// On PostgreSQL, build indexes on existing tables with `CREATE INDEX
    /// CONCURRENTLY` outside the transaction (ignored on PGlite).
    pub concurrent_indexes: bool,
    /// `SET LOCAL lock_timeout` inside the apply transaction (PostgreSQL):
    /// how long one DDL statement waits for its lock, and so how long
    /// readers of the table can queue behind it. Default 3 s.
    pub lock_timeout: Option<Duration>,
    /// How long a sync keeps retrying (with backoff) while its locks are not
    /// granted, before it fails with [`SyncError::LockTimeout`]. Default 30 s.
    pub lock_deadline: Duration,
    /// `SET LOCAL statement_timeout` inside the apply transaction (PostgreSQL).
    pub statement_timeout: Option<Duration>,
    /// How long to wait for another sync to finish (the advisory lock);
    /// never longer than [`Options::lock_deadline`].
    pub lock_wait: Duration,
    /// Plan, check hazards, but change nothing.
    pub dry_run: bool,
    /// Apply the plan only if its [`Plan::hash`] is this one (compared
    /// without regard to ASCII case), checked under the sync's lock before
    /// anything changes: the plan reviewers saw, or
    /// [`SyncError::PlanChanged`].
    pub expect_hash: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_destructive: false,
            concurrent_indexes: false,
            lock_timeout: Some(Duration::from_secs(3)),
            lock_deadline: Duration::from_secs(30),
            statement_timeout: None,
            lock_wait: Duration::from_secs(120),
            dry_run: false,
            expect_hash: None,
        }
    }
}

impl Options {
    /// The defaults.
    pub fn new() -> Self {
        Options::default()
    }

    /// Sets [`Options::allow_destructive`].
    #[must_use]
    pub fn allow_destructive(mut self, yes: bool) -> Self {
        self.allow_destructive = yes;
        self
    }

    /// Sets [`Options::concurrent_indexes`].
    #[must_use]
    pub fn concurrent_indexes(mut self, yes: bool) -> Self {
        self.concurrent_indexes = yes;
        self
    }

    /// Sets [`Options::lock_timeout`].
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// Sets [`Options::lock_deadline`].
    #[must_use]
    pub fn lock_deadline(mut self, deadline: Duration) -> Self {
        self.lock_deadline = deadline;
        self
    }

    /// Sets [`Options::statement_timeout`].
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    /// Sets [`Options::lock_wait`].
    #[must_use]
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Sets [`Options::expect_hash`].
    #[must_use]
    pub fn expect_hash(mut self, hash: impl Into<String>) -> Self {
        self.expect_hash = Some(hash.into());
        self
    }

    /// Sets [`Options::dry_run`].
    #[must_use]
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }

    fn diff_options(&self, backend: BackendKind) -> DiffOptions {
        DiffOptions::new()
            .allow_destructive(self.allow_destructive)
            .concurrent_indexes(self.concurrent_indexes && backend == BackendKind::Postgres)
    }
}

/// What [`sync`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The plan that was applied (or, for a dry run, would be).
    pub plan: Plan,
    /// Whether anything was written.
    pub applied: bool,
    /// Whether the cached canonical spec was used (no canonicalization).
    pub cache_hit: bool,
}

struct Prepared {
    live: LiveSchema,
    /// Whether the spec's schema existed before the sync.
    schema_existed: bool,
    /// The ledger of owned objects; `None` before the first sync that
    /// writes one.
    owned: Option<Ownership>,
    desired: Schema,
    plan: Plan,
    spec_hash: String,
    server_version: String,
    cache_hit: bool,
}

fn sha256(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// The server version, whether schema `nsp` exists, and the cached spec
/// hash and canonical spec of `nsp`, if any.
async fn read_state<E: Executor>(
    ex: &mut E,
    nsp: &str,
) -> Result<(String, bool, Option<(String, String)>), SyncError> {
    let row = ex
        .query_one(
            "SELECT current_setting('server_version'),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                            WHERE attrelid = to_regclass('schema_sync.state')
                              AND attname = 'nsp' AND NOT attisdropped)",
            &[Value::Text(nsp.to_owned())],
        )
        .await?;
    let version: String = row.try_get(0)?;
    let schema_exists: bool = row.try_get(1)?;
    // A cache of the layout before schemas (one row, no `nsp`) is not
    // read; the next sync replaces it.
    let keyed: bool = row.try_get(2)?;
    if !keyed {
        return Ok((version, schema_exists, None));
    }
    let row = ex
        .query_opt(
            "SELECT spec_hash, canonical FROM schema_sync.state WHERE nsp = $1",
            &[Value::Text(nsp.to_owned())],
        )
        .await?;
    let state = match row {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
        None => None,
    };
    Ok((version, schema_exists, state))
}

async fn write_state<E: Executor>(
    ex: &mut E,
    prepared: &Prepared,
    schema: &Schema,
    canonical: &Schema,
    after: &LiveSchema,
) -> Result<(), SyncError> {
    let live = &after.schema;
    let nsp = Value::Text(schema.schema.clone());
    // The cache is only a cache: one of the layout before schemas (a
    // single row `id = 1`) is replaced, not migrated.
    let old_layout: bool = ex
        .query_one(
            "SELECT to_regclass('schema_sync.state') IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                                    WHERE attrelid = to_regclass('schema_sync.state')
                                      AND attname = 'nsp' AND NOT attisdropped)",
            &[],
        )
        .await?
        .try_get(0)?;
    if old_layout {
        ex.batch_execute("DROP TABLE schema_sync.state").await?;
    }
    ex.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS schema_sync;
         CREATE TABLE IF NOT EXISTS schema_sync.state (
             nsp text PRIMARY KEY,
             spec_hash text NOT NULL,
             live_hash text NOT NULL,
             server_version text NOT NULL,
             canonical text NOT NULL,
             updated_at timestamp with time zone NOT NULL DEFAULT now())",
    )
    .await?;
    let canonical_text = serde_json::to_string(canonical)?;
    let live_hash = sha256(&[&serde_json::to_string(live)?]);
    ex.execute(
        "INSERT INTO schema_sync.state (nsp, spec_hash, live_hash, server_version, canonical)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (nsp) DO UPDATE SET spec_hash = EXCLUDED.spec_hash,
             live_hash = EXCLUDED.live_hash, server_version = EXCLUDED.server_version,
             canonical = EXCLUDED.canonical, updated_at = now()",
        &[
            nsp,
            Value::Text(prepared.spec_hash.clone()),
            Value::Text(live_hash),
            Value::Text(prepared.server_version.clone()),
            Value::Text(canonical_text),
        ],
    )
    .await?;
    prepared
        .owned
        .clone()
        .unwrap_or_default()
        .after_sync(schema, canonical, after, !prepared.schema_existed)
        .write(ex, &schema.schema)
        .await
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}_{nanos}", std::process::id())
}

fn rejected(table: &Table, ranges: &[(usize, usize, String)], source: db_core::Error) -> SyncError {
    let column = source.as_db_error().and_then(|e: &DbError| {
        e.column.clone().or_else(|| {
            let p = usize::try_from(e.position?).ok()?;
            ranges
                .iter()
                .find(|(s, end, _)| p >= *s && p < *end)
                .map(|(_, _, c)| c.clone())
        })
    });
    SyncError::Rejected {
        table: table.name.clone(),
        column,
        index: None,
        source: Box::new(source),
    }
}

/// Lets the server canonicalize `tables`: creates them in a scratch schema
/// inside a transaction that is rolled back, and reads them back.
///
/// The result names the same schema as `tables`.
pub async fn canonicalize<C: Client>(client: &mut C, tables: &Schema) -> Result<Schema, SyncError> {
    if tables.tables.is_empty() {
        return Ok(Schema::new().in_schema(tables.schema.clone()));
    }
    let ns = format!("{SCRATCH_PREFIX}{}", unique_suffix());
    let mut tx = client.begin().await?;
    tx.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(&ns)))
        .await?;
    for t in &tables.tables {
        let (sql, ranges) = create_table(Some(&ns), t);
        if let Err(e) = tx.execute(&sql, &[]).await {
            return Err(rejected(t, &ranges, e));
        }
    }
    for t in &tables.tables {
        for i in &t.indexes {
            let sql = create_index(Some(&ns), &t.name, i, &i.name, false);
            if let Err(source) = tx.execute(&sql, &[]).await {
                return Err(SyncError::Rejected {
                    table: t.name.clone(),
                    column: None,
                    index: Some(i.name.clone()),
                    source: Box::new(source),
                });
            }
        }
    }
    let canonical = introspect(&mut tx, &ns).await?;
    tx.rollback().await?;
    Ok(canonical.schema.in_schema(tables.schema.clone()))
}

/// Lets the server resolve every column type of `schema` (`to_regtype`;
/// the serial types, which are not types, are `integer`, `bigint` and
/// `smallint` with a sequence): a type it does not know fails before any
/// DDL runs, naming the table and column.
async fn resolve_types<E: Executor>(ex: &mut E, schema: &Schema) -> Result<(), SyncError> {
    let mut known = std::collections::BTreeSet::new();
    for table in &schema.tables {
        for column in &table.columns {
            if is_serial(&normalize_type(&column.type_)) || known.contains(&column.type_) {
                continue;
            }
            let resolved = ex
                .query_one(
                    "SELECT to_regtype($1) IS NOT NULL",
                    &[Value::Text(column.type_.clone())],
                )
                .await;
            let reason = match resolved {
                Ok(row) if row.try_get::<bool, _>(0)? => {
                    known.insert(column.type_.clone());
                    continue;
                }
                Ok(_) => None,
                Err(e) if e.as_db_error().is_some() => Some(e.to_string()),
                Err(e) => return Err(e.into()),
            };
            return Err(SyncError::UnknownType {
                table: table.name.clone(),
                column: column.name.clone(),
                type_: column.type_.clone(),
                reason,
            });
        }
    }
    Ok(())
}

async fn prepare<C: Client>(
    client: &mut C,
    schema: &Schema,
    diff: &DiffOptions,
) -> Result<Prepared, SyncError> {
    let nsp = schema.schema.as_str();
    let (server_version, schema_existed, state) = read_state(client, nsp).await?;
    let owned = Ownership::read(client, nsp).await?;
    let spec_hash = sha256(&[
        FORMAT,
        &server_version,
        nsp,
        &serde_json::to_string(schema)?,
    ]);
    let live = introspect(client, nsp).await?;
    for table in &schema.tables {
        if let Some(component) = live.component_tables.get(&table.name) {
            return Err(SyncError::ComponentTable {
                table: table.name.clone(),
                component: component.clone(),
            });
        }
    }
    let cached = match state {
        Some((hash, canonical)) if hash == spec_hash => {
            Some(serde_json::from_str::<Schema>(&canonical)?)
        }
        _ => None,
    };
    let cache_hit = cached.is_some();
    let desired = match cached {
        Some(c) => c,
        None => {
            resolve_types(client, schema).await?;
            // Only tables that exist need canonical forms: new ones are
            // created from the spec as written.
            let existing = Schema {
                schema: schema.schema.clone(),
                tables: schema
                    .tables
                    .iter()
                    .filter(|t| live.schema.get(&t.name).is_some())
                    .cloned()
                    .collect(),
            };
            let canonical = canonicalize(client, &existing).await?;
            Schema {
                schema: schema.schema.clone(),
                tables: schema
                    .tables
                    .iter()
                    .map(|t| canonical.get(&t.name).unwrap_or(t).clone())
                    .collect(),
            }
        }
    };
    let mut live = live;
    let mut plan = diff_live(
        client,
        &mut live,
        &desired,
        schema,
        diff,
        owned.as_ref().unwrap_or(&Ownership::default()),
        !schema_existed,
    )
    .await?;
    for c in &live.other_constraints {
        if schema.get(&c.table).is_some() {
            plan.drift.push(Drift {
                kind: DriftKind::Constraint,
                table: c.table.clone(),
                object: Some(c.name.clone()),
                message: format!(
                    "constraint {} on {} ({}) is not in the spec; left alone",
                    quote_ident(&c.name),
                    rel(Some(nsp), &c.table),
                    c.definition
                ),
            });
        }
    }
    Ok(Prepared {
        live,
        schema_existed,
        owned,
        desired,
        plan,
        spec_hash,
        server_version,
        cache_hit,
    })
}

/// [`diff_rendered`] against `live`; when the plan would drop a column,
/// what depends on the columns is read first (one more catalog query), so
/// that a column objects it does not own depend on is drift instead.
async fn diff_live<E: Executor>(
    ex: &mut E,
    live: &mut LiveSchema,
    desired: &Schema,
    render: &Schema,
    diff: &DiffOptions,
    owned: &Ownership,
    create_schema: bool,
) -> Result<Plan, SyncError> {
    let plan_on = |live: &LiveSchema| {
        diff_rendered(
            &live.schema,
            desired,
            render,
            diff,
            owned,
            Some(live),
            create_schema,
        )
    };
    let plan = plan_on(live);
    if !plan
        .changes
        .iter()
        .any(|c| matches!(c.kind, ChangeKind::DropColumn | ChangeKind::DropTable))
    {
        return Ok(plan);
    }
    // Only a plan that drops needs to know what depends on what it drops.
    load_dependents(ex, live).await?;
    Ok(plan_on(live))
}

/// The plan that would make the live database match `schema`. Reads only.
pub async fn plan<P: Pool>(
    pool: &P,
    schema: &Schema,
    options: &Options,
) -> Result<Plan, SyncError> {
    validate(schema)?;
    let mut client = pool.acquire().await?;
    let diff = options.diff_options(pool.backend());
    Ok(prepare(&mut client, schema, &diff).await?.plan)
}

fn describe(change: &Change) -> String {
    change.to_string().trim_end().to_owned()
}

async fn run_change<E: Executor>(
    ex: &mut E,
    change: &Change,
    schema: &Schema,
) -> Result<(), SyncError> {
    if let Some(check) = &change.null_check {
        let count: i64 = ex.query_one(&check.count_sql, &[]).await?.try_get(0)?;
        if count > 0 {
            return Err(SyncError::NullRows {
                table: check.table.clone(),
                column: check.column.clone(),
                count,
            });
        }
    }
    // One statement per call, through the extended protocol, which refuses
    // a second statement: whatever text a spec holds, it cannot add one.
    for statement in &change.statements {
        if let Err(source) = ex.execute(statement, &[]).await {
            if source.code() == Some(&db_core::SqlState::QUERY_CANCELED) {
                return Err(SyncError::StatementTimeout {
                    change: describe(change),
                    source: Box::new(source),
                });
            }
            if source.code() == Some(&db_core::SqlState::LOCK_NOT_AVAILABLE) {
                return Err(SyncError::LockTimeout {
                    table: Some(change.table.clone()),
                    waited: Duration::ZERO,
                    holders: Vec::new(),
                    index_build: !change.transactional,
                });
            }
            // A new table or index is sent as written: report the server's
            // rejection with the table and column or index it concerns.
            let table = schema.get(&change.table);
            return Err(match (change.kind, table) {
                (ChangeKind::CreateTable, Some(t)) => {
                    rejected(t, &create_table(Some(&schema.schema), t).1, source)
                }
                (ChangeKind::CreateIndex, Some(t)) if source.as_db_error().is_some() => {
                    SyncError::Rejected {
                        table: t.name.clone(),
                        column: None,
                        index: change.object.clone(),
                        source: Box::new(source),
                    }
                }
                _ => SyncError::ApplyFailed {
                    change: describe(change),
                    source: Box::new(source),
                },
            });
        }
    }
    Ok(())
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// Makes the live database match `schema`: serialized by an advisory lock,
/// all transactional changes in one transaction, verified (the plan after
/// the changes must be empty) before commit, and the canonical spec cached
/// so the next plan for the same spec is one introspection.
pub async fn sync<P: Pool>(
    pool: &P,
    schema: &Schema,
    options: &Options,
) -> Result<Report, SyncError> {
    validate(schema)?;
    let backend = pool.backend();
    let diff = options.diff_options(backend);
    // The lock is held by the session that does the work: one connection
    // (a pool of one is enough), and on the embedded backend the wait for
    // the lock does not hold the backend.
    let mut client = pool.acquire().await?;
    let started = std::time::Instant::now();
    match client
        .lock(LOCK_KEY, options.lock_wait.min(options.lock_deadline))
        .await
    {
        Ok(()) => {}
        Err(db_core::Error::LockTimeout { .. }) => {
            let holders = if backend == BackendKind::Postgres {
                advisory_holders(&mut client).await?
            } else {
                Vec::new()
            };
            return Err(SyncError::SyncInProgress {
                waited: started.elapsed(),
                holders,
            });
        }
        Err(e) => return Err(e.into()),
    }
    let result = sync_retrying(pool, &mut client, schema, options, &diff).await;
    // On failure the release of the session drops the lock with it.
    if result.is_ok() {
        client.unlock(LOCK_KEY).await?;
    }
    result
}

/// Runs [`sync_locked`] again, after a backoff, each time a DDL statement
/// could not get its lock within `lock_timeout` (the attempt was rolled
/// back), until [`Options::lock_deadline`]; then names who holds the lock.
async fn sync_retrying<P: Pool>(
    pool: &P,
    client: &mut P::Client,
    schema: &Schema,
    options: &Options,
    diff: &DiffOptions,
) -> Result<Report, SyncError> {
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match sync_locked(pool, client, schema, options, diff).await {
            Err(SyncError::LockTimeout { table, .. }) => {
                if started.elapsed() + backoff < options.lock_deadline {
                    tracing::info!(
                        target: "schema_sync",
                        table = table.as_deref().unwrap_or_default(),
                        ?backoff,
                        "a lock was not granted; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                let holders = match &table {
                    Some(t) => lock_holders(client, &schema.schema, t).await?,
                    None => Vec::new(),
                };
                return Err(SyncError::LockTimeout {
                    table,
                    waited: started.elapsed(),
                    holders,
                    index_build: false,
                });
            }
            other => return other,
        }
    }
}

const HOLDER_COLUMNS: &str = "SELECT DISTINCT a.pid, coalesce(a.application_name, ''),
        extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::float8,
        coalesce(a.state, '')
 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid";

/// The other sessions holding a lock on `nsp.table`.
async fn lock_holders<E: Executor>(
    ex: &mut E,
    nsp: &str,
    table: &str,
) -> Result<Vec<LockHolder>, SyncError> {
    holders(
        ex,
        &format!(
            "{HOLDER_COLUMNS}
             WHERE l.locktype = 'relation' AND l.relation = to_regclass($1)
               AND l.granted AND l.pid <> pg_backend_pid()
             ORDER BY a.pid"
        ),
        Value::Text(rel(Some(nsp), table)),
    )
    .await
}

/// The other sessions holding a lock on `nsp.table` that a concurrent
/// index build waits for (writers: modes that conflict with SHARE) whose
/// transactions have already run longer than `older_than`: the build would
/// wait for each of them. Short write transactions are not counted.
async fn writer_holders<E: Executor>(
    ex: &mut E,
    nsp: &str,
    table: &str,
    older_than: Duration,
) -> Result<Vec<LockHolder>, SyncError> {
    holders(
        ex,
        &format!(
            "{HOLDER_COLUMNS}
             WHERE l.locktype = 'relation' AND l.relation = to_regclass($1)
               AND l.granted AND l.pid <> pg_backend_pid()
               AND l.mode IN ('RowExclusiveLock', 'ShareUpdateExclusiveLock',
                              'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
               AND a.xact_start < clock_timestamp() - interval '{} milliseconds'
             ORDER BY a.pid",
            millis(older_than)
        ),
        Value::Text(rel(Some(nsp), table)),
    )
    .await
}

/// The other sessions holding the sync's advisory lock.
async fn advisory_holders<E: Executor>(ex: &mut E) -> Result<Vec<LockHolder>, SyncError> {
    holders(
        ex,
        &format!(
            "{HOLDER_COLUMNS}
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND ((l.classid::bigint << 32) | l.objid::bigint) = $1
               AND l.pid <> pg_backend_pid()
             ORDER BY a.pid"
        ),
        Value::Int8(LOCK_KEY),
    )
    .await
}

async fn holders<E: Executor>(
    ex: &mut E,
    sql: &str,
    param: Value,
) -> Result<Vec<LockHolder>, SyncError> {
    let rows = ex.query(sql, &[param]).await?;
    rows.iter()
        .map(|r| {
            Ok(LockHolder {
                pid: r.try_get(0)?,
                application: r.try_get(1)?,
                held_for: r
                    .try_get::<Option<f64>, _>(2)?
                    .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                state: r.try_get(3)?,
            })
        })
        .collect()
}

async fn sync_locked<P: Pool>(
    pool: &P,
    client: &mut P::Client,
    schema: &Schema,
    options: &Options,
    diff: &DiffOptions,
) -> Result<Report, SyncError> {
    let prepared = prepare(client, schema, diff).await?;
    if let Some(expected) = &options.expect_hash {
        let actual = prepared.plan.hash();
        if !expected.trim().eq_ignore_ascii_case(&actual) {
            return Err(SyncError::PlanChanged {
                expected: expected.trim().to_owned(),
                actual,
                plan: prepared.plan.to_string(),
            });
        }
    }
    let destructive: Vec<String> = prepared
        .plan
        .changes
        .iter()
        .filter(|c| c.hazards.iter().any(|h| h.kind == HazardKind::Destructive))
        .map(describe)
        .collect();
    if !destructive.is_empty() && !options.allow_destructive {
        return Err(SyncError::HazardsNotAllowed(destructive.join("\n\n")));
    }
    let report = |applied| Report {
        plan: prepared.plan.clone(),
        applied,
        cache_hit: prepared.cache_hit,
    };
    if options.dry_run
        || (prepared.plan.is_empty() && prepared.cache_hit && prepared.owned.is_some())
    {
        return Ok(report(false));
    }
    let later: Vec<&Change> = prepared
        .plan
        .changes
        .iter()
        .filter(|c| !c.transactional)
        .collect();
    let mut tx = client.begin().await?;
    if pool.backend() == BackendKind::Postgres {
        if let Some(t) = options.lock_timeout {
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{}ms'", millis(t)))
                .await?;
        }
        if let Some(t) = options.statement_timeout {
            tx.batch_execute(&format!("SET LOCAL statement_timeout = '{}ms'", millis(t)))
                .await?;
        }
    }
    for change in prepared.plan.changes.iter().filter(|c| c.transactional) {
        tracing::debug!(target: "schema_sync", kind = ?change.kind, table = %change.table, "applying change");
        run_change(&mut tx, change, schema).await?;
    }
    if later.is_empty() {
        let (canonical, after) = verify(&mut tx, schema, &prepared, diff).await?;
        write_state(&mut tx, &prepared, schema, &canonical, &after).await?;
        tx.commit().await?;
    } else {
        tx.commit().await?;
        let mut applied: Vec<String> = prepared
            .plan
            .changes
            .iter()
            .filter(|c| c.transactional)
            .map(|c| c.to_string().lines().next().unwrap_or_default().to_owned())
            .collect();
        for change in later {
            if let Err(e) = run_later(client, change, schema, options).await {
                if applied.is_empty() {
                    return Err(e);
                }
                return Err(SyncError::PartiallyApplied {
                    applied,
                    source: Box::new(e),
                });
            }
            applied.push(
                change
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        let mut tx = client.begin().await?;
        let (canonical, after) = verify(&mut tx, schema, &prepared, diff).await?;
        write_state(&mut tx, &prepared, schema, &canonical, &after).await?;
        tx.commit().await?;
    }
    tracing::info!(
        target: "schema_sync",
        changes = prepared.plan.changes.len(),
        cache_hit = prepared.cache_hit,
        "schema sync applied"
    );
    Ok(report(true))
}

/// Runs a change outside the transaction (a concurrent index build) and
/// checks the index it built is valid; a failed or invalid build is
/// dropped (`DROP INDEX CONCURRENTLY IF EXISTS`), so no invalid index is
/// left to pass for the spec's.
async fn run_later<C: Client>(
    client: &mut C,
    change: &Change,
    schema: &Schema,
    options: &Options,
) -> Result<(), SyncError> {
    // The session's own settings, as the transaction's are SET LOCAL: the
    // build's waits for the table's writers end at `lock_timeout` too.
    if let Some(t) = options.lock_timeout {
        client
            .batch_execute(&format!("SET lock_timeout = '{}ms'", millis(t)))
            .await?;
    }
    if let Some(t) = options.statement_timeout {
        client
            .batch_execute(&format!("SET statement_timeout = '{}ms'", millis(t)))
            .await?;
    }
    let result = build_later(client, change, schema, options).await;
    let reset = client
        .batch_execute("RESET lock_timeout; RESET statement_timeout")
        .await;
    let () = result?;
    reset?;
    Ok(())
}

/// [`run_later`] with the session's timeouts set: waits (with backoff, up
/// to the lock deadline) while a long transaction writes to the table,
/// since the build would wait for it, then builds; a build that times out
/// waiting is dropped and tried again until the deadline.
async fn build_later<C: Client>(
    client: &mut C,
    change: &Change,
    schema: &Schema,
    options: &Options,
) -> Result<(), SyncError> {
    let index = change
        .object
        .as_deref()
        .map(|name| rel(Some(&schema.schema), name));
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let writers = writer_holders(
            client,
            &schema.schema,
            &change.table,
            options.lock_timeout.unwrap_or(options.lock_deadline),
        )
        .await?;
        let result = if writers.is_empty() {
            run_change(client, change, schema).await
        } else {
            Err(SyncError::LockTimeout {
                table: Some(change.table.clone()),
                waited: Duration::ZERO,
                holders: writers,
                index_build: true,
            })
        };
        let Err(e) = result else { break };
        if let Some(index) = &index {
            // A build that failed (or timed out) leaves an invalid index.
            // Dropping it waits for the same writers; if it cannot, the
            // next plan builds the invalid index again.
            let _ = client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                .await;
        }
        let SyncError::LockTimeout { table, holders, .. } = e else {
            return Err(e);
        };
        if started.elapsed() + backoff < options.lock_deadline {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        let holders = if holders.is_empty() {
            lock_holders(client, &schema.schema, &change.table).await?
        } else {
            holders
        };
        return Err(SyncError::LockTimeout {
            table,
            waited: started.elapsed(),
            holders,
            index_build: true,
        });
    }
    if let (Some(name), Some(index)) = (&change.object, &index) {
        let valid = client
            .query_opt(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
                &[Value::Text(index.clone())],
            )
            .await?;
        let valid = match valid {
            Some(r) => r.try_get::<bool, _>(0)?,
            None => false,
        };
        if !valid {
            client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                .await?;
            return Err(SyncError::InvalidIndex(name.clone()));
        }
    }
    Ok(())
}

/// Introspects after the changes and checks that nothing is left to do.
/// Returns the canonical spec to cache (tables created by this sync are
/// canonical as created) and the live schema.
async fn verify<E: Executor>(
    ex: &mut E,
    schema: &Schema,
    prepared: &Prepared,
    diff: &DiffOptions,
) -> Result<(Schema, LiveSchema), SyncError> {
    let after = introspect(ex, &schema.schema).await?;
    let canonical = Schema {
        schema: schema.schema.clone(),
        tables: schema
            .tables
            .iter()
            .map(|t| {
                let created = prepared.live.schema.get(&t.name).is_none();
                let source = if created {
                    after.schema.get(&t.name)
                } else {
                    None
                };
                source
                    .or_else(|| prepared.desired.get(&t.name))
                    .unwrap_or(t)
                    .clone()
            })
            .collect(),
    };
    let owned = prepared.owned.clone().unwrap_or_default().after_sync(
        schema,
        &canonical,
        &after,
        !prepared.schema_existed,
    );
    let mut after = after;
    let remaining = diff_live(ex, &mut after, &canonical, schema, diff, &owned, false).await?;
    if !remaining.is_empty() {
        return Err(SyncError::NotConverged(remaining.to_string()));
    }
    Ok((canonical, after))
}
