//! The trace (table `trace_events`): writing events (in the group commit) and the queries
//! behind `lienthong trace` and `/stats`.

use std::collections::HashMap;

use crate::params;

pub use super::trace_write::{MAX_EVENTS_AT_ONCE, insert_events_in};
use crate::trace::event::TraceEvent;
use crate::trace::report::{TimelineRow, UnitStats, percentile};

use super::connection::Store;
use super::db::Db;
use super::error::StoreError;
use super::value::{DbError, param_refs};
use super::writer::MessageWriter;

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
    /// The hop timeline of a dossier, oldest first (index `trace_by_dossier`).
    pub fn timeline(&self, ma_ho_so: &str) -> Result<Vec<TimelineRow>, StoreError> {
        self.with(|c| {
            Ok(timeline_of(events_where(
                c,
                "t.ma_ho_so = ?1",
                &[ma_ho_so],
            )?))
        })
    }

    /// Every event of one message (its attempts, retries, dead-lettering and replays), oldest
    /// first. `dossiers`: the dossier codes the message was seen with (the console passes those
    /// its dead-letter rows name, read from the same body as its trace events'; empty when none
    /// is known).
    ///
    /// The trace keeps no index by message id alone (migration 11, issue 21: it cost a B-tree
    /// leaf per event): the message's events are read under each of `dossiers`
    /// (`trace_by_dossier`), and those that carry no dossier code (an envelope that could not be
    /// read, a replay by someone who may not speak for its sender, a broker dead letter whose
    /// body names no dossier) from `trace_undossiered_by_message`.
    pub fn message_timeline(
        &self,
        message_id: &str,
        dossiers: &[String],
    ) -> Result<Vec<TimelineRow>, StoreError> {
        self.with(|c| {
            let mut rows =
                events_where(c, "t.ma_ho_so IS NULL AND t.message_id = ?1", &[message_id])?;
            let mut codes: Vec<&str> = dossiers.iter().map(String::as_str).collect();
            codes.sort_unstable();
            codes.dedup();
            for d in codes {
                rows.extend(events_where(
                    c,
                    "t.ma_ho_so = ?1 AND t.message_id = ?2",
                    &[d, message_id],
                )?);
            }
            Ok(timeline_of(rows))
        })
    }

    /// Per-unit counts and latency from the trace (units that appear in it). Both queries read
    /// the whole trace, as before migration 11; the latency's query joins each message's first
    /// event found by grouping the trace by message id (a sort of every message id traced)
    /// instead of one lookup per row in the index by message id.
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
            // A unit's latency: from each message's first event to its `delivered` (or, for a
            // unit reached over AMQP, its `routed`).
            let mut lat = c.prepare(
                "SELECT t.to_unit, t.event, t.at_ms - f.first_ms
                 FROM trace_events t
                 JOIN (SELECT message_id, MIN(at_ms) AS first_ms FROM trace_events
                       WHERE message_id IS NOT NULL GROUP BY message_id) f
                   ON f.message_id = t.message_id
                 WHERE t.to_unit IS NOT NULL AND t.event IN ('routed', 'delivered')",
            )?;
            let mut by_unit: HashMap<(String, String), Vec<i64>> = HashMap::new();
            for row in lat.query_map(params![], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })? {
                let (unit, event, ms) = row?;
                by_unit.entry((unit, event)).or_default().push(ms);
            }
            for s in &mut out {
                let ev = if s.delivered > 0 { "delivered" } else { "routed" };
                if let Some(v) = by_unit.get_mut(&(s.unit.clone(), ev.to_string())) {
                    v.sort_unstable();
                    s.p50_ms = percentile(v, 0.50);
                    s.p95_ms = percentile(v, 0.95);
                }
            }
            Ok(out)
        })
    }
}

/// One event read for a timeline: its time (ms since the epoch) and row number, which order
/// the timeline, and the row without its `elapsed_ms` yet.
type Read = (i64, i64, TimelineRow);

/// The events where `cond` (on `t`, with `?1`, `?2`… = `args`) holds, in no order.
fn events_where(c: &mut Db, cond: &str, args: &[&str]) -> Result<Vec<Read>, DbError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT t.at_ms, t.rowid, t.at, t.message_id, t.kind, t.from_unit, t.to_unit, t.event, t.component, t.attempt, t.status, t.reason
         FROM trace_events t WHERE {cond}"
    ))?;
    let rows = st.query_map(&param_refs(args), |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            TimelineRow {
                at: r.get(2)?,
                message_id: r.get(3)?,
                kind: r.get(4)?,
                from: r.get(5)?,
                to: r.get(6)?,
                event: r.get(7)?,
                component: r.get(8)?,
                attempt: r.get(9)?,
                status: r.get(10)?,
                reason: r.get(11)?,
                elapsed_ms: 0,
            },
        ))
    })?;
    rows.collect()
}

