//! Rows as CSV, for `sql --csv`: RFC 4180 as `psql --csv` writes it.
//!
//! A header line of column names, then one line per row, each ending in
//! `\n` (as psql and `COPY ... CSV` end them; RFC 4180's CRLF is also read
//! by every CSV reader of note). A field is quoted when it holds the
//! delimiter, a quote or a line break, or is exactly `\.` (which `COPY`
//! would take for the end of its data); a quote inside is doubled. Values
//! are PostgreSQL's text forms, as psql prints them. NULL is an empty field
//! and the empty string `""`, as `COPY ... CSV` writes them, so that the
//! two stay apart (psql's default prints both as an empty field).

use db::{Column, Row, Value};

use crate::text::value_text;

/// `rows` under a header of `columns`; nothing at all when there are no
/// columns (a statement that returned no rows).
pub(crate) fn rows_to_csv(columns: &[Column], rows: &[Row]) -> String {
    let mut out = String::new();
    if columns.is_empty() {
        return out;
    }
    for (k, column) in columns.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        field(column.name(), &mut out);
    }
    out.push('\n');
    for row in rows {
        for (k, value) in row.values().iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            if !matches!(value, Value::Null) {
                field(&value_text(value), &mut out);
            }
        }
        out.push('\n');
    }
    out
}

/// Writes one non-NULL field, quoted where it must be (see the module docs).
fn field(text: &str, out: &mut String) {
    let quote = text.is_empty() || text == "\\." || text.contains([',', '"', '\n', '\r']);
    if !quote {
        out.push_str(text);
        return;
    }
    out.push('"');
    out.push_str(&text.replace('"', "\"\""));
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use db::Type;

    use super::*;

    #[test]
    fn quotes_only_what_needs_it_and_keeps_null_apart_from_empty() {
        let columns: Arc<[Column]> = vec![
            Column::new("id", Type::INT4),
            Column::new("a,b", Type::TEXT),
        ]
        .into();
        let rows: Vec<Row> = [
            vec![Value::Int4(1), Value::Text("plain".into())],
            vec![
                Value::Int4(2),
                Value::Text("say \"hi\", then\r\nbye".into()),
            ],
            vec![Value::Null, Value::Text(String::new())],
            vec![Value::Int4(4), Value::Text("\\.".into())],
        ]
        .into_iter()
        .map(|values| Row::new(Arc::clone(&columns), values))
        .collect();
        assert_eq!(
            rows_to_csv(&columns, &rows),
            "id,\"a,b\"\n1,plain\n2,\"say \"\"hi\"\", then\r\nbye\"\n,\"\"\n4,\"\\.\"\n"
        );
        assert_eq!(rows_to_csv(&columns, &[]), "id,\"a,b\"\n");
        assert_eq!(rows_to_csv(&[], &[]), "");
    }
}
