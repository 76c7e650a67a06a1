//! HTTPS on the HTTP API: a real request over TLS with a certificate made in the test (rcgen),
//! refused by a client that trusts another CA, the certificate swapped on SIGHUP; and `lienthong
//! run` refusing plain HTTP on an address that is not loopback.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use lienthong::run::{Component, check_http_exposure};

/// A CA, and a server certificate for `bus.test` it signs: (CA PEM, cert PEM, key PEM).
fn ca_and_server(name: &str) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
    let leaf = rcgen::CertificateParams::new(vec!["bus.test".to_string()]).expect("params");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let cert = leaf.signed_by(&leaf_key, &ca).expect("cert");
    (ca.pem(), cert.pem(), leaf_key.serialize_pem())
}

fn client(ca_pem: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA")])
        .resolve("bus.test", addr)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_https_with_the_configured_certificate_and_reloads_it() {
    let certs = tempdir("https");
    let (ca, cert, key) = ca_and_server("first");
    write(&certs, "cert.pem", &cert);
    write(&certs, "key.pem", &key);
    let dir = certs.clone();
    let bus = Bus::start_with("https", move |s| {
        s.http.tls_cert = Some(dir.join("cert.pem").display().to_string());
        s.http.tls_key = Some(dir.join("key.pem").display().to_string());
    })
    .await;
    let addr = bus
        .running
        .as_ref()
        .and_then(|r| r.http_addr)
        .expect("http addr");
    let url = format!("https://bus.test:{}", addr.port());
    // A client that trusts the CA: served.
    let r = client(&ca, addr)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("HTTPS request");
    assert!(r.status().is_success(), "{}", r.status());
    // An authenticated request over TLS.
    let op = bus.settings.http.operator_key.clone().unwrap_or_default();
    let r = client(&ca, addr)
        .get(format!("{url}/v1/stats"))
        .bearer_auth(&op)
        .send()
        .await
        .expect("HTTPS request");
    assert!(r.status().is_success(), "{}", r.status());
    // A client that trusts another CA: the handshake fails.
    let (other_ca, other_cert, other_key) = ca_and_server("second");
    let refused = client(&other_ca, addr)
        .get(format!("{url}/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "a client trusting another CA is refused");
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "no plain HTTP"
    );
    // New files and SIGHUP: new handshakes get the new certificate.
    write(&certs, "cert.pem", &other_cert);
    write(&certs, "key.pem", &other_key);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let reloaded = async {
        loop {
            if let Ok(r) = client(&other_ca, addr)
                .get(format!("{url}/healthz"))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), reloaded)
        .await
        .expect("the new certificate is served after SIGHUP");
    assert!(
        client(&ca, addr)
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    bus.stop().await;
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test]
async fn plain_http_on_an_address_that_is_not_loopback_is_refused() {
    let (mut s, dir) = settings("https-refuse");
    s.http.listen = "0.0.0.0:0".into();
    let e = check_http_exposure(&s).await.expect_err("refused");
    let text = format!("{e:#}");
    assert!(
        text.contains("without TLS") && text.contains("insecure"),
        "{text}"
    );
    // `lienthong run` stops there, before anything else.
    let started = lienthong::run::start(s.clone(), &Component::ALL).await;
    assert!(started.is_err(), "lienthong run refuses to start");
    // Loopback needs nothing.
    s.http.listen = "127.0.0.1:0".into();
    check_http_exposure(&s).await.expect("loopback");
    s.http.listen = "[::1]:0".into();
    check_http_exposure(&s).await.expect("loopback v6");
    // Explicitly insecure: allowed (with a warning).
    s.http.listen = "0.0.0.0:0".into();
    s.http.insecure = true;
    check_http_exposure(&s).await.expect("insecure = true");
    // With TLS: allowed.
    s.http.insecure = false;
    s.http.tls_cert = Some("cert.pem".into());
    s.http.tls_key = Some("key.pem".into());
    check_http_exposure(&s).await.expect("TLS");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_paths_resolve_against_the_config_file() {
    let dir = tempdir("https-paths");
    let text = format!(
        "{}\n",
        lienthong_core::registry::DEFAULT_CONFIG.replacen(
            "[http]",
            "[http]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"/etc/lienthong/key.pem\"",
            1
        )
    );
    let file = dir.join("bus.toml");
    std::fs::write(&file, text).expect("write");
    let s = lienthong_core::registry::Settings::load(Some(&file)).expect("load");
    assert_eq!(
        s.http.tls_cert.as_deref(),
        Some(dir.join("tls/cert.pem").display().to_string().as_str())
    );
    assert_eq!(s.http.tls_key.as_deref(), Some("/etc/lienthong/key.pem"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let d = std::env::temp_dir().join(format!("lienthong-{name}-{}", &id[id.len() - 8..]));
    std::fs::create_dir_all(&d).expect("dir");
    d
}
