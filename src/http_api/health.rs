//! `/healthz` and `/readyz`: liveness, and readiness with the broker's and each component's state.

use super::*;

/// The broker state of this process: (every component connected, no channel failing and the
/// broker not blocking publishers; the JSON body). The body names each component's state and,
/// in `problems`, every component that cannot publish with the broker's error.
pub(super) async fn broker_state(api: &Api) -> (bool, Value) {
    let (all, components) = api.ctx.health.snapshot();
    let blocked = api
        .broker
        .read()
        .await
        .as_ref()
        .is_some_and(|b| b.conn.status().blocked());
    let ok = all && !blocked;
    let broker = if components.values().any(|c| !c.connected) {
        "unreachable"
    } else if blocked {
        "blocking publishers"
    } else if !all {
        "channel failing"
    } else {
        "connected"
    };
    let mut problems = api.ctx.health.problems();
    if blocked {
        problems.push("the broker is blocking publishers (memory or disk alarm)".into());
    }
    (
        ok,
        json!({"status": if ok { "ok" } else { "degraded" }, "broker": broker, "components": components, "problems": problems}),
    )
}

/// Liveness: 200 while the process runs; the body says `degraded` while the broker is
/// unreachable or blocking.
pub(super) async fn healthz(State(api): State<Api>) -> Response {
    Json(broker_state(&api).await.1).into_response()
}

/// Readiness: 503 `degraded` while any component of this process has no broker connection or a
/// channel it cannot publish on, or the broker blocks publishers.
pub(super) async fn readyz(State(api): State<Api>) -> Response {
    let (ok, body) = broker_state(&api).await;
    if ok {
        Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
