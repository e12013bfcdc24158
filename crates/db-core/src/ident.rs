//! SQL identifier quoting.

/// Quotes an identifier for SQL: wraps it in double quotes and doubles any
/// double quote inside, so capitals, spaces, reserved words and non-ASCII
/// names survive unchanged.
///
/// ```
/// assert_eq!(db_core::quote_ident(r#"my "odd" Table"#), r#""my ""odd"" Table""#);
/// ```
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}
