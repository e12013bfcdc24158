//! Settings statements of an export, made fit for the target server.
//!
//! pg_dump 17 writes session settings that older servers do not have (for
//! example `SET transaction_timeout = 0`). Such a statement only tunes the
//! restoring session, so it is skipped when the target lacks the setting,
//! and reported. Settings the target has are kept, made transaction-local
//! (`SET LOCAL`, `set_config(..., true)`) so they end with the import's
//! transaction instead of lingering on a pooled connection. Nothing else is
//! changed or dropped.

use std::collections::HashSet;

use db_core::Executor;

use crate::error::{MigrateError, Result};

/// A setting statement skipped because the target lacks the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedSetting {
    /// The setting's name.
    pub name: String,
    /// The statement as it was in the export.
    pub statement: String,
    /// 1-based line in the export.
    pub line: u64,
}

/// What to do with one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rewrite {
    /// Not a settings statement: run it as it is.
    Keep,
    /// A setting the target has: run this transaction-local form.
    Local(String),
    /// A setting the target lacks (its name).
    Skip(String),
}

/// The settings a server knows.
#[derive(Debug, Clone)]
pub(crate) struct TargetSettings {
    names: HashSet<String>,
}

impl TargetSettings {
    /// Reads `pg_settings` of the target.
    pub(crate) async fn read<E: Executor>(exec: &mut E) -> Result<TargetSettings> {
        let what = "reading the target's settings";
        let rows = exec
            .query("SELECT name::text FROM pg_catalog.pg_settings", &[])
            .await
            .map_err(MigrateError::db(what))?;
        let names = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0).map(|n| n.to_ascii_lowercase()))
            .collect::<db_core::Result<_>>()
            .map_err(MigrateError::db(what))?;
        Ok(TargetSettings { names })
    }

    #[cfg(test)]
    pub(crate) fn from_names(names: &[&str]) -> TargetSettings {
        TargetSettings {
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether the target accepts setting `name`. Custom settings (with a
    /// dot) are accepted by every server.
    fn knows(&self, name: &str) -> bool {
        name.contains('.') || self.names.contains(&name.to_ascii_lowercase())
    }

    /// What to do with `sql` (a statement without leading comments or `;`).
    pub(crate) fn rewrite(&self, sql: &str) -> Rewrite {
        let Some(setting) = parse_setting(sql) else {
            return Rewrite::Keep;
        };
        if !self.knows(&setting.name) {
            return Rewrite::Skip(setting.name);
        }
        Rewrite::Local(setting.local)
    }
}

struct Setting {
    name: String,
    local: String,
}

/// `SET [SESSION] name {=|TO} value` or pg_dump's
/// `SELECT pg_catalog.set_config('name', 'value', false)`.
fn parse_setting(sql: &str) -> Option<Setting> {
    let mut words = Tokens::new(sql);
    let first = words.word()?;
    if first.eq_ignore_ascii_case("set") {
        let mut name = words.word()?;
        if name.eq_ignore_ascii_case("session") {
            name = words.word()?;
        }
        if name.eq_ignore_ascii_case("local") {
            return None;
        }
        let rest = words.rest().trim_start();
        let value = if let Some(v) = rest.strip_prefix('=') {
            v
        } else if rest.len() > 2
            && rest.is_char_boundary(2)
            && rest[..2].eq_ignore_ascii_case("to")
            && rest[2..].starts_with(char::is_whitespace)
        {
            &rest[2..]
        } else {
            // SET TIME ZONE, SET ROLE, SET TRANSACTION, ...: not `name = value`.
            return None;
        };
        let name = unquote(name);
        let local = format!(
            "SET LOCAL {} = {}",
            db_core::quote_ident(&name),
            value.trim()
        );
        return Some(Setting { name, local });
    }
    let call = sql.strip_prefix("SELECT pg_catalog.set_config(")?;
    let (name, rest) = string_literal(call)?;
    let rest = rest.trim_start().strip_prefix(',')?.trim_start();
    let (_, after_value) = string_literal(rest)?;
    let value = &rest[..rest.len() - after_value.len()];
    let tail = after_value.trim_start().strip_prefix(',')?.trim();
    if !tail.eq_ignore_ascii_case("false)") {
        return None;
    }
    let local = format!(
        "SELECT pg_catalog.set_config('{}', {value}, true)",
        name.replace('\'', "''")
    );
    Some(Setting { name, local })
}

/// An identifier, possibly double-quoted, possibly dotted, as its name.
fn unquote(word: &str) -> String {
    if let Some(inner) = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        inner.replace("\"\"", "\"")
    } else {
        word.to_ascii_lowercase()
    }
}

/// A `'...'` literal at the start of `s`: its value and what follows.
fn string_literal(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('\'')?;
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                chars.next();
                value.push('\'');
            } else {
                return Some((value, &body[i + 1..]));
            }
        } else {
            value.push(c);
        }
    }
    None
}

