//! The process manager's persistence: its state (`processes`), inbox (`process_inbox`,
//! idempotency), transactional outbox (`process_outbox`, kept `[store]
//! process_outbox_retention_days` once sent), blocked dossiers (`process_blocked`) and alerts
//! (`process_alerts`). Every write goes through the group commit; the rules
//! ([`crate::process::rules`]) stay free of SQL.

use crate::params;
use crate::store::db::{Db, OptionalExtension};
use crate::store::db::{DbError, Row};

use crate::envelope::{RejectCode, Rejection};
use crate::process::due::OverdueItem;
use crate::process::state::{Process, Transition};

use super::connection::Store;
use super::dossiers::{Origin, insert_origin, origin_in};
use super::error::StoreError;
use super::writer::MessageWriter;

/// What [`MessageWriter::apply_process`] did with a message.
#[derive(Debug)]
pub enum Applied {
    /// The message was applied before (same message id): nothing changed.
    Duplicate,
    /// The message cannot be applied; the reason goes to the dead-letter queue.
    Rejected(Rejection),
    /// Applied: the state was saved and the envelopes to send are in the outbox.
    Done {
        /// The new state.
        process: Box<Process>,
        /// What happened, for the trace.
        notes: Vec<String>,
        /// The message ids of the outbox envelopes this transition wrote or armed again: what
        /// the process that applied it publishes (another process's transition of the same
        /// dossier publishes its own; the sweeper takes what a crash left).
        outbox: Vec<String>,
    },
}

/// One envelope waiting in the process outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// Outbox sequence number.
    pub seq: i64,
    /// Message id of the envelope.
    pub message_id: String,
    /// Dossier code.
    pub ma_ho_so: String,
    /// Receiver unit (routing key on the deliver exchange).
    pub receiver: String,
    /// The envelope (JSON).
    pub body: Vec<u8>,
}

/// Apply a message of dossier `ma_ho_so` inside an open transaction or savepoint: skip it if the
/// inbox has its id `inbox` (idempotent consumer; None for an event the inbox does not
/// deduplicate: a dead letter, a replay, an operator's retry, whose transition is idempotent by
/// itself), else run `f` on the stored state and save the new state, the envelopes to send
/// (transactional outbox), the message id and, when given, the dossier's `origin` (first one
/// wins). Also publishes again, with their ids, the outbox envelopes the transition names in
/// [`Transition::republish`], and keeps `process_blocked` (the dossiers with a blocked message,
/// which the overdue scan reads even after they ended) in step. `f` returns `Ok(None)` when the
/// dossier is not run by the process manager.
pub fn apply_process_in(
    c: &Db,
    inbox: Option<&str>,
    ma_ho_so: &str,
    origin: Option<&Origin>,
    f: impl FnOnce(Option<Process>) -> Result<Option<Transition>, Rejection>,
) -> Result<Option<Applied>, DbError> {
    if let Some(message_id) = inbox {
        let seen: Option<i64> = c
            .query_row(
                "SELECT 1 FROM process_inbox WHERE message_id = ?1",
                params![message_id],
                |r| r.get(0),
            )
            .optional()?;
        if seen.is_some() {
            return Ok(Some(Applied::Duplicate));
        }
    }
    let state: Option<String> = c
        .query_row(
            "SELECT state FROM processes WHERE ma_ho_so = ?1",
            params![ma_ho_so],
            |r| r.get(0),
        )
        .optional()?;
    let current = match state.map(|s| serde_json::from_str::<Process>(&s)) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            return Ok(Some(Applied::Rejected(Rejection::new(
                RejectCode::InvalidField,
                format!("the stored process of {ma_ho_so} is unreadable: {e}"),
            ))));
        }
    };
    let t = match f(current) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(r) => return Ok(Some(Applied::Rejected(r))),
    };
    let now = crate::clock::now_ms();
    let p = &t.process;
    let json = serde_json::to_string(p).unwrap_or_default();
    let phase = serde_json::to_value(p.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    c.execute(
            "INSERT INTO processes (ma_ho_so, ma_tthc, origin_unit, phase, updated_ms, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (ma_ho_so) DO UPDATE SET phase = excluded.phase, updated_ms = excluded.updated_ms, state = excluded.state",
            params![p.ma_ho_so, p.ma_tthc, p.origin_unit, phase, now, json],
        )?;
    super::dossiers::index_process_in(c, p, now)?;
    for e in &t.out {
        c.execute(
                "INSERT INTO process_outbox (message_id, ma_ho_so, receiver, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![e.message_id, e.ma_ho_so, e.receiver.clone().unwrap_or_default(), e.to_bytes(), now],
            )?;
    }
    for id in &t.republish {
        c.execute(
            "UPDATE process_outbox SET sent_ms = NULL WHERE message_id = ?1 AND ma_ho_so = ?2",
            params![id, p.ma_ho_so],
        )?;
    }
    if p.blocked.is_empty() {
        c.execute(
            "DELETE FROM process_blocked WHERE ma_ho_so = ?1",
            params![p.ma_ho_so],
        )?;
    } else {
        c.execute(
            "INSERT INTO process_blocked (ma_ho_so, since_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![p.ma_ho_so, now],
        )?;
    }
    if let Some(message_id) = inbox {
        c.execute(
            "INSERT INTO process_inbox (message_id, ma_ho_so, at_ms) VALUES (?1, ?2, ?3)",
            params![message_id, ma_ho_so, now],
        )?;
    }
    if let Some(o) = origin {
        insert_origin(c, o, now)?;
    }
    let outbox = t
        .out
        .iter()
        .map(|e| e.message_id.clone())
        .chain(t.republish.iter().cloned())
        .collect();
    Ok(Some(Applied::Done {
        process: Box::new(t.process),
        notes: t.notes,
        outbox,
    }))
}

