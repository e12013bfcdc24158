//! The value model: one enum for every column type the hub stores.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use uuid::Uuid;

use crate::types::Type;

/// A single SQL value, as a parameter or as a result column.
///
/// Values read from either backend are decoded from PostgreSQL's binary
/// format by the same code, so both backends produce identical values.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `smallint`.
    Int2(i16),
    /// `integer` / `serial`.
    Int4(i32),
    /// `bigint` / `bigserial`.
    Int8(i64),
    /// `oid` and the `reg*` aliases.
    Oid(u32),
    /// `real`.
    Float4(f32),
    /// `double precision`.
    Float8(f64),
    /// `numeric`, exactly.
    Numeric(Numeric),
    /// `text`, `varchar(n)`, `char(n)`, `name` and `"char"`.
    Text(String),
    /// `bytea`.
    Bytea(Vec<u8>),
    /// `uuid`.
    Uuid(Uuid),
    /// `date`.
    Date(NaiveDate),
    /// `time without time zone`.
    Time(NaiveTime),
    /// `timestamp without time zone`; read as UTC by [`chrono::DateTime<Utc>`] conversions.
    Timestamp(NaiveDateTime),
    /// `timestamp with time zone`.
    Timestamptz(DateTime<Utc>),
    /// `interval`.
    Interval(Interval),
    /// `json` and `jsonb`.
    Json(serde_json::Value),
    /// `inet` and `cidr`.
    Inet(Inet),
    /// `bit varying(n)` and `bit(n)`.
    Bits(BitString),
    /// `infinity` or `-infinity` of a `date`, `timestamp` or `timestamptz`,
    /// which chrono's types cannot hold. Read such a column as
    /// [`Infinite<T>`]; reading it as a plain chrono type fails with
    /// [`FromValueError::Infinity`](crate::FromValueError::Infinity).
    Infinity {
        /// [`Type::DATE`], [`Type::TIMESTAMP`] or [`Type::TIMESTAMPTZ`].
        ty: Type,
        /// `-infinity` rather than `infinity`.
        negative: bool,
    },
    /// An array of any of the above, possibly multi-dimensional, with NULL elements.
    Array(Array),
    /// A parameter that could not be converted to SQL: a
    /// [`Json`](crate::Json) value serde could not serialize. Running a
    /// statement with it fails with [`Error::Encode`](crate::Error::Encode)
    /// naming its position and this reason, before anything is sent. Never
    /// read from a database.
    Unencodable {
        /// The OID of the type it was to be sent as.
        type_oid: u32,
        /// Why it could not be converted.
        reason: String,
    },
    /// A value of a type this model does not decode, kept as its binary form.
    Other {
        /// The type's OID.
        type_oid: u32,
        /// PostgreSQL's binary representation.
        bytes: Vec<u8>,
    },
}

impl Value {
    /// Whether this is SQL `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The SQL type this value is sent as when bound as a parameter.
    ///
    /// `NULL` is sent untyped so that the server infers the type from context.
    pub fn type_of(&self) -> Type {
        match self {
            Value::Null => Type::UNKNOWN,
            Value::Bool(_) => Type::BOOL,
            Value::Int2(_) => Type::INT2,
            Value::Int4(_) => Type::INT4,
            Value::Int8(_) => Type::INT8,
            Value::Oid(_) => Type::OID,
            Value::Float4(_) => Type::FLOAT4,
            Value::Float8(_) => Type::FLOAT8,
            Value::Numeric(_) => Type::NUMERIC,
            Value::Text(_) => Type::TEXT,
            Value::Bytea(_) => Type::BYTEA,
            Value::Uuid(_) => Type::UUID,
            Value::Date(_) => Type::DATE,
            Value::Time(_) => Type::TIME,
            Value::Timestamp(_) => Type::TIMESTAMP,
            Value::Timestamptz(_) => Type::TIMESTAMPTZ,
            Value::Interval(_) => Type::INTERVAL,
            Value::Json(_) => Type::JSONB,
            Value::Inet(_) => Type::INET,
            Value::Bits(_) => Type::VARBIT,
            Value::Infinity { ty, .. } => *ty,
            Value::Array(a) => a.element_type.array_type().unwrap_or(Type::UNKNOWN),
            Value::Unencodable { type_oid, .. } | Value::Other { type_oid, .. } => {
                Type::from_oid(*type_oid)
            }
        }
    }

