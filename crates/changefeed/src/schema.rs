//! The SQL side: the shared tables and trigger function, enabling and
//! disabling feeds, ticks (giving offsets), reading and pruning the log.

use std::time::Duration;

use db_core::{BackendKind, Client, Executor, Pool, Value, quote_ident};
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
/// The statement-level truncate trigger.
const TRUNCATE_TRIGGER: &str = "changefeed_capture_truncate";
/// A table's name as the log and the feeds hold it: schema-qualified and
/// quoted as SQL needs (`public.items`, `app."Mixed Case"`), in the
/// trigger function.
const TABLE_NAME: &str = "quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME)";
/// The notification channel writers nudge readers on.
pub(crate) const CHANNEL: &str = "changefeed";
/// Row images per log row at most: a statement's changes are split into
/// log rows of this many, so that readers hold a bounded number at a time.
const CHUNK_ROWS: i64 = 1_000;
/// Bytes of row images per log row at most (beyond one image), well below
/// the 1 GB a `json` value can hold, so that no statement's size can make
/// the writer fail.
const CHUNK_BYTES: i64 = 16 << 20;
/// Events per tick at most (beyond one log row), so that a reader resuming
/// in the middle of a tick reads a bounded part of the log to find its place.
const TICK_EVENTS: i64 = 1_000;
/// An id larger than any: bounding the scan above `top` on both sides
/// makes it a range, which planners estimate as selective (1/200) where a
/// one-sided bound counts as a third of the log, so that the log's primary
/// key is used even on PGlite, which never gathers statistics.
const NO_ID: i64 = i64::MAX;
/// Attempts at a tick that lost the race for the state row to another
/// reader's tick (each retry sees the other tick).
const TICK_ATTEMPTS: u32 = 100;

/// The schema of the feed's own objects unless
/// [`Options::schema`](crate::Options::schema) says otherwise.
pub(crate) const DEFAULT_SCHEMA: &str = "changefeed";

/// The feed's tables, by their unqualified names.
const OWN_TABLES: [&str; 5] = [
    "changefeed_log",
    "changefeed_ticks",
    "changefeed_state",
    "changefeed_feeds",
    "changefeed_log_v1",
];

/// `(schema, table)` of the tables that hold the change log of a feed in
/// the default schema: what an export can leave out (the feed then starts
/// on the target with every earlier offset pruned).
pub fn log_tables() -> Vec<(&'static str, &'static str)> {
    ["changefeed_log", "changefeed_ticks", "changefeed_log_v1"]
        .into_iter()
        .map(|table| (DEFAULT_SCHEMA, table))
        .collect()
}

