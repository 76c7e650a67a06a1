//! The SQLite store's WAL checkpoints: a checkpointer thread beside the group-commit writer
//! copies the write-ahead log into the database file, and the writer lets the log start over
//! with a short checkpoint of its own, so that no commit a message waits on copies megabytes.
//!
//! SQLite's automatic checkpoint would run inside the commit that crosses 1000 frames, copying
//! the log into the database and syncing it while every message of that commit waits
//! (<https://www.sqlite.org/wal.html>, "Automatic Checkpoint"). Instead:
//! - every [`CHECKPOINT_WAL_BYTES`] of new log, the writer's WAL hook wakes a checkpointer
//!   thread with its own connection, which copies the log into the database (`PASSIVE`: it
//!   never blocks the writer);
//! - once the log holds [`RESET_WAL_BYTES`], the hook wakes the checkpointer again after each
//!   [`FINAL_CHECKPOINT_BYTES`] of new log while more than that is not yet copied, and the
//!   writer, between two batches, reads how far the log is copied (`wal_checkpoint(NOOP)`,
//!   which sees the log itself even when another process writes the same file) and copies the
//!   rest itself as soon as no more than that is left (a checkpoint running beside a busy
//!   writer never catches up with it alone). The next transaction then starts the log over
//!   (SQLite restarts a WAL whose every frame is in the database and that no reader still
//!   reads). So the writer copies no more than about [`FINAL_CHECKPOINT_BYTES`] while writes
//!   wait; if the checkpointer has not got that close by the time one more
//!   [`CHECKPOINT_WAL_BYTES`] has been written (the writer faster than the checkpointer), the
//!   writer copies what is left, as it did before 2026-12-07: that bounds the log. (A reader
//!   that holds an old snapshot keeps every checkpoint from copying past it; the writer's copy
//!   once it ends can then be large, as before.)
//!
//! The thresholds are bytes of log, counted in frames of the store's page size (the one it
//! was created with: [`super::migrations::PAGE_SIZE`] for a store created by this release,
//! 1 KiB or 4 KiB for older ones).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use super::db::DbError;
use super::error::StoreError;
use super::migrations::open_sqlite;

/// Bytes of new WAL after which the writer wakes its checkpointer: 4 MiB, SQLite's automatic
/// threshold (1000 frames) at its default 4 KiB page. BENCHMARKS.md, 2026-12-07 (night):
/// 16 MiB wrote 4 % fewer bytes per dossier on the HTTP-adapter path, but its larger copies
/// raised the paced p99 at 1,000 msg/s (medians of three 29.8 and 29.5 ms, against 19.4–23.4
/// at 4 MiB in the same alternating runs).
pub const CHECKPOINT_WAL_BYTES: i64 = 4 << 20;

/// Bytes of WAL from which the writer lets the log start over: 32 MiB.
pub const RESET_WAL_BYTES: i64 = 32 << 20;

/// Most WAL not yet in the database that the writer copies itself, between two batches, to
/// let the log start over: 1 MiB (a few milliseconds of copying).
pub const FINAL_CHECKPOINT_BYTES: i64 = 1 << 20;

/// `bytes` of WAL in frames of `page_size` bytes (at least one).
fn frames_of(bytes: i64, page_size: i64) -> i32 {
    (bytes / page_size.max(512)).clamp(1, i32::MAX as i64) as i32
}

/// What the writer's WAL hook, the writer thread and the checkpointer share.
#[derive(Default)]
struct Shared {
    /// Frames in the WAL after the writer's latest commit.
    frames: AtomicI32,
    /// Frames of the WAL in the database as the latest checkpoint (or the writer's reading
    /// of the log, [`Shared::read_log`]) found them: a hint for the hook's wakes, which may
    /// be of an earlier log (the writer decides from an exact reading).
    copied: AtomicI32,
}

impl Shared {
    /// Frames of a WAL of `frames` that the latest record does not show in the database: all
    /// of them when the record is larger than the log (it is of an earlier one).
    fn uncopied_hint(&self, frames: i32) -> i32 {
        let copied = self.copied.load(Ordering::Acquire);
        if copied > frames {
            return frames;
        }
        frames - copied
    }

    /// Record how far the WAL is copied from what `PRAGMA wal_checkpoint` returned (busy,
    /// frames in the log, frames of it in the database; -1 when not in WAL mode), and return
    /// the last two. A checkpoint that found another one running records nothing.
    fn record(&self, (busy, log, done): (i64, i64, i64)) -> Option<(i32, i32)> {
        if busy != 0 || log < 0 || done < 0 {
            return None;
        }
        let clamp = |v: i64| v.min(i64::from(i32::MAX)) as i32;
        self.copied.store(clamp(done), Ordering::Release);
        Some((clamp(log), clamp(done)))
    }