    /// A short name of the variant, used in conversion errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "boolean",
            Value::Int2(_) => "smallint",
            Value::Int4(_) => "integer",
            Value::Int8(_) => "bigint",
            Value::Oid(_) => "oid",
            Value::Float4(_) => "real",
            Value::Float8(_) => "double precision",
            Value::Numeric(_) => "numeric",
            Value::Text(_) => "text",
            Value::Bytea(_) => "bytea",
            Value::Uuid(_) => "uuid",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Timestamp(_) => "timestamp",
            Value::Timestamptz(_) => "timestamptz",
            Value::Interval(_) => "interval",
            Value::Json(_) => "json",
            Value::Inet(_) => "inet",
            Value::Bits(_) => "bit varying",
            Value::Infinity {
                negative: false, ..
            } => "infinity",
            Value::Infinity { negative: true, .. } => "-infinity",
            Value::Array(_) => "array",
            Value::Unencodable { .. } => "unencodable",
            Value::Other { .. } => "other",
        }
    }
}

/// An exact `numeric` value, kept as PostgreSQL's canonical decimal text
/// (`-12.3400`, `NaN`, `Infinity`, `-Infinity`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Numeric(String);

impl Numeric {
    /// The canonical decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The text given to [`Numeric::from_str`] is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid numeric literal {0:?}: expected digits with an optional sign, point and exponent-free fraction, or NaN / Infinity"
)]
pub struct ParseNumericError(pub String);

impl FromStr for Numeric {
    type Err = ParseNumericError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t {
            "NaN" | "nan" => return Ok(Numeric("NaN".into())),
            "Infinity" | "+Infinity" | "inf" => return Ok(Numeric("Infinity".into())),
            "-Infinity" | "-inf" => return Ok(Numeric("-Infinity".into())),
            _ => {}
        }
        let (neg, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits_ok(int) || !digits_ok(frac) {
            return Err(ParseNumericError(s.to_owned()));
        }
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let zero = int == "0" && frac.bytes().all(|b| b == b'0');
        let mut out = String::with_capacity(t.len() + 1);
        if neg && !zero {
            out.push('-');
        }
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        Ok(Numeric(out))
    }
}

impl From<i64> for Numeric {
    fn from(v: i64) -> Self {
        Numeric(v.to_string())
    }
}

impl From<i32> for Numeric {
    fn from(v: i32) -> Self {
        Numeric(v.to_string())
    }
}

/// An `interval`: PostgreSQL keeps months, days and microseconds apart.
///
/// It converts to and from [`chrono::TimeDelta`] with `TryFrom`, and a
/// `TimeDelta` is itself usable as an `interval` parameter and column type.
/// A day counts as exactly 24 hours in that conversion (PostgreSQL's own
/// `extract(epoch from ...)` does the same); an interval with months has no
/// fixed length and does not convert ([`IntervalError::Months`]).
///
/// ```
/// use chrono::TimeDelta;
/// use db_core::{Interval, IntervalError};
///
/// let day_and_a_bit = Interval::new(0, 1, 1_500_000);
/// assert_eq!(
///     TimeDelta::try_from(day_and_a_bit),
///     Ok(TimeDelta::hours(24) + TimeDelta::milliseconds(1500))
/// );
/// assert_eq!(
///     TimeDelta::try_from(Interval::new(1, 0, 0)),
///     Err(IntervalError::Months { months: 1 })
/// );
/// assert_eq!(Interval::try_from(TimeDelta::seconds(90)), Ok(Interval::new(0, 0, 90_000_000)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Interval {
    /// Whole months.
    pub months: i32,
    /// Whole days.
    pub days: i32,
    /// Microseconds.
    pub microseconds: i64,
}

