//! Session semantics that must hold on every backend: what a guard's
//! commit means, what a released session leaves behind, and who may wait
//! for whom. Each test is a regression test of a failure once observed.

use std::time::Duration;

use db::{BackendKind, Client, Error, Executor, Pool, TransactionLoss, params};

use crate::TestDb;

async fn setup() -> TestDb {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE t (id int PRIMARY KEY)").await;
    db
}

async fn ids(db: &TestDb) -> Vec<i32> {
    db.pool
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A helper that fails with `?` drops its savepoint guard; the outer commit
/// must not keep the savepoint's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_savepoint_is_rolled_back_before_the_outer_commit() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let mut sp = tx.begin().await.unwrap();
    sp.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    drop(sp);
    tx.commit().await.unwrap();
    drop(c);
    assert_eq!(ids(&db).await, vec![1]);
}

/// The dropped savepoint had failed: the outer transaction's rows must
/// still be committed when its commit says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dropped_savepoint_leaves_the_outer_rows_committed() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (101)", &[]).await.unwrap();
    tx.execute("INSERT INTO t VALUES (102)", &[]).await.unwrap();
    let mut sp = tx.begin().await.unwrap();
    sp.execute("INSERT INTO t VALUES (103)", &[]).await.unwrap();
    let err = sp
        .execute("INSERT INTO t VALUES (101)", &[])
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    drop(sp);
    tx.commit().await.unwrap();
    drop(c);
    assert_eq!(ids(&db).await, vec![101, 102]);
}

/// A statement failed inside the transaction and the caller went on to
/// commit: the server can only roll back, and the commit must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committing_a_failed_transaction_is_an_error() {
    let db = setup().await;
    db.sql("INSERT INTO t VALUES (1)").await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    let err = tx
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    let err = tx.commit().await.unwrap_err();
    assert!(
        matches!(err, Error::TransactionAborted { depth: 1 }),
        "{err}"
    );
    // The session is usable and outside any transaction.
    c.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    drop(c);
    assert_eq!(ids(&db).await, vec![1, 3]);
}

/// Committing a failed savepoint rolls it back, says so, and the enclosing
/// transaction goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committing_a_failed_savepoint_rolls_it_back_and_says_so() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let mut sp = tx.begin().await.unwrap();
    sp.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    assert!(sp.execute("SELECT 1/0", &[]).await.is_err());
    let err = sp.commit().await.unwrap_err();
    assert!(
        matches!(err, Error::TransactionAborted { depth: 2 }),
        "{err}"
    );
    tx.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    drop(c);
    assert_eq!(ids(&db).await, vec![1, 3]);
}

/// A script that opens a transaction after a comment must not leave the
/// connection in it: later autocommit writes of other callers are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_opens_a_transaction_after_a_comment_is_rolled_back() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    c.batch_execute("-- step one\nBEGIN; INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    drop(c);
    for id in 1..=4 {
        db.pool
            .execute("INSERT INTO t VALUES ($1)", &params![id])
            .await
            .unwrap();
    }
    for _ in 0..4 {
        assert_eq!(ids(&db).await, vec![1, 2, 3, 4]);
    }
    // The rolled-back transaction held no lock: this would wait forever
    // behind a leaked TRUNCATE otherwise.
    let mut c = db.pool.acquire().await.unwrap();
    c.batch_execute("SELECT 1; BEGIN; TRUNCATE t")
        .await
        .unwrap();
    drop(c);
    tokio::time::timeout(
        Duration::from_secs(10),
        db.pool.execute("INSERT INTO t VALUES (5)", &[]),
    )
    .await
    .expect("an insert must not wait for a leaked lock")
    .unwrap();
    assert_eq!(ids(&db).await, vec![1, 2, 3, 4, 5]);
}

/// Settings a session changed are not seen by the next sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_do_not_leak_to_the_next_session() {
    let db = TestDb::with_config(|c| c.max_connections(2)).await;
    let name = |row: db::Row| row.get::<String, _>(0);
    let initial = name(
        db.pool
            .query_one("SHOW application_name", &[])
            .await
            .unwrap(),
    );
    let mut c = db.pool.acquire().await.unwrap();
    c.execute("SET application_name = 'leaked'", &[])
        .await
        .unwrap();
    c.execute("SELECT set_config('search_path', 'nowhere', false)", &[])
        .await
        .unwrap();
    c.batch_execute("CREATE TEMP TABLE scratch (a int); PREPARE p AS SELECT 1")
        .await
        .unwrap();
    drop(c);
    for _ in 0..4 {
        let mut c = db.pool.acquire().await.unwrap();
        assert_eq!(
            name(c.query_one("SHOW application_name", &[]).await.unwrap()),
            initial
        );
        let path: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
        assert_ne!(path, "nowhere");
        let temp: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname = 'scratch' \
                 AND relnamespace = pg_my_temp_schema()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(temp, 0, "a temporary table survived its session");
        let prepared: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE from_sql",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(prepared, 0, "a prepared statement survived its session");
        let tz: String = c.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
        assert_eq!(tz, "UTC");
    }
}

