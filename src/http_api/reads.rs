//! The read endpoints: a dossier's trace, state and control sheet (the operator, or a unit's key
//! for its own dossiers); the operators' retry of
//! blocked steps, overdue, dead letters, stats, blobs (any party's key), metrics.

use lienthong_core::process::Process;
use lienthong_core::store::chain::DossierChain;
use lienthong_core::trace::{DeadLetterRow, TimelineRow, UnitStats};

use super::*;

/// A dossier's hop timeline.
///
/// `GET /v1/dossiers/{ma_ho_so}/trace`: every event of the dossier's messages in the trace
/// (received, routed, delivered, retried, dead-lettered, …), oldest first, as JSON, or with
/// `format=csv` / `format=xlsx` as a download for Excel. The operator key, or the key of a unit
/// that is a party of the dossier (any other key gets 404, as for a dossier that does not
/// exist).
#[utoipa::path(
    get,
    path = "/v1/dossiers/{ma_ho_so}/trace",
    tag = "dossiers",
    operation_id = "trace",
    security(("operatorKey" = []), ("unitKey" = [])),
    params(("ma_ho_so" = String, Path, min_length = 1, max_length = 64, description = "The dossier code"), ExportFormat),
    responses(
        (status = 200, description = "The timeline (empty when the trace has no event of the dossier)",
            content(
                (Vec<TimelineRow> = "application/json"),
                (String = "text/csv"),
                (inline(Binary) = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            )
        ),
        (status = 400, description = "`bad-query`: a format other than json, csv, xlsx; `bad-path`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no dossier of the key's unit with this code", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn trace(
    State(api): State<Api>,
    PathParams(ma_ho_so): PathParams<String>,
    format: Result<Query<ExportFormat>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = api.reader(&headers, &ma_ho_so).await {
        return p.into_response();
    }
    let format = match format {
        Ok(Query(f)) => f,
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
    let Some(f) = format.format.filter(|f| f != "json") else {
        let store = api.ctx.store.clone();
        return match store.read(move |s| s.timeline(&ma_ho_so)).await {
            Ok(rows) => Json(rows).into_response(),
            Err(e) => store_error(e),
        };
    };
    let store = api.ctx.store.clone();
    let ma = ma_ho_so.clone();
    match tokio::task::spawn_blocking(move || store.timeline(&ma)).await {
        Ok(Ok(rows)) => export(
            &crate::dossier_list::trace_sheet(&rows),
            &f,
            &format!("trace-{ma_ho_so}"),
        ),
        Ok(Err(e)) => store_error(e),
        Err(e) => internal_error(e),
    }
}

/// `?format=`: `json` (default), `csv` or `xlsx`.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportFormat {
    /// `json` (default), `csv` or `xlsx` (a download).
    #[param(schema_with = export_formats)]
    format: Option<String>,
}

/// The schema of a `format` parameter: one of `values`.
pub(super) fn formats(values: &[&str]) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// [`ExportFormat::format`]'s schema.
pub(super) fn export_formats() -> utoipa::openapi::schema::Object {
    formats(&["json", "csv", "xlsx"])
}

/// A dossier the process manager runs, as `GET /v1/dossiers/{ma_ho_so}` shows it: its state,
/// and whether its trace chain verifies.
#[derive(Serialize, ToSchema)]
pub(super) struct DossierState {
    /// The process manager's state.
    #[serde(flatten)]
    process: Process,
    /// Whether the dossier's trace chain verifies (no event of it edited, deleted or inserted).
    trace_verified: bool,
    /// The chain's details.
    trace_chain: DossierChain,
}

/// A dossier's state.
///
/// `GET /v1/dossiers/{ma_ho_so}`: the process manager's state of the dossier (its phase, each
/// step of its route with its unit, due time and result, what is blocked), with
/// `trace_verified`; 404 when the bus does not run it. The operator key, or a party's key.
#[utoipa::path(
    get,
    path = "/v1/dossiers/{ma_ho_so}",
    tag = "dossiers",
    operation_id = "dossier",
    security(("operatorKey" = []), ("unitKey" = [])),
    params(("ma_ho_so" = String, Path, min_length = 1, max_length = 64, description = "The dossier code")),
    responses(
        (status = 200, description = "The dossier's state", body = DossierState),
        (status = 400, description = "`bad-path`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: not a dossier of the key's unit, or not run by the process manager", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn dossier(
    State(api): State<Api>,
    PathParams(ma_ho_so): PathParams<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = api.reader(&headers, &ma_ho_so).await {
        return p.into_response();
    }
    process_state(&api, &ma_ho_so).await
}

/// The process manager's state of a dossier as JSON, with `trace_verified` (whether the
/// dossier's trace chain verifies) and `trace_chain` (the details), or 404 when the bus does not
/// run it.
pub(super) async fn process_state(api: &Api, ma_ho_so: &str) -> Response {
    let store = api.ctx.store.clone();
    let ma = ma_ho_so.to_string();
    let read = move || {
        let Some(process) = store.process(&ma)? else {
            return Ok(None);
        };
        let chain = store.verify_dossier_chain(&ma)?;
        Ok::<_, lienthong_core::store::StoreError>(Some(DossierState {
            process,
            trace_verified: chain.verified,
            trace_chain: chain,
        }))
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(Some(p))) => Json(p).into_response(),
        Ok(Ok(None)) => not_run(ma_ho_so),
        Ok(Err(e)) => store_error(e),
        Err(e) => internal_error(e),
    }
}

/// What `POST /v1/dossiers/{ma_ho_so}/retry` takes (an empty body retries everything blocked).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryRequest {
    /// Only this step's hand-over.
    step: Option<String>,
    /// Who retries (recorded in the trace); default `operator`.
    by: Option<String>,
}

/// Retry a dossier's blocked steps.
///
/// An operator hands the blocked steps of a dossier the bus runs over again
/// ([`crate::process_manager::ProcessManager::retry`]): 200 with the dossier's state once the new
/// hand-overs are confirmed by the broker; 404 when the bus does not run it; 409 when nothing
/// (or not that step) is blocked; 503 when the broker is unavailable. An empty body retries
/// every blocked step.
#[utoipa::path(
    post,
    path = "/v1/dossiers/{ma_ho_so}/retry",
    tag = "operators",
    operation_id = "retry",
    security(("operatorKey" = [])),
    params(("ma_ho_so" = String, Path, min_length = 1, max_length = 64, description = "The dossier code")),
    request_body(content = RetryRequest, content_type = "application/json",
        description = "Which step, and who retries; may be left out (an empty body)"),
    responses(
        (status = 200, description = "The dossier's state after the new hand-overs", body = DossierState),
        (status = 400, description = "`malformed-json`; `bad-body`; `bad-path`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: the process manager does not run the dossier", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not-blocked`: nothing (or not that step) is blocked", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`no-such-step`", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn retry(
    State(api): State<Api>,
    PathParams(ma_ho_so): PathParams<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(p) = api.operator(&headers) {
        return p.into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return body_problem(e, api.ctx.settings.http.max_small_body_bytes).into_response();
        }
    };
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
            return Problem::unavailable_because("the retry could not finish", 5, e)
                .into_response();
        }
    }
    process_state(&api, &ma_ho_so).await
}

/// 500 for a store failure (logged with an error id; the answer names the id only).
pub(super) fn store_error(e: impl std::fmt::Display) -> Response {
    Problem::hidden(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store",
        "Store error",
        "the store failed on this request; the operator can find the cause by this instance",
        e,
    )
    .into_response()
}

/// 500 for a task that failed (panicked or was cancelled), logged with an error id.
pub(super) fn internal_error(e: impl std::fmt::Display) -> Response {
    Problem::internal(e).into_response()
}

pub(super) fn not_run(ma: &str) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("dossier {ma} is not run by the process manager"),
    )
    .into_response()
}

/// `?format=` of the control sheet.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SheetQuery {
    /// `html` or `pdf`; without it, PDF when `Accept` names `application/pdf`, else HTML.
    #[param(schema_with = sheet_formats)]
    format: Option<String>,
}

/// [`SheetQuery::format`]'s schema.
fn sheet_formats() -> utoipa::openapi::schema::Object {
    formats(&["html", "pdf"])
}

/// A dossier's control sheet.
///
/// `GET /v1/dossiers/{ma_ho_so}/control-sheet[?format=pdf|html]`: the control sheet (phiếu
/// kiểm soát quá trình giải quyết hồ sơ: each step, its unit, when it was handed over, due and
/// done, and whether the trace chain verifies), HTML by default, PDF with `format=pdf` or
/// `Accept: application/pdf`. The operator key, or a party's key.
#[utoipa::path(
    get,
    path = "/v1/dossiers/{ma_ho_so}/control-sheet",
    tag = "dossiers",
    operation_id = "control_sheet",
    security(("operatorKey" = []), ("unitKey" = [])),
    params(("ma_ho_so" = String, Path, min_length = 1, max_length = 64, description = "The dossier code"), SheetQuery),
    responses(
        (status = 200, description = "The control sheet",
            content((String = "text/html"), (inline(Binary) = "application/pdf"))),
        (status = 400, description = "`bad-query`; `bad-path`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`render`, `store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn control_sheet(
    State(api): State<Api>,
    PathParams(ma_ho_so): PathParams<String>,
    q: Result<Query<SheetQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = api.reader(&headers, &ma_ho_so).await {
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
        let mut sheet = crate::dossier_view::control_sheet(
            &p,
            &registry,
            &trace,
            crate::process_manager::now(),
        );
        let chain = store.verify_dossier_chain(&ma)?;
        sheet.trace_chain = Some(crate::control_sheet::trace_chain_line(&chain));
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
        Ok(Ok(Some(Err(e)))) => Problem::hidden(
            StatusCode::INTERNAL_SERVER_ERROR,
            "render",
            "Cannot render the control sheet",
            "the control sheet could not be rendered",
            e,
        )
        .into_response(),
        Ok(Ok(None)) => not_run(&ma_ho_so),
        Ok(Err(e)) => store_error(e),
        Err(e) => internal_error(e),
    }
}

/// Steps near or past their due time.
///
/// `GET /v1/overdue`: what `lienthong overdue` lists: every open step (or dossier) within the
/// configured margin of its due time (`due_soon`) or past it (`overdue`), and what is
/// `blocked` (a dead-lettered message of the dossier), most urgent first.
#[utoipa::path(
    get,
    path = "/v1/overdue",
    tag = "operators",
    operation_id = "overdue",
    security(("operatorKey" = [])),
    responses(
        (status = 200, description = "Alerts", body = Vec<lienthong_core::process::OverdueItem>),
        (status = 500, description = "`store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn overdue(State(api): State<Api>, headers: HeaderMap) -> Response {
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

/// Prometheus metrics.
///
/// `GET /metrics`: this process's metrics in Prometheus text format (messages, retries, dead
/// letters, broker links, the process manager's alerts, …), with the operator key. `[http]
/// metrics_listen` (or `lienthong run --metrics-listen`) serves the same without a key on an
/// address of its own.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operators",
    operation_id = "metrics",
    security(("operatorKey" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn metrics() -> Response {
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

/// `GET /v1/dead-letters`'s filters (each optional): `reason` (code), `unit` (sender or
/// receiver), `procedure` (`ma_tthc`), `dossier` (`ma_ho_so`), `since` / `until` (day or RFC
/// 3339), `state` (`waiting`, `replayed`; both by default), `limit` (default 100, at most
/// 1000), `offset`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeadLetterParams {
    /// Page size (default 100, at most 1000).
    #[param(nullable = false, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// Rows to skip.
    #[param(nullable = false)]
    offset: Option<u32>,
    /// Reason code (`schema-invalid`, `agency-refused`, `retries-exhausted`, …).
    #[param(nullable = false)]
    reason: Option<String>,
    /// A unit code: dead letters it sent or that were for it.
    #[param(nullable = false)]
    unit: Option<String>,
    /// Procedure code (`ma_tthc`).
    #[param(nullable = false)]
    procedure: Option<String>,
    /// Dossier code (`ma_ho_so`).
    #[param(nullable = false)]
    dossier: Option<String>,
    /// Dead-lettered on or after this day (`YYYY-MM-DD`, +07:00) or RFC 3339 time.
    #[param(schema_with = crate::dossier_list::day_or_time)]
    since: Option<String>,
    /// Dead-lettered on or before this day, or before this RFC 3339 time.
    #[param(schema_with = crate::dossier_list::day_or_time)]
    until: Option<String>,
    /// `waiting` (not replayed yet) or `replayed`; both without it.
    #[param(schema_with = dead_letter_states)]
    state: Option<String>,
}

/// [`DeadLetterParams::state`]'s schema.
fn dead_letter_states() -> utoipa::openapi::schema::Object {
    formats(&["waiting", "replayed"])
}

impl DeadLetterParams {
    fn into_query(self) -> Result<lienthong_core::store::dead_letters::DeadLetterQuery, String> {
        let time = |name: &str, v: Option<String>, end: bool| {
            v.map(|s| crate::dossier_list::parse_time(&s, end))
                .transpose()
                .map_err(|e| format!("{name}: {e}"))
        };
        if let Some(s) = self.state.as_deref()
            && !matches!(s, "waiting" | "replayed")
        {
            return Err(format!("state: waiting or replayed, not {s}"));
        }
        Ok(lienthong_core::store::dead_letters::DeadLetterQuery {
            reason_code: self.reason,
            unit: self.unit,
            ma_tthc: self.procedure,
            ma_ho_so: self.dossier,
            since_ms: time("since", self.since, false)?,
            until_ms: time("until", self.until, true)?,
            state: self.state,
            limit: Some(self.limit.unwrap_or(100)),
            offset: self.offset,
        })
    }
}

/// The dead-letter log.
///
/// `GET /v1/dead-letters`: dead-lettered messages, newest first, with their reason code and
/// reason, the queue and component, the attempts and their history, and whether (and by whom)
/// they were replayed. Replaying is the console's or `lienthong dead-letters replay`.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "operators",
    operation_id = "dead_letters",
    security(("operatorKey" = [])),
    params(DeadLetterParams),
    responses(
        (status = 200, description = "One page of dead letters, newest first", body = Vec<DeadLetterRow>),
        (status = 400, description = "`bad-query`", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn dead_letters(
    State(api): State<Api>,
    q: Result<Query<DeadLetterParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let q = match q
        .map_err(|e| e.body_text())
        .and_then(|Query(q)| q.into_query())
    {
        Ok(q) => q,
        Err(e) => {
            return Problem::new(StatusCode::BAD_REQUEST, "bad-query", "Bad query", e)
                .into_response();
        }
    };
    api.read(&headers, move |store| {
        store.dead_letter_page(&q).map(|p| p.items)
    })
    .await
}

/// Per-unit counts.
///
/// `GET /v1/stats`: for each unit, the messages routed to it, delivered to its system, retried
/// and dead-lettered, with the median and 95th percentile of the time from entry into the bus.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "operators",
    operation_id = "stats",
    security(("operatorKey" = [])),
    responses(
        (status = 200, description = "One row per unit", body = Vec<UnitStats>),
        (status = 500, description = "`store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn stats(State(api): State<Api>, headers: HeaderMap) -> Response {
    api.read(&headers, |store| store.unit_stats()).await
}

/// A claim-checked attachment.
///
/// `GET /v1/blobs/{sha256}`: an attachment the bus took out of an envelope (its reference
/// `urn:lienthong:blob:sha256:<hash>`), for the parties of a dossier it belongs to (its centre,
/// the units it reached: their API or callback key) and the operator. Anyone else, and an
/// unknown hash, get the same 404 (no telling which blobs exist). Streamed from disk, as an
/// attachment the browser must not sniff.
#[utoipa::path(
    get,
    path = "/v1/blobs/{sha256}",
    tag = "units",
    operation_id = "blob",
    security(("unitKey" = []), ("agencyKey" = []), ("operatorKey" = [])),
    params(("sha256" = String, Path, description = "The attachment's SHA-256, 64 lower-case hex digits")),
    responses(
        (status = 200, description = "The attachment's bytes", body = inline(Binary), content_type = "application/octet-stream"),
        (status = 400, description = "`bad-path`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-blob`", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn blob(
    State(api): State<Api>,
    PathParams(sha256): PathParams<String>,
    headers: HeaderMap,
) -> Response {
    let key = bearer(&headers).unwrap_or("");
    let reg = &api.ctx.registry;
    let caller = if key.is_empty() {
        None
    } else if reg.is_operator_key(key) {
        Some(None)
    } else {
        reg.unit_by_api_key(key)
            .or_else(|| reg.unit_by_callback_key(key))
            .map(|u| Some(u.code.clone()))
    };
    let Some(unit) = caller else {
        return Problem::unauthorized("send a key of the bus as Authorization: Bearer <key>")
            .into_response();
    };
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-blob",
            "No such attachment",
            "no attachment with that SHA-256 in a dossier of yours",
        )
        .into_response()
    };
    if let Some(unit) = unit {
        let (store, sha) = (api.ctx.store.clone(), sha256.clone());
        match tokio::task::spawn_blocking(move || store.blob_party(&sha, &unit)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return not_found(),
            Ok(Err(e)) => return store_error(e),
            Err(e) => return internal_error(e),
        }
    }
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{sha256}\""),
        ),
    ];
    if let Some(path) = api.ctx.blobs.file(&sha256) {
        return match tokio::fs::File::open(&path).await {
            Ok(f) => (headers, axum::body::Body::from_stream(file_chunks(f))).into_response(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_found(),
            Err(e) => internal_error(e),
        };
    }
    let blobs = api.ctx.blobs.clone();
    match tokio::task::spawn_blocking(move || blobs.get(&sha256)).await {
        Ok(Ok(Some(bytes))) => (headers, bytes).into_response(),
        Ok(Ok(None)) => not_found(),
        Ok(Err(e)) => internal_error(e),
        Err(e) => internal_error(e),
    }
}

/// A file's bytes as a stream of 64 KiB chunks, ending after the first read error.
fn file_chunks(
    f: tokio::fs::File,
) -> impl futures_lite::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    futures_lite::stream::unfold(Some(f), |f| async move {
        use tokio::io::AsyncReadExt;
        let mut f = f?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}
