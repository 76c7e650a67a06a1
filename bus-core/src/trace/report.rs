//! What the trace's queries return (a dossier's timeline, the dead-letter log, per-unit
//! counts) and how a timeline is shown to people. Plain data: the store fills them.

use serde::{Deserialize, Serialize};

/// One row of a dossier's hop timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Milliseconds since this message's first event among the rows of the same timeline (its
    /// entry into the bus: a message's events carry the same dossier code as its first).
    pub elapsed_ms: i64,
    /// Reason.
    pub reason: Option<String>,
}

/// One dead-lettered message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Every failed attempt's reason, one per line (the `x-lienthong-history` header), when
    /// there were retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// When it was replayed (RFC 3339 +07:00), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<String>,
    /// Who replayed it (`console:<user>` or `cli:<user>`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_by: Option<String>,
}

/// Per-unit counts from the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    fn percentile_is_nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 0.5), Some(5));
        assert_eq!(percentile(&v, 0.95), Some(10));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
