//! The delivery log: a durable record, per bus message, of what an adapter hands to an agency.
//! Written before the first call (`sending`: the agency may have it, so a later attempt reuses
//! the idempotency key) and completed before the AMQP ack (`delivered`: a redelivered message
//! is acked without calling the agency again — idempotent consumer). An agency's callback,
//! which may come before the adapter has even read the receipt, finds here which dossier,
//! procedure and centre its reference belongs to.

use std::path::Path;

use lienthong_core::store::{Store, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

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

/// The delivery log: table `adapter_deliveries` of the bus's store.
#[derive(Clone)]
pub struct DeliveryLog {
    store: Store,
}

impl DeliveryLog {
    /// Open the store at `path` (creating the table if needed).
    pub fn open(path: &Path) -> Result<DeliveryLog, StoreError> {
        DeliveryLog::new(Store::open(path)?)
    }

    /// Use an open store (creating the table if needed).
    pub fn new(store: Store) -> Result<DeliveryLog, StoreError> {
        store.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS adapter_deliveries (
                    message_id TEXT PRIMARY KEY, unit TEXT NOT NULL, ma_ho_so TEXT NOT NULL, ma_tthc TEXT NOT NULL,
                    kind TEXT NOT NULL, sender TEXT NOT NULL, reply_to TEXT NOT NULL, correlation_id TEXT NOT NULL,
                    receipt TEXT NOT NULL, at_ms INTEGER NOT NULL, state TEXT NOT NULL);
                 CREATE INDEX IF NOT EXISTS deliveries_by_dossier ON adapter_deliveries (ma_ho_so);
                 CREATE TABLE IF NOT EXISTS agency_callbacks (
                    unit TEXT NOT NULL, reference TEXT NOT NULL, status INTEGER NOT NULL,
                    envelope TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0, at_ms INTEGER NOT NULL,
                    PRIMARY KEY (unit, reference, status));",
            )
        })?;
        Ok(DeliveryLog { store })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        self.store.with(|c| f(c))
    }

    /// Record that `r` is about to be sent (state `sending`; the first write wins).
    pub fn begin(&self, r: &DeliveryRecord) -> Result<(), StoreError> {
        self.with(|c| insert_sending(c, r))
    }

    /// Record the agency's receipt (state `delivered`).
    pub fn complete(&self, message_id: &str, receipt: &str) -> Result<(), StoreError> {
        self.with(|c| set_delivered(c, message_id, receipt))
    }

    /// Record a completed delivery at once ([`DeliveryLog::begin`] + [`DeliveryLog::complete`],
    /// in one transaction).
    pub fn record(&self, r: &DeliveryRecord) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            record_in(&tx, r)?;
            tx.commit()
        })
    }

    /// The delivery of a message, in either state.
    pub fn get(&self, message_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT message_id, unit, ma_ho_so, ma_tthc, kind, sender, reply_to, correlation_id, receipt, at_ms, state FROM adapter_deliveries WHERE message_id = ?1")?.query_row(
                params![message_id],
                |r| {
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
                },
            )
            .optional()
        })
    }

    /// Claim an agency callback (unit, reference = MaThamChieu, status): the first claim stores
    /// `envelope_json`; every later claim gets the stored one back, with whether it was already
    /// published. So a repeated callback yields the same bus message (same message id), and
    /// none at all once the first was confirmed.
    pub fn claim_callback(
        &self,
        unit: &str,
        reference: &str,
        status: u8,
        envelope_json: &str,
    ) -> Result<(String, bool), StoreError> {
        self.with(|c| claim_callback_in(c, unit, reference, status, envelope_json))
    }

    /// Mark a claimed callback as published (its publish was confirmed).
    pub fn callback_published(
        &self,
        unit: &str,
        reference: &str,
        status: u8,
    ) -> Result<(), StoreError> {
        self.with(|c| callback_published_in(c, unit, reference, status))
    }
}

/// [`DeliveryLog::claim_callback`] on an open connection or transaction (for a process's group
/// commit, `lienthong_core::store::MessageWriter::transact`).
pub fn claim_callback_in(
    c: &Connection,
    unit: &str,
    reference: &str,
    status: u8,
    envelope_json: &str,
) -> rusqlite::Result<(String, bool)> {
    c.prepare_cached("INSERT OR IGNORE INTO agency_callbacks (unit, reference, status, envelope, published, at_ms) VALUES (?1, ?2, ?3, ?4, 0, ?5)")?
        .execute(params![unit, reference, status, envelope_json, lienthong_core::clock::now_ms()])?;
    c.prepare_cached("SELECT envelope, published FROM agency_callbacks WHERE unit = ?1 AND reference = ?2 AND status = ?3")?.query_row(
        params![unit, reference, status],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0)),
    )
}

/// [`DeliveryLog::callback_published`] on an open connection or transaction.
pub fn callback_published_in(
    c: &Connection,
    unit: &str,
    reference: &str,
    status: u8,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE agency_callbacks SET published = 1 WHERE unit = ?1 AND reference = ?2 AND status = ?3",
    )?
    .execute(params![unit, reference, status])
    .map(|_| ())
}

/// [`DeliveryLog::record`] on an open transaction: the `sending` row if there is none, then
/// `delivered` with the receipt.
pub fn record_in(c: &Connection, r: &DeliveryRecord) -> rusqlite::Result<()> {
    insert_sending(c, r)?;
    set_delivered(c, &r.message_id, &r.receipt)
}

/// [`DeliveryLog::begin`] on an open connection or transaction: the `sending` row of a
/// delivery (the first write wins).
pub fn insert_sending(c: &Connection, r: &DeliveryRecord) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR IGNORE INTO adapter_deliveries VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9, 'sending')")?
        .execute(params![r.message_id, r.unit, r.ma_ho_so, r.ma_tthc, r.kind, r.sender, r.reply_to, r.correlation_id, r.at_ms])
        .map(|_| ())
}

/// Mark a delivery `delivered` with the agency's receipt.
fn set_delivered(c: &Connection, message_id: &str, receipt: &str) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE adapter_deliveries SET state = 'delivered', receipt = ?2 WHERE message_id = ?1",
    )?
    .execute(params![message_id, receipt])
    .map(|_| ())
}
