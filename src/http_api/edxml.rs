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

/// `GET /v1/edxml/{unit}/packages`: the unit's waiting packages, oldest first (JSON array of
/// `{id, ma_ho_so, document_id, size, created_ms, fetches, state}`).
pub(super) async fn edxml_list(
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
pub(super) async fn edxml_fetch(
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
pub(super) struct EdxmlAck {
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
pub(super) async fn edxml_ack(
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

pub(super) async fn edxml_ack_inner(
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
            broker.tracer.emit(&ev).await.map_err(trace_unconfirmed)?;
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
            .map_err(|e| {
                Problem::unavailable_because(
                    "the dead letter was not confirmed",
                    5,
                    format!("dead letter not confirmed: {e}"),
                )
            })?;
            let _ = dlc.notify_sender(&env, &rejection, &api.ctx.registry).await;
            Ok("failed")
        }
    }
}
