//! The operators' web console at `/console`, served by the HTTP component: server-rendered
//! pages (maud, no script but the live page's few lines) over the store: dossiers (search,
//! filters, exports), one dossier (hand-overs, steps, trace chain, control sheet), overdue,
//! units, dead letters. Login with a `[[console.accounts]]` account or the operator key;
//! `session` keeps the logins, `i18n` the words, `pages` the pages.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lienthong_core::console_settings::Role;
use serde::Deserialize;

use crate::context::Ctx;

mod dead_letters;
mod frame;
pub mod i18n;
mod live;
mod pages;
mod replays;
pub mod session;
mod units;

use i18n::{Lang, t};
use session::{Session, Sessions};

/// What every console handler shares.
#[derive(Clone)]
pub struct Console {
    ctx: Ctx,
    sessions: Arc<Sessions>,
    /// Served over TLS: cookies are `Secure`.
    secure: bool,
    /// The last connection check of each unit run from the units page.
    checks: Arc<units::Checks>,
    /// The HTTP component's broker connection (none while the broker is unreachable).
    broker: crate::context::ConnectionSource,
    /// The replays started here.
    replays: Arc<replays::Jobs>,
}

/// The console's router (a service to nest at `/console`); `broker` is the HTTP component's
/// broker connection, when it has one.
pub fn router(ctx: Ctx, broker: crate::context::ConnectionSource) -> Router {
    let idle = std::time::Duration::from_secs(
        u64::from(ctx.settings.console.session_idle_minutes.max(1)) * 60,
    );
    let secure = ctx.settings.http.tls_cert.is_some() && ctx.settings.http.tls_key.is_some();
    let state = Console {
        ctx,
        sessions: Arc::new(Sessions::new(idle)),
        secure,
        checks: Arc::default(),
        broker,
        replays: Arc::default(),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/dossiers") }))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/lang/{code}", get(set_lang))
        .route("/style.css", get(style))
        .merge(pages::routes())
        .merge(units::routes())
        .merge(live::routes())
        .merge(dead_letters::routes())
        .merge(replays::routes())
        .layer(axum::middleware::from_fn(headers))
        .with_state(state)
}

/// Every console response: no framing by other sites, no sniffing, no caching of pages that
/// name citizens, and a content security policy that allows only the console's own files.
async fn headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (k, v) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(v) {
            h.entry(k).or_insert(v);
        }
    }
    res
}

/// A logged-in request: its session and language. A request without a session is sent to
/// the login page.
pub struct Viewer {
    session: Session,
    lang: Lang,
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Response> {
        let lang = Lang::of(&parts.headers);
        session::cookie(&parts.headers, session::COOKIE)
            .and_then(|token| c.sessions.get(token))
            .map(|session| Viewer { session, lang })
            .ok_or_else(|| Redirect::to("/console/login").into_response())
    }
}

impl Viewer {
    /// Whether the account may change things (replay dead letters, read raw envelopes).
    fn operator(&self) -> bool {
        self.session.role >= Role::Operator
    }
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
        .into_response()
}

async fn login_form(headers: HeaderMap) -> Response {
    pages::login_page(Lang::of(&headers), None).into_response()
}

/// The login form's fields.
#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

async fn login(State(c): State<Console>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let lang = Lang::of(&headers);
    // The operator key logs in with no name or as `operator-key`: one account, one count of
    // failures.
    let name = match f.user.trim() {
        "" => "operator-key".to_string(),
        n => n.to_string(),
    };
    if !c.sessions.may_try(&name) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            pages::login_page(lang, Some(t(lang, "login_locked"))),
        )
            .into_response();
    }
    let (settings, registry) = (c.ctx.settings.clone(), c.ctx.registry.clone());
    let checked = tokio::task::spawn_blocking(move || {
        session::check_login(&settings, &registry, &f.user, &f.password)
    })
    .await
    .ok()
    .flatten();
    let Some((user, role)) = checked else {
        c.sessions.failed(&name);
        tracing::warn!(message = "console login failed", user = %name);
        return (
            StatusCode::UNAUTHORIZED,
            pages::login_page(lang, Some(t(lang, "login_failed"))),
        )
            .into_response();
    };
    let Some((token, _)) = c.sessions.open(&user, role) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    tracing::info!(message = "console login", user = %user, role = ?role);
    (
        [(
            header::SET_COOKIE,
            session::session_cookie(&token, c.secure),
        )],
        Redirect::to("/console/dossiers"),
    )
        .into_response()
}

/// A form that changes state carries its session's CSRF token.
#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): State<Console>,
    v: Viewer,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !session::same_token(&f.csrf, &v.session.csrf) {
        return (StatusCode::FORBIDDEN, "CSRF token missing or wrong").into_response();
    }
    if let Some(token) = session::cookie(&headers, session::COOKIE) {
        c.sessions.close(token);
    }
    (
        [(
            header::SET_COOKIE,
            format!(
                "{}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict",
                session::COOKIE
            ),
        )],
        Redirect::to("/console/login"),
    )
        .into_response()
}

async fn set_lang(axum::extract::Path(code): axum::extract::Path<String>) -> Response {
    let code = if code == "en" { "en" } else { "vi" };
    (
        [(
            header::SET_COOKIE,
            format!(
                "{}={code}; Path=/console; SameSite=Strict; Max-Age=31536000",
                i18n::COOKIE
            ),
        )],
        Redirect::to("/console/dossiers"),
    )
        .into_response()
}
