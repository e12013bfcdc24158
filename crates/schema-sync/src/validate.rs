//! Validation of a spec before any SQL is generated.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::spec::Schema;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// One problem in a spec. Every variant names the table, and the column or
/// index where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A table without a name (`position` is its 0-based place in the spec).
    #[error("table #{position} has an empty name")]
    EmptyTableName {
        /// 0-based position in `tables`.
        position: usize,
    },
    /// A column without a name.
    #[error("table {table:?}: column #{position} has an empty name")]
    EmptyColumnName {
        /// The table.
        table: String,
        /// 0-based position in `columns`.
        position: usize,
    },
    /// An index without a name.
    #[error("table {table:?}: index #{position} has an empty name")]
    EmptyIndexName {
        /// The table.
        table: String,
        /// 0-based position in `indexes`.
        position: usize,
    },
    /// A column without a type.
    #[error("table {table:?}, column {column:?}: the type is empty")]
    EmptyType {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// An index without key expressions.
    #[error("table {table:?}, index {index:?}: no key expressions")]
    EmptyIndexKeys {
        /// The table.
        table: String,
        /// The index.
        index: String,
    },
    /// Two tables with one name.
    #[error("table {table:?} is declared more than once")]
    DuplicateTable {
        /// The table.
        table: String,
    },
    /// Two columns with one name in a table.
    #[error("table {table:?}, column {column:?}: declared more than once")]
    DuplicateColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// An index name used twice, or equal to a table name (indexes and
    /// tables share one namespace).
    #[error("table {table:?}, index {index:?}: the name is already used by {other}")]
    DuplicateIndex {
        /// The table of the second use.
        table: String,
        /// The index.
        index: String,
        /// What else uses the name.
        other: String,
    },
    /// A primary-key column that the table does not declare.
    #[error("table {table:?}: primary key column {column:?} does not exist")]
    UnknownPrimaryKeyColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A primary-key column listed twice.
    #[error("table {table:?}: primary key column {column:?} is listed more than once")]
    DuplicatePrimaryKeyColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// An INCLUDE column that the table does not declare.
    #[error("table {table:?}, index {index:?}: INCLUDE column {column:?} does not exist")]
    UnknownIncludeColumn {
        /// The table.
        table: String,
        /// The index.
        index: String,
        /// The column.
        column: String,
    },
    /// A type that is not a type name: a qualified or quoted name or one
    /// of PostgreSQL's multi-word type names (`double precision`,
    /// `timestamp with time zone`, ...), numeric modifiers (`(32)`,
    /// `(20,10)`) and array brackets only: no constraint clauses,
    /// `COLLATE` or `SETOF`.
    #[error(
        "table {table:?}, column {column:?}: {type_:?} is not a type name (a quoted or \
         schema-qualified name or a multi-word type name such as double precision, numeric \
         modifiers such as (20,10), and [] only; constraints go in their own fields)"
    )]
    InvalidType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The type as written.
        type_: String,
    },
    /// An expression that is not one self-contained expression: it could
    /// end or change the statement it is written into.
    #[error("table {table:?}, {what}: {text:?} is not one expression: {reason}")]
    InvalidExpression {
        /// The table.
        table: String,
        /// Where: `column "c" default`, `index "i" key`, ...
        what: String,
        /// The expression as written.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An index access method that is not a plain name.
    #[error("table {table:?}, index {index:?}: access method {method:?} is not a name")]
    InvalidMethod {
        /// The table.
        table: String,
        /// The index.
        index: String,
        /// The method as written.
        method: String,
    },
    /// A schema a spec may not name: empty, longer than 63 bytes, with a
    /// NUL character, or not schema-sync's business (`pg_catalog`,
    /// `information_schema`, any `pg_*`, schema-sync's own ledger
    /// `schema_sync`, the changefeed's `changefeed`).
    #[error("schema {schema:?}: {reason}")]
    InvalidSchema {
        /// The schema as written.
        schema: String,
        /// Why it is refused.
        reason: String,
    },
    /// A name with a NUL character, which no PostgreSQL text can hold.
    #[error(
        "table {table:?}{}: name {name:?} holds a NUL character",
        what.as_ref().map(|w| format!(", {w}")).unwrap_or_default()
    )]
    NulInName {
        /// The table.
        table: String,
        /// `column "x"`, `index "y"`, `primary key column`, ..., or `None`
        /// for the table name itself.
        what: Option<String>,
        /// The name.
        name: String,
    },
    /// A name PostgreSQL would silently truncate.
    #[error(
        "table {table:?}{}: name {name:?} is {bytes} bytes long; PostgreSQL keeps at most 63",
        what.as_ref().map(|w| format!(", {w}")).unwrap_or_default()
    )]
    NameTooLong {
        /// The table.
        table: String,
        /// `column "x"` or `index "y"`, or `None` for the table name itself.
        what: Option<String>,
        /// The name.
        name: String,
        /// Its length in bytes.
        bytes: usize,
    },
}

