//! The adapter component: for every unit reached by an adapter, consume `<prefix>.unit.<code>`,
//! hand each envelope to the unit's [`Adapter`] with the shared retry policy, record the
//! delivery durably before the ack (so a redelivered message is not sent twice), and
//! dead-letter permanent failures and exhausted retries with the agency's reason.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lienthong_adapters::Adapter;
use lienthong_adapters::deliveries::{self, DeliveryLog, DeliveryRecord};
use lienthong_adapters::retry::{Final, deliver_with_retries};
use lienthong_core::amqp::Publisher;
use lienthong_core::deadletter::{DeadLetter, DeadLetterChannel};
use lienthong_core::envelope::{Envelope, RejectCode, Rejection};
use lienthong_core::hold::Hold;
use lienthong_core::registry::{Reach, Unit};
use lienthong_core::trace::{TraceEvent, TraceEventKind, Tracer};

use crate::consume::requeue;
use crate::context::Ctx;

/// The supervised component's name (health, metrics).
const COMPONENT: &str = "adapters";

#[derive(Clone)]
struct Worker {
    ctx: Ctx,
    unit: Unit,
    component: String,
    adapter: Arc<dyn Adapter>,
    log: DeliveryLog,
    tracer: Tracer,
    dlc: DeadLetterChannel,
    retry: Publisher,
    /// The operator's webhook, for the unreadable-answers alert.
    webhook: crate::alerts::Webhook,
}

/// Headers a message carries through delayed retries.
pub mod retry_headers {
    /// Delayed retry rounds so far.
    pub const DELAYED_ATTEMPTS: &str = "x-lienthong-delayed-attempts";
    /// When the first attempt was made, ms since the epoch.
    pub const FIRST_ATTEMPT_AT: &str = "x-lienthong-first-attempt-at";
    /// Reasons of every failed attempt so far, one per line (clipped).
    pub const HISTORY: &str = "x-lienthong-history";
    /// `true` when the last attempt's outcome was unknown: resolve by a status lookup first.
    pub const OUTCOME_UNKNOWN: &str = "x-lienthong-outcome-unknown";
    /// Unreadable answers so far (attempts and status lookups, every round).
    pub const UNREADABLE_ANSWERS: &str = "x-lienthong-unreadable-answers";
    /// `true` once an operator was alerted about them (one alert per message).
    pub const UNREADABLE_ALERTED: &str = "x-lienthong-unreadable-alerted";
}

/// Unreadable answers of one message so far: how many, the last one's excerpt, and whether the
/// operator was alerted (carried in headers through the delayed rounds).
#[derive(Debug, Clone, Default)]
struct Unreadable {
    count: u32,
    last: Option<String>,
    alerted: bool,
}

impl Unreadable {
    fn from_headers(props: &lapin::BasicProperties) -> Unreadable {
        use lienthong_core::amqp::{header_i64, header_str};
        Unreadable {
            count: header_i64(props, retry_headers::UNREADABLE_ANSWERS)
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32,
            last: None,
            alerted: header_str(props, retry_headers::UNREADABLE_ALERTED).as_deref()
                == Some("true"),
        }
    }

    fn add(&mut self, n: u32, last: Option<String>) {
        self.count = self.count.saturating_add(n);
        if last.is_some() {
            self.last = last;
        }
    }
}

