//! Plans: ordered changes with their SQL and hazards, and the pure diff of
//! two schemas that produces them.

use std::collections::BTreeSet;
use std::fmt;

use db_core::quote_ident;
use serde::Serialize;

use crate::ddl::{
    check_name, column_definition, comment_index, create_index, create_table, ident_list,
    pkey_name, rel, temp_index_name, unique_name,
};
use crate::introspect::LiveSchema;
use crate::normalize::{is_serial, normalize_table, storage_type};
use crate::ownership::Ownership;
use crate::spec::{Column, DEFAULT_SCHEMA, Index, Schema, Table};

/// What a hazard is about. Names are stable (`SCREAMING_SNAKE_CASE` in
/// serde and in the rendered plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum HazardKind {
    /// Holds an `ACCESS EXCLUSIVE` (or `SHARE`) lock while it scans or
    /// rewrites: reads and/or writes of the table wait.
    TakesStrongLock,
    /// Rewrites every row of the table.
    RewritesTable,
    /// Can lose data (dropping a column or table, narrowing a type).
    Destructive,
    /// Builds an index; takes time proportional to the table.
    IndexBuild,
    /// Drops an index schema-sync owns; queries using it may slow down.
    IndexDropped,
    /// Drops a constraint schema-sync owns: the table accepts rows it
    /// refused before.
    LoosensConstraint,
}

impl HazardKind {
    /// The stable name (`TAKES_STRONG_LOCK`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HazardKind::TakesStrongLock => "TAKES_STRONG_LOCK",
            HazardKind::RewritesTable => "REWRITES_TABLE",
            HazardKind::Destructive => "DESTRUCTIVE",
            HazardKind::IndexBuild => "INDEX_BUILD",
            HazardKind::IndexDropped => "INDEX_DROPPED",
            HazardKind::LoosensConstraint => "LOOSENS_CONSTRAINT",
        }
    }
}

impl fmt::Display for HazardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hazard of one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hazard {
    /// The kind.
    pub kind: HazardKind,
    /// Why, for the reviewer.
    pub message: String,
}

fn hazard(kind: HazardKind, message: impl Into<String>) -> Hazard {
    Hazard {
        kind,
        message: message.into(),
    }
}

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeKind {
    /// `CREATE SCHEMA` (the spec's schema is missing).
    CreateSchema,
    /// `CREATE TABLE`.
    CreateTable,
    /// `ADD COLUMN`.
    AddColumn,
    /// `ALTER COLUMN ... TYPE ... USING`.
    ChangeType,
    /// `SET DEFAULT`.
    SetDefault,
    /// `DROP DEFAULT`.
    DropDefault,
    /// `SET NOT NULL` (after an optional backfill).
    SetNotNull,
    /// `DROP NOT NULL`.
    DropNotNull,
    /// `ADD CONSTRAINT ... CHECK`.
    AddCheck,
    /// `DROP CONSTRAINT` of a column check.
    DropCheck,
    /// `ADD CONSTRAINT ... UNIQUE`.
    AddUnique,
    /// `DROP CONSTRAINT` of a one-column UNIQUE constraint schema-sync owns.
    DropUnique,
    /// `ADD PRIMARY KEY` on a table without one.
    AddPrimaryKey,
    /// Drop the primary key (by its live name) and add the spec's.
    ChangePrimaryKey,
    /// `CREATE INDEX` (and its ownership marker).
    CreateIndex,
    /// Rebuild an owned index under a temporary name, drop the old, rename.
    ReplaceIndex,
    /// `DROP INDEX` of an owned index the spec no longer lists.
    DropIndex,
    /// `DROP COLUMN` (only with `allow_destructive`).
    DropColumn,
    /// `DROP TABLE` (only with `allow_destructive`).
    DropTable,
}

impl ChangeKind {
    fn describe(self) -> &'static str {
        match self {
            ChangeKind::CreateSchema => "create schema",
            ChangeKind::CreateTable => "create table",
            ChangeKind::AddColumn => "add column",
            ChangeKind::ChangeType => "change type of",
            ChangeKind::SetDefault => "set default of",
            ChangeKind::DropDefault => "drop default of",
            ChangeKind::SetNotNull => "set not null on",
            ChangeKind::DropNotNull => "drop not null on",
            ChangeKind::AddCheck => "add check on",
            ChangeKind::DropCheck => "drop check on",
            ChangeKind::AddUnique => "add unique on",
            ChangeKind::DropUnique => "drop unique on",
            ChangeKind::AddPrimaryKey => "add primary key to",
            ChangeKind::ChangePrimaryKey => "change primary key of",
            ChangeKind::CreateIndex => "create index",
            ChangeKind::ReplaceIndex => "replace index",
            ChangeKind::DropIndex => "drop index",
            ChangeKind::DropColumn => "drop column",
            ChangeKind::DropTable => "drop table",
        }
    }
}

/// A check run before a change: the change fails with
/// [`SyncError::NullRows`](crate::SyncError::NullRows) if the count is not 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NullCheck {
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// A query returning the number of rows that would violate NOT NULL.
    pub count_sql: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What it does.
    pub kind: ChangeKind,
    /// The schema it works in (the spec's).
    pub schema: String,
    /// The table it changes (empty for [`ChangeKind::CreateSchema`]).
    pub table: String,
    /// The column, index or constraint it changes, if any.
    pub object: Option<String>,
    /// The statements as reviewable text, each ending in `;`.
    pub sql: String,
    /// The same statements, one per element, as they are executed.
    #[serde(skip)]
    pub statements: Vec<String>,
    /// Its hazards (empty: safe).
    pub hazards: Vec<Hazard>,
    /// Whether it can run inside a transaction (`false` for concurrent
    /// index builds).
    pub transactional: bool,
    /// A NULL check to run first, for NOT NULL without a backfill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_check: Option<NullCheck>,
}

