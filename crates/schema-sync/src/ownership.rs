//! What schema-sync owns: the schemas, tables, columns, UNIQUE and CHECK
//! constraints and primary keys a sync created or a synced spec declared, kept in
//! `schema_sync.owned` next to the cached canonical spec, keyed by schema
//! (`nsp`), so the same table name in two schemas are two objects and a
//! sync of one schema never reads or rewrites another's part. Only owned
//! objects are ever dropped; anything else in the schema (made by hand, by
//! another tool, by the changefeed) is drift, whatever the flags.
//!
//! A database synced before the ledger existed owns nothing until its next
//! successful sync, which records what that spec declares; so do checks
//! and primary keys in a ledger written before they were recorded (they
//! are adopted when the live one is the spec's). A ledger of the
//! layout before schemas (no `nsp` column, everything in `public`) is read
//! as `public`'s and migrated in place by the next sync that writes one.

use std::collections::{BTreeMap, BTreeSet};

use db_core::{Executor, Value, quote_ident};
use serde::{Deserialize, Serialize};

use crate::apply::SyncError;
use crate::ddl::{check_name, pkey_name, unique_name};
use crate::introspect::LiveSchema;
use crate::normalize::normalize_check;
use crate::spec::{DEFAULT_SCHEMA, Schema};

/// The objects schema-sync owns in one schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ownership {
    /// Whether a sync created the schema itself.
    schema: bool,
    tables: BTreeSet<String>,
    columns: BTreeSet<(String, String)>,
    /// `(table, column)` of a one-column UNIQUE constraint, and its name.
    uniques: BTreeMap<(String, String), String>,
    /// `(table, column)` of a column check, and its name.
    checks: BTreeMap<(String, String), String>,
    /// A table's primary key, by its name.
    pkeys: BTreeMap<String, String>,
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

