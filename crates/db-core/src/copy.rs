//! `COPY` support shared by the backends: which way a statement copies, and
//! the check that [`Executor::copy_in`](crate::Executor::copy_in) and
//! [`Executor::copy_out`](crate::Executor::copy_out) run before sending
//! anything.
//!
//! The check happens on the client because a server answers a statement of
//! the wrong kind with a different protocol flow (rows, or the other copy
//! direction), which a driver in the middle of a copy cannot always undo.

use std::fmt;

use crate::error::{Error, Result};
use crate::lex::{Token, Tokens};

/// Which way a `COPY` moves data, as far as the client is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    /// `COPY ... FROM STDIN`: the client sends rows.
    In,
    /// `COPY ... TO STDOUT`: the server sends rows.
    Out,
}

impl CopyDirection {
    /// The statement shape this direction needs, for error messages.
    pub fn statement_shape(self) -> &'static str {
        match self {
            CopyDirection::In => "COPY ... FROM STDIN",
            CopyDirection::Out => "COPY ... TO STDOUT",
        }
    }

    /// The `(keyword, target)` pair that marks this direction.
    fn keywords(self) -> (&'static str, &'static str) {
        match self {
            CopyDirection::In => ("FROM", "STDIN"),
            CopyDirection::Out => ("TO", "STDOUT"),
        }
    }
}

impl fmt::Display for CopyDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CopyDirection::In => "copy_in",
            CopyDirection::Out => "copy_out",
        })
    }
}

/// Checks that `statement` is one `COPY ... FROM STDIN` (for
/// [`CopyDirection::In`]) or `COPY ... TO STDOUT` statement, and fails with
/// [`Error::NotCopy`] otherwise.
///
/// Only the shape is checked (tables, columns and options are the server's
/// business): the first word is `COPY`, the first `FROM` or `TO` outside
/// parentheses is followed by `STDIN` or `STDOUT` respectively, and nothing
/// but a `;` follows the statement. Comments, quoted identifiers and string
/// literals are skipped.
///
/// ```
/// use db_core::{CopyDirection, check_copy_statement};
/// assert!(check_copy_statement("COPY t (a, b) FROM STDIN (FORMAT csv)", CopyDirection::In).is_ok());
/// assert!(check_copy_statement("COPY (SELECT a FROM t) TO STDOUT", CopyDirection::Out).is_ok());
/// assert!(check_copy_statement("COPY t TO STDOUT", CopyDirection::In).is_err());
/// assert!(check_copy_statement("SELECT 1", CopyDirection::Out).is_err());
/// ```
pub fn check_copy_statement(statement: &str, direction: CopyDirection) -> Result<()> {
    analyze(statement, direction).map(drop)
}

/// How many `CopyData` messages of a `COPY ... TO STDOUT` carry no row of
/// their own: 1 for the header line of `HEADER` (text or CSV) and for the
/// trailer of the binary format, else 0. A driver that does not report the
/// command tag's count gets the rows copied as messages minus this.
///
/// ```
/// use db_core::backend::copy_out_extra_messages;
/// assert_eq!(copy_out_extra_messages("COPY t TO STDOUT (FORMAT csv, HEADER)")?, 1);
/// assert_eq!(copy_out_extra_messages("COPY t TO STDOUT (FORMAT binary)")?, 1);
/// assert_eq!(copy_out_extra_messages("COPY t TO STDOUT (HEADER false)")?, 0);
/// # Ok::<(), db_core::Error>(())
/// ```
pub fn copy_out_extra_messages(statement: &str) -> Result<u64> {
    let shape = analyze(statement, CopyDirection::Out)?;
    Ok(u64::from(shape.binary || shape.header))
}

/// What the check learns about a statement's output format.
#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    binary: bool,
    header: bool,
}

fn analyze(statement: &str, direction: CopyDirection) -> Result<Shape> {
    shape(statement, direction).ok_or_else(|| Error::NotCopy {
        direction,
        statement: statement.to_owned(),
    })
}

