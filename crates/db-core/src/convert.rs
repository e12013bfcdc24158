//! Conversions between Rust types and [`Value`].

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::types::Type;
use crate::value::{Array, BitString, Inet, Infinite, Interval, Numeric, Value};

/// A Rust type with a fixed SQL type, which lets `Vec<T>` become a typed array
/// even when it is empty.
pub trait SqlType {
    /// The SQL type values of `Self` are sent as.
    fn sql_type() -> Type;
}

/// A [`Value`] could not be converted to the requested Rust type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FromValueError {
    /// The value is NULL and the target type is not an `Option`.
    #[error("unexpected NULL (read it as an Option)")]
    UnexpectedNull,
    /// The value's SQL type does not convert to the target.
    #[error("cannot read a {found} value as {expected}")]
    WrongType {
        /// The Rust type asked for.
        expected: &'static str,
        /// The SQL type found.
        found: &'static str,
    },
    /// The value converts in type but not in range.
    #[error("{0}")]
    OutOfRange(String),
    /// The value is `infinity` or `-infinity` (of a `date`, `timestamp` or
    /// `timestamptz`), which the target type cannot hold.
    #[error(
        "cannot read {value} as {target}, which has no infinity: read the column as db::Infinite<{target}>"
    )]
    Infinity {
        /// The Rust type asked for.
        target: &'static str,
        /// `"infinity"` or `"-infinity"`.
        value: &'static str,
    },
    /// The value was read but did not convert to the field's type: a
    /// `TryFrom` that failed (`#[db(try_from = "i64")]`).
    #[error("cannot convert the value to {target}: {message}")]
    Conversion {
        /// The Rust type asked for.
        target: &'static str,
        /// Why, as the conversion said.
        message: String,
    },
}

impl FromValueError {
    /// A failed conversion to `T`, with the conversion's own error as the
    /// reason.
    pub fn conversion<T: ?Sized>(error: impl std::fmt::Display) -> Self {
        FromValueError::Conversion {
            target: std::any::type_name::<T>(),
            message: error.to_string(),
        }
    }
}

/// A Rust type that can be read from a [`Value`].
pub trait FromValue: Sized {
    /// Converts, or explains why not.
    fn from_value(value: &Value) -> Result<Self, FromValueError>;
}

fn wrong<T>(value: &Value) -> Result<T, FromValueError> {
    match value {
        Value::Null => Err(FromValueError::UnexpectedNull),

        other => Err(FromValueError::WrongType {
            expected: std::any::type_name::<T>(),
            found: other.kind_name(),
        }),
    }
}

/// An infinity met by a date or time type that cannot hold it.
pub(crate) fn infinity<T>(value: &Value) -> Result<T, FromValueError> {
    Err(FromValueError::Infinity {
        target: std::any::type_name::<T>(),
        value: value.kind_name(),
    })
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, FromValueError> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, FromValueError> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

macro_rules! scalar {
    ($t:ty, $sql:expr, |$v:ident| $to:expr, { $($pat:pat => $from:expr),* $(,)? }) => {
        impl SqlType for $t {
            fn sql_type() -> Type {
                $sql
            }
        }
        impl From<$t> for Value {
            fn from($v: $t) -> Self {
                $to
            }
        }
        impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, FromValueError> {
                match value {
                    $($pat => $from,)*
                    other => wrong(other),
                }
            }
        }
    };
}

fn narrow<T: TryFrom<i64>>(v: i64) -> Result<T, FromValueError> {
    T::try_from(v).map_err(|_| {
        FromValueError::OutOfRange(format!(
            "{v} does not fit in {}",
            std::any::type_name::<T>()
        ))
    })
}

scalar!(bool, Type::BOOL, |v| Value::Bool(v), { Value::Bool(b) => Ok(*b) });
scalar!(i16, Type::INT2, |v| Value::Int2(v), {
    Value::Int2(i) => Ok(*i),
    Value::Int4(i) => narrow(i64::from(*i)),
    Value::Int8(i) => narrow(*i),
});
scalar!(i32, Type::INT4, |v| Value::Int4(v), {
    Value::Int2(i) => Ok(i32::from(*i)),
    Value::Int4(i) => Ok(*i),
    Value::Int8(i) => narrow(*i),
});
scalar!(i64, Type::INT8, |v| Value::Int8(v), {
    Value::Int2(i) => Ok(i64::from(*i)),
    Value::Int4(i) => Ok(i64::from(*i)),
    Value::Int8(i) => Ok(*i),
    Value::Oid(i) => Ok(i64::from(*i)),
});
scalar!(u32, Type::OID, |v| Value::Oid(v), {
    Value::Oid(i) => Ok(*i),
    Value::Int8(i) => narrow(*i),
    Value::Int4(i) => narrow(i64::from(*i)),
});
scalar!(f32, Type::FLOAT4, |v| Value::Float4(v), { Value::Float4(f) => Ok(*f) });
scalar!(f64, Type::FLOAT8, |v| Value::Float8(v), {
    Value::Float4(f) => Ok(f64::from(*f)),
    Value::Float8(f) => Ok(*f),
});
scalar!(Numeric, Type::NUMERIC, |v| Value::Numeric(v), { Value::Numeric(n) => Ok(n.clone()) });
scalar!(String, Type::TEXT, |v| Value::Text(v), { Value::Text(s) => Ok(s.clone()) });
scalar!(Uuid, Type::UUID, |v| Value::Uuid(v), { Value::Uuid(u) => Ok(*u) });
scalar!(NaiveDate, Type::DATE, |v| Value::Date(v), {
    Value::Date(d) => Ok(*d),
    v @ Value::Infinity { .. } => infinity(v),
});
scalar!(NaiveTime, Type::TIME, |v| Value::Time(v), { Value::Time(t) => Ok(*t) });
scalar!(NaiveDateTime, Type::TIMESTAMP, |v| Value::Timestamp(v), {
    Value::Timestamp(t) => Ok(*t),
    Value::Timestamptz(t) => Ok(t.naive_utc()),
    v @ Value::Infinity { .. } => infinity(v),
});
// `timestamp without time zone` reads as UTC, on both backends.
scalar!(DateTime<Utc>, Type::TIMESTAMPTZ, |v| Value::Timestamptz(v), {
    Value::Timestamptz(t) => Ok(*t),
    Value::Timestamp(t) => Ok(t.and_utc()),
    v @ Value::Infinity { .. } => infinity(v),
});
scalar!(Interval, Type::INTERVAL, |v| Value::Interval(v), { Value::Interval(i) => Ok(*i) });

