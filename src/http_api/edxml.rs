//! The edXML pull routes: a department lists, fetches and acknowledges its packages from the outbox.

use super::*;

/// The edXML pull settings of `unit_code` after checking the caller: the unit must be reached
/// by the `edxml` adapter with `transport = "pull"`, and the caller must present the unit's
/// callback key (the credential its document system already uses to post status packages).
/// Returns (retry on `fail`, max fetches).
pub(super) fn edxml_department(
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

/// 503 for an outbox (store) failure; the cause is logged, not sent.
pub(super) fn store_problem(e: impl std::fmt::Display) -> Problem {
    Problem::unavailable_because("the outbox is not available", 5, e)
}

/// List the department's waiting edXML packages.
///
/// `GET /v1/edxml/{unit}/packages`: the unit's waiting packages, oldest first (JSON array of
/// `{id, ma_ho_so, document_id, size, created_ms, fetches, state}`), at most 1000. For a
/// department reached by the `edxml` adapter with `transport = "pull"`, with its unit's
/// callback key.
#[utoipa::path(
    get,
    path = "/v1/edxml/{unit}/packages",
    tag = "agencies",
    operation_id = "edxml_list",
    security(("agencyKey" = [])),
    params(("unit" = String, Path, description = "The department's unit code")),
    responses(
        (status = 200, description = "The waiting packages, oldest first", body = Vec<lienthong_core::store::OutboxItem>),
        (status = 404, description = "`not-edxml-pull`: the unit does not pull edXML", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn edxml_list(
    State(api): State<Api>,
    PathParams(unit): PathParams<String>,
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

/// Fetch one edXML package.
///
/// `GET /v1/edxml/{unit}/packages/{id}`: one package (QCVN 102:2016 edXML, `application/xml`);
/// 404 when there is no such waiting package. The package stays until it is acknowledged.
#[utoipa::path(
    get,
    path = "/v1/edxml/{unit}/packages/{id}",
    tag = "agencies",
    operation_id = "edxml_fetch",
    security(("agencyKey" = [])),
    params(
        ("unit" = String, Path, description = "The department's unit code"),
        ("id" = String, Path, description = "The package's id (from the list)"),
    ),
    responses(
        (status = 200, description = "The edXML package", body = String, content_type = "application/xml"),
        (status = 404, description = "`not-edxml-pull`, `no-package`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn edxml_fetch(
    State(api): State<Api>,
    PathParams((unit, id)): PathParams<(String, String)>,
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
#[derive(Deserialize, ToSchema)]
pub(super) struct EdxmlAck {
    /// `done` or `fail`.
    #[schema(schema_with = ack_status)]
    status: String,
    /// Why (`fail`), or a note.
    #[serde(default)]
    reason: Option<String>,
}

/// [`EdxmlAck::status`]'s schema: `done` or `fail`.
fn ack_status() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["done", "fail"]))
        .description(Some("`done` or `fail`."))
        .build()
}

/// The answer to an acknowledgement.
#[derive(Serialize, ToSchema)]
pub(super) struct EdxmlAckResult {
    /// The package's id.
    id: String,
    /// The package's state now.
    state: EdxmlState,
}

/// [`EdxmlAckResult::state`].
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum EdxmlState {
    /// The hand-over is complete (traced `delivered`).
    Done,
    /// Dead-lettered with the department's reason; its sender is told.
    Failed,
    /// Back in the outbox for another fetch.
    Waiting,
}

/// Acknowledge an edXML package.
///
/// `POST /v1/edxml/{unit}/packages/{id}/ack` with `{"status": "done" | "fail", "reason": "…"}`:
/// `done` completes the hand-over in the trace; `fail` puts the package back for another fetch
/// or, past `max_fetches` or with `on_fail = "dead-letter"`, dead-letters the message with the
/// department's reason and tells its sender. Answers `{"id", "state"}`; a package acknowledged
/// before answers its state again.
#[utoipa::path(
    post,
    path = "/v1/edxml/{unit}/packages/{id}/ack",
    tag = "agencies",
    operation_id = "edxml_ack",
    security(("agencyKey" = [])),
    params(
        ("unit" = String, Path, description = "The department's unit code"),
        ("id" = String, Path, description = "The package's id"),
    ),
    request_body = EdxmlAck,
    responses(
        (status = 200, description = "The package's state", body = EdxmlAckResult),
        (status = 400, description = "`invalid-ack`; `bad-body`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-edxml-pull`, `no-package`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn edxml_ack(
    State(api): State<Api>,
    PathParams((unit, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match edxml_ack_inner(&api, &unit, &id, &headers, body).await {
        Ok(state) => Json(EdxmlAckResult { id, state }).into_response(),
        Err(p) => p.into_response(),
    }
}

pub(super) async fn edxml_ack_inner(
    api: &Api,
    unit: &str,
    id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<EdxmlState, Problem> {
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
            broker.tracer.emit(&ev).await.map_err(trace_unconfirmed)?;
            Ok(EdxmlState::Done)
        }
        Acked::AlreadyEnded(state) => Ok(if state == "done" {
            EdxmlState::Done
        } else {
            EdxmlState::Failed
        }),
        Acked::Retry { .. } => Ok(EdxmlState::Waiting),
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
            .map_err(|e| {
                Problem::unavailable_because(
                    "the dead letter was not confirmed",
                    5,
                    format!("dead letter not confirmed: {e}"),
                )
            })?;
            let _ = dlc.notify_sender(&env, &rejection, &api.ctx.registry).await;
            Ok(EdxmlState::Failed)
        }
    }
}
