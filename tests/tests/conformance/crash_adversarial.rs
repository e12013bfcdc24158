//! Adversarial tests of the embedded backend's crash handling (issue 12):
//! a WebAssembly trap must never commit anything of the open transaction,
//! must give the caller one clear error, and the pool must go on serving.
//! Each test states what a server does with the same statements; the
//! embedded backend must not do worse.

use db::{Client, Executor, Pool, SqlState, params};

use crate::TestDb;

const DEPTH: usize = 20_000;

fn nested_json() -> String {
    format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH))
}

/// A statement any role may run that traps the embedded backend (and gets
/// `54001` from a server).
fn crash_sql() -> String {
    format!("SELECT ('{}')::jsonb IS NULL", nested_json())
}

fn too_deep(err: &db::Error) -> bool {
    err.code() == Some(&SqlState::STATEMENT_TOO_COMPLEX)
        || matches!(err, db::Error::BackendCrashed { .. })
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.pool.query_one(sql, &[]).await.unwrap().get(0)
}

/// A script sent statement by statement with SQL `BEGIN` ... `COMMIT` on a
/// held client (as a psql-like tool or a hand-written migration does). On a
/// server, after the failing statement the transaction is aborted: the
/// statements after it are refused (`25P02`) and `COMMIT` rolls back, so
/// nothing of the script is kept. After a crash of the embedded backend the
/// session must not quietly fall back to autocommit and keep the statements
/// after the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_after_a_crash_inside_sql_begin_are_not_committed() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE script_rows (v text)")
        .await
        .unwrap();
    let mut client = db.pool.acquire().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("INSERT INTO script_rows VALUES ('before')", &[])
        .await
        .unwrap();
    let err = client.query(&crash_sql(), &[]).await.unwrap_err();
    assert!(too_deep(&err), "{err}");
    let after = client
        .execute("INSERT INTO script_rows VALUES ('after')", &[])
        .await;
    let _ = client.batch_execute("COMMIT").await;
    drop(client);
    assert_eq!(
        count(&db, "SELECT count(*) FROM script_rows").await,
        0,
        "half of a failed BEGIN...COMMIT script was committed (the INSERT after the \
         failure returned {after:?})"
    );
}

/// `SET ROLE` on a held client drops privileges for what follows. On a
/// server a crash of the backend ends the connection: nothing more runs on
/// it. After a crash of the embedded backend the same client must not go on
/// running statements with the privileges of the superuser it started as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_does_not_silently_undo_set_role() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            // Roles belong to the whole server: an earlier run may have
            // made this one already.
            "DO $$ BEGIN CREATE ROLE crash_lowpriv NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             CREATE TABLE crash_secret (v text); \
             INSERT INTO crash_secret VALUES ('secret'); \
             REVOKE ALL ON crash_secret FROM PUBLIC",
        )
        .await
        .unwrap();
    let mut client = db.pool.acquire().await.unwrap();
    client
        .batch_execute("SET ROLE crash_lowpriv")
        .await
        .unwrap();
    let denied = client.query("SELECT v FROM crash_secret", &[]).await;
    assert_eq!(
        denied.as_ref().err().and_then(|e| e.code()),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{denied:?}"
    );
    // Input a user controls (nested JSON) makes the backend crash.
    let err = client.query(&crash_sql(), &[]).await.unwrap_err();
    assert!(too_deep(&err), "{err}");
    let who: Result<String, _> = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map(|r| r.get(0));
    let read = client.query("SELECT v FROM crash_secret", &[]).await;
    assert!(
        read.is_err(),
        "after the crash the client that had SET ROLE crash_lowpriv runs as {who:?} and \
         reads the secret table: {:?}",
        read.map(|rows| rows.len())
    );
}

/// `SET search_path` on a held client decides which table an unqualified
/// name is. After a crash the same client must not write into another
/// schema's table of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_does_not_silently_redirect_writes_to_another_schema() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE SCHEMA tenant_a; \
             CREATE TABLE public.accounts (v text); \
             CREATE TABLE tenant_a.accounts (v text)",
        )
        .await
        .unwrap();
    let mut client = db.pool.acquire().await.unwrap();
    client
        .batch_execute("SET search_path = tenant_a")
        .await
        .unwrap();
    client
        .execute("INSERT INTO accounts VALUES ('a1')", &[])
        .await
        .unwrap();
    let err = client.query(&crash_sql(), &[]).await.unwrap_err();
    assert!(too_deep(&err), "{err}");
    let _ = client
        .execute("INSERT INTO accounts VALUES ('a2')", &[])
        .await;
    drop(client);
    assert_eq!(
        count(&db, "SELECT count(*) FROM public.accounts").await,
        0,
        "tenant_a's row went into public.accounts after the crash"
    );
}

