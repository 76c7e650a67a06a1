//! `--scale N`: the HTTP-adapter path and the backlog drain with 1, 2 and 4 router and adapter
//! processes on each store, as a deployment on several hosts runs them; dossiers/s and the CPU
//! each kind of process (bus, broker, PostgreSQL) spends per dossier.
//!
//! One cell per store and process count, each on a topology and a store of its own:
//! `lienthong-mock`, one `lienthong run --components http,tracer` (the agencies' callbacks
//! come to it), `k` × `--components router` and `k` × `--components adapters`. First N
//! dossiers for Police through the whole path (ingress → router → adapter → agency → callback
//! → router → the centre's queue); then the adapters stop, N dossiers pile up in Police's
//! queue, and `k` adapter processes start again and drain it (every result back at the
//! centre).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lienthong_core::topology::Names;
use lienthong_testkit::procs::{
    HTTP_LISTENING, MOCK_LISTENING, free_port, wait_http, wait_listening,
};

use crate::children::Child;
use crate::procfs;
use crate::procfs::check_disk;
use crate::results::Header;
use crate::round::{Bench, CENTRE, Mode, POLICE, Setup};
use crate::scale_report::{
    ADAPTERS, BENCH, BROKER, ClassUse, FRONT, MOCK, POSTGRES, Path, ROUTERS, Scale, ScaleCell,
};
use crate::traffic::{self, Book, Gen, KeyBy, Plan};

/// The most router (and adapter) processes of one cell.
const MAX_PROCESSES: u32 = 16;

/// `--scale N`: every cell of `--scale-stores` × `--scale-processes`.
pub(crate) async fn scale(bench: &Bench, n: u64, header: &mut Header) -> anyhow::Result<Scale> {
    let args = &bench.args;
    if let Some(k) = args
        .scale_processes
        .iter()
        .find(|k| **k == 0 || **k > MAX_PROCESSES)
    {
        anyhow::bail!("--scale-processes: {k} is not between 1 and {MAX_PROCESSES}");
    }
    // A cell twice in one round would make two rows of one (store, k, path) in the medians.
    let mut ks = args.scale_processes.clone();
    ks.sort_unstable();
    ks.dedup();
    let mut stores = args.scale_stores.clone();
    stores.sort_unstable();
    stores.dedup();
    if ks.len() != args.scale_processes.len() || stores.len() != args.scale_stores.len() {
        anyhow::bail!("--scale-processes and --scale-stores: give each value once");
    }
    let body = args.body_bytes as u64;
    // One cell at a time: two passes of N dossiers, the store dropped after each cell.
    for note in check_disk(&[
        (
            args.broker_data_dir.as_path(),
            2 * n * body,
            "the broker's queue log (one cell's two passes)",
        ),
        (
            bench.dir.as_path(),
            2 * n * (2 * body + 2048),
            "one cell's SQLite store",
        ),
    ])? {
        eprintln!("{note}");
        header.notes.push(note);
    }
    let server = args
        .postgres
        .clone()
        .unwrap_or_else(lienthong_testkit::pg::server_url);
    if args.scale_stores.iter().any(|s| s == "postgres") {
        // Fail before the first cell, with what to do, when the server is not there.
        let probe = server.clone();
        tokio::task::spawn_blocking(move || lienthong_core::store::pg::PgConn::connect(&probe))
            .await?
            .with_context(|| {
                format!(
                    "the scale run's PostgreSQL server ({}) does not answer: start it (scripts/ensure-postgres), give --postgres, or leave it out with --scale-stores sqlite",
                    lienthong_core::store::StoreLocation::parse(&server).display()
                )
            })?;
        if procfs::pids_named("postgres").is_empty() {
            header.notes.push(
                "no `postgres` process on this machine: PostgreSQL's CPU is not measured".into(),
            );
        }
    }
    let rounds = args.scale_rounds.max(1);
    let mut all: Vec<Vec<ScaleCell>> = Vec::new();
    for round in 0..rounds {
        // The stores' order alternates, so that neither always runs on a machine warmed (or
        // tired) by the other.
        let mut stores: Vec<&String> = args.scale_stores.iter().collect();
        if round % 2 == 1 {
            stores.reverse();
        }
        let mut this_round = Vec::new();
        for store in stores {
            for &k in &args.scale_processes {
                this_round.extend(scale_cell(bench, store, &server, k, n, (round, rounds)).await);
            }
        }
        all.push(this_round);
    }
    Ok(Scale {
        count: n,
        rounds,
        cells: crate::scale_report::medians(all),
    })
}