/// Two one-shot pool calls joined in one task queue like any others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_pool_calls_joined_in_one_task_both_run() {
    let db = setup().await;
    let (a, b) = tokio::join!(
        db.pool.query_one("SELECT 1::int4", &[]),
        db.pool.execute("INSERT INTO t VALUES (1)", &[]),
    );
    assert_eq!(a.unwrap().get::<i32, _>(0), 1);
    assert_eq!(b.unwrap(), 1);
    let rows = futures::future::join_all((0..8).map(|i| {
        let pool = db.pool.clone();
        async move {
            pool.execute("INSERT INTO t VALUES ($1)", &params![10 + i])
                .await
        }
    }))
    .await;
    assert!(rows.iter().all(|r| matches!(r, Ok(1))), "{rows:?}");
}

/// A client moved into a spawned task is that task's: the parent may wait
/// for the pool meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moved_into_a_spawned_task_belongs_to_it() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let (used, was_used) = tokio::sync::oneshot::channel();
    let child = tokio::spawn(async move {
        c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        let _ = used.send(());
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    });
    was_used.await.unwrap();
    // Waits for the child's client on PGlite; another connection on a server.
    let n = tokio::time::timeout(Duration::from_secs(10), db.pool.execute("SELECT 1", &[]))
        .await
        .expect("must not hang")
        .unwrap();
    assert_eq!(n, 1);
    child.await.unwrap();
    assert_eq!(ids(&db).await, vec![1, 2]);
}

/// A task holding a client that asks the pool for another session is told
/// where it holds it, with its own line, whichever pool call it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_deadlock_names_the_callers_line() {
    let db = setup().await;
    let held = db.pool.acquire().await.unwrap();
    let line = line!() - 1;
    let result = tokio::time::timeout(Duration::from_secs(5), db.pool.query_one("SELECT 1", &[]))
        .await
        .expect("must not hang");
    match db.backend() {
        BackendKind::Pglite => {
            let err = result.unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::WouldDeadlock { .. }), "{msg}");
            assert!(msg.contains(&format!("sessions.rs:{line}")), "{msg}");
        }
        _ => assert!(result.is_ok()),
    }
    drop(held);
}

/// SQL text that ends the guarded transaction makes the guard refuse what
/// follows, instead of running it outside any transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_whose_transaction_sql_ended_refuses_further_statements() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.batch_execute("/* done */ COMMIT").await.unwrap();
    let err = tx
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TransactionLost(TransactionLoss::EndedBySql)),
        "{err}"
    );
    let err = tx.rollback().await.unwrap_err();
    assert!(matches!(err, Error::TransactionLost(_)), "{err}");
    drop(c);
    assert_eq!(ids(&db).await, vec![1]);
}

/// A guarded `begin()` inside a transaction that SQL text opened is refused
/// rather than silently joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_inside_a_transaction_opened_by_sql_text_is_refused() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    c.execute("START TRANSACTION", &[]).await.unwrap();
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let err = c.begin().await.unwrap_err();
    assert!(matches!(err, Error::UntrackedTransaction), "{err}");
    c.execute("ROLLBACK", &[]).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    drop(c);
    assert_eq!(ids(&db).await, vec![2]);
}

