//! `POST /v1/callbacks/{unit}`: an agency's answer, read by its unit's adapter (`parse_callback`) and turned into a bus envelope for the dossier's centre.

use super::*;

/// An agency's answer.
///
/// An agency's system posts its answer (a status or the result of a dossier the bus delivered
/// to it) in its own format, with its unit's callback key. The unit's adapter reads it
/// (`MaThamChieu`, the dossier, the status), the bus makes it a `dossier.status` or
/// `dossier.result` envelope for the dossier's centre and publishes it; 200 once the broker
/// confirmed it. A repeated callback (the agency retrying) gets the first answer's id and
/// makes no second result; while the broker is unreachable every callback, a repeated one
/// too, gets 503 with `Retry-After`. `traceparent` continues the dossier's trace.
#[utoipa::path(
    post,
    path = "/v1/callbacks/{unit}",
    tag = "agencies",
    operation_id = "callback",
    security(("agencyKey" = [])),
    params(
        ("unit" = String, Path, description = "The agency's unit code (its callback key must be this unit's)"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context"),
    ),
    request_body(
        description = "The agency's answer in its own interface's format (`schemas/agencies/`): JSON, or XML (edXML status packages, SOAP)",
        content(
            (Object = "application/json"),
            (String = "application/xml"),
        )
    ),
    responses(
        (status = 200, description = "The answer is published to the dossier's centre (or, for a status that changes nothing, traced)", body = Accepted),
        (status = 400, description = "`invalid-callback`: the adapter cannot read it, or it gives an invalid envelope; `bad-body`",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-reference`: no delivery with that `MaThamChieu` to this unit; `no-adapter`",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`reference-mismatch`: the reference is a delivery of another dossier; `callback-differs`: a repeat whose content differs from the first callback of this reference and status, which was taken but whose publish is not confirmed yet (send the first one again)",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn callback(
    State(api): State<Api>,
    PathParams(unit): PathParams<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return body_problem(e, api.ctx.settings.envelope.max_envelope_bytes).into_response();
        }
    };
    // An agency that sends `traceparent` with its answer continues the dossier's trace.
    let handled = lienthong_core::telemetry::in_span(
        lienthong_core::telemetry::Stage::Ingress,
        || Some(lienthong_core::telemetry::from_http(&headers)),
        || {
            vec![
                lienthong_core::telemetry::KeyValue::new("http.route", "/v1/callbacks/{unit}"),
                lienthong_core::telemetry::KeyValue::new("lienthong.unit", unit.clone()),
            ]
        },
        callback_inner(&api, &unit, &headers, &body),
    );
    match handled.await {
        Ok(id) => (StatusCode::OK, Json(Accepted::new(id))).into_response(),
        Err(p) => p.into_response(),
    }
}

pub(super) async fn callback_inner(
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
    let unknown = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-reference",
            "Unknown reference",
            format!(
                "no delivery with MaThamChieu {} to {unit_code}",
                reply.reference
            ),
        )
    };
    let delivery = match api.log.lookup(&reply.reference).await {
        Ok(Some(d)) => d,
        Ok(None) => return Err(unknown()),
        Err(e) => {
            return Err(Problem::unavailable_because(
                "the delivery log could not be read",
                5,
                e,
            ));
        }
    };
    // Another unit's delivery is as unknown to this one as no delivery at all.
    if delivery.unit != unit_code {
        return Err(unknown());
    }
    if delivery.ma_ho_so != reply.ma_ho_so {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "reference-mismatch",
            "Reference does not match",
            format!(
                "MaThamChieu {} is a delivery to {unit_code} of another dossier than {}",
                reply.reference, reply.ma_ho_so
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
        // The adapter's parser says in `reason` what the agency's code was (edXML's 01, 13,
        // 16 …): the route knows no agency's codes.
        let ev = TraceEvent::new(TraceEventKind::Status, COMPONENT, Some(&env)).reason(format!(
            "callback from {unit_code}: {} (no change of TrangThaiHoSo)",
            reply
                .reason
                .as_deref()
                .unwrap_or("a status that changes nothing")
        ));
        let broker = api.broker().await?;
        broker.tracer.emit(&ev).await.map_err(trace_unconfirmed)?;
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
    let mut value = serde_json::to_value(&env).map_err(Problem::internal)?;
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
    // result: the first claim fixes the result (its message id, `sent_at` and the SHA-256 of
    // its bytes); a repeat before the confirmed publish is published only as those same bytes,
    // and once published, repeats only get the id. The claim and the trace event of the
    // envelope it publishes are one write of the process's group commit (one savepoint, like
    // every hot write), before the publish.
    let broker = api.broker().await?;
    let (unit_c, reference, st) = (unit_code.to_string(), reply.reference.clone(), reply.status);
    let reason = format!(
        "callback from {unit_code}: TrangThaiHoSo {} {}",
        reply.status,
        status.name_vi().unwrap_or("")
    );
    // Serialised and hashed here, not on the writer's thread (only a repeat before a confirmed
    // publish serialises again there, with the first claim's id and time).
    let body = serde_json::to_vec(&env).map_err(Problem::internal)?;
    let fixed = deliveries::Fixed {
        message_id: env.message_id.clone(),
        sent_at: Some(env.sent_at.clone()),
        sha256: Some(sha256_hex(&body)),
    };
    let mut env = env;
    let claimed = broker
        .tracer
        .emit_from(&api.ctx.writer, move |c| {
            let (env, body) = match deliveries::claim_callback_in(c, &unit_c, &reference, st, &fixed)? {
                deliveries::Claim::New => (env, body),
                deliveries::Claim::Unpublished(first) => {
                    env.message_id = first.message_id.clone();
                    if let Some(sent_at) = first.sent_at {
                        env.sent_at = sent_at;
                    }
                    let Ok(again) = serde_json::to_vec(&env) else {
                        return Ok((Claimed::Differs(first.message_id), Vec::new()));
                    };
                    // A claim that kept only the id (a build of 2026-12-07 before the
                    // fingerprint) has nothing to compare with: its id is reused.
                    if first.sha256.is_some_and(|h| h != sha256_hex(&again)) {
                        return Ok((Claimed::Differs(first.message_id), Vec::new()));
                    }
                    (env, again)
                }
                deliveries::Claim::UnpublishedEnvelope(stored) => {
                    match serde_json::from_str::<Envelope>(&stored) {
                        Ok(env) => (env, stored.into_bytes()),
                        Err(e) => return Ok((Claimed::Unreadable(e.to_string()), Vec::new())),
                    }
                }
                deliveries::Claim::Published(id) => {
                    return Ok((Claimed::Published(id), Vec::new()));
                }
            };
            let ev = TraceEvent::new(TraceEventKind::Status, COMPONENT, Some(&env)).reason(reason);
            Ok((Claimed::Publish(Box::new(env), body), vec![ev]))
        })
        .await
        .map_err(|e| {
            tracing::error!(message = "the store or the trace did not take the callback", error = %e);
            Problem::unavailable(
                "the store or the trace did not take the callback; nothing was published",
                5,
            )
        })?;
    let (env, body) = match claimed {
        Claimed::Publish(env, body) => (*env, body),
        Claimed::Published(message_id) => return Ok(message_id),
        Claimed::Differs(message_id) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "callback-differs",
                "Callback differs from the first one",
                format!(
                    "a callback for MaThamChieu {} with TrangThaiHoSo {} was taken first, as bus message {message_id}, with another content, and its publish is not confirmed yet: send the same callback again",
                    reply.reference, reply.status
                ),
            ));
        }
        Claimed::Unreadable(e) => return Err(Problem::internal(e)),
    };
    api.publish_ingress_body(&broker, &env, body).await?;
    let (unit_c, reference) = (unit_code.to_string(), reply.reference.clone());
    if let Err(e) = api
        .ctx
        .writer
        .transact(move |c| deliveries::callback_published_in(c, &unit_c, &reference, st))
        .await
    {
        // The result is out; a repeated callback would publish the same bytes again with the
        // same message id, which the router and the centre dedupe.
        tracing::warn!(message = "cannot mark the callback published", error = %e);
    }
    Ok(env.message_id)
}

/// Lower-case hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    lienthong_core::envelope::hex(&sha2::Sha256::digest(bytes))
}

/// What a callback's claim found ([`deliveries::claim_callback_in`]).
enum Claimed {
    /// Publish this envelope, serialised as these bytes (the first claim's).
    Publish(Box<Envelope>, Vec<u8>),
    /// Published before as this message id.
    Published(String),
    /// The first claim (this message id), not yet published, fixed another content.
    Differs(String),
    /// An earlier release's stored envelope does not parse (why).
    Unreadable(String),
}

/// An agency's system calling the bus as `unit_code`: the unit must exist and be reached by an
/// adapter, and the caller must present that unit's callback key. Returns the adapter's name
/// and settings.
pub(super) fn agency_caller<'a>(
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
        adapter, settings, ..
    } = &unit.reach
    else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no-adapter",
            "Unit has no adapter",
            format!("{unit_code} is reached over AMQP"),
        ));
    };
    if !bearer(headers).is_some_and(|k| api.ctx.registry.is_callback_key(unit_code, k)) {
        return Err(Problem::unauthorized("wrong or missing key of this unit"));
    }
    Ok((adapter.as_str(), settings))
}
