//! Types beyond the built-in value model: user enums (read as text),
//! `infinity` dates and timestamps (`Infinite<T>`), `interval` as
//! `chrono::TimeDelta`, and the optional `rust_decimal` and `time` features.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use db::{Client, Executor, FromValue, Infinite, Interval, Pool, Type, Value, params};
use rust_decimal::Decimal;

use crate::TestDb;

/// Sends `value` as `$1::sql_type`, reads it back as `T`; then stores it in
/// a column of that type and reads it back as `T` again.
async fn roundtrip_as<T>(db: &TestDb, sql_type: &str, value: T)
where
    T: FromValue + Into<Value> + Clone + PartialEq + std::fmt::Debug,
{
    let sent: Value = value.clone().into();
    let row = db
        .pool
        .query_one(
            &format!("SELECT $1::{sql_type} AS v"),
            std::slice::from_ref(&sent),
        )
        .await
        .unwrap_or_else(|e| panic!("{sql_type} {value:?}: {e}"));
    assert_eq!(row.get::<T, _>(0), value, "{sql_type} as a parameter");

    let table = format!(
        "rtx_{}",
        sql_type.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    db.pool
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (v {sql_type}); DELETE FROM {table}"
        ))
        .await
        .unwrap();
    db.pool
        .execute(&format!("INSERT INTO {table} (v) VALUES ($1)"), &[sent])
        .await
        .unwrap_or_else(|e| panic!("{sql_type} {value:?} insert: {e}"));
    let row = db
        .pool
        .query_one(&format!("SELECT v FROM {table}"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<T, _>(0), value, "{sql_type} stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enums_and_enum_arrays_read_as_strings() {
    let db = TestDb::new().await;
    db.pool
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE DOMAIN short_text AS text CHECK (length(VALUE) < 10);
             CREATE TABLE feelings (id int, m mood, ms mood[], d short_text);
             INSERT INTO feelings VALUES
               (1, 'happy', '{sad,NULL,happy}', 'hi'),
               (2, NULL, '{}', NULL)",
        )
        .await
        .unwrap();
    let rows = db
        .pool
        .query("SELECT m, ms, d FROM feelings ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<String, _>("m"), "happy");
    assert_eq!(
        rows[0].get::<Vec<Option<String>>, _>("ms"),
        [Some("sad".to_owned()), None, Some("happy".to_owned())]
    );
    assert_eq!(rows[0].get::<String, _>("d"), "hi");
    assert_eq!(rows[1].get::<Option<String>, _>("m"), None);
    assert_eq!(rows[1].get::<Vec<String>, _>("ms"), Vec::<String>::new());
    // The column still says it is the enum, not text.
    let mood = rows[0].columns()[0].type_();
    assert_ne!(mood, Type::TEXT);
    assert!(mood.oid() >= 16_384, "{mood}");

    // A second statement, and an enum made inside a transaction, read the
    // same way (the driver's knowledge of the type is not stale).
    let label: String = db
        .pool
        .query_one("SELECT 'ok'::mood", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(label, "ok");
    let mut client = db.pool.acquire().await.unwrap();
    let mut tx = client.begin().await.unwrap();
    tx.batch_execute("CREATE TYPE size AS ENUM ('s', 'm', 'l')")
        .await
        .unwrap();
    let sizes: Vec<String> = tx
        .query_one("SELECT ARRAY['l', 's']::size[]", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sizes, ["l", "s"]);
    tx.commit().await.unwrap();
    drop(client);

    // Strings bind to enum parameters through an explicit cast.
    db.pool
        .execute(
            "INSERT INTO feelings (id, m, ms) VALUES (3, $1::mood, $2::mood[])",
            &params!["sad", vec!["ok".to_owned(), "happy".to_owned()]],
        )
        .await
        .unwrap();
    let row = db
        .pool
        .query_one(
            "SELECT m, ms FROM feelings WHERE m = $1::mood",
            &params!["sad"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "sad");
    assert_eq!(row.get::<Vec<String>, _>(1), ["ok", "happy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_dates_and_timestamps_round_trip() {
    let db = TestDb::new().await;
    let day = NaiveDate::from_ymd_opt(1969, 7, 20).unwrap();
    let moment = day.and_hms_micro_opt(20, 17, 40, 123_456).unwrap();
    for v in [
        Infinite::NegInfinity,
        Infinite::Value(day),
        Infinite::PosInfinity,
    ] {
        roundtrip_as(&db, "date", v).await;
    }
    for v in [
        Infinite::NegInfinity,
        Infinite::Value(moment),
        Infinite::PosInfinity,
    ] {
        roundtrip_as(&db, "timestamp", v).await;
    }
    for v in [
        Infinite::NegInfinity,
        Infinite::Value(moment.and_utc()),
        Infinite::PosInfinity,
    ] {
        roundtrip_as(&db, "timestamptz", v).await;
    }

    let row = db
        .pool
        .query_one(
            "SELECT 'infinity'::date AS d, '-infinity'::timestamp AS t,
                    'infinity'::timestamptz AS tz,
                    $1::date < 'infinity'::date AS earlier",
            &params![Infinite::Value(day)],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<Infinite<NaiveDate>, _>("d"),
        Infinite::PosInfinity
    );
    assert_eq!(
        row.get::<Infinite<NaiveDateTime>, _>("t"),
        Infinite::NegInfinity
    );
    assert_eq!(
        row.get::<Infinite<DateTime<Utc>>, _>("tz"),
        Infinite::PosInfinity
    );
    assert!(row.get::<bool, _>("earlier"));
    // The plain chrono types refuse an infinity, naming it and the wrapper.
    for (column, message) in [
        (
            "d",
            row.try_get::<NaiveDate, _>("d").unwrap_err().to_string(),
        ),
        (
            "t",
            row.try_get::<NaiveDateTime, _>("t")
                .unwrap_err()
                .to_string(),
        ),
        (
            "tz",
            row.try_get::<DateTime<Utc>, _>("tz")
                .unwrap_err()
                .to_string(),
        ),
    ] {
        assert!(
            message.contains("infinity") && message.contains("Infinite<"),
            "{column}: {message}"
        );
    }
    // Arrays of them, too.
    let row = db
        .pool
        .query_one("SELECT ARRAY['-infinity', '2000-01-01']::date[]", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<Vec<Infinite<NaiveDate>>, _>(0),
        [
            Infinite::NegInfinity,
            Infinite::Value(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_convert_to_and_from_time_delta() {
    let db = TestDb::new().await;
    for d in [
        TimeDelta::zero(),
        TimeDelta::hours(25) + TimeDelta::microseconds(1),
        -TimeDelta::days(400) - TimeDelta::seconds(3),
        TimeDelta::days(365 * 1000),
    ] {
        roundtrip_as(&db, "interval", d).await;
    }
    let row = db
        .pool
        .query_one(
            "SELECT '1 day 02:00:00.5'::interval AS day, '-1 day +1 hour'::interval AS mixed,
                    '1 mon'::interval AS month, $1::interval = '26 hours'::interval AS same",
            &params![TimeDelta::hours(26)],
        )
        .await
        .unwrap();
    // A day counts as 24 hours.
    assert_eq!(
        row.get::<TimeDelta, _>("day"),
        TimeDelta::hours(26) + TimeDelta::milliseconds(500)
    );
    assert_eq!(row.get::<TimeDelta, _>("mixed"), TimeDelta::hours(-23));
    assert_eq!(row.get::<Interval, _>("month"), Interval::new(1, 0, 0));
    let month = row
        .try_get::<TimeDelta, _>("month")
        .unwrap_err()
        .to_string();
    assert!(month.contains("month"), "{month}");
    assert!(row.get::<bool, _>("same"));
    // An interval holds microseconds: a nanosecond is refused before sending.
    let err = db
        .pool
        .query_one("SELECT $1::interval", &params![TimeDelta::nanoseconds(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, db::Error::Encode { position: 1, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_as_rust_decimal() {
    let db = TestDb::new().await;
    for s in [
        "0",
        "-12345.6789",
        "1.10",
        "79228162514264337593543950335",
        "-79228162514264337593543950335",
        "0.0000000000000000000000000001",
        "7.9228162514264337593543950335",
    ] {
        roundtrip_as(&db, "numeric", Decimal::from_str_exact(s).unwrap()).await;
    }
    // Scale is kept as PostgreSQL gives it. Numeric infinities exist from
    // PostgreSQL 14 on (PGlite is 17).
    let version: i32 = db
        .pool
        .query_one_scalar("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .unwrap();
    let infinity = if version >= 140_000 {
        "'-Infinity'::numeric"
    } else {
        "'NaN'::numeric"
    };
    let row = db
        .pool
        .query_one(
            &format!(
                "SELECT 1.50::numeric(10,2) AS scaled, 'NaN'::numeric AS nan,
                        '79228162514264337593543950336'::numeric AS big,
                        '0.00000000000000000000000000001'::numeric AS tiny,
                        {infinity} AS inf"
            ),
            &[],
        )
        .await
        .unwrap();
    let scaled: Decimal = row.get("scaled");
    assert_eq!(scaled.to_string(), "1.50");
    for column in ["nan", "big", "tiny", "inf"] {
        let err = row.try_get::<Decimal, _>(column).unwrap_err().to_string();
        assert!(err.contains("Decimal"), "{column}: {err}");
    }
    assert_eq!(
        row.get::<Option<Decimal>, _>("scaled"),
        Decimal::from_str("1.50").ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_crate_types_round_trip() {
    use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

    let db = TestDb::new().await;
    for d in [
        Date::from_calendar_date(1969, Month::July, 20).unwrap(),
        Date::from_calendar_date(1, Month::January, 1).unwrap(),
        Date::from_calendar_date(9999, Month::December, 31).unwrap(),
    ] {
        roundtrip_as(&db, "date", d).await;
        roundtrip_as(&db, "date", Infinite::Value(d)).await;
    }
    roundtrip_as(&db, "date", Infinite::<Date>::PosInfinity).await;
    for t in [
        Time::MIDNIGHT,
        Time::from_hms_micro(23, 59, 59, 999_999).unwrap(),
    ] {
        roundtrip_as(&db, "time", t).await;
    }
    let pdt = PrimitiveDateTime::new(
        Date::from_calendar_date(1900, Month::February, 28).unwrap(),
        Time::from_hms_micro(1, 2, 3, 4).unwrap(),
    );
    roundtrip_as(&db, "timestamp", pdt).await;
    roundtrip_as(&db, "timestamp", Infinite::<PrimitiveDateTime>::NegInfinity).await;
    let odt = OffsetDateTime::from_unix_timestamp(-2_000_000_000)
        .unwrap()
        .replace_microsecond(654_321)
        .unwrap();
    roundtrip_as(&db, "timestamptz", odt).await;
    roundtrip_as(&db, "timestamptz", Infinite::<OffsetDateTime>::PosInfinity).await;
    // An offset is kept as the instant, read back in UTC.
    let plus_two = odt.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
    let back: OffsetDateTime = db
        .pool
        .query_one("SELECT $1::timestamptz", &params![plus_two])
        .await
        .unwrap()
        .get(0);
    assert_eq!(back, odt);
    assert_eq!(back.offset(), time::UtcOffset::UTC);
    // Beyond `time`'s years, and infinity, are errors that say so.
    let row = db
        .pool
        .query_one(
            "SELECT '20000-01-01'::date AS far, 'infinity'::date AS inf",
            &[],
        )
        .await
        .unwrap();
    let far = row.try_get::<Date, _>("far").unwrap_err().to_string();
    assert!(far.contains("range"), "{far}");
    let inf = row.try_get::<Date, _>("inf").unwrap_err().to_string();
    assert!(inf.contains("Infinite<"), "{inf}");
}
