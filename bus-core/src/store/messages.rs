//! The message store (table `messages`: every envelope the router accepted, for
//! `lienthong messages resend`, kept `[store] message_retention_days`, compressed as `[store]
//! message_compression` says). The router's one write
//! per message (`MessageWriter::accept`: origin, message and the dossier index together) and
//! the dossier origins are in `dossiers.rs`.

use crate::params;
use crate::store::db::{Db, Params};
use crate::store::db::{DbError, Row};

use super::body_codec::decode;
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
    /// The envelope as routed (JSON; decompressed when the store keeps it compressed).
    pub body: Vec<u8>,
}

/// An envelope's body as the message store keeps it: the bytes and `messages.body_encoding`
/// (`None`: as routed; [`super::body_codec`]).
pub type KeptBody = (Vec<u8>, Option<&'static str>);

/// Keep an envelope in the message store (the first copy wins), inside an open transaction.
/// `ids` = message id, dossier, kind, sender, receiver; `body` as [`super::body_codec::encode`]
/// made it.
pub fn insert_message(c: &Db, now_ms: i64, ids: [&str; 5], body: &KeptBody) -> Result<(), DbError> {
    insert_message_with(now_ms, ids, body, |sql, p| {
        c.prepare_cached(sql)?.execute(p).map(|_| ())
    })
}

/// [`insert_message`]'s statement and parameters, handed to `run`.
pub fn insert_message_with<R>(
    now_ms: i64,
    ids: [&str; 5],
    body: &KeptBody,
    run: impl FnOnce(&'static str, Params<'_>) -> Result<R, DbError>,
) -> Result<R, DbError> {
    let [message_id, ma_ho_so, kind, sender, receiver] = ids;
    let (bytes, encoding) = body;
    run(
        "INSERT INTO messages (message_id, accepted_at_ms, ma_ho_so, kind, sender, receiver, body, body_encoding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        params![
            message_id, now_ms, ma_ho_so, kind, sender, receiver, bytes, encoding
        ],
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
    /// first; each body as routed. Errors: the store failed, or a body does not decompress
    /// ([`DbError::Conversion`], naming the message).
    pub fn stored_messages(
        &self,
        sel: &MessageSelection,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.with(|c| {
            let mut out = Vec::new();
            let row = |r: &Row<'_>| {
                let message_id: String = r.get(0)?;
                let encoding: Option<String> = r.get(7)?;
                let body = decode(r.get(6)?, encoding.as_deref()).map_err(|e| {
                    DbError::Conversion(format!("stored message {message_id}: {e}"))
                })?;
                Ok(StoredMessage {
                    message_id,
                    accepted_at_ms: r.get(1)?,
                    ma_ho_so: r.get(2)?,
                    kind: r.get(3)?,
                    sender: r.get(4)?,
                    receiver: r.get(5)?,
                    body,
                })
            };
            const COLS: &str =
                "message_id, accepted_at_ms, ma_ho_so, kind, sender, receiver, body, body_encoding";
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BodyCompression, DossierNote, WriterOptions};

    fn note(ma_ho_so: &str) -> DossierNote {
        DossierNote {
            ma_ho_so: ma_ho_so.into(),
            ma_tthc: "1.001193".into(),
            kind: "dossier.forward".into(),
            status: None,
            sender: "A".into(),
            receiver: "B".into(),
            applicant: None,
        }
    }

    /// Each stored body as the row keeps it: (message id, bytes kept, `body_encoding`).
    fn rows(store: &Store) -> Vec<(String, usize, Option<String>)> {
        store
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT message_id, length(body), body_encoding FROM messages ORDER BY message_id",
                )?;
                let rows = st.query_map(params![], |r| {
                    let n: i64 = r.get(1)?;
                    Ok((r.get(0)?, n as usize, r.get(2)?))
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .expect("rows")
    }

    #[tokio::test]
    async fn bodies_are_kept_compressed_and_read_back_as_routed() {
        let dir =
            std::env::temp_dir().join(format!("lt-messages-{}", crate::envelope::new_message_id()));
        let path = dir.join("s.db");
        // A real dossier (the first of the samples that carries an inline attachment).
        let samples = include_str!("../../../schemas/samples/dossiers.jsonl");
        let real = samples
            .lines()
            .find(|l| l.contains("content_base64"))
            .expect("a sample with an attachment")
            .as_bytes();
        let zstd = MessageWriter::start(&path).expect("writer");
        assert_eq!(zstd.compression(), BodyCompression::Zstd);
        zstd.accept(None, "m1", note("D-1"), real)
            .await
            .expect("m1");
        zstd.accept(None, "m2", note("D-1"), b"{}")
            .await
            .expect("m2");
        drop(zstd);
        let plain = MessageWriter::start_with(
            &path,
            WriterOptions {
                compression: BodyCompression::None,
                ..WriterOptions::default()
            },
        )
        .expect("writer");
        plain
            .accept(None, "m3", note("D-1"), real)
            .await
            .expect("m3");
        let store = Store::open(&path)
            .expect("store")
            .with_writer(plain.clone());
        let kept = rows(&store);
        assert_eq!(kept[0].2.as_deref(), Some("zstd"), "{kept:?}");
        assert!(kept[0].1 * 5 < real.len() * 4, "{kept:?} of {}", real.len());
        // Too small to shrink, or the setting off: as routed.
        assert_eq!(kept[1], ("m2".into(), 2, None));
        assert_eq!(kept[2], ("m3".into(), real.len(), None));
        let read = store
            .stored_messages(&MessageSelection {
                ma_ho_so: Some("D-1".into()),
                ..MessageSelection::default()
            })
            .expect("read");
        let mut bodies: Vec<(&str, &[u8])> = read
            .iter()
            .map(|m| (m.message_id.as_str(), m.body.as_slice()))
            .collect();
        bodies.sort_by_key(|(id, _)| *id);
        assert_eq!(bodies, [("m1", real), ("m2", &b"{}"[..]), ("m3", real)]);
        // A damaged body is an error that names its message, not a wrong body.
        store
            .write(|c| {
                c.execute(
                    "UPDATE messages SET body = substr(body, 1, 40) WHERE message_id = 'm1'",
                    params![],
                )
                .map(|_| ())
            })
            .await
            .expect("damage");
        let e = store
            .stored_messages(&MessageSelection {
                ids: vec!["m1".into()],
                ..MessageSelection::default()
            })
            .expect_err("damaged");
        assert!(e.to_string().contains("stored message m1"), "{e}");
        drop((store, plain));
        let _ = std::fs::remove_dir_all(dir);
    }
}
