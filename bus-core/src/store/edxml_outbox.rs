//! The edXML outbox (table `edxml_outbox`): packages waiting for a department's system to pull
//! them (`waiting` → `fetched` → `done` or `failed`; the adapter's logic:
//! `lienthong_adapters::outbox`). Ended packages are kept `[store]
//! edxml_outbox_retention_days`.

use crate::params;
use crate::store::db::DbError;
use crate::store::db::{Db, OptionalExtension};
use serde::Serialize;

use super::connection::Store;
use super::error::StoreError;
use super::writer::MessageWriter;

/// One waiting package, as listed to the department.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct OutboxItem {
    /// Id to fetch and acknowledge it with (the bus message id).
    pub id: String,
    /// Dossier code.
    pub ma_ho_so: String,
    /// The package's edXML `DocumentId`.
    pub document_id: String,
    /// Package size in bytes.
    pub size: u64,
    /// When it was stored, ms since the Unix epoch.
    pub created_ms: i64,
    /// How many times it was fetched.
    pub fetches: i64,
    /// `waiting` or `fetched`.
    pub state: String,
}

/// A package to store: for message `id` of dossier `ma_ho_so`, to `unit`.
#[derive(Debug, Clone)]
pub struct NewPackage {
    /// The bus message id.
    pub id: String,
    /// The department's unit code.
    pub unit: String,
    /// Dossier code.
    pub ma_ho_so: String,
    /// The package's edXML `DocumentId`.
    pub document_id: String,
    /// The envelope (JSON).
    pub envelope: String,
    /// The edXML package.
    pub package: Vec<u8>,
}

/// Store a package as `waiting` (a redelivered message is stored once), inside an open
/// transaction.
pub fn put_in(c: &Db, p: &NewPackage, now_ms: i64) -> Result<(), DbError> {
    c.prepare_cached(
        "INSERT INTO edxml_outbox (id, unit, ma_ho_so, document_id, envelope, package, state, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'waiting', ?7, ?7) ON CONFLICT DO NOTHING",
    )?
    .execute(params![p.id, p.unit, p.ma_ho_so, p.document_id, p.envelope, p.package, now_ms])
    .map(|_| ())
}

/// The package `id` of `unit` if it has not ended, marked `fetched` (one more fetch), inside
/// an open transaction.
pub fn fetch_in(c: &Db, unit: &str, id: &str, now_ms: i64) -> Result<Option<Vec<u8>>, DbError> {
    let pkg: Option<Vec<u8>> = c
        .prepare_cached("SELECT package FROM edxml_outbox WHERE id = ?1 AND unit = ?2 AND state IN ('waiting', 'fetched')")?
        .query_row(params![id, unit], |r| r.get(0))
        .optional()?;
    if pkg.is_some() {
        c.prepare_cached("UPDATE edxml_outbox SET state = 'fetched', fetches = fetches + 1, updated_ms = ?3 WHERE id = ?1 AND unit = ?2")?
            .execute(params![id, unit, now_ms])?;
    }
    Ok(pkg)
}

/// The envelope (JSON), state and fetch count of package `id` of `unit`, on an open connection.
pub fn state_in(c: &Db, unit: &str, id: &str) -> Result<Option<(String, String, i64)>, DbError> {
    c.prepare_cached(
        "SELECT envelope, state, fetches FROM edxml_outbox WHERE id = ?1 AND unit = ?2",
    )?
    .query_row(params![id, unit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .optional()
}

/// Move package `id` of `unit` to `state`, with the department's `reason`, inside an open
/// transaction.
pub fn set_state_in(
    c: &Db,
    unit: &str,
    id: &str,
    state: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(), DbError> {
    c.prepare_cached("UPDATE edxml_outbox SET state = ?3, reason = ?4, updated_ms = ?5 WHERE id = ?1 AND unit = ?2")?
        .execute(params![id, unit, state, reason, now_ms])
        .map(|_| ())
}

impl Store {
    /// Packages of `unit` not yet acknowledged, oldest first (at most `limit`).
    pub fn edxml_waiting(&self, unit: &str, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, ma_ho_so, document_id, length(package), created_ms, fetches, state FROM edxml_outbox
                 WHERE unit = ?1 AND state IN ('waiting', 'fetched') ORDER BY created_ms, id LIMIT ?2",
            )?;
            let rows = st.query_map(params![unit, limit], |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    ma_ho_so: r.get(1)?,
                    document_id: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    created_ms: r.get(4)?,
                    fetches: r.get(5)?,
                    state: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }
}

impl MessageWriter {
    /// Delete packages that ended (`done` or `failed`) more than `retention_ms` ago,
    /// [`PURGE_CHUNK`](super::writer::PURGE_CHUNK) rows per write. Returns how many.
    pub async fn purge_edxml_outbox(&self, retention_ms: i64) -> Result<usize, String> {
        self.purge_in_chunks(
            "DELETE FROM edxml_outbox WHERE id IN (
                           SELECT id FROM edxml_outbox
                           WHERE state IN ('done', 'failed') AND updated_ms < ?1 LIMIT ?2)",
            crate::clock::now_ms() - retention_ms,
        )
        .await
    }
}
