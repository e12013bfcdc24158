//! Schema-sync on the fixture schema, on PGlite and PostgreSQL 15: the plan
//! and the sync of a database that already matches it, and the full sync of
//! an empty database.

use std::time::Instant;

use db::{AnyPool, Config, DataDir, PgPool, PglitePool, Pool};
use schema_sync::Schema;

use crate::contender::BenchResult;
use crate::stats::Samples;
use crate::test_databases::FIXTURE;
use crate::{Entry, Options, Report, Workload};

/// The throwaway database the PostgreSQL measurements recreate.
const DATABASE: &str = "bench_schema_sync";

/// A fresh, empty database on one backend.
enum Backend<'a> {
    Pglite,
    Postgres { admin: &'a AnyPool, url: String },
}

impl Backend<'_> {
    fn label(&self) -> &'static str {
        match self {
            Backend::Pglite => "db-pglite",
            Backend::Postgres { .. } => "db-postgres (PG 15)",
        }
    }

    async fn empty(&self) -> BenchResult<AnyPool> {
        Ok(match self {
            Backend::Pglite => {
                AnyPool::Pglite(PglitePool::open(&Config::new().pglite(DataDir::Memory)).await?)
            }
            Backend::Postgres { admin, url } => {
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
                    .await?;
                admin
                    .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                    .await?;
                AnyPool::Postgres(PgPool::connect_url(url).await?)
            }
        })
    }
}

/// `url` with its database name replaced by `database`.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(slash) if base[..slash].ends_with(|c| c != '/') => &base[..slash],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

pub(crate) async fn run(report: &mut Report, o: &Options) -> BenchResult<()> {
    let text = std::fs::read_to_string(FIXTURE).map_err(|e| format!("reading {FIXTURE}: {e}"))?;
    let spec = Schema::from_json(&text)?;
    let (fresh, converged) = if o.quick { (2, 5) } else { (5, 20) };
    let admin = match &o.postgres_url {
        Some(url) => Some(AnyPool::Postgres(PgPool::connect_url(url).await?)),
        None => None,
    };
    let mut backends = vec![Backend::Pglite];
    if let (Some(admin), Some(url)) = (&admin, &o.postgres_url) {
        backends.push(Backend::Postgres {
            admin,
            url: with_database(url, DATABASE),
        });
    }
    let options = schema_sync::Options::new();
    let mut full = Vec::new();
    let mut plans = Vec::new();
    let mut syncs = Vec::new();
    for backend in &backends {
        let label = backend.label();
        let (mut full_s, mut plan_s, mut sync_s) =
            (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..fresh {
            let pool = backend.empty().await?;
            let t = Instant::now();
            schema_sync::sync(&pool, &spec, &options).await?;
            full_s.push(t.elapsed());
            for _ in 0..converged {
                let t = Instant::now();
                let plan = schema_sync::plan(&pool, &spec, &options).await?;
                plan_s.push(t.elapsed());
                if !plan.is_empty() {
                    return Err(format!("{label}: the plan after a sync is not empty").into());
                }
                let t = Instant::now();
                schema_sync::sync(&pool, &spec, &options).await?;
                sync_s.push(t.elapsed());
            }
            pool.close().await;
        }
        for (entries, samples) in [
            (&mut full, full_s),
            (&mut plans, plan_s),
            (&mut syncs, sync_s),
        ] {
            entries.push(Entry {
                contender: label.to_owned(),
                summary: samples.summary(),
                note: None,
            });
        }
    }
    if let Some(admin) = admin {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .await?;
        admin.close().await;
    }
    let tables = spec.tables.len();
    for (what, entries) in [
        ("full sync of an empty database", full),
        ("plan of a converged database", plans),
        ("sync of a converged database", syncs),
    ] {
        report.workloads.push(Workload {
            condition: None,
            name: format!("schema-sync, fixture schema ({tables} tables): {what}"),
            unit: "per call".into(),
            entries,
        });
    }
    Ok(())
}
