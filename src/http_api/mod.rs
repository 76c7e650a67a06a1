//! The HTTP API (axum) for units that do not speak AMQP and for agency callbacks: its state,
//! its routes and who may call them; one file per group of routes: `ingress` (`POST
//! /v1/messages`, with `message_ids`), `inbox` (a unit's pull inbox), `callbacks` (`POST
//! /v1/callbacks/{unit}`), `edxml` (the departments' pull), `reads` (a dossier's trace, state
//! and control sheet for the operator or its parties; the operators' endpoints), `lists` (the
//! dossier list and exports), `health`; `guard` (the layers in front of them: requests at
//! once, timeout, key before body, rate, body limit), `openapi` (the OpenAPI 3.1 document of
//! these routes, served at `/openapi.json`) and `serve` (the connections: HTTP/1.1 with a
//! header-read timeout, TLS with certificate reload, graceful shutdown).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
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
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::context::Ctx;
use crate::problem::Problem;

mod callbacks;
mod edxml;
mod guard;
mod health;
mod inbox;
mod ingress;
mod lists;
mod message_ids;
pub mod openapi;
mod reads;
pub mod serve;

use callbacks::*;
use edxml::*;
use guard::{Gate, Guard, Limits};
use health::*;
use ingress::*;
use lists::*;
use reads::*;

const COMPONENT: &str = "http";

/// A route's path parameters; a path that cannot be read as them (a parameter that is not UTF-8
/// once percent-decoded) is a problem+json 400 `bad-path` (axum's own rejection is text).
pub(super) struct PathParams<T>(T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(PathParams(t)),
            Err(e) => Err(Problem::new(
                e.status(),
                "bad-path",
                "Bad path",
                e.body_text(),
            )),
        }
    }
}

/// The bytes of a download (an XLSX export, a PDF, an attachment) in the OpenAPI document.
pub(super) struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                utoipa::openapi::schema::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for Binary {}

#[derive(Clone)]
struct Api {
    ctx: Ctx,
    broker: BrokerSlot,
    log: DeliveryLog,
    adapters: Adapters,
    outbox: Outbox,
    limits: Arc<Limits>,
    inbox: Arc<inbox::Inbox>,
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

impl ApiBroker {
    /// The HTTP component's broker connection (the console asks the broker about queues on it).
    pub fn connection(&self) -> Arc<lapin::Connection> {
        self.conn.clone()
    }
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
///
/// The layers, outermost first: [`guard::shed`] (requests at once, request timeout) on every
/// route; then, on each authenticated route, [`guard::gate`] (the key from the headers before
/// the body, the key's rate, a declared length above the route's limit); then the route's body
/// limit while the handler reads the body.
pub fn app(ctx: Ctx, adapters: Adapters) -> anyhow::Result<(Router, BrokerSlot)> {
    let broker: BrokerSlot = Arc::default();
    // A reader connection of the callbacks' own: their delivery lookup runs on the async worker
    // ([`DeliveryLog::lookup`]) and must not wait behind a console query on the shared one.
    let log = DeliveryLog::open(ctx.store_location())?;
    let http = &ctx.settings.http;
    // Let bodies a little over the envelope limit through, so that the envelope check answers
    // with a problem+json 413 that names the limit.
    let ingress_limit = ctx
        .settings
        .envelope
        .max_envelope_bytes
        .saturating_add(64 * 1024);
    let callback_limit = http.max_callback_bytes;
    let small_limit = http.max_small_body_bytes;
    let limits = Arc::new(Limits::new(http));
    let outbox = Outbox::new(ctx.store.clone())?;
    let api = Api {
        ctx,
        broker: broker.clone(),
        log,
        adapters,
        outbox,
        limits,
        inbox: Arc::default(),
    };
    let gated = |router: Router<Api>, guard: Guard, body_limit: usize| {
        router
            .layer(axum::extract::DefaultBodyLimit::max(body_limit))
            .route_layer(axum::middleware::from_fn_with_state(
                Gate {
                    api: api.clone(),
                    guard,
                    body_limit,
                },
                guard::gate,
            ))
    };
    let units = gated(
        Router::new().route("/v1/messages", post(submit)),
        Guard::Unit,
        ingress_limit,
    );
    let inboxes = gated(
        Router::new()
            .route("/v1/inbox", get(inbox::inbox))
            .route("/v1/inbox/ack", post(inbox::inbox_ack))
            .route("/v1/inbox/reject", post(inbox::inbox_reject)),
        Guard::Unit,
        small_limit,
    );
    let callbacks = gated(
        Router::new().route("/v1/callbacks/{unit}", post(callback)),
        Guard::Agency,
        callback_limit,
    );
    let departments = gated(
        Router::new()
            .route("/v1/edxml/{unit}/packages", get(edxml_list))
            .route("/v1/edxml/{unit}/packages/{id}", get(edxml_fetch))
            .route("/v1/edxml/{unit}/packages/{id}/ack", post(edxml_ack)),
        Guard::Agency,
        small_limit,
    );
    let readers = gated(
        Router::new()
            .route("/v1/dossiers/{ma_ho_so}/trace", get(trace))
            .route("/v1/dossiers/{ma_ho_so}", get(dossier))
            .route("/v1/dossiers/{ma_ho_so}/control-sheet", get(control_sheet)),
        Guard::Reader,
        small_limit,
    );
    let operators = gated(
        Router::new()
            .route("/v1/dossiers/{ma_ho_so}/retry", post(retry))
            .route("/v1/dossiers", get(dossiers))
            .route("/v1/overdue", get(overdue))
            .route("/metrics", get(metrics))
            .route("/v1/dead-letters", get(dead_letters))
            .route("/v1/stats", get(stats)),
        Guard::Operator,
        small_limit,
    );
    let blobs = gated(
        Router::new().route("/v1/blobs/{sha256}", get(blob)),
        Guard::AnyKey,
        small_limit,
    );
    let router = Router::new()
        .merge(units)
        .merge(inboxes)
        .merge(callbacks)
        .merge(departments)
        .merge(readers)
        .merge(operators)
        .merge(blobs)
        .nest_service(
            "/console",
            crate::console::router(api.ctx.clone(), {
                let slot = broker.clone();
                Arc::new(move || {
                    slot.try_read()
                        .ok()
                        .and_then(|b| b.as_ref().map(ApiBroker::connection))
                })
            }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve_document))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            guard::shed,
        ))
        .with_state(api);
    Ok((router, broker))
}

