//! The adapters' delivery log (table `adapter_deliveries`): per bus message, what an adapter
//! handed to an agency. `sending` is written before the first call, `delivered` with the
//! agency's receipt before the AMQP ack (the adapter's logic: `lienthong_adapters::deliveries`).

use crate::params;
use crate::store::db::DbError;
use crate::store::db::{Db, OptionalExtension};

use super::connection::Store;
use super::error::StoreError;

/// One delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Bus message id (= idempotency key = MaThamChieu).
    pub message_id: String,
    /// Agency unit code.
    pub unit: String,
    /// Dossier code.
    pub ma_ho_so: String,
    /// Procedure code.
    pub ma_tthc: String,
    /// Message kind delivered.
    pub kind: String,
    /// Unit that sent the message to the agency.
    pub sender: String,
    /// Unit the agency's replies go to (the dossier's centre).
    pub reply_to: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Agency receipt (empty while `sending`).
    pub receipt: String,
    /// The agency's receipt was read (`delivered`); false while `sending`.
    pub delivered: bool,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// The `sending` row of a delivery (the first write wins), inside an open transaction.
pub fn insert_sending(c: &Db, r: &DeliveryRecord) -> Result<(), DbError> {
    c.prepare_cached("INSERT INTO adapter_deliveries VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9, 'sending') ON CONFLICT DO NOTHING")?
        .execute(params![r.message_id, r.unit, r.ma_ho_so, r.ma_tthc, r.kind, r.sender, r.reply_to, r.correlation_id, r.at_ms])
        .map(|_| ())
}

/// Mark a delivery `delivered` with the agency's receipt, inside an open transaction.
pub fn set_delivered(c: &Db, message_id: &str, receipt: &str) -> Result<(), DbError> {
    c.prepare_cached(
        "UPDATE adapter_deliveries SET state = 'delivered', receipt = ?2 WHERE message_id = ?1",
    )?
    .execute(params![message_id, receipt])
    .map(|_| ())
}

/// The delivery of a message, in either state, on an open connection.
pub fn delivery_in(c: &Db, message_id: &str) -> Result<Option<DeliveryRecord>, DbError> {
    c.prepare_cached("SELECT message_id, unit, ma_ho_so, ma_tthc, kind, sender, reply_to, correlation_id, receipt, at_ms, state FROM adapter_deliveries WHERE message_id = ?1")?
        .query_row(params![message_id], |r| {
            Ok(DeliveryRecord {
                message_id: r.get(0)?,
                unit: r.get(1)?,
                ma_ho_so: r.get(2)?,
                ma_tthc: r.get(3)?,
                kind: r.get(4)?,
                sender: r.get(5)?,
                reply_to: r.get(6)?,
                correlation_id: r.get(7)?,
                receipt: r.get(8)?,
                at_ms: r.get(9)?,
                delivered: r.get::<_, String>(10)? == "delivered",
            })
        })
        .optional()
}

impl Store {
    /// The delivery of a message, in either state.
    pub fn delivery(&self, message_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.with(|c| delivery_in(c, message_id))
    }
}
