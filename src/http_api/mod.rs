//! The HTTP API (axum) for units that do not speak AMQP and for agency callbacks: its state,
//! its routes and who may call them; one file per group of routes: `ingress` (`POST
//! /v1/messages`), `callbacks` (`POST /v1/callbacks/{unit}`), `edxml` (the departments' pull),
//! `reads` (operators' endpoints), `health`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lienthong_adapters::Adapters;
use lienthong_adapters::deliveries::{self, DeliveryLog};
use lienthong_adapters::outbox::{Acked, Outbox};
use lienthong_core::amqp::{PublishError, Publisher, envelope_properties};
use lienthong_core::envelope::{Envelope, Kind, RejectCode, Rejection, TrangThaiHoSo};
use lienthong_core::registry::{Reach, Unit, UnitKind};
use lienthong_core::trace::{TraceEvent, TraceEventKind, Tracer};
use lienthong_core::{filing, process, routing};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::Ctx;
use crate::problem::Problem;

mod callbacks;
mod edxml;
mod health;
mod ingress;
mod reads;

use callbacks::*;
use edxml::*;
use health::*;
use ingress::*;
use reads::*;

const COMPONENT: &str = "http";

#[derive(Clone)]
struct Api {
    ctx: Ctx,
    broker: BrokerSlot,
    log: DeliveryLog,
    adapters: Adapters,
    outbox: Outbox,
}

/// The API's current broker handles; empty while the broker is unreachable (requests that
/// need it get 503 with Retry-After, health endpoints keep answering).
pub type BrokerSlot = Arc<tokio::sync::RwLock<Option<ApiBroker>>>;

/// Publishing handles of the API on one broker connection.
#[derive(Clone)]
pub struct ApiBroker {
    conn: Arc<lapin::Connection>,
    publisher: Publisher,
    tracer: Tracer,
}

/// Keep the API's broker handles filled while `ctx.conn` lives (run under the supervisor,
/// which reconnects). Returns an error when the connection is lost.
pub async fn hold_broker(ctx: Ctx, slot: BrokerSlot) -> anyhow::Result<()> {
    let handles = ApiBroker {
        conn: ctx.conn.clone(),
        publisher: ctx.publisher(COMPONENT, "ingress").await?,
        tracer: ctx.tracer(COMPONENT, "trace").await?,
    };
    *slot.write().await = Some(handles);
    let mut stop = ctx.shutdown.clone();
    let lost = loop {
        tokio::select! {
            _ = stop.changed() => break false,
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {
                if !ctx.conn.status().connected() {
                    break true;
                }
            }
        }
    };
    *slot.write().await = None;
    if lost {
        Err(anyhow::anyhow!("the broker connection is lost"))
    } else {
        Ok(())
    }
}

