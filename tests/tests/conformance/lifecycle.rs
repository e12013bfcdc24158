//! Panics, cancelled futures, nested acquires, timeouts and closing.

use std::time::Duration;

use db::{BackendKind, Client, Executor, Pool};

use crate::TestDb;

async fn table(db: &TestDb) {
    db.pool
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
}

async fn count(db: &TestDb) -> i64 {
    db.pool
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_a_transaction_rolls_it_back() {
    let db = TestDb::new().await;
    table(&db).await;
    let pool = db.pool.clone();
    let task = tokio::spawn(async move {
        let mut c = pool.acquire().await.unwrap();
        let mut tx = c.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        panic!("boom");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(count(&db).await, 0);
    db.sql("INSERT INTO t VALUES (2)").await;
    assert_eq!(count(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_futures_leave_the_session_consistent() {
    let db = TestDb::new().await;
    table(&db).await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let slow = tokio::time::timeout(
        Duration::from_millis(50),
        tx.execute("SELECT pg_sleep(0.5)", &[]),
    )
    .await;
    assert!(
        slow.is_err(),
        "the statement should have been cancelled by the timeout"
    );
    drop(tx);
    // A cancelled BEGIN must not leave a transaction behind either.
    let begin = tokio::time::timeout(Duration::from_micros(1), c.begin()).await;
    drop(begin);
    c.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    drop(c);
    let ids: Vec<i32> = db
        .pool
        .query("SELECT id FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_a_second_session_while_holding_one() {
    let db = TestDb::new().await;
    let held = db.pool.acquire().await.unwrap();
    let line = line!() - 1;
    let second = tokio::time::timeout(Duration::from_secs(5), db.pool.acquire())
        .await
        .expect("must not hang");
    match db.backend() {
        BackendKind::Pglite => {
            let err = second.unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, db::Error::WouldDeadlock { .. }), "{msg}");
            assert!(msg.contains(&format!("lifecycle.rs:{line}")), "{msg}");
            let err = db.pool.execute("SELECT 1", &[]).await.unwrap_err();
            assert!(matches!(err, db::Error::WouldDeadlock { .. }), "{err}");
        }
        _ => assert!(second.is_ok(), "a server hands out another connection"),
    }
    drop(held);
    assert!(db.pool.acquire().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_timeout_is_an_error_that_names_the_holder() {
    let db = TestDb::with_config(|c| {
        c.acquire_timeout(Duration::from_millis(300))
            .max_connections(1)
    })
    .await;
    let held = db.pool.acquire().await.unwrap();
    let line = line!() - 1;
    let pool = db.pool.clone();
    let err = tokio::spawn(async move { pool.acquire().await.map(drop) })
        .await
        .unwrap()
        .unwrap_err();
    match &err {
        db::Error::PoolTimedOut { holder, .. } => {
            if db.backend() == BackendKind::Pglite {
                let h = holder.as_deref().unwrap_or("");
                assert!(h.contains(&format!("lifecycle.rs:{line}")), "{err}");
            }
        }
        other => panic!("expected a timeout, got {other}"),
    }
    drop(held);
    assert!(db.pool.acquire().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_after_close_is_a_clear_error() {
    let db = TestDb::new().await;
    db.sql("SELECT 1").await;
    db.pool.close().await;
    let err = db.pool.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(err.is_closed(), "{err}");
    assert!(db.pool.acquire().await.unwrap_err().is_closed());
}

/// Every session reports the configured application name (what
/// `pg_stat_activity` and lock-holder messages show), also after a session
/// that changed it went back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_report_the_application_name() {
    let db = TestDb::with_config(|c| c.application_name("hub 'slice'")).await;
    let name = |pool: db::AnyPool| async move {
        pool.query_one("SHOW application_name", &[])
            .await
            .unwrap()
            .get::<String, _>(0)
    };
    assert_eq!(name(db.pool.clone()).await, "hub 'slice'");
    let mut client = db.pool.acquire().await.unwrap();
    client
        .batch_execute("SET application_name = 'changed'")
        .await
        .unwrap();
    drop(client);
    assert_eq!(name(db.pool.clone()).await, "hub 'slice'");
    // Without one configured, the program's name.
    let plain = TestDb::new().await;
    let shown = name(plain.pool.clone()).await;
    assert!(shown.starts_with("conformance"), "{shown}");
}

/// `Pool::stats` counts the sessions lent out, the callers waiting and the
/// longest wait, the same way on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_sessions_in_use_and_waiters() {
    let db = TestDb::with_config(|c| c.max_connections(1)).await;
    let before = db.pool.stats();
    assert_eq!((before.in_use, before.waiting), (0, 0), "{before:?}");
    let held = db.pool.acquire().await.unwrap();
    let now = db.pool.stats();
    assert_eq!((now.size, now.idle, now.in_use), (1, 0, 1), "{now:?}");
    let pool = db.pool.clone();
    let waiter = tokio::spawn(async move {
        let client = pool.acquire().await.unwrap();
        drop(client);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db.pool.stats().waiting == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter is counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(held);
    waiter.await.unwrap();
    // A server connection goes back to its pool in a task of its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db.pool.stats().in_use > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = db.pool.stats();
    assert_eq!((after.in_use, after.waiting), (0, 0), "{after:?}");
    assert!(
        after.longest_wait >= Duration::from_millis(200),
        "{after:?}"
    );
}
