//! The console's pages: the layout, login, dossiers (search, filters, pages, exports), one
//! dossier and overdue, each read from the store off the async runtime (units and dead
//! letters have files of their own).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};

use lienthong_core::store::DossierPage;

use super::frame::{layout, read, urlencode};
use super::i18n::{Lang, t};
use super::{Console, Viewer};
use crate::dossier_list::{self, ListParams, local_time, phase_vi, timeliness_vi};

/// The page routes (every one needs a login).
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/dossiers", get(dossiers))
        .route("/dossiers/export", get(export_dossiers))
        .route("/dossiers/{ma}", get(dossier))
        .route("/dossiers/{ma}/export", get(export_trace))
        .route("/dossiers/{ma}/control-sheet", get(control_sheet))
        .route("/overdue", get(overdue))
}

/// The login page, with an error when a login failed.
pub(super) fn login_page(lang: Lang, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                title { (t(lang, "login")) " — " (t(lang, "title")) }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                form.login method="post" action="/console/login" {
                    h1 { (t(lang, "title")) }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    label { (t(lang, "user")) input name="user" autocomplete="username"; }
                    label { (t(lang, "password")) input name="password" type="password" autocomplete="current-password" required; }
                    p { small { (t(lang, "login_hint")) } }
                    button type="submit" { (t(lang, "login")) }
                }
            }
        }
    }
}

fn opt_time(ms: Option<i64>) -> String {
    ms.map(local_time).unwrap_or_default()
}

/// The query string of `p` with another offset (the pager's links).
fn with_offset(p: &ListParams, offset: u32) -> String {
    let mut q: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            q.push((k.into(), v.clone()));
        }
    };
    push("q", &p.q);
    push("procedure", &p.procedure);
    push("centre", &p.centre);
    push("holder", &p.holder);
    push("phase", &p.phase);
    push("since", &p.since);
    push("until", &p.until);
    if p.late {
        q.push(("late".into(), "true".into()));
    }
    q.push(("limit".into(), p.limit.to_string()));
    q.push(("offset".into(), offset.to_string()));
    q.iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn dossiers(
    State(c): State<Console>,
    v: Viewer,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let lang = v.lang;
    let (params, error) = match q {
        Ok(Query(p)) => (p, None),
        Err(e) => (
            ListParams {
                limit: 50,
                ..Default::default()
            },
            Some(e.body_text()),
        ),
    };
    let (page, error) = match (error, params.to_query()) {
        (Some(e), _) | (None, Err(e)) => (None, Some(e)),
        (None, Ok(query)) => {
            let now = lienthong_core::clock::now_ms();
            match read(&c, move |s| s.dossiers(&query, now)).await {
                Ok(p) => (Some(p), None),
                Err(r) => return r,
            }
        }
    };
    let body = dossiers_body(lang, &params, page.as_ref(), error.as_deref());
    layout(&v, "dossiers", t(lang, "dossiers"), body).into_response()
}

