//! Writing trace events inside the caller's transaction: chained ([`super::chain`]), one
//! statement for a whole batch of them on PostgreSQL. Used by the group commit
//! ([`super::writer`]) and by writes that trace in their own transaction.

use std::borrow::Cow;

use crate::params;
use crate::store::chain::Link;
use crate::store::db::{Backend, Db, DbError};
use crate::trace::event::TraceEvent;

/// Write trace events inside the caller's transaction, chained (`store/chain.rs`: each event
/// carries the hash of the store's and of its dossier's previous event; a repeated event is
/// ignored and does not advance the chain). Used by the group commit for a batch's events
/// ([`crate::store::MessageWriter`]), and by writes that trace inside their own transaction
/// (the tracer component's broker events, `messages resend`).
///
/// On PostgreSQL, where each statement is a round trip under the store's write lock, up to
/// [`MAX_EVENTS_AT_ONCE`] events (a whole batch's) and the chain heads they move go in one
/// statement (`insert_all_in`); when some were stored already, the others still go at once.
/// On SQLite one statement per event and per head.
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
