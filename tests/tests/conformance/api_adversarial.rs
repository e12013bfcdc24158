//! Adversarial tests of the hub-facing API: row streams with SQL-text
//! transaction control and DML, pool transactions, db-testing resets, type edges.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use db::{Error, Executor, IsolationLevel, Pool, TxOptions, params};
use db_testing::TestDatabases;
use futures::StreamExt as _;

use crate::TestDb;

async fn one_session() -> TestDb {
    let db = TestDb::with_config(|c| c.max_connections(1)).await;
    db.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")
        .await;
    db
}

async fn count(pool: &db::AnyPool) -> i64 {
    pool.query_one_scalar("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
}

/// An autocommit `INSERT ... RETURNING` read through a stream that is
/// dropped after its first row: on a server the statement has run whole and
/// committed; the embedded backend must keep the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dml_stream_dropped_early_keeps_what_a_server_keeps() {
    let db = one_session().await;
    {
        let mut rows = db.pool.fetch(
            "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10000) g RETURNING id",
            &[],
        );
        let first = rows.next().await.unwrap().unwrap();
        assert_eq!(first.get::<i32, _>(0), 1);
    }
    assert_eq!(count(&db.pool).await, 10_000, "pool stream");

    // Inside a transaction that then commits.
    let mut tx = db.pool.begin().await.unwrap();
    {
        let mut rows = tx.fetch("UPDATE t SET note = 'y' WHERE id <= 9000 RETURNING id", &[]);
        rows.next().await.unwrap().unwrap();
    }
    tx.execute("INSERT INTO t VALUES (20001, 'z')", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let y: i64 = db
        .pool
        .query_one_scalar("SELECT count(*) FROM t WHERE note = 'y'", &[])
        .await
        .unwrap();
    assert_eq!(y, 9000, "UPDATE RETURNING through a dropped stream in a tx");
    assert_eq!(count(&db.pool).await, 10_001);
}

/// SQL-text transaction control through `fetch`: the guard must notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_of_rollback_inside_a_guard_is_noticed() {
    let db = one_session().await;
    let mut tx = db.pool.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    {
        let rows: Vec<_> = tx.fetch("ROLLBACK", &[]).collect().await;
        assert!(rows.iter().all(|r| r.is_ok()), "{rows:?}");
    }
    let after = tx.execute("INSERT INTO t VALUES (2)", &[]).await;
    assert!(
        matches!(after, Err(Error::TransactionLost(_))),
        "an insert after a ROLLBACK sent through fetch ran: {after:?}"
    );
    drop(tx);
    assert_eq!(count(&db.pool).await, 0);
}

/// `BEGIN` or `SET` through a pool-level stream must not leak to the next
/// user of the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_begin_or_set_does_not_leak() {
    let db = one_session().await;
    let begun: Vec<_> = db.pool.fetch("BEGIN", &[]).collect().await;
    assert!(begun.iter().all(|r| r.is_ok()), "{begun:?}");
    db.pool
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    let xid: Option<i64> = db
        .pool
        .query_one_scalar("SELECT txid_current_if_assigned()", &[])
        .await
        .unwrap();
    assert_eq!(
        xid, None,
        "the next users run inside the transaction fetch(BEGIN) opened"
    );
    let _: Vec<_> = db
        .pool
        .fetch("SET application_name = 'leaked_by_fetch'", &[])
        .collect()
        .await;
    let name: String = db
        .pool
        .query_one_scalar("SHOW application_name", &[])
        .await
        .unwrap();
    assert_ne!(name, "leaked_by_fetch");
    let _: Vec<_> = db
        .pool
        .fetch(
            "SELECT set_config('application_name', 'leaked2', false)",
            &[],
        )
        .collect()
        .await;
    let name: String = db
        .pool
        .query_one_scalar("SHOW application_name", &[])
        .await
        .unwrap();
    assert_ne!(name, "leaked2");
}

/// An error in the middle of a stream inside a transaction: commit keeps
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_stream_then_commit_is_aborted() {
    let db = one_session().await;
    let mut tx = db.pool.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    {
        let items: Vec<_> = tx
            .fetch(
                "SELECT 1 / (5000 - g) FROM generate_series(1, 10000) g",
                &[],
            )
            .collect()
            .await;
        assert!(items.last().unwrap().is_err());
    }
    let err = tx.commit().await.unwrap_err();
    assert!(matches!(err, Error::TransactionAborted { .. }), "{err}");
    assert_eq!(count(&db.pool).await, 0);
}

