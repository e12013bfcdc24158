//! A model-based test of sessions and transactions: random sequences of
//! operations (held sessions, nested guards ended by commit, rollback or
//! drop, failing statements, transactions opened and ended by SQL text
//! behind comments, session settings, one-shot pool calls, some joined in
//! one task) run on the backend under test and on a reference model of what
//! PostgreSQL promises. Every operation's outcome and the committed rows must
//! match the model; after each case no session is left in a transaction and
//! a new session has the configured settings.
//!
//! `SESSION_MODEL_CASES` sets the number of cases (default 256); a failure
//! prints the seed and shrinks to a minimal sequence, which then belongs in
//! `sessions.rs` as a named regression test.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use db::{AnyClient, AnyPool, BackendKind, Client, Error, Executor, Pool, SqlState, Transaction};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

use crate::TestDb;

/// Deepest guard nesting generated (a transaction and three savepoints).
const MAX_DEPTH: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Release,
    Begin,
    /// Inserts id `0..8` through the innermost guard (or the client).
    Insert(u8),
    /// A statement that fails (`SELECT 1/0`).
    Fail,
    Commit,
    Rollback,
    DropGuard,
    /// `BEGIN` as SQL text, in one of several spellings.
    RawBegin(u8),
    /// `COMMIT` (true) or `ROLLBACK` (false) as SQL text.
    RawEnd(bool),
    SetName(u8),
    ShowName,
    /// An autocommit insert of id `100 + n` on a session of its own.
    PoolInsert(u8),
    /// Two one-shot pool calls joined in one task.
    JoinedPoolCalls(u8),
    /// [`Op::Insert`] whose future is dropped after `polls` polls (it may or
    /// may not have reached the server).
    CancelledInsert(u8, u8),
    /// `begin()` whose future is dropped after `polls` polls.
    CancelledBegin(u8),
    /// A spawned task opens a transaction, inserts id `100 + n` and panics.
    PanicInTransaction(u8),
    /// `SET LOCAL application_name` inside a guard.
    SetLocal(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Acquire),
        2 => Just(Op::Release),
        4 => Just(Op::Begin),
        6 => (0u8..8).prop_map(Op::Insert),
        2 => Just(Op::Fail),
        3 => Just(Op::Commit),
        2 => Just(Op::Rollback),
        2 => Just(Op::DropGuard),
        1 => (0u8..4).prop_map(Op::RawBegin),
        1 => any::<bool>().prop_map(Op::RawEnd),
        1 => (0u8..3).prop_map(Op::SetName),
        1 => Just(Op::ShowName),
        2 => (0u8..4).prop_map(Op::PoolInsert),
        1 => (0u8..4).prop_map(Op::JoinedPoolCalls),
        2 => (0u8..8, 0u8..6).prop_map(|(id, polls)| Op::CancelledInsert(id, polls)),
        1 => (0u8..6).prop_map(Op::CancelledBegin),
        1 => (0u8..4).prop_map(Op::PanicInTransaction),
        1 => (0u8..3).prop_map(Op::SetLocal),
    ]
}

const RAW_BEGINS: [&str; 4] = [
    "BEGIN",
    "-- step one\nbegin",
    "/* a /* nested */ comment */ START TRANSACTION",
    "SELECT 1; Begin Transaction Isolation Level Read Committed",
];

/// What an operation is expected to give.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Unique,
    InFailed,
    DivisionByZero,
    Aborted(u32),
    Untracked,
    WouldDeadlock,
    Name(String),
}

fn outcome<T>(result: &Result<T, Error>) -> Result<Outcome, String> {
    let Err(e) = result else {
        return Ok(Outcome::Ok);
    };
    Ok(match e {
        Error::TransactionAborted { depth } => Outcome::Aborted(*depth),
        Error::UntrackedTransaction => Outcome::Untracked,
        Error::WouldDeadlock { .. } => Outcome::WouldDeadlock,
        e if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Outcome::Unique,
        e if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => Outcome::InFailed,
        e if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => Outcome::DivisionByZero,
        e => return Err(format!("unexpected error: {e}")),
    })
}

