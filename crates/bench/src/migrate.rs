//! Moving off the embedded database: 1 million rows (100 000 with
//! `--quick`) across the fixture's tables, exported from PGlite and imported
//! into PostgreSQL 15 (verification included); rows per second for each step
//! and the total against the 60 s target.

use std::io::BufReader;
use std::time::{Duration, Instant};

use db::{AnyPool, Config, DataDir, PgPool, PglitePool, Pool};
use migrate::{ExportOptions, ImportOptions, NoProgress, OutputFile};
use schema_sync::{Column, Schema, Table};

use crate::contender::BenchResult;
use crate::schema_sync::with_database;
use crate::test_databases::FIXTURE;
use crate::{Options, Report};

/// The throwaway database the import goes into.
const DATABASE: &str = "bench_migrate";

/// A SQL expression of column type `column.type_` for row `i` (a bigint)
/// at column `position`: distinct per row, inside every CHECK of the fixture.
fn generated(column: &Column, position: usize) -> Option<String> {
    let ty = column.type_.as_str();
    if let Some(list) = column.check.as_deref().and_then(|c| c.split_once(" IN (")) {
        return list.1.split('\'').nth(1).map(|v| format!("'{v}'"));
    }
    let base = ty.split('(').next().unwrap_or(ty).trim();
    Some(match base {
        "SERIAL" | "BIGSERIAL" => return None,
        "TEXT" | "VARCHAR" | "CHAR" => format!("md5(i::text || '{position}')"),
        "TIMESTAMP" | "TIMESTAMP WITH TIME ZONE" => {
            format!("timestamp '2020-01-01' + i * interval '1 second' + interval '{position} days'")
        }
        "DATE" => format!("date '2020-01-01' + (i % 100000)::int + {position}"),
        "UUID" => format!("md5(i::text || '{position}')::uuid"),
        "JSONB" => {
            "jsonb_build_object('i', i, 's', md5(i::text), 'a', jsonb_build_array(i, null, true))"
                .into()
        }
        "INTEGER" => "i::int".into(),
        "BIGINT" => "i".into(),
        "DOUBLE PRECISION" => "i * 1.5".into(),
        "BOOLEAN" => "i % 2 = 0".into(),
        "NUMERIC" => "i / 7.0".into(),
        "TEXT[]" => "ARRAY[i::text, 'x y', NULL]".into(),
        "INTEGER[]" => "ARRAY[i::int, 0]".into(),
        "UUID[]" => "ARRAY[md5(i::text)::uuid]".into(),
        "JSONB[]" => "ARRAY[jsonb_build_object('i', i)]".into(),
        "INET" => "'10.0.0.0'::inet + i".into(),
        "BIT VARYING" => "i::bit(32)".into(),
        "BYTEA" => "decode(md5(i::text), 'hex')".into(),
        "INTERVAL" => "i * interval '1 second'".into(),
        _ => return None,
    })
}

/// `INSERT INTO table SELECT ... FROM generate_series(from, to) i`.
fn insert(table: &Table, from: u64, to: u64) -> String {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (position, column) in table.columns.iter().enumerate() {
        if let Some(value) = generated(column, position) {
            names.push(db::quote_ident(&column.name));
            values.push(format!("({value})::{}", column.type_));
        }
    }
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM generate_series({from}::int8, {to}::int8) i",
        db::quote_ident(&table.name),
        names.join(", "),
        values.join(", ")
    )
}

/// Fills the fixture's tables with `rows` rows in all, spread evenly over
/// the tables that take generated rows; returns how many took them.
async fn fill(pool: &PglitePool, spec: &Schema, rows: u64) -> BenchResult<usize> {
    let mut accepted = Vec::new();
    for table in &spec.tables {
        if pool.execute(&insert(table, 1, 1), &[]).await.is_ok() {
            accepted.push(table);
        }
    }
    let n = u64::try_from(accepted.len()).unwrap_or(1).max(1);
    let per_table = rows / n;
    let mut extra = rows % n;
    for table in &accepted {
        let mut last = per_table;
        if extra > 0 {
            last += 1;
            extra -= 1;
        }
        if last > 1 {
            pool.execute(&insert(table, 2, last), &[]).await?;
        }
    }
    Ok(accepted.len())
}

fn per_second(rows: u64, elapsed: Duration) -> String {
    let rate = rows as f64 / elapsed.as_secs_f64().max(1e-9);
    format!("{:.2} s ({rate:.0} rows/s)", elapsed.as_secs_f64())
}

pub(crate) async fn run(report: &mut Report, o: &Options) -> BenchResult<()> {
    let Some(url) = &o.postgres_url else {
        return Err("the migrate workload needs --postgres-url".into());
    };
    let rows: u64 = if o.quick { 100_000 } else { 1_000_000 };
    let text = std::fs::read_to_string(FIXTURE).map_err(|e| format!("reading {FIXTURE}: {e}"))?;
    let spec = Schema::from_json(&text)?;

    let source = PglitePool::open(&Config::new().pglite(DataDir::Memory)).await?;
    schema_sync::sync(&source, &spec, &schema_sync::Options::new()).await?;
    let started = Instant::now();
    let tables = fill(&source, &spec, rows).await?;
    let filled = started.elapsed();

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("export.sql");
    let started = Instant::now();
    let mut file = OutputFile::create(&path, true)?;
    let manifest = migrate::export(
        &source,
        file.writer(),
        &ExportOptions::new(),
        &mut NoProgress,
    )
    .await?;
    file.commit()?;
    let exported = started.elapsed();
    source.close().await;
    let exported_rows = manifest.total_rows();
    let bytes = std::fs::metadata(&path)?.len();

    let admin = AnyPool::Postgres(PgPool::connect_url(url).await?);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await?;
    let target = AnyPool::Postgres(PgPool::connect_url(&with_database(url, DATABASE)).await?);
    let started = Instant::now();
    let input = BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
    let imported = migrate::import(&target, input, &ImportOptions::new(), &mut NoProgress).await?;
    let import_time = started.elapsed();
    target.close().await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    admin.close().await;
    if imported.verification.is_none() {
        return Err("the import was not verified".into());
    }

    let total = exported + import_time;
    report.figures.push((
        format!("migrate: filling PGlite ({exported_rows} rows, {tables} tables)"),
        per_second(exported_rows, filled),
    ));
    report.figures.push((
        format!("migrate: export from PGlite ({} MB)", bytes / 1_000_000),
        per_second(exported_rows, exported),
    ));
    report.figures.push((
        "migrate: import into PG 15, verified".into(),
        per_second(imported.rows, import_time),
    ));
    report.figures.push((
        "migrate: export + import".into(),
        per_second(exported_rows, total),
    ));
    report.ratio(
        &format!("migrate {exported_rows} rows into PG 15, seconds"),
        Some(total.as_secs_f64()),
        "< 60",
        |v| v < 60.0,
    );
    Ok(())
}
