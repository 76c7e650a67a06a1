//! The tracer: consumes `<prefix>.trace.store` into the trace table and `<prefix>.dead.log`
//! into the dead-letter log, in batches (one write of the group commit per batch, then one
//! multiple-ack), so `lienthong trace` and `lienthong dead-letters` read from the store; and
//! sweeps the store's retention (message store, process outbox, edXML outbox) every hour; and
//! writes the signed checkpoints of the trace's hash chain. With `[store] trace_direct` (the
//! default) there is no `<prefix>.trace.store` to consume: every process writes its own events.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lienthong_core::deadletter::read_dead_letter;
use lienthong_core::store::chain;
use lienthong_core::store::chain::SigningKey;
use lienthong_core::store::dead_letters::{DeadLetterRecord, insert_dead_letters_in};
use lienthong_core::store::trace::insert_events_in;
use lienthong_core::trace::{TraceEvent, TraceEventKind, parse_trace_message};

use crate::context::Ctx;

const BATCH: usize = 256;
const LINGER: Duration = Duration::from_millis(20);

/// Run the tracer until shutdown.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    // The signing key is read before anything runs: a key that is configured but unreadable
    // stops the component (its supervisor says why and tries again), never a silent fallback.
    let key = signing_key(&ctx.settings.trace)?;
    // Retention: purge now and every hour, through the process's group commit.
    let purge = tokio::spawn(purge_forever(ctx.clone()));
    let checkpoints = tokio::spawn(checkpoint_forever(ctx.clone(), key));
    let b = tokio::spawn(batch_loop(
        ctx.clone(),
        ctx.names.dead_log_queue(),
        Kind::DeadLog,
    ));
    let r = if ctx.settings.store.trace_direct {
        // Every process writes its trace events itself: `<p>.trace` is not declared and there
        // is nothing to consume.
        b.await
    } else {
        let a = tokio::spawn(batch_loop(
            ctx.clone(),
            ctx.names.trace_queue(),
            Kind::Trace,
        ));
        // Either consumer ending (its channel closed, its queue deleted) ends the component,
        // which its supervisor restarts on a new connection: no consumer is left dead behind
        // the other.
        let (mut a, mut b) = (a, b);
        tokio::select! {
            r = &mut a => match r {
                Ok(Ok(())) => b.await,
                e => { b.abort(); e }
            },
            r = &mut b => match r {
                Ok(Ok(())) => a.await,
                e => { a.abort(); e }
            },
        }
    };
    purge.abort();
    checkpoints.abort();
    r?
}

/// The checkpoints' signing key from `[trace] signing_key`, if configured (a warning when not).
/// Errors: configured but unreadable.
pub fn signing_key(
    settings: &lienthong_core::registry::TraceSettings,
) -> anyhow::Result<Option<SigningKey>> {
    match &settings.signing_key {
        Some(r) => Ok(Some(
            chain::load_signing_key(r).map_err(anyhow::Error::msg)?,
        )),
        None => {
            tracing::warn!(
                message = "no [trace] signing_key: the trace's hash chain is kept but its checkpoints are not signed"
            );
            Ok(None)
        }
    }
}

