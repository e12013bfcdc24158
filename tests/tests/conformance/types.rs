//! Every column type of the hub round-trips exactly, as a parameter and as a
//! stored value, with its edge values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use db::{Array, BitString, Inet, Interval, Numeric, Pool, Type, Value, params};
use serde_json::json;
use uuid::Uuid;

use crate::TestDb;

fn ts(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
}

fn num(s: &str) -> Value {
    Value::Numeric(s.parse::<Numeric>().unwrap())
}

/// Binds `value` as `$1::sql_type`, reads it back, and compares; then
/// stores it in a column of that type and reads it back again.
async fn roundtrip(db: &TestDb, sql_type: &str, value: Value) {
    let row = db
        .pool
        .query_one(
            &format!("SELECT $1::{sql_type} AS v"),
            std::slice::from_ref(&value),
        )
        .await
        .unwrap_or_else(|e| panic!("{sql_type}: {e}"));
    let back = row.try_value(0).unwrap().clone();
    assert!(
        same(&back, &value),
        "{sql_type}: sent {value:?}, got {back:?}"
    );

    let table = format!(
        "rt_{}",
        sql_type.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    db.pool
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (v {sql_type})"
        ))
        .await
        .unwrap();
    db.pool
        .execute(&format!("DELETE FROM {table}"), &[])
        .await
        .unwrap();
    db.pool
        .execute(
            &format!("INSERT INTO {table} (v) VALUES ($1)"),
            std::slice::from_ref(&value),
        )
        .await
        .unwrap_or_else(|e| panic!("{sql_type} insert: {e}"));
    let stored = db
        .pool
        .query_one(&format!("SELECT v FROM {table}"), &[])
        .await
        .unwrap();
    let stored = stored.try_value(0).unwrap().clone();
    assert!(
        same(&stored, &value),
        "{sql_type} stored: sent {value:?}, got {stored:?}"
    );
}

