//! The adapters' delivery log (table `adapter_deliveries`): per bus message, what an adapter
//! handed to an agency. `sending` is written before the first call, `delivered` with the
//! agency's receipt before the AMQP ack (the adapter's logic: `lienthong_adapters::deliveries`).

use crate::params;
use crate::store::db::DbError;
use crate::store::db::{Db, OptionalExtension, Row};

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

/// Record a delivery `delivered` with the agency's receipt, inside an open transaction: the
/// `sending` row written before the first call becomes `delivered` (its other columns as they
/// were), or, when there is none, the row is written `delivered` at once. One statement (an
/// upsert on the message id, which SQLite and PostgreSQL both take), so one round trip on
/// PostgreSQL where the `sending` insert then an update were two.
pub fn record_delivered(c: &Db, r: &DeliveryRecord) -> Result<(), DbError> {
    c.prepare_cached("INSERT INTO adapter_deliveries VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'delivered') ON CONFLICT (message_id) DO UPDATE SET state = 'delivered', receipt = excluded.receipt")?
        .execute(params![r.message_id, r.unit, r.ma_ho_so, r.ma_tthc, r.kind, r.sender, r.reply_to, r.correlation_id, r.receipt, r.at_ms])
        .map(|_| ())
}

/// The delivery of a message, in either state, on an open connection.
pub fn delivery_in(c: &Db, message_id: &str) -> Result<Option<DeliveryRecord>, DbError> {
    c.prepare_cached(DELIVERY_SQL)?
        .query_row(params![message_id], delivery_row)
        .optional()
}

/// A delivery by its message id.
const DELIVERY_SQL: &str = "SELECT message_id, unit, ma_ho_so, ma_tthc, kind, sender, reply_to, correlation_id, receipt, at_ms, state FROM adapter_deliveries WHERE message_id = ?1";

/// [`DELIVERY_SQL`]'s row as a [`DeliveryRecord`].
fn delivery_row(r: &Row<'_>) -> Result<DeliveryRecord, DbError> {
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
}

impl Store {
    /// The delivery of a message, in either state.
    pub fn delivery(&self, message_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.with(|c| delivery_in(c, message_id))
    }

    /// [`Store::delivery`] from async code, as a point read ([`Store::point_query`]: on
    /// SQLite right here, on PostgreSQL awaited on the async worker).
    pub async fn delivery_now(
        &self,
        message_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        // The parameters are read here: the future does not hold them.
        let read = self.point_query(DELIVERY_SQL, params![message_id], delivery_row);
        read.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message_id: &str, receipt: &str, at_ms: i64) -> DeliveryRecord {
        DeliveryRecord {
            message_id: message_id.into(),
            unit: "CA.H48".into(),
            ma_ho_so: "000.20.59.H48-261207-0001".into(),
            ma_tthc: "1.001193".into(),
            kind: "dossier.forward".into(),
            sender: "000.20.59.H48".into(),
            reply_to: "000.20.59.H48".into(),
            correlation_id: "c-1".into(),
            receipt: receipt.into(),
            delivered: !receipt.is_empty(),
            at_ms,
        }
    }

    /// `sending` then `delivered`: the row keeps its time and takes the receipt; a delivery
    /// with no `sending` row is written `delivered` at once; a second `sending` changes nothing.
    #[test]
    fn a_sending_row_becomes_delivered_in_one_statement() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("memory");
        crate::store::migrations::migrate(&mut conn).expect("migrate");
        let db = Db::Sqlite(conn);
        insert_sending(&db, &record("m-1", "", 100)).expect("sending");
        let sending = delivery_in(&db, "m-1").expect("read").expect("row");
        assert!(!sending.delivered && sending.receipt.is_empty());
        record_delivered(&db, &record("m-1", "CA.H48.R1", 200)).expect("delivered");
        assert_eq!(
            delivery_in(&db, "m-1").expect("read"),
            Some(DeliveryRecord {
                receipt: "CA.H48.R1".into(),
                delivered: true,
                ..record("m-1", "", 100)
            })
        );
        insert_sending(&db, &record("m-1", "", 300)).expect("sending again");
        assert!(
            delivery_in(&db, "m-1")
                .expect("read")
                .expect("row")
                .delivered
        );
        record_delivered(&db, &record("m-2", "CA.H48.R2", 400)).expect("delivered");
        assert_eq!(
            delivery_in(&db, "m-2").expect("read"),
            Some(record("m-2", "CA.H48.R2", 400))
        );
    }
}
