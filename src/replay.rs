//! Putting messages back: `lienthong dead-letters replay` re-injects dead-lettered messages
//! (one id, a reason code, or all) into the ingress exchange after a fix; `lienthong messages
//! resend` puts accepted envelopes from the message store back on their receivers' queues
//! (after a queue was deleted or purged by mistake). Each replayed message leaves the dead-letter
//! queue only after its republish is confirmed; the router validates it again, and an adapter's
//! delivery log keeps a message that already reached its agency from being sent twice, so
//! replaying twice has no duplicate effect. Each replay is recorded: a `replayed` trace event
//! naming who replayed it, and the dead-letter log's row marked replayed (when, by whom).

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::types::{AMQPValue, LongString};
use lienthong_core::amqp::{Publisher, header_str};
use lienthong_core::deadletter::headers;
use lienthong_core::registry::Settings;
use lienthong_core::store::MessageWriter;
use lienthong_core::store::dead_letters::mark_replayed_in;
use lienthong_core::store::trace::insert_events_in;
use lienthong_core::topology::Names;
use lienthong_core::trace::{TraceEvent, TraceEventKind};
use std::collections::HashSet;

/// Which dead letters to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// These message ids.
    pub ids: Vec<String>,
    /// This reason code (`agency-refused`, `unknown-receiver`, …).
    pub reason_code: Option<String>,
    /// Every dead letter.
    pub all: bool,
}

impl Filter {
    fn matches(&self, ids: &HashSet<&str>, id: &str, code: Option<&str>) -> bool {
        self.all
            || ids.contains(id)
            || (self.reason_code.is_some() && self.reason_code.as_deref() == code)
    }
}

/// Who replays, and the store writer that records it.
pub struct Replayer<'a> {
    /// The group commit the `replayed` trace events and the dead-letter log's marks go through.
    pub writer: &'a MessageWriter,
    /// Who: `console:<user>` or `cli:<user>`, written into the trace.
    pub by: String,
    /// The component named on the trace events (`console`, `cli`).
    pub component: &'static str,
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Messages in the dead-letter queue when the replay started.
    pub examined: u64,
    /// Replayed (republished, confirmed, removed from the dead-letter queue); with `dry_run`,
    /// those that would be.
    pub replayed: Vec<String>,
    /// Left in place.
    pub kept: u64,
    /// Set when the replay was done but could not be recorded in the store (the trace and the
    /// dead-letter log do not show it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<String>,
}

