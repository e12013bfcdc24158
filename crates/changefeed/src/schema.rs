//! The SQL side: the shared tables and trigger function, enabling and
//! disabling feeds, stamping offsets, reading and pruning the log.

use std::time::Duration;

use db_core::{AdvisoryLock, Client, Executor, Pool, Value, quote_ident};
use serde::Serialize;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::event::{JsonRow, LogRow, Op};

/// The advisory lock that serializes installers (`"cfeed"`).
const INSTALL_LOCK: i64 = 0x0063_6665_6564;
const INSTALL_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// The name of the trigger function and of the row-level (update) trigger.
pub(crate) const TRIGGER: &str = "changefeed_capture";
/// The statement-level insert trigger and its transition table.
const INSERT_TRIGGER: &str = "changefeed_capture_insert";
const NEW_ROWS: &str = "changefeed_new";
/// The statement-level delete trigger and its transition table.
const DELETE_TRIGGER: &str = "changefeed_capture_delete";
const OLD_ROWS: &str = "changefeed_old";
/// The notification channel writers nudge readers on.
pub(crate) const CHANNEL: &str = "changefeed";
/// Rows stamped with offsets per statement.
const STAMP_BATCH: i64 = 10_000;

/// Qualified names of the feed's objects in one schema.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) schema: String,
    pub(crate) log: String,
    pub(crate) state: String,
    pub(crate) feeds: String,
    function: String,
}

impl Names {
    pub(crate) fn new(schema: &str) -> Names {
        let q = quote_ident(schema);
        Names {
            schema: schema.to_owned(),
            log: format!("{q}.changefeed_log"),
            state: format!("{q}.changefeed_state"),
            feeds: format!("{q}.changefeed_feeds"),
            function: format!("{q}.{TRIGGER}"),
        }
    }

    pub(crate) fn table(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    fn base_ddl(&self) -> String {
        let Names {
            log, state, feeds, ..
        } = self;
        format!(
            "CREATE TABLE IF NOT EXISTS {log} (
                id bigserial PRIMARY KEY,
                pos bigint,
                tbl text NOT NULL,
                op text NOT NULL,
                txid bigint NOT NULL,
                row_new jsonb,
                row_old jsonb,
                changed_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE UNIQUE INDEX IF NOT EXISTS changefeed_log_pos ON {log} (pos) WHERE pos IS NOT NULL;
            CREATE INDEX IF NOT EXISTS changefeed_log_unstamped ON {log} (id) WHERE pos IS NULL;
            CREATE TABLE IF NOT EXISTS {state} (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                last_pos bigint NOT NULL DEFAULT 0,
                pruned_through bigint NOT NULL DEFAULT 0
            );
            INSERT INTO {state} DEFAULT VALUES ON CONFLICT DO NOTHING;
            CREATE TABLE IF NOT EXISTS {feeds} (
                tbl text PRIMARY KEY,
                key_columns jsonb NOT NULL,
                enabled_at timestamptz NOT NULL DEFAULT now()
            );"
        )
    }

    fn function_ddl(&self) -> String {
        let Names { log, function, .. } = self;
        // The variable takes precedence over a watched table's column of the
        // same name. Inserts and deletes are captured once per statement from its
        // transition table: one INSERT ... SELECT and one notification
        // however many rows, where a row trigger runs both per row (5x the
        // writer's cost for a 100-row statement). Updates stay per row, the
        // only way to pair each new image with its old one when a statement
        // changes primary keys. The row branch handles every operation so
        // that triggers installed by earlier versions keep working.
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $changefeed$
            #variable_conflict use_variable
            DECLARE
                changefeed_txid bigint := txid_current();
            BEGIN
                IF TG_LEVEL = 'STATEMENT' THEN
                    IF TG_OP = 'INSERT' THEN
                        INSERT INTO {log} (tbl, op, txid, row_new)
                        SELECT TG_TABLE_NAME, 'I', changefeed_txid, to_jsonb(n.*) FROM {NEW_ROWS} n;
                    ELSE
                        INSERT INTO {log} (tbl, op, txid, row_old)
                        SELECT TG_TABLE_NAME, 'D', changefeed_txid, to_jsonb(o.*) FROM {OLD_ROWS} o;
                    END IF;
                    IF NOT FOUND THEN
                        RETURN NULL;
                    END IF;
                ELSIF TG_OP = 'INSERT' THEN
                    INSERT INTO {log} (tbl, op, txid, row_new)
                    VALUES (TG_TABLE_NAME, 'I', changefeed_txid, to_jsonb(NEW));
                ELSIF TG_OP = 'UPDATE' THEN
                    INSERT INTO {log} (tbl, op, txid, row_new, row_old)
                    VALUES (TG_TABLE_NAME, 'U', changefeed_txid, to_jsonb(NEW), to_jsonb(OLD));
                ELSE
                    INSERT INTO {log} (tbl, op, txid, row_old)
                    VALUES (TG_TABLE_NAME, 'D', changefeed_txid, to_jsonb(OLD));
                END IF;
                PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
                RETURN NULL;
            END
            $changefeed$"
        )
    }

