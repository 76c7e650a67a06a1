//! What every component shares: settings, registry, names, the envelope validator, the store,
//! the broker connection, and the shutdown signal.

use std::sync::Arc;

use lapin::Connection;
use lienthong_core::amqp::{Publisher, Supervision};
use lienthong_core::envelope::EnvelopeValidator;
pub use lienthong_core::health::Health;
use lienthong_core::registry::{Registry, Settings};
use lienthong_core::store::Store;
use lienthong_core::topology::Names;
use tokio::sync::watch;

/// Where a component that does not own a broker connection finds one: the HTTP component's
/// current connection, or none while it reconnects (the console's units page asks the broker
/// about queues on it).
pub type ConnectionSource = Arc<dyn Fn() -> Option<Arc<Connection>> + Send + Sync>;

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
    /// The SQLite store: reads on its own connection (from async code through
    /// [`Store::read`]); its writes go through `writer`.
    pub store: Store,
    /// The process's group commit into the store: every write of every component (the router's
    /// accepted envelopes, the process manager's state and outbox, the delivery log, callbacks,
    /// the edXML outbox, the retention sweeps, and the trace events when `[store]
    /// trace_direct`).
    pub writer: lienthong_core::store::MessageWriter,
    /// The broker connection.
    pub conn: Arc<Connection>,
    /// Flips to true on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Which components hold a working broker connection, and which of their channels cannot
    /// publish (for `/readyz`).
    pub health: Health,
    /// The claim-check blob store.
    pub blobs: Arc<dyn lienthong_core::claimcheck::BlobStore>,
    /// The working-day calendar (`[calendar]`).
    pub calendar: Arc<lienthong_core::calendar::WorkCalendar>,
}

impl Ctx {
    /// Where the store lives (`[store] url`, or the SQLite file `path`).
    pub fn store_location(&self) -> lienthong_core::store::StoreLocation {
        self.settings.store.location()
    }

    /// A publishing channel of `component` on this context's connection, named `channel` in
    /// `/readyz` and in `lienthong_channel_recoveries_total`: reopened when the broker closes it,
    /// re-declaring the topology first ([`Publisher`]). Errors: the channel could not be opened.
    pub async fn publisher(
        &self,
        component: &str,
        channel: &str,
    ) -> Result<Publisher, lapin::Error> {
        let settings = self.settings.clone();
        let redeclare: lienthong_core::amqp::Redeclare = Arc::new(move |conn| {
            let settings = settings.clone();
            Box::pin(async move {
                lienthong_core::topology::declare(&settings, &conn)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        Publisher::supervised(
            &self.conn,
            self.settings.bus.confirm_timeout_ms,
            Supervision {
                health: self.health.clone(),
                component: component.to_string(),
                channel: channel.to_string(),
                redeclare: Some(redeclare),
                shutdown: Some(self.shutdown.clone()),
            },
        )
        .await
    }

    /// A component's tracer: straight into the store through the process's group commit
    /// (`[store] trace_direct`, the default), else publishing to `<prefix>.trace` on a channel of
    /// its own ([`Ctx::publisher`] of `component`, named `channel`) with publisher confirms.
    /// Errors: the channel could not be opened.
    pub async fn tracer(
        &self,
        component: &str,
        channel: &str,
    ) -> Result<lienthong_core::trace::Tracer, lapin::Error> {
        use lienthong_core::trace::Tracer;
        if self.settings.store.trace_direct {
            return Ok(Tracer::to_store(self.writer.clone()));
        }
        let publisher = self.publisher(component, channel).await?;
        Ok(Tracer::new(
            publisher,
            self.names.trace_exchange(),
            lienthong_core::trace::broker_user(&self.settings.bus.amqp_url),
        ))
    }
}
