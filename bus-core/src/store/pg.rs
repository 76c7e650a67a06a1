//! [`PgConn`]: one PostgreSQL connection, served on the calling thread or on a thread of its
//! own (its client runs a runtime of its own, which must not be entered from an async task),
//! with statements sent ahead in the round trip of the next one ([`PgConn::batch_ahead`]), and
//! the conversions between the store's [`Value`]s and PostgreSQL's types.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::Poll;

use tokio_postgres::AsyncMessage;
use tokio_postgres::types::{IsNull, ToSql, Type};

use super::pg_tls::Protocol;
use super::value::{DbError, OwnedValue, Params, Value};

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// One connection: the client, the protocol that carries its requests, and a single-threaded
/// runtime that drives both while the caller waits, as the `postgres` crate's blocking client
/// does; unlike that client, two requests can be written before the first answer is read
/// ([`Link::piped`]: PostgreSQL's pipelining of the extended query protocol, PostgreSQL
/// documentation, "Pipeline Mode").
pub(super) struct Link {
    /// `None` only once dropped inside an async task.
    runtime: Option<tokio::runtime::Runtime>,
    /// `None` only while the link closes.
    client: Option<tokio_postgres::Client>,
    /// `None` once it ended (the server closed the connection, or it failed): dropping it
    /// ends every request still waiting for an answer.
    protocol: Option<Protocol>,
}

/// Which of a piped pair of requests failed.
enum Piped {
    /// The statements sent ahead.
    Ahead(tokio_postgres::Error),
    /// The call itself.
    Own(tokio_postgres::Error),
    /// The link is closing: nothing was sent.
    Closed,
}

impl Piped {
    /// The store's error for it.
    fn into_error(self) -> DbError {
        match self {
            Piped::Ahead(e) | Piped::Own(e) => e.into(),
            Piped::Closed => DbError::Other("the store's connection is closing".into()),
        }
    }
}

impl Link {
    /// A connected client and its protocol, driven by `runtime` (current-thread, with I/O and
    /// time).
    pub(super) fn new(
        runtime: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
        protocol: Protocol,
    ) -> Link {
        Link {
            runtime: Some(runtime),
            client: Some(client),
            protocol: Some(protocol),
        }
    }

    fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(|c| c.is_closed()) || self.protocol.is_none()
    }

    /// Run `ahead` (statements without parameters; skipped when empty) and `own` in one round
    /// trip: both are written before either answer is read, in that order, and the server runs
    /// them in that order. `own` is sent even when `ahead` fails (inside a transaction the
    /// failure aborts it, so `own` then fails too, unless it ends the transaction).
    fn piped<'l, T, F>(
        &'l mut self,
        ahead: &str,
        own: impl FnOnce(&'l tokio_postgres::Client) -> F,
    ) -> Result<T, Piped>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let Link {
            runtime,
            client,
            protocol,
        } = self;
        let (Some(client), Some(runtime)) = (client.as_ref(), runtime.as_ref()) else {
            return Err(Piped::Closed);
        };
        let ahead = (!ahead.is_empty()).then(|| client.batch_execute(ahead));
        let own = own(client);
        let both = async move {
            match ahead {
                // Polled in order, so `ahead`'s request is queued before `own`'s (tokio-postgres
                // queues a request when its future is first polled).
                Some(ahead) => futures_lite::future::zip(ahead, own).await,
                None => (Ok(()), own.await),
            }
        };
        match drive(runtime, protocol, both) {
            Err(e) => Err(Piped::Own(e)),
            Ok((Err(e), _)) => Err(Piped::Ahead(e)),
            Ok((Ok(()), Err(e))) => Err(Piped::Own(e)),
            Ok((Ok(()), Ok(v))) => Ok(v),
        }
    }
}