const SCHEMA: &str = "schema";
const TABLE: &str = "table";
const COLUMN: &str = "column";
const UNIQUE: &str = "unique";
const CHECK: &str = "check";
const PKEY: &str = "pkey";

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

    /// Whether schema-sync owns the check of `table.column` (named
    /// `name`).
    pub(crate) fn owns_check(&self, table: &str, column: &str, name: &str) -> bool {
        self.checks
            .get(&(table.to_owned(), column.to_owned()))
            .is_some_and(|n| n == name)
    }

    /// Whether schema-sync owns constraint `name` of `table` (a UNIQUE,
    /// check or primary key).
    pub(crate) fn owns_constraint(&self, table: &str, name: &str) -> bool {
        self.uniques
            .iter()
            .chain(self.checks.iter())
            .any(|((t, _), n)| t == table && n == name)
            || self.owns_pkey(table, name)
    }

    /// Whether schema-sync owns `table`'s primary key, named `name`.
    pub(crate) fn owns_pkey(&self, table: &str, name: &str) -> bool {
        self.pkeys.get(table).is_some_and(|n| n == name)
    }

    /// Everything of `spec` that exists in `live` as the spec says, as
    /// owned: what a sync adopts. `canonical` is the spec in the server's
    /// spelling: a live check is adopted only when it is the spec's, a
    /// primary key only when it has the spec's columns.
    pub(crate) fn declared(spec: &Schema, canonical: &Schema, live: &LiveSchema) -> Ownership {
        let mut owned = Ownership::default();
        for table in &spec.tables {
            let Some(live_table) = live.schema.get(&table.name) else {
                continue;
            };
            owned.tables.insert(table.name.clone());
            if !table.primary_key.is_empty()
                && live_table.primary_key == table.primary_key
                && let Some(name) = live.primary_key_names.get(&table.name)
            {
                owned.pkeys.insert(table.name.clone(), name.clone());
            }
            let canonical_table = canonical.get(&table.name);
            for column in &table.columns {
                let Some(live_column) = live_table.get_column(&column.name) else {
                    continue;
                };
                let wanted = canonical_table
                    .and_then(|t| t.get_column(&column.name))
                    .and_then(|c| c.check.as_deref());
                if column.check.is_some()
                    && live_column.check.is_some()
                    && live_column.check.as_deref().map(normalize_check)
                        == wanted.map(normalize_check)
                {
                    owned.checks.insert(
                        (table.name.clone(), column.name.clone()),
                        check_name(&table.name, &column.name),
                    );
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
                if column.check.is_some() {
                    owned
                        .checks
                        .insert(key.clone(), check_name(&table.name, &column.name));
                }
                owned.columns.insert(key);
            }
            if !table.primary_key.is_empty() {
                owned
                    .pkeys
                    .insert(table.name.clone(), pkey_name(&table.name));
            }
        }
        owned
    }

    /// After a sync: what it owned before and still exists, and what the
    /// spec declares; `created_schema` when the sync created the schema.
    pub(crate) fn after_sync(
        &self,
        spec: &Schema,
        canonical: &Schema,
        live: &LiveSchema,
        created_schema: bool,
    ) -> Ownership {
        let mut owned = Ownership::declared(spec, canonical, live);
        owned.schema = self.schema || created_schema;
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
        for ((table, column), name) in &self.checks {
            let still = live
                .schema
                .get(table)
                .and_then(|t| t.get_column(column))
                .is_some_and(|c| c.check.is_some())
                && check_name(table, column) == *name;
            if still {
                owned
                    .checks
                    .entry((table.clone(), column.clone()))
                    .or_insert_with(|| name.clone());
            }
        }
        for (table, name) in &self.pkeys {
            if live.primary_key_names.get(table) == Some(name) {
                owned
                    .pkeys
                    .entry(table.clone())
                    .or_insert_with(|| name.clone());
            }
        }
        owned
    }

    /// Reads schema `nsp`'s part of the ledger; `None` when there is no
    /// ledger yet.
    pub(crate) async fn read<E: Executor>(
        ex: &mut E,
        nsp: &str,
    ) -> Result<Option<Ownership>, SyncError> {
        let Some(keyed) = layout(ex).await? else {
            return Ok(None);
        };
        let mut owned = Ownership::default();
        let rows = if keyed {
            ex.query(
                "SELECT kind, tbl, obj, name FROM schema_sync.owned WHERE nsp = $1",
                &[Value::Text(nsp.to_owned())],
            )
            .await?
        } else if nsp == DEFAULT_SCHEMA {
            // The layout before schemas: everything is public's.
            ex.query("SELECT kind, tbl, obj, name FROM schema_sync.owned", &[])
                .await?
        } else {
            Vec::new()
        };
        for row in rows {
            let (kind, table, object, name): (String, String, String, String) = (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            );
            match kind.as_str() {
                SCHEMA => owned.schema = true,
                TABLE => {
                    owned.tables.insert(table);
                }
                COLUMN => {
                    owned.columns.insert((table, object));
                }
                UNIQUE => {
                    owned.uniques.insert((table, object), name);
                }
                CHECK => {
                    owned.checks.insert((table, object), name);
                }
                PKEY => {
                    owned.pkeys.insert(table, name);
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

    /// Replaces schema `nsp`'s part of the ledger (inside the sync's
    /// transaction), creating the ledger or migrating one of the layout
    /// before schemas first.
    pub(crate) async fn write<E: Executor>(&self, ex: &mut E, nsp: &str) -> Result<(), SyncError> {
        match layout(ex).await? {
            None => {
                ex.execute(
                    "CREATE TABLE schema_sync.owned (
                         nsp text NOT NULL,
                         kind text NOT NULL,
                         tbl text NOT NULL,
                         obj text NOT NULL,
                         name text NOT NULL,
                         PRIMARY KEY (nsp, kind, tbl, obj))",
                    &[],
                )
                .await?;
            }
            Some(false) => migrate(ex).await?,
            Some(true) => {}
        }
        ex.execute(
            "DELETE FROM schema_sync.owned WHERE nsp = $1",
            &[Value::Text(nsp.to_owned())],
        )
        .await?;
        let entry = |kind: &str, tbl: &str, obj: &str, name: &str| Entry {
            kind: kind.to_owned(),
            tbl: tbl.to_owned(),
            obj: obj.to_owned(),
            name: name.to_owned(),
        };
        let entries: Vec<Entry> = self
            .schema
            .then(|| entry(SCHEMA, "", "", ""))
            .into_iter()
            .chain(self.tables.iter().map(|t| entry(TABLE, t, "", "")))
            .chain(self.columns.iter().map(|(t, c)| entry(COLUMN, t, c, "")))
            .chain(
                self.uniques
                    .iter()
                    .map(|((t, c), n)| entry(UNIQUE, t, c, n)),
            )
            .chain(self.checks.iter().map(|((t, c), n)| entry(CHECK, t, c, n)))
            .chain(self.pkeys.iter().map(|(t, n)| entry(PKEY, t, "", n)))
            .collect();
        // One statement, the rows as one JSON parameter.
        ex.execute(
            "INSERT INTO schema_sync.owned (nsp, kind, tbl, obj, name)
             SELECT $1, kind, tbl, obj, name
             FROM json_to_recordset($2::text::json) AS e(kind text, tbl text, obj text, name text)",
            &[
                Value::Text(nsp.to_owned()),
                Value::Text(serde_json::to_string(&entries)?),
            ],
        )
        .await?;
        Ok(())
    }
}

/// The ledger's layout: `None` without a ledger, `Some(true)` keyed by
/// schema, `Some(false)` the layout before schemas.
async fn layout<E: Executor>(ex: &mut E) -> Result<Option<bool>, SyncError> {
    let row = ex
        .query_one(
            "SELECT to_regclass('schema_sync.owned') IS NOT NULL,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                            WHERE attrelid = to_regclass('schema_sync.owned')
                              AND attname = 'nsp' AND NOT attisdropped)",
            &[],
        )
        .await?;
    let (exists, keyed): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
    Ok(exists.then_some(keyed))
}

/// Migrates a ledger of the layout before schemas in place: every entry
/// becomes `public`'s and the key gains the schema.
async fn migrate<E: Executor>(ex: &mut E) -> Result<(), SyncError> {
    ex.execute(
        "ALTER TABLE schema_sync.owned ADD COLUMN nsp text NOT NULL DEFAULT 'public'",
        &[],
    )
    .await?;
    ex.execute(
        "ALTER TABLE schema_sync.owned ALTER COLUMN nsp DROP DEFAULT",
        &[],
    )
    .await?;
    let key = ex
        .query_opt(
            "SELECT conname::text FROM pg_catalog.pg_constraint
             WHERE conrelid = 'schema_sync.owned'::regclass AND contype = 'p'",
            &[],
        )
        .await?;
    if let Some(row) = key {
        let name: String = row.try_get(0)?;
        ex.execute(
            &format!(
                "ALTER TABLE schema_sync.owned DROP CONSTRAINT {}",
                quote_ident(&name)
            ),
            &[],
        )
        .await?;
    }
    ex.execute(
        "ALTER TABLE schema_sync.owned ADD PRIMARY KEY (nsp, kind, tbl, obj)",
        &[],
    )
    .await?;
    Ok(())
}
