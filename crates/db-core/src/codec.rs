//! PostgreSQL's binary wire format for [`Value`]s.
//!
//! Both backends exchange values in binary format and run them through this
//! one codec, which is what makes a value read on PGlite identical to the same
//! value read from a PostgreSQL server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use uuid::Uuid;

use crate::types::Type;
use crate::value::{Array, BitString, Inet, Interval, Numeric, Value};

/// A value could not be decoded from, or encoded to, the binary format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ty}: {message}")]
pub struct CodecError {
    /// The SQL type involved.
    pub ty: Type,
    /// What was wrong.
    pub message: String,
}

impl CodecError {
    fn new(ty: Type, message: impl Into<String>) -> Self {
        CodecError {
            ty,
            message: message.into(),
        }
    }
}

/// 2000-01-01, PostgreSQL's epoch for dates and timestamps.
fn pg_epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(NaiveDate::MIN)
}

fn pg_epoch() -> NaiveDateTime {
    pg_epoch_date().and_time(NaiveTime::MIN)
}

struct Reader<'a> {
    ty: Type,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::new(
                self.ty,
                format!(
                    "value truncated: needed {n} more bytes, {} left",
                    self.buf.len()
                ),
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, CodecError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError::new(
                self.ty,
                format!("{} unexpected trailing bytes", self.buf.len()),
            ))
        }
    }
}

fn utf8(ty: Type, bytes: &[u8]) -> Result<String, CodecError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| CodecError::new(ty, format!("invalid UTF-8: {e}")))
}

