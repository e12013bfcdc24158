//! Row filters: a small AST evaluated on the JSON image of a row.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::Error;

/// A condition on a row, evaluated on its JSON image (`row_to_json(row)`).
///
/// Comparisons follow SQL where the JSON image allows it: anything compared
/// with `NULL` (or a missing column) is false; numbers compare numerically,
/// strings by code point (which orders ISO timestamps and dates correctly
/// when both sides are written the same way), booleans `false < true`; values
/// of different JSON types never match.
///
/// A subscription ([`Feed::subscribe`](crate::Feed::subscribe)) checks its
/// filter against the table first, so that it means what the same `WHERE`
/// clause means in SQL: every column must exist
/// ([`Error::NoSuchColumn`](crate::Error::NoSuchColumn)); each value is
/// read by the server as a value of the column's type (`id = '5'` on an
/// integer column is `id = 5`; `id = 'a'`, a number against a text column
/// or a boolean against a non-boolean one are
/// [`Error::FilterType`](crate::Error::FilterType)) and replaced by its JSON
/// form, which is what the row images hold. Snapshots evaluate the filter in
/// SQL, live changes on the images; they agree, and agree with SQL, except:
///
/// - text (`varchar`, `text`, `name`) compares by code point, as with
///   `COLLATE "C"`, whatever the column's collation (also for `=` under a
///   nondeterministic collation);
/// - dates and times compare as their ISO text: right for years 1 to 9999;
///   `timestamptz` values are written in the writer's `TimeZone` and the
///   filter's in the subscriber's, so compare them only with one time zone
///   (e.g. UTC) throughout;
/// - comparisons whose answer on the image would differ from SQL's are
///   refused ([`Error::FilterType`](crate::Error::FilterType)): on
///   `numeric`, floats and `money` (precision, NaN, Infinity), `char(n)`
///   (padding), and types other than integers, text, booleans, `uuid`,
///   dates and timestamps (enums allow `=` and `IN`); `IS NULL` on `json`,
///   `jsonb` and composites.
///
/// Parse one from text with [`str::parse`]:
///
/// ```
/// use changefeed::Filter;
/// let f: Filter = "owner = 'ada' AND size >= 10 AND deleted IS NULL".parse()?;
/// let row = serde_json::json!({"owner": "ada", "size": 12, "deleted": null});
/// assert!(f.matches(row.as_object().unwrap()));
/// # Ok::<(), changefeed::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Filter {
    /// `column = value`.
    Eq(String, Json),
    /// `column IN (values)`.
    In(String, Vec<Json>),
    /// `column < value`.
    Lt(String, Json),
    /// `column <= value`.
    Le(String, Json),
    /// `column > value`.
    Gt(String, Json),
    /// `column >= value`.
    Ge(String, Json),
    /// `column IS NULL` (also true when the column is missing).
    IsNull(String),
    /// `column IS NOT NULL`.
    IsNotNull(String),
    /// All of the conditions (true when empty).
    And(Vec<Filter>),
}

fn compare(a: &Json, b: &Json) -> Option<Ordering> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Json::String(x), Json::String(y)) => Some(x.cmp(y)),
        (Json::Bool(x), Json::Bool(y)) => Some(x.cmp(y)),
        (Json::Null, _) | (_, Json::Null) => None,
        (x, y) if std::mem::discriminant(x) == std::mem::discriminant(y) => {
            (x == y).then_some(Ordering::Equal)
        }
        _ => None,
    }
}

impl Filter {
    /// Whether `row` satisfies the filter.
    pub fn matches(&self, row: &Map<String, Json>) -> bool {
        let get = |c: &str| row.get(c).unwrap_or(&Json::Null);
        let cmp = |c: &str, v: &Json, ok: fn(Ordering) -> bool| compare(get(c), v).is_some_and(ok);
        match self {
            Filter::Eq(c, v) => cmp(c, v, Ordering::is_eq),
            Filter::In(c, vs) => vs
                .iter()
                .any(|v| compare(get(c), v) == Some(Ordering::Equal)),
            Filter::Lt(c, v) => cmp(c, v, Ordering::is_lt),
            Filter::Le(c, v) => cmp(c, v, Ordering::is_le),
            Filter::Gt(c, v) => cmp(c, v, Ordering::is_gt),
            Filter::Ge(c, v) => cmp(c, v, Ordering::is_ge),
            Filter::IsNull(c) => get(c).is_null(),
            Filter::IsNotNull(c) => !get(c).is_null(),
            Filter::And(fs) => fs.iter().all(|f| f.matches(row)),
        }
    }
}

