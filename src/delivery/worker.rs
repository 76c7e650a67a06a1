//! One delivery to an agency, start to settle: read the envelope, skip a message the delivery
//! log already completed, resolve an unknown outcome by the status lookup, prepare the agency
//! request once, record it as `sending`, run the retry engine's attempts, then record and ack,
//! park, or dead-letter with the agency's reason. A handler that panics has its delivery
//! dead-lettered (`handler-failed`) with the panic's message instead of holding a prefetch
//! slot until the channel closes.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt as _;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lienthong_adapters::deliveries::{DeliveryLog, DeliveryRecord};
use lienthong_adapters::{Adapter, AgencyRequest};
use lienthong_core::deadletter::{DeadLetter, DeadLetterChannel};
use lienthong_core::envelope::{Envelope, RejectCode, Rejection};
use lienthong_core::registry::Unit;
use lienthong_core::trace::{TraceEvent, TraceEventKind, Tracer};

use super::retry_engine::{
    self, Engine, Exhausted, Final, Resolution, Unreadable, Verdict, resolve_unknown,
};
use crate::consume::requeue;
use crate::context::Ctx;

/// The consumer of one unit's queue.
#[derive(Clone)]
pub struct Worker {
    /// The process's context.
    pub ctx: Ctx,
    /// The unit delivered to.
    pub unit: Unit,
    /// Trace component name (`adapter:<code>`).
    pub component: String,
    /// The unit's adapter.
    pub adapter: Arc<dyn Adapter>,
    /// The delivery log (idempotent consumer).
    pub log: DeliveryLog,
    /// Trace events.
    pub tracer: Tracer,
    /// Dead letters.
    pub dlc: DeadLetterChannel,
    /// Retries, delayed rounds, giving up.
    pub engine: Engine,
    /// The operator's webhook, for the unreadable-answers alert.
    pub webhook: crate::alerts::Webhook,
}

