//! Agency callbacks (table `agency_callbacks`): each callback (unit, reference = MaThamChieu,
//! status) is claimed once, so a repeated callback yields the same bus message, and none once
//! the first was published.

use crate::params;
use crate::store::db::Db;
use crate::store::db::DbError;

/// Claim a callback inside an open transaction: the first claim stores `envelope_json`; every
/// later claim gets the stored one back, with whether it was already published.
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
/// transaction.
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
