//! Reading a plain-SQL export (pg_dump's format) statement by statement.
//!
//! Statements are found by the workspace's one SQL lexer,
//! [`db_core::lex::scan_statement`], which knows what can hide a `;`
//! (quotes, `E''` escapes, dollar quoting, comments) and never slices a
//! character apart, whatever the input. `COPY ... FROM stdin;` is followed by
//! data lines up to `\.`, handed out in chunks of whole rows. psql
//! meta-commands: `\restrict` / `\unrestrict` (emitted by newer pg_dump) are
//! skipped; any other is an error, since nothing here can carry it out.
//!
//! The manifest line and the end marker are read between statements; every
//! byte before the end marker is counted and hashed to check it. Data lines
//! are never taken for either, whatever they hold.

use std::collections::VecDeque;
use std::io::BufRead;

use db_core::lex::{StatementScan, scan_statement};

use crate::error::{MigrateError, Result};
use crate::manifest::{Digesting, END_PREFIX, EndMarker, MANIFEST_PREFIX, Manifest};

/// One unit of an export script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// A statement, from its first token to its last (no `;`, no comments
    /// around it).
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

/// Reads [`Item`]s from an export script.
pub(crate) struct ScriptReader<R> {
    input: R,
    /// Lines read so far.
    line: u64,
    /// Script text read but not yet handed out, whole lines.
    buf: String,
    /// The line `buf` starts on.
    buf_line: u64,
    /// Where the statement being collected starts in `buf`, once a token
    /// of it has been seen.
    stmt_start: Option<usize>,
    /// Where to scan `buf` again when a line has been appended.
    scan_from: usize,
    /// `buf` ends inside a quote or comment.
    open: bool,
    /// Statements completed on the current line, not yet handed out.
    pending: VecDeque<Item>,
    in_copy: bool,
    chunk_bytes: usize,
    manifest: Option<Manifest>,
    done: bool,
    /// Every byte before the end marker.
    digest: Digesting<std::io::Sink>,
    /// The end marker, once read and checked.
    end: Option<EndMarker>,
    /// An end marker was read (matching or, when not required, not).
    ended: bool,
    /// Whether the end of the input without an end marker is an error
    /// ([`MigrateError::Incomplete`]) rather than the end of the script.
    require_end: bool,
    /// COPY blocks started so far.
    copies: usize,
    /// The statement of the COPY being read.
    copy_sql: Option<String>,
}

impl<R: BufRead> ScriptReader<R> {
    /// A reader handing out COPY data in chunks of about `chunk_bytes`.
    pub(crate) fn new(input: R, chunk_bytes: usize) -> Self {
        ScriptReader {
            input,
            line: 0,
            buf: String::new(),
            buf_line: 1,
            stmt_start: None,
            scan_from: 0,
            open: false,
            pending: VecDeque::new(),
            in_copy: false,
            chunk_bytes: chunk_bytes.max(1),
            manifest: None,
            done: false,
            digest: Digesting::new(std::io::sink()),
            end: None,
            ended: false,
            require_end: false,
            copies: 0,
            copy_sql: None,
        }
    }

    /// Makes an input that ends without an end marker an error naming
    /// where it stops, whatever it stops inside.
    pub(crate) fn require_end_marker(mut self, require: bool) -> Self {
        self.require_end = require;
        self
    }

    /// The end marker, once read; it matched what preceded it.
    pub(crate) fn end_marker(&self) -> Option<&EndMarker> {
        self.end.as_ref()
    }

