//! What an agency can send the bus is bounded, against servers on loopback: an answer body over
//! the unit's `max_answer_bytes` (default 4 MiB) is an unreadable answer that says the limit,
//! whether the agency announces its length or not; control characters (terminal escapes among
//! them) in a callback's reason, officer, receipt and result never reach the bus.

mod common;

use std::sync::Arc;

use common::*;
use lienthong_adapters::Outcome;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback server that reads the request and writes `answer` (then closes).
async fn answering(answer: Arc<Vec<u8>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(&answer).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

fn over_the_limit(o: Outcome, limit: &str) {
    match o {
        Outcome::Unknown { reason, .. } => {
            assert!(reason.contains("over the limit of"), "{reason}");
            assert!(reason.contains(limit), "{reason}");
        }
        other => panic!("expected an unreadable (unknown) answer, got {other:?}"),
    }
}

#[tokio::test]
async fn an_answer_over_the_cap_is_unreadable_and_says_the_limit() {
    // Announced: 5 MiB by Content-Length, over the default 4 MiB; refused before it is read.
    let mut head = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\nConnection: close\r\n\r\n".to_vec();
    head.extend(std::iter::repeat_n(b' ', 64 * 1024));
    let port = answering(Arc::new(head)).await;
    let u = unit(POLICE, &format!("http://127.0.0.1:{port}/police"), None);
    over_the_limit(build(&u).deliver(&birth(POLICE)).await, "4194304 bytes");

    // Not announced (read until close): counted chunk by chunk against the unit's own cap.
    let mut body =
        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
            .to_vec();
    body.extend(std::iter::repeat_n(b'x', 20_000));
    let port = answering(Arc::new(body)).await;
    let u = unit(
        POLICE,
        &format!("http://127.0.0.1:{port}/police"),
        Some(json!({"connection": {"max_answer_bytes": 1000}})),
    );
    over_the_limit(build(&u).deliver(&birth(POLICE)).await, "1000 bytes");
}

#[tokio::test]
async fn control_characters_in_a_callback_never_reach_the_bus() {
    let u = unit(POLICE, "http://127.0.0.1:9/police", None);
    let body = json!({
        "MaHoSo": "000.20.59.H48-261129-0001",
        "MaThamChieu": "019a1b2c-3d4e-7f00-8a00-000000000001",
        "TrangThaiHoSo": 3,
        "LyDo": "Thiếu\u{1b}[2J\u{1b}[31m giấy tờ\r\u{7}\u{9b}1m\u{202e}",
        "NguoiXuLy": "Nguyễn\u{0} Văn\u{8}\u{8} A",
        "MaTiepNhan": "TN\u{1b}]0;pwned\u{7}-01",
        "NoiDungXuLy": "x",
    });
    let reply = build(&u)
        .parse_callback(Some("application/json"), body.to_string().as_bytes())
        .expect("a valid callback");
    let reason = reply.reason.expect("reason");
    assert_eq!(reason, "Thiếu[2J[31m giấy tờ\n1m");
    assert_eq!(reply.officer.as_deref(), Some("Nguyễn Văn A"));
    assert_eq!(reply.receipt.as_deref(), Some("TN]0;pwned-01"));
    for v in reply.result.values() {
        let s = v.as_str().unwrap_or_default();
        assert!(!s.chars().any(|c| c.is_control() && c != '\n'), "{s:?}");
    }
    assert_eq!(
        lienthong_adapters::outcome::clean_text("a\tb\nc\u{1b}d"),
        "a\tb\ncd"
    );
}
