//! What every component shares: settings, registry, names, the envelope validator, the store,
//! the broker connection, and the shutdown signal.

use std::path::PathBuf;
use std::sync::Arc;

use lapin::Connection;
use lienthong_core::envelope::EnvelopeValidator;
use lienthong_core::registry::{Registry, Settings};
use lienthong_core::store::Store;
use lienthong_core::topology::Names;
use tokio::sync::watch;

/// Shared state of one `lienthong run` process.
#[derive(Clone)]
pub struct Ctx {
    /// Settings as loaded.
    pub settings: Arc<Settings>,
    /// Units and procedures.
    pub registry: Arc<Registry>,
    /// Topology names.
    pub names: Names,
    /// Ingress checks.
    pub validator: Arc<EnvelopeValidator>,
    /// The SQLite store.
    pub store: Store,
    /// The broker connection.
    pub conn: Arc<Connection>,
    /// Flips to true on shutdown.
    pub shutdown: watch::Receiver<bool>,
}

impl Ctx {
    /// Path of the store file.
    pub fn store_path(&self) -> PathBuf {
        PathBuf::from(&self.settings.store.path)
    }
}
