//! `lienthong bench`: how fast lienthong moves dossiers, measured against what the broker itself
//! does on the same machine in the same run.
//!
//! Modes, alternated round by round with the same producer, sink, envelopes, body size,
//! persistence, publisher confirms, manual acks, quorum queues and prefetch:
//!
//! - **direct**: producer → one queue → sink (the broker's one hop);
//! - **raw pipe**: producer → queue A → `lienthong bench-pipe` (a child process: consume,
//!   republish with a confirm, ack after the confirm, pipelined) → queue B → sink: the ceiling
//!   of any router written on lapin;
//! - **shovel**: the same two queues linked by RabbitMQ's shovel plugin (`on-confirm`);
//! - **lienthong**: `<prefix>.ingress` → `lienthong run --components router,tracer,http` (a
//!   child process: schema validation, registry and route checks, message store, trace; its
//!   HTTP API serves the router's stage times on `/metrics`) → the receiver unit's queue →
//!   sink.
//!
//! Then, apart: the **HTTP adapter** end to end (mock agency + `lienthong run`: ingress → Police
//! adapter → agency → callback → result on the centre's queue), and **paced** runs of direct,
//! raw pipe and lienthong below saturation (the raw pipe's is the broker's own two-hop latency
//! at that rate, the floor of lienthong's). On request, in their own invocations: the **soak**
//! (`--soak N`, the router's memory sampled every second) and the **backlog drain**
//! (`--backlog N`, an agency's queue emptied once its adapter comes back).
//!
//! Everything the benchmark declares on the broker is named `lienthong-bench-<run id>…` and is
//! deleted at the end, also when a round fails or the run is interrupted; a shovel it created
//! is cleared, and the shovel plugin is disabled again if the benchmark enabled it. The report
//! goes to `BENCHMARKS.md` (see [`report`]).

mod broker;
mod pipe;
mod procfs;
mod report;
mod traffic;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lapin::Connection;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lienthong_core::envelope::Envelope;
use lienthong_core::registry::{Reach, Settings};
use lienthong_core::topology::{Names, Topology};

pub use pipe::PipeArgs;
use report::{Backlog, Header, ModeRuns, ProcUse, Results, Round, Soak};
use traffic::{Book, Gen, KeyBy, Plan};

use crate::demo::{HTTP_LISTENING, MOCK_LISTENING, free_port, wait_http, wait_listening};

/// Options of `lienthong bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Rounds of the alternation direct, raw pipe, shovel, lienthong (at least 3, except with
    /// --smoke).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Messages per round and mode.
    #[arg(long, default_value_t = 50_000)]
    pub messages: u64,
    /// Body size of every message, bytes.
    #[arg(long, default_value_t = 5120)]
    pub body_bytes: usize,
    /// Prefetch of every consumer in the path (sink, raw pipe, shovel, lienthong's router).
    #[arg(long, default_value_t = 64)]
    pub prefetch: u16,
    /// Publisher confirms the producer keeps outstanding.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Most messages sent and not yet at the sink (the producer waits beyond it), every mode.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: u64,
    /// Rate of the paced runs, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub paced_rate: f64,
    /// Length of each paced run, seconds.
    #[arg(long, default_value_t = 10)]
    pub paced_seconds: u64,
    /// Dossiers of the HTTP-adapter run (default: --messages ÷ 5).
    #[arg(long)]
    pub http_messages: Option<u64>,
    /// Instead of the comparison: N messages through the router, its memory sampled every
    /// second (e.g. 1000000). Updates only the soak section of the report.
    #[arg(long)]
    pub soak: Option<u64>,
    /// Instead of the comparison: N dossiers piled up in Police's queue while the adapters are
    /// down, then drained (e.g. 200000). Updates only the backlog section of the report.
    #[arg(long)]
    pub backlog: Option<u64>,
    /// A tiny run of every mode for CI (2 rounds × 300 messages, paced 2 s); the report goes
    /// to a temporary file unless --out is given. Exit 0 when every mode moved every message.
    #[arg(long)]
    pub smoke: bool,
    /// Where the report goes (default BENCHMARKS.md; with --smoke a temporary file). When some
    /// mode fails, the report goes beside it instead (BENCHMARKS.failed.md) and it keeps the
    /// last good run's tables.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sample dossiers (one envelope per line): the benchmark's envelopes are built from a
    /// birth dossier of this file.
    #[arg(long, default_value = "schemas/samples/dossiers.jsonl")]
    pub sample: PathBuf,
    /// A round fails when nothing reaches the sink for this long, seconds.
    #[arg(long, default_value_t = 60)]
    pub stall_s: u64,
    /// Keep the working directory (configurations, logs, stores) after a successful run.
    #[arg(long)]
    pub keep_dir: bool,
    /// Where the lienthong children keep their SQLite stores, one subdirectory per round
    /// (default: the round's working directory, under the system's temporary directory). The
    /// store's writes share the disk with the broker's unless this is on another one; the
    /// report says which.
    #[arg(long)]
    pub store_dir: Option<PathBuf>,
    /// RabbitMQ's data directory (the soak and the backlog check its free space first).
    #[arg(long, default_value = "/var/lib/rabbitmq")]
    pub broker_data_dir: PathBuf,
    /// Only these parts of the comparison, comma-separated: direct, pipe, shovel, lienthong,
    /// http, paced (default: all). A partial run needs --out: BENCHMARKS.md keeps whole tables.
    #[arg(long, value_delimiter = ',', value_parser = ["direct", "pipe", "shovel", "lienthong", "http", "paced"])]
    pub modes: Vec<String>,
}

impl BenchArgs {
    /// Whether the comparison includes `part` (`--modes`).
    fn wants(&self, part: &str) -> bool {
        self.modes.is_empty() || self.modes.iter().any(|m| m == part)
    }
}

/// Run `lienthong bench-pipe` (the raw pipe child).
pub async fn pipe(args: PipeArgs) -> anyhow::Result<ExitCode> {
    pipe::run(args).await
}

