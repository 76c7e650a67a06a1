//! The trace: one event per step a message takes (received, routed, delivered, retried,
//! failed, dead-lettered, status, …), handed on by every component's [`Tracer`] and kept
//! in the store; and what the queries behind `lienthong trace` and `lienthong dead-letters`
//! return.
//!
//! Files: [`event`] (the events, plain data), [`report`] (query results, the timeline table),
//! [`metrics`] (the message counters, counted from the events), [`tracer`] (publishing or writing them; it sits above the store, which imports only
//! [`event`] and [`report`]).

pub mod event;
pub mod metrics;
pub mod report;
pub mod tracer;

pub use event::{TraceEvent, TraceEventKind, parse_trace_message};
pub use report::{DeadLetterRow, TimelineRow, UnitStats, percentile, render_timeline};
pub use tracer::{TRACE_BATCH_MAX, TracePending, Tracer, broker_user};
