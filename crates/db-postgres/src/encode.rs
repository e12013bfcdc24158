//! The bridge between db-core's [`Value`]s and sqlx: parameters go out and
//! rows come back in PostgreSQL's binary format, through db-core's codec.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use db_core::{CodecError, Column, Error, Result, Row, Type, Value};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgColumn, PgRow, PgTypeInfo, PgTypeKind, PgValueFormat,
    PgValueRef, Postgres,
};
use sqlx::{Arguments as _, Column as _, Row as _, TypeInfo as _, ValueRef as _};

/// One bound parameter: sent with the type of its value and encoded by
/// [`db_core::encode`]. `NULL` is sent untyped (OID 0), so the server infers
/// its type from context.
struct Param<'a>(&'a Value);

impl sqlx::Type<Postgres> for Param<'_> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(Type::UNKNOWN.oid()))
    }
}

impl<'q> sqlx::Encode<'q, Postgres> for Param<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        if self.0.is_null() {
            return Ok(IsNull::Yes);
        }
        db_core::encode(self.0, buf)?;
        Ok(IsNull::No)
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(PgTypeInfo::with_oid(Oid(self.0.type_of().oid())))
    }
}

/// Encodes `params` as sqlx arguments.
pub(crate) fn arguments(params: &[Value]) -> Result<PgArguments> {
    let mut args = PgArguments::default();
    args.reserve(params.len(), 0);
    for (i, value) in params.iter().enumerate() {
        let position = i + 1;
        args.add(Param(value))
            .map_err(|e| match e.downcast::<CodecError>() {
                Ok(source) => Error::Encode {
                    position,
                    source: *source,
                },
                Err(other) => Error::backend(format!("encoding parameter ${position}"), other),
            })?;
    }
    Ok(args)
}

/// The text sqlx prepares and caches for `sql` bound with `params`.
///
/// sqlx caches prepared statements by SQL text alone, and a prepared
/// statement's parameter types are fixed when it is parsed. Running the same
/// SQL with differently typed values (an `int4` then an `int8`, or a `NULL`
/// whose type the server inferred, then a value) would bind bytes of one type
/// to a parameter of another. A trailing comment naming the parameter types
/// gives each combination its own cache entry. Being at the end, it shifts no
/// error position inside `sql`.
pub(crate) fn statement_text<'a>(sql: &'a str, params: &[Value]) -> Cow<'a, str> {
    if params.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut text = String::with_capacity(sql.len() + 24 + params.len() * 5);
    text.push_str(sql);
    text.push_str("\n-- db-postgres parameter types:");
    for value in params {
        let _ = write!(text, " {}", value.type_of().oid());
    }
    Cow::Owned(text)
}

/// The parameter types `arguments` declares for `params`, for preparing
/// the same statement.
pub(crate) fn parameter_types(params: &[Value]) -> Vec<PgTypeInfo> {
    params
        .iter()
        .map(|value| PgTypeInfo::with_oid(Oid(value.type_of().oid())))
        .collect()
}

/// The column descriptions of the result set `row` belongs to.
pub(crate) fn columns(row: &PgRow) -> Result<Arc<[Column]>> {
    statement_columns(row.columns())
}

/// Column descriptions from sqlx's.
pub(crate) fn statement_columns(columns: &[PgColumn]) -> Result<Arc<[Column]>> {
    columns
        .iter()
        .map(|c| {
            let oid = c
                .type_info()
                .oid()
                .ok_or_else(|| Error::Protocol(format!("column {:?} has no type OID", c.name())))?;
            let column = Column::new(c.name(), Type::from_oid(oid.0));
            Ok(match wire_type(c.type_info()) {
                Some(wire) => column.with_wire_type(wire),
                None => column,
            })
        })
        .collect()
}

/// The built-in type a user-defined column type's values are decoded as:
/// `text` for an enum (sent as its label) and for a type whose binary form
/// is text's (`citext`), `text[]` for an array of those. sqlx has already
/// looked the type up in `pg_type` when it prepared the statement.
fn wire_type(info: &PgTypeInfo) -> Option<Type> {
    fn text_like(info: &PgTypeInfo) -> bool {
        matches!(info.kind(), PgTypeKind::Enum(_))
            || (matches!(info.kind(), PgTypeKind::Simple) && info.name() == "citext")
    }
    if info
        .oid()
        .is_some_and(|oid| Type::from_oid(oid.0).name().is_some())
    {
        return None;
    }
    match info.kind() {
        _ if text_like(info) => Some(Type::TEXT),
        PgTypeKind::Array(element) if text_like(element) => Type::TEXT.array_type(),
        _ => None,
    }
}

/// Decodes every value of `row`, described by `columns`.
pub(crate) fn decode_row(row: &PgRow, columns: &Arc<[Column]>) -> Result<Row> {
    let mut values = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let raw = row
            .try_get_raw(i)
            .map_err(|e| Error::Protocol(format!("reading column {:?}: {e}", column.name())))?;
        values.push(decode_value(&raw, column)?);
    }
    Ok(Row::new(Arc::clone(columns), values))
}

fn decode_value(raw: &PgValueRef<'_>, column: &Column) -> Result<Value> {
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let bytes = raw
        .as_bytes()
        .map_err(|e| Error::Protocol(format!("reading column {:?}: {e}", column.name())))?;
    let ty = column.wire_type();
    match raw.format() {
        PgValueFormat::Binary => db_core::decode(ty, bytes).map_err(|source| Error::Decode {
            column: column.name().to_owned(),
            source,
        }),
        // Prepared statements return binary; text only comes from the
        // simple protocol, and then only text-like types are accepted.
        PgValueFormat::Text if is_text_like(ty) => String::from_utf8(bytes.to_vec())
            .map(Value::Text)
            .map_err(|e| Error::Protocol(format!("column {:?} is not UTF-8: {e}", column.name()))),
        PgValueFormat::Text => Err(Error::Protocol(format!(
            "column {:?} of type {ty} arrived in text format",
            column.name()
        ))),
    }
}

fn is_text_like(ty: Type) -> bool {
    matches!(
        ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UNKNOWN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_text_keys_the_cache_by_parameter_types() {
        assert_eq!(statement_text("SELECT 1", &[]), "SELECT 1");
        let a = statement_text("SELECT $1", &[Value::Int4(1)]);
        let b = statement_text("SELECT $1", &[Value::Int8(1)]);
        let null = statement_text("SELECT $1", &[Value::Null]);
        assert!(a.starts_with("SELECT $1\n--"));
        assert_ne!(a, b);
        assert_ne!(a, null);
        assert_eq!(a, statement_text("SELECT $1", &[Value::Int4(7)]));
    }

    #[test]
    fn encoding_errors_name_the_parameter() {
        let bad = Value::Array(db_core::Array::new(
            Type::INT4,
            vec![Value::Text("x".into())],
        ));
        let err = arguments(&[Value::Int4(1), bad]).expect_err("mismatched element");
        assert!(matches!(err, Error::Encode { position: 2, .. }), "{err}");
        assert!(arguments(&[Value::Null, Value::Int8(1)]).is_ok());
    }
}