/// What kind of drift was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum DriftKind {
    /// A table the spec does not declare.
    ExtraTable,
    /// A column the spec does not declare.
    ExtraColumn,
    /// An index schema-sync does not own and the spec does not declare.
    UnknownIndex,
    /// An index the spec declares differently, not owned by schema-sync.
    UnownedIndexDiffers,
    /// A constraint outside the model, or one the spec does not declare.
    Constraint,
    /// A check or primary key the spec declares differently, not owned by
    /// schema-sync (made by hand): left alone.
    UnownedConstraintDiffers,
    /// A column whose serial-ness differs from the spec.
    Serial,
}

/// Something in the database that differs from the spec and is left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The kind.
    pub kind: DriftKind,
    /// The table.
    pub table: String,
    /// The column, index or constraint, if any.
    pub object: Option<String>,
    /// A description.
    pub message: String,
}

/// An ordered list of changes, and the drift left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The schema the plan works in (the spec's).
    pub schema: String,
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// Differences that are reported, never changed.
    pub drift: Vec<Drift>,
}

impl Plan {
    /// Whether there is nothing to do (drift does not count).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Every hazard kind in the plan.
    pub fn hazard_kinds(&self) -> BTreeSet<HazardKind> {
        self.changes
            .iter()
            .flat_map(|c| c.hazards.iter().map(|h| h.kind))
            .collect()
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-- {} ", self.kind.describe())?;
        let table = rel(Some(&self.schema), &self.table);
        match &self.object {
            _ if self.kind == ChangeKind::CreateSchema => {
                write!(f, "{}", quote_ident(&self.schema))?;
            }
            Some(o)
                if matches!(
                    self.kind,
                    ChangeKind::CreateIndex | ChangeKind::ReplaceIndex | ChangeKind::DropIndex
                ) =>
            {
                write!(f, "{} on {table}", quote_ident(o))?;
            }
            Some(o) => write!(f, "{table}.{}", quote_ident(o))?,
            None => write!(f, "{table}")?,
        }
        if !self.transactional {
            write!(f, " (outside a transaction)")?;
        }
        writeln!(f)?;
        for h in &self.hazards {
            writeln!(f, "--   hazard {}: {}", h.kind, h.message)?;
        }
        if let Some(check) = &self.null_check {
            writeln!(
                f,
                "--   fails if column {} has NULL rows",
                quote_ident(&check.column)
            )?;
        }
        writeln!(f, "{}", self.sql)
    }
}

impl Plan {
    /// A digest of what the plan would do: its schema, and every change's
    /// kind, table, object, statements and hazards, in order (drift is not
    /// part of it).
    /// Two plans with the same hash run the same SQL; CI can gate a pull
    /// request on the hash of the plan its reviewers saw. 16 hex digits of a
    /// SHA-256.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.schema.as_bytes());
        h.update([0]);
        for change in &self.changes {
            for part in [
                change.kind.describe(),
                &change.table,
                change.object.as_deref().unwrap_or_default(),
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            for statement in &change.statements {
                h.update(statement.as_bytes());
                h.update([0]);
            }
            for hazard in &change.hazards {
                h.update(hazard.kind.as_str().as_bytes());
                h.update([0]);
            }
            h.update([1]);
        }
        hex::encode(&h.finalize()[..8])
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            writeln!(f, "-- nothing to do")?;
        }
        for (i, change) in self.changes.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{change}")?;
        }
        if !self.drift.is_empty() {
            writeln!(f, "\n-- drift (reported, left alone):")?;
            for d in &self.drift {
                writeln!(f, "--   {}", d.message)?;
            }
        }
        Ok(())
    }
}

/// How a diff may change the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffOptions {
    /// Plan `DROP COLUMN` / `DROP TABLE` for columns and tables the spec does
    /// not declare (otherwise they are drift).
    pub allow_destructive: bool,
    /// Build indexes on existing tables with `CREATE INDEX CONCURRENTLY`,
    /// outside the transaction (PostgreSQL only).
    pub concurrent_indexes: bool,
}

impl DiffOptions {
    /// The defaults: nothing destructive, indexes built in the transaction.
    pub fn new() -> Self {
        DiffOptions::default()
    }

    /// Sets [`DiffOptions::allow_destructive`].
    #[must_use]
    pub fn allow_destructive(mut self, yes: bool) -> Self {
        self.allow_destructive = yes;
        self
    }

    /// Sets [`DiffOptions::concurrent_indexes`].
    #[must_use]
    pub fn concurrent_indexes(mut self, yes: bool) -> Self {
        self.concurrent_indexes = yes;
        self
    }
}