#[derive(Debug, Default, Clone)]
struct Level {
    rows: BTreeSet<i32>,
    /// Rows of cancelled inserts: there if the insert reached the server.
    maybe: BTreeSet<i32>,
    failed: bool,
    /// `SET LOCAL application_name` in this level.
    local_name: Option<String>,
}

/// What PostgreSQL promises, for one held session at a time.
#[derive(Debug)]
struct Model {
    backend: BackendKind,
    committed: BTreeSet<i32>,
    /// Committed rows of cancelled autocommit inserts, if they ran.
    maybe_committed: BTreeSet<i32>,
    /// Guard levels, outermost first.
    levels: Vec<Level>,
    /// A transaction opened by SQL text.
    raw: Option<Level>,
    name: Option<String>,
    default_name: String,
}

impl Model {
    fn innermost_failed(&self) -> bool {
        match self.levels.last() {
            Some(level) => level.failed,
            None => self.raw.as_ref().is_some_and(|l| l.failed),
        }
    }

    /// Whether a cancelled insert of `id` has one outcome for the rest of
    /// the sequence either way (no unique violation, no failed transaction).
    fn can_cancel_insert(&self, id: i32) -> bool {
        !self.innermost_failed() && !self.visible(id) && !self.maybe_visible(id)
    }

    fn innermost(&mut self) -> Option<&mut Level> {
        match self.levels.last_mut() {
            Some(level) => Some(level),
            None => self.raw.as_mut(),
        }
    }

    fn maybe_visible(&self, id: i32) -> bool {
        self.maybe_committed.contains(&id)
            || self.levels.iter().any(|l| l.maybe.contains(&id))
            || self.raw.as_ref().is_some_and(|l| l.maybe.contains(&id))
    }

    /// Settles a cancelled insert of `id` by what a later insert of it
    /// found: `present` if it had reached the server.
    fn settle(&mut self, id: i32, present: bool) {
        let levels = self.levels.iter_mut().chain(self.raw.as_mut());
        for level in levels {
            if level.maybe.remove(&id) && present {
                level.rows.insert(id);
            }
        }
        if self.maybe_committed.remove(&id) && present {
            self.committed.insert(id);
        }
    }

    /// An insert of `id` cancelled before its answer: it ran or not.
    fn cancelled_insert(&mut self, id: i32) {
        match self.innermost() {
            Some(level) => {
                level.maybe.insert(id);
            }
            None => {
                self.maybe_committed.insert(id);
            }
        }
    }

    /// What `SHOW application_name` gives now.
    fn shown_name(&self) -> String {
        self.levels
            .iter()
            .rev()
            .find_map(|l| l.local_name.clone())
            .or_else(|| self.name.clone())
            .unwrap_or_else(|| self.default_name.clone())
    }

    fn visible(&self, id: i32) -> bool {
        self.committed.contains(&id)
            || self.levels.iter().any(|l| l.rows.contains(&id))
            || self.raw.as_ref().is_some_and(|l| l.rows.contains(&id))
    }

    fn insert(&mut self, id: i32) -> Outcome {
        if self.innermost().is_some_and(|l| l.failed) {
            return Outcome::InFailed;
        }
        if self.visible(id) {
            if let Some(level) = self.innermost() {
                level.failed = true;
            }
            return Outcome::Unique;
        }
        match self.innermost() {
            Some(level) => {
                level.rows.insert(id);
            }
            None => {
                self.committed.insert(id);
            }
        }
        Outcome::Ok
    }

    fn fail(&mut self) -> Outcome {
        match self.innermost() {
            Some(level) if level.failed => Outcome::InFailed,
            Some(level) => {
                level.failed = true;
                Outcome::DivisionByZero
            }
            None => Outcome::DivisionByZero,
        }
    }