/// Session characteristics changed by SQL text inside pool.transaction do
/// not reach the next user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_characteristics_do_not_leak() {
    let db = one_session().await;
    db.pool
        .transaction(|tx| {
            Box::pin(async move {
                tx.execute(
                    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
                    &[],
                )
                .await
            })
        })
        .await
        .unwrap();
    let (level, ro): (String, String) = db
        .pool
        .query_one_as(
            "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((level.as_str(), ro.as_str()), ("read committed", "off"));
    let tx = db
        .pool
        .begin_with(
            TxOptions::new()
                .isolation(IsolationLevel::Serializable)
                .read_only(true),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    db.pool
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
}

/// A closure that commits through SQL text and then returns Ok: the data
/// is committed, so pool.transaction must not report a plain failure that
/// invites the caller to run it again; and it must never run it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closure_commits_by_sql_text() {
    let db = one_session().await;
    let attempts = AtomicU32::new(0);
    let r = db
        .pool
        .transaction(|tx| {
            attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                tx.execute("COMMIT", &[]).await?;
                Ok::<_, Error>(())
            })
        })
        .await;
    // Committed by the text, reported as lost: the data is there.
    assert!(matches!(r, Err(Error::TransactionLost(_))), "{r:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(count(&db.pool).await, 1);
}

/// A conflict recovered from inside a savepoint followed by an ordinary
/// application error: the README says other errors return at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_deadlock_then_app_error_is_not_retried() {
    let db = one_session().await;
    let attempts = AtomicU32::new(0);
    let r: Result<(), Error> = db
        .pool
        .transaction(|tx| {
            attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                {
                    let mut sp = tx.begin().await?;
                    let e = sp
                        .batch_execute(
                            "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$",
                        )
                        .await;
                    assert!(e.is_err());
                    sp.rollback().await?;
                }
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                // Not a conflict: a duplicate key.
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                Ok(())
            })
        })
        .await;
    let err = r.unwrap_err();
    assert_eq!(err.code(), Some(&db::SqlState::UNIQUE_VIOLATION), "{err}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "a unique violation was retried because an earlier savepoint met a deadlock"
    );
}

/// A transaction moved into a task that panics: rolled back, session clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_in_panicking_task() {
    let db = one_session().await;
    let mut tx = db.pool.begin().await.unwrap();
    let h = tokio::spawn(async move {
        tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        let mut s = tx.fetch("SELECT g FROM generate_series(1, 10000) g", &[]);
        s.next().await.unwrap().unwrap();
        panic!("boom");
    });
    assert!(h.await.is_err());
    let n = tokio::time::timeout(Duration::from_secs(10), count(&db.pool))
        .await
        .expect("hang after a panicked transaction");
    assert_eq!(n, 0);
}

/// Many tasks, many cancelled statements on one pool; then the pool still
/// serves and no transaction leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_with_cancellations() {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")
        .await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 => {
                    let _ = tokio::time::timeout(
                        Duration::from_micros(50 * i as u64),
                        pool.execute(
                            "INSERT INTO t SELECT g + $1 * 1000 FROM generate_series(1, 500) g",
                            &params![i],
                        ),
                    )
                    .await;
                }
                1 => {
                    let _ = tokio::time::timeout(Duration::from_micros(100 * i as u64), async {
                        let mut tx = pool.begin().await?;
                        tx.execute("INSERT INTO t VALUES ($1)", &params![100_000 + i])
                            .await?;
                        tokio::task::yield_now().await;
                        tx.commit().await
                    })
                    .await;
                }
                2 => {
                    let _ = tokio::time::timeout(Duration::from_micros(100 * i as u64), async {
                        let mut s = pool.fetch("SELECT g FROM generate_series(1, 20000) g", &[]);
                        while let Some(r) = s.next().await {
                            r.unwrap();
                        }
                    })
                    .await;
                }
                _ => {
                    pool.transaction(|tx| {
                        Box::pin(async move {
                            tx.execute("INSERT INTO t VALUES ($1)", &params![200_000 + i])
                                .await
                        })
                    })
                    .await
                    .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("hang")
            .unwrap();
    }
    let xid: Option<i64> = db
        .pool
        .query_one_scalar("SELECT txid_current_if_assigned()", &[])
        .await
        .unwrap();
    assert!(xid.is_none());
    let n: i64 = db
        .pool
        .query_one_scalar("SELECT count(*) FROM t WHERE id >= 200000", &[])
        .await
        .unwrap();
    assert_eq!(n, 10);
}

