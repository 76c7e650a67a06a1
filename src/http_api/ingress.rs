//! `POST /v1/messages`: a unit files an envelope over HTTP (key, body limit, validation with
//! the message id of [`super::message_ids`], publish to ingress with a publisher confirm, or an
//! RFC 9457 problem).

use super::*;

/// A body the HTTP layer could not take (too large, broken transfer) as a problem.
pub(super) fn body_problem(e: BytesRejection, limit: usize) -> Problem {
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

/// What the bus answers when it has taken a message: `POST /v1/messages` (202) and an agency's
/// callback (200).
#[derive(Serialize, ToSchema)]
pub(super) struct Accepted {
    /// The message's id: the sender's own `message_id`, or the one the bus gave it (a UUIDv7;
    /// the same again for a resend under the same `Idempotency-Key`).
    message_id: String,
    /// Always `accepted`: the broker has the message (what happens to it next comes back on
    /// the sender's queue or inbox: statuses, results, a `bus.dead_letter` notice).
    status: AcceptedStatus,
}

/// [`Accepted::status`].
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum AcceptedStatus {
    /// The broker confirmed the message.
    Accepted,
}

impl Accepted {
    /// The answer for message `message_id`.
    pub(super) fn new(message_id: String) -> Self {
        Accepted {
            message_id,
            status: AcceptedStatus::Accepted,
        }
    }
}

/// File an envelope.
///
/// A unit's software that does not speak AMQP files an envelope with its unit's key: the same
/// checks as over AMQP (the envelope schema, the field rules, a filing's procedure schema, the
/// registry, the procedure's route), then the bus publishes it to its ingress exchange and
/// answers 202 once the broker confirmed it. The envelope's `sender` must be the key's unit.
/// Without `message_id` the bus gives one (a UUIDv7) and answers it; with an `Idempotency-Key`
/// a resend of the same body gets the same id and files nothing twice. Attachments above
/// `[envelope] max_inline_attachment_bytes` leave the envelope for the blob store
/// (`GET /v1/blobs/{sha256}`). A 4xx problem means nothing was filed: its `type` says why
/// (`errors[]` lists each schema error, or for `procedure-data-invalid` each field the route
/// needs).
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "units",
    operation_id = "submit",
    security(("unitKey" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 257,
            description = "1 to 255 visible ASCII characters (bare, or quoted as an RFC 8941 string), e.g. a UUID: a resend of the same body under the same key gets the first answer and files nothing twice; the key with another body is a 422 `idempotency-key-reused`"),
        ("traceparent" = Option<String>, Header,
            description = "W3C trace context: the bus's spans of this message continue the sender's trace"),
    ),
    request_body(
        content = ref("#/components/schemas/EnvelopeSubmission"),
        content_type = "application/json",
        description = "The envelope (`schemas/envelope.schema.json`); `message_id` may be left out"
    ),
    responses(
        (status = 202, description = "The broker has the message", body = Accepted),
        (status = 400, description = "`malformed-json`, `bad-body`, `bad-idempotency-key`",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`sender-mismatch`: the envelope's `sender` is not the key's unit",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`too-large`: above `[envelope] max_envelope_bytes`, or the broker's limit",
            body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: not `Content-Type: application/json`",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The envelope is refused: a rejection code (`schema-invalid`, `invalid-field`, `procedure-data-invalid`, `unknown-receiver`, `not-on-route`, …) or `idempotency-key-reused`",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn submit(
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
    let submitted = lienthong_core::telemetry::in_span(
        lienthong_core::telemetry::Stage::Ingress,
        || Some(lienthong_core::telemetry::from_http(&headers)),
        || {
            vec![lienthong_core::telemetry::KeyValue::new(
                "http.route",
                "/v1/messages",
            )]
        },
        submit_inner(&api, &headers, &body),
    );
    match submitted.await {
        Ok(id) => (StatusCode::ACCEPTED, Json(Accepted::new(id))).into_response(),
        Err(p) => p.into_response(),
    }
}

pub(super) async fn submit_inner(
    api: &Api,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, Problem> {
    let unit = api.caller(headers)?.clone();
    let (env, keyed) = super::message_ids::accept_envelope(api, &unit, headers, body).await?;
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
    // A sender gives its own documents by https:// URL or inline, never a blob of the bus.
    routing::check_references(&env, false)?;
    // The same store read as the router's: does the process manager run the dossier (then a
    // forward without receiver is the centre's answer to a pause, not a filing), and which
    // centre filed it.
    let store = api.ctx.store.clone();
    let key = env.ma_ho_so.clone();
    let id = env.message_id.clone();
    let looked_up = tokio::task::spawn_blocking(move || store.arrival(&key, &id)).await;
    let lienthong_core::store::Arrival { runs, origin, seen } = match looked_up {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            return Err(Problem::unavailable_because(
                "the store could not be read",
                5,
                e,
            ));
        }
        Err(e) => return Err(Problem::internal(e)),
    };
    routing::check_message_id(&env, seen.as_ref())?;
    // A resend under the same Idempotency-Key of a message the bus already took: the same
    // answer, nothing filed twice.
    if keyed && seen.is_some() {
        return Ok(env.message_id);
    }
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
        let note = lienthong_core::store::DossierNote::of(&env, &decision.receiver);
        let recorded = api.ctx.writer.record_origin(o, note).await;
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
        .map_err(Problem::internal)?;
        r.map_err(|e| Problem::unavailable_because("the claim-check store failed", 5, e))?;
        // Who may fetch the blobs, and when they go: the dossier's.
        api.ctx
            .writer
            .record_blobs(&e.ma_ho_so, lienthong_core::claimcheck::blob_refs(&e))
            .await
            .map_err(|why| {
                Problem::unavailable_because("the store did not record the attachments", 5, why)
            })?;
        env = e;
    }
    let ev =
        TraceEvent::new(TraceEventKind::Received, COMPONENT, Some(&env)).reason("via HTTP API");
    api.trace_and_publish(&ev, &env).await?;
    Ok(env.message_id)
}
