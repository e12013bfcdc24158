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
        format!(
            "CREATE TABLE {log} (
                id bigserial PRIMARY KEY,
                txid bigint NOT NULL,
                tbl text NOT NULL,
                op \"char\" NOT NULL,
                n integer NOT NULL,
                row_new json,
                row_old json
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
            CREATE TABLE IF NOT EXISTS {feeds} (
                tbl text PRIMARY KEY,
                key_columns jsonb NOT NULL,
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
        let Names { log, function, .. } = self;
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
                IF TG_LEVEL = 'STATEMENT' THEN
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
                    INSERT INTO {log} (txid, tbl, op, n, row_new, row_old)
                    VALUES (txid_current(), TG_TABLE_NAME, left(TG_OP, 1)::\"char\", 1,
                            CASE WHEN TG_OP <> 'DELETE' THEN json_build_array(row_to_json(NEW)) END,
                            CASE WHEN TG_OP <> 'INSERT' THEN json_build_array(row_to_json(OLD)) END);
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
            "{};
             CREATE TRIGGER {TRIGGER} AFTER UPDATE ON {qualified}
             FOR EACH ROW EXECUTE FUNCTION {function}();
             CREATE TRIGGER {INSERT_TRIGGER} AFTER INSERT ON {qualified}
             REFERENCING NEW TABLE AS {NEW_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {function}();
             CREATE TRIGGER {DELETE_TRIGGER} AFTER DELETE ON {qualified}
             REFERENCING OLD TABLE AS {OLD_ROWS} FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
            Names::drop_triggers_ddl(qualified)
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

/// The trigger's statements that log the rows of a transition table: one
/// log row when they fit in one (no rows: nothing), and the general form
/// that splits them into chunks of at most `CHUNK_ROWS` images and about
/// `CHUNK_BYTES` (the key of a row's chunk is the sum of two non-decreasing
/// counts, so chunks are runs of consecutive rows).
fn capture_sql(log: &str, op: char, column: &str, transition: &str) -> (String, String) {
    let head = format!(
        "INSERT INTO {log} (txid, tbl, op, n, {column})
         SELECT txid_current(), TG_TABLE_NAME, '{op}', count(*), json_agg(j)"
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

/// Whether the shared tables are all there in the current layout; and
/// whether the log is there, and of the first layout.
const LAYOUT_SQL: &str = "SELECT to_regclass($1) IS NOT NULL
        AND to_regclass($2) IS NOT NULL
        AND to_regclass($4) IS NOT NULL
        AND to_regclass($5) IS NOT NULL
        AND EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = to_regclass($3) AND attname = 'horizon' AND NOT attisdropped)
        AND NOT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = to_regclass($1) AND attname = 'pos' AND NOT attisdropped),
    to_regclass($1) IS NOT NULL,
    EXISTS (SELECT 1 FROM pg_attribute
            WHERE attrelid = to_regclass($1) AND attname = 'pos' AND NOT attisdropped)";

async fn layout<E: Executor>(ex: &mut E, names: &Names) -> Result<(bool, bool, bool)> {
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
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

/// Creates the shared tables if they are missing (and moves a first-layout
/// log aside), within the caller's transaction. Does nothing, and takes no
/// table lock, when they are there: readers tick while feeds are enabled.
async fn install_base<E: Executor>(ex: &mut E, names: &Names) -> Result<()> {
    let (ready, log_exists, first_layout) = layout(ex, names).await?;
    if ready {
        return Ok(());
    }
    if first_layout {
        tracing::warn!(target: "changefeed", schema = names.schema, "moving a change log of the first layout aside as changefeed_log_v1; resuming from its offsets requires a resync");
        ex.batch_execute(&names.upgrade_v1_ddl()).await?;
    }
    if !log_exists || first_layout {
        ex.batch_execute(&names.log_ddl()).await?;
    }
    ex.batch_execute(&names.meta_ddl()).await?;
    if first_layout {
        // The installed triggers call the function by name: it must write
        // the new log before the first writer does.
        ex.batch_execute(&names.function_ddl()).await?;
    }
    Ok(())
}

/// Creates the shared tables if they are missing.
pub(crate) async fn ensure_base<P: Pool>(pool: &P, names: &Names) -> Result<()> {
    if layout(&mut pool.acquire().await?, names).await?.0 {
        return Ok(());
    }
    locked!(pool, |c| async {
        let mut tx = c.begin().await?;
        install_base(&mut tx, names).await?;
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
#[tracing::instrument(name = "changefeed.enable", level = "info", skip_all, fields(schema = %names.schema, table))]
pub(crate) async fn enable<P: Pool>(pool: &P, names: &Names, table: &str) -> Result<Vec<String>> {
    locked!(pool, |c| async {
        let mut tx = c.begin().await?;
        install_base(&mut tx, names).await?;
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
#[tracing::instrument(name = "changefeed.disable", level = "info", skip_all, fields(schema = %names.schema, table))]
pub(crate) async fn disable<P: Pool>(pool: &P, names: &Names, table: &str) -> Result<bool> {
    locked!(pool, |c| async {
        let mut tx = c.begin().await?;
        install_base(&mut tx, names).await?;
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

/// The rows of the ticks in `ticks` (a query yielding `base, span, lo, hi,
/// prev, cur`) with each log row's last offset (`pos_end`): a tick's rows
/// are the log rows in its id range whose transaction its snapshot sees and
/// its previous snapshot did not, numbered in id order after its base.
fn tick_rows_sql(log: &str, ticks: &str) -> String {
    format!(
        "SELECT t.base, t.base + t.span AS tick_end, l.id, l.n, l.tbl, l.op::text AS op,
                l.row_new, l.row_old,
                t.base + sum(l.n) OVER (PARTITION BY t.base ORDER BY l.id) AS pos_end
         FROM ({ticks}) t
         JOIN {log} l ON l.id BETWEEN t.lo AND t.hi
             AND txid_visible_in_snapshot(l.txid, t.cur)
             AND NOT txid_visible_in_snapshot(l.txid, t.prev)"
    )
}

/// The enabled feeds.
pub(crate) async fn list<P: Pool>(pool: &P, names: &Names) -> Result<Vec<FeedInfo>> {
    tick_pool(pool, names).await?;
    let Names {
        log, ticks, feeds, ..
    } = names;
    let rows = tick_rows_sql(log, &format!("SELECT * FROM {ticks}"));
    let rows = pool
        .query(
            &format!(
                "WITH o AS (
                    SELECT tbl, min(pos_end - n + 1) AS first, max(pos_end) AS last
                    FROM ({rows}) r GROUP BY tbl
                 ), c AS (
                    SELECT tbl, sum(n)::int8 AS events,
                           sum(coalesce(pg_column_size(row_new), 0)
                               + coalesce(pg_column_size(row_old), 0))::int8 AS bytes
                    FROM {log} GROUP BY tbl
                 )
                 SELECT f.tbl, f.key_columns, o.first, o.last,
                        coalesce(c.events, 0), coalesce(c.bytes, 0)
                 FROM {feeds} f LEFT JOIN o ON o.tbl = f.tbl LEFT JOIN c ON c.tbl = f.tbl
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

/// Reads the changes with offsets above `after` (of `table` only if given)
/// in offset order: whole ticks, about `limit` offsets' worth.
#[tracing::instrument(name = "changefeed.read", level = "debug", skip_all, fields(schema = %names.schema, after, table, events = tracing::field::Empty))]
pub(crate) async fn read<P: Pool>(
    pool: &P,
    names: &Names,
    after: i64,
    table: Option<&str>,
    limit: i64,
) -> Result<Batch> {
    let sql = read_sql(names);
    let result = pool
        .query(
            &sql,
            &[Value::from(after), Value::from(table), Value::from(limit)],
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
            other => return Err(Error::Corrupt(format!("operation {other:?}"))),
        };
        let (new, old) = (
            r.try_get::<Option<Json>, _>(7)?,
            r.try_get::<Option<Json>, _>(8)?,
        );
        let first = pos_end - i64::from(n) + 1;
        for i in 0..usize::try_from(n).unwrap_or(0) {
            let pos = first + i as i64;
            if pos <= after {
                continue;
            }
            batch.rows.push(LogRow {
                pos,
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
/// table or NULL, `$3` about how many offsets.
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
         SELECT s.last_pos, s.pruned_through, e.tick_end, x.pos_end, x.n, x.tbl, x.op, x.row_new, x.row_old
         FROM (SELECT last_pos, pruned_through FROM {state} LIMIT 1) s
         LEFT JOIN (SELECT max(tick_end) AS tick_end FROM r) e ON true
         LEFT JOIN r x ON x.pos_end > $1 AND ($2::text IS NULL OR x.tbl = $2)
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
