//! Server errors keep their SQLSTATE and fields, identically on every backend.

use db::{Client, Executor, Pool, SqlState, params};

use crate::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_error_has_sqlstate_and_position() {
    let db = TestDb::new().await;
    let err = db.pool.execute("SELEC 1", &[]).await.unwrap_err();
    let e = err.as_db_error().expect("a database error");
    assert_eq!(e.code, SqlState::SYNTAX_ERROR);
    assert_eq!(e.severity, "ERROR");
    assert_eq!(e.position, Some(1));
    let shown = err.to_string();
    assert!(
        shown.contains("42601") && shown.contains("SELEC"),
        "{shown}"
    );
    let err = db
        .pool
        .batch_execute("SELECT 1; SELEC 2")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::SYNTAX_ERROR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_and_not_null_violations_name_the_constraint() {
    let db = TestDb::new().await;
    let p = &db.pool;
    p.batch_execute("CREATE TABLE u (id int CONSTRAINT u_pkey PRIMARY KEY, name text NOT NULL)")
        .await
        .unwrap();
    p.execute("INSERT INTO u VALUES ($1, $2)", &params![1, "a"])
        .await
        .unwrap();
    let err = p
        .execute("INSERT INTO u VALUES ($1, $2)", &params![1, "b"])
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    let e = err.as_db_error().unwrap();
    assert_eq!(e.constraint.as_deref(), Some("u_pkey"));
    assert_eq!(e.table.as_deref(), Some("u"));
    assert!(
        e.detail.as_deref().unwrap_or("").contains("(id)=(1)"),
        "{e:?}"
    );
    let err = p
        .execute("INSERT INTO u VALUES ($1, $2)", &params![2, None::<String>])
        .await
        .unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code, SqlState::NOT_NULL_VIOLATION);
    assert_eq!(e.column.as_deref(), Some("name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_errors_are_clear() {
    let db = TestDb::new().await;
    // Too few parameters: the server's own message.
    let err = db
        .pool
        .execute("SELECT $1::int + $2::int", &params![1])
        .await
        .unwrap_err();
    assert!(err.as_db_error().is_some(), "{err}");
    // A malformed array is refused before it reaches the server.
    let bad = db::Value::Array(db::Array {
        element_type: db::Type::INT4,
        dims: vec![3],
        lower_bounds: Vec::new(),
        elements: vec![db::Value::Int4(1)],
    });
    let err = db
        .pool
        .execute("SELECT $1::int4[]", &[bad])
        .await
        .unwrap_err();
    assert!(
        matches!(err, db::Error::Encode { position: 1, .. }),
        "{err}"
    );
    // The session still works.
    assert_eq!(db.pool.execute("SELECT 1", &[]).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn division_by_zero_and_bad_casts() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let err = c
        .execute("SELECT 1 / $1::int", &params![0])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let err = c
        .execute("SELECT $1::text::int", &params!["x"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));
    let err = c
        .execute("SELECT * FROM missing_table", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
}

/// Every field of the server's error reaches the caller: the context
/// (`where`) is the only pointer into a failing trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_data_type_and_routine_are_kept() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE TABLE audited (v int);
             CREATE FUNCTION refuse_negative() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.v < 0 THEN RAISE EXCEPTION 'negative: %', NEW.v; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER audited_check BEFORE INSERT ON audited
                 FOR EACH ROW EXECUTE FUNCTION refuse_negative();
             CREATE DOMAIN positive AS int CHECK (VALUE > 0);",
        )
        .await
        .unwrap();
    let err = db
        .pool
        .execute("INSERT INTO audited VALUES (-1)", &[])
        .await
        .unwrap_err();
    let e = err.as_db_error().expect("a server error");
    let place = e.where_.as_deref().unwrap_or_default();
    assert!(place.contains("refuse_negative"), "{e:?}");
    assert!(err.to_string().contains("refuse_negative"), "{err}");
    assert!(
        e.routine.is_some() && e.file.is_some() && e.line.is_some(),
        "{e:?}"
    );
    let err = db
        .pool
        .query("SELECT (-1)::positive", &[])
        .await
        .unwrap_err();
    let e = err.as_db_error().expect("a server error");
    assert_eq!(e.data_type.as_deref(), Some("positive"), "{e:?}");
    assert_eq!(e.code, SqlState::CHECK_VIOLATION);
}

/// Which helpers say yes for `err`, by name, so a failure shows them all.
fn classes(err: &db::Error) -> Vec<&'static str> {
    type Check = fn(&db::Error) -> bool;
    let checks: [(&str, Check); 7] = [
        ("unique", db::Error::is_unique_violation),
        ("foreign_key", db::Error::is_foreign_key_violation),
        ("check", db::Error::is_check_violation),
        ("not_null", db::Error::is_not_null_violation),
        ("serialization", db::Error::is_serialization_failure),
        ("deadlock", db::Error::is_deadlock),
        ("retryable", db::Error::is_retryable),
    ];
    checks
        .into_iter()
        .filter(|(_, check)| check(err))
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_violations_are_classified() {
    let db = TestDb::new().await;
    let p = &db.pool;
    p.batch_execute(
        "CREATE TABLE owners (id int PRIMARY KEY);
         CREATE TABLE projects (
             id int PRIMARY KEY,
             owner int CONSTRAINT projects_owner_fkey REFERENCES owners,
             quota int NOT NULL CONSTRAINT projects_quota_check CHECK (quota >= 0));
         INSERT INTO owners VALUES (1);
         INSERT INTO projects VALUES (1, 1, 10);",
    )
    .await
    .unwrap();

    let cases = [
        (
            "INSERT INTO projects VALUES (1, 1, 5)",
            "unique",
            SqlState::UNIQUE_VIOLATION,
            Some("projects_pkey"),
        ),
        (
            "INSERT INTO projects VALUES (2, 99, 5)",
            "foreign_key",
            SqlState::FOREIGN_KEY_VIOLATION,
            Some("projects_owner_fkey"),
        ),
        (
            "DELETE FROM owners WHERE id = 1",
            "foreign_key",
            SqlState::FOREIGN_KEY_VIOLATION,
            Some("projects_owner_fkey"),
        ),
        (
            "INSERT INTO projects VALUES (3, 1, -1)",
            "check",
            SqlState::CHECK_VIOLATION,
            Some("projects_quota_check"),
        ),
        (
            "UPDATE projects SET quota = NULL",
            "not_null",
            SqlState::NOT_NULL_VIOLATION,
            None,
        ),
    ];
    for (sql, class, code, constraint) in cases {
        let err = p.execute(sql, &[]).await.unwrap_err();
        // One class each, none of them worth retrying; SQLSTATE and
        // constraint kept.
        assert_eq!(classes(&err), [class], "{sql}: {err}");
        assert_eq!(err.code(), Some(&code), "{sql}");
        let e = err.as_db_error().unwrap();
        assert_eq!(e.constraint.as_deref(), constraint, "{sql}: {e:?}");
        assert!(err.to_string().contains(code.code()), "{err}");
    }
    // Errors that are not the server's are none of these.
    let err = p.query_one("SELECT 1 WHERE false", &[]).await.unwrap_err();
    assert!(classes(&err).is_empty(), "{err}");
}

/// A transaction that lost a conflict runs again: serialization failures
/// and deadlocks are the retryable ones. On a server both are caused for
/// real by two sessions; the embedded backend runs one transaction at a
/// time, so neither can happen there, and the same SQLSTATEs are raised by
/// PL/pgSQL to check that they reach the caller alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_and_deadlocks_are_retryable() {
    let db = TestDb::new().await;
    let p = &db.pool;
    for (condition, class) in [
        ("serialization_failure", "serialization"),
        ("deadlock_detected", "deadlock"),
    ] {
        let sql =
            format!("DO $$ BEGIN RAISE EXCEPTION 'lost' USING ERRCODE = '{condition}'; END $$");
        let err = p.execute(&sql, &[]).await.unwrap_err();
        assert_eq!(classes(&err), [class, "retryable"], "{err}");
    }
    if db.backend() == db::BackendKind::Pglite {
        return;
    }

    p.batch_execute(
        "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);
                     INSERT INTO counters VALUES (1, 0), (2, 0);",
    )
    .await
    .unwrap();
    let mut a = p.acquire().await.unwrap();
    let mut b = p.acquire().await.unwrap();

    // REPEATABLE READ: a row changed since the snapshot cannot be updated.
    let mut tx = a.begin().await.unwrap();
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    tx.query("SELECT * FROM counters", &[]).await.unwrap();
    b.execute("UPDATE counters SET n = n + 1 WHERE id = 1", &[])
        .await
        .unwrap();
    let err = tx
        .execute("UPDATE counters SET n = n + 10 WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(classes(&err), ["serialization", "retryable"], "{err}");
    assert_eq!(err.code(), Some(&SqlState::SERIALIZATION_FAILURE));
    tx.rollback().await.unwrap();

    // Two transactions each wait for the row the other locked: the server
    // aborts one of them.
    let barrier = tokio::sync::Barrier::new(2);
    async fn side(
        client: &mut db::AnyClient,
        barrier: &tokio::sync::Barrier,
        first: i32,
        second: i32,
    ) -> db::Result<()> {
        let mut tx = client.begin().await?;
        tx.execute(
            "UPDATE counters SET n = n + 1 WHERE id = $1",
            &params![first],
        )
        .await?;
        barrier.wait().await;
        match tx
            .execute(
                "UPDATE counters SET n = n + 1 WHERE id = $1",
                &params![second],
            )
            .await
        {
            Ok(_) => tx.commit().await,
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }
    let (ra, rb) = tokio::join!(side(&mut a, &barrier, 1, 2), side(&mut b, &barrier, 2, 1));
    let lost = match (ra, rb) {
        (Err(e), Ok(())) | (Ok(()), Err(e)) => e,
        other => panic!("expected exactly one deadlock victim, got {other:?}"),
    };
    assert_eq!(classes(&lost), ["deadlock", "retryable"], "{lost}");
    assert_eq!(lost.code(), Some(&SqlState::DEADLOCK_DETECTED));
    // The winner's two increments are kept, the victim's are not (the
    // first 1 is the autocommit update above).
    let total: i64 = a
        .query_one_scalar("SELECT sum(n)::int8 FROM counters", &[])
        .await
        .unwrap();
    assert_eq!(total, 3);
}
