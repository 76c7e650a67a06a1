//! How the store's PostgreSQL connection is secured: `sslmode=disable` connects in plain text;
//! any other mode (libpq's default `prefer`, `require`) goes through rustls, verifying the
//! server's certificate against the system's roots and `PGSSLROOTCERT` (a PEM bundle), as
//! libpq's `verify-full` does. With `prefer`, a server without TLS is reached in plain text, so
//! a server that is not on this machine must be given `sslmode=require`.

use super::value::DbError;

/// The protocol side of a connection (`tokio_postgres::Connection::poll_message`): polled, it
/// writes the requests the client queued and reads the server's answers.
pub(super) type Protocol = Box<
    dyn FnMut(
            &mut std::task::Context<'_>,
        ) -> std::task::Poll<
            Option<Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>,
        > + Send,
>;

/// Connect with `config`, through TLS unless its `sslmode` is `disable`, on a runtime of the
/// connection's own (one thread: the caller's, while it waits): the runtime, the client and its
/// protocol, for the caller to drive (`pg::Link`).
pub(super) fn connect(
    config: &tokio_postgres::Config,
) -> Result<(tokio::runtime::Runtime, tokio_postgres::Client, Protocol), DbError> {
    let runtime = runtime()?;
    match tls(config)? {
        None => {
            let (client, mut connection) =
                runtime.block_on(config.connect(tokio_postgres::NoTls))?;
            Ok((
                runtime,
                client,
                Box::new(move |cx| connection.poll_message(cx)),
            ))
        }
        Some(tls) => {
            let (client, mut connection) = runtime.block_on(config.connect(tls))?;
            Ok((
                runtime,
                client,
                Box::new(move |cx| connection.poll_message(cx)),
            ))
        }
    }
}

/// Connect with `config` as [`connect`] does, from async code, secured by `tls` ([`tls`] of the
/// same `config`, made once: it reads the system's roots from disk): the connection runs as a
/// task of the caller's runtime, which logs its end. The client.
pub(super) async fn connect_spawned(
    config: &tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
) -> Result<tokio_postgres::Client, DbError> {
    fn spawn(
        connection: impl std::future::Future<Output = Result<(), tokio_postgres::Error>>
        + Send
        + 'static,
    ) {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(message = "the store's read connection ended", error = %e);
            }
        });
    }
    match tls {
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            spawn(connection);
            Ok(client)
        }
        Some(tls) => {
            let (client, connection) = config.connect(tls).await?;
            spawn(connection);
            Ok(client)
        }
    }
}

/// How to secure a connection with `config`: `None` for plain text (`sslmode=disable`), else
/// rustls. Errors: a server off this machine without `sslmode=require`, or `PGSSLROOTCERT`.
pub(super) fn tls(
    config: &tokio_postgres::Config,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, DbError> {
    let remote: Vec<String> = config
        .get_hosts()
        .iter()
        .filter_map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) if !crate::loopback::is_loopback_host(name) => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect();
    // Citizens' data does not cross a network in plain text: a server off this machine needs
    // sslmode=require (libpq's default `prefer` would fall back to plain text when the server,
    // or someone in between, says it has no TLS).
    if !remote.is_empty() && config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Err(DbError::Other(format!(
            "the store's server {} is not on this machine: add sslmode=require to [store] url (and PGSSLROOTCERT for a private certificate authority)",
            remote.join(", ")
        )));
    }
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Ok(path) = std::env::var("PGSSLROOTCERT") {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&path)
            .map_err(|e| DbError::Other(format!("PGSSLROOTCERT {path}: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| DbError::Other(format!("PGSSLROOTCERT {path}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| DbError::Other(format!("PGSSLROOTCERT {path}: {e}")))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DbError::Other(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls)))
}

/// The connection's own runtime: one thread (the caller's, while it waits), with I/O and time.
fn runtime() -> Result<tokio::runtime::Runtime, DbError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DbError::Other(format!("the store's connection runtime: {e}")))
}
