//! `cocalc-db sql`: runs one statement and prints its rows.

use std::process::ExitCode;

use clap::Args;
use db::{AnyPool, Pool, QueryResult, Value};

use crate::config::{self, DbArgs};
use crate::json;
use crate::output;
use crate::text::value_text;

/// Arguments of `cocalc-db sql`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SqlArgs {
    /// The statement to run: one statement, without parameters.
    pub(crate) statement: String,

    /// Print the rows as one JSON array of objects (column name → value).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the statement and prints the result, or one failure line.
pub(crate) async fn run(db: &DbArgs, args: &SqlArgs) -> ExitCode {
    let config = match config::from_process(db) {
        Ok(c) => c,
        Err(e) => return output::fail("sql", &format!("configuration: {e}")),
    };
    // A statement may write; the text is not scanned to find out.
    output::target("sql", &config);
    let pool = match AnyPool::connect(&config).await {
        Ok(p) => p,
        Err(e) => return output::fail("sql", &format!("open: {}", output::error_chain(&e))),
    };
    let result = pool.run(&args.statement, &[]).await;
    pool.close().await;
    match result {
        Ok(result) if args.json => output::print("sql", &json::rows_to_json(&result.rows)),
        Ok(result) => output::print("sql", &render_table(&result)),
        Err(e) => output::fail("sql", &output::error_chain(&e)),
    }
}

/// The result as an aligned table with a `(N rows)` footer, or
/// `OK, N rows affected` for a statement that returned no rows.
///
/// A query that matched no rows also reads `OK, 0 rows affected`: results
/// carry their column names only on rows, so an empty result has none.
pub(crate) fn render_table(result: &QueryResult) -> String {
    let Some(first) = result.rows.first() else {
        return format!(
            "OK, {}\n",
            plural(result.rows_affected, "row affected", "rows affected")
        );
    };
    let headers: Vec<String> = first.columns().iter().map(|c| cell(c.name())).collect();
    let cells: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|r| r.values().iter().map(|v| cell(&value_text(v))).collect())
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|j| {
            cells
                .iter()
                .filter_map(|r| r.get(j))
                .chain(std::iter::once(&headers[j]))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let right: Vec<bool> = (0..headers.len())
        .map(|j| numeric_column(result.rows.iter().filter_map(|r| r.values().get(j))))
        .collect();

    let mut out = String::new();
    line(&headers, &widths, &right, &mut out);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    out.push_str(&rule.join("+"));
    out.push('\n');
    for row in &cells {
        line(row, &widths, &right, &mut out);
    }
    out.push_str(&format!(
        "({})\n",
        plural(result.rows.len() as u64, "row", "rows")
    ));
    out
}

/// One table line: ` a | b `, padded, trailing blanks trimmed.
fn line(cells: &[String], widths: &[usize], right: &[bool], out: &mut String) {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .zip(right)
        .map(|((c, &w), &r)| {
            if r {
                format!(" {c:>w$} ")
            } else {
                format!(" {c:<w$} ")
            }
        })
        .collect();
    out.push_str(padded.join("|").trim_end());
    out.push('\n');
}

/// Whether a column holds numbers (and NULLs) only, to right-align it.
fn numeric_column<'a>(mut values: impl Iterator<Item = &'a Value>) -> bool {
    let mut any = false;
    let all = values.all(|v| match v {
        Value::Null => true,
        Value::Int2(_)
        | Value::Int4(_)
        | Value::Int8(_)
        | Value::Oid(_)
        | Value::Float4(_)
        | Value::Float8(_)
        | Value::Numeric(_) => {
            any = true;
            true
        }
        _ => false,
    });
    all && any
}

/// A value's text made safe for one table cell: line breaks and tabs escaped.
fn cell(text: &str) -> String {
    if !text.contains(['\n', '\r', '\t']) {
        return text.to_owned();
    }
    text.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

/// `1 row`, `2 rows`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use db::{Column, Row, Type};

    use super::*;

    fn result(rows: Vec<Vec<Value>>) -> QueryResult {
        let columns: Arc<[Column]> = vec![
            Column::new("id", Type::INT4),
            Column::new("name", Type::TEXT),
        ]
        .into();
        let rows_affected = rows.len() as u64;
        QueryResult {
            rows: rows
                .into_iter()
                .map(|v| Row::new(Arc::clone(&columns), v))
                .collect(),
            columns,
            rows_affected,
        }
    }

    #[test]
    fn aligned_table_with_nulls_and_footer() {
        let r = result(vec![
            vec![Value::Int4(1), Value::Text("ada".into())],
            vec![Value::Int4(1000), Value::Null],
            vec![Value::Null, Value::Text("two\nlines".into())],
        ]);
        assert_eq!(
            render_table(&r),
            "   id | name\n\
             ------+------------\n    \
                 1 | ada\n \
              1000 | NULL\n \
              NULL | two\\nlines\n\
             (3 rows)\n"
        );
    }

    #[test]
    fn one_row_is_singular() {
        let r = result(vec![vec![Value::Int4(7), Value::Text("x".into())]]);
        assert!(render_table(&r).ends_with("\n(1 row)\n"));
    }

    #[test]
    fn statements_without_rows_report_the_count() {
        let r = QueryResult {
            rows: vec![],
            rows_affected: 3,
            ..QueryResult::default()
        };
        assert_eq!(render_table(&r), "OK, 3 rows affected\n");
        let r = QueryResult {
            rows: vec![],
            rows_affected: 1,
            ..QueryResult::default()
        };
        assert_eq!(render_table(&r), "OK, 1 row affected\n");
    }
}
