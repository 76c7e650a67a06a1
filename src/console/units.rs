//! The console's units page: per unit its queue depth and consumers (asked of the broker), what
//! the trace counts over the last hour and day, delivery latency, the adapter's last success and
//! last error, and the result of its connection check (`lienthong check`, run on request); a
//! unit that is failing is listed first, in red, with why.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use maud::{Markup, html};

use lienthong_core::registry::Reach;
use lienthong_core::store::activity::{Counts, UnitActivity};

use super::frame::{layout, read, urlencode};
use super::i18n::{Lang, t};
use super::{Console, CsrfForm, Viewer, session};
use crate::check::Row as CheckRow;
use crate::dossier_list::local_time;

/// The units routes.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/units", get(units))
        .route("/units/{code}/check", post(check))
}

/// How long a connection check's result is shown and counts towards a unit's health, ms.
const CHECK_SHOWN_MS: i64 = 15 * 60_000;

/// The connection checks run from the units page, in this process: the last result of each
/// unit (when, ms since the epoch, rows) and the permits of the checks running now (two at a
/// time, one per unit).
pub struct Checks {
    last: std::sync::Mutex<HashMap<String, (i64, Vec<CheckRow>)>>,
    running: std::sync::Arc<tokio::sync::Semaphore>,
    units_running: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            last: Default::default(),
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(2)),
            units_running: Default::default(),
        }
    }
}

impl Checks {
    /// The results newer than [`CHECK_SHOWN_MS`] at `now`.
    fn recent(&self, now: i64) -> HashMap<String, (i64, Vec<CheckRow>)> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.retain(|_, (at, _)| now - *at < CHECK_SHOWN_MS);
        last.clone()
    }
}

/// A queue as the broker sees it: messages ready, consumers.
type Depth = (u32, u32);

