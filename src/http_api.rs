//! The HTTP API (axum) for units that do not speak AMQP and for agency callbacks:
//! `POST /v1/messages` (same envelope as AMQP; 202 with the message id after the publisher
//! confirm, or an RFC 9457 problem), `POST /v1/callbacks/{unit}` (an agency's result, turned
//! into a bus envelope for the dossier's centre), read endpoints for operators, and health.

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
        match self.ctx.settings.http.operator_key.as_deref() {
            Some(op) if op == key => Ok(()),
            _ => Err(Problem::unauthorized("not the operator key")),
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

/// A body the HTTP layer could not take (too large, broken transfer) as a problem.
fn body_problem(e: BytesRejection, limit: usize) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Rejection::new(
            RejectCode::TooLarge,
            format!("the body is larger than {limit} bytes"),
        )
        .into()
    } else {
        Problem::new(e.status(), "bad-body", "Body not readable", e.body_text())
    }
}

async fn submit(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return body_problem(e, api.ctx.settings.envelope.max_envelope_bytes).into_response();
        }
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().eq_ignore_ascii_case("application/json") || m.trim().ends_with("+json"));
    if json != Some(true) {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the envelope as Content-Type: application/json",
        )
        .into_response();
    }
    match submit_inner(&api, &headers, &body).await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(json!({"message_id": id, "status": "accepted"})),
        )
            .into_response(),
        Err(p) => p.into_response(),
    }
}

async fn submit_inner(api: &Api, headers: &HeaderMap, body: &Bytes) -> Result<String, Problem> {
    let unit = api.caller(headers)?.clone();
    let validator = api.ctx.validator.clone();
    let b = body.clone();
    let env = tokio::task::spawn_blocking(move || validator.accept(&b))
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                e.to_string(),
            )
        })?
        .map_err(Problem::from)?;
    if env.sender != unit.code {
        return Err(Rejection::new(
            RejectCode::SenderMismatch,
            format!(
                "the key belongs to {} but the envelope's sender is {}",
                unit.code, env.sender
            ),
        )
        .into());
    }
    // The same store read as the router's: does the process manager run the dossier (then a
    // forward without receiver is the centre's answer to a pause, not a filing), and which
    // centre filed it.
    let store = api.ctx.store.clone();
    let key = env.ma_ho_so.clone();
    let (runs, origin) = match tokio::task::spawn_blocking(move || store.lookup_dossier(&key)).await
    {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            return Err(Problem::unavailable(
                format!("the store could not be read: {e}"),
                5,
            ));
        }
        Err(e) => {
            return Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                e.to_string(),
            ));
        }
    };
    let registry = &api.ctx.registry;
    // A forward without receiver starts the procedure's route (process manager); messages of a
    // dossier it runs are checked by it, in the router, after the 202.
    let decision = if process::manages(registry, &env, runs) {
        if process::starts_process(&env) && unit.kind != UnitKind::Centre {
            return Err(Rejection::new(
                RejectCode::MissingReceiver,
                format!(
                    "only a centre may file a dossier without naming a receiver; {} is not a centre",
                    unit.code
                ),
            )
            .into());
        }
        // The filing must carry what the route needs: refused now, while the centre can fix it.
        if filing::starts_run(registry, &env, runs) {
            api.ctx.filing.check(registry, &env)?;
        }
        routing::RouteDecision {
            receiver: env.receiver.clone().unwrap_or_default(),
            records_origin: false,
        }
    } else {
        let decision = routing::check(registry, &env, origin.as_ref())?;
        // A centre's first forward of a dossier it drives itself is its filing.
        if decision.records_origin {
            api.ctx.filing.check(registry, &env)?;
        }
        decision
    };
    if decision.records_origin {
        // Recorded here as well as by the router, so that a reply right after the 202 is accepted.
        let o = lienthong_core::store::Origin {
            ma_ho_so: env.ma_ho_so.clone(),
            ma_tthc: env.ma_tthc.clone(),
            origin_unit: env.sender.clone(),
            correlation_id: env.correlation_id.clone(),
        };
        let recorded = api.ctx.writer.record_origin(o).await;
        if recorded.is_err() {
            return Err(Problem::unavailable(
                "the store did not record the dossier",
                5,
            ));
        }
    }
    // Claim check: large inline attachments leave the envelope for the blob store, so the
    // message that goes through the broker stays small.
    let threshold = api.ctx.settings.envelope.max_inline_attachment_bytes as u64;
    let mut env = env;
    if env
        .attachments
        .iter()
        .any(|a| a.content_base64.is_some() && a.size_bytes > threshold)
    {
        let blobs = api.ctx.blobs.clone();
        let (e, r) = tokio::task::spawn_blocking(move || {
            let mut e = env;
            let r = lienthong_core::claimcheck::claim_check(&mut e, blobs.as_ref(), threshold);
            (e, r)
        })
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                e.to_string(),
            )
        })?;
        r.map_err(|e| Problem::unavailable(format!("the claim-check store failed: {e}"), 5))?;
        env = e;
    }
    let ev =
        TraceEvent::new(TraceEventKind::Received, COMPONENT, Some(&env)).reason("via HTTP API");
    api.trace_and_publish(&ev, &env).await?;
    Ok(env.message_id)
}