/// One store and process count of one round: both passes, reported as they end.
async fn scale_cell(
    bench: &Bench,
    store: &str,
    server: &str,
    k: u32,
    n: u64,
    (round, rounds): (u32, u32),
) -> Vec<ScaleCell> {
    let of = if rounds > 1 {
        format!(" (round {} of {rounds})", round + 1)
    } else {
        String::new()
    };
    eprintln!("scale: {store}, {k} router and {k} adapter processes, {n} dossiers{of}");
    let cells = cell(bench, store == "postgres", server, k, n).await;
    for c in &cells {
        eprintln!(
            "  {:<10} {:>6.0} dossiers/s  bus {:.0} µs/dossier  broker {:.0}  PostgreSQL {}{}",
            c.path.name(),
            c.rate(),
            c.bus_us(),
            c.us(BROKER),
            c.uses
                .iter()
                .find(|u| u.class == POSTGRES)
                .map_or("–".into(), |_| format!("{:.0}", c.us(POSTGRES))),
            c.error
                .as_deref()
                .map_or(String::new(), |e| format!("  FAILED: {e}"))
        );
    }
    cells
}

/// The processes of a cell and the CPU they have used, to subtract at the end of a pass.
struct Meter {
    /// (kind, pid, CPU seconds at the start).
    procs: Vec<(&'static str, u32, f64)>,
    /// PostgreSQL's processes' CPU seconds at the start (backends that start later count from
    /// zero).
    pg: Option<HashMap<u32, f64>>,
    busy: Option<f64>,
    started: Instant,
}

impl Meter {
    fn start(procs: &[(&'static str, u32)], postgres: bool) -> Meter {
        Meter {
            procs: procs
                .iter()
                .map(|(k, p)| (*k, *p, procfs::cpu_seconds(*p).unwrap_or(0.0)))
                .collect(),
            pg: postgres.then(|| {
                procfs::pids_named("postgres")
                    .into_iter()
                    .filter_map(|p| Some((p, procfs::cpu_seconds(p)?)))
                    .collect()
            }),
            busy: procfs::machine_busy_seconds(),
            started: Instant::now(),
        }
    }

    /// CPU per kind since the start, and the machine's busy seconds and the wall time.
    fn stop(&self) -> (Vec<ClassUse>, Option<f64>, f64) {
        let mut uses: Vec<ClassUse> = Vec::new();
        let mut add = |class: &str, processes: usize, cpu: f64| match uses
            .iter_mut()
            .find(|u| u.class == class)
        {
            Some(u) => {
                u.processes += processes;
                u.cpu_s += cpu;
            }
            None => uses.push(ClassUse {
                class: class.into(),
                processes,
                cpu_s: cpu,
            }),
        };
        for (kind, pid, before) in &self.procs {
            let now = procfs::cpu_seconds(*pid).unwrap_or(*before);
            add(kind, 1, (now - before).max(0.0));
        }
        if let Some(before) = &self.pg {
            let pids = procfs::pids_named("postgres");
            if !pids.is_empty() {
                let cpu: f64 = pids
                    .iter()
                    .filter_map(|p| {
                        let now = procfs::cpu_seconds(*p)?;
                        Some((now - before.get(p).copied().unwrap_or(0.0)).max(0.0))
                    })
                    .sum();
                add(POSTGRES, pids.len(), cpu);
            }
        }
        let busy = self
            .busy
            .zip(procfs::machine_busy_seconds())
            .map(|(b, a)| a - b);
        (uses, busy, self.started.elapsed().as_secs_f64())
    }
}

/// Samples, five times a second, how many of the database's sessions wait for the store's
/// write lock (`pg_stat_activity`: `wait_event = 'advisory'`), which is where PostgreSQL
/// passes saturate when the machine is not busy.
struct LockSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<f64>>>,
}

impl LockSampler {
    /// Start sampling database `db` of `server` (a thread with a connection of its own).
    fn start(server: &str, db: &str) -> LockSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (server, db, flag) = (server.to_string(), db.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let conn = match lienthong_core::store::pg::PgConn::connect(&server) {
                Ok(c) => lienthong_core::store::db::Db::Pg(c),
                Err(e) => {
                    eprintln!("(the lock sampler cannot connect: {e})");
                    return None;
                }
            };
            let (mut samples, mut waiting) = (0u64, 0i64);
            while !flag.load(Ordering::Relaxed) {
                let n: i64 = conn
                    .query_row(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = ?1 AND wait_event = 'advisory'",
                        lienthong_core::params![db],
                        |r| r.get(0),
                    )
                    .map_err(|e| eprintln!("(the lock sampler stops: {e})"))
                    .ok()?;
                samples += 1;
                waiting += n;
                std::thread::sleep(Duration::from_millis(200));
            }
            (samples > 0).then(|| waiting as f64 / samples as f64)
        });
        LockSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop; the mean number of sessions waiting for the lock.
    fn stop(mut self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for LockSampler {
    /// A pass that failed before [`LockSampler::stop`]: the thread ends at its next sample
    /// (and closes its connection) instead of sampling for the rest of the run.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Start counting a pass: the CPU of every process, and on PostgreSQL (`database`) the write
/// lock's waiters.
fn start_meters(
    bench: &Bench,
    st: &Setup,
    server: &str,
    database: Option<&str>,
) -> (Meter, Option<LockSampler>) {
    let sampler = database.map(|d| LockSampler::start(server, &database_name(d)));
    (Meter::start(&kinds(bench, st), database.is_some()), sampler)
}

/// The database name of a `postgres://…/<db>?…` URL.
fn database_name(url: &str) -> String {
    url.split('?')
        .next()
        .and_then(|h| h.rsplit('/').next())
        .unwrap_or_default()
        .to_string()
}

/// One store and process count: the HTTP-adapter pass and the drain pass.
async fn cell(bench: &Bench, postgres: bool, server: &str, k: u32, n: u64) -> Vec<ScaleCell> {
    let store = if postgres { "PostgreSQL" } else { "SQLite" };
    let blank = |path| ScaleCell {
        store: store.into(),
        processes: k,
        path,
        dossiers: n,
        cores: procfs::machine().cores,
        ..ScaleCell::default()
    };
    let mut cells = vec![blank(Path::Http), blank(Path::Drain)];
    let prefix = bench.tag(&format!(
        "scale-{}{k}-",
        if postgres { "pg" } else { "sqlite" }
    ));
    let dir = bench.dir.join(&prefix);
    let mut st = Setup::new(Mode::Http);
    st.dir = Some(dir.clone());
    let mut database: Option<String> = None;
    let result: anyhow::Result<()> = async {
        let mock_port = free_port()?;
        let mut s = bench.bus_settings(&prefix, &dir, Some(mock_port))?;
        if postgres {
            let (on, name) = (server.to_string(), prefix.clone());
            let url =
                tokio::task::spawn_blocking(move || lienthong_testkit::pg::create_on(&on, &name))
                    .await??;
            if let Ok(mut d) = bench.cleanup.databases.lock() {
                d.push((server.to_string(), url.clone()));
            }
            database = Some(url.clone());
            s.store.url = url;
        }
        let config = bench.bus_topology(&s, &dir).await?;
        st.topology = Some(s.clone());
        let names = Names::new(&prefix);
        st.children.push(Child::spawn(
            &bench.mock,
            Some(&config),
            &[],
            &dir.join("mock.log"),
            MOCK,
        )?);
        wait_listening(&dir.join("mock.log"), MOCK_LISTENING, &s.mock.listen, 30).await?;
        wait_http(&format!("http://{}/_mock/stats", s.mock.listen), 30).await?;
        // The HTTP API first: it migrates the store before the others open it.
        st.children.push(Child::spawn(
            &bench.lienthong,
            Some(&config),
            &["run", "--components", "http,tracer"],
            &dir.join("front.log"),
            FRONT,
        )?);
        wait_listening(&dir.join("front.log"), HTTP_LISTENING, &s.http.listen, 60).await?;
        wait_http(&format!("http://{}/readyz", s.http.listen), 60).await?;
        for i in 1..=k {
            st.children.push(Child::spawn(
                &bench.lienthong,
                Some(&config),
                &["run", "--components", "router"],
                &dir.join(format!("router-{i}.log")),
                ROUTERS,
            )?);
        }
        let adapters = spawn_adapters(bench, &config, &dir, k)?;
        st.children.extend(adapters);
        let router_q = names.router_queue();
        let police_q = names.unit_queue(POLICE);
        bench
            .wait_consumers(
                &[(router_q.as_str(), k), (police_q.as_str(), k)],
                &mut st.children,
                90,
            )
            .await?;

        // 1. The HTTP-adapter path.
        let generator = Gen::new(
            &bench.sample,
            CENTRE,
            POLICE,
            bench.args.body_bytes,
            bench.seq.clone(),
        )?;
        let stall = Duration::from_secs(bench.args.stall_s);
        let centre_q = names.unit_queue(CENTRE);
        let book = Book::new(KeyBy::CorrelationId);
        let sink = traffic::sink(
            &bench.sconn,
            &centre_q,
            bench.args.prefetch,
            book.clone(),
            n,
            stall,
        )
        .await?;
        let plan = Plan {
            exchange: names.ingress_exchange(),
            routing_key: String::new(),
            count: n,
            window: bench.args.window,
            rate: None,
            max_in_flight: bench.args.max_in_flight,
            stall,
        };
        let (meter, sampler) = start_meters(bench, &st, server, database.as_deref());
        let produced =
            traffic::produce(&bench.pconn, &plan, &generator, KeyBy::CorrelationId, &book).await?;
        let sunk = sink.await.unwrap_or_default();
        let (uses, busy, _) = meter.stop();
        let c = &mut cells[0];
        c.lock_waiters = sampler.and_then(LockSampler::stop);
        c.moved = sunk.received;
        c.secs = sunk.last_arrival.map_or(0.0, |l| {
            l.saturating_duration_since(produced.first_send)
                .as_secs_f64()
        });
        c.uses = uses;
        c.busy_s = busy;
        if let Some(e) = sunk.error {
            c.error = Some(e.clone());
            anyhow::bail!("HTTP-adapter pass: {e}");
        }

        // 2. The backlog drain: the adapters stop, N dossiers pile up, k adapters drain them.
        let (adapters, others): (Vec<Child>, Vec<Child>) =
            st.children.drain(..).partition(|c| c.name == ADAPTERS);
        st.children = others;
        for a in adapters {
            a.stop().await;
        }
        let book = Book::new(KeyBy::CorrelationId);
        let sink = traffic::sink(
            &bench.sconn,
            &centre_q,
            bench.args.prefetch,
            book.clone(),
            n,
            Duration::from_secs(bench.args.stall_s.max(600)),
        )
        .await?;
        let plan = Plan {
            max_in_flight: u64::MAX / 2,
            ..plan
        };
        traffic::produce(&bench.pconn, &plan, &generator, KeyBy::CorrelationId, &book).await?;
        crate::backlog::wait_filled(bench, &police_q, n, stall).await?;
        let adapters = spawn_adapters(bench, &config, &dir, k)?;
        st.children.extend(adapters);
        let (meter, sampler) = start_meters(bench, &st, server, database.as_deref());
        let sunk = sink.await.unwrap_or_default();
        let (uses, busy, wall) = meter.stop();
        let c = &mut cells[1];
        c.lock_waiters = sampler.and_then(LockSampler::stop);
        c.moved = sunk.received;
        c.secs = sunk.last_arrival.map_or(wall, |l| {
            l.saturating_duration_since(meter.started).as_secs_f64()
        });
        c.uses = uses;
        c.busy_s = busy;
        if let Some(e) = sunk.error {
            c.error = Some(e.clone());
            anyhow::bail!("drain pass: {e}");
        }
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        for c in &mut cells {
            if c.moved < c.dossiers && c.error.is_none() {
                c.error = Some(format!("{e:#}"));
            }
        }
        eprintln!("scale cell failed: {e:#}");
        for c in &st.children {
            eprintln!("  ({} log: {})", c.name, c.log.display());
        }
    }
    bench.teardown(st, result.is_err()).await;
    if let Some(url) = database {
        let db = (server.to_string(), url);
        if let Ok(mut d) = bench.cleanup.databases.lock() {
            d.retain(|x| *x != db);
        }
        let _ = tokio::task::spawn_blocking(move || crate::cleanup::drop_databases(&[db])).await;
    }
    cells
}

/// `k` × `lienthong run --components adapters`.
fn spawn_adapters(
    bench: &Bench,
    config: &std::path::Path,
    dir: &std::path::Path,
    k: u32,
) -> anyhow::Result<Vec<Child>> {
    (1..=k)
        .map(|i| {
            Child::spawn(
                &bench.lienthong,
                Some(config),
                &["run", "--components", "adapters"],
                &dir.join(format!(
                    "adapters-{i}-{}.log",
                    uuid::Uuid::now_v7().simple()
                )),
                ADAPTERS,
            )
        })
        .collect()
}

/// Every process of a cell by kind: the children (named by kind), the bench, the broker.
fn kinds(bench: &Bench, st: &Setup) -> Vec<(&'static str, u32)> {
    let mut v: Vec<(&'static str, u32)> = st
        .children
        .iter()
        .filter_map(|c| {
            [ROUTERS, ADAPTERS, FRONT, MOCK]
                .into_iter()
                .find(|k| *k == c.name)
                .map(|k| (k, c.pid))
        })
        .collect();
    v.push((BENCH, std::process::id()));
    if let Some(b) = bench.broker_pid {
        v.push((BROKER, b));
    }
    v
}
