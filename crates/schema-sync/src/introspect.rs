//! Introspection: the live tables of one schema, read from `pg_catalog` in
//! three queries for the whole schema, as a [`Schema`] in the server's
//! canonical spelling.

use std::collections::BTreeMap;

use db_core::{Executor, Value};

use crate::SyncError;
use crate::ddl::{check_name, is_owner_marker};
use crate::spec::{Column, Index, Schema, Table};

const COLUMNS: &str = "\
SELECT c.relname::text, a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid),
       d.adbin IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_depend dep
           JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S'
           WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
             AND dep.refobjid = c.oid AND dep.refobjsubid = a.attnum AND dep.deptype = 'a'),
       CASE WHEN starts_with(coalesce(obj_description(c.oid, 'pg_class'), ''), $2)
            THEN obj_description(c.oid, 'pg_class') END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
ORDER BY c.oid, a.attnum";

const CONSTRAINTS: &str = "\
SELECT cl.relname::text, con.conname::text, con.contype::text,
       CASE WHEN con.contype = 'c' THEN pg_get_expr(con.conbin, con.conrelid) END,
       pg_get_constraintdef(con.oid),
       ARRAY(SELECT a.attname::text
             FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class cl ON cl.oid = con.conrelid
JOIN pg_namespace n ON n.oid = cl.relnamespace
WHERE n.nspname = $1 AND cl.relkind IN ('r', 'p')
  -- PostgreSQL 18 records NOT NULL as constraints too; it is read from
  -- the column (attnotnull), as on every other version.
  AND con.contype <> 'n'
ORDER BY cl.oid, con.conname";

const INDEXES: &str = "\
SELECT t.relname::text, i.relname::text, ix.indisunique, am.amname::text,
       pg_get_indexdef(ix.indexrelid),
       obj_description(ix.indexrelid, 'pg_class'),
       EXISTS (SELECT 1 FROM pg_constraint con
               WHERE con.conindid = ix.indexrelid AND con.conrelid = ix.indrelid
                 AND con.contype IN ('p', 'u', 'x')),
       ix.indisvalid
FROM pg_index ix
JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_class t ON t.oid = ix.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
WHERE n.nspname = $1 AND t.relkind IN ('r', 'p')
ORDER BY t.oid, i.oid";

/// What depends on each column of the schema's tables, besides the
/// column's own default and serial sequence: indexes, constraints (a
/// constraint's index counts as the constraint), foreign keys of any table,
/// views, triggers, ... `kind` is `index`, `constraint` or `other`.
const DEPENDENTS: &str = "\
SELECT DISTINCT c.relname::text, a.attname::text,
       CASE WHEN con.oid IS NOT NULL OR d.classid = 'pg_constraint'::regclass THEN 'constraint'
            WHEN i.oid IS NOT NULL THEN 'index' ELSE 'other' END,
       coalesce(con.conname::text, dcon.conname::text, i.relname::text, ''),
       coalesce(concl.relname::text, dconcl.relname::text, c.relname::text),
       coalesce(connsp.nspname::text, dconnsp.nspname::text, n.nspname::text),
       pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_depend d
JOIN pg_class c ON c.oid = d.refobjid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
LEFT JOIN pg_class i ON d.classid = 'pg_class'::regclass AND i.oid = d.objid AND i.relkind IN ('i', 'I')
LEFT JOIN pg_constraint con ON con.conindid = i.oid AND con.conrelid = (SELECT indrelid FROM pg_index WHERE indexrelid = i.oid)
LEFT JOIN pg_class concl ON concl.oid = con.conrelid
LEFT JOIN pg_namespace connsp ON connsp.oid = concl.relnamespace
LEFT JOIN pg_constraint dcon ON d.classid = 'pg_constraint'::regclass AND dcon.oid = d.objid
LEFT JOIN pg_class dconcl ON dconcl.oid = dcon.conrelid
LEFT JOIN pg_namespace dconnsp ON dconnsp.oid = dconcl.relnamespace
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
  AND n.nspname = $1 AND c.relkind IN ('r', 'p')
  AND d.deptype IN ('n', 'a')
  AND d.classid <> 'pg_attrdef'::regclass
  AND NOT (d.classid = 'pg_class'::regclass AND d.objid = c.oid)
  AND NOT (d.classid = 'pg_class'::regclass
           AND EXISTS (SELECT 1 FROM pg_class s WHERE s.oid = d.objid AND s.relkind = 'S'))
ORDER BY 1, 2, 7";

/// An object that depends on a column: dropping the column drops it too
/// (or fails, for a foreign key of another table or a view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependent {
    /// `index`, `constraint` or `other`.
    pub kind: String,
    /// The index or constraint name (empty for other objects).
    pub name: String,
    /// The table the index or constraint belongs to.
    pub table: String,
    /// That table's schema.
    pub schema: String,
    /// PostgreSQL's description (`index hand_idx`, `constraint f on table
    /// other`, `rule _RETURN on view v`).
    pub description: String,
}

