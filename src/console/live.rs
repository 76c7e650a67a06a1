//! The console's live page: new trace events as they are written, pushed to the browser as
//! Server-Sent Events (`/console/live/events`), with a pause and a filter in a few lines of
//! plain JavaScript (`live.js`). Events are read from the store by rowid, so they come from
//! every process that writes the trace, and a reconnecting browser resumes after the last event
//! it saw (`Last-Event-ID`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_lite::Stream;
use lienthong_core::params;
use maud::html;
use serde::Serialize;

use lienthong_core::store::{Store, StoreError};

use super::frame::{layout, read};
use super::i18n::t;
use super::{Console, Viewer, session};

/// How often the store is asked for new events.
const POLL: Duration = Duration::from_millis(1000);
/// Events shown when the page opens.
const BACKLOG: i64 = 50;
/// Events sent at most per poll (a burst is sent over the next polls).
const BATCH: i64 = 500;

/// The live routes.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/live", get(page))
        .route("/live/events", get(events))
        .route("/live.js", get(script))
}

async fn page(v: Viewer) -> Response {
    let lang = v.lang;
    let body = html! {
        div.filters {
            button #pause type="button" data-pause=(t(lang, "pause")) data-resume=(t(lang, "resume")) { (t(lang, "pause")) }
            label { (t(lang, "live_filter")) " " input #filter size="30" placeholder=(t(lang, "live_filter_hint")); }
            span #live-state data-live=(t(lang, "live_on")) data-paused=(t(lang, "live_paused")) data-lost=(t(lang, "live_lost")) data-ended=(t(lang, "live_ended")) data-dropped=(t(lang, "live_dropped")) { }
        }
        table #live {
            thead { tr {
                th { (t(lang, "at")) } th { (t(lang, "event")) } th { (t(lang, "code")) } th { (t(lang, "message")) }
                th { (t(lang, "from")) } th { (t(lang, "to")) } th { (t(lang, "attempt")) } th { (t(lang, "reason")) }
            } }
            tbody { }
        }
        script src="/console/live.js" { }
    };
    layout(&v, "live", t(lang, "live"), body).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("live.js"),
    )
        .into_response()
}

/// One event as the page receives it (the SSE `data`, JSON).
#[derive(Debug, Serialize)]
struct LiveEvent {
    at: String,
    event: String,
    ma_ho_so: Option<String>,
    message_id: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    attempt: Option<u32>,
    reason: Option<String>,
}

/// The events after rowid `after` (at most [`BATCH`]), with their rowids.
fn after(store: &Store, after: i64) -> Result<Vec<(i64, LiveEvent)>, StoreError> {
    store.with(|c| {
        let mut st = c.prepare_cached(
            "SELECT rowid, at, event, ma_ho_so, message_id, kind, from_unit, to_unit, attempt, reason
             FROM trace_events WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        st.query_map(params![after, BATCH], |r| {
            Ok((
                r.get(0)?,
                LiveEvent {
                    at: r.get(1)?,
                    event: r.get(2)?,
                    ma_ho_so: r.get(3)?,
                    message_id: r.get(4)?,
                    kind: r.get(5)?,
                    from: r.get(6)?,
                    to: r.get(7)?,
                    attempt: r.get(8)?,
                    reason: r.get(9)?,
                },
            ))
        })?
        .collect()
    })
}

/// The stream: from the browser's `Last-Event-ID`, or the last [`BACKLOG`] events; ends when
/// the session does (logout, idle timeout) or the process shuts down.
async fn events(
    State(c): State<Console>,
    _v: Viewer,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Response> {
    let token = session::cookie(&headers, session::COOKIE)
        .unwrap_or_default()
        .to_string();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let start = match resume {
        Some(id) => id,
        None => {
            read(&c, |s| {
                s.with(|c| {
                    c.query_row(
                        "SELECT COALESCE(MAX(rowid), 0) FROM trace_events",
                        params![],
                        |r| r.get::<_, i64>(0),
                    )
                })
            })
            .await?
                - BACKLOG
        }
    };
    let queue: VecDeque<(i64, LiveEvent)> = VecDeque::new();
    let stream = futures_lite::stream::unfold(
        (c, token, start.max(0), queue, true),
        |(c, token, mut last, mut queue, mut first)| async move {
            loop {
                if let Some((id, ev)) = queue.pop_front() {
                    let data = serde_json::to_string(&ev).unwrap_or_else(|_| "{}".into());
                    let event = Event::default().id(id.to_string()).data(data);
                    return Some((Ok(event), (c, token, last, queue, false)));
                }
                if !first {
                    let mut stop = c.ctx.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = stop.changed() => return None,
                    }
                }
                first = false;
                if *c.ctx.shutdown.borrow() || !c.sessions.peek(&token) {
                    return None;
                }
                let rows = read(&c, move |s| after(s, last)).await.ok()?;
                if let Some((id, _)) = rows.last() {
                    last = *id;
                }
                queue = rows.into();
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
