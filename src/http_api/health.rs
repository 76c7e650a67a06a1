//! `/healthz` and `/readyz`: liveness, and readiness with the broker's and each component's state.

use std::collections::BTreeMap;

use lienthong_core::health::ComponentHealth;

use super::*;

/// The body of `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// `ok`, or `degraded` while a component has no broker connection or a channel it cannot
    /// publish on, or the broker blocks publishers.
    status: HealthStatus,
    /// The broker link of this process as a whole.
    broker: BrokerLink,
    /// Each supervised component of this process (`router`, `adapters`, `tracer`, `http`, …).
    components: BTreeMap<String, ComponentHealth>,
    /// Every component that cannot publish, with the broker's error; and a broker alarm.
    problems: Vec<String>,
}

/// [`Health::status`].
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum HealthStatus {
    /// Every component connected, no channel failing, the broker not blocking.
    Ok,
    /// Anything else.
    Degraded,
}

/// [`Health::broker`].
#[derive(Serialize, ToSchema)]
pub(super) enum BrokerLink {
    /// Every component holds its connection and every channel works.
    #[serde(rename = "connected")]
    Connected,
    /// A component has no broker connection (it reconnects).
    #[serde(rename = "unreachable")]
    Unreachable,
    /// The broker blocks publishers (a memory or disk alarm).
    #[serde(rename = "blocking publishers")]
    BlockingPublishers,
    /// A channel of a component cannot publish.
    #[serde(rename = "channel failing")]
    ChannelFailing,
}

/// The broker state of this process: whether every component is connected, no channel failing
/// and the broker not blocking publishers; and the body, which names each component's state
/// and, in `problems`, every component that cannot publish with the broker's error.
pub(super) async fn broker_state(api: &Api) -> (bool, Health) {
    let (all, components) = api.ctx.health.snapshot();
    let blocked = api
        .broker
        .read()
        .await
        .as_ref()
        .is_some_and(|b| b.conn.status().blocked());
    let ok = all && !blocked;
    let broker = if components.values().any(|c| !c.connected) {
        BrokerLink::Unreachable
    } else if blocked {
        BrokerLink::BlockingPublishers
    } else if !all {
        BrokerLink::ChannelFailing
    } else {
        BrokerLink::Connected
    };
    let mut problems = api.ctx.health.problems();
    if blocked {
        problems.push("the broker is blocking publishers (memory or disk alarm)".into());
    }
    let status = if ok {
        HealthStatus::Ok
    } else {
        HealthStatus::Degraded
    };
    (
        ok,
        Health {
            status,
            broker,
            components,
            problems,
        },
    )
}

/// Liveness.
///
/// 200 while the process runs; the body says `degraded` while the broker is unreachable or
/// blocking.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "The process runs", body = Health))
)]
pub(super) async fn healthz(State(api): State<Api>) -> Response {
    Json(broker_state(&api).await.1).into_response()
}

/// Readiness.
///
/// 503 `degraded` while any component of this process has no broker connection or a channel it
/// cannot publish on, or the broker blocks publishers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready (a `degraded` body); or, as on every route, a problem `unavailable` / `timeout` with Retry-After",
            content(
                (Health = "application/json"),
                (Problem = "application/problem+json"),
            )
        ),
    )
)]
pub(super) async fn readyz(State(api): State<Api>) -> Response {
    let (ok, body) = broker_state(&api).await;
    if ok {
        Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
