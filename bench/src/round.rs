//! One round of any mode: the modes and their receivers, the producer and the sink around what
//! the mode set up ([`crate::setup`]), and what the round measured (rate, latencies, CPU, RSS).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lienthong_core::envelope::Envelope;
use lienthong_core::registry::Settings;

use crate::args::BenchArgs;
use crate::children::Child;
use crate::cleanup::{Cleanup, purge, queue_counts};
use crate::measures::{ProcUse, Round};
use crate::procfs;
use crate::traffic::{self, Book, Gen, KeyBy, Plan};

/// The centre that files the dossiers (Sơn Hà's PAC).
pub(crate) const CENTRE: &str = "000.20.59.H48";
/// The receiver of the lienthong mode: Sơn Hà's civil-status office, read over AMQP.
pub(crate) const CIVIL: &str = "000.10.59.H48";
/// The receiver of the HTTP-adapter mode and the backlog: Police, police-rest adapter.
pub(crate) const POLICE: &str = "CA.H48";
/// The units the bus keeps (as the tests do): fewer quorum queues per round.
pub(crate) const KEEP_UNITS: [&str; 10] = [
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
pub(crate) enum Mode {
    Direct,
    /// The raw pipe on plain quorum queues (`x-queue-type: quorum` only).
    PipePlain,
    /// The raw pipe on quorum queues with lienthong's work-queue arguments.
    Pipe,
    /// The dynamic shovel inside the node (`amqp://`: RabbitMQ's direct connection).
    Shovel,
    /// The dynamic shovel over TCP (`amqp://user:pass@host:port`, the bench's broker URL).
    ShovelTcp,
    Lienthong,
    Http,
}

impl Mode {
    /// Whether the comparison of `args` includes this mode (`--modes`): by its own name or its
    /// group's (`pipe`, `shovel`).
    pub(crate) fn wanted(self, args: &BenchArgs) -> bool {
        args.wants(self.short()) || args.modes.iter().any(|m| m == self.group())
    }

    /// The anchors: what the broker does on its own, swept over prefetch values.
    pub(crate) const ANCHORS: [Mode; 4] =
        [Mode::PipePlain, Mode::Pipe, Mode::Shovel, Mode::ShovelTcp];

    /// The alternated modes, in the report's order.
    pub(crate) const ALTERNATED: [Mode; 6] = [
        Mode::Direct,
        Mode::PipePlain,
        Mode::Pipe,
        Mode::Shovel,
        Mode::ShovelTcp,
        Mode::Lienthong,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::PipePlain => "raw pipe (plain)",
            Mode::Pipe => "raw pipe (lienthong args)",
            Mode::Shovel => "shovel (in-node)",
            Mode::ShovelTcp => "shovel (tcp)",
            Mode::Lienthong => "lienthong",
            Mode::Http => "http adapter",
        }
    }

    /// The mode's short name: `--modes` and the working directories' names.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::PipePlain => "pipe-plain",
            Mode::Pipe => "pipe-args",
            Mode::Shovel => "shovel-in-node",
            Mode::ShovelTcp => "shovel-tcp",
            Mode::Lienthong => "lienthong",
            Mode::Http => "http",
        }
    }

    /// The `--modes` word that selects this mode with its siblings (`pipe`: both raw pipes;
    /// `shovel`: both shovels).
    pub(crate) fn group(self) -> &'static str {
        match self {
            Mode::PipePlain | Mode::Pipe => "pipe",
            Mode::Shovel | Mode::ShovelTcp => "shovel",
            m => m.short(),
        }
    }

    /// Whether the mode's queues are plain quorum queues (else lienthong's work-queue
    /// arguments).
    pub(crate) fn plain_queues(self) -> bool {
        self == Mode::PipePlain
    }

    pub(crate) fn what(self) -> &'static str {
        match self {
            Mode::Direct => "producer → quorum queue → sink (the broker's one hop)",
            Mode::PipePlain => {
                "producer → queue A → `lienthong-bench pipe` child (consume, republish with a confirm, ack after the confirm, pipelined) → queue B → sink; plain quorum queues (`x-queue-type: quorum` only)"
            }
            Mode::Pipe => {
                "the same on quorum queues with lienthong's work-queue arguments (dead-letter exchange, `at-least-once` dead-lettering, `reject-publish` overflow, delivery limit)"
            }
            Mode::Shovel => {
                "producer → queue A → RabbitMQ dynamic shovel inside the node (src-uri and dest-uri `amqp://`: the direct connection, no TCP; ack-mode on-confirm, src-prefetch-count = prefetch) → queue B → sink; queues with lienthong's arguments"
            }
            Mode::ShovelTcp => {
                "the same shovel over TCP (src-uri and dest-uri the bench's `amqp://…@host:port` URL, as a shovel to another node connects)"
            }
            Mode::Lienthong => {
                "producer → `<p>.ingress` → `<p>.router` → `lienthong run --components router,tracer,http` child (schema, registry and route checks, message store, trace on; the HTTP API idle but for `/metrics`) → `<p>.unit.000.10.59.H48` → sink"
            }
            Mode::Http => {
                "dossier.forward to Police (`CA.H48`): `<p>.ingress` → router → `<p>.unit.CA.H48` → police-rest adapter → `lienthong-mock` child (latency 0, no 503s, callback without delay) → callback to the HTTP API → dossier.result → router → `<p>.unit.000.20.59.H48` (the centre) → sink; both `lienthong run` (all components) and the mock are children"
            }
        }
    }
}