/// A timeline from the events read: oldest first (time, then the order written), each with
/// its `elapsed_ms` since its message's first event among them (a message's first event,
/// its `received` or its acceptance, carries the dossier code as the later ones do).
fn timeline_of(mut rows: Vec<Read>) -> Vec<TimelineRow> {
    rows.sort_by_key(|(at, rowid, _)| (*at, *rowid));
    let mut first: HashMap<String, i64> = HashMap::new();
    rows.into_iter()
        .map(|(at, _, mut row)| {
            if let Some(m) = &row.message_id {
                row.elapsed_ms = at - *first.entry(m.clone()).or_insert(at);
            }
            row
        })
        .collect()
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

    /// An event of `message_id` under `ma_ho_so` (none: without a dossier code), at `at_ms`.
    fn event(
        kind: TraceEventKind,
        message_id: &str,
        ma_ho_so: Option<&str>,
        at_ms: i64,
    ) -> TraceEvent {
        let mut e = TraceEvent::new(kind, "router", None).message_id(message_id);
        e.ma_ho_so = ma_ho_so.map(str::to_string);
        e.at_ms = at_ms;
        e
    }

    /// Without an index by message id (migration 11), a message's timeline still has every
    /// event of it: those under its dossier codes and those without one, oldest first, and
    /// none of another message; the per-unit latency still runs from each message's first
    /// event. The timelines' lookups read through indexes (SQLite's plan).
    #[tokio::test]
    async fn a_message_timeline_reads_its_dossiers_and_its_undossiered_events() {
        use TraceEventKind::{DeadLettered, Delivered, Received, Replayed, Routed};
        let dir =
            std::env::temp_dir().join(format!("lt-trace-{}", crate::envelope::new_message_id()));
        let path = dir.join("t.db");
        let writer = MessageWriter::start(&path).expect("writer");
        let store = Store::open(&path).expect("store");
        let mut routed = event(Routed, "m1", Some("D-1"), 1_005);
        routed.to = Some("U1".into());
        let mut delivered = event(Delivered, "m2", Some("D-2"), 2_030);
        delivered.to = Some("U2".into());
        writer
            .insert_events(vec![
                event(Received, "m1", Some("D-1"), 1_000),
                routed,
                event(DeadLettered, "m1", None, 1_100),
                event(Replayed, "m1", Some("D-1"), 1_200),
                event(Received, "m2", Some("D-2"), 2_000),
                delivered,
                event(Received, "m3", None, 3_000),
            ])
            .await
            .expect("insert");
        let events = |rows: Vec<TimelineRow>| -> Vec<(String, i64)> {
            rows.into_iter().map(|r| (r.event, r.elapsed_ms)).collect()
        };
        let m1 = store
            .message_timeline("m1", &["D-1".into(), "D-1".into()])
            .expect("m1");
        assert_eq!(
            events(m1),
            [
                ("received".to_string(), 0),
                ("routed".to_string(), 5),
                ("dead_lettered".to_string(), 100),
                ("replayed".to_string(), 200)
            ]
        );
        // With no dossier code known, only its events without one.
        let bare = store.message_timeline("m1", &[]).expect("bare");
        assert_eq!(events(bare), [("dead_lettered".to_string(), 0)]);
        let m3 = store.message_timeline("m3", &[]).expect("m3");
        assert_eq!(events(m3), [("received".to_string(), 0)]);
        // The dossier's timeline: its events, each timed from its message's first.
        let d1 = store.timeline("D-1").expect("d1");
        assert_eq!(
            d1.iter().map(|r| r.elapsed_ms).collect::<Vec<_>>(),
            [0, 5, 200]
        );
        // Per unit: U1 reached over AMQP (routed after 5 ms), U2 by an adapter (30 ms).
        let stats = store.unit_stats().expect("stats");
        let of = |u: &str| {
            stats
                .iter()
                .find(|s| s.unit == u)
                .map(|s| (s.routed, s.delivered, s.p50_ms))
        };
        assert_eq!(of("U1"), Some((1, 0, Some(5))));
        assert_eq!(of("U2"), Some((0, 1, Some(30))));
        // Every lookup goes through an index: no statement scans the trace.
        for (cond, args) in [
            ("t.ma_ho_so = ?1", vec!["D-1"]),
            ("t.ma_ho_so IS NULL AND t.message_id = ?1", vec!["m1"]),
            ("t.ma_ho_so = ?1 AND t.message_id = ?2", vec!["D-1", "m1"]),
        ] {
            let plan: Vec<String> = store
                .with(|c| {
                    let mut st = c.prepare(&format!(
                        "EXPLAIN QUERY PLAN SELECT t.at_ms FROM trace_events t WHERE {cond}"
                    ))?;
                    let rows = st.query_map(&crate::store::value::param_refs(&args), |r| {
                        r.get::<_, String>(3)
                    })?;
                    rows.collect()
                })
                .expect("plan");
            assert!(
                plan.iter()
                    .all(|p| p.contains("USING INDEX") || p.contains("USING COVERING INDEX")),
                "{cond}: {plan:?}"
            );
        }
        let indexes: Vec<String> = store
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'trace_events' ORDER BY name",
                )?;
                let rows = st.query_map(params![], |r| r.get::<_, String>(0))?;
                rows.collect()
            })
            .expect("indexes");
        assert!(
            !indexes.iter().any(|i| i == "trace_by_message"),
            "{indexes:?}"
        );
        assert!(
            indexes.iter().any(|i| i == "trace_undossiered_by_message"),
            "{indexes:?}"
        );
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }
}
