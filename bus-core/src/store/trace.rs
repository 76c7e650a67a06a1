//! The trace (table `trace_events`): writing events (in the group commit) and the queries
//! behind `lienthong trace` and `/stats`.

use crate::params;

pub use super::trace_write::{MAX_EVENTS_AT_ONCE, insert_events_in};
use crate::trace::event::TraceEvent;
use crate::trace::report::{TimelineRow, UnitStats, percentile};

use super::connection::Store;
use super::error::StoreError;
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
