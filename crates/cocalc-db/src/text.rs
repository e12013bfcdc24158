//! PostgreSQL's text forms of values, as `psql` would show them.

use std::fmt::Write as _;

use chrono::Timelike;
use db::{Array, Interval, Value};

/// The text form of `value`; SQL `NULL` is `NULL`.
pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Bool(b) => if *b { "t" } else { "f" }.to_owned(),
        Value::Int2(n) => n.to_string(),
        Value::Int4(n) => n.to_string(),
        Value::Int8(n) => n.to_string(),
        Value::Oid(n) => n.to_string(),
        Value::Float4(f) => {
            float_special(f64::from(*f)).map_or_else(|| f.to_string(), str::to_owned)
        }
        Value::Float8(f) => float_special(*f).map_or_else(|| f.to_string(), str::to_owned),
        Value::Numeric(n) => n.to_string(),
        Value::Text(s) => s.clone(),
        Value::Bytea(b) => bytea_hex(b),
        Value::Uuid(u) => u.to_string(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Time(t) => format!("{}{}", t.format("%H:%M:%S"), fraction(t.nanosecond())),
        Value::Timestamp(ts) => {
            format!(
                "{}{}",
                ts.format("%Y-%m-%d %H:%M:%S"),
                fraction(ts.nanosecond())
            )
        }
        Value::Timestamptz(ts) => format!(
            "{}{}+00",
            ts.format("%Y-%m-%d %H:%M:%S"),
            fraction(ts.nanosecond())
        ),
        Value::Interval(i) => interval_text(i),
        // As PostgreSQL prints them.
        Value::Infinity { negative, .. } => {
            if *negative { "-infinity" } else { "infinity" }.to_owned()
        }
        Value::Json(j) => j.to_string(),
        Value::Inet(i) => i.to_string(),
        Value::Bits(b) => b.to_string(),
        Value::Array(a) => array_text(a),
        Value::Other { bytes, .. } => bytea_hex(bytes),
        other => format!("{other:?}"),
    }
}

/// PostgreSQL's spelling of NaN and the infinities; `None` for finite numbers.
pub(crate) fn float_special(f: f64) -> Option<&'static str> {
    if f.is_nan() {
        Some("NaN")
    } else if f == f64::INFINITY {
        Some("Infinity")
    } else if f == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// `bytea` in hex form: `\x` and two lowercase digits per byte.
pub(crate) fn bytea_hex(bytes: &[u8]) -> String {
    format!("\\x{}", hex(bytes))
}

/// Two lowercase hex digits per byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Fractional seconds at microsecond precision without trailing zeros
/// (`.5`, `.000123`), or nothing for whole seconds.
pub(crate) fn fraction(nanos: u32) -> String {
    // Leap seconds are carried as nanos >= 1e9; keep only the fraction.
    let micros = (nanos % 1_000_000_000) / 1_000;
    if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}").trim_end_matches('0').to_owned()
    }
}

/// An interval in PostgreSQL's default `postgres` style:
/// `1 year 2 mons 3 days 04:05:06.5`, `-1 days +00:00:03`.
pub(crate) fn interval_text(i: &Interval) -> String {
    // Mirrors EncodeInterval's INTSTYLE_POSTGRES branch in PostgreSQL's
    // src/backend/utils/adt/datetime.c.
    let mut out = String::new();
    let mut is_before = false;
    let mut is_zero = true;
    let mut part = |value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        let sep = if is_zero { "" } else { " " };
        let plus = if is_before && value > 0 { "+" } else { "" };
        let plural = if value == 1 { "" } else { "s" };
        let _ = write!(out, "{sep}{plus}{value} {unit}{plural}");
        is_before = value < 0;
        is_zero = false;
    };
    part(i64::from(i.months / 12), "year");
    part(i64::from(i.months % 12), "mon");
    part(i64::from(i.days), "day");

    let us = i.microseconds;
    if is_zero || us != 0 {
        let abs = us.unsigned_abs();
        let hours = abs / 3_600_000_000;
        let minutes = abs / 60_000_000 % 60;
        let seconds = abs / 1_000_000 % 60;
        let micros = u32::try_from(abs % 1_000_000).unwrap_or(0);
        let sep = if is_zero { "" } else { " " };
        let sign = if us < 0 {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        let _ = write!(
            out,
            "{sep}{sign}{hours:02}:{minutes:02}:{seconds:02}{}",
            fraction(micros * 1_000)
        );
    }
    out
}