/// Replay the dead letters matching `filter` (at most 10,000 at a time), recording each in the
/// trace and the dead-letter log as done by `who`.
pub async fn replay(
    settings: &Settings,
    filter: &Filter,
    dry_run: bool,
    who: &Replayer<'_>,
) -> anyhow::Result<Report> {
    let wanted: HashSet<&str> = filter.ids.iter().map(String::as_str).collect();
    let names = Names::new(&settings.bus.prefix);
    let conn = std::sync::Arc::new(
        crate::run::connect(settings, &format!("{}/replay", settings.bus.prefix)).await?,
    );
    let publisher = Publisher::new(&conn, settings.bus.confirm_timeout_ms).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            names.dead_letter_queue().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let total = u64::from(q.message_count()).min(10_000);
    let mut report = Report {
        examined: total,
        ..Default::default()
    };
    let mut events = Vec::new();
    // Take them all first (unacked), so that a message put back is not taken again.
    let mut taken = Vec::new();
    for _ in 0..total {
        match ch
            .basic_get(
                names.dead_letter_queue().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        {
            Some(m) => taken.push(m),
            None => break,
        }
    }
    for m in taken {
        let d = &m.delivery;
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|x| x.to_string())
            .unwrap_or_default();
        let code =
            header_str(&d.properties, headers::REASON_CODE).unwrap_or_else(|| "broker".into());
        if dry_run || !filter.matches(&wanted, &id, Some(&code)) {
            report.kept += 1;
            d.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await?;
            continue;
        }
        // Back in as new: without the dead-letter and retry bookkeeping of its last journey.
        let mut h = d.properties.headers().clone().unwrap_or_default();
        let kept: std::collections::BTreeMap<_, _> = h
            .inner()
            .iter()
            .filter(|(k, _)| {
                !k.as_str().starts_with("x-lienthong-")
                    && !k.as_str().starts_with("x-death")
                    && !k.as_str().contains("-death-")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        h = kept.into();
        h.insert(
            "x-lienthong-replayed-at".into(),
            AMQPValue::LongString(LongString::from(lienthong_core::clock::now_rfc3339())),
        );
        h.insert(
            "x-lienthong-replayed-by".into(),
            AMQPValue::LongString(LongString::from(who.by.as_str())),
        );
        // Stamped before the publish, so that it comes before the router's events in the
        // dossier's timeline; written only once the publish is confirmed.
        events.push(replayed_event(who, &id, &d.data));
        // The bus republishes it (its own broker user), so the router would take it as the
        // bus's: the user that first published it goes along, and the router checks the sender
        // against that user instead ("" when it had none: still a sender-mismatch).
        h.insert(
            lienthong_core::senders::ORIGINAL_USER_HEADER.into(),
            AMQPValue::LongString(LongString::from(
                d.properties
                    .user_id()
                    .as_ref()
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
            )),
        );
        let props = d.properties.clone().with_headers(h).with_delivery_mode(2);
        match publisher
            .publish(&names.ingress_exchange(), "", &d.data, props, true)
            .await
        {
            Ok(()) => {
                d.ack(BasicAckOptions::default()).await?;
                report.replayed.push(id);
            }
            Err(e) => {
                events.pop();
                d.nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await?;
                let _ = conn.close(200, "replay failed".into()).await;
                record(who, &report.replayed, events).await;
                anyhow::bail!("replaying {id}: {e} (it stays in the dead-letter queue)");
            }
        }
    }
    let _ = conn.close(200, "replay done".into()).await;
    report.unrecorded = record(who, &report.replayed, events).await;
    Ok(report)
}

/// The `replayed` trace event of the message `id` with body `body` (its dossier, kind and
/// parties when the body is an envelope).
fn replayed_event(who: &Replayer<'_>, id: &str, body: &[u8]) -> TraceEvent {
    let env: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        env.as_ref()
            .and_then(|v| v.get(k))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let mut ev = TraceEvent::new(TraceEventKind::Replayed, who.component, None)
        .message_id(id)
        .reason(format!("by {}", who.by));
    ev.ma_ho_so = field("ma_ho_so");
    ev.kind = field("kind");
    ev.correlation_id = field("correlation_id");
    ev.from = field("sender");
    ev.to = field("receiver");
    ev
}

/// Write the replay of `ids` into the store: the trace events and the dead-letter log's marks,
/// in one transaction. Returns the error when it failed (the replay itself stands).
async fn record(who: &Replayer<'_>, ids: &[String], events: Vec<TraceEvent>) -> Option<String> {
    if ids.is_empty() {
        return None;
    }
    let (ids, by) = (ids.to_vec(), who.by.clone());
    let now = lienthong_core::clock::now_ms();
    match who
        .writer
        .transact(move |c| {
            mark_replayed_in(c, &ids, now, &by)?;
            insert_events_in(c, &events)
        })
        .await
    {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(message = "a replay could not be recorded in the store", error = %e);
            Some(e)
        }
    }
}

/// Put stored envelopes (see [`lienthong_core::store::MessageSelection`]) back on their
/// receivers' queues, each with a publisher confirm. Receivers see the same message id again:
/// adapters skip what they already delivered; units dedupe by message id. Returns the ids.
pub async fn resend(
    settings: &Settings,
    sel: &lienthong_core::store::MessageSelection,
) -> anyhow::Result<Vec<String>> {
    let store = lienthong_core::store::Store::open(std::path::Path::new(&settings.store.path))?;
    let messages = store.stored_messages(sel)?;
    let names = Names::new(&settings.bus.prefix);
    let conn = std::sync::Arc::new(
        crate::run::connect(settings, &format!("{}/resend", settings.bus.prefix)).await?,
    );
    crate::run::apply_topology(settings, &conn).await?;
    let publisher = Publisher::new(&conn, settings.bus.confirm_timeout_ms).await?;
    let mut done = Vec::new();
    for m in messages {
        let env: lienthong_core::Envelope = serde_json::from_slice(&m.body)?;
        let mut props = lienthong_core::amqp::envelope_properties(&env);
        let mut h = props.headers().clone().unwrap_or_default();
        h.insert(
            "x-lienthong-resent-at".into(),
            AMQPValue::LongString(LongString::from(lienthong_core::clock::now_rfc3339())),
        );
        props = props.with_headers(h);
        publisher
            .publish(&names.deliver_exchange(), &m.receiver, &m.body, props, true)
            .await
            .map_err(|e| anyhow::anyhow!("resending {}: {e}", m.message_id))?;
        done.push(m.message_id);
    }
    let _ = conn.close(200, "resend done".into()).await;
    Ok(done)
}
