//! Reading a plain-SQL export (pg_dump's format) statement by statement.
//!
//! The lexer knows what can hide a `;`: single-quoted strings (with `''`),
//! `E''` strings (with backslash escapes), dollar-quoted bodies with tags,
//! double-quoted identifiers, `--` comments and nested `/* */` comments.
//! `COPY ... FROM stdin;` is followed by data lines up to `\.`, handed out in
//! chunks of whole rows. psql meta-commands: `\restrict` / `\unrestrict`
//! (emitted by newer pg_dump) are skipped; any other is an error, since
//! nothing here can carry it out.

use std::io::BufRead;

use crate::error::{MigrateError, Result};
use crate::manifest::{MANIFEST_PREFIX, Manifest};

/// One unit of an export script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// A statement, without its terminating `;`.
    Statement {
        /// The SQL text.
        sql: String,
        /// 1-based line where it starts.
        line: u64,
    },
    /// `COPY ... FROM stdin`: data chunks follow, then [`Item::CopyEnd`].
    CopyStart {
        /// The COPY statement, without its `;`.
        sql: String,
        /// 1-based line where it starts.
        line: u64,
    },
    /// Whole data rows of the current COPY, each ending in `\n`.
    CopyData(Vec<u8>),
    /// The `\.` that ends the current COPY.
    CopyEnd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lex {
    Normal,
    /// Inside `'...'`; `escapes` for `E'...'`.
    Single {
        escapes: bool,
    },
    Double,
    Dollar(String),
    Block(u32),
}

/// Reads [`Item`]s from an export script.
pub(crate) struct ScriptReader<R> {
    input: R,
    line: u64,
    lex: Lex,
    /// The statement being collected.
    buf: String,
    /// Line where `buf`'s first code character appeared.
    start: u64,
    /// `buf` holds something other than whitespace and comments.
    has_code: bool,
    /// A backslash in an `E''` string escapes the next character.
    escape_next: bool,
    /// Statements completed on the current line, not yet handed out.
    pending: std::collections::VecDeque<Item>,
    in_copy: bool,
    chunk_bytes: usize,
    manifest: Option<Manifest>,
    done: bool,
}

impl<R: BufRead> ScriptReader<R> {
    /// A reader handing out COPY data in chunks of about `chunk_bytes`.
    pub(crate) fn new(input: R, chunk_bytes: usize) -> Self {
        ScriptReader {
            input,
            line: 0,
            lex: Lex::Normal,
            buf: String::new(),
            start: 0,
            has_code: false,
            escape_next: false,
            pending: std::collections::VecDeque::new(),
            in_copy: false,
            chunk_bytes: chunk_bytes.max(1),
            manifest: None,
            done: false,
        }
    }

    /// The manifest, once its line has been read (it heads the export).
    pub(crate) fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    fn read_line(&mut self, into: &mut Vec<u8>) -> Result<bool> {
        into.clear();
        let n = self
            .input
            .read_until(b'\n', into)
            .map_err(MigrateError::io("reading the export"))?;
        if n > 0 {
            self.line += 1;
        }
        Ok(n > 0)
    }

    /// The next item, or `None` at the end of the script.
    pub(crate) fn next_item(&mut self) -> Result<Option<Item>> {
        if let Some(item) = self.pending.pop_front() {
            return Ok(Some(item));
        }
        if self.in_copy {
            return self.copy_chunk().map(Some);
        }
        let mut raw = Vec::new();
        while !self.done {
            if !self.read_line(&mut raw)? {
                self.done = true;
                break;
            }
            let text = std::str::from_utf8(&raw).map_err(|_| MigrateError::Script {
                line: self.line,
                message: "the line is not valid UTF-8".into(),
            })?;
            let text = text.to_owned();
            self.scan_line(&text)?;
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
        }
        if self.has_code {
            let line = self.start;
            return Err(MigrateError::Script {
                line,
                message: match self.lex {
                    Lex::Normal => "the last statement has no terminating `;`".into(),
                    _ => "the script ends inside a quoted string or comment".into(),
                },
            });
        }
        Ok(None)
    }

