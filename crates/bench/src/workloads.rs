//! The workloads, run on every contender that can run them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use db::{Client, Config, DataDir, Executor, PglitePool, Pool, Value};
use pglite_oxide::Pglite;

use crate::contender::{BenchResult, Contender, Kind, Stmt, timed};
use crate::machine::{self, Load};
use crate::stats::{self, Samples, Summary};
use crate::{Entry, Options, Report, Workload};

const SETUP: &str = "
DROP TABLE IF EXISTS bench_kv, bench_ins, bench_bulk, bench_types, bench_counter;
CREATE TABLE bench_kv (id int8 PRIMARY KEY, v text NOT NULL);
INSERT INTO bench_kv SELECT g, md5(g::text) FROM generate_series(1, 10000) g;
CREATE TABLE bench_ins (id bigserial PRIMARY KEY, v text);
CREATE TABLE bench_bulk (id int8, v text);
CREATE TABLE bench_counter (id int PRIMARY KEY, n int8 NOT NULL);
INSERT INTO bench_counter SELECT g, 0 FROM generate_series(0, 63) g;
CREATE TABLE bench_types (
    id int8 PRIMARY KEY, i2 int2, i4 int4, f4 real, f8 float8, n numeric(20,10),
    t text, vc varchar(32), c char(8), b boolean, ts timestamp, tz timestamptz,
    d date, iv interval, j jsonb, u uuid, ip inet, bits bit varying(16), by bytea,
    ai int4[], at text[]);
INSERT INTO bench_types SELECT g, (g % 1000)::int2, g, g / 3.0, g / 7.0, g / 11.0,
    md5(g::text), left(md5(g::text), 20), 'c' || (g % 10), g % 2 = 0,
    timestamp '2024-01-01' + g * interval '1 minute', timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
    date '2024-01-01' + g, g * interval '1 second', jsonb_build_object('g', g, 'a', jsonb_build_array(g, 'x')),
    md5(g::text)::uuid, ('10.0.' || (g % 250) || '.1')::inet, (g % 65536)::bit(16)::varbit,
    decode(md5(g::text), 'hex'), ARRAY[g, NULL, g + 1], ARRAY['a', NULL, md5(g::text)]
FROM generate_series(1, 1000) g;
";

struct Plan {
    rounds: usize,
    point: usize,
    insert: usize,
    tx: usize,
    bulk: usize,
    wide: usize,
    concurrent: usize,
    /// Runs of the core workloads in each condition.
    runs: usize,
    /// How long an idle pool is watched for the CPU it uses.
    idle: Duration,
}

fn plan(o: &Options) -> Plan {
    if o.quick {
        Plan {
            rounds: 2,
            point: 300,
            insert: 100,
            tx: 3,
            bulk: 1,
            wide: 5,
            concurrent: 640,
            runs: if o.embedded_only {
                1
            } else {
                o.runs.unwrap_or(2)
            },
            idle: Duration::from_secs(3),
        }
    } else {
        Plan {
            rounds: 5,
            point: 2000,
            insert: 500,
            tx: 10,
            bulk: 2,
            wide: 20,
            concurrent: 3200,
            // The child that measures peak memory runs the workloads once.
            runs: if o.embedded_only {
                1
            } else {
                o.runs.unwrap_or(5)
            },
            idle: Duration::from_secs(30),
        }
    }
}

/// The machine with nothing else running (but other processes of the host).
pub(crate) const IDLE: &str = "idle";
/// The machine under a [`Load`].
pub(crate) const BUSY: &str = "busy";

/// A pseudo-random but repeatable key sequence.
fn key(i: usize) -> i64 {
    (i.wrapping_mul(2_654_435_761) % 10_000) as i64 + 1
}

