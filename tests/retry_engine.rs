//! The retry engine's in-process attempts against a real HTTP server on loopback that records
//! every body it is sent: one message's attempts send byte-identical bodies under one
//! idempotency key (the agency answers 503, then 202), a request prepared again later (the next
//! delayed round) has the same bytes, and unreadable answers are counted across attempts with
//! the last one's excerpt.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;
use lienthong::delivery::retry_engine::{Final, attempts};
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, RetrySettings, Settings, Unit};

/// What the agency was sent: (Idempotency-Key, body), in order.
type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A police agency on loopback: `POST /police/v1/ho-so` records the body and answers 503 to the
/// first attempt and 202 with a receipt afterwards; `POST /html/v1/ho-so` answers a 200 HTML
/// page. Returns the base URL and the record.
async fn agency() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new()
        .route(
            "/police/v1/ho-so",
            axum::routing::post(move |h: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move {
                    let key = h
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let n = {
                        let mut v = s.lock().expect("record");
                        v.push((key, body));
                        v.len()
                    };
                    if n == 1 {
                        (StatusCode::SERVICE_UNAVAILABLE, "bận").into_response()
                    } else {
                        (
                            StatusCode::ACCEPTED,
                            axum::Json(serde_json::json!({"MaTiepNhan": "CA-0001"})),
                        )
                            .into_response()
                    }
                }
            }),
        )
        .route(
            "/html/v1/ho-so",
            axum::routing::post(|| async { axum::response::Html(html_page()) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn html_page() -> String {
    format!(
        "<!DOCTYPE html><html><head><title>Cổng thông tin</title></head><body>{}</body></html>",
        "<p>Hệ thống đang bảo trì, vui lòng quay lại sau.</p>".repeat(20)
    )
}

/// The shipped unit `code` with its endpoint replaced.
fn shipped(code: &str, endpoint: &str) -> Unit {
    let s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
    let mut u = s
        .units
        .iter()
        .find(|u| u.code == code)
        .expect("unit")
        .clone();
    if let Reach::Adapter { endpoint: e, .. } = &mut u.reach {
        *e = endpoint.to_string();
    }
    u
}

fn quick() -> RetrySettings {
    RetrySettings {
        min_delay_ms: 1,
        max_delay_ms: 5,
        max_retries: 2,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_of_one_message_sends_the_same_bytes_under_one_key() {
    let (base, seen) = agency().await;
    let police = lienthong_adapters::build(&shipped(POLICE, &format!("{base}/police")), "http://x")
        .expect("adapter");
    let env = birth(9101, POLICE);
    let req = police.prepare(&env).expect("request");
    // A later round prepares the message again: the same bytes (no clock in the document).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(police.prepare(&env).expect("request again"), req);
    match attempts(police.as_ref(), &req, &quick(), |_, _, _| {}).await {
        Final::Delivered {
            receipt, attempts, ..
        } => {
            assert_eq!(receipt, "CA-0001");
            assert_eq!(attempts, 2, "503 then 202");
        }
        other => panic!("expected delivered, got {other:?}"),
    }
    let seen = seen.lock().expect("record").clone();
    assert_eq!(seen.len(), 2, "two attempts reached the agency");
    for (key, body) in &seen {
        assert_eq!(key, &env.message_id, "one idempotency key");
        assert_eq!(body, &req.body, "byte-identical bodies");
    }
    // The document's time is the envelope's.
    let doc: serde_json::Value = serde_json::from_slice(&seen[0].1).expect("json");
    let sent = chrono::DateTime::parse_from_rfc3339(&env.sent_at).expect("sent_at");
    assert_eq!(
        doc["NgayGui"],
        lienthong_core::clock::to_dvcqg(sent.with_timezone(&chrono::Utc))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_prepared_twice_is_the_same_document() {
    let bhxh = lienthong_adapters::build(&shipped(BHXH, "http://127.0.0.1:9/bhxh"), "http://x")
        .expect("adapter");
    let mut cancel = birth(9102, BHXH).reply(lienthong_core::Kind::STATUS, SON_HA, BHXH);
    cancel.status = Some(lienthong_core::TrangThaiHoSo::WITHDRAWN);
    let first = bhxh.prepare(&cancel).expect("cancel");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(bhxh.prepare(&cancel).expect("cancel again"), first);
    assert_eq!(first.operation, lienthong_adapters::Operation::Cancel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_answers_are_counted_across_retries_with_the_last_excerpt() {
    let (base, _) = agency().await;
    let police = lienthong_adapters::build(&shipped(POLICE, &format!("{base}/html")), "http://x")
        .expect("adapter");
    let req = police.prepare(&birth(9103, POLICE)).expect("request");
    match attempts(police.as_ref(), &req, &quick(), |_, _, _| {}).await {
        Final::Failed {
            exhausted,
            unknown,
            attempts,
            unreadable_answers,
            last_unreadable_answer,
            ..
        } => {
            assert!(exhausted && unknown);
            assert_eq!(attempts, 3);
            assert_eq!(unreadable_answers, 3);
            assert_eq!(
                last_unreadable_answer.as_deref(),
                Some(lienthong_adapters::http::snippet(html_page().as_bytes()).as_str())
            );
        }
        other => panic!("expected the retries to run out, got {other:?}"),
    }
    // A closed connection is unknown too, but there is no answer to count.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let refused = lienthong_adapters::build(
        &shipped(POLICE, &format!("http://127.0.0.1:{port}/police")),
        "http://x",
    )
    .expect("adapter");
    let req = refused.prepare(&birth(9104, POLICE)).expect("request");
    match attempts(refused.as_ref(), &req, &quick(), |_, _, _| {}).await {
        Final::Failed {
            unreadable_answers,
            last_unreadable_answer,
            ..
        } => {
            assert_eq!(unreadable_answers, 0);
            assert_eq!(last_unreadable_answer, None);
        }
        other => panic!("expected the retries to run out, got {other:?}"),
    }
}
