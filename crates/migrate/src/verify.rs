//! Checking that a database holds what a manifest says.

use std::collections::{BTreeSet, HashSet};

use db_core::{Client, Executor, Pool, Value};
use schema_sync::{Options, Schema};
use tracing::Instrument;

use crate::catalog;
use crate::error::{MigrateError, Result};
use crate::manifest::{Manifest, SchemaObjects, SequenceState, qualified};

/// What a verification checked; every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verification {
    /// Tables whose row count and checksum matched.
    pub tables: usize,
    /// Rows in those tables.
    pub rows: u64,
    /// Sequences whose state matched.
    pub sequences: usize,
    /// Schema objects (tables, columns, constraints, indexes, sequences,
    /// triggers, functions) found as the manifest lists them; 0 for a
    /// manifest without [`Manifest::schema`].
    pub schema_objects: usize,
}

/// Checks the database behind `pool` against `manifest`: every table's row
/// count and content checksum, every sequence's state, that each
/// sequence continues after the highest value of its column, and that every
/// schema object the manifest lists exists (others may too). The first
/// difference is an error naming the table or sequence.
///
/// ```no_run
/// # async fn demo<P: db_core::Pool>(pool: P, manifest: migrate::Manifest) -> Result<(), migrate::MigrateError> {
/// let checked = migrate::verify(&pool, &manifest).await?;
/// println!("{} tables and {} rows match", checked.tables, checked.rows);
/// # Ok(()) }
/// ```
pub async fn verify<P: Pool>(pool: &P, manifest: &Manifest) -> Result<Verification> {
    async {
        let mut client = pool
            .acquire()
            .await
            .map_err(MigrateError::db("connecting to verify"))?;
        let mut tx = client
            .begin()
            .await
            .map_err(MigrateError::db("starting the verification transaction"))?;
        let checked = verify_in_transaction(&mut tx, manifest, None).await?;
        tx.commit()
            .await
            .map_err(MigrateError::db("ending the verification transaction"))?;
        Ok(checked)
    }
    .instrument(tracing::info_span!("migrate.verify"))
    .await
}

/// Checks that the plan for `spec` on the database behind `pool` is empty
/// and that no check or primary key the spec declares differs (schema-sync
/// leaves those it does not own alone, as drift), that is, the imported
/// schema is what the hub expects.
pub async fn verify_spec<P: Pool>(pool: &P, spec: &Schema) -> Result<()> {
    let plan = schema_sync::plan(pool, spec, &Options::new()).await?;
    let differs = plan
        .drift
        .iter()
        .any(|d| d.kind == schema_sync::DriftKind::UnownedConstraintDiffers);
    if plan.is_empty() && !differs {
        Ok(())
    } else {
        Err(MigrateError::SchemaDrift {
            plan: plan.to_string(),
        })
    }
}

/// [`verify`] inside a transaction the caller holds (its output settings
/// are pinned with `SET LOCAL`). With a `baseline` (what the target held
/// before an import), the objects not in it must be exactly the manifest's.
pub(crate) async fn verify_in_transaction<E: Executor>(
    exec: &mut E,
    manifest: &Manifest,
    baseline: Option<&SchemaObjects>,
) -> Result<Verification> {
    exec.batch_execute(catalog::PINNED_OUTPUT)
        .await
        .map_err(MigrateError::db("pinning the output settings"))?;
    let present: HashSet<(String, String)> = catalog::tables(exec).await?.into_iter().collect();
    let mut rows = 0;
    for expected in &manifest.tables {
        if !present.contains(&(expected.schema.clone(), expected.name.clone())) {
            return Err(MigrateError::MissingTable {
                table: expected.qualified(),
            });
        }
        let actual = catalog::summarize(exec, &expected.schema, &expected.name).await?;
        if actual.rows != expected.rows || actual.checksum != expected.checksum {
            return Err(MigrateError::TableMismatch {
                table: expected.qualified(),
                expected_rows: expected.rows,
                expected_checksum: expected.checksum.clone(),
                actual_rows: actual.rows,
                actual_checksum: actual.checksum,
            });
        }
        rows += u64::try_from(actual.rows).unwrap_or(0);
    }
    for expected in &manifest.sequences {
        verify_sequence(exec, expected).await?;
    }
    let schema_objects = match &manifest.schema {
        Some(expected) => verify_schema(exec, expected, baseline).await?,
        None => 0,
    };
    Ok(Verification {
        tables: manifest.tables.len(),
        rows,
        sequences: manifest.sequences.len(),
        schema_objects,
    })
}

