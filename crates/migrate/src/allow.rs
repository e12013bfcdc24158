//! What an export may contain: the statement kinds pg_dump (and this
//! crate's export) write for a schema like the hub's, and nothing else.
//!
//! An export is a file, and a file can be edited: without this check an
//! import would run whatever it holds on the server, as the importing user
//! (`COPY ... TO PROGRAM` runs a shell command as the server's user,
//! `COMMIT` ends the one transaction that makes a failed import harmless).
//! So each statement is classified by its keywords, via the workspace's one
//! lexer, against a conservative allowlist before it is sent:
//!
//! - `CREATE` of a table, sequence, index, function (SQL or PL/pgSQL only),
//!   trigger, type, domain, view or bare schema; `ALTER` of a table,
//!   sequence, index, function, type, domain, trigger or view, but no
//!   change of owner and no disabling of triggers or row security;
//! - `COMMENT ON ...`;
//! - `SET` of the session settings pg_dump writes (with
//!   `standard_conforming_strings` only `on` and `client_encoding` only
//!   UTF-8, since the lexer reads the script that way);
//! - `SELECT pg_catalog.setval('name', n, bool)` and
//!   `SELECT pg_catalog.set_config('setting', 'value', bool)` with literal
//!   arguments;
//! - `COPY table (columns) FROM stdin` and nothing else of `COPY`.
//!
//! Everything else is refused, transaction control, `DO`, roles,
//! extensions, `DROP`, `GRANT` and any other `SELECT` among it.
//!
//! What the allowlist cannot do is make the *expressions* of allowed
//! statements harmless: a function of the export runs as the importing user
//! when a default, a check, an index expression or a trigger calls it.

use db_core::lex::{Token, Tokens};

/// Settings pg_dump's preamble sets; no other `SET` is allowed.
const SETTINGS: [&str; 14] = [
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_timeout",
    "client_encoding",
    "standard_conforming_strings",
    "check_function_bodies",
    "xmloption",
    "client_min_messages",
    "row_security",
    "default_tablespace",
    "default_table_access_method",
    "default_with_oids",
    "search_path",
];

/// Statement keywords that control transactions, refused with their own
/// reason.
const TRANSACTION_CONTROL: [&str; 9] = [
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "abort",
    "savepoint",
    "release",
    "prepare",
];

/// One token with its source text.
type Tok<'a> = (Token<'a>, &'a str);

fn tokens(sql: &str) -> Vec<Tok<'_>> {
    let mut tokens = Tokens::new(sql);
    let mut out = Vec::new();
    while let Some(token) = tokens.next() {
        out.push((token, tokens.token_text()));
    }
    out
}

fn is_word(token: Option<&Tok<'_>>, keyword: &str) -> bool {
    matches!(token, Some((Token::Word(w), _)) if w.eq_ignore_ascii_case(keyword))
}

/// The word of a token, if it is one.
fn word<'a>(token: Option<&Tok<'a>>) -> Option<&'a str> {
    match token {
        Some((Token::Word(w), _)) => Some(w),
        _ => None,
    }
}

/// An identifier: a word or a double-quoted name.
fn is_ident(token: Option<&Tok<'_>>) -> bool {
    match token {
        Some((Token::Word(_), _)) => true,
        Some((Token::Other, text)) => text.starts_with('"'),
        _ => false,
    }
}

/// The words of `tokens` outside parentheses, in order.
fn top_level_words<'a>(tokens: &[Tok<'a>]) -> Vec<&'a str> {
    let mut depth = 0usize;
    let mut words = Vec::new();
    for (token, _) in tokens {
        match token {
            Token::Open => depth += 1,
            Token::Close => depth = depth.saturating_sub(1),
            Token::Word(w) if depth == 0 => words.push(*w),
            _ => {}
        }
    }
    words
}

