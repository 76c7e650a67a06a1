//! The layers in front of the handlers: the bound on requests served at once and the request
//! timeout (every route), then, for each authenticated route, the key checked from the headers
//! before any byte of the body is read, the key's rate limit and the route's body limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::*;

/// Who may call a group of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Guard {
    /// A unit's API key (`POST /v1/messages`).
    Unit,
    /// The callback key of the unit named by the path's `{unit}` (callbacks, edXML pull).
    Agency,
    /// The operator key (reads, retry, `/metrics`).
    Operator,
    /// Any key of the bus: unit, agency callback or operator key (`/v1/blobs/{sha256}`).
    AnyKey,
    /// The operator key, or a unit's key for the dossiers the unit is a party of (a dossier's
    /// trace, state and control sheet; the handler checks the dossier).
    Reader,
}

/// The shared limits of one API: requests at once, and a rate limiter per kind of key.
pub(super) struct Limits {
    /// Permits for requests served at once.
    in_flight: Semaphore,
    /// The longest a request may take.
    timeout: Duration,
    /// Unit and agency keys, by `unit:<code>` / `agency:<code>`.
    keys: DefaultKeyedRateLimiter<String>,
    /// The operator key.
    operator: DefaultKeyedRateLimiter<String>,
}

impl Limits {
    /// The limits `[http]` sets.
    pub(super) fn new(http: &lienthong_core::registry::HttpSettings) -> Self {
        let quota = |per_s: u32, burst: u32| {
            // Above 10^9 per second the replenishing interval would round to 0 ns.
            let per_s = NonZeroU32::new(per_s.min(1_000_000_000)).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            Quota::per_second(per_s).allow_burst(burst)
        };
        Limits {
            in_flight: Semaphore::new(http.max_concurrent_requests.max(1)),
            timeout: Duration::from_millis(http.request_timeout_ms.max(1)),
            keys: RateLimiter::keyed(quota(http.rate_per_s, http.rate_burst)),
            operator: RateLimiter::keyed(quota(http.operator_rate_per_s, http.operator_rate_burst)),
        }
    }
}

/// Every route: at most `[http] max_concurrent_requests` at once (the next is answered 503 with
/// Retry-After at once, not queued), each within `[http] request_timeout_ms` (else 503).
pub(super) async fn shed(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Ok(_permit) = api.limits.in_flight.try_acquire() else {
        return Problem::unavailable(
            "the bus is serving as many requests as it may at once; nothing was accepted",
            1,
        )
        .into_response();
    };
    match tokio::time::timeout(api.limits.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            let mut p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
                format!(
                    "the request took longer than {} ms; it may or may not have taken effect (retry with the same message id)",
                    api.limits.timeout.as_millis()
                ),
            );
            p.retry_after_s = Some(5);
            p.into_response()
        }
    }
}

/// The state of one group's gate: the API, who may call, the group's body limit.
#[derive(Clone)]
pub(super) struct Gate {
    pub(super) api: Api,
    pub(super) guard: Guard,
    pub(super) body_limit: usize,
}

/// Authenticated routes: the key from the headers (the body is not touched: a refused request's
/// body is never read, hyper closes the connection instead), then the key's rate (429 with
/// Retry-After), then a declared `Content-Length` above the route's limit (413 before reading).
/// An unknown unit, a unit without callbacks, a missing key and a wrong key all get the same
/// 401, so that nobody learns which units or packages exist without a key.
pub(super) async fn gate(
    State(gate): State<Gate>,
    params: Result<Path<HashMap<String, String>>, axum::extract::rejection::PathRejection>,
    req: Request,
    next: Next,
) -> Response {
    let api = &gate.api;
    let headers = req.headers();
    let who = match gate.guard {
        Guard::Unit => api.caller(headers).map(|u| format!("unit:{}", u.code)),
        Guard::Operator => api.operator(headers).map(|()| "operator".to_string()),
        Guard::Agency => {
            let unit = params
                .as_ref()
                .ok()
                .and_then(|Path(p)| p.get("unit"))
                .map(String::as_str)
                .unwrap_or("");
            agency_caller(api, unit, headers)
                .map(|_| format!("agency:{unit}"))
                .map_err(|_| Problem::unauthorized("wrong or missing key of this unit"))
        }
        Guard::AnyKey => any_key(api, headers),
        Guard::Reader => api.operator(headers).map(|()| "operator".to_string()).or_else(|_| {
            api.caller(headers)
                .map(|u| format!("unit:{}", u.code))
                .map_err(|_| {
                    Problem::unauthorized(
                        "send the operator key, or your unit's key for your own dossiers, as Authorization: Bearer <key>",
                    )
                })
        }),
    };
    let who = match who {
        Ok(w) => w,
        Err(p) => return p.into_response(),
    };
    let limiter = if who == "operator" {
        &api.limits.operator
    } else {
        &api.limits.keys
    };
    if let Err(not_until) = limiter.check_key(&who) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = u32::try_from(secs).unwrap_or(u32::MAX).max(1);
        return Problem::too_many(secs).into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gate.body_limit as u64) {
        return Problem::from(Rejection::new(
            RejectCode::TooLarge,
            format!("the body is larger than {} bytes", gate.body_limit),
        ))
        .into_response();
    }
    next.run(req).await
}

/// Any key of the bus (unit, agency callback or operator key): the identity its rate counts
/// under, or 401.
fn any_key(api: &Api, headers: &HeaderMap) -> Result<String, Problem> {
    if api.operator(headers).is_ok() {
        return Ok("operator".into());
    }
    if let Ok(u) = api.caller(headers) {
        return Ok(format!("unit:{}", u.code));
    }
    let key = bearer(headers).unwrap_or("");
    api.ctx
        .registry
        .units()
        .find(|u| {
            !key.is_empty()
                && matches!(&u.reach, Reach::Adapter { callback_key: Some(k), .. } if k == key)
        })
        .map(|u| format!("agency:{}", u.code))
        .ok_or_else(|| {
            Problem::unauthorized("send a key of the bus as Authorization: Bearer <key>")
        })
}
