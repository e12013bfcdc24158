//! `COPY FROM STDIN` and `COPY TO STDOUT` through `copy_in` / `copy_out`:
//! round trips in every format, row counts, transactions, server errors,
//! statements of the wrong kind, sink errors, and large outputs.

use db::{Client, CopyDirection, Error, Executor, Pool, SqlState, Value};

use crate::TestDb;

/// Values no format takes without escaping, and one large one.
fn awkward_texts() -> Vec<Option<String>> {
    vec![
        None,
        Some(String::new()),
        Some("plain".into()),
        Some("tab\there".into()),
        Some("back\\slash and \\N".into()),
        Some("new\nline and carriage\rreturn".into()),
        Some("comma, \"quotes\" and 'apostrophes'".into()),
        Some("unicode: héllo wörld ✓ 🦀 日本語".into()),
        Some(" leading and trailing spaces ".into()),
        Some("x".repeat(1 << 20)),
    ]
}

async fn setup() -> TestDb {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE t (id int8 PRIMARY KEY, s text, b bytea, n int4)")
        .await
        .unwrap();
    db
}

/// A value in COPY's text format (`\N` for NULL).
fn text_field(value: Option<&str>) -> String {
    let Some(v) = value else {
        return "\\N".into();
    };
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// A value in COPY's CSV format (unquoted empty for NULL).
fn csv_field(value: Option<&str>) -> String {
    match value {
        None => String::new(),
        Some(v) if v.is_empty() || v.contains([',', '"', '\n', '\r']) => {
            format!("\"{}\"", v.replace('"', "\"\""))
        }
        Some(v) => v.to_owned(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bytes_for(i: usize) -> Vec<u8> {
    (0..=255u8).cycle().skip(i).take(i * 7 % 300).collect()
}

/// The table's rows in id order, as (id, s, b, n).
type Stored = (i64, Option<String>, Option<Vec<u8>>, Option<i32>);

async fn stored(e: &mut impl Executor) -> Vec<Stored> {
    e.query("SELECT id, s, b, n FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn expected() -> Vec<Stored> {
    awkward_texts()
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let b = (i % 3 != 1).then(|| bytes_for(i));
            let n = (i % 4 != 2).then(|| i as i32 * -1000);
            (i as i64 + 1, s, b, n)
        })
        .collect()
}

/// Collects a whole `copy_out`, and the number of chunks it came in.
async fn copy_out_all(e: &mut impl Executor, sql: &str) -> (Vec<u8>, u64, usize) {
    let mut out = Vec::new();
    let mut chunks = 0;
    let rows = e
        .copy_out(sql, |chunk| {
            out.extend_from_slice(chunk);
            chunks += 1;
            Ok(())
        })
        .await
        .unwrap();
    (out, rows, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_round_trips_exactly() {
    let db = setup().await;
    let mut input = String::new();
    for (id, s, b, n) in expected() {
        let b = b.map(|b| format!("\\x{}", hex(&b)));
        let n = n.map(|n| n.to_string());
        input.push_str(&format!(
            "{id}\t{}\t{}\t{}\n",
            text_field(s.as_deref()),
            text_field(b.as_deref()),
            text_field(n.as_deref())
        ));
    }
    let mut c = db.pool.acquire().await.unwrap();
    let rows = c
        .copy_in("COPY t FROM STDIN", input.as_bytes())
        .await
        .unwrap();
    assert_eq!(rows, expected().len() as u64);
    assert_eq!(stored(&mut c).await, expected());

    let (out, rows, chunks) =
        copy_out_all(&mut c, "COPY (SELECT * FROM t ORDER BY id) TO STDOUT").await;
    assert_eq!(rows, expected().len() as u64);
    assert_eq!(chunks, expected().len(), "one chunk per row");
    assert!(
        out == input.as_bytes(),
        "text output differs from the input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_format_round_trips_exactly() {
    let db = setup().await;
    let mut input = String::from("id,s,b,n\n");
    for (id, s, b, n) in expected() {
        let b = b.map(|b| format!("\\x{}", hex(&b)));
        let n = n.map(|n| n.to_string());
        input.push_str(&format!(
            "{id},{},{},{}\n",
            csv_field(s.as_deref()),
            csv_field(b.as_deref()),
            csv_field(n.as_deref())
        ));
    }
    let rows = db
        .pool
        .copy_in(
            "COPY t FROM STDIN (FORMAT csv, HEADER true)",
            input.as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(rows, expected().len() as u64);
    let mut c = db.pool.acquire().await.unwrap();
    assert_eq!(stored(&mut c).await, expected());

    let (out, rows, chunks) = copy_out_all(
        &mut c,
        "COPY (SELECT * FROM t ORDER BY id) TO STDOUT (FORMAT csv, HEADER)",
    )
    .await;
    assert_eq!(rows, expected().len() as u64, "the header is not a row");
    assert_eq!(chunks, expected().len() + 1);
    assert!(out == input.as_bytes(), "CSV output differs from the input");
}

/// The binary COPY format: header, tuples of length-prefixed fields, trailer.
fn binary_copy(rows: &[Stored]) -> Vec<u8> {
    let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    let field = |out: &mut Vec<u8>, v: Option<&[u8]>| match v {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(v) => {
            out.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
            out.extend_from_slice(v);
        }
    };
    for (id, s, b, n) in rows {
        out.extend_from_slice(&4i16.to_be_bytes());
        field(&mut out, Some(&id.to_be_bytes()));
        field(&mut out, s.as_deref().map(str::as_bytes));
        field(&mut out, b.as_deref());
        field(&mut out, n.map(i32::to_be_bytes).as_ref().map(|n| &n[..]));
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_format_round_trips_exactly() {
    let db = setup().await;
    let input = binary_copy(&expected());
    let mut c = db.pool.acquire().await.unwrap();
    let rows = c
        .copy_in("COPY t FROM STDIN (FORMAT binary)", &input)
        .await
        .unwrap();
    assert_eq!(rows, expected().len() as u64);
    assert_eq!(stored(&mut c).await, expected());

    let (out, rows, _) = copy_out_all(
        &mut c,
        "COPY (SELECT * FROM t ORDER BY id) TO STDOUT (FORMAT binary)",
    )
    .await;
    assert_eq!(rows, expected().len() as u64, "the trailer is not a row");
    assert!(out == input, "binary output differs from the input");

    // No rows: header and trailer only.
    c.batch_execute("DELETE FROM t").await.unwrap();
    let (out, rows, _) = copy_out_all(&mut c, "COPY t TO STDOUT (FORMAT binary)").await;
    assert_eq!(rows, 0);
    assert!(out == binary_copy(&[]), "empty binary output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_in_chunks_of_whole_rows_adds_up() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut total = 0;
    for chunk in 0..20 {
        let rows: String = (0..500)
            .map(|i| format!("{}\tchunk {chunk}\t\\N\t{i}\n", chunk * 500 + i))
            .collect();
        total += c
            .copy_in("COPY t (id, s, b, n) FROM STDIN", rows.as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(total, 10_000);
    let n: i64 = c
        .query_one("SELECT count(DISTINCT id) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10_000);
    // An empty input copies nothing and is no error.
    assert_eq!(c.copy_in("COPY t FROM STDIN", b"").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_a_rolled_back_transaction_leaves_nothing() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    let rows = tx
        .copy_in("COPY t (id, s) FROM STDIN (FORMAT csv)", b"1,a\n2,b\n3,c\n")
        .await
        .unwrap();
    assert_eq!(rows, 3);
    let (out, rows, _) = copy_out_all(&mut tx, "COPY t (id) TO STDOUT").await;
    assert_eq!((out.as_slice(), rows), (&b"1\n2\n3\n"[..], 3));
    tx.rollback().await.unwrap();
    assert!(stored(&mut c).await.is_empty());

    // Committed, it stays.
    let mut tx = c.begin().await.unwrap();
    tx.copy_in("COPY t (id) FROM STDIN", b"7\n").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored(&mut c).await.len(), 1);
}

async fn session_works(c: &mut impl Executor) {
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let (out, rows, _) = copy_out_all(c, "COPY (SELECT 'still here') TO STDOUT").await;
    assert_eq!((out.as_slice(), rows), (&b"still here\n"[..], 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_database_error_and_the_session_goes_on() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let input = format!(
        "1\tok\t\\N\t1\n2\tbad\t\\N\tnot a number\n{}",
        "3\tx\t\\N\t3\n".repeat(5000)
    );
    let err = c
        .copy_in("COPY t FROM STDIN", input.as_bytes())
        .await
        .unwrap_err();
    let e = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {err}"));
    assert_eq!(e.code, SqlState::from_code("22P02"), "{err}");
    assert!(e.message.contains("not a number"), "{err}");
    session_works(&mut c).await;
    assert!(
        stored(&mut c).await.is_empty(),
        "a failed COPY copies nothing"
    );

    // A duplicate key, found only after the rows went in.
    let err = c
        .copy_in("COPY t (id) FROM STDIN", b"1\n1\n")
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    // Too few columns in the CSV format.
    let err = c
        .copy_in("COPY t FROM STDIN (FORMAT csv)", b"1,a\n")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::from_code("22P04")), "{err}");
    session_works(&mut c).await;

    // Inside a transaction the error aborts it, as any failed statement does.
    let mut tx = c.begin().await.unwrap();
    tx.copy_in("COPY t (id) FROM STDIN", b"10\n").await.unwrap();
    let err = tx
        .copy_in("COPY t (id) FROM STDIN", b"x\n")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::from_code("22P02")), "{err}");
    let err = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::from_code("25P02")), "{err}");
    let err = tx
        .copy_in("COPY t (id) FROM STDIN", b"11\n")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::from_code("25P02")), "{err}");
    tx.rollback().await.unwrap();
    session_works(&mut c).await;
    assert!(stored(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_before_and_during_copy_out_leave_the_session_usable() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let no_table = |err: &Error| err.code() == Some(&SqlState::from_code("42P01"));

    let err = c
        .copy_in("COPY missing FROM STDIN", b"1\n")
        .await
        .unwrap_err();
    assert!(no_table(&err), "{err}");
    session_works(&mut c).await;

    let err = c
        .copy_out("COPY missing TO STDOUT", |_| Ok(()))
        .await
        .unwrap_err();
    assert!(no_table(&err), "{err}");
    session_works(&mut c).await;

    // Fails after four rows went out.
    let mut seen = Vec::new();
    let err = c
        .copy_out(
            "COPY (SELECT 10 / (5 - g) FROM generate_series(1, 10) g) TO STDOUT",
            |chunk| {
                seen.extend_from_slice(chunk);
                Ok(())
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::from_code("22012")), "{err}");
    assert_eq!(seen, b"2\n3\n5\n10\n");
    session_works(&mut c).await;

    // In a transaction, the transaction is aborted and the session usable.
    let mut tx = c.begin().await.unwrap();
    let err = tx
        .copy_out("COPY missing TO STDOUT", |_| Ok(()))
        .await
        .unwrap_err();
    assert!(no_table(&err), "{err}");
    let err = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::from_code("25P02")), "{err}");
    drop(tx);
    session_works(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_of_the_wrong_kind_are_refused_without_harm() {
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    tx.execute("INSERT INTO t (id) VALUES (1)", &[])
        .await
        .unwrap();
    for (direction, sql) in [
        (CopyDirection::In, "SELECT 1"),
        (CopyDirection::In, "COPY t TO STDOUT"),
        (CopyDirection::In, "INSERT INTO t (id) VALUES (2)"),
        (CopyDirection::In, "COPY t FROM STDIN; DELETE FROM t"),
        (CopyDirection::In, "COPY t FROM '/etc/hostname'"),
        (CopyDirection::Out, "COPY t FROM STDIN"),
        (CopyDirection::Out, "SELECT * FROM t"),
        (CopyDirection::Out, "COPY t TO '/tmp/t.copy'"),
        (CopyDirection::Out, "DELETE FROM t"),
    ] {
        let result = match direction {
            CopyDirection::In => tx.copy_in(sql, b"3\n").await,
            CopyDirection::Out => tx.copy_out(sql, |_| panic!("no data expected")).await,
        };
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::NotCopy { direction: d, statement } if *d == direction && statement == sql),
            "{sql}: {err}"
        );
        let shown = err.to_string();
        assert!(shown.contains("COPY ..."), "{shown}");
    }
    // Nothing ran, and the transaction is intact.
    let (out, rows, _) = copy_out_all(&mut tx, "COPY t (id) TO STDOUT").await;
    assert_eq!((out.as_slice(), rows), (&b"1\n"[..], 1));
    tx.commit().await.unwrap();
    session_works(&mut c).await;
    assert_eq!(stored(&mut c).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_error_ends_copy_out_and_the_session_goes_on() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut calls = 0;
    let err = c
        .copy_out(
            "COPY (SELECT g FROM generate_series(1, 50000) g) TO STDOUT",
            |_| {
                calls += 1;
                if calls == 10 {
                    Err(Error::Protocol("the sink is full".into()))
                } else {
                    Ok(())
                }
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m == "the sink is full"),
        "{err}"
    );
    assert_eq!(calls, 10, "no chunk after the sink failed");
    session_works(&mut c).await;

    // The same inside a transaction, which stays usable.
    let mut tx = c.begin().await.unwrap();
    let err = tx
        .copy_out("COPY (SELECT 1) TO STDOUT", |_| {
            Err(Error::Protocol("no".into()))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    session_works(&mut tx).await;
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_copy_out_streams_row_by_row() {
    let db = TestDb::new().await;
    let mut chunks = 0u64;
    let mut bytes = 0usize;
    let mut largest = 0usize;
    let mut last = Vec::new();
    let rows = db
        .pool
        .copy_out(
            "COPY (SELECT g, md5(g::text), repeat('x', g % 100) FROM generate_series(1, 200000) g) TO STDOUT",
            |chunk| {
                chunks += 1;
                bytes += chunk.len();
                largest = largest.max(chunk.len());
                last = chunk.to_vec();
                Ok(())
            },
        )
        .await
        .unwrap();
    assert_eq!(rows, 200_000);
    assert_eq!(chunks, 200_000);
    assert!(largest < 200, "chunks are rows: {largest} bytes");
    assert!(bytes > 200_000 * 40, "{bytes} bytes");
    assert!(
        last.starts_with(b"200000\t"),
        "{:?}",
        String::from_utf8_lossy(&last)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_feeds_what_queries_read() {
    // COPY and the extended protocol see the same data, in the same session.
    let db = setup().await;
    let mut c = db.pool.acquire().await.unwrap();
    c.copy_in("COPY t (id, s) FROM STDIN", "5\tfünf\n".as_bytes())
        .await
        .unwrap();
    let row = c
        .query_one("SELECT s FROM t WHERE id = $1", &[Value::Int8(5)])
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "fünf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_copy_leaves_nothing_for_the_next_session() {
    let db = setup().await;
    let big_out = "COPY (SELECT g, repeat('y', 200) FROM generate_series(1, 300000) g) TO STDOUT";
    let big_in: String = (0..100_000)
        .map(|i| format!("{i}\tcancelled\t\\N\t1\n"))
        .collect();
    for round in 0..2 {
        let mut c = db.pool.acquire().await.unwrap();
        let mut tx = c.begin().await.unwrap();
        tx.copy_in("COPY t (id) FROM STDIN", b"-1\n").await.unwrap();
        let cut = std::time::Duration::from_millis(1);
        let outcome = if round == 0 {
            tokio::time::timeout(cut, tx.copy_out(big_out, |_| Ok(()))).await
        } else {
            tokio::time::timeout(cut, tx.copy_in("COPY t FROM STDIN", big_in.as_bytes())).await
        };
        assert!(
            outcome.is_err(),
            "round {round}: the copy finished within 1 ms"
        );
        drop(tx);
        drop(c);
        // The next session starts clean: nothing of the transaction is left.
        let mut c = db.pool.acquire().await.unwrap();
        session_works(&mut c).await;
        assert!(stored(&mut c).await.is_empty(), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_raised_by_a_copy_are_delivered() {
    let db = setup().await;
    db.pool
        .batch_execute(
            "CREATE FUNCTION t_notify() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_notify('copied', NEW.id::text); RETURN NULL; END $$;
             CREATE TRIGGER t_notify AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION t_notify();",
        )
        .await
        .unwrap();
    let mut stream = db.pool.listen("copied").await.unwrap();
    let rows = db
        .pool
        .copy_in("COPY t (id) FROM STDIN", b"4\n5\n")
        .await
        .unwrap();
    assert_eq!(rows, 2);
    for expected in ["4", "5"] {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.recv()).await {
            Ok(Ok(db::ListenEvent::Notification(n))) => assert_eq!(n.payload, expected),
            other => panic!("expected a notification, got {other:?}"),
        }
    }
}
