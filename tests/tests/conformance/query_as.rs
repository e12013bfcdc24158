//! `query_as`, `query_scalar` and their `_one`/`_opt` forms: rows read as
//! tuples, derived structs or single values, on a pool, a held session and a
//! transaction alike, with the row-count rules of `query_one`/`query_opt`.

use db::{Client, Error, Executor, FromRow, Pool, params};

use crate::TestDb;

#[derive(Debug, PartialEq, FromRow)]
struct Account {
    id: i64,
    email: Option<String>,
}

async fn accounts(db: &TestDb) {
    db.sql("CREATE TABLE accounts (id int8 PRIMARY KEY, email text)")
        .await;
    db.sql(
        "INSERT INTO accounts VALUES (1, 'ada@example.com'), (2, NULL), (3, 'grace@example.com')",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_reads_rows_as_structs_tuples_and_scalars() {
    let db = TestDb::new().await;
    accounts(&db).await;
    let p = &db.pool;

    let all: Vec<Account> = p
        .query_as(
            "SELECT id, email FROM accounts WHERE id >= $1 ORDER BY id",
            &params![2_i64],
        )
        .await
        .unwrap();
    assert_eq!(
        all,
        [
            Account { id: 2, email: None },
            Account {
                id: 3,
                email: Some("grace@example.com".into())
            }
        ]
    );
    let one: Account = p
        .query_one_as("SELECT * FROM accounts WHERE id = $1", &params![1_i64])
        .await
        .unwrap();
    assert_eq!(one.email.as_deref(), Some("ada@example.com"));
    let none = p
        .query_opt_as::<Account>("SELECT * FROM accounts WHERE id = $1", &params![9_i64])
        .await
        .unwrap();
    assert_eq!(none, None);
    let pairs = p
        .query_as::<(i64, Option<String>)>("SELECT id, email FROM accounts ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(pairs[1], (2, None));

    let ids: Vec<i64> = p
        .query_scalar("SELECT id FROM accounts ORDER BY id DESC", &[])
        .await
        .unwrap();
    assert_eq!(ids, [3, 2, 1]);
    let n: i64 = p
        .query_one_scalar("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(n, 3);
    // A NULL value reads into an Option, a missing row is None.
    let email: Option<String> = p
        .query_one_scalar("SELECT email FROM accounts WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(email, None);
    let missing: Option<String> = p
        .query_opt_scalar("SELECT email FROM accounts WHERE id = 9", &[])
        .await
        .unwrap();
    assert_eq!(missing, None);
    let found: Option<Option<String>> = p
        .query_opt_scalar("SELECT email FROM accounts WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(found, Some(Some("ada@example.com".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_and_column_counts_are_enforced() {
    let db = TestDb::new().await;
    accounts(&db).await;
    let p = &db.pool;
    assert!(matches!(
        p.query_one_as::<Account>("SELECT * FROM accounts WHERE id > 5", &[])
            .await,
        Err(Error::RowNotFound)
    ));
    assert!(matches!(
        p.query_opt_as::<Account>("SELECT * FROM accounts", &[])
            .await,
        Err(Error::TooManyRows(3))
    ));
    assert!(matches!(
        p.query_one_scalar::<i64>("SELECT id FROM accounts", &[])
            .await,
        Err(Error::TooManyRows(3))
    ));
    // A scalar of a two-column result would drop a column: refused.
    match p
        .query_scalar::<i64>("SELECT id, email FROM accounts", &[])
        .await
    {
        Err(Error::ColumnCount { expected, found }) => assert_eq!((expected, found), (1, 2)),
        other => panic!("expected a column count error, got {other:?}"),
    }
    // A NULL into a non-Option names the column.
    match p
        .query_one_scalar::<String>("SELECT email FROM accounts WHERE id = 2", &[])
        .await
    {
        Err(Error::ColumnDecode { column, .. }) => assert_eq!(column, "email"),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_transactions_read_the_same_way() {
    let db = TestDb::new().await;
    accounts(&db).await;
    let mut client = db.pool.acquire().await.unwrap();
    let ids: Vec<i64> = client
        .query_scalar("SELECT id FROM accounts ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 3]);
    let mut tx = client.begin().await.unwrap();
    let inserted: Account = tx
        .query_one_as(
            "INSERT INTO accounts VALUES ($1, $2) RETURNING id, email",
            &params![4_i64, "linus@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(inserted.id, 4);
    let seen: Option<Account> = tx
        .query_opt_as("SELECT * FROM accounts WHERE id = 4", &[])
        .await
        .unwrap();
    assert_eq!(seen, Some(inserted));
    tx.rollback().await.unwrap();
    let n: i64 = client
        .query_one_scalar("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(n, 3);
    // The futures are Send: a spawned task can read through the pool.
    let pool = db.pool.clone();
    drop(client);
    let spawned = tokio::spawn(async move {
        pool.query_as::<Account>("SELECT * FROM accounts ORDER BY id", &[])
            .await
    });
    assert_eq!(spawned.await.unwrap().unwrap().len(), 3);
}
