//! Transactions, savepoints, the aborted state, and isolation between sessions.

use std::time::Duration;

use db::{Client, Executor, Pool, SqlState, params};

use crate::TestDb;

async fn count(db: &TestDb) -> i64 {
    db.pool
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

async fn setup() -> TestDb {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_keeps_and_rollback_discards() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    drop(tx);
    let ids: Vec<i32> = c
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1]);
    drop(c);
    assert_eq!(count(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_savepoints_roll_back_independently() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    {
        let mut sp = tx.begin().await.unwrap();
        assert_eq!(sp.depth(), 2);
        sp.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
        let mut inner = sp.begin().await.unwrap();
        inner
            .execute("INSERT INTO t VALUES (3)", &[])
            .await
            .unwrap();
        inner.commit().await.unwrap();
        sp.rollback().await.unwrap();
    }
    {
        let mut sp = tx.begin().await.unwrap();
        sp.execute("INSERT INTO t VALUES (4)", &[]).await.unwrap();
        sp.commit().await.unwrap();
    }
    {
        let mut sp = tx.begin().await.unwrap();
        sp.execute("INSERT INTO t VALUES (5)", &[]).await.unwrap();
        // dropped: rolled back to the savepoint, the outer transaction goes on
    }
    tx.execute("INSERT INTO t VALUES (6)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let ids: Vec<i32> = c
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 4, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_aborts_the_transaction_until_rollback() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let err = tx
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap_err();
    assert!(err.is_unique_violation());
    let err = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    tx.rollback().await.unwrap();
    assert_eq!(c.execute("SELECT 1", &[]).await.unwrap(), 1);
    // A savepoint recovers from the error without losing the transaction.
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let mut sp = tx.begin().await.unwrap();
    assert!(sp.execute("INSERT INTO t VALUES (1)", &[]).await.is_err());
    sp.rollback().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    drop(c);
    assert_eq!(count(&db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sessions_never_see_uncommitted_rows() {
    let db = setup().await;
    let mut writer = db.pool.acquire().await.unwrap();
    let mut tx = writer.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let pool = db.pool.clone();
    let reader = tokio::spawn(async move {
        let n: i64 = pool
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get(0);
        n
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.rollback().await.unwrap();
    drop(writer);
    assert_eq!(
        reader.await.unwrap(),
        0,
        "the reader saw an uncommitted row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_left_in_a_transaction_is_rolled_back_on_release() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    // BEGIN as plain SQL, behind the guards' back.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    drop(c);
    let mut other = db.pool.acquire().await.unwrap();
    let n: i64 = other
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    other
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap();
    drop(other);
    assert_eq!(
        count(&db).await,
        1,
        "the next session's autocommit write was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_increment_counters_exactly() {
    const TASKS: i64 = 32;
    const TXS: i64 = 200;
    let db = TestDb::with_config(|c| c.max_connections(8)).await;
    db.pool
        .batch_execute("CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL); INSERT INTO counters SELECT g, 0 FROM generate_series(0, 3) g")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..TXS {
                let mut c = pool.acquire().await.unwrap();
                let mut tx = c.begin().await.unwrap();
                let id = ((t + i) % 4) as i32;
                tx.execute("UPDATE counters SET n = n + 1 WHERE id = $1", &params![id])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    let all = futures::future::join_all(tasks);
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("deadlock: the tasks did not finish")
        .into_iter()
        .for_each(|r| r.unwrap());
    let total: i64 = db
        .pool
        .query_one("SELECT sum(n)::int8 FROM counters", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, TASKS * TXS);
    let each: Vec<i64> = db
        .pool
        .query("SELECT n FROM counters ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(each, vec![TASKS * TXS / 4; 4]);
}

async fn values(db: &TestDb, table: &str) -> Vec<i32> {
    db.pool
        .query(&format!("SELECT n FROM {table} ORDER BY n"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Procedures and `DO` blocks that end transactions from inside PL/pgSQL.
/// `COMMIT` inside works as on a server. `ROLLBACK` inside is refused by the
/// embedded backend (PGlite fails it with `XX000`, a resource owner error):
/// there the whole call fails and keeps nothing, never half of it, and the
/// database goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procedures_that_commit_or_roll_back_inside() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE TABLE proc_rows (n int); \
             CREATE PROCEDURE commits() LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO proc_rows VALUES (1); COMMIT; INSERT INTO proc_rows VALUES (2); END $$; \
             CREATE PROCEDURE rolls_back() LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO proc_rows VALUES (3); ROLLBACK; INSERT INTO proc_rows VALUES (4); END $$",
        )
        .await
        .unwrap();
    db.pool.batch_execute("CALL commits()").await.unwrap();
    assert_eq!(values(&db, "proc_rows").await, vec![1, 2]);
    db.pool
        .batch_execute("DO $$ BEGIN INSERT INTO proc_rows VALUES (5); COMMIT; END $$")
        .await
        .unwrap();
    assert_eq!(values(&db, "proc_rows").await, vec![1, 2, 5]);
    match db.pool.batch_execute("CALL rolls_back()").await {
        Ok(()) => assert_eq!(values(&db, "proc_rows").await, vec![1, 2, 4, 5]),
        Err(e) => {
            assert!(e.as_db_error().is_some(), "{e}");
            assert_eq!(values(&db, "proc_rows").await, vec![1, 2, 5]);
        }
    }
    db.pool
        .execute("INSERT INTO proc_rows VALUES ($1)", &params![6])
        .await
        .unwrap();
    assert!(values(&db, "proc_rows").await.ends_with(&[5, 6]));
}
