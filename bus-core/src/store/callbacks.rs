//! Agency callbacks (table `agency_callbacks`): each callback (unit, reference = MaThamChieu,
//! status) is claimed once, so a repeated callback yields the same bus message, and none once
//! the first was published. Once published, a row keeps only its message id (the envelope is in
//! the message store): a 5 KiB envelope is not written a second time by the update.

use crate::params;
use crate::store::db::Db;
use crate::store::db::DbError;

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This claim stored its envelope: the caller publishes what it built.
    New,
    /// An earlier claim stored one, not yet published: the caller publishes that one (JSON).
    Unpublished(String),
    /// An earlier claim was published, as this message id.
    Published(String),
}

/// Claim a callback inside an open transaction: the first claim stores `envelope_json`
/// ([`Claim::New`]: nothing is read back); a later one gets the stored envelope while it is
/// unpublished, or the message id it was published as.
pub fn claim_callback_in(
    c: &Db,
    unit: &str,
    reference: &str,
    status: u8,
    envelope_json: &str,
) -> Result<Claim, DbError> {
    let inserted = c.prepare_cached("INSERT INTO agency_callbacks (unit, reference, status, envelope, published, at_ms) VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT DO NOTHING")?
        .execute(params![unit, reference, status, envelope_json, crate::clock::now_ms()])?;
    if inserted > 0 {
        return Ok(Claim::New);
    }
    let (stored, published) = c.prepare_cached("SELECT envelope, published FROM agency_callbacks WHERE unit = ?1 AND reference = ?2 AND status = ?3")?
        .query_row(params![unit, reference, status], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0))
        })?;
    if !published {
        return Ok(Claim::Unpublished(stored));
    }
    published_message_id(&stored)
        .map(Claim::Published)
        .ok_or_else(|| {
            DbError::Other("a published agency callback's stored message id is unreadable".into())
        })
}

/// Mark a claimed callback as published (its publish was confirmed), inside an open
/// transaction. The stored envelope is replaced by `{"message_id": message_id}`: a repeat only
/// needs the id, and the router's message store keeps the envelope.
pub fn callback_published_in(
    c: &Db,
    unit: &str,
    reference: &str,
    status: u8,
    message_id: &str,
) -> Result<(), DbError> {
    let stub = serde_json::json!({ "message_id": message_id }).to_string();
    c.prepare_cached(
        "UPDATE agency_callbacks SET published = 1, envelope = ?4 WHERE unit = ?1 AND reference = ?2 AND status = ?3",
    )?
    .execute(params![unit, reference, status, stub])
    .map(|_| ())
}

/// The message id of a published callback's stored JSON (the stub [`callback_published_in`]
/// leaves, or a whole envelope written before it did). `None` when it has none.
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
    fn a_claim_is_new_then_unpublished_then_only_its_message_id() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("memory");
        crate::store::migrations::migrate(&mut conn).expect("migrate");
        let db = Db::Sqlite(conn);
        let env = r#"{"message_id":"m-1","kind":"dossier.result"}"#;
        let claim =
            |json: &str| claim_callback_in(&db, "CA.H48", "REF-1", 10, json).expect("claim");
        assert_eq!(claim(env), Claim::New);
        // A repeat before the publish gets the first envelope, not its own.
        assert_eq!(claim("{}"), Claim::Unpublished(env.to_string()));
        callback_published_in(&db, "CA.H48", "REF-1", 10, "m-1").expect("published");
        assert_eq!(claim("{}"), Claim::Published("m-1".to_string()));
        let stored: String = db
            .prepare_cached("SELECT envelope FROM agency_callbacks")
            .expect("prepare")
            .query_row(params![], |r| r.get(0))
            .expect("row");
        assert_eq!(stored, r#"{"message_id":"m-1"}"#);
        // A row published before the stub kept the whole envelope: its id is read from it.
        assert_eq!(published_message_id(env).as_deref(), Some("m-1"));
    }
}