    /// `PRAGMA wal_checkpoint(PASSIVE)`: copy what the WAL holds into the database without
    /// waiting for anyone (what it could not copy, the next one will), and record how far it
    /// got.
    fn checkpoint(&self, conn: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
        self.record(wal_checkpoint(conn, "PRAGMA wal_checkpoint(PASSIVE)")?);
        Ok(())
    }

    /// `PRAGMA wal_checkpoint(NOOP)` (SQLite 3.51 and later; [`NOOP_CHECKPOINT_SINCE`]): the
    /// frames in the WAL and the frames of it in the database as the log's shared index holds
    /// them, whoever wrote or copied them (another process's writer on the same file, a restart
    /// this connection's hook did not see), recorded too. Copies nothing and takes no
    /// checkpoint lock (the two counts are read one after the other, unlocked: another process
    /// may move them in between, which can only make one decision early or late). `None` when
    /// the store is not in WAL mode or the index could not be read at once (the next batch
    /// reads again).
    fn read_log(&self, conn: &rusqlite::Connection) -> Result<Option<(i32, i32)>, rusqlite::Error> {
        Ok(self.record(wal_checkpoint(conn, "PRAGMA wal_checkpoint(NOOP)")?))
    }
}

/// The first SQLite release whose `wal_checkpoint` pragma knows `NOOP` (3.51.0, as
/// `sqlite3_libversion_number`). An older library (a system SQLite linked instead of the bundled
/// one, `LIBSQLITE3_SYS_USE_PKG_CONFIG`) would run an unknown mode as `PASSIVE`, copying the
/// whole log while writes wait: with one, the writer decides from its own view instead.
const NOOP_CHECKPOINT_SINCE: i32 = 3_051_000;

/// Run `pragma` (`PRAGMA wal_checkpoint(<mode>)`) on `conn`: (busy, frames in the log, frames
/// checkpointed), <https://www.sqlite.org/pragma.html#pragma_wal_checkpoint>.
fn wal_checkpoint(
    conn: &rusqlite::Connection,
    pragma: &str,
) -> Result<(i64, i64, i64), rusqlite::Error> {
    conn.prepare_cached(pragma)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// Whether the writer, after a batch, copies the rest of the WAL itself: the log holds at
/// least `reset` frames and at most `last` of them are not yet copied, or it holds `reset`
/// and one more checkpoint's `interval` (the checkpointer did not catch up meanwhile).
fn writer_copies_rest(frames: i32, uncopied: i32, reset: i32, last: i32, interval: i32) -> bool {
    frames >= reset && (uncopied <= last || frames >= reset.saturating_add(interval))
}

/// The checkpoints of one writer connection ([`WalCheckpoints::start`]).
pub(super) struct WalCheckpoints {
    shared: Arc<Shared>,
    checkpoint_frames: i32,
    reset_frames: i32,
    final_frames: i32,
}

impl WalCheckpoints {
    /// Start the checkpointer thread of the store file at `path` and install, on the writer's
    /// connection `writer`, the WAL hook that wakes it (it replaces the connection's automatic
    /// checkpoint, `sqlite3_wal_hook`). The thread ends when the hook is dropped (with the
    /// connection).
    pub(super) fn start(
        writer: &mut rusqlite::Connection,
        path: &Path,
    ) -> Result<WalCheckpoints, StoreError> {
        let page_size: i64 = writer
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(DbError::from)?;
        let checkpoint_frames = frames_of(CHECKPOINT_WAL_BYTES, page_size);
        let reset_frames = frames_of(RESET_WAL_BYTES, page_size);
        let final_frames = frames_of(FINAL_CHECKPOINT_BYTES, page_size);
        let shared = Arc::new(Shared::default());
        let signal = start_checkpointer(path, shared.clone())?;
        let seen = shared.clone();
        // Frames in the WAL when the checkpointer was last woken, and after the latest commit.
        let (mut woken_at, mut last) = (0, 0);
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: i32| {
                if n < last {
                    // The WAL started over.
                    woken_at = 0;
                }
                last = n;
                seen.frames.store(n, Ordering::Release);
                // Below the bound, a checkpoint every interval. From the bound on, one each
                // time another `final_frames` of log was written while more than that is not
                // yet copied (each pass takes the checkpoint lock and syncs: not one a commit).
                // One interval past the bound the writer copies the rest itself, and a
                // checkpoint running beside it would only make its attempts answer busy.
                let wake = if n < reset_frames {
                    n - woken_at >= checkpoint_frames
                } else {
                    n < reset_frames.saturating_add(checkpoint_frames)
                        && n - woken_at >= final_frames
                        && seen.uncopied_hint(n) > final_frames
                };
                if wake && signal.try_send(()).is_ok() {
                    woken_at = n;
                }
                Ok(())
            }))
            .map_err(DbError::from)?;
        Ok(WalCheckpoints {
            shared,
            checkpoint_frames,
            reset_frames,
            final_frames,
        })
    }

    /// Between two batches: copy the rest of the WAL on the writer's connection `writer` when
    /// it is time to let the log start over ([`writer_copies_rest`]). A checkpoint running
    /// meanwhile makes this one answer busy, and the next batch tries again. (Waking the
    /// checkpointer again instead could keep it running back to back, each of its passes making
    /// the writer's next attempt answer busy, and the log would not start over; what stays
    /// uncopied while no write follows is in the WAL, where readers read it.)
    pub(super) fn after_batch(&self, writer: &rusqlite::Connection) {
        if !self.writer_copies_now(writer) {
            return;
        }
        if let Err(e) = self.shared.checkpoint(writer) {
            tracing::warn!(message = "WAL checkpoint failed; will retry", error = %e);
        }
    }

    /// Whether the writer copies the rest of the WAL now ([`writer_copies_rest`]), from the
    /// log's state read on `writer`. The hook's count is this connection's view and the
    /// checkpointer's record may be of an earlier log: the log may have started over meanwhile
    /// (another process's writer on the same file) and grown past this connection's count.
    fn writer_copies_now(&self, writer: &rusqlite::Connection) -> bool {
        let n = self.shared.frames.load(Ordering::Acquire);
        if n < self.reset_frames {
            return false;
        }
        let state = if rusqlite::version_number() < NOOP_CHECKPOINT_SINCE {
            // This connection's count and the latest record: stale only when another process
            // writes the same file.
            Ok(Some((n, n - self.shared.uncopied_hint(n))))
        } else {
            self.shared.read_log(writer)
        };
        match state {
            Ok(Some((n, done))) => writer_copies_rest(
                n,
                n - done,
                self.reset_frames,
                self.final_frames,
                self.checkpoint_frames,
            ),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(message = "reading the WAL's state failed; will retry", error = %e);
                false
            }
        }
    }
}