    /// Drops the table's capture triggers (any version's) and creates them.
    fn triggers_ddl(&self, qualified: &str) -> String {
        let function = &self.function;
        // DROP + CREATE in one transaction: CREATE OR REPLACE TRIGGER needs
        // PostgreSQL 14.
        format!(
            "DROP TRIGGER IF EXISTS {TRIGGER} ON {qualified};
             DROP TRIGGER IF EXISTS {INSERT_TRIGGER} ON {qualified};
             DROP TRIGGER IF EXISTS {DELETE_TRIGGER} ON {qualified};
             CREATE TRIGGER {TRIGGER} AFTER UPDATE ON {qualified}
             FOR EACH ROW EXECUTE FUNCTION {function}();
             CREATE TRIGGER {INSERT_TRIGGER} AFTER INSERT ON {qualified}
             REFERENCING NEW TABLE AS {NEW_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {function}();
             CREATE TRIGGER {DELETE_TRIGGER} AFTER DELETE ON {qualified}
             REFERENCING OLD TABLE AS {OLD_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    }

    /// Drops the table's capture triggers.
    fn drop_triggers_ddl(qualified: &str) -> String {
        format!(
            "DROP TRIGGER IF EXISTS {TRIGGER} ON {qualified};
             DROP TRIGGER IF EXISTS {INSERT_TRIGGER} ON {qualified};
             DROP TRIGGER IF EXISTS {DELETE_TRIGGER} ON {qualified}"
        )
    }
}

/// One enabled feed, as [`Feed::list`](crate::Feed::list) reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FeedInfo {
    /// The table.
    pub table: String,
    /// Its primary-key columns, which deletes are reported by.
    pub key_columns: Vec<String>,
    /// The smallest offset of the table's changes still in the log.
    pub first_offset: Option<i64>,
    /// The largest offset of the table's changes in the log.
    pub last_offset: Option<i64>,
    /// The table's changes in the log (offsets assigned or not yet).
    pub log_rows: i64,
    /// Bytes of the row images of those changes.
    pub log_bytes: i64,
}

/// Runs `work` holding the installers' advisory lock.
macro_rules! locked {
    ($pool:expr, $work:expr) => {{
        let lock = $pool.lock(INSTALL_LOCK, INSTALL_LOCK_TIMEOUT).await?;
        let out = $work.await;
        lock.unlock().await?;
        out
    }};
}

/// The schema `CREATE TABLE` without a schema would use.
pub(crate) async fn current_schema<P: Pool>(pool: &P) -> Result<String> {
    let row = pool.query_one("SELECT current_schema()::text", &[]).await?;
    Ok::<_, Error>(
        row.try_get::<Option<String>, _>(0)?
            .unwrap_or_else(|| "public".into()),
    )
}

/// Creates the shared tables if they are missing.
pub(crate) async fn ensure_base<P: Pool>(pool: &P, names: &Names) -> Result<()> {
    let exists = pool
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AND to_regclass($3) IS NOT NULL",
            &[
                Value::from(names.log.as_str()),
                Value::from(names.state.as_str()),
                Value::from(names.feeds.as_str()),
            ],
        )
        .await?
        .try_get::<bool, _>(0)?;
    if exists {
        return Ok(());
    }
    locked!(pool, async {
        let mut c = pool.acquire().await?;
        let mut tx = c.begin().await?;
        tx.batch_execute(&names.base_ddl()).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    })
}

async fn key_columns<E: Executor>(ex: &mut E, names: &Names, table: &str) -> Result<Vec<String>> {
    let qualified = names.table(table);
    let exists = ex
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[Value::from(qualified.as_str())],
        )
        .await?
        .try_get::<bool, _>(0)?;
    if !exists {
        return Err(Error::NoSuchTable(table.to_owned()));
    }
    let rows = ex
        .query(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = $1::regclass AND i.indisprimary
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[Value::from(qualified.as_str())],
        )
        .await?;
    let keys = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<db_core::Result<Vec<_>>>()?;
    if keys.is_empty() {
        return Err(Error::NoPrimaryKey(table.to_owned()));
    }
    Ok(keys)
}