/// The centre that files the dossiers (Sơn Hà's PAC).
const CENTRE: &str = "000.20.59.H48";
/// The receiver of the lienthong mode: Sơn Hà's civil-status office, read over AMQP.
const CIVIL: &str = "000.10.59.H48";
/// The receiver of the HTTP-adapter mode and the backlog: Police, police-rest adapter.
const POLICE: &str = "CA.H48";
/// The units the bus keeps (as the tests do): fewer quorum queues per round.
const KEEP_UNITS: [&str; 10] = [
    "HQ.H48",
    CENTRE,
    CIVIL,
    "000.20.61.H48",
    POLICE,
    "BHXH.H48",
    "CT.H48",
    "000.10.12.H48",
    "000.00.15.H48",
    "000.00.07.H48",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Pipe,
    Shovel,
    Lienthong,
    Http,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Pipe => "raw pipe",
            Mode::Shovel => "shovel",
            Mode::Lienthong => "lienthong",
            Mode::Http => "http adapter",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Mode::Direct => "producer → quorum queue → sink (the broker's one hop)",
            Mode::Pipe => {
                "producer → queue A → `lienthong bench-pipe` child (consume, republish with a confirm, ack after the confirm, pipelined) → queue B → sink"
            }
            Mode::Shovel => {
                "producer → queue A → RabbitMQ dynamic shovel (ack-mode on-confirm, src-prefetch-count = prefetch) → queue B → sink"
            }
            Mode::Lienthong => {
                "producer → `<p>.ingress` → `<p>.router` → `lienthong run --components router,tracer,http` child (schema, registry and route checks, message store, trace on; the HTTP API idle but for `/metrics`) → `<p>.unit.000.10.59.H48` → sink"
            }
            Mode::Http => {
                "dossier.forward to Police (`CA.H48`): `<p>.ingress` → router → `<p>.unit.CA.H48` → police-rest adapter → `lienthong mock-agency` child (latency 0, no 503s, callback without delay) → callback to the HTTP API → dossier.result → router → `<p>.unit.000.20.59.H48` (the centre) → sink; both `lienthong run` (all components) and the mock are children"
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Child processes

/// A child process (`lienthong run`, `lienthong mock-agency`, `lienthong bench-pipe`) with its
/// log file; stopped with SIGTERM (then killed) when dropped.
struct Child {
    child: Option<std::process::Child>,
    name: &'static str,
    pid: u32,
    log: PathBuf,
}

impl Child {
    fn spawn(
        exe: &Path,
        config: Option<&Path>,
        args: &[&str],
        log: &Path,
        name: &'static str,
    ) -> anyhow::Result<Child> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = std::process::Command::new(exe);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .args(args)
            .env("RUST_LOG", "info,lapin=warn")
            .env_remove("LIENTHONG_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Child {
            pid: child.id(),
            child: Some(child),
            name,
            log: log.to_path_buf(),
        })
    }

    /// Still running?
    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The end of its log, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn term(&self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// SIGTERM, wait up to 15 s, then SIGKILL.
    async fn stop(mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if matches!(c.try_wait(), Ok(None)) {
            self.term();
            let until = Instant::now() + Duration::from_secs(15);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if matches!(c.try_wait(), Ok(None)) {
            eprintln!("({} did not stop on SIGTERM; killed)", self.name);
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if matches!(c.try_wait(), Ok(None)) {
            self.term();
            for _ in 0..100 {
                if !matches!(c.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

// ------------------------------------------------------------------------------------------
// One benchmark at a time

/// `<temp>/lienthong-bench.lock`, holding the pid of the running benchmark; removed on drop.
struct RunLock(PathBuf);

impl RunLock {
    fn take() -> anyhow::Result<RunLock> {
        let path = std::env::temp_dir().join("lienthong-bench.lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    write!(f, "{}", std::process::id())?;
                    return Ok(RunLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    let alive = holder.is_some_and(|pid| {
                        procfs::comm(pid).is_some_and(|c| c.starts_with("lienthong"))
                    });
                    if alive {
                        anyhow::bail!(
                            "another `lienthong bench` (pid {}) is running on this machine; wait for it (two runs would skew each other's figures), or remove {} if that process is not a benchmark",
                            holder.unwrap_or_default(),
                            path.display()
                        );
                    }
                    // A stale lock (its process is gone): take it over.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    return Err(
                        anyhow::Error::from(e).context(format!("creating {}", path.display()))
                    );
                }
            }
        }
        anyhow::bail!("cannot take {}", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ------------------------------------------------------------------------------------------
// Broker clean-up

/// Everything the benchmark created on the broker and has not removed yet. The normal path
/// removes each thing after its round; `finish` and, failing that, `Drop` remove the rest.
struct Cleanup {
    url: String,
    queues: Mutex<Vec<String>>,
    topologies: Mutex<Vec<Settings>>,
    shovels: Mutex<Vec<String>>,
    /// The plugin was enabled by us; and whether the enabled-plugins file existed before.
    plugin: Mutex<Option<(PathBuf, bool)>>,
}

/// Disable the shovel plugin again; remove the enabled-plugins file if we created it and it
/// lists nothing.
fn disable_plugin(file: &Path, existed: bool) -> Result<(), String> {
    broker::cli_blocking("rabbitmq-plugins", &["disable", broker::SHOVEL])?;
    if !existed
        && std::fs::read_to_string(file)
            .is_ok_and(|t| t.chars().filter(|c| !c.is_whitespace()).collect::<String>() == "[].")
    {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}

fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    m.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

fn forget(m: &Mutex<Vec<String>>, name: &str) {
    if let Ok(mut v) = m.lock() {
        v.retain(|n| n != name);
    }
}

impl Cleanup {
    /// Remove what is left (normal path).
    async fn finish(&self, conn: Option<&Connection>) -> Vec<String> {
        let mut problems = Vec::new();
        for s in take(&self.shovels) {
            if let Err(e) = broker::cli("rabbitmqctl", &["clear_parameter", "shovel", &s]).await {
                problems.push(e);
            }
        }
        if let Some(conn) = conn {
            for q in take(&self.queues) {
                if let Err(e) = delete_queue(conn, &q).await {
                    problems.push(format!("deleting queue {q}: {e}"));
                }
            }
            for t in take(&self.topologies) {
                if let Err(e) = Topology::plan(&t).delete(conn).await {
                    problems.push(format!("deleting prefix {}: {e}", t.bus.prefix));
                }
            }
        }
        let plugin = self.plugin.lock().ok().and_then(|mut p| p.take());
        if let Some((file, existed)) = plugin {
            eprintln!("disabling {} again", broker::SHOVEL);
            match tokio::task::spawn_blocking(move || disable_plugin(&file, existed)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(e),
                Err(e) => problems.push(e.to_string()),
            }
        }
        problems
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in take(&self.shovels) {
            let _ = broker::cli_blocking("rabbitmqctl", &["clear_parameter", "shovel", &s]);
        }
        let queues = take(&self.queues);
        let topologies = take(&self.topologies);
        if !queues.is_empty() || !topologies.is_empty() {
            let url = self.url.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    let Ok(conn) = lienthong_core::amqp::connect(&url, "bench-cleanup").await
                    else {
                        eprintln!(
                            "cannot reach the broker to delete the benchmark's queues: {queues:?}"
                        );
                        return;
                    };
                    for q in &queues {
                        let _ = delete_queue(&conn, q).await;
                    }
                    for t in &topologies {
                        let _ = Topology::plan(t).delete(&conn).await;
                    }
                    let _ = conn.close(200, "bench cleanup".into()).await;
                });
            })
            .join();
        }
        if let Some((file, existed)) = self.plugin.lock().ok().and_then(|mut p| p.take()) {
            let _ = disable_plugin(&file, existed);
        }
    }
}

async fn delete_queue(conn: &Connection, name: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.queue_delete(ShortString::from(name), QueueDeleteOptions::default())
        .await?;
    let _ = ch.close(200, "deleted".into()).await;
    Ok(())
}

/// Messages ready and consumers of a queue (passive declare on its own channel); None when the
/// queue does not exist.
async fn queue_counts(conn: &Connection, name: &str) -> Option<(u32, u32)> {
    let ch = conn.create_channel().await.ok()?;
    let q = ch
        .queue_declare(
            ShortString::from(name),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()?;
    let _ = ch.close(200, "counted".into()).await;
    Some((q.message_count(), q.consumer_count()))
}

async fn purge(conn: &Connection, name: &str) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.queue_purge(ShortString::from(name), QueuePurgeOptions::default())
        .await
        .with_context(|| format!("purging {name}"))?;
    let _ = ch.close(200, "purged".into()).await;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// One round

/// What a mode set up for a round, and how to take it down.
struct Setup {
    mode: Mode,
    exchange: String,
    routing_key: String,
    sink_queue: String,
    key_by: KeyBy,
    receiver: &'static str,
    children: Vec<Child>,
    queues: Vec<String>,
    shovel: Option<String>,
    topology: Option<Settings>,
    dir: Option<PathBuf>,
    trace_queue: Option<String>,
    /// The router's child, for the soak's memory samples.
    router_pid: Option<u32>,
    /// lienthong: the child's `/metrics`, read at the end of a round for the router's stages.
    metrics_url: Option<String>,
}

impl Setup {
    fn new(mode: Mode) -> Setup {
        Setup {
            mode,
            exchange: String::new(),
            routing_key: String::new(),
            sink_queue: String::new(),
            key_by: KeyBy::MessageId,
            receiver: CIVIL,
            children: Vec::new(),
            queues: Vec::new(),
            shovel: None,
            topology: None,
            dir: None,
            trace_queue: None,
            router_pid: None,
            metrics_url: None,
        }
    }
}

/// Options of one round.
/// The warm-up of a paced run (same rate, not counted).
const PACED_WARM_UP: Duration = Duration::from_secs(3);

#[derive(Clone, Copy)]
struct RoundOpts {
    count: u64,
    rate: Option<f64>,
    sample_rss: bool,
}

struct Bench {
    args: BenchArgs,
    base: Settings,
    url: String,
    prefix: String,
    dir: PathBuf,
    exe: PathBuf,
    ctl: Connection,
    pconn: Connection,
    sconn: Connection,
    broker_pid: Option<u32>,
    cleanup: Arc<Cleanup>,
    seq: Arc<AtomicU64>,
    sample: Envelope,
    tags: AtomicU64,
    failed_dirs: AtomicBool,
}

impl Bench {
    fn tag(&self, what: &str) -> String {
        format!(
            "{}-{}{}",
            self.prefix,
            what,
            self.tags.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Declare a quorum queue with lienthong's work-queue arguments (and purge it).
    async fn declare_queue(&self, name: &str) -> anyhow::Result<()> {
        if let Ok(mut q) = self.cleanup.queues.lock() {
            q.push(name.to_string());
        }
        let mut args = FieldTable::default();
        for (k, v) in [
            (
                "x-queue-type",
                AMQPValue::LongString(LongString::from("quorum")),
            ),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString(LongString::from(format!("{name}.dlx"))),
            ),
            (
                "x-dead-letter-strategy",
                AMQPValue::LongString(LongString::from("at-least-once")),
            ),
            (
                "x-overflow",
                AMQPValue::LongString(LongString::from("reject-publish")),
            ),
            (
                "x-delivery-limit",
                AMQPValue::LongLongInt(i64::from(self.base.topology.delivery_limit)),
            ),
        ] {
            args.insert(k.into(), v);
        }
        let ch = self.ctl.create_channel().await?;
        ch.queue_declare(
            ShortString::from(name),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .with_context(|| format!("declaring {name}"))?;
        let _ = ch.close(200, "declared".into()).await;
        purge(&self.ctl, name).await
    }

    /// Wait until each queue has at least its number of consumers (the children are up).
    async fn wait_consumers(
        &self,
        queues: &[(&str, u32)],
        children: &mut [Child],
        secs: u64,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            for c in children.iter_mut() {
                if !c.alive() {
                    anyhow::bail!(
                        "{} exited during start-up; its log ({}) ends:\n{}",
                        c.name,
                        c.log.display(),
                        c.log_tail()
                    );
                }
            }
            let mut all = true;
            for (q, n) in queues {
                if queue_counts(&self.ctl, q).await.is_none_or(|(_, c)| c < *n) {
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() > until {
                anyhow::bail!(
                    "no consumer on {:?} after {secs} s",
                    queues.iter().map(|q| q.0).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The directory of a round's store: `--store-dir`/<the round's directory name>, or the
    /// round's directory itself.
    fn store_dir(&self, dir: &Path) -> PathBuf {
        match (&self.args.store_dir, dir.file_name()) {
            (Some(root), Some(name)) => root.join(name),
            _ => dir.to_path_buf(),
        }
    }

    /// The bus's settings for a round: the registry trimmed as the tests trim it, the
    /// receiver read over AMQP, stores in `dir`, the mock agency fast and reliable.
    fn bus_settings(
        &self,
        prefix: &str,
        dir: &Path,
        mock_port: Option<u16>,
    ) -> anyhow::Result<Settings> {
        let mut s = self.base.clone();
        let configured_mock = format!("http://{}", s.mock.listen);
        s.units.retain(|u| KEEP_UNITS.contains(&u.code.as_str()));
        for u in &mut s.units {
            u.parent = None;
            if u.code == CIVIL {
                u.reach = Reach::Amqp;
            }
            if let (Some(port), Reach::Adapter { endpoint, .. }) = (mock_port, &mut u.reach)
                && let Some(rest) = endpoint.strip_prefix(configured_mock.as_str())
            {
                *endpoint = format!("http://127.0.0.1:{port}{rest}");
            }
        }
        if let Some(port) = mock_port {
            let police = s.units.iter().find(|u| u.code == POLICE);
            match police.map(|u| &u.reach) {
                Some(Reach::Adapter { endpoint, .. })
                    if endpoint.starts_with(&format!("http://127.0.0.1:{port}")) => {}
                _ => anyhow::bail!(
                    "the configuration's Police unit {POLICE} is not reached by an adapter on the mock agency ({configured_mock})"
                ),
            }
        }
        s.bus.prefix = prefix.into();
        s.bus.amqp_url = self.url.clone();
        s.bus.shutdown_grace_ms = 1000;
        s.store.path = self.store_dir(dir).join("store.db").display().to_string();
        s.store.blob_dir = dir.join("blobs").display().to_string();
        s.topology.router_prefetch = self.args.prefetch;
        s.http.listen = format!("127.0.0.1:{}", free_port()?);
        s.http.public_url = None;
        s.mock.listen = format!("127.0.0.1:{}", mock_port.unwrap_or(0));
        s.mock.latency_min_ms = 0;
        s.mock.latency_max_ms = 0;
        s.mock.unavailable_rate = 0.0;
        s.mock.refusal_rate = 0.0;
        s.mock.callback_delay_ms = 0;
        s.check()?;
        Ok(s)
    }

    /// Declare a bus topology (tracked for clean-up), purge its queues and write its config.
    async fn bus_topology(&self, s: &Settings, dir: &Path) -> anyhow::Result<PathBuf> {
        if let Ok(mut t) = self.cleanup.topologies.lock() {
            t.push(s.clone());
        }
        crate::run::apply_topology(s, &self.ctl).await?;
        for q in &Topology::plan(s).queues {
            purge(&self.ctl, &q.name).await?;
        }
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.toml");
        s.write_file(&config)
            .context("writing the bus configuration")?;
        Ok(config)
    }

    async fn setup(&self, mode: Mode, what: &str) -> anyhow::Result<Setup> {
        let mut st = Setup::new(mode);
        match mode {
            Mode::Direct => {
                let q = format!("{}.direct", self.tag(what));
                self.declare_queue(&q).await?;
                st.routing_key = q.clone();
                st.sink_queue = q.clone();
                st.queues.push(q);
            }
            Mode::Pipe | Mode::Shovel => {
                let t = self.tag(what);
                let (a, b) = (format!("{t}.a"), format!("{t}.b"));
                self.declare_queue(&a).await?;
                st.queues.push(a.clone());
                self.declare_queue(&b).await?;
                st.queues.push(b.clone());
                if mode == Mode::Pipe {
                    let prefetch = self.args.prefetch.to_string();
                    let child = Child::spawn(
                        &self.exe,
                        None,
                        &[
                            "bench-pipe",
                            "--from",
                            &a,
                            "--to",
                            &b,
                            "--prefetch",
                            &prefetch,
                            "--amqp-url",
                            &self.url,
                        ],
                        &self.dir.join(format!("{t}-pipe.log")),
                        "bench-pipe",
                    )?;
                    st.children.push(child);
                } else {
                    let name = format!("{t}-shovel");
                    let def = broker::shovel_definition(&self.url, &a, &b, self.args.prefetch);
                    if let Ok(mut s) = self.cleanup.shovels.lock() {
                        s.push(name.clone());
                    }
                    broker::cli(
                        "rabbitmqctl",
                        &["set_parameter", "shovel", name.as_str(), def.as_str()],
                    )
                    .await
                    .map_err(anyhow::Error::msg)?;
                    st.shovel = Some(name);
                }
                self.wait_consumers(&[(a.as_str(), 1)], &mut st.children, 30)
                    .await?;
                st.routing_key = a;
                st.sink_queue = b;
            }
            Mode::Lienthong | Mode::Http => {
                let prefix = self.tag(what);
                let dir = self.dir.join(&prefix);
                let mock_port = if mode == Mode::Http {
                    Some(free_port()?)
                } else {
                    None
                };
                let s = self.bus_settings(&prefix, &dir, mock_port)?;
                st.dir = Some(dir.clone());
                st.topology = Some(s.clone());
                let config = self.bus_topology(&s, &dir).await?;
                let names = Names::new(&prefix);
                if mode == Mode::Http {
                    let mock = Child::spawn(
                        &self.exe,
                        Some(&config),
                        &["mock-agency"],
                        &dir.join("mock-agency.log"),
                        "mock-agency",
                    )?;
                    st.children.push(mock);
                    wait_listening(
                        &dir.join("mock-agency.log"),
                        MOCK_LISTENING,
                        &s.mock.listen,
                        30,
                    )
                    .await?;
                    wait_http(&format!("http://{}/_mock/stats", s.mock.listen), 30).await?;
                }
                // The HTTP component serves the router's stage times on /metrics (it idles
                // otherwise in the lienthong mode).
                let components = if mode == Mode::Http {
                    "router,adapters,tracer,http"
                } else {
                    "router,tracer,http"
                };
                let bus = Child::spawn(
                    &self.exe,
                    Some(&config),
                    &["run", "--components", components],
                    &dir.join("run.log"),
                    "lienthong run",
                )?;
                st.router_pid = Some(bus.pid);
                st.children.push(bus);
                let router_q = names.router_queue();
                let trace_q = names.trace_queue();
                let police_q = names.unit_queue(POLICE);
                let mut wait: Vec<(&str, u32)> =
                    vec![(router_q.as_str(), 1), (trace_q.as_str(), 1)];
                if mode == Mode::Http {
                    wait.push((police_q.as_str(), 1));
                }
                self.wait_consumers(&wait, &mut st.children, 60).await?;
                wait_listening(&dir.join("run.log"), HTTP_LISTENING, &s.http.listen, 30).await?;
                wait_http(&format!("http://{}/readyz", s.http.listen), 30).await?;
                st.metrics_url = Some(format!("http://{}/metrics", s.http.listen));
                if mode == Mode::Http {
                    st.key_by = KeyBy::CorrelationId;
                    st.receiver = POLICE;
                    st.sink_queue = names.unit_queue(CENTRE);
                } else {
                    st.sink_queue = names.unit_queue(CIVIL);
                }
                st.exchange = names.ingress_exchange();
                st.trace_queue = Some(trace_q);
            }
        }
        Ok(st)
    }

    async fn teardown(&self, st: Setup, failed: bool) {
        for c in st.children {
            c.stop().await;
        }
        if let Some(name) = &st.shovel {
            match broker::cli("rabbitmqctl", &["clear_parameter", "shovel", name]).await {
                Ok(_) => forget(&self.cleanup.shovels, name),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        for q in &st.queues {
            match delete_queue(&self.ctl, q).await {
                Ok(()) => forget(&self.cleanup.queues, q),
                Err(e) => eprintln!("warning: deleting {q}: {e}"),
            }
        }
        if let Some(s) = &st.topology {
            match Topology::plan(s).delete(&self.ctl).await {
                Ok(()) => {
                    if let Ok(mut t) = self.cleanup.topologies.lock() {
                        t.retain(|x| x.bus.prefix != s.bus.prefix);
                    }
                }
                Err(e) => eprintln!("warning: deleting prefix {}: {e}", s.bus.prefix),
            }
        }
        if let Some(dir) = &st.dir {
            if failed {
                self.failed_dirs.store(true, Ordering::Relaxed);
            } else if !self.args.keep_dir {
                let _ = std::fs::remove_dir_all(self.store_dir(dir));
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// The processes of a round: the bench itself, the children, the broker.
    fn procs(&self, st: &Setup) -> Vec<(String, u32, bool)> {
        let mut v = vec![("bench".to_string(), std::process::id(), false)];
        for c in &st.children {
            v.push((c.name.to_string(), c.pid, true));
        }
        if let Some(b) = self.broker_pid {
            v.push(("broker (beam.smp)".to_string(), b, false));
        }
        v
    }

    /// Set up `mode`, send `opts.count` messages, measure, take it down.
    async fn round(
        &self,
        mode: Mode,
        round: u32,
        what: &str,
        opts: RoundOpts,
    ) -> (Round, Vec<(f64, u64, u64)>, u64) {
        let t0 = Instant::now();
        let mut r = Round {
            round,
            count: opts.count,
            ..Round::default()
        };
        let setup = self.setup(mode, what).await;
        r.set_up_s = t0.elapsed().as_secs_f64();
        let st = match setup {
            Ok(st) => st,
            Err(e) => {
                r.error = Some(format!("set-up failed: {e:#}"));
                return (r, Vec::new(), 0);
            }
        };
        // A paced run starts with a warm-up at the same rate, not counted: right after the
        // set-up the broker is still starting the quorum queues just declared, and the first
        // seconds measure that, not the path.
        if let Some(rate) = opts.rate {
            let mut warm = Round::default();
            let count = (rate * PACED_WARM_UP.as_secs_f64()).ceil().max(1.0) as u64;
            let warm_opts = RoundOpts {
                count,
                rate: Some(rate),
                sample_rss: false,
            };
            if let Err(e) = self.measure(&st, &mut warm, warm_opts).await {
                warm.error.get_or_insert(format!("{e:#}"));
            }
            if let Some(e) = warm.error {
                r.error = Some(format!("warm-up: {e}"));
                self.teardown(st, true).await;
                r.wall_s = t0.elapsed().as_secs_f64();
                return (r, Vec::new(), 0);
            }
        }
        let (samples, store_bytes) = match self.measure(&st, &mut r, opts).await {
            Ok(x) => x,
            Err(e) => {
                r.error.get_or_insert(format!("{e:#}"));
                (Vec::new(), 0)
            }
        };
        if let Some(url) = &st.metrics_url {
            r.stages = router_stages(url).await;
        }
        let failed = !r.ok();
        if failed {
            for c in &st.children {
                eprintln!("  ({} log: {})", c.name, c.log.display());
            }
        }
        self.teardown(st, failed).await;
        r.wall_s = t0.elapsed().as_secs_f64();
        (r, samples, store_bytes)
    }

    async fn measure(
        &self,
        st: &Setup,
        r: &mut Round,
        opts: RoundOpts,
    ) -> anyhow::Result<(Vec<(f64, u64, u64)>, u64)> {
        let generator = Gen::new(
            &self.sample,
            CENTRE,
            st.receiver,
            self.args.body_bytes,
            self.seq.clone(),
        )?;
        let book = Book::new(st.key_by);
        let stall = Duration::from_secs(self.args.stall_s);
        let sink = traffic::sink(
            &self.sconn,
            &st.sink_queue,
            self.args.prefetch,
            book.clone(),
            opts.count,
            stall,
        )
        .await?;
        let procs = self.procs(st);
        let before: Vec<(Option<f64>, Option<u64>)> = procs
            .iter()
            .map(|(_, pid, _)| (procfs::cpu_seconds(*pid), procfs::write_bytes(*pid)))
            .collect();
        let busy_before = procfs::machine_busy_seconds();
        // Progress (long rounds) and the router's memory (soak), every second.
        let stop = Arc::new(tokio::sync::Notify::new());
        let sampler = {
            let stop = stop.clone();
            let book = book.clone();
            let pid = st.router_pid.filter(|_| opts.sample_rss);
            let (count, name) = (opts.count, st.mode.name());
            tokio::spawn(async move {
                let t0 = Instant::now();
                let mut samples = Vec::new();
                let mut last_print = Instant::now();
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                        _ = stop.notified() => break,
                    }
                    if let Some(p) = pid
                        && let Some(k) = procfs::status_kib(p, "VmRSS")
                    {
                        let anon = procfs::status_kib(p, "RssAnon").unwrap_or(0);
                        samples.push((t0.elapsed().as_secs_f64(), k, anon));
                    }
                    if last_print.elapsed() >= Duration::from_secs(10) {
                        last_print = Instant::now();
                        let got = book.received.load(Ordering::Relaxed);
                        eprintln!(
                            "    … {name}: {got}/{count} at the sink after {:.0} s ({:.0} msg/s){}",
                            t0.elapsed().as_secs_f64(),
                            got as f64 / t0.elapsed().as_secs_f64(),
                            samples.last().map_or(String::new(), |(_, k, _)| format!(
                                ", router RSS {:.1} MiB",
                                *k as f64 / 1024.0
                            ))
                        );
                    }
                }
                samples
            })
        };
        let plan = Plan {
            exchange: st.exchange.clone(),
            routing_key: st.routing_key.clone(),
            count: opts.count,
            window: self.args.window,
            rate: opts.rate,
            max_in_flight: self.args.max_in_flight,
            stall,
        };
        let produced = traffic::produce(&self.pconn, &plan, &generator, st.key_by, &book).await;
        let sunk = match &produced {
            Ok(_) => sink.await.unwrap_or_default(),
            Err(_) => {
                sink.abort();
                traffic::Sunk::default()
            }
        };
        stop.notify_one();
        let samples = sampler.await.unwrap_or_default();
        let produced = produced?;
        r.moved = sunk.received;
        r.extra = sunk.extra;
        r.error = sunk.error;
        if let Some(last) = sunk.last_arrival {
            r.secs = last
                .saturating_duration_since(produced.first_send)
                .as_secs_f64();
            if r.secs > 0.0 {
                r.rate = r.moved as f64 / r.secs;
            }
        }
        r.lat_us = sunk.latencies_us;
        // lienthong: the work of the round ends when the tracer has stored its events.
        if let Some(tq) = &st.trace_queue {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(120) {
                match queue_counts(&self.ctl, tq).await {
                    Some((0, _)) | None => break,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            r.trace_lag_s = Some(t.elapsed().as_secs_f64());
        }
        for ((name, pid, child), (b, wb)) in procs.iter().zip(before) {
            let cpu = match (b, procfs::cpu_seconds(*pid)) {
                (Some(b), Some(a)) => a - b,
                _ => 0.0,
            };
            let rss = procfs::status_kib(*pid, if *child { "VmHWM" } else { "VmRSS" });
            r.procs.push(ProcUse {
                name: name.clone(),
                cpu_s: cpu,
                rss_kib: rss,
                written: wb
                    .zip(procfs::write_bytes(*pid))
                    .map(|(b, a)| a.saturating_sub(b)),
            });
        }
        // What else ran on the machine meanwhile (other users' builds and tests skew the figures).
        if let (Some(b), Some(a)) = (busy_before, procfs::machine_busy_seconds()) {
            let ours: f64 = r.procs.iter().map(|p| p.cpu_s).sum();
            r.procs.push(ProcUse {
                name: report::OTHERS.into(),
                cpu_s: (a - b - ours).max(0.0),
                rss_kib: None,
                written: None,
            });
        }
        let store_bytes = st
            .topology
            .as_ref()
            .map(|s| {
                ["", "-wal"]
                    .iter()
                    .filter_map(|x| std::fs::metadata(format!("{}{x}", s.store.path)).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        Ok((samples, store_bytes))
    }
}

fn print_round(mode: Mode, r: &Round) {
    let mut l = r.lat_us.clone();
    l.sort_unstable();
    let p = |q| traffic::percentile(&l, q).map_or(0.0, |u| f64::from(u) / 1000.0);
    eprintln!(
        "  [round {}] {:<12} {:>7}/{} in {:>6.2} s = {:>7.0} msg/s  p50 {:.1} ms  p99 {:.1} ms{}  [round {:.1} s, set-up {:.1} s]{}",
        r.round,
        mode.name(),
        r.moved,
        r.count,
        r.secs,
        r.rate,
        p(50.0),
        p(99.0),
        r.trace_lag_s
            .map_or(String::new(), |t| format!("  (trace stored +{t:.1} s)")),
        r.wall_s,
        r.set_up_s,
        r.error
            .as_deref()
            .map_or(String::new(), |e| format!("  FAILED: {e}"))
    );
}

/// Where the report of a run in which some mode failed goes: beside `out`, with `.failed`
/// before the extension (`BENCHMARKS.md` → `BENCHMARKS.failed.md`), so that the tables of the
/// last good run stay.
fn failed_report_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
    let name = match out.extension() {
        Some(ext) => format!("{stem}.failed.{}", ext.to_string_lossy()),
        None => format!("{stem}.failed"),
    };
    out.with_file_name(name)
}

fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            // The report the harness rewrites is not a change of what is measured.
            let dirty = run(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)BENCHMARKS.md",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c} (with uncommitted changes)")
            } else {
                c
            }
        }
        _ => "unknown (no git)".into(),
    }
}

/// Check that each path's file system has at least twice the bytes needed there free (needs on
/// the same file system add up). Err says what is missing; Ok gives notes for the report.
fn check_disk(checks: &[(&Path, u64, &str)]) -> anyhow::Result<Vec<String>> {
    let mut by_mount: Vec<(String, u64, u64, Vec<String>)> = Vec::new();
    let mut notes = Vec::new();
    for (path, need, what) in checks {
        match procfs::free_space(path) {
            Some((free, mount)) => match by_mount.iter_mut().find(|m| m.0 == mount) {
                Some(m) => {
                    m.2 += need;
                    m.3.push(what.to_string());
                }
                None => by_mount.push((mount, free, *need, vec![what.to_string()])),
            },
            None => notes.push(format!(
                "could not check the free space of {} ({what})",
                path.display()
            )),
        }
    }
    for (mount, free, need, whats) in &by_mount {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        if *free < 2 * need {
            anyhow::bail!(
                "refusing to run: {} need about {:.1} GiB on {mount}; twice that must be free and only {:.1} GiB is",
                whats.join(" + "),
                gib(*need),
                gib(*free)
            );
        }
        notes.push(format!(
            "disk: {:.1} GiB free on {mount}, about {:.1} GiB needed ({})",
            gib(*free),
            gib(*need),
            whats.join(" + ")
        ));
    }
    Ok(notes)
}

/// Run the benchmark.
pub async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut args = args;
    if args.smoke {
        args.rounds = 2;
        args.messages = 300;
        args.paced_seconds = 2;
        args.http_messages = Some(300);
        args.soak = None;
        args.backlog = None;
        args.stall_s = args.stall_s.min(20);
    } else if args.rounds < 3 && args.soak.is_none() && args.backlog.is_none() {
        anyhow::bail!(
            "--rounds must be at least 3 (medians and spreads need them); use --smoke for a quick check"
        );
    }
    if args.messages == 0 || args.window == 0 || args.max_in_flight == 0 || args.paced_rate <= 0.0 {
        anyhow::bail!("--messages, --window, --max-in-flight and --paced-rate must be positive");
    }
    if !args.modes.is_empty() && args.out.is_none() && !args.smoke {
        anyhow::bail!(
            "--modes runs part of the comparison: give --out (BENCHMARKS.md keeps whole tables)"
        );
    }
    let out_path = match (&args.out, args.smoke) {
        (Some(p), _) => p.clone(),
        (None, true) => std::env::temp_dir().join(format!(
            "lienthong-bench-smoke-{}.md",
            uuid::Uuid::now_v7().simple()
        )),
        (None, false) => PathBuf::from("BENCHMARKS.md"),
    };
    // One benchmark at a time on a machine: two would skew each other's figures, and one
    // could disable the shovel plugin under the other.
    let _lock = RunLock::take()?;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("lienthong-bench-{}", &id[id.len() - 8..]);
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(d) = &args.store_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let samples = std::fs::read_to_string(&args.sample).unwrap_or_else(|e| {
        eprintln!(
            "note: cannot read {} ({e}); using a built-in birth dossier",
            args.sample.display()
        );
        String::new()
    });
    let sample = traffic::birth_sample(&samples, CENTRE);

    let url = settings.bus.amqp_url.clone();
    let (host, port) = broker::host_port(&url);
    let ctl = crate::run::connect(&settings, "bench").await?;
    let pconn = lienthong_core::amqp::connect(&url, "bench/producer").await?;
    let sconn = lienthong_core::amqp::connect(&url, "bench/sink").await?;
    let broker_pid = broker::broker_pid(port);
    let mut header = Header {
        machine: procfs::machine(),
        broker_version: broker::server_version(&host, port)
            .await
            .unwrap_or_else(|| "unknown".into()),
        broker_pid,
        commit: git_commit(),
        date: chrono::Local::now()
            .format("%Y-%m-%d %H:%M:%S %z")
            .to_string(),
        command: std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" "),
        ..Header::default()
    };
    if let Some(l) = procfs::loadavg() {
        header
            .notes
            .push(format!("load average (1, 5, 15 min) at the start: {l}"));
    }
    if broker_pid.is_none() {
        header
            .notes
            .push(format!("no broker process found listening on port {port} (run as root to read its /proc entries)"));
    }
    let http_messages = args.http_messages.unwrap_or((args.messages / 5).max(1));
    let paced_count = (args.paced_rate * args.paced_seconds as f64)
        .round()
        .max(1.0) as u64;
    header.settings = vec![
        ("body size".into(), format!("{} bytes", args.body_bytes)),
        (
            "messages".into(),
            "persistent (delivery mode 2), publisher confirms, manual acks, quorum queues".into(),
        ),
        ("prefetch".into(), args.prefetch.to_string()),
        ("rounds".into(), args.rounds.to_string()),
        ("messages per round".into(), args.messages.to_string()),
        (
            "producer".into(),
            format!(
                "window of {} outstanding confirms, at most {} messages in flight",
                args.window, args.max_in_flight
            ),
        ),
        ("paced rate".into(), format!("{} msg/s", args.paced_rate)),
        (
            "paced runs".into(),
            format!(
                "{} s each ({paced_count} messages), after a warm-up of {} s at the same rate that is not counted",
                args.paced_seconds,
                PACED_WARM_UP.as_secs()
            ),
        ),
        ("http-adapter dossiers".into(), http_messages.to_string()),
        (
            "lienthong".into(),
            format!(
                "registry trimmed to {} units (as the tests do), router prefetch {}, store {}; receiver {CIVIL} read over AMQP",
                KEEP_UNITS.len(),
                args.prefetch,
                store_placement(
                    args.store_dir.as_deref().unwrap_or(&dir),
                    &args.broker_data_dir
                )
            ),
        ),
    ];

    let cleanup = Arc::new(Cleanup {
        url: url.clone(),
        queues: Mutex::new(Vec::new()),
        topologies: Mutex::new(Vec::new()),
        shovels: Mutex::new(Vec::new()),
        plugin: Mutex::new(None),
    });
    let bench = Bench {
        args: args.clone(),
        base: settings,
        url,
        prefix: prefix.clone(),
        dir: dir.clone(),
        exe: std::env::current_exe()?,
        ctl,
        pconn,
        sconn,
        broker_pid,
        cleanup: cleanup.clone(),
        seq: Arc::new(AtomicU64::new(1)),
        sample,
        tags: AtomicU64::new(1),
        failed_dirs: AtomicBool::new(false),
    };
    eprintln!(
        "lienthong bench: prefix {prefix}, working directory {}, RabbitMQ {} (pid {}), report → {}",
        dir.display(),
        header.broker_version,
        broker_pid.map_or("?".into(), |p| p.to_string()),
        out_path.display()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut results = Results::default();
    let outcome = tokio::select! {
        r = run_all(&bench, &args, http_messages, paced_count, &mut header, &mut results) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let problems = cleanup.finish(Some(&bench.ctl)).await;
    for p in &problems {
        eprintln!("clean-up: {p}");
    }
    let _ = bench.ctl.close(200, "bench done".into()).await;
    let _ = bench.pconn.close(200, "bench done".into()).await;
    let _ = bench.sconn.close(200, "bench done".into()).await;
    if let Err(e) = outcome {
        if bench.failed_dirs.load(Ordering::Relaxed) || args.keep_dir {
            eprintln!("logs kept in {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(e);
    }

    header.wall_s = started.elapsed().as_secs_f64();
    if let Some(l) = procfs::loadavg() {
        header
            .notes
            .push(format!("load average (1, 5, 15 min) at the end: {l}"));
    }
    results.header = header;
    let ok = results.modes.iter().all(ModeRuns::ok)
        && results.http.as_ref().is_none_or(ModeRuns::ok)
        && results.paced.iter().all(ModeRuns::ok)
        && results.soak.as_ref().is_none_or(|s| s.round.ok())
        && results.backlog.as_ref().is_none_or(|b| b.error.is_none());
    let previous = std::fs::read_to_string(&out_path).ok();
    let text = report::render(&results, previous.as_deref());
    // A run where some mode failed does not replace the report's tables: it goes beside it.
    let out_path = if ok {
        out_path
    } else {
        failed_report_path(&out_path)
    };
    std::fs::write(&out_path, &text).with_context(|| format!("writing {}", out_path.display()))?;
    println!("{text}");
    if bench.failed_dirs.load(Ordering::Relaxed) || args.keep_dir {
        eprintln!("logs and stores kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!(
        "report written to {} ({:.0} s); {}",
        out_path.display(),
        started.elapsed().as_secs_f64(),
        if ok {
            "every mode moved every message"
        } else {
            "SOME MODE DID NOT MOVE EVERY MESSAGE"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_all(
    bench: &Bench,
    args: &BenchArgs,
    http_messages: u64,
    paced_count: u64,
    header: &mut Header,
    results: &mut Results,
) -> anyhow::Result<()> {
    if args.soak.is_some() || args.backlog.is_some() {
        if let Some(n) = args.soak {
            results.soak = Some(soak(bench, n, header).await?);
        }
        if let Some(n) = args.backlog {
            results.backlog = Some(backlog(bench, n, header).await?);
        }
        return Ok(());
    }
    let plugin = if args.wants("shovel") {
        broker::prepare_shovel_plugin(|file, existed| {
            if let Ok(mut p) = bench.cleanup.plugin.lock() {
                *p = Some((file, existed));
            }
        })
        .await
    } else {
        broker::ShovelPlugin::Unavailable("not selected (--modes)".into())
    };
    let shovel_skip = match &plugin {
        broker::ShovelPlugin::AlreadyEnabled => {
            header.notes.push(format!(
                "{} was already enabled; left enabled",
                broker::SHOVEL
            ));
            None
        }
        broker::ShovelPlugin::EnabledByUs => {
            header.notes.push(format!(
                "{} was disabled: the bench enabled it for the shovel mode and disabled it again at the end",
                broker::SHOVEL
            ));
            None
        }
        broker::ShovelPlugin::Unavailable(why) => {
            if args.wants("shovel") {
                header.notes.push(format!("shovel mode skipped: {why}"));
            }
            Some(why.clone())
        }
    };
    let modes = [Mode::Direct, Mode::Pipe, Mode::Shovel, Mode::Lienthong];
    let mut runs: Vec<ModeRuns> = modes
        .iter()
        .map(|m| ModeRuns {
            name: m.name().into(),
            what: m.what().into(),
            rounds: Vec::new(),
            skipped: if args.wants(short(*m)) {
                (*m == Mode::Shovel).then(|| shovel_skip.clone()).flatten()
            } else {
                Some("not selected (--modes)".into())
            },
        })
        .collect();
    let opts = RoundOpts {
        count: args.messages,
        rate: None,
        sample_rss: false,
    };
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        for (m, runs) in modes.iter().zip(runs.iter_mut()) {
            if runs.skipped.is_some() {
                continue;
            }
            let (r, _, _) = bench
                .round(*m, round, &format!("r{round}-{}", short(*m)), opts)
                .await;
            print_round(*m, &r);
            runs.rounds.push(r);
        }
    }
    results.modes = runs;

    if args.wants("http") {
        eprintln!("http adapter, end to end ({http_messages} dossiers)");
        let (r, _, _) = bench
            .round(
                Mode::Http,
                1,
                "http",
                RoundOpts {
                    count: http_messages,
                    rate: None,
                    sample_rss: false,
                },
            )
            .await;
        print_round(Mode::Http, &r);
        results.http = Some(ModeRuns {
            name: Mode::Http.name().into(),
            what: Mode::Http.what().into(),
            rounds: vec![r],
            skipped: None,
        });
    }

    let paced: &[Mode] = if args.wants("paced") {
        &[Mode::Direct, Mode::Pipe, Mode::Lienthong]
    } else {
        &[]
    };
    for &m in paced {
        eprintln!(
            "paced: {} at {} msg/s for {} s",
            m.name(),
            args.paced_rate,
            args.paced_seconds
        );
        let (r, _, _) = bench
            .round(
                m,
                1,
                &format!("paced-{}", short(m)),
                RoundOpts {
                    count: paced_count,
                    rate: Some(args.paced_rate),
                    sample_rss: false,
                },
            )
            .await;
        print_round(m, &r);
        results.paced.push(ModeRuns {
            name: format!("{} (paced)", m.name()),
            what: m.what().into(),
            rounds: vec![r],
            skipped: None,
        });
    }
    Ok(())
}

/// The router's stage times from a `lienthong run`'s `/metrics` (empty when it cannot be read:
/// the figures are extra, the round stands without them).
async fn router_stages(url: &str) -> Vec<report::StageTimes> {
    let text = async {
        reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    text.await
        .map(|t| report::parse_stages(&t))
        .unwrap_or_default()
}

/// The mode's short name: `--modes` and the working directories' names.
fn short(m: Mode) -> &'static str {
    match m {
        Mode::Direct => "direct",
        Mode::Pipe => "pipe",
        Mode::Shovel => "shovel",
        Mode::Lienthong => "lienthong",
        Mode::Http => "http",
    }
}

/// `--soak N`: N messages through the router with its memory sampled every second.
async fn soak(bench: &Bench, n: u64, header: &mut Header) -> anyhow::Result<Soak> {
    let body = bench.args.body_bytes as u64;
    let notes = check_disk(&[
        (
            bench.args.broker_data_dir.as_path(),
            n * body,
            "the broker's queue log",
        ),
        (
            bench.dir.as_path(),
            n * (body + 2048),
            "the bus's message store and trace",
        ),
    ])?;
    for note in notes {
        eprintln!("{note}");
        header.notes.push(note);
    }
    eprintln!(
        "soak: {n} messages through the router (sink concurrent, at most {} in flight)",
        bench.args.max_in_flight
    );
    let broker_before = bench
        .broker_pid
        .and_then(|p| procfs::status_kib(p, "VmRSS"));
    let (round, rss, store_bytes) = bench
        .round(
            Mode::Lienthong,
            1,
            "soak",
            RoundOpts {
                count: n,
                rate: None,
                sample_rss: true,
            },
        )
        .await;
    print_round(Mode::Lienthong, &round);
    let broker_after = bench
        .broker_pid
        .and_then(|p| procfs::status_kib(p, "VmRSS"));
    Ok(Soak {
        round,
        anon: rss.iter().map(|(t, _, a)| (*t, *a)).collect(),
        rss: rss.iter().map(|(t, k, _)| (*t, *k)).collect(),
        broker_rss: (broker_before, broker_after),
        store_bytes,
    })
}

/// `--backlog N`: N dossiers for Police pile up while the adapters are down, then drain.
async fn backlog(bench: &Bench, n: u64, header: &mut Header) -> anyhow::Result<Backlog> {
    let body = bench.args.body_bytes as u64;
    let notes = check_disk(&[
        (
            bench.args.broker_data_dir.as_path(),
            2 * n * body,
            "the broker's queue log (router and Police queues)",
        ),
        (
            bench.dir.as_path(),
            n * (2 * body + 2048),
            "the bus's message store, trace and delivery log",
        ),
    ])?;
    for note in notes {
        eprintln!("{note}");
        header.notes.push(note);
    }
    let mut b = Backlog {
        count: n,
        ..Backlog::default()
    };
    let prefix = bench.tag("backlog");
    let dir = bench.dir.join(&prefix);
    let mock_port = free_port()?;
    let s = bench.bus_settings(&prefix, &dir, Some(mock_port))?;
    let config = bench.bus_topology(&s, &dir).await?;
    let names = Names::new(&prefix);
    let mut st = Setup::new(Mode::Http);
    st.topology = Some(s.clone());
    st.dir = Some(dir.clone());
    let result: anyhow::Result<()> = async {
        st.children.push(Child::spawn(
            &bench.exe,
            Some(&config),
            &["mock-agency"],
            &dir.join("mock-agency.log"),
            "mock-agency",
        )?);
        wait_listening(&dir.join("mock-agency.log"), MOCK_LISTENING, &s.mock.listen, 30).await?;
 wait_http(&format!("http://{}/_mock/stats", s.mock.listen), 30).await?;
        st.children.push(Child::spawn(
            &bench.exe,
            Some(&config),
            &["run", "--components", "router,tracer,http"],
            &dir.join("run.log"),
            "lienthong run (router,tracer,http)",
        )?);
        bench
            .wait_consumers(
                &[
                    (names.router_queue().as_str(), 1),
                    (names.trace_queue().as_str(), 1),
                ],
                &mut st.children,
                60,
            )
            .await?;
        wait_listening(&dir.join("run.log"), HTTP_LISTENING, &s.http.listen, 30).await?;
 wait_http(&format!("http://{}/readyz", s.http.listen), 30).await?;
        let police_q = names.unit_queue(POLICE);
        let generator = Gen::new(
            &bench.sample,
            CENTRE,
            POLICE,
            bench.args.body_bytes,
            bench.seq.clone(),
        )?;
        let book = Book::new(KeyBy::CorrelationId);
        let stall = Duration::from_secs(bench.args.stall_s);
        // The centre's results arrive only after the adapters start: a long stall limit.
        let sink = traffic::sink(
            &bench.sconn,
            &names.unit_queue(CENTRE),
            bench.args.prefetch,
            book.clone(),
            n,
            Duration::from_secs(bench.args.stall_s.max(3600)),
        )
        .await?;
        eprintln!("backlog: filing {n} dossiers for {POLICE} while its adapter is down");
        let t_fill = Instant::now();
        let plan = Plan {
            exchange: names.ingress_exchange(),
            routing_key: String::new(),
            count: n,
            window: bench.args.window,
            rate: None,
            max_in_flight: u64::MAX / 2,
            stall,
        };
        traffic::produce(&bench.pconn, &plan, &generator, KeyBy::CorrelationId, &book).await?;
        let mut last = (0u32, Instant::now());
        loop {
            let depth = queue_counts(&bench.ctl, &police_q).await.map_or(0, |c| c.0);
            if u64::from(depth) >= n {
                break;
            }
            if depth != last.0 {
                last = (depth, Instant::now());
            } else if last.1.elapsed() > stall {
                anyhow::bail!("the router stopped filling {police_q} at {depth} of {n}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        b.fill_s = t_fill.elapsed().as_secs_f64();
        eprintln!(
            "backlog: {n} dossiers waiting in {police_q} (filled in {:.1} s); starting the adapters",
            b.fill_s
        );
        let mut procs: Vec<(String, u32)> = vec![("bench".into(), std::process::id())];
        for c in &st.children {
            procs.push((c.name.to_string(), c.pid));
        }
        let adapters = Child::spawn(
            &bench.exe,
            Some(&config),
            &["run", "--components", "adapters"],
            &dir.join("adapters.log"),
            "lienthong run (adapters)",
        )?;
        procs.push((adapters.name.to_string(), adapters.pid));
        if let Some(p) = bench.broker_pid {
            procs.push(("broker (beam.smp)".into(), p));
        }
        let before: Vec<Option<f64>> = procs.iter().map(|p| procfs::cpu_seconds(p.1)).collect();
        let busy_before = procfs::machine_busy_seconds();
        let t0 = Instant::now();
        st.children.push(adapters);
        let mut first_out: Option<f64> = None;
        let mut last_change = (u64::MAX, Instant::now());
        let mut last_print = Instant::now();
        loop {
            let depth = u64::from(queue_counts(&bench.ctl, &police_q).await.map_or(0, |c| c.0));
            let t = t0.elapsed().as_secs_f64();
            b.depth.push((t, depth));
            if depth < n && first_out.is_none() {
                first_out = Some(t);
            }
            if depth == 0 {
                break;
            }
            if depth != last_change.0 {
                last_change = (depth, Instant::now());
            } else if last_change.1.elapsed() > stall {
                anyhow::bail!("{police_q} stopped draining at {depth}");
            }
            if let Some(c) = st.children.last_mut()
                && !c.alive()
            {
                anyhow::bail!("the adapters process exited; its log ends:\n{}", c.log_tail());
            }
            if last_print.elapsed() >= Duration::from_secs(10) {
                last_print = Instant::now();
                eprintln!("    … {depth} dossiers left after {t:.0} s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let empty_at = t0.elapsed().as_secs_f64();
        b.startup_s = first_out.unwrap_or(empty_at);
        b.drain_s = empty_at - b.startup_s;
        eprintln!(
            "backlog: drained in {:.1} s ({:.0} dossiers/s); waiting for the results",
            b.drain_s,
            b.drain_rate()
        );
        let sunk = sink.await.unwrap_or_default();
        b.results = sunk.received;
        b.results_s = sunk
            .last_arrival
            .map(|l| l.saturating_duration_since(t0).as_secs_f64());
        if let Some(e) = sunk.error {
            anyhow::bail!("results: {e}");
        }
        for ((name, pid), bf) in procs.iter().zip(before) {
            b.procs.push(ProcUse {
                name: name.clone(),
                cpu_s: match (bf, procfs::cpu_seconds(*pid)) {
                    (Some(x), Some(y)) => y - x,
                    _ => 0.0,
                },
                rss_kib: procfs::status_kib(
                    *pid,
                    if name.starts_with("lienthong") || name == "mock-agency" {
                        "VmHWM"
                    } else {
                        "VmRSS"
                    },
                ),
                written: None,
            });
        }
        if let (Some(bb), Some(ba)) = (busy_before, procfs::machine_busy_seconds()) {
            let ours: f64 = b.procs.iter().map(|p| p.cpu_s).sum();
            b.procs.push(ProcUse {
                name: report::OTHERS.into(),
                cpu_s: (ba - bb - ours).max(0.0),
                rss_kib: None,
                written: None,
            });
        }
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        b.error = Some(format!("{e:#}"));
        eprintln!("backlog failed: {e:#}");
    }
    bench.teardown(st, result.is_err()).await;
    Ok(b)
}

/// Where the stores go, for the report: the directory and whether its filesystem is the
/// broker's data directory's (the store's writes then compete with the broker's syncs).
fn store_placement(store: &Path, broker_data: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let shared = match (dev(store), dev(broker_data)) {
        (Some(a), Some(b)) if a == b => "on the same filesystem as the broker's data directory",
        (Some(_), Some(_)) => "on another filesystem than the broker's data directory",
        _ => "(filesystem not compared with the broker's data directory)",
    };
    format!("in {} ({shared})", store.display())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A failed run's report goes beside the report, not over it.
    #[test]
    fn a_failed_runs_report_goes_beside_the_report() {
        assert_eq!(
            super::failed_report_path(Path::new("BENCHMARKS.md")),
            Path::new("BENCHMARKS.failed.md")
        );
        assert_eq!(
            super::failed_report_path(Path::new("/tmp/x/b")),
            Path::new("/tmp/x/b.failed")
        );
    }
}