    fn begin(&mut self) -> Outcome {
        if self.levels.is_empty() && self.raw.is_some() {
            return Outcome::Untracked;
        }
        if self.levels.last().is_some_and(|l| l.failed) {
            return Outcome::InFailed;
        }
        self.levels.push(Level::default());
        Outcome::Ok
    }

    fn commit(&mut self) -> Outcome {
        let depth = u32::try_from(self.levels.len()).unwrap_or(u32::MAX);
        let Some(level) = self.levels.pop() else {
            return Outcome::Ok;
        };
        if level.failed {
            return Outcome::Aborted(depth);
        }
        match self.levels.last_mut() {
            Some(parent) => {
                parent.rows.extend(level.rows);
                parent.maybe.extend(level.maybe);
                // RELEASE keeps a SET LOCAL until the transaction ends.
                if level.local_name.is_some() {
                    parent.local_name = level.local_name;
                }
            }
            None => {
                self.committed.extend(level.rows);
                self.maybe_committed.extend(level.maybe);
            }
        }
        Outcome::Ok
    }

    fn rollback(&mut self) {
        self.levels.pop();
    }

    fn raw_end(&mut self, commit: bool) {
        if let Some(level) = self.raw.take()
            && commit
            && !level.failed
        {
            self.committed.extend(level.rows);
            self.maybe_committed.extend(level.maybe);
        }
    }

    fn release(&mut self) {
        self.levels.clear();
        self.raw = None;
        self.name = None;
    }

    /// A one-shot pool call while this task holds a session.
    fn pool_call_while_held(&self, held: bool) -> Option<Outcome> {
        (held && self.backend == BackendKind::Pglite).then_some(Outcome::WouldDeadlock)
    }
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<usize, String>> + Send + 'a>>;

fn check(op: &Op, expected: &Outcome, actual: Result<Outcome, String>) -> Result<(), String> {
    match actual {
        Ok(actual) if actual == *expected => Ok(()),
        Ok(actual) => Err(format!("{op:?}: expected {expected:?}, got {actual:?}")),
        Err(e) => Err(format!("{op:?}: expected {expected:?}, {e}")),
    }
}

/// Checks an insert of `id` that returned `actual`; an earlier cancelled
/// insert of the same id is settled by it (a unique violation means it ran).
fn check_insert(
    m: &mut Model,
    op: &Op,
    id: i32,
    actual: Result<Outcome, String>,
) -> Result<(), String> {
    if m.maybe_visible(id) && !m.visible(id) && !m.innermost_failed() {
        m.settle(id, matches!(actual, Ok(Outcome::Unique)));
    }
    let expected = m.insert(id);
    check(op, &expected, actual)
}

/// Polls `fut` at most `polls` times, yielding in between; `None` when it
/// did not finish, and is then dropped: a deterministic cancellation.
async fn poll_times<F: Future>(fut: F, polls: u8) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..polls {
        if let std::task::Poll::Ready(out) = futures::poll!(fut.as_mut()) {
            return Some(out);
        }
        tokio::task::yield_now().await;
    }
    None
}

const DELIBERATE_PANIC: &str = "session model: a deliberate panic inside a transaction";

async fn pool_insert(
    pool: &AnyPool,
    m: &mut Model,
    op: &Op,
    n: u8,
    held: bool,
) -> Result<(), String> {
    let id = 100 + i32::from(n);
    let result = pool
        .execute("INSERT INTO t VALUES ($1)", &[id.into()])
        .await;
    let expected = match m.pool_call_while_held(held) {
        Some(outcome) => outcome,
        None if m.committed.contains(&id) => Outcome::Unique,
        None => {
            m.committed.insert(id);
            Outcome::Ok
        }
    };
    check(op, &expected, outcome(&result))
}

