//! `cocalc-db sql`: runs SQL from the command line, a file or standard
//! input, and prints the result.
//!
//! One statement goes through the extended protocol, as every statement of
//! the library does, and its rows are printed as a table, JSON or CSV. The
//! server, not this program, tells one statement from several: the extended
//! protocol refuses a text of several (`42601` from `exec_parse_message`,
//! before anything runs), and that text is then sent whole as one
//! simple-protocol query, as `psql -c` sends it. The server splits it, runs
//! the statements in order in one transaction (unless the script holds its
//! own `BEGIN`/`COMMIT`) and stops at the first error, which rolls back
//! what the script did. The simple protocol's results are not read back by
//! the library, so a script prints `OK` alone, not each statement's rows.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use db::{AnyPool, Error, Pool, QueryResult, SqlState, Value};

use crate::config::{self, DbArgs};
use crate::csv;
use crate::json;
use crate::output;
use crate::text::value_text;

/// Arguments of `cocalc-db sql`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SqlArgs {
    /// The SQL to run, without parameters; `-`, or none and no -f, reads
    /// it from standard input. SQL that starts with `-` (a `--` comment)
    /// goes after `--`: `cocalc-db sql -- "-- note\nSELECT 1"`. One
    /// statement prints its rows; a script of several runs in one
    /// transaction and prints OK.
    #[arg(value_name = "SQL", conflicts_with = "file")]
    pub(crate) statement: Option<String>,

    /// Read the SQL from FILE (`-`: standard input), as psql's -f.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,

    /// Print the rows as one JSON array of objects (column name → value;
    /// a repeated name gets `_2`, `_3`, ...), `[]` when there are none.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,

    /// Print the rows as CSV (RFC 4180, as psql --csv): a header line, a
    /// field quoted when it holds a comma, quote or line break, NULL as an
    /// empty field and the empty string as `""`; nothing when there are no
    /// rows.
    #[arg(long)]
    pub(crate) csv: bool,
}

/// Where the SQL comes from.
enum Source<'a> {
    /// The command line.
    Argument(&'a str),
    /// A file.
    File(&'a Path),
    /// Standard input.
    Stdin,
}

impl SqlArgs {
    /// Where the SQL comes from; clap has already refused an argument
    /// together with `-f`.
    fn source(&self) -> Source<'_> {
        match (&self.statement, &self.file) {
            (Some(sql), _) if sql != "-" => Source::Argument(sql),
            (_, Some(file)) if file.as_os_str() != "-" => Source::File(file),
            _ => Source::Stdin,
        }
    }
}

/// Reads the whole SQL text, or says which input could not be read.
fn read_sql(source: &Source<'_>) -> Result<String, String> {
    match source {
        Source::Argument(sql) => Ok((*sql).to_owned()),
        Source::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("reading the SQL file {}: {e}", path.display())),
        Source::Stdin => {
            let mut stdin = std::io::stdin().lock();
            if stdin.is_terminal() {
                output::note(
                    "sql",
                    "reading SQL from standard input (end it with Ctrl-D)",
                );
            }
            let mut sql = String::new();
            // Before anything else runs: blocking the runtime here is fine.
            stdin
                .read_to_string(&mut sql)
                .map_err(|e| format!("reading the SQL from standard input: {e}"))?;
            Ok(sql)
        }
    }
}

/// Runs the SQL and prints the result, or one failure line.
pub(crate) async fn run(db: &DbArgs, args: &SqlArgs) -> ExitCode {
    // First, so that an unreadable file neither opens nor creates a database.
    let sql = match read_sql(&args.source()) {
        Ok(sql) => sql,
        Err(e) => return output::fail("sql", &e),
    };
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
    let result = run_sql(&pool, &sql).await;
    pool.close().await;
    match result {
        Ok(Ran::Statement(result)) => output::print("sql", &render(&result, args)),
        // No rows to print: the empty forms, and `OK` for the table's count.
        Ok(Ran::Script) if !args.json && !args.csv => output::print("sql", "OK\n"),
        Ok(Ran::Script) => output::print("sql", &render(&QueryResult::default(), args)),
        Err(e) => output::fail("sql", &output::error_chain(&e)),
    }
}

/// What ran.
enum Ran {
    /// One statement, with its result.
    Statement(QueryResult),
    /// A script of several statements, whose results are not read.
    Script,
}

/// Runs `sql` as one statement or, if the server says it holds several, as
/// a script (see the module docs).
async fn run_sql(pool: &AnyPool, sql: &str) -> db::Result<Ran> {
    match pool.run(sql, &[]).await {
        Ok(result) => Ok(Ran::Statement(result)),
        Err(e) if is_several_statements(&e) => {
            tracing::debug!("several statements: sent as one simple-protocol script");
            pool.batch_execute(sql).await.map(|()| Ran::Script)
        }
        Err(e) => Err(e),
    }
}

/// Whether the server refused a text for holding more than one statement:
/// its routine name is not translated, unlike the message, which is checked
/// only when a server leaves the routine out.
fn is_several_statements(error: &Error) -> bool {
    let Error::Database(e) = error else {
        return false;
    };
    e.code == SqlState::SYNTAX_ERROR
        && match &e.routine {
            Some(routine) => routine == "exec_parse_message",
            None => e.message.starts_with("cannot insert multiple commands"),
        }
}

/// `result` in the format `args` asks for.
fn render(result: &QueryResult, args: &SqlArgs) -> String {
    let columns = &result.columns;
    if args.json {
        json::rows_to_json(columns, &result.rows)
    } else if args.csv {
        csv::rows_to_csv(columns, &result.rows)
    } else {
        render_table(result)
    }
}

/// The result as an aligned table with a `(N rows)` footer, or
/// `OK, N rows affected` for a statement that returned no rows.
///
/// A query that matched no rows prints its header and `(0 rows)`, as psql
/// does.
pub(crate) fn render_table(result: &QueryResult) -> String {
    let columns = &result.columns;
    if columns.is_empty() {
        return format!(
            "OK, {}\n",
            plural(result.rows_affected, "row affected", "rows affected")
        );
    }
    let headers: Vec<String> = columns.iter().map(|c| cell(c.name())).collect();
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