/// Every problem found in a spec (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the schema spec is invalid:")?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

fn check_len(errors: &mut Vec<ValidationError>, table: &str, what: Option<String>, name: &str) {
    if name.contains('\0') {
        errors.push(ValidationError::NulInName {
            table: table.to_owned(),
            what: what.clone(),
            name: name.to_owned(),
        });
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        errors.push(ValidationError::NameTooLong {
            table: table.to_owned(),
            what,
            name: name.to_owned(),
            bytes: name.len(),
        });
    }
}

fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// A piece of a type name.
#[derive(Debug, PartialEq)]
enum TypePart {
    /// An unquoted word, lower-cased.
    Word(String),
    /// A double-quoted name.
    Quoted,
    Dot,
    /// Integer modifiers in parentheses.
    Modifiers,
    /// `[]` or `[n]`.
    Brackets,
}

/// Splits a type name into its parts; `None` on anything else (punctuation
/// other than `.`, parentheses that hold more than integers, ...).
fn type_parts(text: &str) -> Option<Vec<TypePart>> {
    let mut chars = text.trim().chars().peekable();
    let mut parts = Vec::new();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            c if is_word_start(c) => {
                let mut word = String::new();
                while let Some(c) = chars.next_if(|&c| is_word_char(c)) {
                    word.push(c.to_ascii_lowercase());
                }
                parts.push(TypePart::Word(word));
            }
            '"' => {
                chars.next();
                let mut empty = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.next_if_eq(&'"').is_some() => empty = false,
                        Some('"') => break,
                        Some('\0') | None => return None,
                        Some(_) => empty = false,
                    }
                }
                if empty {
                    return None;
                }
                parts.push(TypePart::Quoted);
            }
            '.' => {
                chars.next();
                parts.push(TypePart::Dot);
            }
            '(' => {
                chars.next();
                loop {
                    while chars.next_if(|c| c.is_whitespace()).is_some() {}
                    chars.next_if_eq(&'-');
                    chars.next_if(char::is_ascii_digit)?;
                    while chars.next_if(char::is_ascii_digit).is_some() {}
                    while chars.next_if(|c| c.is_whitespace()).is_some() {}
                    match chars.next() {
                        Some(',') => {}
                        Some(')') => break,
                        _ => return None,
                    }
                }
                parts.push(TypePart::Modifiers);
            }
            '[' => {
                chars.next();
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                while chars.next_if(char::is_ascii_digit).is_some() {}
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                if chars.next() != Some(']') {
                    return None;
                }
                parts.push(TypePart::Brackets);
            }
            _ => return None,
        }
    }
    Some(parts)
}

/// The type names PostgreSQL's grammar spells with more than one word,
/// and after how many words each may take modifiers (`None`: never;
/// `usize::MAX`: at the end).
const MULTI_WORD_TYPES: &[(&str, Option<usize>)] = &[
    ("double precision", None),
    ("character varying", Some(usize::MAX)),
    ("char varying", Some(usize::MAX)),
    ("bit varying", Some(usize::MAX)),
    ("national character", Some(usize::MAX)),
    ("national char", Some(usize::MAX)),
    ("national character varying", Some(usize::MAX)),
    ("national char varying", Some(usize::MAX)),
    ("nchar varying", Some(usize::MAX)),
    ("timestamp with time zone", Some(1)),
    ("timestamp without time zone", Some(1)),
    ("time with time zone", Some(1)),
    ("time without time zone", Some(1)),
];

/// The fields an `interval` may be restricted to.
const INTERVAL_FIELDS: &[&str] = &[
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "year to month",
    "day to hour",
    "day to minute",
    "day to second",
    "hour to minute",
    "hour to second",
    "minute to second",
];