const TRICKY_SETUP: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'happy');
    CREATE TABLE items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, m mood, v int);
    CREATE TABLE audit (n bigserial PRIMARY KEY, what text);
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
    CREATE FUNCTION log_it() RETURNS trigger LANGUAGE plpgsql AS
      $$ BEGIN INSERT INTO audit (what) VALUES ('ins ' || NEW.id); RETURN NEW; END $$;
    CREATE TRIGGER items_log AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION log_it();
    CREATE TABLE parts (k int, v text) PARTITION BY RANGE (k);
    CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (100);
    CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM (100) TO (200);
    CREATE SEQUENCE s;
";

const TRICKY_SEED: &str = "
    INSERT INTO items (m, v) VALUES ('sad', 1), ('happy', 2);
    INSERT INTO parts VALUES (1, 'a'), (150, 'b');
    SELECT nextval('s');
";

static TRICKY: LazyLock<TestDatabases> = LazyLock::new(|| {
    TestDatabases::new(
        conformance::base_config(),
        db_testing::Setup::new().sql(TRICKY_SETUP).seed(TRICKY_SEED),
    )
});

/// What a test does to the setup's own objects that is not a table column
/// change must not reach the next test either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_testing_resets_changed_setup_objects() {
    let mut problems = Vec::new();
    for round in 0..2 {
        let db = TRICKY.database().await.unwrap();
        let p = db.pool();
        let state: (i64, i64, i64, i32, i64) = p
            .query_one_as(
                "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM audit),
                        (SELECT count(*) FROM parts), f(),
                        (SELECT count(*) FROM pg_enum WHERE enumtypid = 'mood'::regtype)",
                &[],
            )
            .await
            .unwrap();
        if state != (2, 2, 2, 1, 2) {
            problems.push(format!(
                "round {round}: items, audit, parts, f(), labels = {state:?}"
            ));
        }
        let trg: String = p
            .query_one_scalar(
                "SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'items_log'",
                &[],
            )
            .await
            .unwrap();
        if trg != "O" {
            problems.push(format!("round {round}: trigger state {trg}"));
        }
        let inc: i64 = p
            .query_one_scalar(
                "SELECT increment_by FROM pg_sequences WHERE sequencename = 's'",
                &[],
            )
            .await
            .unwrap();
        if inc != 1 {
            problems.push(format!("round {round}: sequence increment {inc}"));
        }
        let rls: bool = p
            .query_one_scalar(
                "SELECT relrowsecurity FROM pg_class WHERE relname = 'items'",
                &[],
            )
            .await
            .unwrap();
        let policies: i64 = p
            .query_one_scalar("SELECT count(*) FROM pg_policy", &[])
            .await
            .unwrap();
        if rls || policies != 0 {
            problems.push(format!("round {round}: rls {rls}, policies {policies}"));
        }
        let next: i32 = p
            .query_one_scalar(
                "INSERT INTO items (m, v) VALUES ('happy', 3) RETURNING id",
                &[],
            )
            .await
            .unwrap();
        if next != 3 {
            problems.push(format!("round {round}: next identity {next}"));
        }
        for stmt in [
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 42'",
            "ALTER TYPE mood ADD VALUE 'angry'",
            "ALTER TABLE items DISABLE TRIGGER items_log",
            "ALTER SEQUENCE s INCREMENT BY 10",
            "ALTER TABLE items ENABLE ROW LEVEL SECURITY",
            "CREATE POLICY nobody ON items USING (false)",
            "DELETE FROM parts WHERE k = 1",
        ] {
            if let Err(e) = p.batch_execute(stmt).await {
                problems.push(format!("round {round}: {stmt}: {e}"));
            }
        }
        drop(db);
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Edge values of the new conversions, against what the server prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_edges() {
    use chrono::TimeDelta;
    let db = TestDb::new().await;
    let mut problems = Vec::new();
    for (sql, expect_ok) in [
        // Past an i64 of microseconds in all (written as a sum: PostgreSQL
        // 13 and 14 refuse the literal of an interval this large).
        (
            "('2147483647 days'::interval + '2000000000 hours'::interval)",
            true,
        ),
        ("'-200000000 days'::interval", true),
        ("'-1 day +00:00:01'::interval", true),
        ("'-1 mon +30 days'::interval", false),
    ] {
        let r = db
            .pool
            .query_one_scalar::<TimeDelta>(&format!("SELECT {sql}"), &[])
            .await;
        if r.is_ok() != expect_ok {
            problems.push(format!("{sql}: {r:?}"));
        }
        if let Ok(d) = r {
            // Back to the server: the same number of microseconds in total.
            let same: Result<bool, _> = db
                .pool
                .query_one_scalar(
                    &format!("SELECT extract(epoch FROM $1::interval) = extract(epoch FROM {sql})"),
                    &params![d],
                )
                .await;
            if !matches!(same, Ok(true)) {
                problems.push(format!("{sql}: back as {d:?}: {same:?}"));
            }
        }
    }
    for d in [TimeDelta::MAX, TimeDelta::MIN] {
        let r = db
            .pool
            .query_one_scalar::<String>("SELECT $1::interval::text", &params![d])
            .await;
        if let Ok(text) = &r {
            problems.push(format!("{d:?} was sent as {text}"));
        }
    }
    // Decimal: a negative zero and trailing zeros, against the server's text.
    use rust_decimal::Decimal;
    for s in [
        "-0",
        "-0.00",
        "1.000000000000000000000000000",
        "-0.0000000000000000000000000001",
    ] {
        let d = Decimal::from_str_exact(s).unwrap();
        let text: Result<String, _> = db
            .pool
            .query_one_scalar("SELECT $1::numeric::text", &params![d])
            .await;
        let back: Result<Decimal, _> = db
            .pool
            .query_one_scalar("SELECT $1::numeric", &params![d])
            .await;
        let want = if d.is_zero() {
            d.abs().to_string()
        } else {
            d.to_string()
        };
        if text.as_deref().ok() != Some(want.as_str()) || back.as_ref().ok() != Some(&d) {
            problems.push(format!("decimal {s}: text {text:?}, back {back:?}"));
        }
    }
    // Dates beyond what chrono / time hold: errors, never panics.
    for sql in [
        "'5874897-12-31'::date",
        "'4714-11-24 BC'::date",
        "'294276-12-31 23:59:59.999999'::timestamp",
        "'4713-01-01 00:00 BC'::timestamptz",
    ] {
        let text: String = db
            .pool
            .query_one_scalar(&format!("SELECT ({sql})::text"), &[])
            .await
            .unwrap();
        let row = match db.pool.query_one(&format!("SELECT {sql}"), &[]).await {
            Ok(row) => row,
            Err(e) => {
                problems.push(format!(
                    "{sql} ({text}): the row cannot be read at all: {e}"
                ));
                continue;
            }
        };
        let c1 = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (
                format!("{:?}", row.try_get::<chrono::NaiveDate, _>(0)),
                format!("{:?}", row.try_get::<chrono::NaiveDateTime, _>(0)),
                format!("{:?}", row.try_get::<chrono::DateTime<chrono::Utc>, _>(0)),
                format!("{:?}", row.try_get::<time::Date, _>(0)),
                format!("{:?}", row.try_get::<time::PrimitiveDateTime, _>(0)),
                format!("{:?}", row.try_get::<time::OffsetDateTime, _>(0)),
                format!("{:?}", row.try_get::<db::Infinite<time::Date>, _>(0)),
            )
        }));
        if c1.is_err() {
            problems.push(format!("{sql} ({text}): panicked"));
        }
    }
    // A BC date the time crate can hold reads as the same day.
    let row = db
        .pool
        .query_one(
            "SELECT '0001-01-01 BC'::date, '0001-01-01 BC'::date::text",
            &[],
        )
        .await
        .unwrap();
    let d: time::Date = row.get(0);
    if d.year() != 0 {
        problems.push(format!("0001-01-01 BC read as {d}"));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
