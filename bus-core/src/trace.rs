//! The trace: one event per step a message takes (received, validated, routed, delivered,
//! retried, failed, dead-lettered, status), published to the trace exchange by every component
//! and written by the tracer into the store; and the queries behind `lienthong trace` and
//! `lienthong dead-letters`.

use std::fmt;

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::amqp::{PublishError, Publisher};
use crate::envelope::Envelope;
use crate::store::{Store, StoreError};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceEventKind {
    /// A component took the message from a queue or the HTTP API.
    Received,
    /// It passed the envelope and routing checks.
    Validated,
    /// The router put it on the receiver's queue (confirmed).
    Routed,
    /// An adapter handed it to the agency's system (receipt in `reason`).
    Delivered,
    /// A transient failure; another attempt follows.
    Retried,
    /// A failure (the reason says which).
    Failed,
    /// Sent to the dead-letter queue.
    DeadLettered,
    /// A status or result came back from a unit.
    Status,
    /// The process manager advanced the dossier's route (a step handed over, done, paused,
    /// resumed, refused, stopped, cancelled; the reason says which and how timely).
    Step,
    /// A step or dossier is near (`due_soon`) or past (`overdue`) its due time.
    Overdue,
    /// Something waits on an operator: a message of the dossier was dead-lettered (`blocked`),
    /// or an agency's answers cannot be read (`unreadable_answers`); the reason says what.
    Alert,
}

impl TraceEventKind {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceEventKind::Received => "received",
            TraceEventKind::Validated => "validated",
            TraceEventKind::Routed => "routed",
            TraceEventKind::Delivered => "delivered",
            TraceEventKind::Retried => "retried",
            TraceEventKind::Failed => "failed",
            TraceEventKind::DeadLettered => "dead_lettered",
            TraceEventKind::Status => "status",
            TraceEventKind::Step => "step",
            TraceEventKind::Overdue => "overdue",
            TraceEventKind::Alert => "alert",
        }
    }
}

impl fmt::Display for TraceEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trace event (the JSON body of a message on the trace exchange).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// UUIDv7 of the event (the store ignores a duplicate).
    pub event_id: String,
    /// When, RFC 3339 +07:00 with ms.
    pub at: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Dossier code, when known.
    pub ma_ho_so: Option<String>,
    /// Message id, when known.
    pub message_id: Option<String>,
    /// Correlation id, when known.
    pub correlation_id: Option<String>,
    /// Message kind, when known.
    pub kind: Option<String>,
    /// What happened.
    pub event: TraceEventKind,
    /// Which component (`router`, `http`, `adapter:CA.H48`, `tracer`).
    pub component: String,
    /// From unit.
    pub from: Option<String>,
    /// To unit.
    pub to: Option<String>,
    /// Attempt number (1 = first).
    pub attempt: Option<u32>,
    /// TrangThaiHoSo carried, if any.
    pub status: Option<u8>,
    /// Reason or detail.
    pub reason: Option<String>,
}

impl TraceEvent {
    /// An event now, about `env` (when given).
    pub fn new(event: TraceEventKind, component: &str, env: Option<&Envelope>) -> Self {
        // One clock read for both: two could straddle a millisecond and order the timeline
        // (by `at_ms`) against its own `at` strings.
        let now = chrono::Utc::now();
        TraceEvent {
            event_id: crate::envelope::new_message_id(),
            at: crate::clock::to_rfc3339(now),
            at_ms: now.timestamp_millis(),
            ma_ho_so: env.map(|e| e.ma_ho_so.clone()),
            message_id: env.map(|e| e.message_id.clone()),
            correlation_id: env.map(|e| e.correlation_id.clone()),
            kind: env.map(|e| e.kind.0.clone()),
            event,
            component: component.to_string(),
            from: env.map(|e| e.sender.clone()),
            to: env.and_then(|e| e.receiver.clone()),
            attempt: None,
            status: env.and_then(|e| e.status.map(|s| s.0)),
            reason: None,
        }
    }

    /// Set the attempt number.
    pub fn attempt(mut self, n: u32) -> Self {
        self.attempt = Some(n);
        self
    }

    /// Set the reason.
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }

    /// Set the message id (when there is no envelope).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }
}

/// Publishes trace events to `<prefix>.trace` on a confirm channel, batched: the events that
/// arrive while the previous batch is being written go out together as one message (a JSON
/// array, at most [`TRACE_BATCH_MAX`] events), so a busy router sends one trace message for many
/// hops instead of one per event. An idle tracer sends each event at once (no linger). Every
/// event's [`TracePending`] resolves with its batch's publisher confirm.
#[derive(Clone)]
pub struct Tracer {
    sink: Sink,
}

