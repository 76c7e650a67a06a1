//! The store's schema, declared once: every table of the bus (message store and dossier
//! origins, trace, dead-letter log, the process manager's state, inbox, outbox, blocked
//! dossiers and alerts, the adapters' delivery log, agency callbacks, the edXML outbox, the
//! dossier index) as
//! versioned migrations, applied when a connection opens. The version is SQLite's
//! `PRAGMA user_version`: the number of migrations applied (the convention of the
//! `rusqlite_migration` crate, so a store stays readable if the runner is swapped for it).

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::db::{Db, DbError};
use super::error::StoreError;
use super::location::StoreLocation;

/// Migration 1: the schema of the releases before versioned migrations (`user_version` 0),
/// statement for statement. Everything is `IF NOT EXISTS`: on a store such a release wrote it
/// changes nothing, on a new file it creates the tables.
const V1: &str = r#"
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
CREATE TABLE IF NOT EXISTS adapter_deliveries (
    message_id TEXT PRIMARY KEY, unit TEXT NOT NULL, ma_ho_so TEXT NOT NULL, ma_tthc TEXT NOT NULL,
    kind TEXT NOT NULL, sender TEXT NOT NULL, reply_to TEXT NOT NULL, correlation_id TEXT NOT NULL,
    receipt TEXT NOT NULL, at_ms INTEGER NOT NULL, state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_by_dossier ON adapter_deliveries (ma_ho_so);
CREATE TABLE IF NOT EXISTS agency_callbacks (
    unit TEXT NOT NULL, reference TEXT NOT NULL, status INTEGER NOT NULL,
    envelope TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0, at_ms INTEGER NOT NULL,
    PRIMARY KEY (unit, reference, status));
CREATE TABLE IF NOT EXISTS edxml_outbox (
    id TEXT PRIMARY KEY, unit TEXT NOT NULL, ma_ho_so TEXT NOT NULL,
    document_id TEXT NOT NULL, envelope TEXT NOT NULL, package BLOB NOT NULL,
    state TEXT NOT NULL, fetches INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, reason TEXT);
CREATE INDEX IF NOT EXISTS edxml_outbox_waiting ON edxml_outbox (unit, state, created_ms);
"#;

/// Migration 2: an index for the edXML outbox's retention sweep (ended packages by age).
const V2: &str = r#"
CREATE INDEX IF NOT EXISTS edxml_outbox_ended ON edxml_outbox (state, updated_ms);
"#;

/// Migration 3: the claim-check blobs' index (which dossiers a blob belongs to: who may fetch
/// it, and when it is deleted), and the process outbox by dossier (the blob party check).
const V3: &str = r#"
CREATE TABLE IF NOT EXISTS blob_dossiers (
    sha256   TEXT NOT NULL,
    ma_ho_so TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (sha256, ma_ho_so)
);
CREATE INDEX IF NOT EXISTS blob_dossiers_by_age ON blob_dossiers (at_ms);
CREATE INDEX IF NOT EXISTS process_outbox_by_dossier ON process_outbox (ma_ho_so, receiver);
"#;

/// Migration 4: the tamper-evident trace (`store/chain.rs`). Each event carries its position in
/// the store's chain, the hash of the store's previous event and of its dossier's previous
/// event, and its own hash; `trace_heads` keeps the store head (`*`) and each dossier's head
/// (`d:<ma_ho_so>`); `trace_chain_start` records when the chain started and how many events were
/// there before it (they stay unchained); `trace_checkpoints` holds the signed checkpoints of
/// the store head. `ADD COLUMN` has no `IF NOT EXISTS`: this one relies on [`migrate`] running
/// in an `IMMEDIATE` transaction that reads the version again under the lock.
const V4: &str = r#"
ALTER TABLE trace_events ADD COLUMN chain_seq INTEGER;
ALTER TABLE trace_events ADD COLUMN chain_prev BLOB;
ALTER TABLE trace_events ADD COLUMN dossier_prev BLOB;
ALTER TABLE trace_events ADD COLUMN chain_hash BLOB;
CREATE TABLE IF NOT EXISTS trace_heads (
    scope TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL,
    hash  BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_chain_start (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    started_ms INTEGER NOT NULL,
    unchained  INTEGER NOT NULL
);
INSERT OR IGNORE INTO trace_chain_start (id, started_ms, unchained)
    SELECT 1, CAST(strftime('%s', 'now') AS INTEGER) * 1000, COUNT(*) FROM trace_events;
CREATE TABLE IF NOT EXISTS trace_checkpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    head_hash   BLOB NOT NULL,
    key_id      TEXT,
    public_key  BLOB,
    signature   BLOB
);
"#;

/// Migration 5: the dossier index (`store/dossiers.rs`), a read model for the operators' lists:
/// one row per dossier with its centre, applicant (and a folded search text), phase, holder,
/// due time and timeliness. Filled from what the store already holds (origins and process
/// states; no applicant for those) and kept up to date with each routed message and process
/// state from then on.
const V5: &str = r#"
CREATE TABLE IF NOT EXISTS dossiers (
    ma_ho_so    TEXT PRIMARY KEY,
    ma_tthc     TEXT NOT NULL,
    centre      TEXT NOT NULL,
    applicant   TEXT,
    search      TEXT NOT NULL,
    phase       TEXT NOT NULL,
    status      INTEGER,
    holder      TEXT,
    received_ms INTEGER NOT NULL,
    due_ms      INTEGER,
    ended_ms    INTEGER,
    timeliness  TEXT,
    managed     INTEGER NOT NULL DEFAULT 0,
    updated_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dossiers_by_received ON dossiers (received_ms);
CREATE INDEX IF NOT EXISTS dossiers_by_centre ON dossiers (centre, received_ms);
CREATE INDEX IF NOT EXISTS dossiers_by_holder ON dossiers (holder, received_ms);
CREATE INDEX IF NOT EXISTS dossiers_by_phase ON dossiers (phase, received_ms);
CREATE INDEX IF NOT EXISTS dossiers_by_procedure ON dossiers (ma_tthc, received_ms);
CREATE INDEX IF NOT EXISTS dossiers_open_by_due ON dossiers (due_ms) WHERE ended_ms IS NULL;
INSERT OR IGNORE INTO dossiers (ma_ho_so, ma_tthc, centre, search, phase, received_ms, managed, updated_ms)
    SELECT ma_ho_so, ma_tthc, origin_unit, lower(ma_ho_so || ' ' || ma_tthc), phase, updated_ms, 1, updated_ms
    FROM processes;
INSERT OR IGNORE INTO dossiers (ma_ho_so, ma_tthc, centre, search, phase, received_ms, updated_ms)
    SELECT ma_ho_so, ma_tthc, origin_unit, lower(ma_ho_so || ' ' || ma_tthc), 'running', first_seen_ms, first_seen_ms
    FROM dossier_origins;
"#;

/// Migration 6: the dead-letter log as the console needs it: each row keeps the failed
/// attempts' history and the body (clipped at [`super::dead_letters::BODY_MAX`]), and when and
/// by whom it was replayed; indexes for the filters (time, reason). `ADD COLUMN` relies on
/// [`migrate`]'s `IMMEDIATE` transaction, as migration 4 does.
const V6: &str = r#"
ALTER TABLE dead_letters ADD COLUMN history TEXT;
ALTER TABLE dead_letters ADD COLUMN body BLOB;
ALTER TABLE dead_letters ADD COLUMN replayed_ms INTEGER;
ALTER TABLE dead_letters ADD COLUMN replayed_by TEXT;
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (at_ms);
CREATE INDEX IF NOT EXISTS dead_letters_by_reason ON dead_letters (reason_code, at_ms);
"#;

/// Migration 7: the HTTP API's idempotency keys (`Idempotency-Key`): which message id a
/// unit's key stands for, and the hash of the first request's body ([`super::idempotency`]).
const V7: &str = r#"
CREATE TABLE IF NOT EXISTS http_idempotency (
    unit        TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (unit, idem_key)
);
CREATE INDEX IF NOT EXISTS http_idempotency_by_age ON http_idempotency (at_ms);
"#;

/// Migration 8: the delivery log's index by dossier goes. No statement ever read it (the log is
/// read by message id: the adapters' idempotency check, the callbacks' `MaThamChieu`), and every
/// delivery wrote to it: one more B-tree leaf rewritten per commit (issue 21, BENCHMARKS.md).
const V8: &str = r#"
DROP INDEX IF EXISTS deliveries_by_dossier;
"#;

/// Migration 9: the index rows that dossiers filed over the HTTP API to a named receiver never
/// got (their origin was recorded at ingress without the row, so the router only found a row to
/// move when there was one; fixed in the same release). Each origin without a row gets one: its
/// centre and procedure, received when the origin was recorded, `completed` at its last stored
/// `dossier.result` when the message store still holds one, else `running` with no holder; the
/// dossier's next message moves it as usual.
const V9: &str = r#"
INSERT INTO dossiers (ma_ho_so, ma_tthc, centre, search, phase, received_ms, ended_ms, updated_ms)
    SELECT o.ma_ho_so, o.ma_tthc, o.origin_unit, lower(o.ma_ho_so || ' ' || o.ma_tthc),
           CASE WHEN r.ended_ms IS NULL THEN 'running' ELSE 'completed' END,
           o.first_seen_ms, r.ended_ms, COALESCE(r.ended_ms, o.first_seen_ms)
    FROM dossier_origins o
    LEFT JOIN (SELECT ma_ho_so, MAX(accepted_at_ms) AS ended_ms FROM messages
               WHERE kind = 'dossier.result' GROUP BY ma_ho_so) r ON r.ma_ho_so = o.ma_ho_so
    WHERE NOT EXISTS (SELECT 1 FROM dossiers d WHERE d.ma_ho_so = o.ma_ho_so);
"#;

/// Migration 10: a dossier's origin (the centre whose first forward was seen, and its
/// correlation id) lives in its dossier index row: `dossiers.correlation_id`, `NULL` while no
/// origin is recorded, with the row's `centre` and `ma_tthc` those of the origin. The table
/// `dossier_origins` goes: every new dossier wrote two B-trees more (the table and its key) in
/// each commit, beside the index row it already wrote (issue 21, BENCHMARKS.md). After
/// migration 9 every origin has its row. `ADD COLUMN` relies on [`migrate`]'s `IMMEDIATE`
/// transaction, as migration 4 does.
const V10: &str = r#"
ALTER TABLE dossiers ADD COLUMN correlation_id TEXT;
UPDATE dossiers SET (ma_tthc, centre, correlation_id) =
    (SELECT o.ma_tthc, o.origin_unit, o.correlation_id FROM dossier_origins o WHERE o.ma_ho_so = dossiers.ma_ho_so)
    WHERE EXISTS (SELECT 1 FROM dossier_origins o WHERE o.ma_ho_so = dossiers.ma_ho_so);
DROP TABLE dossier_origins;
"#;

/// Migration 11: the trace's index by message id goes (issue 21, BENCHMARKS.md): every event
/// wrote a leaf of it, keyed by a random id, in each commit (4.2 KiB per dossier on the
/// HTTP-adapter path), for three reads: the console's page of one dead letter (the message's
/// events), each timeline row's time since its message's first event, and `/v1/stats`. A
/// message's events are now read under its dossier code (`trace_by_dossier`,
/// [`super::connection::Store::message_timeline`]), the few events without a dossier code
/// through a partial index of their own; the other two compute from the rows they read. On a
/// large trace the partial index is built by one scan of the table when the store opens.
const V11: &str = r#"
DROP INDEX IF EXISTS trace_by_message;
CREATE INDEX IF NOT EXISTS trace_undossiered_by_message ON trace_events (message_id) WHERE ma_ho_so IS NULL;
"#;

/// Migration 12: a stored body may be compressed (issue 21, BENCHMARKS.md): `body_encoding`
/// says how (`zstd`, [`super::body_codec`]); NULL, every row written before it, is the body as
/// routed. `ADD COLUMN` has no `IF NOT EXISTS`: [`migrate`]'s `IMMEDIATE` transaction keeps a
/// second opener from running it again.
const V12: &str = r#"
ALTER TABLE messages ADD COLUMN body_encoding TEXT;
"#;

/// The migrations, oldest first; after migration `n` the file's `user_version` is `n`. Append
/// only: never edit one that was released. Two processes opening a store at once cannot trip
/// over each other's upgrade: [`migrate`] runs the missing ones in one `IMMEDIATE` transaction
/// and reads the version again under it (most are idempotent too, `IF NOT EXISTS`; the
/// `ADD COLUMN`s of 4, 6, 10 and 12 rely on the transaction).
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12];

/// The schema version this build writes (the number of migrations).
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The store's schema version: SQLite's `PRAGMA user_version`, or PostgreSQL's
/// `lienthong_schema` (each backend numbers its own migrations).
pub fn version(conn: &Db) -> Result<i64, DbError> {
    match conn.sqlite() {
        Some(c) => Ok(sqlite_version(c)?),
        None => super::migrations_pg::version(conn),
    }
}

fn sqlite_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Bring the file to [`latest_version`]: the migrations it lacks and the new version, in one
/// `IMMEDIATE` transaction (all or nothing; a concurrent opener waits for it, then finds nothing
/// left to do). Errors: SQLite failed, or the file is newer than this build
/// ([`StoreError::TooNew`]).
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = latest_version();
    let sq = |e: rusqlite::Error| StoreError::Db(DbError::from(e));
    if sqlite_version(conn).map_err(sq)? == known {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sq)?;
    let found = sqlite_version(&tx).map_err(sq)?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for up in &MIGRATIONS[found.max(0) as usize..] {
        tx.execute_batch(up).map_err(sq)?;
    }
    tx.pragma_update(None, "user_version", known).map_err(sq)?;
    tx.commit().map_err(sq)?;
    if found < known {
        tracing::info!(
            message = "store schema upgraded",
            from_version = found,
            to_version = known
        );
    }
    Ok(())
}