pub(crate) async fn run(o: &Options) -> BenchResult<Report> {
    let p = plan(o);
    let mut report = Report::default();
    let mut contenders = Vec::new();

    let started = Instant::now();
    let pglite = PglitePool::open(&Config::new().pglite(DataDir::Memory)).await?;
    let open_temp = started.elapsed();
    contenders.push(Contender::DbPglite(pglite.clone()));
    if !o.embedded_only {
        let started = Instant::now();
        let oxide = Pglite::temporary()?;
        let open_oxide = started.elapsed();
        contenders.push(Contender::Oxide(
            Box::new(oxide),
            Kind::OxideQuery,
            Vec::new(),
        ));
        contenders.push(Contender::Oxide(
            Box::new(Pglite::temporary()?),
            Kind::OxideRaw,
            Vec::new(),
        ));
        report.figures.push((
            "open a temporary database: db-pglite".into(),
            format!("{:.0} ms", open_temp.as_secs_f64() * 1e3),
        ));
        report.figures.push((
            "open a temporary database: pglite-oxide Pglite::temporary".into(),
            format!("{:.0} ms", open_oxide.as_secs_f64() * 1e3),
        ));
        if let Some(url) = &o.postgres_url {
            contenders.push(Contender::DbPostgres(db::PgPool::connect_url(url).await?));
            contenders.push(Contender::Sqlx(sqlx::PgPool::connect(url).await?));
        }
    }
    let mut server_ready = false;
    for c in &mut contenders {
        let shares_server = matches!(c.kind(), Kind::DbPostgres | Kind::Sqlx);
        if shares_server && server_ready {
            continue;
        }
        c.batch(SETUP).await?;
        server_ready |= shares_server;
    }
    let mut pools = vec![("db-pglite", db::AnyPool::Pglite(pglite.clone()))];
    for c in &contenders {
        if let Contender::DbPostgres(pg) = c {
            pools.push(("db-postgres", db::AnyPool::Postgres(pg.clone())));
        }
    }

    // Each run measures both conditions, one after the other, so that
    // whatever else the host does falls on both alike.
    let mut runs: Vec<(&str, Vec<Workload>)> = Vec::new();
    let mut concurrent: Vec<(&str, &str, Concurrency)> = Vec::new();
    let mut others: Vec<(&str, f64)> = Vec::new();
    for _ in 0..p.runs {
        for condition in [IDLE, BUSY] {
            let load = (condition == BUSY).then(Load::start).transpose()?;
            let before = machine::Usage::now();
            runs.push((condition, core(&mut contenders, &p).await?));
            for (label, pool) in &pools {
                concurrent.push((condition, label, concurrency(pool, p.concurrent).await?));
            }
            if let Some(cores) = before.and_then(|b| b.others_since()) {
                others.push((condition, cores));
            }
            drop(load);
        }
    }
    for condition in [IDLE, BUSY] {
        let cores: Vec<f64> = others
            .iter()
            .filter(|(c, _)| *c == condition)
            .map(|(_, cores)| *cores)
            .collect();
        let (lo, hi) = stats::range(&cores);
        report.figures.push((
            format!("{condition}: cores other processes kept busy during the runs"),
            stats::median(&cores).map_or("n/a".into(), |m| {
                format!("{m:.2} ({lo:.2}-{hi:.2}) of {}", machine::cores())
            }),
        ));

        let of_condition: Vec<&Vec<Workload>> = runs
            .iter()
            .filter(|(c, _)| *c == condition)
            .map(|(_, w)| w)
            .collect();
        report.workloads.extend(across(condition, &of_condition));
        for (label, _) in &pools {
            let of_pool: Vec<&Concurrency> = concurrent
                .iter()
                .filter(|(c, l, _)| *c == condition && l == label)
                .map(|(_, _, k)| k)
                .collect();
            concurrency_report(&mut report, condition, label, &of_pool);
        }
    }
    if !o.embedded_only {
        idle_cpu(&mut report, &pglite, p.idle).await?;
        persistent_open(&mut report).await?;
        crate::test_databases::run(&mut report, o, if o.quick { 10 } else { 50 }).await?;
        crate::node::run(o, &mut report, p.point.min(1000), p.insert).await;
        peak_memory(&mut report, o.quick);
        ratios(&mut report);
    }
    pglite.close().await;
    Ok(report)
}