/// A session-level advisory lock is the session's until it unlocks or ends.
/// After a crash the client still believes it holds the lock; another
/// session must not be able to take it while the first one goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_does_not_silently_release_a_held_advisory_lock() {
    let db = TestDb::new().await;
    let mut holder = db.pool.acquire().await.unwrap();
    holder
        .query("SELECT pg_advisory_lock(4242)", &[])
        .await
        .unwrap();
    let err = holder.query(&crash_sql(), &[]).await.unwrap_err();
    assert!(too_deep(&err), "{err}");
    // The holder goes on as if it held the lock.
    let still_usable = holder.query_one("SELECT 1", &[]).await.is_ok();
    let unlocked: Option<bool> = holder
        .query_one("SELECT pg_advisory_unlock(4242)", &[])
        .await
        .ok()
        .map(|r| r.get(0));
    assert!(
        !still_usable || unlocked == Some(true),
        "the client still runs statements after the crash, but its advisory lock is gone \
         (pg_advisory_unlock = {unlocked:?})"
    );
}

/// COPY FROM STDIN with a value that traps, in a guarded transaction: no
/// row of the COPY or of the transaction is kept, the guard cannot commit,
/// and the pool serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_copy_in_keeps_nothing() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE copy_rows (id int, j jsonb)")
        .await
        .unwrap();
    let mut data = String::new();
    for i in 0..100 {
        data.push_str(&format!("{i}\t[{i}]\n"));
    }
    data.push_str(&format!("100\t{}\n", nested_json()));
    for i in 101..200 {
        data.push_str(&format!("{i}\t[{i}]\n"));
    }
    // Autocommit.
    let err = db
        .pool
        .copy_in("COPY copy_rows FROM STDIN", data.as_bytes())
        .await
        .unwrap_err();
    assert!(too_deep(&err), "{err}");
    assert_eq!(count(&db, "SELECT count(*) FROM copy_rows").await, 0);
    // In a guard, after a row of its own.
    let mut client = db.pool.acquire().await.unwrap();
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO copy_rows VALUES (-1, '[]')", &[])
        .await
        .unwrap();
    let err = tx
        .copy_in("COPY copy_rows FROM STDIN", data.as_bytes())
        .await
        .unwrap_err();
    assert!(too_deep(&err), "{err}");
    assert!(tx.commit().await.is_err());
    drop(client);
    assert_eq!(count(&db, "SELECT count(*) FROM copy_rows").await, 0);
    db.pool
        .copy_in("COPY copy_rows FROM STDIN", b"1\t[1]\n")
        .await
        .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM copy_rows").await, 1);
}

/// A crash inside a savepoint (a nested guard): the outer transaction is
/// gone too; neither commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_a_savepoint_loses_the_outer_transaction() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE sp_rows (v text)")
        .await
        .unwrap();
    let mut client = db.pool.acquire().await.unwrap();
    let mut outer = client.begin().await.unwrap();
    outer
        .execute("INSERT INTO sp_rows VALUES ('outer')", &[])
        .await
        .unwrap();
    {
        let mut inner = outer.begin().await.unwrap();
        inner
            .execute("INSERT INTO sp_rows VALUES ('inner')", &[])
            .await
            .unwrap();
        let err = inner.query(&crash_sql(), &[]).await.unwrap_err();
        assert!(too_deep(&err), "{err}");
        // A server keeps the outer transaction after a savepoint's error
        // is rolled back; the embedded backend lost it with the crash.
        let _ = inner.rollback().await;
    }
    let after = outer
        .execute("INSERT INTO sp_rows VALUES ('after')", &[])
        .await;
    let committed = outer.commit().await;
    drop(client);
    let n = count(&db, "SELECT count(*) FROM sp_rows").await;
    let outer_rows = count(&db, "SELECT count(*) FROM sp_rows WHERE v = 'outer'").await;
    let inner_rows = count(&db, "SELECT count(*) FROM sp_rows WHERE v = 'inner'").await;
    assert_eq!(inner_rows, 0, "the crashed savepoint's row was kept");
    // Either the whole transaction is kept as on a server (outer + after),
    // or none of it: never a part.
    assert!(
        (n == 2 && outer_rows == 1 && committed.is_ok()) || (n == 0 && committed.is_err()),
        "rows {n} (outer {outer_rows}); insert after: {after:?}; commit: {committed:?}"
    );
}

