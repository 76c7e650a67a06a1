//! The console's dead letters: the log filtered by reason, unit, procedure, dossier, time and
//! state; one dead letter (its reason, attempt history and body); and replay of one, a
//! selection or a whole filter, shown with the count first, confirmed, and recorded in the trace
//! with the operator's name (`crate::replay`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use lienthong_core::store::dead_letters::{BODY_MAX, DeadLetterPage, DeadLetterQuery};
use lienthong_core::trace::{DeadLetterRow, TimelineRow};

use super::frame::{layout, read, urlencode};
use super::i18n::{Lang, t};
use super::{Console, Viewer, replays, session};
use crate::dossier_list::parse_time;

/// The most dead letters one replay takes (the replay reads at most this many from the queue).
const REPLAY_MAX: u32 = 10_000;

/// The dead-letter routes (every one needs a login; replay needs the operator role).
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/replay", post(replay))
        .route("/dead-letters/{id}", get(one))
}

/// The list's filters, as the form and the query string carry them.
#[derive(Debug, Clone, Default, Deserialize)]
struct Filters {
    /// Reason code.
    reason: Option<String>,
    /// A unit that sent it or was to receive it.
    unit: Option<String>,
    /// Procedure code.
    procedure: Option<String>,
    /// Dossier code.
    dossier: Option<String>,
    /// Day or RFC 3339 time.
    since: Option<String>,
    /// Day (whole) or RFC 3339 time.
    until: Option<String>,
    /// `waiting` (default), `replayed`, `all`.
    state: Option<String>,
    #[serde(default)]
    offset: u32,
}

fn some(o: &Option<String>) -> Option<String> {
    o.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Filters {
    /// The store query; a bad date is an error the page shows.
    fn to_query(&self) -> Result<DeadLetterQuery, String> {
        let state = match some(&self.state).as_deref() {
            None | Some("waiting") => Some("waiting".to_string()),
            Some("replayed") => Some("replayed".to_string()),
            Some("all") => None,
            Some(other) => return Err(format!("state: waiting, replayed or all, not {other}")),
        };
        Ok(DeadLetterQuery {
            reason_code: some(&self.reason),
            unit: some(&self.unit),
            ma_tthc: some(&self.procedure),
            ma_ho_so: some(&self.dossier),
            since_ms: some(&self.since)
                .map(|s| parse_time(&s, false))
                .transpose()
                .map_err(|e| format!("since: {e}"))?,
            until_ms: some(&self.until)
                .map(|s| parse_time(&s, true))
                .transpose()
                .map_err(|e| format!("until: {e}"))?,
            state,
            limit: Some(PAGE),
            offset: Some(self.offset),
        })
    }

    /// The (name, value) pairs of the filters that are set.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("reason", &self.reason),
            ("unit", &self.unit),
            ("procedure", &self.procedure),
            ("dossier", &self.dossier),
            ("since", &self.since),
            ("until", &self.until),
            ("state", &self.state),
        ]
        .into_iter()
        .filter_map(|(k, v)| some(v).map(|v| (k, v)))
        .collect()
    }

    /// The query string with another offset.
    fn with_offset(&self, offset: u32) -> String {
        let mut q: Vec<String> = self
            .pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", urlencode(&v)))
            .collect();
        q.push(format!("offset={offset}"));
        q.join("&")
    }

    /// Hidden inputs that carry the filters in a form.
    fn hidden(&self) -> Markup {
        html! {
            @for (k, v) in self.pairs() { input type="hidden" name=(k) value=(v); }
        }
    }
}

/// Rows per page.
const PAGE: u32 = 100;

async fn list(
    State(c): State<Console>,
    v: Viewer,
    q: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let lang = v.lang;
    let (f, error) = match q {
        Ok(Query(f)) => (f, None),
        Err(e) => (Filters::default(), Some(e.body_text())),
    };
    let (data, error) = match (error, f.to_query()) {
        (Some(e), _) | (None, Err(e)) => (None, Some(e)),
        (None, Ok(query)) => {
            match read(&c, move |s| {
                Ok((s.dead_letter_page(&query)?, s.dead_letter_reasons()?))
            })
            .await
            {
                Ok(d) => (Some(d), None),
                Err(r) => return r,
            }
        }
    };
    let reasons = data.as_ref().map(|d| d.1.clone()).unwrap_or_default();
    let body = html! {
        (filter_form(lang, &f, &reasons))
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        @if let Some((page, _)) = &data { (list_body(&v, &f, page)) }
    };
    layout(&v, "dead_letters", t(lang, "dead_letters"), body).into_response()
}

