//! The demo's own certificate authority: a self-signed CA made at each start (rcgen) and a
//! certificate it signs for loopback, so that the demo runs the bus's HTTP API, the mock
//! agencies and every callback over HTTPS, as a deployment does (never a credential kept in
//! the repository).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// PEM files of a fresh demo CA and of a server certificate it signed for `localhost` and
/// `127.0.0.1`, in one directory (the key readable by the owner only).
#[derive(Debug, Clone)]
pub struct DemoCa {
    /// The CA's certificate (what clients trust), PEM.
    pub ca: PathBuf,
    /// The server's certificate chain (the server certificate, then the CA), PEM.
    pub cert: PathBuf,
    /// The server's private key, PKCS#8 PEM.
    pub key: PathBuf,
}

impl DemoCa {
    /// Make a CA valid for 30 days and a server certificate valid for 7 days (ECDSA P-256),
    /// written to `dir` as `ca.pem`, `server.pem` and `server-key.pem`.
    ///
    /// Errors: the key generation or a file write.
    pub fn create(dir: &Path) -> anyhow::Result<DemoCa> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let at = |days| {
            let (y, m, d) = ymd(days);
            rcgen::date_time_ymd(y, m, d)
        };
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "lienthong demo CA (made at this start)",
        );
        ca_params.not_before = at(-1);
        ca_params.not_after = at(30);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.not_before = at(-1);
        params.not_after = at(7);
        let cert = params.signed_by(&key, &ca)?;
        let out = DemoCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        std::fs::write(&out.ca, ca.pem())?;
        std::fs::write(&out.cert, format!("{}{}", cert.pem(), ca.pem()))?;
        write_private(&out.key, key.serialize_pem().as_bytes())?;
        Ok(out)
    }

    /// A reqwest client that trusts this CA (and nothing else).
    ///
    /// Errors: the CA file cannot be read or parsed.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        client_trusting(&self.ca)
    }
}

/// A fresh Ed25519 signing key for the trace's checkpoints (`[trace] signing_key`): 32 random
/// bytes written to `dir/trace-signing.key` (owner-only). Returns the file's path.
///
/// Errors: the file write.
pub fn signing_key(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("trace-signing.key");
    let key: [u8; 32] = rand::random();
    write_private(&path, &key)?;
    Ok(path)
}

/// A reqwest client that trusts the CA in the PEM file `ca` only.
///
/// Errors: the file cannot be read or holds no certificate.
pub fn client_trusting(ca: &Path) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let cert = reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([cert])
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

/// Midnight UTC of today + `days`, as rcgen takes it (its `time` type, not named here).
fn ymd(days: i64) -> (i32, u8, u8) {
    use chrono::Datelike;
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(days);
    // Month (1–12) and day (1–31) always fit a u8.
    (d.year(), d.month() as u8, d.day() as u8)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
