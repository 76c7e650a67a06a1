//! [`PgConn`]: one PostgreSQL connection on a thread of its own (the `postgres` crate's
//! blocking client runs a runtime of its own, which must not be entered from an async task),
//! and the conversions between the store's [`Value`]s and PostgreSQL's types.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use postgres::types::{IsNull, ToSql, Type};

use super::value::{DbError, OwnedValue, Params, Value};

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The connection and what belongs to it: shared by the connection's thread and the callers
/// that may use it directly ([`PgConn::run`]).
struct Session {
    config: postgres::Config,
    client: postgres::Client,
    cache: PgCache,
    /// Whether a transaction is open, as the callers see it (shared with [`PgConn`]).
    in_tx: std::sync::Arc<AtomicBool>,
    /// A call failed because the server ended the session or the link broke: the connection
    /// is made again before the next call, even where the client has not noticed yet that its
    /// socket is closed (the server's last answer and the socket's end arrive apart).
    broken: bool,
    /// The connection was made again while a transaction was open: like PostgreSQL's own
    /// aborted transaction, every call fails until the transaction is ended; its `COMMIT`
    /// fails too (on the new session it would report success for a transaction that is gone)
    /// and its `ROLLBACK` succeeds ([`Session::lost_transaction`]).
    lost_tx: bool,
}

/// How a call ends the caller's transaction, if it does.
#[derive(Clone, Copy, PartialEq)]
enum Ends {
    No,
    Commit,
    Rollback,
}

impl Session {
    /// The error of a call made while the transaction is lost, or `None` when the call may
    /// run: a `COMMIT` or `ROLLBACK` ends the lost transaction (the `COMMIT` still fails).
    fn lost_transaction(&mut self, ends: Ends) -> Option<DbError> {
        if !self.lost_tx {
            return None;
        }
        if ends != Ends::No {
            self.lost_tx = false;
        }
        (ends != Ends::Rollback).then(|| {
            DbError::Other(
                "the store's connection was lost inside a transaction; the transaction is gone with it"
                    .into(),
            )
        })
    }