async fn callback(
    State(api): State<Api>,
    Path(unit): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return body_problem(e, api.ctx.settings.envelope.max_envelope_bytes).into_response();
        }
    };
    match callback_inner(&api, &unit, &headers, &body).await {
        Ok(id) => (
            StatusCode::OK,
            Json(json!({"message_id": id, "status": "accepted"})),
        )
            .into_response(),
        Err(p) => p.into_response(),
    }
}

async fn callback_inner(
    api: &Api,
    unit_code: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, Problem> {
    agency_caller(api, unit_code, headers)?;
    let adapter = api.adapters.get(unit_code).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no-adapter",
            "Unit has no adapter",
            unit_code.to_string(),
        )
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let reply = adapter.parse_callback(ct, body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-callback",
            "Callback not readable",
            e.to_string(),
        )
    })?;
    let log = api.log.clone();
    let reference = reply.reference.clone();
    let delivery = tokio::task::spawn_blocking(move || log.get(&reference))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-reference",
                "Unknown reference",
                format!(
                    "no delivery with MaThamChieu {} to {unit_code}",
                    reply.reference
                ),
            )
        })?;
    if delivery.unit != unit_code || delivery.ma_ho_so != reply.ma_ho_so {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "reference-mismatch",
            "Reference does not match",
            format!(
                "MaThamChieu {} belongs to {} at {}",
                reply.reference, delivery.ma_ho_so, delivery.unit
            ),
        ));
    }
    if reply.status == 0 {
        // A status that changes nothing for the dossier (edXML 01 arrived, 13, 16, an unknown
        // code): traced, not forwarded.
        let mut env = Envelope::new(
            Kind::STATUS,
            &delivery.ma_ho_so,
            &delivery.ma_tthc,
            unit_code,
            Some(&delivery.reply_to),
            &delivery.correlation_id,
        );
        env.causation_id = Some(delivery.message_id.clone());
        let code = reply
            .result
            .get("edxml_status_code")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let ev = TraceEvent::new(TraceEventKind::Status, COMPONENT, Some(&env)).reason(format!(
            "callback from {unit_code}: status {code} {} (no change of TrangThaiHoSo)",
            reply.reason.as_deref().unwrap_or("")
        ));
        let broker = api.broker().await?;
        broker
            .tracer
            .emit(&ev)
            .await
            .map_err(|e| Problem::unavailable(format!("trace not confirmed: {e}"), 5))?;
        return Ok(env.message_id);
    }
    let status = TrangThaiHoSo(reply.status);
    let kind = if status == TrangThaiHoSo::PROCESSED || status == TrangThaiHoSo::RESULT_RETURNED {
        Kind::RESULT
    } else {
        Kind::STATUS
    };
    let mut env = Envelope::new(
        kind,
        &delivery.ma_ho_so,
        &delivery.ma_tthc,
        unit_code,
        Some(&delivery.reply_to),
        &delivery.correlation_id,
    );
    env.causation_id = Some(delivery.message_id.clone());
    env.status = Some(status);
    let mut result = reply.result.clone();
    if kind == Kind::RESULT {
        result.insert("trang_thai".into(), json!(reply.status));
        env.payload.result = Some(result);
    } else if !result.is_empty() {
        env.payload.data = Some(result);
    }
    env.payload.reason = reply.reason.clone();
    env.payload.handler = Some(lienthong_core::envelope::Handler {
        unit: Some(unit_code.to_string()),
        officer: reply.officer.clone(),
        title: None,
    });
    // The agency's words go through the same ingress checks as any envelope.
    let mut value = serde_json::to_value(&env).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            e.to_string(),
        )
    })?;
    lienthong_core::envelope::normalize_nfc(&mut value);
    let env = api.ctx.validator.accept_value(value).map_err(|r| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-callback",
            "Callback gives an invalid envelope",
            r.reason(),
        )
    })?;
    // A repeated callback (the agency retrying after a lost answer) must not make a second
    // result: the first claim fixes the envelope; once published, repeats only get its id.
    // In the process's group commit, like every hot write.
    let (unit_c, reference, st) = (unit_code.to_string(), reply.reference.clone(), reply.status);
    let json_env = serde_json::to_string(&env).unwrap_or_default();
    let (stored, published) = api
        .ctx
        .writer
        .transact(move |c| deliveries::claim_callback_in(c, &unit_c, &reference, st, &json_env))
        .await
        .map_err(|e| {
            tracing::error!(message = "the store did not take the callback", error = %e);
            Problem::unavailable("the store did not take the callback", 5)
        })?;
    let env: Envelope = serde_json::from_str(&stored).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            e.to_string(),
        )
    })?;
    if published {
        return Ok(env.message_id);
    }
    let ev = TraceEvent::new(TraceEventKind::Status, COMPONENT, Some(&env)).reason(format!(
        "callback from {unit_code}: TrangThaiHoSo {} {}",
        reply.status,
        status.name_vi().unwrap_or("")
    ));
    api.trace_and_publish(&ev, &env).await?;
    let (unit_c, reference) = (unit_code.to_string(), reply.reference.clone());
    if let Err(e) = api
        .ctx
        .writer
        .transact(move |c| deliveries::callback_published_in(c, &unit_c, &reference, st))
        .await
    {
        // The result is out; a repeated callback would publish it again with the same message
        // id, which the router and the centre dedupe.
        tracing::warn!(message = "cannot mark the callback published", error = %e);
    }
    Ok(env.message_id)
}