/// Installs the trigger on `table` (once) and registers the feed.
pub(crate) async fn enable<P: Pool>(pool: &P, names: &Names, table: &str) -> Result<Vec<String>> {
    locked!(pool, async {
        let mut c = pool.acquire().await?;
        let mut tx = c.begin().await?;
        tx.batch_execute(&names.base_ddl()).await?;
        let keys = key_columns(&mut tx, names, table).await?;
        let qualified = names.table(table);
        // The insert trigger is the newest of the set: without it, the table
        // has no triggers or an earlier version's row trigger.
        let installed = tx
            .query_opt(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2",
                &[Value::from(qualified.as_str()), Value::from(INSERT_TRIGGER)],
            )
            .await?
            .is_some();
        // Replaced every time (under the installers' lock) so that an
        // earlier version's function is upgraded.
        tx.batch_execute(&names.function_ddl()).await?;
        if !installed {
            tx.batch_execute(&names.triggers_ddl(&qualified)).await?;
        }
        tx.execute(
            &format!(
                "INSERT INTO {} (tbl, key_columns) VALUES ($1, $2)
                 ON CONFLICT (tbl) DO UPDATE SET key_columns = EXCLUDED.key_columns",
                names.feeds
            ),
            &[Value::from(table), Value::from(Json::from(keys.clone()))],
        )
        .await?;
        tx.commit().await?;
        Ok::<_, Error>(keys)
    })
}

/// Removes the trigger from `table`, and the function once no feed uses it.
/// Returns whether a feed was enabled.
pub(crate) async fn disable<P: Pool>(pool: &P, names: &Names, table: &str) -> Result<bool> {
    locked!(pool, async {
        let mut c = pool.acquire().await?;
        let mut tx = c.begin().await?;
        tx.batch_execute(&names.base_ddl()).await?;
        let qualified = names.table(table);
        let exists = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[Value::from(qualified.as_str())],
            )
            .await?
            .try_get::<bool, _>(0)?;
        if exists {
            tx.batch_execute(&Names::drop_triggers_ddl(&qualified))
                .await?;
        }
        let removed = tx
            .execute(
                &format!("DELETE FROM {} WHERE tbl = $1", names.feeds),
                &[Value::from(table)],
            )
            .await?;
        let remaining = tx
            .query_one(&format!("SELECT count(*) FROM {}", names.feeds), &[])
            .await?
            .try_get::<i64, _>(0)?;
        if remaining == 0 {
            tx.batch_execute(&format!("DROP FUNCTION IF EXISTS {}()", names.function))
                .await?;
        }
        tx.commit().await?;
        Ok::<_, Error>(removed > 0)
    })
}

/// The key columns of an enabled feed.
pub(crate) async fn feed_keys<P: Pool>(
    pool: &P,
    names: &Names,
    table: &str,
) -> Result<Vec<String>> {
    let row = pool
        .query_opt(
            &format!("SELECT key_columns FROM {} WHERE tbl = $1", names.feeds),
            &[Value::from(table)],
        )
        .await?
        .ok_or_else(|| Error::NotEnabled(table.to_owned()))?;
    serde_json::from_value(row.try_get::<Json, _>(0)?)
        .map_err(|e| Error::Corrupt(format!("key columns of {table}: {e}")))
}

