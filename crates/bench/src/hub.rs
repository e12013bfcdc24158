//! The hub slice (`crates/hub-slice`) under a request mix of simulated
//! users, each with a live list of their projects, on PGlite and on
//! PostgreSQL 15 side by side: p50/p99 per request and requests/s at 1, 8
//! and 64 concurrent users.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use db::{AnyPool, Config, DataDir, Pool};
use hub_slice::{Heartbeat, HostCapacity, Hub, LiveProjects, NewAccount, RunState};
use serde::Serialize;
use uuid::Uuid;

use crate::contender::BenchResult;
use crate::stats::{Samples, Summary, median, range};
use crate::test_databases::FIXTURE;
use crate::{Entry, Options, Report, Workload};

/// The database the workload makes on the server.
const DATABASE: &str = "bench_hub";
/// Accounts seeded: the most simulated users at once.
const USERS: usize = 64;
/// Projects each account owns.
const OWNED: usize = 4;
/// Hosts sending heartbeats.
const HOSTS: usize = 16;
/// Concurrent users measured, each with a live list.
const LEVELS: [usize; 3] = [1, 8, 64];
/// The level also measured without live lists, and without a feed at all
/// (no trigger on `projects`, no reader), to show what they cost.
const WITHOUT_LIVE: usize = 8;

/// What keeps the users' project lists live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// A live list per user, kept by the feed.
    LiveLists,
    /// The feed runs (trigger and reader), no live lists.
    FeedOnly,
    /// No feed on `projects`: no trigger, no reader.
    NoFeed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::LiveLists => "yes",
            Mode::FeedOnly => "feed",
            Mode::NoFeed => "none",
        }
    }
}
/// How long the live lists may take to show the last write after the load.
const CONVERGE: Duration = Duration::from_secs(60);

/// One request of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    ListProjects,
    GetProject,
    Heartbeat,
    StateChange,
    Collaborator,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::ListProjects,
        Op::GetProject,
        Op::Heartbeat,
        Op::StateChange,
        Op::Collaborator,
    ];

    /// The mix, in percent: 80% reads.
    fn pick(roll: u64) -> Op {
        match roll % 100 {
            0..40 => Op::ListProjects,
            40..80 => Op::GetProject,
            80..88 => Op::Heartbeat,
            88..94 => Op::StateChange,
            _ => Op::Collaborator,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::ListProjects => "list projects (40%)",
            Op::GetProject => "get project (40%)",
            Op::Heartbeat => "host heartbeat (8%)",
            Op::StateChange => "state change, 1 tx (6%)",
            Op::Collaborator => "collaborator add/remove, 1 tx (6%)",
        }
    }
}

/// A small deterministic generator (xorshift64*), so every backend gets the
/// same request sequence.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What the seed made, and what the owners' writes change, per backend.
/// Only a project's owner changes its state and collaborators, and one
/// user is one task, so these stay exact without reading them back.
struct World {
    accounts: Vec<Uuid>,
    /// Projects by owner (index into `accounts`).
    owned: Vec<Vec<Uuid>>,
    /// Projects each account can open: its own and those it collaborates
    /// on at the seed.
    visible: Vec<Vec<Uuid>>,
    hosts: Vec<Uuid>,
    states: Mutex<HashMap<Uuid, RunState>>,
    members: Mutex<HashSet<(Uuid, Uuid)>>,
}

/// One backend under test.
struct Backend {
    label: &'static str,
    pool: AnyPool,
    world: Arc<World>,
}

/// One measured run of one level on one backend.
struct RunResult {
    per_op: BTreeMap<Op, Samples>,
    all: Samples,
    requests: usize,
    wall: Duration,
    /// Cores this process used on average (PGlite's backend included; a
    /// server's processes are not).
    process_cores: f64,
    /// From the last request's end until every live list showed the
    /// database's state.
    converge: Option<Duration>,
}