fn filter_form(lang: Lang, f: &Filters, reasons: &[(String, u64)]) -> Markup {
    let val = |o: &Option<String>| o.clone().unwrap_or_default();
    let state = f.state.as_deref().unwrap_or("waiting");
    html! {
        form.filters method="get" action="/console/dead-letters" role="search" {
            label { (t(lang, "reason_code"))
                select name="reason" {
                    option value="" { (t(lang, "any")) }
                    @for (code, n) in reasons {
                        option value=(code) selected[f.reason.as_deref() == Some(code.as_str())] { (code) " (" (n) ")" }
                    }
                }
            }
            label { (t(lang, "unit")) input name="unit" size="14" value=(val(&f.unit)); }
            label { (t(lang, "procedure")) input name="procedure" size="10" value=(val(&f.procedure)); }
            label { (t(lang, "code")) input name="dossier" size="24" value=(val(&f.dossier)); }
            label { (t(lang, "since")) input type="date" name="since" value=(val(&f.since)); }
            label { (t(lang, "until")) input type="date" name="until" value=(val(&f.until)); }
            label { (t(lang, "state"))
                select name="state" {
                    @for (code, key) in [("waiting", "waiting"), ("replayed", "replayed"), ("all", "any")] {
                        option value=(code) selected[state == code] { (t(lang, key)) }
                    }
                }
            }
            button type="submit" { (t(lang, "search")) }
        }
    }
}

fn list_body(v: &Viewer, f: &Filters, page: &DeadLetterPage) -> Markup {
    let lang = v.lang;
    let operator = v.operator();
    let waiting = page
        .items
        .iter()
        .filter(|d| d.replayed_at.is_none())
        .count();
    html! {
        p #dl-count { (page.total) " " (t(lang, "dead_found")) }
        @if operator && page.total > 0 && f.state.as_deref() != Some("replayed") {
            form.inline #replay-filter method="post" action="/console/dead-letters/replay" {
                input type="hidden" name="csrf" value=(v.session.csrf);
                input type="hidden" name="scope" value="filter";
                (f.hidden())
                button type="submit" { (t(lang, "replay_filter")) }
            }
        }
        @if page.items.is_empty() { p { (t(lang, "none")) } } @else {
            form #replay-selection method="post" action="/console/dead-letters/replay" {
                @if operator {
                    input type="hidden" name="csrf" value=(v.session.csrf);
                    input type="hidden" name="scope" value="selection";
                }
                table #dead-letters {
                    thead { tr {
                        @if operator { th { } }
                        th { (t(lang, "at")) } th { (t(lang, "reason_code")) } th { (t(lang, "code")) }
                        th { (t(lang, "message")) } th { (t(lang, "from")) } th { (t(lang, "to")) }
                        th { (t(lang, "attempts")) } th { (t(lang, "reason")) } th { (t(lang, "state")) }
                    } }
                    tbody {
                        @for d in &page.items {
                            tr class=[d.replayed_at.is_none().then_some("late")] {
                                @if operator {
                                    td { @if d.replayed_at.is_none() { input type="checkbox" name="id" value=(d.message_id) aria-label=(d.message_id); } }
                                }
                                td { (d.at) } td { (d.reason_code) }
                                td { @if let Some(m) = &d.ma_ho_so { a href={ "/console/dossiers/" (urlencode(m)) } { (m) } } }
                                td { (d.kind.clone().unwrap_or_default()) " " a href={ "/console/dead-letters/" (urlencode(&d.message_id)) } { (d.message_id) } }
                                td { (d.sender.clone().unwrap_or_default()) } td { (d.receiver.clone().unwrap_or_default()) }
                                td { (d.attempts.map(|a| a.to_string()).unwrap_or_default()) } td { (d.reason) }
                                td { (state_text(lang, d)) }
                            }
                        }
                    }
                }
                @if operator && waiting > 0 {
                    p { button type="submit" { (t(lang, "replay_selected")) } }
                }
            }
            div.pager {
                @if page.offset > 0 {
                    a href={ "/console/dead-letters?" (f.with_offset(page.offset.saturating_sub(PAGE))) } { (t(lang, "prev")) }
                }
                @if u64::from(page.offset) + (page.items.len() as u64) < page.total {
                    a href={ "/console/dead-letters?" (f.with_offset(page.offset + PAGE)) } { (t(lang, "next")) }
                }
            }
        }
    }
}

fn state_text(lang: Lang, d: &DeadLetterRow) -> String {
    match &d.replayed_at {
        None => t(lang, "waiting").to_string(),
        Some(at) => format!(
            "{} {at} ({})",
            t(lang, "replayed"),
            d.replayed_by.as_deref().unwrap_or("-")
        ),
    }
}