#[derive(Clone)]
enum Sink {
    /// Batches published to the trace exchange (the tracer component stores them).
    Broker(
        tokio::sync::mpsc::UnboundedSender<(
            Vec<TraceEvent>,
            tokio::sync::oneshot::Sender<Confirmed>,
        )>,
    ),
    /// Straight into the store, in the process's group commit ([`Tracer::to_store`]).
    Store(crate::store::MessageWriter),
}

/// At most this many events in one trace message.
pub const TRACE_BATCH_MAX: usize = 256;

type Confirmed = Result<(), String>;

/// A trace event on its way; [`TracePending::wait`] for its publisher confirm.
pub struct TracePending(tokio::sync::oneshot::Receiver<Confirmed>);

impl TracePending {
    /// Wait for the confirm of the batch that carries the event.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PublishError::Batch(e)),
            Err(_) => Err(PublishError::Batch("the trace publisher stopped".into())),
        }
    }
}

impl Tracer {
    /// A tracer publishing on `publisher` to `exchange`. Spawns its batching task on the current
    /// Tokio runtime (it ends when the last clone of the tracer is dropped).
    pub fn new(publisher: Publisher, exchange: String) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch_publisher(publisher, exchange, rx));
        Tracer {
            sink: Sink::Broker(tx),
        }
    }

    /// A tracer writing straight into the store through `writer`'s group commit (no trace
    /// message through the broker): an event's [`TracePending`] resolves when its transaction
    /// has committed. For components that share the store file with the tracer (`[store]
    /// trace_direct`).
    pub fn to_store(writer: crate::store::MessageWriter) -> Self {
        Tracer {
            sink: Sink::Store(writer),
        }
    }

    /// Put an event on the wire; await the returned [`TracePending`] before acking the delivery
    /// the event describes, so that an acked message always has its trace.
    pub async fn start(&self, ev: &TraceEvent) -> Result<TracePending, PublishError> {
        self.start_all(vec![ev.clone()])
    }

    /// Put several events on the wire in one batch (they are never split across messages);
    /// the pending resolves with that batch's confirm.
    pub fn start_all(&self, events: Vec<TraceEvent>) -> Result<TracePending, PublishError> {
        match &self.sink {
            Sink::Broker(tx) => {
                let (done, wait) = tokio::sync::oneshot::channel();
                tx.send((events, done))
                    .map_err(|_| PublishError::Batch("the trace publisher stopped".into()))?;
                Ok(TracePending(wait))
            }
            Sink::Store(writer) => writer
                .start_events(events)
                .map(TracePending)
                .map_err(PublishError::Batch),
        }
    }

    /// Publish an event and wait for its confirm.
    pub async fn emit(&self, ev: &TraceEvent) -> Result<(), PublishError> {
        self.start(ev).await?.wait().await
    }

    /// Publish events together and wait for their confirm.
    pub async fn emit_all(&self, events: Vec<TraceEvent>) -> Result<(), PublishError> {
        self.start_all(events)?.wait().await
    }

    /// Run a store `write` and trace `events`, and wait for both: the state change and the
    /// trace of it. A tracer that writes straight into the store ([`Tracer::to_store`]) puts
    /// both in one savepoint of one group commit of its own writer (all or nothing, one commit
    /// instead of two; `writer` is then not used: a process has one, `Ctx::writer`, which its
    /// tracer writes through). Otherwise the write commits through `writer` first and the
    /// events are published after it, so that no event tells of a write that failed. Returns
    /// the write's value. Errors (as text): the write or its commit failed, or the trace was
    /// not confirmed; the write has then committed and the events may be lost, so callers use
    /// it only for idempotent writes and retry the whole step.
    pub async fn emit_with<T: Send + 'static>(
        &self,
        writer: &crate::store::MessageWriter,
        events: Vec<TraceEvent>,
        write: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, String> {
        match &self.sink {
            Sink::Store(own) => {
                own.transact(move |c| {
                    let v = write(c)?;
                    insert_events_in(c, &events)?;
                    Ok(v)
                })
                .await
            }
            Sink::Broker(_) => {
                let v = writer.transact(write).await?;
                self.emit_all(events).await.map_err(|e| e.to_string())?;
                Ok(v)
            }
        }
    }
}

