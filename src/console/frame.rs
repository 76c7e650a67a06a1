//! The frame every console page shares: the layout (navigation, who is logged in, the
//! language switch, logout), store reads off the async runtime, and URL encoding of a path
//! segment or query value.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use lienthong_core::store::{Store, StoreError};

use super::i18n::{Lang, t};
use super::{Console, Viewer};

/// Run a store read off the runtime.
pub(super) async fn read<T: Send + 'static>(
    c: &Console,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let store = c.ctx.store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(message = "console: store read failed", error = %e);
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "the store could not be read",
            )
                .into_response())
        }
        Err(e) => {
            tracing::error!(message = "console: read task failed", error = %e);
            Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// The frame of every page: the navigation, who is logged in, the language switch.
pub(super) fn layout(v: &Viewer, here: &str, title: &str, body: Markup) -> Markup {
    framed(v, here, title, body, None)
}

/// [`layout`] for a page that reloads itself every `secs` seconds (a running replay's).
pub(super) fn layout_reloading(
    v: &Viewer,
    here: &str,
    title: &str,
    body: Markup,
    secs: u32,
) -> Markup {
    framed(v, here, title, body, Some(secs))
}

fn framed(v: &Viewer, here: &str, title: &str, body: Markup, reload: Option<u32>) -> Markup {
    let lang = v.lang;
    let nav = [
        ("dossiers", "/console/dossiers"),
        ("overdue", "/console/overdue"),
        ("units", "/console/units"),
        ("dead_letters", "/console/dead-letters"),
        ("live", "/console/live"),
    ];
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(secs) = reload { meta http-equiv="refresh" content=(secs); }
                title { (title) " — " (t(lang, "title")) }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                header {
                    strong { "lienthong" }
                    @for (key, href) in nav {
                        a href=(href) class=[(key == here).then_some("here")] { (t(lang, key)) }
                    }
                    span.who { (v.session.user) " (" (format!("{:?}", v.session.role).to_lowercase()) ")" }
                    @if lang == Lang::Vi { a href="/console/lang/en" { "English" } } @else { a href="/console/lang/vi" { "Tiếng Việt" } }
                    form method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(v.session.csrf);
                        button type="submit" { (t(lang, "logout")) }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// Percent-encode `s` for a path segment or a query value.
pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
