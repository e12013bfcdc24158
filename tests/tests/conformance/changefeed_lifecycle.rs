//! Change feeds over a table's whole life: truncation, renames, column
//! changes, drops and disabling reach subscribers as events; the feed's own
//! objects live in a schema of their own; tables are named as SQL names them.

use std::time::Duration;

use ::changefeed::{EndReason, Error, Event, Feed, Options, Query, Start, Subscription};
use db::{AnyPool, Pool};
use serde_json::json;

use crate::TestDb;

const WAIT: Duration = Duration::from_secs(30);

async fn next(sub: &mut Subscription) -> Event {
    match tokio::time::timeout(WAIT, sub.recv()).await {
        Ok(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn ended(sub: &mut Subscription) -> Error {
    match tokio::time::timeout(WAIT, sub.recv()).await {
        Ok(Err(e)) => e,
        other => panic!("expected the subscription to end, got {other:?}"),
    }
}

async fn start(db: &TestDb, create: &str, table: &str) -> Feed<AnyPool> {
    db.pool.batch_execute(create).await.unwrap();
    let feed = Feed::start(
        db.pool.clone(),
        Options::new().poll_interval(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    feed.enable(table).await.unwrap();
    feed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_is_an_event_with_its_offset() {
    let db = TestDb::new().await;
    let feed = start(&db, "CREATE TABLE acc (id int8 PRIMARY KEY, v text)", "acc").await;
    db.sql("INSERT INTO acc SELECT g, 'x' FROM generate_series(1, 5) g")
        .await;
    let mut sub = feed
        .subscribe(
            Query::table("acc").filter("v = 'nothing'".parse().unwrap()),
            Start::Now,
        )
        .await
        .unwrap();
    db.sql("TRUNCATE acc").await;
    db.sql("INSERT INTO acc VALUES (9, 'nothing')").await;
    // A filter cannot hide a truncation: every subscriber's rows are gone.
    let first = next(&mut sub).await;
    let Event::Truncate { offset, table } = &first else {
        panic!("expected a truncate event, got {first:?}");
    };
    assert_eq!(table, "public.acc");
    match next(&mut sub).await {
        Event::Insert { offset: o, .. } => assert_eq!(o, offset + 1),
        other => panic!("expected the insert after the truncate, got {other:?}"),
    }
    assert_eq!(
        serde_json::to_value(&first).unwrap(),
        json!({"kind": "truncate", "offset": offset, "table": "public.acc"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_feed_ends_its_subscriptions_with_a_final_event() {
    let db = TestDb::new().await;
    let feed = start(
        &db,
        "CREATE TABLE acc (id int8 PRIMARY KEY, email text)",
        "acc",
    )
    .await;
    let mut sub = feed
        .subscribe(Query::table("acc"), Start::Now)
        .await
        .unwrap();
    db.sql("INSERT INTO acc VALUES (1, 'a@example.com')").await;
    db.sql("DELETE FROM acc WHERE id = 1").await;
    assert!(matches!(next(&mut sub).await, Event::Insert { .. }));
    assert!(matches!(next(&mut sub).await, Event::Delete { .. }));
    // A second reader, as another process would be.
    let other = Feed::start(db.pool.clone(), Options::new()).await.unwrap();
    assert!(other.disable("acc").await.unwrap());
    match next(&mut sub).await {
        Event::End { reason, .. } => assert_eq!(reason, EndReason::Disabled),
        other => panic!("expected the end event, got {other:?}"),
    }
    assert!(matches!(
        ended(&mut sub).await,
        Error::Ended {
            reason: EndReason::Disabled,
            ..
        }
    ));
    // Disabling forgets the table's row images: the deleted e-mail address
    // is no longer in the log.
    let kept: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM changefeed.changefeed_log
             WHERE coalesce(row_new::text, '') || coalesce(row_old::text, '') LIKE '%example.com%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_table_keeps_its_feed() {
    let db = TestDb::new().await;
    let feed = start(&db, "CREATE TABLE rn (id int8 PRIMARY KEY, v int8)", "rn").await;
    let mut sub = feed
        .subscribe(Query::table("rn"), Start::Now)
        .await
        .unwrap();
    db.sql("ALTER TABLE rn RENAME TO rn2").await;
    match next(&mut sub).await {
        Event::SchemaChanged {
            table,
            renamed_from,
            resync,
            ..
        } => {
            assert_eq!(table, "public.rn2");
            assert_eq!(renamed_from.as_deref(), Some("public.rn"));
            assert!(!resync, "a rename changes no row");
        }
        other => panic!("expected the rename, got {other:?}"),
    }
    db.sql("INSERT INTO rn2 VALUES (1, 1)").await;
    match next(&mut sub).await {
        Event::Insert { row, .. } => assert_eq!(row["id"], json!(1)),
        other => panic!("expected the insert into the renamed table, got {other:?}"),
    }
    // The feed is listed, and watched, under the new name.
    let listed: Vec<String> = feed
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.table)
        .collect();
    assert_eq!(listed, ["public.rn2"]);
    let mut again = feed
        .subscribe(Query::table("rn2"), Start::Now)
        .await
        .unwrap();
    db.sql("INSERT INTO rn2 VALUES (2, 2)").await;
    assert!(matches!(next(&mut again).await, Event::Insert { .. }));
    assert!(matches!(
        feed.subscribe(Query::table("rn"), Start::Now).await,
        Err(Error::NoSuchTable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_change_tells_subscribers_to_resync() {
    let db = TestDb::new().await;
    let feed = start(
        &db,
        "CREATE TABLE cc (id int8 PRIMARY KEY, gone text, kept int4)",
        "cc",
    )
    .await;
    let mut sub = feed
        .subscribe(Query::table("cc"), Start::Now)
        .await
        .unwrap();
    db.sql("ALTER TABLE cc DROP COLUMN gone, ADD COLUMN fresh text, ALTER COLUMN kept TYPE int8")
        .await;
    match next(&mut sub).await {
        Event::SchemaChanged {
            table,
            renamed_from,
            added,
            dropped,
            retyped,
            resync,
            ..
        } => {
            assert_eq!(table, "public.cc");
            assert_eq!(renamed_from, None);
            assert_eq!(added, ["fresh"]);
            assert_eq!(dropped, ["gone"]);
            assert_eq!(retyped, ["kept"]);
            assert!(resync);
        }
        other => panic!("expected the schema change, got {other:?}"),
    }
    assert!(matches!(
        ended(&mut sub).await,
        Error::Ended {
            reason: EndReason::SchemaChanged,
            ..
        }
    ));
    // The feed itself goes on: a new subscription sees the new shape.
    let mut sub = feed
        .subscribe(Query::table("cc"), Start::Now)
        .await
        .unwrap();
    db.sql("INSERT INTO cc VALUES (1, 1, 'new')").await;
    match next(&mut sub).await {
        Event::Insert { row, .. } => assert_eq!(row["fresh"], json!("new")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_watched_table_ends_its_feed() {
    let db = TestDb::new().await;
    let feed = start(&db, "CREATE TABLE dr (id int8 PRIMARY KEY)", "dr").await;
    let mut sub = feed
        .subscribe(Query::table("dr"), Start::Now)
        .await
        .unwrap();
    db.sql("DROP TABLE dr").await;
    match next(&mut sub).await {
        Event::End { reason, table, .. } => {
            assert_eq!(reason, EndReason::Dropped);
            assert_eq!(table, "public.dr");
        }
        other => panic!("expected the end event, got {other:?}"),
    }
    assert!(matches!(ended(&mut sub).await, Error::Ended { .. }));
    assert!(feed.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feeds_objects_live_in_their_own_schema_and_cannot_be_watched() {
    let db = TestDb::new().await;
    let feed = start(&db, "CREATE TABLE w (id int8 PRIMARY KEY)", "w").await;
    let in_public: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname LIKE 'changefeed%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_public, 0);
    for own in [
        "changefeed.changefeed_log",
        "changefeed.changefeed_state",
        "changefeed.changefeed_ticks",
        "changefeed.changefeed_feeds",
    ] {
        match feed.enable(own).await {
            Err(Error::Refused { table, .. }) => assert_eq!(table, own),
            other => panic!("enabling a feed on {own} must be refused, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_in_public_moves_to_its_own_schema_in_place() {
    let db = TestDb::new().await;
    // The layout of the previous release: the feed's tables in the
    // watched tables' schema.
    db.sql("CREATE TABLE legacy (id int8 PRIMARY KEY, v int8)")
        .await;
    let old = Feed::start(db.pool.clone(), Options::new().schema("public"))
        .await
        .unwrap();
    old.enable("legacy").await.unwrap();
    db.sql("INSERT INTO legacy VALUES (1, 1)").await;
    let (head, _) = old.positions().await.unwrap();
    drop(old);
    // What the previous release's tables held: tables by name, no OIDs, no
    // truncate trigger.
    db.pool
        .batch_execute(
            "ALTER TABLE public.changefeed_log DROP COLUMN relid;
             UPDATE public.changefeed_log SET tbl = 'legacy';
             ALTER TABLE public.changefeed_feeds DROP CONSTRAINT changefeed_feeds_pkey,
                 DROP COLUMN relid, DROP COLUMN shape, ADD PRIMARY KEY (tbl);
             UPDATE public.changefeed_feeds SET tbl = 'legacy';
             DROP TRIGGER changefeed_capture_truncate ON legacy",
        )
        .await
        .unwrap();
    let feed = Feed::start(db.pool.clone(), Options::new()).await.unwrap();
    let left: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname LIKE 'changefeed%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the feed's tables moved out of public");
    // Offsets carry over: a subscriber resumes where it was, and the
    // triggers are the current ones.
    assert_eq!(feed.positions().await.unwrap().0, head);
    let mut from_start = feed
        .subscribe(Query::table("legacy"), Start::AfterOffset(0))
        .await
        .unwrap();
    match next(&mut from_start).await {
        Event::Insert { offset, row } => {
            assert_eq!(offset, head);
            assert_eq!(row["id"], json!(1));
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut sub = feed
        .subscribe(Query::table("legacy"), Start::AfterOffset(head))
        .await
        .unwrap();
    db.sql("INSERT INTO legacy VALUES (2, 2)").await;
    match next(&mut sub).await {
        Event::Insert { offset, row } => {
            assert_eq!(offset, head + 1);
            assert_eq!(row["id"], json!(2));
        }
        other => panic!("unexpected {other:?}"),
    }
    db.sql("TRUNCATE legacy").await;
    assert!(matches!(next(&mut sub).await, Event::Truncate { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_named_as_sql_names_them() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE SCHEMA app;
         CREATE TABLE app.accounts (id int8 PRIMARY KEY, v int8);
         CREATE TABLE \"Mixed Case\" (id int8 PRIMARY KEY)",
        )
        .await
        .unwrap();
    let feed = Feed::start(db.pool.clone(), Options::new()).await.unwrap();
    feed.enable("app.accounts").await.unwrap();
    feed.enable("\"Mixed Case\"").await.unwrap();
    let mut sub = feed
        .subscribe(Query::table("APP.Accounts"), Start::Now)
        .await
        .unwrap();
    db.sql("INSERT INTO app.accounts VALUES (1, 1)").await;
    assert!(matches!(next(&mut sub).await, Event::Insert { .. }));
    let listed: Vec<String> = feed
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.table)
        .collect();
    assert_eq!(listed, ["app.accounts", "public.\"Mixed Case\""]);
    assert!(matches!(
        feed.enable("accounts").await,
        Err(Error::NoSuchTable(_))
    ));
    match feed.enable("a b c").await {
        Err(Error::NoSuchTable(t)) => assert_eq!(t, "a b c"),
        other => panic!("expected NoSuchTable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_partitioned_tables_are_refused_in_one_line() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE TABLE parted (id int8 PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100)",
        )
        .await
        .unwrap();
    let feed = Feed::start(db.pool.clone(), Options::new()).await.unwrap();
    for table in ["parted", "parted_1"] {
        match feed.enable(table).await {
            Err(e @ Error::Refused { .. }) => {
                let text = e.to_string();
                assert!(!text.contains('\n') && text.contains(table), "{text}");
            }
            other => panic!("expected a refusal for {table}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_no_tick_holds_any_more_need_a_resync() {
    let db = TestDb::new().await;
    let feed = start(&db, "CREATE TABLE em (id int8 PRIMARY KEY)", "em").await;
    db.sql("INSERT INTO em VALUES (1)").await;
    db.sql("INSERT INTO em VALUES (2)").await;
    let (head, _) = feed.positions().await.unwrap();
    drop(feed);
    // As an export that leaves the log out brings it to another database.
    db.pool
        .batch_execute(
            "DELETE FROM changefeed.changefeed_log; DELETE FROM changefeed.changefeed_ticks",
        )
        .await
        .unwrap();
    let feed = Feed::start(db.pool.clone(), Options::new()).await.unwrap();
    assert_eq!(feed.positions().await.unwrap(), (head, head));
    match feed
        .subscribe(Query::table("em"), Start::AfterOffset(head - 1))
        .await
    {
        Err(Error::ResyncRequired { pruned_before }) => assert_eq!(pruned_before, head + 1),
        other => panic!("expected ResyncRequired, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_leaves_the_log_out_and_the_feed_works_on_the_target() {
    let source = crate::migrate::temporary_pglite().await;
    source
        .batch_execute("CREATE TABLE acc (id int8 PRIMARY KEY, email text)")
        .await
        .unwrap();
    let feed = Feed::start(source.clone(), Options::new()).await.unwrap();
    feed.enable("acc").await.unwrap();
    source
        .batch_execute(
            "INSERT INTO acc VALUES (1, 'kept@example.com'), (500, 'gone@example.com');
             DELETE FROM acc WHERE id = 500",
        )
        .await
        .unwrap();
    let (head, _) = feed.positions().await.unwrap();
    drop(feed);
    let options = ::changefeed::log_tables()
        .into_iter()
        .fold(migrate::ExportOptions::new(), |o, (schema, table)| {
            o.without_data_of(schema, table)
        });
    let mut sql = Vec::new();
    let manifest = migrate::export(&source, &mut sql, &options, &mut migrate::NoProgress)
        .await
        .unwrap();
    source.close().await;
    let text = String::from_utf8(sql).unwrap();
    assert!(
        !text.contains("gone@example.com"),
        "the deleted row's image went along"
    );
    assert!(text.contains("kept@example.com"));

    let db = TestDb::new().await;
    crate::migrate::import(&db, text.as_bytes()).await.unwrap();
    migrate::verify(&db.pool, &manifest).await.unwrap();
    let feed = Feed::start(db.pool.clone(), Options::new()).await.unwrap();
    // Offsets of the source are gone: resuming from one means a resync.
    assert!(matches!(
        feed.subscribe(Query::table("acc"), Start::AfterOffset(head - 1))
            .await,
        Err(Error::ResyncRequired { .. })
    ));
    // The feed came along and follows the table on the target.
    let mut sub = feed
        .subscribe(Query::table("acc"), Start::Now)
        .await
        .unwrap();
    db.sql("INSERT INTO acc VALUES (2, 'new@example.com')")
        .await;
    match next(&mut sub).await {
        Event::Insert { offset, row } => {
            assert_eq!(offset, head + 1);
            assert_eq!(row["id"], json!(2));
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Live events compare a row's JSON image, so a filter on a column whose
/// values compare otherwise there than in SQL is refused, naming the
/// column, rather than selecting other rows than SQL would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_live_events_cannot_evaluate_as_sql_are_refused() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE TYPE pair AS (a int, b int);
             CREATE TABLE tf (id int8 PRIMARY KEY, c char(5), j jsonb, p pair, f float8,
                              n numeric, tz timetz, m money, r real, big int8);
             INSERT INTO tf (id, big) VALUES (1, 9007199254740993)",
        )
        .await
        .unwrap();
    let feed = Feed::start(db.pool.clone(), Options::new()).await.unwrap();
    feed.enable("tf").await.unwrap();
    for filter in [
        "c = 'ab'",
        "j IS NULL",
        "p IS NOT NULL",
        "f > 1",
        "n = 1",
        "tz < '09:00+00'",
        "m < '6'",
        "r = 0.1",
    ] {
        let query = Query::table("tf").filter(filter.parse().unwrap());
        match feed.subscribe(query, Start::Snapshot).await {
            Err(e @ Error::FilterType { .. }) => {
                let text = e.to_string();
                assert!(!text.contains('\n'), "{text}");
            }
            other => panic!("{filter}: expected a refusal, got {other:?}"),
        }
    }
    // Integers beyond a float's precision stay exact.
    let query = Query::table("tf").filter("big = 9007199254740993".parse().unwrap());
    let mut sub = feed.subscribe(query, Start::Snapshot).await.unwrap();
    match next(&mut sub).await {
        Event::SnapshotRow { row } => assert_eq!(row["id"], json!(1)),
        other => panic!("expected the row, got {other:?}"),
    }
    db.sql("INSERT INTO tf (id, big) VALUES (2, 9007199254740992)")
        .await;
    db.sql("INSERT INTO tf (id, big) VALUES (3, 9007199254740993)")
        .await;
    loop {
        match next(&mut sub).await {
            Event::SnapshotEnd { .. } => continue,
            Event::Insert { row, .. } => {
                assert_eq!(row["id"], json!(3), "only the exact value matches");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Statements that change rows without a change event (a rewrite in place,
/// a column dropped and added again under its name) tell subscribers to
/// resync; a TRUNCATE, which has its event, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_every_row_without_change_events_need_a_resync() {
    let db = TestDb::new().await;
    let feed = start(
        &db,
        "CREATE TABLE rw (id int8 PRIMARY KEY, v text);
         INSERT INTO rw VALUES (1, 'secret'), (2, 'b')",
        "rw",
    )
    .await;
    let mut sub = feed
        .subscribe(Query::table("rw"), Start::Now)
        .await
        .unwrap();
    db.sql("TRUNCATE rw").await;
    db.sql("INSERT INTO rw VALUES (1, 'x')").await;
    assert!(matches!(next(&mut sub).await, Event::Truncate { .. }));
    assert!(matches!(next(&mut sub).await, Event::Insert { .. }));
    db.sql("ALTER TABLE rw ALTER COLUMN v TYPE text USING upper(v)")
        .await;
    match next(&mut sub).await {
        Event::SchemaChanged {
            rewritten,
            resync,
            added,
            ..
        } => {
            assert!(rewritten && resync);
            assert!(added.is_empty());
        }
        other => panic!("expected the rewrite, got {other:?}"),
    }
    assert!(matches!(ended(&mut sub).await, Error::Ended { .. }));
    let mut sub = feed
        .subscribe(Query::table("rw"), Start::Now)
        .await
        .unwrap();
    db.pool
        .batch_execute("ALTER TABLE rw DROP COLUMN v, ADD COLUMN v text")
        .await
        .unwrap();
    match next(&mut sub).await {
        Event::SchemaChanged {
            added,
            dropped,
            resync,
            ..
        } => {
            assert_eq!(
                (added, dropped),
                (vec!["v".to_owned()], vec!["v".to_owned()])
            );
            assert!(resync);
        }
        other => panic!("expected the column change, got {other:?}"),
    }
}

/// A watched table dropped while no reader runs: the next reader ends its
/// feed, and neither the dropped rows' images nor the OID they carried (which
/// another table may take) stay in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_while_no_reader_runs_leaves_nothing_behind() {
    let db = TestDb::new().await;
    let feed = start(
        &db,
        "CREATE TABLE gone (id int8 PRIMARY KEY, email text)",
        "gone",
    )
    .await;
    db.sql("INSERT INTO gone VALUES (1, 'dropped-secret@example.com')")
        .await;
    feed.positions().await.unwrap();
    drop(feed);
    db.sql("DROP TABLE gone").await;
    let _feed = Feed::start(db.pool.clone(), Options::new()).await.unwrap();
    let (feeds, images, dangling): (i64, i64, i64) = {
        let row = db
            .pool
            .query_one(
                "SELECT (SELECT count(*) FROM changefeed.changefeed_feeds),
                        (SELECT count(*) FROM changefeed.changefeed_log
                         WHERE row_new::text LIKE '%dropped-secret%'),
                        (SELECT count(*) FROM changefeed.changefeed_log
                         WHERE relid IS NOT NULL AND op <> 'X'
                           AND NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = relid))",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((feeds, images, dangling), (0, 0, 0));
}
