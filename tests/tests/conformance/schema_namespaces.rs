//! A spec names its schema (`"schema": "app"`, default `public`): sync
//! creates it if missing (and owns it then), introspects only it and
//! qualifies every statement with it. Two specs for two schemas in one
//! database never touch each other's tables, and the ownership ledger keys
//! objects by schema (a ledger of the earlier layout is migrated in place).
//! Names that are not schema-sync's business are refused; any other name
//! works exactly as written.

use db::{Pool, params, quote_ident};
use schema_sync::{
    ChangeKind, Column, DiffOptions, Index, Options, Schema, SyncError, Table, ValidationError,
    snapshot,
};

use crate::TestDb;

async fn sync(db: &TestDb, s: &Schema, o: &Options) -> schema_sync::Report {
    match schema_sync::sync(&db.pool, s, o).await {
        Ok(r) => r,
        Err(e) => panic!("sync failed: {e}"),
    }
}

async fn plan(db: &TestDb, s: &Schema) -> schema_sync::Plan {
    match schema_sync::plan(&db.pool, s, &Options::new()).await {
        Ok(p) => p,
        Err(e) => panic!("plan failed: {e}"),
    }
}

fn destructive() -> Options {
    Options::new().allow_destructive(true)
}

/// The ordinary tables of schema `schema`, by name.
async fn tables_in(db: &TestDb, schema: &str) -> Vec<String> {
    db.pool
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            &params![schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The schemas besides PostgreSQL's own and schema-sync's ledger.
async fn schemas(db: &TestDb) -> Vec<String> {
    db.pool
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname !~ '^pg_' \
             AND nspname NOT IN ('information_schema', 'schema_sync') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn t(columns: &[&str]) -> Table {
    let mut t = Table::new("t")
        .column(Column::new("id", "BIGINT"))
        .primary_key(["id"]);
    for c in columns {
        t = t.column(Column::new(*c, "TEXT"));
    }
    t.index(Index::new("t_lower_idx", ["lower(id::text)"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_in_another_schema_creates_it_and_qualifies_every_statement() {
    let db = TestDb::new().await;
    let spec = Schema::new()
        .in_schema("app")
        .table(t(&["x"]).column(Column::new("n", "INTEGER").not_null().check("n > 0")))
        .table(Table::new("other").column(Column::new("a", "int")));
    assert_eq!(spec.schema, "app");
    let p = plan(&db, &spec).await;
    assert_eq!(p.schema, "app");
    assert_eq!(p.changes[0].kind, ChangeKind::CreateSchema, "{p}");
    assert_eq!(p.changes[0].statements, ["CREATE SCHEMA \"app\""]);
    for change in &p.changes[1..] {
        assert_eq!(change.schema, "app");
        for statement in &change.statements {
            assert!(statement.contains("\"app\"."), "unqualified: {statement}");
        }
    }
    // The offline diff from an empty spec gives the same plan.
    let offline = snapshot::plan_between_with(&Schema::new(), &spec, &DiffOptions::new());
    assert_eq!(offline.changes, p.changes, "offline\n{offline}\nlive\n{p}");
    assert_eq!(offline.hash(), p.hash());
    sync(&db, &spec, &Options::new()).await;
    assert_eq!(tables_in(&db, "app").await, ["other", "t"]);
    assert!(tables_in(&db, "public").await.is_empty());
    assert!(plan(&db, &spec).await.is_empty());
    // Uncached, the server canonicalizes again: still nothing to do.
    db.pool
        .batch_execute("DROP SCHEMA schema_sync CASCADE")
        .await
        .unwrap();
    let p = plan(&db, &spec).await;
    assert!(p.is_empty(), "{p}");
    // The same spec in `public` is another plan, with another hash.
    let public = Schema {
        schema: "public".to_owned(),
        ..spec.clone()
    };
    let other = plan(&db, &public).await;
    assert_eq!(other.changes[0].kind, ChangeKind::CreateTable, "{other}");
    let same_sql = snapshot::plan_between_with(&Schema::new(), &public, &DiffOptions::new());
    assert_ne!(same_sql.hash(), offline.hash());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_specs_in_two_schemas_never_touch_each_others_tables() {
    let db = TestDb::new().await;
    let a = Schema::new()
        .table(t(&["a"]))
        .table(Table::new("only_a").column(Column::new("v", "int")));
    let b = Schema::new()
        .in_schema("b")
        .table(t(&["b"]))
        .table(Table::new("only_b").column(Column::new("v", "int")));
    sync(&db, &a, &destructive()).await;
    sync(&db, &b, &destructive()).await;
    db.pool
        .batch_execute(
            "INSERT INTO public.t (id, a) VALUES (1, 'a'); INSERT INTO b.t (id, b) VALUES (2, 'b')",
        )
        .await
        .unwrap();
    // Each spec converged, alternately, with nothing to do for the other.
    for spec in [&a, &b, &a] {
        let r = sync(&db, spec, &destructive()).await;
        assert!(r.plan.is_empty(), "{}", r.plan);
        assert!(
            r.plan.drift.is_empty(),
            "the other schema is drift: {}",
            r.plan
        );
    }
    // A destructive sync of a smaller `a` drops a's tables and columns only.
    let smaller_a = Schema::new().table(
        Table::new("t")
            .column(Column::new("id", "BIGINT"))
            .primary_key(["id"]),
    );
    let r = sync(&db, &smaller_a, &destructive()).await;
    let kinds: Vec<ChangeKind> = r.plan.changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::DropIndex,
            ChangeKind::DropColumn,
            ChangeKind::DropTable
        ],
        "{}",
        r.plan
    );
    assert_eq!(tables_in(&db, "public").await, ["t"]);
    assert_eq!(tables_in(&db, "b").await, ["only_b", "t"]);
    let n: i64 = db
        .pool
        .query_one("SELECT count(*) FROM b.t WHERE b = 'b'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert!(plan(&db, &b).await.is_empty());
    // An empty spec for `b` drops b's tables, not a's; the schema stays.
    sync(&db, &Schema::new().in_schema("b"), &destructive()).await;
    assert!(tables_in(&db, "b").await.is_empty());
    assert_eq!(tables_in(&db, "public").await, ["t"]);
    assert!(plan(&db, &smaller_a).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_that_are_not_schema_syncs_business_are_refused() {
    let db = TestDb::new().await;
    let long = "s".repeat(64);
    for name in [
        "",
        "pg_catalog",
        "PG_Catalog",
        "information_schema",
        "pg_toast",
        "pg_temp",
        "pg_anything",
        "schema_sync",
        "changefeed",
        "ChangeFeed",
        "schema_sync_canon_1",
        long.as_str(),
        "nul\0byte",
    ] {
        let spec = Schema::new().in_schema(name).table(t(&[]));
        for options in [Options::new(), destructive()] {
            let err = schema_sync::sync(&db.pool, &spec, &options)
                .await
                .expect_err(name);
            let SyncError::Invalid(errors) = &err else {
                panic!("{name:?}: {err}");
            };
            assert!(
                errors.0.iter().any(
                    |e| matches!(e, ValidationError::InvalidSchema { schema, .. } if schema == name)
                ),
                "{name:?}: {err}"
            );
            assert!(
                err.to_string().contains("schema"),
                "the message names the schema: {err}"
            );
            assert!(schema_sync::plan(&db.pool, &spec, &options).await.is_err());
        }
    }
    assert_eq!(schemas(&db).await, ["public"]);
    assert!(tables_in(&db, "public").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_schema_names_work_exactly_as_written() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE victim (v int); INSERT INTO victim VALUES (42)")
        .await
        .unwrap();
    let long = "é".repeat(31); // 62 bytes
    let names = [
        "App",
        "a\"b",
        "a.b",
        "a b",
        "x\"; DROP TABLE victim; --",
        "x'); DROP TABLE victim; --",
        "é∑ schema",
        long.as_str(),
        "catalog_pg_",
    ];
    for name in names {
        let spec = Schema::new().in_schema(name).table(t(&["x"]));
        sync(&db, &spec, &destructive()).await;
        assert_eq!(tables_in(&db, name).await, ["t"], "{name:?}");
        let p = plan(&db, &spec).await;
        assert!(p.is_empty(), "{name:?}: {p}");
        db.pool
            .execute(
                &format!("INSERT INTO {}.t (id) VALUES (1)", quote_ident(name)),
                &[],
            )
            .await
            .unwrap();
    }
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.push("public".to_owned());
    expected.sort();
    let mut found = schemas(&db).await;
    found.sort();
    assert_eq!(found, expected);
    assert_eq!(tables_in(&db, "public").await, ["victim"]);
    let v: i32 = db
        .pool
        .query_one("SELECT v FROM victim", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
}

/// The ledger as the code before schemas wrote it: `(kind, tbl, obj, name)`,
/// every object in `public`, and the cache row `id = 1`.
const LEDGER_BEFORE_SCHEMAS: &str = "
    CREATE SCHEMA schema_sync;
    CREATE TABLE schema_sync.state (
        id integer PRIMARY KEY,
        spec_hash text NOT NULL,
        live_hash text NOT NULL,
        server_version text NOT NULL,
        canonical text NOT NULL,
        updated_at timestamp with time zone NOT NULL DEFAULT now());
    INSERT INTO schema_sync.state (id, spec_hash, live_hash, server_version, canonical)
        VALUES (1, 'x', 'x', 'x', '{\"tables\": []}');
    CREATE TABLE schema_sync.owned (
        kind text NOT NULL,
        tbl text NOT NULL,
        obj text NOT NULL,
        name text NOT NULL,
        PRIMARY KEY (kind, tbl, obj));
    INSERT INTO schema_sync.owned (kind, tbl, obj, name) VALUES
        ('table', 't', '', ''), ('column', 't', 'id', ''), ('column', 't', 'x', ''),
        ('table', 'gone', '', ''), ('column', 'gone', 'v', '')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_the_earlier_layout_keeps_its_ownership() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, x text, by_hand text);
             CREATE TABLE gone (v int);
             CREATE TABLE extra (v int)",
        )
        .await
        .unwrap();
    db.pool.batch_execute(LEDGER_BEFORE_SCHEMAS).await.unwrap();
    let smaller = Schema::new().table(
        Table::new("t")
            .column(Column::new("id", "BIGINT"))
            .primary_key(["id"]),
    );
    // Read as it is: public owns t, t.x and gone, not by_hand or extra.
    let expected = [
        (ChangeKind::DropColumn, Some("x")),
        (ChangeKind::DropTable, None),
    ];
    let steps = |p: &schema_sync::Plan| -> Vec<(ChangeKind, Option<String>)> {
        p.changes
            .iter()
            .map(|c| (c.kind, c.object.clone()))
            .collect()
    };
    let want: Vec<(ChangeKind, Option<String>)> = expected
        .iter()
        .map(|(k, o)| (*k, o.map(str::to_owned)))
        .collect();
    let p = schema_sync::plan(&db.pool, &smaller, &destructive())
        .await
        .unwrap();
    assert_eq!(steps(&p), want, "{p}");
    // A sync of another schema migrates the ledger and keeps public's part.
    sync(
        &db,
        &Schema::new().in_schema("app").table(t(&["x"])),
        &Options::new(),
    )
    .await;
    let p = schema_sync::plan(&db.pool, &smaller, &destructive())
        .await
        .unwrap();
    assert_eq!(steps(&p), want, "{p}");
    let r = sync(&db, &smaller, &destructive()).await;
    assert_eq!(steps(&r.plan), want, "{}", r.plan);
    assert_eq!(tables_in(&db, "public").await, ["extra", "t"]);
    assert_eq!(tables_in(&db, "app").await, ["t"]);
    // The app schema schema-sync created is owned, public is not.
    let owned: Vec<(String, String)> = db
        .pool
        .query(
            "SELECT nsp, kind FROM schema_sync.owned WHERE kind = 'schema' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(owned, [("app".to_owned(), "schema".to_owned())]);
}
