//! Review helpers: the plan between two spec versions as stable text, for
//! `insta` snapshots in pull requests.
//!
//! ```
//! use schema_sync::{Column, Schema, Table, snapshot};
//! let old = Schema::new();
//! let new = Schema::new().table(Table::new("t").column(Column::new("id", "BIGINT")).primary_key(["id"]));
//! let text = snapshot::plan_between(&old, &new);
//! assert!(text.starts_with("-- create table \"public\".\"t\""));
//! // In a test: insta::assert_snapshot!(snapshot::plan_between(&old, &new));
//! ```

use crate::plan::{DiffOptions, Plan, diff};
use crate::spec::Schema;

/// The offline plan from `old` to `new`, as if `old` had been applied by
/// schema-sync (its indexes count as owned).
pub fn plan_between_with(old: &Schema, new: &Schema, options: &DiffOptions) -> Plan {
    let mut current = old.clone();
    for t in &mut current.tables {
        for i in &mut t.indexes {
            i.owned = true;
        }
    }
    diff(&current, new, options)
}

/// [`plan_between_with`] with default options, rendered as text.
pub fn plan_between(old: &Schema, new: &Schema) -> String {
    plan_between_with(old, new, &DiffOptions::default()).to_string()
}