/// Qualified names of the feed's objects in one schema.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) schema: String,
    pub(crate) log: String,
    pub(crate) ticks: String,
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
            ticks: format!("{q}.changefeed_ticks"),
            state: format!("{q}.changefeed_state"),
            feeds: format!("{q}.changefeed_feeds"),
            function: format!("{q}.{TRIGGER}"),
        }
    }

    /// Moves the feed's objects from schema `from` (where the previous
    /// release kept them, next to the watched tables) into this one, in
    /// place: the same tables, rows, sequences and function.
    fn move_ddl(&self, from: &str) -> String {
        let from = quote_ident(from);
        let to = quote_ident(&self.schema);
        let mut sql = format!("CREATE SCHEMA IF NOT EXISTS {to};");
        for table in OWN_TABLES {
            sql.push_str(&format!(
                "ALTER TABLE IF EXISTS {from}.{table} SET SCHEMA {to};"
            ));
        }
        // ALTER FUNCTION has no IF EXISTS.
        sql.push_str(&format!(
            "DO $move$ BEGIN
                IF to_regprocedure('{from}.{TRIGGER}()') IS NOT NULL THEN
                    ALTER FUNCTION {from}.{TRIGGER}() SET SCHEMA {to};
                END IF;
             END $move$",
            from = from.replace('\'', "''")
        ));
        sql
    }

    /// `name` (a table, an index) qualified with the feed's schema.
    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(name))
    }

    /// The log. Writers only append to it (indexed by its increasing id and,
    /// in [`Names::meta_ddl`], by transaction); readers never rewrite its
    /// rows: ticks say which rows became visible between two snapshots and
    /// which offsets they take. Row images are stored uncompressed:
    /// compressing a statement's images costs the writer more than the bytes
    /// save.
    fn log_ddl(&self) -> String {
        let log = &self.log;
        let schema = quote_ident(&self.schema);
        format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
            CREATE TABLE {log} (
                id bigserial PRIMARY KEY,
                txid bigint NOT NULL,
                tbl text NOT NULL,
                op \"char\" NOT NULL,
                n integer NOT NULL,
                row_new json,
                row_old json,
                relid regclass
            );
            ALTER TABLE {log} ALTER COLUMN row_new SET STORAGE EXTERNAL,
                ALTER COLUMN row_old SET STORAGE EXTERNAL"
        )
    }

    /// The log's transaction index, the ticks, the state and the feeds
    /// (idempotent).
    fn meta_ddl(&self) -> String {
        let Names {
            log,
            ticks,
            state,
            feeds,
            ..
        } = self;
        format!(
            "CREATE TABLE IF NOT EXISTS {ticks} (
                base bigint PRIMARY KEY,
                span bigint NOT NULL,
                gen bigint NOT NULL,
                lo bigint NOT NULL,
                hi bigint NOT NULL,
                prev txid_snapshot NOT NULL,
                cur txid_snapshot NOT NULL,
                at timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE IF NOT EXISTS {state} (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                last_pos bigint NOT NULL DEFAULT 0,
                pruned_through bigint NOT NULL DEFAULT 0
            );
            CREATE INDEX IF NOT EXISTS changefeed_log_txid ON {log} (txid);
            ALTER TABLE {state}
                ADD COLUMN IF NOT EXISTS snap txid_snapshot NOT NULL DEFAULT '1:1:',
                ADD COLUMN IF NOT EXISTS top bigint NOT NULL DEFAULT 0,
                ADD COLUMN IF NOT EXISTS horizon bigint NOT NULL DEFAULT 0,
                ADD COLUMN IF NOT EXISTS gen bigint NOT NULL DEFAULT 0;
            INSERT INTO {state} DEFAULT VALUES ON CONFLICT DO NOTHING;
            ALTER TABLE {log} ADD COLUMN IF NOT EXISTS relid regclass;
            CREATE TABLE IF NOT EXISTS {feeds} (
                relid regclass PRIMARY KEY,
                tbl text NOT NULL,
                key_columns jsonb NOT NULL,
                shape jsonb,
                enabled_at timestamptz NOT NULL DEFAULT now()
            );
            COMMENT ON TABLE {log} IS '{mark}changefeed';
            COMMENT ON TABLE {ticks} IS '{mark}changefeed';
            COMMENT ON TABLE {state} IS '{mark}changefeed';
            COMMENT ON TABLE {feeds} IS '{mark}changefeed';",
            mark = db_core::COMPONENT_MARK
        )
    }

    /// Moves a log of the first layout (one row per change, offsets stamped
    /// into a `pos` column) aside as `changefeed_log_v1`, untouched, and
    /// marks every offset it assigned as pruned: a subscriber resuming from
    /// one is told to resync instead of silently missing the changes left in
    /// the old log.
    fn upgrade_v1_ddl(&self) -> String {
        let Names { log, state, .. } = self;
        let old = quote_ident("changefeed_log_v1");
        let pkey = self.table("changefeed_log_pkey");
        let old_pkey = quote_ident("changefeed_log_v1_pkey");
        let pos = self.table("changefeed_log_pos");
        let unstamped = self.table("changefeed_log_unstamped");
        format!(
            "ALTER TABLE {log} RENAME TO {old};
             ALTER INDEX {pkey} RENAME TO {old_pkey};
             DROP INDEX IF EXISTS {pos};
             DROP INDEX IF EXISTS {unstamped};
             UPDATE {state} SET pruned_through = last_pos"
        )
    }

    fn function_ddl(&self) -> String {
        let Names {
            log,
            feeds,
            function,
            ..
        } = self;
        let (insert_one, insert_chunked) = capture_sql(log, 'I', "row_new", NEW_ROWS);
        let (delete_one, delete_chunked) = capture_sql(log, 'D', "row_old", OLD_ROWS);
        // Inserts and deletes are captured once per statement from its
        // transition table: one log row (two index entries, one notification)
        // per statement of up to CHUNK_ROWS rows, where a row trigger would
        // pay for all of it per row. The common case is one INSERT; only a
        // statement too big for one log row runs the chunking one. Updates
        // stay per row, the only way to pair each new image with its old
        // one when a statement changes primary keys. The row branch handles
        // every operation so that triggers installed by earlier versions
        // keep working.
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $changefeed$
            BEGIN
                IF TG_OP = 'TRUNCATE' THEN
                    INSERT INTO {log} (txid, tbl, relid, op, n)
                    VALUES (txid_current(), {TABLE_NAME}, TG_RELID, 'T', 1);
                    -- The table has a new file: not a rewrite to report.
                    UPDATE {feeds} SET shape = jsonb_set(shape, '{{filenode}}',
                        to_jsonb((SELECT relfilenode FROM pg_class WHERE oid = TG_RELID)::int8))
                    WHERE relid = TG_RELID AND shape ? 'filenode';
                ELSIF TG_LEVEL = 'STATEMENT' THEN
                    IF TG_OP = 'INSERT' THEN
                        {insert_one};
                        IF NOT FOUND THEN
                            {insert_chunked};
                        END IF;
                    ELSE
                        {delete_one};
                        IF NOT FOUND THEN
                            {delete_chunked};
                        END IF;
                    END IF;
                    IF NOT FOUND THEN
                        RETURN NULL;
                    END IF;
                ELSE
                    INSERT INTO {log} (txid, tbl, relid, op, n, row_new, row_old)
                    VALUES (txid_current(), {TABLE_NAME}, TG_RELID, left(TG_OP, 1)::\"char\", 1,
                            CASE WHEN TG_OP <> 'DELETE' THEN json_build_array(row_to_json(NEW)) END,
                            CASE WHEN TG_OP <> 'INSERT' THEN json_build_array(row_to_json(OLD)) END);
                END IF;
                PERFORM pg_notify('{CHANNEL}', '');
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
            "{};
             CREATE TRIGGER {TRIGGER} AFTER UPDATE ON {qualified}
             FOR EACH ROW EXECUTE FUNCTION {function}();
             CREATE TRIGGER {INSERT_TRIGGER} AFTER INSERT ON {qualified}
             REFERENCING NEW TABLE AS {NEW_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {function}();
             CREATE TRIGGER {DELETE_TRIGGER} AFTER DELETE ON {qualified}
             REFERENCING OLD TABLE AS {OLD_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {function}();
             CREATE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {qualified}
             FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
            Names::drop_triggers_ddl(qualified)
        )
    }

    /// Drops the table's capture triggers.
    fn drop_triggers_ddl(qualified: &str) -> String {
        format!(
            "DROP TRIGGER IF EXISTS {TRIGGER} ON {qualified};
             DROP TRIGGER IF EXISTS {INSERT_TRIGGER} ON {qualified};
             DROP TRIGGER IF EXISTS {DELETE_TRIGGER} ON {qualified};
             DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {qualified}"
        )
    }
}

/// The trigger's statements that log the rows of a transition table: one
/// log row when they fit in one (no rows: nothing), and the general form
/// that splits them into chunks of at most `CHUNK_ROWS` images and about
/// `CHUNK_BYTES` (the key of a row's chunk is the sum of two non-decreasing
/// counts, so chunks are runs of consecutive rows).
fn capture_sql(log: &str, op: char, column: &str, transition: &str) -> (String, String) {
    let head = format!(
        "INSERT INTO {log} (txid, tbl, relid, op, n, {column})
         SELECT txid_current(), {TABLE_NAME}, TG_RELID, '{op}', count(*), json_agg(j)"
    );
    let one = format!(
        "{head} FROM (SELECT row_to_json(t.*) AS j FROM {transition} t) r
         HAVING count(*) BETWEEN 1 AND {CHUNK_ROWS}
            AND sum(octet_length(j::text)) <= {CHUNK_BYTES}"
    );
    let chunked = format!(
        "{head} FROM (
             SELECT j, (row_number() OVER w - 1) / {CHUNK_ROWS}
                       + (sum(octet_length(j::text)) OVER w - octet_length(j::text)) / {CHUNK_BYTES} AS chunk
             FROM (SELECT row_to_json(t.*) AS j FROM {transition} t) r
             WINDOW w AS (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
         ) c
         GROUP BY chunk"
    );
    (one, chunked)
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

/// The change log as a whole, as [`Feed::log_info`](crate::Feed::log_info)
/// reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LogInfo {
    /// Changes held (offsets assigned or not yet), of every table.
    pub changes: i64,
    /// Bytes the log takes on disk (with its indexes and TOAST).
    pub bytes: i64,
    /// The oldest offset still held, if any.
    pub oldest_offset: Option<i64>,
    /// The last offset assigned.
    pub last_offset: i64,
    /// Every offset up to this one was pruned.
    pub pruned_through: i64,
}

