//! The values and errors of the store's SQL, shared by both engines: [`Value`] (SQLite's
//! storage classes), the conversions from and to Rust ([`ToValue`], [`FromValue`]), the
//! [`params!`](crate::params) macro, and [`DbError`]. `db.rs` re-exports all of it.

/// A value crossing into or out of SQL: SQLite's storage classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (`INTEGER` / `BIGINT`; booleans are 0 and 1).
    Int(i64),
    /// A double (`REAL` / `DOUBLE PRECISION`).
    Real(f64),
    /// UTF-8 text (`TEXT`).
    Text(&'a str),
    /// Bytes (`BLOB` / `BYTEA`).
    Blob(&'a [u8]),
}

/// An owned [`Value`] (what crosses to the PostgreSQL connection's thread).
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedValue {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl OwnedValue {
    /// The borrowed view.
    pub fn as_value(&self) -> Value<'_> {
        match self {
            OwnedValue::Null => Value::Null,
            OwnedValue::Int(i) => Value::Int(*i),
            OwnedValue::Real(f) => Value::Real(*f),
            OwnedValue::Text(t) => Value::Text(t),
            OwnedValue::Blob(b) => Value::Blob(b),
        }
    }
}

impl Value<'_> {
    /// The owned copy.
    pub fn to_owned_value(&self) -> OwnedValue {
        match *self {
            Value::Null => OwnedValue::Null,
            Value::Int(i) => OwnedValue::Int(i),
            Value::Real(f) => OwnedValue::Real(f),
            Value::Text(t) => OwnedValue::Text(t.to_string()),
            Value::Blob(b) => OwnedValue::Blob(b.to_vec()),
        }
    }
}

/// A Rust value that binds as a SQL parameter.
pub trait ToValue {
    /// The value to bind.
    fn to_value(&self) -> Value<'_>;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_to_value!(i64, i32, i16, i8, u32, u16, u8, u64, usize, isize);

impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToValue for std::borrow::Cow<'_, str> {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for OwnedValue {
    fn to_value(&self) -> Value<'_> {
        self.as_value()
    }
}
impl ToValue for Value<'_> {
    fn to_value(&self) -> Value<'_> {
        *self
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}
impl<T: ToValue + ?Sized> ToValue for Box<T> {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

/// Parameters of one statement, in order (`?1` is the first).
pub type Params<'p> = &'p [&'p dyn ToValue];

/// The parameters of a statement: `params![a, b]` is `&[&a, &b]` as [`Params`].
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::value::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::value::ToValue),+] as &[&dyn $crate::store::value::ToValue]
    };
}

/// Parameters from a list of values (a query built at run time): `&param_refs(&args)`.
pub fn param_refs<T: ToValue>(values: &[T]) -> Vec<&dyn ToValue> {
    values.iter().map(|v| v as &dyn ToValue).collect()
}

/// `sql` with every numbered placeholder `?N` outside quotes renumbered `?N+by`: a statement
/// put after another one's parameters (two statements as one, in a `WITH`).
pub fn shift_placeholders(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                let mut n = 0usize;
                let mut digits = false;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    digits = true;
                    chars.next();
                }
                if digits {
                    out.push_str(&(n + by).to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// A Rust value read from a column.
pub trait FromValue: Sized {
    /// Convert the column's value (Err: NULL where a value is needed, or another type).
    fn from_value(v: Value<'_>) -> Result<Self, DbError>;
}

fn wrong(v: Value<'_>, want: &str) -> DbError {
    DbError::Conversion(format!("expected {want}, found {v:?}"))
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: Value<'_>) -> Result<Self, DbError> {
                match v {
                    Value::Int(i) => <$t>::try_from(i)
                        .map_err(|_| DbError::Conversion(format!("{i} is out of range for {}", stringify!($t)))),
                    other => Err(wrong(other, "an integer")),
                }
            }
        }
    )*};
}
int_from_value!(i64, i32, i16, u32, u16, u8, u64, usize);

