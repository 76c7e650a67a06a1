//! Starting a `lienthong run` process: connect to the broker, declare the topology (a queue
//! with other arguments stops startup with a named error), open the store, then start the
//! chosen components (router, adapters, tracer, HTTP API) and stop them on request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lienthong_core::envelope::EnvelopeValidator;
use lienthong_core::registry::{Registry, Settings};
use lienthong_core::store::Store;
use lienthong_core::topology::Names;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::context::Ctx;

/// A part of the bus that `lienthong run --components` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Component {
    /// Validates and routes `<prefix>.router` to unit queues.
    Router,
    /// Delivers unit queues to agencies through their adapters.
    Adapters,
    /// Writes trace events and dead letters into the store.
    Tracer,
    /// The HTTP API (messages, callbacks, reads, health).
    Http,
}

impl Component {
    /// Every component.
    pub const ALL: [Component; 4] = [
        Component::Router,
        Component::Adapters,
        Component::Tracer,
        Component::Http,
    ];
}

/// A running process.
pub struct Running {
    /// Where the HTTP API listens, if started.
    pub http_addr: Option<SocketAddr>,
    shutdown: Arc<watch::Sender<bool>>,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    pending: Arc<std::sync::Mutex<Vec<&'static str>>>,
    ctx: Ctx,
}

pub use lienthong_core::amqp::redact;

/// Connect to the broker, retrying with backoff for up to about 30 s (the broker may still be
/// starting): [`lienthong_core::amqp::connect_any_patiently`] with the settings' URL and the
/// cluster's other nodes (`[bus] nodes`).
pub async fn connect(settings: &Settings, name: &str) -> anyhow::Result<lapin::Connection> {
    let tls = lienthong_core::amqp::tls_config(&settings.bus).map_err(anyhow::Error::msg)?;
    Ok(lienthong_core::amqp::connect_any_patiently(&settings.bus.urls(), name, &tls).await?)
}

/// One connection attempt (each node in turn) with the settings' URLs and TLS files.
async fn connect_once(settings: &Settings, name: &str) -> Result<lapin::Connection, lapin::Error> {
    match lienthong_core::amqp::tls_config(&settings.bus) {
        Ok(tls) => lienthong_core::amqp::connect_any(&settings.bus.urls(), name, &tls).await,
        Err(e) => Err(lapin::Error::from(lapin::ErrorKind::IOError(
            std::sync::Arc::new(std::io::Error::other(e)),
        ))),
    }
}

/// How the line starts that `lienthong run` logs once its HTTP API listens (the address
/// follows). Whoever starts `lienthong run` as a child (the demo, the bench, the tests) waits
/// for it: `lienthong_testkit::procs::HTTP_LISTENING` is the same text (a test checks).
pub const HTTP_LISTENING: &str = "HTTP API listening on";

pub use lienthong_core::topology::{TopologyFailure, declare as apply_topology};