    /// The server restarted or the link broke: connect again before the next call (the open
    /// transaction, if any, is gone with the old connection).
    fn reconnect_if_closed(&mut self) {
        if !self.broken && !self.client.is_closed() {
            return;
        }
        match open(&self.config) {
            Ok(c) => {
                tracing::info!(message = "the store's connection was lost; connected again");
                self.client = c;
                self.cache.clear();
                self.broken = false;
                self.lost_tx |= self.in_tx.load(Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(message = "the store's server is not reachable", error = %e);
            }
        }
    }

    /// Run `f` unless the transaction is lost; note a failure that shows the connection gone.
    fn call<T>(
        &mut self,
        ends: Ends,
        f: impl FnOnce(&mut postgres::Client, &mut PgCache) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        if let Some(lost) = self.lost_transaction(ends) {
            return Err(lost);
        }
        let r = f(&mut self.client, &mut self.cache);
        if r.as_ref().is_err_and(DbError::is_connection_lost) {
            self.broken = true;
        }
        r
    }
}

/// A PostgreSQL connection and a thread that serves it to callers inside an async runtime; a
/// caller on a plain thread (the store's group-commit writer) or on the blocking pool inside
/// [`may_block`] uses it directly, without the two thread wake-ups per statement: a writing transaction holds the store's write lock
/// across its statements, so their latency bounds the whole store's write rate. Calls wait
/// for their answer. The thread ends (and the connection closes) when this is dropped.
pub struct PgConn {
    jobs: mpsc::Sender<Job>,
    session: std::sync::Arc<std::sync::Mutex<Session>>,
    /// Whether this connection opened a transaction it has not ended (a transaction lost with
    /// its connection stays open until it is ended: [`Session::lost_tx`]).
    in_tx: std::sync::Arc<AtomicBool>,
}

impl PgConn {
    /// Connect to `url` (`postgres://user@host:port/db?…`, libpq's URL form). Errors: the URL,
    /// the connection, or the thread.
    pub fn connect(url: &str) -> Result<PgConn, DbError> {
        // The connection always verifies the server's certificate when it uses TLS: libpq's
        // verify-full and verify-ca read as require (which the client knows).
        let url = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| DbError::Other(format!("store url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        // A server or a link that dies is noticed within about a minute, not TCP's two hours.
        config.keepalives_idle(std::time::Duration::from_secs(30));
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready, connected) = mpsc::sync_channel::<Result<Session, DbError>>(1);
        let in_tx = std::sync::Arc::new(AtomicBool::new(false));
        let session_tx = in_tx.clone();
        let (share, shared) = mpsc::sync_channel(1);
        // The client runs a runtime of its own, which must not be started from inside another
        // (an async task, the blocking pool): it is opened and served on this thread.
        std::thread::Builder::new()
            .name("lienthong-store-pg".into())
            .spawn(move || {
                match open(&config) {
                    Ok(client) => {
                        let _ = ready.send(Ok(Session {
                            config,
                            client,
                            cache: PgCache::new(),
                            in_tx: session_tx,
                            broken: false,
                            lost_tx: false,
                        }));
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
                let Ok(session) = shared.recv() else {
                    return;
                };
                let session: std::sync::Arc<std::sync::Mutex<Session>> = session;
                while let Ok(job) = rx.recv() {
                    let mut s = session.lock().unwrap_or_else(|e| e.into_inner());
                    s.reconnect_if_closed();
                    job(&mut s);
                }
                // The client is closed here, where no runtime runs (its drop enters its own):
                // once the `PgConn` is gone, this thread holds the last reference.
                while std::sync::Arc::strong_count(&session) > 1 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                drop(session);
            })
            .map_err(|e| DbError::Other(format!("the store's connection thread: {e}")))?;
        let session = connected
            .recv()
            .map_err(|_| DbError::Other("the store's connection thread ended".into()))??;
        let session = std::sync::Arc::new(std::sync::Mutex::new(session));
        share
            .send(session.clone())
            .map_err(|_| DbError::Other("the store's connection thread ended".into()))?;
        Ok(PgConn {
            jobs,
            session,
            in_tx,
        })
    }

    /// Run `f` on the connection and wait for its answer: here when this thread is outside
    /// any async runtime or a blocking-pool thread inside [`may_block`], else on the
    /// connection's thread.
    fn run<T: Send + 'static>(
        &self,
        ends: Ends,
        f: impl FnOnce(&mut postgres::Client, &mut PgCache) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        if tokio::runtime::Handle::try_current().is_err() || MAY_BLOCK.with(|m| m.get()) {
            let mut s = self.session.lock().unwrap_or_else(|e| e.into_inner());
            s.reconnect_if_closed();
            return s.call(ends, f);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |s: &mut Session| {
                let _ = tx.send(s.call(ends, f));
            }))
            .map_err(|_| DbError::Other("the store's connection is closed".into()))?;
        rx.recv()
            .map_err(|_| DbError::Other("the store's connection thread ended".into()))?
    }

    /// Whether this connection opened a transaction it has not ended.
    pub fn in_transaction(&self) -> bool {
        self.in_tx.load(Ordering::Relaxed)
    }

    /// Run statements without parameters (`BEGIN`, `COMMIT`, DDL).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        let head = sql.trim_start().to_ascii_uppercase();
        let owned = sql.to_string();
        let ends = if head.starts_with("COMMIT") {
            Ends::Commit
        } else if head.starts_with("ROLLBACK") && !head.starts_with("ROLLBACK TO") {
            Ends::Rollback
        } else {
            Ends::No
        };
        let r = self.run(ends, move |c, _| Ok(c.batch_execute(&owned)?));
        if head.starts_with("BEGIN") {
            // A BEGIN refused inside a lost transaction leaves it open: only its end clears it.
            if r.is_ok() {
                self.in_tx.store(true, Ordering::Relaxed);
            }
        } else if ends != Ends::No {
            self.in_tx.store(false, Ordering::Relaxed);
        }
        r
    }

    /// Run one statement with parameters; the rows it changed.
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, DbError> {
        let (sql, values) = owned(sql, params);
        self.run(Ends::No, move |c, cache| {
            let st = prepared(c, cache, &sql)?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            Ok(c.execute(&st, &refs)? as usize)
        })
    }

