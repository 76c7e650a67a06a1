//! Trace events as plain data: what happened to a message ([`TraceEventKind`]), one event
//! ([`TraceEvent`], the JSON body of a trace message), and how a trace message is read. The
//! store writes them; the [`super::tracer::Tracer`] hands them to it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceEventKind {
    /// A component took the message from a queue or the HTTP API.
    Received,
    /// It passed the envelope and routing checks. Written by the router of releases before
    /// issue 21's trace cut; now its `routed` (or what else follows `received`) says so, and
    /// this kind is only read from older trace rows.
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
    /// Put back from the dead-letter queue by an operator (the reason says who and from
    /// where: `by console:<user>`, `by cli:<user>`); the router takes it as new.
    Replayed,
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
            TraceEventKind::Replayed => "replayed",
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
        let mut r = r.into();
        // A reason may quote an agency's answer; PostgreSQL's text cannot hold U+0000, and the
        // event is hashed as stored (the trace's chain), so it is replaced here, before both.
        if r.contains('\0') {
            r = r.replace('\0', "\u{fffd}");
        }
        self.reason = Some(r);
        self
    }

    /// Set the message id (when there is no envelope).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }
}

/// Read a trace message: one event (an object) or a batch (an array of events).
pub fn parse_trace_message(body: &[u8]) -> Result<Vec<TraceEvent>, serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body),
        _ => serde_json::from_slice::<TraceEvent>(body).map(|e| vec![e]),
    }
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
}
