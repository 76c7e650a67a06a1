//! [`Store`]: a handle on the store file, cheap to clone. Reads run on its own connection
//! (blocking: from async code, [`Store::read`] moves them to the blocking pool); writes go
//! through the process's group-commit writer ([`Store::write`]), never through this connection.

use std::sync::{Arc, Mutex};

use super::db::{Db, DbError, OptionalExtension, Row};
use super::error::StoreError;
use super::location::StoreLocation;
use super::migrations::open_connection;
use super::value::Params;
use super::writer::MessageWriter;

/// A handle on the SQLite store; cheap to clone. Its own connection serves reads, which block
/// briefly (local file, WAL: they never wait for a writer); from async code use [`Store::read`].
/// Writes go through the [`MessageWriter`] attached with [`Store::with_writer`].
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Db>>,
    embedded: bool,
    writer: Option<MessageWriter>,
    /// On PostgreSQL, the connection of the point reads from async code ([`Store::point_query`]).
    reader: Option<Arc<super::pg_read::AsyncReader>>,
}

impl Store {
    /// Open (creating the file, its directory and the tables if needed, and bringing the schema
    /// to the latest version). The handle can read; attach the process's writer to write.
    pub fn open(location: impl Into<StoreLocation>) -> Result<Store, StoreError> {
        let location = location.into();
        let db = open_connection(&location)?;
        let reader = match &location {
            StoreLocation::Postgres(url) => Some(Arc::new(super::pg_read::AsyncReader::new(url)?)),
            _ => None,
        };
        Ok(Store {
            embedded: db.sqlite().is_some(),
            conn: Arc::new(Mutex::new(db)),
            writer: None,
            reader,
        })
    }

    /// Whether the store is the embedded SQLite file (a read takes microseconds, and may run on
    /// an async worker); false on PostgreSQL, where every read is a round trip to the server
    /// and belongs on the blocking pool ([`Store::read`]).
    pub fn is_embedded(&self) -> bool {
        self.embedded
    }

    /// This handle, writing through `writer` (the process's group commit).
    pub fn with_writer(mut self, writer: MessageWriter) -> Store {
        self.writer = Some(writer);
        self
    }

    /// The group-commit writer this handle writes through, if one is attached.
    pub fn writer(&self) -> Option<&MessageWriter> {
        self.writer.as_ref()
    }

    /// Run `f` with this handle's connection (blocking). For reads: a write here would commit
    /// beside the group commit, on a second connection.
    pub fn with<T>(&self, f: impl FnOnce(&mut Db) -> Result<T, DbError>) -> Result<T, StoreError> {
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Ok(f(&mut guard)?)
    }

    /// Run the blocking read `f` on the blocking pool (never on an async worker thread).
    /// Errors: `f`'s, or the task failed.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || super::pg::may_block(|| f(&store)))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The first row of the point read `sql` (an indexed lookup of a row or a few), through
    /// `map`; `None` when there is none. On the embedded SQLite store right here, on the async
    /// worker, on this handle's WAL reader connection, which never waits for the writer's lock:
    /// the read takes microseconds, and a hand-off to the blocking pool and back would cost
    /// more CPU than the read (the router's lookup: ~15 % of its CPU per message, BENCHMARKS.md).
    /// On PostgreSQL, where it is a round trip to the server, awaited on the async worker
    /// through this handle's [`AsyncReader`](super::pg_read::AsyncReader) (the hand-off to the
    /// blocking pool and back around the round trip was most of PostgreSQL's extra CPU on the
    /// hot path: BENCHMARKS.md, 2026-12-07). Errors: the store's.
    pub fn point_query<'a, T, M>(
        &'a self,
        sql: &'static str,
        params: Params<'_>,
        map: M,
    ) -> impl std::future::Future<Output = Result<Option<T>, StoreError>> + Send + use<'a, T, M>
    where
        T: Send + 'a,
        M: FnOnce(&Row<'_>) -> Result<T, DbError> + Send + 'a,
    {
        // The parameters are read before the future is made, so it does not hold them.
        let (here, there) = match &self.reader {
            None => (
                Some(self.with(|c| c.prepare_cached(sql)?.query_row(params, map).optional())),
                None,
            ),
            Some(reader) => (None, Some((reader.query(sql, params), map))),
        };
        async move {
            match (here, there) {
                (Some(read), _) => read,
                (None, Some((rows, map))) => {
                    let rows = rows.await?;
                    Ok(rows.first().map(|r| map(&Row::Pg(r))).transpose()?)
                }
                (None, None) => Ok(None),
            }
        }
    }

    /// Run `write` in the group commit of the attached writer ([`MessageWriter::transact`]):
    /// in a savepoint of its own, committed with the other writes queued meanwhile. Errors: the
    /// write's own, the commit's, or [`StoreError::ReadOnly`] when no writer is attached.
    pub async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let writer = self.writer.as_ref().ok_or(StoreError::ReadOnly)?;
        writer.transact(write).await.map_err(StoreError::Writer)
    }
}
