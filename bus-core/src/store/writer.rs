//! The group-commit writer ([`MessageWriter`]): every write of a process to the store goes
//! through one thread and one connection, which commits the writes queued meanwhile together,
//! and keeps WAL checkpoints out of the commits messages wait on.

use super::body_codec::BodyCompression;
use super::db::{Db, DbError};
use super::error::StoreError;
use super::location::StoreLocation;
use super::migrations::open_connection;
use super::wal_checkpoint::WalCheckpoints;
use crate::trace::event::TraceEvent;

/// What a write returns to its caller (downcast by [`MessageWriter::transact`]).
pub type TxValue = Box<dyn std::any::Any + Send>;

/// One write: runs on the writer thread, inside the batch's transaction; returns its value and
/// the trace events that tell of it, which the batch writes together at its end.
pub type TxRun = Box<dyn FnOnce(&Db) -> Result<(TxValue, Vec<TraceEvent>), DbError> + Send>;

/// Who waits for a write.
enum Done {
    /// The caller of [`MessageWriter::transact`]: the write's value.
    Value(tokio::sync::oneshot::Sender<Result<TxValue, String>>),
    /// The caller of [`MessageWriter::start_unit`]: only the outcome.
    Unit(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// One write of [`MessageWriter`].
struct WriteJob {
    run: Option<TxRun>,
    /// In a savepoint of its own (it fails alone), or straight in the batch's transaction (its
    /// failure fails the batch: the router's own writes, which cannot fail but on the file).
    isolated: bool,
    value: Option<Result<TxValue, String>>,
    /// Whether the writer counts the job's events in the trace metrics once they have
    /// committed (the events of [`MessageWriter::transact_traced`]; the tracer counts the
    /// events it hands over itself).
    count: bool,
    done: Done,
}

/// The trace events of a batch's writes, written together before its commit: on PostgreSQL
/// every chain head they need is read in one statement and they are written, with the heads
/// they move, in another (two round trips under the store's write lock for the whole batch,
/// instead of two per write); on SQLite each head is read and written once per batch.
#[derive(Default)]
struct BatchEvents {
    events: Vec<TraceEvent>,
    /// The ranges of `events` to count once the batch has committed.
    counted: Vec<std::ops::Range<usize>>,
}

impl BatchEvents {
    /// Take the events of a write that succeeded.
    fn add(&mut self, events: Vec<TraceEvent>, count: bool) {
        let start = self.events.len();
        self.events.extend(events);
        if count && self.events.len() > start {
            self.counted.push(start..self.events.len());
        }
    }

    /// Write them into the batch's transaction, at most
    /// [`MAX_EVENTS_AT_ONCE`](super::trace_write::MAX_EVENTS_AT_ONCE) per statement.
    fn write(&self, db: &Db) -> Result<(), DbError> {
        for chunk in self.events.chunks(super::trace_write::MAX_EVENTS_AT_ONCE) {
            super::trace_write::insert_events_in(db, chunk)?;
        }
        Ok(())
    }

    /// Count the events of [`MessageWriter::transact_traced`] once committed.
    fn count(&self) {
        for r in &self.counted {
            crate::trace::metrics::count(&self.events[r.clone()]);
        }
    }
}

/// The savepoint a batch has open for its isolated writes ([`WriteJob::write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    /// None open.
    None,
    /// An earlier isolated write's, which succeeded: released with the next `SAVEPOINT`.
    Open,
    /// Opened with the transaction for the batch's first write, which has not run yet.
    Fresh,
}

impl WriteJob {
    /// Write the job into the batch's transaction. Err (the whole batch fails) for a write that
    /// is not isolated, for a savepoint that cannot be opened, released or rolled back, and for
    /// an isolated write whose failure ended the transaction or is a busy lock; any other
    /// failing isolated write (its own SQL error, a panic) is rolled back alone and answered
    /// with its error.
    ///
    /// `open`: the savepoint the batch has open. An earlier isolated write's that succeeded is
    /// released together with this job's own `SAVEPOINT`, both sent ahead of the job's first
    /// statement ([`Db::execute_batch_ahead`]: on PostgreSQL in that statement's round trip,
    /// so a savepoint costs no round trip of its own), and the batch's commit releases the
    /// last one. A failure of the savepoint's statements is the job's first statement's error,
    /// after which the transaction can only end: its undo fails, and so the whole batch. Writes between the two (a write that is not isolated) are merged into the
    /// transaction by that release just as before: a failing isolated write rolls back to the
    /// savepoint opened right before it, never further. The batch's first write, when isolated,
    /// finds its savepoint opened with the transaction ([`Savepoint::Fresh`]).
    fn write(
        &mut self,
        db: &Db,
        open: &mut Savepoint,
        batch: &mut BatchEvents,
    ) -> Result<(), DbError> {
        let Some(run) = self.run.take() else {
            return Ok(());
        };
        if !self.isolated {
            let (v, events) = run(db)?;
            self.value = Some(Ok(v));
            batch.add(events, self.count);
            return Ok(());
        }
        match open {
            Savepoint::Fresh => {}
            Savepoint::Open => db.execute_batch_ahead("RELEASE job; SAVEPOINT job")?,
            Savepoint::None => db.execute_batch_ahead("SAVEPOINT job")?,
        }
        *open = Savepoint::Open;
        // A panicking write fails alone; the writer thread goes on.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(db)))
            .unwrap_or_else(|_| Err(DbError::Other("the write panicked".to_string())));
        match ran {
            // The savepoint stays open: the next isolated write or the commit releases it.
            Ok((v, events)) => {
                self.value = Some(Ok(v));
                batch.add(events, self.count);
            }
            Err(e) => {
                // Rolled back to the savepoint: this job's writes only.
                *open = Savepoint::None;
                let undone = db.execute_batch("ROLLBACK TO job; RELEASE job");
                if let Err(u) = undone {
                    // The undo failed: on PostgreSQL, what was sent ahead with it (the batch's
                    // `BEGIN` and lock, a savepoint) may have failed, for a write that failed
                    // before sending anything. The batch fails with the undo's error, the
                    // cause for every other job; this one is told its own.
                    self.value = Some(Err(e.to_string()));
                    return Err(u);
                }
                // The engine itself ended the transaction (disk full, I/O error) or the lock
                // is busy (the next job would wait as long): the batch fails as a whole and
                // every job of it is told so.
                if !db.in_transaction() || e.is_busy() {
                    return Err(e);
                }
                self.value = Some(Err(e.to_string()));
            }
        }
        Ok(())
    }

