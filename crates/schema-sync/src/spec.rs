//! The spec model: schemas, tables, columns and indexes, with serde (JSON,
//! TOML) and a builder API.

use serde::{Deserialize, Serialize};

mod file;

/// The schema a spec describes when it names none.
pub const DEFAULT_SCHEMA: &str = "public";

/// A set of tables in one schema (`schema`, default `public`).
///
/// A spec describes exactly one schema: a sync creates it if it is missing,
/// reads only its tables and qualifies every statement with it, so specs
/// for different schemas synced into one database never touch each other's
/// tables. Names that are not schema-sync's business are refused (see
/// [`ValidationError::InvalidSchema`](crate::ValidationError::InvalidSchema)).
///
/// Read strictly: `tables` is required (an empty spec is `"tables": []`,
/// written on purpose), and an unknown key anywhere is an error naming it
/// and its line, so a typo can never read as a spec that lacks something.
/// The annotations of the control-plane fixture are known and ignored:
/// `format`, `source`, `counts`, `skipped`; a table's `durability`,
/// `default_primary_key_value`, `extra_objects`; a column's
/// `nullability_declared`; an index's `kind`, `comment`, `source_query`,
/// `untruncated_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "file::SchemaFile")]
pub struct Schema {
    /// The schema (namespace) the tables live in: the file's optional
    /// top-level `"schema"` key, [`DEFAULT_SCHEMA`] when absent. Any
    /// characters (always quoted), at most 63 bytes.
    pub schema: String,
    /// The tables, in the order they are created.
    pub tables: Vec<Table>,
}

impl Default for Schema {
    fn default() -> Self {
        Schema {
            schema: DEFAULT_SCHEMA.to_owned(),
            tables: Vec::new(),
        }
    }
}

/// One table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "file::TableFile")]
pub struct Table {
    /// The table name (any characters; always quoted in SQL).
    pub name: String,
    /// The columns, in declaration order.
    pub columns: Vec<Column>,
    /// The primary-key columns, in key order (empty: no primary key).
    pub primary_key: Vec<String>,
    /// The indexes (primary keys and column `unique` flags are not listed here).
    pub indexes: Vec<Index>,
}

/// One column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "file::ColumnFile")]
pub struct Column {
    /// The column name.
    pub name: String,
    /// The SQL type, as SQL text (`VARCHAR(32)`, `TEXT[]`, `SERIAL`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// `NOT NULL`. Primary-key columns are NOT NULL implicitly.
    pub not_null: bool,
    /// The default, as an SQL expression (a JSON number or boolean is accepted
    /// and used as its literal text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// A CHECK expression, without `CHECK` and the outer parentheses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// A column-level UNIQUE constraint.
    pub unique: bool,
    /// The expression NULL rows are set to when an existing nullable column
    /// is made NOT NULL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_backfill: Option<String>,
}

/// One index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "file::IndexFile")]
pub struct Index {
    /// The index name (indexes share one namespace with tables).
    pub name: String,
    /// `UNIQUE`.
    pub unique: bool,
    /// The access method: `btree` (default), `gin`, `gist`, `hash`, ...
    pub method: String,
    /// Key expressions as SQL text, with ordering and operator class
    /// (`lower(name) text_pattern_ops`, `created DESC`).
    pub keys: Vec<String>,
    /// A partial-index predicate.
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// `INCLUDE` columns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Whether schema-sync owns this index (set by introspection from the
    /// ownership marker; never read from or written to a spec file).
    #[serde(skip)]
    pub owned: bool,
    /// Whether the live index is invalid (`NOT indisvalid`: a failed
    /// concurrent build); such an index never matches a spec. Set by
    /// introspection only.
    #[serde(skip)]
    pub invalid: bool,
}