/// Start the checkpointer thread of the store file at `path`: returns the signal that wakes
/// it. The thread ends when the signal's sender is dropped.
fn start_checkpointer(
    path: &Path,
    shared: Arc<Shared>,
) -> Result<std::sync::mpsc::SyncSender<()>, StoreError> {
    let conn = open_sqlite(path)?;
    let (signal, wake) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("lienthong-store-checkpointer".into())
        .spawn(move || {
            while wake.recv().is_ok() {
                if let Err(e) = shared.checkpoint(&conn) {
                    tracing::warn!(message = "WAL checkpoint failed; will retry", error = %e);
                }
            }
        })
        .map_err(|e| StoreError::Io("the store checkpointer thread".into(), e))?;
    Ok(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for a test's store (100 MiB here), removed even when the test
    /// fails.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            Scratch(
                std::env::temp_dir().join(format!("lt-wal-{}", crate::envelope::new_message_id())),
            )
        }

        /// A store file in this directory with one table `t (x BLOB)`: its path, and a writer
        /// connection with its checkpoints.
        fn store(&self) -> (std::path::PathBuf, rusqlite::Connection, WalCheckpoints) {
            let path = self.0.join("s.db");
            let mut conn = open_sqlite(&path).expect("open");
            conn.execute_batch("CREATE TABLE t (x BLOB)")
                .expect("table");
            let ckpt = WalCheckpoints::start(&mut conn, &path).expect("start");
            (path, conn, ckpt)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_writer_copies_the_rest_when_little_is_left_or_an_interval_past_the_bound() {
        let (reset, last, interval) = (1000, 50, 400);
        // Below the bound: the checkpointer's work.
        assert!(!writer_copies_rest(999, 10, reset, last, interval));
        // At the bound, much not yet copied: the checkpointer is woken instead.
        assert!(!writer_copies_rest(1200, 400, reset, last, interval));
        // Little left: the writer copies it and the log starts over.
        assert!(writer_copies_rest(1200, 50, reset, last, interval));
        // The checkpointer not catching up: the writer copies the rest one interval past
        // the bound.
        assert!(writer_copies_rest(1400, 900, reset, last, interval));
    }

    #[test]
    fn the_hooks_hint_counts_a_record_of_an_earlier_log_as_nothing_copied() {
        let s = Shared::default();
        s.copied.store(700, Ordering::Release);
        assert_eq!(s.uncopied_hint(1000), 300);
        // The record is larger than the log: it is of an earlier one.
        assert_eq!(s.uncopied_hint(600), 600);
        assert_eq!(
            s.record((1, 900, 900)),
            None,
            "a busy checkpoint records nothing"
        );
        assert_eq!(s.uncopied_hint(1000), 300);
        assert_eq!(s.record((0, 1000, 990)), Some((1000, 990)));
        assert_eq!(s.uncopied_hint(1000), 10);
    }

    /// Another writer on the same file (another process) started the log over and wrote it
    /// past this connection's count, and nothing of the new log is copied: the writer reads
    /// that from the log and leaves it to the checkpointer, where this connection's own view
    /// (its count only grew; its checkpointer's record says nearly all of it copied) would
    /// have had it copy a whole log while its writes wait.
    #[test]
    fn the_writer_decides_from_the_log_not_from_its_own_view() {
        assert!(
            rusqlite::version_number() >= NOOP_CHECKPOINT_SINCE,
            "SQLite {} is linked: the writer reads the log only from 3.51 on",
            rusqlite::version()
        );
        let dir = Scratch::new();
        let (path, mut conn, ckpt) = dir.store();
        let blob = vec![7u8; 16 * 1024];
        let insert = "INSERT INTO t (x) VALUES (?1)";
        // This connection fills the log past the bound in one transaction, and all of it gets
        // copied (its record says so).
        let tx = conn.transaction().expect("begin");
        for _ in 0..(RESET_WAL_BYTES / 16384 + 16) {
            tx.execute(insert, [&blob]).expect("insert");
        }
        tx.commit().expect("commit");
        let ours = ckpt.shared.frames.load(Ordering::Acquire);
        assert!(ours >= ckpt.reset_frames, "{ours} frames");
        loop {
            ckpt.shared.checkpoint(&conn).expect("checkpoint");
            match ckpt.shared.read_log(&conn).expect("read") {
                Some((n, done)) if n == done => break,
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        // Another writer empties the log; a reader then keeps any checkpoint from copying
        // what that writer writes next, a row a commit, until the log is just past ours.
        let other = open_sqlite(&path).expect("open the other writer");
        // (Its own automatic checkpoints could copy nothing either; they only cost time.)
        other
            .pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no automatic checkpoint");
        loop {
            let (busy, n, _) =
                wal_checkpoint(&other, "PRAGMA wal_checkpoint(TRUNCATE)").expect("truncate");
            if busy == 0 && n == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let reader = open_sqlite(&path).expect("open the reader");
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM t;")
            .expect("read");
        let theirs = loop {
            other.execute(insert, [&blob]).expect("insert");
            let (_, n, done) = wal_checkpoint(&other, "PRAGMA wal_checkpoint(NOOP)").expect("noop");
            assert_eq!(done, 0, "the reader keeps the new log out of the database");
            if n > i64::from(ours) {
                break n;
            }
        };
        // This connection commits once more: its count grew, so its hook sees no restart.
        conn.execute(insert, [&blob]).expect("insert");
        let n = ckpt.shared.frames.load(Ordering::Acquire);
        assert!(i64::from(n) > theirs, "{n} frames after {theirs}");
        assert!(
            n < ckpt.reset_frames + ckpt.checkpoint_frames,
            "{n} frames: past the fallback, which copies whatever is left"
        );
        assert!(
            !ckpt.writer_copies_now(&conn),
            "the writer would copy {n} uncopied frames while writes wait"
        );
        assert_eq!(ckpt.shared.copied.load(Ordering::Acquire), 0);
        reader.execute_batch("COMMIT").expect("end the read");
    }

    /// The writer's WAL starts over once it passes the bound: the checkpointer copies most of
    /// it, the writer the rest, and the next commit writes from the log's start. (SQLite also
    /// starts it over below the bound when the checkpointer happened to copy all of it between
    /// two commits; such a restart is not the one this test waits for.)
    #[test]
    fn the_log_starts_over_past_its_bound() {
        let dir = Scratch::new();
        let (_, conn, ckpt) = dir.store();
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        let blob = vec![7u8; 16 * 1024];
        let mut restarted_past_bound = false;
        let mut most = 0;
        // Up to 6 × the bound in 16 KiB rows, a commit each, as the writer's batches.
        for _ in 0..(6 * RESET_WAL_BYTES / 16384) {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [&blob])
                .expect("insert");
            ckpt.after_batch(&conn);
            let n = ckpt.shared.frames.load(Ordering::Acquire);
            if n < most {
                if i64::from(most) * page >= RESET_WAL_BYTES {
                    restarted_past_bound = true;
                    break;
                }
                most = 0;
            }
            most = most.max(n);
        }
        assert!(
            restarted_past_bound,
            "the WAL never started over past its bound (at most {most} frames of {page} bytes)"
        );
    }
}
