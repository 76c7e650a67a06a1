//! [`Db`]: one connection to the store over either backend (embedded SQLite, or a PostgreSQL
//! server), with the small rusqlite-shaped API every file of the store writes its SQL against.
//!
//! SQL is written once, in the dialect both engines accept: `?N` (or `?`) placeholders,
//! `INSERT … ON CONFLICT … DO NOTHING|UPDATE`, `COALESCE`, `CAST(… AS BIGINT)`. On PostgreSQL
//! the placeholders are renumbered `$N` once per statement text (and the statement prepared once
//! per connection). Where the engines differ (a row lock, a schema query), the caller asks
//! [`Db::backend`]. Values cross as [`Value`]: integers (64-bit), reals, text, bytes and NULL,
//! SQLite's five storage classes, which the PostgreSQL schema maps to `BIGINT`, `DOUBLE
//! PRECISION`, `TEXT` and `BYTEA`.
//!
//! A PostgreSQL connection lives on a thread of its own (the `postgres` crate's client runs its
//! own runtime, which must not be entered from an async task); each call is handed to that
//! thread and waited for, so the store's blocking API is the same on both backends and may be
//! called from a blocking-pool task or a plain thread.

use super::pg::PgConn;
pub use super::value::*;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// One row of a result.
pub enum Row<'r> {
    /// A SQLite row.
    Sqlite(&'r rusqlite::Row<'r>),
    /// A PostgreSQL row.
    Pg(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `idx` as `T`.
    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T, DbError> {
        let i = idx.index();
        match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                let v = match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Real(f) => Value::Real(f),
                    ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t).map_err(|e| DbError::Conversion(e.to_string()))?,
                    ),
                    ValueRef::Blob(b) => Value::Blob(b),
                };
                T::from_value(v)
            }
            Row::Pg(r) => super::pg::with_value(r, i, T::from_value),
        }
    }
}

