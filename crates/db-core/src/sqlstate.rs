//! SQLSTATE codes.

use std::borrow::Cow;
use std::fmt;

/// A five-character SQLSTATE error code, with constants for the codes callers
/// commonly branch on. Codes without a constant still compare and print.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SqlState(Cow<'static, str>);

impl SqlState {
    /// A code as the server sent it.
    pub fn from_code(code: &str) -> SqlState {
        SqlState(Cow::Owned(code.to_owned()))
    }

    /// The five-character code.
    pub fn code(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.0)
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! codes {
    ($($name:ident = $code:literal;)*) => {
        impl SqlState {
            $(
                #[doc = concat!("`", $code, "`")]
                pub const $name: SqlState = SqlState(Cow::Borrowed($code));
            )*
        }
    };
}

codes! {
    SUCCESSFUL_COMPLETION = "00000";
    WARNING = "01000";
    NO_ACTIVE_SQL_TRANSACTION = "25P01";
    FEATURE_NOT_SUPPORTED = "0A000";
    INVALID_PARAMETER_VALUE = "22023";
    DIVISION_BY_ZERO = "22012";
    NUMERIC_VALUE_OUT_OF_RANGE = "22003";
    STRING_DATA_RIGHT_TRUNCATION = "22001";
    INVALID_TEXT_REPRESENTATION = "22P02";
    INVALID_DATETIME_FORMAT = "22007";
    DATETIME_FIELD_OVERFLOW = "22008";
    INTEGRITY_CONSTRAINT_VIOLATION = "23000";
    NOT_NULL_VIOLATION = "23502";
    FOREIGN_KEY_VIOLATION = "23503";
    UNIQUE_VIOLATION = "23505";
    CHECK_VIOLATION = "23514";
    EXCLUSION_VIOLATION = "23P01";
    INVALID_TRANSACTION_STATE = "25000";
    ACTIVE_SQL_TRANSACTION = "25001";
    IN_FAILED_SQL_TRANSACTION = "25P02";
    INVALID_SAVEPOINT_SPECIFICATION = "3B001";
    SERIALIZATION_FAILURE = "40001";
    DEADLOCK_DETECTED = "40P01";
    SYNTAX_ERROR = "42601";
    INSUFFICIENT_PRIVILEGE = "42501";
    UNDEFINED_COLUMN = "42703";
    UNDEFINED_FUNCTION = "42883";
    UNDEFINED_TABLE = "42P01";
    UNDEFINED_OBJECT = "42704";
    DUPLICATE_COLUMN = "42701";
    DUPLICATE_OBJECT = "42710";
    DUPLICATE_TABLE = "42P07";
    DATATYPE_MISMATCH = "42804";
    AMBIGUOUS_COLUMN = "42702";
    OBJECT_IN_USE = "55006";
    LOCK_NOT_AVAILABLE = "55P03";
    QUERY_CANCELED = "57014";
    ADMIN_SHUTDOWN = "57P01";
    INTERNAL_ERROR = "XX000";
}
