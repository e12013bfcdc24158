//! Moving off the embedded database: the fixture schema filled with rows of
//! every column type and edge value, exported from a temporary PGlite and
//! imported into the backend under test, verified by checksums; refusals,
//! rollback on failure, PostgreSQL 17 preamble settings on older servers,
//! and physical backup and restore.

use std::io::Cursor;
use std::path::PathBuf;

use db::{BackendKind, Config, DataDir, PglitePool, Pool};
use migrate::{EndMarker, ExportOptions, ImportOptions, Manifest, MigrateError, NoProgress};
use schema_sync::{Options, Schema};

use crate::TestDb;

fn fixture() -> Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/cocalc-control-plane-schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the fixture {} is missing: {e}", path.display()));
    Schema::from_json(&text).unwrap()
}

pub(crate) async fn temporary_pglite() -> PglitePool {
    PglitePool::open(&Config::new().pglite(DataDir::Memory))
        .await
        .unwrap()
}

/// Edge values of a column type (SQL expressions), one per row 1..=5; row 0
/// is NULL where the column allows it.
fn edges(ty: &str) -> [&'static str; 6] {
    let base = ty.split('(').next().unwrap_or(ty).trim();
    match base {
        "TEXT" | "VARCHAR" | "CHAR" => [
            "'zero'",
            "''",
            r#"E'q''uote \\ back\tslash\nnew\rline "dq"'"#,
            "'ünïcødé 😀 ☃'",
            "'  padded  '",
            r"'\N looks null'",
        ],
        "TIMESTAMP" => [
            "'1999-12-31 23:59:59.999999'",
            "'infinity'",
            "'-infinity'",
            "'2024-02-29 12:00:00.000001'",
            "'0044-03-15 12:00:00 BC'",
            "'294276-12-31 23:59:59'",
        ],
        "TIMESTAMP WITH TIME ZONE" => [
            "'1999-12-31 23:59:59.999999+00'",
            "'infinity'",
            "'-infinity'",
            "'2024-02-29 12:00:00.000001+05:30'",
            "'0044-03-15 12:00:00 BC'",
            "'2038-01-19 03:14:08-11'",
        ],
        "DATE" => [
            "'2000-01-01'",
            "'infinity'",
            "'-infinity'",
            "'2000-02-29'",
            "'4713-01-01 BC'",
            "'5874897-12-31'",
        ],
        "UUID" => [
            "'00000000-0000-0000-0000-000000000000'",
            "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'123e4567-e89b-12d3-a456-426614174000'",
            "'00000000-0000-0000-0000-000000000001'",
            "'7fffffff-0000-4000-8000-000000000000'",
        ],
        "JSONB" => [
            "'{}'",
            r#"'{"a": [1, 2.5, null, true, "é\n\t\\\"", {"nested": {}}]}'"#,
            r#"'"just a string"'"#,
            "'12345678901234567890.123456789'",
            "'[]'",
            "'null'",
        ],
        "INTEGER" => ["0", "2147483647", "-2147483648", "1", "-1", "42"],
        "BIGINT" => [
            "0",
            "9223372036854775807",
            "-9223372036854775808",
            "1",
            "-1",
            "4294967296",
        ],
        "DOUBLE PRECISION" => [
            "0.1",
            "'Infinity'",
            "'-Infinity'",
            "'NaN'",
            "1.7976931348623157e308",
            "5e-324",
        ],
        "BOOLEAN" => ["false", "true", "false", "true", "false", "true"],
        "NUMERIC" => [
            "0",
            "9999999999.9999999999",
            "-9999999999.9999999999",
            "0.0000000001",
            "'NaN'",
            "-0.5",
        ],
        "TEXT[]" => [
            "'{}'",
            r#"ARRAY['a,b', 'q"uote', NULL, '', E'back\\slash', 'NULL']"#,
            "'{{a,b},{c,d}}'",
            "ARRAY['ü😀', E'tab\\there']",
            "'{NULL}'",
            "'[0:1]={x,y}'",
        ],
        "INTEGER[]" => [
            "'{}'",
            "'{1,NULL,-2147483648}'",
            "'{{1,2},{3,4}}'",
            "'[0:1]={5,6}'",
            "'{2147483647}'",
            "'{NULL}'",
        ],
        "UUID[]" => [
            "'{}'",
            "ARRAY['00000000-0000-0000-0000-000000000000'::uuid, NULL]",
            "ARRAY['ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid]",
            "'{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11},{123e4567-e89b-12d3-a456-426614174000}}'",
            "'{NULL}'",
            "ARRAY['00000000-0000-0000-0000-000000000001'::uuid]",
        ],
        "JSONB[]" => [
            "'{}'",
            r#"ARRAY['{"a": 1}'::jsonb, 'null'::jsonb, NULL]"#,
            r#"ARRAY['"q\"uote"'::jsonb]"#,
            "ARRAY['[]'::jsonb, '{}'::jsonb]",
            "'{NULL}'",
            "ARRAY['1e100'::jsonb]",
        ],
        "INET" => [
            "'0.0.0.0'",
            "'255.255.255.255/32'",
            "'::1'",
            "'2001:db8::/32'",
            "'192.168.1.5/24'",
            "'::ffff:1.2.3.4'",
        ],
        "BIT VARYING" => [
            "B''",
            "B'1'",
            "B'0101010101'",
            "B'1111111111111111111111111111111111111111111111111111111111111111111111'",
            "B'0'",
            "B'10'",
        ],
        "BYTEA" => [
            r"'\x'",
            r"'\x00ff5c0a090d'",
            "decode(repeat('ab', 3000), 'hex')",
            r"'\x00'",
            r"'\x5c5c'",
            r"'\x0a'",
        ],
        "INTERVAL" => [
            "'0'",
            "'-178000000 years'",
            "'1 year 2 mons 3 days 04:05:06.789'",
            "'-1 days +02:03:00'",
            "'178000000 years'",
            "'0.000001 seconds'",
        ],
        other => panic!("the fixture has a column type the test does not cover: {other}"),
    }
}