    /// Run one query with parameters; its rows.
    pub fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<postgres::Row>, DbError> {
        let (sql, values) = owned(sql, params);
        self.run(Ends::No, move |c, cache| {
            let st = prepared(c, cache, &sql)?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            Ok(c.query(&st, &refs)?)
        })
    }
}

thread_local! {
    /// Set by [`may_block`] on a thread of the runtime's blocking pool.
    static MAY_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f`, which runs on a thread of the async runtime's blocking pool (`spawn_blocking`),
/// letting the connections it uses run their statements on this thread: a blocking-pool thread
/// may start the client's own runtime (only the runtime's worker threads may not), so a read
/// needs no hand-over to the connection's thread. Never call it from an async task.
pub fn may_block<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            MAY_BLOCK.with(|m| m.set(self.0));
        }
    }
    let _reset = Reset(MAY_BLOCK.with(|m| m.replace(true)));
    f()
}

/// Connect (TLS as [`super::pg_tls::connect`] decides) and set the session's limits: a
/// transaction idle for a minute is ended by the server (a writer cut off while holding the
/// store's write lock frees it), and a lock waited for a minute fails (the batch is retried by
/// its callers) instead of hanging every writer.
fn open(config: &postgres::Config) -> Result<postgres::Client, DbError> {
    let mut client = super::pg_tls::connect(config)?;
    client.batch_execute(
        "SET idle_in_transaction_session_timeout = '60s'; SET lock_timeout = '60s'",
    )?;
    Ok(client)
}

fn owned(sql: &str, params: Params<'_>) -> (String, Vec<OwnedValue>) {
    (
        sql.to_string(),
        params
            .iter()
            .map(|p| p.to_value().to_owned_value())
            .collect(),
    )
}

/// The statement for the store's `sql`, prepared once per connection.
fn prepared(
    c: &mut postgres::Client,
    cache: &mut PgCache,
    sql: &str,
) -> Result<postgres::Statement, DbError> {
    if let Some(st) = cache.get(sql) {
        return Ok(st.clone());
    }
    let st = c.prepare(&to_postgres_placeholders(sql))?;
    // Queries built at run time (filters) would grow the cache without end.
    if cache.len() > 512 {
        cache.clear();
    }
    cache.insert(sql.to_string(), st.clone());
    Ok(st)
}

impl ToSql for OwnedValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            OwnedValue::Null => Ok(IsNull::Yes),
            OwnedValue::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot bind to a {ty} parameter").into()),
            },
            OwnedValue::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::FLOAT8 => f.to_sql(ty, out),
                _ => Err(format!("a real cannot bind to a {ty} parameter").into()),
            },
            OwnedValue::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    // PostgreSQL's text cannot hold U+0000 (SQLite's can): the one character
                    // that cannot cross is replaced, rather than failing the group commit.
                    if s.contains('\0') {
                        s.replace('\0', "\u{fffd}").as_str().to_sql(ty, out)
                    } else {
                        s.as_str().to_sql(ty, out)
                    }
                }
                _ => Err(format!("text cannot bind to a {ty} parameter").into()),
            },
            OwnedValue::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => std::str::from_utf8(b)?.to_sql(ty, out),
                _ => Err(format!("bytes cannot bind to a {ty} parameter").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Column `i` of `row` as a [`Value`], given to `f`.
pub(super) fn with_value<T>(
    row: &postgres::Row,
    i: usize,
    f: impl FnOnce(Value<'_>) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let Some(col) = row.columns().get(i) else {
        return Err(DbError::Conversion(format!("no column {i}")));
    };
    let e = |e: postgres::Error| DbError::Conversion(format!("column {}: {e}", col.name()));
    let v = match *col.type_() {
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(e)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(e)?
            .map(|n| Value::Int(n.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(e)?
            .map(|n| Value::Int(n.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(e)?
            .map(|b| Value::Int(b.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(e)?
            .map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(e)?
            .map(|f| Value::Real(f.into())),
        Type::BYTEA => {
            let b: Option<&[u8]> = row.try_get(i).map_err(e)?;
            return f(b.map_or(Value::Null, Value::Blob));
        }
        _ => {
            let t: Option<&str> = row.try_get(i).map_err(|err| {
                DbError::Conversion(format!(
                    "column {} has type {} (cast it to BIGINT or TEXT): {err}",
                    col.name(),
                    col.type_()
                ))
            })?;
            return f(t.map_or(Value::Null, Value::Text));
        }
    };
    f(v.unwrap_or(Value::Null))
}

/// `sql` with its `?N` and `?` placeholders as PostgreSQL's `$N` (string literals, quoted names
/// and comments left alone).
pub fn to_postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0usize;
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    out.push('$');
                    out.push_str(&next.to_string());
                } else {
                    next = digits.parse().unwrap_or(next);
                    out.push('$');
                    out.push_str(&digits);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Statements prepared on one PostgreSQL connection, by the store's SQL text.
pub(super) type PgCache = HashMap<String, postgres::Statement>;

#[cfg(test)]
mod tests {
    use super::to_postgres_placeholders as pg;

    #[test]
    fn placeholders_are_renumbered_outside_literals() {
        assert_eq!(pg("SELECT ?1, ?2, ?1"), "SELECT $1, $2, $1");
        assert_eq!(pg("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(pg("x = '?' AND y = ?3"), "x = '?' AND y = $3");
        assert_eq!(pg("\"we?ird\" = ?"), "\"we?ird\" = $1");
    }
}
