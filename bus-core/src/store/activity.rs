//! Per-unit activity over the last hour and day, read from the trace for the console's units
//! page: messages routed, delivered, retried and dead-lettered, delivery latency percentiles,
//! and the last success and last error of deliveries to each unit.

use crate::store::db::DbError;
use std::collections::{BTreeMap, HashMap};

use crate::params;
use crate::store::db::{Db, OptionalExtension};

use crate::trace::report::percentile;

use super::connection::Store;
use super::error::StoreError;

/// One hour and one day, ms.
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// How far out of order (by `at_ms`) trace rows may be written, ms: the tracer writes events it
/// reads from the trace exchange a little after other components write theirs directly.
const DISORDER_MS: i64 = 15 * 60_000;

/// Counts in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Routed to the unit's queue.
    pub routed: u64,
    /// Delivered to its system by an adapter.
    pub delivered: u64,
    /// Delivery attempts that failed and were retried.
    pub retried: u64,
    /// Dead-lettered on the way to it.
    pub dead_lettered: u64,
}

/// The last time something went wrong on the way to a unit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastError {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// `retried`, `failed` or `dead_lettered`.
    pub event: String,
    /// What the adapter or the router said.
    pub reason: String,
}

/// A unit's activity in the last hour and day (to `now_ms`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitActivity {
    /// Unit code.
    pub unit: String,
    /// The last hour.
    pub hour: Counts,
    /// The last 24 hours.
    pub day: Counts,
    /// Median time from a message's first event to its delivery (or routing, for a unit
    /// without an adapter) over the day, ms.
    pub p50_ms: Option<i64>,
    /// 95th percentile of the same, ms.
    pub p95_ms: Option<i64>,
    /// The last delivery to its system in the day, ms since the epoch.
    pub last_success_ms: Option<i64>,
    /// The last message routed to its queue in the day, ms since the epoch (the success of a
    /// unit that reads its queue itself, over AMQP: the bus sees no delivery to its system).
    pub last_routed_ms: Option<i64>,
    /// The last retry, failure or dead letter in the day that says something about the unit (a
    /// dead letter the sender caused, [`crate::envelope::RejectCode::blames_receiver`], does
    /// not).
    pub last_error: Option<LastError>,
}

/// Whether a dead letter's reason (`<code>: <detail>`, [`crate::envelope::Rejection::reason`])
/// says something about its receiver; a reason without a known code does.
fn blames_receiver(reason: &str) -> bool {
    let code = reason.split(':').next().unwrap_or_default().trim();
    crate::envelope::RejectCode::parse(code).is_none_or(|c| c.blames_receiver())
}