/// Runs of the same workloads as one: each contender's summary across runs.
fn across(condition: &str, runs: &[&Vec<Workload>]) -> Vec<Workload> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, w)| Workload {
            name: w.name.clone(),
            condition: Some(condition.to_owned()),
            unit: w.unit.clone(),
            entries: w
                .entries
                .iter()
                .enumerate()
                .map(|(j, e)| {
                    let summaries: Vec<Summary> = runs
                        .iter()
                        .filter_map(|r| r.get(i)?.entries.get(j)?.summary)
                        .collect();
                    Entry {
                        contender: e.contender.clone(),
                        summary: Summary::across(&summaries),
                        note: e.note.clone(),
                    }
                })
                .collect(),
        })
        .collect()
}

/// One run of the core workloads on every contender that can run them.
async fn core(contenders: &mut [Contender], p: &Plan) -> BenchResult<Vec<Workload>> {
    let mut workloads = Vec::new();
    let point = measure(
        contenders,
        p.rounds,
        "point SELECT by primary key",
        "per statement",
        |_| true,
        |c, i| {
            Box::pin(async move {
                let params = [Value::Int8(key(i))];
                let rows = c
                    .run(&Stmt {
                        sql: "SELECT id, v FROM bench_kv WHERE id = $1",
                        params: &params,
                    })
                    .await?;
                if rows != 1 && c.kind() != Kind::OxideRaw {
                    return Err(format!("{}: expected one row, got {rows}", c.kind().name()).into());
                }
                Ok(())
            })
        },
        p.point,
    )
    .await?;
    workloads.push(point);

    let not_raw = |k: Kind| k != Kind::OxideRaw;
    workloads.push(
        measure(
            contenders,
            p.rounds,
            "autocommit INSERT",
            "per statement",
            not_raw,
            |c, i| {
                Box::pin(async move {
                    let params = [Value::Text(format!("row {i}"))];
                    c.run(&Stmt {
                        sql: "INSERT INTO bench_ins (v) VALUES ($1)",
                        params: &params,
                    })
                    .await
                    .map(drop)
                })
            },
            p.insert,
        )
        .await?,
    );
    workloads.push(
        measure(
            contenders,
            p.rounds,
            "100-statement transaction",
            "per transaction",
            not_raw,
            |c, _| {
                Box::pin(async move {
                    let params = [Value::Text("in a transaction".into())];
                    c.transaction(
                        &Stmt {
                            sql: "INSERT INTO bench_ins (v) VALUES ($1)",
                            params: &params,
                        },
                        100,
                    )
                    .await
                })
            },
            p.tx,
        )
        .await?,
    );
    let ids: Vec<i64> = (0..10_000).collect();
    let texts: Vec<String> = (0..10_000).map(|i| format!("bulk {i}")).collect();
    let bulk_params: Arc<[Value]> = vec![Value::from(ids), Value::from(texts)].into();
    let bulk = measure(contenders, p.rounds, "INSERT of 10,000 rows in one statement", "per statement", not_raw, |c, _| {
        let params = Arc::clone(&bulk_params);
        Box::pin(async move {
            let stmt = Stmt { sql: "INSERT INTO bench_bulk (id, v) SELECT * FROM unnest($1::int8[], $2::text[])", params: &params };
            c.run(&stmt).await.map(drop)
        })
    }, p.bulk)
    .await?;
    workloads.push(bulk);
    let has_copy = |k: Kind| k != Kind::OxideQuery;
    let copy_rows: Arc<[u8]> = (0..10_000)
        .map(|i| format!("{i}\tbulk {i}\n"))
        .collect::<String>()
        .into_bytes()
        .into();
    let mut copy_in = measure(
        contenders,
        p.rounds,
        "COPY of 10,000 rows (FROM STDIN, text format)",
        "per statement",
        has_copy,
        |c, _| {
            let data = Arc::clone(&copy_rows);
            Box::pin(async move {
                let rows = c
                    .copy_in("COPY bench_bulk (id, v) FROM STDIN", &data)
                    .await?;
                match rows {
                    Some(10_000) | None => Ok(()),
                    Some(n) => Err(format!("{}: copied {n} rows", c.kind().name()).into()),
                }
            })
        },
        p.bulk,
    )
    .await?;
    copy_in.entries.push(not_applicable(Kind::OxideQuery));
    workloads.push(copy_in);
    let mut copy_out = measure(
        contenders,
        p.rounds,
        "COPY TO STDOUT of 10,000 rows (text format)",
        "per statement",
        has_copy,
        |c, _| {
            Box::pin(async move {
                let bytes = c.copy_out("COPY bench_kv TO STDOUT").await?;
                if bytes < 10_000 * 34 {
                    return Err(format!("{}: received {bytes} bytes", c.kind().name()).into());
                }
                Ok(())
            })
        },
        p.bulk,
    )
    .await?;
    copy_out.entries.push(not_applicable(Kind::OxideQuery));
    workloads.push(copy_out);
    workloads.push(
        measure(
            contenders,
            p.rounds,
            "SELECT of 1,000 rows, every column type",
            "per statement",
            not_raw,
            |c, _| {
                Box::pin(async move {
                    let rows = c
                        .run(&Stmt {
                            sql: "SELECT * FROM bench_types",
                            params: &[],
                        })
                        .await?;
                    if rows != 1000 {
                        return Err(
                            format!("{}: expected 1000 rows, got {rows}", c.kind().name()).into(),
                        );
                    }
                    Ok(())
                })
            },
            p.wide,
        )
        .await?,
    );
    // The bulk workloads grow their tables run by run; keep them small.
    for c in contenders.iter_mut() {
        if c.kind() != Kind::Sqlx {
            c.batch("TRUNCATE bench_bulk, bench_ins").await?;
        }
    }
    Ok(workloads)
}