/// The operations on rows, the same through a client or a guard: an
/// insert (perhaps cut short after some polls) or a failing statement.
async fn row_op<E: Executor>(ex: &mut E, m: &mut Model, op: &Op) -> Result<(), String> {
    match op {
        Op::Insert(n) => {
            let id = i32::from(*n);
            let result = ex.execute("INSERT INTO t VALUES ($1)", &[id.into()]).await;
            check_insert(m, op, id, outcome(&result))
        }
        Op::CancelledInsert(n, polls) if m.can_cancel_insert(i32::from(*n)) => {
            let id = i32::from(*n);
            let params = [id.into()];
            let insert = ex.execute("INSERT INTO t VALUES ($1)", &params);
            match poll_times(insert, *polls).await {
                Some(result) => check_insert(m, op, id, outcome(&result)),
                None => {
                    m.cancelled_insert(id);
                    Ok(())
                }
            }
        }
        Op::Fail => {
            let result = ex.execute("SELECT 1/0", &[]).await;
            let expected = m.fail();
            check(op, &expected, outcome(&result))
        }
        _ => Ok(()),
    }
}

/// Runs operations inside guard `tx` until it ends; returns the index of the
/// next operation. At a `Release` the whole stack of guards is dropped.
fn level<'a>(
    mut tx: Transaction<'a, AnyClient>,
    pool: &'a AnyPool,
    ops: &'a [Op],
    mut i: usize,
    m: &'a mut Model,
) -> Step<'a> {
    Box::pin(async move {
        while let Some(op) = ops.get(i) {
            i += 1;
            match op {
                Op::Release => return Ok(i - 1),
                Op::Begin if m.levels.len() < MAX_DEPTH => {
                    let result = tx.begin().await;
                    let expected = m.begin();
                    match result {
                        Ok(inner) => {
                            check(op, &expected, Ok(Outcome::Ok))?;
                            i = level(inner, pool, ops, i, m).await?;
                            if ops.get(i).is_some_and(|o| matches!(o, Op::Release)) {
                                return Ok(i);
                            }
                        }
                        Err(e) => check(op, &expected, outcome::<()>(&Err(e)))?,
                    }
                }
                Op::Insert(_) | Op::CancelledInsert(..) | Op::Fail => {
                    row_op(&mut tx, m, op).await?
                }
                Op::CancelledBegin(polls)
                    if m.levels.len() < MAX_DEPTH && !m.innermost_failed() =>
                {
                    match poll_times(tx.begin(), *polls).await {
                        Some(Ok(inner)) => {
                            drop(inner);
                            m.begin();
                            m.rollback();
                        }
                        Some(Err(e)) => check(op, &Outcome::Ok, outcome::<()>(&Err(e)))?,
                        None => {}
                    }
                }
                Op::SetLocal(n) => {
                    let name = format!("local_{n}");
                    let result = tx
                        .execute(&format!("SET LOCAL application_name = '{name}'"), &[])
                        .await;
                    let expected = if m.innermost_failed() {
                        Outcome::InFailed
                    } else {
                        if let Some(level) = m.levels.last_mut() {
                            level.local_name = Some(name);
                        }
                        Outcome::Ok
                    };
                    check(op, &expected, outcome(&result))?;
                }
                Op::ShowName => {
                    let result = tx.query_one("SHOW application_name", &[]).await;
                    let expected = if m.innermost_failed() {
                        Outcome::InFailed
                    } else {
                        Outcome::Name(m.shown_name())
                    };
                    let actual = match result {
                        Ok(row) => Ok(Outcome::Name(row.get(0))),
                        Err(e) => outcome::<()>(&Err(e)),
                    };
                    check(op, &expected, actual)?;
                }
                Op::Commit => {
                    let result = tx.commit().await;
                    let expected = m.commit();
                    check(op, &expected, outcome(&result))?;
                    return Ok(i);
                }
                Op::Rollback => {
                    let result = tx.rollback().await;
                    m.rollback();
                    check(op, &Outcome::Ok, outcome(&result))?;
                    return Ok(i);
                }
                Op::DropGuard => {
                    drop(tx);
                    m.rollback();
                    return Ok(i);
                }
                Op::PoolInsert(n) => pool_insert(pool, m, op, *n, true).await?,
                _ => {}
            }
        }
        Ok(i)
    })
}