/// A spec file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Invalid JSON.
    #[error("invalid JSON schema spec: {0}")]
    Json(#[from] serde_json::Error),
    /// Invalid TOML.
    #[error("invalid TOML schema spec: {0}")]
    TomlRead(#[from] toml::de::Error),
    /// The schema could not be written as TOML.
    #[error("cannot write the schema as TOML: {0}")]
    TomlWrite(#[from] toml::ser::Error),
}

impl Schema {
    /// An empty schema.
    pub fn new() -> Self {
        Schema::default()
    }

    /// Sets the schema the tables live in (builder; default `public`).
    #[must_use]
    pub fn in_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Adds a table (builder).
    #[must_use]
    pub fn table(mut self, table: Table) -> Self {
        self.tables.push(table);
        self
    }

    /// Reads the JSON interchange format, strictly (see [`Schema`]).
    pub fn from_json(text: &str) -> Result<Self, FormatError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads the TOML form (`[[tables]]`, `[[tables.columns]]`, ...),
    /// strictly (see [`Schema`]).
    pub fn from_toml(text: &str) -> Result<Self, FormatError> {
        Ok(toml::from_str(text)?)
    }

    /// Writes pretty JSON.
    pub fn to_json(&self) -> Result<String, FormatError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Writes TOML.
    pub fn to_toml(&self) -> Result<String, FormatError> {
        Ok(toml::to_string(self)?)
    }

    /// The table named `name`.
    pub fn get(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

impl Table {
    /// A table without columns.
    pub fn new(name: impl Into<String>) -> Self {
        Table {
            name: name.into(),
            ..Table::default()
        }
    }

    /// Adds a column (builder).
    #[must_use]
    pub fn column(mut self, column: Column) -> Self {
        self.columns.push(column);
        self
    }

    /// Sets the primary key (builder).
    #[must_use]
    pub fn primary_key<I: IntoIterator<Item = S>, S: Into<String>>(mut self, columns: I) -> Self {
        self.primary_key = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an index (builder).
    #[must_use]
    pub fn index(mut self, index: Index) -> Self {
        self.indexes.push(index);
        self
    }

    /// The column named `name`.
    pub fn get_column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The index named `name`.
    pub fn get_index(&self, name: &str) -> Option<&Index> {
        self.indexes.iter().find(|i| i.name == name)
    }
}

impl Column {
    /// A nullable column of SQL type `type_`.
    pub fn new(name: impl Into<String>, type_: impl Into<String>) -> Self {
        Column {
            name: name.into(),
            type_: type_.into(),
            ..<Column as Default>::default()
        }
    }

    /// Makes it NOT NULL (builder).
    #[must_use]
    pub fn not_null(mut self) -> Self {
        self.not_null = true;
        self
    }

    /// Sets the default expression (builder).
    #[must_use]
    pub fn default(mut self, expr: impl Into<String>) -> Self {
        self.default = Some(expr.into());
        self
    }

    /// Sets the CHECK expression (builder).
    #[must_use]
    pub fn check(mut self, expr: impl Into<String>) -> Self {
        self.check = Some(expr.into());
        self
    }

    /// Makes it UNIQUE (builder).
    #[must_use]
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Sets the NULL backfill expression (builder).
    #[must_use]
    pub fn null_backfill(mut self, expr: impl Into<String>) -> Self {
        self.null_backfill = Some(expr.into());
        self
    }
}

impl Index {
    /// A btree index on `keys`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(
        name: impl Into<String>,
        keys: I,
    ) -> Self {
        Index {
            name: name.into(),
            unique: false,
            method: file::DEFAULT_METHOD.to_owned(),
            keys: keys.into_iter().map(Into::into).collect(),
            where_: None,
            include: Vec::new(),
            owned: false,
            invalid: false,
        }
    }

    /// Makes it UNIQUE (builder).
    #[must_use]
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Sets the access method (builder).
    #[must_use]
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = method.into();
        self
    }

    /// Sets the partial-index predicate (builder).
    #[must_use]
    pub fn where_(mut self, predicate: impl Into<String>) -> Self {
        self.where_ = Some(predicate.into());
        self
    }

    /// Sets the INCLUDE columns (builder).
    #[must_use]
    pub fn include<I: IntoIterator<Item = S>, S: Into<String>>(mut self, columns: I) -> Self {
        self.include = columns.into_iter().map(Into::into).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_may_be_numbers_or_booleans() {
        let s = Schema::from_json(
            r#"{"format":"x","tables":[{"name":"t","durability":"hard","columns":[
                {"name":"a","type":"INTEGER","default":0,"nullability_declared":true},
                {"name":"b","type":"BOOLEAN","default":false},
                {"name":"c","type":"TEXT","default":"'x'","check":null}]}]}"#,
        )
        .unwrap_or_default();
        let t = &s.tables[0];
        assert_eq!(t.columns[0].default.as_deref(), Some("0"));
        assert_eq!(t.columns[1].default.as_deref(), Some("false"));
        assert_eq!(t.columns[2].default.as_deref(), Some("'x'"));
    }

    #[test]
    fn toml_round_trip() {
        let s = Schema::new().table(
            Table::new("t")
                .column(Column::new("id", "BIGINT").not_null())
                .column(Column::new("x", "TEXT").default("'a'"))
                .primary_key(["id"])
                .index(Index::new("t_x_idx", ["lower(x)"]).where_("x IS NOT NULL")),
        );
        let text = s.to_toml().unwrap_or_default();
        let back = Schema::from_toml(&text).unwrap_or_default();
        assert_eq!(s, back);
        let json = s.to_json().unwrap_or_default();
        assert_eq!(Schema::from_json(&json).unwrap_or_default(), s);
        let s = s.in_schema("a \"b\"");
        let back = Schema::from_toml(&s.to_toml().unwrap_or_default()).unwrap_or_default();
        assert_eq!(back, s);
    }

    #[test]
    fn the_schema_key_is_optional_and_defaults_to_public() {
        let s = Schema::from_json(r#"{"tables": []}"#).unwrap_or_default();
        assert_eq!(s.schema, DEFAULT_SCHEMA);
        assert_eq!(Schema::new().schema, DEFAULT_SCHEMA);
        let s = Schema::from_json(r#"{"schema": "app", "tables": []}"#)
            .unwrap_or_else(|_| Schema::new().in_schema("wrong"));
        assert_eq!(s.schema, "app");
        let s = Schema::from_toml("schema = \"app\"\ntables = []\n")
            .unwrap_or_else(|_| Schema::new().in_schema("wrong"));
        assert_eq!(s.schema, "app");
        assert!(Schema::from_json(r#"{"schemas": "app", "tables": []}"#).is_err());
        assert!(Schema::from_json(r#"{"schema": null, "tables": []}"#).is_err());
    }
}
