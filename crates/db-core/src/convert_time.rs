//! The `time` crate's types, with the `time` feature: [`time::Date`]
//! (`date`), [`time::Time`] (`time`), [`time::PrimitiveDateTime`]
//! (`timestamp`) and [`time::OffsetDateTime`] (`timestamptz`, read in UTC).
//!
//! They convert through chrono's, so they read and write exactly what the
//! chrono types do. `time` holds years -9999 to 9999 (without its
//! `large-dates` feature) and no `24:00:00`; values beyond fail to read.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::convert::{FromValue, FromValueError, SqlType, infinite, infinity};
use crate::types::Type;
use crate::value::{Infinite, Value};

fn out_of_range<T>(what: impl std::fmt::Display) -> FromValueError {
    FromValueError::OutOfRange(format!(
        "{what} is out of the range of {}",
        std::any::type_name::<T>()
    ))
}

fn unencodable(ty: Type, what: impl std::fmt::Display) -> Value {
    Value::Unencodable {
        type_oid: ty.oid(),
        reason: format!("{what} is out of the range of {ty}"),
    }
}

fn to_chrono_date(d: Date) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(d.year(), u32::from(u8::from(d.month())), u32::from(d.day()))
}

fn from_chrono_date(d: NaiveDate) -> Result<Date, FromValueError> {
    let month = u8::try_from(d.month())
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(|| out_of_range::<Date>(d))?;
    let day = u8::try_from(d.day()).map_err(|_| out_of_range::<Date>(d))?;
    Date::from_calendar_date(d.year(), month, day).map_err(|_| out_of_range::<Date>(d))
}

fn to_chrono_time(t: Time) -> Option<NaiveTime> {
    NaiveTime::from_hms_nano_opt(
        u32::from(t.hour()),
        u32::from(t.minute()),
        u32::from(t.second()),
        t.nanosecond(),
    )
}

fn from_chrono_time(t: NaiveTime) -> Result<Time, FromValueError> {
    // chrono holds PostgreSQL's `24:00:00` as a leap second, which `time`
    // cannot.
    let hour = u8::try_from(t.hour()).map_err(|_| out_of_range::<Time>(t))?;
    let minute = u8::try_from(t.minute()).map_err(|_| out_of_range::<Time>(t))?;
    let second = u8::try_from(t.second()).map_err(|_| out_of_range::<Time>(t))?;
    Time::from_hms_nano(hour, minute, second, t.nanosecond()).map_err(|_| out_of_range::<Time>(t))
}

fn to_chrono_datetime(v: PrimitiveDateTime) -> Option<NaiveDateTime> {
    Some(to_chrono_date(v.date())?.and_time(to_chrono_time(v.time())?))
}

fn from_chrono_datetime(v: NaiveDateTime) -> Result<PrimitiveDateTime, FromValueError> {
    Ok(PrimitiveDateTime::new(
        from_chrono_date(v.date()).map_err(|_| out_of_range::<PrimitiveDateTime>(v))?,
        from_chrono_time(v.time()).map_err(|_| out_of_range::<PrimitiveDateTime>(v))?,
    ))
}

fn to_chrono_utc(v: OffsetDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(v.unix_timestamp(), v.nanosecond())
}

fn from_chrono_utc(v: DateTime<Utc>) -> Result<OffsetDateTime, FromValueError> {
    OffsetDateTime::from_unix_timestamp(v.timestamp())
        .and_then(|t| t.replace_nanosecond(v.timestamp_subsec_nanos()))
        .map_err(|_| out_of_range::<OffsetDateTime>(v))
}

/// `$t` converts through chrono's `$chrono`: `$to` gives the chrono value
/// (`None` out of its range), `$from` takes it back.
macro_rules! via_chrono {
    ($t:ty, $chrono:ty, $sql:expr, $to:path, $from:path) => {
        impl SqlType for $t {
            fn sql_type() -> Type {
                $sql
            }
        }
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                match $to(v) {
                    Some(c) => c.into(),
                    None => unencodable($sql, v),
                }
            }
        }
        impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, FromValueError> {
                match value {
                    v @ Value::Infinity { .. } => infinity(v),
                    other => $from(<$chrono>::from_value(other)?),
                }
            }
        }
    };
}

via_chrono!(
    Date,
    NaiveDate,
    Type::DATE,
    to_chrono_date,
    from_chrono_date
);
via_chrono!(
    Time,
    NaiveTime,
    Type::TIME,
    to_chrono_time,
    from_chrono_time
);
via_chrono!(
    PrimitiveDateTime,
    NaiveDateTime,
    Type::TIMESTAMP,
    to_chrono_datetime,
    from_chrono_datetime
);
via_chrono!(
    OffsetDateTime,
    DateTime<Utc>,
    Type::TIMESTAMPTZ,
    to_chrono_utc,
    from_chrono_utc
);

infinite!(Date, Type::DATE, Type::DATE);
infinite!(
    PrimitiveDateTime,
    Type::TIMESTAMP,
    Type::TIMESTAMP | Type::TIMESTAMPTZ
);
infinite!(
    OffsetDateTime,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMP | Type::TIMESTAMPTZ
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_types_convert_through_chrono() {
        let date = Date::from_calendar_date(1969, Month::July, 20).expect("date");
        assert_eq!(
            Value::from(date),
            Value::Date(NaiveDate::from_ymd_opt(1969, 7, 20).expect("date"))
        );
        assert_eq!(Date::from_value(&Value::from(date)), Ok(date));
        let t = Time::from_hms_micro(23, 59, 59, 999_999).expect("time");
        assert_eq!(Time::from_value(&Value::from(t)), Ok(t));
        let odt = OffsetDateTime::from_unix_timestamp(-1_000_000_000)
            .and_then(|t| t.replace_microsecond(123_456))
            .expect("odt");
        assert_eq!(OffsetDateTime::from_value(&Value::from(odt)), Ok(odt));
        let pdt = PrimitiveDateTime::new(date, t);
        assert_eq!(PrimitiveDateTime::from_value(&Value::from(pdt)), Ok(pdt));
        // Beyond `time`'s years.
        let far = Value::Date(NaiveDate::from_ymd_opt(20_000, 1, 1).expect("date"));
        assert!(matches!(
            Date::from_value(&far),
            Err(FromValueError::OutOfRange(_))
        ));
        let inf = Value::from(Infinite::<Date>::NegInfinity);
        assert!(matches!(
            Date::from_value(&inf),
            Err(FromValueError::Infinity { .. })
        ));
        assert_eq!(
            Infinite::<Date>::from_value(&inf),
            Ok(Infinite::NegInfinity)
        );
    }
}