/// Runs operations on a held session until it is released.
async fn session(
    client: &mut AnyClient,
    pool: &AnyPool,
    ops: &[Op],
    mut i: usize,
    m: &mut Model,
) -> Result<usize, String> {
    while let Some(op) = ops.get(i) {
        i += 1;
        match op {
            Op::Release => return Ok(i),
            Op::Begin => {
                let result = client.begin().await;
                let expected = m.begin();
                match result {
                    Ok(tx) => {
                        check(op, &expected, Ok(Outcome::Ok))?;
                        i = level(tx, pool, ops, i, m).await?;
                    }
                    Err(e) => check(op, &expected, outcome::<()>(&Err(e)))?,
                }
            }
            Op::Insert(_) | Op::CancelledInsert(..) | Op::Fail => row_op(client, m, op).await?,
            Op::CancelledBegin(polls) if m.raw.is_none() => {
                match poll_times(client.begin(), *polls).await {
                    Some(Ok(tx)) => {
                        drop(tx);
                        m.begin();
                        m.rollback();
                    }
                    Some(Err(e)) => check(op, &Outcome::Ok, outcome::<()>(&Err(e)))?,
                    None => {}
                }
            }
            Op::RawBegin(k) => {
                let result = client.batch_execute(RAW_BEGINS[usize::from(*k)]).await;
                let expected = match &m.raw {
                    Some(level) if level.failed => Outcome::InFailed,
                    Some(_) => Outcome::Ok,
                    None => {
                        m.raw = Some(Level::default());
                        Outcome::Ok
                    }
                };
                check(op, &expected, outcome(&result))?;
            }
            Op::RawEnd(commit) => {
                let sql = if *commit {
                    "/* end */ COMMIT"
                } else {
                    "ROLLBACK"
                };
                let result = client.batch_execute(sql).await;
                m.raw_end(*commit);
                check(op, &Outcome::Ok, outcome(&result))?;
            }
            Op::SetName(n) if m.raw.is_none() => {
                let name = format!("model_{n}");
                let result = client
                    .execute(&format!("SET application_name = '{name}'"), &[])
                    .await;
                m.name = Some(name);
                check(op, &Outcome::Ok, outcome(&result))?;
            }
            Op::ShowName if m.raw.is_none() => {
                let result = client.query_one("SHOW application_name", &[]).await;
                let expected = Outcome::Name(m.shown_name());
                let actual = match result {
                    Ok(row) => Ok(Outcome::Name(row.get(0))),
                    Err(e) => outcome::<()>(&Err(e)),
                };
                check(op, &expected, actual)?;
            }
            Op::PoolInsert(n) => pool_insert(pool, m, op, *n, true).await?,
            _ => {}
        }
    }
    Ok(i)
}