async fn trace(
    State(api): State<Api>,
    Path(ma_ho_so): Path<String>,
    headers: HeaderMap,
) -> Response {
    api.read(&headers, move |store| store.timeline(&ma_ho_so))
        .await
}

/// `GET /v1/dossiers/{ma_ho_so}`: the process manager's state of the dossier (404 when it does
/// not run it).
async fn dossier(
    State(api): State<Api>,
    Path(ma_ho_so): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = api.operator(&headers) {
        return p.into_response();
    }
    process_state(&api, &ma_ho_so).await
}

/// The process manager's state of a dossier as JSON, or 404 when the bus does not run it.
async fn process_state(api: &Api, ma_ho_so: &str) -> Response {
    let store = api.ctx.store.clone();
    let ma = ma_ho_so.to_string();
    match tokio::task::spawn_blocking(move || store.process(&ma)).await {
        Ok(Ok(Some(p))) => Json(p).into_response(),
        Ok(Ok(None)) => not_run(ma_ho_so),
        Ok(Err(e)) => store_error(e),
        Err(e) => internal_error(e),
    }
}

/// What `POST /v1/dossiers/{ma_ho_so}/retry` takes (an empty body retries everything blocked).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    /// Only this step's hand-over.
    step: Option<String>,
    /// Who retries (recorded in the trace); default `operator`.
    by: Option<String>,
}

