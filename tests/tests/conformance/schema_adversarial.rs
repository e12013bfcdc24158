//! Attacks from an adversarial review of schema-sync, kept as tests: what a
//! sync does not own (checks, primary keys, indexes and constraints made by
//! hand) is never dropped, whatever the flags, and the plan says so.

use db::Pool;
use schema_sync::{ChangeKind, Column, DriftKind, HazardKind, Options, Schema, Table};

use crate::TestDb;

async fn sync(db: &TestDb, s: &Schema, o: &Options) -> schema_sync::Report {
    match schema_sync::sync(&db.pool, s, o).await {
        Ok(r) => r,
        Err(e) => panic!("sync failed: {e}"),
    }
}

async fn plan(db: &TestDb, s: &Schema, o: &Options) -> schema_sync::Plan {
    match schema_sync::plan(&db.pool, s, o).await {
        Ok(p) => p,
        Err(e) => panic!("plan failed: {e}"),
    }
}

/// The names of `table`'s constraints, sorted.
async fn constraints(db: &TestDb, table: &str) -> Vec<String> {
    db.pool
        .query(
            "SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($1) \
             AND contype <> 'n' ORDER BY 1",
            &db::params![table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn destructive() -> Options {
    Options::new().allow_destructive(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_made_by_hand_is_never_dropped() {
    let db = TestDb::new().await;
    let spec = Schema::new().table(
        Table::new("t")
            .column(Column::new("id", "INT"))
            .column(Column::new("v", "TEXT")),
    );
    sync(&db, &spec, &Options::new()).await;
    // PostgreSQL names it t_v_check, the name schema-sync gives a column check.
    db.pool
        .batch_execute("ALTER TABLE t ADD CHECK (length(v) < 100)")
        .await
        .unwrap();
    assert_eq!(constraints(&db, "t").await, ["t_v_check"]);
    for options in [Options::new(), destructive()] {
        let p = plan(&db, &spec, &options).await;
        assert!(p.is_empty(), "a hand-made check must not be touched:\n{p}");
        assert!(
            p.drift.iter().any(
                |d| d.kind == DriftKind::Constraint && d.object.as_deref() == Some("t_v_check")
            ),
            "{p}"
        );
        sync(&db, &spec, &options).await;
        assert_eq!(constraints(&db, "t").await, ["t_v_check"]);
    }
    // A spec declaring another check on v leaves the hand-made one too.
    let other = Schema::new().table(
        Table::new("t")
            .column(Column::new("id", "INT"))
            .column(Column::new("v", "TEXT").check("v <> ''")),
    );
    let p = plan(&db, &other, &destructive()).await;
    assert!(
        p.changes.iter().all(|c| c.kind != ChangeKind::DropCheck),
        "{p}"
    );
    let def: String = db
        .pool
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 't_v_check'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(def.contains("length"), "{def}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_schema_sync_owns_is_dropped_with_a_hazard() {
    let db = TestDb::new().await;
    let with = Schema::new().table(
        Table::new("t")
            .column(Column::new("id", "INT"))
            .column(Column::new("v", "INT").check("v > 0")),
    );
    let without = Schema::new().table(
        Table::new("t")
            .column(Column::new("id", "INT"))
            .column(Column::new("v", "INT")),
    );
    sync(&db, &with, &Options::new()).await;
    let p = plan(&db, &without, &Options::new()).await;
    let drop = p
        .changes
        .iter()
        .find(|c| c.kind == ChangeKind::DropCheck)
        .unwrap_or_else(|| panic!("the owned check is dropped:\n{p}"));
    assert!(
        drop.hazards
            .iter()
            .any(|h| h.kind == HazardKind::LoosensConstraint),
        "{p}"
    );
    sync(&db, &without, &Options::new()).await;
    assert!(constraints(&db, "t").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_made_by_hand_is_never_dropped() {
    let db = TestDb::new().await;
    let spec = Schema::new().table(
        Table::new("t2")
            .column(Column::new("id", "INT"))
            .column(Column::new("v", "TEXT")),
    );
    sync(&db, &spec, &Options::new()).await;
    db.pool
        .batch_execute("ALTER TABLE t2 ADD PRIMARY KEY (id)")
        .await
        .unwrap();
    for options in [Options::new(), destructive()] {
        let p = plan(&db, &spec, &options).await;
        assert!(p.is_empty(), "a hand-made key must not be touched:\n{p}");
        assert!(
            p.drift
                .iter()
                .any(|d| d.kind == DriftKind::Constraint && d.table == "t2"),
            "{p}"
        );
        sync(&db, &spec, &options).await;
        assert_eq!(constraints(&db, "t2").await, ["t2_pkey"]);
    }
    // A spec declaring another key does not swap it either.
    let other = Schema::new().table(
        Table::new("t2")
            .column(Column::new("id", "INT"))
            .column(Column::new("v", "TEXT").not_null())
            .primary_key(["v"]),
    );
    let p = plan(&db, &other, &destructive()).await;
    assert!(
        p.changes
            .iter()
            .all(|c| c.kind != ChangeKind::ChangePrimaryKey),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_schema_sync_owns_is_dropped_with_a_hazard() {
    let db = TestDb::new().await;
    let with = Schema::new().table(
        Table::new("t")
            .column(Column::new("id", "INT"))
            .primary_key(["id"]),
    );
    let without = Schema::new().table(Table::new("t").column(Column::new("id", "INT")));
    sync(&db, &with, &Options::new()).await;
    let p = plan(&db, &without, &Options::new()).await;
    let drop = p
        .changes
        .iter()
        .find(|c| c.kind == ChangeKind::ChangePrimaryKey)
        .unwrap_or_else(|| panic!("the owned key is dropped:\n{p}"));
    assert!(
        drop.hazards
            .iter()
            .any(|h| h.kind == HazardKind::LoosensConstraint),
        "{p}"
    );
    sync(&db, &without, &Options::new()).await;
    assert!(constraints(&db, "t").await.is_empty());
}