/// The plan that turns `current` into `desired`. Both are compared in
/// normalized form; the SQL is written from `desired`. Indexes of `current`
/// are replaced or dropped only if marked `owned`; its tables, columns and
/// UNIQUE constraints count as schema-sync's (`current` is an older spec,
/// synced before).
///
/// When the two name different schemas, `desired`'s schema holds nothing
/// yet (a sync reads only its own schema, so `current`'s tables are never
/// touched) and is created first unless it is `public`.
pub fn diff(current: &Schema, desired: &Schema, options: &DiffOptions) -> Plan {
    if current.schema != desired.schema {
        let empty = Schema::new().in_schema(desired.schema.clone());
        return diff_rendered(
            &empty,
            desired,
            desired,
            options,
            &Ownership::default(),
            None,
            desired.schema != DEFAULT_SCHEMA,
        );
    }
    diff_rendered(
        current,
        desired,
        desired,
        options,
        &Ownership::all_of(current),
        None,
        false,
    )
}

/// [`diff`] comparing against `desired` (canonical forms) while writing SQL
/// from `render` (the spec as written; same tables, columns and indexes),
/// in `render`'s schema, which is created first when `create_schema`.
pub(crate) fn diff_rendered(
    current: &Schema,
    desired: &Schema,
    render: &Schema,
    options: &DiffOptions,
    owned: &Ownership,
    live: Option<&LiveSchema>,
    create_schema: bool,
) -> Plan {
    let mut d = Differ {
        plan: Plan {
            schema: render.schema.clone(),
            ..Plan::default()
        },
        options,
        owned,
        live,
        ns: &render.schema,
    };
    if create_schema {
        let sql = format!("CREATE SCHEMA {}", quote_ident(&render.schema));
        d.push(ChangeKind::CreateSchema, "", None, vec![sql], vec![]);
    }
    for rt in &render.tables {
        let dt = desired.get(&rt.name).unwrap_or(rt);
        match current.get(&rt.name) {
            None => d.create_table(rt),
            Some(ct) => d.alter_table(&normalize_table(ct), &normalize_table(dt), rt),
        }
    }
    let mut drops = Vec::new();
    for ct in &current.tables {
        if render.get(&ct.name).is_some() {
            continue;
        }
        if !owned.owns_table(&ct.name) {
            d.drift(
                DriftKind::ExtraTable,
                &ct.name,
                None,
                format!(
                    "table {} is not in the spec and not schema-sync's; left alone",
                    d.rel(&ct.name)
                ),
            );
        } else if let Some(blockers) = d.foreign_dependents(ct) {
            d.drift(
                DriftKind::ExtraTable,
                &ct.name,
                None,
                format!(
                    "table {} is not in the spec, but objects of other tables schema-sync does not own depend on it ({blockers}); never dropped while they do: drop them first",
                    d.rel(&ct.name)
                ),
            );
        } else if options.allow_destructive {
            drops.push(Change {
                kind: ChangeKind::DropTable,
                schema: render.schema.clone(),
                table: ct.name.clone(),
                object: None,
                sql: format!("DROP TABLE {};", d.rel(&ct.name)),
                statements: vec![format!("DROP TABLE {}", d.rel(&ct.name))],
                hazards: vec![hazard(
                    HazardKind::Destructive,
                    "drops the table and all its rows",
                )],
                transactional: true,
                null_check: None,
            });
        } else {
            d.drift(
                DriftKind::ExtraTable,
                &ct.name,
                None,
                format!(
                    "table {} is not in the spec; it is schema-sync's: --allow-destructive would drop it",
                    d.rel(&ct.name)
                ),
            );
        }
    }
    d.plan.changes.extend(drops);
    d.plan
}

struct Differ<'o> {
    plan: Plan,
    options: &'o DiffOptions,
    owned: &'o Ownership,
    /// The live schema's primary-key names and column dependents (none
    /// offline: keys are `<table>_pkey`).
    live: Option<&'o LiveSchema>,
    /// The schema every statement is qualified with.
    ns: &'o str,
}

