//! Agency callbacks (table `agency_callbacks`): each callback (unit, reference = MaThamChieu,
//! status) is claimed once, so a repeated callback yields the same bus message, and none once
//! the first was published. Once published, a row keeps only its message id (the envelope is in
//! the message store): a 5 KiB envelope is not written a second time by the update.

use crate::params;
use crate::store::db::Db;
use crate::store::db::DbError;

/// Claim a callback inside an open transaction: the first claim stores `envelope_json`; every
/// later claim gets the stored one back, with whether it was already published (then only
/// `{"message_id": …}` is left of it: read it with [`published_message_id`]).
pub fn claim_callback_in(
    c: &Db,
    unit: &str,
    reference: &str,
    status: u8,
    envelope_json: &str,
) -> Result<(String, bool), DbError> {
    c.prepare_cached("INSERT INTO agency_callbacks (unit, reference, status, envelope, published, at_ms) VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT DO NOTHING")?
        .execute(params![unit, reference, status, envelope_json, crate::clock::now_ms()])?;
    c.prepare_cached("SELECT envelope, published FROM agency_callbacks WHERE unit = ?1 AND reference = ?2 AND status = ?3")?
        .query_row(params![unit, reference, status], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0))
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
pub fn published_message_id(stored: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        message_id: String,
    }
    serde_json::from_str::<Id>(stored)
        .ok()
        .map(|i| i.message_id)
}