/// The configured time limits are what every session starts with, and a
/// statement that outlives `statement_timeout` fails at the deadline on
/// every backend; inside a transaction nothing of it is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_timeouts_apply_to_every_session() {
    let db = TestDb::with_config(|c| {
        c.statement_timeout(Duration::from_millis(300))
            .lock_timeout(Duration::from_secs(2))
    })
    .await;
    db.sql("CREATE TABLE t (id int PRIMARY KEY)").await;
    let show = |sql: &'static str| {
        let pool = db.pool.clone();
        async move { pool.query_one(sql, &[]).await.unwrap().get::<String, _>(0) }
    };
    assert_eq!(show("SHOW statement_timeout").await, "300ms");
    assert_eq!(show("SHOW lock_timeout").await, "2s");
    // A session that changed them gives them back on release.
    let mut c = db.pool.acquire().await.unwrap();
    c.execute("SET statement_timeout = 0", &[]).await.unwrap();
    drop(c);
    assert_eq!(show("SHOW statement_timeout").await, "300ms");

    let started = std::time::Instant::now();
    let err = db
        .pool
        .execute("SELECT pg_sleep(2)", &[])
        .await
        .unwrap_err();
    assert!(err.is_statement_timeout(), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let err = tx.execute("SELECT pg_sleep(2)", &[]).await.unwrap_err();
    assert!(err.is_statement_timeout(), "{err}");
    let err = tx.commit().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TransactionAborted { .. } | Error::TransactionLost(TransactionLoss::Cancelled)
        ),
        "{err}"
    );
    drop(c);
    let n: i64 = db
        .pool
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// Transactions cut off at random moments by their callers' timeouts keep
/// the invariant (money is neither made nor lost), and on a server each cut
/// does not cost a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_cut_by_random_timeouts_keep_the_total_and_the_connections() {
    const ACCOUNTS: i64 = 20;
    const TASKS: u64 = 32;
    const TRANSFERS: u64 = 60;
    let db = TestDb::with_config(|c| c.max_connections(8)).await;
    db.sql("CREATE TABLE accounts (id int8 PRIMARY KEY, balance int8 NOT NULL)")
        .await;
    db.sql("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 20) g")
        .await;
    let tasks = (0..TASKS).map(|task| {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let mut seed = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut committed = 0u32;
            for _ in 0..TRANSFERS {
                let from = (next() % ACCOUNTS as u64) as i64 + 1;
                let to = (next() % ACCOUNTS as u64) as i64 + 1;
                let limit = Duration::from_micros(50 + next() % 3_000);
                let transfer = async {
                    let mut c = pool.acquire().await?;
                    let mut tx = c.begin().await?;
                    tx.execute(
                        "UPDATE accounts SET balance = balance - 1 WHERE id = $1",
                        &params![from],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
                        &params![to],
                    )
                    .await?;
                    tx.commit().await
                };
                if let Ok(Ok(())) = tokio::time::timeout(limit, transfer).await {
                    committed += 1;
                }
            }
            committed
        })
    });
    let mut committed = 0;
    for task in tasks {
        committed += task.await.unwrap();
    }
    let total: i64 = db
        .pool
        .query_one("SELECT sum(balance)::int8 FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total,
        100 * ACCOUNTS,
        "after {committed} committed transfers"
    );
    assert!(committed > 0);
    if let db::AnyPool::Postgres(pool) = &db.pool {
        let opened = pool.connections_opened();
        assert!(opened <= 16, "{opened} connections opened for a pool of 8");
    }
}

/// Found by the session model: a `begin()` the server refuses (inside a
/// failed transaction) scheduled a rollback to a savepoint that never
/// existed, which then rolled back the whole transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_refused_in_a_failed_transaction_leaves_it_as_it_was() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    assert!(tx.execute("SELECT 1/0", &[]).await.is_err());
    let err = tx.begin().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&db::SqlState::IN_FAILED_SQL_TRANSACTION),
        "{err}"
    );
    let err = tx.commit().await.unwrap_err();
    assert!(
        matches!(err, Error::TransactionAborted { depth: 1 }),
        "{err}"
    );
    drop(c);
    assert_eq!(ids(&db).await, Vec::<i32>::new());
}

/// Found by the session model: a statement cancelled while the rollback of
/// a dropped savepoint was on its way repeated that rollback, which failed
/// the second time and rolled back the whole transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cancelled_after_a_dropped_savepoint_keeps_the_transaction() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let mut sp = tx.begin().await.unwrap();
    let inner = sp.begin().await.unwrap();
    drop(inner);
    {
        // Polled once, then dropped: cut short wherever it was.
        let insert = sp.execute("INSERT INTO t VALUES (2)", &[]);
        let mut insert = std::pin::pin!(insert);
        let _ = futures::poll!(insert.as_mut());
    }
    let inner = sp.begin().await.unwrap();
    inner.commit().await.unwrap();
    sp.commit().await.unwrap();
    tx.commit().await.unwrap();
    drop(c);
    let rows = ids(&db).await;
    assert!(rows == vec![1] || rows == vec![1, 2], "{rows:?}");
}
