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
use db_core::lex::{Token, Tokens};

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
/// `SELECT pg_catalog.set_config('name', 'value', false)`, read with the
/// workspace's one lexer.
fn parse_setting(sql: &str) -> Option<Setting> {
    let mut tokens = Tokens::new(sql);
    let first = word(tokens.next())?;
    if first.eq_ignore_ascii_case("set") {
        let mut token = tokens.next();
        if word(token).is_some_and(|w| w.eq_ignore_ascii_case("session")) {
            token = tokens.next();
        }
        if word(token).is_some_and(|w| w.eq_ignore_ascii_case("local")) {
            return None;
        }
        // A name, possibly quoted, possibly dotted (`myapp.mode`).
        let mut name = String::new();
        loop {
            match token? {
                Token::Word(w) => name.push_str(&w.to_ascii_lowercase()),
                Token::Other if tokens.token_text().starts_with('"') => {
                    name.push_str(&unquote(tokens.token_text())?);
                }
                _ => return None,
            }
            token = tokens.next();
            if !matches!(token, Some(Token::Other)) || tokens.token_text() != "." {
                break;
            }
            name.push('.');
            token = tokens.next();
        }
        // SET TIME ZONE, SET ROLE, SET TRANSACTION, ...: not `name = value`.
        let assigns = match token? {
            Token::Other => tokens.token_text() == "=",
            Token::Word(w) => w.eq_ignore_ascii_case("to"),
            _ => false,
        };
        if !assigns {
            return None;
        }
        let value = sql.get(tokens.offset()..)?.trim();
        let local = format!("SET LOCAL {} = {value}", db_core::quote_ident(&name));
        return Some(Setting { name, local });
    }
    if !first.eq_ignore_ascii_case("select") {
        return None;
    }
    let schema = word(tokens.next())?;
    let dot = tokens.next() == Some(Token::Other) && tokens.token_text() == ".";
    let function = word(tokens.next())?;
    if !schema.eq_ignore_ascii_case("pg_catalog")
        || !dot
        || !function.eq_ignore_ascii_case("set_config")
        || tokens.next() != Some(Token::Open)
    {
        return None;
    }
    let Some(Token::Str(raw_name)) = tokens.next() else {
        return None;
    };
    if tokens.next() != Some(Token::Other) || tokens.token_text() != "," {
        return None;
    }
    let Some(Token::Str(_)) = tokens.next() else {
        return None;
    };
    let value = tokens.token_text();
    if tokens.next() != Some(Token::Other) || tokens.token_text() != "," {
        return None;
    }
    let is_local = word(tokens.next())?;
    if !is_local.eq_ignore_ascii_case("false")
        || tokens.next() != Some(Token::Close)
        || tokens.next().is_some()
    {
        return None;
    }
    let local = format!("SELECT pg_catalog.set_config('{raw_name}', {value}, true)");
    Some(Setting {
        name: raw_name.replace("''", "'"),
        local,
    })
}

fn word(token: Option<Token<'_>>) -> Option<&str> {
    match token {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    }
}

/// The name a double-quoted identifier stands for.
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\"\"", "\""))
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
        // Quoted names keep their case; keywords and comments are the
        // lexer's business.
        assert_eq!(
            t.rewrite("set /* ü */ \"Search_Path\" TO ''"),
            Rewrite::Local("SET LOCAL \"Search_Path\" = ''".into())
        );
        assert_eq!(
            t.rewrite("select pg_catalog.set_config('it''s.x', 'ü', FALSE)"),
            Rewrite::Local("SELECT pg_catalog.set_config('it''s.x', 'ü', true)".into())
        );
        // A custom (dotted) setting exists on every server.
        assert_eq!(
            t.rewrite("SET myapp.mode = 'x'"),
            Rewrite::Local("SET LOCAL \"myapp.mode\" = 'x'".into())
        );
    }
}