/// The enabled feeds.
pub(crate) async fn list<P: Pool>(pool: &P, names: &Names) -> Result<Vec<FeedInfo>> {
    let rows = pool
        .query(
            &format!(
                "SELECT f.tbl, f.key_columns, min(l.pos), max(l.pos), count(l.id),
                        coalesce(sum(coalesce(pg_column_size(l.row_new), 0)
                                     + coalesce(pg_column_size(l.row_old), 0)), 0)::int8
                 FROM {} f LEFT JOIN {} l ON l.tbl = f.tbl
                 GROUP BY f.tbl, f.key_columns ORDER BY f.tbl",
                names.feeds, names.log
            ),
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(FeedInfo {
                table: r.try_get(0)?,
                key_columns: serde_json::from_value(r.try_get::<Json, _>(1)?)
                    .map_err(|e| Error::Corrupt(format!("key columns: {e}")))?,
                first_offset: r.try_get(2)?,
                last_offset: r.try_get(3)?,
                log_rows: r.try_get(4)?,
                log_bytes: r.try_get(5)?,
            })
        })
        .collect()
}

/// Assigns offsets to the log rows of every transaction that committed
/// before this statement's snapshot, in `id` order, continuing after the
/// last offset assigned. Returns how many rows were stamped.
///
/// Concurrent stampers (other processes) serialize on the state row: the
/// second waits for the first to commit and then continues after its
/// offsets; rows the first stamped meanwhile fail `pos IS NULL` on recheck
/// and are skipped (the offsets it reserved for them stay unused, a gap).
pub(crate) async fn stamp<E: Executor>(ex: &mut E, names: &Names) -> Result<u64> {
    let sql = stamp_sql(names);
    let mut total = 0;
    loop {
        let n = ex.execute(&sql, &[]).await?;
        total += n;
        if n < STAMP_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// [`stamp`] on a session of its own.
pub(crate) async fn stamp_pool<P: Pool>(pool: &P, names: &Names) -> Result<u64> {
    let sql = stamp_sql(names);
    let mut total = 0;
    loop {
        let n = pool.execute(&sql, &[]).await?;
        total += n;
        if n < STAMP_BATCH as u64 {
            return Ok(total);
        }
    }
}

fn stamp_sql(names: &Names) -> String {
    let Names { log, state, .. } = names;
    // The ids travel as an array so that the update is a nested loop of
    // primary-key lookups whatever the planner knows about the log (PGlite
    // has no autovacuum, so no statistics).
    format!(
        "WITH todo AS (
            SELECT coalesce(array_agg(id ORDER BY id), '{{}}') AS ids FROM (
                SELECT id FROM {log} WHERE pos IS NULL ORDER BY id LIMIT {STAMP_BATCH}
            ) b
        ), st AS (
            UPDATE {state} SET last_pos = last_pos + cardinality(todo.ids) FROM todo
            WHERE cardinality(todo.ids) > 0
            RETURNING last_pos - cardinality(todo.ids) AS base, todo.ids
        )
        UPDATE {log} l SET pos = st.base + u.rn
        FROM st, unnest(st.ids) WITH ORDINALITY AS u(id, rn)
        WHERE l.id = u.id AND l.pos IS NULL"
    )
}

/// `(last offset assigned, offsets pruned through)`.
pub(crate) async fn positions<P: Pool>(pool: &P, names: &Names) -> Result<(i64, i64)> {
    let row = pool
        .query_one(
            &format!("SELECT last_pos, pruned_through FROM {}", names.state),
            &[],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// A batch of the log after `after`, read in one snapshot.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) rows: Vec<LogRow>,
    /// Every offset up to this one has been read (when the batch was not
    /// cut by the limit: the last offset assigned at the snapshot).
    pub(crate) through: i64,
    pub(crate) pruned_through: i64,
}

fn json_row(v: Option<Json>, what: &str) -> Result<Option<JsonRow>> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(m)) => Ok(Some(m)),
        Some(other) => Err(Error::Corrupt(format!("{what} is not an object: {other}"))),
    }
}