impl MessageWriter {
    /// [`apply_process_in`] in the group commit (a savepoint of its own: all or nothing); `f`
    /// runs on the writer thread. Errors: the store failed, or the writer thread is gone.
    pub async fn apply_process(
        &self,
        inbox: Option<String>,
        ma_ho_so: String,
        origin: Option<Origin>,
        f: impl FnOnce(Option<Process>) -> Result<Option<Transition>, Rejection> + Send + 'static,
    ) -> Result<Option<Applied>, String> {
        self.transact(move |c| apply_process_in(c, inbox.as_deref(), &ma_ho_so, origin.as_ref(), f))
            .await
    }

    /// Mark an outbox envelope as confirmed by the broker.
    pub async fn mark_sent(&self, seq: i64) -> Result<(), String> {
        self.write_unit(true, move |c| {
            c.prepare_cached("UPDATE process_outbox SET sent_ms = ?2 WHERE seq = ?1")?
                .execute(params![seq, crate::clock::now_ms()])
                .map(|_| ())
        })
        .await
    }

    /// Record an alert; true when it is new (each step, level and due time alerts once).
    pub async fn record_alert(&self, item: OverdueItem) -> Result<bool, String> {
        self.transact(move |c| {
            c.prepare_cached("INSERT INTO process_alerts (ma_ho_so, step, level, due, holder, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING")?
                .execute(params![
                    item.ma_ho_so,
                    item.step.clone().unwrap_or_else(|| "*".into()),
                    item.level.as_str(),
                    item.alert_key(),
                    item.holder,
                    crate::clock::now_ms()
                ])
                .map(|n| n == 1)
        })
        .await
    }

    /// Delete outbox envelopes the broker confirmed more than `retention_ms` ago, of dossiers
    /// that are no longer running or paused and have no blocked message (a running dossier's
    /// envelopes may still be published again: a replayed dead letter, an operator's retry),
    /// [`PURGE_CHUNK`](super::writer::PURGE_CHUNK) rows per write. Returns how many.
    pub async fn purge_process_outbox(&self, retention_ms: i64) -> Result<usize, String> {
        self.purge_in_chunks(
            "DELETE FROM process_outbox WHERE seq IN (
                           SELECT o.seq FROM process_outbox o
                           WHERE o.sent_ms IS NOT NULL AND o.sent_ms < ?1
                             AND o.ma_ho_so NOT IN (SELECT ma_ho_so FROM process_blocked)
                             AND o.ma_ho_so NOT IN (SELECT ma_ho_so FROM processes WHERE phase IN ('running', 'paused'))
                           LIMIT ?2)",
            crate::clock::now_ms() - retention_ms,
        )
        .await
    }
}

