//! What schema-sync owns: the tables, columns and UNIQUE constraints a sync
//! created or a synced spec declared, kept in `schema_sync.owned` next to
//! the cached canonical spec. Only owned objects are ever dropped; anything
//! else in the namespace (made by hand, by another tool, by the changefeed)
//! is drift, whatever the flags.
//!
//! A database synced before the ledger existed owns nothing until its next
//! successful sync, which records what that spec declares.

use std::collections::{BTreeMap, BTreeSet};

use db_core::{Executor, Value};
use serde::{Deserialize, Serialize};

use crate::apply::SyncError;
use crate::ddl::unique_name;
use crate::introspect::LiveSchema;
use crate::spec::Schema;

/// The objects schema-sync owns in its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ownership {
    tables: BTreeSet<String>,
    columns: BTreeSet<(String, String)>,
    /// `(table, column)` of a one-column UNIQUE constraint, and its name.
    uniques: BTreeMap<(String, String), String>,
}

/// One row of the ledger, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    kind: String,
    tbl: String,
    obj: String,
    #[serde(default)]
    name: String,
}

const TABLE: &str = "table";
const COLUMN: &str = "column";
const UNIQUE: &str = "unique";

impl Ownership {
    /// Whether schema-sync may drop table `table`.
    pub(crate) fn owns_table(&self, table: &str) -> bool {
        self.tables.contains(table)
    }

    /// Whether schema-sync may drop column `column` of `table`.
    pub(crate) fn owns_column(&self, table: &str, column: &str) -> bool {
        self.columns
            .contains(&(table.to_owned(), column.to_owned()))
    }

    /// The name of the UNIQUE constraint on `table.column` schema-sync owns.
    pub(crate) fn unique(&self, table: &str, column: &str) -> Option<&str> {
        self.uniques
            .get(&(table.to_owned(), column.to_owned()))
            .map(String::as_str)
    }

    /// Everything of `spec` that exists in `live`, as owned: what an offline
    /// diff assumes of the older spec, and what a sync adopts.
    pub(crate) fn declared(spec: &Schema, live: &LiveSchema) -> Ownership {
        let mut owned = Ownership::default();
        for table in &spec.tables {
            let Some(live_table) = live.schema.get(&table.name) else {
                continue;
            };
            owned.tables.insert(table.name.clone());
            for column in &table.columns {
                if live_table.get_column(&column.name).is_none() {
                    continue;
                }
                owned
                    .columns
                    .insert((table.name.clone(), column.name.clone()));
                if column.unique
                    && let Some(name) = live.unique_constraint(&table.name, &column.name)
                {
                    owned
                        .uniques
                        .insert((table.name.clone(), column.name.clone()), name.to_owned());
                }
            }
        }
        owned
    }

    /// All of `spec`, owned as if created with PostgreSQL's default names:
    /// the offline diff's view of an older spec.
    pub(crate) fn all_of(spec: &Schema) -> Ownership {
        let mut owned = Ownership::default();
        for table in &spec.tables {
            owned.tables.insert(table.name.clone());
            for column in &table.columns {
                let key = (table.name.clone(), column.name.clone());
                if column.unique {
                    owned
                        .uniques
                        .insert(key.clone(), unique_name(&table.name, &column.name));
                }
                owned.columns.insert(key);
            }
        }
        owned
    }

    /// After a sync: what it owned before and still exists, and what the
    /// spec declares.
    pub(crate) fn after_sync(&self, spec: &Schema, live: &LiveSchema) -> Ownership {
        let mut owned = Ownership::declared(spec, live);
        for table in &self.tables {
            if live.schema.get(table).is_some() {
                owned.tables.insert(table.clone());
            }
        }
        for (table, column) in &self.columns {
            if live
                .schema
                .get(table)
                .is_some_and(|t| t.get_column(column).is_some())
            {
                owned.columns.insert((table.clone(), column.clone()));
            }
        }
        for ((table, column), name) in &self.uniques {
            if live.unique_constraint(table, column) == Some(name.as_str()) {
                owned
                    .uniques
                    .entry((table.clone(), column.clone()))
                    .or_insert_with(|| name.clone());
            }
        }
        owned
    }

    /// Reads the ledger; `None` when there is none yet.
    pub(crate) async fn read<E: Executor>(ex: &mut E) -> Result<Option<Ownership>, SyncError> {
        let exists: bool = ex
            .query_one("SELECT to_regclass('schema_sync.owned') IS NOT NULL", &[])
            .await?
            .try_get(0)?;
        let mut owned = Ownership::default();
        if !exists {
            return Ok(None);
        }
        for row in ex
            .query("SELECT kind, tbl, obj, name FROM schema_sync.owned", &[])
            .await?
        {
            let (kind, table, object, name): (String, String, String, String) = (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            );
            match kind.as_str() {
                TABLE => {
                    owned.tables.insert(table);
                }
                COLUMN => {
                    owned.columns.insert((table, object));
                }
                UNIQUE => {
                    owned.uniques.insert((table, object), name);
                }
                other => {
                    return Err(SyncError::Catalog(format!(
                        "unknown kind {other:?} in schema_sync.owned"
                    )));
                }
            }
        }
        Ok(Some(owned))
    }

    /// Replaces the ledger (inside the sync's transaction).
    pub(crate) async fn write<E: Executor>(&self, ex: &mut E) -> Result<(), SyncError> {
        ex.execute(
            "CREATE TABLE IF NOT EXISTS schema_sync.owned (
                 kind text NOT NULL,
                 tbl text NOT NULL,
                 obj text NOT NULL,
                 name text NOT NULL,
                 PRIMARY KEY (kind, tbl, obj))",
            &[],
        )
        .await?;
        ex.execute("DELETE FROM schema_sync.owned", &[]).await?;
        let entry = |kind: &str, tbl: &str, obj: &str, name: &str| Entry {
            kind: kind.to_owned(),
            tbl: tbl.to_owned(),
            obj: obj.to_owned(),
            name: name.to_owned(),
        };
        let entries: Vec<Entry> = self
            .tables
            .iter()
            .map(|t| entry(TABLE, t, "", ""))
            .chain(self.columns.iter().map(|(t, c)| entry(COLUMN, t, c, "")))
            .chain(
                self.uniques
                    .iter()
                    .map(|((t, c), n)| entry(UNIQUE, t, c, n)),
            )
            .collect();
        // One statement, the rows as one JSON parameter.
        ex.execute(
            "INSERT INTO schema_sync.owned (kind, tbl, obj, name)
             SELECT kind, tbl, obj, name
             FROM json_to_recordset($1::text::json) AS e(kind text, tbl text, obj text, name text)",
            &[Value::Text(serde_json::to_string(&entries)?)],
        )
        .await?;
        Ok(())
    }
}
