//! The benchmark's figures and their Markdown report (BENCHMARKS.md). Sections this run did
//! not produce (the soak and the backlog drain run in their own invocations, and
//! "Changes and their effect", which engineers write) are kept from the previous file.

use std::fmt::Write as _;

use super::procfs::Machine;
use super::traffic::percentile;

/// The section engineers write by hand; always carried over verbatim.
pub const CHANGES: &str = "## Changes and their effect";

/// The pseudo-process for the CPU time of everything else on the machine during a round.
pub const OTHERS: &str = "other processes (machine busy − the above)";

/// Canonical order of the sections.
const ORDER: [&str; 12] = [
    "## Machine and settings",
    "## Throughput",
    "## Latency at saturation",
    "## CPU and memory",
    "## Ratios",
    "## HTTP adapter, end to end",
    "## Paced latency",
    "## Router stages",
    "## Soak",
    "## Backlog drain",
    crate::scale_report::HEADING,
    CHANGES,
];

/// One process's share of a round.
#[derive(Debug, Clone)]
pub struct ProcUse {
    /// Which process (`bench`, `lienthong run`, `broker (beam.smp)`, …).
    pub name: String,
    /// CPU seconds (user + system) during the round.
    pub cpu_s: f64,
    /// Memory, KiB: peak (VmHWM) for children, resident at the end for the bench and the broker.
    pub rss_kib: Option<u64>,
    /// Bytes written to storage during the round ([`super::procfs::write_bytes`]), when
    /// readable.
    pub written: Option<u64>,
}

/// One round of one mode.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// 1-based.
    pub round: u32,
    /// Messages sent.
    pub count: u64,
    /// Distinct messages that reached the sink.
    pub moved: u64,
    /// First send to last arrival, s.
    pub secs: f64,
    /// moved / secs.
    pub rate: f64,
    /// End-to-end latencies, µs.
    pub lat_us: Vec<u32>,
    /// Processes involved.
    pub procs: Vec<ProcUse>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Extra deliveries (redeliveries) the sink saw.
    pub extra: u64,
    /// lienthong: seconds after the last arrival until the tracer had stored every trace event.
    pub trace_lag_s: Option<f64>,
    /// Set-up of the round (queues or topology declared, children started and consuming), s.
    pub set_up_s: f64,
    /// Wall-clock time of the whole round, s.
    pub wall_s: f64,
    /// lienthong: the router's stage times at the end of the round.
    pub stages: Vec<StageTimes>,
}

/// One stage of the router as `lienthong run` reports it (`lienthong_router_stage_seconds`).
#[derive(Debug, Clone, PartialEq)]
pub struct StageTimes {
    /// `store_write`, `publish_confirm` or `trace_write`.
    pub stage: String,
    /// Messages timed since the process started.
    pub count: u64,
    /// Median, ms, estimated from the histogram's buckets ([`bucket_quantile`]).
    pub p50_ms: f64,
    /// 90th percentile, ms, likewise.
    pub p90_ms: f64,
    /// 99th percentile, ms, likewise.
    pub p99_ms: f64,
    /// The histogram's finite bucket bounds, seconds, as the process defines them.
    pub bounds_s: Vec<f64>,
}

/// The bucket bounds (seconds) as the report says them: "0.5, 1, 2 … 500 ms, 1, 2.5 … 10 s".
fn bucket_bounds_text(bounds_s: &[f64]) -> String {
    let ms: Vec<String> = bounds_s
        .iter()
        .filter(|b| **b < 1.0)
        .map(|b| format!("{}", (b * 1e6).round() / 1e3))
        .collect();
    let s: Vec<String> = bounds_s
        .iter()
        .filter(|b| **b >= 1.0)
        .map(|b| format!("{b}"))
        .collect();
    match (ms.is_empty(), s.is_empty()) {
        (false, false) => format!("{} ms, {} s", ms.join(", "), s.join(", ")),
        (false, true) => format!("{} ms", ms.join(", ")),
        (true, _) => format!("{} s", s.join(", ")),
    }
}

/// The quantile `q` (0 to 1) of a Prometheus histogram given as its cumulative buckets
/// (upper bound, count) sorted by bound, the last one `+Inf`: the estimate Prometheus's
/// `histogram_quantile` makes, linear within the bucket the rank falls in (from 0 for the
/// first bucket); the highest finite bound when the rank falls in the `+Inf` bucket. NaN
/// for an empty histogram.
pub fn bucket_quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total == 0 {
        return f64::NAN;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(upper, count) in buckets {
        if count as f64 >= rank && count > below {
            if upper.is_infinite() {
                return lower;
            }
            return lower + (upper - lower) * (rank - below as f64) / (count - below) as f64;
        }
        (lower, below) = (upper, count);
    }
    lower
}