impl FromValue for bool {
    fn from_value(v: Value<'_>) -> Result<Self, DbError> {
        match v {
            Value::Int(i) => Ok(i != 0),
            other => Err(wrong(other, "a boolean")),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: Value<'_>) -> Result<Self, DbError> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(wrong(other, "a number")),
        }
    }
}
impl FromValue for String {
    fn from_value(v: Value<'_>) -> Result<Self, DbError> {
        match v {
            Value::Text(t) => Ok(t.to_string()),
            other => Err(wrong(other, "text")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: Value<'_>) -> Result<Self, DbError> {
        match v {
            Value::Blob(b) => Ok(b.to_vec()),
            Value::Text(t) => Ok(t.as_bytes().to_vec()),
            other => Err(wrong(other, "bytes")),
        }
    }
}
impl FromValue for OwnedValue {
    fn from_value(v: Value<'_>) -> Result<Self, DbError> {
        Ok(v.to_owned_value())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value<'_>) -> Result<Self, DbError> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// The store's database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (the server's message, or the connection's).
    #[error("{0}")]
    Postgres(String, Option<String>),
    /// A query that must return a row returned none.
    #[error("the query returned no rows")]
    NoRows,
    /// A column's value is not of the type asked for.
    #[error("{0}")]
    Conversion(String),
    /// Anything else (the text says what).
    #[error("{0}")]
    Other(String),
}

impl DbError {
    /// The engine reported a lock it could not take in time (SQLite busy or locked), or
    /// PostgreSQL a serialisation failure or deadlock: the transaction may succeed when run
    /// again.
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            DbError::Postgres(_, Some(code)) => {
                code == "40001" || code == "40P01" || code == "55P03"
            }
            _ => false,
        }
    }

    /// PostgreSQL's session is gone: the server ended it (SQLSTATE class 57P, operator
    /// intervention: shutdown, crash, termination by an administrator, `idle_session_timeout`;
    /// 25P03, `idle_in_transaction_session_timeout`), the connection failed (class 08), or the
    /// client found its socket closed or broken (`tokio-postgres`'s "connection closed" and
    /// "error communicating with the server").
    pub fn is_connection_lost(&self) -> bool {
        match self {
            DbError::Postgres(_, Some(code)) => {
                code.starts_with("57P") || code.starts_with("08") || code == "25P03"
            }
            DbError::Postgres(text, None) => {
                text.starts_with("postgres: connection closed")
                    || text.starts_with("postgres: error communicating with the server")
            }
            _ => false,
        }
    }

    /// A uniqueness constraint refused the row.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            DbError::Postgres(_, Some(code)) => code == "23505",
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let code = e.code().map(|c| c.code().to_string());
        let text = match e.as_db_error() {
            Some(db) => format!("postgres: {}", db.message()),
            None => {
                // The connection's error and its causes (a TLS handshake says why it failed).
                let mut t = format!("postgres: {e}");
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    let more = c.to_string();
                    if !t.contains(&more) {
                        t.push_str(&format!(": {more}"));
                    }
                    cause = c.source();
                }
                t
            }
        };
        DbError::Postgres(text, code)
    }
}

/// `query_row(…).optional()`: `Ok(None)` where the query returned no row.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for "no rows", the value or the error otherwise.
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExtension<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) | Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// A column index (0-based).
pub trait RowIndex {
    /// The index.
    fn index(&self) -> usize;
}
impl RowIndex for usize {
    fn index(&self) -> usize {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::shift_placeholders;

    #[test]
    fn placeholders_are_shifted_outside_quotes() {
        assert_eq!(
            shift_placeholders("UPDATE t SET a = ?2, b = '?1' WHERE k = ?1 AND c = ?10", 7),
            "UPDATE t SET a = ?9, b = '?1' WHERE k = ?8 AND c = ?17"
        );
    }
}
