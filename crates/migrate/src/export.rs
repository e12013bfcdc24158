//! Logical export of the embedded database as one plain-SQL file.
//!
//! Layout: a manifest comment line (source version, every table's rows and
//! checksum, every sequence's state), pg_dump's pre-data section (schemas,
//! tables, sequences, functions), every table's rows as `COPY ... FROM
//! stdin` blocks, the sequences' `setval` calls, and pg_dump's post-data
//! section (indexes, constraints, triggers), so rows load before indexes;
//! last, the end marker: the length and SHA-256 of everything before it.
//! psql can load the file too.

use std::io::Write;

use db_core::{Client, Executor, Pool};
use db_pglite::PglitePool;
use tracing::Instrument;

use crate::catalog;
use crate::error::{MigrateError, Result};
use crate::manifest::{Digesting, MANIFEST_FORMAT, Manifest, qualified};
use crate::progress::Progress;

/// pg_dump arguments shared by both sections: no ownership or privileges,
/// which belong to the source and would fail on another server.
const DUMP_ARGS: [&str; 2] = ["--no-owner", "--no-acl"];

/// Writes a logical export of the database behind `pool` to `out` and
/// returns its manifest.
///
/// The embedded backend is held for the whole export, so nothing else in
/// this process writes meanwhile and the manifest, the schema and the rows
/// are one consistent state. `out` is written as the export runs.
///
/// ```no_run
/// # async fn demo(pool: db_pglite::PglitePool) -> Result<(), migrate::MigrateError> {
/// let mut file = std::io::BufWriter::new(std::fs::File::create("hub.sql").expect("file"));
/// let manifest = migrate::export(&pool, &mut file, &mut migrate::NoProgress).await?;
/// println!("exported {} rows", manifest.total_rows());
/// # Ok(()) }
/// ```
pub async fn export<W: Write + Send>(
    pool: &PglitePool,
    out: &mut W,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    run(pool, out, progress)
        .instrument(tracing::info_span!("migrate.export"))
        .await
}

async fn run<W: Write + Send>(
    pool: &PglitePool,
    out: &mut W,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    // Everything goes through the digest but the end marker itself.
    let out = &mut Digesting::new(out);
    let mut client = pool
        .acquire()
        .await
        .map_err(MigrateError::db("holding the embedded database"))?;
    let source_version = client
        .query_one("SHOW server_version", &[])
        .await
        .and_then(|r| r.try_get::<String, _>(0))
        .map_err(MigrateError::db("reading the server version"))?;
    let pre_data = dump_section(&mut client, "pre-data").await?;
    let post_data = dump_section(&mut client, "post-data").await?;

    let mut tx = client
        .begin()
        .await
        .map_err(MigrateError::db("starting the export transaction"))?;
    tx.batch_execute(catalog::PINNED_OUTPUT)
        .await
        .map_err(MigrateError::db("pinning the output settings"))?;
    let tables = catalog::summarize_all(&mut tx).await?;
    let sequences = catalog::sequence_states(&mut tx).await?;
    let schema = catalog::schema_objects(&mut tx).await?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        source_version,
        tables,
        sequences,
        schema: Some(schema),
    };

    let write = |out: &mut Digesting<&mut W>, text: &str| {
        out.write_all(text.as_bytes())
            .map_err(MigrateError::io("writing the export"))
    };
    let line = manifest.to_line().map_err(|e| MigrateError::Io {
        context: "writing the manifest".into(),
        source: std::io::Error::other(e),
    })?;
    write(out, "-- cocalc-db export of the embedded database\n")?;
    write(out, &line)?;
    write(out, "\n")?;
    write(out, &pre_data)?;

    progress.start(manifest.total_rows());
    for table in &manifest.tables {
        let columns = catalog::copy_columns(&mut tx, &table.schema, &table.name).await?;
        let target = format!("{} ({})", table.qualified(), columns.join(", "));
        write(
            out,
            &format!("\n--\n-- Data for {}\n--\n\n", table.qualified()),
        )?;
        write(out, &format!("COPY {target} FROM stdin;\n"))?;
        let statement = format!("COPY {target} TO STDOUT");
        let sink = |chunk: &[u8]| {
            out.write_all(chunk)
                .map_err(|e| db_core::Error::backend("writing the export", e))?;
            let rows = chunk.iter().filter(|&&b| b == b'\n').count();
            progress.advance(u64::try_from(rows).unwrap_or(0));
            Ok(())
        };
        tx.copy_out(&statement, sink)
            .await
            .map_err(MigrateError::db(format!("exporting {}", table.qualified())))?;
        write(out, "\\.\n")?;
    }
    tx.commit()
        .await
        .map_err(MigrateError::db("ending the export transaction"))?;
    progress.finish();

    write(out, "\n--\n-- Sequence values\n--\n\n")?;
    for seq in &manifest.sequences {
        let name = qualified(&seq.schema, &seq.name).replace('\'', "''");
        write(
            out,
            &format!(
                "SELECT pg_catalog.setval('{name}', {}, {});\n",
                seq.last_value, seq.is_called
            ),
        )?;
    }
    write(out, "\n")?;
    write(out, &post_data)?;
    let marker = out.marker().line();
    out.inner()
        .write_all(marker.as_bytes())
        .map_err(MigrateError::io("writing the export"))?;
    out.flush()
        .map_err(MigrateError::io("writing the export"))?;
    tracing::info!(
        tables = manifest.tables.len(),
        rows = manifest.total_rows(),
        "exported the embedded database"
    );
    Ok(manifest)
}

async fn dump_section(client: &mut db_pglite::PgliteClient, section: &str) -> Result<String> {
    let arg = format!("--section={section}");
    let mut args = vec![arg.as_str()];
    args.extend(DUMP_ARGS);
    client
        .pg_dump(&args)
        .await
        .map_err(MigrateError::db(format!(
            "running pg_dump for the {section} section"
        )))
}