/// The router of `[http] metrics_listen`: `/metrics` without a key, nothing else.
pub fn metrics_app() -> Router {
    Router::new().route("/metrics", get(metrics))
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

    /// Who may read dossier `ma_ho_so`: the operator key, or the key of a unit that is a party
    /// of it ([`lienthong_core::store::Store::dossier_party`]). A unit's key for another
    /// unit's dossier gets the same 404 as a dossier that does not exist, so that a key learns
    /// nothing of dossiers that are not its unit's. Errors: 401, 404, 503 (store unreadable).
    async fn reader(&self, headers: &HeaderMap, ma_ho_so: &str) -> Result<(), Problem> {
        if self.operator(headers).is_ok() {
            return Ok(());
        }
        let unit = self.caller(headers)?.code.clone();
        let store = self.ctx.store.clone();
        let ma = ma_ho_so.to_string();
        let party = store
            .read(move |s| s.dossier_party(&ma, &unit))
            .await
            .map_err(|e| Problem::unavailable_because("the store could not be read", 5, e))?;
        if party {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                format!("no dossier {ma_ho_so} of the unit this key belongs to"),
            ))
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
        broker.tracer.emit(ev).await.map_err(trace_unconfirmed)?;
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
        self.publish_ingress_body(broker, env, env.to_bytes()).await
    }

    /// Publish `env`, already serialised as `body`, to the ingress exchange and wait for the
    /// broker's confirm.
    async fn publish_ingress_body(
        &self,
        broker: &ApiBroker,
        env: &Envelope,
        body: Vec<u8>,
    ) -> Result<(), Problem> {
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
            Err(PublishError::Returned { code, text }) => Err(Problem::unavailable_because(
                "the bus has no router queue bound to its ingress; nothing was accepted",
                5,
                format!("ingress exchange returned the message: {code} {text}"),
            )),
            Err(PublishError::TooLarge(why)) => {
                // The broker's words stay in the log; the sender gets its limit.
                tracing::warn!(message = "the broker refuses a message of the HTTP API as too large", error = %why);
                let max = broker_max_size(&why)
                    .map(|n| format!(" (the broker's max size is {n} bytes)"))
                    .unwrap_or_default();
                Err(Rejection::new(
                    RejectCode::TooLarge,
                    format!(
                        "the broker refuses a message of {} bytes{max}; nothing was accepted",
                        body.len()
                    ),
                )
                .into())
            }
            Err(PublishError::Channel(why)) => {
                // The broker's error names the bus's own exchanges: it goes to the log and
                // /readyz (operators), not to the sender.
                tracing::warn!(message = "cannot publish to the ingress; answering 503", error = %why);
                Err(Problem::unavailable(
                    "the bus cannot publish right now (its broker channel is being repaired); nothing was accepted",
                    5,
                ))
            }
            Err(e) => Err(Problem::unavailable_because(
                "the broker did not confirm the message; nothing was accepted",
                5,
                e,
            )),
        }
    }
}

/// The limit in the broker's refusal of a large message (`… is larger than configured max size
/// 200000`): the one part of its words the sender may see.
fn broker_max_size(why: &str) -> Option<&str> {
    let rest = why.split("max size ").nth(1)?;
    let n = rest
        .find(|c: char| !c.is_ascii_digit())
        .map_or(rest, |end| &rest[..end]);
    (!n.is_empty()).then_some(n)
}

#[cfg(test)]
#[test]
fn only_the_brokers_limit_is_taken_from_its_refusal() {
    assert_eq!(
        broker_max_size(
            "PRECONDITION_FAILED - message size 240123 is larger than configured max size 200000"
        ),
        Some("200000")
    );
    assert_eq!(broker_max_size("max size 5 (vhost /)"), Some("5"));
    assert_eq!(broker_max_size("channel closed"), None);
    assert_eq!(broker_max_size("max size unknown"), None);
}

/// 503 for a trace event the broker did not confirm (the cause is logged, not sent).
fn trace_unconfirmed(e: impl std::fmt::Display) -> Problem {
    Problem::unavailable_because(
        "the trace event was not confirmed; nothing was accepted",
        5,
        format!("trace not confirmed: {e}"),
    )
}