/// Decodes one non-NULL value of type `ty` from its binary representation.
///
/// Types the model does not know come back as [`Value::Other`].
pub fn decode(ty: Type, bytes: &[u8]) -> Result<Value, CodecError> {
    let mut r = Reader { ty, buf: bytes };
    let value = match ty {
        Type::BOOL => Value::Bool(r.u8()? != 0),
        Type::INT2 => Value::Int2(r.i16()?),
        Type::INT4 => Value::Int4(r.i32()?),
        Type::INT8 => Value::Int8(r.i64()?),
        Type::OID | Type::REGPROC | Type::REGCLASS | Type::REGTYPE => Value::Oid(r.u32()?),
        Type::FLOAT4 => Value::Float4(f32::from_be_bytes(r.array()?)),
        Type::FLOAT8 => Value::Float8(f64::from_be_bytes(r.array()?)),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UNKNOWN => {
            return utf8(ty, bytes).map(Value::Text);
        }
        Type::BYTEA => return Ok(Value::Bytea(bytes.to_vec())),
        Type::UUID => Value::Uuid(Uuid::from_bytes(r.array()?)),
        // PostgreSQL's dates and timestamps reach past chrono's (to year
        // 5874897 and 294276): such a value stays in its binary form, so
        // the row is still read and only reading that value as a chrono
        // type fails.
        Type::DATE => match r.i32()? {
            i32::MAX => infinity(ty, false),
            i32::MIN => infinity(ty, true),
            days => decode_date(ty, days).map_or_else(|_| other(ty, bytes), Value::Date),
        },
        Type::TIME => {
            let us = r.i64()?;
            let secs = u32::try_from(us.div_euclid(1_000_000))
                .map_err(|_| CodecError::new(ty, "time out of range"))?;
            let nanos = u32::try_from(us.rem_euclid(1_000_000) * 1000)
                .map_err(|_| CodecError::new(ty, "time out of range"))?;
            // 24:00:00 is a valid PostgreSQL time; chrono represents it as a leap second.
            let time = if secs == 86_400 {
                NaiveTime::from_hms_nano_opt(23, 59, 59, 1_000_000_000 + nanos)
            } else {
                NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
            };
            Value::Time(time.ok_or_else(|| CodecError::new(ty, "time out of range"))?)
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => match r.i64()? {
            i64::MAX => infinity(ty, false),
            i64::MIN => infinity(ty, true),
            us => match decode_timestamp(ty, us) {
                Ok(t) if ty == Type::TIMESTAMP => Value::Timestamp(t),
                Ok(t) => Value::Timestamptz(t.and_utc()),
                Err(_) => other(ty, bytes),
            },
        },
        Type::INTERVAL => {
            let microseconds = r.i64()?;
            let days = r.i32()?;
            let months = r.i32()?;
            Value::Interval(Interval {
                months,
                days,
                microseconds,
            })
        }
        Type::JSON => return json(ty, bytes),
        Type::JSONB => {
            let version = r.u8()?;
            if version != 1 {
                return Err(CodecError::new(
                    ty,
                    format!("unsupported jsonb version {version}"),
                ));
            }
            return json(ty, r.buf);
        }
        Type::INET | Type::CIDR => Value::Inet(decode_inet(&mut r)?),
        Type::BIT | Type::VARBIT => {
            let len = usize::try_from(r.i32()?)
                .map_err(|_| CodecError::new(ty, "negative bit length"))?;
            let bytes = r.take(len.div_ceil(8))?.to_vec();
            Value::Bits(
                BitString::from_bytes(len, bytes)
                    .ok_or_else(|| CodecError::new(ty, "bit string length mismatch"))?,
            )
        }
        Type::NUMERIC => Value::Numeric(decode_numeric(&mut r)?),
        other => match other.element_type() {
            Some(element) => Value::Array(decode_array(&mut r, element)?),
            None => {
                return Ok(Value::Other {
                    type_oid: other.oid(),
                    bytes: bytes.to_vec(),
                });
            }
        },
    };
    r.finish()?;
    Ok(value)
}

fn json(ty: Type, bytes: &[u8]) -> Result<Value, CodecError> {
    serde_json::from_slice(bytes)
        .map(Value::Json)
        .map_err(|e| CodecError::new(ty, format!("invalid JSON: {e}")))
}

/// `infinity` / `-infinity`: PostgreSQL sends them as the largest and
/// smallest value of the type's integer.
fn infinity(ty: Type, negative: bool) -> Value {
    Value::Infinity { ty, negative }
}

/// A value kept in its binary form.
fn other(ty: Type, bytes: &[u8]) -> Value {
    Value::Other {
        type_oid: ty.oid(),
        bytes: bytes.to_vec(),
    }
}

fn decode_date(ty: Type, days: i32) -> Result<NaiveDate, CodecError> {
    pg_epoch_date()
        .checked_add_signed(Duration::days(i64::from(days)))
        .ok_or_else(|| CodecError::new(ty, "date out of range"))
}

fn decode_timestamp(ty: Type, us: i64) -> Result<NaiveDateTime, CodecError> {
    pg_epoch()
        .checked_add_signed(TimeDelta::microseconds(us))
        .ok_or_else(|| CodecError::new(ty, "timestamp out of range"))
}

/// The address-family numbers a server uses in the binary form of `inet`.
///
/// PostgreSQL writes `AF_INET` of the platform it was built for, and IPv6 as
/// that plus one: 2 and 3 on Linux and macOS, but 1 and 2 in PGlite, which is
/// built for WASI. Decoding accepts both (the address length tells them
/// apart); encoding must use the receiving server's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AddressFamilies {
    /// `AF_INET` = 2, as on Linux, macOS and Windows servers.
    #[default]
    Posix,
    /// `AF_INET` = 1, as in WASI builds (PGlite).
    Wasi,
}

impl AddressFamilies {
    fn inet(self) -> u8 {
        match self {
            AddressFamilies::Posix => 2,
            AddressFamilies::Wasi => 1,
        }
    }
}

