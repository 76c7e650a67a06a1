//! Distributed tracing across processes: with `[telemetry] otlp_endpoint` set, a router process
//! and an adapter process export their spans over OTLP/HTTP (JSON) to a receiver on loopback;
//! a centre's message carrying a W3C `traceparent` gives one trace, parented correctly from the
//! centre's span through routing, the delivery, its attempt and the agency call (whose request
//! carries the trace on to the agency) to the agency's callback and the routing of its result
//! back to the centre; a filing the process manager runs has its step's span inside its routing,
//! and the step's hand-over carries the trace to the next unit.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::procs::*;
use common::*;
use lapin::types::{AMQPValue, LongString};
use lienthong_core::amqp::envelope_properties;
use serde_json::Value;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    trace: String,
    id: String,
    parent: String,
    name: String,
    /// The exporting process's `lienthong.components`.
    process: String,
    attributes: HashMap<String, String>,
}

/// A string attribute list of OTLP JSON (`[{key, value: {stringValue | intValue}}]`).
fn attributes(v: &Value) -> HashMap<String, String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let key = a["key"].as_str()?.to_string();
            let value = &a["value"];
            let text = value["stringValue"]
                .as_str()
                .map(str::to_string)
                .or_else(|| value["intValue"].as_str().map(str::to_string))
                .or_else(|| value["intValue"].as_i64().map(|i| i.to_string()))?;
            Some((key, text))
        })
        .collect()
}

/// An OTLP/HTTP receiver on loopback (`POST /v1/traces`, JSON encoding): its URL and the spans.
async fn receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    use axum::routing::post;
    let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, "not JSON").into_response();
                };
                let mut got = Vec::new();
                for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                    let process = attributes(&rs["resource"]["attributes"])
                        .remove("lienthong.components")
                        .unwrap_or_default();
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for sp in ss["spans"].as_array().into_iter().flatten() {
                            let s = |k: &str| sp[k].as_str().unwrap_or_default().to_string();
                            got.push(Got {
                                trace: s("traceId"),
                                id: s("spanId"),
                                parent: s("parentSpanId"),
                                name: s("name"),
                                process: process.clone(),
                                attributes: attributes(&sp["attributes"]),
                            });
                        }
                    }
                }
                if let Ok(mut all) = kept.lock() {
                    all.extend(got);
                }
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    "{}",
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, spans)
}

use axum::response::IntoResponse;

/// Publish `env` to the ingress as the centres' broker user, carrying the trace-context
/// headers `(name, value)`.
async fn publish_traced(view: &Bus, env: &lienthong_core::Envelope, context: &[(&str, String)]) {
    let props = envelope_properties(env);
    let mut h = props.headers().clone().unwrap_or_default();
    for (k, v) in context {
        h.insert(
            (*k).into(),
            AMQPValue::LongString(LongString::from(v.clone())),
        );
    }
    view.unit_publisher
        .publish(
            &view.names.ingress_exchange(),
            "",
            &env.to_bytes(),
            props.with_headers(h),
            true,
        )
        .await
        .expect("published");
}

