//! Agency callbacks (table `agency_callbacks`): each callback (unit, reference = MaThamChieu,
//! status) is claimed once and fixes the bus message id of its result, so a repeated callback
//! is published under the same id, and not at all once the first was published. A row keeps
//! only that message id: the envelope goes to the broker and the router's message store, and
//! is not written here too (the callback rows were 4.5 KiB of the HTTP-adapter path's store
//! writes per dossier while they held it; BENCHMARKS.md, 2026-12-07).

use crate::params;
use crate::store::db::Db;
use crate::store::db::DbError;

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This claim is the first: the caller publishes its envelope under the id it claimed with.
    New,
    /// An earlier claim fixed this message id and its publish was not confirmed: the caller
    /// publishes its own envelope under that id (receivers dedupe by id, so whichever of the two
    /// publishes reaches them first is the one result).
    Unpublished(String),
    /// An earlier claim was published, as this message id.
    Published(String),
}

/// Claim a callback inside an open transaction: the first claim keeps `message_id`
/// ([`Claim::New`]: nothing is read back); a later one gets the first claim's message id, as
/// [`Claim::Unpublished`] until [`callback_published_in`] marks it, [`Claim::Published`]
/// after. The row's `envelope` column holds `{"message_id": …}` (rows of releases before
/// 2026-12-07 may hold the whole envelope; the id is read from either).
pub fn claim_callback_in(
    c: &Db,
    unit: &str,
    reference: &str,
    status: u8,
    message_id: &str,
) -> Result<Claim, DbError> {
    let stub = serde_json::json!({ "message_id": message_id }).to_string();
    let inserted = c.prepare_cached("INSERT INTO agency_callbacks (unit, reference, status, envelope, published, at_ms) VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT DO NOTHING")?
        .execute(params![unit, reference, status, stub, crate::clock::now_ms()])?;
    if inserted > 0 {
        return Ok(Claim::New);
    }
    let (stored, published) = c.prepare_cached("SELECT envelope, published FROM agency_callbacks WHERE unit = ?1 AND reference = ?2 AND status = ?3")?
        .query_row(params![unit, reference, status], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0))
        })?;
    let first = published_message_id(&stored).ok_or_else(|| {
        DbError::Other("an agency callback's stored message id is unreadable".into())
    })?;
    Ok(if published {
        Claim::Published(first)
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

/// The message id of a callback's stored JSON (`{"message_id": …}`, or a whole envelope kept
/// by an earlier release). `None` when it has none.
fn published_message_id(stored: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        message_id: String,
    }
    serde_json::from_str::<Id>(stored)
        .ok()
        .map(|i| i.message_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_fixes_the_message_id_then_is_unpublished_then_published() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("memory");
        crate::store::migrations::migrate(&mut conn).expect("migrate");
        let db = Db::Sqlite(conn);
        let claim = |id: &str| claim_callback_in(&db, "CA.H48", "REF-1", 10, id).expect("claim");
        assert_eq!(claim("m-1"), Claim::New);
        // A repeat before the publish gets the first claim's id, not its own.
        assert_eq!(claim("m-2"), Claim::Unpublished("m-1".to_string()));
        callback_published_in(&db, "CA.H48", "REF-1", 10).expect("published");
        assert_eq!(claim("m-3"), Claim::Published("m-1".to_string()));
        // Another status of the same reference is a claim of its own.
        assert_eq!(
            claim_callback_in(&db, "CA.H48", "REF-1", 9, "m-4").expect("claim"),
            Claim::New
        );
        // Only the id is kept, not the envelope.
        let stored: String = db
            .prepare_cached("SELECT envelope FROM agency_callbacks WHERE status = 10")
            .expect("prepare")
            .query_row(params![], |r| r.get(0))
            .expect("row");
        assert_eq!(stored, r#"{"message_id":"m-1"}"#);
    }

    #[test]
    fn a_row_of_an_earlier_release_with_its_whole_envelope_gives_its_id() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("memory");
        crate::store::migrations::migrate(&mut conn).expect("migrate");
        let db = Db::Sqlite(conn);
        let env = r#"{"message_id":"m-1","kind":"dossier.result","payload":{}}"#;
        db.prepare_cached("INSERT INTO agency_callbacks (unit, reference, status, envelope, published, at_ms) VALUES ('CA.H48', 'REF-1', 10, ?1, 0, 1)")
            .expect("prepare")
            .execute(params![env])
            .expect("insert");
        assert_eq!(
            claim_callback_in(&db, "CA.H48", "REF-1", 10, "m-2").expect("claim"),
            Claim::Unpublished("m-1".to_string())
        );
    }
}