/// One row of the hub table: a backend at one level, across runs.
#[derive(Debug, Serialize)]
pub(crate) struct HubRow {
    backend: String,
    users: usize,
    live_lists: Mode,
    runs: usize,
    requests_per_run: usize,
    /// Median of the runs' requests/s, and their range.
    requests_per_s: f64,
    requests_per_s_lo: f64,
    requests_per_s_hi: f64,
    /// Every request of every run: median of the runs' medians and p99s.
    all: Option<Summary>,
    per_op: Vec<(String, Option<Summary>)>,
    process_cores: f64,
    /// Median time for the live lists to show the last write after the load.
    converge_ms: Option<f64>,
}

impl HubRow {
    pub(crate) fn print_header() {
        println!(
            "{:<22} {:>5} {:>5} {:>20} {:>9} {:>9} {:>7} {:>10}",
            "backend",
            "users",
            "live",
            "req/s (runs' range)",
            "p50 µs",
            "p99 µs",
            "cores",
            "converge"
        );
    }

    pub(crate) fn print(&self) {
        let (p50, p99) = self
            .all
            .map_or((f64::NAN, f64::NAN), |s| (s.median_us, s.p99_us));
        println!(
            "{:<22} {:>5} {:>5} {:>8.0} ({:>5.0}-{:>5.0}) {:>9.0} {:>9.0} {:>7.2} {:>10}",
            self.backend,
            self.users,
            self.live_lists.name(),
            self.requests_per_s,
            self.requests_per_s_lo,
            self.requests_per_s_hi,
            p50,
            p99,
            self.process_cores,
            self.converge_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"))
        );
        let ops: Vec<String> = self
            .per_op
            .iter()
            .filter_map(|(name, s)| s.map(|s| format!("{name} {:.0}/{:.0}", s.median_us, s.p99_us)))
            .collect();
        println!("{:<34} p50/p99 µs: {}", "", ops.join("; "));
    }
}

fn sizes(o: &Options) -> (usize, usize) {
    // (requests per run and level, runs)
    if o.quick {
        (800, o.runs.unwrap_or(1))
    } else {
        (4_000, o.runs.unwrap_or(3))
    }
}

