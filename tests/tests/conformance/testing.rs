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

/// The URL of database `name` on the server of `url`.
fn on_database(url: &str, name: &str) -> String {
    db_testing::with_database(url, name)
}

async fn kept_rows(pool: &db::AnyPool) -> i64 {
    pool.query_one("SELECT count(*) FROM keep", &[])
        .await
        .unwrap()
        .get(0)
}

/// `PGDATABASE` set for psql must not point a test run at a real database,
/// and db-testing resets only databases that carry its own marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_run_never_resets_a_database_it_did_not_create() {
    use db::{AnyPool, BackendKind, Config, DataDir, Executor};
    let base = conformance::base_config();
    if base.backend == BackendKind::Pglite {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new().pglite(DataDir::Path(dir.path().join("data")));
        let pool = AnyPool::connect(&config).await.unwrap();
        pool.batch_execute("CREATE TABLE keep AS SELECT generate_series(1, 100) AS id")
            .await
            .unwrap();
        pool.close().await;
        let err = TestDatabases::new(config.clone(), "")
            .database()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("temporary"), "{err}");
        let pool = AnyPool::connect(&config).await.unwrap();
        assert_eq!(kept_rows(&pool).await, 100);
        pool.close().await;
        return;
    }
    let url = base.postgres.url.clone().expect("the suite's server URL");
    let name = format!("precious_{}", std::process::id());
    let admin = AnyPool::connect(&Config::new().postgres_url(&url))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let precious_url = on_database(&url, &name);
    let precious = AnyPool::connect(&Config::new().postgres_url(&precious_url))
        .await
        .unwrap();
    precious
        .batch_execute("CREATE TABLE keep AS SELECT generate_series(1, 100) AS id")
        .await
        .unwrap();

    // The URL names the server's maintenance database; PGDATABASE, as a
    // developer sets it for psql, must not redirect it.
    let config = Config::from_lookup(|k| match k {
        "COCALC_DB" => Some("postgres".to_owned()),
        "DATABASE_URL" => Some(url.clone()),
        "PGDATABASE" => Some(name.clone()),
        _ => None,
    })
    .unwrap();
    // The admin connection itself is on `precious` here: db-testing must
    // still make and reset only databases of its own.
    let mut unmarked_names = Vec::new();
    for config in [config, Config::new().postgres_url(&precious_url)] {
        let databases = TestDatabases::new(config, "CREATE TABLE t (id int)");
        for _ in 0..3 {
            let db = databases.database().await.unwrap();
            let current: String = db
                .pool()
                .query_one("SELECT current_database()::text", &[])
                .await
                .unwrap()
                .get(0);
            assert_ne!(current, name);
            db.pool()
                .execute("INSERT INTO t VALUES (1)", &[])
                .await
                .unwrap();
            // A test that removes the marker makes its database one
            // db-testing no longer touches.
            db.pool()
                .batch_execute(&format!(
                    "COMMENT ON DATABASE {} IS NULL",
                    db::quote_ident(&current)
                ))
                .await
                .unwrap();
            let mut client = db.pool().acquire().await.unwrap();
            client
                .execute("INSERT INTO t VALUES (2)", &[])
                .await
                .unwrap();
            drop(client);
            let unmarked = db.config().clone();
            drop(db);
            let next = databases.database().await.unwrap();
            drop(next);
            let pool = AnyPool::connect(&unmarked).await.unwrap();
            let n: i64 = pool
                .query_one("SELECT count(*) FROM t", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 2, "an unmarked database was reset");
            pool.close().await;
            unmarked_names.push(current);
        }
    }
    assert_eq!(kept_rows(&precious).await, 100);
    precious.close().await;
    unmarked_names.push(name);
    for name in unmarked_names {
        let drop = format!("DROP DATABASE {} WITH (FORCE)", db::quote_ident(&name));
        admin.batch_execute(&drop).await.unwrap();
    }
    admin.close().await;
}

const SEEDED_SCHEMA: &str = "
    CREATE TABLE plans (
        id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        shout text GENERATED ALWAYS AS (upper(name)) STORED
    );
    CREATE TABLE members (id bigserial PRIMARY KEY, plan int NOT NULL REFERENCES plans, email text);
    CREATE TABLE empty_one (v int);
";

const SEEDS: &str = "
    INSERT INTO plans (name) VALUES ('free'), ('pro');
    INSERT INTO members (plan, email) VALUES (2, 'seed@x');
";

static SEEDED: LazyLock<TestDatabases> = LazyLock::new(|| {
    TestDatabases::new(
        conformance::base_config(),
        db_testing::Setup::new().sql(SEEDED_SCHEMA).seed(SEEDS),
    )
});