    /// [`MigrateError::Incomplete`] for an input that ended at the current
    /// line, `inside` describing what was open.
    fn incomplete(&self, inside: Option<String>) -> MigrateError {
        let mut place = inside.map(|i| format!("inside {i}, ")).unwrap_or_default();
        match &self.manifest {
            Some(m) => place.push_str(&format!(
                "after the data of {} of the manifest's {} tables",
                self.copies.saturating_sub(usize::from(self.in_copy)),
                m.tables.len()
            )),
            None => place.push_str("with no manifest read"),
        }
        MigrateError::Incomplete {
            line: self.line,
            place,
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
            let at_boundary = self.stmt_start.is_none() && !self.open;
            if self.ended {
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Err(MigrateError::Script {
                    line: self.line,
                    message: "text follows the end marker".into(),
                });
            }
            if at_boundary && raw.starts_with(END_PREFIX.as_bytes()) {
                self.end_line(&raw)?;
                continue;
            }
            self.digest.absorb(&raw);
            let text = std::str::from_utf8(&raw).map_err(|_| MigrateError::Script {
                line: self.line,
                message: "the line is not valid UTF-8".into(),
            })?;
            if self.stmt_start.is_none() && !self.open && self.line_command(text)? {
                continue;
            }
            if self.buf.is_empty() {
                self.buf_line = self.line;
            }
            self.buf.push_str(text);
            self.scan()?;
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
        }
        if self.require_end && self.end.is_none() {
            let inside = if self.stmt_start.is_some() || self.open {
                Some(format!(
                    "the statement that starts at line {}",
                    self.line_of(self.stmt_start.unwrap_or(self.scan_from))
                ))
            } else {
                None
            };
            return Err(self.incomplete(inside));
        }
        if let Some(start) = self.stmt_start {
            return Err(MigrateError::Script {
                line: self.line_of(start),
                message: if self.open {
                    "the script ends inside a quoted string or comment".into()
                } else {
                    "the last statement has no terminating `;`".into()
                },
            });
        }
        if self.open {
            return Err(MigrateError::Script {
                line: self.line_of(self.scan_from),
                message: "the script ends inside a comment".into(),
            });
        }
        Ok(None)
    }

    /// Handles a line that is no SQL, between statements: the manifest or
    /// a psql meta-command. `false` for any other line.
    fn line_command(&mut self, text: &str) -> Result<bool> {
        let trimmed = text.trim_start();
        if let Some(json) = trimmed.strip_prefix(MANIFEST_PREFIX) {
            let manifest =
                serde_json::from_str(json.trim()).map_err(|source| MigrateError::Manifest {
                    line: self.line,
                    source,
                })?;
            self.manifest = Some(manifest);
        } else if trimmed.starts_with('\\') {
            self.meta_command(trimmed.trim_end())?;
        } else {
            return Ok(false);
        }
        // Only blank text can be pending here: drop it with the line.
        self.buf.clear();
        self.scan_from = 0;
        Ok(true)
    }

    /// Checks the end marker line `raw` against everything before it.
    fn end_line(&mut self, raw: &[u8]) -> Result<()> {
        let invalid = |source| MigrateError::Manifest {
            line: self.line,
            source,
        };
        let json = raw.get(END_PREFIX.len()..).unwrap_or_default();
        let expected: EndMarker = serde_json::from_slice(json).map_err(invalid)?;
        let actual = self.digest.marker();
        self.ended = true;
        if actual != expected {
            if !self.require_end {
                tracing::warn!(
                    line = self.line,
                    "the end marker does not match the file; importing it unverified"
                );
                return Ok(());
            }
            return Err(MigrateError::Altered {
                line: self.line,
                expected,
                actual_bytes: actual.bytes,
                actual_sha256: actual.sha256,
            });
        }
        self.end = Some(expected);
        Ok(())
    }

