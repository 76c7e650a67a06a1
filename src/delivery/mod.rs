//! The delivery component: for every unit reached by an adapter, consume
//! `<prefix>.unit.<code>` and deliver each envelope through the unit's adapter. One concern
//! per file: [`worker`] (one delivery, start to settle), [`retry_engine`] (retries, delayed
//! rounds, the status lookup after an unknown outcome, holding, giving up), [`record`] (the
//! delivery log, written before the ack), [`alert`] (the operator's alert about unreadable
//! answers).

pub mod alert;
pub mod record;
pub mod retry_engine;
pub mod worker;

use std::time::Duration;

use lienthong_adapters::Adapters;
use lienthong_adapters::deliveries::DeliveryLog;
use lienthong_core::deadletter::DeadLetterChannel;
use lienthong_core::registry::Reach;

use crate::context::Ctx;

/// The supervised component's name (health, metrics, holds).
pub const COMPONENT: &str = "adapters";

/// Run one consumer per adapter-reached unit until shutdown, with the process's adapters
/// (built once, shared with the HTTP API's callback route).
pub async fn run(ctx: Ctx, adapters: Adapters) -> anyhow::Result<()> {
    // A reader connection of the adapters' own: their idempotency lookup runs on the async
    // worker ([`DeliveryLog::lookup`]) and must not wait behind a console query on the
    // process's shared one.
    let log = DeliveryLog::open(ctx.store_location())?;
    let webhook = crate::alerts::Webhook::new(&ctx.settings.process);
    let mut tasks = tokio::task::JoinSet::new();
    for unit in ctx
        .registry
        .units()
        .filter(|u| matches!(u.reach, Reach::Adapter { .. }))
    {
        let adapter = adapters
            .get(&unit.code)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("unit {}: no adapter was built", unit.code))?;
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
        let engine = retry_engine::Engine {
            unit: unit.clone(),
            component: component.clone(),
            settings: ctx.settings.retry.clone(),
            names: ctx.names.clone(),
            retry: ctx
                .publisher(COMPONENT, &format!("retry {}", unit.code))
                .await?,
            tracer: tracer.clone(),
            shutdown: ctx.shutdown.clone(),
            hold_component: COMPONENT,
        };
        let worker = worker::Worker {
            ctx: ctx.clone(),
            unit: unit.clone(),
            component,
            adapter,
            log: log.clone(),
            tracer,
            dlc,
            engine,
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
                async move { w.handle_guarded(d).await }
            })
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}