/// The page size of a store created by this build, bytes: SQLite's smallest. Every commit
/// writes each page it changed whole to the WAL, and the checkpoint writes it again to the
/// database file; a routed message touches a page of some twenty B-trees (the message, its
/// trace events, the dossier index and their indexes), most of them keyed at random (a dossier
/// code, a message id), where one entry of 30–100 bytes dirties a page of its own. Small pages
/// cut the bytes written per message: 4 KiB to 1 KiB took the routed path from 37.5 to 24.7
/// KiB per 5 KiB message at eight messages per commit; 1 KiB to 512 bytes saved another 7 %
/// (routed, saturated), 13 % (HTTP-adapter path) and 25 % (1,000 msg/s), for no CPU cost
/// outside the host's noise (issue 21, BENCHMARKS.md, 2026-12-07 (day)). The price is in the
/// file's shape: a 5 KiB body takes twice as many overflow pages, and an index entry longer
/// than about 100 bytes (none on the hot path) spills to one. A store created with another
/// page size keeps it (changing it needs a `VACUUM` outside WAL mode: docs/deploy.md).
pub const PAGE_SIZE: u32 = 512;

/// Open a SQLite connection to the store at `path` (creating the file and its directory if
/// needed): [`PAGE_SIZE`] if the file is new, WAL mode, `synchronous = NORMAL`, a 10 s busy
/// timeout, the schema migrated to the latest version.
///
/// Processes that start together on a new file (a router and an adapters process) race to
/// switch it to WAL: SQLite answers "database is locked" at once, without its busy timeout,
/// when two connections that both read the file want its exclusive lock (it would deadlock
/// otherwise). Such an answer is retried with backoff (5 ms doubling to 200 ms, each wait up
/// to twice that with jitter, at most 10 s of waits in all) instead of failing the process.
pub fn open_sqlite(path: &Path) -> Result<Connection, StoreError> {
    use backon::BlockingRetryable;
    use std::time::{Duration, Instant};
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
    }
    // Only a busy answer that came at once is retried: one that waited out the busy timeout
    // (another process holds the write lock that long) is the caller's to report.
    let attempt = std::cell::Cell::new(Instant::now());
    let busy_at_once = |e: &StoreError| {
        matches!(e, StoreError::Db(d) if d.is_busy())
            && attempt.get().elapsed() < Duration::from_secs(1)
    };
    (|| {
        attempt.set(Instant::now());
        open_sqlite_once(path)
    })
    .retry(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(200))
            .with_total_delay(Some(Duration::from_secs(10)))
            .with_max_times(200)
            .with_jitter(),
    )
    .sleep(std::thread::sleep)
    .when(busy_at_once)
    .call()
}

