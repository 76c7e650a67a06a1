//! The message counters every process exports on `/metrics`, counted from the trace events its
//! components hand to their [`super::Tracer`]: one event, one increment. Names follow
//! Prometheus' conventions (`_total` for counters; https://prometheus.io/docs/practices/naming/).

use metrics::counter;

use super::event::{TraceEvent, TraceEventKind};

/// `lienthong_messages_received_total{component}`: messages a component took from a queue or
/// the HTTP API.
pub const RECEIVED: &str = "lienthong_messages_received_total";
/// `lienthong_messages_routed_total{unit}`: messages put on a unit's queue (router, process
/// manager).
pub const ROUTED: &str = "lienthong_messages_routed_total";
/// `lienthong_messages_delivered_total{unit}`: messages an adapter handed to a unit's system.
pub const DELIVERED: &str = "lienthong_messages_delivered_total";
/// `lienthong_messages_retried_total{unit}`: delivery attempts that failed and are retried.
pub const RETRIED: &str = "lienthong_messages_retried_total";
/// `lienthong_messages_failed_total{unit}`: deliveries that failed for good.
pub const FAILED: &str = "lienthong_messages_failed_total";
/// `lienthong_messages_dead_lettered_total{unit, reason}`: messages dead-lettered, by reason
/// code (`agency-refused`, `retries-exhausted`, `schema-invalid`, …; `other` when the reason
/// names none).
pub const DEAD_LETTERED: &str = "lienthong_messages_dead_lettered_total";
/// `lienthong_messages_replayed_total`: dead letters an operator replayed.
pub const REPLAYED: &str = "lienthong_messages_replayed_total";

/// Every counter this module exports (for the dashboard's check).
pub const NAMES: [&str; 7] = [
    RECEIVED,
    ROUTED,
    DELIVERED,
    RETRIED,
    FAILED,
    DEAD_LETTERED,
    REPLAYED,
];

/// The reason code at the head of a reason (`agency-refused: …` → `agency-refused`): lower
/// case letters, digits and dashes before the first `:`; `other` otherwise.
pub fn reason_code(reason: Option<&str>) -> String {
    reason
        .and_then(|r| r.split_once(':'))
        .map(|(code, _)| code.trim())
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 40
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        .unwrap_or("other")
        .to_string()
}

/// Count `events` (called as they are handed to the tracer; the events of a write that carries
/// them, [`super::tracer::Tracer::emit_from`], are counted by the group commit once they have
/// committed).
pub fn count(events: &[TraceEvent]) {
    for e in events {
        let unit = || e.to.clone().unwrap_or_else(|| "-".into());
        match e.event {
            TraceEventKind::Received => {
                counter!(RECEIVED, "component" => e.component.clone()).increment(1)
            }
            TraceEventKind::Routed => counter!(ROUTED, "unit" => unit()).increment(1),
            TraceEventKind::Delivered => counter!(DELIVERED, "unit" => unit()).increment(1),
            TraceEventKind::Retried => counter!(RETRIED, "unit" => unit()).increment(1),
            TraceEventKind::Failed => counter!(FAILED, "unit" => unit()).increment(1),
            TraceEventKind::DeadLettered => counter!(
                DEAD_LETTERED,
                "unit" => unit(),
                "reason" => reason_code(e.reason.as_deref())
            )
            .increment(1),
            TraceEventKind::Replayed => counter!(REPLAYED).increment(1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reason_code_is_the_reasons_head_or_other() {
        use super::reason_code;
        assert_eq!(
            reason_code(Some("agency-refused: Police refused it: HTTP 400")),
            "agency-refused"
        );
        assert_eq!(reason_code(Some("Police is down")), "other");
        assert_eq!(reason_code(Some("HTTP 503: E_TAM_NGUNG")), "other");
        assert_eq!(reason_code(None), "other");
    }
}