/// Splits off whitespace-separated words (a quoted identifier is one word).
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Tokens { rest: s }
    }

    fn word(&mut self) -> Option<&'a str> {
        let s = self.rest.trim_start();
        let end = if s.starts_with('"') {
            let mut end = None;
            let mut i = 1;
            let b = s.as_bytes();
            while i < b.len() {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    end = Some(i + 1);
                    break;
                }
                i += 1;
            }
            end?
        } else {
            s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(s.len())
        };
        if end == 0 {
            return None;
        }
        self.rest = &s[end..];
        Some(&s[..end])
    }

    fn rest(&self) -> &'a str {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg13() -> TargetSettings {
        TargetSettings::from_names(&[
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
            "client_encoding",
            "standard_conforming_strings",
            "search_path",
            "check_function_bodies",
            "xmloption",
            "client_min_messages",
            "row_security",
            "default_tablespace",
            "default_table_access_method",
        ])
    }

    #[test]
    fn pg17_preamble_on_pg13() {
        let t = pg13();
        assert_eq!(
            t.rewrite("SET transaction_timeout = 0"),
            Rewrite::Skip("transaction_timeout".into())
        );
        assert_eq!(
            t.rewrite("SET statement_timeout = 0"),
            Rewrite::Local("SET LOCAL \"statement_timeout\" = 0".into())
        );
        assert_eq!(
            t.rewrite("SET client_encoding = 'UTF8'"),
            Rewrite::Local("SET LOCAL \"client_encoding\" = 'UTF8'".into())
        );
        assert_eq!(
            t.rewrite("SELECT pg_catalog.set_config('search_path', '', false)"),
            Rewrite::Local("SELECT pg_catalog.set_config('search_path', '', true)".into())
        );
        assert_eq!(
            t.rewrite("SELECT pg_catalog.set_config('transaction_timeout', '0', false)"),
            Rewrite::Skip("transaction_timeout".into())
        );
        assert_eq!(
            t.rewrite("SET default_table_access_method TO heap"),
            Rewrite::Local("SET LOCAL \"default_table_access_method\" = heap".into())
        );
    }

    #[test]
    fn everything_else_is_kept() {
        let t = pg13();
        for sql in [
            "SELECT pg_catalog.setval('public.t_id_seq', 5, true)",
            "SET LOCAL transaction_timeout = 0",
            "SET TIME ZONE 'UTC'",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET ROLE someone",
            "SET ROLE tom",
            "SET SESSION AUTHORIZATION tom",
            "CREATE TABLE settings (transaction_timeout int)",
            "SELECT pg_catalog.set_config('search_path', '', true)",
        ] {
            assert_eq!(t.rewrite(sql), Rewrite::Keep, "{sql}");
        }
        // A custom (dotted) setting exists on every server.
        assert_eq!(
            t.rewrite("SET myapp.mode = 'x'"),
            Rewrite::Local("SET LOCAL \"myapp.mode\" = 'x'".into())
        );
    }
}
