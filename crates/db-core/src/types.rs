//! PostgreSQL type identifiers.

use std::fmt;

/// A PostgreSQL type, identified by its OID.
///
/// Built-in OIDs are fixed across every PostgreSQL version, so the constants
/// below hold on PostgreSQL 13 through 17 and on PGlite alike.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Type(u32);

macro_rules! types {
    ($($name:ident = $oid:literal, $sql:literal, $array:literal;)*) => {
        impl Type {
            $(
                #[doc = concat!("`", $sql, "` (OID ", stringify!($oid), ").")]
                pub const $name: Type = Type($oid);
            )*

            /// The SQL name of a built-in type, or `None` for others.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($oid => Some($sql),)*
                    _ => None,
                }
            }

            /// The array type whose elements are of this type.
            pub fn array_type(self) -> Option<Type> {
                match self.0 {
                    $($oid if $array != 0 => Some(Type($array)),)*
                    _ => None,
                }
            }

            /// The element type, if this is a built-in array type.
            pub fn element_type(self) -> Option<Type> {
                match self.0 {
                    $($array if $array != 0 => Some(Type($oid)),)*
                    _ => None,
                }
            }
        }
    };
}

types! {
    UNKNOWN = 0, "unknown", 0;
    BOOL = 16, "boolean", 1000;
    BYTEA = 17, "bytea", 1001;
    CHAR = 18, "\"char\"", 1002;
    NAME = 19, "name", 1003;
    INT8 = 20, "bigint", 1016;
    INT2 = 21, "smallint", 1005;
    INT4 = 23, "integer", 1007;
    REGPROC = 24, "regproc", 1008;
    TEXT = 25, "text", 1009;
    OID = 26, "oid", 1028;
    JSON = 114, "json", 199;
    CIDR = 650, "cidr", 651;
    FLOAT4 = 700, "real", 1021;
    FLOAT8 = 701, "double precision", 1022;
    INET = 869, "inet", 1041;
    BPCHAR = 1042, "character", 1014;
    VARCHAR = 1043, "character varying", 1015;
    DATE = 1082, "date", 1182;
    TIME = 1083, "time without time zone", 1183;
    TIMESTAMP = 1114, "timestamp without time zone", 1115;
    TIMESTAMPTZ = 1184, "timestamp with time zone", 1185;
    INTERVAL = 1186, "interval", 1187;
    BIT = 1560, "bit", 1561;
    VARBIT = 1562, "bit varying", 1563;
    NUMERIC = 1700, "numeric", 1231;
    REGCLASS = 2205, "regclass", 2210;
    REGTYPE = 2206, "regtype", 2211;
    UUID = 2950, "uuid", 2951;
    JSONB = 3802, "jsonb", 3807;
}

impl Type {
    /// The type with this OID.
    pub const fn from_oid(oid: u32) -> Type {
        Type(oid)
    }

    /// The OID.
    pub const fn oid(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.element_type().and_then(Type::name)) {
            (Some(name), _) => f.write_str(name),
            (None, Some(element)) => write!(f, "{element}[]"),
            (None, None) => write!(f, "oid {}", self.0),
        }
    }
}