/// An array in PostgreSQL's text form: `{1,2,NULL}`, `{{1,2},{3,4}}`,
/// `{"a b","x\"y"}`.
pub(crate) fn array_text(a: &Array) -> String {
    let mut out = String::new();
    if a.elements.is_empty() {
        out.push_str("{}");
    } else if a.dims.iter().product::<usize>() == a.elements.len() && !a.dims.is_empty() {
        nest(&a.dims, &a.elements, &mut out);
    } else {
        nest(&[a.elements.len()], &a.elements, &mut out);
    }
    out
}

/// Writes `elements` (row-major, shaped by `dims`) in braces.
fn nest(dims: &[usize], elements: &[Value], out: &mut String) {
    out.push('{');
    match dims {
        [_, inner @ ..] if !inner.is_empty() => {
            let size = inner.iter().product::<usize>().max(1);
            for (k, chunk) in elements.chunks(size).enumerate() {
                if k > 0 {
                    out.push(',');
                }
                nest(inner, chunk, out);
            }
        }
        _ => {
            for (k, e) in elements.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                element_text(e, out);
            }
        }
    }
    out.push('}');
}

/// One array element, quoted where PostgreSQL would quote it.
fn element_text(e: &Value, out: &mut String) {
    if e.is_null() {
        out.push_str("NULL");
        return;
    }
    let text = value_text(e);
    let needs_quotes = text.is_empty()
        || text.eq_ignore_ascii_case("NULL")
        || text
            .chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace());
    if !needs_quotes {
        out.push_str(&text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone, Utc};
    use db::{Numeric, Type};

    #[test]
    fn intervals_match_postgres() {
        let cases = [
            ((1, 2, 3_000_000), "1 mon 2 days 00:00:03"),
            ((14, 0, 0), "1 year 2 mons"),
            ((0, 0, 0), "00:00:00"),
            ((-12, 0, 0), "-1 years"),
            ((0, -1, 3_000_000), "-1 days +00:00:03"),
            ((0, 1, -3_000_000), "1 day -00:00:03"),
            ((0, 0, 1_500_000), "00:00:01.5"),
            ((0, 0, 90_000_000_000), "25:00:00"),
            (
                (25, 3, 14_706_000_123),
                "2 years 1 mon 3 days 04:05:06.000123",
            ),
        ];
        for ((m, d, us), want) in cases {
            assert_eq!(interval_text(&Interval::new(m, d, us)), want);
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(value_text(&Value::Null), "NULL");
        assert_eq!(value_text(&Value::Bool(true)), "t");
        assert_eq!(value_text(&Value::Float4(0.1)), "0.1");
        assert_eq!(value_text(&Value::Float8(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(value_text(&Value::Float8(f64::NAN)), "NaN");
        let n: Numeric = "12.3400".parse().expect("numeric");
        assert_eq!(value_text(&Value::Numeric(n)), "12.3400");
        assert_eq!(value_text(&Value::Bytea(vec![0, 0xab])), "\\x00ab");
        let never = Value::Infinity {
            ty: db::Type::DATE,
            negative: true,
        };
        assert_eq!(value_text(&never), "-infinity");
        let ts = NaiveDate::from_ymd_opt(2024, 1, 2)
            .and_then(|d| d.and_hms_micro_opt(3, 4, 5, 120_000))
            .expect("timestamp");
        assert_eq!(value_text(&Value::Timestamp(ts)), "2024-01-02 03:04:05.12");
        let tz = Utc.from_utc_datetime(&ts);
        assert_eq!(
            value_text(&Value::Timestamptz(tz)),
            "2024-01-02 03:04:05.12+00"
        );
    }

    #[test]
    fn arrays_are_quoted_and_nested() {
        let a = Array::new(
            Type::TEXT,
            vec![
                Value::Text("a b".into()),
                Value::Null,
                Value::Text("x\"y".into()),
                Value::Text("NULL".into()),
                Value::Text("plain".into()),
            ],
        );
        assert_eq!(array_text(&a), r#"{"a b",NULL,"x\"y","NULL",plain}"#);

        let grid = Array {
            element_type: Type::INT4,
            dims: vec![2, 2],
            lower_bounds: Vec::new(),
            elements: (1..=4).map(Value::Int4).collect(),
        };
        assert_eq!(array_text(&grid), "{{1,2},{3,4}}");
        assert_eq!(array_text(&Array::new(Type::INT4, vec![])), "{}");
    }
}