fn decode_inet(r: &mut Reader<'_>) -> Result<Inet, CodecError> {
    let family = r.u8()?;
    let prefix = r.u8()?;
    let _is_cidr = r.u8()?;
    let len = r.u8()?;
    let addr = match (family, len) {
        (1 | 2, 4) => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        (2 | 3, 16) => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        _ => {
            return Err(CodecError::new(
                r.ty,
                format!("unknown address family {family} with {len} bytes"),
            ));
        }
    };
    Ok(Inet { addr, prefix })
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

fn decode_numeric(r: &mut Reader<'_>) -> Result<Numeric, CodecError> {
    let ndigits = r.i16()?;
    let weight = i32::from(r.i16()?);
    let sign = r.u16()?;
    let dscale = usize::try_from(r.i16()?).map_err(|_| CodecError::new(r.ty, "negative scale"))?;
    let mut digits = Vec::with_capacity(usize::try_from(ndigits).unwrap_or(0));
    for _ in 0..ndigits {
        let d = r.i16()?;
        if !(0..10_000).contains(&d) {
            return Err(CodecError::new(
                r.ty,
                format!("numeric digit {d} out of range"),
            ));
        }
        digits.push(d);
    }
    let text = match sign {
        NUMERIC_NAN => return Ok(parse_numeric("NaN")),
        NUMERIC_PINF => return Ok(parse_numeric("Infinity")),
        NUMERIC_NINF => return Ok(parse_numeric("-Infinity")),
        NUMERIC_POS | NUMERIC_NEG => {
            let group = |p: i32| -> i16 {
                usize::try_from(p)
                    .ok()
                    .and_then(|p| digits.get(p).copied())
                    .unwrap_or(0)
            };
            let mut s = String::new();
            if sign == NUMERIC_NEG && !digits.is_empty() {
                s.push('-');
            }
            if weight < 0 {
                s.push('0');
            } else {
                for e in (0..=weight).rev() {
                    let g = group(weight - e);
                    if e == weight {
                        s.push_str(&g.to_string());
                    } else {
                        s.push_str(&format!("{g:04}"));
                    }
                }
            }
            if dscale > 0 {
                s.push('.');
                let mut frac = String::with_capacity(dscale + 4);
                let mut k = 1;
                while frac.len() < dscale {
                    frac.push_str(&format!("{:04}", group(weight + k)));
                    k += 1;
                }
                frac.truncate(dscale);
                s.push_str(&frac);
            }
            s
        }
        other => {
            return Err(CodecError::new(
                r.ty,
                format!("unknown numeric sign {other:#x}"),
            ));
        }
    };
    Ok(parse_numeric(&text))
}

/// Canonical text produced by this module always parses.
fn parse_numeric(text: &str) -> Numeric {
    text.parse().unwrap_or_else(|_| Numeric::from(0))
}

fn decode_array(r: &mut Reader<'_>, declared: Type) -> Result<Array, CodecError> {
    let ndim = r.i32()?;
    let _has_null = r.i32()?;
    let element_type = Type::from_oid(r.u32()?);
    // The header names the element type, but a type this codec does not
    // know (an enum) is read as the built-in one the caller chose for its
    // binary form (`text`: see `Column::wire_type`).
    let element_type = if element_type == Type::UNKNOWN || element_type.name().is_none() {
        declared
    } else {
        element_type
    };
    let ndim = usize::try_from(ndim).map_err(|_| CodecError::new(r.ty, "negative dimensions"))?;
    let mut dims = Vec::with_capacity(ndim);
    let mut lower_bounds = Vec::with_capacity(ndim);
    let mut total: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        let len = usize::try_from(r.i32()?)
            .map_err(|_| CodecError::new(r.ty, "negative dimension length"))?;
        lower_bounds.push(r.i32()?);
        total = total.saturating_mul(len);
        dims.push(len);
    }
    if lower_bounds.iter().all(|&b| b == 1) {
        lower_bounds.clear();
    }
    // Every element takes at least its 4-byte length, which bounds `total`
    // by the input size before anything is allocated for it.
    if total > r.buf.len() / 4 {
        return Err(CodecError::new(r.ty, "array dimensions exceed the data"));
    }
    let mut elements = Vec::with_capacity(total);
    for _ in 0..total {
        let len = r.i32()?;
        if len < 0 {
            elements.push(Value::Null);
        } else {
            let bytes = r.take(usize::try_from(len).unwrap_or(0))?;
            elements.push(decode(element_type, bytes)?);
        }
    }
    Ok(Array {
        element_type,
        dims,
        lower_bounds,
        elements,
    })
}

/// Appends the binary representation of a non-NULL `value` to `buf`, for a
/// PostgreSQL server on a POSIX platform.
///
/// Returns an error for a NULL (which has no representation) and for arrays
/// whose elements do not match their element type or dimensions.
pub fn encode(value: &Value, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    encode_with(value, buf, AddressFamilies::Posix)
}