/// CPU time the process uses while a pool sits idle for `idle` after a
/// burst of statements: what a quiet hub costs.
async fn idle_cpu(report: &mut Report, pool: &PglitePool, idle: Duration) -> BenchResult<()> {
    for i in 0..100 {
        pool.query(
            "SELECT id, v FROM bench_kv WHERE id = $1",
            &[Value::Int8(key(i))],
        )
        .await?;
    }
    let before = machine::cpu_time();
    tokio::time::sleep(idle).await;
    let used = machine::cpu_time()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    report.figures.push((
        format!(
            "CPU time of this process over {} s with an idle db-pglite pool",
            idle.as_secs()
        ),
        used.map_or("n/a".into(), |d| format!("{:.3} s", d.as_secs_f64())),
    ));
    let per_30s = used.map(|d| d.as_secs_f64() * 30.0 / idle.as_secs_f64().max(1e-9));
    report.ratio("idle pool, CPU seconds per 30 s", per_30s, "< 0.1", |v| {
        v < 0.1
    });
    Ok(())
}

/// The entry of a contender that cannot run a workload.
fn not_applicable(kind: Kind) -> Entry {
    Entry {
        contender: kind.name().into(),
        summary: None,
        note: Some(crate::contender::NO_COPY.into()),
    }
}

type BoxFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = BenchResult<()>> + 'a>>;

/// Runs `op` `per_round` times per contender per round, alternating the
/// contenders (in an order rotated round by round), and collects
/// per-operation times.
async fn measure<F>(
    contenders: &mut [Contender],
    rounds: usize,
    name: &str,
    unit: &str,
    applies: impl Fn(Kind) -> bool,
    op: F,
    per_round: usize,
) -> BenchResult<Workload>
where
    F: for<'a> Fn(&'a mut Contender, usize) -> BoxFuture<'a>,
{
    let mut samples: Vec<Samples> = vec![Samples::default(); contenders.len()];
    let mut i = 0;
    let n = contenders.len();
    for round in 0..rounds {
        // Each round starts with another contender, so that none always
        // runs right after the same neighbour (on a server they share,
        // the one before leaves it writing back what it did).
        for k in 0..n {
            let j = (round + k) % n;
            let (c, s) = (&mut contenders[j], &mut samples[j]);
            if !applies(c.kind()) {
                continue;
            }
            // One untimed warm-up per round and contender.
            op(c, i).await?;
            for _ in 0..per_round {
                i += 1;
                s.push(timed(op(c, i)).await?);
            }
        }
    }
    let entries = contenders
        .iter()
        .zip(samples)
        .filter(|(c, _)| applies(c.kind()))
        .map(|(c, s)| Entry {
            contender: c.kind().name().to_owned(),
            summary: s.summary(),
            note: None,
        })
        .collect();
    Ok(Workload {
        name: name.to_owned(),
        condition: None,
        unit: unit.to_owned(),
        entries,
    })
}