/// The router's stages from Prometheus text: the histogram lines
/// `lienthong_router_stage_seconds_bucket{stage="S",le="B"} N` (cumulative counts, bounds in
/// seconds), whose `+Inf` bucket is the stage's count. Stages without messages are left out.
pub fn parse_stages(text: &str) -> Vec<StageTimes> {
    const BUCKET: &str = "lienthong_router_stage_seconds_bucket{";
    let label = |l: &str, key: &str| -> Option<String> {
        let start = l.find(&format!("{key}=\""))? + key.len() + 2;
        let end = l[start..].find('"')? + start;
        Some(l[start..end].to_string())
    };
    let mut stages: Vec<(String, Vec<(f64, u64)>)> = Vec::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !series.starts_with(BUCKET) {
            continue;
        }
        let (Some(stage), Some(le), Ok(count)) = (
            label(series, "stage"),
            label(series, "le"),
            value.parse::<f64>(),
        ) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        match stages.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, b)) => b.push((bound, count as u64)),
            None => stages.push((stage, vec![(bound, count as u64)])),
        }
    }
    let mut out: Vec<StageTimes> = stages
        .into_iter()
        .filter_map(|(stage, mut b)| {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            let count = b.last().map(|x| x.1).unwrap_or(0);
            (count > 0).then(|| StageTimes {
                stage,
                count,
                p50_ms: bucket_quantile(&b, 0.5) * 1000.0,
                p90_ms: bucket_quantile(&b, 0.9) * 1000.0,
                p99_ms: bucket_quantile(&b, 0.99) * 1000.0,
                bounds_s: b.iter().map(|x| x.0).filter(|x| x.is_finite()).collect(),
            })
        })
        .collect();
    // The exporter's order is arbitrary; the report lists the stages in the message's order.
    let rank = |s: &StageTimes| {
        ["store_write", "publish_confirm", "trace_write"]
            .iter()
            .position(|x| *x == s.stage)
            .unwrap_or(3)
    };
    out.sort_by_key(rank);
    out
}

impl Round {
    /// Every message moved and nothing failed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.moved == self.count
    }
}

/// Every round of one mode.
#[derive(Debug, Clone)]
pub struct ModeRuns {
    /// Display name.
    pub name: String,
    /// What the mode measures (one line).
    pub what: String,
    /// Rounds run.
    pub rounds: Vec<Round>,
    /// Why the mode was skipped, if it was.
    pub skipped: Option<String>,
}

impl ModeRuns {
    /// Rates of the rounds, in order.
    pub fn rates(&self) -> Vec<f64> {
        self.rounds.iter().map(|r| r.rate).collect()
    }

    /// Median rate.
    pub fn median_rate(&self) -> Option<f64> {
        median(&self.rates())
    }

    /// Every latency of every round, sorted.
    pub fn latencies(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .rounds
            .iter()
            .flat_map(|r| r.lat_us.iter().copied())
            .collect();
        v.sort_unstable();
        v
    }

    /// Every round moved every message.
    pub fn ok(&self) -> bool {
        self.skipped.is_some() || (!self.rounds.is_empty() && self.rounds.iter().all(Round::ok))
    }
}

/// Median of `v` (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Where and with what the run happened.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// The machine.
    pub machine: Machine,
    /// RabbitMQ version (server property `version`).
    pub broker_version: String,
    /// How the broker process was found, and its pid.
    pub broker_pid: Option<u32>,
    /// `git rev-parse --short HEAD` (+ `-dirty`).
    pub commit: String,
    /// Local date and time of the run.
    pub date: String,
    /// The command line.
    pub command: String,
    /// Settings, as (name, value).
    pub settings: Vec<(String, String)>,
    /// Notes (plugin enabled, modes skipped, …).
    pub notes: Vec<String>,
    /// Wall-clock time of the whole invocation, s.
    pub wall_s: f64,
}

/// The soak: many messages through the router with its memory sampled every second.
#[derive(Debug, Clone, Default)]
pub struct Soak {
    /// The round (throughput, latency, processes).
    pub round: Round,
    /// (seconds since start, router child's VmRSS KiB).
    pub rss: Vec<(f64, u64)>,
    /// (seconds since start, router child's RssAnon KiB: heap and other private memory).
    pub anon: Vec<(f64, u64)>,
    /// Broker RSS at the start and the end, KiB.
    pub broker_rss: (Option<u64>, Option<u64>),
    /// Size of the store at the end, bytes.
    pub store_bytes: u64,
}