/// Build the router of the API and its (empty) broker slot. `adapters` are the process's
/// adapters by unit code ([`lienthong_adapters::build_all`]): the callback route reads each
/// agency's callbacks through its unit's adapter.
pub fn app(ctx: Ctx, adapters: Adapters) -> anyhow::Result<(Router, BrokerSlot)> {
    let broker: BrokerSlot = Arc::default();
    let log = DeliveryLog::new(ctx.store.clone())?;
    // Let bodies a little over the envelope limit through, so that the envelope check answers
    // with a problem+json 413 that names the limit.
    let body_limit = ctx
        .settings
        .envelope
        .max_envelope_bytes
        .saturating_add(64 * 1024);
    let outbox = Outbox::new(ctx.store.clone())?;
    let api = Api {
        ctx,
        broker: broker.clone(),
        log,
        adapters,
        outbox,
    };
    let router = Router::new()
        .route("/v1/messages", post(submit))
        .route("/v1/callbacks/{unit}", post(callback))
        .route("/v1/edxml/{unit}/packages", get(edxml_list))
        .route("/v1/edxml/{unit}/packages/{id}", get(edxml_fetch))
        .route("/v1/edxml/{unit}/packages/{id}/ack", post(edxml_ack))
        .route("/v1/dossiers/{ma_ho_so}/trace", get(trace))
        .route("/v1/dossiers/{ma_ho_so}", get(dossier))
        .route("/v1/dossiers/{ma_ho_so}/retry", post(retry))
        .route("/v1/dossiers/{ma_ho_so}/control-sheet", get(control_sheet))
        .route("/v1/overdue", get(overdue))
        .route("/metrics", get(metrics))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/stats", get(stats))
        .route("/v1/blobs/{sha256}", get(blob))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(api);
    Ok((router, broker))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl Api {
    fn caller(&self, headers: &HeaderMap) -> Result<&Unit, Problem> {
        let key = bearer(headers).ok_or_else(|| {
            Problem::unauthorized("send your unit's key as Authorization: Bearer <key>")
        })?;
        self.ctx
            .registry
            .unit_by_api_key(key)
            .ok_or_else(|| Problem::unauthorized("unknown key"))
    }

    /// Read endpoints show every dossier's hops and reasons (which may name citizens): the
    /// operator key only.
    fn operator(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let key = bearer(headers).ok_or_else(|| {
            Problem::unauthorized("send the operator key as Authorization: Bearer <key>")
        })?;
        if self.ctx.registry.is_operator_key(key) {
            Ok(())
        } else {
            Err(Problem::unauthorized("not the operator key"))
        }
    }

    /// The broker handles, or 503: unreachable, or blocking publishers (memory or disk alarm),
    /// in which case a publish would hang until its confirm timeout.
    async fn broker(&self) -> Result<ApiBroker, Problem> {
        let b = self.broker.read().await.clone();
        match b {
            None => Err(Problem::unavailable(
                "the broker is unreachable; the bus is reconnecting",
                5,
            )),
            Some(b) if b.conn.status().blocked() => Err(Problem::unavailable(
                "the broker is blocking publishers (memory or disk alarm); nothing was accepted",
                30,
            )),
            Some(b) => Ok(b),
        }
    }

    /// Trace `ev`, then publish `env` to the ingress exchange; Ok once both are confirmed.
    async fn trace_and_publish(&self, ev: &TraceEvent, env: &Envelope) -> Result<(), Problem> {
        let broker = self.broker().await?;
        broker
            .tracer
            .emit(ev)
            .await
            .map_err(|e| Problem::unavailable(format!("trace not confirmed: {e}"), 5))?;
        self.publish_ingress(&broker, env).await
    }

    /// Run a store query for a read endpoint (operator or unit key required).
    async fn read<T: serde::Serialize + Send + 'static>(
        &self,
        headers: &HeaderMap,
        query: impl FnOnce(lienthong_core::store::Store) -> Result<T, lienthong_core::store::StoreError>
        + Send
        + 'static,
    ) -> Response {
        if let Err(p) = self.operator(headers) {
            return p.into_response();
        }
        let store = self.ctx.store.clone();
        match tokio::task::spawn_blocking(move || query(store)).await {
            Ok(Ok(rows)) => Json(rows).into_response(),
            Ok(Err(e)) => store_error(e),
            Err(e) => internal_error(e),
        }
    }

    async fn publish_ingress(&self, broker: &ApiBroker, env: &Envelope) -> Result<(), Problem> {
        let body = env.to_bytes();
        match broker
            .publisher
            .publish(
                &self.ctx.names.ingress_exchange(),
                "",
                &body,
                envelope_properties(env),
                true,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(PublishError::Returned { code, text }) => Err(Problem::unavailable(
                format!("ingress exchange has no router queue bound ({code} {text})"),
                5,
            )),
            Err(PublishError::TooLarge(why)) => Err(Rejection::new(
                RejectCode::TooLarge,
                format!(
                    "the broker refuses a message of {} bytes: {why}; nothing was accepted",
                    body.len()
                ),
            )
            .into()),
            Err(PublishError::Channel(why)) => {
                // The broker's error names the bus's own exchanges: it goes to the log and
                // /readyz (operators), not to the sender.
                tracing::warn!(message = "cannot publish to the ingress; answering 503", error = %why);
                Err(Problem::unavailable(
                    "the bus cannot publish right now (its broker channel is being repaired); nothing was accepted",
                    5,
                ))
            }
            Err(e) => Err(Problem::unavailable(
                format!("the broker did not confirm the message: {e}"),
                5,
            )),
        }
    }
}