/// One run of the short-transaction workload on one pool.
struct Concurrency {
    single: Summary,
    multi: Summary,
    single_rate: f64,
    multi_rate: f64,
}

/// 1 task, then 32 tasks, running short transactions.
async fn concurrency(pool: &db::AnyPool, total: usize) -> BenchResult<Concurrency> {
    async fn worker(pool: db::AnyPool, n: usize, id: i32) -> BenchResult<Samples> {
        let mut s = Samples::default();
        for _ in 0..n {
            let t = Instant::now();
            let mut c = pool.acquire().await?;
            let mut tx = c.begin().await?;
            tx.execute(
                "UPDATE bench_counter SET n = n + 1 WHERE id = $1",
                &[Value::Int4(id)],
            )
            .await?;
            tx.commit().await?;
            s.push(t.elapsed());
        }
        Ok(s)
    }
    let t = Instant::now();
    let single = worker(pool.clone(), total, 0).await?;
    let single_rate = total as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|k| tokio::spawn(worker(pool.clone(), total / 32, k % 64)))
        .collect();
    let mut all = Samples::default();
    for task in tasks {
        all.extend(task.await??);
    }
    let multi_rate = (total / 32 * 32) as f64 / t.elapsed().as_secs_f64();
    Ok(Concurrency {
        single: single.summary().ok_or("no samples")?,
        multi: all.summary().ok_or("no samples")?,
        single_rate,
        multi_rate,
    })
}

/// Reports the runs of the short-transaction workload: the throughput ratio
/// (median of the runs, with their spread) and the worst wait against the
/// median (the worst run).
fn concurrency_report(report: &mut Report, condition: &str, label: &str, runs: &[&Concurrency]) {
    let single: Vec<Summary> = runs.iter().map(|r| r.single).collect();
    let multi: Vec<Summary> = runs.iter().map(|r| r.multi).collect();
    report.workloads.push(Workload {
        name: format!("short transactions, {label}"),
        condition: Some(condition.to_owned()),
        unit: "per transaction, acquire to commit".into(),
        entries: vec![
            Entry {
                contender: format!("{label}, 1 task"),
                summary: Summary::across(&single),
                note: None,
            },
            Entry {
                contender: format!("{label}, 32 tasks"),
                summary: Summary::across(&multi),
                note: None,
            },
        ],
    });
    let figure = |v: &[f64]| {
        let (lo, hi) = stats::range(v);
        stats::median(v).map_or("n/a".into(), |m| format!("{m:.0} ({lo:.0}-{hi:.0})"))
    };
    let single_rates: Vec<f64> = runs.iter().map(|r| r.single_rate).collect();
    let multi_rates: Vec<f64> = runs.iter().map(|r| r.multi_rate).collect();
    report.figures.push((
        format!("{label}, {condition}: transactions/s, 1 task"),
        figure(&single_rates),
    ));
    report.figures.push((
        format!("{label}, {condition}: transactions/s, 32 tasks"),
        figure(&multi_rates),
    ));
    let ratios: Vec<f64> = runs.iter().map(|r| r.multi_rate / r.single_rate).collect();
    let (lo, hi) = stats::range(&ratios);
    report.ratio(
        &format!("{label}, {condition}: 32-task / 1-task throughput ({lo:.2}-{hi:.2})"),
        stats::median(&ratios),
        ">= 0.9",
        |v| v >= 0.9,
    );
    let worst = runs
        .iter()
        .map(|r| r.multi.max_us / r.multi.median_us)
        .fold(None, |w: Option<f64>, v| Some(w.map_or(v, |w| w.max(v))));
    report.ratio(
        &format!("{label}, {condition}: worst / median wait, 32 tasks (worst run)"),
        worst,
        "<= 50",
        |v| v <= 50.0,
    );
}

