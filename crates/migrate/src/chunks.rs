//! Copying a table out in pieces of bounded size.
//!
//! The embedded backend hands over a statement's whole response at once, so
//! one `COPY table TO STDOUT` of a large table would sit in memory whole
//! (twice: in PGlite's heap and in ours). Instead each piece is a `COPY
//! (SELECT ...) TO STDOUT` of its own, all in the export's one transaction,
//! so they read one snapshot:
//!
//! - by primary key: `WHERE (key) > (last key) ORDER BY key LIMIT n`, the
//!   last key read back from the previous piece's last row (its COPY text is
//!   exactly what an import of it loads, so it compares as the stored key);
//! - by page, for a table without a primary key (or whose key is a
//!   generated column, which COPY leaves out): `WHERE ctid >= '(a,0)' AND
//!   ctid < '(b,0)'`, the last piece open-ended.
//!
//! The size of a piece adapts to the bytes the previous ones took, starting
//! from the table's size on disk.

use crate::manifest::qualified;

/// How many rows, or pages, the next piece takes.
#[derive(Debug)]
struct Pacer {
    /// The bytes a piece should take.
    target: u64,
    /// Rows or pages copied so far.
    units: u64,
    /// The bytes they took.
    bytes: u64,
    /// The size of the first piece.
    first: u64,
}

/// The most rows or pages one piece may take, whatever the estimate.
const MAX_UNITS: u64 = 1 << 30;

impl Pacer {
    /// A pacer for pieces of `target` bytes of a relation whose units take
    /// `disk_bytes_per_unit` on disk. COPY text can be several times larger
    /// than what is stored (hex bytea, compressed values), so the first
    /// piece takes a quarter of the estimate.
    fn new(target: u64, disk_bytes_per_unit: u64) -> Self {
        let first = target / disk_bytes_per_unit.max(1).saturating_mul(4);
        Pacer {
            target,
            units: 0,
            bytes: 0,
            first: first.clamp(1, MAX_UNITS),
        }
    }

    fn next(&self) -> u64 {
        if self.units == 0 {
            return self.first;
        }
        if self.bytes == 0 {
            // Empty pages: nothing to go by but that they were empty.
            return self.units.saturating_mul(2).clamp(1, MAX_UNITS);
        }
        let n = u128::from(self.target) * u128::from(self.units) / u128::from(self.bytes);
        u64::try_from(n).unwrap_or(MAX_UNITS).clamp(1, MAX_UNITS)
    }

    fn record(&mut self, units: u64, bytes: usize) {
        self.units = self.units.saturating_add(units);
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
    }
}

/// A primary key column: its place among the copied columns and its type.
#[derive(Debug, Clone)]
pub(crate) struct KeyColumn {
    /// Index of the column in the COPY column list.
    pub(crate) position: usize,
    /// The column's name, quoted.
    pub(crate) name: String,
    /// Its type as `format_type` spells it (valid SQL).
    pub(crate) type_sql: String,
}

/// How a table is cut into pieces.
#[derive(Debug)]
enum Cut {
    /// By primary key, after `after` (a condition) once a piece was read.
    Key {
        key: Vec<KeyColumn>,
        after: Option<String>,
        /// The `LIMIT` of the piece being read.
        limit: u64,
    },
    /// By page: the pages before `from` were read; the relation had
    /// `pages` pages when the export started.
    Pages { from: u64, pages: u64, to: u64 },
}

/// The pieces of one table, statement by statement.
#[derive(Debug)]
pub(crate) struct TableChunks {
    /// `schema.table`, quoted, for the statements and error messages.
    table: String,
    /// The quoted columns COPY moves, comma-separated.
    columns: String,
    cut: Cut,
    pacer: Pacer,
    done: bool,
}

impl TableChunks {
    /// Pieces of `schema.name` by primary key (`key` not empty, every
    /// column among those copied).
    pub(crate) fn by_key(
        schema: &str,
        name: &str,
        columns: &[String],
        key: Vec<KeyColumn>,
        size: RelationSize,
        target: u64,
    ) -> Self {
        let per_row = size.bytes / size.rows.max(1);
        TableChunks {
            table: qualified(schema, name),
            columns: columns.join(", "),
            cut: Cut::Key {
                key,
                after: None,
                limit: 0,
            },
            pacer: Pacer::new(target, per_row),
            done: false,
        }
    }

    /// Pieces of `schema.name` by page.
    pub(crate) fn by_page(
        schema: &str,
        name: &str,
        columns: &[String],
        size: RelationSize,
        target: u64,
    ) -> Self {
        let per_page = size.bytes / size.pages.max(1);
        TableChunks {
            table: qualified(schema, name),
            columns: columns.join(", "),
            cut: Cut::Pages {
                from: 0,
                pages: size.pages,
                to: 0,
            },
            pacer: Pacer::new(target, per_page),
            done: false,
        }
    }