    /// Answer the caller once the batch's outcome `r` is known (the commit, or why it failed).
    fn answer(self, r: Result<(), String>) {
        let outcome = match (self.value, r) {
            (Some(Err(own)), _) => Err(own),
            (_, Err(batch)) => Err(batch),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err("the write was not run".to_string()),
        };
        match self.done {
            Done::Value(done) => {
                let _ = done.send(outcome);
            }
            Done::Unit(done) => {
                let _ = done.send(outcome.map(|_| ()));
            }
        }
    }
}

/// Group commit of every write of one process (the router's accepted envelopes, trace events,
/// the process manager's state and outbox, the delivery log, agency callbacks, the edXML
/// outbox, the retention sweeps): a thread with its own connection takes the writes queued
/// meanwhile (at most 256; under load it waits up to [`COMMIT_DELAY`] for more) into one
/// transaction and answers each after the commit. Under load many messages share a commit and a
/// thread wake-up; an idle writer commits each write at once.
///
/// WAL checkpoints stay out of the commits that messages wait on: on SQLite a checkpointer
/// thread copies the log beside the writer, and the writer lets the log start over with a short
/// checkpoint of its own between two batches ([`super::wal_checkpoint`]).
#[derive(Clone)]
pub struct MessageWriter {
    tx: std::sync::mpsc::Sender<WriteJob>,
    compression: BodyCompression,
}

/// Most writes in one commit.
const MAX_BATCH: usize = 256;

/// How long the writer, under load (at least [`COMMIT_SIBLINGS`] writes were queued when it
/// woke), waits for more writes before it commits, by default: 1 ms (`[store]
/// commit_delay_ms`, [`WriterOptions`]). A lone write commits at once unless writes have been
/// arriving steadily ([`STEADY_COMMIT_DELAY`]).
///
/// Bytes and CPU for latency (BENCHMARKS.md, 2026-12-06 (day); SQLite store): 4 ms wrote 11 %
/// fewer bytes per dossier on the HTTP-adapter path and 22 % fewer per message at a paced
/// 1,000 msg/s, and spent 7 % less CPU per dossier on the HTTP-adapter path, but its paced p99
/// was 22–27 ms against 18–19 ms at 1 ms in later runs, at the edge of the 25 ms target: 1 ms
/// by default, longer for a deployment with latency to spare.
pub const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

/// How long a lone write waits for others when writes have been arriving steadily, by
/// default: 3 ms (`[store] steady_commit_delay_ms`, [`WriterOptions`]; when, [`Pace`]). At a
/// steady rate too low for writes to queue (a paced 1,000 msg/s: the router's two writes per
/// message, half a millisecond apart), each commit would carry one write and rewrite the last
/// page of every B-tree it touches for it; the router's two writes of a message touch
/// different B-trees (the message store and dossier index; the trace), so only a wait long
/// enough for two messages' writes of each kind saves pages. Measured (BENCHMARKS.md,
/// 2026-12-07 (late morning); SQLite store, 1,000 msg/s): waits of 2 ms saved 14 % of the
/// bytes, 3 ms 21 % and 20 % of the CPU, with the p50 1.1 ms higher and the p99 no higher (a
/// wait for the first other write only saved 3 %: it was nearly always the other kind).
pub const STEADY_COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(3);

/// How a [`MessageWriter`] batches its commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// How long the writer, under load, waits for more writes before it commits (default
    /// [`COMMIT_DELAY`]; `[store] commit_delay_ms`). Zero: it commits what was queued at once.
    pub commit_delay: std::time::Duration,
    /// How long a lone write waits for others when writes have been arriving steadily (default
    /// [`STEADY_COMMIT_DELAY`]; `[store] steady_commit_delay_ms`). Zero: a lone write commits
    /// at once.
    pub steady_delay: std::time::Duration,
    /// How the message store's bodies are kept (default zstd; `[store] message_compression`).
    pub compression: BodyCompression,
}

