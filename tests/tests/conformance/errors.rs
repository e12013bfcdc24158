//! Server errors keep their SQLSTATE and fields, identically on every backend.

use db::{Executor, Pool, SqlState, params};

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
