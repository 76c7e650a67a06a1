//! The router: consumes `<prefix>.router` (fed by the ingress exchange), validates each
//! envelope (schema, registry, route; a centre's filing also against its procedure's data
//! schema), publishes it to the receiver's queue with a publisher
//! confirm and `mandatory`, and acks the ingress delivery only after the confirm. Anything
//! invalid or unroutable is dead-lettered with a human-readable reason (and the sender told),
//! never dropped; the router keeps going.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lienthong_core::amqp::{PublishError, Publisher};
use lienthong_core::deadletter::{DeadLetter, DeadLetterChannel};
use lienthong_core::envelope::{Envelope, RejectCode, Rejection};
use lienthong_core::hold::Hold;
use lienthong_core::store::{DossierNote, Origin};
use lienthong_core::trace::{TraceEvent, TraceEventKind, Tracer};
use lienthong_core::{filing, overflow, routing};

use crate::consume::requeue;
use crate::context::Ctx;

const COMPONENT: &str = "router";

/// The router's handles.
#[derive(Clone)]
struct Router {
    ctx: Ctx,
    publisher: Publisher,
    tracer: Tracer,
    dlc: DeadLetterChannel,
    pm: crate::process_manager::ProcessManager,
    /// The router's own read connection (WAL: reads do not wait for writers).
    reader: lienthong_core::store::Store,
    /// Group commit of the one write per message.
    writer: lienthong_core::store::MessageWriter,
    /// The broker user the bus connects as: its messages may carry any unit as sender.
    bus_user: Option<String>,
}

/// Envelopes up to this size are validated on the runtime thread (tens of µs); larger ones on
/// the blocking pool, away from the threads that carry heartbeats.
const INLINE_VALIDATION_BYTES: usize = 256 * 1024;

/// Run the router until shutdown.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    let publisher = ctx.publisher(COMPONENT, "deliver").await?;
    let tracer = ctx.tracer(COMPONENT, "trace").await?;
    let dlc = DeadLetterChannel::new(
        ctx.publisher(COMPONENT, "dead letters").await?,
        tracer.clone(),
        ctx.names.clone(),
        COMPONENT,
    )
    .with_shutdown(ctx.shutdown.clone());
    let pm = crate::process_manager::ProcessManager::new(
        ctx.clone(),
        ctx.publisher(COMPONENT, "process outbox").await?,
        tracer.clone(),
    );
    // The sweeper: outbox left by a crash, due-soon and overdue alerts. It lives as long as this
    // connection's router: aborted however `run` ends (a restart starts a new one).
    let sweeper = AbortOnDrop(tokio::spawn(pm.clone().sweep_forever()));
    let router = Router {
        ctx: ctx.clone(),
        publisher,
        tracer,
        dlc,
        pm,
        reader: lienthong_core::store::Store::open(ctx.store_location())?,
        writer: ctx.writer.clone(),
        bus_user: lienthong_core::amqp::connection_user(&ctx.conn),
    };
    let grace = Duration::from_millis(ctx.settings.bus.shutdown_grace_ms);
    // The process manager reads the dead letter channel too: a dead letter of a message it
    // sent blocks the step (or result) that waits on it, visibly.
    let pm = router.pm.clone();
    let (dead_queue, router_queue) = (ctx.names.dead_process_queue(), ctx.names.router_queue());
    let dead = crate::consume::consume(
        ctx.conn.create_channel().await?,
        &dead_queue,
        "lienthong-process-dead-letters",
        16,
        ctx.shutdown.clone(),
        grace,
        move |d| {
            let pm = pm.clone();
            async move { pm.dead_letter(d).await }
        },
    );
    let routing = crate::consume::consume(
        ctx.conn.create_channel().await?,
        &router_queue,
        "lienthong-router",
        ctx.settings.topology.router_prefetch,
        ctx.shutdown.clone(),
        grace,
        move |d| {
            let r = router.clone();
            async move { r.handle(d).await }
        },
    );
    // Either consumer failing (its channel closed) ends the component: the supervisor restarts
    // it on a new connection. On shutdown both finish their in-flight work.
    tokio::pin!(routing, dead);
    let r = tokio::select! {
        r = &mut routing => match r {
            Ok(()) => dead.await,
            e => e,
        },
        r = &mut dead => match r {
            Ok(()) => routing.await,
            e => e,
        },
    };
    drop(sweeper);
    r.map_err(anyhow::Error::from)
}