/// Runs `work` on session `$c`, which holds the installers' advisory lock:
/// one session for both (a pool of one connection is enough, and on the
/// embedded backend the wait for the lock does not hold the backend).
macro_rules! locked {
    ($pool:expr, |$c:ident| $work:expr) => {{
        let mut $c = $pool.acquire().await?;
        $c.lock(INSTALL_LOCK, INSTALL_LOCK_TIMEOUT).await?;
        let out = $work.await;
        // On failure the release of the session drops the lock with it.
        if out.is_ok() {
            $c.unlock(INSTALL_LOCK).await?;
        }
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

/// Whether the shared tables are all there in the current layout; whether
/// the log is there, and of the first layout; and whether the feeds table
/// predates tracking tables by OID.
const LAYOUT_SQL: &str = "SELECT to_regclass($1) IS NOT NULL
        AND to_regclass($2) IS NOT NULL
        AND to_regclass($4) IS NOT NULL
        AND to_regclass($5) IS NOT NULL
        AND EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = to_regclass($3) AND attname = 'horizon' AND NOT attisdropped)
        AND EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = to_regclass($4) AND attname = 'shape' AND NOT attisdropped)
        AND EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = to_regclass($1) AND attname = 'relid' AND NOT attisdropped)
        AND NOT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = to_regclass($1) AND attname = 'pos' AND NOT attisdropped),
    to_regclass($1) IS NOT NULL,
    EXISTS (SELECT 1 FROM pg_attribute
            WHERE attrelid = to_regclass($1) AND attname = 'pos' AND NOT attisdropped),
    to_regclass($4) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute
            WHERE attrelid = to_regclass($4) AND attname = 'relid' AND NOT attisdropped)";

struct Layout {
    ready: bool,
    log_exists: bool,
    first_layout: bool,
    feeds_by_name: bool,
}

async fn layout<E: Executor>(ex: &mut E, names: &Names) -> Result<Layout> {
    let row = ex
        .query_one(
            LAYOUT_SQL,
            &[
                Value::from(names.log.as_str()),
                Value::from(names.ticks.as_str()),
                Value::from(names.state.as_str()),
                Value::from(names.feeds.as_str()),
                Value::from(names.table("changefeed_log_txid")),
            ],
        )
        .await?;
    Ok(Layout {
        ready: row.try_get(0)?,
        log_exists: row.try_get(1)?,
        first_layout: row.try_get(2)?,
        feeds_by_name: row.try_get(3)?,
    })
}

/// A table's shape, as the feeds table keeps it to notice renames, changes
/// of columns and rewrites: `{"table": qualified name, "filenode": its
/// file, "columns": [[name, type, number], ...], "key": [primary-key
/// columns]}`, or NULL when `relid` (an SQL expression) names no table.
/// `oid` tells a shape recorded in another database (brought by an
/// export): the table keeps its name there but not its OID or file, so
/// such a shape is taken up without an event.
/// A column dropped and added again has a new number; a rewrite in place
/// (`ALTER COLUMN ... TYPE ... USING`) a new file (so do `VACUUM FULL` and
/// `CLUSTER`, which are reported as rewrites too; `TRUNCATE` records its new
/// file itself).
fn shape_sql(relid: &str) -> String {
    format!(
        "(SELECT jsonb_build_object(
            'table', quote_ident(n.nspname) || '.' || quote_ident(c.relname),
            'oid', c.oid::int8,
            'filenode', c.relfilenode::int8,
            'columns', coalesce((SELECT jsonb_agg(jsonb_build_array(a.attname, format_type(a.atttypid, a.atttypmod), a.attnum) ORDER BY a.attnum)
                                 FROM pg_attribute a
                                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::jsonb),
            'key', coalesce((SELECT jsonb_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
                             FROM pg_index i
                             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                             WHERE i.indrelid = c.oid AND i.indisprimary), '[]'::jsonb))
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = {relid})"
    )
}

/// Upgrades a feeds table of the releases that named tables (in `tables_in`,
/// the schema the feed's tables were in) to tracking them by OID: the log's
/// rows get their table's OID, feeds of tables that are gone are dropped,
/// and every feed's triggers are installed again (with the truncate
/// trigger).
async fn upgrade_feeds<E: Executor>(ex: &mut E, names: &Names, tables_in: &str) -> Result<()> {
    let Names { log, feeds, .. } = names;
    ex.batch_execute(&format!(
        "ALTER TABLE {feeds} ADD COLUMN IF NOT EXISTS relid regclass, ADD COLUMN IF NOT EXISTS shape jsonb;
         ALTER TABLE {log} ADD COLUMN IF NOT EXISTS relid regclass"
    ))
    .await?;
    ex.execute(
        &format!(
            "UPDATE {feeds} SET relid = to_regclass(quote_ident($1) || '.' || quote_ident(tbl))
             WHERE relid IS NULL"
        ),
        &[Value::from(tables_in)],
    )
    .await?;
    ex.batch_execute(&format!(
        "UPDATE {log} l SET relid = f.relid FROM {feeds} f WHERE l.relid IS NULL AND l.tbl = f.tbl;
         DELETE FROM {feeds} WHERE relid IS NULL;
         UPDATE {feeds} SET shape = {shape}, tbl = {shape}->>'table';
         ALTER TABLE {feeds} DROP CONSTRAINT IF EXISTS changefeed_feeds_pkey;
         ALTER TABLE {feeds} ADD PRIMARY KEY (relid)",
        shape = shape_sql("relid")
    ))
    .await?;
    ex.batch_execute(&names.function_ddl()).await?;
    let tables = ex.query(&format!("SELECT tbl FROM {feeds}"), &[]).await?;
    for row in &tables {
        let table: String = row.try_get(0)?;
        ex.batch_execute(&names.triggers_ddl(&table)).await?;
    }
    Ok(())
}

