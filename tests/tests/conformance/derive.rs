//! `#[derive(FromRow)]`: rows of real queries map to the hub's structs, with
//! sqlx's attributes, and every failure names the column.

use db::{Error, FromRow, FromValueError, Pool, Row};

use crate::TestDb;

async fn one_row(db: &TestDb, sql: &str) -> Row {
    match db.pool.query_one(sql, &[]).await {
        Ok(row) => row,
        Err(e) => panic!("{sql}: {e}"),
    }
}

#[derive(Debug, PartialEq, FromRow)]
#[db(rename_all = "camelCase")]
struct Project {
    project_id: i64,
    display_title: String,
    #[db(rename = "owner")]
    owner_email: Option<String>,
    r#type: String,
    #[db(default)]
    archived_at: Option<String>,
    #[db(default)]
    collaborators: Vec<String>,
    #[db(try_from = "i64")]
    disk_quota_mb: u32,
    #[db(flatten)]
    settings: Settings,
}

#[derive(Debug, PartialEq, FromRow)]
struct Settings {
    #[db(rename = "settings_public")]
    public: bool,
    #[db(rename = "settings_tags")]
    tags: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_map_columns_to_fields() {
    let db = TestDb::new().await;
    db.sql(
        r#"CREATE TABLE projects (
            "projectId" int8 PRIMARY KEY, "displayTitle" text NOT NULL, owner text,
            "type" text NOT NULL, "diskQuotaMb" int8 NOT NULL,
            settings_public bool NOT NULL, settings_tags text[] NOT NULL,
            "collaborators" text[])"#,
    )
    .await;
    db.sql(
        r#"INSERT INTO projects VALUES
            (1, 'Thesis', 'ada@example.com', 'course', 2048, true, '{math,latex}', '{bob}'),
            (2, 'Scratch', NULL, 'personal', 100, false, '{}', NULL)"#,
    )
    .await;

    // "collaborators" is in the result but "archivedAt" is not: the one is
    // read, the other takes its default.
    let row = one_row(&db, "SELECT * FROM projects WHERE \"projectId\" = 1").await;
    let project: Project = row.decode().unwrap();
    assert_eq!(
        project,
        Project {
            project_id: 1,
            display_title: "Thesis".into(),
            owner_email: Some("ada@example.com".into()),
            r#type: "course".into(),
            archived_at: None,
            collaborators: vec!["bob".into()],
            disk_quota_mb: 2048,
            settings: Settings {
                public: true,
                tags: vec!["math".into(), "latex".into()],
            },
        }
    );

    // A column left out of the query takes the default too.
    let row = one_row(
        &db,
        r#"SELECT "projectId", "displayTitle", owner, "type", "diskQuotaMb",
                  settings_public, settings_tags
           FROM projects WHERE "projectId" = 2"#,
    )
    .await;
    let project = Project::from_row(&row).unwrap();
    assert_eq!(project.owner_email, None);
    assert_eq!(project.collaborators, Vec::<String>::new());
    assert_eq!(project.settings.tags, Vec::<String>::new());