impl WriterOptions {
    /// The options of a process's `[store]` settings (`commit_delay_ms`,
    /// `steady_commit_delay_ms`, `message_compression`).
    pub fn of(store: &crate::registry::StoreSettings) -> WriterOptions {
        WriterOptions {
            commit_delay: std::time::Duration::from_millis(u64::from(store.commit_delay_ms)),
            steady_delay: std::time::Duration::from_millis(u64::from(store.steady_commit_delay_ms)),
            compression: store.message_compression,
        }
    }
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            commit_delay: COMMIT_DELAY,
            steady_delay: STEADY_COMMIT_DELAY,
            compression: BodyCompression::default(),
        }
    }
}

/// One batch of the writer: `first` and the writes queued behind it (at most [`MAX_BATCH`]);
/// under load (at least [`COMMIT_SIBLINGS`] of them), also those that arrive within `delay`
/// (PostgreSQL's `commit_delay` with `commit_siblings`): every commit rewrites the last page of
/// each B-tree it touches, so bigger batches write fewer bytes per message. A lone write waits
/// for those that arrive within what `steady` gives (asked only for a lone write: the writer's
/// [`Pace`] finds writes arriving steadily), and otherwise commits at once. Also returns
/// whether a lone write waited.
fn collect_batch<T>(
    rx: &std::sync::mpsc::Receiver<T>,
    first: T,
    delay: std::time::Duration,
    steady: impl FnOnce() -> Option<std::time::Duration>,
) -> (Vec<T>, bool) {
    let mut jobs = vec![first];
    let closed = take_queued(rx, &mut jobs);
    let lone = jobs.len() < COMMIT_SIBLINGS;
    let wait = if lone {
        steady().unwrap_or_default()
    } else {
        delay
    };
    if !wait.is_zero() && !closed {
        // The wait is slept out, then what came in it is taken: a thread blocked in
        // `recv_timeout` is woken by every send, which costs each write that arrives in the
        // wait two context switches and a futex call on each side. In slices of at most
        // [`WAIT_SLICE`], so that a channel closed during the wait ends even one too long for
        // the clock (options set by hand; never a panic). A batch full before the wait does
        // not wait; one that fills during it commits at the end of its slice (with the shipped
        // delays, the end of the wait: never later than the delay).
        let until = std::time::Instant::now().checked_add(wait);
        loop {
            let left = until.map_or(wait, |u| {
                u.saturating_duration_since(std::time::Instant::now())
            });
            if left.is_zero() || jobs.len() >= MAX_BATCH {
                break;
            }
            std::thread::sleep(left.min(WAIT_SLICE));
            if take_queued(rx, &mut jobs) {
                break;
            }
        }
    }
    (jobs, lone && !wait.is_zero())
}

/// The longest sleep of a batch's wait before the writer looks at its queue: 50 ms. Longer than
/// any shipped delay, so that one of those is a single sleep.
const WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(50);

/// Move the writes queued in `rx` into `jobs`, up to [`MAX_BATCH`]; whether the channel is
/// closed (every sender gone).
fn take_queued<T>(rx: &std::sync::mpsc::Receiver<T>, jobs: &mut Vec<T>) -> bool {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(std::sync::mpsc::TryRecvError::Empty) => return false,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return true,
        }
    }
    false
}

