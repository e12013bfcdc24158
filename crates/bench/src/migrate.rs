//! Moving off the embedded database: 1 million rows (100 000 with
//! `--quick`) across the fixture's tables in an embedded data directory,
//! then as many in one table (where a table read whole would show in the
//! memory), moved into PostgreSQL 15 by the `cocalc-db` binary the way a
//! user does it: `export` to a file, `import` of that file (verification
//! included), and `migrate`, which streams the export into the import.
//! Each runs as a child process, timed, its peak resident memory (`VmHWM`)
//! read from `/proc` while it runs; the fixture's `migrate` against the
//! 60 s target.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use db::{AnyPool, Config, DataDir, PgPool, PglitePool, Pool};
use schema_sync::{Column, Schema, Table};

use crate::contender::BenchResult;
use crate::schema_sync::with_database;
use crate::test_databases::FIXTURE;
use crate::{Options, Report, Step};

/// The throwaway database the imports go into.
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

/// What a child process took: its time and peak resident memory.
pub(crate) struct Measured {
    pub(crate) elapsed: Duration,
    pub(crate) peak_rss_kib: Option<u64>,
}

/// The peak resident set size (`VmHWM`) of a running process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `command` to its end, reading its peak memory every few
/// milliseconds while it runs (the kernel keeps the peak, so only a rise in
/// its last few milliseconds could be missed); fails with its standard
/// error if it fails.
pub(crate) async fn measure(what: &str, mut command: Command) -> BenchResult<Measured> {
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{what}: starting it: {e}"))?;
        // Drained on threads of their own, so that a full pipe never
        // stalls the child.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let mut peak = None;
        let status = loop {
            if let Some(kib) = peak_rss_kib(child.id()) {
                peak = Some(peak.map_or(kib, |p: u64| p.max(kib)));
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("{what}: waiting for it: {e}").into()),
            }
        };
        let elapsed = started.elapsed();
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(format!("{what} failed ({status}): {err}{out}").into());
        }
        Ok(Measured {
            elapsed,
            peak_rss_kib: peak,
        })
    })
    .await?
}

/// The `cocalc-db` binary: `--cocalc-db`, else the one built beside this
/// benchmark (`cargo xtask bench` builds it).
pub(crate) fn cocalc_db(o: &Options) -> BenchResult<PathBuf> {
    let path = match &o.cocalc_db {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("the benchmark's directory")?
            .join("cocalc-db"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the migrate workload runs {}, which is missing: \
             build it with `cargo build --release -p cocalc-db`, or pass --cocalc-db",
            path.display()
        )
        .into())
    }
}

/// `cocalc-db` on the embedded data directory `data`.
pub(crate) fn on_embedded(binary: &Path, data: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--db")
        .arg("pglite")
        .arg("--data-dir")
        .arg(data);
    command
}

/// The rows of every table (schema-sync's own included), as the export's
/// manifest counts them.
async fn count_rows(pool: &PglitePool) -> BenchResult<u64> {
    let tables = pool
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_catalog.pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await?;
    let mut total = 0;
    for table in &tables {
        let name: String = table.try_get(0)?;
        let rows: i64 = pool
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await?
            .try_get(0)?;
        total += u64::try_from(rows).unwrap_or(0);
    }
    Ok(total)
}

/// Makes `DATABASE` on the server afresh.
async fn fresh_target(admin: &AnyPool) -> BenchResult<()> {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await?;
    Ok(())
}

/// One table of `rows` rows of about 530 bytes of COPY text each, as in
/// the report that found the export holding a table's output whole.
fn one_table(rows: u64) -> String {
    format!(
        "CREATE TABLE big (id int8 PRIMARY KEY, created timestamptz NOT NULL, owner uuid, \
         state jsonb, note text);
         INSERT INTO big SELECT i, timestamptz '2020-01-01' + i * interval '1 second', \
         md5(i::text)::uuid, jsonb_build_object('i', i, 's', md5(i::text), 'a', \
         jsonb_build_array(i, null, true)), repeat(md5(i::text), 12) \
         FROM generate_series(1, {rows}) i"
    )
}