/// Ask the broker for each queue's depth and consumers (a passive declare each, 3 s in all). A
/// queue the broker does not know, or no answer, is absent.
async fn depths(conn: &lapin::Connection, queues: Vec<String>) -> HashMap<String, Depth> {
    let mut out = HashMap::new();
    let open = || async {
        conn.create_channel()
            .await
            .inspect_err(|e| tracing::warn!(message = "units page: no channel to ask the broker", error = %e))
            .ok()
    };
    let ask = async {
        let mut ch = open().await;
        for q in queues {
            let Some(c) = ch.as_ref() else { break };
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            match c
                .queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(d) => {
                    out.insert(q, (d.message_count(), d.consumer_count()));
                }
                // The broker closes the channel on an unknown queue: take another.
                Err(e) => {
                    tracing::warn!(message = "units page: the broker did not describe a queue", queue = %q, error = %e);
                    ch = open().await
                }
            }
        }
        if let Some(c) = ch {
            let _ = c.close(200, "units page".into()).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .is_err()
    {
        tracing::warn!(message = "units page: the broker did not describe the queues in 3 s");
    }
    out
}

/// One row of the page.
struct UnitRow {
    code: String,
    name: String,
    reach: String,
    adapter: bool,
    depth: Option<Depth>,
    activity: Option<UnitActivity>,
    check: Option<(i64, Vec<CheckRow>)>,
    /// Why it is failing (empty: it is not).
    problems: Vec<String>,
}

/// Why a unit is failing, in `lang`: its connection check failed, its last error came after
/// its last success (or there was no success in the day), or messages wait with no consumer.
fn problems(lang: Lang, r: &UnitRow) -> Vec<String> {
    let mut p = Vec::new();
    if let Some((_, rows)) = &r.check
        && rows.iter().any(|x| x.result == "fail")
    {
        p.push(t(lang, "check_failed").to_string());
    }
    if let Some(a) = &r.activity
        && let Some(e) = &a.last_error
        && last_success(r.adapter, a).is_none_or(|s| s < e.at_ms)
    {
        p.push(t(lang, "error_since_success").to_string());
    }
    if let Some((ready, 0)) = r.depth
        && ready > 0
    {
        p.push(format!("{ready} {}", t(lang, "waiting_no_consumer")));
    }
    p
}

/// A unit's last success: the last delivery to its system for a unit behind an adapter; for a
/// unit that reads its queue over AMQP, also the last message routed to it (the bus sees no
/// delivery beyond its queue).
fn last_success(adapter: bool, a: &UnitActivity) -> Option<i64> {
    if adapter {
        a.last_success_ms
    } else {
        a.last_success_ms.max(a.last_routed_ms)
    }
}

async fn units(State(c): State<Console>, v: Viewer) -> Response {
    let lang = v.lang;
    let now = lienthong_core::clock::now_ms();
    let activity = match read(&c, move |s| s.unit_activity(now)).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut by_unit: HashMap<String, UnitActivity> =
        activity.into_iter().map(|a| (a.unit.clone(), a)).collect();
    let queues = c
        .ctx
        .registry
        .units()
        .map(|u| c.ctx.names.unit_queue(&u.code))
        .collect();
    let conn = (c.broker)();
    let depth = match conn {
        Some(conn) => depths(&conn, queues).await,
        None => HashMap::new(),
    };
    let checks = c.checks.recent(now);
    let mut rows: Vec<UnitRow> = c
        .ctx
        .registry
        .units()
        .map(|u| {
            let (reach, adapter) = match &u.reach {
                Reach::Amqp => ("AMQP".to_string(), false),
                Reach::Adapter { adapter, .. } => (adapter.clone(), true),
            };
            UnitRow {
                code: u.code.clone(),
                name: u.name.clone(),
                reach,
                adapter,
                depth: depth.get(&c.ctx.names.unit_queue(&u.code)).copied(),
                activity: by_unit.remove(&u.code),
                check: checks.get(&u.code).cloned(),
                problems: Vec::new(),
            }
        })
        .collect();
    // Units the trace names that the registry no longer has.
    rows.extend(by_unit.into_values().map(|a| UnitRow {
        code: a.unit.clone(),
        name: String::new(),
        reach: "?".into(),
        adapter: false,
        depth: None,
        activity: Some(a),
        check: None,
        problems: Vec::new(),
    }));
    for r in &mut rows {
        r.problems = problems(lang, r);
    }
    // Failing units first.
    rows.sort_by(|a, b| (a.problems.is_empty(), &a.code).cmp(&(b.problems.is_empty(), &b.code)));
    let body = html! {
        p { small { (t(lang, "units_hint")) } }
        table #units {
            thead {
                tr {
                    th rowspan="2" { (t(lang, "unit")) } th rowspan="2" { (t(lang, "reach")) }
                    th colspan="2" { (t(lang, "queue")) }
                    th colspan="4" { (t(lang, "last_hour")) } th colspan="4" { (t(lang, "last_day")) }
                    th rowspan="2" { (t(lang, "p50")) } th rowspan="2" { (t(lang, "p95")) }
                    th rowspan="2" { (t(lang, "last_success")) } th rowspan="2" { (t(lang, "last_error")) }
                    th rowspan="2" { (t(lang, "connection_check")) } th rowspan="2" { (t(lang, "health")) }
                }
                tr {
                    th { (t(lang, "ready")) } th { (t(lang, "consumers")) }
                    @for _ in 0..2 { th { (t(lang, "routed")) } th { (t(lang, "delivered")) } th { (t(lang, "retried")) } th { (t(lang, "dead")) } }
                }
            }
            tbody {
                @for r in &rows { (unit_row(&v, r)) }
            }
        }
    };
    layout(&v, "units", t(lang, "units"), body).into_response()
}

fn counts(c: Option<&Counts>) -> Markup {
    let c = c.copied().unwrap_or_default();
    html! { td { (c.routed) } td { (c.delivered) } td { (c.retried) } td { (c.dead_lettered) } }
}

