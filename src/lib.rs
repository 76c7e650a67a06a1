//! The `lienthong` application: the components `lienthong run` starts (router, adapters, tracer,
//! HTTP API, process manager) and the operator commands around them. The mock agencies, the
//! demo and the benchmark are not part of it (`testkit/`, `bench/`).
//!
//! Start reading at [`run`] (how a process starts its components), then [`router`].

#![warn(missing_docs)]

pub mod alerts;
pub mod audit;
pub mod check;
pub mod console;
pub mod consume;
pub mod context;
pub mod control_sheet;
pub mod delivery;
pub mod dossier_list;
pub mod dossier_view;
pub mod edxml_cli;
pub mod http_api;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod problem;
pub mod process_manager;
pub mod replay;
pub mod router;
pub mod run;
pub mod store_cli;
pub mod telemetry;
pub mod testing;
pub mod tracer;