// A TimeDelta is an interval of microseconds only; reading one counts days
// as 24 hours and refuses months (see `Interval`).
impl SqlType for TimeDelta {
    fn sql_type() -> Type {
        Type::INTERVAL
    }
}

impl From<TimeDelta> for Value {
    /// A `TimeDelta` with nanoseconds, or beyond an interval's range, becomes
    /// [`Value::Unencodable`]: running a statement with it fails.
    fn from(v: TimeDelta) -> Self {
        match Interval::try_from(v) {
            Ok(i) => Value::Interval(i),
            Err(e) => Value::Unencodable {
                type_oid: Type::INTERVAL.oid(),
                reason: e.to_string(),
            },
        }
    }
}

impl FromValue for TimeDelta {
    fn from_value(value: &Value) -> Result<Self, FromValueError> {
        match value {
            Value::Interval(i) => {
                TimeDelta::try_from(*i).map_err(FromValueError::conversion::<Self>)
            }
            other => wrong(other),
        }
    }
}

/// `Infinite<T>` for a date or time type `T` sent as `$sql`, whose
/// infinities are accepted from the SQL types `$accepts`.
macro_rules! infinite {
    ($t:ty, $sql:expr, $accepts:pat) => {
        impl SqlType for Infinite<$t> {
            fn sql_type() -> Type {
                $sql
            }
        }
        impl From<Infinite<$t>> for Value {
            fn from(v: Infinite<$t>) -> Self {
                match v {
                    Infinite::NegInfinity => Value::Infinity {
                        ty: $sql,
                        negative: true,
                    },
                    Infinite::PosInfinity => Value::Infinity {
                        ty: $sql,
                        negative: false,
                    },
                    Infinite::Value(v) => v.into(),
                }
            }
        }
        impl FromValue for Infinite<$t> {
            fn from_value(value: &Value) -> Result<Self, FromValueError> {
                match value {
                    Value::Infinity {
                        ty: $accepts,
                        negative: true,
                    } => Ok(Infinite::NegInfinity),
                    Value::Infinity {
                        ty: $accepts,
                        negative: false,
                    } => Ok(Infinite::PosInfinity),
                    other => <$t>::from_value(other).map(Infinite::Value),
                }
            }
        }
    };
}
#[cfg_attr(not(feature = "time"), allow(unused_imports))]
pub(crate) use infinite;

infinite!(NaiveDate, Type::DATE, Type::DATE);
infinite!(
    NaiveDateTime,
    Type::TIMESTAMP,
    Type::TIMESTAMP | Type::TIMESTAMPTZ
);
infinite!(
    DateTime<Utc>,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMP | Type::TIMESTAMPTZ
);
scalar!(serde_json::Value, Type::JSONB, |v| Value::Json(v), { Value::Json(j) => Ok(j.clone()) });
scalar!(Inet, Type::INET, |v| Value::Inet(v), { Value::Inet(i) => Ok(*i) });
scalar!(IpAddr, Type::INET, |v| Value::Inet(Inet::host(v)), { Value::Inet(i) => Ok(i.addr) });
scalar!(BitString, Type::VARBIT, |v| Value::Bits(v), { Value::Bits(b) => Ok(b.clone()) });

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytea(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytea(v)
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, FromValueError> {
        match value {
            Value::Bytea(b) => Ok(b.clone()),
            other => wrong(other),
        }
    }
}

impl From<Array> for Value {
    fn from(v: Array) -> Self {
        Value::Array(v)
    }
}

impl<T: SqlType + Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Array(Array::new(
            T::sql_type(),
            v.into_iter().map(Into::into).collect(),
        ))
    }
}

impl<T: SqlType + Into<Value>> From<Vec<Option<T>>> for Value {
    fn from(v: Vec<Option<T>>) -> Self {
        Value::Array(Array::new(
            T::sql_type(),
            v.into_iter().map(Into::into).collect(),
        ))
    }
}

impl<T: SqlType + FromValue> FromValue for Vec<T> {
    fn from_value(value: &Value) -> Result<Self, FromValueError> {
        match value {
            Value::Array(a) if a.dims.len() <= 1 => a.elements.iter().map(T::from_value).collect(),
            Value::Array(a) => Err(FromValueError::OutOfRange(format!(
                "a {}-dimensional array does not fit in a Vec",
                a.dims.len()
            ))),
            other => wrong(other),
        }
    }
}

impl<T: SqlType + FromValue> FromValue for Vec<Option<T>> {
    fn from_value(value: &Value) -> Result<Self, FromValueError> {
        match value {
            Value::Array(a) if a.dims.len() <= 1 => {
                a.elements.iter().map(Option::<T>::from_value).collect()
            }
            Value::Array(a) => Err(FromValueError::OutOfRange(format!(
                "a {}-dimensional array does not fit in a Vec",
                a.dims.len()
            ))),
            other => wrong(other),
        }
    }
}