/// What the router and the HTTP API's ingress read of a message as it arrives
/// ([`Store::arrival`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// Whether the process manager runs the message's dossier.
    pub runs: bool,
    /// The dossier's recorded origin, if any.
    pub origin: Option<Origin>,
    /// What the bus already holds under the message's id ([`Store::message_seen`]).
    pub seen: Option<(Option<String>, String)>,
}

/// The arrival read on PostgreSQL, in one statement ([`Store::arrival`]).
const ARRIVAL_SQL: &str = "SELECT (SELECT count(*) FROM processes WHERE ma_ho_so = ?1),
            d.ma_ho_so, d.ma_tthc, d.centre, d.correlation_id,
            m.sender, m.ma_ho_so, i.ma_ho_so
     FROM (SELECT 1 AS one) AS one
     LEFT JOIN dossiers d ON d.ma_ho_so = ?1 AND d.correlation_id IS NOT NULL
     LEFT JOIN messages m ON m.message_id = ?2
     LEFT JOIN process_inbox i ON i.message_id = ?2";

/// [`ARRIVAL_SQL`]'s row as an [`Arrival`].
fn arrival_row(r: &Row<'_>) -> Result<Arrival, DbError> {
    let runs: i64 = r.get(0)?;
    let origin = match r.get::<_, Option<String>>(1)? {
        Some(ma_ho_so) => Some(Origin {
            ma_ho_so,
            ma_tthc: r.get(2)?,
            origin_unit: r.get(3)?,
            correlation_id: r.get(4)?,
        }),
        None => None,
    };
    let seen = match (
        r.get::<_, Option<String>>(5)?,
        r.get::<_, Option<String>>(6)?,
    ) {
        (Some(sender), Some(ma)) => Some((Some(sender), ma)),
        _ => r.get::<_, Option<String>>(7)?.map(|ma| (None, ma)),
    };
    Ok(Arrival {
        runs: runs > 0,
        origin,
        seen,
    })
}

impl Store {
    /// What the router needs to know of a dossier, in one lock: whether the process manager runs
    /// it, and its recorded origin.
    pub fn lookup_dossier(&self, ma_ho_so: &str) -> Result<(bool, Option<Origin>), StoreError> {
        self.with(|c| {
            let managed = c
                .prepare_cached("SELECT 1 FROM processes WHERE ma_ho_so = ?1")?
                .query_row(params![ma_ho_so], |_| Ok(()))
                .optional()?
                .is_some();
            let origin = origin_in(c, ma_ho_so)?;
            Ok((managed, origin))
        })
    }

    /// What the bus already holds under `message_id`: `(sender, ma_ho_so)` of the copy in the
    /// message store, or `(None, ma_ho_so)` when only the process manager's inbox has it.
    /// `None` when the id is new. The router refuses a message whose id another sender or
    /// another dossier already used (receivers dedupe by id: it would be dropped unseen).
    pub fn message_seen(
        &self,
        message_id: &str,
    ) -> Result<Option<(Option<String>, String)>, StoreError> {
        self.with(|c| {
            let stored = c
                .prepare_cached("SELECT sender, ma_ho_so FROM messages WHERE message_id = ?1")?
                .query_row(params![message_id], |r| Ok((Some(r.get(0)?), r.get(1)?)))
                .optional()?;
            if stored.is_some() {
                return Ok(stored);
            }
            c.prepare_cached("SELECT ma_ho_so FROM process_inbox WHERE message_id = ?1")?
                .query_row(params![message_id], |r| Ok((None, r.get(0)?)))
                .optional()
        })
    }

