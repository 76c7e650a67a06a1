//! The embedded SQLite store shared by the components of one installation: the trace (hop
//! log), the dead-letter log, the dossier origins the router checks replies against, and the
//! process manager's state, inbox and outbox ([`crate::process`]).
//! WAL mode, so separate `lienthong run --components …` processes can share one file.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The directory of the file could not be created.
    #[error("store: cannot create {0}: {1}")]
    Io(String, std::io::Error),
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS trace_events (
    event_id       TEXT PRIMARY KEY,
    at_ms          INTEGER NOT NULL,
    at             TEXT NOT NULL,
    ma_ho_so       TEXT,
    message_id     TEXT,
    correlation_id TEXT,
    kind           TEXT,
    event          TEXT NOT NULL,
    component      TEXT NOT NULL,
    from_unit      TEXT,
    to_unit        TEXT,
    attempt        INTEGER,
    status         INTEGER,
    reason         TEXT
);
CREATE INDEX IF NOT EXISTS trace_by_dossier ON trace_events (ma_ho_so, at_ms);
CREATE INDEX IF NOT EXISTS trace_by_message ON trace_events (message_id, at_ms);
CREATE TABLE IF NOT EXISTS dead_letters (
    message_id  TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    at          TEXT NOT NULL,
    ma_ho_so    TEXT,
    kind        TEXT,
    sender      TEXT,
    receiver    TEXT,
    reason_code TEXT NOT NULL,
    reason      TEXT NOT NULL,
    component   TEXT,
    queue       TEXT,
    attempts    INTEGER,
    PRIMARY KEY (message_id, at_ms)
);
CREATE TABLE IF NOT EXISTS messages (
    message_id     TEXT PRIMARY KEY,
    accepted_at_ms INTEGER NOT NULL,
    ma_ho_so       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    sender         TEXT NOT NULL,
    receiver       TEXT NOT NULL,
    body           BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_receiver ON messages (receiver, accepted_at_ms);
CREATE INDEX IF NOT EXISTS messages_by_dossier ON messages (ma_ho_so);
CREATE TABLE IF NOT EXISTS processes (
    ma_ho_so    TEXT PRIMARY KEY,
    ma_tthc     TEXT NOT NULL,
    origin_unit TEXT NOT NULL,
    phase       TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL,
    state       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS processes_by_phase ON processes (phase);
CREATE TABLE IF NOT EXISTS process_inbox (
    message_id TEXT PRIMARY KEY,
    ma_ho_so   TEXT NOT NULL,
    at_ms      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS process_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    ma_ho_so   TEXT NOT NULL,
    receiver   TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms    INTEGER
);
CREATE INDEX IF NOT EXISTS process_outbox_unsent ON process_outbox (sent_ms, seq);
CREATE TABLE IF NOT EXISTS process_blocked (
    ma_ho_so TEXT PRIMARY KEY,
    since_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS process_alerts (
    ma_ho_so TEXT NOT NULL,
    step     TEXT NOT NULL,
    level    TEXT NOT NULL,
    due      TEXT NOT NULL,
    holder   TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (ma_ho_so, step, level, due)
);
CREATE TABLE IF NOT EXISTS dossier_origins (
    ma_ho_so       TEXT PRIMARY KEY,
    ma_tthc        TEXT NOT NULL,
    origin_unit    TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    first_seen_ms  INTEGER NOT NULL
);
"#;

/// A handle on the SQLite store; cheap to clone. Calls block briefly (local file, WAL):
/// call them from `spawn_blocking` on hot paths.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// Which stored messages to read.
#[derive(Debug, Clone, Default)]
pub struct MessageSelection {
    /// These message ids.
    pub ids: Vec<String>,
    /// Everything accepted for this receiver …
    pub receiver: Option<String>,
    /// … since this time, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Everything of this dossier.
    pub ma_ho_so: Option<String>,
}

/// One envelope of the message store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Message id.
    pub message_id: String,
    /// When the router accepted it, ms since the epoch.
    pub accepted_at_ms: i64,
    /// Dossier code.
    pub ma_ho_so: String,
    /// Kind.
    pub kind: String,
    /// Sender.
    pub sender: String,
    /// The unit it was routed to.
    pub receiver: String,
    /// The envelope as routed (JSON).
    pub body: Vec<u8>,
}

/// Where a dossier came from: the centre whose first `dossier.forward` the router saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Dossier code.
    pub ma_ho_so: String,
    /// Procedure code.
    pub ma_tthc: String,
    /// The centre that sent the dossier.
    pub origin_unit: String,
    /// Its correlation id.
    pub correlation_id: String,
}

impl Store {
    /// Open (creating the file, its directory and the tables if needed).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        // Every hot statement is prepared once per connection (`prepare_cached`); one
        // connection serves many components, so keep more than rusqlite's default 16.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Run `f` with the connection.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Ok(f(&mut guard)?)
    }

    /// Record a dossier's origin if none is recorded yet. Returns the recorded origin (the
    /// first one wins).
    pub fn record_origin(&self, o: &Origin) -> Result<Origin, StoreError> {
        self.with(|c| {
            c.prepare_cached("INSERT OR IGNORE INTO dossier_origins (ma_ho_so, ma_tthc, origin_unit, correlation_id, first_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![o.ma_ho_so, o.ma_tthc, o.origin_unit, o.correlation_id, crate::clock::now_ms()])?;
            Ok(())
        })?;
        Ok(self.origin(&o.ma_ho_so)?.unwrap_or_else(|| o.clone()))
    }

    /// Record the origin (when given, first one wins) and keep the accepted envelope (first copy
    /// wins), in one transaction: the router's one write per message.
    #[allow(clippy::too_many_arguments)]
    pub fn accept_message(
        &self,
        origin: Option<&Origin>,
        message_id: &str,
        ma_ho_so: &str,
        kind: &str,
        sender: &str,
        receiver: &str,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            insert_accepted(
                &tx,
                origin,
                crate::clock::now_ms(),
                [message_id, ma_ho_so, kind, sender, receiver],
                body,
            )?;
            tx.commit()
        })
    }

    /// Keep an accepted envelope in the message store (the first copy wins).
    pub fn keep_message(
        &self,
        message_id: &str,
        ma_ho_so: &str,
        kind: &str,
        sender: &str,
        receiver: &str,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached("INSERT OR IGNORE INTO messages (message_id, accepted_at_ms, ma_ho_so, kind, sender, receiver, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
                .execute(params![message_id, crate::clock::now_ms(), ma_ho_so, kind, sender, receiver, body])
            .map(|_| ())
        })
    }

    /// Stored messages: by ids, or by receiver accepted since `since_ms`, or by dossier; oldest
    /// first. Each is (message id, receiver, body).
    pub fn stored_messages(
        &self,
        sel: &MessageSelection,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.with(|c| {
            let mut out = Vec::new();
            let row = |r: &rusqlite::Row<'_>| {
                Ok(StoredMessage {
                    message_id: r.get(0)?,
                    accepted_at_ms: r.get(1)?,
                    ma_ho_so: r.get(2)?,
                    kind: r.get(3)?,
                    sender: r.get(4)?,
                    receiver: r.get(5)?,
                    body: r.get(6)?,
                })
            };
            const COLS: &str = "message_id, accepted_at_ms, ma_ho_so, kind, sender, receiver, body";
            for id in &sel.ids {
                let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM messages WHERE message_id = ?1"))?;
                out.extend(st.query_map(params![id], row)?.collect::<Result<Vec<_>, _>>()?);
            }
            if let Some(r) = &sel.receiver {
                let mut st = c.prepare(&format!("SELECT {COLS} FROM messages WHERE receiver = ?1 AND accepted_at_ms >= ?2 ORDER BY accepted_at_ms"))?;
                out.extend(st.query_map(params![r, sel.since_ms.unwrap_or(0)], row)?.collect::<Result<Vec<_>, _>>()?);
            }
            if let Some(m) = &sel.ma_ho_so {
                let mut st = c.prepare(&format!("SELECT {COLS} FROM messages WHERE ma_ho_so = ?1 ORDER BY accepted_at_ms"))?;
                out.extend(st.query_map(params![m], row)?.collect::<Result<Vec<_>, _>>()?);
            }
            Ok(out)
        })
    }

    /// Delete stored messages older than `retention_ms`. Returns how many.
    pub fn purge_messages(&self, retention_ms: i64) -> Result<usize, StoreError> {
        let cutoff = crate::clock::now_ms() - retention_ms;
        self.with(|c| {
            c.prepare_cached("DELETE FROM messages WHERE accepted_at_ms < ?1")?
                .execute(params![cutoff])
        })
    }

    /// The recorded origin of a dossier.
    pub fn origin(&self, ma_ho_so: &str) -> Result<Option<Origin>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT ma_ho_so, ma_tthc, origin_unit, correlation_id FROM dossier_origins WHERE ma_ho_so = ?1")?.query_row(
                params![ma_ho_so],
                |r| Ok(Origin { ma_ho_so: r.get(0)?, ma_tthc: r.get(1)?, origin_unit: r.get(2)?, correlation_id: r.get(3)? }),
            )
            .optional()
        })
    }
}

