//! A sync never stalls the hub: each DDL statement waits for its lock only
//! briefly (`lock_timeout`), the sync retries with backoff up to its
//! deadline, and then fails naming the session in the way, having changed
//! nothing. Readers of the table are not queued behind it for long.

use std::time::{Duration, Instant};

use db::{Client, Config, Executor, Pool};
use schema_sync::{Column, Options, Schema, SyncError, Table};

use crate::TestDb;

fn spec(columns: &[&str]) -> Schema {
    let mut t = Table::new("t")
        .column(Column::new("id", "BIGINT"))
        .primary_key(["id"]);
    for c in columns {
        t = t.column(Column::new(*c, "TEXT"));
    }
    Schema::new().table(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_blocked_by_a_lock_gives_up_names_the_holder_and_changes_nothing() {
    let db = TestDb::with_config(|c: Config| c.acquire_timeout(Duration::from_secs(2))).await;
    schema_sync::sync(&db.pool, &spec(&[]), &Options::new())
        .await
        .unwrap();
    db.pool
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // Another session reads t in an open transaction: it holds ACCESS SHARE.
    let mut holder = db.pool.acquire().await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    tx.query("SELECT * FROM t", &[]).await.unwrap();

    let options = Options::new()
        .lock_timeout(Duration::from_millis(200))
        .lock_deadline(Duration::from_millis(1500));
    let pool = db.pool.clone();
    let started = Instant::now();
    let sync = tokio::spawn(async move { schema_sync::sync(&pool, &spec(&["x"]), &options).await });
    if db.backend() == db::BackendKind::Postgres {
        // Meanwhile a reader on a third session gets through: the sync
        // waits for its lock at most `lock_timeout` at a time.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n: i64 = tokio::time::timeout(
            Duration::from_secs(3),
            db.pool.query_one("SELECT count(*) FROM t", &[]),
        )
        .await
        .expect("a reader is not stalled behind the sync")
        .unwrap()
        .get(0);
        assert_eq!(n, 1);
    }
    let err = sync
        .await
        .unwrap()
        .expect_err("the sync cannot get its lock");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    let text = err.to_string();
    match &err {
        SyncError::LockTimeout { table, holders, .. } => {
            assert_eq!(table.as_deref(), Some("t"), "{text}");
            assert!(!holders.is_empty(), "{text}");
            assert!(text.contains("pid"), "the holder's pid: {text}");
        }
        // The embedded backend is one session: the sync waits for it as a
        // whole, and the error says where it is held.
        SyncError::Db(db::Error::PoolTimedOut { holder, .. }) => {
            assert!(
                holder
                    .as_deref()
                    .is_some_and(|h| h.contains("schema_locks.rs")),
                "{text}"
            );
        }
        other => panic!("expected a lock timeout, got {other}"),
    }
    tx.rollback().await.unwrap();
    drop(holder);
    let columns = crate::schema_ownership::columns(&db, "t").await;
    assert_eq!(columns, ["id"], "nothing changed");
    // Once the lock is free the same sync goes through.
    schema_sync::sync(&db.pool, &spec(&["x"]), &Options::new())
        .await
        .unwrap();
    assert_eq!(
        crate::schema_ownership::columns(&db, "t").await,
        ["id", "x"]
    );
}

/// A concurrent index build waits for open writers of its table only up
/// to the lock deadline, then fails naming them, leaving no index behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_index_build_gives_up_at_the_deadline_and_names_the_writer() {
    let db = TestDb::with_config(|c: Config| c.acquire_timeout(Duration::from_secs(2))).await;
    if db.backend() != db::BackendKind::Postgres {
        return; // concurrent builds are PostgreSQL's only
    }
    schema_sync::sync(&db.pool, &spec(&["x"]), &Options::new())
        .await
        .unwrap();
    let mut holder = db.pool.acquire().await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1, 'a')", &[])
        .await
        .unwrap();
    // Older than the lock timeout: the build would wait for it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let indexed = {
        let mut s = spec(&["x"]);
        s.tables[0] = s.tables[0]
            .clone()
            .index(schema_sync::Index::new("t_x_idx", ["x"]));
        s
    };
    let options = Options::new()
        .concurrent_indexes(true)
        .lock_timeout(Duration::from_millis(200))
        .lock_deadline(Duration::from_millis(1500));
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        schema_sync::sync(&db.pool, &indexed, &options),
    )
    .await
    .expect("the build gives up by itself");
    let err = result.expect_err("the writer is in the way");
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    let holders = match &err {
        SyncError::LockTimeout { holders, .. } => holders.clone(),
        SyncError::PartiallyApplied { source, .. } => match source.as_ref() {
            SyncError::LockTimeout { holders, .. } => holders.clone(),
            other => panic!("expected a lock timeout, got {other}"),
        },
        other => panic!("expected a lock timeout, got {other}"),
    };
    let writer: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(holders.iter().any(|h| h.pid == writer), "{text}");
    tx.rollback().await.unwrap();
    drop(holder);
    let left: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass AND NOT indisprimary",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "no index is left behind: {text}");
    schema_sync::sync(&db.pool, &indexed, &options)
        .await
        .unwrap();
}

