//! The catalog side of a subscription: the columns it names checked
//! against the table, its filter's literals read as the columns' types by
//! the server (and normalized to the form of the row images), and the same
//! filter as SQL for snapshots.
//!
//! Type names and collations in generated SQL come only from the catalog
//! (`format_type`, `pg_collation`), identifiers go through
//! [`db_core::quote_ident`], and every value is a parameter.

use db_core::{Executor, Value, quote_ident};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::filter::Filter;

/// One column of a table, as the catalog describes it.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// `format_type(atttypid, atttypmod)`, for messages.
    pub(crate) ty: String,
    /// `format_type(atttypid, -1)`: the type without its modifier, which
    /// values are cast to as SQL reads a literal compared with the column
    /// (`varchar(5) = 'abcdef'` is false, not a match of the cut value;
    /// `numeric(10,2) = '1.234'` compares 1.234).
    pub(crate) cast: String,
    /// `pg_type.typcategory`.
    category: String,
    /// The column's collation, qualified and quoted, when it has one.
    collation: Option<String>,
}

impl Column {
    fn integral(&self) -> bool {
        matches!(self.cast.as_str(), "smallint" | "integer" | "bigint")
    }

    /// Why live events cannot compare values of this column as SQL does,
    /// if they cannot: they compare the row's JSON image, which holds
    /// `numeric` as a binary float (and NaN as a string), floats' Infinity
    /// and NaN as strings, `char(n)` with its padding, `money` and `timetz`
    /// as text that orders otherwise.
    fn incomparable(&self, ordered: bool) -> Option<&'static str> {
        let ty = self.cast.as_str();
        let exact = self.integral()
            || matches!(
                ty,
                "text"
                    | "character varying"
                    | "name"
                    | "boolean"
                    | "uuid"
                    | "date"
                    | "timestamp without time zone"
                    | "timestamp with time zone"
            );
        match ty {
            _ if exact => None,
            "numeric" | "real" | "double precision" | "money" => Some(
                "live events compare this type on the row's JSON image, where it loses \
                 precision or NaN and Infinity; filter on an integer, text, boolean, uuid, \
                 date or timestamp column",
            ),
            "bpchar" | "character" => Some(
                "live events would compare char(n) values with their padding; use text or \
                 varchar",
            ),
            // Enums compare equal as SQL's; their order is not their text's.
            _ if self.category == "E" && !ordered => None,
            _ => Some(
                "live events cannot compare values of this type as SQL does; filter on an \
                 integer, text, boolean, uuid, date or timestamp column",
            ),
        }
    }

    /// Why `IS NULL` cannot mean SQL's on this column, if it cannot: a
    /// `json`/`jsonb` JSON null and a composite with all fields NULL look
    /// like SQL NULL in the row's image.
    fn null_ambiguous(&self) -> bool {
        matches!(self.cast.as_str(), "json" | "jsonb") || self.category == "C"
    }

    /// `e COLLATE <the column's collation>`, so that two expressions of
    /// the column's type compare as the column does.
    pub(crate) fn collated(&self, e: &str) -> String {
        match &self.collation {
            Some(c) => format!("{e} COLLATE {c}"),
            None => e.to_owned(),
        }
    }
}

/// The columns of a table (not dropped, in table order).
#[derive(Debug, Clone)]
pub(crate) struct Columns {
    pub(crate) list: Vec<Column>,
}

const COLUMNS_SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
        format_type(a.atttypid, -1), t.typcategory::text,
        (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.collname)
         FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
         WHERE c.oid = a.attcollation)
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum";

