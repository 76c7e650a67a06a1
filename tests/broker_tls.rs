//! The broker link over TLS (`amqps://`), against private RabbitMQ nodes with TLS listeners and
//! certificates this test makes: the CA the bus is told to trust connects; another CA and an
//! expired certificate are refused with an error that names the problem; a client certificate
//! authenticates the bus (EXTERNAL) as the user its common name names.

mod common;

use common::private_broker::{PrivateBroker, PrivateBrokerExt};
use common::*;

/// A CA named `name`: (issuer, PEM).
fn ca(name: &str) -> (rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("ca");
    let pem = ca.pem();
    (ca, pem)
}

/// The broker's certificate for localhost / 127.0.0.1, valid from `from` to `until` (years):
/// (certificate PEM, key PEM).
fn server_cert(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    from: i32,
    until: i32,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let cert = params.signed_by(&key, ca).expect("server cert");
    (cert.pem(), key.serialize_pem())
}

/// A private node with a TLS listener serving `cert`/`key`: (node, TLS port).
fn tls_node(name: &str, ca_pem: &str, cert: &str, key: &str) -> (PrivateBroker, u16) {
    let tls_port = lienthong_testkit::procs::free_port().expect("port");
    let conf = format!(
        "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
         ssl_options.cacertfile = {{dir}}/ca.pem\n\
         ssl_options.certfile = {{dir}}/cert.pem\n\
         ssl_options.keyfile = {{dir}}/key.pem\n\
         ssl_options.verify = verify_none\n\
         ssl_options.fail_if_no_peer_cert = false"
    );
    let node = PrivateBroker::start_with_files(
        name,
        &conf,
        &[("ca.pem", ca_pem), ("cert.pem", cert), ("key.pem", key)],
    );
    // The TLS listener starts with the node; give it a moment if the TCP one came first.
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    (node, tls_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_link_is_encrypted_and_only_the_trusted_valid_certificate_connects() {
    let dir = std::env::temp_dir().join(format!(
        "lienthong-broker-tls-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let (good_ca, good_pem) = ca("lienthong test CA");
    let (_, other_pem) = ca("another CA");
    std::fs::write(dir.join("good-ca.pem"), &good_pem).expect("write");
    std::fs::write(dir.join("other-ca.pem"), &other_pem).expect("write");
    let (cert, key) = server_cert(&good_ca, 2020, 2099);
    let (expired_cert, expired_key) = server_cert(&good_ca, 2020, 2021);
    let (valid, valid_port) = tls_node("tls-valid", &good_pem, &cert, &key);
    let (expired, expired_port) = tls_node("tls-expired", &good_pem, &expired_cert, &expired_key);

    let (mut s, _) = settings("broker-tls");
    let attempt = |s: &lienthong_core::registry::Settings| {
        let s = s.clone();
        async move {
            let tls = lienthong_core::amqp::tls_config(&s.bus).map_err(|e| e.to_string())?;
            lienthong_core::amqp::connect_with(&s.bus.amqp_url, "tls-test", &tls)
                .await
                .map_err(|e| e.to_string())
        }
    };
    // Trusting the CA that signed it: connected, over TLS.
    s.bus.amqp_url = format!("amqps://guest:guest@localhost:{valid_port}/%2f");
    s.bus.tls_ca = Some(dir.join("good-ca.pem").display().to_string());
    assert_eq!(s.bus.transport_problem(), None);
    let conn = attempt(&s).await.expect("the trusted certificate connects");
    let ch = conn.create_channel().await.expect("a channel over TLS");
    let _ = ch.close(200, "ok".into()).await;
    let _ = conn.close(200, "ok".into()).await;
    // The same node, trusting another CA: refused, naming the issuer.
    s.bus.tls_ca = Some(dir.join("other-ca.pem").display().to_string());
    let e = attempt(&s).await.expect_err("an untrusted certificate");
    assert!(
        e.to_lowercase().contains("unknownissuer") || e.to_lowercase().contains("unknown issuer"),
        "{e}"
    );
    // An expired certificate from the trusted CA: refused, saying so.
    s.bus.amqp_url = format!("amqps://guest:guest@localhost:{expired_port}/%2f");
    s.bus.tls_ca = Some(dir.join("good-ca.pem").display().to_string());
    let e = attempt(&s).await.expect_err("an expired certificate");
    assert!(e.to_lowercase().contains("expired"), "{e}");
    // A missing CA file is named.
    s.bus.tls_ca = Some(dir.join("nope.pem").display().to_string());
    let e = attempt(&s).await.expect_err("a missing CA file");
    assert!(e.contains("[bus] tls_ca") && e.contains("nope.pem"), "{e}");
    drop(valid);
    drop(expired);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plain_broker_link_off_this_machine_is_refused_unless_insecure_is_set() {
    let (mut s, _) = settings("broker-plain");
    s.bus.amqp_url = "amqp://lienthong:x@10.1.2.3:5672/%2f".into();
    let why = s.bus.transport_problem().expect("refused");
    assert!(
        why.contains("plain amqp://") && why.contains("insecure"),
        "{why}"
    );
    s.bus.insecure = true;
    assert_eq!(s.bus.transport_problem(), None);
    s.bus.insecure = false;
    for local in [
        "amqp://a:b@127.0.0.1:5672/%2f",
        "amqp://a:b@localhost:5672/%2f",
        "amqp://a:b@[::1]:5672/%2f",
        "amqps://a:b@10.1.2.3:5671/%2f",
    ] {
        s.bus.amqp_url = local.into();
        assert_eq!(s.bus.transport_problem(), None, "{local}");
    }
}

/// A client certificate for the broker user `cn` (its common name), signed by `ca`:
/// (certificate PEM, key PEM).
fn client_cert(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).expect("client cert");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_authenticates_the_bus_with_external_and_user_id_is_its_user() {
    let dir = std::env::temp_dir().join(format!(
        "lienthong-broker-external-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca, ca_pem) = ca("lienthong test CA");
    let (cert, key) = server_cert(&ca, 2020, 2099);
    let user = "lt-ext-bus";
    let (client, client_key) = client_cert(&ca, user);
    std::fs::write(dir.join("ca.pem"), &ca_pem).expect("write");
    std::fs::write(dir.join("client.pem"), &client).expect("write");
    std::fs::write(dir.join("client-key.pem"), &client_key).expect("write");
    // A node that asks every TLS client for a certificate and takes the user from its CN.
    let tls_port = lienthong_testkit::procs::free_port().expect("port");
    let conf = format!(
        "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
         ssl_options.cacertfile = {{dir}}/ca.pem\n\
         ssl_options.certfile = {{dir}}/cert.pem\n\
         ssl_options.keyfile = {{dir}}/key.pem\n\
         ssl_options.verify = verify_peer\n\
         ssl_options.fail_if_no_peer_cert = true\n\
         ssl_cert_login_from = common_name\n\
         auth_mechanisms.1 = EXTERNAL\n\
         auth_mechanisms.2 = PLAIN"
    );
    let node = PrivateBroker::start_with_files(
        "tls-external",
        &conf,
        &[
            ("ca.pem", &ca_pem),
            ("cert.pem", &cert),
            ("key.pem", &key),
            ("enabled_plugins", "[rabbitmq_auth_mechanism_ssl].\n"),
        ],
    );
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The user exists with no password at all: only its certificate lets it in.
    node.ctl(&[
        "add_user",
        user,
        &lienthong_testkit::broker_users::random_secret(),
    ]);
    node.ctl(&["clear_password", user]);
    node.ctl(&["set_permissions", "-p", "/", user, ".*", ".*", ".*"]);

    let (mut s, _) = settings("broker-external");
    // The URL names the certificate's user (for the bus's own user_id stamp; EXTERNAL sends
    // no password) and asks for EXTERNAL.
    s.bus.amqp_url = format!("amqps://{user}@localhost:{tls_port}/%2f?auth_mechanism=external");
    s.bus.tls_ca = Some(dir.join("ca.pem").display().to_string());
    s.bus.tls_client_cert = Some(dir.join("client.pem").display().to_string());
    s.bus.tls_client_key = Some(dir.join("client-key.pem").display().to_string());
    assert_eq!(s.bus.user().as_deref(), Some(user));
    let tls = lienthong_core::amqp::tls_config(&s.bus).expect("tls config");
    let conn = lienthong_core::amqp::connect_with(&s.bus.amqp_url, "external-test", &tls)
        .await
        .expect("the client certificate authenticates");
    assert_eq!(
        lienthong_core::amqp::connection_user(&conn).as_deref(),
        Some(user)
    );
    // A publish stamped with that user is accepted (the broker checks user_id against the
    // user it authenticated from the certificate).
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("queue");
    let confirm = ch
        .basic_publish(
            "".into(),
            q.name().as_str().into(),
            Default::default(),
            b"{}",
            lapin::BasicProperties::default().with_user_id(user.into()),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "{confirm:?}");
    let _ = conn.close(200, "ok".into()).await;
    // Without the certificate: refused.
    s.bus.tls_client_cert = None;
    s.bus.tls_client_key = None;
    let tls = lienthong_core::amqp::tls_config(&s.bus).expect("tls config");
    assert!(
        lienthong_core::amqp::connect_with(&s.bus.amqp_url, "external-test", &tls)
            .await
            .is_err(),
        "no certificate, no connection"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
