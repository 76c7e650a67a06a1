//! `--backlog N`: N dossiers for Police pile up in its queue while the adapters are down, then
//! drain once they start; fill and drain times, the results' arrival, CPU of each process.

use std::time::{Duration, Instant};

use lienthong_core::topology::Names;
use lienthong_testkit::procs::{
    HTTP_LISTENING, MOCK_LISTENING, free_port, wait_http, wait_listening,
};

use crate::children::Child;
use crate::cleanup::queue_counts;
use crate::long_runs::Backlog;
use crate::measures::ProcUse;
use crate::procfs;
use crate::procfs::check_disk;
use crate::results::Header;
use crate::round::{Bench, CENTRE, Mode, POLICE, Setup};
use crate::traffic::{self, Book, Gen, KeyBy, Plan};

/// Wait until `queue` holds `n` messages (the routers filling it); Err when its depth has not
/// changed for `stall`.
pub(crate) async fn wait_filled(
    bench: &Bench,
    queue: &str,
    n: u64,
    stall: Duration,
) -> anyhow::Result<()> {
    let mut last = (0u32, Instant::now());
    loop {
        let depth = queue_counts(&bench.ctl, queue).await.map_or(0, |c| c.0);
        if u64::from(depth) >= n {
            return Ok(());
        }
        if depth != last.0 {
            last = (depth, Instant::now());
        } else if last.1.elapsed() > stall {
            anyhow::bail!("the router stopped filling {queue} at {depth} of {n}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `--backlog N`: N dossiers for Police pile up while the adapters are down, then drain.
pub(crate) async fn backlog(bench: &Bench, n: u64, header: &mut Header) -> anyhow::Result<Backlog> {
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
            &bench.mock,
            Some(&config),
            &[],
            &dir.join("mock.log"),
            "lienthong-mock",
        )?);
        wait_listening(&dir.join("mock.log"), MOCK_LISTENING, &s.mock.listen, 30).await?;
 wait_http(&format!("http://{}/_mock/stats", s.mock.listen), 30).await?;
        st.children.push(Child::spawn(
            &bench.lienthong,
            Some(&config),
            &["run", "--components", "router,tracer,http"],
            &dir.join("run.log"),
            "lienthong run (router,tracer,http)",
        )?);
        bench
            .wait_consumers(
                &[
                    (names.router_queue().as_str(), 1),
                    // The tracer consumes `dead.log` in every mode (`trace.store` exists
                    // only with `[store] trace_direct = false`).
                    (names.dead_log_queue().as_str(), 1),
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
        wait_filled(bench, &police_q, n, stall).await?;
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
            &bench.lienthong,
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
                    if name.starts_with("lienthong") {
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
                name: crate::measures::OTHERS.into(),
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
