//! What only the embedded backend has: a data directory owned by one process.
//! These tests open their own embedded databases, whatever the matrix cell.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use db::embedded::metadata::{self, EmbeddedDataStatus};
use db::{Client, Config, DataDir, Executor, PglitePool, Pool, params};

fn config(dir: &std::path::Path) -> Config {
    Config::new().pglite(DataDir::Path(dir.to_path_buf()))
}

fn hold(dir: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hold-data-dir"))
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_directory_is_shared_within_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = PglitePool::open(&config(dir.path())).await.unwrap();
    let b = PglitePool::open(&config(dir.path())).await.unwrap();
    a.batch_execute("CREATE TABLE shared (v int); INSERT INTO shared VALUES (1)")
        .await
        .unwrap();
    let n: i64 = b
        .query_one("SELECT count(*) FROM shared", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // One backend: a session held through `a` excludes `b`'s caller too.
    let held = a.acquire().await.unwrap();
    assert!(matches!(
        b.acquire().await,
        Err(db::Error::WouldDeadlock { .. })
    ));
    drop(held);
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_gets_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = hold(dir.path());
    let err = PglitePool::open(&config(dir.path())).await.unwrap_err();
    match &err {
        db::Error::DataDirLocked { path, pid } => {
            assert_eq!(*pid, Some(child.id()));
            assert!(path.contains(&*dir.path().to_string_lossy()), "{err}");
        }
        other => panic!("expected DataDirLocked, got {other}"),
    }
    assert!(
        err.to_string().contains(&format!("process {}", child.id())),
        "{err}"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let pool = PglitePool::open(&config(dir.path())).await.unwrap();
    assert_eq!(pool.execute("SELECT 1", &[]).await.unwrap(), 1);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_leaves_a_directory_that_reopens_intact() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PglitePool::open(&config(dir.path())).await.unwrap();
    pool.batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the crash')")
        .await
        .unwrap();
    pool.close().await;
    drop(pool);
    let mut child = hold(dir.path());
    child.kill().unwrap();
    child.wait().unwrap();
    let pool = PglitePool::open(&config(dir.path())).await.unwrap();
    let v: String = pool
        .query_one("SELECT v FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "before the crash");
    pool.close().await;
}

/// A random number from the standard library's per-process hash keys, so
/// the kill moments differ from run to run; the seed is printed on failure.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The next number of a xorshift sequence.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A process inserting rows 1, 2, ... into `acked` in `dir`, printing each
/// id once committed; its output lines.
fn writer(dir: &std::path::Path) -> (Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hold-data-dir"))
        .arg(dir)
        .arg("--write")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_commit_survives_kill_9_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let seed = random_seed() | 1;
    let mut random = seed;
    let mut acknowledged = 0i64;
    for round in 0..20 {
        let (mut child, mut lines) = writer(dir.path());
        assert_eq!(lines.next().unwrap().unwrap(), "ready", "seed {seed}");
        // A random number of commits, then a random pause, so the kill lands
        // anywhere: between commits, inside one, or inside its fsync.
        let target = acknowledged + 1 + (next_random(&mut random) % 40) as i64;
        while acknowledged < target {
            acknowledged = lines.next().unwrap().unwrap().parse().unwrap();
        }
        std::thread::sleep(Duration::from_micros(next_random(&mut random) % 20_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Anything printed after our last read was acknowledged too.
        for line in lines.map_while(Result::ok) {
            acknowledged = line.parse().unwrap_or(acknowledged);
        }
        // The dead writer never closed the directory: whether it holds data
        // not exported is unknown, and the record says so.
        assert!(
            matches!(
                metadata::status(dir.path()).unwrap(),
                EmbeddedDataStatus::NotClosedCleanly { .. }
            ),
            "round {round}, seed {seed}"
        );
        let pool = PglitePool::open(&config(dir.path())).await.unwrap();
        let row = pool
            .query_one(
                "SELECT count(*), coalesce(max(id), 0) FROM acked WHERE id <= $1",
                &params![acknowledged],
            )
            .await
            .unwrap();
        let (count, max): (i64, i64) = row.decode().unwrap();
        // Ids are 1, 2, ...: all of 1..=acknowledged present means every
        // reported commit survived.
        assert_eq!(
            (count, max),
            (acknowledged, acknowledged),
            "round {round}, seed {seed}: reported commits 1..={acknowledged}"
        );
        pool.close().await;
    }
}

/// A supervisor that restarts at once after `kill -9` finds the lock still
/// held by the dying process (its memory takes a while to unmap): opening
/// waits for the kernel to release it instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_at_once_after_kill_9_waits_for_the_dying_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0i64;
    for round in 0..3 {
        let (mut child, mut lines) = writer(dir.path());
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        let target = acknowledged + 5;
        while acknowledged < target {
            acknowledged = lines.next().unwrap().unwrap().parse().unwrap();
        }
        child.kill().unwrap(); // SIGKILL, not waited for: the child stays a zombie
        let opened = PglitePool::open(&config(dir.path())).await;
        child.wait().unwrap();
        let pool = opened.unwrap_or_else(|e| panic!("round {round}: {e}"));
        let (count,): (i64,) = pool
            .query_one(
                "SELECT count(*) FROM acked WHERE id <= $1",
                &params![acknowledged],
            )
            .await
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(count, acknowledged, "round {round}");
        pool.close().await;
    }
}

/// A pool outlives the runtime that opened it, as when several
/// `#[tokio::test]`s share one embedded database.
#[test]
fn a_pool_outlives_the_runtime_that_opened_it() {
    let first = tokio::runtime::Runtime::new().unwrap();
    let pool = first
        .block_on(PglitePool::open(&Config::new().pglite(DataDir::Memory)))
        .unwrap();
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let mut events = pool.listen("later").await.unwrap();
        pool.execute("NOTIFY later, 'still here'", &[])
            .await
            .unwrap();
        match tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await {
            Ok(Ok(db::ListenEvent::Notification(n))) => assert_eq!(n.payload, "still here"),
            other => panic!("expected the notification, got {other:?}"),
        }
        pool.close().await;
    });
}

/// A pool dropped without `close()` closes PGlite on its driver thread; the
/// directory's lock is held until that is done, and a reopen in the same
/// process waits for it rather than starting a second PGlite on the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pool_keeps_the_directory_until_pglite_has_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PglitePool::open(&config(dir.path())).await.unwrap();
    pool.execute("CREATE TABLE kept (n int)", &[])
        .await
        .unwrap();
    drop(pool);
    for n in 1..=4 {
        let pool = PglitePool::open(&config(dir.path())).await.unwrap();
        pool.execute("INSERT INTO kept VALUES ($1)", &params![n])
            .await
            .unwrap();
        let rows: i64 = pool
            .query_one("SELECT count(*) FROM kept", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, i64::from(n));
        drop(pool);
    }
}

async fn count(pool: &PglitePool, table: &str) -> i64 {
    pool.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// A WebAssembly trap in an open transaction: the caller gets
/// `BackendCrashed`, and exactly the rows committed before it are there: on
/// the same pool at once, after reopening in the same process, and in the
/// next process after the crashing one was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_backend_keeps_only_what_was_committed_across_reopen_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PglitePool::open(&config(dir.path())).await.unwrap();
    pool.batch_execute(
        "CREATE TABLE deep_rows (n int); INSERT INTO deep_rows VALUES (-1); \
         CREATE FUNCTION deep_insert(n int) RETURNS int LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO deep_rows VALUES (n); RETURN deep_insert(n + 1); END $$",
    )
    .await
    .unwrap();
    let mut client = pool.acquire().await.unwrap();
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO deep_rows VALUES (0)", &[])
        .await
        .unwrap();
    let err = tx.query("SELECT deep_insert(1)", &[]).await.unwrap_err();
    assert!(matches!(err, db::Error::BackendCrashed { .. }), "{err}");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    assert!(matches!(
        tx.commit().await,
        Err(db::Error::TransactionLost(
            db::TransactionLoss::BackendCrashed
        ))
    ));
    drop(client);
    assert_eq!(count(&pool, "deep_rows").await, 1);
    pool.execute("INSERT INTO deep_rows VALUES (1)", &[])
        .await
        .unwrap();
    pool.close().await;
    drop(pool);

    let pool = PglitePool::open(&config(dir.path())).await.unwrap();
    assert_eq!(count(&pool, "deep_rows").await, 2);
    pool.close().await;
    drop(pool);

    let mut child = Command::new(env!("CARGO_BIN_EXE_hold-data-dir"))
        .arg(dir.path())
        .arg("--crash")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    assert_eq!(lines.next().unwrap().unwrap(), "crashed");
    child.kill().unwrap();
    child.wait().unwrap();
    let pool = PglitePool::open(&config(dir.path())).await.unwrap();
    assert_eq!(count(&pool, "deep_rows").await, 2);
    let ns: Vec<i32> = pool
        .query("SELECT n FROM deep_rows ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ns, vec![-1, 1]);
    pool.close().await;
}
