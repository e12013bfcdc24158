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
