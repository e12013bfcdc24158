//! The one SQL lexer of the workspace: a byte-based tokenizer that knows
//! PostgreSQL's comments, quoting and dollar quoting, and what is built on
//! it.
//!
//! It never interprets SQL beyond that: what a statement *does* is the
//! server's answer. Callers use it to find statement boundaries, the first
//! keyword, or a shape (`COPY ... FROM STDIN`) before anything is sent.

/// One lexical piece of SQL text; what callers do not need to tell apart is
/// `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted identifier, keyword or number.
    Word(&'a str),
    /// The text between the quotes of a standard string literal.
    Str(&'a str),
    /// `(`
    Open,
    /// `)`
    Close,
    /// `;`
    Semicolon,
    /// A quoted identifier, another kind of string, or an operator.
    Other,
    /// An unterminated quote or comment.
    Invalid,
}

/// The tokens of SQL text, comments and whitespace skipped.
///
/// Byte-based: multi-byte UTF-8 characters are parts of words (as in
/// PostgreSQL's identifiers) and never split. Quoted identifiers, string
/// literals (standard, `E'...'` with backslash escapes, dollar-quoted) and
/// nested block comments are skipped whole; an unterminated one is
/// [`Token::Invalid`], after which the iterator ends.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    sql: &'a str,
    pos: usize,
    /// Where the token last returned starts.
    start: usize,
}

impl<'a> Tokens<'a> {
    /// The tokens of `sql`.
    pub fn new(sql: &'a str) -> Self {
        Tokens {
            sql,
            pos: 0,
            start: 0,
        }
    }

    /// The tokens of `sql` from byte offset `pos` on, which should be where
    /// a token or blank starts. An offset inside a character is moved on to
    /// the next character, one past the end to the end, so no offset can
    /// make the lexer slice a character apart.
    pub fn starting_at(sql: &'a str, pos: usize) -> Self {
        let mut pos = pos.min(sql.len());
        while !sql.is_char_boundary(pos) {
            pos += 1;
        }
        Tokens {
            sql,
            pos,
            start: pos,
        }
    }

    /// The byte offset of the next token (or blank) in the text.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The byte offset where the token last returned starts (for
    /// [`Token::Invalid`], where the unterminated quote or comment starts).
    pub fn token_start(&self) -> usize {
        self.start
    }

    /// The source text of the token last returned, quotes included (for
    /// [`Token::Invalid`], the rest of the text).
    pub fn token_text(&self) -> &'a str {
        self.sql.get(self.start..self.pos).unwrap_or_default()
    }

    fn rest(&self) -> &'a [u8] {
        &self.sql.as_bytes()[self.pos..]
    }

    /// Skips whitespace and comments; `false` on an unterminated comment.
    fn skip_blank(&mut self) -> bool {
        loop {
            let rest = self.rest();
            match rest {
                [c, ..] if c.is_ascii_whitespace() => self.pos += 1,
                [b'-', b'-', ..] => {
                    self.pos += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                }
                [b'/', b'*', ..] => {
                    // Block comments nest in PostgreSQL.
                    let mut nesting = 0usize;
                    let mut i = 0;
                    loop {
                        match &rest[i..] {
                            [b'/', b'*', ..] => {
                                nesting += 1;
                                i += 2;
                            }
                            [b'*', b'/', ..] => {
                                nesting -= 1;
                                i += 2;
                                if nesting == 0 {
                                    break;
                                }
                            }
                            [_, ..] => i += 1,
                            [] => return false,
                        }
                    }
                    self.pos += i;
                }
                _ => return true,
            }
        }
    }

    /// Skips a quoted run starting at the opening `quote`; `backslash` says
    /// whether `\` escapes the next byte (`E'...'` strings).
    fn skip_quoted(&mut self, quote: u8, backslash: bool) -> Token<'a> {
        let rest = self.rest();
        let mut i = 1;
        while i < rest.len() {
            match rest[i] {
                b'\\' if backslash => i += 2,
                c if c == quote => {
                    if rest.get(i + 1) == Some(&quote) {
                        i += 2;
                    } else {
                        let text = &self.sql[self.pos + 1..self.pos + i];
                        self.pos += i + 1;
                        return if quote == b'\'' && !backslash {
                            Token::Str(text)
                        } else {
                            Token::Other
                        };
                    }
                }
                _ => i += 1,
            }
        }
        Token::Invalid
    }

    /// Skips a dollar-quoted string if one starts here.
    fn skip_dollar_quoted(&mut self) -> Option<Token<'a>> {
        let rest = self.rest();
        let tag_len = rest[1..]
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))?;
        if rest.get(1 + tag_len) != Some(&b'$') || rest.get(1).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let tag = &rest[..tag_len + 2];
        let body = &rest[tag.len()..];
        Some(match body.windows(tag.len()).position(|w| w == tag) {
            Some(end) => {
                self.pos += tag.len() * 2 + end;
                Token::Other
            }
            None => Token::Invalid,
        })
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let blank = self.skip_blank();
        // On failure `pos` stays where the unterminated comment opens.
        self.start = self.pos;
        if !blank {
            self.pos = self.sql.len();
            return Some(Token::Invalid);
        }
        let rest = self.rest();
        let first = *rest.first()?;
        let token = match first {
            b'(' => {
                self.pos += 1;
                Token::Open
            }
            b')' => {
                self.pos += 1;
                Token::Close
            }
            b';' => {
                self.pos += 1;
                Token::Semicolon
            }
            b'\'' => self.skip_quoted(b'\'', false),
            b'"' => self.skip_quoted(b'"', false),
            b'$' => match self.skip_dollar_quoted() {
                Some(token) => token,
                None => {
                    self.pos += 1;
                    Token::Other
                }
            },
            c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                let len = rest
                    .iter()
                    .position(|&c| {
                        !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80)
                    })
                    .unwrap_or(rest.len());
                let word = &self.sql[self.pos..self.pos + len];
                self.pos += len;
                // `E'...'` strings take backslash escapes.
                if word.eq_ignore_ascii_case("E") && self.rest().first() == Some(&b'\'') {
                    self.skip_quoted(b'\'', true)
                } else {
                    Token::Word(word)
                }
            }
            _ => {
                self.pos += 1;
                Token::Other
            }
        };
        if token == Token::Invalid {
            self.pos = self.sql.len();
        }
        Some(token)
    }
}

