//! Snapshots in keyset batches, each its own short transaction, kept exact
//! with the change log between them.
//!
//! Batch `i` runs in a REPEATABLE READ transaction that ticks and reads
//! `last_pos` (offset `O_i`) and reads the next rows (filter and columns in
//! SQL) with keys above `hi`, the last key delivered, in key order. Before
//! its rows are sent, the changes of offsets `(O_{i-1}, O_i]` to keys at or
//! below `hi` (rows already delivered) are sent as change events: an image
//! whose key is above `hi` is left out (the key's row is read by a later
//! batch, as of its own offset), so an update whose old key is at or below
//! `hi` and new key above is the delete of the old row, the reverse the
//! insert of the new one. Keys are compared by the server as values of the
//! key columns' types and collations. By induction, after batch `i` the
//! subscriber holds the table as of `O_i` restricted to keys up to the last
//! key of the batch; after the last batch (fewer rows than the batch size)
//! the whole table as of `O_last`, which [`Event::SnapshotEnd`] carries.

use std::time::Duration;

use db_core::{Client, Executor, Pool, Value, quote_ident};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::columns::Checked;
use crate::error::{Error, Result};
use crate::event::{Event, JsonRow, LogRow, Op, Spec};
use crate::schema::{self, Names};

/// Attempts at a batch that conflicts with a concurrent reader's tick.
const ATTEMPTS: u32 = 20;
/// Offsets of the log read at a time between two batches.
const LOG_BATCH: i64 = 1_000;

/// The statements of one subscription's snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The first batch: `$2` the batch size, the filter's values from `$3`.
    first: String,
    /// The next ones: `$1` the last key delivered (JSON).
    next: String,
    /// Whether each image of a JSON array (`$1`) has a key at or below
    /// `$2`'s, as values of the key types.
    at_or_below: String,
    params: Vec<String>,
    key: Vec<String>,
    batch: i64,
}

impl Plan {
    /// The statements for `relation` (quoted, qualified) as `checked` says.
    pub(crate) fn new(relation: &str, checked: &Checked, batch: usize) -> Plan {
        let select: Vec<String> = checked
            .selected
            .iter()
            .map(|c| format!("t.{}", quote_ident(c)))
            .collect();
        let order = |alias: &str| {
            checked
                .key
                .iter()
                .map(|k| format!("{alias}.{}", quote_ident(&k.name)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tuple = |items: Vec<String>| {
            if items.len() == 1 {
                items.join("")
            } else {
                format!("({})", items.join(", "))
            }
        };
        let from_json = |json: &str, collate: bool| {
            tuple(
                checked
                    .key
                    .iter()
                    .map(|k| {
                        let e = format!("CAST({json}->>{} AS {})", literal(&k.name), k.cast);
                        if collate { k.collated(&e) } else { e }
                    })
                    .collect(),
            )
        };
        let columns = tuple(
            checked
                .key
                .iter()
                .map(|k| format!("t.{}", quote_ident(&k.name)))
                .collect(),
        );
        let body = |bound: &str| {
            format!(
                "SELECT row_to_json(s.*) FROM (
                     SELECT {} FROM {relation} t
                     WHERE {bound}({})
                     ORDER BY {} LIMIT $2
                 ) s ORDER BY {}",
                select.join(", "),
                checked.condition,
                order("t"),
                order("s"),
            )
        };
        Plan {
            first: body("$1::json IS NULL AND "),
            next: body(&format!(
                "{columns} > {} AND ",
                from_json("$1::json", false)
            )),
            at_or_below: format!(
                "SELECT {} <= {} FROM json_array_elements($1::json) WITH ORDINALITY AS e(k, i)
                 ORDER BY i",
                from_json("e.k", true),
                from_json("$2::json", true),
            ),
            params: checked.params.clone(),
            key: checked.key.iter().map(|k| k.name.clone()).collect(),
            batch: i64::try_from(batch.max(1)).unwrap_or(i64::MAX),
        }
    }

    fn key(&self, row: &JsonRow) -> JsonRow {
        self.key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Json::Null)))
            .collect()
    }
}

/// A SQL string literal (for column names in `->>`).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One batch: its offset and rows.
pub(crate) struct Batch {
    pub(crate) offset: i64,
    rows: Vec<JsonRow>,
}

