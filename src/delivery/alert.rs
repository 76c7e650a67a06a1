//! The operator's alert about an agency whose answers cannot be read: once per message, when
//! its unreadable answers reach `[retry] unreadable_alert_after` (a trace event `alert`, a log
//! warning, the webhook, a metric).

use lienthong_core::envelope::Envelope;
use lienthong_core::registry::Unit;
use lienthong_core::trace::{TraceEvent, TraceEventKind, Tracer};

use super::retry_engine::Unreadable;

/// Count `new` unreadable answers of this round, and alert the operator once per message
/// when `unreadable` reaches `after` (`[retry] unreadable_alert_after`, at least 1): a trace
/// event `alert` on the dossier with an excerpt of the last answer, a log warning, the webhook
/// ([`crate::alerts::UnreadableAnswers`]).
#[allow(clippy::too_many_arguments)]
pub async fn if_unreadable(
    unit: &Unit,
    component: &str,
    tracer: &Tracer,
    webhook: &crate::alerts::Webhook,
    after: u32,
    env: &Envelope,
    unreadable: &mut Unreadable,
    new: u32,
) {
    if new > 0 {
        metrics::counter!("lienthong_adapter_unreadable_answers_total", "unit" => unit.code.clone())
            .increment(u64::from(new));
    }
    if unreadable.alerted || unreadable.count < after.max(1) {
        return;
    }
    unreadable.alerted = true;
    let excerpt = unreadable.last.clone().unwrap_or_default();
    let reason = format!(
        "{} answers from {} ({}) could not be read as its interface's answer; usually a misconfigured adapter (endpoint, path, format) or a proxy in front of the agency — check with `lienthong check {}`. The delivery keeps retrying with the same Idempotency-Key. Last answer: «{}»",
        unreadable.count, unit.name, unit.code, unit.code, excerpt
    );
    metrics::counter!("lienthong_adapter_alerts_total", "unit" => unit.code.clone(), "level" => crate::alerts::UnreadableAnswers::LEVEL)
        .increment(1);
    tracing::warn!(
        message = "an agency's answers cannot be read",
        unit = unit.code,
        ma_ho_so = env.ma_ho_so,
        message_id = env.message_id,
        answers = unreadable.count
    );
    let ev = TraceEvent::new(TraceEventKind::Alert, component, Some(env)).reason(format!(
        "{}: {reason}",
        crate::alerts::UnreadableAnswers::LEVEL
    ));
    let _ = tracer.emit(&ev).await;
    webhook
        .post(&crate::alerts::UnreadableAnswers {
            level: crate::alerts::UnreadableAnswers::LEVEL,
            ma_ho_so: env.ma_ho_so.clone(),
            ma_tthc: env.ma_tthc.clone(),
            message_id: env.message_id.clone(),
            holder: unit.code.clone(),
            answers: unreadable.count,
            answer: excerpt,
            reason,
        })
        .await;
}
