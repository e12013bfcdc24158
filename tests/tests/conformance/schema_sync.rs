//! schema-sync on every backend: table-driven change cases (old spec, new
//! spec, expected changes and hazards; the live plan equals the offline one;
//! after the apply the next plan is empty), drift, ownership, NOT NULL with
//! NULL rows, odd identifiers, canonical forms, concurrency and the fixture.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use db::{BackendKind, Pool};
use schema_sync::{
    ChangeKind, Column, DiffOptions, DriftKind, HazardKind, Index, Options, Plan, Schema,
    SyncError, Table, snapshot,
};

use crate::TestDb;

async fn sync(db: &TestDb, s: &Schema, o: &Options) -> schema_sync::Report {
    match schema_sync::sync(&db.pool, s, o).await {
        Ok(r) => r,
        Err(e) => panic!("sync failed: {e}"),
    }
}

async fn plan(db: &TestDb, s: &Schema) -> Plan {
    match schema_sync::plan(&db.pool, s, &Options::new()).await {
        Ok(p) => p,
        Err(e) => panic!("plan failed: {e}"),
    }
}

async fn assert_converged(db: &TestDb, s: &Schema) {
    let p = plan(db, s).await;
    assert!(p.is_empty(), "the plan after sync is not empty:\n{p}");
    // Without the cache the server canonicalizes the spec again: still empty.
    db.pool
        .batch_execute("DROP SCHEMA IF EXISTS schema_sync CASCADE")
        .await
        .unwrap();
    let p = plan(db, s).await;
    assert!(
        p.is_empty(),
        "the uncached plan after sync is not empty:\n{p}"
    );
}

fn base() -> Table {
    Table::new("t")
        .column(Column::new("id", "BIGINT"))
        .primary_key(["id"])
}

fn one(t: Table) -> Schema {
    Schema::new().table(t)
}

struct Case {
    name: &'static str,
    old: Schema,
    new: Schema,
    kinds: Vec<ChangeKind>,
    hazards: Vec<HazardKind>,
    allow_destructive: bool,
    /// Rows inserted after `old` is applied.
    rows: &'static str,
}

fn case(
    name: &'static str,
    old: Table,
    new: Table,
    kinds: Vec<ChangeKind>,
    hazards: Vec<HazardKind>,
) -> Case {
    Case {
        name,
        old: one(old),
        new: one(new),
        kinds,
        hazards,
        allow_destructive: false,
        rows: "",
    }
}