/// Shortest idle gap before a write that counts as a write arriving on its own: 250 µs. A
/// caller that writes one at a time and waits for each answer usually writes again sooner, and
/// such a write is not made to wait for company that cannot come.
const STEADY_MIN_GAP: std::time::Duration = std::time::Duration::from_micros(250);

/// Whether a lone write waits for others, from how long the writer was idle before each batch
/// and what such waits gathered. Writes arrive steadily when a lone write's own gap (from the
/// answer of the last batch to its arrival) and the moving average of those gaps (weight 1/8,
/// each gap capped at four steady delays) both lie between [`STEADY_MIN_GAP`] and the steady
/// delay. A lone write then waits the steady delay for others while such waits have been
/// gathering company (a moving average, weight 1/4, of whether each one gathered two writes
/// or more, at least one half); when they have not, only every [`STEADY_PROBE`]th does, and
/// the waits resume when one of those gathers company. So a lone write after a quiet spell
/// commits at once, and so do those of a caller that writes one at a time (or of two such
/// callers) and writes again at once (its gaps are below the floor); one that works between
/// its writes has its first few, then one in [`STEADY_PROBE`], wait. The gap is counted from
/// the writer's last answer, not between arrivals: where a commit takes nearly as long as the
/// interval between writes (a slow disk at some 2,000 writes per second), the gaps fall below
/// the floor and lone writes commit at once, as with the steady delay off.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// The moving average of idle gaps, seconds.
    idle_s: f64,
    /// The moving average of whether a lone write's wait gathered another write (0 to 1).
    gathered: f64,
    /// Lone writes of a steady stream that committed at once since the last wait.
    skipped: u32,
}

/// While lone writes' waits gather nothing, one steady lone write in this many waits anyway.
const STEADY_PROBE: u32 = 16;

impl Pace {
    /// No writes seen yet: as after a long quiet spell.
    fn new(steady: std::time::Duration) -> Pace {
        Pace {
            idle_s: 4.0 * steady.as_secs_f64(),
            gathered: 1.0,
            skipped: 0,
        }
    }

    /// Take `idle`, the gap between the last answer and the arrival of a batch's first write
    /// (about zero when it was queued already), into the moving average, for every batch;
    /// return whether writes are arriving steadily (this gap and the average both between
    /// [`STEADY_MIN_GAP`] and `steady`).
    fn steady_gap(&mut self, idle: std::time::Duration, steady: std::time::Duration) -> bool {
        let s = steady.as_secs_f64();
        let gap = idle.as_secs_f64().min(4.0 * s);
        self.idle_s += (gap - self.idle_s) / 8.0;
        let floor = STEADY_MIN_GAP.as_secs_f64();
        gap >= floor && gap < s && self.idle_s >= floor && self.idle_s < s
    }

    /// For a lone write that arrived steadily ([`Pace::steady_gap`]): how long it waits for
    /// others, `steady`, or `None` (waits have been gathering nothing and this is not a probe).
    /// Asked only for lone writes, so that the probes count lone writes and nothing else.
    fn lone_wait(&mut self, steady: std::time::Duration) -> Option<std::time::Duration> {
        if self.gathered >= 0.5 || self.skipped + 1 >= STEADY_PROBE {
            self.skipped = 0;
            Some(steady)
        } else {
            self.skipped += 1;
            None
        }
    }

    /// Both steps for a write known to be alone (the unit tests' shorthand).
    #[cfg(test)]
    fn steady_wait(
        &mut self,
        idle: std::time::Duration,
        steady: std::time::Duration,
    ) -> Option<std::time::Duration> {
        if self.steady_gap(idle, steady) {
            self.lone_wait(steady)
        } else {
            None
        }
    }

    /// Take whether a lone write's wait gathered company, two writes or more (one that did, a
    /// probe among them, resumes the waits).
    fn waited(&mut self, gathered: bool) {
        self.gathered += (f64::from(u8::from(gathered)) - self.gathered) / 4.0;
        if gathered {
            self.gathered = self.gathered.max(0.5);
        }
    }
}

/// Writes found queued at once from which the writer waits [`COMMIT_DELAY`] for more.
pub const COMMIT_SIBLINGS: usize = 2;

impl MessageWriter {
    /// How this writer keeps the message store's bodies ([`WriterOptions::compression`]).
    pub fn compression(&self) -> BodyCompression {
        self.compression
    }

    /// Open a connection to the store at `location` and start the writer thread (and, on
    /// SQLite, its WAL checkpointer) with the default [`WriterOptions`]; they end when the last
    /// clone is dropped.
    pub fn start(location: impl Into<StoreLocation>) -> Result<MessageWriter, StoreError> {
        MessageWriter::start_with(location, WriterOptions::default())
    }