/// The batching task behind a [`Tracer`].
async fn batch_publisher(
    publisher: Publisher,
    exchange: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(
        Vec<TraceEvent>,
        tokio::sync::oneshot::Sender<Confirmed>,
    )>,
) {
    while let Some((first, w)) = rx.recv().await {
        let mut events = first;
        let mut waiters = vec![w];
        // Take what is queued; under load, let the other tasks run a few times to fill the batch
        // (no timer: an idle tracer adds no latency).
        for round in 0..4 {
            let before = events.len();
            while events.len() < TRACE_BATCH_MAX {
                match rx.try_recv() {
                    Ok((more, w)) => {
                        events.extend(more);
                        waiters.push(w);
                    }
                    Err(_) => break,
                }
            }
            if round == 0 && events.len() == before || events.len() >= TRACE_BATCH_MAX {
                break;
            }
            tokio::task::yield_now().await;
        }
        let body = if events.len() == 1 {
            serde_json::to_vec(&events[0])
        } else {
            serde_json::to_vec(&events)
        }
        .unwrap_or_default();
        let props = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(events[0].event_id.clone().into());
        match publisher.start(&exchange, "", &body, props, false).await {
            Ok(pending) => {
                // The confirm is awaited apart, so the next batch goes out meanwhile.
                tokio::spawn(async move {
                    let r = pending.wait().await.map_err(|e| e.to_string());
                    for w in waiters {
                        let _ = w.send(r.clone());
                    }
                });
            }
            Err(e) => {
                let r: Confirmed = Err(e.to_string());
                for w in waiters {
                    let _ = w.send(r.clone());
                }
            }
        }
    }
}

/// Read a trace message: one event (an object) or a batch (an array of events).
pub fn parse_trace_message(body: &[u8]) -> Result<Vec<TraceEvent>, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body),
        _ => serde_json::from_slice::<TraceEvent>(body).map(|e| vec![e]),
    }
}

/// One row of a dossier's hop timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineRow {
    /// When (RFC 3339 +07:00).
    pub at: String,
    /// Message id.
    pub message_id: Option<String>,
    /// Message kind.
    pub kind: Option<String>,
    /// From unit.
    pub from: Option<String>,
    /// To unit.
    pub to: Option<String>,
    /// Event.
    pub event: String,
    /// Component.
    pub component: String,
    /// Attempt.
    pub attempt: Option<u32>,
    /// Status carried.
    pub status: Option<u8>,
    /// Milliseconds since this message's first event (its entry into the bus).
    pub elapsed_ms: i64,
    /// Reason.
    pub reason: Option<String>,
}

/// One dead-lettered message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// When.
    pub at: String,
    /// Message id.
    pub message_id: String,
    /// Dossier code, if the body had one.
    pub ma_ho_so: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Sender.
    pub sender: Option<String>,
    /// Receiver.
    pub receiver: Option<String>,
    /// Stable reason code (`schema-invalid`, `agency-refused`, `broker`…).
    pub reason_code: String,
    /// Human-readable reason.
    pub reason: String,
    /// Component that dead-lettered it.
    pub component: Option<String>,
    /// Queue it came from.
    pub queue: Option<String>,
    /// Attempts made.
    pub attempts: Option<u32>,
}

/// Per-unit counts from the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStats {
    /// Unit code.
    pub unit: String,
    /// Messages routed to its queue.
    pub routed: u64,
    /// Messages its adapter delivered to its system.
    pub delivered: u64,
    /// Retries of deliveries to it.
    pub retried: u64,
    /// Messages to it that were dead-lettered.
    pub dead_lettered: u64,
    /// Median ms from entry into the bus to routed (AMQP units) or delivered (adapter units).
    pub p50_ms: Option<i64>,
    /// 95th percentile of the same.
    pub p95_ms: Option<i64>,
}