impl Columns {
    /// Reads the columns of `relation` (a quoted, qualified name).
    pub(crate) async fn load<E: Executor>(ex: &mut E, relation: &str) -> Result<Columns> {
        let rows = ex.query(COLUMNS_SQL, &[Value::from(relation)]).await?;
        let list = rows
            .iter()
            .map(|r| {
                Ok(Column {
                    name: r.try_get(0)?,
                    ty: r.try_get(1)?,
                    cast: r.try_get(2)?,
                    category: r.try_get(3)?,
                    collation: r.try_get(4)?,
                })
            })
            .collect::<db_core::Result<Vec<_>>>()?;
        Ok(Columns { list })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Column> {
        self.list.iter().find(|c| c.name == name)
    }
}

/// A subscription's filter and columns, checked against the table.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// The filter with each literal replaced by the JSON the server gives
    /// for it as a value of the column's type (what the row images hold).
    pub(crate) filter: Option<Filter>,
    /// The filter as a SQL condition on the table aliased `t`, `TRUE`
    /// without one; `$N` from `params_from` on are `params`.
    pub(crate) condition: String,
    /// The literals of the condition, as text (each cast by the server).
    pub(crate) params: Vec<String>,
    /// The columns a snapshot selects, in table order: all, or those asked
    /// for and the key.
    pub(crate) selected: Vec<String>,
    /// The key columns with their catalog types.
    pub(crate) key: Vec<Column>,
}

/// The first parameter number of [`Checked::condition`]: snapshots pass the
/// last key as `$1` and the batch size as `$2`.
pub(crate) const PARAMS_FROM: usize = 3;

/// How a literal is compared with its column.
fn literal_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The operator a filter term compares with.
fn op_of(f: &Filter) -> &'static str {
    match f {
        Filter::Lt(..) => "<",
        Filter::Le(..) => "<=",
        Filter::Gt(..) => ">",
        Filter::Ge(..) => ">=",
        _ => "=",
    }
}