/// An operator hands the blocked steps of a dossier the bus runs over again
/// ([`crate::process_manager::ProcessManager::retry`]): 200 with the dossier's state once the new
/// hand-overs are confirmed by the broker; 404 when the bus does not run it; 409 when nothing
/// (or not that step) is blocked; 503 when the broker is unavailable.
async fn retry(
    State(api): State<Api>,
    Path(ma_ho_so): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(p) = api.operator(&headers) {
        return p.into_response();
    }
    let req: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-json",
                    "Malformed JSON",
                    format!("the body must be {{\"step\"?: string, \"by\"?: string}}: {e}"),
                )
                .into_response();
            }
        }
    };
    let broker = match api.broker().await {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let pm = crate::process_manager::ProcessManager::new(
        api.ctx.clone(),
        broker.publisher.clone(),
        broker.tracer.clone(),
    );
    let by = req.by.unwrap_or_else(|| "operator".into());
    use crate::process_manager::RetryError;
    match pm.retry(&ma_ho_so, req.step, &by).await {
        Ok(()) => {}
        Err(RetryError::NotRun) => return not_run(&ma_ho_so),
        Err(RetryError::NoSuchStep(why)) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no-such-step",
                "No such step",
                why,
            )
            .into_response();
        }
        Err(RetryError::NothingBlocked(why)) => {
            return Problem::new(StatusCode::CONFLICT, "not-blocked", "Nothing to retry", why)
                .into_response();
        }
        Err(RetryError::Failed(e)) => {
            return Problem::unavailable(format!("the retry could not finish: {e}"), 5)
                .into_response();
        }
    }
    process_state(&api, &ma_ho_so).await
}

/// 500 for a store failure.
fn store_error(e: impl std::fmt::Display) -> Response {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store",
        "Store error",
        format!("{e:#}"),
    )
    .into_response()
}

/// 500 for a task that failed (panicked or was cancelled).
fn internal_error(e: impl std::fmt::Display) -> Response {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        e.to_string(),
    )
    .into_response()
}

fn not_run(ma: &str) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("dossier {ma} is not run by the process manager"),
    )
    .into_response()
}

#[derive(Deserialize)]
struct SheetQuery {
    format: Option<String>,
}

/// `GET /v1/dossiers/{ma_ho_so}/control-sheet[?format=pdf|html]`: the control sheet, HTML by
/// default, PDF with `format=pdf` or `Accept: application/pdf`.
async fn control_sheet(
    State(api): State<Api>,
    Path(ma_ho_so): Path<String>,
    q: Result<Query<SheetQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = api.operator(&headers) {
        return p.into_response();
    }
    let pdf = match q {
        Ok(Query(SheetQuery { format: Some(f) })) if f == "pdf" => true,
        Ok(Query(SheetQuery { format: Some(f) })) if f == "html" => false,
        Ok(Query(SheetQuery { format: Some(f) })) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Bad query",
                format!("format {f:?}: expected pdf or html"),
            )
            .into_response();
        }
        Ok(_) => headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/pdf")),
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Bad query",
                e.body_text(),
            )
            .into_response();
        }
    };
    let store = api.ctx.store.clone();
    let registry = api.ctx.registry.clone();
    let ma = ma_ho_so.clone();
    let built = tokio::task::spawn_blocking(move || {
        let Some(p) = store.process(&ma)? else {
            return Ok(None);
        };
        let trace = store.timeline(&ma)?;
        let sheet = crate::dossier_view::control_sheet(
            &p,
            &registry,
            &trace,
            crate::process_manager::now(),
        );
        Ok::<_, lienthong_core::store::StoreError>(Some(if pdf {
            crate::control_sheet::render_pdf(&sheet)
                .map(|b| ("application/pdf", b))
                .map_err(|e| e.to_string())
        } else {
            Ok((
                "text/html; charset=utf-8",
                crate::control_sheet::render_html(&sheet).into_bytes(),
            ))
        }))
    })
    .await;
    match built {
        Ok(Ok(Some(Ok((ct, body))))) => {
            ([(axum::http::header::CONTENT_TYPE, ct)], body).into_response()
        }
        Ok(Ok(Some(Err(e)))) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "render",
            "Cannot render the control sheet",
            e,
        )
        .into_response(),
        Ok(Ok(None)) => not_run(&ma_ho_so),
        Ok(Err(e)) => store_error(e),
        Err(e) => internal_error(e),
    }
}

