//! The webhook adapter against a receiver on loopback: every kind of message is posted as the
//! envelope's JSON with a signature the receiver can check, a 2xx is delivered, 408/429/5xx and
//! a lost answer are retried (transient), another 4xx is refused (permanent: the delivery
//! component dead-letters it), and a unit without `webhook_secret` is refused at start-up.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use lienthong_adapters::Outcome;
use lienthong_adapters::agencies::webhook::{SIGNATURE_HEADER, signature};
use lienthong_core::registry::Reach;
use serde_json::{Map, json};

const SECRET: &str = "whsec-test-7b0c2f9e4d3a1b8c6e5f4a3b2c1d0e9f";

/// A receiver answering `status` (and sleeping `delay` first), recording each request.
async fn receiver(status: u16, delay: Duration) -> (String, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, b: Bytes| {
            let s = s.clone();
            async move {
                s.lock().expect("seen").push((h, b));
                tokio::time::sleep(delay).await;
                StatusCode::from_u16(status).expect("status")
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, seen)
}

/// Sơn Hà's centre reached by its webhook at `url`.
fn webhook_unit(
    url: &str,
    secret: Option<&str>,
    timeout_ms: u64,
) -> lienthong_core::registry::Unit {
    let mut u = unit(SON_HA, url, None);
    let mut settings = Map::new();
    if let Some(k) = secret {
        settings.insert("webhook_secret".into(), json!(k));
    }
    u.reach = Reach::Adapter {
        adapter: "webhook".into(),
        endpoint: url.into(),
        timeout_ms,
        callback_key: None,
        callback_key_next: None,
        settings,
    };
    u
}

#[tokio::test]
async fn every_kind_is_posted_signed_and_2xx_is_delivered() {
    let (url, seen) = receiver(204, Duration::ZERO).await;
    let a = build(&webhook_unit(&url, Some(SECRET), 5_000));
    let forward = birth(SON_HA);
    let mut result = forward.reply("dossier.result", POLICE, SON_HA);
    result.payload.result = json!({"so_dang_ky": "TT-1"}).as_object().cloned();
    let envs = [forward.clone(), cancel(SON_HA), result];
    for env in &envs {
        let o = a.deliver(env).await;
        assert!(
            matches!(o, Outcome::Delivered { .. }),
            "{} → {o:?}",
            env.kind.as_str()
        );
    }
    let seen = seen.lock().expect("seen");
    assert_eq!(seen.len(), 3);
    for ((h, body), env) in seen.iter().zip(&envs) {
        assert_eq!(
            body.as_ref(),
            env.to_bytes().as_slice(),
            "the envelope's JSON as the bus carries it"
        );
        let id = h["x-lienthong-message-id"].to_str().expect("ascii");
        assert_eq!(h["idempotency-key"].to_str().expect("ascii"), id);
        let sig = h[SIGNATURE_HEADER].to_str().expect("ascii");
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|r| r.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("t=");
        assert_eq!(sig, signature(SECRET.as_bytes(), t, body));
        assert!((chrono::Utc::now().timestamp() - t).abs() < 60);
    }
}

#[tokio::test]
async fn refusals_are_permanent_and_failures_lost_answers_are_retried() {
    for (status, permanent) in [
        (400, true),
        (401, true),
        (404, true),
        (408, false),
        (429, false),
        (500, false),
        (503, false),
    ] {
        let (url, _) = receiver(status, Duration::ZERO).await;
        let a = build(&webhook_unit(&url, Some(SECRET), 5_000));
        let o = a.deliver(&birth(SON_HA)).await;
        match o {
            Outcome::Permanent { .. } => assert!(permanent, "{status} → {o:?}"),
            Outcome::Transient { .. } => assert!(!permanent, "{status} → {o:?}"),
            other => panic!("{status} → {other:?}"),
        }
    }
    // An answer that never comes (the receiver may have stored it): sent again, not looked up.
    let (url, seen) = receiver(204, Duration::from_secs(3)).await;
    let a = build(&webhook_unit(&url, Some(SECRET), 300));
    let o = a.deliver(&birth(SON_HA)).await;
    assert!(matches!(o, Outcome::Transient { .. }), "{o:?}");
    assert_eq!(seen.lock().expect("seen").len(), 1);
}

#[test]
fn a_webhook_without_its_secret_is_refused_at_start_up() {
    let u = webhook_unit("http://127.0.0.1:9/hook", None, 5_000);
    let e = lienthong_adapters::build_with(&u, "http://127.0.0.1:9", None)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("webhook_secret"), "{e}");
}