impl Soak {
    /// First, min, max and last sample, KiB.
    pub fn summary(&self) -> Option<(u64, u64, u64, u64)> {
        let first = self.rss.first()?.1;
        let last = self.rss.last()?.1;
        let min = self.rss.iter().map(|s| s.1).min()?;
        let max = self.rss.iter().map(|s| s.1).max()?;
        Some((first, min, max, last))
    }

    /// Stayed flat: last − first under 10 % of first, or under 8 MiB.
    pub fn flat(&self) -> Option<bool> {
        let (first, _, _, last) = self.summary()?;
        let growth = last.saturating_sub(first);
        Some(growth * 10 < first || growth < 8 * 1024)
    }
}

/// The backlog drain: a queue of dossiers for an agency emptied once the agency is back.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// Dossiers in the backlog.
    pub count: u64,
    /// Time the router took to fill the agency's queue, s.
    pub fill_s: f64,
    /// From the adapters' start to the first decrease of the depth, s.
    pub startup_s: f64,
    /// From the first decrease to an empty queue, s.
    pub drain_s: f64,
    /// From the adapters' start until every result was back at the centre, s.
    pub results_s: Option<f64>,
    /// Results back at the centre.
    pub results: u64,
    /// (seconds since the adapters' start, queue depth).
    pub depth: Vec<(f64, u64)>,
    /// Processes during the drain.
    pub procs: Vec<ProcUse>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl Backlog {
    /// Dossiers per second while draining.
    pub fn drain_rate(&self) -> f64 {
        if self.drain_s > 0.0 {
            self.count as f64 / self.drain_s
        } else {
            0.0
        }
    }
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Where and how.
    pub header: Header,
    /// The alternated modes, in order (direct, raw pipe, shovel, lienthong).
    pub modes: Vec<ModeRuns>,
    /// The HTTP adapter, end to end.
    pub http: Option<ModeRuns>,
    /// Paced runs (direct, raw pipe, lienthong).
    pub paced: Vec<ModeRuns>,
    /// The soak, when asked.
    pub soak: Option<Soak>,
    /// The backlog drain, when asked.
    pub backlog: Option<Backlog>,
    /// The scale run, when asked.
    pub scale: Option<crate::scale_report::Scale>,
}

fn ms(us: Option<u32>) -> String {
    us.map_or("–".into(), |u| format!("{:.3}", f64::from(u) / 1000.0))
}

fn rate(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.0}"))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("–".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn latency_row(name: &str, runs: &ModeRuns) -> String {
    let l = runs.latencies();
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} |\n",
        l.len(),
        ms(percentile(&l, 50.0)),
        ms(percentile(&l, 95.0)),
        ms(percentile(&l, 99.0)),
        ms(l.last().copied()),
        if runs.rounds.iter().any(|r| r.extra > 0) {
            format!(
                "{} redeliveries",
                runs.rounds.iter().map(|r| r.extra).sum::<u64>()
            )
        } else {
            String::new()
        }
    )
}

/// CPU and memory rows of a mode: one per process, CPU averaged over the rounds; then the
/// total of those processes; then what the rest of the machine used meanwhile.
fn cpu_rows(runs: &ModeRuns, out: &mut String) {
    let mut names: Vec<String> = Vec::new();
    for r in &runs.rounds {
        for p in &r.procs {
            if !names.contains(&p.name) && p.name != OTHERS {
                names.push(p.name.clone());
            }
        }
    }
    let n_rounds = runs.rounds.len().max(1) as f64;
    let moved: u64 = runs.rounds.iter().map(|r| r.moved).sum();
    let per_msg = |cpu: f64| {
        if moved > 0 {
            format!("{:.0}", cpu * 1e6 / moved as f64)
        } else {
            "–".into()
        }
    };
    let cpu_of = |name: &str| -> (f64, Option<u64>, Option<u64>, bool) {
        let uses: Vec<&ProcUse> = runs
            .rounds
            .iter()
            .flat_map(|r| r.procs.iter().filter(|p| p.name == name))
            .collect();
        (
            uses.iter().map(|p| p.cpu_s).sum(),
            uses.iter().filter_map(|p| p.rss_kib).max(),
            // Only when every round could read it.
            uses.iter().map(|p| p.written).sum(),
            !uses.is_empty(),
        )
    };
    let per_msg_kib = |bytes: Option<u64>| match bytes {
        Some(b) if moved > 0 => format!("{:.1}", b as f64 / 1024.0 / moved as f64),
        _ => "–".into(),
    };
    let (mut total, mut total_written) = (0.0, Some(0u64));
    for name in &names {
        let (cpu, rss, written, _) = cpu_of(name);
        total += cpu;
        total_written = total_written.zip(written).map(|(a, b)| a + b);
        let _ = writeln!(
            out,
            "| {} | {name} | {:.2} | {} | {} | {} |",
            runs.name,
            cpu / n_rounds,
            per_msg(cpu),
            mib(rss),
            per_msg_kib(written)
        );
    }
    let _ = writeln!(
        out,
        "| {} | **all of the above** | {:.2} | {} | | {} |",
        runs.name,
        total / n_rounds,
        per_msg(total),
        per_msg_kib(total_written)
    );
    let (others, _, _, seen) = cpu_of(OTHERS);
    if seen {
        let _ = writeln!(
            out,
            "| {} | *{OTHERS}* | {:.2} | | | |",
            runs.name,
            others / n_rounds
        );
    }
}