/// Everything the page of one dead letter shows.
struct One {
    rows: Vec<DeadLetterRow>,
    body: Option<Vec<u8>>,
    events: Vec<TimelineRow>,
}

async fn one(State(c): State<Console>, v: Viewer, Path(id): Path<String>) -> Response {
    let lang = v.lang;
    let with_body = v.operator();
    let i = id.clone();
    let data = match read(&c, move |s| {
        let (rows, body) = s.dead_letter(&i)?;
        let dossiers: Vec<String> = rows.iter().filter_map(|r| r.ma_ho_so.clone()).collect();
        Ok(One {
            events: s.message_timeline(&i, &dossiers)?,
            rows,
            body: if with_body { body } else { None },
        })
    })
    .await
    {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(last) = data.rows.first() else {
        return (
            StatusCode::NOT_FOUND,
            layout(
                &v,
                "dead_letters",
                &id,
                html! { p { (t(lang, "dl_not_found")) } },
            ),
        )
            .into_response();
    };
    let waiting = data.rows.iter().any(|d| d.replayed_at.is_none());
    let body = html! {
        table #dead-letter {
            tr { th { (t(lang, "reason_code")) } td { (last.reason_code) } th { (t(lang, "at")) } td { (last.at) } }
            tr { th { (t(lang, "reason")) } td colspan="3" { (last.reason) } }
            tr { th { (t(lang, "code")) } td { @if let Some(m) = &last.ma_ho_so { a href={ "/console/dossiers/" (urlencode(m)) } { (m) } } }
                 th { (t(lang, "message")) } td { (last.kind.clone().unwrap_or_default()) } }
            tr { th { (t(lang, "from")) } td { (last.sender.clone().unwrap_or_default()) } th { (t(lang, "to")) } td { (last.receiver.clone().unwrap_or_default()) } }
            tr { th { (t(lang, "component")) } td { (last.component.clone().unwrap_or_default()) } th { (t(lang, "queue")) } td { (last.queue.clone().unwrap_or_default()) } }
            tr { th { (t(lang, "attempts")) } td { (last.attempts.map(|a| a.to_string()).unwrap_or_default()) } th { (t(lang, "state")) } td #dl-state { (state_text(lang, last)) } }
        }
        @if v.operator() && waiting {
            form.inline #replay-one method="post" action="/console/dead-letters/replay" {
                input type="hidden" name="csrf" value=(v.session.csrf);
                input type="hidden" name="scope" value="selection";
                input type="hidden" name="id" value=(last.message_id);
                p { button type="submit" { (t(lang, "replay_one")) } }
            }
        }
        @if let Some(h) = last.history.as_deref() {
            h2 { (t(lang, "failed_attempts")) }
            ol #history { @for line in h.lines() { li { (line) } } }
        }
        h2 { (t(lang, "attempt_history")) }
        table #attempts {
            thead { tr { th { (t(lang, "at")) } th { (t(lang, "event")) } th { (t(lang, "component")) } th { (t(lang, "attempt")) } th { (t(lang, "elapsed")) } th { (t(lang, "reason")) } } }
            tbody {
                @for r in &data.events {
                    tr class=[matches!(r.event.as_str(), "dead_lettered" | "failed").then_some("late")] {
                        td { (r.at) } td { (r.event) } td { (r.component) }
                        td { (r.attempt.map(|a| a.to_string()).unwrap_or_default()) } td { (r.elapsed_ms) } td { (r.reason.clone().unwrap_or_default()) }
                    }
                }
            }
        }
        @if data.rows.len() > 1 {
            h2 { (t(lang, "dead_lettered_times")) }
            ul { @for d in &data.rows { li { (d.at) " · " (d.reason_code) " · " (state_text(lang, d)) } } }
        }
        @if let Some(b) = &data.body {
            h2 { (t(lang, "body")) }
            @if b.len() >= BODY_MAX { p { small { (t(lang, "body_clipped")) } } }
            pre #body { (pretty(b)) }
        }
    };
    layout(&v, "dead_letters", &id, body).into_response()
}

/// A body for people: indented JSON when it is JSON, the text otherwise.
fn pretty(b: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(b)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(b).into_owned())
}

/// A replay form, read by hand: a selection repeats `id`.
#[derive(Default)]
struct ReplayForm {
    csrf: String,
    /// `selection` (the `id`s) or `filter` (the filters).
    scope: String,
    ids: Vec<String>,
    filters: Filters,
    /// Set on the confirmation's form: do it.
    confirm: bool,
    /// The filter's upper bound fixed when the count was shown, ms since the epoch: a dead
    /// letter that arrives between the count and the confirmation is not replayed with it.
    before_ms: Option<i64>,
}

