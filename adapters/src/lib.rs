//! lienthong agency adapters: the [`Adapter`] trait, one adapter per agency interface in
//! [`agencies`], the HTTP and XML helpers they share, and the durable delivery log
//! (idempotent consumer).
//!
//! This crate never speaks AMQP, never retries and never depends on the `lienthong` binary:
//! the binary's delivery component takes envelopes off unit queues, asks the unit's
//! [`Adapter`] to [`prepare`](Adapter::prepare) the request once, and drives the attempts
//! (retries, parking, status lookups) itself. Start at [`adapter`], then
//! [`agencies::police_rest`] (REST/JSON) and [`agencies::bhxh_xml`] (XML over HTTP);
//! `adapters/README.md` says how to add an agency.

#![warn(missing_docs)]

pub mod adapter;
pub mod agencies;
pub mod deliveries;
pub mod edxml;
pub mod error;
pub mod http;
pub mod mapping;
pub mod outbox;
pub mod outcome;
pub mod path;
pub mod soap;
pub mod transform;
pub mod transport;
pub mod xml;
pub mod xml_doc;

use std::collections::HashMap;
use std::sync::Arc;

pub use adapter::{Adapter, AgencyRequest, Operation, ResultsTo, Setup};
// The adapters' modules under their earlier paths, for existing callers.
pub use agencies::edxml as edxml_adapter;
pub use agencies::{bhxh_xml, customs_rest, dvcqg, mapped, police_rest, tax_xml};
pub use error::{BuildError, CallbackError, NotDeliverable};
use lienthong_core::registry::{Reach, Registry, Unit};
pub use outcome::{AgencyReply, AgencyStatus, Outcome, Probe, StatusLookup};

/// Names of the adapters this build has.
pub const ADAPTERS: &[&str] = agencies::NAMES;

/// Build the adapter a unit's `reach` names. `callback_base` is the bus's public base URL
/// (e.g. `http://127.0.0.1:8480`); the agency posts results to `<base>/v1/callbacks/<unit code>`.
///
/// Errors: the unit is not reached by an adapter, names an adapter this build lacks, or its
/// settings are wrong.
pub fn build(unit: &Unit, callback_base: &str) -> Result<Arc<dyn Adapter>, BuildError> {
    build_with(unit, callback_base, None)
}

/// [`build`] with the bus's store, which adapters that keep state need (the edXML pull
/// transport's outbox).
pub fn build_with(
    unit: &Unit,
    callback_base: &str,
    store: Option<lienthong_core::store::Store>,
) -> Result<Arc<dyn Adapter>, BuildError> {
    let Reach::Adapter {
        adapter,
        endpoint,
        timeout_ms,
        settings,
        ..
    } = &unit.reach
    else {
        return Err(BuildError::NotAnAdapterUnit {
            unit: unit.code.clone(),
        });
    };
    let settings_error = |reason: String| BuildError::Settings {
        unit: unit.code.clone(),
        reason,
    };
    let options = http::ConnectionOptions::from_settings(settings).map_err(settings_error)?;
    let client = http::Agent::for_agency(*timeout_ms, &options)
        .map_err(settings_error)?
        .for_unit(&unit.code, &unit.name);
    let setup = Setup {
        unit,
        client,
        endpoint: endpoint.trim_end_matches('/').to_string(),
        callback_url: format!(
            "{}/v1/callbacks/{}",
            callback_base.trim_end_matches('/'),
            unit.code
        ),
        settings,
        store,
    };
    agencies::build(adapter, setup).unwrap_or_else(|| {
        Err(BuildError::UnknownAdapter {
            unit: unit.code.clone(),
            adapter: adapter.clone(),
            known: ADAPTERS.join(", "),
        })
    })
}

/// The adapters of every unit an adapter reaches, by unit code: built once per process and
/// shared by the delivery component and the HTTP API's callback route.
pub type Adapters = Arc<HashMap<String, Arc<dyn Adapter>>>;

/// [`build_with`] for every unit of `registry` reached by an adapter.
///
/// Errors: the first unit whose adapter cannot be built.
pub fn build_all(
    registry: &Registry,
    callback_base: &str,
    store: Option<lienthong_core::store::Store>,
) -> Result<Adapters, BuildError> {
    let mut all = HashMap::new();
    for u in registry
        .units()
        .filter(|u| matches!(u.reach, Reach::Adapter { .. }))
    {
        all.insert(u.code.clone(), build_with(u, callback_base, store.clone())?);
    }
    Ok(Arc::new(all))
}
