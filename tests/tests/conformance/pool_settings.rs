//! Pool settings beyond the size: setup SQL per session, the minimum number
//! of sessions, idle timeout and lifetime.
//!
//! The embedded backend has one backend session for the life of the pool:
//! the minimum, idle timeout and lifetime describe server connections and
//! leave it as it is, while setup SQL means the same on both backends.

use std::time::{Duration, Instant};

use db::{BackendKind, Executor, Pool};

use crate::TestDb;

const SETTING: &str = "SELECT coalesce(current_setting($1, true), '')";

/// The value of a setting in a held session.
async fn setting(client: &mut impl Executor, name: &str) -> String {
    client
        .query_one(SETTING, &[name.into()])
        .await
        .unwrap()
        .get(0)
}

/// The value of a setting in whichever session the pool lends.
async fn pool_setting(db: &TestDb, name: &str) -> String {
    db.pool
        .query_one(SETTING, &[name.into()])
        .await
        .unwrap()
        .get(0)
}

/// `callers` callers at once, each holding a session for a moment (one after
/// another on the embedded backend), so that a server pool opens that many.
async fn hold_sessions_at_once(db: &TestDb, callers: usize) {
    let callers: Vec<_> = (0..callers)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                let client = pool.acquire().await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(client);
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
}

/// Waits up to 10 s for the pool's size to satisfy `done`, and returns it.
async fn size_when(db: &TestDb, done: impl Fn(u32) -> bool) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let size = db.pool.stats().size;
        if done(size) || Instant::now() > deadline {
            return size;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_sql_runs_in_order_on_every_new_session_and_after_a_reset() {
    let db = TestDb::with_config(|c| {
        c.max_connections(1).setup_sql([
            "SET cocalc.origin = 'setup'",
            "SELECT set_config('cocalc.second', current_setting('cocalc.origin') || '-then-second', false)",
        ])
    })
    .await;
    let mut client = db.pool.acquire().await.unwrap();
    assert_eq!(setting(&mut client, "cocalc.origin").await, "setup");
    assert_eq!(
        setting(&mut client, "cocalc.second").await,
        "setup-then-second",
        "the statements run in the order given"
    );
    // A session that changed its settings is reset when released: back to
    // what a new session starts with, the setup included.
    client
        .execute("SET cocalc.origin = 'changed by a caller'", &[])
        .await
        .unwrap();
    drop(client);
    let mut client = db.pool.acquire().await.unwrap();
    assert_eq!(setting(&mut client, "cocalc.origin").await, "setup");
    drop(client);
    assert_eq!(pool_setting(&db, "cocalc.origin").await, "setup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_statement_fails_the_connect_naming_it() {
    let error =
        TestDb::try_with_config(|c| c.setup_sql(["SET cocalc.origin = 'setup'", "SELEC 1"]))
            .await
            .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("setup statement 2"), "{message}");
    assert!(message.contains("SELEC"), "{message}");
    assert_eq!(
        error.code().map(|c| c.code()),
        Some("42601"),
        "the server's SQLSTATE is kept: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_entry_is_one_statement_never_a_script() {
    let error = TestDb::try_with_config(|c| {
        c.setup_sql(["SET cocalc.origin = 'setup'; CREATE TABLE smuggled (x int)"])
    })
    .await
    .unwrap_err();
    assert_eq!(
        error.code().map(|c| c.code()),
        Some("42601"),
        "a second statement is refused by the extended protocol: {error:?}"
    );
    let db = TestDb::new().await;
    let found: Option<String> = db
        .pool
        .query_one("SELECT to_regclass('smuggled')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_opens_the_minimum_number_of_sessions() {
    let db = TestDb::with_config(|c| c.max_connections(5).min_connections(3)).await;
    let expected = match db.backend() {
        BackendKind::Postgres => 3,
        _ => 1,
    };
    assert_eq!(db.pool.stats().size, expected, "{:?}", db.pool.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_beyond_the_minimum_are_closed_after_the_idle_timeout() {
    let db = TestDb::with_config(|c| {
        c.max_connections(4)
            .min_connections(1)
            .idle_timeout(Some(Duration::from_millis(300)))
    })
    .await;
    hold_sessions_at_once(&db, 3).await;
    let busy = db.pool.stats().size;
    let settled = size_when(&db, |size| size <= 1).await;
    match db.backend() {
        BackendKind::Postgres => {
            assert!(busy >= 3, "{busy} connections for 3 callers");
            assert_eq!(settled, 1, "back to the minimum: {:?}", db.pool.stats());
        }
        _ => assert_eq!((busy, settled), (1, 1)),
    }
    // What is left still works.
    assert_eq!(pool_setting(&db, "TimeZone").await, "UTC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_older_than_the_max_lifetime_is_replaced() {
    let db = TestDb::with_config(|c| {
        c.max_connections(1)
            .max_lifetime(Some(Duration::from_millis(500)))
    })
    .await;
    let pid = |pool: db::AnyPool| async move {
        pool.query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get::<i32, _>(0)
    };
    let first = pid(db.pool.clone()).await;
    assert_eq!(pid(db.pool.clone()).await, first, "reused while young");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = pid(db.pool.clone()).await;
    match db.backend() {
        BackendKind::Postgres => assert_ne!(later, first, "an old connection is replaced"),
        _ => assert_eq!(later, first, "the one embedded session lives with the pool"),
    }
}

/// A server that ended the pool's idle connections (a restart, a failover,
/// an administrator) costs at most one failed statement: once one
/// connection is found broken, the others idle since then are checked
/// before they are lent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_server_ends_idle_connections_at_most_one_statement_fails() {
    let db = TestDb::with_config(|c| c.max_connections(4)).await;
    hold_sessions_at_once(&db, 4).await;
    let mut client = db.pool.acquire().await.unwrap();
    let ended: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(client);
    if db.backend() == BackendKind::Postgres {
        assert!(ended >= 2, "{ended} connections ended");
    }
    let mut failures = Vec::new();
    for _ in 0..8 {
        if let Err(e) = db.pool.query_one("SELECT 1", &[]).await {
            failures.push(e.to_string());
        }
    }
    assert!(failures.len() <= 1, "{failures:#?}");
}

/// Setup that leaves a transaction open would make every later write of the
/// session part of it, rolled back on release: refused at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_that_leaves_a_transaction_open_is_refused() {
    for entry in ["BEGIN", "START TRANSACTION ISOLATION LEVEL SERIALIZABLE"] {
        let error = TestDb::try_with_config(|c| c.setup_sql([entry]))
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, db::Error::SessionSetup { position: 1, .. }),
            "{entry}: {error:?}"
        );
        assert!(message.contains("transaction"), "{message}");
    }
}