impl Differ<'_> {
    /// The live name of `table`'s primary key (`<table>_pkey` offline).
    fn pkey_name(&self, table: &str) -> String {
        self.live
            .and_then(|l| l.primary_key_names.get(table))
            .cloned()
            .unwrap_or_else(|| pkey_name(table))
    }

    /// `name` (a table or index), qualified with the schema and quoted.
    fn rel(&self, name: &str) -> String {
        rel(Some(self.ns), name)
    }

    /// `table.column`, qualified and quoted, for messages.
    fn cols(&self, t: &str, c: &str) -> String {
        format!("{}.{}", self.rel(t), quote_ident(c))
    }

    fn push(
        &mut self,
        kind: ChangeKind,
        table: &str,
        object: Option<&str>,
        sql: Vec<String>,
        hazards: Vec<Hazard>,
    ) {
        self.plan.changes.push(Change {
            kind,
            schema: self.ns.to_owned(),
            table: table.to_owned(),
            object: object.map(str::to_owned),
            sql: sql
                .iter()
                .map(|s| format!("{s};"))
                .collect::<Vec<_>>()
                .join("\n"),
            statements: sql,
            hazards,
            transactional: true,
            null_check: None,
        });
    }

    fn drift(&mut self, kind: DriftKind, table: &str, object: Option<&str>, message: String) {
        self.plan.drift.push(Drift {
            kind,
            table: table.to_owned(),
            object: object.map(str::to_owned),
            message,
        });
    }

    fn create_table(&mut self, t: &Table) {
        let (sql, _) = create_table(Some(self.ns), t);
        self.push(ChangeKind::CreateTable, &t.name, None, vec![sql], vec![]);
        for i in &t.indexes {
            self.create_index(&t.name, i, true);
        }
    }

    fn create_index(&mut self, table: &str, index: &Index, new_table: bool) {
        let concurrent = self.options.concurrent_indexes && !new_table;
        let sql = vec![
            create_index(Some(self.ns), table, index, &index.name, concurrent),
            comment_index(Some(self.ns), &index.name, index),
        ];
        let hazards = if new_table {
            vec![]
        } else {
            vec![hazard(
                HazardKind::IndexBuild,
                if concurrent {
                    "builds the index concurrently; writes continue"
                } else {
                    "builds the index while blocking writes to the table"
                },
            )]
        };
        self.push(
            ChangeKind::CreateIndex,
            table,
            Some(&index.name),
            sql,
            hazards,
        );
        if concurrent && let Some(c) = self.plan.changes.last_mut() {
            c.transactional = false;
        }
    }

    fn alter_table(&mut self, cur: &Table, des: &Table, render: &Table) {
        let t = &render.name;
        let qt = self.rel(t);
        // PostgreSQL re-parses the stored definition of every index on a
        // column whose type changes: an expression or predicate may then
        // fail (`COALESCE(n, 0)` on text) or mean something the spec does
        // not say. Owned indexes whose expressions or predicate use a
        // retyped column are dropped before the change and built again
        // after it, from the spec.
        let retyped: Vec<&str> = render
            .columns
            .iter()
            .filter_map(|rc| {
                let (cc, dc) = (cur.get_column(&rc.name)?, des.get_column(&rc.name)?);
                (cc.type_ != dc.type_ && storage_type(&cc.type_) != storage_type(&dc.type_))
                    .then_some(rc.name.as_str())
            })
            .collect();
        let mut rebuilt = BTreeSet::new();
        for ci in &cur.indexes {
            let Some(column) = retyped.iter().find(|c| index_expressions_use(ci, c)) else {
                continue;
            };
            if !ci.owned {
                continue;
            }
            let message = if render.get_index(&ci.name).is_some() {
                format!(
                    "drops the index before the type change of column {}, which it uses; built again after it",
                    quote_ident(column)
                )
            } else {
                "drops an index schema-sync created that the spec no longer lists".to_owned()
            };
            self.push(
                ChangeKind::DropIndex,
                t,
                Some(&ci.name),
                vec![format!("DROP INDEX {}", self.rel(&ci.name))],
                vec![hazard(HazardKind::IndexDropped, message)],
            );
            rebuilt.insert(ci.name.as_str());
        }
        for rc in &render.columns {
            let Some(dc) = des.get_column(&rc.name) else {
                continue;
            };
            match cur.get_column(&rc.name) {
                None => self.add_column(render, dc, rc),
                Some(cc) => self.alter_column(cur, des, render, cc, dc, rc),
            }
        }
        // Primary key.
        if cur.primary_key != des.primary_key {
            if cur.primary_key.is_empty() {
                self.push(
                    ChangeKind::AddPrimaryKey,
                    t,
                    None,
                    vec![format!(
                        "ALTER TABLE {qt} ADD PRIMARY KEY ({})",
                        ident_list(&render.primary_key)
                    )],
                    vec![
                        hazard(HazardKind::IndexBuild, "builds the primary-key index"),
                        hazard(
                            HazardKind::TakesStrongLock,
                            "holds an ACCESS EXCLUSIVE lock during the build",
                        ),
                    ],
                );
            } else if !self.owned.owns_pkey(t, &self.pkey_name(t)) {
                let name = self.pkey_name(t);
                self.drift(
                    if des.primary_key.is_empty() {
                        DriftKind::Constraint
                    } else {
                        DriftKind::UnownedConstraintDiffers
                    },
                    t,
                    Some(&name),
                    format!(
                        "primary key {} on {qt} ({}) is not schema-sync's{}; left alone",
                        quote_ident(&name),
                        ident_list(&cur.primary_key),
                        if des.primary_key.is_empty() {
                            String::from(" and not in the spec")
                        } else {
                            format!(
                                " and differs from the spec's ({})",
                                ident_list(&des.primary_key)
                            )
                        }
                    ),
                );
            } else {
                let name = self.pkey_name(t);
                let mut sql = format!("ALTER TABLE {qt} DROP CONSTRAINT {}", quote_ident(&name));
                let mut hazards = vec![hazard(
                    HazardKind::TakesStrongLock,
                    "holds an ACCESS EXCLUSIVE lock while the key is swapped",
                )];
                if !render.primary_key.is_empty() {
                    sql.push_str(&format!(
                        ", ADD PRIMARY KEY ({})",
                        ident_list(&render.primary_key)
                    ));
                    hazards.push(hazard(
                        HazardKind::IndexBuild,
                        "builds the new primary-key index",
                    ));
                } else {
                    hazards.push(hazard(
                        HazardKind::LoosensConstraint,
                        "drops the primary key: duplicate and NULL keys are accepted from now on",
                    ));
                }
                self.push(ChangeKind::ChangePrimaryKey, t, None, vec![sql], hazards);
                // Columns that leave the key keep NOT NULL unless the spec
                // drops it; that can only happen once the key is gone.
                for name in &cur.primary_key {
                    let keeps = des.primary_key.contains(name);
                    if let (false, Some(dc)) = (keeps, des.get_column(name))
                        && !dc.not_null
                    {
                        self.push(
                            ChangeKind::DropNotNull,
                            t,
                            Some(name),
                            vec![format!(
                                "ALTER TABLE {qt} ALTER COLUMN {} DROP NOT NULL",
                                quote_ident(name)
                            )],
                            vec![],
                        );
                    }
                }
            }
        }
        // Indexes.
        for ri in &render.indexes {
            let di = des.get_index(&ri.name).unwrap_or(ri);
            match cur.get_index(&ri.name) {
                Some(ci) if rebuilt.contains(ci.name.as_str()) => self.rebuild_index(t, ri),
                None => self.create_index(t, ri, false),
                Some(ci) if same_index(ci, di) && !ci.invalid => {}
                // An invalid index (a failed concurrent build) does nothing
                // useful, whoever made it: it is built again.
                Some(ci) if ci.owned || ci.invalid => self.replace_index(t, ri),
                Some(_) => self.drift(DriftKind::UnownedIndexDiffers, t, Some(&ri.name), format!(
                    "index {} on {qt} differs from the spec but was not created by schema-sync; left alone",
                    quote_ident(&ri.name)
                )),
            }
        }
        for ci in &cur.indexes {
            if render.get_index(&ci.name).is_some() || rebuilt.contains(ci.name.as_str()) {
                continue;
            }
            if ci.owned {
                self.push(
                    ChangeKind::DropIndex,
                    t,
                    Some(&ci.name),
                    vec![format!("DROP INDEX {}", self.rel(&ci.name))],
                    vec![hazard(
                        HazardKind::IndexDropped,
                        "drops an index schema-sync created that the spec no longer lists",
                    )],
                );
            } else {
                self.drift(DriftKind::UnknownIndex, t, Some(&ci.name), format!(
                    "index {} on {qt} is not in the spec and not owned by schema-sync; left alone",
                    quote_ident(&ci.name)
                ));
            }
        }
        // Extra columns.
        for cc in &cur.columns {
            if render.get_column(&cc.name).is_some() {
                continue;
            }
            if !self.owned.owns_column(t, &cc.name) {
                self.drift(
                    DriftKind::ExtraColumn,
                    t,
                    Some(&cc.name),
                    format!(
                        "column {} is not in the spec and not schema-sync's; left alone",
                        self.cols(t, &cc.name)
                    ),
                );
            } else if let Some(blockers) = self.unowned_dependents(cur, &cc.name) {
                self.drift(
                    DriftKind::ExtraColumn,
                    t,
                    Some(&cc.name),
                    format!(
                        "column {} is not in the spec, but objects schema-sync does not own depend on it ({}); never dropped while they do: drop them first",
                        self.cols(t, &cc.name),
                        blockers
                    ),
                );
            } else if self.options.allow_destructive {
                self.push(
                    ChangeKind::DropColumn,
                    t,
                    Some(&cc.name),
                    vec![format!(
                        "ALTER TABLE {qt} DROP COLUMN {}",
                        quote_ident(&cc.name)
                    )],
                    vec![hazard(
                        HazardKind::Destructive,
                        "drops the column and its data",
                    )],
                );
            } else {
                self.drift(
                    DriftKind::ExtraColumn,
                    t,
                    Some(&cc.name),
                    format!(
                        "column {} is not in the spec; it is schema-sync's: --allow-destructive would drop it",
                        self.cols(t, &cc.name)
                    ),
                );
            }
        }
    }

    fn add_column(&mut self, render: &Table, dc: &Column, rc: &Column) {
        let t = &render.name;
        let qt = self.rel(t);
        let qc = quote_ident(&rc.name);
        let mut sql = Vec::new();
        let mut null_check = None;
        let mut hazards = Vec::new();
        let needs_fill = dc.not_null && rc.default.is_none() && !is_serial(&dc.type_);
        match (&rc.null_backfill, needs_fill) {
            (Some(fill), true) => {
                sql.push(format!(
                    "ALTER TABLE {qt} ADD COLUMN {}",
                    column_definition(rc, false)
                ));
                sql.push(format!("UPDATE {qt} SET {qc} = {fill} WHERE {qc} IS NULL"));
                sql.push(format!("ALTER TABLE {qt} ALTER COLUMN {qc} SET NOT NULL"));
            }
            (None, true) => {
                sql.push(format!(
                    "ALTER TABLE {qt} ADD COLUMN {} NOT NULL",
                    column_definition(rc, false)
                ));
                null_check = Some(NullCheck {
                    table: t.clone(),
                    column: rc.name.clone(),
                    count_sql: format!("SELECT count(*) FROM {qt}"),
                });
            }
            _ => sql.push(format!(
                "ALTER TABLE {qt} ADD COLUMN {}",
                column_definition(rc, true)
            )),
        }
        if let Some(check) = &rc.check {
            sql.push(format!(
                "ALTER TABLE {qt} ADD CONSTRAINT {} CHECK ({check})",
                quote_ident(&check_name(t, &rc.name))
            ));
        }
        if rc.unique {
            hazards.push(hazard(HazardKind::IndexBuild, "builds the UNIQUE index"));
        }
        self.push(ChangeKind::AddColumn, t, Some(&rc.name), sql, hazards);
        if let Some(c) = self.plan.changes.last_mut() {
            c.null_check = null_check;
        }
    }

    fn alter_column(
        &mut self,
        cur: &Table,
        des: &Table,
        render: &Table,
        cc: &Column,
        dc: &Column,
        rc: &Column,
    ) {
        let t = &render.name;
        let qt = self.rel(t);
        let qc = quote_ident(&rc.name);
        let serial_involved = is_serial(&cc.type_) || is_serial(&dc.type_);
        // After a type change the server re-types the column's default and
        // checks; they are written again so they match the spec's canonical form.
        let retyped = cc.type_ != dc.type_ && storage_type(&cc.type_) != storage_type(&dc.type_);
        // A live check under the name schema-sync gives the column's check
        // that it does not own (made by hand: PostgreSQL's own name for
        // `ADD CHECK (...)` on one column) is never dropped or replaced.
        let check = check_name(t, &rc.name);
        let check_owned = cc.check.is_none() || self.owned.owns_check(t, &rc.name, &check);
        if !check_owned && cc.check != dc.check {
            self.drift(
                if dc.check.is_some() {
                    DriftKind::UnownedConstraintDiffers
                } else {
                    DriftKind::Constraint
                },
                t,
                Some(&check),
                format!(
                    "check {} on {qt} ({}) is not schema-sync's{}; left alone",
                    quote_ident(&check),
                    cc.check.as_deref().unwrap_or_default(),
                    if dc.check.is_some() {
                        " and differs from the spec's"
                    } else {
                        " and not in the spec"
                    }
                ),
            );
        }
        let rechecked = check_owned && (cc.check != dc.check || (retyped && rc.check.is_some()));
        // PostgreSQL re-parses a check for the new type, which can fail
        // (`x > 5` once x is text): a check that is rebuilt anyway is
        // dropped before the type change.
        let check_dropped_first = retyped && rechecked && cc.check.is_some();
        if check_dropped_first {
            self.drop_check(t, &rc.name, false);
        }
        if cc.type_ != dc.type_ {
            if !retyped {
                self.drift(
                    DriftKind::Serial,
                    t,
                    Some(&rc.name),
                    format!(
                        "column {} is {}, the spec says {}; serial-ness is not changed",
                        self.cols(t, &rc.name),
                        cc.type_,
                        dc.type_
                    ),
                );
            } else {
                let target = storage_type(&dc.type_);
                let render_type = if is_serial(&dc.type_) {
                    target
                } else {
                    rc.type_.as_str()
                };
                let (rewrite, destructive) = type_change(storage_type(&cc.type_), target);
                let mut hazards = vec![hazard(
                    HazardKind::TakesStrongLock,
                    "holds an ACCESS EXCLUSIVE lock while the column is converted",
                )];
                if rewrite {
                    hazards.push(hazard(HazardKind::RewritesTable, format!(
                        "converts every row from {} to {target} and rebuilds the table's indexes",
                        cc.type_
                    )));
                }
                if destructive {
                    hazards.push(hazard(
                        HazardKind::Destructive,
                        format!("{} to {target} may fail or lose data (narrowing)", cc.type_),
                    ));
                }
                self.push(
                    ChangeKind::ChangeType,
                    t,
                    Some(&rc.name),
                    vec![format!(
                        "ALTER TABLE {qt} ALTER COLUMN {qc} TYPE {render_type} USING {qc}::{render_type}"
                    )],
                    hazards,
                );
            }
        }
        if !serial_involved && (cc.default != dc.default || (retyped && rc.default.is_some())) {
            match &rc.default {
                Some(d) => self.push(
                    ChangeKind::SetDefault,
                    t,
                    Some(&rc.name),
                    vec![format!(
                        "ALTER TABLE {qt} ALTER COLUMN {qc} SET DEFAULT {d}"
                    )],
                    vec![],
                ),
                None => self.push(
                    ChangeKind::DropDefault,
                    t,
                    Some(&rc.name),
                    vec![format!("ALTER TABLE {qt} ALTER COLUMN {qc} DROP DEFAULT")],
                    vec![],
                ),
            }
        }
        if dc.not_null && !cc.not_null {
            let mut sql = Vec::new();
            if let Some(fill) = &rc.null_backfill {
                sql.push(format!("UPDATE {qt} SET {qc} = {fill} WHERE {qc} IS NULL"));
            }
            sql.push(format!("ALTER TABLE {qt} ALTER COLUMN {qc} SET NOT NULL"));
            self.push(
                ChangeKind::SetNotNull,
                t,
                Some(&rc.name),
                sql,
                vec![hazard(
                    HazardKind::TakesStrongLock,
                    "scans the table under an ACCESS EXCLUSIVE lock",
                )],
            );
            if rc.null_backfill.is_none()
                && let Some(c) = self.plan.changes.last_mut()
            {
                c.null_check = Some(NullCheck {
                    table: t.clone(),
                    column: rc.name.clone(),
                    count_sql: format!("SELECT count(*) FROM {qt} WHERE {qc} IS NULL"),
                });
            }
        } else if !dc.not_null && cc.not_null && !cur.primary_key.contains(&cc.name) {
            self.push(
                ChangeKind::DropNotNull,
                t,
                Some(&rc.name),
                vec![format!("ALTER TABLE {qt} ALTER COLUMN {qc} DROP NOT NULL")],
                vec![],
            );
        }
        if rechecked {
            let name = quote_ident(&check_name(t, &rc.name));
            if cc.check.is_some() && !check_dropped_first {
                self.drop_check(t, &rc.name, rc.check.is_none());
            }
            if let Some(check) = &rc.check {
                self.push(
                    ChangeKind::AddCheck,
                    t,
                    Some(&rc.name),
                    vec![format!(
                        "ALTER TABLE {qt} ADD CONSTRAINT {name} CHECK ({check})"
                    )],
                    vec![hazard(
                        HazardKind::TakesStrongLock,
                        "scans the table under an ACCESS EXCLUSIVE lock to validate the check",
                    )],
                );
            }
        }
        if dc.unique && !cc.unique {
            self.push(
                ChangeKind::AddUnique,
                t,
                Some(&rc.name),
                vec![format!(
                    "ALTER TABLE {qt} ADD CONSTRAINT {} UNIQUE ({qc})",
                    quote_ident(&unique_name(t, &rc.name))
                )],
                vec![
                    hazard(HazardKind::IndexBuild, "builds the UNIQUE index"),
                    hazard(
                        HazardKind::TakesStrongLock,
                        "holds an ACCESS EXCLUSIVE lock during the build",
                    ),
                ],
            );
        } else if !dc.unique
            && cc.unique
            && des.primary_key != [cc.name.clone()]
            && let Some(name) = self.owned.unique(t, &rc.name)
        {
            self.push(
                ChangeKind::DropUnique,
                t,
                Some(&rc.name),
                vec![format!(
                    "ALTER TABLE {qt} DROP CONSTRAINT {}",
                    quote_ident(name)
                )],
                vec![hazard(
                    HazardKind::LoosensConstraint,
                    "drops the UNIQUE constraint: duplicate values are accepted from now on",
                )],
            );
        } else if !dc.unique && cc.unique && des.primary_key != [cc.name.clone()] {
            self.drift(
                DriftKind::Constraint,
                t,
                Some(&rc.name),
                format!(
                    "column {} has a UNIQUE constraint the spec does not declare; left alone",
                    self.cols(t, &rc.name)
                ),
            );
        }
    }

    /// The objects schema-sync does not own that depend on column
    /// `column` of `table` (dropping the column would drop them, or fail),
    /// described; `None` when there are none.
    fn unowned_dependents(&self, table: &Table, column: &str) -> Option<String> {
        let deps = self
            .live?
            .dependents
            .get(&(table.name.clone(), column.to_owned()))?;
        let mut out: Vec<String> = Vec::new();
        for d in deps {
            let here = d.table == table.name && d.schema == self.ns;
            let owned = here
                && match d.kind.as_str() {
                    "index" => table.get_index(&d.name).is_some_and(|i| i.owned),
                    "constraint" => self.owned.owns_constraint(&table.name, &d.name),
                    _ => false,
                };
            if owned {
                continue;
            }
            let text = match d.kind.as_str() {
                "index" | "constraint" => format!(
                    "{} {} on {}",
                    d.kind,
                    quote_ident(&d.name),
                    rel(Some(&d.schema), &d.table)
                ),
                _ => d.description.clone(),
            };
            if !out.contains(&text) {
                out.push(text);
            }
        }
        (!out.is_empty()).then(|| out.join(", "))
    }

    /// The indexes and constraints of other tables (foreign keys) that
    /// depend on columns of `table`: dropping it would fail (2BP01) or
    /// take them along. `None` when there are none.
    fn foreign_dependents(&self, table: &Table) -> Option<String> {
        let live = self.live?;
        let mut out: Vec<String> = Vec::new();
        for column in &table.columns {
            let Some(deps) = live
                .dependents
                .get(&(table.name.clone(), column.name.clone()))
            else {
                continue;
            };
            for d in deps {
                let elsewhere = d.table != table.name || d.schema != self.ns;
                if !elsewhere || !matches!(d.kind.as_str(), "index" | "constraint") {
                    continue;
                }
                let text = format!(
                    "{} {} on {}",
                    d.kind,
                    quote_ident(&d.name),
                    rel(Some(&d.schema), &d.table)
                );
                if !out.contains(&text) {
                    out.push(text);
                }
            }
        }
        (!out.is_empty()).then(|| out.join(", "))
    }

    /// Drops the check schema-sync gives `column`; `for_good` when no
    /// check takes its place.
    fn drop_check(&mut self, t: &str, column: &str, for_good: bool) {
        let sql = format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            self.rel(t),
            quote_ident(&check_name(t, column))
        );
        let hazards = if for_good {
            vec![hazard(
                HazardKind::LoosensConstraint,
                "drops the check: values it refused are accepted from now on",
            )]
        } else {
            vec![]
        };
        self.push(ChangeKind::DropCheck, t, Some(column), vec![sql], hazards);
    }

    /// Builds again an index dropped before a type change, inside the
    /// transaction (the table is locked by the type change anyway).
    fn rebuild_index(&mut self, table: &str, index: &Index) {
        let sql = vec![
            create_index(Some(self.ns), table, index, &index.name, false),
            comment_index(Some(self.ns), &index.name, index),
        ];
        self.push(
            ChangeKind::CreateIndex,
            table,
            Some(&index.name),
            sql,
            vec![hazard(
                HazardKind::IndexBuild,
                "builds the index again after the type change while blocking writes to the table",
            )],
        );
    }

    fn replace_index(&mut self, table: &str, index: &Index) {
        let tmp = temp_index_name(&index.name);
        let sql = vec![
            format!("DROP INDEX IF EXISTS {}", self.rel(&tmp)),
            create_index(Some(self.ns), table, index, &tmp, false),
            format!("DROP INDEX {}", self.rel(&index.name)),
            format!(
                "ALTER INDEX {} RENAME TO {}",
                self.rel(&tmp),
                quote_ident(&index.name)
            ),
            comment_index(Some(self.ns), &index.name, index),
        ];
        self.push(
            ChangeKind::ReplaceIndex,
            table,
            Some(&index.name),
            sql,
            vec![hazard(
                HazardKind::IndexBuild,
                "builds the new definition under a temporary name, then swaps it in",
            )],
        );
    }
}

