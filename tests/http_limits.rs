//! The HTTP API's limits against a real bus on loopback: the key is checked before the body is
//! read (a 60 MiB unauthenticated POST), a client dribbling its headers is cut off, a key over
//! its rate gets 429 with Retry-After, requests beyond the bound are shed (503) and a slow one
//! times out, an internal error's body names no internals, an unknown unit looks exactly like a
//! wrong key, and `/metrics` needs the operator key or its own listener.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One test at a time in this file: the RSS measure must not see another bus start.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process's resident set, KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn addr(bus: &Bus) -> std::net::SocketAddr {
    bus.running
        .as_ref()
        .and_then(|r| r.http_addr)
        .expect("http addr")
}

/// POST `total` bytes to `path` over a raw connection with the given headers, sending the body
/// in 64 KiB chunks while reading the answer. Returns (the answer's first bytes, body bytes
/// sent when the answer came, whether the sending ended in an error: the server closed).
async fn post_huge(bus: &Bus, path: &str, headers: &str, total: usize) -> (String, usize, bool) {
    let stream = TcpStream::connect(addr(bus)).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let answered = Arc::new(AtomicBool::new(false));
    let flag = answered.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            flag.store(true, Ordering::SeqCst);
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: bus\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n{headers}\r\n"
    );
    wr.write_all(head.as_bytes()).await.expect("headers");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    let mut sent_at_answer = None;
    let mut broken = false;
    while sent < total {
        if answered.load(Ordering::SeqCst) && sent_at_answer.is_none() {
            sent_at_answer = Some(sent);
        }
        match tokio::time::timeout(Duration::from_secs(5), wr.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            // Reset or broken pipe: the server closed; or it stopped reading.
            Ok(Err(_)) | Err(_) => {
                broken = true;
                break;
            }
        }
    }
    let answer = reader.await.unwrap_or_default();
    (answer, sent_at_answer.unwrap_or(sent), broken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_without_a_valid_key_is_never_read() {
    let _one = SERIAL.lock().await;
    let bus = Bus::start("limits-body").await;
    const TOTAL: usize = 60 * 1024 * 1024;
    let before = rss_kib();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let t0 = Instant::now();
    let (answer, sent, broken) = post_huge(
        &bus,
        "/v1/messages",
        "Authorization: Bearer not-a-key\r\n",
        TOTAL,
    )
    .await;
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        sent < TOTAL / 4,
        "the answer came while the client was still sending ({sent} of {TOTAL} bytes sent)"
    );
    assert!(
        broken,
        "the server closed the connection instead of reading the body"
    );
    let grew = peak.load(Ordering::SeqCst).saturating_sub(before);
    eprintln!("401 after {sent} bytes of {TOTAL}; RSS {before} KiB, grew by {grew} KiB at most");
    assert!(
        grew < 16 * 1024,
        "the process's RSS stays flat (grew {grew} KiB while 60 MiB were offered)"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));

    // No key at all: the same.
    let (answer, sent, _) = post_huge(&bus, "/v1/messages", "", TOTAL).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(sent < TOTAL / 4, "{sent}");

    // A valid agency key, but 60 MiB declared to the callback route (1 MiB limit): 413 before
    // reading.
    let police_key = bus.callback_key(POLICE);
    let (answer, sent, _) = post_huge(
        &bus,
        &format!("/v1/callbacks/{POLICE}"),
        &format!("Authorization: Bearer {police_key}\r\n"),
        TOTAL,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("1048576"), "the limit is named: {answer}");
    assert!(sent < TOTAL / 4, "{sent}");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_headers_is_cut_off() {
    let _one = SERIAL.lock().await;
    let bus = Bus::start_with("limits-slow", |s| s.http.header_read_timeout_ms = 1000).await;
    let stream = TcpStream::connect(addr(&bus)).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let t0 = Instant::now();
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return t0.elapsed(),
                Ok(_) => {}
            }
        }
    });
    let head = b"GET /healthz HTTP/1.1\r\nHost: bus\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in head.iter() {
        if closed.is_finished() {
            break;
        }
        if wr.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the server closed the connection")
        .expect("reader");
    eprintln!("a client dribbling its headers was cut off after {after:?}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "cut off after the 1 s header timeout although a byte came every 200 ms: {after:?}"
    );
    // A client that sends its headers at once is served.
    let r = reqwest::get(format!("{}/healthz", bus.http))
        .await
        .expect("healthz");
    assert!(r.status().is_success());
    // A kept-alive connection that sends no next request is closed after the same timeout.
    let mut idle = TcpStream::connect(addr(&bus)).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: bus\r\n\r\n")
        .await
        .expect("request");
    let t1 = Instant::now();
    let mut buf = [0u8; 4096];
    let mut first = Vec::new();
    let closed_after = loop {
        match tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break t1.elapsed(),
            Ok(Ok(n)) => first.extend_from_slice(&buf[..n]),
            Err(_) => panic!("an idle kept-alive connection stays open"),
        }
    };
    assert!(
        String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"),
        "served first"
    );
    assert!(
        closed_after < Duration::from_secs(4),
        "idle connection closed after {closed_after:?}"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let _one = SERIAL.lock().await;
    let bus = Bus::start_with("limits-rate", |s| {
        s.http.rate_per_s = 1;
        s.http.rate_burst = 3;
        s.http.operator_rate_per_s = 1;
        s.http.operator_rate_burst = 2;
    })
    .await;
    let client = reqwest::Client::new();
    let post = |key: String| {
        client
            .post(format!("{}/v1/messages", bus.http))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let r = post(bus.key(SON_HA)).await.expect("POST");
        statuses.push(r.status().as_u16());
        if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body: Value = r.json().await.expect("problem");
            limited = Some((retry_after, ct, body));
        }
    }
    // The burst of 3 passes the key and the rate (and is refused for its body), then 429.
    assert!(
        statuses[..3].iter().all(|s| *s != 429 && *s != 401),
        "{statuses:?}"
    );
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let (retry_after, ct, body) = limited.expect("a 429");
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After in seconds"
    );
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["type"], "urn:lienthong:problem:rate-limited");
    // Another unit's key has its own budget.
    let other = post(bus.key(SON_HA_CIVIL)).await.expect("POST");
    assert_ne!(other.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    // The operator key has its own rate.
    let op = bus.settings.http.operator_key.clone().unwrap_or_default();
    let mut op_statuses = Vec::new();
    for _ in 0..4 {
        let r = client
            .get(format!("{}/v1/stats", bus.http))
            .bearer_auth(&op)
            .send()
            .await
            .expect("stats");
        op_statuses.push(r.status().as_u16());
    }
    assert_eq!(&op_statuses[..2], &[200, 200], "{op_statuses:?}");
    assert!(op_statuses[2..].contains(&429), "{op_statuses:?}");
    // After Retry-After the key is served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = post(bus.key(SON_HA)).await.expect("POST");
    assert_ne!(r.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_error_is_answered_with_an_id_and_no_internals() {
    let _one = SERIAL.lock().await;
    let bus = Bus::start("limits-internal").await;
    // Break the store under the bus: the dead letters' table is gone.
    {
        let conn =
            lienthong_core::store::migrations::open_connection(&bus.settings.store.location())
                .expect("open store");
        conn.execute_batch("DROP TABLE dead_letters")
            .expect("drop table");
    }
    let op = bus.settings.http.operator_key.clone().unwrap_or_default();
    let r = reqwest::Client::new()
        .get(format!("{}/v1/dead-letters", bus.http))
        .bearer_auth(&op)
        .send()
        .await
        .expect("dead-letters");
    assert_eq!(r.status(), reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let text = r.text().await.expect("body");
    let body: Value = serde_json::from_str(&text).expect("problem+json");
    for internal in [
        "dead_letters",
        "no such table",
        "SQLite",
        "sqlite",
        "SELECT",
        "Error {",
    ] {
        assert!(
            !text.contains(internal),
            "the body names no internals ({internal}): {text}"
        );
    }
    let instance = body["instance"].as_str().unwrap_or_default();
    assert!(
        instance.starts_with("urn:lienthong:error:") && instance.len() == 20 + 16,
        "an error id the operator finds in the log: {text}"
    );
    assert_eq!(body["type"], "urn:lienthong:problem:store");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_unit_looks_like_a_wrong_key() {
    let _one = SERIAL.lock().await;
    let bus = Bus::start("limits-enum").await;
    let client = reqwest::Client::new();
    let son_ha_key = bus.key(SON_HA);
    let ask = |method: reqwest::Method, path: String, key: Option<&str>| {
        let mut rq = client
            .request(method, format!("{}{path}", bus.http))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(k) = key {
            rq = rq.bearer_auth(k);
        }
        async move {
            let r = rq.send().await.expect("request");
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (status, ct, r.text().await.unwrap_or_default())
        }
    };
    use reqwest::Method;
    let reference = ask(
        Method::POST,
        format!("/v1/callbacks/{POLICE}"),
        Some("wrong-key"),
    )
    .await;
    assert_eq!(reference.0, 401, "{reference:?}");
    let same = [
        // An unknown unit.
        ask(Method::POST, "/v1/callbacks/NOPE".into(), Some("wrong-key")).await,
        // A unit reached over AMQP (no callbacks).
        ask(
            Method::POST,
            format!("/v1/callbacks/{SON_HA}"),
            Some("wrong-key"),
        )
        .await,
        // No key.
        ask(Method::POST, format!("/v1/callbacks/{POLICE}"), None).await,
        ask(Method::POST, "/v1/callbacks/NOPE".into(), None).await,
        // A unit's own API key is not its callback key.
        ask(
            Method::POST,
            format!("/v1/callbacks/{POLICE}"),
            Some(son_ha_key.as_str()),
        )
        .await,
        // edXML pull: unknown unit, unknown package, wrong key.
        ask(
            Method::GET,
            "/v1/edxml/NOPE/packages".into(),
            Some("wrong-key"),
        )
        .await,
        ask(
            Method::GET,
            format!("/v1/edxml/{POLICE}/packages/no-such-id"),
            Some("wrong-key"),
        )
        .await,
        ask(
            Method::POST,
            "/v1/edxml/NOPE/packages/no-such-id/ack".into(),
            Some("wrong-key"),
        )
        .await,
    ];
    for answer in same {
        assert_eq!(answer, reference, "indistinguishable from a wrong key");
    }
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_operator_key_or_their_own_listener() {
    let _one = SERIAL.lock().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let bus = Bus::start_with("limits-metrics", |s| {
        s.http.metrics_listen = Some(format!("127.0.0.1:{port}"));
    })
    .await;
    let anonymous = reqwest::get(format!("{}/metrics", bus.http))
        .await
        .expect("metrics");
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    let with_key = reqwest::Client::new()
        .get(format!("{}/metrics", bus.http))
        .bearer_auth(bus.settings.http.operator_key.clone().unwrap_or_default())
        .send()
        .await
        .expect("metrics");
    assert!(with_key.status().is_success(), "with the operator key");
    let own = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics listener");
    assert!(own.status().is_success());
    // Only /metrics there.
    let other = reqwest::get(format!("http://127.0.0.1:{port}/v1/stats"))
        .await
        .expect("metrics listener");
    assert_eq!(other.status(), reqwest::StatusCode::NOT_FOUND);
    bus.stop().await;
}

/// Open a POST to `/v1/messages` with a valid key that declares `len` bytes and sends only a
/// few: the request holds its place until its body comes.
async fn hanging_post(bus: &Bus, len: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr(bus)).await.expect("connect");
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: bus\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\nContent-Length: {len}\r\n\r\n{{\"kind\"",
        bus.key(SON_HA)
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// Read a whole answer (until the server closes or 10 s pass).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_bound_are_shed_and_a_slow_request_times_out() {
    let _one = SERIAL.lock().await;
    let bus = Bus::start_with("limits-shed", |s| {
        s.http.max_concurrent_requests = 1;
        s.http.request_timeout_ms = 1500;
    })
    .await;
    let t0 = Instant::now();
    let mut held = hanging_post(&bus, 1000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The one place is taken: the next request is answered 503 at once.
    let r = reqwest::get(format!("{}/healthz", bus.http))
        .await
        .expect("healthz");
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    // The held request never sends its body: answered 503 timeout after 1.5 s.
    let answer = read_answer(&mut held).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("urn:lienthong:problem:timeout"), "{answer}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1400) && t0.elapsed() < Duration::from_secs(8),
        "{:?}",
        t0.elapsed()
    );
    // The place is free again.
    let r = reqwest::get(format!("{}/healthz", bus.http))
        .await
        .expect("healthz");
    assert!(r.status().is_success());
    bus.stop().await;
}
