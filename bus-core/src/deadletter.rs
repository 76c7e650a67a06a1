//! The dead letter channel: a message that cannot be handled is republished to the
//! dead-letter exchange with the reason in headers, the publish is confirmed, and only then is
//! the original delivery acked (a reason cannot ride on a nack). The sender is told by a
//! `bus.dead_letter` notice on its own queue when it reads one.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Map, Value};

use crate::amqp::{PublishError, Publisher, envelope_properties, header_i64, header_str};
use crate::envelope::{Envelope, Kind, Rejection, clip};
use crate::registry::{Reach, Registry};
use crate::topology::Names;
use crate::trace::{DeadLetterRow, TraceEvent, TraceEventKind, Tracer};

/// Sender code the bus uses for its own notices.
pub const BUS_SENDER: &str = "lienthong.bus";

/// Header names set on every dead-lettered message.
pub mod headers {
    /// Stable reason code (`schema-invalid`, `agency-refused`, …).
    pub const REASON_CODE: &str = "x-lienthong-reason-code";
    /// Human-readable reason.
    pub const REASON: &str = "x-lienthong-reason";
    /// Component that dead-lettered the message.
    pub const COMPONENT: &str = "x-lienthong-component";
    /// Queue the message was taken from.
    pub const QUEUE: &str = "x-lienthong-queue";
    /// When (RFC 3339, +07:00).
    pub const AT: &str = "x-lienthong-dead-lettered-at";
    /// Attempts made.
    pub const ATTEMPTS: &str = "x-lienthong-attempts";
    /// Every failed attempt's reason, one per line.
    pub const HISTORY: &str = "x-lienthong-history";
}

/// One message to dead-letter.
pub struct DeadLetter<'a> {
    /// The original body, verbatim.
    pub body: &'a [u8],
    /// The original properties (headers are kept and extended).
    pub props: &'a BasicProperties,
    /// Why.
    pub rejection: &'a Rejection,
    /// Queue it came from.
    pub queue: &'a str,
    /// Attempts made (1 for a message refused at once).
    pub attempts: u32,
    /// Reasons of earlier failed attempts.
    pub history: &'a [String],
    /// The envelope, when the body was one.
    pub envelope: Option<&'a Envelope>,
}