/// A token of an SQL expression, as far as column references go.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// An identifier (folded to lower case unless quoted) not following `::`.
    Name(String),
    /// Anything else: literals, operators, punctuation, type names.
    Other,
}

/// Splits an expression into tokens, enough to find the columns it names:
/// string literals and type names after `::` are never names.
fn tokens(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut after_cast = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            Token::Other
        } else if c == '"' {
            let mut name = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '"' {
                    if chars.get(i + 1) == Some(&'"') {
                        name.push('"');
                        i += 2;
                        continue;
                    }
                    break;
                }
                name.push(chars[i]);
                i += 1;
            }
            i += 1;
            Token::Name(name)
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            Token::Name(
                chars[start..i]
                    .iter()
                    .collect::<String>()
                    .to_ascii_lowercase(),
            )
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 2;
            after_cast = true;
            continue;
        } else {
            i += 1;
            Token::Other
        };
        out.push(match token {
            Token::Name(_) if after_cast => Token::Other,
            t => t,
        });
        after_cast = false;
    }
    out
}

/// Whether an index key is a bare column, with at most an ordering.
fn is_plain_key(key: &str) -> bool {
    let tokens = tokens(key);
    matches!(tokens.first(), Some(Token::Name(_)))
        && tokens[1..].iter().all(|t| {
            matches!(t, Token::Name(w) if ["asc", "desc", "nulls", "first", "last"].contains(&w.as_str()))
        })
        && !key.trim_start().starts_with('(')
}