pub(crate) async fn run(report: &mut Report, o: &Options) -> BenchResult<()> {
    let (requests, runs) = sizes(o);
    let load_before = load_average();
    let text = std::fs::read_to_string(FIXTURE).map_err(|e| format!("reading {FIXTURE}: {e}"))?;
    let spec = schema_sync::Schema::from_json(&text)?;

    let mut backends = Vec::new();
    let pglite = AnyPool::connect(&Config::new().pglite(DataDir::Memory)).await?;
    backends.push(setup("db-pglite", pglite, &spec).await?);
    let admin = match &o.postgres_url {
        Some(url) => {
            let admin = AnyPool::connect(&Config::new().postgres_url(url.clone())).await?;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
                .await?;
            admin
                .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                .await?;
            let target = crate::schema_sync::with_database(url, DATABASE);
            let pool = AnyPool::connect(&Config::new().postgres_url(target)).await?;
            backends.push(setup("db-postgres (PG 15)", pool, &spec).await?);
            Some(admin)
        }
        None => None,
    };

    // Warm-up, untimed: every statement prepared, caches filled.
    for b in &backends {
        measure(b, WITHOUT_LIVE, Mode::LiveLists, requests / 4, u64::MAX).await?;
    }
    // Where one request's time goes, one at a time on an otherwise idle pool.
    for b in &backends {
        diagnose(report, b, if o.quick { 100 } else { 300 }).await?;
    }
    let mut conditions: Vec<(usize, Mode)> = LEVELS.iter().map(|&l| (l, Mode::LiveLists)).collect();
    conditions.push((WITHOUT_LIVE, Mode::FeedOnly));
    conditions.push((WITHOUT_LIVE, Mode::NoFeed));
    let mut results: BTreeMap<(usize, Mode, usize), Vec<RunResult>> = BTreeMap::new();
    for run in 0..runs {
        for (k, &(users, live)) in conditions.iter().enumerate() {
            // Each round starts with another backend.
            for i in 0..backends.len() {
                let b = (run + k + i) % backends.len();
                let seed = (run * 1_000 + users) as u64;
                let r = measure(&backends[b], users, live, requests, seed).await?;
                results.entry((users, live, b)).or_default().push(r);
            }
        }
    }
    let mut rows = Vec::new();
    for &(users, live) in &conditions {
        let mut entries = Vec::new();
        for (b, backend) in backends.iter().enumerate() {
            let Some(rs) = results.get(&(users, live, b)) else {
                continue;
            };
            let row = summarize(backend.label, users, live, requests, rs);
            entries.push(Entry {
                contender: backend.label.to_owned(),
                summary: row.all,
                note: None,
            });
            rows.push(row);
        }
        report.workloads.push(Workload {
            condition: None,
            name: format!(
                "hub request mix, {users} concurrent users{}",
                match live {
                    Mode::LiveLists => ", each with a live project list",
                    Mode::FeedOnly => ", no live lists (feed running)",
                    Mode::NoFeed => ", no feed on projects",
                }
            ),
            unit: "per request".into(),
            entries,
        });
    }
    let at8 = |label: &str| {
        rows.iter()
            .find(|r| r.users == 8 && r.live_lists == Mode::LiveLists && r.backend == label)
    };
    if let Some(p) = at8("db-pglite") {
        report.ratio(
            "hub, 8 users: db-pglite p99 per request, ms",
            p.all.map(|s| s.p99_us / 1e3),
            "< 2",
            |v| v < 2.0,
        );
        if let Some(q) = at8("db-postgres (PG 15)") {
            report.ratio(
                "hub, 8 users: db-pglite / db-postgres requests/s",
                Some(p.requests_per_s / q.requests_per_s),
                ">= 1.5",
                |v| v >= 1.5,
            );
        }
    }
    report.hub = rows;
    report.figures.push((
        "hub: load average (1, 5, 15 min) before / after".into(),
        format!("{load_before} / {}", load_average()),
    ));
    report.figures.push((
        "hub: seed".into(),
        format!(
            "{USERS} accounts, {OWNED} projects each, 2 collaborations each, {HOSTS} hosts; {requests} requests per run and level, {runs} runs"
        ),
    ));
    for b in backends {
        b.pool.close().await;
    }
    if let Some(admin) = admin {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .await?;
        admin.close().await;
    }
    Ok(())
}

/// The fixture schema, then the seed.
async fn setup(
    label: &'static str,
    pool: AnyPool,
    spec: &schema_sync::Schema,
) -> BenchResult<Backend> {
    schema_sync::sync(&pool, spec, &schema_sync::Options::new()).await?;
    let hub = Hub::start(pool.clone()).await?;
    let mut accounts = Vec::new();
    for i in 0..USERS {
        let a = hub
            .create_account(&NewAccount {
                email_address: format!("user{i}@example.com"),
                first_name: format!("User {i}"),
                last_name: "Bench".into(),
            })
            .await?;
        accounts.push(a.account_id);
    }
    let mut owned = vec![Vec::new(); USERS];
    let mut states = HashMap::new();
    let mut members = HashSet::new();
    for (i, &a) in accounts.iter().enumerate() {
        for k in 0..OWNED {
            let p = hub
                .create_project(a, &format!("Project {k} of user {i}"), "seeded")
                .await?;
            states.insert(p.project_id, RunState::Opened);
            members.insert((p.project_id, a));
            owned[i].push(p.project_id);
        }
    }
    let mut visible = owned.clone();
    for i in 0..USERS {
        for other in [(i + 1) % USERS, (i + 7) % USERS] {
            let p = owned[other][i % OWNED];
            hub.add_collaborator(p, accounts[i]).await?;
            members.insert((p, accounts[i]));
            visible[i].push(p);
        }
    }
    let hosts: Vec<Uuid> = (0..HOSTS).map(|_| Uuid::new_v4()).collect();
    for (i, &h) in hosts.iter().enumerate() {
        hub.heartbeat(&beat(h, i, 0)).await?;
    }
    hub.close();
    Ok(Backend {
        label,
        pool,
        world: Arc::new(World {
            accounts,
            owned,
            visible,
            hosts,
            states: Mutex::new(states),
            members: Mutex::new(members),
        }),
    })
}