/// Callers queued on the pool while another one crashes the backend get
/// their own statements run, each exactly once, and none gets an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_waiting_on_the_pool_during_a_crash_are_served() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE queued (task int, i int)")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..6 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for i in 0..15 {
                if let Err(e) = pool
                    .execute("INSERT INTO queued VALUES ($1, $2)", &params![task, i])
                    .await
                {
                    errors.push(e.to_string());
                }
            }
            errors
        }));
    }
    let crasher = {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                results.push(pool.query(&crash_sql(), &[]).await.map(drop));
            }
            results
        })
    };
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    for r in crasher.await.unwrap() {
        assert!(too_deep(&r.unwrap_err()));
    }
    assert!(errors.is_empty(), "queued callers failed: {errors:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM queued").await, 90);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT DISTINCT task, i FROM queued) d"
        )
        .await,
        90
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Crashes in a row: each is one error, the pool serves after every one,
/// LISTEN and cached prepared statements keep working, and the process does
/// not keep every abandoned backend's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_crashes_in_a_row_keep_serving_with_bounded_memory() {
    const ALONE: &str = "COCALC_TEST_CRASH_LOOP_ALONE";
    if conformance::base_config().backend == db::BackendKind::Pglite
        && std::env::var_os(ALONE).is_none()
    {
        // The descriptors and memory counted are the whole process's, and
        // the embedded backends of the tests running beside this one live
        // here too: measured in a process of its own.
        let alone = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_adversarial::repeated_crashes_in_a_row_keep_serving_with_bounded_memory",
                "--test-threads=1",
            ])
            .env(ALONE, "1")
            .output()
            .unwrap();
        // Its report stays out of this process's output, whose `test
        // result` lines the matrix counts.
        assert!(
            alone.status.success(),
            "the crash loop failed alone: {}\n{}{}",
            alone.status,
            String::from_utf8_lossy(&alone.stdout),
            String::from_utf8_lossy(&alone.stderr)
        );
        return;
    }
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('k')")
        .await
        .unwrap();
    let mut events = db.pool.listen("crash_loop").await.unwrap();
    let crashes: usize = std::env::var("CRASHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rss = Vec::new();
    let mut fds = Vec::new();
    for i in 0..crashes {
        let err = db.pool.query(&crash_sql(), &[]).await.unwrap_err();
        assert!(too_deep(&err), "crash {i}: {err}");
        let crashed = matches!(err, db::Error::BackendCrashed { .. });
        let v: String = db
            .pool
            .query_one("SELECT v FROM kept WHERE v = $1", &params!["k"])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, "k");
        db.pool
            .execute(
                "SELECT pg_notify('crash_loop', $1)",
                &params![i.to_string()],
            )
            .await
            .unwrap();
        assert_eq!(
            crate::notification_after(&mut events, crashed).await,
            i.to_string(),
            "crash {i}"
        );
        rss.push(rss_kib() / 1024);
        fds.push(
            std::fs::read_dir("/proc/self/fd")
                .map(|d| d.count())
                .unwrap_or(0),
        );
    }
    // On a server the failing statement is an error in another process:
    // this process's descriptors move only with the tests running beside
    // this one. The embedded backend runs here, and an abandoned instance
    // that kept its files would show.
    if db.backend() == db::BackendKind::Pglite {
        assert!(
            fds.last().unwrap() <= &(fds[1] + 10),
            "file descriptors grow with every crash: {fds:?}"
        );
    }
    let first = rss[1];
    let last = *rss.last().unwrap();
    assert!(
        last < first + 300,
        "memory grows with every crash: RSS (MiB) after each crash {rss:?}"
    );
}
