//! The benchmark run from the options to the report: connections, the run's header (machine,
//! broker, commit), the comparison or the soak or the backlog, clean-up, and BENCHMARKS.md
//! written (beside it when a mode failed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use lienthong_core::registry::Settings;

use crate::args::BenchArgs;
use crate::children::RunLock;
use crate::cleanup::Cleanup;
use crate::compare::run_all;
use crate::measures::ModeRuns;
use crate::report::{self};
use crate::results::{Header, Results};
use crate::round::{Bench, CENTRE, CIVIL, KEEP_UNITS, PACED_WARM_UP};
use crate::{broker, procfs, traffic};

/// Where the report of a run in which some mode failed goes: beside `out`, with `.failed`
/// before the extension (`BENCHMARKS.md` → `BENCHMARKS.failed.md`), so that the tables of the
/// last good run stay.
pub(crate) fn failed_report_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
    let name = match out.extension() {
        Some(ext) => format!("{stem}.failed.{}", ext.to_string_lossy()),
        None => format!("{stem}.failed"),
    };
    out.with_file_name(name)
}

pub(crate) fn git_commit() -> String {
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

/// Run the benchmark.
pub async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut args = args;
    if args.smoke {
        args.rounds = 2;
        args.messages = 300;
        // One point of the sweep (its largest value), one round: the sweep and the anchors'
        // best-prefetch rounds run, briefly.
        args.sweep_prefetch = args.sweep_points().last().copied().into_iter().collect();
        args.sweep_rounds = 1;
        args.sweep_messages = Some(300);
        args.paced_seconds = 2;
        args.paced_rounds = 1;
        args.http_messages = Some(300);
        args.soak = None;
        args.backlog = None;
        args.scale = None;
        args.stall_s = args.stall_s.min(20);
        args.console = None;
    } else if args.rounds < 3
        && args.soak.is_none()
        && args.backlog.is_none()
        && args.scale.is_none()
        && args.console.is_none()
    {
        anyhow::bail!(
            "--rounds must be at least 3 (medians and spreads need them); use --smoke for a quick check"
        );
    }
    if args.messages == 0
        || args.window == 0
        || args.max_in_flight == 0
        || args.paced_rate <= 0.0
        || args.paced_rounds == 0
    {
        anyhow::bail!(
            "--messages, --window, --max-in-flight, --paced-rate and --paced-rounds must be positive"
        );
    }
    if args.prefetch == 0
        || args.sweep_points().contains(&0)
        || args.sweep_rounds == 0
        || args.sweep_messages == Some(0)
    {
        anyhow::bail!(
            "--prefetch, --sweep-prefetch, --sweep-rounds and --sweep-messages must be positive"
        );
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
    let ctl = lienthong_testkit::procs::connect(&settings, "bench").await?;
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
        body_bytes: args.body_bytes,
        prefetch: args.prefetch,
        paced_rate: args.paced_rate,
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
        ("prefetch sweep".into(), {
            let v = args.sweep_points();
            if v.is_empty() {
                "none (--no-sweep): the anchors run at the bench's prefetch only".into()
            } else {
                format!(
                    "{} for the raw pipes and the shovels, {} round(s) × {} messages per point; then each anchor's best also in the alternating rounds",
                    v.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
                    args.sweep_rounds,
                    args.sweep_messages.unwrap_or((args.messages / 2).max(1))
                )
            }
        }),
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
                "{} run(s) of each paced mode, the modes alternating; {} s each ({paced_count} messages), after a warm-up of {} s at the same rate that is not counted",
                args.paced_rounds,
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
                args.router_prefetch,
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
        databases: Mutex::new(Vec::new()),
    });
    let bench = Bench {
        args: args.clone(),
        base: settings,
        url,
        prefix: prefix.clone(),
        dir: dir.clone(),
        lienthong: lienthong_testkit::procs::exe("lienthong", "LIENTHONG_BIN")?,
        mock: lienthong_testkit::procs::exe("lienthong-mock", "LIENTHONG_MOCK_BIN")?,
        me: std::env::current_exe()?,
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
        "lienthong-bench: prefix {prefix}, working directory {}, RabbitMQ {} (pid {}), report → {}",
        dir.display(),
        header.broker_version,
        broker_pid.map_or("?".into(), |p| p.to_string()),
        out_path.display()
    );

    if let Some(n) = args.console {
        let outcome = tokio::select! {
            r = crate::console::console(&bench, n) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        for p in cleanup.finish(Some(&bench.ctl)).await {
            eprintln!("clean-up: {p}");
        }
        if args.keep_dir {
            eprintln!("logs and store kept in {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let md = outcome?;
        println!("{md}");
        if let Some(p) = &args.out {
            std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
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
        && results.sweep.as_ref().is_none_or(crate::anchors::Sweep::ok)
        && results.http.as_ref().is_none_or(ModeRuns::ok)
        && results.paced.iter().all(ModeRuns::ok)
        && results.soak.as_ref().is_none_or(|s| s.round.ok())
        && results.backlog.as_ref().is_none_or(|b| b.error.is_none())
        && results
            .scale
            .as_ref()
            .is_none_or(crate::scale_report::Scale::ok);
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

/// Where the stores go, for the report: the directory and whether its filesystem is the
/// broker's data directory's (the store's writes then compete with the broker's syncs).
pub(crate) fn store_placement(store: &Path, broker_data: &Path) -> String {
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
    pub(crate) fn a_failed_runs_report_goes_beside_the_report() {
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
