//! Agency callbacks (table `agency_callbacks`): each callback (unit, reference = MaThamChieu,
//! status) is claimed once and fixes its result's bus message: its message id, its `sent_at`
//! and the SHA-256 of the envelope's bytes. A repeat is published only as those same bytes
//! (receivers dedupe by id, the bus's message store keeps one body per id), and not at all once
//! the first was published. A row keeps only that fingerprint (`{"message_id", "sent_at",
//! "sha256"}`), not the envelope: it goes to the broker and the router's message store, and
//! the callback rows were 4.5 KiB of the HTTP-adapter path's store writes per dossier while
//! they held it (BENCHMARKS.md, 2026-12-07).

use crate::params;
use crate::store::db::Db;
use crate::store::db::DbError;

/// What the first claim of a callback fixed: the result's message id, its `sent_at` and the
/// SHA-256 (hex) of the envelope's serialisation. `sent_at` and `sha256` are `None` in the
/// rows of releases that kept only the id of a published callback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fixed {
    /// The result's bus message id (UUIDv7).
    pub message_id: String,
    /// Its `sent_at` (RFC 3339, +07:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// SHA-256 of its serialised envelope, lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This claim is the first: the caller publishes the envelope it fixed.
    New,
    /// An earlier claim fixed the result and its publish was not confirmed: the caller publishes
    /// its own envelope with that message id and `sent_at` if it serialises to the same bytes
    /// (the same SHA-256), and refuses it otherwise.
    Unpublished(Fixed),
    /// An earlier release's claim kept this whole envelope (JSON), not yet published: the
    /// caller publishes these bytes.
    UnpublishedEnvelope(String),
    /// An earlier claim was published, as this message id.
    Published(String),
}

/// Claim a callback inside an open transaction: the first claim keeps `fixed` ([`Claim::New`]:
/// nothing is read back); a later one gets what the first fixed, as [`Claim::Unpublished`]
/// until [`callback_published_in`] marks it, [`Claim::Published`] after.
pub fn claim_callback_in(
    c: &Db,
    unit: &str,
    reference: &str,
    status: u8,
    fixed: &Fixed,
) -> Result<Claim, DbError> {
    let stub = serde_json::to_string(fixed).map_err(|e| DbError::Other(e.to_string()))?;
    let inserted = c.prepare_cached("INSERT INTO agency_callbacks (unit, reference, status, envelope, published, at_ms) VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT DO NOTHING")?
        .execute(params![unit, reference, status, stub, crate::clock::now_ms()])?;
    if inserted > 0 {
        return Ok(Claim::New);
    }
    let (stored, published) = c.prepare_cached("SELECT envelope, published FROM agency_callbacks WHERE unit = ?1 AND reference = ?2 AND status = ?3")?
        .query_row(params![unit, reference, status], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0))
        })?;
    let first = stored_fixed(&stored).ok_or_else(|| {
        DbError::Other("an agency callback's stored message id is unreadable".into())
    })?;
    Ok(if published {
        Claim::Published(first.message_id)
    } else if first.sha256.is_none() && is_whole_envelope(&stored) {
        Claim::UnpublishedEnvelope(stored)
    } else {
        Claim::Unpublished(first)
    })
}

/// Mark a claimed callback as published (its publish was confirmed), inside an open
/// transaction: a repeat then only gets the message id.
pub fn callback_published_in(
    c: &Db,
    unit: &str,
    reference: &str,
    status: u8,
) -> Result<(), DbError> {
    c.prepare_cached(
        "UPDATE agency_callbacks SET published = 1 WHERE unit = ?1 AND reference = ?2 AND status = ?3",
    )?
    .execute(params![unit, reference, status])
    .map(|_| ())
}

/// Whether a stored row is an earlier release's whole envelope (it has a `kind`), not a
/// fingerprint.
fn is_whole_envelope(stored: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(stored)
        .ok()
        .is_some_and(|v| v.get("kind").is_some())
}

/// What a row fixed: its fingerprint, or the message id (and `sent_at`) of an earlier
/// release's stub or whole envelope. `None` when it has no message id.
fn stored_fixed(stored: &str) -> Option<Fixed> {
    serde_json::from_str::<Fixed>(stored).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(id: &str) -> Fixed {
        Fixed {
            message_id: id.into(),
            sent_at: Some("2026-12-07T08:00:00+07:00".into()),
            sha256: Some(format!("{id}-sha")),
        }
    }

    fn db() -> Db {
        let mut conn = rusqlite::Connection::open_in_memory().expect("memory");
        crate::store::migrations::migrate(&mut conn).expect("migrate");
        Db::Sqlite(conn)
    }

    #[test]
    fn a_claim_fixes_the_result_then_is_unpublished_then_published() {
        let db = db();
        let claim =
            |id: &str| claim_callback_in(&db, "CA.H48", "REF-1", 10, &fixed(id)).expect("claim");
        assert_eq!(claim("m-1"), Claim::New);
        // A repeat before the publish gets what the first claim fixed, not its own.
        assert_eq!(claim("m-2"), Claim::Unpublished(fixed("m-1")));
        callback_published_in(&db, "CA.H48", "REF-1", 10).expect("published");
        assert_eq!(claim("m-3"), Claim::Published("m-1".to_string()));
        // Another status of the same reference is a claim of its own.
        assert_eq!(
            claim_callback_in(&db, "CA.H48", "REF-1", 9, &fixed("m-4")).expect("claim"),
            Claim::New
        );
        // Only the fingerprint is kept, not the envelope.
        let stored: String = db
            .prepare_cached("SELECT envelope FROM agency_callbacks WHERE status = 10")
            .expect("prepare")
            .query_row(params![], |r| r.get(0))
            .expect("row");
        assert_eq!(
            stored,
            r#"{"message_id":"m-1","sent_at":"2026-12-07T08:00:00+07:00","sha256":"m-1-sha"}"#
        );
    }

    /// Rows of earlier releases: an unpublished whole envelope is given back to be published as
    /// it is; a published stub or envelope gives its id.
    #[test]
    fn rows_of_earlier_releases_are_read_as_they_were_written() {
        let db = db();
        let env = r#"{"message_id":"m-1","kind":"dossier.result","payload":{}}"#;
        let stub = r#"{"message_id":"m-2"}"#;
        for (reference, stored, published) in [("R1", env, 0), ("R2", env, 1), ("R3", stub, 1)] {
            db.prepare_cached("INSERT INTO agency_callbacks (unit, reference, status, envelope, published, at_ms) VALUES ('CA.H48', ?1, 10, ?2, ?3, 1)")
                .expect("prepare")
                .execute(params![reference, stored, published])
                .expect("insert");
        }
        let claim = |reference: &str| {
            claim_callback_in(&db, "CA.H48", reference, 10, &fixed("m-9")).expect("claim")
        };
        assert_eq!(claim("R1"), Claim::UnpublishedEnvelope(env.to_string()));
        assert_eq!(claim("R2"), Claim::Published("m-1".to_string()));
        assert_eq!(claim("R3"), Claim::Published("m-2".to_string()));
    }
}