/// The sections this run produced, as (heading, body).
pub fn sections(r: &Results) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let h = &r.header;
    let m = &h.machine;
    let machine_line = format!(
        "{} ({} logical CPUs), {:.1} GiB RAM; {} (kernel {}); RabbitMQ {}; lienthong {}",
        m.cpu,
        m.cores,
        m.ram_bytes as f64 / (1u64 << 30) as f64,
        m.os,
        m.kernel,
        h.broker_version,
        h.commit
    );
    let partial = r.modes.is_empty();
    if !partial {
        let mut s = String::new();
        let _ = writeln!(s, "- date: {}", h.date);
        let _ = writeln!(s, "- command: `{}`", h.command);
        let _ = writeln!(s, "- machine: {machine_line}");
        let _ = writeln!(
            s,
            "- broker process: {}",
            h.broker_pid.map_or(
                "not found (its CPU and memory are not reported)".into(),
                |p| { format!("beam.smp pid {p}") }
            )
        );
        for (k, v) in &h.settings {
            let _ = writeln!(s, "- {k}: {v}");
        }
        for n in &h.notes {
            let _ = writeln!(s, "- note: {n}");
        }
        let _ = writeln!(s, "- wall-clock time of the invocation: {:.0} s", h.wall_s);
        s.push_str(
            "\nEvery mode uses the same producer (persistent messages, publisher confirms with a \
             window of outstanding confirms, a bound on messages in flight) and the same sink \
             (manual acks, the same prefetch) in the bench process, the same envelopes (a birth \
             dossier padded with Vietnamese text to the body size, a fresh UUIDv7 each) and \
             quorum queues with lienthong's work-queue arguments. Latency = arrival at the sink \
             − send, both read in the bench process. Throughput = messages ÷ (last arrival − \
             first send). Modes alternate round by round.\n",
        );
        s.push_str("\n| mode | path |\n|---|---|\n");
        for mr in r.modes.iter().chain(r.http.iter()) {
            let _ = writeln!(s, "| {} | {} |", mr.name, mr.what);
        }
        out.push((ORDER[0].to_string(), s));

        let mut s = String::from(
            "| mode | median msg/s | min | max | per round | \n|---|---:|---:|---:|---|\n",
        );
        for mr in &r.modes {
            if let Some(why) = &mr.skipped {
                let _ = writeln!(s, "| {} | skipped: {why} | | | |", mr.name);
                continue;
            }
            let rates = mr.rates();
            let per: Vec<String> = mr
                .rounds
                .iter()
                .map(|x| {
                    if x.ok() {
                        format!("{:.0}", x.rate)
                    } else {
                        format!(
                            "{:.0} (FAILED: {} of {} moved{})",
                            x.rate,
                            x.moved,
                            x.count,
                            x.error
                                .as_deref()
                                .map_or(String::new(), |e| format!("; {e}"))
                        )
                    }
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                mr.name,
                rate(mr.median_rate()),
                rate(rates.iter().copied().min_by(f64::total_cmp)),
                rate(rates.iter().copied().max_by(f64::total_cmp)),
                per.join(", ")
            );
        }
        let lags: Vec<String> = r
            .modes
            .iter()
            .flat_map(|m| m.rounds.iter())
            .filter_map(|x| x.trace_lag_s.map(|l| format!("{l:.1}")))
            .collect();
        if !lags.is_empty() {
            let _ = writeln!(
                s,
                "\nlienthong: the tracer had stored every trace event {} s after the last message reached the sink (per round).",
                lags.join(", ")
            );
        }
        out.push((ORDER[1].to_string(), s));

        let mut s = String::from(
            "Producer at full speed (bounded by the window and the in-flight limit), so this is \
             latency at saturation, mostly queueing; see [Paced latency](#paced-latency) below \
             saturation. All rounds pooled.\n\n| mode | messages | p50 ms | p95 ms | p99 ms | max ms | |\n|---|---:|---:|---:|---:|---:|---|\n",
        );
        for mr in r.modes.iter().filter(|m| m.skipped.is_none()) {
            s.push_str(&latency_row(&mr.name, mr));
        }
        out.push((ORDER[2].to_string(), s));

        let mut s = String::from(
            "CPU seconds (user + system, from /proc/<pid>/stat before and after each round), \
             averaged per round, and per message moved; memory: peak RSS (VmHWM) of child \
             processes, RSS at the end of the round for the bench process and the broker \
             (largest over the rounds). The last row of each mode is the CPU time the rest of the machine \
             used meanwhile (from /proc/stat): other work on a shared machine skews the figures. \
             Written: bytes the process wrote to disk files per message moved (`write_bytes` of \
             /proc/<pid>/io; the broker's queue logs, the router's SQLite store), which share \
             the disk and its syncs unless `--store-dir` is on another one.\n\n| mode | process | CPU s / round | CPU µs / message | RSS MiB | written KiB / message |\n|---|---|---:|---:|---:|---:|\n",
        );
        for mr in r
            .modes
            .iter()
            .chain(r.http.iter())
            .chain(r.paced.iter())
            .filter(|m| m.skipped.is_none())
        {
            cpu_rows(mr, &mut s);
        }
        out.push((ORDER[3].to_string(), s));

        let find = |name: &str| {
            r.modes
                .iter()
                .find(|m| m.name == name && m.skipped.is_none())
                .and_then(ModeRuns::median_rate)
        };
        let lt = find("lienthong");
        let mut s = String::from("Of the median msg/s.\n\n| ratio | value |\n|---|---:|\n");
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        for (label, v) in [
            ("lienthong ÷ raw pipe", ratio(lt, find("raw pipe"))),
            ("lienthong ÷ shovel", ratio(lt, find("shovel"))),
            ("lienthong ÷ direct", ratio(lt, find("direct"))),
            ("raw pipe ÷ shovel", ratio(find("raw pipe"), find("shovel"))),
        ] {
            let _ = writeln!(s, "| {label} | {v} |");
        }
        out.push((ORDER[4].to_string(), s));

        if let Some(mr) = &r.http {
            let mut s = format!("{}\n\n", mr.what);
            if let Some(why) = &mr.skipped {
                let _ = writeln!(s, "skipped: {why}");
            } else {
                let l = mr.latencies();
                s.push_str("| dossiers | moved | msg/s | p50 ms | p95 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|---:|\n");
                for x in &mr.rounds {
                    let _ = writeln!(
                        s,
                        "| {} | {}{} | {:.0} | {} | {} | {} | {} |",
                        x.count,
                        x.moved,
                        x.error
                            .as_deref()
                            .map_or(String::new(), |e| format!(" (FAILED: {e})")),
                        x.rate,
                        ms(percentile(&l, 50.0)),
                        ms(percentile(&l, 95.0)),
                        ms(percentile(&l, 99.0)),
                        ms(l.last().copied())
                    );
                }
            }
            out.push((ORDER[5].to_string(), s));
        }

        if !r.paced.is_empty() {
            let mut s = String::from(
                "The producer sends at a fixed rate (below saturation); latency is then the \
                 path's own; the raw pipe's two quorum-queue hops are the broker's own floor for \
                 lienthong's. Each run follows a warm-up at the same rate that is not counted \
                 (the quorum queues were declared just before).\n\n| mode | rate asked msg/s | achieved msg/s | messages | p50 ms | p95 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for mr in &r.paced {
                let l = mr.latencies();
                let asked = h
                    .settings
                    .iter()
                    .find(|(k, _)| k == "paced rate")
                    .map_or(String::new(), |(_, v)| v.clone());
                for x in &mr.rounds {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {:.0} | {}{} | {} | {} | {} | {} |",
                        mr.name,
                        asked.trim_end_matches(" msg/s"),
                        x.rate,
                        x.moved,
                        x.error
                            .as_deref()
                            .map_or(String::new(), |e| format!(" (FAILED: {e})")),
                        ms(percentile(&l, 50.0)),
                        ms(percentile(&l, 95.0)),
                        ms(percentile(&l, 99.0)),
                        ms(l.last().copied())
                    );
                }
            }
            out.push((ORDER[6].to_string(), s));
        }
        let with_stages: Vec<&ModeRuns> = r
            .modes
            .iter()
            .chain(r.paced.iter())
            .filter(|m| m.rounds.iter().any(|x| !x.stages.is_empty()))
            .collect();
        // The bounds `lienthong run` defines (`lienthong::run::STAGE_BUCKETS_S`), as its
        // `/metrics` gave them.
        let bounds = with_stages
            .iter()
            .flat_map(|m| m.rounds.iter())
            .flat_map(|x| x.stages.iter())
            .map(|st| st.bounds_s.as_slice())
            .find(|b| !b.is_empty())
            .unwrap_or_default();
        if !with_stages.is_empty() {
            let mut s = format!(
                "What a routed message waits for in `lienthong run`, from its \
                 `lienthong_router_stage_seconds` histogram on `/metrics`, read at the end of each \
                 round (a fresh process per round, so the whole round, warm-up included): the \
                 quantiles are estimated from the buckets as Prometheus's `histogram_quantile` \
                 does (linear within a bucket; bounds {}): `store_write`, \
                 the message store's group commit (beside the publish, except a centre's first \
                 forward); `publish_confirm`, publish to the unit's queue until the broker's \
                 confirm; `trace_write`, the trace events' commit before the ack.\n\n\
                 | mode | round | stage | messages | p50 ms | p90 ms | p99 ms |\n|---|---:|---|---:|---:|---:|---:|\n",
                bucket_bounds_text(bounds)
            );
            for mr in with_stages {
                for x in &mr.rounds {
                    for st in &x.stages {
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} |",
                            mr.name, x.round, st.stage, st.count, st.p50_ms, st.p90_ms, st.p99_ms
                        );
                    }
                }
            }
            out.push((ORDER[7].to_string(), s));
        }
    }

    if let Some(soak) = &r.soak {
        let mut s = format!("Run {} (`{}`) on {machine_line}.\n\n", h.date, h.command);
        let x = &soak.round;
        let l = {
            let mut v = x.lat_us.clone();
            v.sort_unstable();
            v
        };
        let _ = writeln!(
            s,
            "{} of {} messages through `lienthong run --components router,tracer,http` in {:.0} s: **{:.0} msg/s**; latency p50 {} ms, p95 {} ms, p99 {} ms{}.",
            x.moved,
            x.count,
            x.secs,
            x.rate,
            ms(percentile(&l, 50.0)),
            ms(percentile(&l, 95.0)),
            ms(percentile(&l, 99.0)),
            x.error
                .as_deref()
                .map_or(String::new(), |e| format!(" — FAILED: {e}"))
        );
        if let Some((first, min, max, last)) = soak.summary() {
            let _ = writeln!(
                s,
                "\nRouter process RSS, sampled every second ({} samples):\n\n| first MiB | min MiB | max MiB | last MiB | last − first | flat? |\n|---:|---:|---:|---:|---:|---|\n| {} | {} | {} | {} | {:+.1} MiB | {} |",
                soak.rss.len(),
                mib(Some(first)),
                mib(Some(min)),
                mib(Some(max)),
                mib(Some(last)),
                (last as f64 - first as f64) / 1024.0,
                match soak.flat() {
                    Some(true) => "yes (growth < 10 % or < 8 MiB)",
                    Some(false) => "**no**",
                    None => "–",
                }
            );
            let step = (soak.rss.len() / 12).max(1);
            let mut idx: Vec<usize> = (0..soak.rss.len()).step_by(step).collect();
            if idx.last() != Some(&(soak.rss.len() - 1)) {
                idx.push(soak.rss.len() - 1);
            }
            let pts: Vec<String> = idx
                .iter()
                .map(|i| {
                    let (t, k) = soak.rss[*i];
                    let anon = soak.anon.get(*i).map(|a| a.1);
                    format!("{t:.0} s: {} ({} anon)", mib(Some(k)), mib(anon))
                })
                .collect();
            let _ = writeln!(
                s,
                "\nSamples, VmRSS MiB (RssAnon MiB: heap and private memory; the rest is file-backed, e.g. the store's mapped WAL index): {}.",
                pts.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "\nBroker RSS {} → {} MiB; store file at the end {:.0} MiB.",
            mib(soak.broker_rss.0),
            mib(soak.broker_rss.1),
            soak.store_bytes as f64 / (1u64 << 20) as f64
        );
        s.push_str("\n| process | CPU s | CPU µs / message | RSS MiB |\n|---|---:|---:|---:|\n");
        for p in &x.procs {
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:.0} | {} |",
                p.name,
                p.cpu_s,
                if x.moved > 0 {
                    p.cpu_s * 1e6 / x.moved as f64
                } else {
                    0.0
                },
                mib(p.rss_kib)
            );
        }
        out.push((ORDER[8].to_string(), s));
    }

    if let Some(b) = &r.backlog {
        let mut s = format!("Run {} (`{}`) on {machine_line}.\n\n", h.date, h.command);
        let _ = writeln!(
            s,
            "{} dossiers for Police (`CA.H48`, police-rest adapter) piled up in its queue while \
             `lienthong run --components router,tracer,http` ran without the adapters (filled \
             in {:.1} s); then `lienthong run --components adapters` started against the mock \
             agency (latency 0, no failures, callback without delay).{}\n",
            b.count,
            b.fill_s,
            b.error
                .as_deref()
                .map_or(String::new(), |e| format!(" — FAILED: {e}"))
        );
        let _ = writeln!(
            s,
            "| adapters' start to first dossier out s | drain s (first out → empty) | **drain rate dossiers/s** | results back at the centre | all results back after s |\n|---:|---:|---:|---:|---:|\n| {:.1} | {:.1} | **{:.0}** | {} | {} |",
            b.startup_s,
            b.drain_s,
            b.drain_rate(),
            b.results,
            b.results_s.map_or("–".into(), |t| format!("{t:.1}"))
        );
        let step = (b.depth.len() / 12).max(1);
        let pts: Vec<String> = b
            .depth
            .iter()
            .step_by(step)
            .chain(b.depth.last())
            .map(|(t, d)| format!("{t:.1} s: {d}"))
            .collect();
        let _ = writeln!(
            s,
            "\nQueue depth (message_count of a passive queue.declare): {}.",
            pts.join(", ")
        );
        s.push_str("\n| process (during the drain) | CPU s | RSS MiB |\n|---|---:|---:|\n");
        for p in &b.procs {
            let _ = writeln!(s, "| {} | {:.1} | {} |", p.name, p.cpu_s, mib(p.rss_kib));
        }
        out.push((ORDER[9].to_string(), s));
    }

    if let Some(sc) = &r.scale {
        let run = format!("Run {} (`{}`) on {machine_line}.", h.date, h.command);
        out.push((
            crate::scale_report::HEADING.to_string(),
            crate::scale_report::section(sc, &run),
        ));
    }
    out
}