/// The text of a panic's payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Worker {
    /// [`Worker::handle`], with a panic caught: the delivery is dead-lettered
    /// (`handler-failed`) with the panic's message, so it neither holds a prefetch slot nor is
    /// redelivered into the same panic.
    pub async fn handle_guarded(&self, d: Delivery) {
        use lienthong_core::telemetry::{KeyValue, Stage, enabled, from_amqp, in_span};
        let parent = enabled().then(|| from_amqp(d.properties.headers().as_ref()));
        let handled = in_span(
            Stage::Deliver,
            || parent,
            || {
                vec![
                    KeyValue::new("messaging.system", "rabbitmq"),
                    KeyValue::new(
                        "messaging.destination.name",
                        self.ctx.names.unit_queue(&self.unit.code),
                    ),
                    KeyValue::new("lienthong.unit", self.unit.code.clone()),
                ]
            },
            std::panic::AssertUnwindSafe(self.handle(&d)).catch_unwind(),
        );
        let caught = handled.await;
        let Err(p) = caught else {
            return;
        };
        let text = panic_text(p.as_ref());
        tracing::error!(
            message = "delivery handler panicked; dead-lettering the delivery",
            unit = self.unit.code,
            panic = text
        );
        let env: Option<Envelope> = serde_json::from_slice(&d.data).ok();
        let r = Rejection::new(
            RejectCode::HandlerFailed,
            format!(
                "the delivery to {} ({}) failed inside the bus (a bug; the agency may or may not have it): {text}",
                self.unit.name, self.unit.code
            ),
        );
        self.dead_letter(&d, &r, env.as_ref(), 0, &[]).await;
    }

    /// Handle one delivery (see the module doc).
    pub async fn handle(&self, d: &Delivery) {
        let queue = self.ctx.names.unit_queue(&self.unit.code);
        let env: Envelope = match serde_json::from_slice(&d.data) {
            Ok(e) => e,
            Err(e) => {
                let r = Rejection::new(
                    RejectCode::MalformedJson,
                    format!("message on {queue} is not an envelope: {e}"),
                );
                self.dead_letter(d, &r, None, 1, &[]).await;
                return;
            }
        };
        lienthong_core::telemetry::annotate(|| crate::telemetry::envelope_attributes(&env));
        // Crash test hook: a handler that panics (tests/kill_points.rs).
        fail::fail_point!("adapter-handler-panic", |_| {
            panic!("fail point adapter-handler-panic: {}", env.message_id)
        });
        // Idempotent consumer: a message whose delivery already completed is not sent again.
        let known = match self.log.lookup(&env.message_id).await {
            Ok(k) => k,
            Err(_) => {
                tracing::error!(message = "cannot read the delivery log; requeueing");
                tokio::time::sleep(Duration::from_millis(500)).await;
                requeue(d).await;
                return;
            }
        };
        if let Some(done) = &known {
            if done.ma_ho_so != env.ma_ho_so
                || done.kind != env.kind.0
                || done.unit != self.unit.code
            {
                // The same id for another message: sending it would make the agency replay the
                // other message's answer (same idempotency key), and this one would be lost.
                let r = Rejection::new(
                    RejectCode::InvalidField,
                    format!(
                        "message_id {} was already used for a {} of dossier {} to {}; every message needs its own id",
                        env.message_id, done.kind, done.ma_ho_so, done.unit
                    ),
                );
                self.dead_letter(d, &r, Some(&env), 1, &[]).await;
                return;
            }
            if done.delivered {
                let ev = TraceEvent::new(TraceEventKind::Delivered, &self.component, Some(&env)).reason(format!(
                    "already delivered (receipt {}); redelivery acked without calling the agency",
                    done.receipt
                ));
                let _ = self.tracer.emit(&ev).await;
                let _ = d.ack(BasicAckOptions::default()).await;
                return;
            }
            // `sending`: an earlier attempt may have reached the agency; the attempts below
            // carry the same idempotency key, so the agency answers without a second effect.
        }
        let mut unreadable = Unreadable::from_headers(&d.properties);
        if retry_engine::was_unknown(&d.properties) && env.kind.is_forward() {
            match resolve_unknown(self.adapter.as_ref(), &env).await {
                Resolution::Delivered(receipt) => {
                    let ev = TraceEvent::new(TraceEventKind::Delivered, &self.component, Some(&env))
                        .reason(format!("outcome was unknown; the agency's status lookup shows it took the dossier (receipt {receipt}); not sent again"));
                    let Some(rec) = self.record_for(&env, &receipt).await else {
                        requeue(d).await;
                        return;
                    };
                    if super::record::delivered(&self.ctx, &self.tracer, rec, ev).await {
                        let _ = d.ack(BasicAckOptions::default()).await;
                    } else {
                        requeue(d).await;
                    }
                    return;
                }
                Resolution::SendAgain {
                    unreadable: Some(answer),
                } => unreadable.add(1, Some(answer)),
                Resolution::SendAgain { unreadable: None } => {}
            }
        }
        // The request, built once: every attempt of this round sends these bytes.
        let req = match self.adapter.prepare(&env) {
            Ok(req) => req,
            Err(why) => {
                let r = Rejection::new(
                    RejectCode::NotDeliverable,
                    format!("not sent to {} ({}): {why}", self.unit.name, self.unit.code),
                );
                self.dead_letter(d, &r, Some(&env), 0, &[]).await;
                return;
            }
        };
        // The delivery's record (its reply address read once), written ahead of the first call
        // with the `received` event.
        let Some(sending) = self.record_for(&env, "").await else {
            requeue(d).await;
            return;
        };
        let received = TraceEvent::new(TraceEventKind::Received, &self.component, Some(&env));
        if let Err(e) =
            super::record::begin(&self.ctx, &self.tracer, sending.clone(), received).await
        {
            tracing::error!(message = "cannot write the delivery log or its trace; requeueing", error = %e);
            tokio::time::sleep(Duration::from_millis(500)).await;
            requeue(d).await;
            return;
        }
        let outcome = self.attempts(&env, &req).await;
        let (n, last) = outcome.unreadable();
        unreadable.add(n, last);
        super::alert::if_unreadable(
            &self.unit,
            &self.component,
            &self.tracer,
            &self.webhook,
            self.ctx.settings.retry.unreadable_alert_after,
            &env,
            &mut unreadable,
            n,
        )
        .await;
        match outcome {
            Final::Delivered {
                receipt, attempts, ..
            } => self.delivered(d, &env, sending, receipt, attempts).await,
            Final::Failed {
                exhausted: true,
                attempts,
                history,
                retry_after,
                unknown,
                ..
            } => {
                let ex = Exhausted {
                    attempts,
                    history,
                    retry_after,
                    unknown,
                };
                match self.engine.park_or_give_up(d, &env, ex, &unreadable).await {
                    Verdict::Parked => {
                        let _ = d.ack(BasicAckOptions::default()).await;
                    }
                    Verdict::Requeued => requeue(d).await,
                    Verdict::GiveUp {
                        rejection,
                        attempts,
                        history,
                    } => {
                        self.dead_letter(d, &rejection, Some(&env), attempts, &history)
                            .await
                    }
                }
            }
            Final::Failed {
                reason,
                attempts,
                history,
                ..
            } => {
                let r = Rejection::new(
                    RejectCode::AgencyRefused,
                    format!(
                        "{} ({}) refused it: {reason}",
                        self.unit.name, self.unit.code
                    ),
                );
                let ev = TraceEvent::new(TraceEventKind::Failed, &self.component, Some(&env))
                    .attempt(attempts)
                    .reason(reason.clone());
                let _ = self.tracer.emit(&ev).await;
                self.dead_letter(d, &r, Some(&env), attempts, &history)
                    .await;
            }
        }
    }

    /// The retry engine's in-process attempts of `req`, each retry traced (`retried`).
    async fn attempts(&self, env: &Envelope, req: &AgencyRequest) -> Final {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<TraceEvent>();
        let tracer = self.tracer.clone();
        let emitter = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let _ = tracer.emit(&ev).await;
            }
        });
        let on_retry = {
            let env = env.clone();
            let component = self.component.clone();
            move |attempt: u32, reason: &str, delay: Duration| {
                let ev = TraceEvent::new(TraceEventKind::Retried, &component, Some(&env))
                    .attempt(attempt)
                    .reason(format!(
                        "{reason}; next attempt in {} ms",
                        delay.as_millis()
                    ));
                let _ = tx.send(ev);
            }
        };
        let outcome = retry_engine::attempts(
            self.adapter.as_ref(),
            req,
            &self.ctx.settings.retry,
            on_retry,
        )
        .await;
        let _ = emitter.await;
        outcome
    }

    /// Delivered: record it (with its `delivered` event) and ack; left unacked when the record
    /// fails (the retry carries the same idempotency key).
    async fn delivered(
        &self,
        d: &Delivery,
        env: &Envelope,
        sending: DeliveryRecord,
        receipt: String,
        attempts: u32,
    ) {
        // Crash test hook: stop here, the agency has answered and nothing is written
        // yet; the delivery stays unacked until the process dies.
        fail::fail_point!("adapter-after-agency-answer", |_| {
            tracing::warn!(message = "fail point adapter-after-agency-answer: holding the delivery", ma_ho_so = %env.ma_ho_so, message_id = %env.message_id);
        });
        let ev = TraceEvent::new(TraceEventKind::Delivered, &self.component, Some(env))
            .attempt(attempts)
            .reason(format!("receipt {receipt}"));
        let rec = DeliveryRecord {
            delivered: !receipt.is_empty(),
            receipt,
            at_ms: lienthong_core::clock::now_ms(),
            ..sending
        };
        if !super::record::delivered(&self.ctx, &self.tracer, rec, ev).await {
            tracing::error!(
                message = "cannot record the delivery; leaving it unacked (the retry carries the same idempotency key)"
            );
            requeue(d).await;
            return;
        }
        // Crash test hook: the delivery log says delivered, the ack is not sent.
        fail::fail_point!("adapter-before-ack", |_| {
            tracing::warn!(message = "fail point adapter-before-ack: holding the delivery", ma_ho_so = %env.ma_ho_so, message_id = %env.message_id);
        });
        let _ = d.ack(BasicAckOptions::default()).await;
    }

    /// The delivery's record ([`super::record::record_for`]); `None` when the store could not
    /// be read, after a log line and a pause (the caller requeues the delivery, as for the
    /// delivery log's own read).
    async fn record_for(&self, env: &Envelope, receipt: &str) -> Option<DeliveryRecord> {
        let rec = super::record::record_for(
            &self.log,
            &self.unit.code,
            self.adapter.results_to(),
            env,
            receipt,
        )
        .await;
        match rec {
            Ok(rec) => Some(rec),
            Err(e) => {
                tracing::error!(message = "cannot read the dossier's centre from the store; requeueing", error = %e);
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            }
        }
    }

    async fn dead_letter(
        &self,
        d: &Delivery,
        r: &Rejection,
        env: Option<&Envelope>,
        attempts: u32,
        history: &[String],
    ) {
        let queue = self.ctx.names.unit_queue(&self.unit.code);
        let dl = DeadLetter {
            body: &d.data,
            props: &d.properties,
            rejection: r,
            queue: &queue,
            attempts,
            history,
            envelope: env,
        };
        // Tell the dossier's centre: the origin when known, else the sender.
        let origin = match env {
            Some(e) => super::record::origin(&self.ctx, &e.ma_ho_so).await,
            None => None,
        };
        let notice_env = env.map(|env| {
            let mut n = env.clone();
            if let Some(o) = origin {
                n.sender = o.origin_unit;
            }
            n
        });
        let notify = notice_env.as_ref().map(|e| (e, self.ctx.registry.as_ref()));
        self.dlc.settle(d, dl, notify).await;
    }
}
