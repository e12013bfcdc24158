//! The database restarts under four running hubs: writers on two, change
//! feed watchers and notification listeners on the other two.
//!
//! On a server the restart is PostgreSQL's crash restart: one backend is
//! killed with SIGKILL (`COPY ... TO PROGRAM`, as its superuser), and the
//! postmaster ends every session of the whole server, refuses connections
//! while it recovers, and then takes them again. It ends every session of
//! the server, so this is a test binary of its own, run after the
//! conformance suite rather than beside it. The embedded backend is
//! crashed by a statement that traps its WebAssembly runtime, and reopens
//! on its files.
//!
//! On a server it runs only where `cargo xtask test` provisioned the server
//! itself (`COCALC_TEST_SERVER_RESTARTABLE=1`): a server named by a
//! developer's own `DATABASE_URL` is never crashed.
//!
//! Afterwards: the pools serve again, every listener heard `Reconnected`,
//! and every watcher saw every committed row exactly once.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use changefeed::{Event, Feed, Options as FeedOptions, Query, Start};
use conformance::TestDb;
use db::{AnyPool, BackendKind, ListenEvent, Pool, params};

const HUBS: usize = 4;
const PER_WRITER: i64 = 120;
/// How long a hub keeps retrying through the restart.
const PATIENCE: Duration = Duration::from_secs(60);

/// The ids the writers insert.
fn expected() -> BTreeSet<i64> {
    (0..HUBS)
        .filter(|h| h % 2 == 0)
        .flat_map(|h| (0..PER_WRITER).map(move |k| h as i64 * 1_000 + k))
        .collect()
}

/// Restarts the database: see the module's documentation.
async fn restart(pool: &AnyPool) {
    let outcome = match pool.backend() {
        BackendKind::Pglite => {
            let depth = 20_000;
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            pool.query(&format!("SELECT ('{nested}')::jsonb IS NULL"), &[])
                .await
                .map(drop)
        }
        _ => pool
            .execute("COPY (SELECT 1) TO PROGRAM 'kill -9 $PPID'", &[])
            .await
            .map(drop),
    };
    assert!(
        outcome.is_err(),
        "the statement that restarts the database must end its own session"
    );
}

/// Inserts one row, retrying (the row is keyed, so a retry of an insert
/// whose commit was not acknowledged adds nothing) until it is in.
async fn insert(pool: &AnyPool, id: i64, hub: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match pool
            .execute(
                "INSERT INTO jobs VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &params![id, hub as i32],
            )
            .await
        {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                // Kept in the test's output, to read when it fails.
                eprintln!("hub {hub}: retrying after: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("hub {hub}: the pool did not recover: {e}"),
        }
    }
}

#[test]
fn hubs_ride_through_a_database_restart() {
    let base = conformance::base_config();
    if base.backend == BackendKind::Postgres
        && std::env::var("COCALC_TEST_SERVER_RESTARTABLE").as_deref() != Ok("1")
    {
        eprintln!(
            "not crashing a server this test did not provision \
             (cargo xtask test sets COCALC_TEST_SERVER_RESTARTABLE=1 for its own)"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::new().await;
        db.sql("CREATE TABLE jobs (id int8 PRIMARY KEY, hub int4 NOT NULL)")
            .await;
        let feed = Feed::start(db.pool.clone(), FeedOptions::new())
            .await
            .unwrap();
        feed.enable("jobs").await.unwrap();
        db
    });
    let written = Arc::new(AtomicI64::new(0));
    let hubs: Vec<_> = (0..HUBS)
        .map(|hub| {
            let shared = db.pool.clone();
            let config = db.config.clone();
            let written = Arc::clone(&written);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let pool = match shared.backend() {
                        BackendKind::Pglite => shared,
                        // The matrix's servers run with `synchronous_commit
                        // = off`, which loses acknowledged commits in a
                        // crash; a hub that needs them kept asks for it.
                        _ => AnyPool::connect(&config.setup_sql(["SET synchronous_commit = on"]))
                            .await
                            .unwrap(),
                    };
                    let seen = if hub % 2 == 0 {
                        // A writer: give the watchers time to subscribe.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        for k in 0..PER_WRITER {
                            insert(&pool, hub as i64 * 1_000 + k, hub).await;
                            written.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        (Vec::new(), false)
                    } else {
                        watch(hub, &pool).await
                    };
                    // The pool serves after the restart.
                    let rows: i64 = pool
                        .query_one("SELECT count(*) FROM jobs", &[])
                        .await
                        .unwrap()
                        .get(0);
                    assert!(rows > 0, "hub {hub}");
                    if pool.backend() != BackendKind::Pglite {
                        pool.close().await;
                    }
                    seen
                })
            })
        })
        .collect();
    // Restart once the writers are a third of the way through.
    runtime.block_on(async {
        let deadline = Instant::now() + PATIENCE;
        while written.load(Ordering::SeqCst) < (HUBS as i64 / 2) * PER_WRITER / 3 {
            assert!(Instant::now() < deadline, "the writers did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = written.load(Ordering::SeqCst);
        restart(&db.pool).await;
        assert!(
            before < (HUBS as i64 / 2) * PER_WRITER,
            "the restart came after the writes"
        );
    });
    let seen: Vec<_> = hubs.into_iter().map(|h| h.join().unwrap()).collect();
    let expected = expected();
    for (hub, (ids, reconnected)) in seen.iter().enumerate().filter(|(h, _)| h % 2 == 1) {
        let unique: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "hub {hub} saw an event twice");
        assert_eq!(&unique, &expected, "hub {hub} missed events");
        assert!(reconnected, "hub {hub}'s listener did not hear Reconnected");
    }
    runtime.block_on(async {
        let rows: i64 = db
            .pool
            .query_one("SELECT count(*) FROM jobs", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, expected.len() as i64);
    });
}

/// A watcher: a change feed subscription and a notification listener, until
/// every row is seen; returns the ids seen and whether the listener heard
/// `Reconnected`.
async fn watch(hub: usize, pool: &AnyPool) -> (Vec<i64>, bool) {
    let mut listener = pool.listen("restart_probe").await.unwrap();
    let feed = Feed::start(pool.clone(), FeedOptions::new()).await.unwrap();
    let mut sub = feed
        .subscribe(Query::table("jobs"), Start::Now)
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut reconnected = false;
    let all = (HUBS / 2) * PER_WRITER as usize;
    let deadline = Instant::now() + 2 * PATIENCE;
    while ids.len() < all || !reconnected {
        if Instant::now() > deadline {
            let seen: BTreeSet<i64> = ids.iter().copied().collect();
            let missing: Vec<i64> = expected()
                .into_iter()
                .filter(|id| !seen.contains(id))
                .collect();
            let kept: Vec<i64> = pool
                .query(
                    "SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id",
                    &params![missing.clone()],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            panic!(
                "hub {hub}: {} of {all} rows seen, reconnected: {reconnected}; \
                 missing {missing:?}, of which in the table: {kept:?}",
                ids.len()
            );
        }
        tokio::select! {
            event = sub.recv(), if ids.len() < all => match event {
                Ok(Event::Insert { row, .. }) => ids.push(row["id"].as_i64().unwrap()),
                other => panic!("hub {hub}: expected an insert, got {other:?}"),
            },
            event = listener.recv(), if !reconnected => match event {
                Ok(ListenEvent::Reconnected) => reconnected = true,
                other => panic!("hub {hub}: expected Reconnected, got {other:?}"),
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    (ids, reconnected)
}
