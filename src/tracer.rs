//! The tracer: consumes `<prefix>.trace.store` into the trace table and `<prefix>.dead.log`
//! into the dead-letter log, in batches (one SQLite transaction per batch, then one
//! multiple-ack), so `lienthong trace` and `lienthong dead-letters` read from the store.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lienthong_core::deadletter::read_dead_letter;
use lienthong_core::trace::{TraceEvent, TraceEventKind, parse_trace_message};

use crate::context::Ctx;

const BATCH: usize = 256;
const LINGER: Duration = Duration::from_millis(20);

/// Run the tracer until shutdown.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    // Retention of the message store: purge now and every hour.
    let purge = {
        let store = ctx.store.clone();
        let retention_ms = i64::from(ctx.settings.store.message_retention_days) * 86_400_000;
        let mut stop = ctx.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.purge_messages(retention_ms)).await {
                    Ok(Ok(n)) if n > 0 => {
                        tracing::info!(message = "message store: purged old messages", count = n)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(message = "message store purge failed", error = %e)
                    }
                    _ => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {},
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let a = tokio::spawn(batch_loop(
        ctx.clone(),
        ctx.names.trace_queue(),
        Kind::Trace,
    ));
    let b = tokio::spawn(batch_loop(
        ctx.clone(),
        ctx.names.dead_log_queue(),
        Kind::DeadLog,
    ));
    // Either consumer ending (its channel closed, its queue deleted) ends the component, which
    // its supervisor restarts on a new connection: no consumer is left dead behind the other.
    let (mut a, mut b) = (a, b);
    let r = tokio::select! {
        r = &mut a => match r {
            Ok(Ok(())) => b.await,
            e => { b.abort(); e }
        },
        r = &mut b => match r {
            Ok(Ok(())) => a.await,
            e => { a.abort(); e }
        },
    };
    purge.abort();
    r?
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
        let store = ctx.store.clone();
        let rows = batch
            .iter()
            .map(|d| (d.data.clone(), d.properties.clone()))
            .collect::<Vec<_>>();
        let written = tokio::task::spawn_blocking(move || write(&store, kind, rows)).await;
        let last = batch.last().map(|d| d.delivery_tag);
        match written {
            Ok(Ok(())) => {
                if let Some(d) = batch.last() {
                    d.ack(BasicAckOptions { multiple: true }).await?;
                }
            }
            other => {
                tracing::error!(message = "trace store write failed; the batch will be redelivered", result = ?other.map(|r| r.err()), last_tag = ?last);
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

fn write(
    store: &lienthong_core::store::Store,
    kind: Kind,
    rows: Vec<(Vec<u8>, BasicProperties)>,
) -> Result<(), lienthong_core::store::StoreError> {
    match kind {
        Kind::Trace => {
            let events: Vec<TraceEvent> = rows
                .iter()
                .flat_map(|(body, _)| match parse_trace_message(body) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(message = "unreadable trace message skipped", error = %e);
                        Vec::new()
                    }
                })
                .collect();
            store.insert_events(&events)
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
                dead.push((at_ms, row));
            }
            store.insert_dead_letters(&dead)?;
            store.insert_events(&broker_events)
        }
    }
}
