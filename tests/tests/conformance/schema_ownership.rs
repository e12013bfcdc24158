//! schema-sync drops and alters only what it owns: what a sync created or a
//! synced spec declared. Tables, columns and constraints made by hand or by
//! another component (the changefeed's tables) are reported as drift and
//! left alone whatever the flags; a removed constraint it owns is dropped, so
//! an empty plan means the database matches the spec.

use db::{Pool, params};
use schema_sync::{ChangeKind, Column, DriftKind, Options, Schema, Table};

use crate::TestDb;

fn destructive() -> Options {
    Options::new().allow_destructive(true)
}

async fn sync(db: &TestDb, s: &Schema, o: &Options) -> schema_sync::Report {
    match schema_sync::sync(&db.pool, s, o).await {
        Ok(r) => r,
        Err(e) => panic!("sync failed: {e}"),
    }
}

/// The ordinary tables of `public`, by name.
pub(crate) async fn tables(db: &TestDb) -> Vec<String> {
    db.pool
        .query(
            "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace \
             AND relkind = 'r' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The columns of `table`, in order.
pub(crate) async fn columns(db: &TestDb, table: &str) -> Vec<String> {
    db.pool
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) \
             AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &params![table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn t(extra: &[&str]) -> Table {
    let mut t = Table::new("t")
        .column(Column::new("id", "BIGINT"))
        .primary_key(["id"]);
    for c in extra {
        t = t.column(Column::new(*c, "TEXT"));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destructive_sync_drops_only_tables_it_owns() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE by_hand (v int); INSERT INTO by_hand VALUES (1)")
        .await
        .unwrap();
    sync(
        &db,
        &Schema::new()
            .table(t(&[]))
            .table(Table::new("gone").column(Column::new("v", "int"))),
        &Options::new(),
    )
    .await;
    let report = sync(&db, &Schema::new().table(t(&[])), &destructive()).await;
    let dropped: Vec<&str> = report
        .plan
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::DropTable)
        .map(|c| c.table.as_str())
        .collect();
    assert_eq!(dropped, ["gone"]);
    assert!(
        report
            .plan
            .drift
            .iter()
            .any(|d| d.kind == DriftKind::ExtraTable && d.table == "by_hand"),
        "{:?}",
        report.plan.drift
    );
    assert_eq!(tables(&db).await, ["by_hand", "t"]);
    // An explicitly empty spec drops what schema-sync owns, and only that.
    sync(&db, &Schema::new(), &destructive()).await;
    assert_eq!(tables(&db).await, ["by_hand"]);
    let n: i64 = db
        .pool
        .query_one("SELECT count(*) FROM by_hand", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destructive_sync_drops_only_columns_it_owns() {
    let db = TestDb::new().await;
    sync(&db, &Schema::new().table(t(&["x"])), &Options::new()).await;
    db.pool
        .batch_execute("ALTER TABLE t ADD COLUMN by_hand text")
        .await
        .unwrap();
    let report = sync(&db, &Schema::new().table(t(&[])), &destructive()).await;
    assert!(
        report
            .plan
            .drift
            .iter()
            .any(|d| d.kind == DriftKind::ExtraColumn && d.object.as_deref() == Some("by_hand")),
        "{:?}",
        report.plan.drift
    );
    assert_eq!(columns(&db, "t").await, ["id", "by_hand"]);
    assert!(
        schema_sync::plan(&db.pool, &Schema::new().table(t(&[])), &destructive())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_constraint_removed_from_the_spec_is_dropped() {
    let db = TestDb::new().await;
    let with = Schema::new().table(t(&[]).column(Column::new("sku", "TEXT").unique()));
    let without = Schema::new().table(t(&["sku"]));
    sync(&db, &with, &Options::new()).await;
    let plan = schema_sync::plan(&db.pool, &without, &Options::new())
        .await
        .unwrap();
    assert!(
        plan.changes
            .iter()
            .any(|c| c.kind == ChangeKind::DropUnique),
        "removing UNIQUE must be planned:\n{plan}"
    );
    sync(&db, &without, &Options::new()).await;
    db.pool
        .batch_execute("INSERT INTO t VALUES (1, 'a'), (2, 'a')")
        .await
        .unwrap();
    assert!(
        schema_sync::plan(&db.pool, &without, &Options::new())
            .await
            .unwrap()
            .is_empty()
    );
    // Back again: the constraint is made anew (after the duplicates go).
    db.pool
        .batch_execute("DELETE FROM t WHERE id = 2")
        .await
        .unwrap();
    sync(&db, &with, &Options::new()).await;
    assert!(
        db.pool
            .batch_execute("INSERT INTO t VALUES (3, 'a')")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_constraint_made_by_hand_is_left_alone() {
    let db = TestDb::new().await;
    let spec = Schema::new().table(t(&["sku"]));
    sync(&db, &spec, &Options::new()).await;
    db.pool
        .batch_execute("ALTER TABLE t ADD CONSTRAINT hand_sku UNIQUE (sku)")
        .await
        .unwrap();
    let report = sync(&db, &spec, &destructive()).await;
    assert!(report.plan.changes.is_empty(), "{}", report.plan);
    assert!(
        report
            .plan
            .drift
            .iter()
            .any(|d| d.kind == DriftKind::Constraint)
    );
    db.pool
        .batch_execute("INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();
    assert!(
        db.pool
            .batch_execute("INSERT INTO t VALUES (2, 'a')")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changefeed_tables_survive_a_destructive_sync() {
    let db = TestDb::new().await;
    let spec = Schema::new().table(t(&["v"]));
    sync(&db, &spec, &Options::new()).await;
    let feed = ::changefeed::Feed::start(db.pool.clone(), ::changefeed::Options::new())
        .await
        .unwrap();
    feed.enable("t").await.unwrap();
    let report = sync(&db, &spec, &destructive()).await;
    assert!(
        report.plan.changes.is_empty(),
        "nothing of the changefeed may be touched:\n{}",
        report.plan
    );
    // Its tables are the changefeed's, outside schema-sync's view: not even
    // drift.
    assert!(
        report
            .plan
            .drift
            .iter()
            .all(|d| !d.table.starts_with("changefeed_")),
        "{}",
        report.plan
    );
    db.pool
        .execute("INSERT INTO t VALUES ($1, $2)", &params![1i64, "watched"])
        .await
        .unwrap();
    drop(feed);
}

/// A primary key made outside schema-sync, under a name of its own, is
/// adopted by a spec that declares it, and then swapped by that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_is_swapped_by_its_real_name() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE TABLE t (id bigint NOT NULL, code text NOT NULL, \
             CONSTRAINT custom_key PRIMARY KEY (id))",
        )
        .await
        .unwrap();
    let table = |key: &str| {
        Schema::new().table(
            Table::new("t")
                .column(Column::new("id", "BIGINT").not_null())
                .column(Column::new("code", "TEXT").not_null())
                .primary_key([key]),
        )
    };
    // Not declared yet: a key it does not own is drift, never swapped.
    let spec = table("code");
    let p = schema_sync::plan(&db.pool, &spec, &Options::new())
        .await
        .unwrap();
    assert!(p.is_empty(), "{p}");
    assert!(
        p.drift
            .iter()
            .any(|d| d.kind == DriftKind::UnownedConstraintDiffers
                && d.object.as_deref() == Some("custom_key")),
        "{p}"
    );
    sync(&db, &table("id"), &Options::new()).await;
    sync(&db, &spec, &Options::new()).await;
    let key: Vec<String> = db
        .pool
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 't'::regclass AND i.indisprimary",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(key, ["code"]);
    assert!(
        schema_sync::plan(&db.pool, &spec, &Options::new())
            .await
            .unwrap()
            .is_empty()
    );
}