/// [`encode`] for a server with the given `inet` address-family numbers.
pub fn encode_with(
    value: &Value,
    buf: &mut Vec<u8>,
    families: AddressFamilies,
) -> Result<(), CodecError> {
    match value {
        Value::Null => return Err(CodecError::new(Type::UNKNOWN, "NULL has no binary form")),
        Value::Bool(v) => buf.push(u8::from(*v)),
        Value::Int2(v) => buf.extend_from_slice(&v.to_be_bytes()),
        Value::Int4(v) => buf.extend_from_slice(&v.to_be_bytes()),
        Value::Int8(v) => buf.extend_from_slice(&v.to_be_bytes()),
        Value::Oid(v) => buf.extend_from_slice(&v.to_be_bytes()),
        Value::Float4(v) => buf.extend_from_slice(&v.to_be_bytes()),
        Value::Float8(v) => buf.extend_from_slice(&v.to_be_bytes()),
        Value::Numeric(v) => encode_numeric(v, buf),
        Value::Text(v) => buf.extend_from_slice(v.as_bytes()),
        Value::Bytea(v) => buf.extend_from_slice(v),
        Value::Uuid(v) => buf.extend_from_slice(v.as_bytes()),
        Value::Date(v) => {
            let days = v.signed_duration_since(pg_epoch_date()).num_days();
            let days = i32::try_from(days)
                .map_err(|_| CodecError::new(Type::DATE, "date out of range"))?;
            buf.extend_from_slice(&days.to_be_bytes());
        }
        Value::Time(v) => {
            let us = v
                .signed_duration_since(NaiveTime::MIN)
                .num_microseconds()
                .unwrap_or(0);
            buf.extend_from_slice(&us.to_be_bytes());
        }
        Value::Timestamp(v) => {
            buf.extend_from_slice(&timestamp_micros(Type::TIMESTAMP, v)?.to_be_bytes())
        }
        Value::Timestamptz(v) => {
            buf.extend_from_slice(
                &timestamp_micros(Type::TIMESTAMPTZ, &v.naive_utc())?.to_be_bytes(),
            );
        }
        Value::Infinity { ty, negative } => match *ty {
            Type::DATE => {
                let days = if *negative { i32::MIN } else { i32::MAX };
                buf.extend_from_slice(&days.to_be_bytes());
            }
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let us = if *negative { i64::MIN } else { i64::MAX };
                buf.extend_from_slice(&us.to_be_bytes());
            }
            other => {
                return Err(CodecError::new(
                    other,
                    "only date, timestamp and timestamptz have infinity",
                ));
            }
        },
        Value::Interval(v) => {
            buf.extend_from_slice(&v.microseconds.to_be_bytes());
            buf.extend_from_slice(&v.days.to_be_bytes());
            buf.extend_from_slice(&v.months.to_be_bytes());
        }
        Value::Json(v) => {
            buf.push(1);
            serde_json::to_writer(&mut *buf, v)
                .map_err(|e| CodecError::new(Type::JSONB, e.to_string()))?;
        }
        Value::Inet(v) => {
            let (family, max, bytes): (u8, u8, Vec<u8>) = match v.addr {
                IpAddr::V4(a) => (families.inet(), 32, a.octets().to_vec()),
                IpAddr::V6(a) => (families.inet() + 1, 128, a.octets().to_vec()),
            };
            if v.prefix > max {
                return Err(CodecError::new(
                    Type::INET,
                    format!("prefix length {} exceeds {max}", v.prefix),
                ));
            }
            buf.extend_from_slice(&[family, v.prefix, 0, bytes.len() as u8]);
            buf.extend_from_slice(&bytes);
        }
        Value::Bits(v) => {
            let len = i32::try_from(v.len())
                .map_err(|_| CodecError::new(Type::VARBIT, "bit string too long"))?;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(v.as_bytes());
        }
        Value::Array(a) => encode_array(a, buf, families)?,
        Value::Unencodable { type_oid, reason } => {
            return Err(CodecError::new(Type::from_oid(*type_oid), reason.clone()));
        }
        Value::Other { bytes, .. } => buf.extend_from_slice(bytes),
    }
    Ok(())
}

fn timestamp_micros(ty: Type, v: &NaiveDateTime) -> Result<i64, CodecError> {
    v.signed_duration_since(pg_epoch())
        .num_microseconds()
        .ok_or_else(|| CodecError::new(ty, "timestamp out of range"))
}