/// The first keyword of a statement, skipping blanks, comments and opening
/// parentheses (`(SELECT 1)`); `None` for empty text or an unterminated
/// quote or comment before any word.
///
/// ```
/// use db_core::lex::first_keyword;
/// assert_eq!(first_keyword("-- note\n/* a /* nested */ one */ ( select 1)"), Some("select"));
/// assert_eq!(first_keyword("  ;"), None);
/// ```
pub fn first_keyword(sql: &str) -> Option<&str> {
    for token in Tokens::new(sql) {
        match token {
            Token::Open => {}
            Token::Word(w) => return Some(w),
            _ => return None,
        }
    }
    None
}

/// How far [`scan_statement`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementScan {
    /// A statement ended by a `;`. Its text runs from its first token to its
    /// last (`start..end`: comments and blanks around it left out, the `;`
    /// excluded); the next statement may start at `after`, just past the
    /// `;`. Empty statements (`;;`) are skipped.
    Complete {
        /// Byte offset of the statement's first token.
        start: usize,
        /// Byte offset just past its last token.
        end: usize,
        /// Byte offset just past its `;`.
        after: usize,
    },
    /// The text ends before a `;` ends the statement.
    Incomplete {
        /// Byte offset of the first token, `None` when there is only blank
        /// text (whitespace and comments).
        start: Option<usize>,
        /// Byte offset just past the last complete token (or the scan's
        /// starting offset without one).
        end: usize,
        /// The text ends inside a quote or a comment.
        open: bool,
        /// Where to scan again once more text has been appended after a
        /// line break (as a line-by-line reader does): the start of the
        /// unterminated quote or comment, else the end of the text, since a
        /// line break ends every other token.
        resume: usize,
    },
}