/// What a mode set up for a round, and how to take it down.
pub(crate) struct Setup {
    pub(crate) mode: Mode,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) sink_queue: String,
    pub(crate) key_by: KeyBy,
    pub(crate) receiver: &'static str,
    pub(crate) children: Vec<Child>,
    pub(crate) queues: Vec<String>,
    pub(crate) shovel: Option<String>,
    pub(crate) topology: Option<Settings>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) trace_queue: Option<String>,
    /// The router's child, for the soak's memory samples.
    pub(crate) router_pid: Option<u32>,
    /// lienthong: the child's `/metrics`, read at the end of a round for the router's stages.
    pub(crate) metrics_url: Option<String>,
}

impl Setup {
    pub(crate) fn new(mode: Mode) -> Setup {
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

/// The warm-up of a paced run (same rate, not counted).
pub(crate) const PACED_WARM_UP: Duration = Duration::from_secs(3);

/// Options of one round.
#[derive(Clone, Copy)]
pub(crate) struct RoundOpts {
    pub(crate) count: u64,
    /// Prefetch of the path's consumers (raw pipe, shovel) and of the sink.
    pub(crate) prefetch: u16,
    pub(crate) rate: Option<f64>,
    pub(crate) sample_rss: bool,
}

pub(crate) struct Bench {
    pub(crate) args: BenchArgs,
    pub(crate) base: Settings,
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) dir: PathBuf,
    /// The `lienthong` binary (`lienthong run`).
    pub(crate) lienthong: PathBuf,
    /// The `lienthong-mock` binary.
    pub(crate) mock: PathBuf,
    /// This program (its `pipe` subcommand is the raw pipe).
    pub(crate) me: PathBuf,
    pub(crate) ctl: Connection,
    pub(crate) pconn: Connection,
    pub(crate) sconn: Connection,
    pub(crate) broker_pid: Option<u32>,
    pub(crate) cleanup: Arc<Cleanup>,
    pub(crate) seq: Arc<AtomicU64>,
    pub(crate) sample: Envelope,
    pub(crate) tags: AtomicU64,
    pub(crate) failed_dirs: AtomicBool,
}

impl Bench {
    pub(crate) fn tag(&self, what: &str) -> String {
        format!(
            "{}-{}{}",
            self.prefix,
            what,
            self.tags.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Declare a quorum queue (and purge it): with lienthong's work-queue arguments, or
    /// `plain` (`x-queue-type: quorum` only).
    pub(crate) async fn declare_queue(&self, name: &str, plain: bool) -> anyhow::Result<()> {
        if let Ok(mut q) = self.cleanup.queues.lock() {
            q.push(name.to_string());
        }
        let mut args = FieldTable::default();
        let n = if plain { 1 } else { 5 };
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
        ]
        .into_iter()
        .take(n)
        {
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
    pub(crate) async fn wait_consumers(
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

    /// The processes of a round: the bench itself, the children, the broker.
    pub(crate) fn procs(&self, st: &Setup) -> Vec<(String, u32, bool)> {
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
    pub(crate) async fn round(
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
        let setup = self.setup(mode, what, opts.prefetch).await;
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
                prefetch: opts.prefetch,
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

    pub(crate) async fn measure(
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
            opts.prefetch,
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
        if let Some(dir) = &self.args.latency_log {
            let path = dir.join(format!("{}.tsv", st.sink_queue));
            if let Err(e) = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, traffic::latency_log(&sunk)))
            {
                eprintln!(
                    "warning: cannot write the latency log {}: {e}",
                    path.display()
                );
            }
        }
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
                name: crate::measures::OTHERS.into(),
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

/// One line per round on stderr; `label` is the mode's name (with its prefetch when it is not
/// the bench's).
pub(crate) fn print_round(label: &str, r: &Round) {
    let l = r.sorted_latencies();
    let p = |q| traffic::percentile(&l, q).map_or(0.0, |u| f64::from(u) / 1000.0);
    eprintln!(
        "  [round {}] {:<26} {:>7}/{} in {:>6.2} s = {:>7.0} msg/s  p50 {:.1} ms  p99 {:.1} ms{}  [round {:.1} s, set-up {:.1} s]{}",
        r.round,
        label,
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

/// The router's stage times from a `lienthong run`'s `/metrics` (empty when it cannot be read:
/// the figures are extra, the round stands without them).
pub(crate) async fn router_stages(url: &str) -> Vec<crate::measures::StageTimes> {
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
        .map(|t| crate::stages::parse_stages(&t))
        .unwrap_or_default()
}
