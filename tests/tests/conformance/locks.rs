//! Advisory locks exclude across sessions on every backend.

use std::time::Duration;

use db::{AdvisoryLock, Client, Pool};

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