fn shape(statement: &str, direction: CopyDirection) -> Option<Shape> {
    let (keyword, target) = direction.keywords();
    let mut tokens = Tokens::new(statement).peekable();
    let mut shape = Shape::default();
    if !matches!(tokens.next(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("COPY")) {
        return None;
    }
    // The pre-9.0 syntax puts the format first: `COPY BINARY t ...`.
    if matches!(tokens.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("BINARY")) {
        shape.binary = true;
    }
    let mut depth = 0u32;
    loop {
        match tokens.next()? {
            Token::Semicolon | Token::Invalid => return None,
            Token::Open => depth += 1,
            Token::Close => depth = depth.checked_sub(1)?,
            Token::Word(w)
                if depth == 0
                    && (w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("TO")) =>
            {
                if !w.eq_ignore_ascii_case(keyword) {
                    return None;
                }
                break;
            }
            _ => {}
        }
    }
    if !matches!(tokens.next(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(target)) {
        return None;
    }
    // Options may follow; a second statement may not. Options are read at
    // the top level of the list only: a nested list names columns.
    let mut depth = 0u32;
    while let Some(token) = tokens.next() {
        match token {
            Token::Semicolon => return tokens.all(|t| t == Token::Semicolon).then_some(shape),
            Token::Invalid => return None,
            Token::Open => depth += 1,
            Token::Close => depth = depth.checked_sub(1)?,
            Token::Word(w) if depth <= 1 => {
                if w.eq_ignore_ascii_case("BINARY") {
                    shape.binary = true;
                } else if w.eq_ignore_ascii_case("FORMAT") {
                    shape.binary = matches!(
                        tokens.peek(),
                        Some(Token::Word(v) | Token::Str(v)) if v.eq_ignore_ascii_case("binary")
                    );
                } else if w.eq_ignore_ascii_case("HEADER") {
                    // A bare `HEADER` turns it on; a value may turn it off.
                    shape.header = !matches!(
                        tokens.peek(),
                        Some(Token::Word(v) | Token::Str(v))
                            if ["false", "off", "0"].iter().any(|no| v.eq_ignore_ascii_case(no))
                    );
                }
            }
            _ => {}
        }
    }
    Some(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_in(sql: &str) -> bool {
        shape(sql, CopyDirection::In).is_some()
    }

    fn is_out(sql: &str) -> bool {
        shape(sql, CopyDirection::Out).is_some()
    }

    fn extra(sql: &str) -> u64 {
        copy_out_extra_messages(sql).expect("a COPY TO STDOUT")
    }

    #[test]
    fn copy_statements_are_recognised() {
        assert!(is_in("COPY t FROM STDIN"));
        assert!(is_in(
            "  copy public.t (a, \"from\") from stdin with (format csv, null '') ;"
        ));
        assert!(is_in(
            "-- load\n/* nested /* comment */ */ COPY t FROM STDIN"
        ));
        assert!(is_in("COPY BINARY t FROM STDIN"));
        assert!(is_in("COPY t FROM STDIN (DELIMITER E'\\'', QUOTE $$\"$$)"));
        assert!(is_out("COPY t TO STDOUT"));
        assert!(is_out(
            "COPY (SELECT a FROM t WHERE b = 'to') TO STDOUT (FORMAT binary)"
        ));
        assert!(is_out("COPY (SELECT $x$ ) from $x$ FROM t) TO STDOUT"));
    }

    #[test]
    fn other_statements_are_refused() {
        assert!(!is_in("COPY t TO STDOUT"));
        assert!(!is_out("COPY t FROM STDIN"));
        assert!(!is_in("SELECT 1"));
        assert!(!is_in(""));
        assert!(!is_in("COPY t FROM '/etc/passwd'"));
        assert!(!is_in("COPY t FROM PROGRAM 'cat'"));
        assert!(!is_out("COPY t TO '/tmp/x'"));
        assert!(!is_in("COPY t FROM STDIN; SELECT 1"));
        assert!(!is_in("COPY t FROM STDIN (FORMAT 'csv"));
        assert!(!is_in("COPY t FROM STDIN /* open"));
        assert!(!is_out("COPY (SELECT 1 TO STDOUT"));
        assert!(!is_out("COPY t) TO STDOUT"));
        assert!(!is_in("\"COPY\" t FROM STDIN"));
    }

    #[test]
    fn headers_and_binary_trailers_are_noticed() {
        assert_eq!(extra("COPY t TO STDOUT"), 0);
        assert_eq!(extra("COPY t TO STDOUT (FORMAT csv)"), 0);
        assert_eq!(extra("COPY t TO STDOUT (FORMAT csv, HEADER)"), 1);
        assert_eq!(extra("COPY t TO STDOUT WITH (HEADER true, FORMAT csv)"), 1);
        assert_eq!(extra("COPY t TO STDOUT (FORMAT csv, HEADER 'off')"), 0);
        assert_eq!(extra("COPY t TO STDOUT (FORMAT csv, HEADER 0)"), 0);
        assert_eq!(extra("COPY t TO STDOUT CSV HEADER QUOTE '\"'"), 1);
        assert_eq!(
            extra("COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE (header))"),
            0
        );
        assert_eq!(extra("COPY t TO STDOUT (FORMAT 'binary')"), 1);
        assert_eq!(extra("COPY t TO STDOUT BINARY"), 1);
        assert_eq!(extra("COPY BINARY t TO STDOUT"), 1);
        assert_eq!(extra("COPY (SELECT 'header' AS binary) TO STDOUT"), 0);
    }

    #[test]
    fn the_error_names_the_expected_shape() {
        let err = check_copy_statement("SELECT 1", CopyDirection::In).expect_err("not a COPY");
        let shown = err.to_string();
        assert!(
            shown.contains("COPY ... FROM STDIN") && shown.contains("SELECT 1"),
            "{shown}"
        );
    }
}