/// Waiting for another sync (the advisory lock) ends at the lock deadline
/// too, naming the session that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_another_sync_ends_at_the_deadline_and_names_it() {
    let db = TestDb::with_config(|c: Config| c.acquire_timeout(Duration::from_secs(2))).await;
    let mut holder = db.pool.acquire().await.unwrap();
    holder
        .lock(schema_sync::LOCK_KEY, Duration::from_secs(1))
        .await
        .unwrap();
    let options = Options::new().lock_deadline(Duration::from_millis(1000));
    let started = Instant::now();
    let pool = db.pool.clone();
    let sync = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(20),
            schema_sync::sync(&pool, &spec(&[]), &options),
        )
        .await
    });
    let result = sync.await.unwrap().expect("the wait ends by itself");
    let err = result.expect_err("another sync holds the lock");
    assert!(started.elapsed() < Duration::from_secs(8), "{err}");
    let text = err.to_string();
    match &err {
        SyncError::SyncInProgress { holders, .. } => {
            let pid: i32 = holder
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get(0);
            assert!(holders.iter().any(|h| h.pid == pid), "{text}");
            assert!(text.contains(&format!("pid {pid}")), "{text}");
        }
        // The embedded backend is one session: the sync waits for it as a
        // whole, and the error says where it is held.
        SyncError::Db(db::Error::PoolTimedOut { .. }) => {
            assert_ne!(db.backend(), db::BackendKind::Postgres, "{text}");
        }
        other => panic!("expected SyncInProgress, got {other}"),
    }
    holder.unlock(schema_sync::LOCK_KEY).await.unwrap();
}

/// A statement that runs past the statement timeout fails saying so, not
/// as a spec the server rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_says_it_timed_out() {
    let db = TestDb::new().await;
    if db.backend() != db::BackendKind::Postgres {
        return; // statement_timeout is set on PostgreSQL only
    }
    schema_sync::sync(&db.pool, &spec(&["x"]), &Options::new())
        .await
        .unwrap();
    db.pool
        .batch_execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 300000) g")
        .await
        .unwrap();
    let indexed = {
        let mut s = spec(&["x"]);
        s.tables[0] = s.tables[0]
            .clone()
            .index(schema_sync::Index::new("t_x_idx", ["lower(x)", "md5(x)"]));
        s
    };
    let err = schema_sync::sync(
        &db.pool,
        &indexed,
        &Options::new().statement_timeout(Duration::from_millis(20)),
    )
    .await
    .expect_err("the build takes longer than 20 ms");
    let text = err.to_string();
    assert!(matches!(err, SyncError::StatementTimeout { .. }), "{text}");
    assert!(text.contains("timed out"), "{text}");
    assert!(!text.contains("rejected"), "{text}");
}