fn encode_numeric(v: &Numeric, buf: &mut Vec<u8>) {
    let s = v.as_str();
    let special = match s {
        "NaN" => Some(NUMERIC_NAN),
        "Infinity" => Some(NUMERIC_PINF),
        "-Infinity" => Some(NUMERIC_NINF),
        _ => None,
    };
    if let Some(sign) = special {
        for word in [0i16, 0] {
            buf.extend_from_slice(&word.to_be_bytes());
        }
        buf.extend_from_slice(&sign.to_be_bytes());
        buf.extend_from_slice(&0i16.to_be_bytes());
        return;
    }
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digit = |b: u8| i16::from(b - b'0');
    let mut groups: Vec<i16> = Vec::new();
    // Integer part, grouped in fours from the right.
    let lead = int.len() % 4;
    let mut chunks: Vec<&[u8]> = Vec::new();
    if lead > 0 {
        chunks.push(&int.as_bytes()[..lead]);
    }
    chunks.extend(int.as_bytes()[lead..].chunks(4));
    for c in &chunks {
        groups.push(c.iter().fold(0, |acc, &b| acc * 10 + digit(b)));
    }
    let mut weight = groups.len() as i32 - 1;
    // Fraction, grouped in fours from the left, padded with zeros.
    for c in frac.as_bytes().chunks(4) {
        let mut g = c.iter().fold(0, |acc, &b| acc * 10 + digit(b));
        for _ in c.len()..4 {
            g *= 10;
        }
        groups.push(g);
    }
    let first = groups.iter().position(|&g| g != 0);
    let (weight, groups) = match first {
        None => (0, Vec::new()),
        Some(first) => {
            weight -= first as i32;
            let last = groups.iter().rposition(|&g| g != 0).unwrap_or(first);
            (weight, groups[first..=last].to_vec())
        }
    };
    let sign = if neg && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    };
    buf.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    buf.extend_from_slice(&(weight as i16).to_be_bytes());
    buf.extend_from_slice(&sign.to_be_bytes());
    buf.extend_from_slice(&(frac.len() as i16).to_be_bytes());
    for g in groups {
        buf.extend_from_slice(&g.to_be_bytes());
    }
}

