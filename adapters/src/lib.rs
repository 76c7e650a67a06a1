//! lienthong agency adapters: the [`Adapter`] trait, the retry policy every adapter shares, the
//! durable delivery log (idempotent consumer), and one module per agency interface.
//!
//! This crate never speaks AMQP and never depends on the `lienthong` binary: the binary's
//! adapter component takes envelopes off unit queues and hands them to an [`Adapter`].
//! Start at [`adapter`], then [`police_rest`] (REST/JSON) and [`bhxh_xml`] (XML over HTTP).

#![warn(missing_docs)]

pub mod adapter;
pub mod bhxh_xml;
pub mod customs_rest;
pub mod deliveries;
pub mod dvcqg;
pub mod edxml;
pub mod edxml_adapter;
pub mod http;
pub mod mapped;
pub mod mapping;
pub mod outbox;
pub mod police_rest;
pub mod retry;
pub mod tax_xml;
pub mod transport;
pub mod xml;

use std::sync::Arc;

pub use adapter::{Adapter, AgencyReply, AgencyStatus, Outcome, StatusLookup};
use lienthong_core::registry::{Reach, Unit};

/// Names of the adapters this build has.
pub const ADAPTERS: [&str; 7] = [
    customs_rest::NAME,
    mapped::NAME,
    dvcqg::NAME,
    police_rest::NAME,
    bhxh_xml::NAME,
    edxml_adapter::NAME,
    tax_xml::NAME,
];

/// Build the adapter a unit's `reach` names. `callback_base` is the bus's public base URL
/// (e.g. `http://127.0.0.1:8480`); the agency posts results to `<base>/v1/callbacks/<unit code>`.
///
/// Errors: the unit is not reached by an adapter, or names an adapter this build lacks.
pub fn build(unit: &Unit, callback_base: &str) -> Result<Arc<dyn Adapter>, String> {
    build_with(unit, callback_base, None)
}

/// [`build`] with the bus's store, which adapters that keep state need (the edXML pull
/// transport's outbox).
pub fn build_with(
    unit: &Unit,
    callback_base: &str,
    store: Option<lienthong_core::store::Store>,
) -> Result<Arc<dyn Adapter>, String> {
    let Reach::Adapter {
        adapter,
        endpoint,
        timeout_ms,
        settings,
        ..
    } = &unit.reach
    else {
        return Err(format!(
            "unit {} is reached over AMQP, not by an adapter",
            unit.code
        ));
    };
    let callback_url = format!(
        "{}/v1/callbacks/{}",
        callback_base.trim_end_matches('/'),
        unit.code
    );
    let options = http::ConnectionOptions::from_settings(settings)
        .map_err(|e| format!("unit {}: {e}", unit.code))?;
    let client = http::Agent::for_agency(*timeout_ms, &options)
        .map_err(|e| format!("unit {}: {e}", unit.code))?
        .for_unit(&unit.code, &unit.name);
    match adapter.as_str() {
        police_rest::NAME => Ok(Arc::new(police_rest::PoliceRest::new(
            client,
            endpoint,
            &callback_url,
            settings.clone(),
        ))),
        bhxh_xml::NAME => Ok(Arc::new(bhxh_xml::BhxhXml::new(
            client,
            endpoint,
            &callback_url,
            settings.clone(),
        ))),
        customs_rest::NAME => Ok(Arc::new(customs_rest::CustomsRest::new(
            client,
            endpoint,
            &callback_url,
        ))),
        mapped::NAME => Ok(Arc::new(
            mapped::Mapped::new(client, endpoint, &callback_url, settings)
                .map_err(|e| format!("unit {}: {e}", unit.code))?,
        )),
        dvcqg::NAME => Ok(Arc::new(dvcqg::Dvcqg::new(client, endpoint, settings))),
        tax_xml::NAME => Ok(Arc::new(tax_xml::TaxXml::new(
            client,
            endpoint,
            &callback_url,
        ))),
        edxml_adapter::NAME => Ok(Arc::new(edxml_adapter::EdxmlAdapter::new(
            client,
            endpoint,
            &callback_url,
            &unit.code,
            &unit.name,
            settings,
            store,
        )?)),
        other => Err(format!(
            "unit {}: unknown adapter {other:?} (this build has: {})",
            unit.code,
            ADAPTERS.join(", ")
        )),
    }
}