/// Finds the end of the statement that starts at byte offset `from` of
/// `sql`: the first `;` outside quotes and comments.
///
/// Byte-based and total: any text and any offset give an answer, and every
/// offset in it is on a character boundary of `sql`.
///
/// ```
/// use db_core::lex::{StatementScan, scan_statement};
/// let sql = "-- städte\nSELECT 'a;b'; SELECT 2";
/// let StatementScan::Complete { start, end, after } = scan_statement(sql, 0) else { panic!() };
/// assert_eq!(&sql[start..end], "SELECT 'a;b'");
/// assert!(matches!(
///     scan_statement(sql, after),
///     StatementScan::Incomplete { start: Some(_), open: false, .. }
/// ));
/// ```
pub fn scan_statement(sql: &str, from: usize) -> StatementScan {
    let mut tokens = Tokens::starting_at(sql, from);
    let mut start = None;
    let mut end = tokens.offset();
    while let Some(token) = tokens.next() {
        match token {
            Token::Semicolon => match start {
                Some(start) => {
                    return StatementScan::Complete {
                        start,
                        end,
                        after: tokens.offset(),
                    };
                }
                None => end = tokens.offset(),
            },
            Token::Invalid => {
                let at = tokens.token_start();
                // An unterminated comment is no code; an unterminated quote
                // is.
                let start = start.or_else(|| (!is_comment_start(sql, at)).then_some(at));
                return StatementScan::Incomplete {
                    start,
                    end,
                    open: true,
                    resume: at,
                };
            }
            _ => {
                start.get_or_insert(tokens.token_start());
                end = tokens.offset();
            }
        }
    }
    StatementScan::Incomplete {
        start,
        end,
        open: false,
        resume: sql.len(),
    }
}

fn is_comment_start(sql: &str, at: usize) -> bool {
    let rest = sql.as_bytes().get(at..).unwrap_or_default();
    rest.starts_with(b"/*") || rest.starts_with(b"--")
}

/// One statement of a text, as [`split_statements`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    /// From its first token to its last, without the `;`.
    pub text: &'a str,
    /// Byte offset of `text` in the whole text.
    pub offset: usize,
    /// 1-based line where `text` starts.
    pub line: usize,
    /// How it ends: with a `;`, at the end of the text, or inside an
    /// unterminated quote.
    pub end: StatementEnd,
}

/// How a [`Statement`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementEnd {
    /// With a `;`.
    Semicolon,
    /// At the end of the text, without a `;` (psql would wait for more).
    Unterminated,
    /// At the end of the text, inside a quote (or a comment that follows
    /// its last token).
    Open,
}

/// The statements of `sql`, split at each `;` outside quotes and comments,
/// in order; blank text between them and empty statements are left out.
///
/// ```
/// use db_core::lex::{StatementEnd, split_statements};
/// let all: Vec<_> = split_statements("SET a = 1;\n-- Zürich\nCOMMENT ON TABLE städte IS 'Orte – ü;';\nSELECT").collect();
/// assert_eq!(all[1].text, "COMMENT ON TABLE städte IS 'Orte – ü;'");
/// assert_eq!(all[1].line, 3);
/// assert_eq!(all[2].end, StatementEnd::Unterminated);
/// ```
pub fn split_statements(sql: &str) -> Statements<'_> {
    Statements {
        sql,
        pos: 0,
        line: 1,
        line_pos: 0,
    }
}

/// The iterator of [`split_statements`].
#[derive(Debug, Clone)]
pub struct Statements<'a> {
    sql: &'a str,
    pos: usize,
    /// The line number at `line_pos`.
    line: usize,
    line_pos: usize,
}

impl Statements<'_> {
    fn line_at(&mut self, offset: usize) -> usize {
        let newlines = self
            .sql
            .as_bytes()
            .get(self.line_pos..offset)
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += newlines;
        self.line_pos = offset.max(self.line_pos);
        self.line
    }
}

impl<'a> Iterator for Statements<'a> {
    type Item = Statement<'a>;

    fn next(&mut self) -> Option<Statement<'a>> {
        if self.pos >= self.sql.len() {
            return None;
        }
        let (start, end, how) = match scan_statement(self.sql, self.pos) {
            StatementScan::Complete { start, end, after } => {
                self.pos = after;
                (start, end, StatementEnd::Semicolon)
            }
            StatementScan::Incomplete {
                start, end, open, ..
            } => {
                self.pos = self.sql.len();
                let start = start?;
                if open {
                    (start, self.sql.len(), StatementEnd::Open)
                } else {
                    (start, end, StatementEnd::Unterminated)
                }
            }
        };
        let line = self.line_at(start);
        Some(Statement {
            text: self.sql.get(start..end).unwrap_or_default(),
            offset: start,
            line,
            end: how,
        })
    }
}

