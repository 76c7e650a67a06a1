//! The trace (table `trace_events`): writing events (in the group commit) and the queries
//! behind `lienthong trace` and `/stats`.

use crate::params;
use crate::store::chain::Link;
use std::borrow::Cow;

use crate::store::db::{Backend, Db, DbError};

use crate::trace::event::TraceEvent;
use crate::trace::report::{TimelineRow, UnitStats, percentile};

use super::connection::Store;
use super::error::StoreError;
use super::writer::MessageWriter;

/// Write trace events inside the caller's transaction, chained (`store/chain.rs`: each event
/// carries the hash of the store's and of its dossier's previous event; a repeated event is
/// ignored and does not advance the chain). Used by [`MessageWriter::insert_events`], the group
/// commit ([`crate::store::MessageWriter`]) and `Tracer::emit_from`.
///
/// On PostgreSQL, where each statement is a round trip under the store's write lock, the
/// events of one call (up to [`MAX_EVENTS_AT_ONCE`]; the router writes three per message) and
/// the chain heads they move go in one statement (`insert_all_in`); on SQLite one statement
/// per event and per head.
pub fn insert_events_in(tx: &Db, events: &[TraceEvent]) -> Result<(), DbError> {
    let mut st = tx.prepare_cached(
        "INSERT INTO trace_events (event_id, at_ms, at, ma_ho_so, message_id, correlation_id, kind, event, component, from_unit, to_unit, attempt, status, reason, chain_seq, chain_prev, dossier_prev, chain_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) ON CONFLICT DO NOTHING",
    )?;
    let mut all = |rows: &[(&TraceEvent, Link)], heads: &[(String, [u8; 32])], seq: i64| {
        insert_all_in(tx, rows, heads, seq)
    };
    let at_once = tx.backend() == Backend::Postgres && events.len() <= MAX_EVENTS_AT_ONCE;
    super::chain::chain_events_in(
        tx,
        events,
        at_once.then_some(&mut all as super::chain::InsertAll<'_>),
        |e, l| {
            st.execute(params![
                e.event_id,
                e.at_ms,
                e.at,
                e.ma_ho_so,
                e.message_id,
                e.correlation_id,
                e.kind,
                e.event.as_str(),
                e.component,
                e.from,
                e.to,
                e.attempt,
                e.status,
                e.reason,
                l.seq,
                l.prev.as_ref().map(|h| &h[..]),
                l.dossier_prev.as_ref().map(|h| &h[..]),
                &l.hash[..]
            ])
        },
    )
}

/// Most events written by one statement on PostgreSQL (the events of a whole group commit go
/// in statements of at most this many).
pub const MAX_EVENTS_AT_ONCE: usize = 512;

/// One row of `trace_events` as [`insert_all_in`] sends it (JSON; hashes in hex).
#[derive(serde::Serialize)]
struct JsonRow<'a> {
    event_id: Cow<'a, str>,
    at_ms: i64,
    at: Cow<'a, str>,
    ma_ho_so: Option<Cow<'a, str>>,
    message_id: Option<Cow<'a, str>>,
    correlation_id: Option<Cow<'a, str>>,
    kind: Option<Cow<'a, str>>,
    event: &'a str,
    component: Cow<'a, str>,
    from_unit: Option<Cow<'a, str>>,
    to_unit: Option<Cow<'a, str>>,
    attempt: Option<u32>,
    status: Option<u8>,
    reason: Option<Cow<'a, str>>,
    chain_seq: i64,
    chain_prev: Option<String>,
    dossier_prev: Option<String>,
    chain_hash: String,
}