fn encode_array(a: &Array, buf: &mut Vec<u8>, families: AddressFamilies) -> Result<(), CodecError> {
    let ty = a.element_type.array_type().unwrap_or(Type::UNKNOWN);
    let expected: usize = if a.dims.is_empty() {
        0
    } else {
        a.dims.iter().product()
    };
    if expected != a.elements.len() {
        return Err(CodecError::new(
            ty,
            format!(
                "dimensions {:?} do not match {} elements",
                a.dims,
                a.elements.len()
            ),
        ));
    }
    if !a.lower_bounds.is_empty() && a.lower_bounds.len() != a.dims.len() {
        return Err(CodecError::new(
            ty,
            format!(
                "{} lower bounds for {} dimensions",
                a.lower_bounds.len(),
                a.dims.len()
            ),
        ));
    }
    let ndim =
        i32::try_from(a.dims.len()).map_err(|_| CodecError::new(ty, "too many dimensions"))?;
    buf.extend_from_slice(&ndim.to_be_bytes());
    let has_null = a.elements.iter().any(Value::is_null);
    buf.extend_from_slice(&i32::from(has_null).to_be_bytes());
    buf.extend_from_slice(&a.element_type.oid().to_be_bytes());
    for (i, &d) in a.dims.iter().enumerate() {
        let d = i32::try_from(d).map_err(|_| CodecError::new(ty, "dimension too long"))?;
        buf.extend_from_slice(&d.to_be_bytes());
        let lower = a.lower_bounds.get(i).copied().unwrap_or(1);
        buf.extend_from_slice(&lower.to_be_bytes());
    }
    for e in &a.elements {
        if e.is_null() {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let found = e.type_of();
        let compatible = found == a.element_type
            || (found == Type::TEXT
                && matches!(a.element_type, Type::VARCHAR | Type::BPCHAR | Type::NAME))
            || (found == Type::JSONB && a.element_type == Type::JSON)
            || (found == Type::VARBIT && a.element_type == Type::BIT)
            || (found == Type::INET && a.element_type == Type::CIDR);
        if !compatible {
            return Err(CodecError::new(
                ty,
                format!("element of type {found} in an array of {}", a.element_type),
            ));
        }
        let start = buf.len();
        buf.extend_from_slice(&0i32.to_be_bytes());
        if a.element_type == Type::JSON {
            // `json` has no version byte, unlike `jsonb`.
            if let Value::Json(j) = e {
                serde_json::to_writer(&mut *buf, j)
                    .map_err(|err| CodecError::new(ty, err.to_string()))?;
            }
        } else {
            encode_with(e, buf, families)?;
        }
        let len = i32::try_from(buf.len() - start - 4)
            .map_err(|_| CodecError::new(ty, "element too large"))?;
        buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: Value) {
        let mut buf = Vec::new();
        encode(&v, &mut buf).expect("encode");
        let back = decode(v.type_of(), &buf).expect("decode");
        assert_eq!(back, v);
    }

    #[test]
    fn numeric_roundtrips_exactly() {
        for s in [
            "0",
            "1",
            "-1",
            "0.0001",
            "12345678.9012345678",
            "-0.5",
            "10000",
            "100000000",
            "0.000000001",
            "1.10",
            "1234567890.0000000000",
            "NaN",
            "Infinity",
            "-Infinity",
            "99999999999999999999.9999999999",
        ] {
            let n: Numeric = s.parse().expect("parse");
            assert_eq!(n.as_str(), s);
            roundtrip(Value::Numeric(n));
        }
    }

    #[test]
    fn numeric_normalises_leading_zeros_and_negative_zero() {
        assert_eq!(
            "007.50".parse::<Numeric>().map(|n| n.to_string()),
            Ok("7.50".into())
        );
        assert_eq!(
            "-0.00".parse::<Numeric>().map(|n| n.to_string()),
            Ok("0.00".into())
        );
        assert!("1e5".parse::<Numeric>().is_err());
        assert!("".parse::<Numeric>().is_err());
    }

    #[test]
    fn arrays_keep_nulls_and_dimensions() {
        roundtrip(Value::Array(Array::new(
            Type::INT4,
            vec![Value::Int4(1), Value::Null, Value::Int4(3)],
        )));
        roundtrip(Value::Array(Array::new(Type::TEXT, vec![])));
        roundtrip(Value::Array(Array {
            element_type: Type::INT8,
            dims: vec![2, 2],
            lower_bounds: Vec::new(),
            elements: (1..=4).map(Value::Int8).collect(),
        }));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(decode(Type::INT8, &[0, 1]).is_err());
        assert!(decode(Type::NUMERIC, &[0, 5, 0, 0]).is_err());
        assert!(
            decode(
                Type::from_oid(1007),
                &[
                    0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 127, 255, 255, 255, 0, 0, 0, 1
                ]
            )
            .is_err()
        );
        assert!(decode(Type::JSONB, &[2, b'1']).is_err());
    }

    #[test]
    fn infinities_round_trip() {
        for ty in [Type::DATE, Type::TIMESTAMP, Type::TIMESTAMPTZ] {
            for negative in [false, true] {
                roundtrip(Value::Infinity { ty, negative });
            }
        }
        assert!(
            encode(
                &Value::Infinity {
                    ty: Type::INT4,
                    negative: false
                },
                &mut Vec::new()
            )
            .is_err()
        );
    }

    #[test]
    fn arrays_of_unknown_elements_read_as_the_declared_type() {
        // `mood[]` read as `text[]`: the header names the enum's OID.
        let mut buf = Vec::new();
        encode(
            &Value::Array(Array::new(Type::TEXT, vec![Value::Text("ok".into())])),
            &mut buf,
        )
        .expect("encode");
        buf[8..12].copy_from_slice(&16_500u32.to_be_bytes());
        let back = decode(Type::TEXT.array_type().expect("text[]"), &buf).expect("decode");
        assert_eq!(
            back,
            Value::Array(Array::new(Type::TEXT, vec![Value::Text("ok".into())]))
        );
    }

    #[test]
    fn mismatched_array_elements_are_rejected() {
        let a = Value::Array(Array::new(Type::INT4, vec![Value::Text("x".into())]));
        assert!(encode(&a, &mut Vec::new()).is_err());
    }
}