/// `sql` for a log: its tokens with every literal (strings of any kind,
/// numbers) shown as `?` and comments dropped, so that a password in `ALTER
/// ROLE ... PASSWORD '...'` or a value written into the text never reaches
/// a log. Quoted identifiers stay.
///
/// ```
/// use db_core::lex::without_literals;
/// assert_eq!(
///     without_literals("ALTER ROLE bob PASSWORD 'hunter2' -- secret\nVALID UNTIL $$x$$"),
///     "ALTER ROLE bob PASSWORD ? VALID UNTIL ?"
/// );
/// assert_eq!(without_literals("SELECT \"Col\" FROM t WHERE id = 42 AND s = E'a\\'b'"),
///            "SELECT \"Col\" FROM t WHERE id = ? AND s = ?");
/// ```
pub fn without_literals(sql: &str) -> String {
    let mut tokens = Tokens::new(sql);
    let mut out: Vec<&str> = Vec::new();
    while let Some(token) = tokens.next() {
        let text = tokens.token_text();
        let literal = match token {
            Token::Str(_) | Token::Invalid => true,
            Token::Word(w) => w.starts_with(|c: char| c.is_ascii_digit()),
            Token::Other => !text.starts_with('"') && text.contains(['\'', '$']),
            _ => false,
        };
        out.push(if literal { "?" } else { text });
    }
    out.join(" ")
}