async fn persistent_open(report: &mut Report) -> BenchResult<()> {
    let dir = tempfile::tempdir()?;
    let config = Config::new().pglite(DataDir::Path(dir.path().join("data")));
    let pool = PglitePool::open(&config).await?;
    pool.batch_execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (1)")
        .await?;
    pool.close().await;
    drop(pool);
    let mut s = Samples::default();
    for _ in 0..3 {
        let t = Instant::now();
        let pool = PglitePool::open(&config).await?;
        pool.execute("SELECT v FROM kept", &[]).await?;
        s.push(t.elapsed());
        pool.close().await;
    }
    let median = s.summary().map(|s| s.median_us / 1e6);
    report.figures.push((
        "open an existing persistent database: db-pglite".into(),
        format!("{:.0} ms", median.unwrap_or(0.0) * 1e3),
    ));
    report.ratio("persistent open, seconds", median, "< 0.5", |v| v < 0.5);
    Ok(())
}

/// Runs the embedded-only workloads in a child process and reads its peak RSS.
fn peak_memory(report: &mut Report, quick: bool) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--embedded-only");
    if quick {
        cmd.arg("--quick");
    }
    let kib = cmd
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        });
    let mb = kib.map(|k| k / 1024.0);
    report.figures.push((
        "peak RSS of a process running the db-pglite workloads".into(),
        mb.map_or("n/a".into(), |m| format!("{m:.0} MB")),
    ));
    report.ratio(
        "peak memory of the embedded process, MB",
        mb,
        "< 300",
        |v| v < 300.0,
    );
}

fn ratios(report: &mut Report) {
    let point = "point SELECT by primary key";
    for condition in [IDLE, BUSY] {
        let of = |contender: &str| report.summary(Some(condition), point, contender);
        let db = of(Kind::DbPglite.name());
        let raw = of(Kind::OxideRaw.name());
        let query = of(Kind::OxideQuery.name());
        let postgres = of(Kind::DbPostgres.name());
        let node = of(crate::node::NAME);
        let median = |s: Option<Summary>| s.map(|s| s.median_us);
        let p99 = |s: Option<Summary>| s.map(|s| s.p99_us);
        let div = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        report.ratio(
            &format!("{condition}: db-pglite point SELECT / raw wire, median"),
            div(median(db), median(raw)),
            "<= 1.5",
            |v| v <= 1.5,
        );
        report.ratio(
            &format!("{condition}: db-pglite point SELECT / raw wire, p99"),
            div(p99(db), p99(raw)),
            "<= 3",
            |v| v <= 3.0,
        );
        report.ratio(
            &format!("{condition}: Pglite::query point SELECT / db-pglite"),
            div(median(query), median(db)),
            ">= 2",
            |v| v >= 2.0,
        );
        report.ratio(
            &format!("{condition}: db-postgres point SELECT / db-pglite"),
            div(median(postgres), median(db)),
            ">= 3",
            |v| v >= 3.0,
        );
        if node.is_some() {
            report.ratio(
                &format!("{condition}: Node PGlite point SELECT / db-pglite"),
                div(median(node), median(db)),
                ">= 6",
                |v| v >= 6.0,
            );
        }
        let names: Vec<String> = report
            .workloads
            .iter()
            .filter(|w| w.condition.as_deref() == Some(condition))
            .map(|w| w.name.clone())
            .collect();
        for w in names {
            let of = |contender: &str| {
                report
                    .summary(Some(condition), &w, contender)
                    .map(|s| s.median_us)
            };
            let (pg, sqlx) = (of(Kind::DbPostgres.name()), of(Kind::Sqlx.name()));
            if sqlx.is_some() {
                report.ratio(
                    &format!("{condition}: db-postgres / sqlx: {w}"),
                    div(pg, sqlx),
                    "<= 1.1",
                    |v| v <= 1.1,
                );
            }
        }
    }
}
