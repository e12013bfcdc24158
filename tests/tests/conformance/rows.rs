//! Row counts equal the server's command tag, for every kind of statement.

use db::{Executor, FromRow, Pool, params};

use crate::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_affected_matches_the_command_tag() {
    let db = TestDb::new().await;
    let p = &db.pool;
    assert_eq!(
        p.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        p.execute(
            "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 5) g",
            &[]
        )
        .await
        .unwrap(),
        5
    );
    assert_eq!(
        p.execute("SELECT * FROM t WHERE id <= $1", &params![3])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        p.execute("SELECT * FROM t WHERE id > 100", &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        p.execute("UPDATE t SET v = 'y' WHERE id > $1", &params![1])
            .await
            .unwrap(),
        4
    );
    let r = p
        .run("INSERT INTO t VALUES (6, 'z'), (7, 'z') RETURNING id", &[])
        .await
        .unwrap();
    assert_eq!((r.rows.len(), r.rows_affected), (2, 2));
    assert_eq!(
        p.execute("DELETE FROM t WHERE v = 'z'", &[]).await.unwrap(),
        2
    );
    assert_eq!(
        p.execute("ALTER TABLE t ADD COLUMN w int", &[])
            .await
            .unwrap(),
        0
    );
    let r = p.run("SELECT id FROM t ORDER BY id", &[]).await.unwrap();
    assert_eq!((r.rows.len(), r.rows_affected), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_one_and_opt_enforce_row_counts() {
    let db = TestDb::new().await;
    let p = &db.pool;
    assert!(
        p.query_opt("SELECT 1 WHERE false", &[])
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        p.query_one("SELECT 1 WHERE false", &[]).await,
        Err(db::Error::RowNotFound)
    ));
    assert!(matches!(
        p.query_opt("SELECT generate_series(1, 2)", &[]).await,
        Err(db::Error::TooManyRows(2))
    ));
}

#[derive(FromRow)]
struct Account {
    id: i64,
    email: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_map_to_structs_and_tuples() {
    let db = TestDb::new().await;
    let rows = db
        .pool
        .query(
            "SELECT 7::int8 AS id, NULL::text AS email UNION ALL SELECT 8, 'a@b'",
            &[],
        )
        .await
        .unwrap();
    let accounts: Vec<Account> = rows
        .iter()
        .map(Account::from_row)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(accounts[0].id, 7);
    assert_eq!(accounts[0].email, None);
    assert_eq!(accounts[1].email.as_deref(), Some("a@b"));
    let (id, email): (i64, Option<String>) = rows[1].decode().unwrap();
    assert_eq!((id, email.as_deref()), (8, Some("a@b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_survive_schema_changes_between_runs() {
    let db = TestDb::new().await;
    let p = &db.pool;
    p.batch_execute("CREATE TABLE c (a int); INSERT INTO c VALUES (1)")
        .await
        .unwrap();
    let before = p.query_one("SELECT * FROM c", &[]).await.unwrap();
    assert_eq!(before.len(), 1);
    p.batch_execute("ALTER TABLE c ADD COLUMN b text DEFAULT 'x'")
        .await
        .unwrap();
    // The same statement text now has another result type: outside a
    // transaction both backends prepare it again.
    let after = p.query_one("SELECT * FROM c", &[]).await.unwrap();
    assert_eq!(after.len(), 2);
    let mut client = p.acquire().await.unwrap();
    let row = client.query_one("SELECT * FROM c", &[]).await.unwrap();
    assert_eq!(row.get::<String, _>("b"), "x");
}