    /// The `COPY ... TO STDOUT` of the next piece, `None` once the table
    /// has been read whole.
    pub(crate) fn next_statement(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        let n = self.pacer.next();
        let select = format!("SELECT {} FROM {}", self.columns, self.table);
        let query = match &mut self.cut {
            Cut::Key { key, after, limit } => {
                *limit = n;
                let order = key_list(key);
                let filter = after
                    .as_deref()
                    .map(|c| format!(" WHERE {c}"))
                    .unwrap_or_default();
                format!("{select}{filter} ORDER BY {order} LIMIT {n}")
            }
            Cut::Pages { from, pages, to } => {
                *to = from.saturating_add(n);
                // The last piece is open-ended: no row can hide past it.
                if *to >= *pages {
                    format!("{select} WHERE ctid >= '({from},0)'")
                } else {
                    format!("{select} WHERE ctid >= '({from},0)' AND ctid < '({to},0)'")
                }
            }
        };
        Some(format!("COPY ({query}) TO STDOUT"))
    }

    /// Records the piece just read: `rows` rows whose COPY text is `data`.
    /// An error says why the next piece cannot be found.
    pub(crate) fn record(&mut self, rows: u64, data: &[u8]) -> Result<(), String> {
        match &mut self.cut {
            Cut::Key { key, after, limit } => {
                self.pacer.record(rows, data.len());
                if rows < *limit {
                    self.done = true;
                    return Ok(());
                }
                let last = last_row(data).ok_or("the COPY output does not end with a row")?;
                let fields = copy_fields(last);
                let mut values = Vec::with_capacity(key.len());
                for column in key.iter() {
                    let field = fields
                        .get(column.position)
                        .ok_or("a row has fewer fields than columns")?;
                    let text = unescape_copy_field(field)
                        .ok_or_else(|| format!("the key column {} is NULL", column.name))?;
                    let text = String::from_utf8(text)
                        .map_err(|_| format!("the key column {} is not UTF-8", column.name))?;
                    values.push(format!("{}::{}", literal(&text), column.type_sql));
                }
                *after = Some(format!("({}) > ({})", key_list(key), values.join(", ")));
            }
            Cut::Pages { from, pages, to } => {
                self.pacer.record(to.saturating_sub(*from), data.len());
                if *to >= *pages {
                    self.done = true;
                }
                *from = *to;
            }
        }
        Ok(())
    }
}

/// The size of a relation when the export started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelationSize {
    /// Its rows.
    pub(crate) rows: u64,
    /// Its pages.
    pub(crate) pages: u64,
    /// Its bytes on disk, TOAST included.
    pub(crate) bytes: u64,
}