    /// Hands out the statements the text read so far completes.
    fn scan(&mut self) -> Result<()> {
        loop {
            match scan_statement(&self.buf, self.scan_from) {
                StatementScan::Complete { start, end, after } => {
                    let start = self.stmt_start.take().unwrap_or(start);
                    let line = self.line_of(start);
                    let sql = self.buf.get(start..end).unwrap_or_default().to_owned();
                    self.consume(after);
                    if db_core::check_copy_statement(&sql, db_core::CopyDirection::In).is_ok() {
                        // Data starts on the next line: nothing may follow
                        // the `;` on this one but blank text.
                        if !matches!(
                            scan_statement(&self.buf, 0),
                            StatementScan::Incomplete {
                                start: None,
                                open: false,
                                ..
                            }
                        ) {
                            return Err(MigrateError::Script {
                                line,
                                message: "a statement follows `COPY ... FROM stdin;` on its line"
                                    .into(),
                            });
                        }
                        self.consume(self.buf.len());
                        self.in_copy = true;
                        self.copies += 1;
                        self.copy_sql = Some(sql.clone());
                        self.pending.push_back(Item::CopyStart { sql, line });
                        return Ok(());
                    }
                    self.pending.push_back(Item::Statement { sql, line });
                }
                StatementScan::Incomplete {
                    start,
                    open,
                    resume,
                    ..
                } => {
                    self.open = open;
                    self.scan_from = resume;
                    if self.stmt_start.is_none() {
                        self.stmt_start = start;
                    }
                    if self.stmt_start.is_none() && !open {
                        // Only blank text: nothing to keep.
                        self.consume(self.buf.len());
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Drops the first `len` bytes of `buf` (a character boundary).
    fn consume(&mut self, len: usize) {
        let mut len = len.min(self.buf.len());
        while !self.buf.is_char_boundary(len) {
            len += 1;
        }
        let newlines = self.buf.as_bytes()[..len]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.buf_line += u64::try_from(newlines).unwrap_or(u64::MAX);
        self.buf.drain(..len);
        self.stmt_start = None;
        self.scan_from = 0;
        self.open = false;
    }

    /// The line of byte `offset` of `buf`.
    fn line_of(&self, offset: usize) -> u64 {
        let newlines = self
            .buf
            .as_bytes()
            .get(..offset)
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.buf_line + u64::try_from(newlines).unwrap_or(u64::MAX)
    }

    fn copy_chunk(&mut self) -> Result<Item> {
        let mut chunk = Vec::with_capacity(self.chunk_bytes.min(1 << 23) + 4096);
        let mut raw = Vec::new();
        loop {
            if !self.read_line(&mut raw)? {
                if self.require_end {
                    let copy = self.copy_sql.as_deref().unwrap_or_default();
                    let copy = copy.get(5..).unwrap_or_default();
                    let copy = copy.split(" (").next().unwrap_or(copy);
                    return Err(self.incomplete(Some(format!("the data of {copy}"))));
                }
                return Err(MigrateError::Script {
                    line: self.line,
                    message: "the script ends inside COPY data (no `\\.`)".into(),
                });
            }
            self.digest.absorb(&raw);
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
    fn the_end_marker_is_checked_and_never_read_from_copy_data() {
        // A data row that looks like the marker is data.
        let body = format!("COPY t (a) FROM stdin;\n{END_PREFIX}not a marker\n\\.\n");
        let script = format!("{body}{}", EndMarker::of(body.as_bytes()).line());
        let mut reader = ScriptReader::new(script.as_bytes(), 8).require_end_marker(true);
        let mut data = Vec::new();
        while let Some(item) = reader.next_item().expect("item") {
            if let Item::CopyData(chunk) = item {
                data.extend(chunk);
            }
        }
        assert_eq!(data, format!("{END_PREFIX}not a marker\n").into_bytes());
        assert_eq!(
            reader.end_marker().map(|m| m.bytes),
            Some(body.len() as u64)
        );

        let cut = ScriptReader::new(body.as_bytes(), 8).require_end_marker(true);
        let altered = script.replacen("COPY t", "COPY u", 1);
        let altered = ScriptReader::new(altered.as_bytes(), 8).require_end_marker(true);
        for (mut reader, what) in [(cut, "incomplete"), (altered, "altered")] {
            let err = loop {
                match reader.next_item() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{what}: no error"),
                    Err(e) => break e,
                }
            };
            match what {
                "incomplete" => assert!(
                    matches!(err, MigrateError::Incomplete { line: 3, .. }),
                    "{err}"
                ),
                _ => assert!(
                    matches!(err, MigrateError::Altered { line: 4, .. }),
                    "{err}"
                ),
            }
        }
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
    fn non_ascii_text_outside_copy_data_is_read_whole() {
        let script = "-- Städte und Orte\n\
            CREATE TABLE public.städte (\n    ort text DEFAULT 'Zürich'::text, \"größe\" int\n);\n\
            COMMENT ON TABLE public.städte IS 'Orte – ünïcødé';\n\
            COPY public.städte (ort, \"größe\") FROM stdin;\nZürich\t1\n\\.\n\
            SELECT pg_catalog.setval('public.\"zähler\"', 1, false); /* ü */ SELECT 'ß';\n";
        let got = items(script);
        assert_eq!(
            got[0],
            Item::Statement {
                sql: "CREATE TABLE public.städte (\n    ort text DEFAULT 'Zürich'::text, \"größe\" int\n)"
                    .into(),
                line: 2
            }
        );
        assert_eq!(
            got[1],
            Item::Statement {
                sql: "COMMENT ON TABLE public.städte IS 'Orte – ünïcødé'".into(),
                line: 5
            }
        );
        assert_eq!(
            got[2],
            Item::CopyStart {
                sql: "COPY public.städte (ort, \"größe\") FROM stdin".into(),
                line: 6
            }
        );
        assert_eq!(got[3], Item::CopyData("Zürich\t1\n".as_bytes().to_vec()));
        assert_eq!(got[4], Item::CopyEnd);
        assert_eq!(
            got[5..],
            [
                Item::Statement {
                    sql: "SELECT pg_catalog.setval('public.\"zähler\"', 1, false)".into(),
                    line: 9
                },
                Item::Statement {
                    sql: "SELECT 'ß'".into(),
                    line: 9
                }
            ]
        );
    }

    #[test]
    fn nothing_may_follow_copy_from_stdin_on_its_line() {
        let mut reader = ScriptReader::new(
            "SELECT 1;\nCOPY t (a) FROM stdin; DROP TABLE t;\n".as_bytes(),
            16,
        );
        assert!(reader.next_item().expect("first").is_some());
        let err = reader.next_item().expect_err("refused");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    /// Every item of `script`, or the error that stopped the reader.
    fn read_all(script: &[u8]) -> (Vec<Item>, Option<MigrateError>) {
        let mut reader = ScriptReader::new(script, 7);
        let mut out = Vec::new();
        loop {
            match reader.next_item() {
                Ok(Some(item)) => out.push(item),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// Statements, blank text and `;`s make up the script again: the text
    /// between statements (in order) holds no token but `;`.
    fn check_reproduces(script: &str) -> std::result::Result<(), TestCaseError> {
        let (got, err) = read_all(script.as_bytes());
        if err.is_some()
            || script.lines().any(|l| l.trim_start().starts_with('\\'))
            || got.iter().any(|i| !matches!(i, Item::Statement { .. }))
        {
            // Errors, meta-commands and COPY data are not statements.
            return Ok(());
        }
        let mut pos = 0;
        for item in got {
            let Item::Statement { sql, line } = item else {
                continue;
            };
            let found = script[pos..].find(&sql);
            prop_assert!(found.is_some(), "{:?} not in {:?}", sql, &script[pos..]);
            let at = pos + found.unwrap_or_default();
            let gap = &script[pos..at];
            prop_assert!(
                db_core::lex::Tokens::new(gap).all(|t| t == db_core::lex::Token::Semicolon),
                "between statements: {:?}",
                gap
            );
            let expected_line = u64::try_from(script[..at].matches('\n').count()).unwrap_or(0) + 1;
            prop_assert_eq!(line, expected_line);
            pos = at + sql.len();
        }
        Ok(())
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// No input makes the reader panic; whatever it reads back is the
        /// script's own text.
        #[test]
        fn any_text_is_read_or_refused_without_a_panic(script in any::<String>()) {
            check_reproduces(&script)?;
        }

        /// Bytes that are not UTF-8 are refused, not a panic.
        #[test]
        fn any_bytes_are_read_or_refused_without_a_panic(
            script in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            let _ = read_all(&script);
        }

        /// SQL-like text with non-ASCII everywhere, quotes, comments,
        /// COPY blocks and meta-commands.
        #[test]
        fn sql_like_text_is_read_or_refused_without_a_panic(
            script in "([a-zé ;'\"$/*\n\\\\-]|--|/\\*|\\*/|\\$\\$|\\$ü\\$|E'|ü|ß|–|😀|\n\\\\\\.\n|COPY t FROM stdin;\n|-- cocalc-db-manifest: \\{\\}\n){0,40}"
        ) {
            check_reproduces(&script)?;
        }
    }
}
