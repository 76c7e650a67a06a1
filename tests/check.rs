//! `lienthong check` (the trial run of the connections) against the mocks on loopback: every
//! shipped connection passes; a 401, a 403, a redirect and an expired certificate each fail
//! with their own reason; a private CA given as the unit's `ca_bundle` is trusted, and the
//! command exits non-zero when a step fails.

mod common;

use std::sync::Arc;

use common::*;
use lienthong::check::{Row, check};
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

fn shipped() -> Settings {
    let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
    s.mock.listen = "127.0.0.1:0".into();
    s.mock.unavailable_rate = 0.0;
    s
}

fn point(s: &mut Settings, unit: &str, endpoint: String) {
    for u in &mut s.units {
        if u.code == unit
            && let Reach::Adapter { endpoint: e, .. } = &mut u.reach
        {
            *e = endpoint.clone();
        }
    }
}

fn failed<'a>(rows: &'a [Row], unit: &str) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| r.unit == unit && r.result == "fail")
        .collect()
}

/// A plain HTTP server answering every request with `status` and `headers`.
async fn answering(status: u16, headers: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = "{\"MaLoi\": \"E\", \"MoTaLoi\": \"refused\"}";
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// Serve `cfg` on a loopback port, answering every request 404 in the Police error format.
async fn serve_tls_404(cfg: rustls::ServerConfig) -> u16 {
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
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body =
                    "{\"MaLoi\": \"E_KHONG_TIM_THAY\", \"MoTaLoi\": \"Không tìm thấy hồ sơ\"}";
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

/// A TLS server for `localhost` with a self-signed certificate valid until `not_after` (year),
/// answering every request 404 in the Police error format. Returns (base URL, CA PEM path).
async fn tls_server(dir: &std::path::Path, not_after_year: i32) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agency.test");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    let pem = dir.join(format!("ca-{not_after_year}.pem"));
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
    let port = serve_tls_404(cfg).await;
    (
        format!("https://localhost:{port}"),
        pem.display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_connection_passes_against_the_mocks() {
    let mut s = shipped();
    let mock = lienthong_testkit::mock::serve(&s).await.expect("mock");
    for u in &mut s.units {
        // The mock's path for each shipped connection (a mapped unit with `soap` is served by
        // the SOAP civil-status software).
        let path = lienthong_testkit::mock::path_of(u);
        if let Reach::Adapter {
            adapter, endpoint, ..
        } = &mut u.reach
        {
            let path = path.unwrap_or_else(|| format!("{adapter}/{}", u.code));
            *endpoint = format!("http://{}/{path}", mock.addr);
        }
    }
    let rows = check(&s, &[]).await.expect("check");
    let bad: Vec<_> = rows.iter().filter(|r| r.result == "fail").collect();
    assert!(bad.is_empty(), "{bad:#?}");
    let passed_interfaces = rows
        .iter()
        .filter(|r| r.step == "interface" && r.result == "pass")
        .count();
    assert!(passed_interfaces >= 6, "{rows:#?}");
    // The SOAP office's test call is its TraCuuHoSo, answered by a "not found" fault.
    assert!(
        rows.iter().any(|r| r.unit == "000.10.51.H48"
            && r.step == "interface"
            && r.result == "pass"
            && r.reason.contains("E_KHONG_TIM_THAY")),
        "{rows:#?}"
    );
    let _ = mock.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_a_403_a_redirect_and_an_expired_certificate_fail_with_their_reasons() {
    let dir = std::env::temp_dir().join(format!("lienthong-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut s = shipped();
    point(
        &mut s,
        POLICE,
        format!("{}/police", answering(401, "").await),
    );
    point(
        &mut s,
        "HQ.H48",
        format!("{}/customs", answering(403, "").await),
    );
    point(
        &mut s,
        BHXH,
        format!(
            "{}/bhxh",
            answering(302, "Location: https://bhxh.example/api/v2\r\n").await
        ),
    );
    let (expired_url, expired_ca) = tls_server(&dir, 2020).await;
    let (valid_url, valid_ca) = tls_server(&dir, 2035).await;
    point(&mut s, "CT.H48", format!("{expired_url}/tax"));
    point(&mut s, "DVCQG", format!("{valid_url}/dvcqg"));
    for u in &mut s.units {
        if let Reach::Adapter { settings, .. } = &mut u.reach {
            let ca = match u.code.as_str() {
                "CT.H48" => &expired_ca,
                "DVCQG" => &valid_ca,
                _ => continue,
            };
            settings.insert("connection".into(), serde_json::json!({"ca_bundle": ca}));
        }
    }
    // Plain http:// to another machine (a documentation address): refused before any call.
    point(
        &mut s,
        "000.00.15.H48",
        "http://192.0.2.10:8080/edxml".into(),
    );
    let only: Vec<String> = [POLICE, "HQ.H48", BHXH, "CT.H48", "DVCQG", "000.00.15.H48"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows = check(&s, &only).await.expect("check");
    let reason = |unit: &str| {
        failed(&rows, unit)
            .first()
            .map(|r| format!("{}: {}", r.step, r.reason))
            .unwrap_or_else(|| format!("no failure: {rows:#?}"))
    };
    assert!(
        reason(POLICE).contains("authentication refused (HTTP 401)"),
        "{}",
        reason(POLICE)
    );
    assert!(
        reason("HQ.H48").contains("no right to this API (HTTP 403)"),
        "{}",
        reason("HQ.H48")
    );
    let r = reason(BHXH);
    assert!(
        r.contains("redirects to https://bhxh.example/api/v2"),
        "{r}"
    );
    let r = reason("000.00.15.H48");
    assert!(
        r.starts_with("encrypted:") && r.contains("plain http:// to another machine"),
        "{r}"
    );
    let r = reason("CT.H48");
    assert!(
        r.starts_with("tls:") && r.contains("expired on 2020-01-01"),
        "{r}"
    );
    // The private CA is trusted for DVCQG: TLS passes and shows the dates; its "portal"
    // answers 404 to the login, which fails the interface step, not TLS.
    let tls = rows
        .iter()
        .find(|r| r.unit == "DVCQG" && r.step == "tls")
        .expect("tls row");
    assert_eq!(tls.result, "pass", "{tls:?}");
    assert!(
        tls.reason.contains("valid 2019-01-01 to 2035-01-01"),
        "{tls:?}"
    );
    // The command itself: a table and exit status 1.
    let config = dir.join("config.toml");
    s.write_file(&config).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .arg("--config")
        .arg(&config)
        .args(["check", POLICE])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("interface  fail ") && text.contains("401"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS server for `localhost` that **requires** a client certificate issued by its own client
/// CA, answering 404 in the Police error format. Returns (base URL, server CA PEM, client cert
/// PEM, client key PEM) paths.
async fn mtls_server(dir: &std::path::Path) -> (String, String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agency client CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let client_key = rcgen::KeyPair::generate().expect("key");
    let mut client_params =
        rcgen::CertificateParams::new(vec!["lienthong.client".into()]).expect("params");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "lienthong");
    let client = client_params
        .signed_by(&client_key, &ca)
        .expect("client cert");
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&server_key)
        .expect("server cert");
    let paths = [
        ("server-ca.pem", server.pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    for (name, pem) in &paths {
        std::fs::write(dir.join(name), pem).expect("write");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("client CA");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).expect("key"),
        )
        .expect("server config");
    let port = serve_tls_404(cfg).await;
    let p = |n: &str| dir.join(n).display().to_string();
    (
        format!("https://localhost:{port}"),
        p("server-ca.pem"),
        p("client.pem"),
        p("client.key"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_requiring_a_client_certificate_is_reached_with_the_units_mtls_pair_only() {
    let dir = std::env::temp_dir().join(format!("lienthong-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (url, server_ca, cert, key) = mtls_server(&dir).await;
    let mut s = shipped();
    point(&mut s, POLICE, format!("{url}/police"));
    let set = |s: &mut Settings, conn: serde_json::Value| {
        for u in &mut s.units {
            if u.code == POLICE
                && let Reach::Adapter { settings, .. } = &mut u.reach
            {
                settings.insert("connection".into(), conn.clone());
            }
        }
    };
    set(
        &mut s,
        serde_json::json!({"ca_bundle": server_ca, "client_cert": cert, "client_key": key}),
    );
    let rows = check(&s, &[POLICE.to_string()]).await.expect("check");
    assert!(failed(&rows, POLICE).is_empty(), "{rows:#?}");
    let interface = rows
        .iter()
        .find(|r| r.step == "interface")
        .expect("interface row");
    assert_eq!(interface.result, "pass", "{interface:?}");
    // Without the pair the agency refuses the connection: some step fails.
    set(&mut s, serde_json::json!({"ca_bundle": server_ca}));
    let rows = check(&s, &[POLICE.to_string()]).await.expect("check");
    assert!(!failed(&rows, POLICE).is_empty(), "{rows:#?}");
    // Half a pair is a configuration error.
    set(
        &mut s,
        serde_json::json!({"ca_bundle": server_ca, "client_cert": cert}),
    );
    let rows = check(&s, &[POLICE.to_string()]).await.expect("check");
    let f = failed(&rows, POLICE);
    assert!(
        f.first()
            .is_some_and(|r| r.step == "config" && r.reason.contains("client_cert and client_key")),
        "{rows:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
