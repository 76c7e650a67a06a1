//! `lienthong check [unit…]`: the letter's trial run of the connections. For every unit reached
//! by an adapter: the configuration builds, the endpoint is reachable, the TLS handshake passes
//! with the unit's trust and client certificate (and the certificate's dates are shown), and the
//! adapter's harmless test call answers in the reference format with the bus's credentials:
//! the status lookup of a dossier that cannot exist ([`lienthong_adapters::Adapter::probe`]),
//! read by the very code that resolves a delivery's unknown outcome, must say "not found".

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_adapters::Probe;
use lienthong_adapters::http::ConnectionOptions;
use lienthong_adapters::transport::TlsProblem;
use lienthong_core::registry::{Reach, Settings, Unit};
use serde::Serialize;
use tokio_rustls::rustls;

/// One step of one unit's check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Unit code.
    pub unit: String,
    /// Adapter name.
    pub adapter: String,
    /// `config`, `reachable`, `tls` or `interface`.
    pub step: String,
    /// `pass`, `fail` or `skip`.
    pub result: &'static str,
    /// What was found.
    pub reason: String,
    /// Time the step took, ms.
    pub ms: u128,
}

/// Why an agency endpoint may not be used: `http://` (unencrypted) to a host that is not
/// loopback. `None`: `https://`, or this machine.
pub fn plain_http_off_machine(url: &reqwest::Url) -> Option<String> {
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str().unwrap_or("");
    (!lienthong_core::loopback::is_loopback_host(host)).then(|| {
        format!(
            "endpoint {url} is plain http:// to another machine: dossiers would cross the network unencrypted; use https://"
        )
    })
}

fn row(
    u: &Unit,
    adapter: &str,
    step: &str,
    result: &'static str,
    reason: String,
    t: Instant,
) -> Row {
    Row {
        unit: u.code.clone(),
        adapter: adapter.to_string(),
        step: step.to_string(),
        result,
        reason,
        ms: t.elapsed().as_millis(),
    }
}

/// Check `only` (unit codes; empty: every unit reached by an adapter). Errors: a named unit
/// that does not exist or has no adapter.
pub async fn check(settings: &Settings, only: &[String]) -> anyhow::Result<Vec<Row>> {
    for code in only {
        match settings.units.iter().find(|u| &u.code == code) {
            None => anyhow::bail!("no unit {code} in the registry"),
            Some(u) if !matches!(u.reach, Reach::Adapter { .. }) => {
                anyhow::bail!("unit {code} is reached over AMQP: there is no connection to check")
            }
            _ => {}
        }
    }
    let mut rows = Vec::new();
    for u in settings.units.iter().filter(|u| {
        matches!(u.reach, Reach::Adapter { .. }) && (only.is_empty() || only.contains(&u.code))
    }) {
        rows.extend(check_unit(settings, u).await);
    }
    Ok(rows)
}

async fn check_unit(settings: &Settings, u: &Unit) -> Vec<Row> {
    let Reach::Adapter {
        adapter,
        endpoint,
        timeout_ms,
        settings: s,
        ..
    } = &u.reach
    else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    let t = Instant::now();
    let callback_base = format!("http://{}", settings.http.listen);
    let options = ConnectionOptions::from_settings(s);
    let pull = s.get("transport").and_then(|v| v.as_str()) == Some("pull");
    let store = if pull {
        lienthong_core::store::Store::open(std::path::Path::new(":memory:")).ok()
    } else {
        None
    };
    let built = options.clone().and_then(|_| {
        lienthong_adapters::build_with(u, &callback_base, store).map_err(|e| e.to_string())
    });
    let (options, built) = match (options, built) {
        (Ok(o), Ok(a)) => {
            rows.push(row(
                u,
                adapter,
                "config",
                "pass",
                "the adapter builds".into(),
                t,
            ));
            (o, a)
        }
        (Err(e), _) | (_, Err(e)) => {
            rows.push(row(u, adapter, "config", "fail", e, t));
            return rows;
        }
    };
    if pull {
        rows.push(row(
            u,
            adapter,
            "reachable",
            "skip",
            "pull transport: the department's system calls the bus".into(),
            Instant::now(),
        ));
    } else {
        let t = Instant::now();
        let url = match reqwest::Url::parse(endpoint) {
            Ok(url) => url,
            Err(e) => {
                rows.push(row(
                    u,
                    adapter,
                    "reachable",
                    "fail",
                    format!("endpoint {endpoint:?}: {e}"),
                    t,
                ));
                return rows;
            }
        };
        let host = url.host_str().unwrap_or("").to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        // Dossiers carry citizens' data: plain HTTP only to this machine.
        if let Some(why) = plain_http_off_machine(&url) {
            rows.push(row(u, adapter, "encrypted", "fail", why, t));
            return rows;
        }
        let limit = Duration::from_millis(
            options
                .connect_timeout_ms
                .unwrap_or((*timeout_ms).min(5_000)),
        );
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
        {
            Ok(Ok(_)) => rows.push(row(
                u,
                adapter,
                "reachable",
                "pass",
                format!("TCP {host}:{port}"),
                t,
            )),
            Ok(Err(e)) => {
                rows.push(row(
                    u,
                    adapter,
                    "reachable",
                    "fail",
                    format!("TCP {host}:{port}: {e}"),
                    t,
                ));
                return rows;
            }
            Err(_) => {
                rows.push(row(
                    u,
                    adapter,
                    "reachable",
                    "fail",
                    format!("TCP {host}:{port}: no answer in {} ms", limit.as_millis()),
                    t,
                ));
                return rows;
            }
        }
        if url.scheme() == "https" {
            let t = Instant::now();
            match tls_check(&host, port, &options).await {
                Ok(what) => rows.push(row(u, adapter, "tls", "pass", what, t)),
                Err(why) => {
                    rows.push(row(u, adapter, "tls", "fail", why, t));
                    return rows;
                }
            }
        } else {
            rows.push(row(
                u,
                adapter,
                "tls",
                "skip",
                "plain HTTP endpoint (no TLS): acceptable on loopback only".into(),
                Instant::now(),
            ));
        }
    }
    let t = Instant::now();
    let (result, reason) = match built.probe().await {
        Probe::Passed(s) => ("pass", s),
        Probe::Failed(s) => ("fail", s),
        Probe::NotSupported(s) => ("skip", s),
    };
    rows.push(row(u, adapter, "interface", result, reason, t));
    rows
}

