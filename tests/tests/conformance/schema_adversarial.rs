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

/// The names of `table`'s indexes, sorted.
async fn indexes(db: &TestDb, table: &str) -> Vec<String> {
    db.pool
        .query(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1) ORDER BY 1",
            &db::params![table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_column_that_hand_made_objects_depend_on_is_not_dropped() {
    let db = TestDb::new().await;
    let t = |extra: Option<&str>| {
        let mut t = Table::new("t")
            .column(Column::new("id", "BIGINT"))
            .primary_key(["id"]);
        if let Some(c) = extra {
            t = t.column(Column::new(c, "TEXT"));
        }
        t
    };
    let with = Schema::new()
        .table(t(Some("c")))
        .table(Table::new("t2").column(Column::new("u", "TEXT").unique()));
    sync(&db, &with, &Options::new()).await;
    db.pool
        .batch_execute(
            "CREATE INDEX hand_idx ON t (id, c); \
             ALTER TABLE t ADD CONSTRAINT hand_uq UNIQUE (id, c); \
             CREATE TABLE other (x text REFERENCES t2 (u))",
        )
        .await
        .unwrap();
    let without = Schema::new()
        .table(t(None))
        .table(Table::new("t2").column(Column::new("v", "INT")));
    let p = plan(&db, &without, &destructive()).await;
    assert!(
        p.changes.iter().all(|c| c.kind != ChangeKind::DropColumn),
        "columns hand-made objects depend on are not dropped:\n{p}"
    );
    let text = p.to_string();
    for name in ["hand_idx", "hand_uq", "other_x_fkey"] {
        assert!(text.contains(name), "the drift names {name}:\n{text}");
    }
    sync(&db, &without, &destructive()).await;
    assert_eq!(
        crate::schema_ownership::columns(&db, "t").await,
        ["id", "c"]
    );
    assert_eq!(indexes(&db, "t").await, ["hand_idx", "hand_uq", "t_pkey"]);
    assert_eq!(constraints(&db, "other").await, ["other_x_fkey"]);
    assert_eq!(
        crate::schema_ownership::columns(&db, "t2").await,
        ["u", "v"]
    );
    // Once they are gone, the column is dropped.
    db.pool
        .batch_execute(
            "DROP INDEX hand_idx; ALTER TABLE t DROP CONSTRAINT hand_uq; DROP TABLE other",
        )
        .await
        .unwrap();
    sync(&db, &without, &destructive()).await;
    assert_eq!(crate::schema_ownership::columns(&db, "t").await, ["id"]);
    assert_eq!(crate::schema_ownership::columns(&db, "t2").await, ["v"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_concurrent_index_build_leaves_no_invalid_index_and_says_what_was_applied() {
    let db = TestDb::new().await;
    let base = || {
        Table::new("t")
            .column(Column::new("id", "BIGINT"))
            .column(Column::new("v", "TEXT"))
            .primary_key(["id"])
    };
    sync(&db, &Schema::new().table(base()), &Options::new()).await;
    db.pool
        .batch_execute("INSERT INTO t VALUES (1, 'a'), (2, 'a')")
        .await
        .unwrap();
    let spec = Schema::new().table(
        base()
            .column(Column::new("w", "INT"))
            .index(schema_sync::Index::new("t_v_uq", ["v"]).unique()),
    );
    let options = Options::new().concurrent_indexes(true);
    let err = schema_sync::sync(&db.pool, &spec, &options)
        .await
        .expect_err("duplicates");
    let text = err.to_string();
    let invalid: i64 = db
        .pool
        .query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(invalid, 0, "the invalid index is dropped: {text}");
    let columns = crate::schema_ownership::columns(&db, "t").await;
    if db.backend() == db::BackendKind::Postgres {
        // The column was added in the transaction committed before the
        // concurrent build: the message says so.
        assert_eq!(columns, ["id", "v", "w"]);
        assert!(
            text.contains("committed") && text.contains("\"w\""),
            "the message says what was applied: {text}"
        );
        assert!(!text.contains("nothing was changed"), "{text}");
    } else {
        assert_eq!(columns, ["id", "v"], "{text}");
    }
    let p = plan(&db, &spec, &options).await;
    assert!(
        p.changes.iter().any(|c| c.kind == ChangeKind::CreateIndex),
        "the index is still to build:\n{p}"
    );
    // An invalid index left behind (by hand here) does not match the spec:
    // the plan rebuilds it.
    if db.backend() == db::BackendKind::Postgres {
        assert!(
            db.pool
                .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY t_v_uq ON t (v)")
                .await
                .is_err()
        );
        let p = plan(&db, &spec, &options).await;
        assert!(
            p.changes
                .iter()
                .any(|c| c.object.as_deref() == Some("t_v_uq")),
            "an invalid index is rebuilt:\n{p}"
        );
        db.pool
            .batch_execute("DELETE FROM t WHERE id = 2")
            .await
            .unwrap();
        sync(&db, &spec, &options).await;
        let p = plan(&db, &spec, &options).await;
        assert!(p.is_empty(), "{p}");
        assert!(
            db.pool
                .batch_execute("INSERT INTO t (id, v) VALUES (3, 'a')")
                .await
                .is_err()
        );
    }
}

/// A destructive plan can be reviewed (plan with allow_destructive), gated
/// by its hash at sync, and a plain plan says what allow_destructive would
/// drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destructive_plan_is_reviewed_and_gated_by_its_hash() {
    let db = TestDb::new().await;
    let keep = || Table::new("keep").column(Column::new("id", "INT"));
    sync(
        &db,
        &Schema::new()
            .table(keep())
            .table(Table::new("gone").column(Column::new("id", "INT"))),
        &Options::new(),
    )
    .await;
    let spec = Schema::new().table(keep());
    let p = plan(&db, &spec, &Options::new()).await;
    assert!(p.is_empty(), "{p}");
    let drift = p
        .drift
        .iter()
        .find(|d| d.table == "gone")
        .unwrap_or_else(|| panic!("{p}"));
    assert!(
        drift.message.contains("allow-destructive would drop"),
        "{}",
        drift.message
    );
    let p = plan(&db, &spec, &destructive()).await;
    assert!(
        p.changes.iter().any(|c| c.kind == ChangeKind::DropTable),
        "{p}"
    );
    let hash = p.hash();
    let err = schema_sync::sync(
        &db.pool,
        &spec,
        &destructive().expect_hash("0123456789abcdef"),
    )
    .await
    .expect_err("another plan was reviewed");
    assert!(
        matches!(&err, schema_sync::SyncError::PlanChanged { actual, .. } if *actual == hash),
        "{err}"
    );
    assert!(err.to_string().contains(&hash), "{err}");
    assert_eq!(crate::schema_ownership::tables(&db).await, ["gone", "keep"]);
    // The reviewed hash, in any case.
    sync(
        &db,
        &spec,
        &destructive().expect_hash(hash.to_ascii_uppercase()),
    )
    .await;
    assert_eq!(crate::schema_ownership::tables(&db).await, ["keep"]);
}

/// A table another component declares its own cannot be declared by a
/// spec: a plan error naming the component, not a failed CREATE TABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_declaring_a_components_table_is_refused_naming_the_component() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE TABLE feedish (id int); \
             COMMENT ON TABLE feedish IS 'cocalc-component:billing'",
        )
        .await
        .unwrap();
    let spec = Schema::new().table(Table::new("feedish").column(Column::new("id", "INT")));
    for result in [
        schema_sync::plan(&db.pool, &spec, &Options::new())
            .await
            .map(|_| ()),
        schema_sync::sync(&db.pool, &spec, &Options::new())
            .await
            .map(|_| ()),
    ] {
        let err = result.expect_err("the table is the component's");
        assert!(
            matches!(&err, schema_sync::SyncError::ComponentTable { table, component }
                if table == "feedish" && component == "billing"),
            "{err}"
        );
        assert!(err.to_string().contains("billing"), "{err}");
    }
}

/// The offline diff of two spellings of one spec is empty, as the live
/// plan is: redundant outer parentheses around a default or check, and a
/// type qualified with pg_catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_diff_ignores_spellings_the_live_plan_ignores() {
    let db = TestDb::new().await;
    let spec = |ty: &str, default: &str, check: &str| {
        Schema::new().table(
            Table::new("t")
                .column(Column::new("id", "INT"))
                .column(Column::new("n", ty).default(default).check(check)),
        )
    };
    let a = spec("integer", "0", "n >= 0");
    let b = spec("pg_catalog.int4", "(0)", "((n >= 0))");
    sync(&db, &a, &Options::new()).await;
    let live = plan(&db, &b, &Options::new()).await;
    assert!(live.is_empty(), "{live}");
    let offline =
        schema_sync::snapshot::plan_between_with(&a, &b, &schema_sync::DiffOptions::new());
    assert!(offline.is_empty(), "{offline}");
}

/// An owned table another table's foreign key (made by hand) refers to is
/// not dropped: drift naming the key, instead of a raw 2BP01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_table_a_hand_made_foreign_key_refers_to_is_not_dropped() {
    let db = TestDb::new().await;
    let keep = || Table::new("keep").column(Column::new("id", "INT"));
    sync(
        &db,
        &Schema::new().table(keep()).table(
            Table::new("gone")
                .column(Column::new("id", "INT"))
                .primary_key(["id"]),
        ),
        &Options::new(),
    )
    .await;
    db.pool
        .batch_execute("CREATE TABLE other (g int REFERENCES gone (id))")
        .await
        .unwrap();
    let spec = Schema::new().table(keep());
    let p = plan(&db, &spec, &destructive()).await;
    assert!(
        p.changes.iter().all(|c| c.kind != ChangeKind::DropTable),
        "{p}"
    );
    assert!(p.to_string().contains("other_g_fkey"), "{p}");
    sync(&db, &spec, &destructive()).await;
    assert_eq!(
        crate::schema_ownership::tables(&db).await,
        ["gone", "keep", "other"]
    );
    db.pool.batch_execute("DROP TABLE other").await.unwrap();
    sync(&db, &spec, &destructive()).await;
    assert_eq!(crate::schema_ownership::tables(&db).await, ["keep"]);
}

/// A check or primary key made by hand that differs from the spec is left
/// alone by a sync, and a migration's verification still reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_differing_hand_made_check_fails_a_migrations_verification() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v > 0))")
        .await
        .unwrap();
    let table = |check: &str| {
        Schema::new().table(
            Table::new("t")
                .column(Column::new("id", "INT"))
                .column(Column::new("v", "INT").check(check))
                .primary_key(["id"]),
        )
    };
    migrate::verify_spec(&db.pool, &table("v > 0"))
        .await
        .unwrap_or_else(|e| panic!("the same schema: {e}"));
    let p = plan(&db, &table("v > 1"), &Options::new()).await;
    assert!(p.is_empty(), "{p}");
    assert!(
        p.drift
            .iter()
            .any(|d| d.kind == DriftKind::UnownedConstraintDiffers),
        "{p}"
    );
    assert!(
        migrate::verify_spec(&db.pool, &table("v > 1"))
            .await
            .is_err()
    );
}