/// Reads the batch after `after` (the last key delivered; the first batch
/// when `None`), retrying conflicts with concurrent ticks.
pub(crate) async fn batch<P: Pool>(
    pool: &P,
    names: &Names,
    plan: &Plan,
    after: Option<&JsonRow>,
) -> Result<Batch> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_batch(pool, names, plan, after).await {
            Err(Error::Db(e)) if attempt < ATTEMPTS && e.is_serialization_failure() => {
                tracing::debug!(target: "changefeed", "snapshot batch conflicted with a concurrent reader; retrying");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

async fn try_batch<P: Pool>(
    pool: &P,
    names: &Names,
    plan: &Plan,
    after: Option<&JsonRow>,
) -> Result<Batch> {
    let mut params = vec![
        Value::from(after.map(|k| Json::Object(k.clone()))),
        Value::from(plan.batch),
    ];
    params.extend(plan.params.iter().map(|p| Value::from(p.as_str())));
    let sql = if after.is_some() {
        &plan.next
    } else {
        &plan.first
    };
    let mut client = pool.acquire().await?;
    let mut tx = client.begin().await?;
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    schema::tick(&mut tx, names).await?;
    let offset = tx
        .query_one(&format!("SELECT last_pos FROM {}", names.state), &[])
        .await?
        .try_get::<i64, _>(0)?;
    let result = tx.query(sql, &params).await?;
    tx.commit().await?;
    drop(client);
    let rows = result
        .iter()
        .map(|r| match r.try_get::<Json, _>(0)? {
            Json::Object(m) => Ok(m),
            other => Err(Error::Corrupt(format!("row image {other}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Batch { offset, rows })
}

/// Sends the snapshot whose first batch is `first`, and the changes to the
/// rows already sent between batches, then [`Event::SnapshotEnd`]. Returns
/// the offset the subscriber's state is the table's at, or `None` when the
/// subscriber went away.
pub(crate) async fn stream<P: Pool>(
    pool: &P,
    names: &Names,
    spec: &Spec,
    plan: &Plan,
    first: Batch,
    sender: &mpsc::Sender<Event>,
) -> Result<Option<i64>> {
    let mut batch = first;
    let mut hi: Option<JsonRow> = None;
    let mut cursor = batch.offset;
    loop {
        if let Some(hi) = &hi
            && !changes(pool, names, spec, plan, cursor, batch.offset, hi, sender).await?
        {
            return Ok(None);
        }
        cursor = batch.offset;
        let last = i64::try_from(batch.rows.len()).unwrap_or(i64::MAX) < plan.batch;
        for row in batch.rows {
            hi = Some(plan.key(&row));
            if sender.send(Event::SnapshotRow { row }).await.is_err() {
                return Ok(None);
            }
        }
        if last {
            if sender
                .send(Event::SnapshotEnd { offset: cursor })
                .await
                .is_err()
            {
                return Ok(None);
            }
            return Ok(Some(cursor));
        }
        batch = self::batch(pool, names, plan, hi.as_ref()).await?;
    }
}

/// Sends the changes of offsets `(after, through]` to the rows with keys at
/// or below `hi`. Returns false when the subscriber went away.
#[allow(clippy::too_many_arguments)]
async fn changes<P: Pool>(
    pool: &P,
    names: &Names,
    spec: &Spec,
    plan: &Plan,
    mut after: i64,
    through: i64,
    hi: &JsonRow,
    sender: &mpsc::Sender<Event>,
) -> Result<bool> {
    let mut events = Vec::new();
    while after < through {
        let read = schema::read(pool, names, after, Some(spec.relid), LOG_BATCH).await?;
        if read.pruned_through > after {
            return Err(Error::ResyncRequired {
                pruned_before: read.pruned_through + 1,
            });
        }
        if read.through <= after {
            return Err(Error::Corrupt(format!(
                "offsets {after} to {through} are missing from the change log"
            )));
        }
        let rows: Vec<&LogRow> = read.rows.iter().filter(|r| r.pos <= through).collect();
        // Which images have keys at or below `hi`, asked in one statement.
        let mut keys = Vec::new();
        for r in &rows {
            for image in [&r.old, &r.new].into_iter().flatten() {
                keys.push(Json::Object(plan.key(image)));
            }
        }
        let below = if keys.is_empty() {
            Vec::new()
        } else {
            pool.query(
                &plan.at_or_below,
                &[
                    Value::from(Json::Array(keys)),
                    Value::from(Json::Object(hi.clone())),
                ],
            )
            .await?
            .iter()
            .map(|r| r.try_get::<Option<bool>, _>(0).map(|b| b.unwrap_or(false)))
            .collect::<db_core::Result<Vec<_>>>()?
        };
        let mut below = below.into_iter();
        for r in rows {
            let mut keep = |image: &Option<JsonRow>| match image {
                Some(i) => below.next().unwrap_or(false).then(|| i.clone()),
                None => None,
            };
            let old = keep(&r.old);
            let new = keep(&r.new);
            let op = match (&old, &new) {
                (None, None) => continue,
                (Some(_), None) => Op::Delete,
                (None, Some(_)) => Op::Insert,
                (Some(_), Some(_)) => r.op,
            };
            let mut change = r.clone();
            (change.op, change.old, change.new) = (op, old, new);
            events.clear();
            spec.events(&change, &mut events);
            for event in events.drain(..) {
                if sender.send(event).await.is_err() {
                    return Ok(false);
                }
            }
        }
        after = read.through.min(through);
    }
    Ok(true)
}