/// Write every linked event of `rows` and the chain `heads` they move (at position `seq`) in
/// one statement (PostgreSQL: the rows as one JSON parameter, inserted from
/// `jsonb_to_recordset`, and in a data-modifying `WITH` the upsert of the heads, done only
/// when every event was inserted; one shape for any number of rows, so it is prepared once),
/// all or none: `Ok(true)` when each was written; when one was already there (a repeated
/// event id), the heads are not written, the rows this statement wrote are deleted again, and
/// `Ok(false)` lets the caller write them one by one.
fn insert_all_in(
    tx: &Db,
    rows: &[(&TraceEvent, Link)],
    heads: &[(String, [u8; 32])],
    seq: i64,
) -> Result<bool, DbError> {
    use super::chain::{hex, pg_text};
    fn opt(s: &Option<String>) -> Option<Cow<'_, str>> {
        s.as_deref().map(pg_text)
    }
    let json: Vec<JsonRow<'_>> = rows
        .iter()
        .map(|(e, l)| JsonRow {
            event_id: pg_text(&e.event_id),
            at_ms: e.at_ms,
            at: pg_text(&e.at),
            ma_ho_so: opt(&e.ma_ho_so),
            message_id: opt(&e.message_id),
            correlation_id: opt(&e.correlation_id),
            kind: opt(&e.kind),
            event: e.event.as_str(),
            component: pg_text(&e.component),
            from_unit: opt(&e.from),
            to_unit: opt(&e.to),
            attempt: e.attempt,
            status: e.status,
            reason: opt(&e.reason),
            chain_seq: l.seq,
            chain_prev: l.prev.as_ref().map(|h| hex(h)),
            dossier_prev: l.dossier_prev.as_ref().map(|h| hex(h)),
            chain_hash: hex(&l.hash),
        })
        .collect();
    let json = serde_json::to_string(&json).map_err(|e| DbError::Other(e.to_string()))?;
    // A data-modifying WITH runs to its end whether or not the query reads it (PostgreSQL
    // documentation, "Data-Modifying Statements in WITH").
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "WITH ins AS (
               INSERT INTO trace_events (event_id, at_ms, at, ma_ho_so, message_id, correlation_id, kind, event, component, from_unit, to_unit, attempt, status, reason, chain_seq, chain_prev, dossier_prev, chain_hash)
               SELECT event_id, at_ms, at, ma_ho_so, message_id, correlation_id, kind, event, component, from_unit, to_unit, attempt, status, reason, chain_seq, decode(chain_prev, 'hex'), decode(dossier_prev, 'hex'), decode(chain_hash, 'hex')
               FROM jsonb_to_recordset(?1::text::jsonb) AS r (event_id text, at_ms bigint, at text, ma_ho_so text, message_id text, correlation_id text, kind text, event text, component text, from_unit text, to_unit text, attempt bigint, status bigint, reason text, chain_seq bigint, chain_prev text, dossier_prev text, chain_hash text)
               ON CONFLICT DO NOTHING RETURNING event_id),
             heads AS ({})
             SELECT event_id FROM ins",
            super::chain::upsert_heads_sql(
                2,
                Some("(SELECT count(*) FROM ins) = jsonb_array_length(?1::text::jsonb)")
            )
        )
    });
    let heads = super::chain::heads_json(heads)?;
    let mut written: Vec<String> = Vec::with_capacity(rows.len());
    tx.prepare_cached(sql)?
        .for_each(params![json, heads, seq], |r| {
            written.push(r.get(0)?);
            Ok(true)
        })?;
    if written.len() == rows.len() {
        return Ok(true);
    }
    let mut undo = tx.prepare_cached("DELETE FROM trace_events WHERE event_id = ?1")?;
    for id in written {
        undo.execute(params![id])?;
    }
    Ok(false)
}

impl MessageWriter {
    /// Queue trace events for the group commit; the receiver answers once they are committed
    /// (`Err` with the store's error). Errors: the writer thread is gone.
    pub fn start_events(
        &self,
        events: Vec<TraceEvent>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String> {
        // Written with the batch's other events, before its commit: a failure (on the file
        // or the server) fails the batch.
        self.start_traced(false, move |_| Ok(events))
    }

    /// Write trace events (duplicates by `event_id` are ignored) and wait for the commit.
    pub async fn insert_events(&self, events: Vec<TraceEvent>) -> Result<(), String> {
        self.start_events(events)?
            .await
            .map_err(|_| "the store writer thread stopped".to_string())?
    }
}

impl Store {
    /// The hop timeline of a dossier, oldest first.
    pub fn timeline(&self, ma_ho_so: &str) -> Result<Vec<TimelineRow>, StoreError> {
        self.events_where("t.ma_ho_so = ?1", ma_ho_so)
    }