fn cases() -> Vec<Case> {
    use ChangeKind as K;
    use HazardKind as H;
    let x = |ty: &str| base().column(Column::new("x", ty));
    vec![
        case(
            "create table",
            Table::new("other").column(Column::new("a", "int")),
            base(),
            vec![K::CreateTable],
            vec![],
        ),
        case(
            "add column with default and check",
            base(),
            base().column(
                Column::new("x", "VARCHAR(16)")
                    .not_null()
                    .default("'a'")
                    .check("x IN ('a', 'b')"),
            ),
            vec![K::AddColumn],
            vec![],
        ),
        Case {
            rows: "INSERT INTO t (id) VALUES (1), (2)",
            ..case(
                "add not null column with backfill",
                base(),
                base().column(
                    Column::new("x", "INTEGER")
                        .not_null()
                        .null_backfill("id * 2"),
                ),
                vec![K::AddColumn],
                vec![],
            )
        },
        case(
            "widen integer",
            x("INTEGER"),
            x("BIGINT"),
            vec![K::ChangeType],
            vec![H::TakesStrongLock, H::RewritesTable],
        ),
        case(
            "widen varchar",
            x("VARCHAR(8)"),
            x("VARCHAR(16)"),
            vec![K::ChangeType],
            vec![H::TakesStrongLock],
        ),
        Case {
            allow_destructive: true,
            ..case(
                "narrow bigint",
                x("BIGINT"),
                x("INTEGER"),
                vec![K::ChangeType],
                vec![H::TakesStrongLock, H::RewritesTable, H::Destructive],
            )
        },
        case(
            "set default",
            x("TEXT"),
            base().column(Column::new("x", "TEXT").default("'v'")),
            vec![K::SetDefault],
            vec![],
        ),
        case(
            "drop default",
            base().column(Column::new("x", "TIMESTAMP").default("now()")),
            x("TIMESTAMP"),
            vec![K::DropDefault],
            vec![],
        ),
        Case {
            rows: "INSERT INTO t (id, x) VALUES (1, 'a')",
            ..case(
                "set not null",
                x("TEXT"),
                base().column(Column::new("x", "TEXT").not_null()),
                vec![K::SetNotNull],
                vec![H::TakesStrongLock],
            )
        },
        case(
            "drop not null",
            base().column(Column::new("x", "TEXT").not_null()),
            x("TEXT"),
            vec![K::DropNotNull],
            vec![],
        ),
        case(
            "add check",
            x("INTEGER"),
            base().column(Column::new("x", "INTEGER").check("x >= 0")),
            vec![K::AddCheck],
            vec![H::TakesStrongLock],
        ),
        case(
            "replace check",
            base().column(Column::new("x", "INTEGER").check("x >= 0")),
            base().column(Column::new("x", "INTEGER").check("x > 0")),
            vec![K::DropCheck, K::AddCheck],
            vec![H::TakesStrongLock],
        ),
        Case {
            rows: "INSERT INTO t (id, x) VALUES (1, 7)",
            ..case(
                // PostgreSQL re-parses the stored check (`x > 5`) for the
                // new type, which fails: it is dropped before the change.
                "retype a column its check uses",
                base().column(Column::new("x", "INTEGER").check("x > '5'")),
                base().column(Column::new("x", "TEXT").check("x > '5'")),
                vec![K::DropCheck, K::ChangeType, K::AddCheck],
                vec![H::TakesStrongLock, H::RewritesTable],
            )
        },
        case(
            "drop check",
            base().column(Column::new("x", "INTEGER").check("x >= 0")),
            x("INTEGER"),
            vec![K::DropCheck],
            vec![H::LoosensConstraint],
        ),
        case(
            "add unique",
            x("TEXT"),
            base().column(Column::new("x", "TEXT").unique()),
            vec![K::AddUnique],
            vec![H::IndexBuild, H::TakesStrongLock],
        ),
        case(
            "add primary key",
            Table::new("t").column(Column::new("id", "BIGINT")),
            base(),
            vec![K::SetNotNull, K::AddPrimaryKey],
            vec![H::TakesStrongLock, H::IndexBuild],
        ),
        case(
            "change primary key",
            x("TEXT"),
            x("TEXT").primary_key(["id", "x"]),
            vec![K::SetNotNull, K::ChangePrimaryKey],
            vec![H::TakesStrongLock, H::IndexBuild],
        ),
        case(
            "shrink primary key",
            x("TEXT").primary_key(["x", "id"]),
            x("TEXT"),
            vec![K::ChangePrimaryKey, K::DropNotNull],
            vec![H::TakesStrongLock, H::IndexBuild],
        ),
        case(
            "create index",
            x("TEXT"),
            x("TEXT").index(Index::new("t_x_idx", ["lower(x) text_pattern_ops"])),
            vec![K::CreateIndex],
            vec![H::IndexBuild],
        ),
        case(
            "replace owned index",
            x("TEXT").index(Index::new("t_x_idx", ["x"])),
            x("TEXT").index(Index::new("t_x_idx", ["x DESC"]).where_("x IS NOT NULL")),
            vec![K::ReplaceIndex],
            vec![H::IndexBuild],
        ),
        case(
            "drop owned index",
            x("TEXT").index(Index::new("t_x_idx", ["x"])),
            x("TEXT"),
            vec![K::DropIndex],
            vec![H::IndexDropped],
        ),
        Case {
            allow_destructive: true,
            ..case(
                "drop column",
                x("TEXT"),
                base(),
                vec![K::DropColumn],
                vec![H::Destructive],
            )
        },
        Case {
            allow_destructive: true,
            old: Schema::new()
                .table(base())
                .table(Table::new("gone").column(Column::new("a", "int"))),
            ..case(
                "drop table",
                base(),
                base(),
                vec![K::DropTable],
                vec![H::Destructive],
            )
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_kind_and_hazard() {
    for c in cases() {
        let db = TestDb::new().await;
        sync(&db, &c.old, &Options::new()).await;
        if !c.rows.is_empty() {
            db.pool.batch_execute(c.rows).await.unwrap();
        }
        let options = Options::new().allow_destructive(c.allow_destructive);
        let live = schema_sync::plan(&db.pool, &c.new, &options).await.unwrap();
        let kinds: Vec<ChangeKind> = live.changes.iter().map(|ch| ch.kind).collect();
        assert_eq!(kinds, c.kinds, "{}: kinds\n{live}", c.name);
        let hazards: BTreeSet<HazardKind> = c.hazards.iter().copied().collect();
        assert_eq!(live.hazard_kinds(), hazards, "{}: hazards\n{live}", c.name);
        // The offline spec-to-spec diff yields the same plan.
        let offline = snapshot::plan_between_with(
            &c.old,
            &c.new,
            &DiffOptions::new().allow_destructive(c.allow_destructive),
        );
        assert_eq!(
            offline.changes, live.changes,
            "{}: offline\n{offline}\nlive\n{live}",
            c.name
        );
        if c.hazards.contains(&HazardKind::Destructive) {
            let err = schema_sync::sync(&db.pool, &c.new, &Options::new()).await;
            if c.kinds.iter().any(|k| matches!(k, ChangeKind::ChangeType)) {
                assert!(
                    matches!(err, Err(SyncError::HazardsNotAllowed(_))),
                    "{}: destructive change not refused: {err:?}",
                    c.name
                );
            }
        }
        let report = sync(&db, &c.new, &options).await;
        assert!(report.applied, "{}", c.name);
        assert_converged(&db, &c.new).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_tables_columns_and_unknown_indexes_are_drift() {
    let db = TestDb::new().await;
    let spec = one(base()
        .column(Column::new("x", "TEXT"))
        .index(Index::new("t_x_idx", ["x"])));
    sync(&db, &spec, &Options::new()).await;
    db.pool
        .batch_execute(
            "CREATE TABLE extra (a int);
             ALTER TABLE t ADD COLUMN y int;
             CREATE INDEX t_hand_idx ON t (x, id);
             ALTER TABLE t ADD CONSTRAINT t_pos CHECK (id > 0);
             DROP INDEX t_x_idx; CREATE INDEX t_x_idx ON t (x DESC)",
        )
        .await
        .unwrap();
    let p = plan(&db, &spec).await;
    assert!(p.is_empty(), "drift must not plan changes:\n{p}");
    let kinds: BTreeSet<DriftKind> = p.drift.iter().map(|d| d.kind).collect();
    for k in [
        DriftKind::ExtraTable,
        DriftKind::ExtraColumn,
        DriftKind::UnknownIndex,
        DriftKind::UnownedIndexDiffers,
        DriftKind::Constraint,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from\n{p}");
    }
    assert!(p.to_string().contains("\"t_hand_idx\""), "{p}");
    // Sync leaves all of it alone.
    sync(&db, &spec, &Options::new()).await;
    let n: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname IN ('extra', 't_hand_idx', 't_x_idx')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // Not even with allow_destructive: schema-sync did not make them (see
    // schema_ownership.rs for what it does drop).
    let o = Options::new().allow_destructive(true);
    let p = schema_sync::plan(&db.pool, &spec, &o).await.unwrap();
    assert!(p.changes.is_empty(), "{p}");
    sync(&db, &spec, &o).await;
    let n: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname IN ('extra', 't_hand_idx', 't_x_idx')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let y: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'y'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(y, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_null_with_null_rows_fails_unless_backfilled() {
    let db = TestDb::new().await;
    sync(
        &db,
        &one(base().column(Column::new("score", "INTEGER"))),
        &Options::new(),
    )
    .await;
    db.pool
        .batch_execute("INSERT INTO t VALUES (1, NULL), (2, NULL), (3, 7)")
        .await
        .unwrap();
    let strict = one(base().column(Column::new("score", "INTEGER").not_null()));
    let err = schema_sync::sync(&db.pool, &strict, &Options::new())
        .await
        .unwrap_err();
    match &err {
        SyncError::NullRows {
            table,
            column,
            count,
        } => {
            assert_eq!((table.as_str(), column.as_str(), *count), ("t", "score", 2));
        }
        other => panic!("expected NullRows, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("\"score\"") && text.contains("2 row(s)"),
        "{text}"
    );
    // Nothing was applied.
    assert!(!plan(&db, &strict).await.is_empty());
    let filled = one(base().column(
        Column::new("score", "INTEGER")
            .not_null()
            .null_backfill("0"),
    ));
    sync(&db, &filled, &Options::new()).await;
    let sum: i64 = db
        .pool
        .query_one("SELECT sum(score)::bigint FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 7);
    assert_converged(&db, &filled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_identifiers_work() {
    let db = TestDb::new().await;
    let spec = one(Table::new("Odd \"Table\" ñandú")
        .column(Column::new("Select", "INTEGER"))
        .column(Column::new("with space", "TEXT").check("length(\"with space\") < 10"))
        .column(Column::new("user", "TEXT").unique())
        .column(Column::new("ñ\"q", "TEXT").default("'x'"))
        .primary_key(["Select"])
        .index(
            Index::new("Index \"Ω\"", ["\"with space\"", "lower(\"ñ\"\"q\")"]).include(["user"]),
        ));
    sync(&db, &spec, &Options::new()).await;
    assert_converged(&db, &spec).await;
    db.pool
        .batch_execute("INSERT INTO \"Odd \"\"Table\"\" ñandú\" (\"Select\") VALUES (1)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_forms_do_not_make_false_diffs() {
    let db = TestDb::new().await;
    let spec = one(Table::new("c")
        .column(Column::new("id", "SERIAL").unique())
        .column(Column::new("n", "BIGSERIAL"))
        .column(Column::new("created", "TIMESTAMP").default("now()"))
        .column(Column::new("at", "TIMESTAMPTZ").default("NOW()"))
        .column(Column::new("state", "VARCHAR(24)").default("'pending'"))
        .column(Column::new("kind", "TEXT").check("kind IN ('a','b')"))
        .column(Column::new("i", "INT4").default("0"))
        .column(Column::new("tags", "TEXT[]").default("'{}'"))
        .column(Column::new("ids", "INTEGER[]"))
        .column(Column::new("money", "NUMERIC(20,10)").default("0.5"))
        .column(Column::new("doc", "JSONB").default("'{}'::jsonb"))
        .column(Column::new("bits", "BIT VARYING"))
        .column(Column::new("ch", "CHAR(4)"))
        .column(Column::new("ok", "BOOLEAN").default("FALSE"))
        .primary_key(["id"])
        .index(Index::new("c_lower_idx", ["LOWER(state) text_pattern_ops"]))
        .index(Index::new("c_doc_idx", ["(doc ->> 'state')"]))
        .index(Index::new("c_gin_idx", ["tags"]).method("GIN"))
        .index(
            Index::new("c_partial_idx", ["created DESC NULLS LAST", "id"])
                .where_("kind IN ('a') AND ok IS TRUE")
                .include(["money"]),
        ));
    sync(&db, &spec, &Options::new()).await;
    assert_converged(&db, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_specs_name_table_and_column() {
    let db = TestDb::new().await;
    sync(&db, &one(base()), &Options::new()).await;
    let bad = one(base()
        .column(Column::new("ok", "TEXT"))
        .column(Column::new("bad", "NO_SUCH_TYPE")));
    match schema_sync::plan(&db.pool, &bad, &Options::new()).await {
        Err(SyncError::UnknownType { table, column, .. }) => {
            assert_eq!((table.as_str(), column.as_str()), ("t", "bad"));
        }
        other => panic!("expected UnknownType, got {other:?}"),
    }
    let bad = one(base().index(Index::new("t_bad_idx", ["no_such_column"])));
    match schema_sync::plan(&db.pool, &bad, &Options::new()).await {
        Err(SyncError::Rejected { table, index, .. }) => {
            assert_eq!((table.as_str(), index.as_deref()), ("t", Some("t_bad_idx")));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A new table is created as written: the apply reports the column.
    let new_table = Schema::new().table(base()).table(
        Table::new("fresh")
            .column(Column::new("a", "TEXT"))
            .column(Column::new("b", "TEXT").default("no_such_function()")),
    );
    match schema_sync::sync(&db.pool, &new_table, &Options::new()).await {
        Err(SyncError::Rejected { table, column, .. }) => {
            assert_eq!((table.as_str(), column.as_deref()), ("fresh", Some("b")));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(
        !plan(&db, &new_table).await.is_empty(),
        "nothing was applied"
    );
    let invalid = one(Table::new("t").primary_key(["nope"]));
    assert!(matches!(
        schema_sync::plan(&db.pool, &invalid, &Options::new()).await,
        Err(SyncError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_are_serialized() {
    let db = TestDb::new().await;
    let spec = one(base()
        .column(Column::new("x", "TEXT"))
        .index(Index::new("t_x_idx", ["x"])));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let pool = db.pool.clone();
            let spec = spec.clone();
            tokio::spawn(async move { schema_sync::sync(&pool, &spec, &Options::new()).await })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        let report = t.await.unwrap().unwrap();
        applied += usize::from(report.applied);
    }
    assert_eq!(
        applied, 1,
        "exactly one sync applies, the other finds nothing to do"
    );
    assert_converged(&db, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_options_apply() {
    let db = TestDb::new().await;
    sync(
        &db,
        &one(base().column(Column::new("x", "TEXT"))),
        &Options::new(),
    )
    .await;
    let spec = one(base()
        .column(Column::new("x", "TEXT"))
        .index(Index::new("t_x_idx", ["x"])));
    let o = Options::new()
        .concurrent_indexes(true)
        .lock_timeout(Duration::from_secs(5))
        .statement_timeout(Duration::from_secs(60));
    let p = schema_sync::plan(&db.pool, &spec, &o).await.unwrap();
    // Concurrent builds only on PostgreSQL, never on PGlite.
    assert_eq!(
        p.changes[0].transactional,
        db.backend() == BackendKind::Pglite,
        "{p}"
    );
    sync(&db, &spec, &o).await;
    assert_converged(&db, &spec).await;
}

fn fixture() -> Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/cocalc-control-plane-schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the fixture {} is missing: {e}", path.display()));
    Schema::from_json(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)]
async fn fixture_syncs_from_empty_and_converges() {
    let db = TestDb::new().await;
    let spec = fixture();
    let offline = snapshot::plan_between_with(&Schema::new(), &spec, &DiffOptions::new());
    let live = plan(&db, &spec).await;
    assert_eq!(
        live.changes, offline.changes,
        "the live plan from empty equals the offline one"
    );
    let start = Instant::now();
    let report = sync(&db, &spec, &Options::new()).await;
    let full = start.elapsed();
    assert!(report.applied);
    assert_eq!(report.plan.changes.len(), 174 + 738);
    let start = Instant::now();
    let p = plan(&db, &spec).await;
    let cached = start.elapsed();
    assert!(p.is_empty() && p.drift.is_empty(), "{p}");
    let start = Instant::now();
    let again = sync(&db, &spec, &Options::new()).await;
    let resync = start.elapsed();
    assert!(!again.applied && again.cache_hit);
    // Without the cache: the server canonicalizes all 174 tables, and the
    // converged database still plans nothing.
    db.pool
        .batch_execute("DROP SCHEMA schema_sync CASCADE")
        .await
        .unwrap();
    let start = Instant::now();
    let p = plan(&db, &spec).await;
    let uncached = start.elapsed();
    assert!(p.is_empty() && p.drift.is_empty(), "{p}");
    // For scale: the same DDL run directly, in one transaction.
    let direct_db = TestDb::new().await;
    let script: String = offline
        .changes
        .iter()
        .map(|c| format!("{}\n", c.sql))
        .collect();
    let start = Instant::now();
    direct_db
        .pool
        .batch_execute(&format!("BEGIN;\n{script}COMMIT;"))
        .await
        .unwrap();
    let direct = start.elapsed();
    eprintln!(
        "schema-sync fixture on {}: full sync {full:?} (same DDL directly: {direct:?}), \
         plan (cached) {cached:?}, sync converged {resync:?}, plan (uncached) {uncached:?}",
        db.backend()
    );
}

/// Random spec pairs within the non-destructive changes: after syncing A,
/// the live plan to B equals the offline one, and after syncing B nothing is
/// left to do (the database introspects as B's canonical form).
mod properties {
    use proptest::prelude::*;

    use super::*;

    const FAMILIES: [(&[&str], [&str; 2], [&str; 2]); 2] = [
        (&["INTEGER", "BIGINT"], ["0", "7"], ["{c} >= 0", "{c} > -5"]),
        (
            &["VARCHAR(8)", "VARCHAR(16)", "TEXT"],
            ["'a'", "'b'::text"],
            ["length({c}) < 8", "{c} IN ('x', 'y')"],
        ),
    ];

    #[derive(Debug, Clone)]
    struct Col {
        present: bool,
        ty: usize,
        not_null: bool,
        default: Option<usize>,
        check: Option<usize>,
        unique: bool,
        index: Option<usize>,
    }

    fn col() -> impl Strategy<Value = Col> {
        (
            any::<bool>(),
            0..3usize,
            any::<bool>(),
            proptest::option::of(0..2usize),
            proptest::option::of(0..2usize),
            prop::bool::weighted(0.2),
            proptest::option::of(0..3usize),
        )
            .prop_map(
                |(present, ty, not_null, default, check, unique, index)| Col {
                    present,
                    ty,
                    not_null,
                    default,
                    check,
                    unique,
                    index,
                },
            )
    }

    fn spec(cols: &[Col]) -> Schema {
        let mut t = Table::new("p")
            .column(Column::new("id", "BIGINT"))
            .primary_key(["id"]);
        for (i, c) in cols.iter().enumerate() {
            if !c.present {
                continue;
            }
            let name = format!("c{i}");
            let (types, defaults, checks) = FAMILIES[i % 2];
            let mut column = Column::new(name.clone(), types[c.ty.min(types.len() - 1)]);
            column.not_null = c.not_null;
            column.default = c.default.map(|d| defaults[d].to_owned());
            column.check = c.check.map(|k| checks[k].replace("{c}", &name));
            column.unique = c.unique;
            t = t.column(column);
            let idx = format!("p_{name}_idx");
            match c.index {
                Some(0) => t = t.index(Index::new(idx, [name.clone()])),
                Some(1) => t = t.index(Index::new(idx, [format!("{name} DESC"), "id".into()])),
                Some(_) => {
                    t = t.index(
                        Index::new(idx, [name.clone()]).where_(format!("{name} IS NOT NULL")),
                    )
                }
                None => {}
            }
        }
        one(t)
    }

    fn pair() -> impl Strategy<Value = (Vec<Col>, Vec<Col>)> {
        (
            prop::collection::vec(col(), 4),
            prop::collection::vec(col(), 4),
        )
            .prop_map(|(a, mut b)| {
                // Only widening type changes: B's type is at least A's.
                for (x, y) in a.iter().zip(b.iter_mut()) {
                    y.ty = y.ty.max(x.ty);
                }
                (a, b)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 10,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_spec_pairs_converge((a, b) in pair()) {
            let (a, b) = (spec(&a), spec(&b));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let db = TestDb::new().await;
                sync(&db, &a, &Options::new()).await;
                let live = plan(&db, &b).await;
                let offline = snapshot::plan_between_with(&a, &b, &DiffOptions::new());
                assert_eq!(offline.changes, live.changes, "offline\n{offline}\nlive\n{live}");
                assert!(!live.hazard_kinds().contains(&HazardKind::Destructive), "{live}");
                sync(&db, &b, &Options::new()).await;
                assert_converged(&db, &b).await;
            });
        }
    }
}

/// The live definitions of `table`'s indexes besides its primary key, by name.
async fn index_defs(db: &TestDb, table: &str) -> Vec<(String, String)> {
    db.pool
        .query(
            "SELECT c.relname::text, pg_get_indexdef(c.oid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1) AND NOT i.indisprimary ORDER BY 1",
            &db::params![table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A column whose type changes under an expression index or a partial
/// index predicate that uses it: PostgreSQL re-parses the index's stored
/// definition for the new type, which fails here (`COALESCE(n, 0)` and `n >
/// 5` on text), or keeps a definition the spec does not say. The plan drops
/// such indexes before the type change and builds them again after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_rebuilds_the_expression_indexes_that_use_the_column() {
    let db = TestDb::new().await;
    let table = |n: &str, v: &str| {
        base()
            .column(Column::new("n", n))
            .column(Column::new("v", v))
            .index(Index::new("t_n_coalesce", ["coalesce(n, '0')"]))
            .index(Index::new("t_n_partial", ["id"]).where_("n > '5'"))
            .index(Index::new("t_v_concat", ["(v || '!')"]))
            .index(Index::new("t_plain", ["n", "v DESC"]))
    };
    let old = one(table("INTEGER", "VARCHAR(10)"));
    let new = one(table("TEXT", "TEXT"));
    sync(&db, &old, &Options::new()).await;
    db.pool
        .batch_execute("INSERT INTO t VALUES (1, 3, '10'), (2, 7, '20'), (3, NULL, NULL)")
        .await
        .unwrap();
    let live = plan(&db, &new).await;
    let steps: Vec<(ChangeKind, Option<&str>)> = live
        .changes
        .iter()
        .map(|c| (c.kind, c.object.as_deref()))
        .collect();
    use ChangeKind as K;
    assert_eq!(
        steps,
        [
            (K::DropIndex, Some("t_n_coalesce")),
            (K::DropIndex, Some("t_n_partial")),
            (K::DropIndex, Some("t_v_concat")),
            (K::ChangeType, Some("n")),
            (K::ChangeType, Some("v")),
            (K::CreateIndex, Some("t_n_coalesce")),
            (K::CreateIndex, Some("t_n_partial")),
            (K::CreateIndex, Some("t_v_concat")),
        ],
        "{live}"
    );
    let offline = snapshot::plan_between_with(&old, &new, &DiffOptions::new());
    assert_eq!(
        offline.changes, live.changes,
        "offline\n{offline}\nlive\n{live}"
    );
    let report = sync(&db, &new, &Options::new()).await;
    assert!(report.applied);
    assert_converged(&db, &new).await;
    // The indexes are what the spec says on the new types, as if created
    // on them.
    let rebuilt = index_defs(&db, "t").await;
    let found: Vec<i64> = db
        .pool
        .query("SELECT id FROM t WHERE n > '5' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(found, [2]);
    db.pool
        .batch_execute("DROP TABLE t; DROP SCHEMA IF EXISTS schema_sync CASCADE")
        .await
        .unwrap();
    sync(&db, &new, &Options::new()).await;
    assert_eq!(rebuilt, index_defs(&db, "t").await);
}
