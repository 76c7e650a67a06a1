//! Transport failures become reasons an operator can act on, against real servers on loopback:
//! TLS servers with an expired certificate, a certificate for another name, one signed by an
//! unknown CA and one not valid yet; a closed port; a server that accepts and never answers (read
//! timeout); one that never finishes the TLS handshake (connect timeout); one that closes
//! mid-answer; and a name that does not resolve. Each reason names the unit, the address, the
//! date or name at fault and, for what the operator fixes, `lienthong check <unit code>`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use lienthong_adapters::{Outcome, StatusLookup};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const POLICE_NAME: &str = "Công an tỉnh Quảng Ngãi";

/// A private CA named `name`, its PEM written to `dir`. Returns (issuer, PEM path).
fn private_ca(dir: &Path, name: &str) -> (rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("ca");
    let path = dir.join(format!("{}.pem", name.replace(' ', "-")));
    std::fs::write(&path, ca.pem()).expect("write ca");
    (ca, path.display().to_string())
}

/// A server certificate for `name`, valid from `from` to `until` (years), signed by `ca`.
fn leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    name: &str,
    from: i32,
    until: i32,
) -> rustls::ServerConfig {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let cert = params.signed_by(&key, ca).expect("leaf");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("server config")
}

/// Serve `cfg` on a loopback port; a client that completes the handshake gets a 404 in the
/// Police error format. Returns the port.
async fn tls_server(cfg: rustls::ServerConfig) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = [0u8; 8192];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"MaLoi": "E_KHONG_TIM_THAY", "MoTaLoi": "Không tìm thấy hồ sơ"}"#;
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// A TCP server on loopback that accepts, reads what comes, then runs `then` on the socket.
async fn tcp_server<F, Fut>(then: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let then = Arc::new(then);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let then = then.clone();
            tokio::spawn(async move { then(sock).await });
        }
    });
    port
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("lienthong-transport-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// Police at `endpoint`, trusting `ca_bundle` when given, with `timeout_ms` and the connection
/// options of `more`.
fn police(
    endpoint: &str,
    ca_bundle: Option<&str>,
    more: serde_json::Value,
) -> lienthong_core::registry::Unit {
    let mut conn = more.as_object().cloned().unwrap_or_default();
    if let Some(ca) = ca_bundle {
        conn.insert("ca_bundle".into(), json!(ca));
    }
    unit(POLICE, endpoint, Some(json!({"connection": conn})))
}

/// The submit's reason, asserting the outcome is transient (nothing was sent).
async fn transient(u: &lienthong_core::registry::Unit) -> String {
    match build(u).deliver(&birth(POLICE)).await {
        Outcome::Transient { reason, .. } => reason,
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

/// The status lookup's reason, asserting it failed.
async fn lookup_failure(u: &lienthong_core::registry::Unit) -> String {
    match build(u).status("000.20.59.H48-261129-0001").await {
        StatusLookup::Failed { reason } => reason,
        other => panic!("expected a failed lookup, got {other:?}"),
    }
}

fn has(reason: &str, parts: &[&str]) {
    for p in parts {
        assert!(reason.contains(p), "{p:?} is not in: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_names_its_date_the_agency_and_the_check_to_run() {
    let dir = scratch("expired");
    let (ca, pem) = private_ca(&dir, "agency CA");
    let port = tls_server(leaf(&ca, "localhost", 2019, 2020)).await;
    let u = police(
        &format!("https://localhost:{port}/police"),
        Some(&pem),
        json!({}),
    );
    let reason = transient(&u).await;
    has(
        &reason,
        &[
            "submit could not connect",
            "TLS handshake",
            POLICE_NAME,
            "(CA.H48)",
            &format!("localhost:{port}"),
            "certificate expired on 2020-01-01",
            "nothing was sent",
            "lienthong check CA.H48",
        ],
    );
    // The status lookup (the worker's, and `lienthong check`'s test call) says the same.
    let reason = lookup_failure(&u).await;
    has(
        &reason,
        &["expired on 2020-01-01", "lienthong check CA.H48"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_valid_yet_names_its_first_day() {
    let dir = scratch("not-yet");
    let (ca, pem) = private_ca(&dir, "agency CA");
    let port = tls_server(leaf(&ca, "localhost", 2090, 2095)).await;
    let u = police(
        &format!("https://localhost:{port}/police"),
        Some(&pem),
        json!({}),
    );
    let reason = transient(&u).await;
    has(
        &reason,
        &[
            "not valid yet (valid from 2090-01-01)",
            "lienthong check CA.H48",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_names_the_name_expected_and_the_names_it_carries() {
    let dir = scratch("name");
    let (ca, pem) = private_ca(&dir, "agency CA");
    let port = tls_server(leaf(&ca, "dichvu.congan.example", 2019, 2099)).await;
    let u = police(
        &format!("https://localhost:{port}/police"),
        Some(&pem),
        json!({}),
    );
    let reason = transient(&u).await;
    has(
        &reason,
        &[
            "not valid for the name localhost",
            "it names dichvu.congan.example",
            "lienthong check CA.H48",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_names_the_trust_that_was_used() {
    let dir = scratch("issuer");
    let (ca, _) = private_ca(&dir, "agency CA");
    let (_, other_pem) = private_ca(&dir, "another CA");
    let port = tls_server(leaf(&ca, "localhost", 2019, 2099)).await;
    let endpoint = format!("https://localhost:{port}/police");
    // Trusting the unit's own ca_bundle, which holds another CA.
    let reason = transient(&police(&endpoint, Some(&other_pem), json!({}))).await;
    has(
        &reason,
        &[
            "unknown issuer",
            &format!("ca_bundle {other_pem}"),
            "lienthong check CA.H48",
        ],
    );
    // Trusting the system's roots.
    let reason = transient(&police(&endpoint, None, json!({}))).await;
    has(
        &reason,
        &["unknown issuer", "system's roots", "lienthong check CA.H48"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_served_as_the_servers_own_says_so() {
    let dir = scratch("ca-as-leaf");
    // What `openssl req -x509` makes: one self-signed certificate with CA:TRUE, served alone.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let cert = params.self_signed(&key).expect("cert");
    let pem = dir.join("self-signed.pem");
    std::fs::write(&pem, cert.pem()).expect("pem");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("server config");
    let port = tls_server(cfg).await;
    let endpoint = format!("https://localhost:{port}/police");
    let reason = transient(&police(
        &endpoint,
        Some(&pem.display().to_string()),
        json!({}),
    ))
    .await;
    has(
        &reason,
        &["a CA certificate", "CA:FALSE", "lienthong check CA.H48"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_a_refused_connection_at_its_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let u = police(&format!("http://127.0.0.1:{port}/police"), None, json!({}));
    let reason = transient(&u).await;
    has(
        &reason,
        &[
            &format!("connection refused by 127.0.0.1:{port}"),
            "nothing listens there",
            POLICE_NAME,
            "lienthong check CA.H48",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_named() {
    let u = police("http://no-such-host.invalid/police", None, json!({}));
    let reason = transient(&u).await;
    has(
        &reason,
        &[
            "the host name no-such-host.invalid",
            "did not resolve",
            "lienthong check CA.H48",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_takes_the_request_and_never_answers_is_a_read_timeout_with_its_limit() {
    let port = tcp_server(|mut sock| async move {
        let mut buf = [0u8; 65536];
        let _ = sock.read(&mut buf).await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    })
    .await;
    let u = with_timeout(
        police(
            &format!("http://127.0.0.1:{port}/police"),
            None,
            json!({"read_timeout_ms": 300}),
        ),
        5_000,
    );
    // The request was sent: the outcome is unknown, with no answer to show.
    match build(&u).deliver(&birth(POLICE)).await {
        Outcome::Unknown { reason, answer } => {
            assert_eq!(answer, None, "{reason}");
            has(
                &reason,
                &[
                    "read timeout",
                    &format!("127.0.0.1:{port}"),
                    "read_timeout_ms = 300 ms",
                    "timeout_ms = 5000 ms",
                    "the agency may have taken it",
                ],
            );
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_completes_is_a_connect_timeout_with_its_limit() {
    // TCP is accepted, but no TLS ever comes back: the connect phase (TCP + TLS) times out.
    let port = tcp_server(|mut sock| async move {
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    })
    .await;
    let u = police(
        &format!("https://localhost:{port}/police"),
        None,
        json!({"connect_timeout_ms": 300}),
    );
    let reason = transient(&u).await;
    has(
        &reason,
        &[
            "connect timeout",
            &format!("localhost:{port}"),
            "connect_timeout_ms = 300 ms",
            "nothing was sent",
            "lienthong check CA.H48",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_mid_answer_is_an_unknown_outcome_that_says_so() {
    let port = tcp_server(|mut sock| async move {
        let mut buf = [0u8; 65536];
        let _ = sock.read(&mut buf).await;
        let _ = sock
            .write_all(
                b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"MaHoSo\": \"000.20",
            )
            .await;
        let _ = sock.shutdown().await;
    })
    .await;
    let u = police(&format!("http://127.0.0.1:{port}/police"), None, json!({}));
    match build(&u).deliver(&birth(POLICE)).await {
        Outcome::Unknown { reason, answer } => {
            assert_eq!(answer, None, "{reason}");
            has(
                &reason,
                &[
                    "reset or closed before the answer was complete",
                    &format!("127.0.0.1:{port}"),
                    POLICE_NAME,
                ],
            );
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    // A server that closes without any answer.
    let port = tcp_server(|mut sock| async move {
        let mut buf = [0u8; 65536];
        let _ = sock.read(&mut buf).await;
        let _ = sock.shutdown().await;
    })
    .await;
    let u = police(&format!("http://127.0.0.1:{port}/police"), None, json!({}));
    match build(&u).deliver(&birth(POLICE)).await {
        Outcome::Unknown { reason, answer } => {
            assert_eq!(answer, None, "{reason}");
            has(&reason, &["reset or closed before the answer was complete"]);
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}