    /// [`MessageWriter::start`] with `options` (a `lienthong run` passes those of its
    /// `[store]` settings, [`WriterOptions::of`]).
    pub fn start_with(
        location: impl Into<StoreLocation>,
        options: WriterOptions,
    ) -> Result<MessageWriter, StoreError> {
        let location = location.into();
        let mut conn = open_connection(&location)?;
        // SQLite: the checkpointer beside the writer and the writer's own short checkpoint.
        let checkpoints = match (conn.sqlite_mut(), &location) {
            (Some(sqlite), StoreLocation::Sqlite(path)) => {
                Some(WalCheckpoints::start(sqlite, path)?)
            }
            _ => None,
        };
        let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("lienthong-store-writer".into())
            .spawn(move || {
                let mut pace = Pace::new(options.steady_delay);
                let mut answered = std::time::Instant::now();
                while let Ok(first) = rx.recv() {
                    let steady = options.steady_delay;
                    let arrived_steadily = pace.steady_gap(answered.elapsed(), steady);
                    let (mut jobs, waited) =
                        collect_batch(&rx, first, options.commit_delay, || {
                            arrived_steadily.then(|| pace.lone_wait(steady)).flatten()
                        });
                    if waited {
                        // Company is two writes or more: one alone may be another caller
                        // writing one at a time, whose own writes would then wait forever.
                        pace.waited(jobs.len() > 2);
                    }
                    let started = std::time::Instant::now();
                    let mut batch = BatchEvents::default();
                    let r = (|| {
                        // SQLite: IMMEDIATE, so a write that reads first (the delivery log, the
                        // process manager's state) waits for the lock (busy timeout) instead of
                        // failing the batch with SQLITE_BUSY when another connection committed
                        // since its read. PostgreSQL: `begin` takes the store's write lock (an advisory lock).
                        // The first write's savepoint, when it is isolated, in the same
                        // statement string (one round trip fewer per batch on PostgreSQL).
                        let first_isolated =
                            jobs.first().is_some_and(|j| j.isolated && j.run.is_some());
                        conn.begin_then(first_isolated.then_some("SAVEPOINT job"))?;
                        // The commit releases the savepoint of the batch's last isolated write.
                        let mut open = if first_isolated {
                            Savepoint::Fresh
                        } else {
                            Savepoint::None
                        };
                        for j in &mut jobs {
                            j.write(&conn, &mut open, &mut batch)?;
                        }
                        // The trace of every write that succeeded, then the commit.
                        batch.write(&conn)?;
                        conn.commit()
                    })();
                    if r.is_err() {
                        let _ = conn.rollback();
                    }
                    metrics::histogram!(STORE_COMMIT_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!(STORE_BATCH_WRITES).record(jobs.len() as f64);
                    if r.is_ok() {
                        batch.count();
                    }
                    let r = r.map_err(|e| e.to_string());
                    for j in jobs {
                        j.answer(r.clone());
                    }
                    if let (Some(checkpoints), Some(sqlite)) = (&checkpoints, conn.sqlite()) {
                        checkpoints.after_batch(sqlite);
                    }
                    // Idle from here: a write that came during the checkpoint was queued.
                    answered = std::time::Instant::now();
                }
            })
            .map_err(|e| StoreError::Io("the store writer thread".into(), e))?;
        Ok(MessageWriter {
            tx,
            compression: options.compression,
        })
    }

    /// Queue `write` for the group commit without waiting: the receiver answers once its batch
    /// has committed (`Err` with the store's error). `isolated`: in a savepoint of its own (it
    /// fails alone); else its failure fails the whole batch. Errors: the writer thread is gone.
    pub fn start_unit(
        &self,
        isolated: bool,
        write: impl FnOnce(&Db) -> Result<(), DbError> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String> {
        self.start_traced(isolated, move |c| write(c).map(|()| Vec::new()))
    }

    /// [`MessageWriter::start_unit`] for a write that returns the trace events telling of it:
    /// they are written in the same transaction, with the other events of the batch, only when
    /// the write succeeded. Errors: the writer thread is gone.
    pub fn start_traced(
        &self,
        isolated: bool,
        write: impl FnOnce(&Db) -> Result<Vec<TraceEvent>, DbError> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let run: TxRun = Box::new(move |c| write(c).map(|ev| (Box::new(()) as TxValue, ev)));
        self.tx
            .send(WriteJob {
                run: Some(run),
                isolated,
                value: None,
                count: false,
                done: Done::Unit(done),
            })
            .map_err(|_| "the store writer thread stopped".to_string())?;
        Ok(wait)
    }

    /// [`MessageWriter::start_unit`] and wait for the commit.
    pub async fn write_unit(
        &self,
        isolated: bool,
        write: impl FnOnce(&Db) -> Result<(), DbError> + Send + 'static,
    ) -> Result<(), String> {
        self.start_unit(isolated, write)?
            .await
            .map_err(|_| "the store writer thread stopped".to_string())?
    }

    /// Run `write` in the group commit, beside the other writes of this process, and return its
    /// value once the batch has committed. The write runs on the writer thread, inside a
    /// savepoint of its own: when it fails, only it is rolled back. Use it for every write of a
    /// component (several SQLite connections writing one file wait on each other's lock, and
    /// each of their commits would rewrite the pages the group commit just wrote). Errors: the
    /// write's own SQLite error, the batch's commit failed, or the writer thread is gone.
    pub async fn transact<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, String> {
        self.run_job(false, move |c| write(c).map(|v| (v, Vec::new())))
            .await
    }

    /// [`MessageWriter::transact`] for a write that returns its value and the trace events that
    /// tell of it (none: nothing is traced): the events are written in the same transaction,
    /// with the other events of the batch, only when the write succeeded, and counted in the
    /// trace metrics once committed. Same errors as `transact`.
    pub async fn transact_traced<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Db) -> Result<(T, Vec<TraceEvent>), DbError> + Send + 'static,
    ) -> Result<T, String> {
        self.run_job(true, write).await
    }

