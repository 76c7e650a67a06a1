//! The message store (table `messages`: every envelope the router accepted, for
//! `lienthong messages resend`, kept `[store] message_retention_days`). The router's one write
//! per message (`MessageWriter::accept`: origin, message and the dossier index together) and
//! the dossier origins are in `dossiers.rs`.

use crate::params;
use crate::store::db::{Db, Params};
use crate::store::db::{DbError, Row};

use super::connection::Store;
use super::error::StoreError;
use super::writer::MessageWriter;

/// Which stored messages to read.
#[derive(Debug, Clone, Default)]
pub struct MessageSelection {
    /// These message ids.
    pub ids: Vec<String>,
    /// Everything accepted for this receiver …
    pub receiver: Option<String>,
    /// … since this time, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Everything of this dossier.
    pub ma_ho_so: Option<String>,
}

/// One envelope of the message store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Message id.
    pub message_id: String,
    /// When the router accepted it, ms since the epoch.
    pub accepted_at_ms: i64,
    /// Dossier code.
    pub ma_ho_so: String,
    /// Kind.
    pub kind: String,
    /// Sender.
    pub sender: String,
    /// The unit it was routed to.
    pub receiver: String,
    /// The envelope as routed (JSON).
    pub body: Vec<u8>,
}

/// Keep an envelope in the message store (the first copy wins), inside an open transaction.
/// `ids` = message id, dossier, kind, sender, receiver.
pub fn insert_message(c: &Db, now_ms: i64, ids: [&str; 5], body: &[u8]) -> Result<(), DbError> {
    insert_message_with(now_ms, ids, body, |sql, p| {
        c.prepare_cached(sql)?.execute(p).map(|_| ())
    })
}

/// [`insert_message`]'s statement and parameters, handed to `run`.
pub fn insert_message_with<R>(
    now_ms: i64,
    ids: [&str; 5],
    body: &[u8],
    run: impl FnOnce(&'static str, Params<'_>) -> Result<R, DbError>,
) -> Result<R, DbError> {
    let [message_id, ma_ho_so, kind, sender, receiver] = ids;
    run(
        "INSERT INTO messages (message_id, accepted_at_ms, ma_ho_so, kind, sender, receiver, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        params![message_id, now_ms, ma_ho_so, kind, sender, receiver, body],
    )
}

impl MessageWriter {
    /// Delete stored messages accepted more than `retention_ms` ago, [`PURGE_CHUNK`](super::writer::PURGE_CHUNK) rows per
    /// write. Returns how many.
    pub async fn purge_messages(&self, retention_ms: i64) -> Result<usize, String> {
        self.purge_in_chunks(
            "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages WHERE accepted_at_ms < ?1 LIMIT ?2)",
            crate::clock::now_ms() - retention_ms,
        )
        .await
    }
}

impl Store {
    /// Stored messages: by ids, or by receiver accepted since `since_ms`, or by dossier; oldest
    /// first.
    pub fn stored_messages(
        &self,
        sel: &MessageSelection,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.with(|c| {
            let mut out = Vec::new();
            let row = |r: &Row<'_>| {
                Ok(StoredMessage {
                    message_id: r.get(0)?,
                    accepted_at_ms: r.get(1)?,
                    ma_ho_so: r.get(2)?,
                    kind: r.get(3)?,
                    sender: r.get(4)?,
                    receiver: r.get(5)?,
                    body: r.get(6)?,
                })
            };
            const COLS: &str = "message_id, accepted_at_ms, ma_ho_so, kind, sender, receiver, body";
            for id in &sel.ids {
                let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM messages WHERE message_id = ?1"))?;
                out.extend(st.query_map(params![id], row)?.collect::<Result<Vec<_>, _>>()?);
            }
            if let Some(r) = &sel.receiver {
                let mut st = c.prepare(&format!("SELECT {COLS} FROM messages WHERE receiver = ?1 AND accepted_at_ms >= ?2 ORDER BY accepted_at_ms"))?;
                out.extend(st.query_map(params![r, sel.since_ms.unwrap_or(0)], row)?.collect::<Result<Vec<_>, _>>()?);
            }
            if let Some(m) = &sel.ma_ho_so {
                let mut st = c.prepare(&format!("SELECT {COLS} FROM messages WHERE ma_ho_so = ?1 ORDER BY accepted_at_ms"))?;
                out.extend(st.query_map(params![m], row)?.collect::<Result<Vec<_>, _>>()?);
            }
            Ok(out)
        })
    }
}