impl Interval {
    /// An interval of the given parts.
    pub fn new(months: i32, days: i32, microseconds: i64) -> Self {
        Interval {
            months,
            days,
            microseconds,
        }
    }
}

/// An [`Interval`] and a [`chrono::TimeDelta`] could not be converted into
/// each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntervalError {
    /// The interval has a months part, whose length (28 to 31 days) depends
    /// on the date it is added to.
    #[error(
        "an interval of {months} month(s) has no fixed length and cannot convert to a TimeDelta (keep it as db::Interval, or use days)"
    )]
    Months {
        /// The interval's months.
        months: i32,
    },
    /// The value does not fit in the other type's range.
    #[error("the duration is out of the range of {target}")]
    OutOfRange {
        /// The type it did not fit in.
        target: &'static str,
    },
    /// The `TimeDelta` has nanoseconds, and an interval holds microseconds.
    #[error(
        "a TimeDelta of {nanoseconds} nanoseconds (past the whole microseconds) is finer than an interval's microseconds"
    )]
    SubMicrosecond {
        /// The nanoseconds past whole microseconds.
        nanoseconds: i64,
    },
}

impl TryFrom<Interval> for chrono::TimeDelta {
    type Error = IntervalError;

    /// Days count as 24 hours; an interval with months fails.
    fn try_from(v: Interval) -> Result<Self, Self::Error> {
        if v.months != 0 {
            return Err(IntervalError::Months { months: v.months });
        }
        // Through TimeDelta's own range (about 1e11 days), not an i64 of
        // microseconds: an interval of 200,000,000 days fits the one and
        // not the other.
        chrono::TimeDelta::try_days(i64::from(v.days))
            .and_then(|days| days.checked_add(&chrono::TimeDelta::microseconds(v.microseconds)))
            .ok_or(IntervalError::OutOfRange {
                target: "chrono::TimeDelta",
            })
    }
}

impl TryFrom<chrono::TimeDelta> for Interval {
    type Error = IntervalError;

    /// All of it goes to [`Interval::microseconds`] (months and days zero),
    /// as sqlx's `PgInterval` does, and PostgreSQL prints it as hours; a
    /// duration beyond an `i64` of microseconds (about 292,000 years) goes
    /// to whole days plus the rest.
    fn try_from(v: chrono::TimeDelta) -> Result<Self, Self::Error> {
        let nanos = i64::from(v.subsec_nanos());
        if nanos % 1_000 != 0 {
            return Err(IntervalError::SubMicrosecond {
                nanoseconds: nanos % 1_000,
            });
        }
        if let Some(us) = v.num_microseconds() {
            return Ok(Interval::new(0, 0, us));
        }
        // As few whole days as leave the rest within the microseconds.
        const MAX_SECONDS: i64 = i64::MAX / 1_000_000;
        let out_of_range = IntervalError::OutOfRange { target: "interval" };
        let seconds = v.num_seconds();
        let excess = seconds
            .unsigned_abs()
            .saturating_sub(MAX_SECONDS.unsigned_abs());
        let days = i64::try_from(excess.div_ceil(86_400)).unwrap_or(i64::MAX) * seconds.signum();
        let microseconds = days
            .checked_mul(86_400)
            .and_then(|d| seconds.checked_sub(d))
            .and_then(|rest| rest.checked_mul(1_000_000))
            .and_then(|rest| rest.checked_add(nanos / 1_000))
            .ok_or(out_of_range.clone())?;
        let days = i32::try_from(days).map_err(|_| out_of_range)?;
        Ok(Interval::new(0, days, microseconds))
    }
}