/// Reads up to `limit` log rows with offsets above `after`, of `table` only
/// if given, in offset order.
pub(crate) async fn read<P: Pool>(
    pool: &P,
    names: &Names,
    after: i64,
    table: Option<&str>,
    limit: i64,
) -> Result<Batch> {
    let Names { log, state, .. } = names;
    let sql = format!(
        "SELECT s.last_pos, s.pruned_through, l.pos, l.tbl, l.op, l.row_new, l.row_old, l.lim
         FROM {state} s LEFT JOIN LATERAL (
             SELECT pos, tbl, op, row_new, row_old, count(*) OVER () AS lim FROM (
                 SELECT pos, tbl, op, row_new, row_old FROM {log}
                 WHERE pos > $1 AND ($2::text IS NULL OR tbl = $2)
                 ORDER BY pos LIMIT $3
             ) x
         ) l ON true
         ORDER BY l.pos"
    );
    let rows = pool
        .query(
            &sql,
            &[Value::from(after), Value::from(table), Value::from(limit)],
        )
        .await?;
    let mut batch = Batch {
        rows: Vec::with_capacity(rows.len()),
        through: after,
        pruned_through: 0,
    };
    let mut last_pos = after;
    let mut full = false;
    for r in &rows {
        last_pos = r.try_get(0)?;
        batch.pruned_through = r.try_get(1)?;
        let Some(pos) = r.try_get::<Option<i64>, _>(2)? else {
            continue;
        };
        full = r.try_get::<i64, _>(7)? >= limit;
        let op = match r.try_get::<String, _>(4)?.as_str() {
            "I" => Op::Insert,
            "U" => Op::Update,
            "D" => Op::Delete,
            other => return Err(Error::Corrupt(format!("operation {other:?}"))),
        };
        batch.rows.push(LogRow {
            pos,
            table: r.try_get(3)?,
            op,
            new: json_row(r.try_get(5)?, "row_new")?,
            old: json_row(r.try_get(6)?, "row_old")?,
        });
    }
    batch.through = match batch.rows.last() {
        Some(last) if full => last.pos,
        _ => last_pos.max(after),
    };
    Ok(batch)
}

/// How much of the log to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Prune changes older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many changes.
    pub max_rows: Option<u64>,
}

impl Retention {
    /// Keeps everything.
    pub fn unlimited() -> Retention {
        Retention::default()
    }

    /// Prunes changes older than `age`.
    pub fn max_age(mut self, age: Duration) -> Retention {
        self.max_age = Some(age);
        self
    }

    /// Keeps at most `rows` changes.
    pub fn max_rows(mut self, rows: u64) -> Retention {
        self.max_rows = Some(rows);
        self
    }
}

/// Deletes a prefix (in offset order) of the stamped log as `retention`
/// allows and records how far it went. Returns the rows deleted.
pub(crate) async fn prune<P: Pool>(pool: &P, names: &Names, retention: Retention) -> Result<u64> {
    if retention.max_age.is_none() && retention.max_rows.is_none() {
        return Ok(0);
    }
    // Only stamped rows are ever pruned: stamp first so that old committed
    // changes are not kept forever just because nobody read them yet.
    stamp_pool(pool, names).await?;
    let Names { log, state, .. } = names;
    let max_rows = retention
        .max_rows
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let max_age = retention.max_age.map(|d| d.as_secs_f64());
    let sql = format!(
        "WITH cut AS (
            SELECT greatest(
                (SELECT pos FROM {log} WHERE pos IS NOT NULL AND $1::int8 IS NOT NULL
                 ORDER BY pos DESC OFFSET $1::int8 LIMIT 1),
                (SELECT max(pos) FROM {log} WHERE pos IS NOT NULL AND $2::float8 IS NOT NULL
                 AND changed_at < now() - make_interval(secs => $2::float8))
            ) AS through
        ), del AS (
            DELETE FROM {log} WHERE pos <= (SELECT through FROM cut) RETURNING pos
        ), st AS (
            UPDATE {state} SET pruned_through = greatest(pruned_through, (SELECT through FROM cut))
            WHERE (SELECT through FROM cut) IS NOT NULL
        )
        SELECT count(*) FROM del"
    );
    let row = pool
        .query_one(&sql, &[Value::from(max_rows), Value::from(max_age)])
        .await?;
    Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
}
