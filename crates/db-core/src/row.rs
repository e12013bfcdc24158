//! Result rows.

use std::sync::Arc;

use crate::convert::FromValue;
use crate::error::{Error, Result};
use crate::types::Type;
use crate::value::Value;

/// A result column: its name and SQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    name: String,
    type_: Type,
    wire_type: Type,
}

impl Column {
    /// A column description.
    pub fn new(name: impl Into<String>, type_: Type) -> Self {
        Column {
            name: name.into(),
            type_,
            wire_type: type_,
        }
    }

    /// For backends: the same column, whose values are decoded as the
    /// built-in type `wire_type` because they share its binary form. An enum
    /// column is sent as its label, in the form of `text`, so a backend that
    /// learns a column is an enum gives it [`Type::TEXT`] here and its
    /// values read as [`Value::Text`]; [`Column::type_`] stays the enum.
    pub fn with_wire_type(mut self, wire_type: Type) -> Self {
        self.wire_type = wire_type;
        self
    }

    /// The column name as the server reported it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column's SQL type.
    pub fn type_(&self) -> Type {
        self.type_
    }

    /// The built-in type whose binary form this column's values have, the
    /// one they are decoded as: [`Column::type_`] unless a backend set
    /// another with [`Column::with_wire_type`].
    pub fn wire_type(&self) -> Type {
        self.wire_type
    }
}

/// One result row. Column descriptions are shared by all rows of a result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[Column]>,
    values: Vec<Value>,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for &str {}
}

/// Something that selects a column: its position or its name.
pub trait ColumnIndex: sealed::Sealed + Copy {
    /// The position in `columns`, or the error to report.
    fn position(self, columns: &[Column]) -> Result<usize>;
}

impl ColumnIndex for usize {
    fn position(self, columns: &[Column]) -> Result<usize> {
        if self < columns.len() {
            Ok(self)
        } else {
            Err(Error::ColumnIndexOutOfRange {
                index: self,
                len: columns.len(),
            })
        }
    }
}

impl ColumnIndex for &str {
    fn position(self, columns: &[Column]) -> Result<usize> {
        columns
            .iter()
            .position(|c| c.name == self)
            .ok_or_else(|| Error::ColumnNotFound(self.to_owned()))
    }
}

impl Row {
    /// A row of `values` described by `columns` (same length).
    pub fn new(columns: Arc<[Column]>, values: Vec<Value>) -> Self {
        Row { columns, values }
    }

    /// The column descriptions.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values out of the row.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The raw value of a column.
    pub fn try_value<I: ColumnIndex>(&self, index: I) -> Result<&Value> {
        let i = index.position(&self.columns)?;
        self.values.get(i).ok_or(Error::ColumnIndexOutOfRange {
            index: i,
            len: self.values.len(),
        })
    }

    /// Reads a column as `T`: by position (`0`) or by name (`"id"`).
    ///
    /// Fails with [`Error::ColumnNotFound`], [`Error::ColumnIndexOutOfRange`] or
    /// [`Error::ColumnDecode`] (wrong type, or NULL into a non-`Option`).
    pub fn try_get<T: FromValue, I: ColumnIndex>(&self, index: I) -> Result<T> {
        let i = index.position(&self.columns)?;
        let value = self.try_value(i)?;
        T::from_value(value).map_err(|source| Error::ColumnDecode {
            column: self.columns[i].name.clone(),
            source,
        })
    }

    /// Like [`Row::try_get`], for columns the caller knows are there.
    ///
    /// # Panics
    ///
    /// Panics where [`Row::try_get`] would return an error.
    #[track_caller]
    pub fn get<T: FromValue, I: ColumnIndex>(&self, index: I) -> T {
        match self.try_get(index) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// Maps the whole row to `T` in one call.
    ///
    /// ```
    /// # use db_core::{Row, Column, Type, Value, FromRow};
    /// # use std::sync::Arc;
    /// # let columns: Arc<[Column]> = vec![Column::new("id", Type::INT8), Column::new("name", Type::TEXT)].into();
    /// # let row = Row::new(columns, vec![Value::Int8(7), Value::Text("ada".into())]);
    /// let (id, name): (i64, String) = row.decode()?;
    /// assert_eq!((id, name.as_str()), (7, "ada"));
    /// # Ok::<(), db_core::Error>(())
    /// ```
    pub fn decode<T: FromRow>(&self) -> Result<T> {
        T::from_row(self)
    }
}

/// A type built from a whole row: tuples and the hub's structs, with
/// `#[derive(FromRow)]` (see the derive's documentation for its `#[db(...)]`
/// attributes).
///
/// A tuple of up to 16 elements reads column `i` into element `i`; the row
/// must have exactly as many columns ([`Error::ColumnCount`] otherwise), so
/// a query that gains a column cannot be read silently short. A struct reads
/// the columns it names and ignores the others.
///
/// ```
/// # use db_core::{Row, Column, Type, Value};
/// # use std::sync::Arc;
/// #[derive(db_core::FromRow)]
/// #[db(crate = "db_core")] // in the hub, through `db`, this line is not needed
/// struct Account {
///     id: i64,
///     email: Option<String>,
/// }
/// # let columns: Arc<[Column]> = vec![Column::new("id", Type::INT8), Column::new("email", Type::TEXT)].into();
/// # let row = Row::new(columns, vec![Value::Int8(1), Value::Null]);
/// let account: Account = row.decode()?;
/// assert_eq!((account.id, account.email), (1, None));
/// # Ok::<(), db_core::Error>(())
/// ```
pub trait FromRow: Sized {
    /// Builds `Self` from `row`.
    fn from_row(row: &Row) -> Result<Self>;
}

/// Implements [`FromRow`] for tuples of 1 to 16 elements (`@each` takes them
/// one more at a time): element `i` reads column `i`, and the row must have exactly
/// as many columns as the tuple has elements.
macro_rules! tuple_from_row {
    (@impl $($t:ident $i:tt),+) => {
        impl<$($t: FromValue),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row) -> Result<Self> {
                let expected = [$($i),+].len();
                if row.len() != expected {
                    return Err(Error::ColumnCount {
                        expected,
                        found: row.len(),
                    });
                }
                Ok(($(row.try_get::<$t, usize>($i)?,)+))
            }
        }
    };
    (@each [$($done:tt)*]) => {};
    (@each [$($done:tt)*] $t:ident $i:tt $(, $rest:ident $rest_i:tt)*) => {
        tuple_from_row!(@impl $($done)* $t $i);
        tuple_from_row!(@each [$($done)* $t $i,] $($rest $rest_i),*);
    };
}

tuple_from_row!(@each []
    A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15
);

/// The outcome of one statement: its rows, their columns and the count from
/// its command tag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    /// The columns of the result (name and type), also when it has no rows;
    /// empty for a statement that returns no rows (`INSERT` without
    /// `RETURNING`, DDL). Every row shares them.
    pub columns: Arc<[Column]>,
    /// The rows returned, if any.
    pub rows: Vec<Row>,
    /// The row count of the command tag (`SELECT 3`, `INSERT 0 2`, ...); 0 for
    /// commands without one (DDL).
    pub rows_affected: u64,
}
