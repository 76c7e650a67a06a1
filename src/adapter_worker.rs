//! The adapter component: for every unit reached by an adapter, consume `<prefix>.unit.<code>`,
//! hand each envelope to the unit's [`Adapter`] with the shared retry policy, record the
//! delivery durably before the ack (so a redelivered message is not sent twice), and
//! dead-letter permanent failures and exhausted retries with the agency's reason.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lienthong_adapters::Adapter;
use lienthong_adapters::deliveries::{DeliveryLog, DeliveryRecord};
use lienthong_adapters::retry::{Final, deliver_with_retries};
use lienthong_core::amqp::Publisher;
use lienthong_core::deadletter::{DeadLetter, DeadLetterChannel};
use lienthong_core::envelope::{Envelope, RejectCode, Rejection};
use lienthong_core::registry::{Reach, Unit};
use lienthong_core::trace::{TraceEvent, TraceEventKind, Tracer};

use crate::context::Ctx;

#[derive(Clone)]
struct Worker {
    ctx: Ctx,
    unit: Unit,
    component: String,
    adapter: Arc<dyn Adapter>,
    log: DeliveryLog,
    tracer: Tracer,
    dlc: DeadLetterChannel,
}

/// Run one consumer per adapter-reached unit until shutdown. `callback_base` is the bus's
/// public HTTP base URL that agencies call back.
pub async fn run(ctx: Ctx, callback_base: String) -> anyhow::Result<()> {
    let log = DeliveryLog::new(ctx.store.clone())?;
    let mut tasks = tokio::task::JoinSet::new();
    for unit in ctx
        .registry
        .units()
        .filter(|u| matches!(u.reach, Reach::Adapter { .. }))
    {
        let adapter =
            lienthong_adapters::build(unit, &callback_base).map_err(anyhow::Error::msg)?;
        let component = format!("adapter:{}", unit.code);
        let timeout = ctx.settings.bus.confirm_timeout_ms;
        let tracer = Tracer::new(
            Publisher::new(&ctx.conn, timeout).await?,
            ctx.names.trace_exchange(),
        );
        let dlc = DeadLetterChannel::new(
            Publisher::new(&ctx.conn, timeout).await?,
            tracer.clone(),
            ctx.names.clone(),
            &component,
        );
        let worker = Worker {
            ctx: ctx.clone(),
            unit: unit.clone(),
            component,
            adapter,
            log: log.clone(),
            tracer,
            dlc,
        };
        let channel = ctx.conn.create_channel().await?;
        let queue = ctx.names.unit_queue(&unit.code);
        let shutdown = ctx.shutdown.clone();
        let grace = Duration::from_millis(ctx.settings.bus.shutdown_grace_ms);
        let prefetch = ctx.settings.topology.adapter_prefetch;
        let tag = format!("lienthong-adapter-{}", unit.code);
        tracing::info!(
            message = "adapter consuming",
            unit = unit.code,
            adapter = worker.adapter.name(),
            queue
        );
        tasks.spawn(async move {
            crate::consume::consume(channel, &queue, &tag, prefetch, shutdown, grace, move |d| {
                let w = worker.clone();
                async move { w.handle(d).await }
            })
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

impl Worker {
    async fn handle(&self, d: Delivery) {
        let queue = self.ctx.names.unit_queue(&self.unit.code);
        let env: Envelope = match serde_json::from_slice(&d.data) {
            Ok(e) => e,
            Err(e) => {
                let r = Rejection::new(
                    RejectCode::MalformedJson,
                    format!("message on {queue} is not an envelope: {e}"),
                );
                self.dead_letter(&d, &r, None, 1, &[]).await;
                return;
            }
        };
        // Idempotent consumer: a message whose delivery already completed is not sent again.
        let log = self.log.clone();
        let id = env.message_id.clone();
        if let Ok(Ok(Some(done))) = tokio::task::spawn_blocking(move || log.get(&id)).await {
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
                self.dead_letter(&d, &r, Some(&env), 1, &[]).await;
                return;
            }
            let ev = TraceEvent::new(TraceEventKind::Delivered, &self.component, Some(&env))
                .reason(format!(
                    "already delivered (receipt {}); redelivery acked without calling the agency",
                    done.receipt
                ));
            let _ = self.tracer.emit(&ev).await;
            let _ = d.ack(BasicAckOptions::default()).await;
            return;
        }
        if let Err(why) = self.adapter.check(&env) {
            let r = Rejection::new(
                RejectCode::NotDeliverable,
                format!("not sent to {} ({}): {why}", self.unit.name, self.unit.code),
            );
            self.dead_letter(&d, &r, Some(&env), 0, &[]).await;
            return;
        }
        if self
            .tracer
            .emit(&TraceEvent::new(
                TraceEventKind::Received,
                &self.component,
                Some(&env),
            ))
            .await
            .is_err()
        {
            let _ = d
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await;
            return;
        }
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
        let outcome = deliver_with_retries(
            self.adapter.as_ref(),
            &env,
            &self.ctx.settings.retry,
            on_retry,
        )
        .await;
        let _ = emitter.await;
        match outcome {
            Final::Delivered { receipt, attempts } => {
                let reply_to = match self.ctx.store.origin(&env.ma_ho_so) {
                    Ok(Some(o)) => o.origin_unit,
                    _ => env.sender.clone(),
                };
                let rec = DeliveryRecord {
                    message_id: env.message_id.clone(),
                    unit: self.unit.code.clone(),
                    ma_ho_so: env.ma_ho_so.clone(),
                    ma_tthc: env.ma_tthc.clone(),
                    kind: env.kind.0.clone(),
                    sender: env.sender.clone(),
                    reply_to,
                    correlation_id: env.correlation_id.clone(),
                    receipt: receipt.clone(),
                    at_ms: lienthong_core::clock::now_ms(),
                };
                let log = self.log.clone();
                if !matches!(
                    tokio::task::spawn_blocking(move || log.record(&rec)).await,
                    Ok(Ok(()))
                ) {
                    tracing::error!(
                        message = "cannot record the delivery; leaving it unacked (the retry carries the same idempotency key)"
                    );
                    let _ = d
                        .nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        })
                        .await;
                    return;
                }
                let ev = TraceEvent::new(TraceEventKind::Delivered, &self.component, Some(&env))
                    .attempt(attempts)
                    .reason(format!("receipt {receipt}"));
                let _ = self.tracer.emit(&ev).await;
                let _ = d.ack(BasicAckOptions::default()).await;
            }
            Final::Failed {
                reason,
                exhausted,
                attempts,
                history,
            } => {
                let code = if exhausted {
                    RejectCode::RetriesExhausted
                } else {
                    RejectCode::AgencyRefused
                };
                let detail = if exhausted {
                    format!(
                        "{} ({}) still failing after {attempts} attempts: {reason}",
                        self.unit.name, self.unit.code
                    )
                } else {
                    format!(
                        "{} ({}) refused it: {reason}",
                        self.unit.name, self.unit.code
                    )
                };
                let r = Rejection::new(code, detail);
                let ev = TraceEvent::new(TraceEventKind::Failed, &self.component, Some(&env))
                    .attempt(attempts)
                    .reason(reason.clone());
                let _ = self.tracer.emit(&ev).await;
                self.dead_letter(&d, &r, Some(&env), attempts, &history)
                    .await;
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
        let notice_env = env.map(|env| {
            let mut n = env.clone();
            if let Ok(Some(o)) = self.ctx.store.origin(&env.ma_ho_so) {
                n.sender = o.origin_unit;
            }
            n
        });
        let notify = notice_env.as_ref().map(|e| (e, self.ctx.registry.as_ref()));
        self.dlc.settle(d, dl, notify).await;
    }
}