/// Write a checkpoint of the trace chain's head every `[trace] checkpoint_interval_secs` (when
/// it moved), signed with `key` when there is one, until shutdown.
async fn checkpoint_forever(ctx: Ctx, key: Option<SigningKey>) {
    let every = Duration::from_secs(ctx.settings.trace.checkpoint_interval_secs.max(1));
    let mut stop = ctx.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.changed() => return,
        }
        match ctx.writer.checkpoint(key.clone()).await {
            Ok(Some(n)) => tracing::debug!(
                message = "trace checkpoint written",
                events = n,
                signed = key.is_some()
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(message = "trace checkpoint failed; will retry", error = %e),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Trace,
    DeadLog,
}

async fn batch_loop(ctx: Ctx, queue: String, kind: Kind) -> anyhow::Result<()> {
    let channel = ctx.conn.create_channel().await?;
    channel
        .basic_qos(
            ctx.settings.topology.tracer_prefetch,
            BasicQosOptions::default(),
        )
        .await?;
    let tag = format!("lienthong-tracer-{queue}");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let bus_user = lienthong_core::trace::broker_user(&ctx.settings.bus.amqp_url);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => break,
            n = consumer.next() => match n {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the consumer of {queue} was cancelled or its channel closed"),
            },
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(Ok(d))) => batch.push(d),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) | Err(_) => break,
            }
        }
        let rows = batch
            .iter()
            .map(|d| (d.data.clone(), d.properties.clone()))
            .collect::<Vec<_>>();
        let written = write(&ctx.writer, &bus_user, kind, rows).await;
        let last = batch.last().map(|d| d.delivery_tag);
        match written {
            Ok(()) => {
                if let Some(d) = batch.last() {
                    d.ack(BasicAckOptions { multiple: true }).await?;
                }
            }
            Err(e) => {
                tracing::error!(message = "trace store write failed; the batch will be redelivered", error = %e, last_tag = ?last);
                if let Some(d) = batch.last() {
                    let _ = d
                        .nack(BasicNackOptions {
                            multiple: true,
                            requeue: true,
                        })
                        .await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let step = crate::consume::SHUTDOWN_STEP;
    let _ = tokio::time::timeout(
        step,
        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await;
    let _ = tokio::time::timeout(step, channel.close(200, "shutdown".into())).await;
    Ok(())
}

/// Write one batch, in one write of the group commit (a dead-log batch: its dead letters and
/// the broker's own dead-lettering events together).
async fn write(
    writer: &lienthong_core::store::MessageWriter,
    bus_user: &str,
    kind: Kind,
    rows: Vec<(Vec<u8>, BasicProperties)>,
) -> Result<(), String> {
    match kind {
        Kind::Trace => {
            // Only the bus's own trace messages are stored: each carries `user_id` = the bus's
            // broker user, which RabbitMQ checks against the publishing connection's user. One
            // published by another broker user (a unit with write access it should not have)
            // is logged and dropped.
            let events: Vec<TraceEvent> = rows
                .iter()
                .filter(|(_, props)| {
                    let from = props.user_id().as_ref().map(|u| u.as_str());
                    let ours = from == Some(bus_user);
                    if !ours {
                        tracing::warn!(
                            message = "trace message not published by the bus dropped",
                            user_id = from.unwrap_or("(none)")
                        );
                    }
                    ours
                })
                .flat_map(|(body, _)| match parse_trace_message(body) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(message = "unreadable trace message skipped", error = %e);
                        Vec::new()
                    }
                })
                .collect();
            writer.insert_events(events).await
        }
        Kind::DeadLog => {
            let mut dead = Vec::new();
            let mut broker_events = Vec::new();
            for (body, props) in &rows {
                let (row, from_broker) = read_dead_letter(body, props);
                let at_ms = lienthong_core::clock::now_ms();
                if from_broker {
                    let mut ev = TraceEvent::new(TraceEventKind::DeadLettered, "broker", None)
                        .message_id(row.message_id.clone())
                        .reason(row.reason.clone());
                    ev.ma_ho_so = row.ma_ho_so.clone();
                    ev.kind = row.kind.clone();
                    ev.from = row.sender.clone();
                    ev.to = row.receiver.clone();
                    broker_events.push(ev);
                }
                dead.push(DeadLetterRecord {
                    at_ms,
                    row,
                    body: body.to_vec(),
                });
            }
            writer
                .transact(move |c| {
                    insert_dead_letters_in(c, &dead)?;
                    insert_events_in(c, &broker_events)
                })
                .await
        }
    }
}

/// Sweep the store's retention now and every hour until shutdown: accepted envelopes past
/// `[store] message_retention_days`, process outbox envelopes sent more than
/// `process_outbox_retention_days` ago (of dossiers no longer running), edXML packages ended
/// more than `edxml_outbox_retention_days` ago, the HTTP API's idempotency keys past the message retention, claim-checked blobs of dossiers whose envelopes
/// are past the message retention. Each sweep deletes in small writes of the group commit.
async fn purge_forever(ctx: Ctx) {
    let ms = |days: u32| i64::from(days) * 86_400_000;
    let (s, w) = (&ctx.settings.store, &ctx.writer);
    let mut stop = ctx.shutdown.clone();
    loop {
        purged(
            "message store",
            w.purge_messages(ms(s.message_retention_days)).await,
        );
        purged(
            "HTTP idempotency keys",
            w.purge_idempotency_keys(ms(s.message_retention_days)).await,
        );
        purged(
            "process outbox",
            w.purge_process_outbox(ms(s.process_outbox_retention_days))
                .await,
        );
        purged(
            "edXML outbox",
            w.purge_edxml_outbox(ms(s.edxml_outbox_retention_days))
                .await,
        );
        // Claim-checked blobs go with their dossiers' envelopes.
        purged(
            "blob store",
            match w.purge_blob_index(ms(s.message_retention_days)).await {
                Ok(gone) => {
                    let blobs = ctx.blobs.clone();
                    tokio::task::spawn_blocking(move || {
                        gone.iter().filter(|sha| blobs.delete(sha).is_ok()).count()
                    })
                    .await
                    .map_err(|e| e.to_string())
                }
                Err(e) => Err(e),
            },
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {},
            _ = stop.changed() => return,
        }
    }
}

/// Log what a retention sweep of `what` did.
fn purged(what: &str, r: Result<usize, String>) {
    match r {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            message = "retention: purged old rows",
            store = what,
            count = n
        ),
        Err(e) => tracing::warn!(message = "retention purge failed", store = what, error = %e),
    }
}