/// Publishes to `<prefix>.dlx` and notifies senders.
#[derive(Clone)]
pub struct DeadLetterChannel {
    publisher: Publisher,
    tracer: Tracer,
    names: Names,
    component: String,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl DeadLetterChannel {
    /// A dead letter channel for `component`.
    pub fn new(publisher: Publisher, tracer: Tracer, names: Names, component: &str) -> Self {
        DeadLetterChannel {
            publisher,
            tracer,
            names,
            component: component.to_string(),
            shutdown: None,
        }
    }

    /// The same, giving a delivery back at once when `shutdown` turns true instead of holding
    /// it while its dead letter cannot be published ([`DeadLetterChannel::settle`]).
    pub fn with_shutdown(mut self, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Dead-letter a message and wait for the confirm; then trace it. The caller acks the
    /// original delivery only after this returns Ok.
    pub async fn send(&self, dl: DeadLetter<'_>) -> Result<(), PublishError> {
        let mut headers = dl.props.headers().clone().unwrap_or_default();
        let put = |h: &mut FieldTable, k: &str, v: String| {
            h.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        };
        put(
            &mut headers,
            headers::REASON_CODE,
            dl.rejection.code.as_str().to_string(),
        );
        // Headers travel in one AMQP frame (frame_max, 128 KiB by default): keep them small.
        put(
            &mut headers,
            headers::REASON,
            clip(&dl.rejection.reason(), 2000),
        );
        put(&mut headers, headers::COMPONENT, self.component.clone());
        put(&mut headers, headers::QUEUE, dl.queue.to_string());
        put(&mut headers, headers::AT, crate::clock::now_rfc3339());
        let history: Vec<String> = dl
            .history
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(|h| clip(h, 300))
            .collect();
        put(&mut headers, headers::HISTORY, history.join("\n"));
        // The dead letter is published as the bus's broker user: who first published it goes
        // along, so that a replay of a message refused as a unit's is checked as that unit's.
        put(
            &mut headers,
            crate::senders::ORIGINAL_USER_HEADER,
            crate::senders::original_user(dl.props, self.publisher.user()),
        );
        headers.insert(
            headers::ATTEMPTS.into(),
            AMQPValue::LongLongInt(i64::from(dl.attempts)),
        );
        let message_id = dl
            .props
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .or_else(|| dl.envelope.map(|e| e.message_id.clone()))
            .unwrap_or_else(crate::envelope::new_message_id);
        let props = dl
            .props
            .clone()
            .with_delivery_mode(2)
            .with_message_id(message_id.clone().into())
            .with_headers(headers);
        self.publisher
            .publish(
                &self.names.dead_letter_exchange(),
                dl.queue,
                dl.body,
                props,
                true,
            )
            .await?;
        let ev = TraceEvent::new(TraceEventKind::DeadLettered, &self.component, dl.envelope)
            .message_id(message_id)
            .attempt(dl.attempts)
            .reason(clip(&dl.rejection.reason(), 2000));
        self.tracer.emit(&ev).await
    }

    /// Dead-letter a delivery and settle it: [`DeadLetterChannel::send`], then (if `notify`
    /// names an envelope) [`DeadLetterChannel::notify_sender`] of it, then ack. While the dead
    /// letter is not confirmed (the dead-letter exchange being repaired…) the delivery is held
    /// and the publish tried again ([`crate::hold::Hold`]); past the hold, it is requeued, so
    /// nothing is lost.
    pub async fn settle(
        &self,
        delivery: &Delivery,
        dl: DeadLetter<'_>,
        notify: Option<(&Envelope, &Registry)>,
    ) {
        let reason = dl.rejection.clone();
        let mut hold = crate::hold::Hold::new("dead letter channel", self.shutdown.clone());
        let sent = loop {
            let again = DeadLetter { ..dl };
            match self.send(again).await {
                Ok(()) => break Ok(()),
                Err(e) => {
                    if !hold.again(&format!("dead letter not confirmed: {e}")).await {
                        break Err(e);
                    }
                }
            }
        };
        match sent {
            Ok(()) => {
                if let Some((env, registry)) = notify
                    && let Err(e) = self.notify_sender(env, &reason, registry).await
                {
                    tracing::warn!(message = "could not notify the sender of a dead-lettered message", error = %e);
                }
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::warn!(message = "ack after dead-lettering failed; the message will be redelivered", error = %e);
                }
            }
            Err(e) => {
                tracing::error!(message = "dead-lettering failed; requeueing", error = %e);
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
            }
        }
    }

    /// Tell the sender of `env` that it was dead-lettered, with a `bus.dead_letter` envelope on
    /// the sender's queue, when the sender is a unit that reads its own queue (reach = amqp).
    /// Returns whether a notice was sent.
    pub async fn notify_sender(
        &self,
        env: &Envelope,
        rejection: &Rejection,
        registry: &Registry,
    ) -> Result<bool, PublishError> {
        let Some(unit) = registry.unit(&env.sender) else {
            return Ok(false);
        };
        if !matches!(unit.reach, Reach::Amqp) || env.kind.0 == Kind::DEAD_LETTER {
            return Ok(false);
        }
        let mut notice = env.reply(Kind::DEAD_LETTER, BUS_SENDER, &env.sender);
        notice.payload.reason = Some(clip(&rejection.reason(), 2000));
        let mut data = Map::new();
        data.insert(
            "dead_lettered_message_id".into(),
            Value::String(env.message_id.clone()),
        );
        data.insert(
            "reason_code".into(),
            Value::String(rejection.code.as_str().into()),
        );
        data.insert("original_kind".into(), Value::String(env.kind.0.clone()));
        if let Some(r) = &env.receiver {
            data.insert("original_receiver".into(), Value::String(r.clone()));
        }
        notice.payload.data = Some(data);
        let body = notice.to_bytes();
        self.publisher
            .publish(
                &self.names.deliver_exchange(),
                &env.sender,
                &body,
                envelope_properties(&notice),
                true,
            )
            .await?;
        Ok(true)
    }
}

/// Read a dead-lettered message (body verbatim, properties with our reason headers, or the
/// broker's `x-death` when the broker dead-lettered it: delivery limit, rejection…) into a row
/// of the dead-letter log; true when the broker dead-lettered it (reason code `broker`).
pub fn read_dead_letter(body: &[u8], props: &BasicProperties) -> (DeadLetterRow, bool) {
    let env: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        env.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let message_id = props
        .message_id()
        .as_ref()
        .map(|m| m.to_string())
        .or(field("message_id"))
        .unwrap_or_else(|| "(none)".into());
    let ours = header_str(props, headers::REASON_CODE);
    let (reason_code, reason, component, queue, from_broker) = match ours {
        Some(code) => (
            code,
            header_str(props, headers::REASON).unwrap_or_default(),
            header_str(props, headers::COMPONENT),
            header_str(props, headers::QUEUE),
            false,
        ),
        None => {
            let (why, q) = x_death(props);
            (
                "broker".to_string(),
                format!("dead-lettered by the broker: {why}"),
                Some("broker".to_string()),
                q,
                true,
            )
        }
    };
    let row = DeadLetterRow {
        at: crate::clock::now_rfc3339(),
        message_id,
        ma_ho_so: field("ma_ho_so"),
        kind: field("kind"),
        sender: field("sender"),
        receiver: field("receiver"),
        reason_code,
        reason,
        component,
        queue,
        attempts: header_i64(props, headers::ATTEMPTS).map(|n| n as u32),
        history: header_str(props, headers::HISTORY).filter(|h| !h.is_empty()),
        replayed_at: None,
        replayed_by: None,
    };
    (row, from_broker)
}

/// The broker's reason and queue from the first `x-death` entry.
fn x_death(props: &BasicProperties) -> (String, Option<String>) {
    let Some(h) = props.headers().as_ref() else {
        return ("unknown reason".into(), None);
    };
    let Some(AMQPValue::FieldArray(arr)) = h.inner().get("x-death") else {
        return ("unknown reason".into(), None);
    };
    let Some(AMQPValue::FieldTable(first)) = arr.as_slice().first() else {
        return ("unknown reason".into(), None);
    };
    let s = |k: &str| match first.inner().get(k) {
        Some(AMQPValue::LongString(v)) => Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(v)) => Some(v.as_str().to_string()),
        _ => None,
    };
    (
        s("reason").unwrap_or_else(|| "unknown reason".into()),
        s("queue"),
    )
}