/// Split a Markdown file into its preamble and its `## ` sections (heading line, body).
pub fn split_sections(text: &str) -> (String, Vec<(String, String)>) {
    let mut pre = String::new();
    let mut secs: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("## ") {
            secs.push((line.trim_end().to_string(), String::new()));
        } else if let Some(last) = secs.last_mut() {
            last.1.push_str(line);
        } else {
            pre.push_str(line);
        }
    }
    (pre, secs)
}

const DEFAULT_CHANGES: &str = "Record each optimisation here: what changed (commit), and the figures before and after \
(mode, msg/s, p99). `lienthong-bench` keeps this section as it is when it rewrites the file.\n";

/// The new file: this run's sections, the previous file's other sections, and "Changes and
/// their effect" verbatim from the previous file.
pub fn render(r: &Results, previous: Option<&str>) -> String {
    let new = sections(r);
    let (_, old) = previous.map(split_sections).unwrap_or_default();
    let mut text = String::from(
        "# lienthong benchmarks\n\nWritten by `lienthong-bench` (`cargo build --release --workspace \
         --bins`, then `./target/release/lienthong-bench`; see `lienthong-bench --help`). Do not edit by hand, except the section \
         \"Changes and their effect\", which the harness keeps. The soak, the backlog drain and \
         the scale run run in their own invocations (`--soak N`, `--backlog N`, `--scale N`), \
         which update only their sections.\n\n",
    );
    let mut emitted: Vec<String> = Vec::new();
    let push = |text: &mut String, heading: &str, body: &str| {
        text.push_str(heading);
        text.push('\n');
        if !body.starts_with('\n') {
            text.push('\n');
        }
        text.push_str(body.trim_end_matches('\n'));
        text.push_str("\n\n");
    };
    for heading in ORDER {
        if heading == CHANGES {
            // Other sections someone added to the file stay, before the changes.
            for (h, b) in &old {
                if !ORDER.contains(&h.as_str()) && !emitted.contains(h) {
                    push(&mut text, h, b);
                    emitted.push(h.clone());
                }
            }
        }
        if let Some((_, b)) = new.iter().find(|(h, _)| h == heading) {
            push(&mut text, heading, b);
        } else if let Some((_, b)) = old.iter().find(|(h, _)| h == heading) {
            push(&mut text, heading, b);
        } else if heading == CHANGES {
            push(&mut text, heading, DEFAULT_CHANGES);
        }
        emitted.push(heading.to_string());
    }
    while text.ends_with("\n\n") {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report names the router's histogram buckets as `lienthong run` defines them
    /// (`lienthong::run::STAGE_BUCKETS_S`).
    #[test]
    fn the_bucket_bounds_are_said_in_ms_then_s() {
        let bounds = [
            0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
            0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        assert_eq!(
            bucket_bounds_text(&bounds),
            "0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 250, 500 ms, 1, 2.5, 5, 10 s"
        );
    }

    #[test]
    fn router_stages_from_prometheus_text() {
        let text = "# TYPE lienthong_router_stage_seconds histogram
lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"0.005\"} 400
lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"0.01\"} 900
lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"0.025\"} 990
lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"+Inf\"} 1000
lienthong_router_stage_seconds_sum{stage=\"publish_confirm\"} 7.5
lienthong_router_stage_seconds_count{stage=\"publish_confirm\"} 1000
lienthong_router_stage_seconds_bucket{stage=\"trace_write\",le=\"0.005\"} 0
lienthong_router_stage_seconds_bucket{stage=\"trace_write\",le=\"+Inf\"} 0
lienthong_process_alerts_open{level=\"overdue\"} 2
";
        let st = parse_stages(text);
        assert_eq!(st.len(), 1, "{st:?}");
        assert_eq!(st[0].stage, "publish_confirm");
        assert_eq!(st[0].count, 1000);
        assert_eq!(st[0].bounds_s, [0.005, 0.01, 0.025]);
        // Rank 500 lies in (5, 10] ms, 100 of its 500: 5 + 5 × 100/500 = 6 ms.
        assert!((st[0].p50_ms - 6.0).abs() < 1e-9, "{st:?}");
        // Rank 900 is the top of (5, 10] ms.
        assert!((st[0].p90_ms - 10.0).abs() < 1e-9, "{st:?}");
        // Rank 990 is the top of (10, 25] ms.
        assert!((st[0].p99_ms - 25.0).abs() < 1e-9, "{st:?}");
    }

    #[test]
    fn a_quantile_in_the_overflow_bucket_is_the_highest_finite_bound() {
        let b = [(0.001, 10), (0.002, 20), (f64::INFINITY, 100)];
        assert!((bucket_quantile(&b, 0.99) - 0.002).abs() < 1e-12);
        // Rank 5 of the first bucket: 0 + 1 ms × 5/10.
        assert!((bucket_quantile(&b, 0.05) - 0.0005).abs() < 1e-12);
        assert!(bucket_quantile(&[(f64::INFINITY, 0)], 0.5).is_nan());
        assert!(bucket_quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn keeps_changes_and_other_runs_sections() {
        let previous = "# old\n\n## Throughput\n\nold figures\n\n## Soak\n\nold soak\n\n## Notes\n\nmine\n\n## Changes and their effect\n\n- 2026-01-01 router: batch confirms, +40 %\n  (details)\n";
        let r = Results {
            modes: vec![ModeRuns {
                name: "direct".into(),
                what: "producer → queue → sink".into(),
                rounds: vec![Round {
                    round: 1,
                    count: 10,
                    moved: 10,
                    secs: 1.0,
                    rate: 10.0,
                    lat_us: vec![1000, 2000],
                    ..Round::default()
                }],
                skipped: None,
            }],
            ..Results::default()
        };
        let text = render(&r, Some(previous));
        assert!(text.contains("old soak"));
        assert!(!text.contains("old figures"));
        assert!(text.contains("## Notes\n\nmine"));
        assert!(text.contains(
            "## Changes and their effect\n\n- 2026-01-01 router: batch confirms, +40 %\n  (details)\n"
        ));
        assert!(text.find("## Notes") < text.find(CHANGES));
        let fresh = render(&r, None);
        assert!(fresh.contains(DEFAULT_CHANGES.trim_end()));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