fn dossiers_body(
    lang: Lang,
    p: &ListParams,
    page: Option<&DossierPage>,
    error: Option<&str>,
) -> Markup {
    let val = |o: &Option<String>| o.clone().unwrap_or_default();
    let phases = [
        ("", t(lang, "any")),
        ("open", t(lang, "open")),
        ("ended", t(lang, "ended")),
        ("running", phase_vi("running")),
        ("paused", phase_vi("paused")),
        ("completed", phase_vi("completed")),
        ("refused", phase_vi("refused")),
        ("stopped", phase_vi("stopped")),
        ("withdrawn", phase_vi("withdrawn")),
    ];
    let export = with_offset(p, p.offset);
    html! {
        form.filters method="get" action="/console/dossiers" role="search" {
            label { (t(lang, "search")) input name="q" size="40" value=(val(&p.q)) placeholder=(t(lang, "search_hint")) autofocus; }
            label { (t(lang, "procedure")) input name="procedure" size="10" value=(val(&p.procedure)); }
            label { (t(lang, "centre")) input name="centre" size="14" value=(val(&p.centre)); }
            label { (t(lang, "holder")) input name="holder" size="14" value=(val(&p.holder)); }
            label { (t(lang, "phase"))
                select name="phase" {
                    @for (code, name) in phases {
                        option value=(code) selected[p.phase.as_deref().unwrap_or("") == code] { (name) }
                    }
                }
            }
            label { (t(lang, "since")) input type="date" name="since" value=(val(&p.since)); }
            label { (t(lang, "until")) input type="date" name="until" value=(val(&p.until)); }
            label { (t(lang, "late_only")) input type="checkbox" name="late" value="true" checked[p.late]; }
            button type="submit" { (t(lang, "search")) }
        }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if let Some(page) = page {
            p {
                (page.total) " " (t(lang, "found")) " · " (t(lang, "export")) ": "
                a href={ "/console/dossiers/export?" (export) "&format=csv" } { "CSV" } " · "
                a href={ "/console/dossiers/export?" (export) "&format=xlsx" } { "Excel (XLSX)" }
            }
            table #dossiers {
                thead { tr {
                    th { (t(lang, "code")) } th { (t(lang, "procedure")) } th { (t(lang, "centre")) }
                    th { (t(lang, "applicant")) } th { (t(lang, "phase")) } th { (t(lang, "holder")) }
                    th { (t(lang, "received")) } th { (t(lang, "due")) } th { (t(lang, "timeliness")) }
                } }
                tbody {
                    @for r in &page.items {
                        tr class=[r.timeliness.clone()] {
                            td { a href={ "/console/dossiers/" (urlencode(&r.ma_ho_so)) } { (r.ma_ho_so) } }
                            td { (r.ma_tthc) }
                            td { (r.centre) }
                            td { (r.applicant.clone().unwrap_or_default()) }
                            td { (phase_vi(&r.phase)) }
                            td { (r.holder.clone().unwrap_or_default()) }
                            td { (local_time(r.received_ms)) }
                            td { (opt_time(r.due_ms)) }
                            td { (r.timeliness.as_deref().map(timeliness_vi).unwrap_or_default()) }
                        }
                    }
                }
            }
            @if page.items.is_empty() { p { (t(lang, "none")) } }
            div.pager {
                @if page.offset > 0 {
                    a href={ "/console/dossiers?" (with_offset(p, page.offset.saturating_sub(p.limit))) } { (t(lang, "prev")) }
                }
                @if u64::from(page.offset) + (page.items.len() as u64) < page.total {
                    a href={ "/console/dossiers?" (with_offset(p, page.offset + p.limit)) } { (t(lang, "next")) }
                }
            }
        }
    }
}