/// Whether `text` is a type name: a name (qualified with `.`, or
/// double-quoted) or one of the type names PostgreSQL spells with several
/// words (`double precision`, `character varying`, `timestamp with time
/// zone`, `interval day to second`, ...), with integer modifiers where the
/// type takes them, then array brackets. Nothing else: no constraint
/// clauses (`INT UNIQUE`, `INT REFERENCES t`), `COLLATE`, `SETOF`, ...
pub(crate) fn is_type_name(text: &str) -> bool {
    let Some(mut parts) = type_parts(text) else {
        return false;
    };
    while parts.last() == Some(&TypePart::Brackets) {
        parts.pop();
    }
    if parts.is_empty() {
        return false;
    }
    // A name, qualified or quoted, with optional modifiers.
    let mut name_end = parts.len();
    if parts.last() == Some(&TypePart::Modifiers) {
        name_end -= 1;
    }
    let name = &parts[..name_end];
    let is_name_part = |p: &TypePart| matches!(p, TypePart::Word(_) | TypePart::Quoted);
    if !name.is_empty()
        && name.len() % 2 == 1
        && name.iter().enumerate().all(|(i, p)| {
            if i % 2 == 0 {
                is_name_part(p)
            } else {
                *p == TypePart::Dot
            }
        })
    {
        return true;
    }
    // A multi-word name: unquoted words, modifiers at most once.
    let mut words = Vec::new();
    let mut modifiers_after = None;
    for part in &parts {
        match part {
            TypePart::Word(w) => words.push(w.as_str()),
            TypePart::Modifiers if modifiers_after.is_none() && !words.is_empty() => {
                modifiers_after = Some(words.len());
            }
            _ => return false,
        }
    }
    let key = words.join(" ");
    let modifiers_ok = |allowed: Option<usize>| match (modifiers_after, allowed) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(at), Some(usize::MAX)) => at == words.len(),
        (Some(at), Some(allowed)) => at == allowed,
    };
    if let Some((_, allowed)) = MULTI_WORD_TYPES.iter().find(|(k, _)| *k == key) {
        return modifiers_ok(*allowed);
    }
    if let Some(fields) = key.strip_prefix("interval ") {
        return INTERVAL_FIELDS.contains(&fields)
            && modifiers_ok(Some(usize::MAX))
            && (modifiers_after.is_none() || fields.ends_with("second"));
    }
    false
}

/// Why `text` is not one self-contained SQL expression, if it is not: it
/// must be non-empty, with balanced parentheses that never close what the
/// statement around it opened, and no `;`, comment, unterminated quote or
/// top-level `,` (which would add to the statement it is written into).
pub(crate) fn expression_problem(text: &str) -> Option<&'static str> {
    use db_core::lex::{Token, Tokens};
    if text.trim().is_empty() {
        return Some("it is empty");
    }
    if text.contains('\0') {
        return Some("it holds a NUL character");
    }
    let mut tokens = Tokens::new(text);
    let mut depth = 0usize;
    let mut brackets = 0usize;
    let mut end = 0;
    while let Some(token) = tokens.next() {
        // Only blanks may separate tokens: anything else the lexer skipped
        // is a comment, which could hide the rest of the statement.
        if !text[end..tokens.token_start()].trim().is_empty() {
            return Some("it holds a comment");
        }
        match token {
            Token::Invalid => return Some("it holds an unterminated quote or comment"),
            Token::Semicolon => return Some("it holds a ';'"),
            Token::Open => depth += 1,
            Token::Close if depth == 0 => {
                return Some("a ')' closes more than the expression opens");
            }
            Token::Close => depth -= 1,
            Token::Other => match tokens.token_text() {
                "[" => brackets += 1,
                "]" if brackets == 0 => {
                    return Some("a ']' closes more than the expression opens");
                }
                "]" => brackets -= 1,
                "," if depth == 0 && brackets == 0 => {
                    return Some("it holds a ',' outside parentheses");
                }
                _ => {}
            },
            _ => {}
        }
        end = tokens.offset();
    }
    if !text[end..].trim().is_empty() {
        return Some("it holds a comment");
    }
    if depth > 0 || brackets > 0 {
        return Some("a '(' or '[' is not closed");
    }
    None
}

fn check_expression(errors: &mut Vec<ValidationError>, table: &str, what: String, text: &str) {
    if let Some(reason) = expression_problem(text) {
        errors.push(ValidationError::InvalidExpression {
            table: table.to_owned(),
            what,
            text: text.to_owned(),
            reason,
        });
    }
}

/// The schema schema-sync keeps its ledger and cache in.
pub(crate) const LEDGER_SCHEMA: &str = "schema_sync";