/// The router's write for one accepted message, inside `tx`: the origin when given (first one
/// wins) and the envelope (first copy wins). `ids` = message id, dossier, kind, sender, receiver.
fn insert_accepted(
    tx: &rusqlite::Transaction<'_>,
    origin: Option<&Origin>,
    now: i64,
    ids: [&str; 5],
    body: &[u8],
) -> Result<(), rusqlite::Error> {
    if let Some(o) = origin {
        tx.prepare_cached("INSERT OR IGNORE INTO dossier_origins (ma_ho_so, ma_tthc, origin_unit, correlation_id, first_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![o.ma_ho_so, o.ma_tthc, o.origin_unit, o.correlation_id, now])?;
    }
    let [message_id, ma_ho_so, kind, sender, receiver] = ids;
    tx.prepare_cached("INSERT OR IGNORE INTO messages (message_id, accepted_at_ms, ma_ho_so, kind, sender, receiver, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
        .execute(params![message_id, now, ma_ho_so, kind, sender, receiver, body])?;
    Ok(())
}

/// One write of [`MessageWriter`].
enum WriteJob {
    /// An accepted envelope (and the dossier's origin, when it is the first forward).
    Accept {
        origin: Option<Box<Origin>>,
        message_id: String,
        ma_ho_so: String,
        kind: String,
        sender: String,
        receiver: String,
        body: Vec<u8>,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Trace events written by the router itself (no trace message through the broker).
    Events {
        events: Vec<crate::trace::TraceEvent>,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Any other write of the process ([`MessageWriter::transact`]), in a savepoint of its own.
    Tx {
        run: Option<TxRun>,
        value: Option<Result<TxValue, String>>,
        done: tokio::sync::oneshot::Sender<Result<TxValue, String>>,
    },
}

/// What a [`WriteJob::Tx`] returns to its caller (downcast by [`MessageWriter::transact`]).
type TxValue = Box<dyn std::any::Any + Send>;

/// The write of a [`WriteJob::Tx`].
type TxRun = Box<dyn FnOnce(&Connection) -> Result<TxValue, rusqlite::Error> + Send>;

impl WriteJob {
    /// Write the job into the batch's transaction. Err (the whole batch fails) for the
    /// router's own writes, for a savepoint that cannot be opened, released or rolled back, and
    /// for a [`WriteJob::Tx`] whose failure ended the transaction or is a busy lock; any other
    /// failing [`WriteJob::Tx`] (its own SQL error, a panic) is rolled back alone and answered
    /// with its error.
    fn write(
        &mut self,
        tx: &mut rusqlite::Transaction<'_>,
        now: i64,
    ) -> Result<(), rusqlite::Error> {
        match self {
            WriteJob::Accept {
                origin,
                message_id,
                ma_ho_so,
                kind,
                sender,
                receiver,
                body,
                ..
            } => insert_accepted(
                tx,
                origin.as_deref(),
                now,
                [message_id, ma_ho_so, kind, sender, receiver],
                body,
            ),
            WriteJob::Events { events, .. } => crate::trace::insert_events_in(tx, events),
            WriteJob::Tx { run, value, .. } => {
                let Some(run) = run.take() else {
                    return Ok(());
                };
                let sp = tx.savepoint()?;
                // A panicking write fails alone; the writer thread goes on.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&sp)))
                    .unwrap_or_else(|_| {
                        Err(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                            Some("the write panicked".to_string()),
                        ))
                    });
                match ran {
                    Ok(v) => {
                        sp.commit()?;
                        *value = Some(Ok(v));
                    }
                    Err(e) => {
                        // Rolled back to the savepoint: this job's writes only.
                        let undone = sp.finish();
                        // SQLite itself ended the transaction (disk full, I/O error), the undo
                        // failed, or the lock is busy (the next job would wait as long): the
                        // batch fails as a whole and every job of it is told so.
                        let busy = matches!(
                            e.sqlite_error_code(),
                            Some(
                                rusqlite::ErrorCode::DatabaseBusy
                                    | rusqlite::ErrorCode::DatabaseLocked
                            )
                        );
                        if undone.is_err() || tx.is_autocommit() || busy {
                            return Err(e);
                        }
                        *value = Some(Err(e.to_string()));
                    }
                }
                Ok(())
            }
        }
    }

    /// Answer the caller once the batch's outcome `r` is known (the commit, or why it failed).
    fn answer(self, r: Result<(), String>) {
        match self {
            WriteJob::Accept { done, .. } | WriteJob::Events { done, .. } => {
                let _ = done.send(r);
            }
            WriteJob::Tx { value, done, .. } => {
                let _ = done.send(match (value, r) {
                    (Some(Err(own)), _) => Err(own),
                    (_, Err(batch)) => Err(batch),
                    (Some(Ok(v)), Ok(())) => Ok(v),
                    (None, Ok(())) => Err("the write was not run".to_string()),
                });
            }
        }
    }
}

/// Group commit of one process's hot writes (the router's [`Store::accept_message`], and the
/// trace events of a [`crate::trace::Tracer::to_store`]): a thread with its own connection takes the writes queued meanwhile (at most 256) into one
/// transaction and answers each after the commit. Under load many messages share a commit and a
/// thread wake-up; an idle writer commits each write at once.
///
/// WAL checkpoints stay out of the commits that messages wait on. SQLite's automatic
/// checkpoint would run inside the commit that crosses 1000 frames, copying megabytes into the
/// database file and syncing it while every message of that commit waits. Instead:
/// - every [`CHECKPOINT_FRAMES`] new frames, a checkpointer thread with its own connection
///   copies the WAL into the database (`PASSIVE`: it never blocks the writer), as often as
///   SQLite's own checkpoint would, so the disk sees no more syncs than before;
/// - once the WAL holds [`RESET_FRAMES`], the checkpointer is left alone and the writer,
///   between two batches, runs a `PASSIVE` checkpoint of the frames written since the
///   checkpointer's latest one (again after the next batch if that one was still running). The next
///   transaction then starts the WAL over. (A checkpoint running beside a busy writer never
///   catches up with it alone, and the WAL would grow without end.) That is one short
///   checkpoint in the writer per eight of SQLite's.
#[derive(Clone)]
pub struct MessageWriter {
    tx: std::sync::mpsc::Sender<WriteJob>,
}

/// New WAL frames (pages, 4 KiB each by default) after which the writer wakes its
/// checkpointer: SQLite's automatic threshold.
pub const CHECKPOINT_FRAMES: i32 = 1000;

/// WAL frames after which the writer finishes a checkpoint itself so that the WAL starts over:
/// 8,000 frames, about 32 MiB of WAL. The checkpointer has copied all but the last thousand or
/// so by then.
pub const RESET_FRAMES: i32 = 8_000;

/// Start the checkpointer thread of a writer connection: returns the signal that wakes it. The
/// thread ends when the signal's sender is dropped (with the writer's connection).
fn start_checkpointer(path: &Path) -> Result<std::sync::mpsc::SyncSender<()>, StoreError> {
    let store = Store::open(path)?;
    let (signal, wake) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("lienthong-store-checkpointer".into())
        .spawn(move || {
            while wake.recv().is_ok() {
                if let Err(e) = checkpoint_passive(&store) {
                    tracing::warn!(message = "WAL checkpoint failed; will retry", error = %e);
                }
            }
        })
        .map_err(|e| StoreError::Io("the store checkpointer thread".into(), e))?;
    Ok(signal)
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copy what the WAL holds into the database without
/// waiting for anyone (what it could not copy, the next one will).
fn checkpoint_passive(store: &Store) -> Result<(), StoreError> {
    store.with(|c| c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())))
}

impl MessageWriter {
    /// Open a connection to the store at `path` and start the writer thread and its WAL
    /// checkpointer (they end when the last clone is dropped).
    pub fn start(path: &Path) -> Result<MessageWriter, StoreError> {
        use std::sync::atomic::{AtomicI32, Ordering};
        let store = Store::open(path)?;
        // Frames in the WAL after the writer's latest commit.
        let frames = std::sync::Arc::new(AtomicI32::new(0));
        let signal = start_checkpointer(path)?;
        let seen = frames.clone();
        // Frames in the WAL when the checkpointer was last woken.
        let mut woken_at = 0;
        // The hook replaces this connection's automatic checkpoint (sqlite3_wal_hook).
        store.with(|c| {
            c.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: i32| {
                seen.store(n, Ordering::Relaxed);
                if n < woken_at {
                    // The WAL started over.
                    woken_at = 0;
                }
                // From RESET_FRAMES on the writer checkpoints itself (a running background
                // checkpoint would make its attempt return busy).
                if n - woken_at >= CHECKPOINT_FRAMES
                    && n < RESET_FRAMES
                    && signal.try_send(()).is_ok()
                {
                    woken_at = n;
                }
                Ok(())
            }))
        })?;
        let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("lienthong-store-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < 256 {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let r = store.with(|c| {
                        // IMMEDIATE: a write that reads first (the delivery log) would otherwise
                        // fail the batch with SQLITE_BUSY when another connection committed
                        // since its read; this way the lock is waited for (busy timeout).
                        let mut tx =
                            c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        let now = crate::clock::now_ms();
                        for j in &mut jobs {
                            j.write(&mut tx, now)?;
                        }
                        tx.commit()
                    });
                    let r = r.map_err(|e| e.to_string());
                    for j in jobs {
                        j.answer(r.clone());
                    }
                    if frames.load(Ordering::Relaxed) >= RESET_FRAMES {
                        frames.store(0, Ordering::Relaxed);
                        if let Err(e) = checkpoint_passive(&store) {
                            tracing::warn!(message = "WAL checkpoint failed; will retry", error = %e);
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Io("the store writer thread".into(), e))?;
        Ok(MessageWriter { tx })
    }

    /// Queue trace events for the group commit; the receiver answers once they are committed
    /// (`Err` with the store's error). Errors: the writer thread is gone.
    pub fn start_events(
        &self,
        events: Vec<crate::trace::TraceEvent>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send(WriteJob::Events { events, done })
            .map_err(|_| "the store writer thread stopped".to_string())?;
        Ok(wait)
    }

    /// Run `write` in the group commit, beside the other writes of this process, and return its
    /// value once the batch has committed. The write runs on the writer thread, inside a
    /// savepoint of its own: when it fails, only it is rolled back. Use it for every hot write
    /// of a component (several SQLite connections writing one file wait on each other's lock,
    /// and each of their commits would rewrite the pages the group commit just wrote). Errors:
    /// the write's own SQLite error, the batch's commit failed, or the writer thread is gone.
    pub async fn transact<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let run: TxRun = Box::new(move |c| write(c).map(|v| Box::new(v) as TxValue));
        self.tx
            .send(WriteJob::Tx {
                run: Some(run),
                value: None,
                done,
            })
            .map_err(|_| "the store writer thread stopped".to_string())?;
        let v = wait
            .await
            .map_err(|_| "the store writer thread stopped".to_string())??;
        v.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| "the store writer answered with another type".to_string())
    }

    async fn send(
        &self,
        job: WriteJob,
        wait: tokio::sync::oneshot::Receiver<Result<(), String>>,
    ) -> Result<(), String> {
        self.tx
            .send(job)
            .map_err(|_| "the store writer thread stopped".to_string())?;
        wait.await
            .map_err(|_| "the store writer thread stopped".to_string())?
    }

    /// Record the origin (when given) and keep the accepted envelope, committed (see
    /// [`Store::accept_message`]). Errors: the store failed, or the writer thread is gone.
    #[allow(clippy::too_many_arguments)]
    pub async fn accept(
        &self,
        origin: Option<Origin>,
        message_id: &str,
        ma_ho_so: &str,
        kind: &str,
        sender: &str,
        receiver: &str,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let job = WriteJob::Accept {
            origin: origin.map(Box::new),
            message_id: message_id.to_string(),
            ma_ho_so: ma_ho_so.to_string(),
            kind: kind.to_string(),
            sender: sender.to_string(),
            receiver: receiver.to_string(),
            body,
            done,
        };
        self.send(job, wait).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write handed to the group commit returns its value after the commit; one that fails
    /// is rolled back alone and answered with its error, and the writes batched with it
    /// commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_transact_is_rolled_back_alone() {
        let dir =
            std::env::temp_dir().join(format!("lt-store-{}", crate::envelope::new_message_id()));
        let path = dir.join("s.db");
        let writer = MessageWriter::start(&path).expect("writer");
        writer
            .transact(|c| c.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)"))
            .await
            .expect("create");
        // Queued together, so that they share batches: every third one breaks the key.
        let mut pending = Vec::new();
        for i in 0..60 {
            let w = writer.clone();
            pending.push(tokio::spawn(async move {
                w.transact(move |c| {
                    c.execute("INSERT INTO t VALUES (?1)", [format!("k{i}")])?;
                    if i % 3 == 0 {
                        // The same key again: a constraint error, after a row was written.
                        c.execute("INSERT INTO t VALUES (?1)", [format!("k{i}")])?;
                    }
                    c.query_row(
                        "SELECT count(*) FROM t WHERE k = ?1",
                        [format!("k{i}")],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .await
            }));
        }
        let mut failed = 0;
        for (i, p) in pending.into_iter().enumerate() {
            match p.await.expect("task") {
                Ok(n) => assert_eq!(n, 1, "write {i} sees its own row"),
                Err(e) => {
                    assert_eq!(i % 3, 0, "write {i} failed: {e}");
                    assert!(e.contains("UNIQUE"), "{e}");
                    failed += 1;
                }
            }
        }
        assert_eq!(failed, 20);
        let reader = Store::open(&path).expect("reader");
        let kept: Vec<String> = reader
            .with(|c| {
                c.prepare("SELECT k FROM t ORDER BY k")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .expect("read");
        let mut want: Vec<String> = (0..60)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("k{i}"))
            .collect();
        want.sort();
        assert_eq!(
            kept, want,
            "the failed writes left nothing, the others everything"
        );
        // A write that panics fails alone; the writer thread goes on.
        let panicked = writer
            .transact(|c| {
                c.execute("INSERT INTO t VALUES ('p')", [])?;
                if c.is_autocommit() {
                    return Ok(());
                }
                panic!("a bug in a write");
            })
            .await;
        assert!(
            panicked.as_ref().is_err_and(|e| e.contains("panicked")),
            "{panicked:?}"
        );
        writer
            .transact(|c| c.execute("INSERT INTO t VALUES ('after')", []).map(|_| ()))
            .await
            .expect("the writer still writes");
        let rows: Vec<String> = reader
            .with(|c| {
                c.prepare("SELECT k FROM t WHERE k IN ('p', 'after')")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .expect("read");
        assert_eq!(rows, ["after"], "the panicking write was rolled back");
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The writer's commits do not checkpoint; its checkpointer does, so the envelopes reach
    /// the database file and the WAL stays bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_moves_the_writers_wal_into_the_database() {
        let dir =
            std::env::temp_dir().join(format!("lt-store-{}", crate::envelope::new_message_id()));
        let path = dir.join("s.db");
        let writer = MessageWriter::start(&path).expect("writer");
        let body = vec![b'x'; 5120];
        // ~4 WAL frames each (the body's overflow pages, the row, two indexes) and a commit
        // each: far past RESET_FRAMES.
        let n = 12_000usize;
        for i in 0..n {
            let id = format!("m{i}");
            writer
                .accept(None, &id, "D-1", "dossier.forward", "A", "B", body.clone())
                .await
                .expect("accept");
        }
        let db_bytes = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while db_bytes() < (n * 5120) as u64 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            db_bytes() >= (n * 5120) as u64,
            "database file {} bytes",
            db_bytes()
        );
        let reader = Store::open(&path).expect("reader");
        let kept = reader
            .stored_messages(&MessageSelection {
                ma_ho_so: Some("D-1".into()),
                ..MessageSelection::default()
            })
            .expect("read");
        assert_eq!(kept.len(), n);
        // The WAL was started over along the way: it holds about RESET_FRAMES frames and what
        // was written while the checkpointer's last run ended, not all that was written (~70,000
        // frames). How far past RESET_FRAMES it got depends on how the checkpointer thread was
        // scheduled (on a loaded 2-core machine, 59 MB was seen): the bound is three times
        // RESET_FRAMES, still far below the WAL of a writer that never starts it over.
        let wal = std::fs::metadata(dir.join("s.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        let bound = (3 * RESET_FRAMES) as u64 * 4120;
        assert!(wal < bound, "WAL {wal} bytes, bound {bound}");
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }
}