/// A live constraint the spec model cannot express (foreign keys,
/// multi-column UNIQUE, table-level CHECK, exclusion): reported as drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherConstraint {
    /// The table.
    pub table: String,
    /// The constraint name.
    pub name: String,
    /// `pg_get_constraintdef`.
    pub definition: String,
}

/// The live state of a schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSchema {
    /// Tables, columns, keys and indexes, in canonical form; tables sorted
    /// by name.
    pub schema: Schema,
    /// Constraints outside the model.
    pub other_constraints: Vec<OtherConstraint>,
    /// The one-column UNIQUE constraints behind the columns' `unique` flags:
    /// `(table, column, constraint name)`.
    pub unique_constraints: Vec<(String, String, String)>,
    /// The names of the tables' primary-key constraints, by table (a key
    /// made outside schema-sync need not be `<table>_pkey`).
    pub primary_key_names: BTreeMap<String, String>,
    /// The tables of the schema another component declares its own
    /// (`COMMENT ON TABLE ... IS 'cocalc-component:NAME'`), outside
    /// schema-sync's view: table name → component.
    pub component_tables: BTreeMap<String, String>,
    /// What depends on each column, by `(table, column)`; read only when a
    /// plan would drop a column (empty from [`introspect`]).
    pub dependents: BTreeMap<(String, String), Vec<Dependent>>,
}

impl LiveSchema {
    /// The name of the one-column UNIQUE constraint on `table.column`.
    pub fn unique_constraint(&self, table: &str, column: &str) -> Option<&str> {
        self.unique_constraints
            .iter()
            .find(|(t, c, _)| t == table && c == column)
            .map(|(_, _, name)| name.as_str())
    }
}

fn text(v: &Value) -> Result<Option<String>, SyncError> {
    match v {
        Value::Null => Ok(None),
        Value::Text(s) => Ok(Some(s.clone())),
        other => Err(SyncError::Catalog(format!(
            "expected text from the catalog, got {}",
            other.kind_name()
        ))),
    }
}

fn req(v: &Value) -> Result<String, SyncError> {
    text(v)?.ok_or_else(|| SyncError::Catalog("unexpected NULL from the catalog".into()))
}