impl ReplayForm {
    fn parse(body: &[u8]) -> ReplayForm {
        let mut f = ReplayForm::default();
        for (k, v) in form_urlencoded::parse(body) {
            let v = v.into_owned();
            match &*k {
                "csrf" => f.csrf = v,
                "scope" => f.scope = v,
                "id" => f.ids.push(v),
                "confirm" => f.confirm = v == "yes",
                "before_ms" => f.before_ms = v.parse().ok(),
                "reason" => f.filters.reason = Some(v),
                "unit" => f.filters.unit = Some(v),
                "procedure" => f.filters.procedure = Some(v),
                "dossier" => f.filters.dossier = Some(v),
                "since" => f.filters.since = Some(v),
                "until" => f.filters.until = Some(v),
                "state" => f.filters.state = Some(v),
                _ => {}
            }
        }
        f
    }
}

async fn replay(State(c): State<Console>, v: Viewer, body: Bytes) -> Response {
    let lang = v.lang;
    let f = ReplayForm::parse(&body);
    if !session::same_token(&f.csrf, &v.session.csrf) {
        return (StatusCode::FORBIDDEN, "CSRF token missing or wrong").into_response();
    }
    if !v.operator() {
        return (
            StatusCode::FORBIDDEN,
            layout(
                &v,
                "dead_letters",
                t(lang, "dead_letters"),
                html! { p.error { (t(lang, "operators_only")) } },
            ),
        )
            .into_response();
    }
    let before = f.before_ms.unwrap_or_else(lienthong_core::clock::now_ms);
    // The ids this replay takes: the selection's (those still waiting), or the filter's as of
    // `before`.
    let ids = match f.scope.as_str() {
        "selection" => {
            let mut wanted = f.ids.clone();
            wanted.truncate(REPLAY_MAX as usize);
            read(&c, move |s| {
                let ids = s.waiting_dead_letters(&wanted)?;
                let n = ids.len() as u64;
                Ok((ids, n))
            })
            .await
        }
        "filter" => {
            let mut q = match f.filters.to_query() {
                Ok(q) => q,
                Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
            };
            q.until_ms = Some(q.until_ms.map_or(before, |u| u.min(before)));
            read(&c, move |s| s.dead_letter_ids(&q, REPLAY_MAX)).await
        }
        _ => return (StatusCode::BAD_REQUEST, "scope: selection or filter").into_response(),
    };
    let (ids, matching) = match ids {
        Ok(found) => found,
        Err(r) => return r,
    };
    if !f.confirm || ids.is_empty() {
        return confirm_page(&c, &v, &f, &ids, matching, before).into_response();
    }
    replays::start(&c, &v, ids).await
}

/// The count first: what a replay would take, and a form that does it.
fn confirm_page(
    c: &Console,
    v: &Viewer,
    f: &ReplayForm,
    ids: &[String],
    matching: u64,
    before: i64,
) -> Markup {
    let lang = v.lang;
    let running = c.replays.running();
    let body = html! {
        @if let Some(job) = &running {
            p.bad #replay-busy {
                (t(lang, "replay_busy")) " "
                a href={ "/console/dead-letters/replays/" (job.id) } { (job.user) ", " (job.ids.len()) }
            }
        }
        @if ids.is_empty() {
            p #replay-count { (t(lang, "replay_nothing")) }
        } @else {
            p #replay-count {
                strong { (ids.len()) } " " (t(lang, "replay_count"))
            }
            @if matching > ids.len() as u64 {
                p.bad #replay-capped {
                    (ids.len()) " " (t(lang, "replay_of")) " " (matching) ": " (t(lang, "replay_capped"))
                }
            }
            ul { @for id in ids.iter().take(20) { li { (id) } } @if ids.len() > 20 { li { "…" } } }
            form #replay-confirm method="post" action="/console/dead-letters/replay" {
                input type="hidden" name="csrf" value=(v.session.csrf);
                input type="hidden" name="scope" value=(f.scope);
                input type="hidden" name="confirm" value="yes";
                input type="hidden" name="before_ms" value=(before);
                @if f.scope == "selection" {
                    @for id in ids { input type="hidden" name="id" value=(id); }
                } @else {
                    (f.filters.hidden())
                }
                button type="submit" { (t(lang, "replay_confirm")) }
            }
        }
        p { a href="/console/dead-letters" { (t(lang, "cancel")) } }
    };
    layout(v, "dead_letters", t(lang, "replay"), body)
}
