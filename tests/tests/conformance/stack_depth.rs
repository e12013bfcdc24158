//! Statements that nest too deeply (recursive functions, deeply nested
//! values, huge expressions) fail alone: nothing they wrote is kept, what was
//! committed before stays, and the database goes on serving the next caller.
//!
//! A server stops them at `max_stack_depth` with `54001`. On the embedded
//! backend the WebAssembly call stack can run out first: that is a crash of
//! the backend, which is restarted from its files as after `kill -9`, and the
//! caller gets [`db::Error::BackendCrashed`]. Either way the data is the same.

use db::{Client, Executor, Pool, SqlState, params};

use crate::TestDb;

const RECURSIVE_INSERT: &str = "CREATE TABLE deep_rows (n int); \
     CREATE FUNCTION deep_insert(n int) RETURNS int LANGUAGE plpgsql AS \
     $$ BEGIN INSERT INTO deep_rows VALUES (n); RETURN deep_insert(n + 1); END $$";

fn assert_too_deep(err: &db::Error) {
    assert!(
        err.code() == Some(&SqlState::STATEMENT_TOO_COMPLEX)
            || matches!(err, db::Error::BackendCrashed { .. }),
        "expected a stack depth error or a backend crash, got {err}"
    );
}

async fn count(db: &TestDb, table: &str) -> i64 {
    db.pool
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn seed(db: &TestDb) {
    db.pool.batch_execute(RECURSIVE_INSERT).await.unwrap();
    db.pool
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('committed before')")
        .await
        .unwrap();
}

/// After the failure the same pool serves a new caller, and what was
/// committed before is there.
async fn assert_still_serving(db: &TestDb) {
    let v: String = db
        .pool
        .query_one("SELECT v FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "committed before");
    db.pool
        .execute("INSERT INTO kept VALUES ($1)", &params!["after"])
        .await
        .unwrap();
    assert_eq!(count(db, "kept").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_recursion_in_autocommit_keeps_none_of_its_rows() {
    let db = TestDb::new().await;
    seed(&db).await;
    let mut events = db.pool.listen("deep_events").await.unwrap();
    let err = db
        .pool
        .query("SELECT deep_insert(1)", &[])
        .await
        .unwrap_err();
    assert_too_deep(&err);
    assert_eq!(count(&db, "deep_rows").await, 0);
    assert_still_serving(&db).await;
    // A listener made before the failure still hears what is sent after it.
    db.pool
        .execute("SELECT pg_notify('deep_events', 'after')", &[])
        .await
        .unwrap();
    let crashed = matches!(err, db::Error::BackendCrashed { .. });
    assert_eq!(
        crate::notification_after(&mut events, crashed).await,
        "after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_recursion_in_a_transaction_loses_the_whole_transaction() {
    let db = TestDb::new().await;
    seed(&db).await;
    let mut client = db.pool.acquire().await.unwrap();
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO deep_rows VALUES (0)", &[])
        .await
        .unwrap();
    let err = tx.query("SELECT deep_insert(1)", &[]).await.unwrap_err();
    assert_too_deep(&err);
    assert!(
        tx.commit().await.is_err(),
        "a failed transaction must not commit"
    );
    drop(client);
    assert_eq!(count(&db, "deep_rows").await, 0);
    assert_still_serving(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_values_and_expressions_fail_alone() {
    let db = TestDb::new().await;
    seed(&db).await;
    let depth = 20_000;
    let nested_json = format!(
        "SELECT ('{}' || '{}')::jsonb IS NULL",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let nested_parens = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
    let long_sum = format!("SELECT 1{}", "+1".repeat(depth));
    let nested_arrays = format!(
        "SELECT '{}1{}'::int[] IS NULL",
        "{".repeat(depth),
        "}".repeat(depth)
    );
    // What a server answers to each; where it is 54001, the embedded
    // backend may crash instead.
    let cases = [
        (&nested_json, SqlState::STATEMENT_TOO_COMPLEX),
        (&nested_parens, SqlState::SYNTAX_ERROR),
        (&long_sum, SqlState::STATEMENT_TOO_COMPLEX),
        (&nested_arrays, SqlState::PROGRAM_LIMIT_EXCEEDED),
    ];
    for (sql, expected) in cases {
        let mut client = db.pool.acquire().await.unwrap();
        let mut tx = client.begin().await.unwrap();
        tx.execute("INSERT INTO deep_rows VALUES (-1)", &[])
            .await
            .unwrap();
        let err = tx.query(sql, &[]).await.unwrap_err();
        if expected == SqlState::STATEMENT_TOO_COMPLEX {
            assert_too_deep(&err);
        } else {
            assert_eq!(err.code(), Some(&expected), "{}: {err}", &sql[..40]);
        }
        assert!(tx.commit().await.is_err());
        drop(client);
        assert_eq!(count(&db, "deep_rows").await, 0, "{}", &sql[..40]);
        let one: i32 = db.pool.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    }
    assert_still_serving(&db).await;
}

/// The functions of a database that crashed keep working after the restart,
/// and a recursion that stays within the limits runs as on a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_recursion_still_runs_after_a_failure() {
    let db = TestDb::new().await;
    seed(&db).await;
    db.pool
        .batch_execute(
            "CREATE FUNCTION depth_to(n int, lim int) RETURNS int LANGUAGE plpgsql AS \
             $$ BEGIN IF n >= lim THEN RETURN n; END IF; RETURN depth_to(n + 1, lim); END $$",
        )
        .await
        .unwrap();
    let _ = db
        .pool
        .query("SELECT deep_insert(1)", &[])
        .await
        .unwrap_err();
    let reached: i32 = db
        .pool
        .query_one("SELECT depth_to(1, 100)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reached, 100);
}