/// Drive `fut` and the connection's `protocol` on `runtime` until `fut` is done (the
/// `postgres` crate's `Connection::poll_block_on`). A protocol that ends or fails is dropped,
/// which fails the requests still waiting for an answer, so `fut` always ends.
fn drive<F: Future>(
    runtime: &tokio::runtime::Runtime,
    protocol: &mut Option<Protocol>,
    fut: F,
) -> Result<F::Output, tokio_postgres::Error> {
    let mut fut = pin!(fut);
    runtime.block_on(std::future::poll_fn(|cx| {
        while let Some(p) = protocol.as_mut() {
            match p(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notice(n)))) => {
                    tracing::debug!(
                        message = "PostgreSQL notice",
                        severity = n.severity(),
                        notice = n.message()
                    );
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => {
                    *protocol = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => *protocol = None,
                Poll::Pending => break,
            }
        }
        fut.as_mut().poll(cx).map(Ok)
    }))
}

impl Drop for Link {
    /// Say goodbye to the server (the protocol sends `Terminate` once the client is gone),
    /// waiting at most a second.
    fn drop(&mut self) {
        drop(self.client.take());
        if tokio::runtime::Handle::try_current().is_ok() && !MAY_BLOCK.with(|m| m.get()) {
            // Inside an async task (the connection's thread died, a caller holds the last
            // reference): no runtime may block here, nor be dropped; the server sees the
            // socket close.
            drop(self.protocol.take());
            if let Some(runtime) = self.runtime.take() {
                runtime.shutdown_background();
            }
            return;
        }
        let Link {
            runtime, protocol, ..
        } = self;
        let Some(runtime) = runtime.as_ref() else {
            return;
        };
        let Some(p) = protocol.as_mut() else {
            return;
        };
        let ended = std::future::poll_fn(|cx| {
            loop {
                match p(cx) {
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        });
        let _ = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), ended).await
        });
    }
}

/// Why the caller's transaction cannot go on, though the caller has not ended it yet.
#[derive(Debug, Clone, PartialEq)]
enum Lost {
    /// The connection was made again: the transaction is gone with the old one. Like
    /// PostgreSQL's own aborted transaction, every call fails until the transaction is ended;
    /// its `COMMIT` fails too (on the new session it would report success for a transaction
    /// that is gone) and its `ROLLBACK` succeeds.
    Connection,
    /// Statements sent ahead failed ([`PgConn::batch_ahead`]): the server aborted the
    /// transaction, and every call but its end fails with this reason. Its `COMMIT` is sent
    /// as a `ROLLBACK` and fails; its `ROLLBACK` succeeds.
    Ahead(String),
}

