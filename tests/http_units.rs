//! Units whose software speaks only HTTP (issue 20, item 0), end to end against the real broker,
//! the bus and the mock agencies on loopback: a centre files a birth dossier over HTTP without a
//! message id and under an `Idempotency-Key` (a resend files nothing twice; the key with another
//! body is refused), the civil-status office gets its work by a signed webhook (the first try of
//! each message answered 503, then retried) and answers over HTTP, and the centre reads its
//! statuses and the final result from its pull inbox (a lease left to run out brings the message
//! back, redelivered; a message it cannot take is refused into the dead-letter queue with its
//! reason); the centre's key reads its dossier's trace, state and control sheet, and
//! another centre's key reads nothing of it.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, Mac};
use lienthong_core::envelope::{Envelope, Kind};
use lienthong_core::registry::Reach;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

/// Another centre (Đức Phổ): a unit key that is no party of Sơn Hà's dossier.
const DUC_PHO: &str = "000.20.61.H48";

/// What the office's webhook receiver saw: each message id and how often it came.
#[derive(Default)]
struct Seen {
    tries: HashMap<String, u32>,
    bad_signatures: u32,
}

/// The civil-status office's webhook on loopback: checks each signature with `secret` (HMAC-SHA256
/// of `<t>.<body>`, computed here apart from the bus's code), answers the first try of each
/// message 503 and the next 200, and hands each accepted envelope on.
async fn office_webhook(
    secret: String,
) -> (String, Arc<Mutex<Seen>>, mpsc::UnboundedReceiver<Envelope>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (tx, rx) = mpsc::unbounded_channel();
    let state = (secret, seen.clone(), tx);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (secret, seen, tx) = state.clone();
            async move {
                let sig = headers
                    .get("x-lienthong-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let (t, v1) = sig
                    .split_once(",v1=")
                    .map(|(t, v)| (t.trim_start_matches("t="), v))
                    .unwrap_or(("", ""));
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
                mac.update(format!("{t}.").as_bytes());
                mac.update(&body);
                let want: String = mac
                    .finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let fresh = t
                    .parse::<i64>()
                    .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
                if want != v1 || !fresh {
                    seen.lock().expect("seen").bad_signatures += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                let Ok(env) = serde_json::from_slice::<Envelope>(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let id = headers
                    .get("x-lienthong-message-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                assert_eq!(id, env.message_id, "the header names the message");
                let tries = {
                    let mut s = seen.lock().expect("seen");
                    let n = s.tries.entry(id).or_default();
                    *n += 1;
                    *n
                };
                if tries == 1 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                if tries == 2 {
                    let _ = tx.send(env);
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen, rx)
}

/// `envelope` as JSON without its `message_id` (the bus gives one).
fn without_id(env: &Envelope) -> Value {
    let mut v = serde_json::to_value(env).expect("json");
    v.as_object_mut().expect("object").remove("message_id");
    v
}

async fn post_message(bus: &Bus, unit: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/messages", bus.http))
        .bearer_auth(bus.key(unit))
        .json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.expect("http");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET url` with `key`, its JSON answer.
async fn get_json(client: &reqwest::Client, url: String, key: &str) -> Value {
    let r = client.get(url).bearer_auth(key).send().await.expect("http");
    r.json().await.expect("json")
}

/// `POST url` of `body` with `key`, its JSON answer.
async fn post_json(client: &reqwest::Client, url: String, key: &str, body: &Value) -> Value {
    let r = client
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("http");
    r.json().await.expect("json")
}

async fn get(bus: &Bus, path: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", bus.http))
        .bearer_auth(key)
        .send()
        .await
        .expect("http")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_centre_and_an_office_that_speak_only_http_file_answer_and_read_back() {
    let secret = lienthong_core::secret::new_key().expect("secret");
    let (hook, seen, mut office_inbox) = office_webhook(secret.clone()).await;
    let bus = Bus::start_with("http-units", |s| {
        let office = s
            .units
            .iter_mut()
            .find(|u| u.code == SON_HA_CIVIL)
            .expect("office");
        let mut settings = serde_json::Map::new();
        settings.insert("webhook_secret".into(), json!(secret));
        office.reach = Reach::Adapter {
            adapter: "webhook".into(),
            endpoint: hook.clone(),
            timeout_ms: 5_000,
            callback_key: None,
            callback_key_next: None,
            settings,
        };
    })
    .await;

    // The office answers each forward it gets by webhook over HTTP, without a message id, under
    // an Idempotency-Key of its own (and sends the answer twice, as a client that lost the 202
    // would: the bus files it once).
    let office = {
        let http = bus.http.clone();
        let key = bus.key(SON_HA_CIVIL);
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while let Some(env) = office_inbox.recv().await {
                if env.kind.as_str() != Kind::FORWARD {
                    continue;
                }
                let mut r = env.reply(Kind::RESULT, SON_HA_CIVIL, &env.sender);
                r.payload.result = json!({"so_dang_ky": format!("KS-{}", env.ma_ho_so)})
                    .as_object()
                    .cloned();
                let body = without_id(&r);
                let mut ids = HashSet::new();
                for _ in 0..2 {
                    let a = client
                        .post(format!("{http}/v1/messages"))
                        .bearer_auth(&key)
                        .header("Idempotency-Key", format!("result-{}", env.message_id))
                        .json(&body)
                        .send()
                        .await
                        .expect("http");
                    assert_eq!(a.status().as_u16(), 202);
                    let a: Value = a.json().await.expect("json");
                    ids.insert(a["message_id"].as_str().unwrap_or("").to_string());
                }
                assert_eq!(ids.len(), 1, "one message id for one Idempotency-Key");
            }
        })
    };

    // Filing: no message id, an Idempotency-Key; the resend gets the same id; the key with
    // another body is refused.
    let filed = filed_birth(9701);
    let body = without_id(&filed);
    let (status, first) = post_message(&bus, SON_HA, &body, Some("filing-9701")).await;
    assert_eq!(status, 202, "{first}");
    let id = first["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 7, "{id}");
    let (status, again) = post_message(&bus, SON_HA, &body, Some("\"filing-9701\"")).await;
    assert_eq!(
        (status, again["message_id"].as_str()),
        (202, Some(id.as_str()))
    );
    let mut other = body.clone();
    other["payload"]["applicant"]["ho_ten"] = json!("Nguyễn Văn Khác");
    let (status, refused) = post_message(&bus, SON_HA, &other, Some("filing-9701")).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["type"],
        "urn:lienthong:problem:idempotency-key-reused"
    );
    let (status, bad) = post_message(&bus, SON_HA, &body, Some("two words")).await;
    assert_eq!(status, 400, "{bad}");

    // An office reached by its webhook has no queue to read over HTTP.
    let r = get(&bus, "/v1/inbox", &bus.key(SON_HA_CIVIL)).await;
    assert_eq!(r.status().as_u16(), 409);

    // The centre reads its inbox: the statuses and the final result. The first message of the
    // first batch is left unacked under a 5 s lease: it comes back, redelivered.
    let ma = filed.ma_ho_so.clone();
    let client = reqwest::Client::new();
    let centre_key = bus.key(SON_HA);
    let mut left: Option<String> = None;
    let mut came_back = false;
    let mut result = None;
    let mut kinds = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while (result.is_none() || !came_back) && tokio::time::Instant::now() < deadline {
        let lease = if left.is_none() { 5 } else { 60 };
        let batch: Value = get_json(
            &client,
            format!("{}/v1/inbox?wait=10&max=20&lease={lease}", bus.http),
            &centre_key,
        )
        .await;
        let mut acks = Vec::new();
        for m in batch["messages"].as_array().expect("messages") {
            let mid = m["message_id"].as_str().expect("message_id").to_string();
            assert_eq!(m["envelope"]["message_id"], json!(mid));
            if left.is_none() {
                left = Some(mid);
                continue;
            }
            if left.as_deref() == Some(mid.as_str()) {
                assert_eq!(m["redelivered"], json!(true), "{m}");
                came_back = true;
            }
            let env: Envelope = serde_json::from_value(m["envelope"].clone()).expect("envelope");
            if env.ma_ho_so == ma {
                kinds.push(env.kind.as_str().to_string());
                if env.kind.as_str() == Kind::RESULT {
                    result = Some(env);
                }
            }
            acks.push(m["lease_id"].clone());
        }
        if !acks.is_empty() {
            let a: Value = post_json(
                &client,
                format!("{}/v1/inbox/ack", bus.http),
                &centre_key,
                &json!({"lease_ids": acks}),
            )
            .await;
            assert_eq!(a["acked"].as_array().map(Vec::len), Some(acks.len()), "{a}");
        }
    }
    let result = result.unwrap_or_else(|| panic!("no final result in the inbox; got {kinds:?}"));
    assert!(came_back, "the message left under its lease came back");
    assert_eq!(result.receiver.as_deref(), Some(SON_HA));
    // A lease of another unit, or one already acked, is unknown.
    let a: Value = post_json(
        &client,
        format!("{}/v1/inbox/ack", bus.http),
        &centre_key,
        &json!({"lease_ids": ["no-such-lease"]}),
    )
    .await;
    assert_eq!(a["unknown"], json!(["no-such-lease"]));

    // The office's webhook: every message signed, each first try refused and then retried.
    {
        let s = seen.lock().expect("seen");
        assert_eq!(s.bad_signatures, 0);
        assert!(!s.tries.is_empty());
        assert!(s.tries.values().all(|n| *n >= 2), "{:?}", s.tries);
    }

    // The centre's key reads its own dossier; another centre's key reads nothing of it.
    let trace = get(&bus, &format!("/v1/dossiers/{ma}/trace"), &centre_key).await;
    assert_eq!(trace.status().as_u16(), 200);
    let rows: Vec<Value> = trace.json().await.expect("json");
    assert!(!rows.is_empty());
    let state = get(&bus, &format!("/v1/dossiers/{ma}"), &centre_key).await;
    assert_eq!(state.status().as_u16(), 200);
    let state: Value = state.json().await.expect("json");
    assert_eq!(state["ma_ho_so"], json!(ma), "{state}");
    let sheet = get(
        &bus,
        &format!("/v1/dossiers/{ma}/control-sheet"),
        &centre_key,
    )
    .await;
    assert_eq!(sheet.status().as_u16(), 200);
    assert!(sheet.text().await.expect("text").contains(&ma));
    for path in ["/trace", "", "/control-sheet"] {
        let r = get(&bus, &format!("/v1/dossiers/{ma}{path}"), &bus.key(DUC_PHO)).await;
        assert_eq!(r.status().as_u16(), 404, "another centre reads {path}");
    }
    let r = get(
        &bus,
        "/v1/dossiers/000.20.59.H48-991231-0001/trace",
        &centre_key,
    )
    .await;
    assert_eq!(r.status().as_u16(), 404);
    let r = get(
        &bus,
        &format!("/v1/dossiers/{ma}/trace"),
        &bus.operator_key(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    // The operators' list stays the operator's.
    let r = get(&bus, "/v1/dossiers", &centre_key).await;
    assert_eq!(r.status().as_u16(), 401);

    // A message the centre's software cannot take is refused over the inbox: it goes to the
    // dead-letter queue with the centre's reason, and leaves the centre's queue.
    let mut odd = filed.reply(Kind::STATUS, SON_HA_CIVIL, SON_HA);
    odd.status = Some(lienthong_core::envelope::TrangThaiHoSo(4));
    bus.publisher
        .publish(
            "",
            &bus.names.unit_queue(SON_HA),
            &odd.to_bytes(),
            lienthong_core::amqp::envelope_properties(&odd),
            true,
        )
        .await
        .expect("published to the centre's queue");
    let batch: Value = get_json(
        &client,
        format!("{}/v1/inbox?wait=10", bus.http),
        &centre_key,
    )
    .await;
    let m = batch["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["message_id"] == json!(odd.message_id)))
        .unwrap_or_else(|| panic!("the odd message in the inbox: {batch}"))
        .clone();
    let r: Value = post_json(
        &client,
        format!("{}/v1/inbox/reject", bus.http),
        &centre_key,
        &json!({"lease_ids": [m["lease_id"]], "reason": "status 4 is not in our workflow"}),
    )
    .await;
    assert_eq!(r["acked"], json!([m["lease_id"]]), "{r}");
    let dead = bus.dead(1, 20).await;
    assert_eq!(dead.len(), 1);
    let why =
        lienthong_core::amqp::header_str(&dead[0].1, lienthong_core::deadletter::headers::REASON)
            .unwrap_or_default();
    assert!(
        why.contains("status 4 is not in our workflow") && why.contains(SON_HA),
        "{why}"
    );
    assert_eq!(
        lienthong_core::amqp::header_str(
            &dead[0].1,
            lienthong_core::deadletter::headers::REASON_CODE
        )
        .as_deref(),
        Some("agency-refused")
    );
    let again: Value = get_json(
        &client,
        format!("{}/v1/inbox?wait=1", bus.http),
        &centre_key,
    )
    .await;
    assert_eq!(
        again["messages"],
        json!([]),
        "the refused message left the queue"
    );

    office.abort();
    bus.stop().await;
}
