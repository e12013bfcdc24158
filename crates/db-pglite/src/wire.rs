//! The PostgreSQL frontend/backend protocol, as far as this backend speaks it:
//! building extended-query and simple-query messages, and reading the
//! responses PGlite returns for them.

use std::sync::Arc;

use db_core::backend::AddressFamilies;
use db_core::{
    Column, CopyDirection, DbError, Error, Notification, QueryResult, Result, Row, Type, Value,
};

/// Appends a message with a type byte and a length-prefixed body.
fn message(
    buf: &mut Vec<u8>,
    tag: u8,
    body: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    buf.push(tag);
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    body(buf)?;
    let len = i32::try_from(buf.len() - start)
        .map_err(|_| Error::Protocol("message longer than 2 GiB".into()))?;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn cstr(buf: &mut Vec<u8>, s: &str) -> Result<()> {
    if s.as_bytes().contains(&0) {
        return Err(Error::Protocol(
            "statement text or name contains a NUL byte, which PostgreSQL cannot accept".into(),
        ));
    }
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
    Ok(())
}

/// Parameters encoded once on the caller's thread: their type OIDs and the
/// parameter section of a Bind message.
#[derive(Debug, Default)]
pub(crate) struct EncodedParams {
    pub(crate) oids: Vec<u32>,
    pub(crate) bind: Vec<u8>,
}

/// Encodes `params` in binary format.
pub(crate) fn encode_params(params: &[Value]) -> Result<EncodedParams> {
    let count = i16::try_from(params.len()).map_err(|_| {
        Error::Protocol(format!(
            "{} parameters exceed the protocol's 32767",
            params.len()
        ))
    })?;
    let mut bind = Vec::with_capacity(8 + params.len() * 12);
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&count.to_be_bytes());
    let mut oids = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        oids.push(p.type_of().oid());
        if p.is_null() {
            bind.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let start = bind.len();
        bind.extend_from_slice(&[0; 4]);
        db_core::backend::encode_with(p, &mut bind, AddressFamilies::Wasi).map_err(|source| {
            Error::Encode {
                position: i + 1,
                source,
            }
        })?;
        let len = i32::try_from(bind.len() - start - 4)
            .map_err(|_| Error::Protocol(format!("parameter ${} is larger than 2 GiB", i + 1)))?;
        bind[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(EncodedParams { oids, bind })
}

/// `Parse` of a named statement.
pub(crate) fn parse(buf: &mut Vec<u8>, name: &str, sql: &str, oids: &[u32]) -> Result<()> {
    message(buf, b'P', |b| {
        cstr(b, name)?;
        cstr(b, sql)?;
        let n =
            i16::try_from(oids.len()).map_err(|_| Error::Protocol("too many parameters".into()))?;
        b.extend_from_slice(&n.to_be_bytes());
        for oid in oids {
            b.extend_from_slice(&oid.to_be_bytes());
        }
        Ok(())
    })
}

/// `Bind` of the unnamed portal, all results in binary.
pub(crate) fn bind(buf: &mut Vec<u8>, statement: &str, params: &EncodedParams) -> Result<()> {
    bind_portal(buf, "", statement, params)
}

/// `Bind` of portal `portal` (`""`: the unnamed one), all results in binary.
pub(crate) fn bind_portal(
    buf: &mut Vec<u8>,
    portal: &str,
    statement: &str,
    params: &EncodedParams,
) -> Result<()> {
    message(buf, b'B', |b| {
        cstr(b, portal)?;
        cstr(b, statement)?;
        if params.bind.is_empty() {
            b.extend_from_slice(&[0, 0, 0, 0]);
        } else {
            b.extend_from_slice(&params.bind);
        }
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        Ok(())
    })
}

/// `Describe` of the unnamed portal.
pub(crate) fn describe_portal(buf: &mut Vec<u8>) -> Result<()> {
    describe_named_portal(buf, "")
}

/// `Describe` of portal `portal`.
pub(crate) fn describe_named_portal(buf: &mut Vec<u8>, portal: &str) -> Result<()> {
    message(buf, b'D', |b| {
        b.push(b'P');
        cstr(b, portal)
    })
}

/// `Execute` of the unnamed portal, all rows.
pub(crate) fn execute(buf: &mut Vec<u8>) -> Result<()> {
    execute_limited(buf, 0)
}

/// `Execute` of the unnamed portal, at most `max_rows` rows (0: all). A
/// portal with rows left answers with `PortalSuspended` and runs on at the
/// next `Execute`, until the `Sync` that ends its exchange.
pub(crate) fn execute_limited(buf: &mut Vec<u8>, max_rows: u32) -> Result<()> {
    execute_portal(buf, "", max_rows)
}

/// `Execute` of portal `portal`, at most `max_rows` rows (0: all).
pub(crate) fn execute_portal(buf: &mut Vec<u8>, portal: &str, max_rows: u32) -> Result<()> {
    let max_rows = i32::try_from(max_rows).unwrap_or(i32::MAX);
    message(buf, b'E', |b| {
        cstr(b, portal)?;
        b.extend_from_slice(&max_rows.to_be_bytes());
        Ok(())
    })
}

/// `Flush`: answer what was sent so far without ending the exchange (a
/// suspended portal stays open).
pub(crate) fn flush(buf: &mut Vec<u8>) -> Result<()> {
    message(buf, b'H', |_| Ok(()))
}

/// `Close` of the unnamed portal.
pub(crate) fn close_portal(buf: &mut Vec<u8>) -> Result<()> {
    close_named_portal(buf, "")
}

/// `Close` of portal `portal`.
pub(crate) fn close_named_portal(buf: &mut Vec<u8>, portal: &str) -> Result<()> {
    message(buf, b'C', |b| {
        b.push(b'P');
        cstr(b, portal)
    })
}

/// `Close` of a named statement.
pub(crate) fn close_statement(buf: &mut Vec<u8>, name: &str) -> Result<()> {
    message(buf, b'C', |b| {
        b.push(b'S');
        cstr(b, name)
    })
}

/// `Sync`.
pub(crate) fn sync(buf: &mut Vec<u8>) -> Result<()> {
    message(buf, b'S', |_| Ok(()))
}

/// A simple `Query`.
pub(crate) fn query(buf: &mut Vec<u8>, sql: &str) -> Result<()> {
    message(buf, b'Q', |b| cstr(b, sql))
}

/// The most input one `CopyData` message carries.
const COPY_DATA_CHUNK: usize = 256 * 1024;

/// A simple `Query` running `sql` (a `COPY ... FROM STDIN`) followed by
/// `data` in `CopyData` messages and a `CopyDone`.
///
/// Sent as one buffer: if the server refuses the statement, it ignores the
/// copy messages that follow (as the protocol says it must).
pub(crate) fn copy_in(sql: &str, data: &[u8]) -> Result<Vec<u8>> {
    let chunks = data.len().div_ceil(COPY_DATA_CHUNK);
    let mut buf = Vec::with_capacity(sql.len() + data.len() + 5 * chunks + 16);
    query(&mut buf, sql)?;
    for chunk in data.chunks(COPY_DATA_CHUNK) {
        message(&mut buf, b'd', |b| {
            b.extend_from_slice(chunk);
            Ok(())
        })?;
    }
    message(&mut buf, b'c', |_| Ok(()))?;
    Ok(buf)
}

/// A simple `Query` running `sql` (a `COPY ... TO STDOUT`) followed by a
/// `CopyFail`, which the server ignores after a `COPY TO` and which ends
/// a `COPY FROM STDIN` at once instead of leaving it waiting for input.
pub(crate) fn copy_out(sql: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(sql.len() + 64);
    query(&mut buf, sql)?;
    message(&mut buf, b'f', |b| {
        cstr(b, "copy_out expects COPY ... TO STDOUT")
    })?;
    Ok(buf)
}

/// Reads backend messages from a response buffer.
pub(crate) struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Messages<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Messages { buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<(u8, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let Some(header) = self.buf.get(..5) else {
            self.buf = &[];
            return Some(Err(Error::Protocol("truncated message header".into())));
        };
        let tag = header[0];
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let Some(end) = usize::try_from(len).ok().filter(|&l| l >= 4).map(|l| l + 1) else {
            self.buf = &[];
            return Some(Err(Error::Protocol(format!(
                "invalid length {len} of message {:?}",
                tag as char
            ))));
        };
        let Some(body) = self.buf.get(5..end) else {
            self.buf = &[];
            return Some(Err(Error::Protocol(format!(
                "truncated message {:?}",
                tag as char
            ))));
        };
        self.buf = &self.buf[end..];
        Some(Ok((tag, body)))
    }
}

/// A cursor over one message body.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Protocol("message body truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn cstr(&mut self) -> Result<&'a str> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| Error::Protocol("unterminated string".into()))?;
        let s = std::str::from_utf8(&self.0[..end])
            .map_err(|_| Error::Protocol("string is not UTF-8".into()))?;
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
}

/// Decodes a `RowDescription`.
pub(crate) fn row_description(body: &[u8]) -> Result<Arc<[Column]>> {
    let mut b = Body(body);
    let n = b.i16()?;
    let mut columns = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for _ in 0..n {
        let name = b.cstr()?.to_owned();
        b.bytes(6)?;
        let oid = b.i32()? as u32;
        b.bytes(8)?;
        columns.push(Column::new(name, Type::from_oid(oid)));
    }
    Ok(columns.into())
}

/// Decodes an `ErrorResponse` (or `NoticeResponse`).
pub(crate) fn error_response(body: &[u8]) -> Result<DbError> {
    let mut b = Body(body);
    let mut fields = Vec::new();
    loop {
        let kind = b.bytes(1)?[0];
        if kind == 0 {
            break;
        }
        fields.push((kind, b.cstr()?));
    }
    Ok(DbError::from_fields(fields))
}

/// Decodes a `NotificationResponse`.
pub(crate) fn notification(body: &[u8]) -> Result<Notification> {
    let mut b = Body(body);
    let process_id = b.i32()?;
    let channel = b.cstr()?.to_owned();
    let payload = b.cstr()?.to_owned();
    Ok(Notification {
        channel,
        payload,
        process_id,
    })
}

fn data_row(body: &[u8], columns: &Arc<[Column]>) -> Result<Row> {
    let mut b = Body(body);
    let n = usize::try_from(b.i16()?).unwrap_or(0);
    if n != columns.len() {
        return Err(Error::Protocol(format!(
            "data row has {n} values for {} columns",
            columns.len()
        )));
    }
    let mut values = Vec::with_capacity(n);
    for column in columns.iter() {
        let len = b.i32()?;
        if len < 0 {
            values.push(Value::Null);
            continue;
        }
        let raw = b.bytes(usize::try_from(len).unwrap_or(0))?;
        let value = db_core::decode(column.wire_type(), raw).map_err(|source| Error::Decode {
            column: column.name().to_owned(),
            source,
        })?;
        values.push(value);
    }
    Ok(Row::new(Arc::clone(columns), values))
}

/// Logs a `NoticeResponse` the way every statement's notices are logged.
fn log_notice(body: &[u8]) -> Result<()> {
    let notice = error_response(body)?;
    tracing::info!(target: "db::notice", code = %notice.code, "{}", notice.message);
    Ok(())
}

/// Reads the response to one extended-protocol statement (or to a simple
/// query, whose rows are ignored): its rows, the command tag's count, and the
/// first error.
pub(crate) fn read_result(
    data: &[u8],
    mut columns: Option<Arc<[Column]>>,
    keep_rows: bool,
) -> Result<QueryResult> {
    let mut result = QueryResult::default();
    let mut error = None;
    for msg in Messages::new(data) {
        let (tag, body) = msg?;
        match tag {
            // A statement's own columns (resolved by the driver) win over
            // the description in the data.
            b'T' if columns.is_none() => columns = Some(row_description(body)?),
            b'D' if keep_rows && error.is_none() => {
                let cols = columns
                    .as_ref()
                    .ok_or_else(|| Error::Protocol("data row without a row description".into()))?;
                match data_row(body, cols) {
                    Ok(row) => result.rows.push(row),
                    Err(e) => error = Some(e),
                }
            }
            b'C' => {
                let tag = Body(body).cstr()?;
                result.rows_affected = db_core::backend::rows_from_command_tag(tag);
            }
            b'E' if error.is_none() => error = Some(Error::from(error_response(body)?)),
            b'N' => log_notice(body)?,
            _ => {}
        }
    }
    result.columns = columns.unwrap_or_default();
    match error {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

/// One batch of a row stream: the rows of one limited `Execute`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) rows: Vec<Row>,
    /// The portal has rows left (`PortalSuspended`).
    pub(crate) suspended: bool,
    /// The error that ended the statement, after `rows`.
    pub(crate) error: Option<Error>,
    /// The command tag's row count, once the statement completed.
    pub(crate) rows_affected: u64,
}

/// Reads the response to one limited `Execute` of a row stream, its rows
/// described by `columns` (or by a `RowDescription` in the response).
pub(crate) fn read_batch(data: &[u8], columns: Option<&Arc<[Column]>>) -> Result<Batch> {
    let mut columns = columns.cloned();
    let mut batch = Batch::default();
    for msg in Messages::new(data) {
        let (tag, body) = msg?;
        match tag {
            // The driver's resolved columns win, as in `read_result`.
            b'T' if columns.is_none() => columns = Some(row_description(body)?),
            b'D' if batch.error.is_none() => {
                let cols = columns
                    .as_ref()
                    .ok_or_else(|| Error::Protocol("data row without a row description".into()))?;
                match data_row(body, cols) {
                    Ok(row) => batch.rows.push(row),
                    Err(e) => batch.error = Some(e),
                }
            }
            b's' => batch.suspended = true,
            b'C' => {
                batch.rows_affected = db_core::backend::rows_from_command_tag(Body(body).cstr()?)
            }
            b'E' if batch.error.is_none() => {
                batch.error = Some(Error::from(error_response(body)?));
            }
            b'N' => log_notice(body)?,
            _ => {}
        }
    }
    Ok(batch)
}

/// What a response said about a `COPY`, besides its rows.
#[derive(Debug, Default)]
struct CopyOutcome {
    /// The server switched to copying in this direction.
    started: bool,
    /// The server switched to copying in the other direction.
    reversed: bool,
    rows: u64,
    error: Option<Error>,
}

impl CopyOutcome {
    fn into_result(self, direction: CopyDirection, sql: &str) -> Result<u64> {
        // A COPY of the other direction fails (it is ended by the client's
        // trailing copy messages): say what was wrong with it instead.
        if self.reversed || (!self.started && self.error.is_none()) {
            return Err(Error::NotCopy {
                direction,
                statement: sql.to_owned(),
            });
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.rows),
        }
    }
}

/// Reads the response to [`copy_in`]: the rows copied, or the first error.
pub(crate) fn read_copy_in(data: &[u8], sql: &str) -> Result<u64> {
    read_copy(data, CopyDirection::In, |_| Ok(()))?.into_result(CopyDirection::In, sql)
}

/// Reads the response to [`copy_out`], passing the payload of each
/// `CopyData` message to `sink` in order until `sink` fails. Returns the
/// rows copied, or `sink`'s error, or the server's first error.
pub(crate) fn read_copy_out(
    data: &[u8],
    sql: &str,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut sink_error = None;
    let outcome = read_copy(data, CopyDirection::Out, |chunk| {
        if sink_error.is_none()
            && let Err(e) = sink(chunk)
        {
            sink_error = Some(e);
        }
        Ok(())
    })?;
    match sink_error {
        Some(e) => Err(e),
        None => outcome.into_result(CopyDirection::Out, sql),
    }
}

fn read_copy(
    data: &[u8],
    direction: CopyDirection,
    mut on_data: impl FnMut(&[u8]) -> Result<()>,
) -> Result<CopyOutcome> {
    let (ours, theirs) = match direction {
        CopyDirection::In => (b'G', b'H'),
        CopyDirection::Out => (b'H', b'G'),
    };
    let mut outcome = CopyOutcome::default();
    for msg in Messages::new(data) {
        let (tag, body) = msg?;
        match tag {
            t if t == ours => outcome.started = true,
            t if t == theirs => outcome.reversed = true,
            b'd' if outcome.started && !outcome.reversed => on_data(body)?,
            b'C' => {
                let tag = Body(body).cstr()?;
                outcome.rows = db_core::backend::rows_from_command_tag(tag);
            }
            b'E' if outcome.error.is_none() => {
                outcome.error = Some(Error::from(error_response(body)?));
            }
            b'N' => log_notice(body)?,
            _ => {}
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        assert!(read_result(&[b'D', 0, 0, 0, 2], None, true).is_err());
        assert!(read_result(&[b'T', 0, 0, 0, 6, 0, 1], None, true).is_err());
        assert!(read_result(b"C", None, true).is_err());
    }

    #[test]
    fn nul_in_sql_is_rejected_before_sending() {
        assert!(query(&mut Vec::new(), "select 1\0").is_err());
    }

    /// A backend response made of `(tag, body)` messages.
    fn response(messages: &[(u8, &[u8])]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (tag, body) in messages {
            message(&mut buf, *tag, |b| {
                b.extend_from_slice(body);
                Ok(())
            })
            .expect("a small message");
        }
        buf
    }

    #[test]
    fn copy_out_passes_chunks_and_counts_rows() {
        let data = response(&[
            (b'H', b"\0\0\0"),
            (b'd', b"1\n"),
            (b'd', b"2\n"),
            (b'c', b""),
            (b'C', b"COPY 2\0"),
            (b'Z', b"I"),
        ]);
        let mut seen = Vec::new();
        let rows = read_copy_out(&data, "COPY t TO STDOUT", |c| {
            seen.push(c.to_vec());
            Ok(())
        });
        assert_eq!(rows.expect("rows"), 2);
        assert_eq!(seen, [b"1\n".to_vec(), b"2\n".to_vec()]);
    }

    #[test]
    fn a_copy_of_the_other_direction_is_named_as_such() {
        let not_copy = |r: Result<u64>| matches!(r, Err(Error::NotCopy { .. }));
        // COPY TO answered with the data the client did not ask for.
        let out = response(&[
            (b'H', b"\0\0\0"),
            (b'd', b"1\n"),
            (b'c', b""),
            (b'C', b"COPY 1\0"),
            (b'Z', b"I"),
        ]);
        assert!(not_copy(read_copy_in(&out, "x")));
        // COPY FROM ended by copy_out's trailing CopyFail.
        let failed = response(&[
            (b'G', b"\0\0\0"),
            (b'E', b"SERROR\0C57014\0MCOPY from stdin failed\0\0"),
            (b'Z', b"I"),
        ]);
        assert!(not_copy(read_copy_out(&failed, "x", |_| panic!("no data"))));
        // A plain statement.
        let select = response(&[(b'C', b"SELECT 0\0"), (b'Z', b"I")]);
        assert!(not_copy(read_copy_in(&select, "x")));
        // A server error before the copy started is passed on.
        let refused = response(&[(b'E', b"SERROR\0C42P01\0Mno table\0\0"), (b'Z', b"I")]);
        let err = read_copy_in(&refused, "x").expect_err("refused");
        assert_eq!(
            err.code().map(|c| c.code().to_owned()).as_deref(),
            Some("42P01")
        );
    }
}