/// Accepts any certificate, keeping the chain: to read the dates of a certificate that the
/// real verification then judges.
#[derive(Debug)]
struct Capture {
    seen: std::sync::Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            s.push(end_entity.as_ref().to_vec());
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn pem_certs(path: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))
}

/// The leaf certificate's subject and dates, as text; Err when it is expired or not yet valid.
fn describe(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let v = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    let (from, until) = (v.not_before.to_datetime(), v.not_after.to_datetime());
    let subject = cert.subject().to_string();
    if v.not_after < now {
        return Err(format!("certificate {subject} expired on {}", until.date()));
    }
    if v.not_before > now {
        return Err(format!(
            "certificate {subject} is not valid before {}",
            from.date()
        ));
    }
    let days = (until.unix_timestamp() - now.timestamp()) / 86_400;
    Ok(format!(
        "certificate {subject}, valid {} to {} ({days} days left)",
        from.date(),
        until.date()
    ))
}

async fn tls_check(host: &str, port: u16, o: &ConnectionOptions) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &o.ca_bundle {
        Some(p) => {
            for c in pem_certs(p)? {
                roots.add(c).map_err(|e| format!("ca_bundle {p}: {e}"))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let identity = match (&o.client_cert, &o.client_key) {
        (Some(c), Some(k)) => {
            use rustls::pki_types::pem::PemObject;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(k)
                .map_err(|e| format!("client_key {k}: {e}"))?;
            Some((pem_certs(c)?, key))
        }
        _ => None,
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host}: {e}"))?;
    // First: read the certificate whatever it is.
    let capture = Arc::new(Capture {
        seen: Default::default(),
        provider: provider.clone(),
    });
    let cfg = builder
        .clone()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name.clone(), tcp)
        .await;
    let leaf = capture.seen.lock().ok().and_then(|s| s.first().cloned());
    let described = match &leaf {
        Some(der) => describe(der)?,
        None => return Err("no certificate received (is the endpoint speaking TLS?)".into()),
    };
    // Then: the real verification, with the client certificate when there is one.
    let verified = builder.with_root_certificates(roots);
    let cfg = match identity {
        Some((chain, key)) => verified
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => verified.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            // The same words as a delivery's reason (lienthong_adapters::transport).
            let why = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map(|t| TlsProblem::from_rustls(t).describe(o.ca_bundle.as_deref()))
                .unwrap_or_else(|| e.to_string());
            format!("TLS handshake: {why} ({described})")
        })?;
    Ok(described)
}

/// Print `rows` as a table (or JSON) and return the exit code: 1 if any step failed.
pub fn report(rows: &[Row], json: bool) -> ExitCode {
    use std::io::Write;
    let mut out = String::new();
    if json {
        out = serde_json::to_string_pretty(rows).unwrap_or_default();
        out.push('\n');
    } else {
        out.push_str(&format!(
            "{:<15} {:<13} {:<10} {:<6} {:>6}  {}\n",
            "unit", "adapter", "step", "result", "ms", "reason"
        ));
        for r in rows {
            out.push_str(&format!(
                "{:<15} {:<13} {:<10} {:<6} {:>6}  {}\n",
                r.unit, r.adapter, r.step, r.result, r.ms, r.reason
            ));
        }
        let failed = rows.iter().filter(|r| r.result == "fail").count();
        let units: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.unit.as_str()).collect();
        out.push_str(&format!(
            "{} units checked, {} steps failed\n",
            units.len(),
            failed
        ));
    }
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(out.as_bytes()).and_then(|_| o.flush());
    if rows.iter().any(|r| r.result == "fail") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