/// Checks `columns` and `filter` against the table's catalog `cols`.
pub(crate) async fn check<E: Executor>(
    ex: &mut E,
    table: &str,
    cols: &Columns,
    key_columns: &[String],
    columns: Option<&[String]>,
    filter: Option<&Filter>,
) -> Result<Checked> {
    let column = |name: &str| {
        cols.get(name).ok_or_else(|| Error::NoSuchColumn {
            table: table.to_owned(),
            column: name.to_owned(),
        })
    };
    let key = key_columns
        .iter()
        .map(|k| column(k).cloned())
        .collect::<Result<Vec<_>>>()?;
    if let Some(wanted) = columns {
        for c in wanted {
            column(c)?;
        }
    }
    let selected = cols
        .list
        .iter()
        .filter(|c| columns.is_none_or(|w| w.contains(&c.name)) || key_columns.contains(&c.name))
        .map(|c| c.name.clone())
        .collect();
    let mut checked = Checked {
        filter: None,
        condition: "TRUE".into(),
        params: Vec::new(),
        selected,
        key,
    };
    let Some(filter) = filter else {
        return Ok(checked);
    };
    let terms: Vec<&Filter> = match filter {
        Filter::And(fs) => fs.iter().collect(),
        f => vec![f],
    };
    let mut sql = Vec::new();
    let mut normalized = Vec::new();
    for term in terms {
        let (name, values): (&str, Vec<&Json>) = match term {
            Filter::Eq(c, v)
            | Filter::Lt(c, v)
            | Filter::Le(c, v)
            | Filter::Gt(c, v)
            | Filter::Ge(c, v) => (c, vec![v]),
            Filter::In(c, vs) => (c, vs.iter().collect()),
            Filter::IsNull(c) | Filter::IsNotNull(c) => {
                let col = column(c)?;
                if col.null_ambiguous() {
                    return Err(type_error(
                        col,
                        &term.to_string(),
                        "live events cannot tell SQL NULL from a JSON null or a row of NULLs \
                         in this column",
                        None,
                    ));
                }
                let null = if matches!(term, Filter::IsNull(_)) {
                    "IS NULL"
                } else {
                    "IS NOT NULL"
                };
                sql.push(format!("t.{} {null}", quote_ident(&col.name)));
                normalized.push(term.clone());
                continue;
            }
            Filter::And(_) => {
                return Err(Error::InvalidFilter(format!(
                    "a nested AND is not supported: {term}"
                )));
            }
        };
        let col = column(name)?;
        let op = op_of(term);
        if let Some(reason) = col.incomparable(op != "=") {
            return Err(type_error(col, &term.to_string(), reason, None));
        }
        if op != "=" && !matches!(col.category.as_str(), "N" | "S" | "B" | "D") {
            return Err(type_error(
                col,
                &term.to_string(),
                "ordering comparisons (<, <=, >, >=) are supported on numbers, strings, \
                 booleans, dates and times only",
                None,
            ));
        }
        // In a list mixing numbers and strings on an integer column, SQL
        // reads the strings as numeric, the list's common type.
        let numeric_list = matches!(term, Filter::In(..))
            && col.integral()
            && values.iter().any(|v| v.is_number());
        let mut exprs = Vec::new();
        let mut images = Vec::new();
        for v in values {
            let cast = match v {
                Json::Null => {
                    images.push(Json::Null);
                    exprs.push("NULL".to_owned());
                    continue;
                }
                Json::Number(_) if col.category != "N" => {
                    return Err(type_error(
                        col,
                        &show(v),
                        "a number is not a value of this type",
                        None,
                    ));
                }
                Json::Bool(_) if col.category != "B" => {
                    return Err(type_error(
                        col,
                        &show(v),
                        "a boolean is not a value of this type",
                        None,
                    ));
                }
                Json::Number(_) => "numeric",
                Json::String(_) if numeric_list => "numeric",
                Json::Array(_) | Json::Object(_) => {
                    return Err(type_error(col, &show(v), "the value is not a scalar", None));
                }
                _ => col.cast.as_str(),
            };
            let text = literal_text(v);
            let lhs = if col.category == "S" {
                format!("NULL::{} COLLATE \"C\"", col.cast)
            } else {
                format!("NULL::{}", col.cast)
            };
            // The server reads the literal as the type and says whether
            // the comparison exists, as it would for the SQL filter.
            let probe = format!(
                "SELECT to_json(x), ({lhs} {op} x) FROM (SELECT CAST($1::text AS {cast}) AS x) s"
            );
            let image = match ex.query_one(&probe, &[Value::from(text.as_str())]).await {
                Ok(row) => row.try_get::<Option<Json>, _>(0)?.unwrap_or(Json::Null),
                Err(e) => match e.as_db_error() {
                    Some(db) => {
                        return Err(type_error(
                            col,
                            &show(v),
                            &db.message,
                            Some(db.code.code().to_owned()),
                        ));
                    }
                    None => return Err(e.into()),
                },
            };
            images.push(image);
            checked.params.push(text);
            let n = PARAMS_FROM + checked.params.len() - 1;
            exprs.push(format!("CAST(${n}::text AS {cast})"));
        }
        let lhs = if col.category == "S" {
            format!("t.{} COLLATE \"C\"", quote_ident(&col.name))
        } else {
            format!("t.{}", quote_ident(&col.name))
        };
        let c = col.name.clone();
        if matches!(term, Filter::In(..)) {
            sql.push(format!("{lhs} IN ({})", exprs.join(", ")));
            normalized.push(Filter::In(c, images));
            continue;
        }
        let mut images = images.into_iter();
        let mut one = || images.next().unwrap_or(Json::Null);
        sql.push(format!(
            "{lhs} {op} {}",
            exprs.first().map_or("NULL", String::as_str)
        ));
        normalized.push(match term {
            Filter::Lt(..) => Filter::Lt(c, one()),
            Filter::Le(..) => Filter::Le(c, one()),
            Filter::Gt(..) => Filter::Gt(c, one()),
            Filter::Ge(..) => Filter::Ge(c, one()),
            _ => Filter::Eq(c, one()),
        });
    }
    if !sql.is_empty() {
        checked.condition = sql.join(" AND ");
    }
    checked.filter = Some(match filter {
        Filter::And(_) => Filter::And(normalized),
        _ => normalized.pop().unwrap_or(Filter::And(Vec::new())),
    });
    Ok(checked)
}

/// A literal as a filter writes it.
fn show(v: &Json) -> String {
    match v {
        Json::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

fn type_error(col: &Column, literal: &str, reason: &str, sqlstate: Option<String>) -> Error {
    Error::FilterType {
        column: col.name.clone(),
        column_type: col.ty.clone(),
        literal: literal.to_owned(),
        reason: reason.to_owned(),
        sqlstate,
    }
}