    /// Queue an isolated write and wait for its value (`count`: see [`WriteJob::count`]).
    async fn run_job<T: Send + 'static>(
        &self,
        count: bool,
        write: impl FnOnce(&Db) -> Result<(T, Vec<TraceEvent>), DbError> + Send + 'static,
    ) -> Result<T, String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let run: TxRun = Box::new(move |c| write(c).map(|(v, ev)| (Box::new(v) as TxValue, ev)));
        self.tx
            .send(WriteJob {
                run: Some(run),
                isolated: true,
                value: None,
                count,
                done: Done::Value(done),
            })
            .map_err(|_| "the store writer thread stopped".to_string())?;
        let v = wait
            .await
            .map_err(|_| "the store writer thread stopped".to_string())??;
        v.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| "the store writer answered with another type".to_string())
    }
}

/// `lienthong_store_commit_seconds`: time of one group commit (the batch's writes and the
/// commit), seconds; a histogram.
pub const STORE_COMMIT_SECONDS: &str = "lienthong_store_commit_seconds";
/// `lienthong_store_batch_writes`: writes per group commit; a histogram.
pub const STORE_BATCH_WRITES: &str = "lienthong_store_batch_writes";

/// Rows deleted per statement by a retention sweep: each chunk is one write of the group
/// commit, so a large purge never holds the writer for long.
pub const PURGE_CHUNK: i64 = 1000;