    // `default` is for a missing column: a NULL in a present one is still
    // an error naming it.
    let row = one_row(&db, "SELECT * FROM projects WHERE \"projectId\" = 2").await;
    match row.decode::<Project>() {
        Err(Error::ColumnDecode { column, source }) => {
            assert_eq!(column, "collaborators");
            assert_eq!(source, FromValueError::UnexpectedNull);
        }
        other => panic!("expected a decode error on collaborators, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_the_column() {
    let db = TestDb::new().await;
    // A column the struct needs is missing.
    let row = one_row(&db, "SELECT 1::int8 AS \"projectId\"").await;
    match row.decode::<Project>() {
        Err(Error::ColumnNotFound(column)) => assert_eq!(column, "displayTitle"),
        other => panic!("expected a missing column, got {other:?}"),
    }

    // A value `try_from` refuses: the column and the conversion's reason.
    #[derive(Debug, FromRow)]
    struct Quota {
        #[db(try_from = "i64")]
        mb: u32,
    }
    let row = one_row(&db, "SELECT 5::int8 AS mb").await;
    assert_eq!(row.decode::<Quota>().unwrap().mb, 5);
    let row = one_row(&db, "SELECT -5::int8 AS mb").await;
    let err = row.decode::<Quota>().unwrap_err();
    match &err {
        Error::ColumnDecode {
            column,
            source: FromValueError::Conversion { target, message },
        } => {
            assert_eq!(column, "mb");
            assert_eq!(*target, "u32");
            assert!(message.contains("out of range"), "{message}");
        }
        other => panic!("expected a conversion error on mb, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("column \"mb\": cannot convert the value to u32")
    );

    // A column of another type than the field's.
    let row = one_row(&db, "SELECT 'many'::text AS mb").await;
    match row.decode::<Quota>() {
        Err(Error::ColumnDecode {
            column,
            source: FromValueError::WrongType { found, .. },
        }) => assert_eq!((column.as_str(), found), ("mb", "text")),
        other => panic!("expected a type error on mb, got {other:?}"),
    }
}

#[derive(Debug, PartialEq, FromRow)]
struct Page<T, M> {
    total: i64,
    #[db(rename = "value")]
    first: Option<T>,
    #[db(flatten)]
    meta: M,
}

#[derive(Debug, PartialEq, FromRow)]
#[db(rename_all = "SCREAMING_SNAKE_CASE")]
struct Meta {
    next_cursor: String,
}

#[derive(Debug, PartialEq, FromRow)]
struct Pair(i64, #[db(try_from = "i32")] u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_and_tuple_structs() {
    let db = TestDb::new().await;
    let row = one_row(
        &db,
        "SELECT 3::int8 AS total, 'x'::text AS value, 'c1' AS \"NEXT_CURSOR\"",
    )
    .await;
    let page: Page<String, Meta> = row.decode().unwrap();
    assert_eq!(
        page,
        Page {
            total: 3,
            first: Some("x".into()),
            meta: Meta {
                next_cursor: "c1".into()
            }
        }
    );
    let row = one_row(
        &db,
        "SELECT 0::int8 AS total, NULL::uuid AS value, 'c2' AS \"NEXT_CURSOR\"",
    )
    .await;
    let page: Page<uuid::Uuid, Meta> = row.decode().unwrap();
    assert_eq!(page.first, None);

    // A tuple struct reads by position, whatever the names.
    let row = one_row(&db, "SELECT 7::int8 AS a, 65535::int4 AS b").await;
    assert_eq!(row.decode::<Pair>().unwrap(), Pair(7, 65535));
    let row = one_row(&db, "SELECT 7::int8 AS a, 65536::int4 AS b").await;
    match row.decode::<Pair>() {
        Err(Error::ColumnDecode { column, .. }) => assert_eq!(column, "b"),
        other => panic!("expected a conversion error on b, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuples_of_up_to_sixteen_read_every_column() {
    let db = TestDb::new().await;
    let row = one_row(
        &db,
        "SELECT 1::int2, 2::int4, 3::int8, 4::oid, 5::real, 6::float8, 'seven'::text,
                true, '\\x09'::bytea, '10'::numeric, NULL::text, '2024-01-12'::date,
                '13:00'::time, '{14}'::int4[], '{\"n\": 15}'::jsonb, 16::int8",
    )
    .await;
    type Sixteen = (
        i16,
        i32,
        i64,
        u32,
        f32,
        f64,
        String,
        bool,
        Vec<u8>,
        db::Numeric,
        Option<String>,
        chrono::NaiveDate,
        chrono::NaiveTime,
        Vec<i32>,
        serde_json::Value,
        i64,
    );
    let t: Sixteen = row.decode().unwrap();
    assert_eq!((t.0, t.1, t.2, t.3), (1, 2, 3, 4));
    assert_eq!((t.4, t.5, t.6.as_str(), t.7), (5.0, 6.0, "seven", true));
    assert_eq!((t.8, t.9.as_str(), t.10), (vec![9], "10", None));
    assert_eq!(t.11.to_string(), "2024-01-12");
    assert_eq!(t.12.to_string(), "13:00:00");
    assert_eq!((t.13, t.14["n"].as_i64(), t.15), (vec![14], Some(15), 16));

    let row = one_row(&db, "SELECT 1::int8, 'a'::text, 2::int8").await;
    let (a, b, c): (i64, String, i64) = row.decode().unwrap();
    assert_eq!((a, b.as_str(), c), (1, "a", 2));
    // Fewer or more elements than columns is an error, not a silent cut.
    match row.decode::<(i64, String)>() {
        Err(Error::ColumnCount { expected, found }) => assert_eq!((expected, found), (2, 3)),
        other => panic!("expected a column count error, got {other:?}"),
    }
    let err = row.decode::<(i64, String, i64, i64)>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "the result has 3 columns where 4 were expected (one per tuple element)"
    );
    // A wrong element names its column, as for structs.
    match row.decode::<(i64, i64, i64)>() {
        Err(Error::ColumnDecode { column, .. }) => assert_eq!(column, "text"),
        other => panic!("expected a decode error, got {other:?}"),
    }
}
