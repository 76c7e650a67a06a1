//! The message store (table `messages`: every envelope the router accepted, for
//! `lienthong messages resend`, kept `[store] message_retention_days`) and the dossier origins
//! (the centre whose first forward the router saw, which replies are checked against; kept in
//! the dossier's row of the dossier index, `dossiers.correlation_id` set). The router's one
//! write per message (`MessageWriter::accept`: origin, message and the dossier index together)
//! is in `dossiers.rs`.

use crate::params;
use crate::store::db::{Db, OptionalExtension};
use crate::store::db::{DbError, Row};

use super::connection::Store;
use super::dossiers::DossierNote;
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

/// Where a dossier came from: the centre whose first `dossier.forward` the router saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Dossier code.
    pub ma_ho_so: String,
    /// Procedure code.
    pub ma_tthc: String,
    /// The centre that sent the dossier.
    pub origin_unit: String,
    /// Its correlation id.
    pub correlation_id: String,
}

/// Record `o` if the dossier has no origin yet (the first one wins), inside an open
/// transaction: in the dossier's index row, made (`running`, received now) when there is none.
/// The router and the HTTP API's filing record it with the row's other columns through
/// [`super::dossiers::note_in`] instead.
pub fn insert_origin(c: &Db, o: &Origin, now_ms: i64) -> Result<(), DbError> {
    c.prepare_cached(
        "INSERT INTO dossiers (ma_ho_so, ma_tthc, centre, search, phase, received_ms, updated_ms, correlation_id)
         VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?5, ?6)
         ON CONFLICT (ma_ho_so) DO UPDATE SET ma_tthc = excluded.ma_tthc, centre = excluded.centre,
             correlation_id = excluded.correlation_id
         WHERE dossiers.correlation_id IS NULL",
    )?
    .execute(params![
        o.ma_ho_so,
        o.ma_tthc,
        o.origin_unit,
        super::dossiers::search_text(&o.ma_ho_so, &o.ma_tthc, None),
        now_ms,
        o.correlation_id
    ])
    .map(|_| ())
}

/// Keep an envelope in the message store (the first copy wins), inside an open transaction.
/// `ids` = message id, dossier, kind, sender, receiver.
pub fn insert_message(c: &Db, now_ms: i64, ids: [&str; 5], body: &[u8]) -> Result<(), DbError> {
    let [message_id, ma_ho_so, kind, sender, receiver] = ids;
    c.prepare_cached("INSERT INTO messages (message_id, accepted_at_ms, ma_ho_so, kind, sender, receiver, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING")?
        .execute(params![message_id, now_ms, ma_ho_so, kind, sender, receiver, body])
        .map(|_| ())
}

/// The recorded origin of a dossier, on an open connection.
pub fn origin_in(c: &Db, ma_ho_so: &str) -> Result<Option<Origin>, DbError> {
    c.prepare_cached("SELECT ma_ho_so, ma_tthc, centre, correlation_id FROM dossiers WHERE ma_ho_so = ?1 AND correlation_id IS NOT NULL")?
        .query_row(params![ma_ho_so], |r| {
            Ok(Origin {
                ma_ho_so: r.get(0)?,
                ma_tthc: r.get(1)?,
                origin_unit: r.get(2)?,
                correlation_id: r.get(3)?,
            })
        })
        .optional()
}

impl MessageWriter {
    /// Record a dossier's origin if none is recorded yet, and its row in the dossier index
    /// from `note` (the filing, routed to its receiver), in one transaction; returns the
    /// recorded origin (the first one wins). The HTTP API's filing: the router that routes it
    /// then finds the origin and only moves the row, as for any later message.
    pub async fn record_origin(&self, o: Origin, note: DossierNote) -> Result<Origin, String> {
        self.transact(move |c| {
            super::dossiers::note_in(c, Some(&o), &note, crate::clock::now_ms())?;
            Ok(origin_in(c, &o.ma_ho_so)?.unwrap_or(o))
        })
        .await
    }

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

    /// The recorded origin of a dossier.
    pub fn origin(&self, ma_ho_so: &str) -> Result<Option<Origin>, StoreError> {
        self.with(|c| origin_in(c, ma_ho_so))
    }
}
