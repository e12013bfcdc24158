//! DDL generation: every identifier quoted with [`quote_ident`], every
//! expression (types, defaults, checks, index keys and predicates) emitted as
//! written, after [`validate`](crate::validate()) made sure each is one type
//! name or one self-contained expression. Nothing newer than PostgreSQL 13.

use db_core::quote_ident;
use sha2::{Digest, Sha256};

use crate::spec::{Column, Index, Table};
use crate::validate::MAX_IDENTIFIER_BYTES;

/// The prefix of the `COMMENT ON INDEX` marker of indexes schema-sync owns.
pub const OWNER_MARKER: &str = "schema-sync:v1:";

/// Whether an index comment marks the index as created by schema-sync (or by
/// CoCalc's own schema sync, whose markers the fixture carries).
pub fn is_owner_marker(comment: &str) -> bool {
    comment.starts_with(OWNER_MARKER) || comment.starts_with("[cocalc-db-schema-index:")
}

/// A relation name, qualified by `schema` when given.
pub(crate) fn rel(schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(name)),
        None => quote_ident(name),
    }
}

fn clip(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The name PostgreSQL's `makeObjectName` builds: `name1[_name2]_label`,
/// truncating the longer part first to fit 63 bytes.
pub(crate) fn object_name(name1: &str, name2: Option<&str>, label: &str) -> String {
    let overhead = label.len() + 1 + usize::from(name2.is_some());
    let avail = MAX_IDENTIFIER_BYTES.saturating_sub(overhead);
    let (mut n1, mut n2) = (name1.len(), name2.map_or(0, str::len));
    while n1 + n2 > avail {
        if n1 > n2 {
            n1 -= 1;
        } else {
            n2 -= 1;
        }
    }
    let mut out = clip(name1, n1).to_owned();
    if let Some(name2) = name2 {
        out.push('_');
        out.push_str(clip(name2, n2));
    }
    out.push('_');
    out.push_str(label);
    out
}

/// The name of the CHECK constraint schema-sync gives column `column`:
/// PostgreSQL's `<table>_<column>_check` when it fits 63 bytes; otherwise
/// the truncated names carry 8 hex digits of a digest of both, so that two
/// columns whose names differ only past the cut get distinct names.
pub fn check_name(table: &str, column: &str) -> String {
    const LABEL: &str = "check";
    if table.len() + column.len() + LABEL.len() + 2 <= MAX_IDENTIFIER_BYTES {
        return object_name(table, Some(column), LABEL);
    }
    let mut h = Sha256::new();
    h.update(table.as_bytes());
    h.update([0]);
    h.update(column.as_bytes());
    let digest = hex::encode(&h.finalize()[..4]);
    object_name(table, Some(column), &format!("{digest}_{LABEL}"))
}

/// The name PostgreSQL gives a column's UNIQUE constraint.
pub fn unique_name(table: &str, column: &str) -> String {
    object_name(table, Some(column), "key")
}

/// The name PostgreSQL gives a table's primary key.
pub fn pkey_name(table: &str) -> String {
    object_name(table, None, "pkey")
}

/// The temporary name an index is rebuilt under before it replaces the old one.
pub(crate) fn temp_index_name(index: &str) -> String {
    format!("{}_ssnew", clip(index, MAX_IDENTIFIER_BYTES - 6))
}

/// The ownership marker for `index`: a sha256 of its definition.
pub fn index_marker(index: &Index) -> String {
    let mut h = Sha256::new();
    h.update(index_definition(index).as_bytes());
    format!("{OWNER_MARKER}{}", hex::encode(h.finalize()))
}

fn index_definition(index: &Index) -> String {
    format!(
        "unique={} method={} keys=({}) include=({}) where={}",
        index.unique,
        index.method,
        index.keys.join(", "),
        index.include.join(", "),
        index.where_.as_deref().unwrap_or("")
    )
}

/// A column definition for `CREATE TABLE` / `ADD COLUMN`.
pub(crate) fn column_definition(column: &Column, with_not_null: bool) -> String {
    let mut s = format!("{} {}", quote_ident(&column.name), column.type_);
    if let Some(d) = &column.default {
        s.push_str(&format!(" DEFAULT ({d})"));
    }
    if with_not_null && column.not_null {
        s.push_str(" NOT NULL");
    }
    if column.unique {
        s.push_str(" UNIQUE");
    }
    s
}

/// A `CREATE TABLE` statement, and the character range (1-based, inclusive
/// start, exclusive end, as server error positions count) of each column
/// definition, to map server errors to columns.
pub(crate) fn create_table(
    schema: Option<&str>,
    table: &Table,
) -> (String, Vec<(usize, usize, String)>) {
    let mut sql = format!("CREATE TABLE {} (", rel(schema, &table.name));
    let mut ranges = Vec::new();
    let mut parts = 0;
    let mut push = |sql: &mut String, part: &str, column: Option<&str>| {
        sql.push_str(if parts == 0 { "\n  " } else { ",\n  " });
        parts += 1;
        let start = sql.chars().count() + 1;
        sql.push_str(part);
        if let Some(c) = column {
            ranges.push((start, start + part.chars().count(), c.to_owned()));
        }
    };
    for column in &table.columns {
        push(
            &mut sql,
            &column_definition(column, true),
            Some(&column.name),
        );
    }
    for column in &table.columns {
        if let Some(check) = &column.check {
            let part = format!(
                "CONSTRAINT {} CHECK ({check})",
                quote_ident(&check_name(&table.name, &column.name))
            );
            push(&mut sql, &part, Some(&column.name));
        }
    }
    if !table.primary_key.is_empty() {
        let part = format!("PRIMARY KEY ({})", ident_list(&table.primary_key));
        push(&mut sql, &part, None);
    }
    sql.push_str(if parts == 0 { ")" } else { "\n)" });
    (sql, ranges)
}

/// Quoted, comma-separated identifiers.
pub(crate) fn ident_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `CREATE [UNIQUE] INDEX [CONCURRENTLY] name ON table USING method (keys)
/// [INCLUDE (...)] [WHERE ...]` statement.
pub(crate) fn create_index(
    schema: Option<&str>,
    table: &str,
    index: &Index,
    name: &str,
    concurrently: bool,
) -> String {
    let mut sql = format!(
        "CREATE {}INDEX {}{} ON {} USING {} ({})",
        if index.unique { "UNIQUE " } else { "" },
        if concurrently { "CONCURRENTLY " } else { "" },
        quote_ident(name),
        rel(schema, table),
        index.method,
        index.keys.join(", ")
    );
    if !index.include.is_empty() {
        sql.push_str(&format!(" INCLUDE ({})", ident_list(&index.include)));
    }
    if let Some(w) = &index.where_ {
        sql.push_str(&format!(" WHERE {w}"));
    }
    sql
}

/// `COMMENT ON INDEX name IS '<marker>'`.
pub(crate) fn comment_index(schema: Option<&str>, name: &str, index: &Index) -> String {
    format!(
        "COMMENT ON INDEX {} IS '{}'",
        rel(schema, name),
        index_marker(index)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn object_names_follow_postgres() {
        assert_eq!(check_name("t", "c"), "t_c_check");
        assert_eq!(pkey_name("t"), "t_pkey");
        let long = "a".repeat(40);
        let name = unique_name(&long, &"b".repeat(40));
        assert_eq!(name.len(), 63);
        assert_eq!(name, format!("{}_{}_key", "a".repeat(29), "b".repeat(29)));
        assert!(temp_index_name(&"x".repeat(63)).len() <= 63);
        // Truncation respects character boundaries.
        let n = check_name(&"é".repeat(40), "c");
        assert!(
            n.len() <= 63 && n.contains("_c_") && n.ends_with("_check"),
            "{n}"
        );
        // Names that differ only past the cut stay distinct.
        let (t, x) = ("t".repeat(40), "x".repeat(40));
        let (a, b) = (
            check_name(&t, &format!("{x}1")),
            check_name(&t, &format!("{x}2")),
        );
        assert_ne!(a, b);
        assert!(a.len() <= 63 && b.len() <= 63);
    }

    #[test]
    fn create_table_quotes_and_maps_columns() {
        let t = Table::new("My Table")
            .column(Column::new("select", "INTEGER").not_null().default("0"))
            .column(Column::new("x\"y", "TEXT").check("length(\"x\"\"y\") > 0"))
            .primary_key(["select"]);
        let (sql, ranges) = create_table(None, &t);
        assert_eq!(
            sql,
            "CREATE TABLE \"My Table\" (\n  \"select\" INTEGER DEFAULT (0) NOT NULL,\n  \"x\"\"y\" TEXT,\n  CONSTRAINT \"My Table_x\"\"y_check\" CHECK (length(\"x\"\"y\") > 0),\n  PRIMARY KEY (\"select\")\n)"
        );
        let chars: Vec<char> = sql.chars().collect();
        let (s, e, c) = &ranges[1];
        assert_eq!(c, "x\"y");
        let text: String = chars[s - 1..e - 1].iter().collect();
        assert_eq!(text, "\"x\"\"y\" TEXT");
    }
}