pub(crate) async fn run(report: &mut Report, o: &Options) -> BenchResult<()> {
    let Some(url) = &o.postgres_url else {
        return Err("the migrate workload needs --postgres-url".into());
    };
    let binary = cocalc_db(o)?;
    let rows: u64 = if o.quick { 100_000 } else { 1_000_000 };
    let text = std::fs::read_to_string(FIXTURE).map_err(|e| format!("reading {FIXTURE}: {e}"))?;
    let spec = Schema::from_json(&text)?;
    let admin = AnyPool::Postgres(PgPool::connect_url(url).await?);
    let moving = Moving {
        binary: &binary,
        admin: &admin,
        target: with_database(url, DATABASE),
    };

    let dir = tempfile::tempdir()?;
    let source = dir.path().join("fixture");
    let pool = open(&source).await?;
    schema_sync::sync(&pool, &spec, &schema_sync::Options::new()).await?;
    let started = Instant::now();
    let tables = fill(&pool, &spec, rows).await?;
    let filled = started.elapsed();
    let total_rows = count_rows(&pool).await?;
    pool.close().await;
    report.figures.push((
        format!("migrate: filling PGlite ({total_rows} rows, {tables} tables)"),
        per_second(total_rows, filled),
    ));
    let migrated = moving
        .measure_all(report, &format!("{tables} tables"), &source, total_rows)
        .await?;
    report.ratio(
        &format!("cocalc-db migrate of {total_rows} rows into PG 15, seconds"),
        Some(migrated.as_secs_f64()),
        "< 60",
        |v| v < 60.0,
    );
    std::fs::remove_dir_all(&source)?;

    let source = dir.path().join("one-table");
    let pool = open(&source).await?;
    pool.batch_execute(&one_table(rows)).await?;
    pool.close().await;
    moving
        .measure_all(report, "one table", &source, rows)
        .await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    admin.close().await;
    Ok(())
}

/// A new embedded data directory at `dir`, written for speed.
async fn open(dir: &Path) -> BenchResult<PglitePool> {
    let config = Config::new()
        .pglite(DataDir::Path(dir.to_path_buf()))
        .relaxed_durability(true);
    Ok(PglitePool::open(&config).await?)
}

/// Moves embedded databases into the server's `DATABASE`.
struct Moving<'a> {
    binary: &'a Path,
    admin: &'a AnyPool,
    /// The URL of `DATABASE`.
    target: String,
}

impl Moving<'_> {
    /// Runs `export` to a file, `import` of it and `migrate` of the data
    /// directory `source` (`rows` rows), each into a fresh database;
    /// reports them as steps named after `what` and returns the time of
    /// `migrate`.
    async fn measure_all(
        &self,
        report: &mut Report,
        what: &str,
        source: &Path,
        rows: u64,
    ) -> BenchResult<Duration> {
        let file = source.with_extension("sql");
        let mut export = on_embedded(self.binary, source);
        export.arg("export").arg("--out").arg(&file);
        let exported = measure("cocalc-db export", export).await?;
        let bytes = std::fs::metadata(&file)?.len();

        fresh_target(self.admin).await?;
        let mut import = Command::new(self.binary);
        import
            .args(["import", "--from"])
            .arg(&file)
            .args(["--to", &self.target]);
        let imported = measure("cocalc-db import", import).await?;
        std::fs::remove_file(&file)?;

        fresh_target(self.admin).await?;
        let mut migrate = on_embedded(self.binary, source);
        migrate.args(["migrate", "--to", &self.target]);
        let migrated = measure("cocalc-db migrate", migrate).await?;

        let step = |name: String, m: &Measured| Step {
            name: format!("{what}: {name}"),
            rows,
            seconds: m.elapsed.as_secs_f64(),
            peak_rss_mb: m.peak_rss_kib.map(|k| k as f64 / 1024.0),
        };
        report.steps.push(step(
            format!("export ({} MB file)", bytes / 1_000_000),
            &exported,
        ));
        report
            .steps
            .push(step("import into PG 15, verified".into(), &imported));
        report.steps.push(Step {
            name: format!("{what}: export + import"),
            rows,
            seconds: (exported.elapsed + imported.elapsed).as_secs_f64(),
            peak_rss_mb: None,
        });
        report
            .steps
            .push(step("migrate into PG 15, verified".into(), &migrated));
        Ok(migrated.elapsed)
    }
}

fn per_second(rows: u64, elapsed: Duration) -> String {
    let rate = rows as f64 / elapsed.as_secs_f64().max(1e-9);
    format!("{:.2} s ({rate:.0} rows/s)", elapsed.as_secs_f64())
}