/// The first words of `sql` (at most three, up to the first token that is
/// not a plain word), to name a statement in a log line: `ALTER ROLE bob`,
/// `SELECT id FROM`; never a literal.
pub fn summary(sql: &str) -> String {
    let mut tokens = Tokens::new(sql);
    let mut words = Vec::new();
    while let Some(Token::Word(w)) = tokens.next() {
        if w.starts_with(|c: char| c.is_ascii_digit()) || words.len() == 3 {
            break;
        }
        words.push(w);
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keywords_skip_what_postgres_skips() {
        assert_eq!(first_keyword("BEGIN"), Some("BEGIN"));
        assert_eq!(
            first_keyword("\n\t-- step one\nbegin; insert"),
            Some("begin")
        );
        assert_eq!(
            first_keyword("/* a */ /* b /* c */ */START TRANSACTION"),
            Some("START")
        );
        assert_eq!(first_keyword("((values (1)))"), Some("values"));
        assert_eq!(first_keyword("städte"), Some("städte"));
        assert_eq!(first_keyword("/* open"), None);
        assert_eq!(first_keyword("'x'"), None);
        assert_eq!(first_keyword(""), None);
    }

    #[test]
    fn tokens_keep_quoted_text_whole() {
        let tokens: Vec<_> = Tokens::new("SELECT 'a;b', $q$ ; $q$, \"c;\" ; -- x;\nEND").collect();
        let semicolons = tokens.iter().filter(|t| **t == Token::Semicolon).count();
        assert_eq!(semicolons, 1, "{tokens:?}");
        assert_eq!(tokens.last(), Some(&Token::Word("END")));
    }

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let sql = "SET a = 1; SET b = 'x;y';\n-- städte; a comment\nCREATE TABLE städte (ort text DEFAULT 'Zürich');\n\
            COMMENT ON TABLE städte IS 'Orte – ünïcødé';;\n\
            CREATE FUNCTION f() RETURNS int AS $ü$ SELECT 1; $ü$ LANGUAGE sql /* c; */;\nSELECT 'open";
        let all: Vec<_> = split_statements(sql).collect();
        let texts: Vec<_> = all.iter().map(|s| s.text).collect();
        assert_eq!(
            texts,
            [
                "SET a = 1",
                "SET b = 'x;y'",
                "CREATE TABLE städte (ort text DEFAULT 'Zürich')",
                "COMMENT ON TABLE städte IS 'Orte – ünïcødé'",
                "CREATE FUNCTION f() RETURNS int AS $ü$ SELECT 1; $ü$ LANGUAGE sql",
                "SELECT 'open",
            ]
        );
        let lines: Vec<_> = all.iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 1, 3, 4, 5, 6]);
        assert_eq!(all[4].end, StatementEnd::Semicolon);
        assert_eq!(all[5].end, StatementEnd::Open);
    }

    #[test]
    fn scanning_resumes_at_an_open_quote_or_the_end() {
        // Complete tokens stay as they are when a line break follows.
        for text in ["SELECT 1 -", "SELECT $q", "SELECT ab"] {
            match scan_statement(text, 0) {
                StatementScan::Incomplete {
                    start: Some(0),
                    open: false,
                    resume,
                    ..
                } => assert_eq!(resume, text.len(), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // An open quote is scanned again from its start.
        assert_eq!(
            scan_statement("SELECT 'a;\n", 0),
            StatementScan::Incomplete {
                start: Some(0),
                end: 6,
                open: true,
                resume: 7
            }
        );
        assert_eq!(
            scan_statement("  /* open", 0),
            StatementScan::Incomplete {
                start: None,
                end: 0,
                open: true,
                resume: 2
            }
        );
        // An offset inside a character moves on to the next one.
        assert!(matches!(
            scan_statement("ü;x;", 1),
            StatementScan::Complete { start: 3, .. }
        ));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// A statement built from pieces that can hide a `;` or a quote,
        /// with non-ASCII text everywhere, and no comment at either end.
        fn statement() -> impl Strategy<Value = String> {
            let word = "[a-zA-Zäöüß_][a-zA-Z0-9äöü_–😀]{0,6}";
            let atom = prop_oneof![
                word.prop_map(|w| w),
                "[^']{0,8}".prop_map(|t| format!("'{t}'")),
                "[^']{0,4}'[^']{0,4}".prop_map(|t| format!("'{}'", t.replace('\'', "''"))),
                "[^\"]{0,4}\"?[^\"]{0,4}".prop_map(|t| format!("\"{}\"", t.replace('"', "\"\""))),
                ("[a-zä]{0,3}", "[^$]{0,10}")
                    .prop_map(|(tag, body)| format!("${tag}${body}${tag}$")),
                ("[^*/]{0,8}", word).prop_map(|(c, w)| format!("/* {c} */ {w}")),
                ("[^\n]{0,8}", word).prop_map(|(c, w)| format!("-- {c}\n{w}")),
                Just("(".to_owned()),
                Just(")".to_owned()),
                Just(",".to_owned()),
            ];
            (word, proptest::collection::vec(atom, 0..8)).prop_map(|(first, rest)| {
                let mut s = first;
                for atom in rest {
                    s.push(' ');
                    s.push_str(&atom);
                }
                s
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any text splits without a panic into statements that, with the
            /// blank text and `;`s between them, make up the text again.
            #[test]
            fn any_text_splits_into_statements_and_separators(sql in any::<String>()) {
                split_any(&sql)?;
            }

            /// Text close to SQL, which reaches the quoting paths more often.
            #[test]
            fn sql_like_text_splits_into_statements_and_separators(
                sql in "([a-zé ;'\"$/*\n-]|--|/\\*|\\*/|\\$\\$|\\$ü\\$|E'|ü|😀){0,40}"
            ) {
                split_any(&sql)?;
            }

            /// Statements joined by `;` come back as they were, on their lines.
            #[test]
            fn joined_statements_come_back(
                stmts in proptest::collection::vec(statement(), 1..6),
                sep in r"(;|;\n|; -- x;ü\n|;/\* ; \*/\n|;;\n)",
            ) {
                let sql = stmts.join(&sep) + ";";
                let got: Vec<_> = split_statements(&sql).collect();
                let texts: Vec<_> = got.iter().map(|s| s.text).collect();
                prop_assert_eq!(&texts, &stmts);
                for s in &got {
                    let line = sql[..s.offset].matches('\n').count() + 1;
                    prop_assert_eq!(s.line, line);
                    prop_assert_eq!(s.end, StatementEnd::Semicolon);
                }
            }
        }

        fn split_any(sql: &str) -> Result<(), TestCaseError> {
            let mut rebuilt = String::new();
            let mut pos = 0;
            for s in split_statements(sql) {
                prop_assert!(s.offset >= pos);
                prop_assert_eq!(Some(s.text), sql.get(s.offset..s.offset + s.text.len()));
                let gap = &sql[pos..s.offset];
                prop_assert!(
                    Tokens::new(gap).all(|t| t == Token::Semicolon),
                    "between statements only blanks and `;`: {:?}",
                    gap
                );
                if s.end == StatementEnd::Semicolon {
                    prop_assert!(
                        !Tokens::new(s.text).any(|t| t == Token::Semicolon),
                        "{:?}",
                        s.text
                    );
                }
                rebuilt.push_str(gap);
                rebuilt.push_str(s.text);
                pos = s.offset + s.text.len();
            }
            let tail = &sql[pos..];
            // Blank text, or an unterminated comment after the last statement.
            prop_assert!(
                Tokens::new(tail).all(|t| matches!(t, Token::Semicolon | Token::Invalid)),
                "{:?}",
                tail
            );
            rebuilt.push_str(tail);
            prop_assert_eq!(rebuilt, sql);
            Ok(())
        }
    }
}