fn literal(v: &Json) -> String {
    match v {
        Json::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

fn column(c: &str) -> String {
    let plain = c
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_lowercase() || ch == '_')
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
    if plain && !KEYWORDS.contains(&c.to_ascii_uppercase().as_str()) {
        c.to_owned()
    } else {
        db_core::quote_ident(c)
    }
}

const KEYWORDS: &[&str] = &["AND", "IN", "IS", "NOT", "NULL", "TRUE", "FALSE"];

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = |f: &mut fmt::Formatter<'_>, c: &str, o: &str, v: &Json| {
            write!(f, "{} {o} {}", column(c), literal(v))
        };
        match self {
            Filter::Eq(c, v) => op(f, c, "=", v),
            Filter::Lt(c, v) => op(f, c, "<", v),
            Filter::Le(c, v) => op(f, c, "<=", v),
            Filter::Gt(c, v) => op(f, c, ">", v),
            Filter::Ge(c, v) => op(f, c, ">=", v),
            Filter::In(c, vs) => {
                let list: Vec<String> = vs.iter().map(literal).collect();
                write!(f, "{} IN ({})", column(c), list.join(", "))
            }
            Filter::IsNull(c) => write!(f, "{} IS NULL", column(c)),
            Filter::IsNotNull(c) => write!(f, "{} IS NOT NULL", column(c)),
            Filter::And(fs) if fs.is_empty() => f.write_str("TRUE"),
            Filter::And(fs) => {
                let parts: Vec<String> = fs.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join(" AND "))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Value(Json),
    Op(&'static str),
    Comma,
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Token>, Error> {
    let err = |m: String| Error::InvalidFilter(m);
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '=' => {
                out.push(Token::Op("="));
                i += 1;
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                out.push(Token::Op(match (c, eq) {
                    ('<', true) => "<=",
                    ('<', false) => "<",
                    (_, true) => ">=",
                    _ => ">",
                }));
                i += if eq { 2 } else { 1 };
            }
            '\'' | '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(format!("unterminated {c}quote{c}"))),
                        Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                            text.push(c);
                            i += 2;
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            text.push(other);
                            i += 1;
                        }
                    }
                }
                out.push(if c == '"' {
                    Token::Ident(text)
                } else {
                    Token::Value(Json::String(text))
                });
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '-')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let number: serde_json::Number = text
                    .trim_start_matches('+')
                    .parse()
                    .map_err(|_| err(format!("invalid number {text:?}")))?;
                out.push(Token::Value(Json::Number(number)));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.to_ascii_uppercase().as_str() {
                    "TRUE" => Token::Value(Json::Bool(true)),
                    "FALSE" => Token::Value(Json::Bool(false)),
                    "NULL" => Token::Value(Json::Null),
                    "AND" => Token::Op("AND"),
                    "IN" => Token::Op("IN"),
                    "IS" => Token::Op("IS"),
                    "NOT" => Token::Op("NOT"),
                    // Unquoted names fold to lower case as PostgreSQL folds
                    // them (ASCII letters only, as it does in UTF-8).
                    _ => Token::Ident(word.to_ascii_lowercase()),
                });
            }
            other => return Err(err(format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

impl FromStr for Filter {
    type Err = Error;

    /// Parses `a = 1 AND b IN ('x', 'y') AND c IS NOT NULL AND d >= 2.5`.
    /// Strings are in single quotes. Names are read as PostgreSQL reads
    /// them: unquoted, their ASCII letters fold to lower case (`Id` is
    /// `id`); double-quoted, they keep their case (`"Id"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let tokens = tokenize(s)?;
        let mut it = tokens.into_iter().peekable();
        let err = |m: &str| Error::InvalidFilter(format!("{m} in {s:?}"));
        let mut terms = Vec::new();
        loop {
            let Some(Token::Ident(col)) = it.next() else {
                return Err(err("expected a column name"));
            };
            let term = match it.next() {
                Some(Token::Op("IS")) => match (it.next(), it.peek()) {
                    (Some(Token::Value(Json::Null)), _) => Filter::IsNull(col),
                    (Some(Token::Op("NOT")), Some(Token::Value(Json::Null))) => {
                        it.next();
                        Filter::IsNotNull(col)
                    }
                    _ => return Err(err("expected IS NULL or IS NOT NULL")),
                },
                Some(Token::Op("IN")) => {
                    if it.next() != Some(Token::Open) {
                        return Err(err("expected ( after IN"));
                    }
                    let mut values = Vec::new();
                    loop {
                        match it.next() {
                            Some(Token::Value(v)) => values.push(v),
                            _ => return Err(err("expected a value in the IN list")),
                        }
                        match it.next() {
                            Some(Token::Comma) => {}
                            Some(Token::Close) => break,
                            _ => return Err(err("expected , or ) in the IN list")),
                        }
                    }
                    Filter::In(col, values)
                }
                Some(Token::Op(op @ ("=" | "<" | "<=" | ">" | ">="))) => {
                    let Some(Token::Value(v)) = it.next() else {
                        return Err(err("expected a value"));
                    };
                    match op {
                        "=" => Filter::Eq(col, v),
                        "<" => Filter::Lt(col, v),
                        "<=" => Filter::Le(col, v),
                        ">" => Filter::Gt(col, v),
                        _ => Filter::Ge(col, v),
                    }
                }
                _ => return Err(err("expected =, <, <=, >, >=, IN or IS")),
            };
            terms.push(term);
            match it.next() {
                None => break,
                Some(Token::Op("AND")) => {}
                Some(_) => return Err(err("expected AND")),
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::And(terms)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Filter;

    fn row(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn evaluates_like_sql() {
        let r = row(json!({"a": 1, "b": "x", "c": null, "d": 2.5, "e": true}));
        let t = |s: &str| {
            s.parse::<Filter>()
                .unwrap_or_else(|e| panic!("{e}"))
                .matches(&r)
        };
        assert!(t("a = 1"));
        assert!(t("a = 1.0"));
        assert!(!t("a = '1'"));
        assert!(t("b IN ('y', 'x')"));
        assert!(t("c IS NULL AND missing IS NULL AND a IS NOT NULL"));
        assert!(!t("c = NULL"));
        assert!(!t("c < 1"));
        assert!(t("d > 2 AND d < 3 AND d >= 2.5 AND d <= 2.5"));
        assert!(t("e = true"));
        assert!(!t("a > 1"));
    }

    #[test]
    fn parses_and_prints() {
        let f: Filter = "owner = 'it''s' AND \"Size\" IN (1, 2) AND x IS NOT NULL"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::Eq("owner".into(), json!("it's")),
                Filter::In("Size".into(), vec![json!(1), json!(2)]),
                Filter::IsNotNull("x".into()),
            ])
        );
        assert_eq!(
            f.to_string(),
            "owner = 'it''s' AND \"Size\" IN (1, 2) AND x IS NOT NULL"
        );
        assert_eq!(f.to_string().parse::<Filter>().ok(), Some(f));
        // Unquoted names fold to lower case (ASCII only), quoted ones not.
        let f: Filter = "Id >= 4 AND \"Id\" = 1 AND ÉtÉ = 2 AND \"select\" IS NULL"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::Ge("id".into(), json!(4)),
                Filter::Eq("Id".into(), json!(1)),
                Filter::Eq("ÉtÉ".into(), json!(2)),
                Filter::IsNull("select".into()),
            ])
        );
        assert_eq!(f.to_string().parse::<Filter>().ok(), Some(f));
        for bad in [
            "",
            "a",
            "a = ",
            "a IN 1",
            "a IS 1",
            "a = 1 OR b = 2",
            "a = 'x",
        ] {
            assert!(bad.parse::<Filter>().is_err(), "{bad:?} parsed");
        }
    }
}