    /// Every event of one message (its attempts, retries, dead-lettering and replays), oldest
    /// first.
    pub fn message_timeline(&self, message_id: &str) -> Result<Vec<TimelineRow>, StoreError> {
        self.events_where("t.message_id = ?1", message_id)
    }

    /// The events where `cond` (on `t`, with `?1` = `arg`) holds, oldest first.
    fn events_where(&self, cond: &str, arg: &str) -> Result<Vec<TimelineRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT t.at, t.message_id, t.kind, t.from_unit, t.to_unit, t.event, t.component, t.attempt, t.status, t.reason,
                        t.at_ms - (SELECT MIN(f.at_ms) FROM trace_events f WHERE f.message_id = t.message_id)
                 FROM trace_events t WHERE {cond} ORDER BY t.at_ms, t.rowid"
            ))?;
            let rows = st.query_map(params![arg], |r| {
                Ok(TimelineRow {
                    at: r.get(0)?,
                    message_id: r.get(1)?,
                    kind: r.get(2)?,
                    from: r.get(3)?,
                    to: r.get(4)?,
                    event: r.get(5)?,
                    component: r.get(6)?,
                    attempt: r.get(7)?,
                    status: r.get(8)?,
                    reason: r.get(9)?,
                    elapsed_ms: r.get::<_, Option<i64>>(10)?.unwrap_or(0),
                })
            })?;
            rows.collect()
        })
    }

    /// Per-unit counts and latency from the trace (units that appear in it).
    pub fn unit_stats(&self) -> Result<Vec<UnitStats>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT to_unit,
                        COUNT(CASE WHEN event = 'routed' THEN 1 END), COUNT(CASE WHEN event = 'delivered' THEN 1 END), COUNT(CASE WHEN event = 'retried' THEN 1 END), COUNT(CASE WHEN event = 'dead_lettered' THEN 1 END)
                 FROM trace_events WHERE to_unit IS NOT NULL GROUP BY to_unit ORDER BY to_unit",
            )?;
            let mut out: Vec<UnitStats> = st
                .query_map(params![], |r| {
                    Ok(UnitStats {
                        unit: r.get(0)?,
                        routed: r.get::<_, i64>(1)? as u64,
                        delivered: r.get::<_, i64>(2)? as u64,
                        retried: r.get::<_, i64>(3)? as u64,
                        dead_lettered: r.get::<_, i64>(4)? as u64,
                        p50_ms: None,
                        p95_ms: None,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut lat = c.prepare(
                "SELECT t.at_ms - (SELECT MIN(f.at_ms) FROM trace_events f WHERE f.message_id = t.message_id)
                 FROM trace_events t WHERE t.to_unit = ?1 AND t.event = ?2",
            )?;
            for s in &mut out {
                let ev = if s.delivered > 0 { "delivered" } else { "routed" };
                let mut v: Vec<i64> = lat.query_map(params![s.unit, ev], |r| r.get::<_, Option<i64>>(0))?.filter_map(|x| x.ok().flatten()).collect();
                v.sort_unstable();
                s.p50_ms = percentile(&v, 0.50);
                s.p95_ms = percentile(&v, 0.95);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::event::TraceEventKind;

    #[tokio::test]
    async fn events_round_trip_through_the_store() {
        let dir =
            std::env::temp_dir().join(format!("lt-trace-{}", crate::envelope::new_message_id()));
        let path = dir.join("t.db");
        let writer = MessageWriter::start(&path).expect("writer");
        let store = Store::open(&path).expect("store");
        let mut e = TraceEvent::new(TraceEventKind::Received, "router", None).message_id("m1");
        e.ma_ho_so = Some("X-261129-0001".into());
        let mut f = e.clone();
        f.event_id = crate::envelope::new_message_id();
        f.event = TraceEventKind::Routed;
        f.at_ms += 7;
        f.to = Some("U1".into());
        writer
            .insert_events(vec![e.clone(), f, e])
            .await
            .expect("insert");
        let rows = store.timeline("X-261129-0001").expect("timeline");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].event, "routed");
        assert_eq!(rows[1].elapsed_ms, 7);
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }
}