/// Run `component` on a broker connection of its own, for as long as the process runs: if the
/// connection is lost (broker restart, forced close, missed heartbeats, a consumer cancelled
/// because its queue was deleted), reconnect with backoff, re-declare the topology and start
/// the component again. Returns on shutdown, or with an error only for a topology mismatch.
async fn supervise<F, Fut>(
    name: &'static str,
    base: Ctx,
    component: F,
) -> (&'static str, anyhow::Result<()>)
where
    F: Fn(Ctx) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let settings = base.settings.clone();
    let mut stop = base.shutdown.clone();
    let min = Duration::from_millis(200);
    let max = Duration::from_secs(10);
    let mut delay = min;
    let conn_name = format!("{}/{name}", settings.bus.prefix);
    // Every connection after the first is a reconnect (the series exists from the start, at 0).
    let mut reconnecting = false;
    metrics::counter!(lienthong_core::health::BROKER_RECONNECTS, "component" => name).increment(0);
    loop {
        if *stop.borrow() {
            return (name, Ok(()));
        }
        base.health.set_connected(name, false);
        let attempt = tokio::select! {
            c = connect_once(&settings, &conn_name) => c,
            _ = stop.changed() => return (name, Ok(())),
        };
        let outcome: anyhow::Result<()> = match attempt {
            Err(e) => Err(anyhow::Error::from(e).context("connecting")),
            Ok(conn) => match apply_topology(&settings, &conn).await {
                // Startup (`start`) stops on a mismatch; once running, a topology someone
                // changed under the bus is reported (`/readyz`) and tried again until fixed.
                Err(f) => {
                    let _ = conn.close(200, "topology not declared".into()).await;
                    base.health.channel_failed(name, "topology", &f.message);
                    Err(anyhow::Error::from(f))
                }
                Ok(()) => {
                    base.health.set_connected(name, true);
                    if reconnecting {
                        metrics::counter!(
                            lienthong_core::health::BROKER_RECONNECTS,
                            "component" => name
                        )
                        .increment(1);
                    }
                    reconnecting = true;
                    delay = min;
                    let blocked = lienthong_core::health::watch_blocked(&conn, name);
                    let ctx = Ctx {
                        conn: Arc::new(conn),
                        ..base.clone()
                    };
                    let r = component(ctx.clone()).await;
                    blocked.abort();
                    // A connection that is gone blocks nothing (no unblocked event comes).
                    metrics::gauge!(lienthong_core::health::BROKER_BLOCKED, "component" => name)
                        .set(0.0);
                    base.health.set_connected(name, false);
                    let _ = tokio::time::timeout(
                        crate::consume::SHUTDOWN_STEP,
                        ctx.conn.close(200, "component stopped".into()),
                    )
                    .await;
                    if *stop.borrow() {
                        return (name, r);
                    }
                    r.and_then(|()| Err(anyhow::anyhow!("the component stopped by itself")))
                }
            },
        };
        if let Err(e) = outcome {
            tracing::warn!(message = "broker connection lost or unavailable; reconnecting", component = name, error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {},
            _ = stop.changed() => return (name, Ok(())),
        }
        delay = (delay * 2).min(max);
    }
}

/// The process's topology keeper (a supervised task of every `lienthong run`, named
/// `topology` in `/readyz`): every `[topology] check_ms` it declares the whole topology again,
/// so an exchange, queue or binding deleted while nothing published to it comes back without
/// waiting for traffic to find it missing, and one re-declared with other arguments shows in
/// `/readyz` (503, naming it) until it is fixed. Declaring is idempotent. After a failed check
/// the next comes sooner (1 s, doubling up to `check_ms`), so that a fault another component
/// has already repaired (e.g. an exchange deleted between two of the keeper's declarations) does
/// not stay in `/readyz` for a whole period.
async fn keep_topology(ctx: Ctx) -> anyhow::Result<()> {
    use backon::BackoffBuilder;
    let mut stop = ctx.shutdown.clone();
    let every = Duration::from_millis(ctx.settings.topology.check_ms.max(1000));
    let soon = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(every)
            .without_max_times()
            .build()
    };
    let mut retries = soon();
    let mut failing = false;
    loop {
        let wait = if failing {
            retries.next().unwrap_or(every)
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait), if ctx.settings.topology.check_ms > 0 => {}
            _ = stop.changed() => return Ok(()),
        }
        if !ctx.conn.status().connected() {
            anyhow::bail!("the broker connection is lost");
        }
        match apply_topology(&ctx.settings, &ctx.conn).await {
            Ok(()) => {
                if failing {
                    tracing::info!(message = "the topology is declared again");
                }
                failing = false;
                retries = soon();
                ctx.health.channel_ok("topology", "declarations");
            }
            Err(f) => {
                if !failing {
                    tracing::warn!(message = "the broker's topology does not match; retrying", error = %f.message);
                }
                failing = true;
                ctx.health
                    .channel_failed("topology", "declarations", &f.message);
            }
        }
    }
}

