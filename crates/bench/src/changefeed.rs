//! Change feeds on PGlite and PostgreSQL 15: what a feed costs writers,
//! commit-to-event latency, delivery throughput to one subscriber, and what
//! 100 subscribers cost against one.

use std::time::{Duration, Instant};

use changefeed::{Event, Feed, Filter, Query, Start};
use db::{AnyPool, Config, DataDir, PgPool, PglitePool, Pool, Value};
use tokio::sync::mpsc;

use crate::contender::BenchResult;
use crate::stats::Samples;
use crate::test_databases::fixture_ddl;
use crate::{Entry, Options, Report, Workload};

/// The feed's schema: its own, so that the shared server's other workloads
/// and earlier runs do not matter.
const SCHEMA: &str = "bench_cf";
/// Where the fixture's `projects` table without a feed lives.
const PLAIN_SCHEMA: &str = "bench_cf_plain";
const SETUP: &str = "
DROP SCHEMA IF EXISTS bench_cf CASCADE;
DROP SCHEMA IF EXISTS bench_cf_plain CASCADE;
CREATE SCHEMA bench_cf;
CREATE SCHEMA bench_cf_plain;
CREATE TABLE bench_cf.plain (id bigserial PRIMARY KEY, owner text NOT NULL, n int8 NOT NULL, title text);
CREATE TABLE bench_cf.fed (id bigserial PRIMARY KEY, owner text NOT NULL, n int8 NOT NULL, title text);
";
/// How long to wait for events before calling the run broken.
const DEADLINE: Duration = Duration::from_secs(30);
/// Subscribers in the fan-out workload.
const FAN_OUT: i64 = 100;

struct Sizes {
    rounds: usize,
    singles: usize,
    hundreds: usize,
    latency: usize,
    bulk: i64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                rounds: 2,
                singles: 300,
                hundreds: 20,
                latency: 100,
                bulk: 5_000,
            }
        } else {
            Sizes {
                rounds: 5,
                singles: 1_000,
                hundreds: 60,
                latency: 500,
                bulk: 20_000,
            }
        }
    }
}

/// What the writer does, one statement at a time.
#[derive(Clone, Copy)]
enum Write {
    /// An autocommit single-row INSERT.
    Single,
    /// An autocommit 100-row INSERT ... SELECT.
    Hundred,
    /// An autocommit INSERT of a project into the fixture's `projects`
    /// table (55 columns, 15 indexes), as the hub writes one.
    Project,
}