    /// What the router reads as a message arrives: [`Store::lookup_dossier`] of its dossier
    /// `ma_ho_so` and [`Store::message_seen`] of its `message_id` (the HTTP API's ingress reads
    /// the same). On PostgreSQL one statement (one round trip instead of up to four, each of
    /// which costs the router a wake-up of the connection's runtime and the server a
    /// parse-bind-execute); on SQLite the point reads, which take microseconds there (one
    /// statement joining the four tables measured slower on SQLite: BENCHMARKS.md, 2026-12-05
    /// evening).
    pub fn arrival(&self, ma_ho_so: &str, message_id: &str) -> Result<Arrival, StoreError> {
        if self.is_embedded() {
            let (runs, origin) = self.lookup_dossier(ma_ho_so)?;
            let seen = self.message_seen(message_id)?;
            return Ok(Arrival { runs, origin, seen });
        }
        self.with(|c| {
            c.prepare_cached(ARRIVAL_SQL)?
                .query_row(params![ma_ho_so, message_id], arrival_row)
        })
    }

    /// [`Store::arrival`] from async code: on SQLite right here (point reads of microseconds);
    /// on PostgreSQL one statement awaited on the async worker ([`Store::point_query`]).
    pub async fn arrival_now(
        &self,
        ma_ho_so: &str,
        message_id: &str,
    ) -> Result<Arrival, StoreError> {
        if self.is_embedded() {
            return self.arrival(ma_ho_so, message_id);
        }
        // The parameters are read here: the future does not hold them.
        let read = self.point_query(ARRIVAL_SQL, params![ma_ho_so, message_id], arrival_row);
        read.await?.ok_or(StoreError::from(DbError::NoRows))
    }

    /// Whether the process manager runs dossier `ma_ho_so`.
    pub fn has_process(&self, ma_ho_so: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM processes WHERE ma_ho_so = ?1")?
                .query_row(params![ma_ho_so], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })
    }

    /// The process of a dossier.
    pub fn process(&self, ma_ho_so: &str) -> Result<Option<Process>, StoreError> {
        let s: Option<String> = self.with(|c| {
            c.prepare_cached("SELECT state FROM processes WHERE ma_ho_so = ?1")?
                .query_row(params![ma_ho_so], |r| r.get(0))
                .optional()
        })?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Every process still running or paused or with a blocked message, or every process when
    /// `all`.
    pub fn processes(&self, all: bool) -> Result<Vec<Process>, StoreError> {
        let rows: Vec<String> = self.with(|c| {
            let sql = if all {
                "SELECT state FROM processes ORDER BY ma_ho_so"
            } else {
                "SELECT state FROM processes WHERE phase IN ('running', 'paused') OR ma_ho_so IN (SELECT ma_ho_so FROM process_blocked) ORDER BY ma_ho_so"
            };
            let mut st = c.prepare(sql)?;
            st.query_map(params![], |r| r.get(0))?.collect()
        })?;
        Ok(rows
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// Outbox envelopes not yet confirmed by the broker: of one dossier, or all created at least
    /// `older_than_ms` ago (the sweeper). Oldest first.
    pub fn unsent(
        &self,
        ma_ho_so: Option<&str>,
        older_than_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let cutoff = crate::clock::now_ms() - older_than_ms;
        self.with(|c| {
            let row = |r: &Row<'_>| {
                Ok(OutboxEntry {
                    seq: r.get(0)?,
                    message_id: r.get(1)?,
                    ma_ho_so: r.get(2)?,
                    receiver: r.get(3)?,
                    body: r.get(4)?,
                })
            };
            match ma_ho_so {
                Some(m) => {
                    let mut st = c.prepare_cached("SELECT seq, message_id, ma_ho_so, receiver, body FROM process_outbox WHERE sent_ms IS NULL AND ma_ho_so = ?1 ORDER BY seq")?;
                    st.query_map(params![m], row)?.collect()
                }
                None => {
                    let mut st = c.prepare_cached("SELECT seq, message_id, ma_ho_so, receiver, body FROM process_outbox WHERE sent_ms IS NULL AND created_ms <= ?1 ORDER BY seq LIMIT 1000")?;
                    st.query_map(params![cutoff], row)?.collect()
                }
            }
        })
    }

    /// The dossier of outbox envelope `message_id`, when the process manager sent it (a
    /// replayed dead letter of the process manager's own comes back with its id).
    pub fn outbox_dossier(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT ma_ho_so FROM process_outbox WHERE message_id = ?1")?
                .query_row(params![message_id], |r| r.get(0))
                .optional()
        })
    }
}