/// One attempt of [`open_sqlite`].
fn open_sqlite_once(path: &Path) -> Result<Connection, StoreError> {
    let sq = |e: rusqlite::Error| StoreError::Db(DbError::from(e));
    let mut conn = Connection::open(path).map_err(sq)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sq)?;
    // Only takes effect on an empty file (before its first table), so it is safe on every open.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(sq)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sq)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sq)?;
    migrate(&mut conn)?;
    // Every hot statement is prepared once per connection (`prepare_cached`); one
    // connection serves many components, so keep more than rusqlite's default 16.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Open a connection to the store at `location` with its schema at the latest version:
/// [`open_sqlite`], or a PostgreSQL connection ([`super::pg::PgConn`]) migrated by
/// [`super::migrations_pg::migrate`].
pub fn open_connection(location: &StoreLocation) -> Result<Db, StoreError> {
    match location {
        // `postgre://…`, `mysql://…`: a URL this build does not know, not a file to create.
        StoreLocation::Sqlite(path) if path.to_string_lossy().contains("://") => {
            Err(StoreError::Writer(format!(
                "store: {} is not a store this build knows (postgres://…, sqlite:<path>, or a file path)",
                path.display()
            )))
        }
        StoreLocation::Sqlite(path) => Ok(Db::Sqlite(open_sqlite(path)?)),
        StoreLocation::Postgres(url) => {
            let db = Db::Pg(super::pg::PgConn::connect(url)?);
            super::migrations_pg::migrate(&db)?;
            Ok(db)
        }
    }
}
