//! The agency adapters, one file each, and their registration: the list below is the only
//! place that names them. Each file `<name>.rs` has a `pub const NAME` (the registry's
//! `adapter = "…"`) and a `pub fn build(Setup) -> Result<Arc<dyn Adapter>, BuildError>`.

use std::sync::Arc;

use crate::adapter::{Adapter, Setup};
use crate::error::BuildError;

/// Declares each adapter module and registers it: [`NAMES`] and [`build`] follow this list.
macro_rules! agencies {
    ($($(#[$doc:meta])* $module:ident,)*) => {
        $($(#[$doc])* pub mod $module;)*

        /// Registry names of the adapters this build has, in registration order.
        pub const NAMES: &[&str] = &[$($module::NAME),*];

        /// The adapter registered as `name`, built for `setup`; `None` when no adapter has
        /// that name.
        pub fn build(name: &str, setup: Setup<'_>) -> Option<Result<Arc<dyn Adapter>, BuildError>> {
            $(if name == $module::NAME {
                return Some($module::build(setup));
            })*
            None
        }
    };
}

agencies! {
    /// Customs (REST/JSON, synthetic procedure).
    customs_rest,
    /// A config-only agency (JSON or flat XML by field mapping).
    mapped,
    /// The national public service portal's progress sync.
    dvcqg,
    /// Police residence registration (REST/JSON).
    police_rest,
    /// Social Insurance (XML over HTTP).
    bhxh_xml,
    /// Departments' document systems (edXML, push or pull).
    edxml,
    /// Tax, land financial obligations (XML over HTTP).
    tax_xml,
    /// A unit's own webhook (every message pushed, signed with HMAC-SHA256).
    webhook,
}