fn key_list(key: &[KeyColumn]) -> String {
    key.iter()
        .map(|k| k.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The last row of COPY text output (without its newline).
fn last_row(data: &[u8]) -> Option<&[u8]> {
    let body = data.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    body.get(start..)
}

/// The fields of one row of COPY text output, still escaped. Tabs inside
/// values are escaped (`\t`), so every tab separates fields.
fn copy_fields(row: &[u8]) -> Vec<&[u8]> {
    row.split(|&b| b == b'\t').collect()
}

/// A field of COPY text format as the value's text, `None` for NULL
/// (`\N`). Escapes as COPY FROM reads them: `\b \f \n \r \t \v`, octal
/// `\ooo`, hex `\xhh`, and a backslash before any other byte stands for
/// that byte.
fn unescape_copy_field(field: &[u8]) -> Option<Vec<u8>> {
    if field == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(e) = bytes.next() else {
            // A lone trailing backslash: COPY never writes one; keep it.
            out.push(b'\\');
            break;
        };
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(e - b'0');
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(value & 0xff).unwrap_or(0));
            }
            b'x' if bytes.peek().is_some_and(u8::is_ascii_hexdigit) => {
                let mut value = 0u8;
                for _ in 0..2 {
                    match bytes.peek().and_then(|&d| char::from(d).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + u8::try_from(d).unwrap_or(0);
                            bytes.next();
                        }
                        None => break,
                    }
                }
                out.push(value);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// `text` as a SQL string literal that means `text` whatever
/// `standard_conforming_strings` says: with a backslash in it, an `E''`
/// string with backslashes doubled (as PostgreSQL's `quote_literal` does).
fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(position: usize, name: &str, type_sql: &str) -> KeyColumn {
        KeyColumn {
            position,
            name: db_core::quote_ident(name),
            type_sql: type_sql.into(),
        }
    }

    #[test]
    fn copy_fields_are_unescaped_as_copy_from_reads_them() {
        let row = b"1\t\\N\ta\\tb\\nc\\\\d\\101\\x41\\q\t\xc3\xbc";
        let fields = copy_fields(row);
        assert_eq!(fields.len(), 4);
        assert_eq!(unescape_copy_field(fields[0]), Some(b"1".to_vec()));
        assert_eq!(unescape_copy_field(fields[1]), None);
        assert_eq!(
            unescape_copy_field(fields[2]),
            Some(b"a\tb\nc\\dAAq".to_vec())
        );
        assert_eq!(
            unescape_copy_field(fields[3]),
            Some("ü".as_bytes().to_vec())
        );
        assert_eq!(unescape_copy_field(b"\\"), Some(b"\\".to_vec()));
        assert_eq!(unescape_copy_field(b"\\x"), Some(b"x".to_vec()));
    }

    #[test]
    fn literals_mean_their_text_with_or_without_standard_strings() {
        assert_eq!(literal("plain"), "'plain'");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
        assert_eq!(literal("Zürich"), "'Zürich'");
    }

    #[test]
    fn key_pieces_continue_after_the_last_row_read() {
        let size = RelationSize {
            rows: 1000,
            pages: 10,
            bytes: 80_000,
        };
        let mut chunks = TableChunks::by_key(
            "public",
            "städte",
            &["\"ort\"".into(), "\"n\"".into(), "\"note\"".into()],
            vec![key(0, "ort", "text"), key(1, "n", "integer")],
            size,
            640,
        );
        // 80 bytes a row on disk, a quarter of 640 / 80 for a start.
        let first = chunks.next_statement().expect("a first piece");
        assert_eq!(
            first,
            "COPY (SELECT \"ort\", \"n\", \"note\" FROM \"public\".\"städte\" \
             ORDER BY \"ort\", \"n\" LIMIT 2) TO STDOUT"
        );
        let data = "Aachen\t1\t\\N\nK\\\\öln's\t2\tx\n".as_bytes();
        chunks.record(2, data).expect("recorded");
        let second = chunks.next_statement().expect("a second piece");
        assert!(
            second
                .contains("WHERE (\"ort\", \"n\") > (E'K\\\\öln''s'::text, '2'::integer) ORDER BY"),
            "{second}"
        );
        // As many rows as make 640 bytes at the size of those two.
        let limit = 640 * 2 / data.len();
        assert!(
            second.ends_with(&format!("LIMIT {limit}) TO STDOUT")),
            "{second}"
        );
        // Fewer rows than asked for: the table is done.
        chunks.record(5, b"a\t1\tx\n").expect("recorded");
        assert_eq!(chunks.next_statement(), None);
    }

    #[test]
    fn page_pieces_end_open_ended() {
        let size = RelationSize {
            rows: 100,
            pages: 3,
            bytes: 3 * 8192,
        };
        let mut chunks = TableChunks::by_page("s", "t", &["\"a\"".into()], size, 8192 * 4);
        let first = chunks.next_statement().expect("a first piece");
        assert_eq!(
            first,
            "COPY (SELECT \"a\" FROM \"s\".\"t\" WHERE ctid >= '(0,0)' AND ctid < '(1,0)') TO STDOUT"
        );
        chunks.record(10, &[b'x'; 8192]).expect("recorded");
        // 8192 bytes a page: four pages reach past the end.
        let last = chunks.next_statement().expect("the last piece");
        assert_eq!(
            last,
            "COPY (SELECT \"a\" FROM \"s\".\"t\" WHERE ctid >= '(1,0)') TO STDOUT"
        );
        chunks.record(90, b"").expect("recorded");
        assert_eq!(chunks.next_statement(), None);

        // An empty table is one open-ended piece.
        let empty = RelationSize {
            rows: 0,
            pages: 0,
            bytes: 0,
        };
        let mut chunks = TableChunks::by_page("s", "t", &["\"a\"".into()], empty, 1 << 20);
        let only = chunks.next_statement().expect("one piece");
        assert!(only.ends_with("WHERE ctid >= '(0,0)') TO STDOUT"), "{only}");
        chunks.record(0, b"").expect("recorded");
        assert_eq!(chunks.next_statement(), None);
    }

    #[test]
    fn a_key_piece_without_a_last_row_is_an_error_not_a_panic() {
        let size = RelationSize {
            rows: 1,
            pages: 1,
            bytes: 1,
        };
        let mut chunks = TableChunks::by_key(
            "s",
            "t",
            &["\"a\"".into()],
            vec![key(0, "a", "text")],
            size,
            1,
        );
        assert!(chunks.next_statement().is_some());
        assert!(chunks.record(1, b"no newline").is_err());
        let mut chunks = TableChunks::by_key(
            "s",
            "t",
            &["\"a\"".into()],
            vec![key(3, "a", "text")],
            size,
            1,
        );
        assert!(chunks.next_statement().is_some());
        assert!(chunks.record(1, b"x\n").is_err());
    }
}
