//! What every component shares: settings, registry, names, the envelope validator, the store,
//! the broker connection, and the shutdown signal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    /// The procedures' data schemas, compiled once: what a filing must carry for its route.
    pub filing: Arc<lienthong_core::filing::FilingSchemas>,
    /// The SQLite store.
    pub store: Store,
    /// The process's group commit into the store (the router's accepted envelopes, and every
    /// component's trace events when `[store] trace_direct`).
    pub writer: lienthong_core::store::MessageWriter,
    /// The broker connection.
    pub conn: Arc<Connection>,
    /// Flips to true on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Which components hold a working broker connection (for `/readyz`).
    pub health: Health,
    /// The claim-check blob store.
    pub blobs: Arc<dyn lienthong_core::claimcheck::BlobStore>,
    /// The working-day calendar (`[calendar]`).
    pub calendar: Arc<lienthong_core::calendar::WorkCalendar>,
}

/// Broker connection state of each supervised component of this process.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Health {
    /// Record whether `component` is connected.
    pub fn set(&self, component: &'static str, connected: bool) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(component, connected);
        }
    }

    /// Every component's state, and whether all are connected.
    pub fn snapshot(&self) -> (bool, BTreeMap<&'static str, bool>) {
        let m = self.inner.lock().map(|m| m.clone()).unwrap_or_default();
        (m.values().all(|c| *c), m)
    }
}

impl Ctx {
    /// Path of the store file.
    pub fn store_path(&self) -> PathBuf {
        PathBuf::from(&self.settings.store.path)
    }

    /// A component's tracer: straight into the store through the process's group commit
    /// (`[store] trace_direct`, the default), else publishing to `<prefix>.trace` on a channel of
    /// its own with publisher confirms. Errors: the channel could not be opened.
    pub async fn tracer(&self) -> Result<lienthong_core::trace::Tracer, lapin::Error> {
        use lienthong_core::trace::Tracer;
        if self.settings.store.trace_direct {
            return Ok(Tracer::to_store(self.writer.clone()));
        }
        let publisher =
            lienthong_core::amqp::Publisher::new(&self.conn, self.settings.bus.confirm_timeout_ms)
                .await?;
        Ok(Tracer::new(publisher, self.names.trace_exchange()))
    }
}
