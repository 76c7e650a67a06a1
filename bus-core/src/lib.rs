//! lienthong bus core: the canonical envelope, the registry of units and procedures, routing
//! decisions, the AMQP topology, publishing with confirms, the dead letter channel and the trace.
//!
//! This crate never depends on an adapter or on the `lienthong` binary.
//! Start reading at [`envelope`], then [`registry`] and [`routing`].

#![warn(missing_docs)]

pub mod amqp;
pub mod broker_users;
pub mod calendar;
pub mod claimcheck;
pub mod clock;
pub mod console_settings;
pub mod deadletter;
pub mod embedded;
pub mod envelope;
pub mod filing;
pub mod health;
pub mod hold;
pub mod loopback;
pub mod overflow;
pub mod process;
pub mod registry;
pub mod routing;
pub mod secret;
pub mod senders;
pub mod store;
pub mod telemetry;
pub mod topology;
pub mod trace;

pub use envelope::{Envelope, Kind, TrangThaiHoSo};
pub use registry::Settings;