fn beat(host_id: Uuid, i: usize, projects: u32) -> Heartbeat {
    Heartbeat {
        host_id,
        name: format!("host-{i}"),
        region: "us-west1".into(),
        status: "running".into(),
        version: "1.0.0".into(),
        capacity: HostCapacity {
            cores: 16,
            memory_mb: 65_536,
            projects,
        },
    }
}

/// `users` simulated users, each running `requests / users` requests of
/// the mix one after another (and, with `live`, keeping a live list), all
/// at once.
async fn measure(
    backend: &Backend,
    users: usize,
    mode: Mode,
    requests: usize,
    seed: u64,
) -> BenchResult<RunResult> {
    let hub = Arc::new(match mode {
        Mode::NoFeed => {
            // Removes the trigger; the next Hub::start installs it again.
            let feed =
                changefeed::Feed::start(backend.pool.clone(), changefeed::Options::new()).await?;
            feed.disable("projects").await?;
            feed.close();
            Hub::without_feed(backend.pool.clone())
        }
        _ => Hub::start(backend.pool.clone()).await?,
    });
    let live = mode == Mode::LiveLists;
    let mut lists = Vec::new();
    if live {
        for &a in &backend.world.accounts[..users] {
            lists.push(hub.live_projects(a).await?);
        }
        for l in &lists {
            tokio::time::timeout(CONVERGE, l.ready())
                .await
                .map_err(|_| "a live list never became ready")??;
        }
    }
    let per_user = requests.div_ceil(users);
    let cpu = crate::machine::cpu_time();
    let started = Instant::now();
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            let hub = Arc::clone(&hub);
            let world = Arc::clone(&backend.world);
            tokio::spawn(user(hub, world, u, per_user, seed))
        })
        .collect();
    let mut per_op: BTreeMap<Op, Samples> = BTreeMap::new();
    let mut all = Samples::default();
    for t in tasks {
        for (op, took) in t.await?? {
            per_op.entry(op).or_default().push(took);
            all.push(took);
        }
    }
    let wall = started.elapsed();
    let process_cores = match (cpu, crate::machine::cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() / wall.as_secs_f64(),
        _ => f64::NAN,
    };
    let converge = if live {
        Some(converged(&hub, &lists).await?)
    } else {
        None
    };
    drop(lists);
    hub.close();
    Ok(RunResult {
        per_op,
        all,
        requests: per_user * users,
        wall,
        process_cores,
        converge,
    })
}

/// Waits until every live list holds what a query gives; how long it took.
async fn converged(hub: &Hub<AnyPool>, lists: &[LiveProjects]) -> BenchResult<Duration> {
    let t = Instant::now();
    for l in lists {
        let want: Vec<Uuid> = hub
            .list_projects(l.account())
            .await?
            .into_iter()
            .map(|p| p.project_id)
            .collect();
        let want: HashSet<Uuid> = want.into_iter().collect();
        let left = CONVERGE.saturating_sub(t.elapsed());
        tokio::time::timeout(
            left,
            l.wait(|p| p.keys().copied().collect::<HashSet<_>>() == want),
        )
        .await
        .map_err(|_| {
            format!(
                "the live list of {} did not converge within {CONVERGE:?} (last error {:?})",
                l.account(),
                l.last_error()
            )
        })??;
    }
    Ok(t.elapsed())
}

