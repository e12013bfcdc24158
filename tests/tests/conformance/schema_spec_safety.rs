//! A spec is data: hostile text in any field of a spec is refused before any
//! SQL runs, or becomes DDL that does exactly what the spec says. Nothing
//! else is ever created, changed or dropped.

use db::Pool;
use proptest::prelude::*;
use schema_sync::{Column, Index, Options, Schema, SyncError, Table};

use crate::TestDb;
use crate::schema_ownership::{columns, tables};

/// A table the hostile specs try to drop or change, with one row.
async fn victim(db: &TestDb) {
    db.pool
        .batch_execute("CREATE TABLE victim (v int); INSERT INTO victim VALUES (42)")
        .await
        .unwrap();
}

/// Everything in `public` besides the spec's table: only `victim`, with its
/// row, and the spec's table (if created) has exactly the spec's columns.
async fn assert_untouched(db: &TestDb, spec_columns: &[&str]) {
    let v: i32 = db
        .pool
        .query_one("SELECT v FROM victim", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
    let tables = tables(db).await;
    assert!(
        tables == ["victim"] || tables == ["s", "victim"],
        "unexpected tables: {tables:?}"
    );
    if tables.len() == 2 {
        let columns = columns(db, "s").await;
        assert_eq!(columns, spec_columns);
    }
}

/// The schemas besides `public`, PostgreSQL's own and schema-sync's ledger.
async fn other_schemas(db: &TestDb) -> Vec<String> {
    db.pool
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname !~ '^pg_' \
             AND nspname NOT IN ('public', 'information_schema', 'schema_sync') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// For a spec naming schema `schema`: `public` holds only `victim`, and no
/// schema exists besides `schema` (if the sync created it), which then
/// holds exactly the spec's table and columns.
async fn assert_only_schema(db: &TestDb, schema: &str, spec_columns: &[&str]) {
    let v: i32 = db
        .pool
        .query_one("SELECT v FROM victim", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
    assert_eq!(tables(db).await, ["victim"]);
    let others = other_schemas(db).await;
    assert!(
        others.is_empty() || others == [schema],
        "unexpected schemas for {schema:?}: {others:?}"
    );
    if !others.is_empty() {
        let found: Vec<(String, String)> = db
            .pool
            .query(
                "SELECT c.relname::text, a.attname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname, a.attnum",
                &db::params![schema],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expected: Vec<(String, String)> = spec_columns
            .iter()
            .map(|c| ("s".to_owned(), (*c).to_owned()))
            .collect();
        assert_eq!(found, expected, "schema {schema:?}");
    }
}

fn hostile_specs() -> Vec<(&'static str, Schema)> {
    let t = || Table::new("s").column(Column::new("id", "int"));
    let col = |c: Column| Schema::new().table(t().column(c));
    let idx = |i: Index| Schema::new().table(t().column(Column::new("x", "text")).index(i));
    vec![
        (
            "schema of PostgreSQL's catalog",
            Schema::new().in_schema("pg_catalog").table(t()),
        ),
        (
            "schema of the changefeed",
            Schema::new().in_schema("changefeed").table(t()),
        ),
        (
            "schema of schema-sync's ledger",
            Schema::new().in_schema("schema_sync").table(t()),
        ),
        (
            "type ending the statement",
            col(Column::new(
                "c",
                "int); DROP TABLE victim; CREATE TABLE pwned(x int",
            )),
        ),
        (
            "type adding a column",
            col(Column::new("c", "int, extra int")),
        ),
        ("type with a comment", col(Column::new("c", "int -- x"))),
        (
            "default adding a column",
            col(Column::new("c", "int").default("0), extra int, other int DEFAULT (0")),
        ),
        (
            "default with a comma",
            col(Column::new("c", "int").default("0, extra int")),
        ),
        (
            "default ending in a comment",
            col(Column::new("c", "int").default("0) --")),
        ),
        (
            "default with a block comment",
            col(Column::new("c", "int").default("0 /* x */")),
        ),
        (
            "default with a semicolon",
            col(Column::new("c", "int").default("0; DROP TABLE victim")),
        ),
        (
            "check closing its parenthesis",
            col(Column::new("c", "int").check("c > 0), CONSTRAINT x CHECK (true")),
        ),
        (
            "backfill with a second statement",
            col(Column::new("c", "int")
                .not_null()
                .null_backfill("0; DROP TABLE victim")),
        ),
        (
            "index key ending the statement",
            idx(Index::new("s_x_idx", ["x); DROP TABLE victim; --"])),
        ),
        (
            "index key with a comma",
            idx(Index::new("s_x_idx", ["x, id"])),
        ),
        (
            "index predicate with a second statement",
            idx(Index::new("s_x_idx", ["x"]).where_("true; DROP TABLE victim")),
        ),
        (
            "type with a foreign key",
            col(Column::new("c", "INT REFERENCES victim ON DELETE CASCADE")),
        ),
        ("type with UNIQUE", col(Column::new("c", "INT UNIQUE"))),
        (
            "type with PRIMARY KEY",
            col(Column::new("c", "INT PRIMARY KEY")),
        ),
        ("type with NOT NULL", col(Column::new("c", "INT NOT NULL"))),
        (
            "type with an identity",
            col(Column::new("c", "INT GENERATED ALWAYS AS IDENTITY")),
        ),
        (
            "type with a collation",
            col(Column::new("c", "TEXT COLLATE \"C\"")),
        ),
        ("type SETOF", col(Column::new("c", "SETOF INT"))),
        (
            "type with a default",
            col(Column::new("c", "INT DEFAULT 5")),
        ),
        (
            "type with a check",
            col(Column::new("c", "INT CHECK (c > 0)")),
        ),
        (
            "NUL in a table name",
            Schema::new().table(Table::new("s\0x").column(Column::new("id", "int"))),
        ),
        ("NUL in a column name", col(Column::new("c\0", "int"))),
        (
            "NUL in a default",
            col(Column::new("c", "text").default("'a\0b'")),
        ),
        (
            "NUL in a check",
            col(Column::new("c", "int").check("c > 0\0")),
        ),
        (
            "NUL in a backfill",
            col(Column::new("c", "int").not_null().null_backfill("0\0")),
        ),
        ("NUL in an index name", idx(Index::new("s_x\0idx", ["x"]))),
        ("NUL in an index key", idx(Index::new("s_x_idx", ["x\0"]))),
        (
            "NUL in an index predicate",
            idx(Index::new("s_x_idx", ["x"]).where_("x <> '\0'")),
        ),
        (
            "index method with a statement",
            idx(Index::new("s_x_idx", ["x"]).method("btree (x); DROP TABLE victim; --")),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_in_a_spec_is_refused_before_any_sql_runs() {
    let db = TestDb::new().await;
    victim(&db).await;
    for (name, spec) in hostile_specs() {
        for destructive in [false, true] {
            let options = Options::new().allow_destructive(destructive);
            let err = schema_sync::sync(&db.pool, &spec, &options)
                .await
                .expect_err(name);
            assert!(matches!(err, SyncError::Invalid(_)), "{name}: {err}");
            assert!(
                schema_sync::plan(&db.pool, &spec, &options).await.is_err(),
                "{name}"
            );
            assert_untouched(&db, &[]).await;
        }
    }
}

/// Text that could smuggle SQL: something that tries to leave the slot
/// (closing parentheses, statement ends, comments, commas), a payload and a
/// tail that tries to repair what follows, after the slot's plausible start;
/// or a random mix of such pieces, with quotes and non-ASCII.
fn hostile_text() -> impl Strategy<Value = (String, String, String)> {
    let escape = prop::sample::select(vec![")", ");", ",", "--\n", "; ", ") ,"]);
    let payload = prop::sample::select(vec![
        "DROP TABLE victim",
        "extra int",
        "CREATE TABLE pwned (x int)",
    ]);
    let tail = prop::sample::select(vec![
        "",
        "--",
        "(0",
        "; CREATE TABLE pwned(x int",
        ", d int DEFAULT (0",
    ]);
    let structured =
        (escape, payload, tail).prop_map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    let pieces = prop::sample::select(vec![
        ";",
        "--",
        "/*",
        "*/",
        "'",
        "\"",
        "$$",
        ",",
        "(",
        ")",
        "[",
        "]",
        " ",
        "\n",
        "0",
        "int",
        "DROP TABLE victim",
        "extra int",
        "é",
        "∑",
        "\\",
        "E'",
        "c",
        "DEFAULT",
        "ARRAY",
        "varchar(3)",
    ]);
    let random = prop::collection::vec(pieces, 1..8)
        .prop_map(|v| (v.concat(), String::new(), String::new()));
    prop_oneof![3 => structured, 1 => random]
}

/// Where hostile text goes in a spec.
#[derive(Debug, Clone)]
enum Slot {
    Type,
    Default,
    Check,
    IndexKey,
    IndexWhere,
    IndexMethod,
    ColumnName,
    IndexName,
    SchemaName,
}

/// A value the slot would accept, for hostile text to start from.
fn plausible(slot: &Slot) -> &'static str {
    match slot {
        Slot::Type => "int",
        Slot::Default => "0",
        Slot::Check => "c > 0",
        Slot::IndexKey => "c",
        Slot::IndexWhere => "true",
        Slot::IndexMethod => "btree",
        Slot::ColumnName => "c",
        Slot::IndexName => "s_c_idx",
        Slot::SchemaName => "app",
    }
}

fn spec_with(slot: &Slot, text: &str) -> (Schema, Vec<String>) {
    let mut column = Column::new("c", "int");
    let mut index = Index::new("s_c_idx", ["c"]);
    let mut column_name = "c".to_owned();
    match slot {
        Slot::Type => column.type_ = text.to_owned(),
        Slot::Default => column.default = Some(text.to_owned()),
        Slot::Check => column.check = Some(text.to_owned()),
        Slot::IndexKey => index.keys = vec![text.to_owned()],
        Slot::IndexWhere => index.where_ = Some(text.to_owned()),
        Slot::IndexMethod => index.method = text.to_owned(),
        Slot::ColumnName => {
            column.name = text.to_owned();
            column_name = text.to_owned();
            index.keys = vec![db::quote_ident(text)];
        }
        Slot::IndexName => index.name = text.to_owned(),
        Slot::SchemaName => {}
    }
    let schema = match slot {
        Slot::SchemaName => text,
        _ => "public",
    };
    let spec = Schema::new().in_schema(schema).table(
        Table::new("s")
            .column(Column::new("id", "int"))
            .column(column)
            .index(index),
    );
    (spec, vec!["id".to_owned(), column_name])
}

#[test]
fn fuzzed_hostile_specs_are_refused_or_do_exactly_what_they_say() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::new().await;
        victim(&db).await;
        db
    });
    let slots = prop::sample::select(vec![
        Slot::Type,
        Slot::Default,
        Slot::Check,
        Slot::IndexKey,
        Slot::IndexWhere,
        Slot::IndexMethod,
        Slot::ColumnName,
        Slot::IndexName,
        Slot::SchemaName,
    ]);
    let cases = std::env::var("SPEC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(slots, hostile_text()),
            |(slot, (escape, payload, tail))| {
                let text = if payload.is_empty() {
                    escape
                } else {
                    format!("{}{escape}{payload}{tail}", plausible(&slot))
                };
                runtime.block_on(async {
                    db.pool
                        .batch_execute(
                            "DROP TABLE IF EXISTS s; DROP SCHEMA IF EXISTS schema_sync CASCADE",
                        )
                        .await
                        .unwrap();
                    for schema in other_schemas(&db).await {
                        db.pool
                            .batch_execute(&format!(
                                "DROP SCHEMA {} CASCADE",
                                db::quote_ident(&schema)
                            ))
                            .await
                            .unwrap();
                    }
                    let (spec, columns) = spec_with(&slot, &text);
                    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
                    let result = schema_sync::sync(&db.pool, &spec, &Options::new()).await;
                    // Refused, or created as written; never anything else.
                    if matches!(slot, Slot::SchemaName) {
                        assert_only_schema(&db, &text, &columns).await;
                    } else {
                        assert_untouched(&db, &columns).await;
                    }
                    if result.is_ok() {
                        let plan = schema_sync::plan(&db.pool, &spec, &Options::new())
                            .await
                            .unwrap();
                        assert!(plan.is_empty(), "{slot:?} {text:?}: {plan}");
                    }
                });
                Ok(())
            },
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_are_resolved_by_the_server_before_any_ddl_runs() {
    let db = TestDb::new().await;
    victim(&db).await;
    let spec = Schema::new().table(
        Table::new("s")
            .column(Column::new("id", "serial"))
            .column(Column::new("c", "no_such_type")),
    );
    let err = schema_sync::sync(&db.pool, &spec, &Options::new())
        .await
        .expect_err("an unknown type");
    match &err {
        SyncError::UnknownType { table, column, .. } => {
            assert_eq!((table.as_str(), column.as_str()), ("s", "c"), "{err}");
        }
        other => panic!("expected UnknownType, got {other}"),
    }
    assert!(err.to_string().contains("no_such_type"), "{err}");
    assert!(
        schema_sync::plan(&db.pool, &spec, &Options::new())
            .await
            .is_err()
    );
    assert_untouched(&db, &[]).await;
    // Real multi-word types, serial types and qualified names pass.
    let spec = Schema::new().table(
        Table::new("s")
            .column(Column::new("id", "BIGSERIAL"))
            .column(Column::new("a", "double precision"))
            .column(Column::new("b", "character varying(3)[]"))
            .column(Column::new("c", "timestamp(3) with time zone"))
            .column(Column::new("d", "interval day to second(2)"))
            .column(Column::new("e", "pg_catalog.int4"))
            .column(Column::new("f", "bit varying(4)"))
            .column(Column::new("g", "national character varying(5)")),
    );
    schema_sync::sync(&db.pool, &spec, &Options::new())
        .await
        .unwrap();
    assert!(
        schema_sync::plan(&db.pool, &spec, &Options::new())
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn numbers_a_default_cannot_hold_exactly_are_refused() {
    for toml in ["nan", "inf", "-inf", "+nan"] {
        let text = format!(
            "[[tables]]\nname = \"s\"\n[[tables.columns]]\nname = \"c\"\ntype = \"float8\"\ndefault = {toml}\n"
        );
        let err = Schema::from_toml(&text).expect_err(toml);
        assert!(err.to_string().contains("finite"), "{toml}: {err}");
    }
    for json in ["123456789012345678901234567890", "0.12345678901234567"] {
        let text = format!(
            r#"{{"tables":[{{"name":"s","columns":[{{"name":"c","type":"numeric","default":{json}}}]}}]}}"#
        );
        let err = Schema::from_json(&text).expect_err(json);
        assert!(err.to_string().contains("exactly"), "{json}: {err}");
    }
    // What a double holds exactly, and integers of any 64-bit size, pass
    // as written.
    for (json, sql) in [
        ("18446744073709551615", "18446744073709551615"),
        ("-9223372036854775808", "-9223372036854775808"),
        ("0.5", "0.5"),
        ("1.25e-3", "0.00125"),
        (
            "\"123456789012345678901234567890\"",
            "123456789012345678901234567890",
        ),
    ] {
        let text = format!(
            r#"{{"tables":[{{"name":"s","columns":[{{"name":"c","type":"numeric","default":{json}}}]}}]}}"#
        );
        let spec = Schema::from_json(&text).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(
            spec.tables[0].columns[0].default.as_deref(),
            Some(sql),
            "{json}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_stay_distinct_after_truncation() {
    let db = TestDb::new().await;
    let (a, b) = (
        format!("{}1", "x".repeat(40)),
        format!("{}2", "x".repeat(40)),
    );
    let spec = Schema::new().table(
        Table::new("t".repeat(40))
            .column(Column::new(a.clone(), "int").check(format!("{} > 0", db::quote_ident(&a))))
            .column(Column::new(b.clone(), "int").check(format!("{} < 0", db::quote_ident(&b)))),
    );
    schema_sync::sync(&db.pool, &spec, &Options::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = schema_sync::plan(&db.pool, &spec, &Options::new())
        .await
        .unwrap();
    assert!(p.is_empty(), "{p}");
    let n: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'c' AND conrelid = to_regclass($1)",
            &db::params![db::quote_ident(&"t".repeat(40))],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}