/// Compares the schema's objects with `expected`, kind by kind; the first
/// kind that differs is an error naming the differences.
async fn verify_schema<E: Executor>(
    exec: &mut E,
    expected: &SchemaObjects,
    baseline: Option<&SchemaObjects>,
) -> Result<usize> {
    let actual = catalog::schema_objects(exec).await?;
    let empty = SchemaObjects::default();
    let before = baseline.unwrap_or(&empty);
    for ((kind, want), ((_, have), (_, old))) in expected
        .kinds()
        .into_iter()
        .zip(actual.kinds().into_iter().zip(before.kinds()))
    {
        // What the import created: all but what was there before.
        let created: BTreeSet<&String> = have.difference(old).collect();
        let missing: Vec<String> = want.difference(have).cloned().collect();
        let unexpected: Vec<String> = match baseline {
            Some(_) => created
                .iter()
                .filter(|n| !want.contains(**n))
                .map(|n| (*n).clone())
                .collect(),
            // Without a baseline, other objects may belong to anyone.
            None => Vec::new(),
        };
        if !missing.is_empty() || !unexpected.is_empty() {
            let found = match baseline {
                Some(_) => created.len(),
                None => want.len() - missing.len(),
            };
            return Err(MigrateError::SchemaMismatch {
                kind: kind.to_owned(),
                expected: want.len(),
                found,
                missing: first_few(missing),
                unexpected: first_few(unexpected),
            });
        }
    }
    Ok(expected.len())
}

/// The first ten names, and how many more there are.
fn first_few(mut names: Vec<String>) -> Vec<String> {
    const MAX: usize = 10;
    if names.len() > MAX {
        let more = names.len() - MAX;
        names.truncate(MAX);
        names.push(format!("and {more} more"));
    }
    names
}

async fn verify_sequence<E: Executor>(exec: &mut E, expected: &SequenceState) -> Result<()> {
    let mismatch = |problem: String| MigrateError::SequenceMismatch {
        sequence: expected.qualified(),
        problem,
    };
    let actual = catalog::sequence_state(exec, &expected.schema, &expected.name).await?;
    if actual != *expected {
        return Err(mismatch(format!(
            "expected last_value {} (is_called {}), found {} (is_called {})",
            expected.last_value, expected.is_called, actual.last_value, actual.is_called
        )));
    }
    let Some((schema, table, column)) = catalog::owning_column(exec, expected).await? else {
        return Ok(());
    };
    let context = || format!("checking sequence {}", expected.qualified());
    let increment = exec
        .query_one(
            "SELECT increment_by FROM pg_catalog.pg_sequences WHERE schemaname = $1 AND sequencename = $2",
            &[Value::from(expected.schema.as_str()), Value::from(expected.name.as_str())],
        )
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .map_err(MigrateError::db(context()))?;
    if increment <= 0 {
        return Ok(());
    }
    let sql = format!(
        "SELECT max({})::int8 FROM {}",
        db_core::quote_ident(&column),
        qualified(&schema, &table)
    );
    let max = exec
        .query_one(&sql, &[])
        .await
        .and_then(|r| r.try_get::<Option<i64>, _>(0))
        .map_err(MigrateError::db(context()))?;
    let next = if actual.is_called {
        actual.last_value.saturating_add(increment)
    } else {
        actual.last_value
    };
    match max {
        Some(max) if next <= max => Err(mismatch(format!(
            "its next value {next} is not above the highest {schema}.{table}.{column} ({max})"
        ))),
        _ => Ok(()),
    }
}