/// `GET /v1/overdue`: what `lienthong overdue` lists.
async fn overdue(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(p) = api.operator(&headers) {
        return p.into_response();
    }
    let ctx = api.ctx.clone();
    match tokio::task::spawn_blocking(move || {
        crate::process_manager::overdue(&ctx, crate::process_manager::now())
    })
    .await
    {
        Ok(Ok(items)) => Json(items).into_response(),
        Ok(Err(e)) => store_error(e),
        Err(e) => internal_error(e),
    }
}

/// `GET /metrics`: Prometheus text format (process-manager alerts, …).
async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::metrics_handle()
            .map(|h| h.render())
            .unwrap_or_default(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn dead_letters(
    State(api): State<Api>,
    q: Result<Query<Limit>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Bad query",
                e.body_text(),
            )
            .into_response();
        }
    };
    api.read(&headers, move |store| {
        store.dead_letters(q.limit.unwrap_or(100))
    })
    .await
}

async fn stats(State(api): State<Api>, headers: HeaderMap) -> Response {
    api.read(&headers, |store| store.unit_stats()).await
}

/// A claim-checked attachment, for any holder of a key of the bus (unit, agency callback, or
/// operator key): agencies fetch the documents of the dossiers they were sent from here.
async fn blob(State(api): State<Api>, Path(sha256): Path<String>, headers: HeaderMap) -> Response {
    let key = bearer(&headers).unwrap_or("");
    let known =
        api.ctx.settings.http.operator_key.as_deref() == Some(key)
            || api.ctx.registry.unit_by_api_key(key).is_some()
            || api.ctx.registry.units().any(
                |u| matches!(&u.reach, Reach::Adapter { callback_key: Some(k), .. } if k == key),
            );
    if key.is_empty() || !known {
        return Problem::unauthorized("send a key of the bus as Authorization: Bearer <key>")
            .into_response();
    }
    let blobs = api.ctx.blobs.clone();
    match tokio::task::spawn_blocking(move || blobs.get(&sha256)).await {
        Ok(Ok(Some(bytes))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(Ok(None)) => Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-blob",
            "No such attachment",
            "no attachment with that SHA-256",
        )
        .into_response(),
        other => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store",
            "Blob store error",
            format!("{:?}", other.map(|r| r.err())),
        )
        .into_response(),
    }
}

/// The broker state of this process: (every component connected, no channel failing and the
/// broker not blocking publishers; the JSON body). The body names each component's state and,
/// in `problems`, every component that cannot publish with the broker's error.
async fn broker_state(api: &Api) -> (bool, Value) {
    let (all, components) = api.ctx.health.snapshot();
    let blocked = api
        .broker
        .read()
        .await
        .as_ref()
        .is_some_and(|b| b.conn.status().blocked());
    let ok = all && !blocked;
    let broker = if components.values().any(|c| !c.connected) {
        "unreachable"
    } else if blocked {
        "blocking publishers"
    } else if !all {
        "channel failing"
    } else {
        "connected"
    };
    let mut problems = api.ctx.health.problems();
    if blocked {
        problems.push("the broker is blocking publishers (memory or disk alarm)".into());
    }
    (
        ok,
        json!({"status": if ok { "ok" } else { "degraded" }, "broker": broker, "components": components, "problems": problems}),
    )
}

