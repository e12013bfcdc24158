//! The manifest at the head of an export and the end marker at its end:
//! what the source held, and proof that the file arrived whole, so that an
//! import alone can verify what arrived.

use std::collections::BTreeSet;
use std::io::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The comment prefix of the manifest line.
pub(crate) const MANIFEST_PREFIX: &str = "-- cocalc-db-manifest: ";

/// The comment prefix of the end marker, the export's last line.
pub const END_PREFIX: &str = "-- cocalc-db-end: ";

/// The manifest format written by this version: 2 added
/// [`Manifest::schema`] and the end marker.
pub const MANIFEST_FORMAT: u32 = 2;

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
    /// The schema's objects by kind (absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaObjects>,
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

/// The names of a schema's objects outside the system schemas, by kind, as
/// read from the catalog. Every name is quoted (`"public"."items"`); the
/// count of a kind is the length of its list. Objects that belong to an
/// extension are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaObjects {
    /// Ordinary and partitioned tables: `schema.table`.
    pub tables: BTreeSet<String>,
    /// Their columns: `schema.table.column`.
    pub columns: BTreeSet<String>,
    /// Table constraints (keys, checks, foreign keys, exclusions; not the
    /// NOT NULL entries PostgreSQL 18 adds): `schema.table.constraint`.
    pub constraints: BTreeSet<String>,
    /// Indexes: `schema.index`.
    pub indexes: BTreeSet<String>,
    /// Sequences: `schema.sequence`.
    pub sequences: BTreeSet<String>,
    /// User triggers: `schema.table.trigger`.
    pub triggers: BTreeSet<String>,
    /// Functions, procedures and aggregates: `schema.name(argument types)`.
    pub functions: BTreeSet<String>,
}

impl SchemaObjects {
    /// Each kind's name and its names.
    pub fn kinds(&self) -> [(&'static str, &BTreeSet<String>); 7] {
        [
            ("tables", &self.tables),
            ("columns", &self.columns),
            ("constraints", &self.constraints),
            ("indexes", &self.indexes),
            ("sequences", &self.sequences),
            ("triggers", &self.triggers),
            ("functions", &self.functions),
        ]
    }

    /// The list of a kind, by the name [`SchemaObjects::kinds`] gives it.
    pub(crate) fn kind_mut(&mut self, kind: &str) -> Option<&mut BTreeSet<String>> {
        match kind {
            "tables" => Some(&mut self.tables),
            "columns" => Some(&mut self.columns),
            "constraints" => Some(&mut self.constraints),
            "indexes" => Some(&mut self.indexes),
            "sequences" => Some(&mut self.sequences),
            "triggers" => Some(&mut self.triggers),
            "functions" => Some(&mut self.functions),
            _ => None,
        }
    }

    /// All objects of all kinds.
    pub fn len(&self) -> usize {
        self.kinds().iter().map(|(_, names)| names.len()).sum()
    }

    /// Whether there is no object at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The export's last line: the length and SHA-256 of everything before it,
/// so that a truncated or altered file is told from a whole one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndMarker {
    /// Bytes before the marker line.
    pub bytes: u64,
    /// Their SHA-256, in lower-case hex.
    pub sha256: String,
}

impl EndMarker {
    /// The marker for a file whose text before the marker is `body`; with
    /// [`EndMarker::line`], re-seals an export edited by hand.
    pub fn of(body: &[u8]) -> EndMarker {
        let mut digest = Digesting::new(std::io::sink());
        // A sink cannot fail.
        let _ = digest.write_all(body);
        digest.marker()
    }

    /// The marker as its comment line, ending in a newline.
    pub fn line(&self) -> String {
        format!(
            "{END_PREFIX}{{\"bytes\":{},\"sha256\":\"{}\"}}\n",
            self.bytes, self.sha256
        )
    }
}

/// A writer (or, fed by hand, a reader's tally) that counts and hashes
/// what passes through it, for the end marker.
pub(crate) struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> Digesting<W> {
    pub(crate) fn new(inner: W) -> Self {
        Digesting {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Counts and hashes `data` without writing it.
    pub(crate) fn absorb(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += u64::try_from(data.len()).unwrap_or(u64::MAX);
    }

    /// The marker for what passed so far.
    pub(crate) fn marker(&self) -> EndMarker {
        let digest = self.hasher.clone().finalize();
        let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
        EndMarker {
            bytes: self.bytes,
            sha256,
        }
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.absorb(buf.get(..n).unwrap_or(buf));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