/// The first rowid of `trace_events` whose `at_ms` is at or after `at_ms` (the table's rowids
/// grow with time, give or take [`DISORDER_MS`]), found by bisection: a time window is read
/// without an index on `at_ms`, which every trace write would have to maintain.
fn first_rowid_since(c: &Db, at_ms: i64) -> Result<i64, DbError> {
    let bounds: (Option<i64>, Option<i64>) = c.query_row(
        "SELECT MIN(rowid), MAX(rowid) FROM trace_events",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(mut lo), Some(max)) = bounds else {
        return Ok(0);
    };
    let mut hi = max + 1;
    let mut at = c.prepare_cached(
        "SELECT at_ms FROM trace_events WHERE rowid >= ?1 ORDER BY rowid LIMIT 1",
    )?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found: Option<i64> = at.query_row(params![mid], |r| r.get(0)).optional()?;
        match found {
            Some(t) if t < at_ms => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

impl Store {
    /// Every unit's activity in the hour and the day before `now_ms`, by unit code (units with
    /// no event in the day are absent).
    pub fn unit_activity(&self, now_ms: i64) -> Result<Vec<UnitActivity>, StoreError> {
        let (hour_start, day_start) = (now_ms - HOUR_MS, now_ms - DAY_MS);
        self.with(|c| {
            let from = first_rowid_since(c, day_start - DISORDER_MS)?;
            let mut st = c.prepare(
                "SELECT message_id, to_unit, event, at_ms, reason FROM trace_events
                 WHERE rowid >= ?1 AND at_ms >= ?2 ORDER BY rowid",
            )?;
            let mut first_seen: HashMap<String, i64> = HashMap::new();
            let mut units: BTreeMap<String, UnitActivity> = BTreeMap::new();
            let mut latency: HashMap<String, (Vec<i64>, Vec<i64>)> = HashMap::new();
            let mut rows = st.query(params![from, day_start])?;
            while let Some(r) = rows.next()? {
                let message: Option<String> = r.get(0)?;
                let to: Option<String> = r.get(1)?;
                let event: String = r.get(2)?;
                let at: i64 = r.get(3)?;
                let first = message.map(|m| *first_seen.entry(m).or_insert(at));
                let Some(to) = to else { continue };
                let u = units.entry(to.clone()).or_insert_with(|| UnitActivity {
                    unit: to.clone(),
                    hour: Counts::default(),
                    day: Counts::default(),
                    p50_ms: None,
                    p95_ms: None,
                    last_success_ms: None,
                    last_routed_ms: None,
                    last_error: None,
                });
                let bump = |c: &mut Counts| match event.as_str() {
                    "routed" => c.routed += 1,
                    "delivered" => c.delivered += 1,
                    "retried" => c.retried += 1,
                    "dead_lettered" => c.dead_lettered += 1,
                    _ => {}
                };
                bump(&mut u.day);
                if at >= hour_start {
                    bump(&mut u.hour);
                }
                // A message first seen at this very event began before the window: no latency.
                let elapsed = first.filter(|f| *f < at).map(|f| at - f);
                match event.as_str() {
                    "delivered" => {
                        if u.last_success_ms.is_none_or(|l| at >= l) {
                            u.last_success_ms = Some(at);
                        }
                        if let Some(e) = elapsed {
                            latency.entry(to).or_default().0.push(e);
                        }
                    }
                    "routed" => {
                        if u.last_routed_ms.is_none_or(|l| at >= l) {
                            u.last_routed_ms = Some(at);
                        }
                        if let Some(e) = elapsed {
                            latency.entry(to).or_default().1.push(e);
                        }
                    }
                    "retried" | "failed" | "dead_lettered"
                        if u.last_error.as_ref().is_none_or(|l| at >= l.at_ms) =>
                    {
                        let reason = r.get::<_, Option<String>>(4)?.unwrap_or_default();
                        if event == "dead_lettered" && !blames_receiver(&reason) {
                            continue;
                        }
                        u.last_error = Some(LastError {
                            at_ms: at,
                            event,
                            reason,
                        });
                    }
                    _ => {}
                }
            }
            for (unit, (delivered, routed)) in latency {
                let Some(u) = units.get_mut(&unit) else {
                    continue;
                };
                let mut v = if delivered.is_empty() {
                    routed
                } else {
                    delivered
                };
                v.sort_unstable();
                u.p50_ms = percentile(&v, 0.50);
                u.p95_ms = percentile(&v, 0.95);
            }
            Ok(units.into_values().collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageWriter;
    use crate::trace::{TraceEvent, TraceEventKind};

    fn ev(kind: TraceEventKind, message: &str, to: &str, at_ms: i64) -> TraceEvent {
        let mut e = TraceEvent::new(kind, "test", None).message_id(message);
        e.to = Some(to.into());
        e.at_ms = at_ms;
        e
    }

    #[tokio::test]
    async fn the_hour_and_the_day_are_counted_apart_and_the_last_error_and_success_are_found() {
        let dir =
            std::env::temp_dir().join(format!("lt-activity-{}", crate::envelope::new_message_id()));
        let path = dir.join("store.db");
        let writer = MessageWriter::start(&path).expect("writer");
        let now = 1_800_000_000_000_i64;
        let events = vec![
            // Two days ago: outside every window.
            ev(TraceEventKind::Routed, "old", "A", now - 2 * DAY_MS),
            ev(TraceEventKind::Delivered, "old", "A", now - 2 * DAY_MS + 5),
            // Three hours ago: in the day, not the hour; delivered after 200 ms.
            ev(TraceEventKind::Routed, "m1", "A", now - 3 * HOUR_MS),
            ev(
                TraceEventKind::Delivered,
                "m1",
                "A",
                now - 3 * HOUR_MS + 200,
            ),
            // Ten minutes ago: retried, then dead-lettered.
            ev(TraceEventKind::Routed, "m2", "A", now - 600_000),
            ev(TraceEventKind::Retried, "m2", "A", now - 590_000).reason("HTTP 503"),
            ev(TraceEventKind::DeadLettered, "m2", "A", now - 580_000).reason("retries-exhausted"),
            ev(TraceEventKind::Routed, "m3", "B", now - 1000),
            // A message to B its sender got wrong: not B's error.
            ev(TraceEventKind::DeadLettered, "m4", "B", now - 500)
                .reason("sender-mismatch: user x may not send as A"),
        ];
        writer.insert_events(events).await.expect("events");
        let store = Store::open(&path).expect("store");
        let got = store.unit_activity(now).expect("activity");
        assert_eq!(got.len(), 2);
        let a = &got[0];
        assert_eq!(a.unit, "A");
        assert_eq!(
            a.day,
            Counts {
                routed: 2,
                delivered: 1,
                retried: 1,
                dead_lettered: 1
            }
        );
        assert_eq!(
            a.hour,
            Counts {
                routed: 1,
                delivered: 0,
                retried: 1,
                dead_lettered: 1
            }
        );
        assert_eq!(a.p50_ms, Some(200));
        assert_eq!(a.last_success_ms, Some(now - 3 * HOUR_MS + 200));
        let e = a.last_error.as_ref().expect("error");
        assert_eq!(
            (e.event.as_str(), e.reason.as_str()),
            ("dead_lettered", "retries-exhausted")
        );
        assert_eq!(got[1].hour.routed, 1);
        assert_eq!(got[1].last_routed_ms, Some(now - 1000));
        assert_eq!(
            got[1].last_error, None,
            "the sender's mistake is not B's error"
        );
        assert_eq!(got[1].hour.dead_lettered, 1, "but it is counted");
        // The bisection lands on the first row of the window.
        let first = store
            .with(|c| first_rowid_since(c, now - DAY_MS))
            .expect("rowid");
        assert_eq!(first, 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