/// Rows the setup inserts are part of what every test starts with: a test
/// that deletes or changes them does not take them from the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_rows_of_the_setup_are_kept_across_resets() {
    for round in 0..3 {
        let db = SEEDED.database().await.unwrap();
        let p = db.pool();
        let plans: Vec<(i32, String, String)> = p
            .query_as("SELECT id, name, shout FROM plans ORDER BY id", &[])
            .await
            .unwrap();
        assert_eq!(
            plans,
            vec![
                (1, "free".to_owned(), "FREE".to_owned()),
                (2, "pro".to_owned(), "PRO".to_owned())
            ],
            "round {round}"
        );
        let members: Vec<(i64, i32, String)> = p
            .query_as("SELECT id, plan, email FROM members", &[])
            .await
            .unwrap();
        assert_eq!(members, vec![(1, 2, "seed@x".to_owned())], "round {round}");
        // The sequences continue after the seeds, as right after the setup.
        let next: i64 = p
            .query_one_scalar(
                "INSERT INTO members (plan, email) VALUES (1, 'new@x') RETURNING id",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(next, 2, "round {round}");
        let plan: i32 = p
            .query_one_scalar("INSERT INTO plans (name) VALUES ('team') RETURNING id", &[])
            .await
            .unwrap();
        assert_eq!(plan, 3, "round {round}");
        p.batch_execute(
            "DELETE FROM members WHERE email = 'seed@x'; UPDATE plans SET name = 'gone' WHERE id = 1;
             INSERT INTO empty_one VALUES (1)",
        )
        .await
        .unwrap();
        drop(db);
    }
}

/// Tests of one process that run at once each get a database, on every
/// backend: the embedded one included (several instances, recycled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tests_hold_databases_at_once() {
    let a = DATABASES.database().await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(60), DATABASES.database())
        .await
        .expect("a second database while the first is held")
        .unwrap();
    a.pool()
        .execute("INSERT INTO accounts (email) VALUES ('a@x')", &[])
        .await
        .unwrap();
    let seen: i64 = b
        .pool()
        .query_one_scalar("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(seen, 0, "the second test sees the first one's row");
}

const NOTES: &str = "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)";

/// The attribute form: a database per test, the setup and the seed rows
/// applied, on the backend under test.
#[db_testing::test(setup = NOTES, seed = "INSERT INTO notes VALUES (1, 'kept')")]
async fn the_test_attribute_gives_a_seeded_database(db: db_testing::TestDatabase) {
    let p = db.pool();
    let bodies: Vec<String> = p
        .query_scalar("SELECT body FROM notes ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(bodies, vec!["kept".to_owned()]);
    p.execute("DELETE FROM notes", &[]).await.unwrap();
    p.execute("INSERT INTO notes VALUES (2, 'mine')", &[])
        .await
        .unwrap();
}

/// Twice, so that one of the two runs on a database the other has used.
#[db_testing::test(setup = NOTES, seed = "INSERT INTO notes VALUES (1, 'kept')")]
async fn the_test_attribute_resets_between_tests(db: db_testing::TestDatabase) -> db::Result<()> {
    let p = db.pool();
    let bodies: Vec<String> = p
        .query_scalar("SELECT body FROM notes ORDER BY id", &[])
        .await?;
    assert_eq!(bodies, vec!["kept".to_owned()]);
    p.execute("UPDATE notes SET body = 'changed'", &[]).await?;
    Ok(())
}

/// A schema-sync spec file, applied with schema-sync itself: the test starts
/// on a converged database.
#[db_testing::test(spec = "../../shared/fixtures/cocalc-control-plane-schema.json")]
async fn the_test_attribute_applies_a_schema_spec(db: db_testing::TestDatabase) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/cocalc-control-plane-schema.json"
    ))
    .unwrap();
    let spec = schema_sync::Schema::from_json(&text).unwrap();
    let plan = schema_sync::plan(db.pool(), &spec, &schema_sync::Options::new())
        .await
        .unwrap();
    assert!(plan.is_empty(), "{plan}");
    let tables: i64 = db
        .pool()
        .query_one_scalar(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(tables, 174);
}

/// Tests that each hold a database and then ask for a second one (a source
/// and a target, say) never wait for each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tests_holding_two_databases_at_once_never_deadlock() {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let run = || {
        let barrier = barrier.clone();
        tokio::spawn(async move {
            let first = DATABASES.database().await.unwrap();
            barrier.wait().await;
            let second = DATABASES.database().await.unwrap();
            drop((first, second));
        })
    };
    let both = async { tokio::join!(run(), run()) };
    let (a, b) = tokio::time::timeout(Duration::from_secs(120), both)
        .await
        .expect("two tests holding two databases each deadlocked");
    a.unwrap();
    b.unwrap();
}