/// Creates the shared tables if they are missing (moving them from
/// `legacy`, the schema the previous release kept them in, and upgrading
/// older layouts in place), within the caller's transaction. Does nothing,
/// and takes no table lock, when they are there: readers tick while feeds
/// are enabled.
async fn install_base<E: Executor>(ex: &mut E, names: &Names, legacy: Option<&str>) -> Result<()> {
    let mut now = layout(ex, names).await?;
    if now.ready {
        return Ok(());
    }
    let mut tables_in = names.schema.clone();
    if let Some(from) = legacy.filter(|from| *from != names.schema) {
        let old = Names::new(from);
        if !now.log_exists && layout(ex, &old).await?.log_exists {
            tracing::info!(target: "changefeed", from, to = names.schema, "moving the change feed's tables into a schema of their own");
            ex.batch_execute(&names.move_ddl(from)).await?;
            tables_in = from.to_owned();
            now = layout(ex, names).await?;
        }
    }
    if now.first_layout {
        tracing::warn!(target: "changefeed", schema = names.schema, "moving a change log of the first layout aside as changefeed_log_v1; resuming from its offsets requires a resync");
        ex.batch_execute(&names.upgrade_v1_ddl()).await?;
    }
    if !now.log_exists || now.first_layout {
        ex.batch_execute(&names.log_ddl()).await?;
    }
    if now.feeds_by_name {
        upgrade_feeds(ex, names, &tables_in).await?;
    }
    ex.batch_execute(&names.meta_ddl()).await?;
    if now.first_layout {
        // The installed triggers call the function by name: it must write
        // the new log before the first writer does.
        ex.batch_execute(&names.function_ddl()).await?;
    }
    Ok(())
}

/// Creates the shared tables if they are missing, or moves them from
/// `legacy`; then marks as pruned the offsets no tick holds.
pub(crate) async fn ensure_base<P: Pool>(
    pool: &P,
    names: &Names,
    legacy: Option<&str>,
) -> Result<()> {
    if !layout(&mut pool.acquire().await?, names).await?.ready {
        locked!(pool, |c| async {
            let mut tx = c.begin().await?;
            install_base(&mut tx, names, legacy).await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        })?;
    }
    adopt(pool, names).await
}

/// Makes a feed's state brought from another database (an export, a
/// migration) hold on this one. Offsets that no tick holds are gone: a log
/// left out of an export (or emptied by hand) must tell a resuming
/// subscriber to resync, never skip its offsets in silence. And the last
/// tick's snapshot, taken on the other server, may lie ahead of this one's
/// transaction ids, which would hide every new change as already seen: it
/// is replaced by a snapshot of this server (bumping `gen`, so that a
/// concurrent tick retries rather than being overwritten).
async fn adopt<P: Pool>(pool: &P, names: &Names) -> Result<()> {
    let Names { ticks, state, .. } = names;
    pool.execute(
        &format!(
            "UPDATE {state} SET pruned_through = h.held_from
             FROM (SELECT least(last_pos, coalesce((SELECT min(base) FROM {ticks}), last_pos)) AS held_from
                   FROM {state}) h
             WHERE pruned_through < h.held_from"
        ),
        &[],
    )
    .await?;
    let foreign = pool
        .query_opt(
            &format!(
                "SELECT gen FROM {state}
                 WHERE txid_snapshot_xmax(snap) > txid_snapshot_xmax(txid_current_snapshot())"
            ),
            &[],
        )
        .await?;
    if let Some(row) = foreign {
        let generation: i64 = row.try_get(0)?;
        tracing::info!(target: "changefeed", schema = names.schema, "the feed's state comes from another database; taking up this one's transaction ids");
        pool.execute(
            &format!(
                "UPDATE {state} SET snap = txid_current_snapshot(), horizon = 0, gen = gen + 1
                 WHERE gen = $1"
            ),
            &[Value::from(generation)],
        )
        .await?;
    }
    Ok(())
}

/// A table a feed can watch, resolved from its name.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    /// Its OID.
    pub(crate) relid: i64,
    /// Its schema-qualified, quoted name: for messages and for SQL.
    pub(crate) name: String,
}

