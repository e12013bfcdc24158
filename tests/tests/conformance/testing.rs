//! `db-testing`: every test database starts as the setup left it, whatever
//! the tests before it did, and parallel tests never see each other's data.

use std::sync::LazyLock;
use std::time::Duration;

use db::{Pool, params};
use db_testing::TestDatabases;

const SETUP: &str = "
    CREATE TABLE accounts (id bigserial PRIMARY KEY, email text UNIQUE);
    CREATE INDEX accounts_email_lower ON accounts (lower(email));
    CREATE SEQUENCE tickets;
";

static DATABASES: LazyLock<TestDatabases> =
    LazyLock::new(|| TestDatabases::new(conformance::base_config(), SETUP));

async fn assert_pristine(db: &db_testing::TestDatabase) {
    let p = db.pool();
    let rows: i64 = p
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "rows of an earlier test are visible");
    let id: i64 = p
        .query_one(
            "INSERT INTO accounts (email) VALUES ('first@x') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 1, "the serial sequence was not restarted");
    let ticket: i64 = p
        .query_one("SELECT nextval('tickets')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ticket, 1, "a sequence was not restarted");
    let extra: i64 = p
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(extra, 1, "tables of an earlier test are still there");
    let zone: String = p.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
    assert_eq!(zone, "UTC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_database_starts_as_the_setup_left_it() {
    for _ in 0..3 {
        let db = DATABASES.database().await.unwrap();
        assert_pristine(&db).await;
        // Leave behind everything a test might.
        db.pool()
            .batch_execute(
                "INSERT INTO accounts (email) SELECT 'u' || g FROM generate_series(1, 50) g;
                 CREATE TABLE scratch (v int); INSERT INTO scratch VALUES (1);
                 CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
                 CREATE TRIGGER accounts_touch BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
                 CREATE INDEX accounts_extra ON accounts (id, email);
                 CREATE TYPE mood AS ENUM ('ok');
                 CREATE SCHEMA side; CREATE TABLE side.t (v int);
                 SELECT nextval('tickets'); SELECT nextval('tickets');
                 SET statement_timeout = '5s'",
            )
            .await
            .unwrap();
        drop(db);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_setup_table_is_rebuilt() {
    let db = DATABASES.database().await.unwrap();
    db.pool()
        .batch_execute("ALTER TABLE accounts DROP COLUMN email")
        .await
        .unwrap();
    drop(db);
    let db = DATABASES.database().await.unwrap();
    assert_pristine(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_tests_never_see_each_other() {
    let run = |marker: &'static str| {
        tokio::spawn(async move {
            let db = DATABASES.database().await.unwrap();
            let p = db.pool();
            p.execute("INSERT INTO accounts (email) VALUES ($1)", &params![marker])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let seen: Vec<String> = p
                .query("SELECT email FROM accounts", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(seen, vec![marker.to_owned()]);
        })
    };
    let (a, b) = tokio::join!(run("a@x"), run("b@x"));
    a.unwrap();
    b.unwrap();
}
