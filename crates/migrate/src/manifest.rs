//! The manifest at the head of an export: what the source held, so that an
//! import alone can verify what arrived.

use serde::{Deserialize, Serialize};

/// The comment prefix of the manifest line.
pub(crate) const MANIFEST_PREFIX: &str = "-- cocalc-db-manifest: ";

/// The manifest format written by this version.
pub const MANIFEST_FORMAT: u32 = 1;

/// What the source database held when it was exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The source's `server_version` (for example `17.5`).
    pub source_version: String,
    /// Every table, with its row count and content checksum.
    pub tables: Vec<TableSummary>,
    /// Every sequence, with its state.
    pub sequences: Vec<SequenceState>,
}

impl Manifest {
    /// The rows of all tables together.
    pub fn total_rows(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| u64::try_from(t.rows).unwrap_or(0))
            .sum()
    }

    /// The manifest as its comment line, ending in a newline.
    pub(crate) fn to_line(&self) -> Result<String, serde_json::Error> {
        Ok(format!(
            "{MANIFEST_PREFIX}{}\n",
            serde_json::to_string(self)?
        ))
    }
}

/// A table's row count and order-independent content checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    /// The schema.
    pub schema: String,
    /// The table.
    pub name: String,
    /// The number of rows.
    pub rows: i64,
    /// The sum of a 64-bit hash of every row's text form, as decimal text.
    pub checksum: String,
}

impl TableSummary {
    /// `schema.name`, quoted where needed.
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// A sequence's `last_value` and `is_called`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceState {
    /// The schema.
    pub schema: String,
    /// The sequence.
    pub name: String,
    /// `last_value`.
    pub last_value: i64,
    /// `is_called`: whether `last_value` was already handed out.
    pub is_called: bool,
}

impl SequenceState {
    /// `schema.name`, quoted where needed.
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// `schema.name` with both parts quoted.
pub(crate) fn qualified(schema: &str, name: &str) -> String {
    format!(
        "{}.{}",
        db_core::quote_ident(schema),
        db_core::quote_ident(name)
    )
}