/// The `traceparent` of span `span` in trace `trace` (sampled).
fn parent(trace: &str, span: &str) -> (&'static str, String) {
    ("traceparent", format!("00-{trace}-{span}-01"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dossier_is_one_trace_across_the_router_and_adapter_processes() {
    let (otlp, spans) = receiver().await;
    let mut split = Split::start("otel", |s| {
        s.telemetry.otlp_endpoint = Some(otlp);
        s.telemetry.otlp_protocol = Some("http/json".into());
        s.log.format = lienthong_core::registry::LogFormat::Json;
    })
    .await;
    let (view, dir) = (&split.view, split.dir.clone());
    let mut centre = view.listen(SON_HA).await;

    // The centre's software sends its filing inside a span of its own.
    let (trace, centre_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let env = birth(210, POLICE);
    publish_traced(view, &env, &[parent(trace, centre_span)]).await;
    // And a filing without a receiver, which the process manager runs.
    let (trace2, filing_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let filed = filed_birth(211);
    publish_traced(view, &filed, &[parent(trace2, filing_span)]).await;
    let result = next(&mut centre, 30).await;
    assert_eq!(
        result.causation_id.as_deref(),
        Some(env.message_id.as_str())
    );
    // The agency's request carried the trace on.
    let mock_url = view.mock_url.clone();
    let tps: Vec<(String, String)> = eventually_async(20, || {
        let mock_url = mock_url.clone();
        async move {
            let tps: Vec<(String, String)> = reqwest::get(format!("{mock_url}/_mock/traceparents"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            tps.iter().any(|(_, tp)| tp.contains(trace)).then_some(tps)
        }
    })
    .await;
    let to_police = tps
        .iter()
        .find(|(at, tp)| at == "POST /police/v1/ho-so" && tp.contains(trace))
        .unwrap_or_else(|| panic!("Police got no traceparent of the trace: {tps:?}"))
        .1
        .clone();

    // A trace state no HTTP header may carry (a control character) is not passed on: the
    // agency is still called, and the trace goes on.
    let trace4 = "6d6f2e8e9a3c4b7d8e2f1a0b9c8d7e60";
    let odd = birth(213, POLICE);
    publish_traced(
        view,
        &odd,
        &[
            parent(trace4, centre_span),
            ("tracestate", "a=x\r\nX-Injected: 1".to_string()),
        ],
    )
    .await;
    let answered = loop {
        let r = next(&mut centre, 30).await;
        if r.causation_id.as_deref() == Some(odd.message_id.as_str()) {
            break r;
        }
    };
    assert_eq!(answered.kind.as_str(), result.kind.as_str(), "{answered:?}");
    let tps: Vec<(String, String)> = reqwest::get(format!("{}/_mock/traceparents", view.mock_url))
        .await
        .expect("mock")
        .json()
        .await
        .expect("json");
    assert!(
        tps.iter().any(|(_, tp)| tp.contains(trace4)),
        "Police got the trace without the odd state: {tps:?}"
    );

    // A log line written while handling a traced message carries its trace id.
    let trace3 = "5c5f1e8e9a3c4b7d8e2f1a0b9c8d7e6f";
    let lost = birth(212, "000.99.99.H48");
    publish_traced(view, &lost, &[parent(trace3, centre_span)]).await;
    let line = eventually(15, "the router's JSON log line", || {
        std::fs::read_to_string(dir.join("routing.log"))
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "dead-lettering" && v["ma_ho_so"] == lost.ma_ho_so.as_str())
    })
    .await;
    assert_eq!(line["trace_id"], trace3, "{line}");
    assert_eq!(line["span"]["trace_id"], trace3, "{line}");

    // The process manager hands the filing's first step to the civil-status office (a unit
    // reading its own queue): the hand-over carries the trace.
    let ch = view.conn.create_channel().await.expect("channel");
    let handover = eventually_async(20, || {
        let ch = ch.clone();
        let queue = view.names.unit_queue(SON_HA_CIVIL);
        async move {
            let m = ch
                .basic_get(
                    queue.as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .ok()??;
            lienthong_core::amqp::header_str(&m.delivery.properties, "traceparent")
                .filter(|tp| tp.contains(trace2))
        }
    })
    .await;

    // Stopping exports what each process still has batched.
    split.stop_processes();
    let all: Vec<Got> = eventually(15, "spans of both processes", || {
        let all = spans.lock().ok()?.clone();
        let ours: Vec<Got> = all.into_iter().filter(|g| g.trace == trace).collect();
        (ours.iter().any(|g| g.process == "router,tracer")
            && ours.iter().any(|g| g.process == "adapters,http"))
        .then_some(ours)
    })
    .await;
    // The process manager's step runs inside the filing's routing, and what it hands over is
    // delivered under the step.
    let run: Vec<Got> = spans
        .lock()
        .map(|s| s.iter().filter(|g| g.trace == trace2).cloned().collect())
        .unwrap_or_default();
    let filing_route = run
        .iter()
        .find(|g| g.name == "route" && g.parent == filing_span)
        .unwrap_or_else(|| panic!("no routing of the filing: {run:#?}"));
    let step = run
        .iter()
        .find(|g| g.name == "process step" && g.parent == filing_route.id)
        .unwrap_or_else(|| panic!("no process step under the filing's routing: {run:#?}"));
    assert_eq!(
        handover,
        format!("00-{trace2}-{}-01", step.id),
        "the hand-over continues the trace under the step"
    );
    let one = |name: &str, parent: &str| -> Got {
        all.iter()
            .find(|g| g.name == name && g.parent == parent)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} span under {parent}: {all:#?}"))
    };
    // The filing: routed by the router process, under the centre's span.
    let route = one("route", centre_span);
    assert_eq!(route.process, "router,tracer");
    assert_eq!(
        route
            .attributes
            .get("lienthong.ma_ho_so")
            .map(String::as_str),
        Some(env.ma_ho_so.as_str())
    );
    // Delivered by the adapter process, under the routing.
    let deliver = one("deliver", &route.id);
    assert_eq!(deliver.process, "adapters,http");
    assert_eq!(
        deliver.attributes.get("lienthong.unit").map(String::as_str),
        Some(POLICE)
    );
    let attempt = one("attempt", &deliver.id);
    assert_eq!(
        attempt
            .attributes
            .get("lienthong.attempt")
            .map(String::as_str),
        Some("1")
    );
    let call = one("agency call", &attempt.id);
    assert!(
        to_police.contains(&call.id),
        "the agency's traceparent names the agency call: {to_police} vs {}",
        call.id
    );
    // The agency answers later on its callback, carrying the same trace: taken in by the HTTP
    // component under the agency call, then routed back to the centre under that.
    let callback = one("ingress", &call.id);
    assert_eq!(callback.process, "adapters,http");
    let back = one("route", &callback.id);
    assert_eq!(back.process, "router,tracer");
    assert_eq!(
        back.attributes.get("lienthong.kind").map(String::as_str),
        Some(result.kind.as_str())
    );

    split.clean().await;
}