/// A task aborted when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Router {
    /// The broker user a delivery speaks for ([`lienthong_core::senders::effective_user`]).
    fn user_of<'a>(&self, d: &'a Delivery) -> Option<&'a str> {
        let original = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(lienthong_core::senders::ORIGINAL_USER_HEADER))
            .and_then(|v| match v {
                lapin::types::AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
                lapin::types::AMQPValue::ShortString(s) => Some(s.as_str()),
                _ => None,
            });
        lienthong_core::senders::effective_user(
            self.bus_user.as_deref(),
            d.properties.user_id().as_ref().map(|u| u.as_str()),
            original,
        )
    }

    async fn handle(&self, d: Delivery) {
        use lienthong_core::telemetry::{KeyValue, Stage, enabled, from_amqp, in_span};
        let parent = enabled().then(|| from_amqp(d.properties.headers().as_ref()));
        in_span(
            Stage::Route,
            || parent,
            || {
                vec![
                    KeyValue::new("messaging.system", "rabbitmq"),
                    KeyValue::new("messaging.destination.name", self.ctx.names.router_queue()),
                    KeyValue::new("messaging.operation.type", "process"),
                ]
            },
            self.handle_in_span(d),
        )
        .await
    }

    async fn handle_in_span(&self, d: Delivery) {
        let queue = self.ctx.names.router_queue();
        // A publish that is not confirmed (a channel being repaired, a topology that cannot be
        // declared, the broker's alarm) or a store that fails is tried again while the delivery
        // is held, not requeued at once: each requeue counts against the queue's delivery limit.
        let mut hold = Hold::new(COMPONENT, Some(self.ctx.shutdown.clone()));
        let outcome = loop {
            let why = match self.route(&d, hold.attempts()).await {
                Err(Failure::Publish(e)) => format!("publish not confirmed: {e}"),
                Err(Failure::Retry(why)) => why,
                other => break Some(other),
            };
            if !hold.again(&why).await {
                break None;
            }
        };
        match outcome {
            None => requeue(&d).await,
            Some(Ok(())) => {
                if let Err(e) = d.ack(BasicAckOptions::default()).await {
                    tracing::warn!(message = "ack failed; the message will be redelivered (idempotent downstream)", error = %e);
                }
            }
            Some(Err(Failure::Reject(rejection, env))) => {
                let env = env.map(|b| *b).or_else(|| Envelope::salvage(&d.data));
                // Only a sender the broker authenticated is told, and only its dossier's trace
                // shows the dead letter: a message published as someone else (sender-mismatch,
                // or unreadable from a user that is not the sender's) has no effect on the
                // dossier or the unit it names.
                let env = env.filter(|e| {
                    lienthong_core::senders::authenticated(
                        &self.ctx.registry,
                        self.bus_user.as_deref(),
                        self.user_of(&d),
                        &e.sender,
                    )
                });
                tracing::info!(
                    message = "dead-lettering",
                    reason = %rejection,
                    ma_ho_so = env.as_ref().map(|e| e.ma_ho_so.as_str()).unwrap_or("-"),
                    message_id = env.as_ref().map(|e| e.message_id.as_str()).unwrap_or("-"),
                    trace_id = lienthong_core::telemetry::trace_id().as_deref().unwrap_or("-")
                );
                let dl = DeadLetter {
                    body: &d.data,
                    props: &d.properties,
                    rejection: &rejection,
                    queue: &queue,
                    attempts: 1,
                    history: &[],
                    envelope: env.as_ref(),
                };
                let notify = env.as_ref().map(|e| (e, self.ctx.registry.as_ref()));
                self.dlc.settle(&d, dl, notify).await;
            }
            Some(Err(Failure::Publish(_) | Failure::Retry(_))) => requeue(&d).await,
        }
    }

    /// Route one delivery; `attempt` is how many earlier attempts on it failed (the process
    /// manager's path traces `received` only on the first).
    async fn route(&self, d: &Delivery, attempt: u32) -> Result<(), Failure> {
        // Parsing, NFC and schema validation take tens of µs for a usual envelope (done here, no
        // thread hand-off) and can be CPU-heavy for large ones: those go to the blocking pool.
        let accepted = if d.data.len() <= INLINE_VALIDATION_BYTES {
            self.ctx.validator.accept(&d.data)
        } else {
            let validator = self.ctx.validator.clone();
            let body = d.data.clone();
            tokio::task::spawn_blocking(move || validator.accept(&body))
                .await
                .map_err(|e| Failure::Retry(format!("validation task failed: {e}")))?
        };
        let env = accepted.map_err(|r| {
            lienthong_core::telemetry::fail(&r.reason());
            Failure::Reject(r, None)
        })?;
        lienthong_core::telemetry::annotate(|| crate::telemetry::envelope_attributes(&env));
        // Who published it (the broker validated `user_id`) must be allowed to send as
        // `sender`; otherwise nothing of it is traced or acted on.
        let publisher = match lienthong_core::senders::check(
            &self.ctx.registry,
            self.bus_user.as_deref(),
            self.user_of(d),
            &env.sender,
        ) {
            Ok(p) => p,
            Err(r) => return Err(Failure::Reject(r, None)),
        };
        // Only the bus mints blob references (its HTTP API claim-checked the message).
        if let Err(r) =
            routing::check_references(&env, publisher == lienthong_core::senders::Publisher::Bus)
        {
            return Err(Failure::Reject(r, Some(Box::new(env))));
        }
        let received = TraceEvent::new(TraceEventKind::Received, COMPONENT, Some(&env))
            .attempt(if d.redelivered { 2 } else { 1 });
        // The events of this message go to the trace together, when the outcome is known.
        // One store read (indexed, on the router's own connection): does the process manager
        // run the dossier, where did it come from, and was the id used before
        // ([`lienthong_core::store::Store::arrival`]). A point read ([`Store::point_query`]): on
        // SQLite it runs on this async worker (a WAL reader never waits for the writer's lock
        // and the read takes microseconds, while the hand-off to the blocking pool and back
        // cost the router ~15% more CPU per message: A/B, BENCHMARKS.md); on PostgreSQL, one
        // round trip to the server, awaited here too.
        let arrival = self
            .reader
            .arrival_now(&env.ma_ho_so, &env.message_id)
            .await
            .map_err(|e| Failure::Retry(format!("cannot read the store: {e}")))?;
        let (runs, origin) = (arrival.runs, arrival.origin);
        // A message id someone else already used is refused: receivers would drop it unseen.
        if let Err(r) = routing::check_message_id(&env, arrival.seen.as_ref()) {
            self.tracer.emit_all(vec![received]).await?;
            return Err(Failure::Reject(r, Some(Box::new(env))));
        }
        // The process manager runs the dossiers filed without a receiver.
        use crate::process_manager::PmError;
        if self.pm.manages(&env, runs).await {
            if attempt == 0 {
                self.tracer.emit_all(vec![received]).await?;
            }
            // A filing (not a later message of the dossier) must carry what its route needs.
            if filing::starts_run(&self.ctx.registry, &env, runs)
                && let Err(r) = self.ctx.filing.check(&self.ctx.registry, &env)
            {
                return Err(Failure::Reject(r, Some(Box::new(env))));
            }
            let step = lienthong_core::telemetry::in_span(
                lienthong_core::telemetry::Stage::ProcessStep,
                || None,
                || crate::telemetry::envelope_attributes(&env),
                self.pm.handle(&env),
            );
            return match step.await {
                Ok(()) => Ok(()),
                Err(PmError::Reject(r)) => Err(Failure::Reject(r, Some(Box::new(env)))),
                Err(PmError::Retry(e)) => Err(Failure::Retry(format!(
                    "the process manager could not finish: {e}"
                ))),
            };
        }
        // A centre's first forward of a dossier it drives itself (it records the origin) is its
        // filing: it must carry what the procedure's route needs.
        let decision =
            match routing::check(&self.ctx.registry, &env, origin.as_ref()).and_then(|dec| {
                if dec.records_origin {
                    self.ctx.filing.check(&self.ctx.registry, &env)?;
                }
                Ok(dec)
            }) {
                Ok(dec) => dec,
                Err(r) => {
                    self.tracer.emit_all(vec![received]).await?;
                    return Err(Failure::Reject(r, Some(Box::new(env))));
                }
            };
        // No `validated` event of its own (releases before issue 21's trace cut wrote one here):
        // every outcome from now on (routed, parked, or dead-lettered as unroutable / too large
        // after the publish) says the checks passed, and the events went to the trace in one
        // write anyway. One trace row, three index entries and a hash less per hop
        // (BENCHMARKS.md, 2026-12-06 (afternoon)).
        // Claim check: large inline attachments leave the envelope for the blob store.
        let mut env = env;
        if env.attachments.iter().any(|a| {
            a.content_base64.is_some()
                && a.size_bytes > self.ctx.settings.envelope.max_inline_attachment_bytes as u64
        }) {
            let blobs = self.ctx.blobs.clone();
            let threshold = self.ctx.settings.envelope.max_inline_attachment_bytes as u64;
            let res = tokio::task::spawn_blocking(move || {
                let mut e = env;
                let r = lienthong_core::claimcheck::claim_check(&mut e, blobs.as_ref(), threshold);
                (e, r)
            })
            .await;
            match res {
                Ok((e, Ok(_))) => {
                    // Who may fetch the blobs, and when they go: the dossier's.
                    let refs = lienthong_core::claimcheck::blob_refs(&e);
                    if let Err(why) = self.writer.record_blobs(&e.ma_ho_so, refs).await {
                        return Err(Failure::Retry(format!(
                            "cannot record the claim-checked blobs: {why}"
                        )));
                    }
                    env = e;
                }
                Ok((_, Err(e))) => {
                    return Err(Failure::Retry(format!("the claim-check store failed: {e}")));
                }
                Err(e) => {
                    return Err(Failure::Retry(format!("the claim-check task failed: {e}")));
                }
            }
        }
        let body = env.to_bytes();
        // The message store keeps every accepted envelope (for `lienthong messages resend`);
        // the delivery is acked only once it is committed and the publish confirmed.
        let id = env.message_id.clone();
        // What the message says about its dossier, for the dossier index.
        let note = DossierNote::of(&env, &decision.receiver);
        // A centre's first forward records the dossier's origin, in the same transaction.
        let new_origin = decision.records_origin.then(|| Origin {
            ma_ho_so: env.ma_ho_so.clone(),
            ma_tthc: env.ma_tthc.clone(),
            origin_unit: env.sender.clone(),
            correlation_id: env.correlation_id.clone(),
        });
        let records_origin = new_origin.is_some();
        // Stamped as it is handed to the broker (traced once the confirm is in): the unit's
        // `delivered` can be committed before the confirm comes back, never before this.
        let routed = TraceEvent::new(TraceEventKind::Routed, COMPONENT, Some(&env)).reason(
            format!("to queue {}", self.ctx.names.unit_queue(&decision.receiver)),
        );
        let t0 = std::time::Instant::now();
        let store = async {
            let r = self.writer.accept(new_origin, &id, note, &body).await;
            (r, std::time::Instant::now())
        };
        let publish = async {
            let start = std::time::Instant::now();
            let r = self.publish_to(&decision.receiver, &body, &env).await;
            (r, start)
        };
        // A dossier's origin must be committed before the unit can answer (the answer's route
        // is checked against it), so that write goes first. Any other message is written while
        // it is being published: if the write then fails, the delivery is requeued and its
        // redelivery published again with the same message id, which receivers dedupe.
        let store_failed =
            |e: String| Failure::Retry(format!("cannot write the message store: {e}"));
        let (stored_at, (published, publish_start)) = if records_origin {
            let (kept, stored_at) = store.await;
            kept.map_err(store_failed)?;
            (stored_at, publish.await)
        } else {
            // The publish is polled first: the store's first poll compresses the body.
            let (published, (kept, stored_at)) = tokio::join!(publish, store);
            kept.map_err(store_failed)?;
            (stored_at, published)
        };
        let published_at = std::time::Instant::now();
        match published {
            Ok(()) => {}
            Err(PublishError::Returned { code, text }) => {
                // Returned although the publisher re-declared the topology and published again.
                self.tracer.emit_all(vec![received]).await?;
                return Err(Failure::Reject(
                    Rejection::new(
                        RejectCode::Unroutable,
                        format!(
                            "no queue took the message for {} (broker: {code} {text})",
                            decision.receiver
                        ),
                    ),
                    Some(Box::new(env)),
                ));
            }
            Err(PublishError::TooLarge(why)) => {
                self.tracer.emit_all(vec![received]).await?;
                return Err(Failure::Reject(
                    Rejection::new(
                        RejectCode::TooLarge,
                        format!(
                            "the broker refuses to carry it to {}: {why} (lower [envelope] max_envelope_bytes or max_inline_attachment_bytes below the broker's max_message_size)",
                            decision.receiver
                        ),
                    ),
                    Some(Box::new(env)),
                ));
            }
            Err(PublishError::Nacked) => {
                // The unit's queue is full (reject-publish): park the message for this unit
                // and ack, so that the other units' messages keep flowing.
                let (queue, delay) = overflow::park_queue_full(
                    &self.publisher,
                    &self.ctx.names,
                    &self.ctx.settings.retry.delays_ms,
                    &decision.receiver,
                    &body,
                    &env,
                )
                .await?;
                metrics::counter!("lienthong_queue_full_parked_total", "component" => COMPONENT)
                    .increment(1);
                let parked = TraceEvent::new(TraceEventKind::Retried, COMPONENT, Some(&env))
                    .reason(format!(
                        "{}: the broker refused it for queue {} (x-max-length / x-max-length-bytes reached); parked in {queue}, offered to the queue again in {delay} ms (held by the broker while it is still full)",
                        overflow::QUEUE_FULL,
                        self.ctx.names.unit_queue(&decision.receiver)
                    ));
                self.tracer.emit_all(vec![received, parked]).await?;
                return Ok(());
            }
            Err(e) => return Err(Failure::Publish(e)),
        }
        self.tracer.emit_all(vec![received, routed]).await?;
        stage("store_write", stored_at - t0);
        stage("publish_confirm", published_at - publish_start);
        stage("trace_write", published_at.elapsed());
        Ok(())
    }

    async fn publish_to(
        &self,
        receiver: &str,
        body: &[u8],
        env: &Envelope,
    ) -> Result<(), PublishError> {
        self.publisher
            .publish_to_unit(&self.ctx.names.deliver_exchange(), receiver, body, env)
            .await
    }
}

/// Record how long a routed message waited in one stage of the router, in
/// `lienthong_router_stage_seconds{stage}` (a histogram on `/metrics`, buckets
/// [`crate::metrics::STAGE_BUCKETS_S`]): `store_write` (the
/// message store's group commit), `publish_confirm` (publish to the unit's queue until the
/// broker's confirm), `trace_write` (the trace events' commit before the ack).
fn stage(name: &'static str, took: Duration) {
    metrics::histogram!("lienthong_router_stage_seconds", "stage" => name)
        .record(took.as_secs_f64());
}

/// Why a delivery was not acked.
enum Failure {
    /// The message is wrong: dead-letter it with this reason.
    Reject(Rejection, Option<Box<Envelope>>),
    /// A publish or its confirm failed: requeue.
    Publish(PublishError),
    /// The store or a task failed: requeue.
    Retry(String),
}

impl From<PublishError> for Failure {
    fn from(e: PublishError) -> Self {
        Failure::Publish(e)
    }
}