impl Write {
    fn name(self) -> &'static str {
        match self {
            Write::Single => "autocommit 1-row INSERT",
            Write::Hundred => "autocommit 100-row INSERT ... SELECT",
            Write::Project => "autocommit INSERT of a project (fixture table)",
        }
    }

    fn rows(self) -> usize {
        match self {
            Write::Single | Write::Project => 1,
            Write::Hundred => 100,
        }
    }

    /// The table written to (qualified) and its name, with or without a feed.
    fn table(self, fed: bool) -> (String, &'static str) {
        let (schema, name) = match (self, fed) {
            (Write::Project, true) => (SCHEMA, "projects"),
            (Write::Project, false) => (PLAIN_SCHEMA, "projects"),
            (_, true) => (SCHEMA, "fed"),
            (_, false) => (SCHEMA, "plain"),
        };
        (format!("{schema}.{name}"), name)
    }

    async fn run(self, pool: &AnyPool, table: &str, i: usize) -> BenchResult<()> {
        match self {
            Write::Single => {
                pool.execute(
                    &format!("INSERT INTO {table} (owner, n, title) VALUES ($1, $2, $3)"),
                    &[
                        Value::Text(format!("owner {}", i % 10)),
                        Value::Int8(i as i64),
                        Value::Text(format!("title of row {i}")),
                    ],
                )
                .await?;
            }
            Write::Hundred => {
                pool.execute(
                    &format!(
                        "INSERT INTO {table} (owner, n, title)
                         SELECT 'owner ' || (g % 10), g, 'title of row ' || g
                         FROM generate_series($1::int8, $1::int8 + 99) g"
                    ),
                    &[Value::Int8(i as i64 * 100)],
                )
                .await?;
            }
            Write::Project => {
                pool.execute(
                    &format!(
                        "INSERT INTO {table} (project_id, title, description, users, state,
                             created, last_edited, last_active, region, rootfs_image, run_quota)
                         VALUES (gen_random_uuid(), $1, $2, $3, $4, now(), now(), $5, 'us-west', $6, $7)"
                    ),
                    &[
                        Value::Text(format!("Project {i}")),
                        Value::Text(format!("A project of owner {}", i % 10)),
                        Value::Json(serde_json::json!({
                            format!("0000000{}-0000-4000-8000-000000000000", i % 10): {"group": "owner"}
                        })),
                        Value::Json(serde_json::json!({"state": "opened", "time": "2026-11-28T00:00:00Z"})),
                        Value::Json(serde_json::json!({})),
                        Value::Text("ubuntu:24.04".into()),
                        Value::Json(serde_json::json!({"memory": 2000, "cores": 1, "network": true})),
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The writer's situation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A table without a feed.
    NoFeed,
    /// The feed's trigger on the table, no reader running.
    TriggerOnly,
    /// The feed's trigger and a reader with one live subscriber consuming.
    Live,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::NoFeed, Mode::TriggerOnly, Mode::Live];

    fn name(self) -> &'static str {
        match self {
            Mode::NoFeed => "no feed",
            Mode::TriggerOnly => "feed trigger, no reader",
            Mode::Live => "feed + 1 live subscriber",
        }
    }
}

/// A reader with subscribers whose events arrive, with their arrival time,
/// on one channel.
struct Reader {
    feed: Feed<AnyPool>,
    arrivals: mpsc::UnboundedReceiver<(i64, Instant)>,
}

impl Reader {
    async fn start(pool: &AnyPool, table: &str, filters: &[Option<Filter>]) -> BenchResult<Reader> {
        let options = changefeed::Options::new()
            .schema(SCHEMA)
            .subscriber_buffer(1 << 16);
        let feed = Feed::start(pool.clone(), options).await?;
        let (tx, arrivals) = mpsc::unbounded_channel();
        for filter in filters {
            let mut query = Query::table(format!("{SCHEMA}.{table}"));
            if let Some(f) = filter {
                query = query.filter(f.clone());
            }
            let mut sub = feed.subscribe(query, Start::Now).await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(event) = sub.recv().await {
                    if let Event::Insert { row, .. } = event {
                        let n = row.get("n").and_then(|v| v.as_i64()).unwrap_or(-1);
                        if tx.send((n, Instant::now())).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        Ok(Reader { feed, arrivals })
    }

    /// Waits for `count` events; returns when the last one arrived.
    async fn wait(&mut self, count: usize) -> BenchResult<Instant> {
        let mut last = Instant::now();
        for _ in 0..count {
            match tokio::time::timeout(DEADLINE, self.arrivals.recv()).await {
                Ok(Some((_, at))) => last = at,
                Ok(None) => return Err("a subscription ended".into()),
                Err(_) => return Err(format!("no event within {DEADLINE:?}").into()),
            }
        }
        Ok(last)
    }

    fn close(self) {
        self.feed.close();
    }
}

pub(crate) async fn run(report: &mut Report, o: &Options) -> BenchResult<()> {
    let sizes = Sizes::new(o.quick);
    let pglite = PglitePool::open(&Config::new().pglite(DataDir::Memory)).await?;
    let mut backends = vec![("db-pglite", AnyPool::Pglite(pglite), 5.0)];
    if let Some(url) = &o.postgres_url {
        let pg = PgPool::connect_url(url).await?;
        backends.push(("db-postgres (PG 15)", AnyPool::Postgres(pg), 20.0));
    }
    for (_, pool, _) in &backends {
        pool.batch_execute(SETUP).await?;
        for schema in [SCHEMA, PLAIN_SCHEMA] {
            let projects = fixture_ddl(schema, |table| table == "projects")?;
            pool.batch_execute(&projects).await?;
        }
        // Installs the triggers; the feed is started again per measurement.
        let feed = Feed::start(pool.clone(), changefeed::Options::new().schema(SCHEMA)).await?;
        feed.enable(&format!("{SCHEMA}.fed")).await?;
        feed.enable(&format!("{SCHEMA}.projects")).await?;
        feed.close();
    }
    for write in [Write::Single, Write::Hundred, Write::Project] {
        writer_cost(report, &backends, &sizes, write).await?;
    }
    let mut latencies = Vec::new();
    let mut deliveries = Vec::new();
    let mut fan_outs = Vec::new();
    for (label, pool, target_ms) in &backends {
        latencies.push(latency(report, label, pool, sizes.latency, *target_ms).await?);
        deliveries.push(delivery(report, label, pool, &sizes).await?);
        fan_outs.extend(fan_out(report, label, pool, &sizes).await?);
    }
    report.workloads.push(Workload {
        condition: None,
        name: "changefeed commit-to-event latency, 1 subscriber".into(),
        unit: "autocommit 1-row INSERT returned to event received".into(),
        entries: latencies,
    });
    report.workloads.push(Workload {
        condition: None,
        name: format!(
            "changefeed delivery of {} committed inserts to 1 subscriber",
            sizes.bulk
        ),
        unit: "commit to last event received".into(),
        entries: deliveries,
    });
    report.workloads.push(Workload {
        condition: None,
        name: format!(
            "changefeed fan-out: {} inserts, subscribers with distinct filters",
            sizes.bulk
        ),
        unit: "commit to every subscriber's last event".into(),
        entries: fan_outs,
    });
    for (_, pool, _) in backends {
        pool.close().await;
    }
    snapshot_memory(report, o).await
}

/// Statement times of `write` with no feed, with only the trigger, and with
/// a live subscriber; the throughput ratio with / without a feed.
async fn writer_cost(
    report: &mut Report,
    backends: &[(&str, AnyPool, f64)],
    sizes: &Sizes,
    write: Write,
) -> BenchResult<()> {
    let per_round = match write {
        Write::Single | Write::Project => sizes.singles,
        Write::Hundred => sizes.hundreds,
    };
    let mut entries = Vec::new();
    for (label, pool, _) in backends {
        let mut samples = [Samples::default(), Samples::default(), Samples::default()];
        let mut totals = [Duration::ZERO; 3];
        let mut i = 0;
        for _ in 0..sizes.rounds {
            for (k, mode) in Mode::ALL.into_iter().enumerate() {
                let (table, name) = write.table(mode != Mode::NoFeed);
                let table = table.as_str();
                let mut reader = match mode {
                    Mode::Live => Some(Reader::start(pool, name, &[None]).await?),
                    _ => None,
                };
                // One untimed warm-up statement.
                i += 1;
                write.run(pool, table, i).await?;
                for _ in 0..per_round {
                    i += 1;
                    let t = Instant::now();
                    write.run(pool, table, i).await?;
                    let took = t.elapsed();
                    samples[k].push(took);
                    totals[k] += took;
                }
                if let Some(mut r) = reader.take() {
                    r.wait((per_round + 1) * write.rows()).await?;
                    r.close();
                }
            }
        }
        let rows = (sizes.rounds * per_round * write.rows()) as f64;
        let rate = |k: usize| rows / totals[k].as_secs_f64();
        for (k, mode) in Mode::ALL.into_iter().enumerate() {
            report.figures.push((
                format!("{label}: rows/s, {}, {}", write.name(), mode.name()),
                format!("{:.0}", rate(k)),
            ));
            entries.push(Entry {
                contender: format!("{label}, {}", mode.name()),
                summary: samples[k].summary(),
                note: None,
            });
        }
        report.ratio(
            &format!("{label}: {} rows/s, live feed / no feed", write.name()),
            Some(rate(2) / rate(0)),
            ">= 0.67",
            |v| v >= 0.67,
        );
    }
    report.workloads.push(Workload {
        condition: None,
        name: format!("changefeed cost to writers: {}", write.name()),
        unit: "per statement".into(),
        entries,
    });
    Ok(())
}

/// One autocommit insert at a time, each waited for: the time from the
/// INSERT returning to its event arriving.
async fn latency(
    report: &mut Report,
    label: &str,
    pool: &AnyPool,
    count: usize,
    target_ms: f64,
) -> BenchResult<Entry> {
    let mut reader = Reader::start(pool, "fed", &[None]).await?;
    let (fed, _) = Write::Single.table(true);
    let mut samples = Samples::default();
    for i in 0..=count {
        Write::Single.run(pool, &fed, 1_000_000 + i).await?;
        let committed = Instant::now();
        let arrived = reader.wait(1).await?;
        // The first one is a warm-up.
        if i > 0 {
            samples.push(arrived.saturating_duration_since(committed));
        }
    }
    reader.close();
    let summary = samples.summary();
    report.ratio(
        &format!("{label}: changefeed commit-to-event p99, ms"),
        summary.map(|s| s.p99_us / 1e3),
        &format!("< {target_ms:.0}"),
        move |v| v < target_ms,
    );
    Ok(Entry {
        contender: label.to_owned(),
        summary,
        note: None,
    })
}

/// Inserts `count` rows in one statement, `n` cycling through 0..FAN_OUT.
async fn insert_bulk(pool: &AnyPool, count: i64) -> BenchResult<Instant> {
    pool.execute(
        &format!(
            "INSERT INTO {SCHEMA}.fed (owner, n, title)
             SELECT 'owner ' || (g % 10), g % {FAN_OUT}, 'title of row ' || g
             FROM generate_series(1, $1::int8) g"
        ),
        &[Value::Int8(count)],
    )
    .await?;
    Ok(Instant::now())
}

/// Events per second from one committed bulk insert to one subscriber.
async fn delivery(
    report: &mut Report,
    label: &str,
    pool: &AnyPool,
    sizes: &Sizes,
) -> BenchResult<Entry> {
    let mut samples = Samples::default();
    for _ in 0..sizes.rounds {
        let mut reader = Reader::start(pool, "fed", &[None]).await?;
        let committed = insert_bulk(pool, sizes.bulk).await?;
        let last = reader.wait(sizes.bulk as usize).await?;
        samples.push(last.saturating_duration_since(committed));
        reader.close();
    }
    let summary = samples.summary();
    let rate = summary.map(|s| sizes.bulk as f64 / (s.median_us / 1e6));
    report.ratio(
        &format!("{label}: changefeed events/s to one subscriber"),
        rate,
        ">= 5000",
        |v| v >= 5000.0,
    );
    Ok(Entry {
        contender: label.to_owned(),
        summary,
        note: None,
    })
}

/// The same committed bulk insert delivered to 1 subscriber and to 100,
/// each with its own filter (`n = k`): one reader serves them all, so 100
/// should cost about what 1 does.
async fn fan_out(
    report: &mut Report,
    label: &str,
    pool: &AnyPool,
    sizes: &Sizes,
) -> BenchResult<Vec<Entry>> {
    let filter = |k: i64| -> BenchResult<Filter> { Ok(format!("n = {k}").parse()?) };
    let one = vec![Some(filter(0)?)];
    let hundred = (0..FAN_OUT)
        .map(|k| filter(k).map(Some))
        .collect::<BenchResult<Vec<_>>>()?;
    let mut samples = [Samples::default(), Samples::default()];
    for _ in 0..sizes.rounds {
        for (k, filters) in [&one, &hundred].into_iter().enumerate() {
            let mut reader = Reader::start(pool, "fed", filters).await?;
            let committed = insert_bulk(pool, sizes.bulk).await?;
            let expected = (sizes.bulk / FAN_OUT) as usize * filters.len();
            let last = reader.wait(expected).await?;
            samples[k].push(last.saturating_duration_since(committed));
            reader.close();
        }
    }
    let [one, hundred] = samples.map(|s| s.summary());
    report.ratio(
        &format!("{label}: changefeed 100-subscriber / 1-subscriber delivery time"),
        one.zip(hundred).map(|(a, b)| b.median_us / a.median_us),
        "<= 2",
        |v| v <= 2.0,
    );
    Ok(vec![
        Entry {
            contender: format!("{label}, 1 subscriber"),
            summary: one,
            note: None,
        },
        Entry {
            contender: format!("{label}, {FAN_OUT} subscribers"),
            summary: hundred,
            note: None,
        },
    ])
}

/// The database the snapshot-memory measurement uses on the server.
const SNAPSHOT_DATABASE: &str = "bench_cf_snapshot";

/// Peak memory of `cocalc-db watch --from snapshot` on a table of many rows,
/// filtered to one row (the issue's `--where "id = 1"`) and whole, as child
/// processes, so that the peak is the snapshot's alone.
async fn snapshot_memory(report: &mut Report, o: &Options) -> BenchResult<()> {
    let binary = crate::migrate::cocalc_db(o)?;
    let rows: i64 = if o.quick { 50_000 } else { 500_000 };
    let fill = format!(
        "CREATE TABLE bigw (id int8 PRIMARY KEY, owner text NOT NULL, n int8 NOT NULL, title text);
         INSERT INTO bigw SELECT g, 'owner' || (g % 100), g, repeat('x', 60) FROM generate_series(1, {rows}) g"
    );
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("db");
    let mut targets = Vec::new();
    {
        let pool = AnyPool::Pglite(
            PglitePool::open(&Config::new().pglite(DataDir::Path(data.clone()))).await?,
        );
        prepare_bigw(&pool, &fill).await?;
        pool.close().await;
        targets.push(("PGlite", crate::migrate::on_embedded(&binary, &data)));
    }
    let admin = match &o.postgres_url {
        Some(url) => {
            let admin = PgPool::connect_url(url).await?;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {SNAPSHOT_DATABASE}"))
                .await?;
            admin
                .batch_execute(&format!("CREATE DATABASE {SNAPSHOT_DATABASE}"))
                .await?;
            let target = crate::schema_sync::with_database(url, SNAPSHOT_DATABASE);
            let pool = AnyPool::Postgres(PgPool::connect_url(&target).await?);
            prepare_bigw(&pool, &fill).await?;
            pool.close().await;
            let mut command = std::process::Command::new(&binary);
            command.arg("--database-url").arg(&target);
            targets.push(("PG 15", command));
            Some(admin)
        }
        None => None,
    };
    for (backend, base) in &targets {
        // The floor: the same process counting the table's rows in SQL.
        let mut count = std::process::Command::new(base.get_program());
        count
            .args(base.get_args())
            .args(["sql", "SELECT count(*) FROM bigw"]);
        let floor = crate::migrate::measure("cocalc-db sql", count).await?;
        report.steps.push(crate::Step {
            name: format!("baseline: cocalc-db sql \"SELECT count(*) FROM bigw\", {backend}"),
            rows: u64::try_from(rows).unwrap_or(0),
            seconds: floor.elapsed.as_secs_f64(),
            peak_rss_mb: floor.peak_rss_kib.map(|k| k as f64 / 1024.0),
        });
        for (what, filter, want) in [
            ("filtered to 1 row (--where \"id = 1\")", Some("id = 1"), 1),
            ("whole table", None, rows),
        ] {
            let mut command = std::process::Command::new(base.get_program());
            command.args(base.get_args());
            command.args(["watch", "bigw", "--from", "snapshot"]);
            if let Some(f) = filter {
                command.args(["--where", f]);
            }
            let (seconds, got, peak) = watch_snapshot(command).await?;
            if got != want {
                return Err(format!("snapshot of bigw {what}: {got} rows, expected {want}").into());
            }
            let peak_mb = peak.map(|k| k as f64 / 1024.0);
            report.steps.push(crate::Step {
                name: format!("changefeed snapshot of {rows} rows, {what}, {backend}"),
                rows: u64::try_from(got).unwrap_or(0),
                seconds,
                peak_rss_mb: peak_mb,
            });
            if filter.is_some() {
                report.ratio(
                    &format!(
                        "peak RSS MB of watch --from snapshot --where \"id = 1\" on {rows} rows, {backend}"
                    ),
                    peak_mb,
                    "< 50",
                    |mb| mb < 50.0,
                );
            }
        }
    }
    if let Some(admin) = admin {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {SNAPSHOT_DATABASE}"))
            .await?;
        admin.close().await;
    }
    Ok(())
}

async fn prepare_bigw(pool: &AnyPool, fill: &str) -> BenchResult<()> {
    pool.batch_execute(fill).await?;
    pool.batch_execute("VACUUM ANALYZE bigw").await?;
    let feed = Feed::start(pool.clone(), changefeed::Options::new()).await?;
    feed.enable("bigw").await?;
    feed.close();
    Ok(())
}

/// Runs `watch` until its snapshot ends, then stops it with SIGTERM:
/// seconds to the end, snapshot rows, peak RSS in KiB.
async fn watch_snapshot(
    mut command: std::process::Command,
) -> BenchResult<(f64, i64, Option<u64>)> {
    use std::io::BufRead;
    use std::process::Stdio;
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cocalc-db watch: {e}"))?;
        let stdout = child.stdout.take().ok_or("cocalc-db watch: no stdout")?;
        let pid = child.id();
        let reader = std::thread::spawn(move || {
            let mut rows = 0_i64;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("\"kind\":\"snapshot_end\"") {
                    return Some((rows, started.elapsed()));
                }
                if line.contains("\"kind\":\"snapshot_row\"") {
                    rows += 1;
                }
            }
            None
        });
        let mut peak = None;
        while !reader.is_finished() {
            if let Some(kib) = crate::migrate::peak_rss_kib(pid) {
                peak = Some(peak.map_or(kib, |p: u64| p.max(kib)));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(kib) = crate::migrate::peak_rss_kib(pid) {
            peak = Some(peak.map_or(kib, |p: u64| p.max(kib)));
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = child.wait();
        let (rows, elapsed) = reader
            .join()
            .ok()
            .flatten()
            .ok_or("cocalc-db watch ended before its snapshot did")?;
        Ok((elapsed.as_secs_f64(), rows, peak))
    })
    .await?
}