/// Checks one statement of an export (not a `COPY ... FROM stdin`, see
/// [`check_copy`]); the error says why it is refused.
pub(crate) fn check(sql: &str) -> Result<(), String> {
    let tokens = tokens(sql);
    if tokens.iter().any(|(t, _)| *t == Token::Invalid) {
        return Err("it holds an unterminated quote or comment".into());
    }
    let Some(first) = word(tokens.first()) else {
        return Err("it does not start with a keyword".into());
    };
    let kw = first.to_ascii_lowercase();
    let rest = tokens.get(1..).unwrap_or_default();
    match kw.as_str() {
        "create" => create(rest),
        "alter" => alter(rest),
        "comment" if is_word(rest.first(), "on") => Ok(()),
        "set" => set(&tokens),
        "select" => select(&tokens),
        "copy" => Err(
            "COPY is allowed only as `COPY table (columns) FROM stdin` followed by its data".into(),
        ),
        _ if TRANSACTION_CONTROL.contains(&kw.as_str()) => Err(format!(
            "transaction control ({}) is not allowed: the import runs in one transaction of its own",
            first.to_ascii_uppercase()
        )),
        _ => Err(format!(
            "{} statements are not part of an export",
            first.to_ascii_uppercase()
        )),
    }
}

fn create(rest: &[Tok<'_>]) -> Result<(), String> {
    let mut i = 0;
    if is_word(rest.first(), "or") && is_word(rest.get(1), "replace") {
        i = 2;
    }
    // Modifiers pg_dump writes before the object kind.
    if ["unique", "unlogged", "constraint"]
        .iter()
        .any(|m| is_word(rest.get(i), m))
    {
        i += 1;
    }
    let kind = word(rest.get(i)).unwrap_or_default().to_ascii_lowercase();
    let object = rest.get(i + 1..).unwrap_or_default();
    match kind.as_str() {
        "table" => {
            // `CREATE TABLE ... AS SELECT` would run a query.
            if top_level_words(object)
                .iter()
                .any(|w| w.eq_ignore_ascii_case("as"))
            {
                return Err("CREATE TABLE ... AS is not part of an export".into());
            }
            Ok(())
        }
        "sequence" | "index" | "trigger" | "type" | "domain" | "view" => Ok(()),
        "function" => function(object),
        "schema" => {
            // Only a bare name: no AUTHORIZATION (a role), no embedded
            // statements.
            let mut name = object;
            if is_word(name.first(), "if")
                && is_word(name.get(1), "not")
                && is_word(name.get(2), "exists")
            {
                name = name.get(3..).unwrap_or_default();
            }
            if name.len() == 1 && is_ident(name.first()) {
                Ok(())
            } else {
                Err("CREATE SCHEMA is allowed only with a bare name".into())
            }
        }
        _ => Err(format!(
            "CREATE {} is not part of an export",
            word(rest.get(i)).unwrap_or("...").to_ascii_uppercase()
        )),
    }
}

/// A function must be SQL or PL/pgSQL: another language (C, say) would
/// load code from the server's file system.
fn function(object: &[Tok<'_>]) -> Result<(), String> {
    let mut languages = 0;
    for (i, (token, _)) in object.iter().enumerate() {
        if matches!(token, Token::Word(w) if w.eq_ignore_ascii_case("language")) {
            languages += 1;
            let allowed = match object.get(i + 1) {
                Some((Token::Word(l) | Token::Str(l), _)) => {
                    l.eq_ignore_ascii_case("sql") || l.eq_ignore_ascii_case("plpgsql")
                }
                _ => false,
            };
            if !allowed {
                return Err("only functions in LANGUAGE sql or plpgsql are allowed".into());
            }
        }
    }
    if languages == 0 {
        return Err("a function must name its LANGUAGE (sql or plpgsql)".into());
    }
    Ok(())
}

fn alter(rest: &[Tok<'_>]) -> Result<(), String> {
    let kind = word(rest.first()).unwrap_or_default().to_ascii_lowercase();
    if !matches!(
        kind.as_str(),
        "table" | "sequence" | "index" | "function" | "type" | "domain" | "trigger" | "view"
    ) {
        return Err(format!(
            "ALTER {} is not part of an export",
            word(rest.first()).unwrap_or("...").to_ascii_uppercase()
        ));
    }
    for w in top_level_words(rest.get(1..).unwrap_or_default()) {
        if w.eq_ignore_ascii_case("owner") {
            return Err("changing an owner is not part of an export".into());
        }
        if w.eq_ignore_ascii_case("disable") {
            return Err("disabling triggers or row security is not part of an export".into());
        }
    }
    Ok(())
}

/// `SET [SESSION] name {=|TO} value` for a setting of [`SETTINGS`].
fn set(tokens: &[Tok<'_>]) -> Result<(), String> {
    let mut i = 1;
    if is_word(tokens.get(i), "session") || is_word(tokens.get(i), "local") {
        i += 1;
    }
    let name = word(tokens.get(i)).unwrap_or_default();
    let rest = tokens.get(i + 1..).unwrap_or_default();
    let value = match rest.first() {
        Some((Token::Other, "=")) => rest.get(1..).unwrap_or_default(),
        Some((Token::Word(to), _)) if to.eq_ignore_ascii_case("to") => {
            rest.get(1..).unwrap_or_default()
        }
        _ => return Err("SET is allowed only as `SET setting = value`".into()),
    };
    let value: Vec<&str> = value
        .iter()
        .map(|(token, text)| match token {
            Token::Str(s) => *s,
            _ => *text,
        })
        .collect();
    setting(name, &value)
}

/// Whether setting `name` may take `value` (its tokens, strings unquoted).
fn setting(name: &str, value: &[&str]) -> Result<(), String> {
    let name = name.to_ascii_lowercase();
    if !SETTINGS.contains(&name.as_str()) {
        return Err(format!(
            "setting {name} is not one of the session settings an export sets"
        ));
    }
    let single = |allowed: &[&str]| matches!(value, [v] if allowed.iter().any(|a| v.eq_ignore_ascii_case(a)));
    // The script is read as UTF-8 with standard strings; a server that read
    // it otherwise could see statement boundaries the check did not.
    if name == "standard_conforming_strings" && !single(&["on", "true"]) {
        return Err("standard_conforming_strings may only be set to on".into());
    }
    if name == "client_encoding" && !single(&["utf8", "utf-8", "unicode"]) {
        return Err("client_encoding may only be set to UTF8".into());
    }
    Ok(())
}

fn is_bool(token: &Tok<'_>) -> bool {
    let some = Some(token);
    is_word(some, "true") || is_word(some, "false")
}

/// An integer literal, possibly negative.
fn is_integer(value: &[Tok<'_>]) -> bool {
    match value {
        [(Token::Other, "-"), (Token::Word(n), _)] | [(Token::Word(n), _)] => {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// `SELECT pg_catalog.setval('seq', n, bool)` or
/// `SELECT pg_catalog.set_config('setting', 'value', bool)`, literals only.
fn select(tokens: &[Tok<'_>]) -> Result<(), String> {
    let call = match tokens {
        [
            _,
            (Token::Word(schema), _),
            (Token::Other, "."),
            (Token::Word(function), _),
            (Token::Open, _),
            args @ ..,
            (Token::Close, _),
        ] if schema.eq_ignore_ascii_case("pg_catalog") => {
            Some((function.to_ascii_lowercase(), args))
        }
        _ => None,
    };
    match call.as_ref().map(|(f, args)| (f.as_str(), *args)) {
        Some((
            "setval",
            [
                (Token::Str(_), _),
                (Token::Other, ","),
                value @ ..,
                (Token::Other, ","),
                called,
            ],
        )) if is_integer(value) && is_bool(called) => Ok(()),
        Some((
            "set_config",
            [
                (Token::Str(name), _),
                (Token::Other, ","),
                (Token::Str(value), _),
                (Token::Other, ","),
                local,
            ],
        )) if is_bool(local) => setting(name, &[value]),
        _ => Err(
            "SELECT is allowed only as pg_catalog.setval('sequence', value, is_called) \
             or pg_catalog.set_config('setting', 'value', is_local) with literal arguments"
                .to_owned(),
        ),
    }
}

/// Checks that a `COPY ... FROM stdin` statement is exactly
/// `COPY [schema.]table [(column, ...)] FROM stdin`: no options, no `WHERE`.
pub(crate) fn check_copy(sql: &str) -> Result<(), String> {
    let tokens = tokens(sql);
    let refused = || {
        Err("COPY is allowed only as `COPY table (columns) FROM stdin`, without options".to_owned())
    };
    if !is_word(tokens.first(), "copy") || !is_ident(tokens.get(1)) {
        return refused();
    }
    let mut i = 2;
    if matches!(tokens.get(i), Some((Token::Other, "."))) {
        if !is_ident(tokens.get(i + 1)) {
            return refused();
        }
        i += 2;
    }
    if matches!(tokens.get(i), Some((Token::Open, _))) {
        i += 1;
        loop {
            if !is_ident(tokens.get(i)) {
                return refused();
            }
            match tokens.get(i + 1) {
                Some((Token::Other, ",")) => i += 2,
                Some((Token::Close, _)) => {
                    i += 2;
                    break;
                }
                _ => return refused(),
            }
        }
    }
    if is_word(tokens.get(i), "from")
        && is_word(tokens.get(i + 1), "stdin")
        && tokens.len() == i + 2
    {
        Ok(())
    } else {
        refused()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_pg_dump_and_the_export_write_is_allowed() {
        for sql in [
            "SET statement_timeout = 0",
            "SET client_encoding = 'UTF8'",
            "SET standard_conforming_strings = on",
            "SET transaction_timeout = 0",
            "SET default_table_access_method TO heap",
            "SELECT pg_catalog.set_config('search_path', '', false)",
            "SELECT pg_catalog.setval('public.items_id_seq', 3, true)",
            "SELECT pg_catalog.setval('\"odd \"\"schema\"\"\".counter', -105, false)",
            "CREATE SCHEMA \"odd \"\"schema\"\"\"",
            "CREATE TABLE public.städte (id integer NOT NULL, ort text DEFAULT 'Zürich'::text, \
             doubled integer GENERATED ALWAYS AS ((s * 2)) STORED)",
            "CREATE SEQUENCE public.items_id_seq AS integer START WITH 1 INCREMENT BY 1",
            "CREATE FUNCTION s.touch() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN COMMIT; END; $body$",
            "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
            "CREATE VIEW s.v AS SELECT id FROM s.t",
            "CREATE UNIQUE INDEX items_name ON public.items USING btree (name)",
            "CREATE TRIGGER touch BEFORE INSERT ON s.t FOR EACH ROW EXECUTE FUNCTION s.touch()",
            "CREATE TYPE public.mood AS ENUM ('ok', 'ünïcødé')",
            "ALTER TABLE ONLY public.items ADD CONSTRAINT items_pkey PRIMARY KEY (id)",
            "ALTER TABLE public.items ALTER COLUMN id SET DEFAULT nextval('public.items_id_seq'::regclass)",
            "ALTER SEQUENCE public.items_id_seq OWNED BY public.items.id",
            "ALTER TABLE s.t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME s.t_id_seq START WITH 1)",
            "COMMENT ON TABLE public.städte IS 'Orte – ünïcødé'",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
        for sql in [
            "COPY public.items (id, name) FROM stdin",
            "COPY \"odd \"\"schema\"\"\".\";semi colon\" (id, \"Quoted \"\"col\"\"\") FROM stdin",
            "COPY städte FROM STDIN",
        ] {
            assert_eq!(check_copy(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for (sql, reason) in [
            ("COMMIT", "transaction control (COMMIT)"),
            ("begin", "transaction control (BEGIN)"),
            ("ROLLBACK", "transaction control"),
            ("SAVEPOINT a", "transaction control"),
            (
                "COPY (SELECT 1) TO PROGRAM 'id > /tmp/pwned'",
                "COPY is allowed only",
            ),
            ("COPY t FROM '/etc/passwd'", "COPY is allowed only"),
            ("DO $$ BEGIN PERFORM 1; END $$", "DO statements"),
            ("CREATE ROLE evil SUPERUSER", "CREATE ROLE"),
            ("ALTER ROLE postgres PASSWORD 'x'", "ALTER ROLE"),
            ("CREATE EXTENSION adminpack", "CREATE EXTENSION"),
            ("DROP TABLE public.items", "DROP statements"),
            (
                "SELECT pg_read_file('/etc/passwd')",
                "SELECT is allowed only",
            ),
            (
                "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('t', 'id'), 1)",
                "SELECT",
            ),
            (
                "SELECT pg_catalog.set_config('role', 'postgres', false)",
                "setting role",
            ),
            ("SET ROLE postgres", "SET is allowed only"),
            ("SET SESSION AUTHORIZATION postgres", "SET is allowed only"),
            (
                "SET session_replication_role = replica",
                "setting session_replication_role",
            ),
            (
                "SET standard_conforming_strings = off",
                "standard_conforming_strings",
            ),
            ("SET client_encoding = 'SJIS'", "client_encoding"),
            ("GRANT ALL ON t TO public", "GRANT statements"),
            (
                "CREATE TABLE x AS SELECT pg_read_file('/etc/passwd')",
                "CREATE TABLE ... AS",
            ),
            (
                "CREATE FUNCTION f() RETURNS int AS 'libc.so.6', 'system' LANGUAGE c",
                "LANGUAGE",
            ),
            ("CREATE FUNCTION f() RETURNS int AS 'x'", "LANGUAGE"),
            ("CREATE SCHEMA s AUTHORIZATION postgres", "bare name"),
            ("CREATE SCHEMA s CREATE TABLE t (a int)", "bare name"),
            (
                "CREATE MATERIALIZED VIEW v AS SELECT 1",
                "CREATE MATERIALIZED",
            ),
            (
                "CREATE RULE r AS ON INSERT TO t DO ALSO NOTIFY x",
                "CREATE RULE",
            ),
            (
                "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
                "CREATE EVENT",
            ),
            ("ALTER TABLE t OWNER TO postgres", "owner"),
            ("ALTER TABLE t DISABLE TRIGGER ALL", "disabling"),
            ("ALTER SYSTEM SET archive_command = 'id'", "ALTER SYSTEM"),
            ("LISTEN x", "LISTEN statements"),
            ("TRUNCATE t", "TRUNCATE"),
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("SELECT 'open", "unterminated"),
        ] {
            let err = check(sql).expect_err(sql);
            assert!(err.contains(reason), "{sql}: {err}");
        }
        for sql in [
            "COPY t FROM stdin WHERE f(a)",
            "COPY t FROM stdin (FORMAT csv)",
            "COPY t TO stdout",
            "COPY (SELECT 1) FROM stdin",
        ] {
            assert!(check_copy(sql).is_err(), "{sql}");
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// No statement text makes the check (or the settings rewrite that
        /// runs before it) panic.
        #[test]
        fn any_statement_is_judged_without_a_panic(
            sql in "(SET|SELECT|CREATE|ALTER|COPY|COMMENT|pg_catalog|\\.|setval|set_config|\\(|\\)|,|-|'[^']{0,4}'|\"[^\"]{0,3}\"|ü|städte|=|TO|FROM|stdin|LANGUAGE| ){0,12}"
        ) {
            let _ = check(&sql);
            let _ = check_copy(&sql);
            let _ = crate::compat::TargetSettings::from_names(&["search_path"]).rewrite(&sql);
        }

        #[test]
        fn any_text_is_judged_without_a_panic(sql in any::<String>()) {
            let _ = check(&sql);
            let _ = check_copy(&sql);
            let _ = crate::compat::TargetSettings::from_names(&["search_path"]).rewrite(&sql);
        }
    }
}
