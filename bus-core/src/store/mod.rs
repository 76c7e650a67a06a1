//! The embedded SQLite store shared by the components of one installation, in one place: one
//! schema with versioned migrations, one group-commit writer per process, one file per group
//! of tables. WAL mode, so separate `lienthong run --components …` processes can share one file.
//!
//! Files: [`migrations`] (the schema, every table), [`connection`] (the [`Store`] handle:
//! reads), [`writer`] (the [`MessageWriter`]: every write), then one file per group of tables:
//! [`messages`] (message store; its bodies' compression in [`body_codec`]), [`dossiers`] (the dossier index the lists read), [`trace`] (trace events), [`activity`] (per-unit activity from the trace), [`dead_letters`],
//! [`chain`] (the trace's hash chain and signed checkpoints), [`process`] (the process manager's state, inbox, outbox, blocked dossiers, alerts),
//! [`deliveries`] (the adapters' delivery log), [`callbacks`] (agency callbacks),
//! [`edxml_outbox`], [`idempotency`] (the HTTP API's idempotency keys). The store imports plain data from above it (trace events, the process
//! manager's state); nothing of the store imports the [`crate::trace::Tracer`] or the process
//! manager's rules.

pub mod activity;
pub mod blobs;
pub mod body_codec;
pub mod callbacks;
pub mod chain;
pub mod connection;
pub mod copy;
pub mod db;
pub mod dead_letters;
pub mod deliveries;
pub mod dossiers;
pub mod edxml_outbox;
pub mod error;
pub mod idempotency;
pub mod location;
pub mod messages;
pub mod migrations;
pub mod migrations_pg;
pub mod pg;
pub mod pg_read;
mod pg_tls;
pub mod process;
#[cfg(test)]
mod tests;
pub mod trace;
pub mod trace_write;
pub mod value;
pub mod wal_checkpoint;
pub mod writer;

pub use body_codec::BodyCompression;
pub use connection::Store;
pub use deliveries::DeliveryRecord;
pub use dossiers::{DossierNote, DossierPage, DossierQuery, DossierRow, Origin};
pub use edxml_outbox::OutboxItem;
pub use error::StoreError;
pub use idempotency::IdempotentRequest;
pub use location::StoreLocation;
pub use messages::{MessageSelection, StoredMessage};
pub use process::{Applied, Arrival, OutboxEntry};
pub use wal_checkpoint::{CHECKPOINT_WAL_BYTES, FINAL_CHECKPOINT_BYTES, RESET_WAL_BYTES};
pub use writer::{MessageWriter, WriterOptions};