/// Equality that treats NaN as equal to itself.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float8(x), Value::Float8(y)) if x.is_nan() && y.is_nan() => true,
        (Value::Float4(x), Value::Float4(y)) if x.is_nan() && y.is_nan() => true,
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_and_booleans_with_extremes() {
    let db = TestDb::new().await;
    for v in [i64::MIN, -1, 0, 1, i64::MAX] {
        roundtrip(&db, "int8", Value::Int8(v)).await;
    }
    for v in [i32::MIN, 0, i32::MAX] {
        roundtrip(&db, "int4", Value::Int4(v)).await;
    }
    for v in [i16::MIN, 0, i16::MAX] {
        roundtrip(&db, "int2", Value::Int2(v)).await;
    }
    roundtrip(&db, "boolean", Value::Bool(true)).await;
    roundtrip(&db, "boolean", Value::Bool(false)).await;
    roundtrip(&db, "int4", Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floats_with_nan_and_infinities() {
    let db = TestDb::new().await;
    for v in [
        0.0,
        -0.5,
        1.5e300,
        f64::MIN_POSITIVE,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        roundtrip(&db, "double precision", Value::Float8(v)).await;
    }
    for v in [3.25f32, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        roundtrip(&db, "real", Value::Float4(v)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_is_exact() {
    let db = TestDb::new().await;
    for v in [
        "1234567890.0123456789",
        "-0.0000000001",
        "0.0000000000",
        "9999999999.9999999999",
    ] {
        roundtrip(&db, "numeric(20,10)", num(v)).await;
    }
    for v in ["0", "-12345678901234567890.5", "NaN", "0.0000001"] {
        roundtrip(&db, "numeric", num(v)).await;
    }
    // The server rounds to the declared scale and reports it exactly.
    let row = db
        .pool
        .query_one("SELECT 2.5::numeric(20,10), 1.005::numeric(5,2)", &[])
        .await
        .unwrap();
    assert_eq!(row.try_value(0).unwrap(), &num("2.5000000000"));
    assert_eq!(row.try_value(1).unwrap(), &num("1.01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_types_with_empty_and_unicode() {
    let db = TestDb::new().await;
    for v in ["", "plain", "ünïcødé ✓ 日本語 🎉", "quote ' and \" and \\"] {
        roundtrip(&db, "text", Value::Text(v.into())).await;
    }
    roundtrip(&db, "varchar(32)", Value::Text("héllo".into())).await;
    // char(n) pads to its length, on every backend.
    let row = db
        .pool
        .query_one("SELECT $1::char(5)", &params!["ab"])
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "ab   ");
    let err = db
        .pool
        .query_one("SELECT $1::varchar(3)", &params!["abcd"])
        .await;
    assert!(err.is_ok(), "an explicit cast truncates");
    db.pool
        .batch_execute("CREATE TABLE vc (v varchar(3))")
        .await
        .unwrap();
    let err = db
        .pool
        .execute("INSERT INTO vc VALUES ($1)", &params!["abcd"])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytea_up_to_one_mebibyte() {
    let db = TestDb::new().await;
    roundtrip(&db, "bytea", Value::Bytea(vec![])).await;
    roundtrip(&db, "bytea", Value::Bytea(vec![0, 1, 2, 255])).await;
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    roundtrip(&db, "bytea", Value::Bytea(big)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_json_inet_bits() {
    let db = TestDb::new().await;
    roundtrip(&db, "uuid", Value::Uuid(Uuid::nil())).await;
    roundtrip(&db, "uuid", Value::Uuid(Uuid::new_v4())).await;
    let nested = json!({"a": [1, 2.5, null, {"b": "ü"}], "e": {}, "t": true, "s": ""});
    roundtrip(&db, "jsonb", Value::Json(nested.clone())).await;
    roundtrip(&db, "jsonb", Value::Json(json!([]))).await;
    let row = db
        .pool
        .query_one("SELECT '{\"x\": [1, {\"y\": null}]}'::json", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<serde_json::Value, _>(0),
        json!({"x": [1, {"y": null}]})
    );
    roundtrip(
        &db,
        "inet",
        Value::Inet(Inet::host(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)))),
    )
    .await;
    roundtrip(
        &db,
        "inet",
        Value::Inet(Inet {
            addr: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)),
            prefix: 16,
        }),
    )
    .await;
    roundtrip(
        &db,
        "inet",
        Value::Inet(Inet::host(IpAddr::V6(Ipv6Addr::LOCALHOST))),
    )
    .await;
    roundtrip(
        &db,
        "bit varying",
        Value::Bits("101100111".parse::<BitString>().unwrap()),
    )
    .await;
    roundtrip(&db, "bit varying", Value::Bits(BitString::default())).await;
    let row = db
        .pool
        .query_one("SELECT B'1010'::bit varying(8), '::1'::inet", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<BitString, _>(0).to_string(), "1010");
    assert_eq!(row.get::<IpAddr, _>(1), IpAddr::V6(Ipv6Addr::LOCALHOST));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_times_and_intervals_at_the_edges() {
    let db = TestDb::new().await;
    for s in [
        "2024-02-29 23:59:59.999999",
        "0001-01-01 00:00:00",
        "9999-12-31 23:59:59.999999",
        "1999-12-31 12:00:00.000001",
    ] {
        roundtrip(&db, "timestamp", Value::Timestamp(ts(s))).await;
        roundtrip(&db, "timestamptz", Value::Timestamptz(ts(s).and_utc())).await;
    }
    for d in [
        NaiveDate::from_ymd_opt(1, 1, 1).unwrap(),
        NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
        NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
    ] {
        roundtrip(&db, "date", Value::Date(d)).await;
    }
    roundtrip(
        &db,
        "time",
        Value::Time(NaiveTime::from_hms_micro_opt(13, 14, 15, 161718).unwrap()),
    )
    .await;
    roundtrip(
        &db,
        "interval",
        Value::Interval(Interval::new(14, -3, 3_600_000_001)),
    )
    .await;
    let row = db
        .pool
        .query_one("SELECT '1 year 2 mons 3 days 04:05:06.7'::interval", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<Interval, _>(0),
        Interval::new(14, 3, 14_706_700_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_without_time_zone_reads_as_utc() {
    let db = TestDb::new().await;
    let row = db
        .pool
        .query_one("SELECT '2024-05-06 07:08:09.123456'::timestamp AS t, '2024-05-06 07:08:09.123456+02'::timestamptz AS tz", &[])
        .await
        .unwrap();
    let t: DateTime<Utc> = row.get("t");
    let tz: DateTime<Utc> = row.get("tz");
    assert_eq!(t, ts("2024-05-06 07:08:09.123456").and_utc());
    assert_eq!(tz, ts("2024-05-06 05:08:09.123456").and_utc());
    // The session time zone is UTC on every backend.
    let zone: String = db
        .pool
        .query_one("SHOW TimeZone", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(zone, "UTC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_with_nulls_empty_and_multidimensional() {
    let db = TestDb::new().await;
    roundtrip(&db, "int4[]", Value::from(vec![Some(1), None, Some(3)])).await;
    roundtrip(&db, "text[]", Value::from(Vec::<String>::new())).await;
    roundtrip(
        &db,
        "text[]",
        Value::from(vec![Some("a".to_owned()), None, Some("".to_owned())]),
    )
    .await;
    roundtrip(&db, "bigint[]", Value::from(vec![i64::MIN, i64::MAX])).await;
    roundtrip(&db, "uuid[]", Value::from(vec![Uuid::nil()])).await;
    roundtrip(
        &db,
        "jsonb[]",
        Value::from(vec![json!({"a": 1}), json!(null)]),
    )
    .await;
    roundtrip(
        &db,
        "timestamptz[]",
        Value::from(vec![ts("2020-01-01 00:00:00").and_utc()]),
    )
    .await;
    roundtrip(
        &db,
        "numeric[]",
        Value::Array(Array::new(Type::NUMERIC, vec![num("1.50"), Value::Null])),
    )
    .await;
    let two_d = Value::Array(Array {
        element_type: Type::INT4,
        dims: vec![2, 2],
        lower_bounds: Vec::new(),
        elements: (1..=4).map(Value::Int4).collect(),
    });
    roundtrip(&db, "int4[]", two_d).await;
    let row = db
        .pool
        .query_one("SELECT ARRAY[1, NULL, 3]::int8[]", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<Vec<Option<i64>>, _>(0),
        vec![Some(1), None, Some(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_columns_generate_keys() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute("CREATE TABLE s (id SERIAL PRIMARY KEY, big BIGSERIAL, v text)")
        .await
        .unwrap();
    let row = db
        .pool
        .query_one("INSERT INTO s (v) VALUES ('a') RETURNING id, big", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("id"), 1);
    assert_eq!(row.get::<i64, _>("big"), 1);
    assert_eq!(row.columns()[0].type_(), Type::INT4);
    assert_eq!(row.columns()[1].type_(), Type::INT8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_errors_name_the_column() {
    let db = TestDb::new().await;
    let row = db
        .pool
        .query_one("SELECT 1::int4 AS n, NULL::text AS t", &[])
        .await
        .unwrap();
    let wrong = row.try_get::<String, _>("n").unwrap_err().to_string();
    assert!(
        wrong.contains("\"n\"") && wrong.contains("integer"),
        "{wrong}"
    );
    let null = row.try_get::<String, _>("t").unwrap_err().to_string();
    assert!(null.contains("\"t\"") && null.contains("NULL"), "{null}");
    assert_eq!(row.try_get::<Option<String>, _>("t").unwrap(), None);
    let missing = row.try_get::<i32, _>("nope").unwrap_err();
    assert!(matches!(missing, db::Error::ColumnNotFound(ref c) if c == "nope"));
    assert!(row.try_get::<i32, _>(5).is_err());
    let wide = row.try_get::<i64, _>("n").unwrap();
    assert_eq!(wide, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_lower_bounds_survive_a_round_trip() {
    let db = TestDb::new().await;
    let row = db
        .pool
        .query_one("SELECT '[0:1]={5,6}'::int4[], '{{1,2},{3,4}}'::int4[]", &[])
        .await
        .unwrap();
    let Value::Array(shifted) = row.get::<Value, _>(0) else {
        panic!("not an array: {row:?}");
    };
    assert_eq!(
        (shifted.dims.clone(), shifted.lower_bounds.clone()),
        (vec![2], vec![0])
    );
    let Value::Array(plain) = row.get::<Value, _>(1) else {
        panic!("not an array: {row:?}");
    };
    assert!(plain.lower_bounds.is_empty(), "{plain:?}");
    let back = db
        .pool
        .query_one(
            "SELECT array_lower($1::int4[], 1), $1::int4[]::text",
            &[Value::Array(shifted)],
        )
        .await
        .unwrap();
    assert_eq!(back.get::<i32, _>(0), 0);
    assert_eq!(back.get::<String, _>(1), "[0:1]={5,6}");
}