fn unit_row(v: &Viewer, r: &UnitRow) -> Markup {
    let lang = v.lang;
    let a = r.activity.as_ref();
    let opt = |x: Option<i64>| x.map(|v| v.to_string()).unwrap_or_default();
    html! {
        tr id={ "unit-" (r.code) } class=[(!r.problems.is_empty()).then_some("failing")] {
            td { (r.code) br; small { (r.name) } }
            td { (r.reach) }
            td { (r.depth.map(|d| d.0.to_string()).unwrap_or_else(|| "?".into())) }
            td { (r.depth.map(|d| d.1.to_string()).unwrap_or_else(|| "?".into())) }
            (counts(a.map(|a| &a.hour)))
            (counts(a.map(|a| &a.day)))
            td { (opt(a.and_then(|a| a.p50_ms))) } td { (opt(a.and_then(|a| a.p95_ms))) }
            td { (a.and_then(|a| last_success(r.adapter, a)).map(local_time).unwrap_or_default()) }
            td {
                @if let Some(e) = a.and_then(|a| a.last_error.as_ref()) {
                    (local_time(e.at_ms)) " · " (e.event) br;
                    small { (e.reason.chars().take(200).collect::<String>()) }
                }
            }
            td {
                @if let Some((at, rows)) = &r.check {
                    @let failed: Vec<&CheckRow> = rows.iter().filter(|x| x.result == "fail").collect();
                    @if failed.is_empty() { span.ok { (t(lang, "pass")) } } @else { span.bad { (t(lang, "fail")) } }
                    " " small { (local_time(*at)) }
                    @for f in &failed { br; small { (f.step) ": " (f.reason) } }
                }
                @if r.adapter && v.operator() {
                    form.inline method="post" action={ "/console/units/" (urlencode(&r.code)) "/check" } {
                        input type="hidden" name="csrf" value=(v.session.csrf);
                        button type="submit" { (t(lang, "check_now")) }
                    }
                }
            }
            td.health {
                @if r.problems.is_empty() { span.ok { "OK" } } @else { @for p in &r.problems { (p) br; } }
            }
        }
    }
}

/// Run the unit's connection check now (at most 60 s) and go back to the page.
async fn check(
    State(c): State<Console>,
    v: Viewer,
    Path(code): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !session::same_token(&f.csrf, &v.session.csrf) {
        return (StatusCode::FORBIDDEN, "CSRF token missing or wrong").into_response();
    }
    if !v.operator() {
        return (StatusCode::FORBIDDEN, t(v.lang, "operators_only_check")).into_response();
    }
    match c.ctx.registry.unit(&code).map(|u| &u.reach) {
        None => return (StatusCode::NOT_FOUND, "no such unit").into_response(),
        Some(Reach::Amqp) => {
            return (StatusCode::BAD_REQUEST, t(v.lang, "check_amqp_unit")).into_response();
        }
        Some(Reach::Adapter { .. }) => {}
    }
    // Two checks at a time in all, one per unit: a check holds a connection to an agency for
    // up to a minute.
    let busy = || (StatusCode::TOO_MANY_REQUESTS, t(v.lang, "check_busy")).into_response();
    let Ok(_permit) = c.checks.running.clone().try_acquire_owned() else {
        return busy();
    };
    let Some(_unit) = UnitCheck::start(&c.checks, &code) else {
        return busy();
    };
    let only = [code.clone()];
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        crate::check::check(&c.ctx.settings, &only),
    )
    .await;
    let rows = match result {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => vec![failed_check(&code, e.to_string())],
        Err(_) => vec![failed_check(&code, "no answer in 60 s".into())],
    };
    tracing::info!(
        message = "console connection check",
        user = %v.session.user,
        unit = %code,
        failed = rows.iter().filter(|r| r.result == "fail").count()
    );
    let now = lienthong_core::clock::now_ms();
    c.checks
        .last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(code.clone(), (now, rows));
    Redirect::to(&format!("/console/units#unit-{}", urlencode(&code))).into_response()
}

/// A unit's check running: its mark in [`Checks`], taken off when the check ends or its request
/// is dropped (the browser went away).
struct UnitCheck<'a> {
    checks: &'a Checks,
    unit: String,
}

impl<'a> UnitCheck<'a> {
    /// Mark `unit`'s check as running; `None` when one already is.
    fn start(checks: &'a Checks, unit: &str) -> Option<Self> {
        let mut running = checks
            .units_running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        running.insert(unit.to_string()).then(|| UnitCheck {
            checks,
            unit: unit.to_string(),
        })
    }
}

impl Drop for UnitCheck<'_> {
    fn drop(&mut self) {
        self.checks
            .units_running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.unit);
    }
}

fn failed_check(unit: &str, detail: String) -> CheckRow {
    CheckRow {
        unit: unit.to_string(),
        adapter: String::new(),
        step: "check".into(),
        result: "fail",
        reason: detail,
        ms: 0,
    }
}
