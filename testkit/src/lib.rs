//! What lienthong is tested and shown with, and not part of the product: the mock agencies
//! ([`mock`], the `lienthong-mock` binary), the demo driver ([`demo`], `lienthong-demo`), and
//! the helpers that start and wait for bus processes ([`procs`]).
//!
//! It depends on `lienthong-core` and `lienthong-adapters` only; the bus itself is run as the
//! `lienthong` binary (the demo and the bench) or in the tests' own process.

#![warn(missing_docs)]

pub mod broker_users;
pub mod demo;
pub mod keys;
pub mod mock;
pub mod pg;
pub mod private_broker;
pub mod private_cluster;
pub mod procs;
pub mod tls;
