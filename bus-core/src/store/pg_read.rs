//! [`AsyncReader`]: the PostgreSQL connection of the point reads of async code, whose protocol
//! runs as a task of the caller's runtime, so a read awaits its round trip on the async worker.

use std::collections::HashMap;
use std::future::Future;

use tokio_postgres::types::ToSql;

use super::pg::{config, to_postgres_placeholders};
use super::value::{DbError, OwnedValue, Params};

/// A PostgreSQL connection for the point reads of async code (the router's arrival read, the
/// delivery log's lookup): its connection runs as a task of the caller's runtime, so a read
/// awaits its answer on the async worker instead of being handed to the blocking pool and
/// back around the round trip ([`super::pg::PgConn`] must be driven on a thread that may block). Reads
/// from several tasks share it, pipelined by the client. Connected at the first read, and again
/// at the next read after the connection ended (the read that meets a dead connection fails).
/// Its statements are prepared once per connection.
pub struct AsyncReader {
    config: tokio_postgres::Config,
    /// How its connections are secured ([`super::pg_tls::tls`]), made once.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    open: tokio::sync::Mutex<Connected>,
}

/// An [`AsyncReader`]'s connection, or why the last attempt failed and when.
enum Connected {
    No,
    Yes(std::sync::Arc<ReadLink>),
    /// Reads within [`RECONNECT_PAUSE`] of a failed attempt fail at once with its error, so
    /// that reads waiting on an unreachable server do not each wait for a connect timeout.
    Failed(std::time::Instant, String),
}

/// How long an [`AsyncReader`] answers with its last connection error before trying again.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// An [`AsyncReader`]'s connection and its prepared statements.
struct ReadLink {
    client: tokio_postgres::Client,
    statements: std::sync::Mutex<HashMap<&'static str, tokio_postgres::Statement>>,
}

impl AsyncReader {
    /// For the server of `url` (libpq's URL form); connects at the first read. Errors: the URL,
    /// or the TLS settings (`PGSSLROOTCERT`; a server off this machine
    /// without `sslmode=require`).
    pub fn new(url: &str) -> Result<AsyncReader, DbError> {
        let config = config(url)?;
        Ok(AsyncReader {
            tls: super::pg_tls::tls(&config)?,
            config,
            open: tokio::sync::Mutex::new(Connected::No),
        })
    }

    /// The open connection, connected (again) when there is none, unless an attempt failed
    /// within [`RECONNECT_PAUSE`]. Errors: the connection.
    async fn link(&self) -> Result<std::sync::Arc<ReadLink>, DbError> {
        let mut open = self.open.lock().await;
        match &*open {
            Connected::Yes(link) if !link.client.is_closed() => return Ok(link.clone()),
            Connected::Failed(at, why) if at.elapsed() < RECONNECT_PAUSE => {
                return Err(DbError::Other(why.clone()));
            }
            _ => {}
        }
        let connected = async {
            let client = super::pg_tls::connect_spawned(&self.config, self.tls.clone()).await?;
            client.batch_execute("SET lock_timeout = '60s'").await?;
            Ok::<_, DbError>(client)
        };
        match connected.await {
            Ok(client) => {
                let link = std::sync::Arc::new(ReadLink {
                    client,
                    statements: std::sync::Mutex::new(HashMap::new()),
                });
                *open = Connected::Yes(link.clone());
                Ok(link)
            }
            Err(e) => {
                *open = Connected::Failed(std::time::Instant::now(), e.to_string());
                Err(e)
            }
        }
    }

    /// The rows of the store's query `sql` (its `?N` placeholders as [`to_postgres_placeholders`]
    /// reads them) with `params`. Errors: the connection, the query.
    pub fn query<'a>(
        &'a self,
        sql: &'static str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Vec<tokio_postgres::Row>, DbError>> + Send + use<'a> {
        let values: Vec<OwnedValue> = params
            .iter()
            .map(|p| p.to_value().to_owned_value())
            .collect();
        async move {
            let link = self.link().await?;
            let known = link
                .statements
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(sql)
                .cloned();
            let st = match known {
                Some(st) => st,
                None => {
                    let st = link.client.prepare(&to_postgres_placeholders(sql)).await?;
                    link.statements
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(sql, st.clone());
                    st
                }
            };
            let refs: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            Ok(link.client.query(&st, &refs).await?)
        }
    }
}