/// Whether `index` uses `column` in a key expression (anything but a bare
/// column, which PostgreSQL rebuilds as it is) or in its predicate.
fn index_expressions_use(index: &Index, column: &str) -> bool {
    let names = |text: &str| {
        tokens(text)
            .into_iter()
            .any(|t| matches!(t, Token::Name(n) if n == column))
    };
    index.keys.iter().any(|k| !is_plain_key(k) && names(k))
        || index.where_.as_deref().is_some_and(names)
}

fn same_index(a: &Index, b: &Index) -> bool {
    a.unique == b.unique
        && a.method == b.method
        && a.keys == b.keys
        && a.where_ == b.where_
        && a.include == b.include
}

fn varchar_len(t: &str) -> Option<Option<u32>> {
    if t == "character varying" {
        return Some(None);
    }
    t.strip_prefix("character varying(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
        .map(Some)
}

/// `(rewrites the table, may lose data)` for a type change between
/// normalized types.
fn type_change(from: &str, to: &str) -> (bool, bool) {
    let ints = ["smallint", "integer", "bigint"];
    let rank = |t: &str| ints.iter().position(|i| *i == t);
    if let (Some(a), Some(b)) = (varchar_len(from), varchar_len(to)) {
        return match (a, b) {
            (_, None) => (false, false),
            (Some(a), Some(b)) if b >= a => (false, false),
            _ => (true, true),
        };
    }
    if to == "text" && (varchar_len(from).is_some() || from == "text") {
        return (false, false);
    }
    if to == "text" && from.starts_with("character(") {
        return (true, false);
    }
    if let (Some(a), Some(b)) = (rank(from), rank(to)) {
        return (true, b < a);
    }
    if rank(from).is_some() && (to == "numeric" || to == "text") {
        return (true, false);
    }
    if from == "real" && to == "double precision" {
        return (true, false);
    }
    if from == "timestamp without time zone" && to == "timestamp with time zone" {
        return (true, false);
    }
    (true, true)
}

#[cfg(test)]
mod tests {
    use super::type_change;

    #[test]
    fn index_expressions_name_their_columns() {
        use super::{index_expressions_use, is_plain_key};
        use crate::spec::Index;
        assert!(is_plain_key("x"));
        assert!(is_plain_key("\"X y\" DESC NULLS LAST"));
        assert!(!is_plain_key("x text_pattern_ops"));
        assert!(!is_plain_key("lower(x)"));
        assert!(!is_plain_key("(x)"));
        let i = Index::new("i", ["lower((n)::text)", "id"]);
        assert!(index_expressions_use(&i, "n"));
        assert!(!index_expressions_use(&i, "text"));
        assert!(!index_expressions_use(&i, "id"));
        let i = Index::new("i", ["id"]).where_("state = 'n' AND \"N\" > 0");
        assert!(!index_expressions_use(&i, "n"));
        assert!(index_expressions_use(&i, "N"));
        assert!(index_expressions_use(&i, "state"));
        assert!(!index_expressions_use(&Index::new("i", ["n DESC"]), "n"));
        assert!(index_expressions_use(
            &Index::new("i", ["COALESCE(N, 0)"]),
            "n"
        ));
    }

    #[test]
    fn narrowing_is_destructive() {
        assert_eq!(type_change("integer", "bigint"), (true, false));
        assert_eq!(type_change("bigint", "integer"), (true, true));
        assert_eq!(
            type_change("character varying(8)", "character varying(16)"),
            (false, false)
        );
        assert_eq!(
            type_change("character varying(16)", "character varying(8)"),
            (true, true)
        );
        assert_eq!(type_change("character varying(16)", "text"), (false, false));
        assert_eq!(type_change("text", "integer"), (true, true));
    }
}