    fn copy_chunk(&mut self) -> Result<Item> {
        let mut chunk = Vec::with_capacity(self.chunk_bytes.min(1 << 23) + 4096);
        let mut raw = Vec::new();
        loop {
            if !self.read_line(&mut raw)? {
                return Err(MigrateError::Script {
                    line: self.line,
                    message: "the script ends inside COPY data (no `\\.`)".into(),
                });
            }
            if raw == b"\\.\n" || raw == b"\\." || raw == b"\\.\r\n" {
                self.in_copy = false;
                if chunk.is_empty() {
                    return Ok(Item::CopyEnd);
                }
                self.pending.push_back(Item::CopyEnd);
                return Ok(Item::CopyData(chunk));
            }
            chunk.extend_from_slice(&raw);
            if !raw.ends_with(b"\n") {
                chunk.push(b'\n');
            }
            if chunk.len() >= self.chunk_bytes {
                return Ok(Item::CopyData(chunk));
            }
        }
    }

    fn scan_line(&mut self, text: &str) -> Result<()> {
        if self.lex == Lex::Normal && !self.has_code {
            let trimmed = text.trim_start();
            if let Some(json) = trimmed.strip_prefix(MANIFEST_PREFIX) {
                let manifest =
                    serde_json::from_str(json.trim()).map_err(|source| MigrateError::Manifest {
                        line: self.line,
                        source,
                    })?;
                self.manifest = Some(manifest);
                return Ok(());
            }
            if trimmed.starts_with('\\') {
                return self.meta_command(trimmed.trim_end());
            }
        }
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let next = bytes.get(i + 1).copied();
            let mut step = 1;
            match &self.lex {
                Lex::Normal => match b {
                    b';' => {
                        self.finish_statement();
                        i += 1;
                        continue;
                    }
                    b'-' if next == Some(b'-') => {
                        // A line comment: the rest of the line.
                        self.buf.push_str(&text[i..]);
                        return Ok(());
                    }
                    b'/' if next == Some(b'*') => {
                        self.lex = Lex::Block(1);
                        step = 2;
                    }
                    b'\'' => {
                        let escapes = self.buf.ends_with(['E', 'e'])
                            && !self.buf[..self.buf.len() - 1].ends_with(is_ident_char);
                        self.lex = Lex::Single { escapes };
                        self.mark_code();
                    }
                    b'"' => {
                        self.lex = Lex::Double;
                        self.mark_code();
                    }
                    b'$' if !self.buf.ends_with(is_ident_char) => {
                        if let Some(tag_len) = dollar_tag(&bytes[i..]) {
                            self.lex = Lex::Dollar(text[i..i + tag_len].to_owned());
                            step = tag_len;
                        }
                        self.mark_code();
                    }
                    b if b.is_ascii_whitespace() => {}
                    _ => self.mark_code(),
                },
                Lex::Single { escapes } => {
                    if self.escape_next {
                        self.escape_next = false;
                    } else if *escapes && b == b'\\' {
                        self.escape_next = true;
                    } else if b == b'\'' {
                        if next == Some(b'\'') {
                            step = 2;
                        } else {
                            self.lex = Lex::Normal;
                        }
                    }
                }
                Lex::Double => {
                    if b == b'"' {
                        if next == Some(b'"') {
                            step = 2;
                        } else {
                            self.lex = Lex::Normal;
                        }
                    }
                }
                Lex::Dollar(tag) => {
                    if b == b'$' && bytes[i..].starts_with(tag.as_bytes()) {
                        step = tag.len();
                        self.lex = Lex::Normal;
                    }
                }
                Lex::Block(depth) => {
                    let depth = *depth;
                    if b == b'*' && next == Some(b'/') {
                        self.lex = if depth == 1 {
                            Lex::Normal
                        } else {
                            Lex::Block(depth - 1)
                        };
                        step = 2;
                    } else if b == b'/' && next == Some(b'*') {
                        self.lex = Lex::Block(depth + 1);
                        step = 2;
                    }
                }
            }
            // Steps only ever cover ASCII bytes, so `i` stays on a
            // character boundary.
            self.buf.push_str(&text[i..i + step]);
            i += step;
        }
        Ok(())
    }

    fn mark_code(&mut self) {
        if !self.has_code {
            self.has_code = true;
            self.start = self.line;
        }
    }

    fn finish_statement(&mut self) {
        let sql = std::mem::take(&mut self.buf);
        if !self.has_code {
            return;
        }
        self.has_code = false;
        let sql = strip_leading_comments(&sql).trim_end().to_owned();
        let line = self.start;
        if is_copy_from_stdin(&sql) {
            self.in_copy = true;
            self.pending.push_back(Item::CopyStart { sql, line });
        } else {
            self.pending.push_back(Item::Statement { sql, line });
        }
    }

    fn meta_command(&mut self, command: &str) -> Result<()> {
        let name = command.split_whitespace().next().unwrap_or(command);
        match name {
            // pg_dump 17.6+ fences its output with these; they only guard
            // psql against meta-commands hidden in data.
            "\\restrict" | "\\unrestrict" => {
                tracing::debug!(line = self.line, name, "skipped a psql meta-command");
                Ok(())
            }
            _ => Err(MigrateError::Script {
                line: self.line,
                message: format!("unsupported psql meta-command {name}"),
            }),
        }
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The length of a `$tag$` opening at the start of `bytes`, if there is one.
fn dollar_tag(bytes: &[u8]) -> Option<usize> {
    let rest = bytes.get(1..)?;
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'$' => return Some(i + 2),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | 0x80..=0xff => {}
            b'0'..=b'9' if i > 0 => {}
            _ => return None,
        }
    }
    None
}