/// The connection and what belongs to it: shared by the connection's thread and the callers
/// that may use it directly ([`PgConn::run`]).
struct Session {
    config: tokio_postgres::Config,
    link: Link,
    cache: PgCache,
    /// Whether a transaction is open, as the callers see it (shared with [`PgConn`]).
    in_tx: std::sync::Arc<AtomicBool>,
    /// A call failed because the server ended the session or the link broke: the connection
    /// is made again before the next call, even where the client has not noticed yet that its
    /// socket is closed (the server's last answer and the socket's end arrive apart).
    broken: bool,
    /// The open transaction cannot go on ([`Lost`]; [`Session::lost_transaction`]).
    lost_tx: Option<Lost>,
    /// Statements without parameters to send ahead of the next call, in its round trip
    /// ([`PgConn::batch_ahead`]); empty when none.
    ahead: String,
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
        let lost = self.lost_tx.clone()?;
        if ends != Ends::No {
            self.lost_tx = None;
        }
        match lost {
            Lost::Connection => (ends != Ends::Rollback).then(|| {
                DbError::Other(
                    "the store's connection was lost inside a transaction; the transaction is gone with it"
                        .into(),
                )
            }),
            Lost::Ahead(why) => match ends {
                Ends::No => Some(DbError::Other(why)),
                // The ROLLBACK itself ends the server's (aborted) transaction.
                Ends::Rollback => None,
                Ends::Commit => {
                    // The server's transaction is still open (aborted): end it, and fail.
                    let _ = self.link.piped("", |c| c.batch_execute("ROLLBACK"));
                    Some(DbError::Other(why))
                }
            },
        }
    }

    /// The store's error for a failed request: statements sent ahead that failed lose the
    /// open transaction ([`Lost::Ahead`]).
    fn failed(&mut self, p: Piped) -> DbError {
        match p {
            Piped::Own(_) | Piped::Closed => p.into_error(),
            Piped::Ahead(e) => {
                let e = DbError::from(e);
                if self.in_tx.load(Ordering::Relaxed) && self.lost_tx.is_none() {
                    self.lost_tx = Some(Lost::Ahead(format!(
                        "statements sent ahead in this transaction failed: {e}"
                    )));
                }
                e
            }
        }
    }

    /// The server restarted or the link broke: connect again before the next call (the open
    /// transaction, if any, is gone with the old connection).
    fn reconnect_if_closed(&mut self) {
        if !self.broken && !self.link.is_closed() {
            return;
        }
        match open(&self.config) {
            Ok(link) => {
                tracing::info!(message = "the store's connection was lost; connected again");
                self.cache.clear();
                self.link = link;
                self.broken = false;
                self.ahead.clear();
                if self.in_tx.load(Ordering::Relaxed) {
                    self.lost_tx = Some(Lost::Connection);
                }
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
        f: impl FnOnce(&mut Session) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        if let Some(lost) = self.lost_transaction(ends) {
            return Err(lost);
        }
        let r = f(self);
        if r.as_ref().is_err_and(DbError::is_connection_lost) {
            self.broken = true;
        }
        r
    }

    /// Statements without parameters, after those sent ahead. A `ROLLBACK` drops those sent
    /// ahead instead (nothing they do outlives it).
    fn batch(&mut self, sql: &str, ends: Ends) -> Result<(), DbError> {
        let ahead = std::mem::take(&mut self.ahead);
        let ahead = if ends == Ends::Rollback { "" } else { &ahead };
        let r = self
            .link
            .piped(ahead, |c| c.batch_execute(sql))
            .map_err(|p| self.failed(p));
        if ends != Ends::No {
            // The transaction is over either way (a COMMIT after a failure is a rollback on
            // the server): nothing of it may fail the next one.
            self.lost_tx = None;
        }
        r
    }

    /// The statement for the store's `sql`, prepared once per connection (statements sent
    /// ahead go first, in their own round trip, when it must be prepared).
    fn prepared(&mut self, sql: &str) -> Result<tokio_postgres::Statement, DbError> {
        if let Some(st) = self.cache.get(sql) {
            return Ok(st.clone());
        }
        if !self.ahead.is_empty() {
            self.batch("", Ends::No)?;
        }
        let text = to_postgres_placeholders(sql);
        let st = self
            .link
            .piped("", |c| c.prepare(&text))
            .map_err(|p| self.failed(p))?;
        // Queries built at run time (filters) would grow the cache without end.
        if self.cache.len() > 512 {
            self.cache.clear();
        }
        self.cache.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// One statement with parameters, after those sent ahead: the rows it changed.
    fn execute(&mut self, sql: &str, values: &[OwnedValue]) -> Result<u64, DbError> {
        let st = self.prepared(sql)?;
        let ahead = std::mem::take(&mut self.ahead);
        let refs: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.link
            .piped(&ahead, |c| c.execute(&st, &refs))
            .map_err(|p| self.failed(p))
    }

    /// One query with parameters, after the statements sent ahead: its rows.
    fn query(
        &mut self,
        sql: &str,
        values: &[OwnedValue],
    ) -> Result<Vec<tokio_postgres::Row>, DbError> {
        let st = self.prepared(sql)?;
        let ahead = std::mem::take(&mut self.ahead);
        let refs: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.link
            .piped(&ahead, |c| c.query(&st, &refs))
            .map_err(|p| self.failed(p))
    }
}

/// A PostgreSQL connection and a thread that serves it to callers inside an async runtime; a
/// caller on a plain thread (the store's group-commit writer) or on the blocking pool inside
/// [`may_block`] uses it directly, without the two thread wake-ups per statement: a writing
/// transaction holds the store's write lock across its statements, so their latency bounds
/// the whole store's write rate. Calls wait for their answer. The thread ends (and the
/// connection closes) when this is dropped.
pub struct PgConn {
    jobs: mpsc::Sender<Job>,
    session: std::sync::Arc<std::sync::Mutex<Session>>,
    /// Whether this connection opened a transaction it has not ended (a transaction lost with
    /// its connection stays open until it is ended: [`Lost`]).
    in_tx: std::sync::Arc<AtomicBool>,
}

impl PgConn {
    /// Connect to `url` (`postgres://user@host:port/db?…`, libpq's URL form). Errors: the URL,
    /// the connection, or the thread.
    pub fn connect(url: &str) -> Result<PgConn, DbError> {
        let config = config(url)?;
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
                    Ok(link) => {
                        let _ = ready.send(Ok(Session {
                            config,
                            link,
                            cache: PgCache::new(),
                            in_tx: session_tx,
                            broken: false,
                            lost_tx: None,
                            ahead: String::new(),
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
        f: impl FnOnce(&mut Session) -> Result<T, DbError> + Send + 'static,
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

    /// Run statements without parameters (`BEGIN`, `COMMIT`, DDL), after any sent ahead.
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
        let r = self.run(ends, move |s| s.batch(&owned, ends));
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

    /// Send `sql` (statements without parameters that change no transaction's state but their
    /// own: a `SAVEPOINT`, its `RELEASE`) ahead of the next call on this connection, in that
    /// call's round trip: they run first, and their failure is that call's error, after which
    /// the transaction can only be ended (the server aborted it). A `ROLLBACK` drops them.
    /// Errors: the transaction is lost already.
    pub fn batch_ahead(&self, sql: &str) -> Result<(), DbError> {
        let owned = sql.to_string();
        self.run(Ends::No, move |s| {
            if !s.ahead.is_empty() {
                s.ahead.push_str("; ");
            }
            s.ahead.push_str(&owned);
            Ok(())
        })
    }

    /// Open a transaction with `sql` (a `BEGIN` and statements without parameters that go
    /// with it, such as the store's write lock) sent ahead of the next call
    /// ([`PgConn::batch_ahead`]), in that call's round trip: the transaction counts as open from
    /// here, and a failure of `sql` (a lock that cannot be had) is the next call's error, after
    /// which the transaction can only be ended. A `ROLLBACK` before any other call drops it.
    /// Errors: the transaction before is lost and not ended yet.
    pub fn begin_ahead(&self, sql: &str) -> Result<(), DbError> {
        self.batch_ahead(sql)?;
        self.in_tx.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Run one statement with parameters; the rows it changed.
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, DbError> {
        let (sql, values) = owned(sql, params);
        self.run(Ends::No, move |s| Ok(s.execute(&sql, &values)? as usize))
    }

    /// Run one query with parameters; its rows.
    pub fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, DbError> {
        let (sql, values) = owned(sql, params);
        self.run(Ends::No, move |s| s.query(&sql, &values))
    }
}

/// The connection settings of `url` (`postgres://user@host:port/db?…`, libpq's URL form), with
/// the store's timeouts. Errors: the URL.
pub(super) fn config(url: &str) -> Result<tokio_postgres::Config, DbError> {
    // The connection always verifies the server's certificate when it uses TLS: libpq's
    // verify-full and verify-ca read as require (which the client knows).
    let url = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Other(format!("store url: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    // A server or a link that dies is noticed within about a minute, not TCP's two hours.
    config.keepalives_idle(std::time::Duration::from_secs(30));
    Ok(config)
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
fn open(config: &tokio_postgres::Config) -> Result<Link, DbError> {
    let (runtime, client, protocol) = super::pg_tls::connect(config)?;
    let mut link = Link::new(runtime, client, protocol);
    link.piped("", |c| {
        c.batch_execute("SET idle_in_transaction_session_timeout = '60s'; SET lock_timeout = '60s'")
    })
    .map_err(Piped::into_error)?;
    Ok(link)
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

    tokio_postgres::types::to_sql_checked!();
}

/// Column `i` of `row` as a [`Value`], given to `f`.
pub(super) fn with_value<T>(
    row: &tokio_postgres::Row,
    i: usize,
    f: impl FnOnce(Value<'_>) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let Some(col) = row.columns().get(i) else {
        return Err(DbError::Conversion(format!("no column {i}")));
    };
    let e = |e: tokio_postgres::Error| DbError::Conversion(format!("column {}: {e}", col.name()));
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
pub(super) type PgCache = HashMap<String, tokio_postgres::Statement>;

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
