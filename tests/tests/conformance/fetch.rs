//! Row streams (`fetch`, `fetch_as`) and the column descriptions of every
//! result: rows arrive in order and complete past one batch, an error in the
//! middle is yielded and leaves the session usable, a stream dropped halfway
//! (in or outside a transaction) leaves the session in a known state, and a
//! pool-level stream holds a session of its own.

use db::{BackendKind, Client, Column, Error, Executor, FromRow, Pool, SqlState, Type, params};
use futures::StreamExt as _;

use crate::TestDb;

/// More rows than one batch of the embedded backend's row stream.
const MANY: i64 = 10_000;

/// A statement returning `MANY` rows: `(i, 'row ' || i)` for i = 1..=MANY.
const SERIES: &str = "SELECT i::int8 AS i, 'row ' || i AS label \
                      FROM generate_series(1, $1::int8) AS i ORDER BY i";

/// Reads a whole stream, checking that it yields exactly rows 1..=n in order.
async fn expect_series(mut rows: impl futures::Stream<Item = db::Result<db::Row>> + Unpin, n: i64) {
    let mut expected = 1_i64;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        let (i, label): (i64, String) = row.decode().unwrap();
        assert_eq!(
            (i, label.as_str()),
            (expected, format!("row {expected}").as_str())
        );
        expected += 1;
    }
    assert_eq!(expected - 1, n, "rows read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_results_describe_their_columns() {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE t (id int8 PRIMARY KEY, name text)")
        .await;
    let expected = [
        Column::new("id", Type::INT8),
        Column::new("name", Type::TEXT),
    ];

    // Twice each: the first run prepares the statement, the second reuses it.
    for _ in 0..2 {
        let r = db
            .pool
            .run("SELECT id, name FROM t WHERE false", &[])
            .await
            .unwrap();
        assert!(r.rows.is_empty());
        assert_eq!(&*r.columns, &expected);
        let r = db
            .pool
            .run("SELECT id, name FROM t WHERE id = $1", &params![1_i64])
            .await
            .unwrap();
        assert!(r.rows.is_empty());
        assert_eq!(&*r.columns, &expected);
    }
    let mut client = db.pool.acquire().await.unwrap();
    let mut tx = client.begin().await.unwrap();
    let r = tx
        .run("SELECT id, name FROM t WHERE false", &[])
        .await
        .unwrap();
    assert_eq!(&*r.columns, &expected);
    // Rows and result share one description.
    let r = tx
        .run("INSERT INTO t VALUES (1, 'ada') RETURNING name, id", &[])
        .await
        .unwrap();
    assert_eq!(
        &*r.columns,
        [
            Column::new("name", Type::TEXT),
            Column::new("id", Type::INT8)
        ]
    );
    assert_eq!(r.rows[0].columns(), &*r.columns);
    // A command without rows has no columns.
    let r = tx
        .run("INSERT INTO t VALUES (2, 'grace')", &[])
        .await
        .unwrap();
    assert_eq!((r.columns.len(), r.rows_affected), (0, 1));
    let r = tx
        .run("UPDATE t SET name = $1", &params!["x"])
        .await
        .unwrap();
    assert_eq!((r.columns.len(), r.rows_affected), (0, 2));
    tx.rollback().await.unwrap();
    let r = client.run("CREATE TABLE u (a int4)", &[]).await.unwrap();
    assert!(r.columns.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_yields_every_row_in_order_past_one_batch() {
    let db = TestDb::new().await;
    let n = params![MANY];
    expect_series(db.pool.fetch(SERIES, &n), MANY).await;

    let mut client = db.pool.acquire().await.unwrap();
    expect_series(client.fetch(SERIES, &n), MANY).await;
    // Twice: the second reuses the prepared statement.
    expect_series(client.fetch(SERIES, &n), MANY).await;
    // No rows, and a command without rows, end at once (the command runs).
    client
        .execute("CREATE TABLE t (id int8)", &[])
        .await
        .unwrap();
    expect_series(client.fetch(SERIES, &params![0_i64]), 0).await;
    let mut inserted = client.fetch("INSERT INTO t VALUES (1), (2)", &[]);
    assert!(inserted.next().await.is_none());
    drop(inserted);
    // Rows a write returns stream the same way.
    let returned: Vec<i64> = client
        .fetch_as::<(i64,)>(
            "INSERT INTO t SELECT generate_series(3, 3002) RETURNING id",
            &[],
        )
        .map(|r| r.unwrap().0)
        .collect()
        .await;
    assert_eq!(returned, (3..=3002).collect::<Vec<_>>());
    let n: i64 = client
        .query_one_scalar("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(n, 3002);

    let mut tx = client.begin().await.unwrap();
    expect_series(tx.fetch(SERIES, &params![MANY]), MANY).await;
    tx.commit().await.unwrap();
}

#[derive(Debug, FromRow)]
struct Labelled {
    i: i64,
    label: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_as_reads_structs_and_reports_decode_errors() {
    let db = TestDb::new().await;
    let mut count = 0_i64;
    let n = params![MANY];
    let mut rows = db.pool.fetch_as::<Labelled>(SERIES, &n);
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        count += 1;
        assert_eq!((row.i, row.label), (count, format!("row {count}")));
    }
    assert_eq!(count, MANY);
    drop(rows);
    // A row that does not fit is an Err item, not the end of the stream.
    let mut client = db.pool.acquire().await.unwrap();
    let items: Vec<_> = client
        .fetch_as::<(i64,)>("SELECT 1::int8, 2::int8", &[])
        .collect()
        .await;
    assert!(
        matches!(items[..], [Err(Error::ColumnCount { .. })]),
        "{items:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_stream_is_yielded_and_the_session_stays_usable() {
    let db = TestDb::new().await;
    let failing = "SELECT i, 1 / (5000 - i) AS x FROM generate_series(1, 10000) AS i";

    async fn read_until_error(mut rows: impl futures::Stream<Item = db::Result<db::Row>> + Unpin) {
        let mut ok = 0_i32;
        let mut errors = Vec::new();
        while let Some(row) = rows.next().await {
            match row {
                Ok(row) if errors.is_empty() => {
                    ok += 1;
                    assert_eq!(row.get::<i32, _>(0), ok);
                }
                Ok(row) => panic!("a row after the error: {row:?}"),
                Err(e) => errors.push(e),
            }
        }
        assert_eq!(ok, 4999, "rows before the error");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].code(), Some(&SqlState::DIVISION_BY_ZERO));
    }

    read_until_error(db.pool.fetch(failing, &[])).await;
    assert_eq!(answer(&db.pool).await, 42);

    let mut client = db.pool.acquire().await.unwrap();
    read_until_error(client.fetch(failing, &[])).await;
    let n: i64 = client
        .query_one_scalar("SELECT 42::int8", &[])
        .await
        .unwrap();
    assert_eq!(n, 42);
    // A statement refused before any row: one Err.
    let items: Vec<_> = client.fetch("SELEC 1", &[]).collect().await;
    assert!(
        matches!(&items[..], [Err(e)] if e.code() == Some(&SqlState::SYNTAX_ERROR)),
        "{items:?}"
    );

    // In a transaction the error aborts it, as any failed statement does.
    client
        .execute("CREATE TABLE t (id int8)", &[])
        .await
        .unwrap();
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    read_until_error(tx.fetch(failing, &[])).await;
    assert!(matches!(
        tx.commit().await,
        Err(Error::TransactionAborted { depth: 1 })
    ));
    let n: i64 = client
        .query_one_scalar("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(n, 0);
    drop(client);
    assert_eq!(answer(&db.pool).await, 42);
}

async fn answer(pool: &impl Pool) -> i64 {
    pool.query_one_scalar("SELECT 42::int8", &[]).await.unwrap()
}

/// Reads `n` rows of a stream and drops it.
async fn read_some(mut rows: impl futures::Stream<Item = db::Result<db::Row>> + Unpin, n: i64) {
    for expected in 1..=n {
        let row = rows.next().await.unwrap().unwrap();
        assert_eq!(row.get::<i64, _>(0), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_halfway_leaves_the_session_usable() {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE t (id int8)").await;
    let n = params![MANY];

    read_some(db.pool.fetch(SERIES, &n), 10).await;
    assert_eq!(answer(&db.pool).await, 42);

    let mut client = db.pool.acquire().await.unwrap();
    read_some(client.fetch(SERIES, &n), 10).await;
    // The next statement gets its own answer, not the rest of the stream.
    let next: String = client.query_one_scalar("SELECT 'next'", &[]).await.unwrap();
    assert_eq!(next, "next");
    expect_series(client.fetch(SERIES, &n), MANY).await;
    // Dropped before its first row, and after all but one.
    drop(client.fetch(SERIES, &n));
    read_some(client.fetch(SERIES, &n), MANY - 1).await;
    let r = client.run("SELECT 7::int8 AS seven", &[]).await.unwrap();
    assert_eq!((r.rows.len(), r.columns[0].name()), (1, "seven"));

    // Inside a transaction that commits: both writes around it are kept.
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    read_some(tx.fetch(SERIES, &n), 10).await;
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    // ... and one that rolls back: nothing is kept.
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    read_some(tx.fetch(SERIES, &n), 10).await;
    tx.rollback().await.unwrap();
    // ... and one whose guard is dropped right after the stream.
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (4)", &[]).await.unwrap();
    read_some(tx.fetch(SERIES, &n), 10).await;
    drop(tx);
    // A savepoint rolled back after a dropped stream keeps the outer writes.
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (5)", &[]).await.unwrap();
    let mut sp = tx.begin().await.unwrap();
    sp.execute("INSERT INTO t VALUES (6)", &[]).await.unwrap();
    read_some(sp.fetch(SERIES, &n), 10).await;
    sp.rollback().await.unwrap();
    tx.commit().await.unwrap();

    let ids: Vec<i64> = client
        .query_scalar("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 5]);
    drop(client);
    // The pool's next session is clean.
    let ids: Vec<i64> = db
        .pool
        .query_scalar("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_stream_holds_a_session_of_its_own() {
    let db = TestDb::new().await;
    let n = params![MANY];
    let mut rows = db.pool.fetch(SERIES, &n);
    assert_eq!(rows.next().await.unwrap().unwrap().get::<i64, _>(0), 1);
    match db.backend() {
        // The one backend session is the stream's until it ends: the same
        // task asking for it again would wait forever.
        BackendKind::Pglite => {
            let err = db.pool.query("SELECT 1", &[]).await.unwrap_err();
            assert!(matches!(err, Error::WouldDeadlock { .. }), "{err}");
            let err = db.pool.acquire().await.unwrap_err();
            assert!(matches!(err, Error::WouldDeadlock { .. }), "{err}");
        }
        _ => assert_eq!(answer(&db.pool).await, 42),
    }
    // Another task waits for the stream's session (on PGlite) and gets it
    // once the stream is dropped.
    let pool = db.pool.clone();
    let other = tokio::spawn(async move { answer(&pool).await });
    drop(rows);
    assert_eq!(other.await.unwrap(), 42);
    assert_eq!(answer(&db.pool).await, 42);

    // The stream is Send: a spawned task can read it to its end.
    let pool = db.pool.clone();
    let count = tokio::spawn(async move {
        let n = params![MANY];
        pool.fetch(SERIES, &n).count().await
    });
    assert_eq!(count.await.unwrap(), usize::try_from(MANY).unwrap());
}

/// A stream over an enum type the session has not read before, inside a
/// transaction and outside: its values read as text from the first row to
/// the last, and the transaction goes on as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_read_enums_first_seen_in_the_stream() {
    let db = TestDb::new().await;
    db.sql("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        .await;
    db.sql(
        "CREATE TABLE moods AS SELECT i::int8 AS i, (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood AS m \
         FROM generate_series(1, 300) AS i",
    )
    .await;
    let expected: Vec<(i64, String)> = (1..=300_i64)
        .map(|i| (i, ["sad", "ok", "happy"][(i % 3) as usize].to_owned()))
        .collect();
    let mut client = db.pool.acquire().await.unwrap();
    let mut tx = client.begin().await.unwrap();
    tx.execute("INSERT INTO moods VALUES (301, 'ok')", &[])
        .await
        .unwrap();
    let rows: Vec<(i64, String)> = tx
        .fetch_as::<(i64, String)>("SELECT i, m FROM moods WHERE i <= 300 ORDER BY i", &[])
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(rows, expected);
    tx.commit().await.unwrap();
    drop(client);
    let n: i64 = db
        .pool
        .query_one_scalar("SELECT count(*) FROM moods", &[])
        .await
        .unwrap();
    assert_eq!(n, 301, "the transaction around the stream committed");
    // A fresh enum, first read by a pool-level stream outside a transaction.
    db.sql("CREATE TYPE size AS ENUM ('s', 'm', 'l')").await;
    let sizes: Vec<String> = db
        .pool
        .fetch_as::<(String,)>(
            "SELECT (ARRAY['s', 'm', 'l'])[1 + i % 3]::size FROM generate_series(1, 300) AS i",
            &[],
        )
        .map(|r| r.unwrap().0)
        .collect()
        .await;
    assert_eq!(sizes.len(), 300);
    assert_eq!(sizes[..3], ["m", "l", "s"]);
}