/// A `date`, `timestamp` or `timestamptz` that may be `infinity` or
/// `-infinity`, which PostgreSQL allows and chrono's (and `time`'s) types
/// cannot hold; like `postgres_types::Date<T>` and `Timestamp<T>`.
///
/// Use it as a parameter and as a column type wherever the plain type would
/// go, for `T` one of [`chrono::NaiveDate`] (`date`),
/// [`chrono::NaiveDateTime`] (`timestamp`), [`chrono::DateTime<Utc>`]
/// (`timestamptz`), and with the `time` feature `time::Date`,
/// `time::PrimitiveDateTime` and `time::OffsetDateTime`. The variants are
/// ordered as PostgreSQL orders the values: `NegInfinity < Value(_) <
/// PosInfinity`.
///
/// ```
/// use chrono::NaiveDate;
/// use db_core::{FromValue, Infinite, Value};
///
/// let never = Value::from(Infinite::<NaiveDate>::PosInfinity);
/// assert_eq!(Infinite::<NaiveDate>::from_value(&never), Ok(Infinite::PosInfinity));
/// // The plain type names the wrapper when it meets an infinity.
/// let err = NaiveDate::from_value(&never).unwrap_err();
/// assert!(err.to_string().contains("Infinite<"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Infinite<T> {
    /// `-infinity`: earlier than every other value.
    NegInfinity,
    /// A finite value.
    Value(T),
    /// `infinity`: later than every other value.
    PosInfinity,
}

impl<T> Infinite<T> {
    /// The finite value, or `None` for an infinity.
    pub fn finite(self) -> Option<T> {
        match self {
            Infinite::Value(v) => Some(v),
            Infinite::NegInfinity | Infinite::PosInfinity => None,
        }
    }
}

impl<T> From<T> for Infinite<T> {
    fn from(v: T) -> Self {
        Infinite::Value(v)
    }
}

/// An `inet` or `cidr` value: an address and a network prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inet {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (32 or 128 for a single host).
    pub prefix: u8,
}

impl Inet {
    /// A single host address (full prefix).
    pub fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Inet { addr, prefix }
    }
}

impl fmt::Display for Inet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// A `bit varying` value: `len` bits, most significant bit first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct BitString {
    len: usize,
    bytes: Vec<u8>,
}

impl BitString {
    /// Bits from `bools`, first element first.
    pub fn from_bits(bits: impl IntoIterator<Item = bool>) -> Self {
        let mut out = BitString::default();
        for bit in bits {
            if out.len % 8 == 0 {
                out.bytes.push(0);
            }
            if bit {
                let last = out.bytes.len() - 1;
                out.bytes[last] |= 0x80 >> (out.len % 8);
            }
            out.len += 1;
        }
        out
    }

    /// Builds from packed bytes; bits past `len` are cleared. `None` if
    /// `bytes` is too short for `len` bits.
    pub fn from_bytes(len: usize, mut bytes: Vec<u8>) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        if !len.is_multiple_of(8)
            && let Some(last) = bytes.last_mut()
        {
            *last &= 0xffu8 << (8 - len % 8);
        }
        Some(BitString { len, bytes })
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed bytes, most significant bit first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bit `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<bool> {
        (i < self.len).then(|| self.bytes[i / 8] & (0x80 >> (i % 8)) != 0)
    }
}

impl fmt::Display for BitString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in 0..self.len {
            f.write_str(if self.get(i) == Some(true) { "1" } else { "0" })?;
        }
        Ok(())
    }
}

impl FromStr for BitString {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.chars()
            .map(|c| match c {
                '0' => Ok(false),
                '1' => Ok(true),
                other => Err(format!("invalid bit {other:?} in bit string {s:?}")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(BitString::from_bits)
    }
}

/// An array value: element type, dimension lengths and elements in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The element type.
    pub element_type: Type,
    /// Length of each dimension; empty for an empty array.
    pub dims: Vec<usize>,
    /// Lower bound of each dimension (`'[0:1]={5,6}'` starts at 0); empty
    /// when every dimension starts at 1, PostgreSQL's default.
    pub lower_bounds: Vec<i32>,
    /// The elements, row-major; `Value::Null` for NULL elements.
    pub elements: Vec<Value>,
}

impl Array {
    /// A one-dimensional array.
    pub fn new(element_type: Type, elements: Vec<Value>) -> Self {
        let dims = if elements.is_empty() {
            Vec::new()
        } else {
            vec![elements.len()]
        };
        Array {
            element_type,
            dims,
            lower_bounds: Vec::new(),
            elements,
        }
    }
}
