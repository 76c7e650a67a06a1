//! The claim-check blobs' index: which dossiers each blob (by SHA-256) belongs to, for
//! fetching it (parties of one of its dossiers only) and for deleting it with the message
//! retention; who is a party of a dossier.

use crate::params;

use super::{MessageWriter, Store, StoreError};

impl MessageWriter {
    /// Record that blobs `sha256s` belong to dossier `ma_ho_so` (the claim check just stored
    /// them for it). Idempotent.
    pub async fn record_blobs(&self, ma_ho_so: &str, sha256s: Vec<String>) -> Result<(), String> {
        let ma = ma_ho_so.to_string();
        self.transact(move |c| {
            let now = crate::clock::now_ms();
            for sha in &sha256s {
                c.prepare_cached(
                    "INSERT INTO blob_dossiers (sha256, ma_ho_so, at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sha256, ma_ho_so) DO UPDATE SET at_ms = excluded.at_ms",
                )?
                .execute(params![sha, ma, now])?;
            }
            Ok(())
        })
        .await
    }

    /// Forget the dossiers of blobs recorded more than `retention_ms` ago (the message
    /// retention: their envelopes are gone too) and return the blobs no dossier holds any more,
    /// for the caller to delete from the blob store.
    pub async fn purge_blob_index(&self, retention_ms: i64) -> Result<Vec<String>, String> {
        let cutoff = crate::clock::now_ms() - retention_ms;
        self.transact(move |c| {
            let gone: Vec<String> = c
                .prepare_cached(
                    "SELECT sha256 FROM blob_dossiers GROUP BY sha256 HAVING max(at_ms) < ?1 LIMIT 1000",
                )?
                .query_map(params![cutoff], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            c.prepare_cached("DELETE FROM blob_dossiers WHERE at_ms < ?1")?
                .execute(params![cutoff])?;
            Ok(gone)
        })
        .await
    }
}

impl Store {
    /// Whether `unit` is a party of dossier `ma_ho_so`: its centre (its origin, or the centre
    /// of the process the bus runs), or a unit a message of the dossier was sent to or came
    /// from (the units on its route it reached). What a unit's key may read of a dossier over
    /// HTTP (its trace, state and control sheet), and the rule of [`Store::blob_party`].
    pub fn dossier_party(&self, ma_ho_so: &str, unit: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM dossiers o WHERE o.ma_ho_so = ?1 AND o.centre = ?2 AND o.correlation_id IS NOT NULL)
                    OR EXISTS (SELECT 1 FROM processes p WHERE p.ma_ho_so = ?1 AND p.origin_unit = ?2)
                    OR EXISTS (SELECT 1 FROM messages m WHERE m.ma_ho_so = ?1 AND (m.receiver = ?2 OR m.sender = ?2))
                    OR EXISTS (SELECT 1 FROM process_outbox x WHERE x.ma_ho_so = ?1 AND x.receiver = ?2)",
            )?
            .query_row(params![ma_ho_so, unit], |r| r.get(0))
        })
    }

    /// Whether `unit` is a party of a dossier that blob `sha256` belongs to: the dossier's
    /// centre (its origin, or the centre of the process the bus runs), or a unit a message of
    /// the dossier was sent to or came from (the units on its route it reached).
    pub fn blob_party(&self, sha256: &str, unit: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM blob_dossiers b WHERE b.sha256 = ?1 AND (
                    EXISTS (SELECT 1 FROM dossiers o WHERE o.ma_ho_so = b.ma_ho_so AND o.centre = ?2 AND o.correlation_id IS NOT NULL)
                    OR EXISTS (SELECT 1 FROM processes p WHERE p.ma_ho_so = b.ma_ho_so AND p.origin_unit = ?2)
                    OR EXISTS (SELECT 1 FROM messages m WHERE m.ma_ho_so = b.ma_ho_so AND (m.receiver = ?2 OR m.sender = ?2))
                    OR EXISTS (SELECT 1 FROM process_outbox x WHERE x.ma_ho_so = b.ma_ho_so AND x.receiver = ?2)))",
            )?
            .query_row(params![sha256, unit], |r| r.get(0))
        })
    }
}
