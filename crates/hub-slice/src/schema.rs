//! The part of the fixture schema the slice runs on.

use db::Pool;

use crate::error::{Error, Result};

/// The fixture's tables the slice reads and writes.
pub const TABLES: [&str; 3] = ["accounts", "projects", "project_hosts"];

/// Applies to `pool`, with schema-sync, the tables of `spec` (the fixture
/// schema, `Schema::from_json` of `cocalc-control-plane-schema.json`) that
/// the slice needs ([`TABLES`]), exactly as the spec declares them; the
/// spec's other tables are left out. [`Error::MissingTable`] if the spec
/// lacks one.
pub async fn sync_schema<P: Pool>(pool: &P, spec: &schema_sync::Schema) -> Result<()> {
    let mut slice = spec.clone();
    slice.tables.retain(|t| TABLES.contains(&t.name.as_str()));
    if let Some(missing) = TABLES.into_iter().find(|name| slice.get(name).is_none()) {
        return Err(Error::MissingTable(missing));
    }
    schema_sync::sync(pool, &slice, &schema_sync::Options::new()).await?;
    Ok(())
}
