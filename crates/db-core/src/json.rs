//! [`Json`]: any serde type as a `jsonb` parameter or a `json`/`jsonb`
//! column.

use std::ops::{Deref, DerefMut};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::convert::{FromValue, FromValueError, SqlType};
use crate::types::Type;
use crate::value::Value;

/// A value of a serde type, sent as `jsonb` and read from `json` or
/// `jsonb` columns (as sqlx's and tokio-postgres's `Json`).
///
/// As a parameter, `Json(&settings)` is serialized with `serde_json`; a
/// value serde cannot serialize (a map with non-string keys, a `Serialize`
/// that fails) is [`Error::Encode`](crate::Error::Encode) naming the
/// parameter when the statement is run, and nothing is sent. `Json(None)`
/// is JSON `null`; SQL `NULL` is `None::<Json<T>>`. As a column, a value
/// that does not deserialize into `T` is
/// [`Error::ColumnDecode`](crate::Error::ColumnDecode) naming the column and
/// serde's reason; SQL `NULL` reads only into `Option<Json<T>>`.
///
/// ```no_run
/// # async fn demo(pool: &impl db_core::Pool) -> db_core::Result<()> {
/// use db_core::{Json, params};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Settings { theme: String, font_size: u8 }
///
/// let settings = Settings { theme: "dark".into(), font_size: 14 };
/// pool.execute("UPDATE accounts SET settings = $1 WHERE id = $2", &params![Json(&settings), 1_i64])
///     .await?;
/// let Json(read): Json<Settings> = pool
///     .query_one_scalar("SELECT settings FROM accounts WHERE id = 1", &[])
///     .await?;
/// # Ok(()) }
/// ```
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> SqlType for Json<T> {
    fn sql_type() -> Type {
        Type::JSONB
    }
}

impl<T: Serialize> From<Json<T>> for Value {
    fn from(v: Json<T>) -> Self {
        match serde_json::to_value(&v.0) {
            Ok(json) => Value::Json(json),
            Err(e) => Value::Unencodable {
                type_oid: Type::JSONB.oid(),
                reason: format!(
                    "cannot serialize {} as JSON: {e}",
                    std::any::type_name::<T>()
                ),
            },
        }
    }
}

impl<T: DeserializeOwned> FromValue for Json<T> {
    fn from_value(value: &Value) -> Result<Self, FromValueError> {
        match value {
            Value::Json(json) => T::deserialize(json)
                .map(Json)
                .map_err(FromValueError::conversion::<T>),
            Value::Null => Err(FromValueError::UnexpectedNull),
            other => Err(FromValueError::WrongType {
                expected: std::any::type_name::<Json<T>>(),
                found: other.kind_name(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Prefs {
        theme: String,
    }

    #[test]
    fn round_trips_through_a_value() {
        let value = Value::from(Json(Prefs {
            theme: "dark".into(),
        }));
        assert_eq!(value.type_of(), Type::JSONB);
        let Json(back) = Json::<Prefs>::from_value(&value).expect("a Prefs");
        assert_eq!(back.theme, "dark");
    }

    #[test]
    fn failures_say_what_and_why() {
        let mut map = BTreeMap::new();
        map.insert((1, 2), 3);
        let value = Value::from(Json(map));
        let mut buf = Vec::new();
        let err = crate::encode(&value, &mut buf).expect_err("tuple keys");
        assert_eq!(err.ty, Type::JSONB);
        assert!(
            err.message.starts_with("cannot serialize"),
            "{}",
            err.message
        );

        let err = Json::<Prefs>::from_value(&Value::Json(serde_json::json!({"theme": 1})))
            .expect_err("a number is not a string");
        assert!(
            matches!(&err, FromValueError::Conversion { target, .. } if target.ends_with("Prefs")),
            "{err}"
        );
        assert_eq!(
            Json::<Prefs>::from_value(&Value::Null),
            Err(FromValueError::UnexpectedNull)
        );
        assert!(matches!(
            Json::<Prefs>::from_value(&Value::Text("{}".into())),
            Err(FromValueError::WrongType { found: "text", .. })
        ));
    }
}