impl MessageWriter {
    /// Run a retention `DELETE` (`sql`, with `?1` = `cutoff` in ms since the epoch and `?2` =
    /// [`PURGE_CHUNK`] as the inner `LIMIT`) in writes of at most [`PURGE_CHUNK`] rows until
    /// one deletes fewer, so that the group commit is never held for long. Returns how many.
    pub(super) async fn purge_in_chunks(
        &self,
        sql: &'static str,
        cutoff: i64,
    ) -> Result<usize, String> {
        let mut total = 0;
        loop {
            let n = self
                .transact(move |c| {
                    c.prepare_cached(sql)?
                        .execute(crate::params![cutoff, PURGE_CHUNK])
                })
                .await?;
            total += n;
            if (n as i64) < PURGE_CHUNK {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Two writes queued, then three more arriving 100 ms apart from another thread.
    fn batch_with_stragglers(delay: Duration) -> Vec<u32> {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(2).expect("queued");
        let late = std::thread::spawn(move || {
            for n in 3..=5 {
                std::thread::sleep(Duration::from_millis(100));
                let _ = tx.send(n);
            }
        });
        let (jobs, _) = collect_batch(&rx, 1, delay, || None);
        late.join().expect("the sender thread");
        jobs
    }

    #[test]
    fn under_load_the_writer_waits_its_commit_delay_for_more_writes() {
        // A delay far longer than the stragglers take: all five share the commit.
        assert_eq!(
            batch_with_stragglers(Duration::from_secs(5)),
            [1, 2, 3, 4, 5]
        );
        // No delay: only what was queued when the writer woke.
        assert_eq!(batch_with_stragglers(Duration::ZERO), [1, 2]);
    }

    #[test]
    fn a_lone_write_commits_at_once_when_writes_are_not_arriving_steadily() {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let started = std::time::Instant::now();
        assert_eq!(
            collect_batch(&rx, 1, Duration::from_secs(30), || None),
            (vec![1], false)
        );
        // It did not wait for the delay (30 s): nothing else was queued.
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(tx);
    }

    #[test]
    fn a_lone_write_among_steady_writes_commits_with_those_of_its_steady_delay() {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let late = std::thread::spawn(move || {
            for n in [2, 3] {
                std::thread::sleep(Duration::from_millis(50));
                let _ = tx.send(n);
            }
            // Long after the wait (300 ms): in the next batch.
            std::thread::sleep(Duration::from_millis(1_000));
            let _ = tx.send(4);
        });
        let started = std::time::Instant::now();
        let jobs = collect_batch(&rx, 1, Duration::ZERO, || Some(Duration::from_millis(300)));
        assert_eq!(jobs, (vec![1, 2, 3], true));
        // It waited its steady delay out for more, not only for the first one.
        assert!(started.elapsed() >= Duration::from_millis(300));
        late.join().expect("the sender thread");
        assert_eq!(rx.try_recv().ok(), Some(4));
    }

    #[test]
    fn a_lone_write_waits_only_while_writes_arrive_steadily_within_the_steady_delay() {
        let steady = Duration::from_millis(3);
        let us = Duration::from_micros;
        let mut pace = Pace::new(steady);
        // The first write of a writer, and a write after a quiet spell: at once.
        assert_eq!(pace.steady_wait(Duration::from_secs(1), steady), None);
        // Writes arriving on their own some 0.4 ms after each answer (the router's two writes
        // per message at 1,000 msg/s): after a few, a lone write waits for others.
        let waits: Vec<bool> = (0..40)
            .map(|_| pace.steady_wait(us(400), steady).is_some())
            .collect();
        assert!(!waits[0], "{waits:?}");
        assert!(waits[20..].iter().all(|w| *w), "{waits:?}");
        assert_eq!(pace.steady_wait(us(400), steady), Some(steady));
        // One that comes right after an answer does not wait; the stream still counts as steady.
        assert_eq!(pace.steady_wait(us(10), steady), None);
        assert_eq!(pace.steady_wait(us(400), steady), Some(steady));
        // A write after a quiet spell of a second: its own gap is above the steady delay.
        assert_eq!(pace.steady_wait(Duration::from_secs(1), steady), None);
        // A caller writing one at a time writes again right after each answer (here 20 µs):
        // it is never made to wait for a sibling that cannot come.
        let mut sequential = Pace::new(steady);
        assert!((0..200).all(|_| sequential.steady_wait(us(20), steady).is_none()));
        // Writes 10 ms apart: others would rarely come within 3 ms.
        let mut sparse = Pace::new(steady);
        assert!((0..200).all(|_| sparse.steady_wait(us(10_000), steady).is_none()));
        // A steady delay of zero: never.
        let mut off = Pace::new(Duration::ZERO);
        assert!((0..200).all(|_| off.steady_wait(us(400), Duration::ZERO).is_none()));
    }

    #[test]
    fn a_lone_write_stops_waiting_when_waits_gather_nothing_and_tries_again_now_and_then() {
        let steady = Duration::from_millis(3);
        let us = Duration::from_micros;
        // A caller that writes one at a time, with 1 ms of work of its own between an answer
        // and its next write: its gaps look steady, but no wait ever gathers another write.
        let mut pace = Pace::new(steady);
        let mut waits = Vec::new();
        for _ in 0..400 {
            let w = pace.steady_wait(us(1_000), steady).is_some();
            if w {
                pace.waited(false);
            }
            waits.push(w);
        }
        let first = waits.iter().position(|w| *w).expect("it tried");
        // A few fruitless waits, then one in STEADY_PROBE.
        let tried = waits[first..].iter().filter(|w| **w).count();
        let probes = (400 - first) / STEADY_PROBE as usize;
        assert!(tried <= probes + 4, "{tried} waits: {waits:?}");
        assert!(tried >= probes, "{tried} waits: {waits:?}");
        // Once a probe gathers writes again (others now write beside it), every lone write of
        // the stream waits again.
        let probe = (0..STEADY_PROBE)
            .position(|_| pace.steady_wait(us(1_000), steady).is_some())
            .expect("a probe");
        assert!(
            probe > 0,
            "the first lone write after fruitless waits does not wait"
        );
        pace.waited(true);
        assert_eq!(pace.steady_wait(us(1_000), steady), Some(steady));
        pace.waited(true);
        assert_eq!(pace.steady_wait(us(1_000), steady), Some(steady));
    }

    #[test]
    fn the_options_follow_the_store_settings() {
        let shipped = crate::registry::StoreSettings::default();
        assert_eq!(WriterOptions::of(&shipped), WriterOptions::default());
        assert_eq!(WriterOptions::default().commit_delay, COMMIT_DELAY);
        assert_eq!(WriterOptions::default().steady_delay, STEADY_COMMIT_DELAY);
        let longer = crate::registry::StoreSettings {
            commit_delay_ms: 4,
            steady_commit_delay_ms: 0,
            ..shipped
        };
        assert_eq!(
            WriterOptions::of(&longer).commit_delay,
            Duration::from_millis(4)
        );
        assert_eq!(WriterOptions::of(&longer).steady_delay, Duration::ZERO);
        assert_eq!(shipped.message_compression, BodyCompression::Zstd);
        let plain = crate::registry::StoreSettings {
            message_compression: BodyCompression::None,
            ..crate::registry::StoreSettings::default()
        };
        assert_eq!(WriterOptions::of(&plain).compression, BodyCompression::None);
    }

    #[test]
    fn a_full_batch_does_not_wait() {
        let (tx, rx) = std::sync::mpsc::channel();
        for n in 1..MAX_BATCH as u32 + 10 {
            tx.send(n).expect("queued");
        }
        let (jobs, waited) = collect_batch(&rx, 0, Duration::from_secs(30), || {
            Some(Duration::from_secs(30))
        });
        assert_eq!(jobs.len(), MAX_BATCH);
        assert!(!waited);
        assert_eq!(rx.try_recv().ok(), Some(MAX_BATCH as u32));
    }

    #[test]
    fn only_a_lone_write_asks_the_pace_so_only_lone_writes_count_towards_a_probe() {
        let steady = Duration::from_millis(3);
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(2).expect("queued");
        let mut asked = false;
        let (jobs, waited) = collect_batch(&rx, 1, Duration::ZERO, || {
            asked = true;
            Some(steady)
        });
        assert_eq!((jobs, waited, asked), (vec![1, 2], false, false));
        // A stream whose waits gather nothing: the batches that were not lone between two lone
        // writes do not bring the next probe nearer.
        let mut pace = Pace::new(steady);
        for _ in 0..40 {
            if pace
                .steady_wait(Duration::from_micros(1_000), steady)
                .is_some()
            {
                pace.waited(false);
            }
        }
        let skipped = pace.skipped;
        for _ in 0..100 {
            assert!(pace.steady_gap(Duration::from_micros(1_000), steady));
        }
        assert_eq!(pace.skipped, skipped);
    }

    /// The calling thread's voluntary context switches (Linux: `/proc/thread-self/status`).
    #[cfg(target_os = "linux")]
    fn voluntary_switches() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("procfs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("voluntary_ctxt_switches")
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn writes_arriving_during_a_wait_do_not_wake_the_writer_one_by_one() {
        // Forty writes 5 ms apart while the writer waits 400 ms for company: it sleeps the wait
        // out in slices (8 of 50 ms) and takes what came, instead of being woken by each send
        // (40 wake-ups and more with `recv_timeout`).
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(2).expect("queued");
        let sender = std::thread::spawn(move || {
            for n in 3..=42 {
                std::thread::sleep(Duration::from_millis(5));
                let _ = tx.send(n);
            }
        });
        let before = voluntary_switches();
        let (jobs, waited) = collect_batch(&rx, 1, Duration::from_millis(400), || None);
        let switches = voluntary_switches() - before;
        sender.join().expect("the sender thread");
        assert!(!waited, "not a lone write");
        assert_eq!(jobs[..2], [1, 2]);
        // Every write is in the batch or still queued, in order.
        let all: Vec<u32> = jobs.iter().copied().chain(rx.try_iter()).collect();
        assert_eq!(all, (1..=42).collect::<Vec<u32>>());
        assert!(
            switches < 20,
            "the writer was woken {switches} times in its wait ({} writes came in it)",
            jobs.len() - 2
        );
    }

    #[test]
    fn a_wait_too_long_for_the_clock_is_waited_without_a_panic() {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        drop(tx);
        assert_eq!(
            collect_batch(&rx, 1, Duration::MAX, || Some(Duration::MAX)),
            (vec![1], true)
        );
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        tx.send(2).expect("queued");
        drop(tx);
        assert_eq!(
            collect_batch(&rx, 1, Duration::MAX, || None),
            (vec![1, 2], false)
        );
    }
}
