//! `numeric` <-> [`rust_decimal::Decimal`], with the `rust_decimal` feature.
//!
//! A `Decimal` holds 96 bits of mantissa and up to 28 digits of scale, and
//! no NaN or infinities: reading a `numeric` beyond that fails rather than
//! rounding.

use rust_decimal::Decimal;

use crate::convert::{FromValue, FromValueError, SqlType};
use crate::types::Type;
use crate::value::{Numeric, Value};

impl SqlType for Decimal {
    fn sql_type() -> Type {
        Type::NUMERIC
    }
}

impl From<Decimal> for Value {
    fn from(v: Decimal) -> Self {
        // `Decimal`'s Display is plain decimal text (no exponent), which
        // `Numeric` parses.
        let text = v.to_string();
        match text.parse::<Numeric>() {
            Ok(n) => Value::Numeric(n),
            Err(e) => Value::Unencodable {
                type_oid: Type::NUMERIC.oid(),
                reason: e.to_string(),
            },
        }
    }
}

impl FromValue for Decimal {
    fn from_value(value: &Value) -> Result<Self, FromValueError> {
        match value {
            Value::Numeric(n) => match n.as_str() {
                s @ ("NaN" | "Infinity" | "-Infinity") => Err(FromValueError::OutOfRange(format!(
                    "numeric {s} cannot be read as rust_decimal::Decimal, which has no NaN or infinities"
                ))),
                s => Decimal::from_str_exact(s).map_err(|e| {
                    FromValueError::OutOfRange(format!(
                        "numeric {s} does not fit in rust_decimal::Decimal (96-bit mantissa, at most 28 decimal places): {e}"
                    ))
                }),
            },
            Value::Int2(i) => Ok(Decimal::from(*i)),
            Value::Int4(i) => Ok(Decimal::from(*i)),
            Value::Int8(i) => Ok(Decimal::from(*i)),
            Value::Null => Err(FromValueError::UnexpectedNull),
            other => Err(FromValueError::WrongType {
                expected: "rust_decimal::Decimal",
                found: other.kind_name(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_convert_exactly_and_refuse_what_they_cannot_hold() {
        for s in [
            "0",
            "-1.50",
            "79228162514264337593543950335",
            "0.0000000000000000000000000001",
        ] {
            let d = Decimal::from_str_exact(s).expect("decimal");
            let v = Value::from(d);
            assert_eq!(v, Value::Numeric(s.parse().expect("numeric")));
            assert_eq!(Decimal::from_value(&v), Ok(d));
        }
        for s in [
            "NaN",
            "Infinity",
            "79228162514264337593543950336",
            "0.00000000000000000000000000001",
        ] {
            let v = Value::Numeric(s.parse().expect("numeric"));
            let err = Decimal::from_value(&v).expect_err(s);
            assert!(err.to_string().contains(s), "{err}");
        }
    }
}