async fn export_dossiers(
    State(c): State<Console>,
    _v: Viewer,
    Query(p): Query<ListParams>,
) -> Response {
    let query = match p.to_query() {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let now = lienthong_core::clock::now_ms();
    let page = match read(&c, move |s| s.dossiers(&query, now)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    download(
        &dossier_list::dossier_sheet(&page.items),
        p.format.as_deref().unwrap_or("csv"),
        "dossiers",
    )
}

/// `?format=` of an export.
#[derive(serde::Deserialize)]
struct Format {
    format: Option<String>,
}

async fn export_trace(
    State(c): State<Console>,
    _v: Viewer,
    Path(ma): Path<String>,
    Query(f): Query<Format>,
) -> Response {
    let m = ma.clone();
    let rows = match read(&c, move |s| s.timeline(&m)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    download(
        &dossier_list::trace_sheet(&rows),
        f.format.as_deref().unwrap_or("csv"),
        &format!("trace-{ma}"),
    )
}

/// A sheet as a CSV or XLSX download.
fn download(sheet: &dossier_list::Sheet, format: &str, name: &str) -> Response {
    let (bytes, ct) = match format {
        "xlsx" => (
            dossier_list::to_xlsx(sheet, "lienthong"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        "csv" => (dossier_list::to_csv(sheet), "text/csv; charset=utf-8"),
        _ => return (StatusCode::BAD_REQUEST, "format: csv or xlsx").into_response(),
    };
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match bytes {
        Ok(b) => (
            [
                (header::CONTENT_TYPE, ct.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}.{format}\""),
                ),
            ],
            b,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(message = "console: export failed", error = %e);
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Everything the dossier page shows, read at once.
struct DossierData {
    row: Option<lienthong_core::store::DossierRow>,
    process: Option<lienthong_core::process::Process>,
    timeline: Vec<lienthong_core::trace::TimelineRow>,
    chain: lienthong_core::store::chain::DossierChain,
    /// The dossier's stored envelopes, or why they cannot be read (a body that does not
    /// decompress): the rest of the page stays readable.
    envelopes: Result<Vec<lienthong_core::store::StoredMessage>, String>,
}

async fn dossier(State(c): State<Console>, v: Viewer, Path(ma): Path<String>) -> Response {
    let lang = v.lang;
    let m = ma.clone();
    let with_envelopes = v.operator();
    let data = match read(&c, move |s| {
        Ok(DossierData {
            row: s.dossier_row(&m, lienthong_core::clock::now_ms())?,
            process: s.process(&m)?,
            timeline: s.timeline(&m)?,
            chain: s.verify_dossier_chain(&m)?,
            envelopes: if with_envelopes {
                s.stored_messages(&lienthong_core::store::MessageSelection {
                    ma_ho_so: Some(m.clone()),
                    ..Default::default()
                })
                .map_err(|e| e.to_string())
            } else {
                Ok(Vec::new())
            },
        })
    })
    .await
    {
        Ok(d) => d,
        Err(r) => return r,
    };
    if data.row.is_none() && data.timeline.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            layout(&v, "dossiers", &ma, html! { p { (t(lang, "not_found")) } }),
        )
            .into_response();
    }
    let enc = urlencode(&ma);
    let body = html! {
        @if let Some(r) = &data.row {
            table {
                tr { th { (t(lang, "procedure")) } td { (r.ma_tthc) } th { (t(lang, "centre")) } td { (r.centre) } }
                tr { th { (t(lang, "applicant")) } td { (r.applicant.clone().unwrap_or_default()) } th { (t(lang, "phase")) } td { (phase_vi(&r.phase)) } }
                tr { th { (t(lang, "holder")) } td { (r.holder.clone().unwrap_or_default()) } th { (t(lang, "received")) } td { (local_time(r.received_ms)) } }
                tr class=[r.timeliness.clone()] { th { (t(lang, "due")) } td { (opt_time(r.due_ms)) } th { (t(lang, "timeliness")) } td { (r.timeliness.as_deref().map(timeliness_vi).unwrap_or_default()) } }
            }
        }
        @if data.chain.verified {
            p.ok #chain { (t(lang, "chain_ok")) }
        } @else {
            p.bad #chain { (t(lang, "chain_bad")) ": " (data.chain.reason.clone().unwrap_or_default()) }
        }
        @if data.process.is_some() {
            p {
                (t(lang, "control_sheet")) ": "
                a href={ "/console/dossiers/" (enc) "/control-sheet" } { "HTML" } " · "
                a href={ "/console/dossiers/" (enc) "/control-sheet?format=pdf" } { "PDF" }
            }
        }
        @if let Some(p) = &data.process {
            h2 { (t(lang, "steps")) }
            table #steps {
                thead { tr { th { (t(lang, "step")) } th { (t(lang, "unit")) } th { (t(lang, "phase")) } th { (t(lang, "received")) } th { (t(lang, "due")) } th { (t(lang, "ended_at")) } th { (t(lang, "timeliness")) } } }
                tbody {
                    @for s in &p.steps {
                        @let tl = s.timeliness.and_then(|x| serde_json::to_value(x).ok()).and_then(|x| x.as_str().map(str::to_string));
                        tr class=[tl.clone()] {
                            td { (s.name) } td { (s.unit) } td { (format!("{:?}", s.phase)) }
                            td { (s.handed_at.clone().unwrap_or_default()) } td { (s.due.clone().unwrap_or_default()) }
                            td { (s.ended_at.clone().unwrap_or_default()) } td { (tl.as_deref().map(timeliness_vi).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        h2 { (t(lang, "timeline")) " · " a href={ "/console/dossiers/" (enc) "/export?format=csv" } { "CSV" } " · " a href={ "/console/dossiers/" (enc) "/export?format=xlsx" } { "XLSX" } }
        table #timeline {
            thead { tr { th { (t(lang, "at")) } th { (t(lang, "event")) } th { (t(lang, "from")) } th { (t(lang, "to")) } th { (t(lang, "attempt")) } th { (t(lang, "elapsed")) } th { (t(lang, "reason")) } } }
            tbody {
                @for r in &data.timeline {
                    tr class=[matches!(r.event.as_str(), "dead_lettered" | "rejected").then_some("late")] {
                        td { (r.at) } td { (r.event) } td { (r.from.clone().unwrap_or_default()) } td { (r.to.clone().unwrap_or_default()) }
                        td { (r.attempt.map(|a| a.to_string()).unwrap_or_default()) } td { (r.elapsed_ms) } td { (r.reason.clone().unwrap_or_default()) }
                    }
                }
            }
        }
        @match &data.envelopes {
            Ok(envelopes) if !envelopes.is_empty() => {
                h2 { (t(lang, "envelopes")) }
                @for m in envelopes {
                    details { summary { (m.kind) " " (m.sender) " → " (m.receiver) " · " (m.message_id) } pre { (String::from_utf8_lossy(&m.body)) } }
                }
            }
            Ok(_) => {}
            Err(why) => {
                h2 { (t(lang, "envelopes")) }
                p class="late" { (t(lang, "envelopes_unreadable")) ": " (why) }
            }
        }
    };
    layout(&v, "dossiers", &ma, body).into_response()
}

/// `?format=pdf` for the control sheet's PDF.
async fn control_sheet(
    State(c): State<Console>,
    _v: Viewer,
    Path(ma): Path<String>,
    Query(f): Query<Format>,
) -> Response {
    let registry = c.ctx.registry.clone();
    let m = ma.clone();
    let sheet = match read(&c, move |s| {
        let Some(p) = s.process(&m)? else {
            return Ok(None);
        };
        let trace = s.timeline(&m)?;
        let mut sheet = crate::dossier_view::control_sheet(
            &p,
            &registry,
            &trace,
            crate::process_manager::now(),
        );
        sheet.trace_chain = Some(crate::control_sheet::trace_chain_line(
            &s.verify_dossier_chain(&m)?,
        ));
        Ok(Some(sheet))
    })
    .await
    {
        Ok(Some(s)) => s,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(r) => return r,
    };
    if f.format.as_deref() == Some("pdf") {
        match tokio::task::spawn_blocking(move || crate::control_sheet::render_pdf(&sheet)).await {
            Ok(Ok(pdf)) => (
                [
                    (header::CONTENT_TYPE, "application/pdf".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!(
                            "attachment; filename=\"phieu-kiem-soat-{}.pdf\"",
                            urlencode(&ma)
                        ),
                    ),
                ],
                pdf,
            )
                .into_response(),
            _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    } else {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            crate::control_sheet::render_html(&sheet),
        )
            .into_response()
    }
}

async fn overdue(State(c): State<Console>, v: Viewer) -> Response {
    let lang = v.lang;
    let ctx = c.ctx.clone();
    let items = match tokio::task::spawn_blocking(move || {
        crate::process_manager::overdue(&ctx, crate::process_manager::now())
    })
    .await
    {
        Ok(Ok(i)) => i,
        _ => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let body = html! {
        @if items.is_empty() { p { (t(lang, "none")) } } @else {
            table #overdue {
                thead { tr { th { (t(lang, "code")) } th { (t(lang, "step")) } th { (t(lang, "holder")) } th { (t(lang, "due")) } th { (t(lang, "level")) } th { (t(lang, "left")) } th { (t(lang, "reason")) } } }
                tbody {
                    @for i in &items {
                        @let level = serde_json::to_value(i.level).ok().and_then(|x| x.as_str().map(str::to_string)).unwrap_or_default();
                        tr class=[(level == "overdue").then_some("late")] {
                            td { a href={ "/console/dossiers/" (urlencode(&i.ma_ho_so)) } { (i.ma_ho_so) } }
                            td { (i.step.clone().unwrap_or_default()) } td { (i.holder) } td { (i.due) } td { (level) }
                            td { (format!("{:.1}", i.office_secs_left as f64 / 3600.0)) } td { (i.reason.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    layout(&v, "overdue", t(lang, "overdue"), body).into_response()
}
