//! `Json<T>`: serde types as `jsonb` parameters and as `json`/`jsonb`
//! columns, directly and through `#[db(json)]` fields.

use std::collections::BTreeMap;

use db::{Error, FromRow, FromValueError, Json, Pool, params};
use serde::{Deserialize, Serialize};

use crate::TestDb;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Prefs {
    theme: String,
    font_size: u8,
    #[serde(default)]
    panels: Vec<String>,
}

fn dark() -> Prefs {
    Prefs {
        theme: "dark".into(),
        font_size: 14,
        panels: vec!["files".into(), "chat".into()],
    }
}

#[derive(Debug, PartialEq, FromRow)]
struct Account {
    id: i64,
    #[db(json)]
    prefs: Prefs,
    #[db(json(nullable), rename = "legacy")]
    legacy_prefs: Option<Prefs>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_parameters_and_columns_round_trip() {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE accounts (id int8 PRIMARY KEY, prefs jsonb NOT NULL, legacy json)")
        .await;
    let p = &db.pool;
    // A jsonb parameter into a jsonb and into a json column.
    p.execute(
        "INSERT INTO accounts VALUES ($1, $2, $3)",
        &params![1_i64, Json(&dark()), Json(&dark())],
    )
    .await
    .unwrap();
    // SQL NULL is None::<Json<T>>.
    p.execute(
        "INSERT INTO accounts VALUES ($1, $2, $3)",
        &params![2_i64, Json(dark()), None::<Json<Prefs>>],
    )
    .await
    .unwrap();

    // The server stored the JSON, not a string of it.
    let theme: String = p
        .query_one_scalar("SELECT prefs->>'theme' FROM accounts WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(theme, "dark");
    let kind: String = p
        .query_one_scalar("SELECT json_typeof(legacy) FROM accounts WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(kind, "object");

    // Read back from jsonb and from json.
    for column in ["prefs", "legacy"] {
        let Json(prefs): Json<Prefs> = p
            .query_one_scalar(&format!("SELECT {column} FROM accounts WHERE id = 1"), &[])
            .await
            .unwrap();
        assert_eq!(prefs, dark(), "{column}");
    }
    let accounts: Vec<Account> = p
        .query_as("SELECT * FROM accounts ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(
        accounts,
        [
            Account {
                id: 1,
                prefs: dark(),
                legacy_prefs: Some(dark())
            },
            Account {
                id: 2,
                prefs: dark(),
                legacy_prefs: None
            },
        ]
    );

    // Json(None) is JSON null, not SQL NULL.
    let is_sql_null: bool = p
        .query_one_scalar("SELECT $1::jsonb IS NULL", &params![Json(None::<Prefs>)])
        .await
        .unwrap();
    assert!(!is_sql_null);

    // Arrays of Json are jsonb[].
    let panels: Vec<Json<Prefs>> = p
        .query_one_scalar(
            "SELECT $1::jsonb[]",
            &params![vec![
                Json(dark()),
                Json(Prefs {
                    font_size: 9,
                    ..dark()
                })
            ]],
        )
        .await
        .unwrap();
    assert_eq!(panels[1].font_size, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_failures_name_the_parameter_or_column() {
    let db = TestDb::new().await;
    let p = &db.pool;
    db.sql("CREATE TABLE accounts (id int8 PRIMARY KEY, prefs jsonb NOT NULL, legacy json)")
        .await;

    // serde_json cannot serialize a map with tuple keys: refused before
    // anything is sent, naming the parameter.
    let mut bad = BTreeMap::new();
    bad.insert((1, 2), "x");
    let err = p
        .execute(
            "INSERT INTO accounts VALUES ($1, $2, NULL)",
            &params![1_i64, Json(&bad)],
        )
        .await
        .unwrap_err();
    match &err {
        Error::Encode { position, source } => {
            assert_eq!(*position, 2);
            assert!(source.message.starts_with("cannot serialize"), "{err}");
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    let n: i64 = p
        .query_one_scalar("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(n, 0);

    // A stored value of another shape: the column and serde's reason.
    db.sql(r#"INSERT INTO accounts VALUES (1, '{"theme": 3}', '[1, 2]')"#)
        .await;
    match p
        .query_one_as::<Account>("SELECT * FROM accounts", &[])
        .await
    {
        Err(Error::ColumnDecode {
            column,
            source: FromValueError::Conversion { target, message },
        }) => {
            assert_eq!(column, "prefs");
            assert!(target.ends_with("Prefs"), "{target}");
            assert!(message.contains("invalid type"), "{message}");
        }
        other => panic!("expected a decode error on prefs, got {other:?}"),
    }
    match p
        .query_one_scalar::<Option<Json<Prefs>>>("SELECT legacy FROM accounts", &[])
        .await
    {
        Err(Error::ColumnDecode { column, .. }) => assert_eq!(column, "legacy"),
        other => panic!("expected a decode error on legacy, got {other:?}"),
    }
    // A non-JSON column is a type error, not a parse of its text.
    match p
        .query_one_scalar::<Json<Prefs>>("SELECT '{}'::text AS t", &[])
        .await
    {
        Err(Error::ColumnDecode {
            source: FromValueError::WrongType { found, .. },
            ..
        }) => assert_eq!(found, "text"),
        other => panic!("expected a type error, got {other:?}"),
    }
}
