//! The durable edXML outbox: packages waiting for a department's system to pull them. The AMQP
//! delivery is acked once its package is stored, so a department that pulls hours later never
//! holds a delivery open. The table and its SQL are the store's
//! (`lienthong_core::store::edxml_outbox`); every write runs in the process's group commit.
//!
//! States: `waiting` → (fetch) `fetched` → (ack `done`) `done`; an ack `fail` puts the package
//! back to `waiting` (`on_fail = "retry"`, until `max_fetches`) or ends it as `failed`, which
//! the caller dead-letters with the department's reason.

use lienthong_core::envelope::Envelope;
use lienthong_core::store::db::DbError;
use lienthong_core::store::edxml_outbox::{NewPackage, fetch_in, put_in, set_state_in, state_in};
use lienthong_core::store::{Store, StoreError};

pub use lienthong_core::store::OutboxItem;

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq)]
pub enum Acked {
    /// `done`: the hand-over is complete. Carries the envelope.
    Done(Envelope),
    /// `done` again, or for a package already ended: nothing changes.
    AlreadyEnded(String),
    /// `fail`, put back to wait for another fetch.
    Retry {
        /// Fetches so far.
        fetches: i64,
    },
    /// `fail`, given up: the caller dead-letters the envelope with the reason.
    Failed(Envelope, String),
}

/// The outbox over the bus's store (a handle that writes through the process's group commit).
#[derive(Clone)]
pub struct Outbox {
    store: Store,
}

impl Outbox {
    /// Use an open store; its writes go through the writer attached to it
    /// ([`Store::with_writer`]).
    pub fn new(store: Store) -> Result<Outbox, StoreError> {
        Ok(Outbox { store })
    }

    /// Store the package for `env` to `unit` (a redelivered message is stored once).
    pub async fn put(
        &self,
        unit: &str,
        env: &Envelope,
        document_id: &str,
        package: Vec<u8>,
    ) -> Result<(), StoreError> {
        let p = NewPackage {
            id: env.message_id.clone(),
            unit: unit.to_string(),
            ma_ho_so: env.ma_ho_so.clone(),
            document_id: document_id.to_string(),
            envelope: String::from_utf8_lossy(&env.to_bytes()).into_owned(),
            package,
        };
        self.store
            .write(move |c| put_in(c, &p, lienthong_core::clock::now_ms()))
            .await
    }

    /// Packages of `unit` not yet acknowledged, oldest first (at most `limit`).
    pub async fn list(&self, unit: &str, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        let unit = unit.to_string();
        self.store
            .read(move |s| s.edxml_waiting(&unit, limit))
            .await
    }

    /// The package `id` of `unit` (marking it fetched), or None if there is none or it ended.
    pub async fn fetch(&self, unit: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (unit, id) = (unit.to_string(), id.to_string());
        self.store
            .write(move |c| fetch_in(c, &unit, &id, lienthong_core::clock::now_ms()))
            .await
    }

    /// The department's acknowledgement of `id`: `done`, or `fail` with its `reason`. A `fail`
    /// is retried (back to `waiting`) while `retry` and fewer than `max_fetches` fetches were
    /// made, else the package ends as `failed`. None if `unit` has no package `id`.
    pub async fn ack(
        &self,
        unit: &str,
        id: &str,
        done: bool,
        reason: &str,
        retry: bool,
        max_fetches: i64,
    ) -> Result<Option<Acked>, StoreError> {
        let (unit, id, reason) = (unit.to_string(), id.to_string(), reason.to_string());
        self.store
            .write(move |c| {
                let Some((json, state, fetches)) = state_in(c, &unit, &id)? else {
                    return Ok(None);
                };
                if state == "done" || state == "failed" {
                    return Ok(Some(Acked::AlreadyEnded(state)));
                }
                let env: Envelope = serde_json::from_str(&json)
                    .map_err(|e| DbError::Conversion(format!("the stored envelope: {e}")))?;
                let (new_state, out) = if done {
                    ("done", Acked::Done(env))
                } else if retry && fetches < max_fetches {
                    ("waiting", Acked::Retry { fetches })
                } else {
                    ("failed", Acked::Failed(env, reason.clone()))
                };
                set_state_in(
                    c,
                    &unit,
                    &id,
                    new_state,
                    &reason,
                    lienthong_core::clock::now_ms(),
                )?;
                Ok(Some(out))
            })
            .await
    }
}
