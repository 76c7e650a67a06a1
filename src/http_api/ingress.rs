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
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(json!({"message_id": id, "status": "accepted"})),
        )
            .into_response(),
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
    let looked_up = tokio::task::spawn_blocking(move || {
        Ok::<_, lienthong_core::store::StoreError>((
            store.lookup_dossier(&key)?,
            store.message_seen(&id)?,
        ))
    })
    .await;
    let ((runs, origin), seen) = match looked_up {
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