/// Plain values, distinct per row, and later in time for later columns
/// (`allocation_end > allocation_start`).
fn plain(ty: &str, row: usize, position: usize) -> String {
    let base = ty.split('(').next().unwrap_or(ty).trim();
    let days = position * 10 + row;
    match base {
        "TIMESTAMP" | "TIMESTAMP WITH TIME ZONE" => {
            format!("'2020-01-01 00:00:00'::timestamp + interval '{days} days'")
        }
        "DATE" => format!("'2020-01-01'::date + {days}"),
        "INTEGER" | "BIGINT" | "NUMERIC" | "DOUBLE PRECISION" => format!("{}", row + 1),
        _ => edges(ty)[row].to_owned(),
    }
}

/// A value for a column with a CHECK: the first literal of an `IN` list,
/// otherwise a plain value.
fn checked(check: &str, ty: &str, row: usize, position: usize) -> String {
    match check.split_once(" IN (") {
        Some((_, list)) => list
            .split('\'')
            .nth(1)
            .map(|v| format!("'{v}'"))
            .unwrap_or_else(|| plain(ty, row, position)),
        None => plain(ty, row, position),
    }
}

fn is_serial(ty: &str) -> bool {
    matches!(ty, "SERIAL" | "BIGSERIAL")
}

/// Fills every table of `spec` with six rows of edge values (row 0 NULL
/// where allowed); values a CHECK rejects fall back to plain ones. Serial
/// columns take their defaults, so their sequences move.
async fn fill(pool: &PglitePool, spec: &Schema) {
    for table in &spec.tables {
        for row in 0..6 {
            let mut names = Vec::new();
            let mut edge_values = Vec::new();
            let mut plain_values = Vec::new();
            for (position, column) in table.columns.iter().enumerate() {
                if is_serial(&column.type_) {
                    continue;
                }
                let in_key = table.primary_key.contains(&column.name);
                let value = if row == 0 && !in_key && !column.not_null {
                    "NULL".to_owned()
                } else if let Some(check) = &column.check {
                    format!(
                        "({})::{}",
                        checked(check, &column.type_, row, position),
                        column.type_
                    )
                } else {
                    format!("({})::{}", edges(&column.type_)[row], column.type_)
                };
                names.push(db::quote_ident(&column.name));
                edge_values.push(value);
                let fallback = match &column.check {
                    Some(check) => checked(check, &column.type_, row, position),
                    None => plain(&column.type_, row, position),
                };
                plain_values.push(format!("({fallback})::{}", column.type_));
            }
            let insert = |values: &[String]| {
                if names.is_empty() {
                    format!(
                        "INSERT INTO {} DEFAULT VALUES",
                        db::quote_ident(&table.name)
                    )
                } else {
                    format!(
                        "INSERT INTO {} ({}) VALUES ({})",
                        db::quote_ident(&table.name),
                        names.join(", "),
                        values.join(", ")
                    )
                }
            };
            if pool.execute(&insert(&edge_values), &[]).await.is_err() {
                let sql = insert(&plain_values);
                if let Err(e) = pool.execute(&sql, &[]).await {
                    panic!("{}: {e}\n{sql}", table.name);
                }
            }
        }
    }
}