/// Resolves `table` as SQL would (`schema.table`, unquoted parts folded,
/// an unqualified name by `search_path`): the table, or why no feed can
/// watch it.
async fn resolve<E: Executor>(ex: &mut E, names: &Names, table: &str) -> Result<Watched> {
    let own: Vec<String> = OWN_TABLES.iter().map(|t| names.table(t)).collect();
    let row = ex
        .query_opt(
            "SELECT c.oid::int8, quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                    c.relkind::text, c.relispartition,
                    EXISTS (SELECT 1 FROM unnest($2::text[]) o WHERE to_regclass(o) = c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1)",
            &[Value::from(table), Value::from(own)],
        )
        .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return Err(Error::NoSuchTable(table.to_owned())),
        // Up to PostgreSQL 15, `to_regclass` raises on a name that is not
        // valid SQL (`a b c`) rather than returning NULL: 42602
        // invalid_name. Any other error (a permission, say) is itself.
        Err(e) if e.code().is_some_and(|c| c.code() == "42602") => {
            return Err(Error::NoSuchTable(table.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    let refused = |reason: &str| {
        Err(Error::Refused {
            table: table.to_owned(),
            reason: reason.to_owned(),
        })
    };
    let (relid, name, kind, partition, own): (i64, String, String, bool, bool) = (
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
    );
    if own {
        return refused("it is one of the change feed's own tables");
    }
    if partition {
        return refused("it is a partition; partitioned tables are not supported");
    }
    match kind.as_str() {
        "r" => Ok(Watched { relid, name }),
        "p" => refused("it is a partitioned table; partitioned tables are not supported"),
        _ => refused("it is not a table"),
    }
}

/// Installs the trigger on `table` (once) and registers the feed. Returns
/// the table's key columns.
#[tracing::instrument(name = "changefeed.enable", level = "info", skip_all, fields(schema = %names.schema, table))]
pub(crate) async fn enable<P: Pool>(pool: &P, names: &Names, table: &str) -> Result<Vec<String>> {
    locked!(pool, |c| async {
        let watched = resolve(&mut c, names, table).await?;
        let mut tx = c.begin().await?;
        install_base(&mut tx, names, None).await?;
        let shape: Json = tx
            .query_one(
                &format!("SELECT {}::json", shape_sql("$1::int8::oid")),
                &[Value::from(watched.relid)],
            )
            .await?
            .try_get(0)?;
        let keys: Vec<String> = shape
            .get("key")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::Corrupt(format!("key columns of {table}: {e}")))?
            .unwrap_or_default();
        if keys.is_empty() {
            return Err(Error::NoPrimaryKey(table.to_owned()));
        }
        // The truncate trigger is the newest of the set: without it, the
        // table has no triggers or an earlier version's.
        let installed = tx
            .query_opt(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = $1::int8::oid AND tgname = $2",
                &[Value::from(watched.relid), Value::from(TRUNCATE_TRIGGER)],
            )
            .await?
            .is_some();
        // Replaced every time (under the installers' lock) so that an
        // earlier version's function is upgraded.
        tx.batch_execute(&names.function_ddl()).await?;
        if !installed {
            tx.batch_execute(&names.triggers_ddl(&watched.name)).await?;
        }
        // An enabled feed keeps its recorded shape, so that a change of
        // columns not yet noticed is still reported.
        tx.execute(
            &format!(
                "INSERT INTO {} (relid, tbl, key_columns, shape) VALUES ($1::int8::oid, $2, $3, $4)
                 ON CONFLICT (relid) DO NOTHING",
                names.feeds
            ),
            &[
                Value::from(watched.relid),
                Value::from(watched.name.as_str()),
                Value::from(Json::from(keys.clone())),
                Value::from(shape),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok::<_, Error>(keys)
    })
}

/// Logs the end of the feed on `relid` (`reason`: `disabled` or
/// `dropped`), in the caller's transaction, and nudges readers.
async fn log_end<E: Executor>(
    ex: &mut E,
    names: &Names,
    relid: i64,
    table: &str,
    reason: &str,
    old: Option<&Json>,
) -> Result<()> {
    ex.execute(
        &format!(
            "INSERT INTO {} (txid, tbl, relid, op, n, row_new, row_old)
             VALUES (txid_current(), $1, $2::int8::oid, 'X', 1,
                     json_build_array(json_build_object('reason', $3::text)),
                     json_build_array($4::json))",
            names.log
        ),
        &[
            Value::from(table),
            Value::from(relid),
            Value::from(reason),
            Value::from(old.cloned()),
        ],
    )
    .await?;
    ex.execute("SELECT pg_notify($1, '')", &[Value::from(CHANNEL)])
        .await?;
    Ok(())
}

/// Removes the trigger from `table`, and the function once no feed uses it;
/// ends the feed's subscriptions (a final event in the log) and forgets the
/// table's row images in the log. Returns whether a feed was enabled.
#[tracing::instrument(name = "changefeed.disable", level = "info", skip_all, fields(schema = %names.schema, table))]
pub(crate) async fn disable<P: Pool>(pool: &P, names: &Names, table: &str) -> Result<bool> {
    locked!(pool, |c| async {
        let watched = resolve(&mut c, names, table).await?;
        let mut tx = c.begin().await?;
        install_base(&mut tx, names, None).await?;
        tx.batch_execute(&Names::drop_triggers_ddl(&watched.name))
            .await?;
        let removed = tx
            .query_opt(
                &format!(
                    "DELETE FROM {} WHERE relid = $1::int8::oid RETURNING shape::json",
                    names.feeds
                ),
                &[Value::from(watched.relid)],
            )
            .await?;
        if let Some(row) = &removed {
            let shape: Option<Json> = row.try_get(0)?;
            // Pruned on disable: no row image of the table stays behind
            // (offsets stay, with nothing to deliver).
            tx.execute(
                &format!(
                    "UPDATE {} SET row_new = NULL, row_old = NULL
                     WHERE relid = $1::int8::oid AND op IN ('I', 'U', 'D')",
                    names.log
                ),
                &[Value::from(watched.relid)],
            )
            .await?;
            log_end(
                &mut tx,
                names,
                watched.relid,
                &watched.name,
                "disabled",
                shape.as_ref(),
            )
            .await?;
        }
        let remaining = tx
            .query_one(&format!("SELECT count(*) FROM {}", names.feeds), &[])
            .await?
            .try_get::<i64, _>(0)?;
        if remaining == 0 {
            tx.batch_execute(&format!("DROP FUNCTION IF EXISTS {}()", names.function))
                .await?;
        }
        tx.commit().await?;
        Ok::<_, Error>(removed.is_some())
    })
}

/// Notices renamed, changed and dropped tables of enabled feeds, and logs
/// each as an event (a change of shape, or the feed's end). Two readers
/// noticing the same change log it once: the feed's row is locked and
/// compared again. Returns the number of events logged.
#[tracing::instrument(name = "changefeed.detect", level = "debug", skip_all, fields(schema = %names.schema))]
pub(crate) async fn detect<P: Pool>(pool: &P, names: &Names) -> Result<u64> {
    let feeds = &names.feeds;
    let changed = pool
        .query(
            &format!(
                "SELECT f.relid::int8 FROM {feeds} f WHERE f.shape IS DISTINCT FROM {}",
                shape_sql("f.relid")
            ),
            &[],
        )
        .await?;
    let mut logged = 0;
    for row in &changed {
        let relid: i64 = row.try_get(0)?;
        let mut client = pool.acquire().await?;
        let mut tx = client.begin().await?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT f.tbl, f.shape::json, {}::json FROM {feeds} f
                     WHERE f.relid = $1::int8::oid FOR UPDATE",
                    shape_sql("f.relid")
                ),
                &[Value::from(relid)],
            )
            .await?;
        let Some(row) = row else {
            continue;
        };
        let (table, old, new): (String, Option<Json>, Option<Json>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        match new {
            None => {
                tx.execute(
                    &format!("DELETE FROM {feeds} WHERE relid = $1::int8::oid"),
                    &[Value::from(relid)],
                )
                .await?;
                // The table is gone, and its rows with it: so are their
                // images, and the OID its changes carried, which another
                // table may take (here, or in a database this log is
                // exported to). Offsets stay, with nothing to deliver.
                tx.execute(
                    &format!(
                        "UPDATE {} SET row_new = NULL, row_old = NULL, relid = NULL
                         WHERE relid = $1::int8::oid",
                        names.log
                    ),
                    &[Value::from(relid)],
                )
                .await?;
                log_end(&mut tx, names, relid, &table, "dropped", old.as_ref()).await?;
            }
            // Recorded in another database (an import): the same table by
            // name, in new files. Taken up as it is, without an event.
            Some(new) if old.as_ref().and_then(|o| o.get("oid")) != new.get("oid") => {
                tx.execute(
                    &format!("UPDATE {feeds} SET shape = $2::jsonb WHERE relid = $1::int8::oid"),
                    &[Value::from(relid), Value::from(new)],
                )
                .await?;
                tx.commit().await?;
                continue;
            }
            Some(new) if Some(&new) != old.as_ref() => {
                let name = new
                    .get("table")
                    .and_then(Json::as_str)
                    .unwrap_or(&table)
                    .to_owned();
                tx.execute(
                    &format!(
                        "UPDATE {feeds} SET shape = $2::jsonb, tbl = $3,
                             key_columns = coalesce(nullif($2::jsonb->'key', '[]'::jsonb), key_columns)
                         WHERE relid = $1::int8::oid"
                    ),
                    &[Value::from(relid), Value::from(new.clone()), Value::from(name.as_str())],
                )
                .await?;
                tx.execute(
                    &format!(
                        "INSERT INTO {} (txid, tbl, relid, op, n, row_new, row_old)
                         VALUES (txid_current(), $1, $2::int8::oid, 'S', 1,
                                 json_build_array($3::json), json_build_array($4::json))",
                        names.log
                    ),
                    &[
                        Value::from(name.as_str()),
                        Value::from(relid),
                        Value::from(new),
                        Value::from(old),
                    ],
                )
                .await?;
                tx.execute("SELECT pg_notify($1, '')", &[Value::from(CHANNEL)])
                    .await?;
            }
            Some(_) => continue,
        }
        tx.commit().await?;
        logged += 1;
    }
    Ok(logged)
}

/// The table `table` names and its feed's key columns.
pub(crate) async fn feed_of<P: Pool>(
    pool: &P,
    names: &Names,
    table: &str,
) -> Result<(Watched, Vec<String>)> {
    let watched = resolve(&mut pool.acquire().await?, names, table).await?;
    let row = pool
        .query_opt(
            &format!(
                "SELECT key_columns FROM {} WHERE relid = $1::int8::oid",
                names.feeds
            ),
            &[Value::from(watched.relid)],
        )
        .await?
        .ok_or_else(|| Error::NotEnabled(table.to_owned()))?;
    let keys = serde_json::from_value(row.try_get::<Json, _>(0)?)
        .map_err(|e| Error::Corrupt(format!("key columns of {table}: {e}")))?;
    Ok((watched, keys))
}

/// The rows of the ticks in `ticks` (a query yielding `base, span, lo, hi,
/// prev, cur`) with each log row's last offset (`pos_end`): a tick's rows
/// are the log rows in its id range whose transaction its snapshot sees and
/// its previous snapshot did not, numbered in id order after its base.
fn tick_rows_sql(log: &str, ticks: &str) -> String {
    format!(
        "SELECT t.base, t.base + t.span AS tick_end, l.id, l.n, l.tbl, l.op::text AS op,
                l.row_new, l.row_old, l.relid::int8 AS relid,
                t.base + sum(l.n) OVER (PARTITION BY t.base ORDER BY l.id) AS pos_end
         FROM ({ticks}) t
         JOIN {log} l ON l.id BETWEEN t.lo AND t.hi
             AND txid_visible_in_snapshot(l.txid, t.cur)
             AND NOT txid_visible_in_snapshot(l.txid, t.prev)"
    )
}

/// The enabled feeds.
pub(crate) async fn list<P: Pool>(pool: &P, names: &Names) -> Result<Vec<FeedInfo>> {
    detect(pool, names).await?;
    tick_pool(pool, names).await?;
    let Names {
        log, ticks, feeds, ..
    } = names;
    let rows = tick_rows_sql(log, &format!("SELECT * FROM {ticks}"));
    let rows = pool
        .query(
            &format!(
                "WITH o AS (
                    SELECT relid, min(pos_end - n + 1) AS first, max(pos_end) AS last
                    FROM ({rows}) r GROUP BY relid
                 ), c AS (
                    SELECT relid, sum(n)::int8 AS events,
                           sum(coalesce(pg_column_size(row_new), 0)
                               + coalesce(pg_column_size(row_old), 0))::int8 AS bytes
                    FROM {log} GROUP BY relid
                 )
                 SELECT f.tbl, f.key_columns, o.first, o.last,
                        coalesce(c.events, 0), coalesce(c.bytes, 0)
                 FROM {feeds} f LEFT JOIN o ON o.relid = f.relid LEFT JOIN c ON c.relid = f.relid
                 ORDER BY f.tbl"
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

/// The log's size and offsets.
pub(crate) async fn log_info<P: Pool>(pool: &P, names: &Names) -> Result<LogInfo> {
    tick_pool(pool, names).await?;
    let Names { log, state, .. } = names;
    let row = pool
        .query_one(
            &format!(
                "SELECT (SELECT coalesce(sum(n), 0)::int8 FROM {log}),
                        pg_total_relation_size($1::regclass),
                        s.last_pos, s.pruned_through
                 FROM {state} s"
            ),
            &[Value::from(log.as_str())],
        )
        .await?;
    let (changes, bytes, last_offset, pruned_through): (i64, i64, i64, i64) = (
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    );
    Ok(LogInfo {
        changes,
        bytes,
        oldest_offset: (last_offset > pruned_through).then_some(pruned_through + 1),
        last_offset,
        pruned_through,
    })
}

/// Gives offsets to the changes of every transaction that committed since
/// the last tick: in one statement (one snapshot), takes the log rows its
/// snapshot sees and the previous tick's did not, numbers their images in
/// id order after `last_pos`, records them as ticks of at most
/// `TICK_EVENTS` events (id range, both snapshots, base offset) and
/// advances the state. Returns the number of offsets given.
///
/// Ticks are serialized by the state row's `gen`: a tick whose snapshot
/// predates another reader's tick updates nothing, inserts nothing, and is
/// retried with a new snapshot, which sees the other tick (so every
/// snapshot a tick starts from is contained in the one it ends with).
///
#[tracing::instrument(name = "changefeed.tick", level = "debug", skip_all, fields(schema = %names.schema, events = tracing::field::Empty))]
pub(crate) async fn tick<E: Executor>(ex: &mut E, names: &Names) -> Result<u64> {
    let sql = tick_sql(names);
    for _ in 0..TICK_ATTEMPTS {
        let row = ex.query_one(&sql, &[]).await?;
        let (chunks, updated, events) = (
            row.try_get::<i64, _>(0)?,
            row.try_get::<i64, _>(1)?,
            row.try_get::<i64, _>(2)?,
        );
        if chunks == 0 || updated > 0 {
            tracing::Span::current().record("events", events);
            return Ok(u64::try_from(events).unwrap_or(0));
        }
        tracing::trace!(target: "changefeed", "tick raced another reader's; retrying");
    }
    // Nothing is lost: the changes get their offsets at the next tick.
    Ok(0)
}

/// [`tick`] on a session of its own.
pub(crate) async fn tick_pool<P: Pool>(pool: &P, names: &Names) -> Result<u64> {
    let mut client = pool.acquire().await?;
    tick(&mut client, names).await
}

fn tick_sql(names: &Names) -> String {
    let Names {
        log, ticks, state, ..
    } = names;
    // The changes the previous tick's snapshot did not see are the rows
    // above its `top` (the largest id it saw) and the rows of the
    // transactions running when it was taken: those in its `xip` list and
    // those from its `xmax` up to the `horizon`, the previous tick's own
    // transaction id, assigned after its snapshot. Each branch is an index
    // lookup (the id range bounded on both sides, so that planners without
    // statistics estimate it as selective), whatever the log's size and
    // however long a transaction stays open.
    format!(
        "WITH st AS (
            SELECT last_pos, snap, top, horizon, gen FROM {state} LIMIT 1
        ), cur AS (
            SELECT txid_current_snapshot() AS snap
        ), fresh AS (
            SELECT id, n, sum(n) OVER (ORDER BY id) AS acc FROM (
                SELECT l.id, l.n FROM {log} l
                WHERE l.id > (SELECT top FROM st) AND l.id < {NO_ID}
                UNION ALL
                SELECT l.id, l.n FROM {log} l
                WHERE l.txid = ANY (ARRAY(SELECT txid_snapshot_xip(snap) FROM st))
                  AND l.id <= (SELECT top FROM st)
                UNION ALL
                SELECT l.id, l.n FROM {log} l
                WHERE l.txid >= (SELECT txid_snapshot_xmax(snap) FROM st)
                  AND l.txid < (SELECT horizon FROM st)
                  AND l.id <= (SELECT top FROM st)
            ) f
        ), chunks AS (
            SELECT min(id) AS lo, max(id) AS hi, max(acc) AS acc, sum(n) AS n
            FROM fresh GROUP BY (acc - n) / {TICK_EVENTS}
        ), upd AS (
            UPDATE {state} s SET
                last_pos = st.last_pos + (SELECT max(acc) FROM chunks),
                snap = cur.snap,
                top = greatest(st.top, (SELECT max(hi) FROM chunks)),
                horizon = txid_current(),
                gen = st.gen + 1
            FROM st, cur
            WHERE s.gen = st.gen AND EXISTS (SELECT 1 FROM chunks)
            RETURNING st.last_pos AS base, s.gen, st.snap AS prev, cur.snap AS cur
        ), ins AS (
            INSERT INTO {ticks} (base, span, gen, lo, hi, prev, cur)
            SELECT upd.base + c.acc - c.n, c.n, upd.gen, c.lo, c.hi, upd.prev, upd.cur
            FROM upd, chunks c
            RETURNING span
        )
        SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM upd),
               (SELECT coalesce(sum(span), 0) FROM ins)::int8"
    )
}

/// `(last offset given, offsets pruned through)`.
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
    /// Every offset up to this one has been read.
    pub(crate) through: i64,
    /// Whether offsets were given beyond `through` (the batch was cut short).
    pub(crate) more: bool,
    pub(crate) pruned_through: i64,
}

/// The `i`th row image of a log row's array of images.
fn image(images: &Option<Json>, i: usize, what: &str) -> Result<Option<JsonRow>> {
    match images {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Array(items)) => match items.get(i) {
            Some(Json::Object(m)) => Ok(Some(m.clone())),
            other => Err(Error::Corrupt(format!(
                "{what}[{i}] is not a row image: {other:?}"
            ))),
        },
        Some(other) => Err(Error::Corrupt(format!("{what} is not an array: {other}"))),
    }
}

/// Reads the changes with offsets above `after` (of the table with OID
/// `relid` only if given) in offset order: whole ticks, about `limit`
/// offsets' worth.
#[tracing::instrument(name = "changefeed.read", level = "debug", skip_all, fields(schema = %names.schema, after, relid, events = tracing::field::Empty))]
pub(crate) async fn read<P: Pool>(
    pool: &P,
    names: &Names,
    after: i64,
    relid: Option<i64>,
    limit: i64,
) -> Result<Batch> {
    let sql = read_sql(names);
    let result = pool
        .query(
            &sql,
            &[Value::from(after), Value::from(relid), Value::from(limit)],
        )
        .await?;
    let mut batch = Batch {
        rows: Vec::new(),
        through: after,
        more: false,
        pruned_through: 0,
    };
    let mut last_pos = after;
    let mut tick_end = None;
    for r in &result {
        last_pos = r.try_get(0)?;
        batch.pruned_through = r.try_get(1)?;
        tick_end = r.try_get::<Option<i64>, _>(2)?;
        let Some(pos_end) = r.try_get::<Option<i64>, _>(3)? else {
            continue;
        };
        let n = r.try_get::<i32, _>(4)?;
        let table: String = r.try_get(5)?;
        let op = match r.try_get::<String, _>(6)?.as_str() {
            "I" => Op::Insert,
            "U" => Op::Update,
            "D" => Op::Delete,
            "T" => Op::Truncate,
            "S" => Op::Schema,
            "X" => Op::End,
            other => return Err(Error::Corrupt(format!("operation {other:?}"))),
        };
        let (new, old) = (
            r.try_get::<Option<Json>, _>(7)?,
            r.try_get::<Option<Json>, _>(8)?,
        );
        let relid = r.try_get::<Option<i64>, _>(9)?;
        let first = pos_end - i64::from(n) + 1;
        for i in 0..usize::try_from(n).unwrap_or(0) {
            let pos = first + i as i64;
            if pos <= after {
                continue;
            }
            batch.rows.push(LogRow {
                pos,
                relid,
                table: table.clone(),
                op,
                new: image(&new, i, "row_new")?,
                old: image(&old, i, "row_old")?,
            });
        }
    }
    tracing::Span::current().record("events", batch.rows.len());
    batch.through = tick_end.unwrap_or(last_pos).max(after);
    batch.more = batch.through < last_pos;
    Ok(batch)
}

/// The statement behind [`read`]: `$1` the offset to read after, `$2` the
/// table's OID or NULL, `$3` about how many offsets.
fn read_sql(names: &Names) -> String {
    let Names {
        log, ticks, state, ..
    } = names;
    let window = format!(
        "SELECT base, span, lo, hi, prev, cur FROM (
             SELECT *, sum(span) OVER (ORDER BY base) - span AS before FROM (
                 SELECT base, span, lo, hi, prev, cur FROM {ticks}
                 WHERE base >= coalesce((SELECT max(base) FROM {ticks} WHERE base <= $1), 0)
                   AND base + span > $1
                 ORDER BY base LIMIT 1000
             ) t0
         ) t1 WHERE before < $3"
    );
    let rows = tick_rows_sql(log, &window);
    // The end of the last tick read says how far the batch got even when
    // the table filter leaves no row.
    format!(
        "WITH r AS ({rows})
         SELECT s.last_pos, s.pruned_through, e.tick_end, x.pos_end, x.n, x.tbl, x.op, x.row_new, x.row_old, x.relid
         FROM (SELECT last_pos, pruned_through FROM {state} LIMIT 1) s
         LEFT JOIN (SELECT max(tick_end) AS tick_end FROM r) e ON true
         LEFT JOIN r x ON x.pos_end > $1 AND ($2::int8 IS NULL OR x.relid = $2)
         ORDER BY x.pos_end"
    )
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

    /// What a [`Feed`](crate::Feed) keeps unless told otherwise: 7 days of
    /// changes ([`Retention::DEFAULT_MAX_AGE`]); the poller prunes older
    /// ones (with the row images of deleted rows) every
    /// [`Options::prune_interval`](crate::Options::prune_interval).
    pub fn default_limits() -> Retention {
        Retention::unlimited().max_age(Retention::DEFAULT_MAX_AGE)
    }

    /// The default age limit: 7 days.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

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

/// Deletes a prefix (in offset order) of the changes with offsets as
/// `retention` allows, whole log rows at a time, and records how far it
/// went. Returns the changes deleted.
#[tracing::instrument(name = "changefeed.prune", level = "info", skip_all, fields(schema = %names.schema, ?retention))]
pub(crate) async fn prune<P: Pool>(pool: &P, names: &Names, retention: Retention) -> Result<u64> {
    if retention.max_age.is_none() && retention.max_rows.is_none() {
        return Ok(0);
    }
    // Only changes with offsets are pruned: tick first so that old committed
    // changes are not kept forever just because nobody read them yet.
    tick_pool(pool, names).await?;
    let Names {
        log, ticks, state, ..
    } = names;
    let max_rows = retention
        .max_rows
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let max_age = retention.max_age.map(|d| d.as_secs_f64());
    let mut client = pool.acquire().await?;
    let mut tx = client.begin().await?;
    let cut = tx
        .query_one(
            &format!(
                "SELECT greatest(
                    (SELECT last_pos - $1::int8 FROM {state} WHERE $1::int8 IS NOT NULL),
                    (SELECT max(base + span) FROM {ticks}
                     WHERE $2::float8 IS NOT NULL AND at < now() - make_interval(secs => $2::float8))
                 )"
            ),
            &[Value::from(max_rows), Value::from(max_age)],
        )
        .await?
        .try_get::<Option<i64>, _>(0)?;
    let Some(cut) = cut else {
        return Ok(0);
    };
    let below = format!("SELECT base, span, lo, hi, prev, cur FROM {ticks} WHERE base < $1");
    let rows = tick_rows_sql(log, &below);
    let row = tx
        .query_one(
            &format!(
                "WITH gone AS (SELECT id, n, pos_end FROM ({rows}) r WHERE pos_end <= $1),
                 del AS (DELETE FROM {log} l USING gone WHERE l.id = gone.id RETURNING gone.n, gone.pos_end)
                 SELECT coalesce(sum(n), 0)::int8, max(pos_end) FROM del"
            ),
            &[Value::from(cut)],
        )
        .await?;
    let (deleted, through) = (row.try_get::<i64, _>(0)?, row.try_get::<Option<i64>, _>(1)?);
    let Some(through) = through else {
        return Ok(0);
    };
    // Ticks below the cut go; the one it falls in keeps its remaining rows,
    // numbered from the cut.
    tx.batch_execute(&format!(
        "DELETE FROM {ticks} WHERE base + span <= {through};
         UPDATE {ticks} SET span = base + span - {through}, base = {through}
         WHERE base < {through} AND base + span > {through};
         UPDATE {state} SET pruned_through = greatest(pruned_through, {through})"
    ))
    .await?;
    tx.commit().await?;
    drop(client);
    if pool.backend() == BackendKind::Pglite {
        // PGlite has no autovacuum.
        pool.batch_execute(&format!("VACUUM {log}, {ticks}"))
            .await?;
    }
    Ok(u64::try_from(deleted).unwrap_or(0))
}
