//! The delivery log: a durable record, per bus message, of what an adapter hands to an agency.
//! Written before the first call (`sending`: the agency may have it, so a later attempt reuses
//! the idempotency key) and completed before the AMQP ack (`delivered`: a redelivered message
//! is acked without calling the agency again — idempotent consumer). An agency's callback,
//! which may come before the adapter has even read the receipt, finds here which dossier,
//! procedure and centre its reference belongs to. The table and its SQL are the store's
//! (`lienthong_core::store::deliveries`, `…::callbacks`); the writes run in the process's group
//! commit.

use lienthong_core::store::db::DbError;

pub use lienthong_core::store::callbacks::{
    Claim, Fixed, callback_published_in, claim_callback_in,
};
use lienthong_core::store::db::Db;
use lienthong_core::store::deliveries::record_delivered;
pub use lienthong_core::store::deliveries::{DeliveryRecord, insert_sending};
use lienthong_core::store::{Store, StoreError};

/// The delivery log: reads of table `adapter_deliveries` of the bus's store.
#[derive(Clone)]
pub struct DeliveryLog {
    store: Store,
}

impl DeliveryLog {
    /// Open the store at `location` (a SQLite file's path, or a [`lienthong_core::store::StoreLocation`]).
    pub fn open(
        location: impl Into<lienthong_core::store::StoreLocation>,
    ) -> Result<DeliveryLog, StoreError> {
        DeliveryLog::new(Store::open(location)?)
    }

    /// Use an open store.
    pub fn new(store: Store) -> Result<DeliveryLog, StoreError> {
        Ok(DeliveryLog { store })
    }

    /// The delivery of a message, in either state (blocking: from async code, on the blocking
    /// pool).
    pub fn get(&self, message_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.store.delivery(message_id)
    }

    /// The delivery of a message, in either state, from async code: a point read on the async
    /// worker, on either store ([`Store::point_query`]).
    pub async fn lookup(&self, message_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.store.delivery_now(message_id).await
    }

    /// The recorded origin of dossier `ma_ho_so` (where its results go), from async code: a
    /// point read on this log's own connection, on the async worker ([`Store::point_query`]).
    pub async fn origin(
        &self,
        ma_ho_so: &str,
    ) -> Result<Option<lienthong_core::store::Origin>, StoreError> {
        self.store.origin_now(ma_ho_so).await
    }
}

/// Record a completed delivery inside an open transaction (the group commit's): its `sending`
/// row becomes `delivered` with the receipt, or is written so at once when there is none
/// (one statement: [`record_delivered`]).
pub fn record_in(c: &Db, r: &DeliveryRecord) -> Result<(), DbError> {
    record_delivered(c, r)
}
