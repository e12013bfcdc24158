//! Values and rows as JSON, for `--json` output (and, later, `watch`).
//!
//! Numbers that JSON can carry exactly are numbers; everything whose
//! exactness or form matters is a string: `numeric` keeps its decimal text,
//! `bytea` is `\x` hex, dates and times are ISO 8601 (RFC 3339 with `Z` for
//! `timestamptz`), intervals use PostgreSQL's text form.

use chrono::{SecondsFormat, Timelike};
use db::{Array, Column, Row, Value};
use serde_json::{Map, Number, Value as Json};

use crate::text::{bytea_hex, float_special, fraction, hex, interval_text};

/// `value` as JSON.
pub(crate) fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int2(n) => Json::from(*n),
        Value::Int4(n) => Json::from(*n),
        Value::Int8(n) => Json::from(*n),
        Value::Oid(n) => Json::from(*n),
        // Through the shortest decimal text of the f32, so 0.1 stays 0.1.
        Value::Float4(f) => float_json(f.to_string().parse().unwrap_or(f64::from(*f))),
        Value::Float8(f) => float_json(*f),
        Value::Numeric(n) => Json::String(n.as_str().to_owned()),
        Value::Text(s) => Json::String(s.clone()),
        Value::Bytea(b) => Json::String(bytea_hex(b)),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Date(d) => Json::String(d.format("%Y-%m-%d").to_string()),
        Value::Time(t) => Json::String(format!(
            "{}{}",
            t.format("%H:%M:%S"),
            fraction(t.nanosecond())
        )),
        Value::Timestamp(ts) => Json::String(format!(
            "{}{}",
            ts.format("%Y-%m-%dT%H:%M:%S"),
            fraction(ts.nanosecond())
        )),
        Value::Timestamptz(ts) => Json::String(ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        Value::Interval(i) => Json::String(interval_text(i)),
        // As PostgreSQL's `to_json` spells them.
        Value::Infinity { negative, .. } => {
            Json::String(if *negative { "-infinity" } else { "infinity" }.to_owned())
        }
        Value::Json(j) => j.clone(),
        Value::Inet(i) => Json::String(i.to_string()),
        Value::Bits(b) => Json::String(b.to_string()),
        Value::Array(a) => array_json(a),
        Value::Other { type_oid, bytes } => {
            let mut object = Map::new();
            object.insert("type_oid".to_owned(), Json::from(*type_oid));
            object.insert("hex".to_owned(), Json::String(hex(bytes)));
            Json::Object(object)
        }
        other => Json::String(format!("{other:?}")),
    }
}

/// A finite float as a number; NaN and the infinities as PostgreSQL spells them.
fn float_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None => Json::String(float_special(f).unwrap_or("NaN").to_owned()),
    }
}

/// An array as nested JSON arrays, one level per dimension.
fn array_json(a: &Array) -> Json {
    let shaped = !a.dims.is_empty() && a.dims.iter().product::<usize>() == a.elements.len();
    if shaped {
        nest(&a.dims, &a.elements)
    } else {
        Json::Array(a.elements.iter().map(value_to_json).collect())
    }
}

/// `elements` (row-major) shaped by `dims`.
fn nest(dims: &[usize], elements: &[Value]) -> Json {
    match dims {
        [_, inner @ ..] if !inner.is_empty() => {
            let size = inner.iter().product::<usize>().max(1);
            Json::Array(elements.chunks(size).map(|c| nest(inner, c)).collect())
        }
        _ => Json::Array(elements.iter().map(value_to_json).collect()),
    }
}

/// The JSON keys of `columns`: their names, a repeated name suffixed
/// `_2`, `_3`, ... (`SELECT 1 AS a, 2 AS a` gives `a` and `a_2`), so that no
/// value is lost to a parser that keeps one value per key.
fn keys(columns: &[Column]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(columns.len());
    for column in columns {
        let name = column.name();
        let mut key = name.to_owned();
        let mut n = 1;
        while keys.contains(&key) {
            n += 1;
            key = format!("{name}_{n}");
        }
        keys.push(key);
    }
    keys
}

/// Writes `row` as a JSON object (each of `keys` → its column's value),
/// keeping column order (a `serde_json::Map` would sort the keys).
fn write_row(keys: &[String], row: &Row, out: &mut String) {
    out.push('{');
    for (k, (key, value)) in keys.iter().zip(row.values()).enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(&Json::String(key.clone()).to_string());
        out.push(':');
        out.push_str(&value_to_json(value).to_string());
    }
    out.push('}');
}

