//! LISTEN/NOTIFY: commit-only delivery in commit order, deduplication,
//! payload limits, and explicit lag reports.

use std::time::Duration;

use db::{Client, Executor, ListenEvent, NotificationStream, Pool, params};

use crate::TestDb;

async fn next_payload(stream: &mut NotificationStream) -> String {
    match tokio::time::timeout(Duration::from_secs(10), stream.recv()).await {
        Ok(Ok(ListenEvent::Notification(n))) => n.payload.clone(),
        other => panic!("expected a notification, got {other:?}"),
    }
}

async fn notify(db: &TestDb, payload: &str) {
    db.pool
        .execute("SELECT pg_notify('events', $1)", &params![payload])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_on_commit_only_and_in_commit_order() {
    let db = TestDb::new().await;
    let mut stream = db.pool.listen("events").await.unwrap();
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("NOTIFY events, 'in-tx'", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        stream.try_recv().unwrap().is_none(),
        "delivered before commit"
    );
    tx.commit().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("NOTIFY events, 'rolled-back'", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    c.execute("NOTIFY events, 'second'", &[]).await.unwrap();
    drop(c);
    notify(&db, "third").await;
    assert_eq!(next_payload(&mut stream).await, "in-tx");
    assert_eq!(next_payload(&mut stream).await, "second");
    assert_eq!(next_payload(&mut stream).await, "third");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_distinct_payload_in_a_transaction() {
    let db = TestDb::new().await;
    let mut stream = db.pool.listen("events").await.unwrap();
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    for p in ["x", "x", "y", "x"] {
        tx.execute("SELECT pg_notify('events', $1)", &params![p])
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    drop(c);
    notify(&db, "end").await;
    assert_eq!(next_payload(&mut stream).await, "x");
    assert_eq!(next_payload(&mut stream).await, "y");
    assert_eq!(next_payload(&mut stream).await, "end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_is_the_notifying_session() {
    let db = TestDb::new().await;
    let mut stream = db.pool.listen("events").await.unwrap();
    let mut c = db.pool.acquire().await.unwrap();
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    c.execute("NOTIFY events, 'mine'", &[]).await.unwrap();
    drop(c);
    match tokio::time::timeout(Duration::from_secs(10), stream.recv()).await {
        Ok(Ok(ListenEvent::Notification(n))) => {
            assert_eq!(n.channel, "events");
            assert_eq!(n.payload, "mine");
            assert_eq!(n.process_id, pid);
        }
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_is_a_clear_error() {
    let db = TestDb::new().await;
    let mut stream = db.pool.listen("events").await.unwrap();
    let ok = "a".repeat(7999);
    notify(&db, &ok).await;
    assert_eq!(next_payload(&mut stream).await.len(), 7999);
    let err = db
        .pool
        .execute("SELECT pg_notify('events', $1)", &params!["a".repeat(8000)])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22023"), "{err}");
    assert!(err.to_string().contains("payload string too long"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_channel_names_and_independent_subscribers() {
    let db = TestDb::new().await;
    let mut odd = db.pool.listen("Odd \"Channel\" ü").await.unwrap();
    let mut a = db.pool.listen("events").await.unwrap();
    let mut b = db.pool.listen("events").await.unwrap();
    db.pool
        .execute("SELECT pg_notify($1, 'hi')", &params!["Odd \"Channel\" ü"])
        .await
        .unwrap();
    notify(&db, "both").await;
    assert_eq!(next_payload(&mut odd).await, "hi");
    assert_eq!(next_payload(&mut a).await, "both");
    assert_eq!(next_payload(&mut b).await, "both");
    drop(a);
    notify(&db, "still").await;
    assert_eq!(next_payload(&mut b).await, "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_told_so() {
    let db = TestDb::new().await;
    let mut stream = db.pool.listen("events").await.unwrap();
    db.sql("SELECT pg_notify('events', g::text) FROM generate_series(1, 1500) g")
        .await;
    // A slow subscriber: it reads nothing until all 1500 have been fanned out
    // (a server delivers them over its connection after the commit).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lagged = 0;
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.recv()).await {
            Ok(Ok(ListenEvent::Lagged(n))) => lagged += n,
            Ok(Ok(ListenEvent::Notification(_))) => received += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert!(lagged > 0, "no lag reported");
    assert_eq!(
        lagged + received,
        1500,
        "every notification is either received or counted as lost"
    );
}

/// Terminates the server session that listens for the pool; the number
/// terminated (0 on PGlite, whose listener is the one backend).
async fn terminate_listener(db: &TestDb) -> u64 {
    db.pool
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND datname = current_database() \
             AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_survives_losing_its_connection() {
    let db = TestDb::new().await;
    let mut stream = db.pool.listen("events").await.unwrap();
    notify(&db, "before").await;
    assert_eq!(next_payload(&mut stream).await, "before");
    // A server's listener has a connection of its own; PGlite's is the one
    // backend, which no other session can terminate.
    let killed = terminate_listener(&db).await;
    match db.backend() {
        db::BackendKind::Pglite => assert_eq!(killed, 0),
        _ => {
            assert_eq!(killed, 1, "the listener connection was not found");
            match tokio::time::timeout(Duration::from_secs(20), stream.recv()).await {
                Ok(Ok(ListenEvent::Reconnected)) => {}
                other => panic!("expected Reconnected, got {other:?}"),
            }
        }
    }
    // LISTEN is in effect again: nothing sent from now on is lost.
    notify(&db, "after").await;
    assert_eq!(next_payload(&mut stream).await, "after");
}

/// While a server's listening connection cannot be re-established, a new
/// subscription fails at once with the reason instead of hanging; once the
/// server takes connections again, subscribers hear `Reconnected` and new
/// subscriptions work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_while_the_listener_reconnects_never_hangs() {
    let db = TestDb::new().await;
    let mut stream = db.pool.listen("events").await.unwrap();
    if db.backend() == db::BackendKind::Pglite {
        // One backend, nothing to reconnect: subscribing works at once.
        let other = tokio::time::timeout(Duration::from_secs(5), db.pool.listen("other")).await;
        assert!(matches!(other, Ok(Ok(_))));
        return;
    }
    let database: String = db
        .pool
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    // A database cannot refuse connections to itself: ask from another.
    let url = db.config.postgres.url.clone().expect("a server URL");
    let admin = db::AnyPool::connect(
        &db::Config::new().postgres_url(db_testing::with_database(&url, "postgres")),
    )
    .await
    .unwrap();
    let allow = |on: bool| {
        let pool = admin.clone();
        let sql = format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {on}",
            db::quote_ident(&database)
        );
        async move { pool.execute(&sql, &[]).await.unwrap() }
    };
    allow(false).await;
    let killed = terminate_listener(&db).await;
    assert_eq!(killed, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let attempt = tokio::time::timeout(Duration::from_secs(5), db.pool.listen("other")).await;
    allow(true).await;
    let err = match attempt {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("LISTEN cannot be in effect without a connection"),
        Err(_) => panic!("subscribing hung while the listener reconnected"),
    };
    assert!(err.to_string().contains("re-established"), "{err}");
    match tokio::time::timeout(Duration::from_secs(20), stream.recv()).await {
        Ok(Ok(ListenEvent::Reconnected)) => {}
        other => panic!("expected Reconnected, got {other:?}"),
    }
    let mut other = tokio::time::timeout(Duration::from_secs(10), db.pool.listen("other"))
        .await
        .expect("must not hang")
        .unwrap();
    db.pool
        .execute("SELECT pg_notify('other', 'hello')", &[])
        .await
        .unwrap();
    assert_eq!(next_payload(&mut other).await, "hello");
    admin.close().await;
}
