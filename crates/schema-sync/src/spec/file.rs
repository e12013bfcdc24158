//! The file format of a spec, read strictly: every key must be one the
//! format knows, so a typo (`table` for `tables`, `typ` for `type`) is an
//! error naming the key and its line, never a spec that silently lacks
//! something (which a destructive sync would then drop). `tables` is
//! required: an empty spec is `"tables": []`, written on purpose. The
//! optional top-level `schema` names the schema the tables live in (default
//! `public`).
//!
//! Besides the spec's own fields, the annotations the control-plane fixture
//! carries are known and ignored: `format`, `source`, `counts` and `skipped`
//! at the top; a table's `durability`, `default_primary_key_value` and
//! `extra_objects`; a column's `nullability_declared`; an index's `kind`,
//! `comment`, `source_query` and `untruncated_name`.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

use super::{Column, Index, Schema, Table};

/// The access method of an index that names none.
pub(crate) const DEFAULT_METHOD: &str = "btree";

fn default_schema() -> String {
    super::DEFAULT_SCHEMA.to_owned()
}

fn btree() -> String {
    DEFAULT_METHOD.to_owned()
}

/// Reads an optional SQL text that may be written as a string, number or
/// boolean.
fn sql_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptionalSqlText)
}

/// The most significant digits a double keeps for any decimal written
/// with them: a number with more may not be the one written.
const EXACT_DIGITS: usize = 15;

/// The SQL text of a number given where an expression goes: integers
/// exactly; a float only when finite and written with at most 15
/// significant digits (otherwise the double it became may differ from what
/// was written, as 123456789012345678901234567890 does).
fn float_text(f: f64) -> Result<String, String> {
    if !f.is_finite() {
        return Err(format!(
            "{f} is not a finite number; write a default such as 'NaN'::float8 as a string"
        ));
    }
    let scientific = format!("{f:e}");
    let mantissa = scientific.split('e').next().unwrap_or_default();
    let digits = mantissa
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    let significant = digits.trim_start_matches('0').len();
    if significant > EXACT_DIGITS {
        return Err(format!(
            "the number {f} cannot be held exactly (more than {EXACT_DIGITS} significant \
             digits); write it as a string to keep it exactly"
        ));
    }
    Ok(f.to_string())
}

struct OptionalSqlText;

impl<'de> serde::de::Visitor<'de> for OptionalSqlText {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an SQL expression as a string, a number or a boolean")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(SqlText).map(Some)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        SqlText.visit_str(v).map(Some)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        SqlText.visit_bool(v).map(Some)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        SqlText.visit_f64(v).map(Some)
    }
}

struct SqlText;

impl<'de> serde::de::Visitor<'de> for SqlText {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an SQL expression as a string, a number or a boolean")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(v)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(if v { "true" } else { "false" }.to_owned())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        float_text(v).map_err(E::custom)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SchemaFile {
    #[serde(default = "default_schema")]
    schema: String,
    tables: Vec<Table>,
    #[serde(default, rename = "format")]
    _format: Option<IgnoredAny>,
    #[serde(default, rename = "source")]
    _source: Option<IgnoredAny>,
    #[serde(default, rename = "counts")]
    _counts: Option<IgnoredAny>,
    #[serde(default, rename = "skipped")]
    _skipped: Option<IgnoredAny>,
}

impl From<SchemaFile> for Schema {
    fn from(f: SchemaFile) -> Schema {
        Schema {
            schema: f.schema,
            tables: f.tables,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TableFile {
    name: String,
    #[serde(default)]
    columns: Vec<Column>,
    #[serde(default)]
    primary_key: Vec<String>,
    #[serde(default)]
    indexes: Vec<Index>,
    #[serde(default, rename = "durability")]
    _durability: Option<IgnoredAny>,
    #[serde(default, rename = "default_primary_key_value")]
    _default_primary_key_value: Option<IgnoredAny>,
    #[serde(default, rename = "extra_objects")]
    _extra_objects: Option<IgnoredAny>,
}

impl From<TableFile> for Table {
    fn from(f: TableFile) -> Table {
        Table {
            name: f.name,
            columns: f.columns,
            primary_key: f.primary_key,
            indexes: f.indexes,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ColumnFile {
    name: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    not_null: bool,
    #[serde(default, deserialize_with = "sql_text")]
    default: Option<String>,
    #[serde(default, deserialize_with = "sql_text")]
    check: Option<String>,
    #[serde(default)]
    unique: bool,
    #[serde(default, deserialize_with = "sql_text")]
    null_backfill: Option<String>,
    #[serde(default, rename = "nullability_declared")]
    _nullability_declared: Option<IgnoredAny>,
}

impl From<ColumnFile> for Column {
    fn from(f: ColumnFile) -> Column {
        Column {
            name: f.name,
            type_: f.type_,
            not_null: f.not_null,
            default: f.default,
            check: f.check,
            unique: f.unique,
            null_backfill: f.null_backfill,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IndexFile {
    name: String,
    #[serde(default)]
    unique: bool,
    #[serde(default = "btree")]
    method: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(rename = "where", default, deserialize_with = "sql_text")]
    where_: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default, rename = "kind")]
    _kind: Option<IgnoredAny>,
    #[serde(default, rename = "comment")]
    _comment: Option<IgnoredAny>,
    #[serde(default, rename = "source_query")]
    _source_query: Option<IgnoredAny>,
    #[serde(default, rename = "untruncated_name")]
    _untruncated_name: Option<IgnoredAny>,
}

impl From<IndexFile> for Index {
    fn from(f: IndexFile) -> Index {
        Index {
            name: f.name,
            unique: f.unique,
            method: f.method,
            keys: f.keys,
            where_: f.where_,
            include: f.include,
            owned: false,
            invalid: false,
        }
    }
}
