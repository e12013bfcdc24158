//! Advisory locks exclude across sessions on every backend.

use std::time::Duration;

use db::{AdvisoryLock, Client, Executor, Pool};

use crate::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_locks_exclude_each_other() {
    let db = TestDb::new().await;
    let held = db.pool.lock(42, Duration::from_secs(5)).await.unwrap();
    assert_eq!(held.key(), 42);
    assert!(db.pool.try_lock(42).await.unwrap().is_none());
    let err = db
        .pool
        .lock(42, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, db::Error::LockTimeout { key: 42, .. }),
        "{err}"
    );
    assert!(
        db.pool.try_lock(43).await.unwrap().is_some(),
        "another key is free"
    );
    held.unlock().await.unwrap();
    assert!(db.pool.try_lock(42).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lock_is_granted_when_released() {
    let db = TestDb::new().await;
    let held = db.pool.lock(7, Duration::from_secs(5)).await.unwrap();
    let pool = db.pool.clone();
    let waiter =
        tokio::spawn(async move { pool.lock(7, Duration::from_secs(10)).await.map(|l| l.key()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_locks_are_reentrant_and_exclusive() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    assert!(c.try_lock(9).await.unwrap());
    c.lock(9, Duration::from_secs(1)).await.unwrap();
    assert!(
        db.pool.try_lock(9).await.unwrap().is_none(),
        "held twice by the session"
    );
    assert!(c.unlock(9).await.unwrap());
    assert!(
        db.pool.try_lock(9).await.unwrap().is_none(),
        "still held once"
    );
    assert!(c.unlock(9).await.unwrap());
    assert!(!c.unlock(9).await.unwrap(), "nothing left to unlock");
    assert!(db.pool.try_lock(9).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_locks_are_released_with_the_session() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    c.lock(11, Duration::from_secs(1)).await.unwrap();
    let pool_guard = db.pool.lock(12, Duration::from_secs(1)).await.unwrap();
    assert!(
        !c.try_lock(12).await.unwrap(),
        "the pool guard excludes the session"
    );
    drop(c);
    // Released when the session goes back to the pool.
    let l = db.pool.lock(11, Duration::from_secs(5)).await.unwrap();
    assert_eq!(l.key(), 11);
    drop(pool_guard);
}

/// Schema sync and enabling a feed each take their lock on the session that
/// does the work: a pool of one connection is enough (it waited for the
/// whole acquire timeout, holding the lock on one connection and asking for
/// another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_installers_work_with_one_connection() {
    use schema_sync::{Column, Options, Schema, Table};
    let db =
        TestDb::with_config(|c| c.max_connections(1).acquire_timeout(Duration::from_secs(5))).await;
    let schema = Schema::new().table(
        Table::new("items")
            .column(Column::new("id", "BIGINT"))
            .primary_key(["id"]),
    );
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        schema_sync::sync(&db.pool, &schema, &Options::new()),
    )
    .await
    .expect("sync must not wait for a second connection")
    .unwrap();
    assert!(!report.plan.is_empty());
    let feed = changefeed::Feed::start(db.pool.clone(), changefeed::Options::new())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), feed.enable("items"))
        .await
        .expect("enable must not wait for a second connection")
        .unwrap();
}

/// A held session waiting for a lock whose holder needs the database to
/// finish: on PGlite the waiter gives the backend up meanwhile instead of
/// waiting out its timeout; on a server the holder uses another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_waiting_for_a_lock_lets_its_holder_finish() {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE steps (n int)").await;
    let guard = db.pool.lock(7, Duration::from_secs(5)).await.unwrap();
    let pool = db.pool.clone();
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pool.execute("INSERT INTO steps VALUES (1)", &[])
            .await
            .unwrap();
        guard.unlock().await.unwrap();
    });
    let mut c = db.pool.acquire().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), c.lock(7, Duration::from_secs(10)))
        .await
        .expect("the lock's holder could not finish")
        .unwrap();
    c.execute("INSERT INTO steps VALUES (2)", &[])
        .await
        .unwrap();
    assert!(c.unlock(7).await.unwrap());
    drop(c);
    holder.await.unwrap();
    let n: i64 = db
        .pool
        .query_one("SELECT count(*) FROM steps", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}
