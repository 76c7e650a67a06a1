//! The durable edXML outbox (table `edxml_outbox` of the bus's store): packages waiting for a
//! department's system to pull them. The AMQP delivery is acked once its package is stored here,
//! so a department that pulls hours later never holds a delivery open.
//!
//! States: `waiting` → (fetch) `fetched` → (ack `done`) `done`; an ack `fail` puts the package
//! back to `waiting` (`on_fail = "retry"`, until `max_fetches`) or ends it as `failed`, which
//! the caller dead-letters with the department's reason.

use lienthong_core::envelope::Envelope;
use lienthong_core::store::{Store, StoreError};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// One waiting package, as listed to the department.
#[derive(Debug, Clone, Serialize, PartialEq)]
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

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq)]
pub enum Acked {
    /// `done`: the hand-over is complete. Carries the envelope.
    Done(Envelope),
    /// `done` again, or for a package already ended: nothing changes.
    AlreadyEnded(String),
    /// `fail`, put back to wait for another fetch.
    Retry {
        /// Fetches so far.
        fetches: i64,
    },
    /// `fail`, given up: the caller dead-letters the envelope with the reason.
    Failed(Envelope, String),
}

/// The outbox over the bus's store.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
}

impl Outbox {
    /// Use an open store (creating the table if needed).
    pub fn new(store: Store) -> Result<Outbox, StoreError> {
        store.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS edxml_outbox (
                    id TEXT PRIMARY KEY, unit TEXT NOT NULL, ma_ho_so TEXT NOT NULL,
                    document_id TEXT NOT NULL, envelope TEXT NOT NULL, package BLOB NOT NULL,
                    state TEXT NOT NULL, fetches INTEGER NOT NULL DEFAULT 0,
                    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, reason TEXT);
                 CREATE INDEX IF NOT EXISTS edxml_outbox_waiting ON edxml_outbox (unit, state, created_ms);",
            )
        })?;
        Ok(Outbox { store })
    }

    /// Store the package for `env` to `unit` (a redelivered message is stored once).
    pub fn put(
        &self,
        unit: &str,
        env: &Envelope,
        document_id: &str,
        package: &[u8],
    ) -> Result<(), StoreError> {
        let now = lienthong_core::clock::now_ms();
        let json = String::from_utf8_lossy(&env.to_bytes()).into_owned();
        self.store.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO edxml_outbox (id, unit, ma_ho_so, document_id, envelope, package, state, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'waiting', ?7, ?7)",
                params![env.message_id, unit, env.ma_ho_so, document_id, json, package, now],
            )
            .map(|_| ())
        })
    }

    /// Packages of `unit` not yet acknowledged, oldest first (at most `limit`).
    pub fn list(&self, unit: &str, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        self.store.with(|c| {
            let mut st = c.prepare(
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

    /// The package `id` of `unit` (marking it fetched), or None if there is none or it ended.
    pub fn fetch(&self, unit: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = lienthong_core::clock::now_ms();
        self.store.with(|c| {
            let pkg: Option<Vec<u8>> = c
                .query_row(
                    "SELECT package FROM edxml_outbox WHERE id = ?1 AND unit = ?2 AND state IN ('waiting', 'fetched')",
                    params![id, unit],
                    |r| r.get(0),
                )
                .optional()?;
            if pkg.is_some() {
                c.execute(
                    "UPDATE edxml_outbox SET state = 'fetched', fetches = fetches + 1, updated_ms = ?3 WHERE id = ?1 AND unit = ?2",
                    params![id, unit, now],
                )?;
            }
            Ok(pkg)
        })
    }

    /// The department's acknowledgement of `id`: `done`, or `fail` with its `reason`. A `fail`
    /// is retried (back to `waiting`) while `retry` and fewer than `max_fetches` fetches were
    /// made, else the package ends as `failed`. None if `unit` has no package `id`.
    pub fn ack(
        &self,
        unit: &str,
        id: &str,
        done: bool,
        reason: &str,
        retry: bool,
        max_fetches: i64,
    ) -> Result<Option<Acked>, StoreError> {
        let now = lienthong_core::clock::now_ms();
        self.store.with(|c| {
            let row: Option<(String, String, i64)> = c
                .query_row(
                    "SELECT envelope, state, fetches FROM edxml_outbox WHERE id = ?1 AND unit = ?2",
                    params![id, unit],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((json, state, fetches)) = row else {
                return Ok(None);
            };
            if state == "done" || state == "failed" {
                return Ok(Some(Acked::AlreadyEnded(state)));
            }
            let env: Envelope = match serde_json::from_str(&json) {
                Ok(e) => e,
                Err(e) => {
                    return Err(rusqlite::Error::FromSqlConversionFailure(
                        4,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    ));
                }
            };
            let (new_state, out) = if done {
                ("done", Acked::Done(env))
            } else if retry && fetches < max_fetches {
                ("waiting", Acked::Retry { fetches })
            } else {
                ("failed", Acked::Failed(env, reason.to_string()))
            };
            c.execute(
                "UPDATE edxml_outbox SET state = ?3, reason = ?4, updated_ms = ?5 WHERE id = ?1 AND unit = ?2",
                params![id, unit, new_state, reason, now],
            )?;
            Ok(Some(out))
        })
    }
}