/// `rows` as one JSON array of objects keyed by the names of `columns`
/// (see [`keys`] for repeated names), with a trailing newline; `[]`
/// without rows.
pub(crate) fn rows_to_json(columns: &[Column], rows: &[Row]) -> String {
    let keys = keys(columns);
    let mut out = String::from("[");
    for (k, row) in rows.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        write_row(&keys, row, &mut out);
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use chrono::{NaiveDate, TimeZone, Utc};
    use db::{BitString, Inet, Interval, Numeric, Type};
    use serde_json::json;

    use super::*;

    #[test]
    fn scalars() {
        assert_eq!(value_to_json(&Value::Null), Json::Null);
        assert_eq!(value_to_json(&Value::Bool(false)), json!(false));
        assert_eq!(value_to_json(&Value::Int2(-2)), json!(-2));
        assert_eq!(value_to_json(&Value::Int8(i64::MAX)), json!(i64::MAX));
        assert_eq!(value_to_json(&Value::Oid(26)), json!(26));
        assert_eq!(value_to_json(&Value::Float4(0.1)), json!(0.1));
        assert_eq!(value_to_json(&Value::Float8(2.5)), json!(2.5));
        assert_eq!(value_to_json(&Value::Float8(f64::NAN)), json!("NaN"));
        assert_eq!(
            value_to_json(&Value::Float4(f32::INFINITY)),
            json!("Infinity")
        );
        assert_eq!(
            value_to_json(&Value::Float8(f64::NEG_INFINITY)),
            json!("-Infinity")
        );
        let n: Numeric = "123456789012345678901234567890.50"
            .parse()
            .expect("numeric");
        assert_eq!(
            value_to_json(&Value::Numeric(n)),
            json!("123456789012345678901234567890.50")
        );
        assert_eq!(value_to_json(&Value::Text("é\"".into())), json!("é\""));
        assert_eq!(
            value_to_json(&Value::Bytea(vec![1, 0xff])),
            json!("\\x01ff")
        );
        assert_eq!(
            value_to_json(&Value::Json(json!({"a": [1, null]}))),
            json!({"a": [1, null]})
        );
        let inet = Inet {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
            prefix: 8,
        };
        assert_eq!(value_to_json(&Value::Inet(inet)), json!("10.0.0.0/8"));
        let bits: BitString = "1011".parse().expect("bits");
        assert_eq!(value_to_json(&Value::Bits(bits)), json!("1011"));
        let other = Value::Other {
            type_oid: 600,
            bytes: vec![0xde, 0xad],
        };
        assert_eq!(
            value_to_json(&other),
            json!({"type_oid": 600, "hex": "dead"})
        );
    }

    #[test]
    fn dates_and_times() {
        let day = NaiveDate::from_ymd_opt(2024, 2, 29).expect("date");
        assert_eq!(value_to_json(&Value::Date(day)), json!("2024-02-29"));
        let ts = day
            .and_hms_micro_opt(23, 59, 1, 500_000)
            .expect("timestamp");
        assert_eq!(
            value_to_json(&Value::Timestamp(ts)),
            json!("2024-02-29T23:59:01.5")
        );
        assert_eq!(value_to_json(&Value::Time(ts.time())), json!("23:59:01.5"));
        let tz = Utc.from_utc_datetime(&ts);
        assert_eq!(
            value_to_json(&Value::Timestamptz(tz)),
            json!("2024-02-29T23:59:01.500Z")
        );
        assert_eq!(
            value_to_json(&Value::Interval(Interval::new(1, 2, 3_000_000))),
            json!("1 mon 2 days 00:00:03")
        );
    }

    #[test]
    fn arrays_nest_by_dimension() {
        let flat = Array::new(Type::INT4, vec![Value::Int4(1), Value::Null]);
        assert_eq!(value_to_json(&Value::Array(flat)), json!([1, null]));
        let grid = Array {
            element_type: Type::TEXT,
            dims: vec![2, 1],
            lower_bounds: Vec::new(),
            elements: vec![Value::Text("a".into()), Value::Text("b".into())],
        };
        assert_eq!(value_to_json(&Value::Array(grid)), json!([["a"], ["b"]]));
        let empty = Array::new(Type::INT4, vec![]);
        assert_eq!(value_to_json(&Value::Array(empty)), json!([]));
    }

    #[test]
    fn rows_keep_column_order() {
        let columns: Arc<[Column]> =
            vec![Column::new("z", Type::INT4), Column::new("a", Type::TEXT)].into();
        let rows = vec![
            Row::new(Arc::clone(&columns), vec![Value::Int4(1), Value::Null]),
            Row::new(
                Arc::clone(&columns),
                vec![Value::Int4(2), Value::Text("x".into())],
            ),
        ];
        assert_eq!(
            rows_to_json(&columns, &rows),
            "[{\"z\":1,\"a\":null},{\"z\":2,\"a\":\"x\"}]\n"
        );
        assert_eq!(rows_to_json(&[], &[]), "[]\n");
    }
}