impl Store {
    /// Insert trace events (duplicates by `event_id` are ignored), in one transaction.
    pub fn insert_events(&self, events: &[TraceEvent]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            insert_events_in(&tx, events)?;
            tx.commit()
        })
    }

    /// Record dead-lettered messages.
    pub fn insert_dead_letters(&self, rows: &[(i64, DeadLetterRow)]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO dead_letters (message_id, at_ms, at, ma_ho_so, kind, sender, receiver, reason_code, reason, component, queue, attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                for (at_ms, r) in rows {
                    st.execute(params![
                        r.message_id, at_ms, r.at, r.ma_ho_so, r.kind, r.sender, r.receiver, r.reason_code, r.reason, r.component, r.queue, r.attempts
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// The hop timeline of a dossier, oldest first.
    pub fn timeline(&self, ma_ho_so: &str) -> Result<Vec<TimelineRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT t.at, t.message_id, t.kind, t.from_unit, t.to_unit, t.event, t.component, t.attempt, t.status, t.reason,
                        t.at_ms - (SELECT MIN(f.at_ms) FROM trace_events f WHERE f.message_id = t.message_id)
                 FROM trace_events t WHERE t.ma_ho_so = ?1 ORDER BY t.at_ms, t.rowid",
            )?;
            let rows = st.query_map(params![ma_ho_so], |r| {
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

    /// Dead-lettered messages, newest first.
    pub fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT at, message_id, ma_ho_so, kind, sender, receiver, reason_code, reason, component, queue, attempts
                 FROM dead_letters ORDER BY at_ms DESC LIMIT ?1",
            )?;
            let rows = st.query_map(params![limit], |r| {
                Ok(DeadLetterRow {
                    at: r.get(0)?,
                    message_id: r.get(1)?,
                    ma_ho_so: r.get(2)?,
                    kind: r.get(3)?,
                    sender: r.get(4)?,
                    receiver: r.get(5)?,
                    reason_code: r.get(6)?,
                    reason: r.get(7)?,
                    component: r.get(8)?,
                    queue: r.get(9)?,
                    attempts: r.get(10)?,
                })
            })?;
            rows.collect()
        })
    }

    /// How many dead letters the log holds.
    pub fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
        })
    }

    /// Per-unit counts and latency from the trace (units that appear in it).
    pub fn unit_stats(&self) -> Result<Vec<UnitStats>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT to_unit,
                        SUM(event = 'routed'), SUM(event = 'delivered'), SUM(event = 'retried'), SUM(event = 'dead_lettered')
                 FROM trace_events WHERE to_unit IS NOT NULL GROUP BY to_unit ORDER BY to_unit",
            )?;
            let mut out: Vec<UnitStats> = st
                .query_map([], |r| {
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

/// Insert trace events inside an open transaction or savepoint (`event_id` is the key: a
/// repeated event is ignored). Used by [`Store::insert_events`], the group commit
/// ([`crate::store::MessageWriter`]) and [`Tracer::emit_with`].
pub fn insert_events_in(
    tx: &rusqlite::Connection,
    events: &[TraceEvent],
) -> Result<(), rusqlite::Error> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO trace_events (event_id, at_ms, at, ma_ho_so, message_id, correlation_id, kind, event, component, from_unit, to_unit, attempt, status, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for e in events {
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
            e.reason
        ])?;
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Render a timeline as a table for people.
pub fn render_timeline(ma_ho_so: &str, rows: &[TimelineRow]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Trace of dossier {ma_ho_so} ({} events)", rows.len());
    let _ = writeln!(
        s,
        "{:<29}  {:<16} {:<35} {:<14} {:>3} {:>8}  reason",
        "time", "kind", "from → to", "event", "try", "ms"
    );
    for r in rows {
        let hop = format!(
            "{} → {}",
            r.from.as_deref().unwrap_or("-"),
            r.to.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            s,
            "{:<29}  {:<16} {:<35} {:<14} {:>3} {:>8}  {}",
            r.at,
            r.kind.as_deref().unwrap_or("-"),
            hop,
            r.event,
            r.attempt.map(|a| a.to_string()).unwrap_or_default(),
            r.elapsed_ms,
            r.reason.as_deref().unwrap_or("")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_time_is_one_clock_reading() {
        // Two readings straddled a millisecond now and then, and the timeline (ordered by
        // `at_ms`) then disagreed with its own `at` strings.
        for _ in 0..20_000 {
            let e = TraceEvent::new(TraceEventKind::Received, "test", None);
            let at = chrono::DateTime::parse_from_rfc3339(&e.at).expect("rfc 3339");
            assert_eq!(at.timestamp_millis(), e.at_ms, "{}", e.at);
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 0.5), Some(5));
        assert_eq!(percentile(&v, 0.95), Some(10));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn events_round_trip_through_the_store() {
        let dir =
            std::env::temp_dir().join(format!("lt-trace-{}", crate::envelope::new_message_id()));
        let store = Store::open(&dir.join("t.db")).expect("store");
        let mut e = TraceEvent::new(TraceEventKind::Received, "router", None).message_id("m1");
        e.ma_ho_so = Some("X-261129-0001".into());
        let mut f = e.clone();
        f.event_id = crate::envelope::new_message_id();
        f.event = TraceEventKind::Routed;
        f.at_ms += 7;
        f.to = Some("U1".into());
        store.insert_events(&[e.clone(), f, e]).expect("insert");
        let rows = store.timeline("X-261129-0001").expect("timeline");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].event, "routed");
        assert_eq!(rows[1].elapsed_ms, 7);
        let _ = std::fs::remove_dir_all(dir);
    }
}
