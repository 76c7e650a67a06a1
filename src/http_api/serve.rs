//! Serving the API's connections: HTTP/1.1 by hyper with a header-read timeout (a client that
//! dribbles its headers is cut off), optionally TLS (rustls) with the certificate read again on
//! SIGHUP or when its files change, and graceful shutdown (in-flight requests finish).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// How often the certificate files are checked for a change (SIGHUP reloads at once).
const CERT_CHECK: Duration = Duration::from_secs(10);

/// The server's certificate and key, read from PEM files, swapped in place when they change:
/// new handshakes get the new certificate, open connections keep theirs.
#[derive(Debug)]
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' bytes last loaded (to see a change).
    loaded: RwLock<(Vec<u8>, Vec<u8>)>,
}

impl CertReloader {
    /// Read `cert` (a PEM chain, leaf first) and `key` (a PEM private key); an error names the
    /// file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let (cert_pem, key_pem) = read_pair(cert, key)?;
        let ck = certified_key(cert, &cert_pem, key, &key_pem)?;
        Ok(Arc::new(CertReloader {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            loaded: RwLock::new((cert_pem, key_pem)),
        }))
    }

    /// Read the files again; swap the certificate in when they changed and parse. Returns
    /// whether it was swapped; on an error the current certificate stays.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let (cert_pem, key_pem) = read_pair(&self.cert, &self.key)?;
        if let Ok(l) = self.loaded.read()
            && l.0 == cert_pem
            && l.1 == key_pem
        {
            return Ok(false);
        }
        let ck = certified_key(&self.cert, &cert_pem, &self.key, &key_pem)?;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(ck);
        }
        if let Ok(mut l) = self.loaded.write() {
            *l = (cert_pem, key_pem);
        }
        Ok(true)
    }

    /// A TLS acceptor presenting this certificate (TLS 1.2 and 1.3, ALPN `http/1.1`).
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    }

    /// Reload on SIGHUP and when the files change (checked every 10 s), until `stop`.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(CERT_CHECK) => {}
                _ = hangup => {}
            }
            match self.reload() {
                Ok(true) => {
                    tracing::info!(message = "HTTP API: TLS certificate reloaded", cert = %self.cert.display())
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(message = "HTTP API: cannot reload the TLS certificate; keeping the current one", error = %format!("{e:#}"))
                }
            }
        }
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn read_pair(cert: &Path, key: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let c = std::fs::read(cert).with_context(|| format!("[http] tls_cert {}", cert.display()))?;
    let k = std::fs::read(key).with_context(|| format!("[http] tls_key {}", key.display()))?;
    Ok((c, k))
}

fn certified_key(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("[http] tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("[http] tls_cert {}: no certificate in it", cert.display());
    }
    let pk = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow::anyhow!("[http] tls_key {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, pk, &rustls::crypto::aws_lc_rs::default_provider()).map_err(|e| {
        anyhow::anyhow!(
            "[http] tls_cert {} and tls_key {}: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// How connections are served.
#[derive(Clone)]
pub struct ServeOptions {
    /// The longest a client may take to send a request's headers (and a TLS handshake).
    pub header_read_timeout: Duration,
    /// TLS, when `[http] tls_cert` and `tls_key` are set.
    pub tls: Option<TlsAcceptor>,
}

/// Serve `app` on `listener` until `stop` turns true; then stop accepting, let each
/// connection finish its request in flight (idle ones close) and return once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, as axum::serve does.
                tracing::warn!(message = "HTTP API: accept failed", error = %e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        conns.spawn(connection(
            tcp,
            peer,
            app.clone(),
            opts.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// One connection: the TLS handshake (within the header-read timeout), then HTTP/1.1.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    opts: ServeOptions,
    stop: watch::Receiver<bool>,
) {
    match &opts.tls {
        None => http1(tcp, app, &opts, stop).await,
        Some(tls) => match tokio::time::timeout(opts.header_read_timeout, tls.accept(tcp)).await {
            Ok(Ok(stream)) => http1(stream, app, &opts, stop).await,
            Ok(Err(e)) => {
                tracing::debug!(message = "HTTP API: TLS handshake failed", peer = %peer, error = %e)
            }
            Err(_) => {
                tracing::debug!(message = "HTTP API: TLS handshake timed out", peer = %peer)
            }
        },
    }
}

async fn http1<S>(io: S, app: Router, opts: &ServeOptions, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    if *stop.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(message = "HTTP API: connection ended with an error", error = %e);
            }
            return;
        }
        _ = stop.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(message = "HTTP API: connection ended with an error", error = %e);
    }
}
