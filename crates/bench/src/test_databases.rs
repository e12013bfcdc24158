//! Per-test databases with the fixture schema (`db-testing`): what each test
//! pays before and after its own work, on PGlite and on PostgreSQL 15.

use std::time::Instant;

use db::{Config, DataDir, Pool};
use db_testing::TestDatabases;

use crate::contender::BenchResult;
use crate::stats::Samples;
use crate::{Entry, Options, Report, Workload};

pub(crate) const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/cocalc-control-plane-schema.json"
);

/// The DDL of the fixture schema's tables that `keep` names (unqualified),
/// as schema-sync plans it from an empty database.
pub(crate) fn fixture_ddl(schema: &str, keep: impl Fn(&str) -> bool) -> BenchResult<String> {
    let text = std::fs::read_to_string(FIXTURE).map_err(|e| format!("reading {FIXTURE}: {e}"))?;
    let mut spec = schema_sync::Schema::from_json(&text)?;
    spec.schema = schema.to_owned();
    spec.tables.retain(|t| keep(&t.name));
    let plan = schema_sync::diff(
        &schema_sync::Schema::new(),
        &spec,
        &schema_sync::DiffOptions::new(),
    );
    let mut sql = String::new();
    // The caller makes the schema.
    let statements = plan.changes.iter().flat_map(|c| &c.statements);
    for statement in statements.filter(|s| !s.starts_with("CREATE SCHEMA")) {
        sql.push_str(statement);
        sql.push_str(";\n");
    }
    Ok(sql)
}

pub(crate) async fn run(report: &mut Report, o: &Options, tests: usize) -> BenchResult<()> {
    let ddl = match fixture_ddl("public", |_| true) {
        Ok(ddl) => ddl,
        Err(e) => {
            report
                .figures
                .push(("per-test databases".into(), format!("skipped: {e}")));
            return Ok(());
        }
    };
    let mut entries = Vec::new();
    let pglite = Config::new().pglite(DataDir::Memory);
    entries.push(measure(report, "db-pglite", pglite, &ddl, tests, 100.0).await?);
    if let Some(url) = &o.postgres_url {
        let pg = Config::new().postgres_url(url.clone());
        entries.push(measure(report, "db-postgres (PG 15)", pg, &ddl, tests, 300.0).await?);
    }
    report.workloads.push(Workload {
        condition: None,
        name: format!("{tests} tests, each on a fresh database with the fixture schema"),
        unit: "per test, excluding the test's own work".into(),
        entries,
    });
    Ok(())
}

async fn measure(
    report: &mut Report,
    label: &str,
    config: Config,
    ddl: &str,
    tests: usize,
    target_ms: f64,
) -> BenchResult<Entry> {
    let started = Instant::now();
    let databases = TestDatabases::new(config, ddl);
    drop(databases.database().await?);
    report.figures.push((
        format!("{label}: first test database (fixture schema applied once)"),
        format!("{:.0} ms", started.elapsed().as_secs_f64() * 1e3),
    ));
    let mut samples = Samples::default();
    for i in 0..tests {
        let t0 = Instant::now();
        let db = databases.database().await?;
        let overhead = t0.elapsed();
        // The test's own work: a row in a fixture table and a table of its own.
        db.pool()
            .batch_execute(&format!(
                "INSERT INTO accounts (account_id) VALUES (gen_random_uuid());
                 CREATE TABLE scratch_{i} (v int); INSERT INTO scratch_{i} VALUES ({i})"
            ))
            .await?;
        let t1 = Instant::now();
        drop(db);
        samples.push(overhead + t1.elapsed());
    }
    // The reset for the last test happens at the next database(): count it.
    let t = Instant::now();
    drop(databases.database().await?);
    samples.push(t.elapsed());
    let summary = samples.summary();
    let mean_ms = summary.map(|s| s.median_us / 1e3);
    report.ratio(
        &format!("{label}: per-test database overhead, median ms"),
        mean_ms,
        &format!("< {target_ms:.0}"),
        move |v| v < target_ms,
    );
    Ok(Entry {
        contender: label.to_owned(),
        summary,
        note: None,
    })
}