async fn run_case(db: &TestDb, ops: &[Op], default_name: &str) -> Result<(), String> {
    let pool = &db.pool;
    let mut m = Model {
        backend: db.backend(),
        committed: BTreeSet::new(),
        maybe_committed: BTreeSet::new(),
        levels: Vec::new(),
        raw: None,
        name: None,
        default_name: default_name.to_owned(),
    };
    pool.execute("TRUNCATE t", &[])
        .await
        .map_err(|e| e.to_string())?;
    let mut i = 0;
    while let Some(op) = ops.get(i) {
        i += 1;
        match op {
            Op::Acquire => {
                let mut client = pool.acquire().await.map_err(|e| format!("acquire: {e}"))?;
                i = session(&mut client, pool, ops, i, &mut m).await?;
                drop(client);
                m.release();
            }
            Op::PoolInsert(n) => pool_insert(pool, &mut m, op, *n, false).await?,
            Op::PanicInTransaction(n) => {
                let pool = pool.clone();
                let id = 100 + i32::from(*n);
                let task = tokio::spawn(async move {
                    if let Ok(mut c) = pool.acquire().await
                        && let Ok(mut tx) = c.begin().await
                    {
                        let _ = tx
                            .execute(
                                "INSERT INTO t VALUES ($1) ON CONFLICT DO NOTHING",
                                &[id.into()],
                            )
                            .await;
                        panic!("{DELIBERATE_PANIC}");
                    }
                });
                match task.await {
                    Err(e) if e.is_panic() => {}
                    other => return Err(format!("{op:?}: expected a panic, got {other:?}")),
                }
            }
            Op::JoinedPoolCalls(n) => {
                let id = 100 + i32::from(*n);
                let params = [id.into()];
                let (a, b) = tokio::join!(
                    pool.execute("INSERT INTO t VALUES ($1) ON CONFLICT DO NOTHING", &params),
                    pool.query_one("SELECT 1", &[]),
                );
                let expected = u64::from(m.committed.insert(id));
                match (a, b) {
                    (Ok(n), Ok(_)) if n == expected => {}
                    other => return Err(format!("{op:?}: expected {expected} row, got {other:?}")),
                }
            }
            _ => {}
        }
    }
    let rows: BTreeSet<i32> = pool
        .query("SELECT id FROM t", &[])
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let possible: BTreeSet<i32> = m.committed.union(&m.maybe_committed).copied().collect();
    if !rows.is_superset(&m.committed) || !rows.is_subset(&possible) {
        return Err(format!(
            "committed rows: expected {:?} (and maybe {:?}), found {rows:?}",
            m.committed, m.maybe_committed
        ));
    }
    invariants(db, default_name).await
}

/// After a case: no session of this database is left in a transaction, and
/// a new session has the configured settings.
async fn invariants(db: &TestDb, default_name: &str) -> Result<(), String> {
    let pool = &db.pool;
    if let AnyPool::Postgres(server) = pool {
        // Released sessions are cleaned up in the background, and a
        // cancelled statement may still be running on one: the pool must
        // become quiescent, soon.
        let mut waited = Duration::ZERO;
        while !server.is_quiescent() {
            if waited > Duration::from_secs(10) {
                return Err("released sessions were not cleaned up within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            waited += Duration::from_millis(5);
        }
        loop {
            let idle_in_tx: i64 = pool
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if idle_in_tx == 0 {
                break;
            }
            if waited > Duration::from_secs(5) {
                return Err(format!("{idle_in_tx} session(s) left idle in transaction"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
    }
    for _ in 0..2 {
        let name: String = pool
            .query_one("SHOW application_name", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if name != default_name {
            return Err(format!("a new session has application_name {name:?}"));
        }
    }
    Ok(())
}

#[test]
#[allow(clippy::print_stderr)]
fn sessions_match_the_model() {
    let cases = std::env::var("SESSION_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let seed: u64 = std::env::var("SESSION_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::with_config(|c| c.max_connections(4)).await;
        db.sql("CREATE TABLE t (id int PRIMARY KEY)").await;
        db
    });
    let default_name: String = runtime.block_on(async {
        db.pool
            .query_one("SHOW application_name", &[])
            .await
            .unwrap()
            .get(0)
    });
    // The deliberate panics of `PanicInTransaction` are expected: keep them
    // out of the output, and every other panic in it.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied());
        if message != Some(DELIBERATE_PANIC) {
            report(info);
        }
    }));
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    eprintln!(
        "session model: {cases} cases on {:?}, SESSION_MODEL_SEED={seed}",
        db.backend()
    );
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        runtime
            .block_on(run_case(&db, &ops, &default_name))
            .map_err(TestCaseError::fail)?;
        Ok(())
    });
    if let Err(e) = result {
        panic!("session model (SESSION_MODEL_SEED={seed}): {e}");
    }
}