/// One simulated user's requests, each timed.
async fn user(
    hub: Arc<Hub<AnyPool>>,
    world: Arc<World>,
    u: usize,
    count: usize,
    seed: u64,
) -> BenchResult<Vec<(Op, Duration)>> {
    let mut rng = Rng::new(seed ^ ((u as u64 + 1) << 32));
    let me = world.accounts[u];
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let op = Op::pick(rng.next());
        let t = Instant::now();
        match op {
            Op::ListProjects => {
                hub.list_projects(me).await?;
            }
            Op::GetProject => {
                let ps = &world.visible[u];
                hub.get_project(ps[rng.below(ps.len())]).await?;
            }
            Op::Heartbeat => {
                let h = rng.below(world.hosts.len());
                hub.heartbeat(&beat(world.hosts[h], h, rng.below(100) as u32))
                    .await?;
            }
            Op::StateChange => {
                let ps = &world.owned[u];
                let p = ps[rng.below(ps.len())];
                let next = match lock(&world.states).get(&p) {
                    Some(RunState::Running) => RunState::Stopped,
                    _ => RunState::Running,
                };
                hub.set_state(p, next, Some(me)).await?;
                lock(&world.states).insert(p, next);
            }
            Op::Collaborator => {
                let ps = &world.owned[u];
                let p = ps[rng.below(ps.len())];
                // Anyone but the owner.
                let mut o = rng.below(world.accounts.len() - 1);
                if o >= u {
                    o += 1;
                }
                let other = world.accounts[o];
                let member = lock(&world.members).contains(&(p, other));
                if member {
                    hub.remove_collaborator(p, other).await?;
                    lock(&world.members).remove(&(p, other));
                } else {
                    hub.add_collaborator(p, other).await?;
                    lock(&world.members).insert((p, other));
                }
            }
        }
        out.push((op, t.elapsed()));
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn summarize(label: &str, users: usize, live: Mode, requests: usize, runs: &[RunResult]) -> HubRow {
    let rates: Vec<f64> = runs
        .iter()
        .map(|r| r.requests as f64 / r.wall.as_secs_f64())
        .collect();
    let (lo, hi) = range(&rates);
    let across = |pick: &dyn Fn(&RunResult) -> Option<Summary>| {
        let v: Vec<Summary> = runs.iter().filter_map(pick).collect();
        if v.is_empty() {
            None
        } else {
            Summary::across(&v)
        }
    };
    let per_op = Op::ALL
        .iter()
        .map(|&op| {
            (
                op.name().to_owned(),
                across(&|r| r.per_op.get(&op).and_then(Samples::summary)),
            )
        })
        .collect();
    let cores: Vec<f64> = runs.iter().map(|r| r.process_cores).collect();
    let converge: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.converge.map(|d| d.as_secs_f64() * 1e3))
        .collect();
    HubRow {
        backend: label.to_owned(),
        users,
        live_lists: live,
        runs: runs.len(),
        requests_per_run: requests,
        requests_per_s: median(&rates).unwrap_or(f64::NAN),
        requests_per_s_lo: lo,
        requests_per_s_hi: hi,
        all: across(&|r| r.all.summary()),
        per_op,
        process_cores: median(&cores).unwrap_or(f64::NAN),
        converge_ms: median(&converge),
    }
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The slice's read statements, as `hub-slice` writes them (its own text is
/// private), for timing their parts.
const GET_SQL: &str = "SELECT project_id, title, description, COALESCE(users, '{}'::jsonb) AS users, \
     state, created, last_edited, COALESCE(deleted, false) AS deleted FROM projects WHERE project_id = $1";
const LIST_SQL: &str = "SELECT project_id, title, description, COALESCE(users, '{}'::jsonb) AS users, \
     state, created, last_edited, COALESCE(deleted, false) AS deleted FROM projects \
     WHERE users ? $1 AND deleted IS NOT TRUE ORDER BY last_edited DESC NULLS LAST, project_id";
const TOUCH_SQL: &str = "UPDATE projects SET last_edited = last_edited WHERE project_id = $1";

/// Times the parts of single requests, alone on the pool: a round trip, the
/// reads with and without decoding into structs, the server's own planning
/// and execution time (`EXPLAIN ANALYZE`), a write through the change
/// feed's trigger, an empty transaction. Recorded as figures.
async fn diagnose(report: &mut Report, b: &Backend, n: usize) -> BenchResult<()> {
    use db::{Client, Executor, Value};
    let hub = Hub::start(b.pool.clone()).await?;
    let me = b.world.accounts[0];
    let project = b.world.owned[0][0];
    let get = [Value::Uuid(project)];
    let list = [Value::Text(me.to_string())];
    let mut figures: Vec<(String, String)> = Vec::new();
    macro_rules! time {
        ($what:expr, $body:expr) => {{
            let mut samples = Samples::default();
            for _ in 0..n {
                let t = Instant::now();
                $body;
                samples.push(t.elapsed());
            }
            if let Some(s) = samples.summary() {
                figures.push((
                    format!("hub diag, {}: {}", b.label, $what),
                    format!("p50 {:.0} µs, p99 {:.0} µs", s.median_us, s.p99_us),
                ));
            }
        }};
    }
    time!(
        "round trip (SELECT 1)",
        b.pool.query("SELECT 1", &[]).await?
    );
    time!("get project, rows", b.pool.query(GET_SQL, &get).await?);
    time!(
        "get project, decoded (Hub::get_project)",
        hub.get_project(project).await?
    );
    time!("list projects, rows", b.pool.query(LIST_SQL, &list).await?);
    time!(
        "list projects, decoded (Hub::list_projects)",
        hub.list_projects(me).await?
    );
    time!(
        "heartbeat upsert (no feed on project_hosts)",
        hub.heartbeat(&beat(b.world.hosts[0], 0, 1)).await?
    );
    time!(
        "UPDATE of one project, autocommit (feed trigger)",
        b.pool.execute(TOUCH_SQL, &get).await?
    );
    time!("empty transaction (acquire, begin, commit)", {
        let mut c = b.pool.acquire().await?;
        c.begin().await?.commit().await?;
    });
    time!("transaction of one UPDATE of a project", {
        let mut c = b.pool.acquire().await?;
        let mut tx = c.begin().await?;
        tx.execute(TOUCH_SQL, &get).await?;
        tx.commit().await?;
    });
    for (what, sql, params) in [
        ("get project", GET_SQL, &get[..]),
        ("list projects", LIST_SQL, &list[..]),
        ("UPDATE of one project", TOUCH_SQL, &get[..]),
    ] {
        let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}");
        let (mut plan, mut exec, mut trig) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n.min(100) {
            let json: serde_json::Value = b.pool.query_one_scalar(&explain, params).await?;
            let top = &json[0];
            plan.push(top["Planning Time"].as_f64().unwrap_or(f64::NAN) * 1e3);
            exec.push(top["Execution Time"].as_f64().unwrap_or(f64::NAN) * 1e3);
            let t: f64 = top["Triggers"].as_array().map_or(0.0, |ts| {
                ts.iter()
                    .filter_map(|t| t["Time"].as_f64())
                    .fold(0.0, |a, b| a + b)
            });
            trig.push(t * 1e3);
        }
        figures.push((
            format!(
                "hub diag, {}: {what}, server side (EXPLAIN ANALYZE)",
                b.label
            ),
            format!(
                "planning {:.0} µs, execution {:.0} µs (of which triggers {:.0} µs)",
                median(&plan).unwrap_or(f64::NAN),
                median(&exec).unwrap_or(f64::NAN),
                median(&trig).unwrap_or(f64::NAN)
            ),
        ));
    }
    hub.close();
    report.figures.extend(figures);
    Ok(())
}