/// How a SQLite parameter binds (the borrowed [`Value`]).
struct Bind<'a>(Value<'a>);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Real(f) => ValueRef::Real(f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn bind(st: &mut rusqlite::Statement<'_>, params: Params<'_>) -> Result<(), DbError> {
    let want = st.parameter_count();
    if want != params.len() {
        return Err(DbError::Sqlite(rusqlite::Error::InvalidParameterCount(
            params.len(),
            want,
        )));
    }
    for (i, p) in params.iter().enumerate() {
        st.raw_bind_parameter(i + 1, Bind(p.to_value()))?;
    }
    Ok(())
}

/// A prepared statement of a [`Db`].
pub enum Stmt<'c> {
    /// SQLite, from the connection's statement cache.
    SqliteCached(rusqlite::CachedStatement<'c>),
    /// SQLite, prepared for this use only.
    Sqlite(rusqlite::Statement<'c>),
    /// PostgreSQL: the statement's text (prepared once per connection, on its thread).
    Pg(&'c PgConn, String),
}

impl<'c> Stmt<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match self {
            Stmt::SqliteCached(s) => Some(s),
            Stmt::Sqlite(s) => Some(s),
            Stmt::Pg(..) => None,
        }
    }

    /// Run the statement; the number of rows it changed.
    pub fn execute(&mut self, params: Params<'_>) -> Result<usize, DbError> {
        if let Stmt::Pg(pg, sql) = self {
            return pg.execute(sql, params);
        }
        let Some(st) = self.sqlite() else {
            return Err(DbError::Other("no statement".into()));
        };
        bind(st, params)?;
        Ok(st.raw_execute()?)
    }

    /// Every row, each through `f`, as an iterator of results (collect it).
    pub fn query_map<T>(
        &mut self,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<std::vec::IntoIter<Result<T, DbError>>, DbError> {
        let mut out = Vec::new();
        self.for_each(params, |r| {
            out.push(f(r));
            Ok(true)
        })?;
        Ok(out.into_iter())
    }

    /// Rows through `f` until it answers `false` (or fails).
    pub fn for_each(
        &mut self,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<bool, DbError>,
    ) -> Result<(), DbError> {
        if let Stmt::Pg(pg, sql) = self {
            for r in pg.query(sql, params)? {
                if !f(&Row::Pg(&r))? {
                    break;
                }
            }
            return Ok(());
        }
        let Some(st) = self.sqlite() else {
            return Err(DbError::Other("no statement".into()));
        };
        bind(st, params)?;
        let mut rows = st.raw_query();
        while let Some(r) = rows.next()? {
            if !f(&Row::Sqlite(r))? {
                break;
            }
        }
        Ok(())
    }

    /// The first row through `f`; [`DbError::NoRows`] when there is none.
    pub fn query_row<T>(
        &mut self,
        params: Params<'_>,
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut f = Some(f);
        let mut out = None;
        self.for_each(params, |r| {
            if let Some(f) = f.take() {
                out = Some(f(r));
            }
            Ok(false)
        })?;
        out.unwrap_or(Err(DbError::NoRows))
    }

    /// The rows, one at a time ([`Rows::next`]); on SQLite they are read as they are asked for.
    pub fn query(&mut self, params: Params<'_>) -> Result<Rows<'_>, DbError> {
        if let Stmt::Pg(pg, sql) = self {
            return Ok(Rows::Pg(pg.query(sql, params)?.into_iter(), None));
        }
        let Some(st) = self.sqlite() else {
            return Err(DbError::Other("no statement".into()));
        };
        bind(st, params)?;
        Ok(Rows::Sqlite(st.raw_query()))
    }

    /// Whether the query returns at least one row.
    pub fn exists(&mut self, params: Params<'_>) -> Result<bool, DbError> {
        let mut found = false;
        self.for_each(params, |_| {
            found = true;
            Ok(false)
        })?;
        Ok(found)
    }
}

/// The rows of [`Stmt::query`].
pub enum Rows<'s> {
    /// SQLite's, read as they are asked for.
    Sqlite(rusqlite::Rows<'s>),
    /// PostgreSQL's, all read, and the current one.
    Pg(
        std::vec::IntoIter<tokio_postgres::Row>,
        Option<tokio_postgres::Row>,
    ),
}

impl Rows<'_> {
    /// The next row, or None after the last. (Not an `Iterator`: the row borrows the cursor.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>, DbError> {
        match self {
            Rows::Sqlite(r) => Ok(r.next()?.map(Row::Sqlite)),
            Rows::Pg(it, cur) => {
                *cur = it.next();
                Ok(cur.as_ref().map(Row::Pg))
            }
        }
    }
}

/// The key of the PostgreSQL advisory lock every writing transaction takes ([`Db::begin`]);
/// `lienthong` in ASCII, so that it names what holds it in `pg_locks`.
pub const WRITE_LOCK: i64 = 0x6c69_656e_7468_6f6e;

/// A connection to the store (see the module's comment).
pub enum Db {
    /// The embedded SQLite file.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL server, through its connection's thread.
    Pg(PgConn),
}

