//! Several hubs on one database: four hubs, each with a pool and a Tokio
//! runtime of its own (on a server, four pools as four processes would
//! have; the embedded backend serves one process, so there the hubs share
//! its pool), sync the schema at once, take the same advisory lock, write
//! and watch changes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::changefeed::{Event, Feed, Options as FeedOptions, Query, Start};
use db::{AnyPool, BackendKind, Pool, params};
use schema_sync::{Options, Schema};

use crate::TestDb;

const HUBS: usize = 4;

fn fixture() -> Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/cocalc-control-plane-schema.json");
    let text = std::fs::read_to_string(&path).unwrap();
    Schema::from_json(&text).unwrap()
}

/// Runs `work(hub, pool)` for every hub, each on a thread with a runtime
/// (and, on a server, a pool) of its own; returns their results in hub
/// order.
fn on_every_hub<T, F, Fut>(shared: &AnyPool, config: &db::Config, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, AnyPool) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T>,
{
    let work = Arc::new(work);
    let threads: Vec<_> = (0..HUBS)
        .map(|hub| {
            let work = Arc::clone(&work);
            let shared = shared.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let pool = match shared.backend() {
                        BackendKind::Pglite => shared,
                        _ => AnyPool::connect(&config).await.unwrap(),
                    };
                    let out = work(hub, pool.clone()).await;
                    if pool.backend() != BackendKind::Pglite {
                        pool.close().await;
                    }
                    out
                })
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_syncing_the_schema_at_once_apply_it_once() {
    let db = TestDb::new().await;
    let (pool, config) = (db.pool.clone(), db.config.clone());
    let applied = tokio::task::spawn_blocking(move || {
        on_every_hub(&pool, &config, |_, pool| async move {
            let report = schema_sync::sync(&pool, &fixture(), &Options::new())
                .await
                .unwrap();
            report.applied
        })
    })
    .await
    .unwrap();
    assert_eq!(
        applied.iter().filter(|a| **a).count(),
        1,
        "one hub applies, the others find nothing to do: {applied:?}"
    );
    let plan = schema_sync::plan(&db.pool, &fixture(), &Options::new())
        .await
        .unwrap();
    assert!(plan.is_empty() && plan.drift.is_empty(), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lock_excludes_across_hubs() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE counter (n int8 NOT NULL); INSERT INTO counter VALUES (0)")
        .await
        .unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (pool, config) = (db.pool.clone(), db.config.clone());
    let (i, m) = (Arc::clone(&inside), Arc::clone(&most));
    tokio::task::spawn_blocking(move || {
        on_every_hub(&pool, &config, move |_, pool| {
            let (inside, most) = (Arc::clone(&i), Arc::clone(&m));
            async move {
                for _ in 0..5 {
                    let guard = pool.lock(7_007, Duration::from_secs(60)).await.unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let n: i64 = pool
                        .query_one("SELECT n FROM counter", &[])
                        .await
                        .unwrap()
                        .get(0);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    pool.execute("UPDATE counter SET n = $1", &params![n + 1])
                        .await
                        .unwrap();
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(guard);
                }
            }
        })
    })
    .await
    .unwrap();
    assert_eq!(most.load(Ordering::SeqCst), 1, "one hub at a time");
    let n: i64 = db
        .pool
        .query_one("SELECT n FROM counter", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, (HUBS * 5) as i64, "no update lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_some_hubs_reach_watchers_on_others_once_each() {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE jobs (id int8 PRIMARY KEY, hub int4 NOT NULL)")
        .await;
    let feed = Feed::start(db.pool.clone(), FeedOptions::new())
        .await
        .unwrap();
    feed.enable("jobs").await.unwrap();
    drop(feed);
    const PER_WRITER: i64 = 50;
    let (pool, config) = (db.pool.clone(), db.config.clone());
    let seen = tokio::task::spawn_blocking(move || {
        on_every_hub(&pool, &config, |hub, pool| async move {
            if hub % 2 == 0 {
                // A writer: give the watchers time to subscribe first.
                tokio::time::sleep(Duration::from_millis(500)).await;
                for k in 0..PER_WRITER {
                    let id = hub as i64 * 1_000 + k;
                    pool.execute("INSERT INTO jobs VALUES ($1, $2)", &params![id, hub as i32])
                        .await
                        .unwrap();
                }
                Vec::new()
            } else {
                let feed = Feed::start(pool, FeedOptions::new()).await.unwrap();
                let mut sub = feed
                    .subscribe(Query::table("jobs"), Start::Now)
                    .await
                    .unwrap();
                let mut ids = Vec::new();
                while ids.len() < (HUBS / 2) * PER_WRITER as usize {
                    match tokio::time::timeout(Duration::from_secs(30), sub.recv()).await {
                        Ok(Ok(Event::Insert { row, .. })) => {
                            ids.push(row["id"].as_i64().unwrap());
                        }
                        other => panic!("hub {hub}: expected an insert, got {other:?}"),
                    }
                }
                ids
            }
        })
    })
    .await
    .unwrap();
    let expected: BTreeSet<i64> = (0..HUBS)
        .filter(|h| h % 2 == 0)
        .flat_map(|h| (0..PER_WRITER).map(move |k| h as i64 * 1_000 + k))
        .collect();
    for (hub, ids) in seen.iter().enumerate().filter(|(h, _)| h % 2 == 1) {
        let unique: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "hub {hub} saw an event twice");
        assert_eq!(unique, expected, "hub {hub} missed events");
    }
}
