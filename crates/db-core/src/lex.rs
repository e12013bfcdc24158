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
}

impl<'a> Tokens<'a> {
    /// The tokens of `sql`.
    pub fn new(sql: &'a str) -> Self {
        Tokens { sql, pos: 0 }
    }

    /// The byte offset of the next token (or blank) in the text.
    pub fn offset(&self) -> usize {
        self.pos
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
        if !self.skip_blank() {
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
}