/// Run one consumer per adapter-reached unit until shutdown. `callback_base` is the bus's
/// public HTTP base URL that agencies call back.
pub async fn run(ctx: Ctx, callback_base: String) -> anyhow::Result<()> {
    let log = DeliveryLog::new(ctx.store.clone())?;
    let webhook = crate::alerts::Webhook::new(&ctx.settings.process);
    let mut tasks = tokio::task::JoinSet::new();
    for unit in ctx
        .registry
        .units()
        .filter(|u| matches!(u.reach, Reach::Adapter { .. }))
    {
        let adapter = lienthong_adapters::build_with(unit, &callback_base, Some(ctx.store.clone()))
            .map_err(anyhow::Error::msg)?;
        let component = format!("adapter:{}", unit.code);
        let tracer = ctx
            .tracer(COMPONENT, &format!("trace {}", unit.code))
            .await?;
        let dlc = DeadLetterChannel::new(
            ctx.publisher(COMPONENT, &format!("dead letters {}", unit.code))
                .await?,
            tracer.clone(),
            ctx.names.clone(),
            &component,
        )
        .with_shutdown(ctx.shutdown.clone());
        let worker = Worker {
            ctx: ctx.clone(),
            unit: unit.clone(),
            component,
            adapter,
            log: log.clone(),
            tracer,
            dlc,
            retry: ctx
                .publisher(COMPONENT, &format!("retry {}", unit.code))
                .await?,
            webhook: webhook.clone(),
        };
        let channel = ctx.conn.create_channel().await?;
        let queue = ctx.names.unit_queue(&unit.code);
        let shutdown = ctx.shutdown.clone();
        let grace = Duration::from_millis(ctx.settings.bus.shutdown_grace_ms);
        // The national portal gets a dossier's progress in the order the process manager sent
        // it (each message upserts the dossier's status): one message at a time. In-process
        // retries keep that order; a message parked for a delayed retry does not hold the
        // others back.
        let prefetch = if unit.kind == lienthong_core::registry::UnitKind::Portal {
            1
        } else {
            ctx.settings.topology.adapter_prefetch
        };
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
        let known = match tokio::task::spawn_blocking(move || log.get(&id)).await {
            Ok(Ok(k)) => k,
            _ => {
                tracing::error!(message = "cannot read the delivery log; requeueing");
                tokio::time::sleep(Duration::from_millis(500)).await;
                requeue(&d).await;
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
                self.dead_letter(&d, &r, Some(&env), 1, &[]).await;
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
        // The last attempt's outcome was unknown: ask the agency before sending again. Only a
        // readable "found" at status 2 or later is delivered; anything else sends again (an
        // unreadable lookup answer counts towards the operator's alert).
        if lienthong_core::amqp::header_str(&d.properties, retry_headers::OUTCOME_UNKNOWN)
            .as_deref()
            == Some("true")
            && env.kind.is_forward()
        {
            match self.adapter.status(&env.ma_ho_so).await {
                lienthong_adapters::StatusLookup::Found(st) if st.status >= 2 => {
                    let receipt = st
                        .receipt
                        .clone()
                        .unwrap_or_else(|| format!("TrangThaiHoSo {}", st.status));
                    let ev = TraceEvent::new(TraceEventKind::Delivered, &self.component, Some(&env))
                        .reason(format!("outcome was unknown; the agency's status lookup shows it took the dossier (receipt {receipt}); not sent again"));
                    let rec = self.record_for(&env, &receipt).await;
                    if self.record_delivery(rec, ev).await {
                        let _ = d.ack(BasicAckOptions::default()).await;
                    } else {
                        requeue(&d).await;
                    }
                    return;
                }
                lienthong_adapters::StatusLookup::Unreadable { answer, .. } => {
                    unreadable.add(1, Some(answer));
                }
                _ => {}
            }
        }
        if let Err(why) = self.adapter.check(&env) {
            let r = Rejection::new(
                RejectCode::NotDeliverable,
                format!("not sent to {} ({}): {why}", self.unit.name, self.unit.code),
            );
            self.dead_letter(&d, &r, Some(&env), 0, &[]).await;
            return;
        }
        // The delivery's record (its reply address read once), written ahead of the first call
        // with the `received` event.
        let sending = self.record_for(&env, "").await;
        let received = TraceEvent::new(TraceEventKind::Received, &self.component, Some(&env));
        if let Err(e) = self.begin_delivery(sending.clone(), received).await {
            tracing::error!(message = "cannot write the delivery log or its trace; requeueing", error = %e);
            tokio::time::sleep(Duration::from_millis(500)).await;
            requeue(&d).await;
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
        let (n, last) = match &outcome {
            Final::Delivered {
                unreadable_answers,
                last_unreadable_answer,
                ..
            }
            | Final::Failed {
                unreadable_answers,
                last_unreadable_answer,
                ..
            } => (*unreadable_answers, last_unreadable_answer.clone()),
        };
        unreadable.add(n, last);
        self.alert_if_unreadable(&env, &mut unreadable, n).await;
        match outcome {
            Final::Delivered {
                receipt, attempts, ..
            } => {
                // Crash test hook: stop here, the agency has answered and nothing is written
                // yet; the delivery stays unacked until the process dies.
                fail::fail_point!("adapter-after-agency-answer", |_| {
                    tracing::warn!(message = "fail point adapter-after-agency-answer: holding the delivery", ma_ho_so = %env.ma_ho_so, message_id = %env.message_id);
                });
                let ev = TraceEvent::new(TraceEventKind::Delivered, &self.component, Some(&env))
                    .attempt(attempts)
                    .reason(format!("receipt {receipt}"));
                let rec = DeliveryRecord {
                    receipt: receipt.clone(),
                    delivered: !receipt.is_empty(),
                    at_ms: lienthong_core::clock::now_ms(),
                    ..sending
                };
                if !self.record_delivery(rec, ev).await {
                    tracing::error!(
                        message = "cannot record the delivery; leaving it unacked (the retry carries the same idempotency key)"
                    );
                    requeue(&d).await;
                    return;
                }
                // Crash test hook: the delivery log says delivered, the ack is not sent.
                fail::fail_point!("adapter-before-ack", |_| {
                    tracing::warn!(message = "fail point adapter-before-ack: holding the delivery", ma_ho_so = %env.ma_ho_so, message_id = %env.message_id);
                });
                let _ = d.ack(BasicAckOptions::default()).await;
            }
            Final::Failed {
                reason,
                exhausted,
                attempts,
                history,
                retry_after,
                unknown,
                ..
            } => {
                if exhausted {
                    self.park_or_give_up(
                        &d,
                        &env,
                        attempts,
                        history,
                        retry_after,
                        unknown,
                        &unreadable,
                    )
                    .await;
                    return;
                }
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
                self.dead_letter(&d, &r, Some(&env), attempts, &history)
                    .await;
            }
        }
    }

    /// Count `new` unreadable answers of this round, and alert the operator once per message
    /// when `unreadable` reaches `[retry] unreadable_alert_after`: a trace event `alert` on the
    /// dossier with an excerpt of the last answer, a log warning, the webhook
    /// ([`crate::alerts::UnreadableAnswers`]).
    async fn alert_if_unreadable(&self, env: &Envelope, unreadable: &mut Unreadable, new: u32) {
        if new > 0 {
            metrics::counter!("lienthong_adapter_unreadable_answers_total", "unit" => self.unit.code.clone())
                .increment(u64::from(new));
        }
        let after = self.ctx.settings.retry.unreadable_alert_after.max(1);
        if unreadable.alerted || unreadable.count < after {
            return;
        }
        unreadable.alerted = true;
        let excerpt = unreadable.last.clone().unwrap_or_default();
        let reason = format!(
            "{} answers from {} ({}) could not be read as its interface's answer; usually a misconfigured adapter (endpoint, path, format) or a proxy in front of the agency — check with `lienthong check {}`. The delivery keeps retrying with the same Idempotency-Key. Last answer: «{}»",
            unreadable.count, self.unit.name, self.unit.code, self.unit.code, excerpt
        );
        metrics::counter!("lienthong_adapter_alerts_total", "unit" => self.unit.code.clone(), "level" => crate::alerts::UnreadableAnswers::LEVEL)
            .increment(1);
        tracing::warn!(
            message = "an agency's answers cannot be read",
            unit = self.unit.code,
            ma_ho_so = env.ma_ho_so,
            message_id = env.message_id,
            answers = unreadable.count
        );
        let ev = TraceEvent::new(TraceEventKind::Alert, &self.component, Some(env)).reason(
            format!("{}: {reason}", crate::alerts::UnreadableAnswers::LEVEL),
        );
        let _ = self.tracer.emit(&ev).await;
        self.webhook
            .post(&crate::alerts::UnreadableAnswers {
                level: crate::alerts::UnreadableAnswers::LEVEL,
                ma_ho_so: env.ma_ho_so.clone(),
                ma_tthc: env.ma_tthc.clone(),
                message_id: env.message_id.clone(),
                holder: self.unit.code.clone(),
                answers: unreadable.count,
                answer: excerpt,
                reason,
            })
            .await;
    }

    /// The recorded origin of dossier `ma_ho_so` (None when unknown or unreadable), read on the
    /// blocking pool.
    async fn origin(&self, ma_ho_so: &str) -> Option<lienthong_core::store::Origin> {
        let ma = ma_ho_so.to_string();
        self.ctx
            .store
            .read(move |s| s.origin(&ma))
            .await
            .ok()
            .flatten()
    }

    async fn record_for(&self, env: &Envelope, receipt: &str) -> DeliveryRecord {
        // Results go to the dossier's centre, or to the sender when the unit's adapter settings
        // say `results_to = "sender"` (Tax answers the land registration office).
        let to_sender = matches!(
            &self.unit.reach,
            Reach::Adapter { settings, .. }
                if settings.get("results_to").and_then(|v| v.as_str()) == Some("sender")
        );
        let reply_to = match self.origin(&env.ma_ho_so).await {
            Some(o) if !to_sender => o.origin_unit,
            _ => env.sender.clone(),
        };
        DeliveryRecord {
            message_id: env.message_id.clone(),
            unit: self.unit.code.clone(),
            ma_ho_so: env.ma_ho_so.clone(),
            ma_tthc: env.ma_tthc.clone(),
            kind: env.kind.0.clone(),
            sender: env.sender.clone(),
            reply_to,
            correlation_id: env.correlation_id.clone(),
            receipt: receipt.to_string(),
            at_ms: lienthong_core::clock::now_ms(),
            delivered: !receipt.is_empty(),
        }
    }

    /// Write-ahead: record that the message is being sent (before the first call), so that an
    /// agency callback arriving before the receipt is read still finds its dossier; with the
    /// `received` event, in the process's group commit.
    async fn begin_delivery(
        &self,
        rec: DeliveryRecord,
        received: TraceEvent,
    ) -> Result<(), String> {
        self.tracer
            .emit_with(&self.ctx.writer, vec![received], move |c| {
                deliveries::insert_sending(c, &rec)
            })
            .await
    }

    /// Record a completed delivery in the delivery log (before the ack), with its `delivered`
    /// event, in the process's group commit. False if the store failed or the trace was not
    /// confirmed.
    async fn record_delivery(&self, rec: DeliveryRecord, delivered: TraceEvent) -> bool {
        let r = self
            .tracer
            .emit_with(&self.ctx.writer, vec![delivered], move |c| {
                deliveries::record_in(c, &rec)
            })
            .await;
        if let Err(e) = &r {
            tracing::warn!(message = "the delivery record or its trace failed", error = %e);
        }
        r.is_ok()
    }

    /// After the in-process budget: wait in the delayed retry queue of the next step (nothing
    /// stays unacked meanwhile), or, past `max_delayed_attempts` or `max_age_ms`, dead-letter
    /// with the full reason history.
    #[allow(clippy::too_many_arguments)]
    async fn park_or_give_up(
        &self,
        d: &Delivery,
        env: &Envelope,
        attempts: u32,
        history: Vec<String>,
        retry_after: Option<Duration>,
        unknown: bool,
        unreadable: &Unreadable,
    ) {
        use lapin::types::{AMQPValue, LongString};
        use lienthong_core::amqp::{header_i64, header_str};
        let rs = &self.ctx.settings.retry;
        let rounds = header_i64(&d.properties, retry_headers::DELAYED_ATTEMPTS)
            .unwrap_or(0)
            .max(0) as u32;
        let now = lienthong_core::clock::now_ms();
        let first = header_i64(&d.properties, retry_headers::FIRST_ATTEMPT_AT).unwrap_or(now);
        let mut all: Vec<String> = header_str(&d.properties, retry_headers::HISTORY)
            .map(|h| h.lines().map(str::to_string).collect())
            .unwrap_or_default();
        all.extend(history);
        let last = all.last().cloned().unwrap_or_default();
        let age_ms = (now - first).max(0) as u64;
        if rounds >= rs.max_delayed_attempts || age_ms >= rs.max_age_ms || rs.delays_ms.is_empty() {
            let r = Rejection::new(
                RejectCode::RetriesExhausted,
                format!(
                    "{} ({}) still failing after {} delayed rounds over {} s (last: {last})",
                    self.unit.name,
                    self.unit.code,
                    rounds,
                    age_ms / 1000
                ),
            );
            let ev = TraceEvent::new(TraceEventKind::Failed, &self.component, Some(env))
                .attempt(attempts)
                .reason(last);
            let _ = self.tracer.emit(&ev).await;
            self.dead_letter(d, &r, Some(env), attempts, &all).await;
            return;
        }
        // The step: the next configured delay, or the smallest one that honours Retry-After.
        let mut delay = rs.delays_ms[(rounds as usize).min(rs.delays_ms.len() - 1)];
        if let Some(ra) = retry_after {
            let ra = ra.as_millis() as u64;
            delay = rs
                .delays_ms
                .iter()
                .copied()
                .find(|s| *s >= ra.max(delay))
                .unwrap_or_else(|| rs.delays_ms.iter().copied().max().unwrap_or(delay));
        }
        let mut headers = d.properties.headers().clone().unwrap_or_default();
        // A fresh publish, not a dead-letter hop: drop the broker's x-death record so that its
        // dead-letter cycle detection never sees a loop.
        let kept: std::collections::BTreeMap<_, _> = headers
            .inner()
            .iter()
            .filter(|(k, _)| {
                !k.as_str().starts_with("x-death")
                    && !k.as_str().starts_with("x-first-death")
                    && !k.as_str().starts_with("x-last-death")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        headers = kept.into();
        let hist: Vec<String> = all
            .iter()
            .rev()
            .take(30)
            .rev()
            .map(|h| lienthong_core::envelope::clip(h, 300))
            .collect();
        headers.insert(
            retry_headers::DELAYED_ATTEMPTS.into(),
            AMQPValue::LongLongInt(i64::from(rounds + 1)),
        );
        headers.insert(
            retry_headers::FIRST_ATTEMPT_AT.into(),
            AMQPValue::LongLongInt(first),
        );
        headers.insert(
            retry_headers::HISTORY.into(),
            AMQPValue::LongString(LongString::from(hist.join("\n"))),
        );
        headers.insert(
            retry_headers::OUTCOME_UNKNOWN.into(),
            AMQPValue::LongString(LongString::from(if unknown { "true" } else { "false" })),
        );
        headers.insert(
            retry_headers::UNREADABLE_ANSWERS.into(),
            AMQPValue::LongLongInt(i64::from(unreadable.count)),
        );
        headers.insert(
            retry_headers::UNREADABLE_ALERTED.into(),
            AMQPValue::LongString(LongString::from(if unreadable.alerted {
                "true"
            } else {
                "false"
            })),
        );
        let props = d
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let exchange = self.ctx.names.retry(delay);
        // Held (not requeued, which would call the agency again) while the retry queue cannot
        // take it.
        let mut hold = Hold::new(COMPONENT, Some(self.ctx.shutdown.clone()));
        let parked = loop {
            match self
                .retry
                .publish(&exchange, &self.unit.code, &d.data, props.clone(), true)
                .await
            {
                Ok(()) => break Ok(()),
                Err(e) => {
                    if !hold
                        .again(&format!("cannot park the message in {exchange}: {e}"))
                        .await
                    {
                        break Err(e);
                    }
                }
            }
        };
        match parked {
            Ok(()) => {
                let ev = TraceEvent::new(TraceEventKind::Retried, &self.component, Some(env))
                    .attempt(attempts)
                    .reason(format!(
                        "{last}; waiting {delay} ms in {exchange} (delayed round {} of at most {})",
                        rounds + 1,
                        rs.max_delayed_attempts
                    ));
                let _ = self.tracer.emit(&ev).await;
                let _ = d.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                tracing::error!(message = "cannot park the message in the delayed retry queue; requeueing", error = %e);
                requeue(d).await;
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
            Some(e) => self.origin(&e.ma_ho_so).await,
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