impl Db {
    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Pg(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection (SQLite-only work: pragmas, the WAL hook), if it is one.
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Db::Sqlite(c) => Some(c),
            Db::Pg(_) => None,
        }
    }

    /// The SQLite connection, mutably (its WAL hook), if it is one.
    pub fn sqlite_mut(&mut self) -> Option<&mut rusqlite::Connection> {
        match self {
            Db::Sqlite(c) => Some(c),
            Db::Pg(_) => None,
        }
    }

    /// Prepare `sql`, from the connection's cache of statements.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>, DbError> {
        Ok(match self {
            Db::Sqlite(c) => Stmt::SqliteCached(c.prepare_cached(sql)?),
            Db::Pg(pg) => Stmt::Pg(pg, sql.to_string()),
        })
    }

    /// Prepare `sql` for one use (a query built at run time: not worth a cache entry).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>, DbError> {
        Ok(match self {
            Db::Sqlite(c) => Stmt::Sqlite(c.prepare(sql)?),
            Db::Pg(pg) => Stmt::Pg(pg, sql.to_string()),
        })
    }

    /// Run one statement (cached); the number of rows it changed.
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, DbError> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row of `sql` through `f`; [`DbError::NoRows`] when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Run several statements without parameters (DDL, transaction control).
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Pg(pg) => pg.batch(sql),
        }
    }

    /// Statements without parameters that change nothing but the transaction's own state (a
    /// `SAVEPOINT`, its `RELEASE`), run before the next call on this connection: on
    /// PostgreSQL they are sent in that call's round trip ([`PgConn::batch_ahead`]), so a
    /// failure of theirs is that call's error and leaves the transaction able only to end; on
    /// SQLite they run now.
    pub fn execute_batch_ahead(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Pg(pg) => pg.batch_ahead(sql),
        }
    }

    /// Start a transaction that holds the store's write lock from its first statement: SQLite's
    /// `BEGIN IMMEDIATE` (the file's lock); on PostgreSQL `BEGIN` and the transaction-scoped
    /// advisory lock [`WRITE_LOCK`]. Every writing transaction of every process takes it, so
    /// a read-modify-write (the process manager's state, the trace chain's heads, the delivery
    /// log) sees what the one before it committed, on both engines alike, and no two
    /// transactions can wait on each other's rows (ARCHITECTURE.md, "The store").
    pub fn begin(&self) -> Result<(), DbError> {
        self.begin_then(None)
    }

    /// [`Db::begin`], then `then` (statements without parameters, e.g. a `SAVEPOINT`) in the
    /// same statement string. On PostgreSQL all of it is sent ahead of the transaction's first
    /// statement, in that statement's round trip ([`PgConn::begin_ahead`]): a transaction costs
    /// no round trip of its own to open, and the write lock is held from its first statement
    /// on. A lock that cannot be had is then that statement's error, and the transaction can
    /// only end (as after any failure inside a PostgreSQL transaction).
    pub fn begin_then(&self, then: Option<&str>) -> Result<(), DbError> {
        let then = then.map_or(String::new(), |t| format!("; {t}"));
        match self {
            Db::Sqlite(_) => self.execute_batch(&format!("BEGIN IMMEDIATE{then}")),
            // Every round trip under the lock delays every writer of the store.
            Db::Pg(pg) => pg.begin_ahead(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}){then}"
            )),
        }
    }

    /// Commit the transaction.
    pub fn commit(&self) -> Result<(), DbError> {
        self.execute_batch("COMMIT")
    }

    /// Roll the transaction back (nothing when none is open).
    pub fn rollback(&self) -> Result<(), DbError> {
        if self.in_transaction() {
            self.execute_batch("ROLLBACK")
        } else {
            Ok(())
        }
    }

    /// Whether a transaction is open (on PostgreSQL: as this connection last saw it).
    pub fn in_transaction(&self) -> bool {
        match self {
            Db::Sqlite(c) => !c.is_autocommit(),
            Db::Pg(pg) => pg.in_transaction(),
        }
    }

    /// Run the read `f` on one snapshot of the store, so that reads which must agree (a trace
    /// chain's events and its recorded head) see the same commits: SQLite, a deferred
    /// transaction (its snapshot is taken at the first read); PostgreSQL, `REPEATABLE READ READ
    /// ONLY` (in autocommit each statement sees what was committed since the one before it).
    /// Inside an open transaction `f` runs in it. Errors: `f`'s, or the transaction's.
    pub fn read_snapshot<T>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        if self.in_transaction() {
            return f(self);
        }
        self.execute_batch(match self {
            Db::Sqlite(_) => "BEGIN",
            Db::Pg(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })?;
        let read = f(self);
        // A read-only transaction has nothing to keep: it ends either way.
        let ended = self.execute_batch("ROLLBACK");
        let value = read?;
        ended.map(|()| value)
    }

    /// Run `f` in a transaction of its own ([`Db::begin`]), committed when it returns Ok and
    /// rolled back when it fails.
    pub fn transaction<T>(&self, f: impl FnOnce(&Db) -> Result<T, DbError>) -> Result<T, DbError> {
        self.begin()?;
        let done = f(self).and_then(|v| self.commit().map(|()| v));
        if done.is_err() {
            let _ = self.rollback();
        }
        done
    }
}