/// Objects outside the fixture: an odd schema and table name, types the
/// fixture lacks, an identity column, a generated column, a sequence owned
/// by a column, a view and a trigger function.
const EXTRA: &str = r#"
CREATE SCHEMA "odd ""schema""";
CREATE TABLE "odd ""schema""".";semi colon" (
    id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    "Quoted ""col""" text,
    r real,
    s smallint,
    t time,
    n numeric,
    c "char",
    doubled int GENERATED ALWAYS AS (s * 2) STORED
);
INSERT INTO "odd ""schema""".";semi colon" ("Quoted ""col""", r, s, t, n, c) VALUES
    (E'$$ dollar $tag$ ; -- not a comment /* nor this */', 'NaN', -32768, '23:59:59.999999', 'NaN', 'x'),
    (E'line\nbreak\\.', 3.4028235e38, 32767, '00:00', '-1e-100', NULL),
    (NULL, '-Infinity', 0, NULL, 123456789012345678901234567890.123456789, '"'),
    (E'\\.', 1.17549435e-38, 1, '12:00', 0, '\');
CREATE SEQUENCE "odd ""schema""".counter START 100 INCREMENT 5;
SELECT nextval('"odd ""schema""".counter'), nextval('"odd ""schema""".counter');
CREATE VIEW "odd ""schema""".v AS SELECT id, "Quoted ""col""" FROM "odd ""schema""".";semi colon";
CREATE FUNCTION "odd ""schema""".touch() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    NEW.s := coalesce(NEW.s, 0); -- a semicolon; inside a body
    RETURN NEW;
END;
$body$;
CREATE TRIGGER touch BEFORE INSERT ON "odd ""schema""".";semi colon"
    FOR EACH ROW EXECUTE FUNCTION "odd ""schema""".touch();
"#;

/// A temporary PGlite holding the fixture schema filled with edge values,
/// plus [`EXTRA`].
pub(crate) async fn filled_source() -> (PglitePool, Schema) {
    let source = temporary_pglite().await;
    let spec = fixture();
    schema_sync::sync(&source, &spec, &Options::new())
        .await
        .unwrap();
    fill(&source, &spec).await;
    source.batch_execute(EXTRA).await.unwrap();
    (source, spec)
}

pub(crate) async fn export(source: &PglitePool) -> (Vec<u8>, Manifest) {
    let mut sql = Vec::new();
    let manifest = migrate::export(source, &mut sql, &ExportOptions::new(), &mut NoProgress)
        .await
        .unwrap();
    (sql, manifest)
}

/// An export as the import takes it: read on a thread of its own, so owned.
fn owned(sql: &[u8]) -> Cursor<Vec<u8>> {
    Cursor::new(sql.to_vec())
}

pub(crate) async fn import(db: &TestDb, sql: &[u8]) -> Result<migrate::ImportReport, MigrateError> {
    migrate::import(&db.pool, owned(sql), &ImportOptions::new(), &mut NoProgress).await
}

async fn import_unverified(db: &TestDb, sql: &[u8]) -> Result<migrate::ImportReport, MigrateError> {
    let options = ImportOptions::new().unverified(true);
    migrate::import(&db.pool, owned(sql), &options, &mut NoProgress).await
}

/// An export edited by hand, with its end marker made again for its new
/// text, so that what the edit does is what the import sees.
fn reseal(text: &str) -> String {
    let at = text
        .rfind(&format!("\n{}", migrate::END_PREFIX))
        .expect("an end marker")
        + 1;
    let body = &text[..at];
    format!("{body}{}", EndMarker::of(body.as_bytes()).line())
}

/// The first `n` lines of `text`, as `head -n` cuts them.
fn head(text: &str, n: usize) -> String {
    text.split_inclusive('\n').take(n).collect()
}

async fn server_major(db: &TestDb) -> i64 {
    let row = db
        .pool
        .query_one(
            "SELECT current_setting('server_version_num')::int8 / 10000",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

pub(crate) async fn table_count(db: &TestDb) -> i64 {
    let row = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%'",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filled_fixture_round_trips_with_equal_checksums() {
    let (source, spec) = filled_source().await;
    let (sql, manifest) = export(&source).await;
    source.close().await;
    let text = String::from_utf8(sql.clone()).unwrap();
    assert!(text.contains("-- cocalc-db-manifest: "));
    assert!(text.contains("COPY public.accounts") || text.contains("COPY \"public\".\"accounts\""));
    // 174 fixture tables, schema-sync's state and ownership tables, the
    // extra table.
    assert_eq!(manifest.tables.len(), 177, "{:?}", manifest.tables.len());
    assert!(manifest.total_rows() >= 174 * 6);
    assert!(
        manifest
            .sequences
            .iter()
            .any(|s| s.name == "counter" && s.last_value == 105),
        "{:?}",
        manifest.sequences
    );

    let db = TestDb::new().await;
    let report = import(&db, &sql).await.unwrap();
    let verified = report.verification.clone().unwrap();
    assert_eq!(verified.tables, manifest.tables.len());
    assert_eq!(verified.rows, manifest.total_rows());
    assert_eq!(report.rows, manifest.total_rows());
    assert_eq!(verified.sequences, manifest.sequences.len());
    let schema = manifest.schema.as_ref().unwrap();
    assert_eq!(schema.tables.len(), manifest.tables.len());
    assert!(schema.indexes.len() >= 174, "{:?}", schema.indexes.len());
    assert_eq!(verified.schema_objects, schema.len());
    assert!(report.end_marker.is_some());

    // PostgreSQL 17's preamble: only settings the target lacks are skipped.
    let skipped: Vec<&str> = report
        .skipped_settings
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    if db.backend() == BackendKind::Pglite || server_major(&db).await >= 17 {
        assert!(skipped.is_empty(), "{skipped:?}");
    } else {
        // Once in each of pg_dump's two sections.
        assert_eq!(
            skipped,
            ["transaction_timeout", "transaction_timeout"],
            "{:?}",
            report.skipped_settings
        );
        assert!(
            report
                .skipped_settings
                .iter()
                .all(|s| s.statement == "SET transaction_timeout = 0")
        );
    }

    // Verification on its own, and the hub's spec has nothing left to do.
    assert_eq!(
        migrate::verify(&db.pool, &manifest).await.unwrap(),
        verified
    );
    migrate::verify_spec(&db.pool, &spec).await.unwrap();

    // Sequences continue after the imported values.
    let id: i32 = db
        .pool
        .query_one(
            "INSERT INTO \"odd \"\"schema\"\"\".\";semi colon\" (s) VALUES (NULL) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 5);
    let next: i64 = db
        .pool
        .query_one("SELECT nextval('\"odd \"\"schema\"\"\".counter')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 110);
    // Values survive byte for byte.
    let row = db
        .pool
        .query_one(
            "SELECT \"Quoted \"\"col\"\"\", doubled FROM \"odd \"\"schema\"\"\".\";semi colon\" WHERE s = 32767",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "line\nbreak\\.");
    assert_eq!(row.get::<i32, _>(1), 65534);
    // After the import, the pooled sessions are as before: no leftover
    // `search_path = ''` from pg_dump's preamble.
    db.sql("CREATE TABLE after_import (a int)").await;
}

/// A small export: one table with a serial key and three rows.
pub(crate) async fn small_export() -> (Vec<u8>, Manifest) {
    let source = temporary_pglite().await;
    source
        .batch_execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
             INSERT INTO items (name) VALUES ('a'), ('b'), ('c');",
        )
        .await
        .unwrap();
    let exported = export(&source).await;
    source.close().await;
    exported
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_names_defaults_and_comments_round_trip() {
    let source = temporary_pglite().await;
    source
        .batch_execute(
            "CREATE TABLE städte (id serial PRIMARY KEY, ort text NOT NULL DEFAULT 'Zürich', \"größe\" int);
             COMMENT ON TABLE städte IS 'Orte – ünïcødé';
             INSERT INTO städte (\"größe\") VALUES (1);
             INSERT INTO städte (ort) VALUES ('Köln');",
        )
        .await
        .unwrap();
    let (sql, manifest) = export(&source).await;
    source.close().await;
    let db = TestDb::new().await;
    let report = import(&db, &sql).await.unwrap();
    assert_eq!(report.rows, 2);
    migrate::verify(&db.pool, &manifest).await.unwrap();
    let row = db
        .pool
        .query_one(
            "SELECT obj_description('städte'::regclass, 'pg_class'), \
             (SELECT ort FROM städte WHERE id = 1)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "Orte – ünïcødé");
    assert_eq!(row.get::<String, _>(1), "Zürich");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_holds_tables_is_refused_unless_forced() {
    let (sql, _) = small_export().await;
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE SCHEMA other; CREATE TABLE other.existing (a int)")
        .await
        .unwrap();
    let err = import(&db, &sql).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::TargetNotEmpty { tables } if tables == &["\"other\".\"existing\""]),
        "{err}"
    );
    assert!(err.to_string().contains("\"other\".\"existing\""), "{err}");
    assert_eq!(table_count(&db).await, 1);

    let report = migrate::import(
        &db.pool,
        owned(&sql),
        &ImportOptions::new().force(true),
        &mut NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.rows, 3);
    assert_eq!(table_count(&db).await, 2);

    // Forced again, the export's objects clash and nothing changes.
    let err = migrate::import(
        &db.pool,
        owned(&sql),
        &ImportOptions::new().force(true),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MigrateError::Statement { .. }), "{err}");
    let rows: i64 = db
        .pool
        .query_one("SELECT count(*) FROM public.items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_import_leaves_the_target_unchanged() {
    let (sql, manifest) = small_export().await;
    let text = String::from_utf8(sql).unwrap();
    let db = TestDb::new().await;

    // A row the table rejects, after the schema was created.
    let bad_row = text.replacen("2\tb\n", "two\tb\n", 1);
    assert_ne!(bad_row, text);
    let err = import(&db, bad_row.as_bytes()).await.unwrap_err();
    match &err {
        MigrateError::Statement {
            source, statement, ..
        } => {
            assert!(statement.starts_with("COPY"), "{statement}");
            assert_eq!(source.code().map(|c| c.code()), Some("22P02"), "{source}");
        }
        other => panic!("expected a failed statement, got {other}"),
    }
    assert_eq!(table_count(&db).await, 0);

    // A manifest that does not match what arrived: the table is named.
    let mut tampered = manifest.clone();
    tampered.tables[0].checksum = "1".into();
    let tampered_text = reseal(&text.replacen(
        &serde_json::to_string(&manifest).unwrap(),
        &serde_json::to_string(&tampered).unwrap(),
        1,
    ));
    assert_ne!(tampered_text, text);
    let err = import(&db, tampered_text.as_bytes()).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::TableMismatch { table, .. } if table == "\"public\".\"items\""),
        "{err}"
    );
    assert!(err.to_string().contains("\"public\".\"items\""), "{err}");
    assert_eq!(table_count(&db).await, 0);

    // A truncated export.
    let cut = &text[..text.find("\\.\n").unwrap()];
    let err = import(&db, cut.as_bytes()).await.unwrap_err();
    assert!(matches!(err, MigrateError::Incomplete { .. }), "{err}");
    assert_eq!(table_count(&db).await, 0);

    // The intact export still loads.
    import(&db, text.as_bytes()).await.unwrap();
    assert_eq!(table_count(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_an_export_does_not_contain_are_refused_naming_the_line() {
    let (sql, _) = small_export().await;
    let text = String::from_utf8(sql).unwrap();
    let db = TestDb::new().await;
    let pwned = std::env::temp_dir().join(format!("pwned-{}", std::process::id()));
    // Each inserted after the table was created (and, for the last ones,
    // after its rows were loaded), so a refusal must undo work.
    let after_create = text.find("ALTER TABLE").unwrap();
    let after_data = text.find("-- Sequence values").unwrap();
    for (at, statement, reason) in [
        (
            after_create,
            format!("COPY (SELECT 1) TO PROGRAM 'id > {}';", pwned.display()),
            "COPY is allowed only",
        ),
        (
            after_data,
            "COMMIT;".to_owned(),
            "transaction control (COMMIT)",
        ),
        (
            after_data,
            "begin;".to_owned(),
            "transaction control (BEGIN)",
        ),
        (
            after_data,
            "DO $$ BEGIN PERFORM 1; END $$;".to_owned(),
            "DO statements",
        ),
        (
            after_data,
            "CREATE ROLE intruder;".to_owned(),
            "CREATE ROLE",
        ),
        (
            after_data,
            "SET role = 'postgres';".to_owned(),
            "setting role is not one of",
        ),
        (
            after_data,
            "SET session_authorization = 'postgres';".to_owned(),
            "setting session_authorization is not one of",
        ),
        (
            after_data,
            "CREATE EXTENSION IF NOT EXISTS pgcrypto;".to_owned(),
            "CREATE EXTENSION",
        ),
        (
            after_data,
            "DROP TABLE public.items;".to_owned(),
            "DROP statements",
        ),
        (
            after_data,
            "SELECT pg_catalog.pg_sleep(0);".to_owned(),
            "SELECT is allowed only",
        ),
        (
            after_data,
            "SET session_replication_role = replica;".to_owned(),
            "session_replication_role",
        ),
        (
            after_data,
            "COPY public.items FROM '/etc/passwd';".to_owned(),
            "COPY is allowed only",
        ),
    ] {
        let mut edited = text.clone();
        edited.insert_str(at, &format!("{statement}\n"));
        let line = u64::try_from(text[..at].matches('\n').count()).unwrap() + 1;
        let err = import(&db, edited.as_bytes()).await.unwrap_err();
        match &err {
            MigrateError::Refused {
                line: l, reason: r, ..
            } => {
                assert_eq!(*l, line, "{err}");
                assert!(r.contains(reason), "{statement}: {err}");
            }
            other => panic!("{statement}: expected a refusal, got {other}"),
        }
        assert!(err.to_string().contains(&format!("line {line}")), "{err}");
        assert_eq!(table_count(&db).await, 0, "{statement}");
    }
    assert!(!pwned.exists(), "the shell command ran");
    // Nothing else was left behind by the refused imports.
    let roles: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 0);
    import(&db, text.as_bytes()).await.unwrap();
    assert_eq!(table_count(&db).await, 1);
}

/// A preamble setting of the export the target lacks (`transaction_timeout`
/// before PostgreSQL 17) is skipped and reported; a setting that is not one
/// of the preamble's is refused, even one the target lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preamble_settings_the_target_lacks_are_skipped_and_others_refused() {
    let (sql, _) = small_export().await;
    let text = String::from_utf8(sql).unwrap();
    let db = TestDb::new().await;
    for (added, name) in [
        (
            "SET no_such_setting_anywhere = 1;",
            "no_such_setting_anywhere",
        ),
        (
            "SELECT pg_catalog.set_config('another_missing_setting', 'x', false);",
            "another_missing_setting",
        ),
    ] {
        let with_unknown = reseal(&text.replacen(
            "SET statement_timeout = 0;",
            &format!("SET statement_timeout = 0;\n{added}"),
            1,
        ));
        assert_ne!(with_unknown, text);
        let err = import(&db, with_unknown.as_bytes()).await.unwrap_err();
        assert!(matches!(err, MigrateError::Refused { .. }), "{err}");
        assert!(err.to_string().contains(name), "{err}");
        assert_eq!(table_count(&db).await, 0);
    }
    let report = import(&db, &text.into_bytes()).await.unwrap();
    let skipped: Vec<&str> = report
        .skipped_settings
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        skipped.iter().all(|n| *n == "transaction_timeout"),
        "{skipped:?}"
    );
    assert_eq!(
        !skipped.is_empty(),
        server_major(&db).await < 17,
        "{skipped:?}"
    );
    assert_eq!(report.rows, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_or_unsealed_export_is_refused_naming_what_is_missing() {
    let (sql, _) = small_export().await;
    let text = String::from_utf8(sql).unwrap();
    let lines = text.lines().count();
    let line_of = |needle: &str| text[..text.find(needle).unwrap()].matches('\n').count();
    let db = TestDb::new().await;

    // Cut as `head -n` cuts: after the data (before keys and indexes),
    // inside the data, just before the end marker.
    let after_data = line_of("-- Sequence values");
    let in_data = line_of("2\tb\n");
    for (n, place) in [
        (
            after_data,
            "after the data of 1 of the manifest's 1 tables".to_owned(),
        ),
        (
            in_data,
            "inside the data of \"public\".\"items\", after the data of 0".to_owned(),
        ),
        (lines - 1, "after the data of 1".to_owned()),
    ] {
        let cut = head(&text, n);
        let err = import(&db, cut.as_bytes()).await.unwrap_err();
        assert!(matches!(err, MigrateError::Incomplete { .. }), "{n}: {err}");
        let message = err.to_string();
        assert!(message.contains("end marker"), "{message}");
        assert!(message.contains(&format!("stops at line {n}")), "{message}");
        assert!(message.contains(&place), "{message}");
        assert_eq!(table_count(&db).await, 0, "{n}");
    }

    // Altered after it was sealed, or followed by more text.
    let altered = text.replacen("-- Data for", "-- data for", 1);
    let err = import(&db, altered.as_bytes()).await.unwrap_err();
    assert!(matches!(err, MigrateError::Altered { .. }), "{err}");
    let longer = format!("{text}SELECT pg_catalog.setval('x', 1, true);\n");
    let err = import(&db, longer.as_bytes()).await.unwrap_err();
    assert!(err.to_string().contains("follows the end marker"), "{err}");
    assert_eq!(table_count(&db).await, 0);

    // No manifest: nothing runs.
    let manifest_line = text
        .lines()
        .find(|l| l.starts_with("-- cocalc-db-manifest: "))
        .unwrap();
    let without = reseal(&text.replacen(&format!("{manifest_line}\n"), "", 1));
    let err = import(&db, without.as_bytes()).await.unwrap_err();
    assert!(matches!(err, MigrateError::NoManifest { .. }), "{err}");
    assert!(err.to_string().contains("--unverified"), "{err}");
    assert_eq!(table_count(&db).await, 0);

    // --unverified: a manifest still present is still checked, schema
    // included: cut after the sequence values, the export lacks its keys.
    let after_sequences = line_of("SELECT pg_catalog.setval") + 1;
    let err = import_unverified(&db, head(&text, after_sequences).as_bytes())
        .await
        .unwrap_err();
    match &err {
        MigrateError::SchemaMismatch { kind, missing, .. } => {
            assert_eq!(kind, "constraints", "{err}");
            assert!(
                missing.contains(&"\"public\".\"items\".\"items_pkey\"".to_owned()),
                "{err}"
            );
        }
        other => panic!("expected a schema mismatch, got {other}"),
    }
    assert_eq!(table_count(&db).await, 0);
    // Hand-made SQL loads with --unverified only.
    let hand_made = "CREATE TABLE hand (a int);\nCOPY hand (a) FROM stdin;\n1\n\\.\n";
    let err = import(&db, hand_made.as_bytes()).await.unwrap_err();
    assert!(matches!(err, MigrateError::NoManifest { line: 1 }), "{err}");
    let report = import_unverified(&db, hand_made.as_bytes()).await.unwrap();
    assert_eq!(report.rows, 1);
    assert!(report.verification.is_none() && report.end_marker.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_objects_are_in_the_manifest_and_verified_before_commit() {
    let source = temporary_pglite().await;
    source
        .batch_execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL UNIQUE CHECK (name <> ''));
             CREATE INDEX items_lower ON items (lower(name));
             CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
             CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();
             INSERT INTO items (name) VALUES ('a'), ('b');",
        )
        .await
        .unwrap();
    let (sql, manifest) = export(&source).await;
    source.close().await;
    let text = String::from_utf8(sql).unwrap();
    let schema = manifest.schema.clone().unwrap();
    let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(schema.tables, names(&["\"public\".\"items\""]));
    assert_eq!(
        schema.columns,
        names(&[
            "\"public\".\"items\".\"id\"",
            "\"public\".\"items\".\"name\""
        ])
    );
    assert_eq!(
        schema.constraints,
        names(&[
            "\"public\".\"items\".\"items_name_check\"",
            "\"public\".\"items\".\"items_name_key\"",
            "\"public\".\"items\".\"items_pkey\"",
        ])
    );
    assert_eq!(
        schema.indexes,
        names(&[
            "\"public\".\"items_lower\"",
            "\"public\".\"items_name_key\"",
            "\"public\".\"items_pkey\"",
        ])
    );
    assert_eq!(schema.sequences, names(&["\"public\".\"items_id_seq\""]));
    assert_eq!(
        schema.triggers,
        names(&["\"public\".\"items\".\"items_touch\""])
    );
    assert_eq!(schema.functions, names(&["\"public\".\"touch\"()"]));

    let db = TestDb::new().await;
    // An index the manifest lists that the file no longer creates.
    let statement = "CREATE INDEX items_lower ON public.items USING btree (lower(name));\n";
    assert!(text.contains(statement), "{text}");
    let without_index = reseal(&text.replacen(statement, "", 1));
    let err = import(&db, without_index.as_bytes()).await.unwrap_err();
    match &err {
        MigrateError::SchemaMismatch {
            kind,
            expected,
            found,
            missing,
            ..
        } => {
            assert_eq!(
                (kind.as_str(), *expected, *found),
                ("indexes", 3, 2),
                "{err}"
            );
            assert_eq!(missing, &["\"public\".\"items_lower\""], "{err}");
        }
        other => panic!("expected a schema mismatch, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("missing: \"public\".\"items_lower\""),
        "{err}"
    );
    assert_eq!(table_count(&db).await, 0);
    // One the manifest does not list.
    let extra = reseal(&text.replacen(
        statement,
        &format!("{statement}CREATE INDEX sneaky ON public.items USING btree (id);\n"),
        1,
    ));
    let err = import(&db, extra.as_bytes()).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::SchemaMismatch { unexpected, .. } if unexpected == &["\"public\".\"sneaky\""]),
        "{err}"
    );
    assert_eq!(table_count(&db).await, 0);

    // Forced into a target that holds other objects, only the import's own
    // objects are compared.
    db.sql("CREATE TABLE kept (a int PRIMARY KEY)").await;
    let report = migrate::import(
        &db.pool,
        owned(text.as_bytes()),
        &ImportOptions::new().force(true),
        &mut NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.verification.unwrap().schema_objects, schema.len());
    assert_eq!(table_count(&db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_into_a_new_directory_keep_every_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let original_dir = dir.path().join("original");
    let restored_dir = dir.path().join("restored");
    let original = PglitePool::open(&Config::new().pglite(DataDir::Path(original_dir)))
        .await
        .unwrap();
    original.batch_execute(EXTRA).await.unwrap();
    original
        .batch_execute(
            "CREATE TABLE items (id serial PRIMARY KEY, data jsonb, b bytea);
             INSERT INTO items (data, b) SELECT jsonb_build_object('i', i), decode(md5(i::text), 'hex')
             FROM generate_series(1, 500) i;",
        )
        .await
        .unwrap();
    let archive = migrate::backup(&original).await.unwrap();
    assert_eq!(migrate::archive_major_version(&archive).unwrap(), "17");
    // The original keeps working after the backup.
    original
        .execute("INSERT INTO items (data) VALUES ('{}')", &[])
        .await
        .unwrap();
    let (_, before) = export(&original).await;
    original.close().await;

    migrate::restore(&archive, &restored_dir, false)
        .await
        .unwrap();
    let restored = PglitePool::open(&Config::new().pglite(DataDir::Path(restored_dir.clone())))
        .await
        .unwrap();
    let (_, after) = export(&restored).await;
    let items = |m: &Manifest| {
        m.tables
            .iter()
            .find(|t| t.name == "items")
            .map(|t| t.rows)
            .unwrap()
    };
    // The row inserted after the backup is not in it; everything else is.
    assert_eq!((items(&before), items(&after)), (501, 500));
    let others = |m: &Manifest| {
        m.tables
            .iter()
            .filter(|t| t.name != "items")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(others(&before), others(&after));
    assert_eq!(before.sequences.len(), after.sequences.len());

    // Open in this process: the directory is locked and not empty.
    let err = migrate::restore(&archive, &restored_dir, true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    restored.close().await;
    let err = migrate::restore(&archive, &restored_dir, false)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::DirectoryNotEmpty(_)), "{err}");
    // Forced, the directory is replaced and opens.
    migrate::restore(&archive, &restored_dir, true)
        .await
        .unwrap();
    let reopened = PglitePool::open(&Config::new().pglite(DataDir::Path(restored_dir)))
        .await
        .unwrap();
    let (_, again) = export(&reopened).await;
    assert_eq!(again.tables, after.tables);
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_an_archive_of_another_major_version() {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "PG_VERSION", &b"16\n"[..])
        .unwrap();
    let archive = tar.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = migrate::restore(&archive, dir.path(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MigrateError::VersionMismatch { archive, bundled: 17 } if archive == "16"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let err = migrate::restore(b"not an archive", dir.path(), false)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Archive(_)), "{err}");
}

/// A column named like the checksum's row alias (`t`) must not stand in for
/// the row: an edited row of such a table fails verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_a_column_named_t_is_checksummed_as_a_whole_row() {
    let source = temporary_pglite().await;
    source
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, t int, body text); \
             INSERT INTO notes VALUES (1, 7, 'pay alice 100'), (2, NULL, 'secret')",
        )
        .await
        .unwrap();
    let (sql, _) = export(&source).await;
    source.close().await;
    let text = String::from_utf8(sql).unwrap();
    let edited = reseal(&text.replacen("pay alice 100", "pay mallory 999999", 1));
    let db = TestDb::new().await;
    let err = import(&db, edited.as_bytes()).await.unwrap_err();
    assert!(err.to_string().contains("notes"), "{err}");
    assert_eq!(table_count(&db).await, 0);
    import(&db, text.as_bytes()).await.unwrap();
}