/// `sql` without the comments and whitespace before its first token.
pub(crate) fn strip_leading_comments(sql: &str) -> &str {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if s.starts_with("/*") {
            let mut depth = 0u32;
            let bytes = s.as_bytes();
            let mut i = 0;
            while i + 1 < bytes.len() {
                if bytes[i] == b'/' && bytes[i + 1] == b'*' {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            s = s[i.min(s.len())..].trim_start();
        } else {
            return s;
        }
    }
}

fn is_copy_from_stdin(sql: &str) -> bool {
    let upper = sql.to_ascii_uppercase();
    upper.starts_with("COPY ") && upper.trim_end().ends_with("FROM STDIN")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(script: &str) -> Vec<Item> {
        let mut reader = ScriptReader::new(script.as_bytes(), 8);
        let mut out = Vec::new();
        while let Some(item) = reader.next_item().expect("item") {
            out.push(item);
        }
        out
    }

    fn sqls(script: &str) -> Vec<String> {
        items(script)
            .into_iter()
            .filter_map(|i| match i {
                Item::Statement { sql, .. } => Some(sql),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn splits_at_semicolons_outside_quotes_and_comments() {
        let script = "SET a = 1; SET b = 'x;y';\n\
            -- a comment; with a semicolon\n\
            SELECT 'it''s; fine', \"odd;\"\"name\" /* c; /* nested; */ still; */ FROM t;\n\
            SELECT E'back\\'slash;' ;\n";
        assert_eq!(
            sqls(script),
            vec![
                "SET a = 1",
                "SET b = 'x;y'",
                "SELECT 'it''s; fine', \"odd;\"\"name\" /* c; /* nested; */ still; */ FROM t",
                "SELECT E'back\\'slash;'",
            ]
        );
    }

    #[test]
    fn a_backslash_is_literal_in_a_standard_string() {
        // With standard_conforming_strings on, '\' is one backslash.
        assert_eq!(
            sqls("SELECT 'a\\'; SELECT 2;"),
            vec!["SELECT 'a\\'", "SELECT 2"]
        );
        // `xe'...'` is an identifier followed by a string, not an E string.
        assert_eq!(
            sqls("SELECT 1 AS xe'\\'; SELECT 2;"),
            vec!["SELECT 1 AS xe'\\'", "SELECT 2"]
        );
    }

    #[test]
    fn dollar_quotes_with_and_without_tags() {
        let script = "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\
            CREATE FUNCTION g() RETURNS trigger AS $body$\nBEGIN\n  x := 'a;$$';\n  RETURN NEW;\nEND;\n$body$ LANGUAGE plpgsql;\n\
            SELECT $1;\n";
        let s = sqls(script);
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[0].ends_with("$$ LANGUAGE sql"));
        assert!(s[1].contains("RETURN NEW;\nEND;\n$body$ LANGUAGE plpgsql"));
        assert_eq!(s[2], "SELECT $1");
    }

    #[test]
    fn copy_data_comes_in_chunks_of_whole_rows_up_to_the_terminator() {
        let script = "COPY public.t (a, b) FROM stdin;\n1\tone;\n2\t\\N\n3\tthree -- not a comment\n\\.\nSELECT 1;\n";
        let got = items(script);
        assert_eq!(
            got[0],
            Item::CopyStart {
                sql: "COPY public.t (a, b) FROM stdin".into(),
                line: 1
            }
        );
        let mut data = Vec::new();
        let mut n = 1;
        while let Item::CopyData(chunk) = &got[n] {
            assert!(chunk.ends_with(b"\n"));
            data.extend_from_slice(chunk);
            n += 1;
        }
        assert_eq!(
            String::from_utf8(data).expect("utf8"),
            "1\tone;\n2\t\\N\n3\tthree -- not a comment\n"
        );
        assert!(n > 2, "8-byte chunks split the data");
        assert_eq!(got[n], Item::CopyEnd);
        assert_eq!(
            got[n + 1],
            Item::Statement {
                sql: "SELECT 1".into(),
                line: 6
            }
        );
    }

    #[test]
    fn empty_copy_and_line_numbers() {
        let got = items(
            "\n\n-- header\nCOPY s.t (a) FROM stdin;\n\\.\n\nCREATE TABLE x (\n  a int\n);\n",
        );
        assert_eq!(
            got,
            vec![
                Item::CopyStart {
                    sql: "COPY s.t (a) FROM stdin".into(),
                    line: 4
                },
                Item::CopyEnd,
                Item::Statement {
                    sql: "CREATE TABLE x (\n  a int\n)".into(),
                    line: 7
                },
            ]
        );
    }

    #[test]
    fn restrict_is_skipped_and_other_meta_commands_are_refused() {
        assert_eq!(
            sqls("\\restrict abc123\nSELECT 1;\n\\unrestrict abc123\n"),
            vec!["SELECT 1"]
        );
        let mut reader = ScriptReader::new("SELECT 1;\n\\connect other\n".as_bytes(), 16);
        assert!(reader.next_item().expect("first").is_some());
        let err = reader.next_item().expect_err("meta-command");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("\\connect"), "{err}");
    }

    #[test]
    fn unterminated_input_is_an_error_naming_the_line() {
        for script in [
            "SELECT 1;\nSELECT 'open\n",
            "SELECT 2",
            "COPY t (a) FROM stdin;\n1\n",
        ] {
            let mut reader = ScriptReader::new(script.as_bytes(), 16);
            let mut result = reader.next_item();
            while let Ok(Some(_)) = result {
                result = reader.next_item();
            }
            let err = result.expect_err(script);
            assert!(err.to_string().contains("line"), "{err}");
        }
    }

    #[test]
    fn the_manifest_line_is_read_not_run() {
        let script = "-- cocalc-db-manifest: {\"format\":1,\"source_version\":\"17.5\",\"tables\":[],\"sequences\":[]}\nSELECT 1;\n";
        let mut reader = ScriptReader::new(script.as_bytes(), 16);
        assert!(matches!(
            reader.next_item().expect("item"),
            Some(Item::Statement { .. })
        ));
        assert_eq!(
            reader.manifest().map(|m| m.source_version.as_str()),
            Some("17.5")
        );
    }

    #[test]
    fn leading_comments_are_stripped() {
        assert_eq!(
            strip_leading_comments("-- x\n /* a /* b */ c */ SELECT 1"),
            "SELECT 1"
        );
    }
}