/// Liveness: 200 while the process runs; the body says `degraded` while the broker is
/// unreachable or blocking.
async fn healthz(State(api): State<Api>) -> Response {
    Json(broker_state(&api).await.1).into_response()
}

/// Readiness: 503 `degraded` while any component of this process has no broker connection or a
/// channel it cannot publish on, or the broker blocks publishers.
async fn readyz(State(api): State<Api>) -> Response {
    let (ok, body) = broker_state(&api).await;
    if ok {
        Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// An agency's system calling the bus as `unit_code`: the unit must exist and be reached by an
/// adapter, and the caller must present that unit's callback key. Returns the adapter's name
/// and settings.
fn agency_caller<'a>(
    api: &'a Api,
    unit_code: &str,
    headers: &HeaderMap,
) -> Result<(&'a str, &'a serde_json::Map<String, Value>), Problem> {
    let unit = api.ctx.registry.unit(unit_code).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-unit",
            "Unknown unit",
            format!("no unit {unit_code}"),
        )
    })?;
    let Reach::Adapter {
        adapter,
        callback_key,
        settings,
        ..
    } = &unit.reach
    else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no-adapter",
            "Unit has no adapter",
            format!("{unit_code} is reached over AMQP"),
        ));
    };
    if callback_key.as_deref().is_none() || bearer(headers) != callback_key.as_deref() {
        return Err(Problem::unauthorized("wrong or missing key of this unit"));
    }
    Ok((adapter.as_str(), settings))
}

/// The edXML pull settings of `unit_code` after checking the caller: the unit must be reached
/// by the `edxml` adapter with `transport = "pull"`, and the caller must present the unit's
/// callback key (the credential its document system already uses to post status packages).
/// Returns (retry on `fail`, max fetches).
fn edxml_department(
    api: &Api,
    unit_code: &str,
    headers: &HeaderMap,
) -> Result<(bool, i64), Problem> {
    let (adapter, settings) = agency_caller(api, unit_code, headers)?;
    if adapter != lienthong_adapters::edxml_adapter::NAME
        || settings.get("transport").and_then(Value::as_str) != Some("pull")
    {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-edxml-pull",
            "Unit does not pull edXML",
            format!("{unit_code} is not reached by the edxml adapter with transport = \"pull\""),
        ));
    }
    let retry = settings.get("on_fail").and_then(Value::as_str) != Some("dead-letter");
    let max = settings
        .get("max_fetches")
        .and_then(Value::as_i64)
        .unwrap_or(5);
    Ok((retry, max))
}

fn store_problem(e: impl std::fmt::Display) -> Problem {
    Problem::unavailable(format!("the outbox is not available: {e}"), 5)
}

/// `GET /v1/edxml/{unit}/packages`: the unit's waiting packages, oldest first (JSON array of
/// `{id, ma_ho_so, document_id, size, created_ms, fetches, state}`).
async fn edxml_list(
    State(api): State<Api>,
    Path(unit): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = edxml_department(&api, &unit, &headers) {
        return p.into_response();
    }
    match api.outbox.list(&unit, 1000).await {
        Ok(items) => Json(items).into_response(),
        Err(e) => store_problem(e).into_response(),
    }
}