/// The context of a process: `settings` checked into a registry, names, validator, calendar and
/// blob store, the store's group-commit writer, on the broker connection `conn`.
fn context(
    settings: Settings,
    store: Store,
    conn: lapin::Connection,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Ctx> {
    let validator = EnvelopeValidator::new(&settings.envelope).map_err(anyhow::Error::msg)?;
    let filing = lienthong_core::filing::FilingSchemas::load(&settings)?;
    let writer = lienthong_core::store::MessageWriter::start_with(
        settings.store.location(),
        lienthong_core::store::WriterOptions::of(&settings.store),
    )
    .with_context(|| format!("opening the store {}", settings.store.location()))?;
    Ok(Ctx {
        // Every write of this process goes through the writer, also those made through the
        // shared store handle.
        store: store.with_writer(writer.clone()),
        writer,
        registry: Arc::new(Registry::new(&settings)),
        names: Names::new(&settings.bus.prefix),
        validator: Arc::new(validator),
        filing: Arc::new(filing),
        conn: Arc::new(conn),
        shutdown,
        health: lienthong_core::health::Health::default(),
        blobs: Arc::new(lienthong_core::claimcheck::LocalBlobStore::new(
            std::path::Path::new(&settings.store.blob_dir),
        )),
        calendar: Arc::new(
            lienthong_core::calendar::WorkCalendar::new(&settings.calendar)
                .map_err(anyhow::Error::msg)?,
        ),
        settings: Arc::new(settings),
    })
}

/// The context of a one-shot command that acts as the bus (`lienthong retry`): the store at
/// `[store] path` (which must exist), a broker connection named `lienthong/<prefix>/<name>`.
pub async fn tool_context(settings: Settings, name: &str) -> anyhow::Result<Ctx> {
    settings.check()?;
    let path = settings.store.location();
    if !path.exists() {
        anyhow::bail!(
            "no store at {path} (is --config the bus's configuration? [store] path is relative to the working directory)"
        );
    }
    let store = Store::open(&path).with_context(|| format!("opening the store {path}"))?;
    let conn = connect(&settings, &format!("{}/{name}", settings.bus.prefix)).await?;
    let (_, rx) = watch::channel(false);
    context(settings, store, conn, rx)
}

/// Refuse to run with a key anyone could guess: empty, a placeholder of the shipped
/// configurations, or short ([`lienthong_core::secret::weakness`]). The error names each
/// setting, never the key.
fn refuse_weak_keys(settings: &Settings) -> anyhow::Result<()> {
    let weak = settings.weak_keys();
    if weak.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = weak
        .iter()
        .map(|(setting, why)| format!("  {setting}: {why}"))
        .collect();
    anyhow::bail!(
        "refusing to start with keys that are not secret:\n{}\nPut a fresh key from `lienthong keys new` in each (or `env:NAME` / `file:PATH` pointing at one; a `sha256:` hash from `keys new` keeps the key itself out of the file).",
        list.join("\n")
    )
}

/// Log and ignore SIGHUP until `stop` (a process without a TLS certificate to reload).
async fn ignore_hangup(mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = hup.recv() => {
                    tracing::info!(message = "SIGHUP: no TLS certificate to reload in this process");
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = stop.changed().await;
}

/// Refuse to serve the HTTP API in plain HTTP on an address that is not loopback, unless
/// `[http] insecure = true` (then warn, at every start). `listen` may name a host: every address
/// it resolves to must be loopback.
pub async fn check_http_exposure(settings: &Settings) -> anyhow::Result<()> {
    let http = &settings.http;
    if http.tls_cert.is_some() && http.tls_key.is_some() {
        return Ok(());
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(http.listen.as_str())
        .await
        .with_context(|| format!("[http] listen {}", http.listen))?
        .collect();
    let exposed: Vec<String> = addrs
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    if http.insecure {
        tracing::warn!(
            message = "the HTTP API serves plain HTTP on an address that is not loopback ([http] insecure = true): keys and dossiers cross the network unencrypted",
            listen = %http.listen
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve the HTTP API without TLS on {} ({}): set [http] tls_cert and tls_key, listen on a loopback address behind a TLS proxy, or set [http] insecure = true",
        http.listen,
        exposed.join(", ")
    )
}

/// Start `components` of the bus for `settings` (refused while a key is weak, the broker link
/// or the HTTP API would be unencrypted off this machine, or a test-only switch is set).
pub async fn start(settings: Settings, components: &[Component]) -> anyhow::Result<Running> {
    start_with_metrics(settings, components, None).await
}

/// [`start`], serving `/metrics` without a key on `metrics_listen` (`lienthong run
/// --metrics-listen`): how a process without the HTTP component is scraped. Without it, a
/// process with the HTTP component serves `[http] metrics_listen` when that is set (one
/// configuration shared by several processes names one address: only the HTTP process binds
/// it).
pub async fn start_with_metrics(
    settings: Settings,
    components: &[Component],
    metrics_listen: Option<String>,
) -> anyhow::Result<Running> {
    settings.check()?;
    crate::testing::refuse_in_production()?;
    refuse_weak_keys(&settings)?;
    if let Some(why) = settings.bus.transport_problem() {
        anyhow::bail!("refusing to start: {why}");
    }
    if settings.bus.insecure {
        tracing::warn!(
            message = "[bus] insecure = true: a plain amqp:// broker off this machine is accepted; messages cross the network unencrypted",
            broker = %lienthong_core::amqp::redact(&settings.bus.amqp_url)
        );
    }
    if settings.bus.user().as_deref() == Some("guest") {
        tracing::warn!(
            message = "the bus connects as RabbitMQ's default user guest (every unit's software could use it too on this machine): give the bus its own broker user ([bus] amqp_url with its user, amqp_password from env: or file:; lienthong keys new --broker; docs/deploy.md, Broker users)",
            broker = %lienthong_core::amqp::redact(&settings.bus.amqp_url)
        );
    }
    if components.contains(&Component::Http) {
        check_http_exposure(&settings).await?;
    }
    let _ = crate::metrics::metrics_handle();
    let name = components
        .iter()
        .map(|c| format!("{c:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join("+");
    let conn = connect(&settings, &name).await?;
    apply_topology(&settings, &conn).await?;
    let store = Store::open(settings.store.location())
        .with_context(|| format!("opening the store {}", settings.store.location()))?;
    // Fail fast on adapter configuration (unknown adapter names, bad endpoints).
    for u in settings
        .units
        .iter()
        .filter(|u| matches!(u.reach, lienthong_core::registry::Reach::Adapter { .. }))
    {
        lienthong_adapters::build_with(u, "http://127.0.0.1", Some(store.clone()))?;
    }
    let (tx, rx) = watch::channel(false);
    let ctx = context(settings, store, conn, rx)?;
    let mut tasks = JoinSet::new();
    let mut http_addr = None;
    let mut listener = if components.contains(&Component::Http) {
        let l = tokio::net::TcpListener::bind(&ctx.settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", ctx.settings.http.listen))?;
        let addr = l.local_addr()?;
        // The demo and the bench wait for this line: a port they picked may have been taken
        // by another process meanwhile, whose server would answer in this one's stead.
        tracing::info!("{HTTP_LISTENING} {addr}");
        http_addr = Some(addr);
        Some(l)
    } else {
        None
    };
    // TLS: the certificate is read now (a bad file stops startup), then on SIGHUP or change.
    let tls = match (&ctx.settings.http.tls_cert, &ctx.settings.http.tls_key) {
        (Some(cert), Some(key)) if components.contains(&Component::Http) => {
            Some(crate::http_api::serve::CertReloader::load(
                std::path::Path::new(cert),
                std::path::Path::new(key),
            )?)
        }
        _ => None,
    };
    let metrics_addr = metrics_listen.or_else(|| {
        components
            .contains(&Component::Http)
            .then(|| ctx.settings.http.metrics_listen.clone())
            .flatten()
    });
    let mut metrics_listener = match &metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve /metrics on {addr}"))?,
        ),
        _ => None,
    };
    let callback_base = ctx.settings.http.public_url.clone().unwrap_or_else(|| {
        format!(
            "{}://{}",
            if tls.is_some() { "https" } else { "http" },
            http_addr
                .map(|a| a.to_string())
                .unwrap_or_else(|| ctx.settings.http.listen.clone())
        )
    });
    // The adapters, built once: the delivery component sends through them and the HTTP API's
    // callback route reads the agencies' callbacks with the same instances.
    let adapters =
        lienthong_adapters::build_all(&ctx.registry, &callback_base, Some(ctx.store.clone()))?;
    tasks.spawn(supervise("topology", ctx.clone(), keep_topology));
    if tls.is_none() {
        // SIGHUP reloads the TLS certificate (`CertReloader::watch`); without one it must not
        // end the process (its default action), e.g. under `systemctl reload`.
        tokio::spawn(ignore_hangup(ctx.shutdown.clone()));
    }
    for c in components {
        let ctx = ctx.clone();
        match c {
            Component::Router => {
                tasks.spawn(supervise("router", ctx, crate::router::run));
            }
            Component::Tracer => {
                tasks.spawn(supervise("tracer", ctx, crate::tracer::run));
            }
            Component::Adapters => {
                let adapters = adapters.clone();
                tasks.spawn(supervise("adapters", ctx, move |c| {
                    crate::delivery::run(c, adapters.clone())
                }));
            }
            Component::Http => {
                let Some(listener) = listener.take() else {
                    continue;
                };
                let (app, broker) = crate::http_api::app(ctx.clone(), adapters.clone())?;
                tasks.spawn(supervise("http", ctx.clone(), move |c| {
                    crate::http_api::hold_broker(c, broker.clone())
                }));
                let opts = crate::http_api::serve::ServeOptions {
                    header_read_timeout: Duration::from_millis(
                        ctx.settings.http.header_read_timeout_ms,
                    ),
                    tls: match &tls {
                        Some(t) => {
                            tokio::spawn(t.clone().watch(ctx.shutdown.clone()));
                            Some(t.acceptor()?)
                        }
                        None => None,
                    },
                };
                let stop = ctx.shutdown.clone();
                tasks.spawn(async move {
                    let r = crate::http_api::serve::serve(listener, app, opts, stop).await;
                    ("http-server", r)
                });
            }
        }
    }
    // `/metrics` on a listener of its own, without a key: every process, with or without the
    // HTTP component (whose API also serves it, behind the operator key).
    if let Some(ml) = metrics_listener.take() {
        let opts = crate::http_api::serve::ServeOptions {
            header_read_timeout: Duration::from_millis(ctx.settings.http.header_read_timeout_ms),
            tls: None,
        };
        tokio::spawn(crate::http_api::serve::serve(
            ml,
            crate::http_api::metrics_app(),
            opts,
            ctx.shutdown.clone(),
        ));
    } else if !components.contains(&Component::Http) {
        tracing::warn!(
            message = "this process's metrics are not served: it has no HTTP component and no [http] metrics_listen (lienthong run --metrics-listen ADDR)"
        );
    }
    // The start-up connection only checked the topology; each component has its own.
    let _ = ctx.conn.close(200, "startup checks done".into()).await;
    // Return once every component holds its connection (or after 30 s: they keep trying).
    let expected = components.len() + 1; // and the topology keeper
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (all, m) = ctx.health.snapshot();
        if all && m.len() >= expected {
            break;
        }
        if tokio::time::Instant::now() > until {
            tracing::warn!(message = "not every component is connected yet; they keep retrying", state = ?m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(message = "lienthong running", components = name, http = ?http_addr, prefix = ctx.names.prefix());
    let pending = Arc::new(std::sync::Mutex::new(
        components
            .iter()
            .map(|c| match c {
                Component::Router => "router",
                Component::Adapters => "adapters",
                Component::Tracer => "tracer",
                Component::Http => "http",
            })
            .chain(
                components
                    .contains(&Component::Http)
                    .then_some("http-server"),
            )
            .chain(std::iter::once("topology"))
            .collect(),
    ));
    Ok(Running {
        pending,
        http_addr,
        shutdown: Arc::new(tx),
        tasks,
        ctx,
    })
}

impl Running {
    /// Ask every component to stop (stop consuming, finish in-flight work).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// A handle that asks the components to stop (for a signal handler).
    pub fn shutdown_handle(&self) -> Arc<watch::Sender<bool>> {
        self.shutdown.clone()
    }

    /// The grace period for in-flight work after a stop request.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.ctx.settings.bus.shutdown_grace_ms)
    }

    /// Wait for the components to end. If one fails, the others are stopped and its error is returned.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        while let Some(done) = self.tasks.join_next().await {
            if let Ok((name, _)) = &done
                && let Ok(mut p) = self.pending.lock()
            {
                p.retain(|n| n != name);
            }
            let (component, result) = match done {
                Ok(x) => x,
                Err(e) => {
                    self.shutdown();
                    first_err.get_or_insert(anyhow::anyhow!("a component panicked: {e}"));
                    continue;
                }
            };
            if let Err(e) = result {
                tracing::error!(message = "component stopped with an error", component, error = %e);
                self.shutdown();
                first_err.get_or_insert(e.context(format!("component {component}")));
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stop and wait, giving up after the grace period plus a margin.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown();
        let grace =
            Duration::from_millis(self.ctx.settings.bus.shutdown_grace_ms) + Duration::from_secs(5);
        let pending = self.pending.clone();
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "components did not stop within the grace period: {:?}",
                pending.lock().map(|p| p.clone()).unwrap_or_default()
            )),
        }
    }
}