/// The prefix of the scratch schemas a canonicalization creates (and rolls
/// back).
pub(crate) const SCRATCH_PREFIX: &str = "schema_sync_canon_";

/// Why schema-sync may not manage schema `name`, if it may not.
pub(crate) fn schema_problem(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        Some("the schema name is empty".to_owned())
    } else if name.contains('\0') {
        Some("a schema name cannot hold a NUL character".to_owned())
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Some(format!(
            "the schema name is {} bytes long; PostgreSQL keeps at most {MAX_IDENTIFIER_BYTES}",
            name.len()
        ))
    } else if lower == "pg_catalog" || lower == "information_schema" {
        Some("this is PostgreSQL's own catalog, not schema-sync's business".to_owned())
    } else if lower.starts_with("pg_") {
        Some(
            "schemas starting with pg_ are PostgreSQL's own, not schema-sync's business".to_owned(),
        )
    } else if lower == LEDGER_SCHEMA || lower.starts_with(SCRATCH_PREFIX) {
        Some("this is schema-sync's own bookkeeping schema".to_owned())
    } else if lower == "changefeed" {
        Some("this schema belongs to the changefeed component".to_owned())
    } else {
        None
    }
}

/// Checks a spec; returns every problem at once.
pub fn validate(schema: &Schema) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    if let Some(reason) = schema_problem(&schema.schema) {
        errors.push(ValidationError::InvalidSchema {
            schema: schema.schema.clone(),
            reason,
        });
    }
    let mut tables = BTreeSet::new();
    // Relation names: tables and indexes share pg_class's namespace.
    let mut relations: BTreeMap<&str, String> = BTreeMap::new();
    for table in &schema.tables {
        relations
            .entry(&table.name)
            .or_insert_with(|| format!("table {:?}", table.name));
    }
    for (position, table) in schema.tables.iter().enumerate() {
        let t = table.name.as_str();
        if t.is_empty() {
            errors.push(ValidationError::EmptyTableName { position });
        }
        if !tables.insert(t) {
            errors.push(ValidationError::DuplicateTable {
                table: t.to_owned(),
            });
        }
        check_len(&mut errors, t, None, t);
        let mut columns = BTreeSet::new();
        for (position, column) in table.columns.iter().enumerate() {
            let c = column.name.as_str();
            if c.is_empty() {
                errors.push(ValidationError::EmptyColumnName {
                    table: t.to_owned(),
                    position,
                });
                continue;
            }
            if !columns.insert(c) {
                errors.push(ValidationError::DuplicateColumn {
                    table: t.to_owned(),
                    column: c.to_owned(),
                });
            }
            if column.type_.trim().is_empty() {
                errors.push(ValidationError::EmptyType {
                    table: t.to_owned(),
                    column: c.to_owned(),
                });
            } else if !is_type_name(&column.type_) {
                errors.push(ValidationError::InvalidType {
                    table: t.to_owned(),
                    column: c.to_owned(),
                    type_: column.type_.clone(),
                });
            }
            for (field, text) in [
                ("default", &column.default),
                ("check", &column.check),
                ("null_backfill", &column.null_backfill),
            ] {
                if let Some(text) = text {
                    check_expression(&mut errors, t, format!("column {c:?} {field}"), text);
                }
            }
            check_len(&mut errors, t, Some(format!("column {c:?}")), c);
        }
        let mut pk = BTreeSet::new();
        for column in &table.primary_key {
            if !columns.contains(column.as_str()) {
                errors.push(ValidationError::UnknownPrimaryKeyColumn {
                    table: t.to_owned(),
                    column: column.clone(),
                });
            }
            if !pk.insert(column.as_str()) {
                errors.push(ValidationError::DuplicatePrimaryKeyColumn {
                    table: t.to_owned(),
                    column: column.clone(),
                });
            }
        }
        for (position, index) in table.indexes.iter().enumerate() {
            let i = index.name.as_str();
            if i.is_empty() {
                errors.push(ValidationError::EmptyIndexName {
                    table: t.to_owned(),
                    position,
                });
                continue;
            }
            check_len(&mut errors, t, Some(format!("index {i:?}")), i);
            if let Some(other) = relations.get(i) {
                errors.push(ValidationError::DuplicateIndex {
                    table: t.to_owned(),
                    index: i.to_owned(),
                    other: other.clone(),
                });
            } else {
                relations.insert(i, format!("index {i:?} of table {t:?}"));
            }
            if index.keys.iter().all(|k| k.trim().is_empty()) {
                errors.push(ValidationError::EmptyIndexKeys {
                    table: t.to_owned(),
                    index: i.to_owned(),
                });
            } else {
                for key in &index.keys {
                    check_expression(&mut errors, t, format!("index {i:?} key"), key);
                }
            }
            if let Some(predicate) = &index.where_ {
                check_expression(&mut errors, t, format!("index {i:?} where"), predicate);
            }
            let mut method = index.method.chars();
            if !(method.next().is_some_and(is_word_start) && method.all(is_word_char)) {
                errors.push(ValidationError::InvalidMethod {
                    table: t.to_owned(),
                    index: i.to_owned(),
                    method: index.method.clone(),
                });
            }
            for column in &index.include {
                check_len(
                    &mut errors,
                    t,
                    Some(format!("index {i:?} INCLUDE column")),
                    column,
                );
                if !columns.contains(column.as_str()) {
                    errors.push(ValidationError::UnknownIncludeColumn {
                        table: t.to_owned(),
                        index: i.to_owned(),
                        column: column.clone(),
                    });
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::{Column, Index, Table};

    fn errors(schema: &Schema) -> Vec<ValidationError> {
        validate(schema).err().map(|e| e.0).unwrap_or_default()
    }

    fn t() -> Table {
        Table::new("t")
            .column(Column::new("id", "int"))
            .primary_key(["id"])
    }

    #[test]
    fn a_valid_spec_passes() {
        assert_eq!(errors(&Schema::new().table(t())), vec![]);
    }

    #[test]
    fn every_error_is_reported_with_its_names() {
        let long = "x".repeat(64);
        let cases: Vec<(Schema, ValidationError)> = vec![
            (
                Schema::new().table(Table::new("")),
                ValidationError::EmptyTableName { position: 0 },
            ),
            (
                Schema::new().table(t()).table(t()),
                ValidationError::DuplicateTable { table: "t".into() },
            ),
            (
                Schema::new().table(t().column(Column::new("id", "text"))),
                ValidationError::DuplicateColumn {
                    table: "t".into(),
                    column: "id".into(),
                },
            ),
            (
                Schema::new().table(t().column(Column::new("", "text"))),
                ValidationError::EmptyColumnName {
                    table: "t".into(),
                    position: 1,
                },
            ),
            (
                Schema::new().table(t().column(Column::new("c", " "))),
                ValidationError::EmptyType {
                    table: "t".into(),
                    column: "c".into(),
                },
            ),
            (
                Schema::new().table(t().primary_key(["nope"])),
                ValidationError::UnknownPrimaryKeyColumn {
                    table: "t".into(),
                    column: "nope".into(),
                },
            ),
            (
                Schema::new().table(t().primary_key(["id", "id"])),
                ValidationError::DuplicatePrimaryKeyColumn {
                    table: "t".into(),
                    column: "id".into(),
                },
            ),
            (
                Schema::new().table(t().index(Index::new("i", ["id"]).include(["nope"]))),
                ValidationError::UnknownIncludeColumn {
                    table: "t".into(),
                    index: "i".into(),
                    column: "nope".into(),
                },
            ),
            (
                Schema::new().table(
                    t().index(Index::new("i", ["id"]))
                        .index(Index::new("i", ["id"])),
                ),
                ValidationError::DuplicateIndex {
                    table: "t".into(),
                    index: "i".into(),
                    other: "index \"i\" of table \"t\"".into(),
                },
            ),
            (
                Schema::new().table(t().index(Index::new("t", ["id"]))),
                ValidationError::DuplicateIndex {
                    table: "t".into(),
                    index: "t".into(),
                    other: "table \"t\"".into(),
                },
            ),
            (
                Schema::new().table(t().index(Index::new("", ["id"]))),
                ValidationError::EmptyIndexName {
                    table: "t".into(),
                    position: 0,
                },
            ),
            (
                Schema::new().table(t().index(Index::new("i", Vec::<String>::new()))),
                ValidationError::EmptyIndexKeys {
                    table: "t".into(),
                    index: "i".into(),
                },
            ),
            (
                Schema::new().table(Table::new(long.clone())),
                ValidationError::NameTooLong {
                    table: long.clone(),
                    what: None,
                    name: long.clone(),
                    bytes: 64,
                },
            ),
            (
                Schema::new().table(t().column(Column::new(long.clone(), "int"))),
                ValidationError::NameTooLong {
                    table: "t".into(),
                    what: Some(format!("column {long:?}")),
                    name: long.clone(),
                    bytes: 64,
                },
            ),
            (
                // 22 three-byte characters: 66 bytes, 22 characters.
                Schema::new().table(t().index(Index::new("é".repeat(33), ["id"]))),
                ValidationError::NameTooLong {
                    table: "t".into(),
                    what: Some(format!("index {:?}", "é".repeat(33))),
                    name: "é".repeat(33),
                    bytes: 66,
                },
            ),
        ];
        for (schema, expected) in cases {
            let found = errors(&schema);
            assert!(
                found.contains(&expected),
                "expected {expected:?} in {found:?}"
            );
            let text = ValidationErrors(found).to_string();
            assert!(text.contains("is invalid"), "{text}");
        }
    }

    #[test]
    fn schemas_that_are_not_schema_syncs_business_are_refused() {
        for name in [
            "",
            "pg_catalog",
            "Information_Schema",
            "pg_toast",
            "PG_x",
            "schema_sync",
            "schema_sync_canon_1_2",
            "changefeed",
            "a\0b",
        ] {
            assert!(schema_problem(name).is_some(), "{name:?}");
            let errors = errors(&Schema::new().in_schema(name).table(t()));
            assert!(
                matches!(&errors[..], [ValidationError::InvalidSchema { schema, .. }] if schema == name),
                "{name:?}: {errors:?}"
            );
        }
        assert!(schema_problem(&"s".repeat(64)).is_some());
        for name in [
            "public",
            "app",
            "a\"b",
            "a.b",
            "x; y",
            "é",
            "catalog_pg_",
            &"é".repeat(31),
        ] {
            assert_eq!(schema_problem(name), None, "{name:?}");
        }
    }

    #[test]
    fn type_names_are_words_modifiers_and_brackets() {
        for ok in [
            "int",
            "BIGINT",
            "double precision",
            "timestamp(3) with time zone",
            "character varying(32)",
            "NUMERIC(20,10)",
            "numeric(5, -2)",
            "TEXT[]",
            "int[3][]",
            "public.my_enum",
            "\"My Type\"",
            "\"a\"\"b\".\"c\"",
            "interval day to second(3)",
            "bit varying(5)",
            "SERIAL",
            "été",
            "national character varying(5)",
            "interval(3)",
            "interval year to month",
            "timestamp without time zone[]",
            "double precision[][]",
            "pg_catalog.int4",
        ] {
            assert!(is_type_name(ok), "{ok}");
        }
        for bad in [
            "",
            "int); DROP TABLE victim; CREATE TABLE pwned(x int",
            "int, extra int",
            "int -- x",
            "int /* x */",
            "varchar(x)",
            "varchar(3",
            "int[",
            "'int'",
            "(3)",
            "a..b",
            "\"\"",
            "int;",
            "public.",
            "INT REFERENCES victim ON DELETE CASCADE",
            "INT UNIQUE",
            "INT PRIMARY KEY",
            "INT NOT NULL",
            "INT GENERATED ALWAYS AS IDENTITY",
            "TEXT COLLATE \"C\"",
            "SETOF INT",
            "double precision(3)",
            "timestamp with time zone(3)",
            "interval day(3)",
            "int[] int",
            ".int",
            "a.b.",
        ] {
            assert!(!is_type_name(bad), "{bad}");
        }
    }

    #[test]
    fn expressions_stay_in_their_place() {
        for ok in [
            "0",
            "now()",
            "'a,b;c--d'",
            "$$x;$$",
            "lower(x) text_pattern_ops",
            "created DESC NULLS LAST",
            "(a + b) * 2",
            "coalesce(a, b)",
            "ARRAY[1, 2]",
            "E'it''s \\' ok'",
            "x->>'k' = 'v'",
            "\"a,b\" > 0",
        ] {
            assert_eq!(expression_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "0, extra int",
            "0) --",
            "0 /* x */",
            "0; DROP TABLE victim",
            "c > 0), CONSTRAINT x CHECK (true",
            "x); DROP TABLE victim; --",
            "(0",
            "'open",
            "ARRAY[1], 2",
        ] {
            assert!(expression_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn messages_name_table_and_column() {
        let e = ValidationError::UnknownIncludeColumn {
            table: "t".into(),
            index: "i".into(),
            column: "c".into(),
        };
        assert_eq!(
            e.to_string(),
            "table \"t\", index \"i\": INCLUDE column \"c\" does not exist"
        );
        assert!(validate(&Schema::new().table(t())).is_ok());
    }
}