/// `GET /v1/edxml/{unit}/packages/{id}`: one package (`application/xml`); 404 when there is no
/// such waiting package.
async fn edxml_fetch(
    State(api): State<Api>,
    Path((unit, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = edxml_department(&api, &unit, &headers) {
        return p.into_response();
    }
    match api.outbox.fetch(&unit, &id).await {
        Ok(Some(pkg)) => (
            [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
            pkg,
        )
            .into_response(),
        Ok(None) => Problem::new(
            StatusCode::NOT_FOUND,
            "no-package",
            "No such package",
            format!("no waiting package {id}"),
        )
        .into_response(),
        Err(e) => store_problem(e).into_response(),
    }
}

/// Body of an acknowledgement.
#[derive(Deserialize)]
struct EdxmlAck {
    /// `done` or `fail`.
    status: String,
    /// Why (`fail`), or a note.
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/edxml/{unit}/packages/{id}/ack` with `{"status": "done" | "fail", "reason": "…"}`:
/// `done` completes the hand-over in the trace; `fail` puts the package back for another fetch
/// or, past `max_fetches` or with `on_fail = "dead-letter"`, dead-letters the message with the
/// department's reason and tells its sender. Answers `{"id", "state"}`.
async fn edxml_ack(
    State(api): State<Api>,
    Path((unit, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match edxml_ack_inner(&api, &unit, &id, &headers, body).await {
        Ok(state) => Json(json!({"id": id, "state": state})).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn edxml_ack_inner(
    api: &Api,
    unit: &str,
    id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<&'static str, Problem> {
    let (retry, max) = edxml_department(api, unit, headers)?;
    let body = body.map_err(|e| body_problem(e, api.ctx.settings.envelope.max_envelope_bytes))?;
    let ack: EdxmlAck = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-ack",
            "Acknowledgement not readable",
            format!("expected {{\"status\": \"done\" | \"fail\", \"reason\": \"…\"}}: {e}"),
        )
    })?;
    let done = match ack.status.as_str() {
        "done" => true,
        "fail" => false,
        other => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-ack",
                "Acknowledgement not readable",
                format!("status {other:?} is neither \"done\" nor \"fail\""),
            ));
        }
    };
    // The broker first: a done or failed package must be traced or dead-lettered.
    let broker = api.broker().await?;
    let reason = ack.reason.unwrap_or_default();
    let acked = api
        .outbox
        .ack(unit, id, done, &reason, retry, max)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no-package",
                "No such package",
                format!("no package {id} for {unit}"),
            )
        })?;
    match acked {
        Acked::Done(env) => {
            let ev =
                TraceEvent::new(TraceEventKind::Delivered, COMPONENT, Some(&env)).reason(format!(
                    "{unit} pulled the edXML package and acknowledged it: done{}",
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    }
                ));
            broker
                .tracer
                .emit(&ev)
                .await
                .map_err(|e| Problem::unavailable(format!("trace not confirmed: {e}"), 5))?;
            Ok("done")
        }
        Acked::AlreadyEnded(state) => Ok(if state == "done" { "done" } else { "failed" }),
        Acked::Retry { .. } => Ok("waiting"),
        Acked::Failed(env, why) => {
            let rejection = Rejection::new(
                RejectCode::AgencyRefused,
                format!("{unit} pulled the edXML package and acknowledged it: fail: {why}"),
            );
            let dlc = lienthong_core::deadletter::DeadLetterChannel::new(
                broker.publisher.clone(),
                broker.tracer.clone(),
                api.ctx.names.clone(),
                COMPONENT,
            );
            let bytes = env.to_bytes();
            let props = envelope_properties(&env);
            let queue = api.ctx.names.unit_queue(unit);
            dlc.send(lienthong_core::deadletter::DeadLetter {
                body: &bytes,
                props: &props,
                rejection: &rejection,
                queue: &queue,
                attempts: 1,
                history: &[],
                envelope: Some(&env),
            })
            .await
            .map_err(|e| Problem::unavailable(format!("dead letter not confirmed: {e}"), 5))?;
            let _ = dlc.notify_sender(&env, &rejection, &api.ctx.registry).await;
            Ok("failed")
        }
    }
}