fn flag(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// Reads every table of schema `namespace` (the spec's; `public` by
/// default), besides those another component marks as its own. The result
/// names `namespace` as its schema.
pub async fn introspect<E: Executor>(ex: &mut E, namespace: &str) -> Result<LiveSchema, SyncError> {
    let params = [Value::Text(namespace.to_owned())];
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    // Tables another component declares its own are outside the view; their
    // constraints and indexes then find no table and are skipped too.
    let columns_params = [
        Value::Text(namespace.to_owned()),
        Value::Text(db_core::COMPONENT_MARK.to_owned()),
    ];
    let mut component_tables = BTreeMap::new();
    for row in ex.query(COLUMNS, &columns_params).await? {
        let v = row.values();
        let tname = req(&v[0])?;
        if let Some(mark) = text(&v[6])? {
            let component = mark
                .strip_prefix(db_core::COMPONENT_MARK)
                .unwrap_or(&mark)
                .trim()
                .to_owned();
            component_tables.insert(tname, component);
            continue;
        }
        let table = tables
            .entry(tname.clone())
            .or_insert_with(|| Table::new(tname));
        let Some(name) = text(&v[1])? else { continue };
        let mut type_ = req(&v[2])?;
        let mut default = text(&v[4])?;
        let owns_sequence = flag(&v[5]);
        if owns_sequence
            && default
                .as_deref()
                .is_some_and(|d| d.starts_with("nextval("))
        {
            // A serial column: compare the type, not the owned sequence's name.
            type_ = match type_.as_str() {
                "integer" => "serial".to_owned(),
                "bigint" => "bigserial".to_owned(),
                "smallint" => "smallserial".to_owned(),
                _ => type_,
            };
            if type_.ends_with("serial") {
                default = None;
            }
        }
        table.columns.push(Column {
            name,
            type_,
            not_null: flag(&v[3]),
            default,
            check: None,
            unique: false,
            null_backfill: None,
        });
    }
    let mut other_constraints = Vec::new();
    let mut unique_constraints = Vec::new();
    let mut primary_key_names = BTreeMap::new();
    for row in ex.query(CONSTRAINTS, &params).await? {
        let v = row.values();
        let tname = req(&v[0])?;
        let cname = req(&v[1])?;
        let kind = req(&v[2])?;
        let expr = text(&v[3])?;
        let definition = req(&v[4])?;
        let columns: Vec<String> = match &v[5] {
            Value::Array(a) => a
                .elements
                .iter()
                .filter_map(|e| text(e).ok().flatten())
                .collect(),
            _ => Vec::new(),
        };
        let Some(table) = tables.get_mut(&tname) else {
            continue;
        };
        let mapped = match kind.as_str() {
            "p" => {
                table.primary_key = columns;
                primary_key_names.insert(tname.clone(), cname.clone());
                true
            }
            "u" if columns.len() == 1 => {
                match table.columns.iter_mut().find(|c| c.name == columns[0]) {
                    Some(c) if !c.unique => {
                        c.unique = true;
                        unique_constraints.push((tname.clone(), c.name.clone(), cname.clone()));
                        true
                    }
                    _ => false,
                }
            }
            "c" => {
                // Column checks are recognised by the name schema-sync gives them.
                let target = table
                    .columns
                    .iter()
                    .position(|c| c.check.is_none() && check_name(&tname, &c.name) == cname);
                match (target, expr) {
                    (Some(i), Some(e)) => {
                        table.columns[i].check = Some(strip_parens(&e).to_owned());
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !mapped {
            other_constraints.push(OtherConstraint {
                table: tname,
                name: cname,
                definition,
            });
        }
    }
    for row in ex.query(INDEXES, &params).await? {
        let v = row.values();
        if flag(&v[6]) {
            continue; // backs a primary key or UNIQUE constraint
        }
        let tname = req(&v[0])?;
        let name = req(&v[1])?;
        let definition = req(&v[4])?;
        let comment = text(&v[5])?;
        let Some(table) = tables.get_mut(&tname) else {
            continue;
        };
        let parts = parse_indexdef(&definition).ok_or_else(|| {
            SyncError::Catalog(format!("cannot parse index definition {definition:?}"))
        })?;
        table.indexes.push(Index {
            name,
            unique: flag(&v[2]),
            method: req(&v[3])?,
            keys: parts.keys,
            where_: parts.where_,
            include: parts.include,
            owned: comment.as_deref().is_some_and(is_owner_marker),
            invalid: !flag(&v[7]),
        });
    }
    let mut schema = Schema {
        schema: namespace.to_owned(),
        tables: tables.into_values().collect(),
    };
    schema.tables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(LiveSchema {
        schema,
        other_constraints,
        unique_constraints,
        primary_key_names,
        component_tables,
        dependents: BTreeMap::new(),
    })
}

/// Reads what depends on the columns of `live`'s tables into
/// [`LiveSchema::dependents`] (one catalog query; only needed when a
/// column is to be dropped).
pub(crate) async fn load_dependents<E: Executor>(
    ex: &mut E,
    live: &mut LiveSchema,
) -> Result<(), SyncError> {
    let params = [Value::Text(live.schema.schema.clone())];
    let mut dependents: BTreeMap<(String, String), Vec<Dependent>> = BTreeMap::new();
    for row in ex.query(DEPENDENTS, &params).await? {
        let v = row.values();
        let tname = req(&v[0])?;
        if live.schema.get(&tname).is_none() {
            continue;
        }
        dependents
            .entry((tname, req(&v[1])?))
            .or_default()
            .push(Dependent {
                kind: req(&v[2])?,
                name: req(&v[3])?,
                table: req(&v[4])?,
                schema: req(&v[5])?,
                description: req(&v[6])?,
            });
    }
    live.dependents = dependents;
    Ok(())
}

/// Removes one pair of parentheses around the whole expression, if any.
pub(crate) fn strip_parens(expr: &str) -> &str {
    let e = expr.trim();
    if e.starts_with('(') && e.ends_with(')') && matching_paren(e, 0) == Some(e.len() - 1) {
        &e[1..e.len() - 1]
    } else {
        e
    }
}

/// The byte index of the parenthesis closing the one at `open`, skipping
/// quoted literals and identifiers.
fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    for (i, &b) in s.as_bytes().iter().enumerate().skip(open) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' => depth += 1,
                b')' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

/// Splits at top-level commas.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' => depth += 1,
                b')' => depth -= 1,
                b',' if depth == 0 => {
                    out.push(s[start..i].trim().to_owned());
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    out.push(s[start..].trim().to_owned());
    out
}

/// Skips an identifier (quoted or not) at the start of `s`; returns the rest.
fn skip_ident(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix('"') {
        let b = rest.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return Some(&rest[i + 1..]);
            }
            i += 1;
        }
        None
    } else {
        let end = s.find([' ', '.', '(']).unwrap_or(s.len());
        Some(&s[end..])
    }
}

struct IndexParts {
    keys: Vec<String>,
    include: Vec<String>,
    where_: Option<String>,
}

/// Parses `CREATE [UNIQUE] INDEX name ON [ONLY] schema.table USING am (keys)
/// [INCLUDE (cols)] [NULLS NOT DISTINCT] [WHERE pred]`.
fn parse_indexdef(def: &str) -> Option<IndexParts> {
    let s = def
        .strip_prefix("CREATE UNIQUE INDEX ")
        .or_else(|| def.strip_prefix("CREATE INDEX "))?;
    let s = skip_ident(s)?.strip_prefix(" ON ")?;
    let mut s = s.strip_prefix("ONLY ").unwrap_or(s);
    loop {
        s = skip_ident(s)?;
        match s.strip_prefix('.') {
            Some(rest) => s = rest,
            None => break,
        }
    }
    let s = s.strip_prefix(" USING ")?;
    let open = s.find('(')?;
    let close = matching_paren(s, open)?;
    let keys = split_top(&s[open + 1..close]);
    let mut rest = &s[close + 1..];
    let mut include = Vec::new();
    if let Some(r) = rest.strip_prefix(" INCLUDE ") {
        let close = matching_paren(r, 0)?;
        include = split_top(&r[1..close])
            .into_iter()
            .map(|c| unquote(&c))
            .collect();
        rest = &r[close + 1..];
    }
    let where_ = rest
        .find(" WHERE ")
        .map(|i| strip_parens(&rest[i + 7..]).to_owned());
    Some(IndexParts {
        keys,
        include,
        where_,
    })
}

fn unquote(ident: &str) -> String {
    match ident.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => ident.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn index_definitions_parse() {
        let p = parse_indexdef(
            "CREATE UNIQUE INDEX \"a \"\" USING b\" ON public.\"t ON x\" USING btree (lower((name)::text) text_pattern_ops, \"x, y\" DESC) INCLUDE (\"B\", c) WHERE (state = ANY (ARRAY['a'::text, 'b)'::text]))",
        )
        .unwrap();
        assert_eq!(
            p.keys,
            vec!["lower((name)::text) text_pattern_ops", "\"x, y\" DESC"]
        );
        assert_eq!(p.include, vec!["B", "c"]);
        assert_eq!(
            p.where_.as_deref(),
            Some("state = ANY (ARRAY['a'::text, 'b)'::text])")
        );
        let p = parse_indexdef("CREATE INDEX i ON ONLY s.t USING gin (users)").unwrap();
        assert_eq!(p.keys, vec!["users"]);
        assert!(p.where_.is_none());
    }

    #[test]
    fn parens_strip_only_when_enclosing() {
        assert_eq!(strip_parens("(a > 0)"), "a > 0");
        assert_eq!(strip_parens("(a) > (b)"), "(a) > (b)");
    }
}
