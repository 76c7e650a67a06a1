//! The delivery log's writes for one delivery: the record written ahead of the first call
//! (`sending`, so that a callback arriving before the receipt finds its dossier) and the
//! completed record written before the ack, each with its trace event in the process's group
//! commit.

use lienthong_adapters::ResultsTo;
use lienthong_adapters::deliveries::{self, DeliveryLog, DeliveryRecord};
use lienthong_core::envelope::Envelope;
use lienthong_core::trace::{TraceEvent, Tracer};

use crate::context::Ctx;

/// The recorded origin of dossier `ma_ho_so` (None when unknown or unreadable), read on the
/// blocking pool.
pub async fn origin(ctx: &Ctx, ma_ho_so: &str) -> Option<lienthong_core::store::Origin> {
    let ma = ma_ho_so.to_string();
    ctx.store.read(move |s| s.origin(&ma)).await.ok().flatten()
}

/// The delivery record of `env` to `unit` with `receipt` (empty: not delivered yet). Results
/// go to the dossier's centre, or to the sender when the adapter says so
/// ([`ResultsTo::Sender`], e.g. Tax answering the land registration office). The centre is
/// read from the delivery log's own connection, as a point read on the async worker (on SQLite
/// microseconds; the hand-off to the blocking pool and back cost more).
///
/// Errors: the store could not be read (the delivery is requeued: a record written without
/// the centre would send the agency's results to the sender instead).
pub async fn record_for(
    log: &DeliveryLog,
    unit: &str,
    results_to: ResultsTo,
    env: &Envelope,
    receipt: &str,
) -> Result<DeliveryRecord, lienthong_core::store::StoreError> {
    let reply_to = match log.origin(&env.ma_ho_so).await? {
        Some(o) if results_to == ResultsTo::Origin => o.origin_unit,
        _ => env.sender.clone(),
    };
    Ok(DeliveryRecord {
        message_id: env.message_id.clone(),
        unit: unit.to_string(),
        ma_ho_so: env.ma_ho_so.clone(),
        ma_tthc: env.ma_tthc.clone(),
        kind: env.kind.0.clone(),
        sender: env.sender.clone(),
        reply_to,
        correlation_id: env.correlation_id.clone(),
        receipt: receipt.to_string(),
        at_ms: lienthong_core::clock::now_ms(),
        delivered: !receipt.is_empty(),
    })
}

/// Write-ahead: record that the message is being sent (before the first call), with the
/// `received` event, in the process's group commit.
///
/// Errors: the store or the trace failed (the delivery is requeued).
pub async fn begin(
    ctx: &Ctx,
    tracer: &Tracer,
    rec: DeliveryRecord,
    received: TraceEvent,
) -> Result<(), String> {
    tracer
        .emit_with(&ctx.writer, vec![received], move |c| {
            deliveries::insert_sending(c, &rec)
        })
        .await
}

/// Record a completed delivery (before the ack), with its `delivered` event, in the process's
/// group commit. False if the store failed or the trace was not confirmed.
pub async fn delivered(
    ctx: &Ctx,
    tracer: &Tracer,
    rec: DeliveryRecord,
    delivered: TraceEvent,
) -> bool {
    let r = tracer
        .emit_with(&ctx.writer, vec![delivered], move |c| {
            deliveries::record_in(c, &rec)
        })
        .await;
    if let Err(e) = &r {
        tracing::warn!(message = "the delivery record or its trace failed", error = %e);
    }
    r.is_ok()
}
