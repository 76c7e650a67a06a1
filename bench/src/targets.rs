//! Issue 21's targets, each computed from the report's own figures: the comparison run's
//! (CPU and bytes per dossier, the throughput ratios to the best anchors, the paced p99) and the
//! sections that other invocations write (the backlog drain, the soak, the scale run), read back
//! from the report; one row per target with the measured value, the limit, met or not, and
//! where the figure comes from.

use std::fmt::Write as _;

use crate::anchors::{self, LIENTHONG, PIPE_PLAIN, SHOVEL};
use crate::measures::ModeRuns;
use crate::read_back;
use crate::results::{BACKLOG, Results, SOAK};

/// The section's heading.
pub const HEADING: &str = "## Targets (issue 21)";

/// The body size the targets are set for (5 KiB).
const TARGET_BODY: usize = 5120;
/// The paced rate of the p99 target, msg/s.
const TARGET_RATE: f64 = 1000.0;
/// The soak's length of the memory target.
const TARGET_SOAK: u64 = 1_000_000;

const CPU_HTTP: &str = "bus CPU ≤ broker CPU per dossier, HTTP-adapter path";
const CPU_DRAIN: &str = "bus CPU ≤ broker CPU per dossier, backlog drain";
const CPU_HTTP_SCALE: &str = "bus CPU ≤ broker CPU per dossier, HTTP-adapter path (scale run)";
const CPU_DRAIN_SCALE: &str = "bus CPU ≤ broker CPU per dossier, backlog drain (scale run)";
const BYTES_ROUTED: &str = "bytes the bus writes per dossier ≤ 4 × body, routed path";
const BYTES_HTTP: &str = "bytes the bus writes per dossier ≤ 4 × body, HTTP-adapter path";
/// The routed path's bytes at the paced rate too: the saturated run's commits carry many
/// messages each, a province's traffic is nearer the paced rate, with smaller commits.
const BYTES_PACED: &str = "bytes the bus writes per dossier ≤ 4 × body, routed path at 1,000 msg/s";
const VS_PIPE: &str = "routed msg/s ≥ 0.8 × best plain raw pipe";
const VS_SHOVEL: &str = "routed msg/s ≥ 0.8 × best in-node shovel";
const PACED: &str = "paced p99 at 1,000 msg/s < 25 ms";
const RSS: &str = "RSS flat over 1 M messages";
const PG_HTTP: &str = "PostgreSQL ≤ 1.5 × SQLite's bus CPU per dossier, HTTP-adapter path";
const PG_DRAIN: &str = "PostgreSQL ≤ 1.5 × SQLite's bus CPU per dossier, backlog drain";

/// The rows a comparison run computes (kept from the previous report by other invocations).
const COMPARISON_ROWS: [&str; 7] = [
    CPU_HTTP,
    BYTES_ROUTED,
    BYTES_PACED,
    BYTES_HTTP,
    VS_PIPE,
    VS_SHOVEL,
    PACED,
];

/// Met or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    NotMet,
    Unmeasured,
}

/// One target.
#[derive(Debug, Clone)]
struct Row {
    target: &'static str,
    measured: String,
    limit: &'static str,
    verdict: Verdict,
    /// Why the figure is not quite the target's (fewer rounds, another body size, …).
    caveat: Option<String>,
    from: String,
}

impl Row {
    fn new(target: &'static str, limit: &'static str, from: String) -> Row {
        Row {
            target,
            measured: "–".into(),
            limit,
            verdict: Verdict::Unmeasured,
            caveat: None,
            from,
        }
    }

    /// Not measured, and why.
    fn unmeasured(mut self, why: impl Into<String>) -> Row {
        self.measured = why.into();
        self.verdict = Verdict::Unmeasured;
        self
    }

    /// Measured: met when `ok`.
    fn judged(mut self, measured: String, ok: bool) -> Row {
        self.measured = measured;
        self.verdict = if ok { Verdict::Met } else { Verdict::NotMet };
        self
    }

    fn caveat(mut self, c: Option<String>) -> Row {
        if self.verdict != Verdict::Unmeasured {
            self.caveat = c;
        }
        self
    }

    fn line(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Met => "**met**",
            Verdict::NotMet => "**not met**",
            Verdict::Unmeasured => "not measured",
        };
        let caveat = self
            .caveat
            .as_deref()
            .map_or(String::new(), |c| format!(" ({c})"));
        format!(
            "| {} | {} | {} | {verdict}{caveat} | {} |",
            self.target, self.measured, self.limit, self.from
        )
    }
}

/// The section: one row per target, then the count.
pub fn section(r: &Results, body: &[(String, String)], previous: Option<&str>) -> String {
    let get = |h: &str| body.iter().find(|(x, _)| x == h).map(|(_, b)| b.as_str());
    let mut lines: Vec<String> = Vec::new();
    if r.modes.is_empty() {
        // Not a comparison run: its rows as the last comparison run left them.
        for key in COMPARISON_ROWS {
            let kept = previous.and_then(|p| {
                p.lines()
                    .find(|l| l.starts_with(&format!("| {key} |")))
                    .map(str::to_string)
            });
            lines.push(kept.unwrap_or_else(|| {
                Row::new(key, limit_of(key), "–".into())
                    .unmeasured(
                        "no comparison run since this section was added: run `lienthong-bench`",
                    )
                    .line()
            }));
        }
    } else {
        lines.extend(comparison_rows(r).iter().map(Row::line));
    }
    lines.push(backlog_row(get(BACKLOG)).line());
    for row in scale_rows(get(crate::scale_report::HEADING)) {
        lines.push(row.line());
    }
    lines.push(soak_row(get(SOAK)).line());
    let order = [
        CPU_HTTP,
        CPU_DRAIN,
        CPU_HTTP_SCALE,
        CPU_DRAIN_SCALE,
        BYTES_ROUTED,
        BYTES_PACED,
        BYTES_HTTP,
        VS_PIPE,
        VS_SHOVEL,
        PACED,
        RSS,
        PG_HTTP,
        PG_DRAIN,
    ];
    lines.sort_by_key(|l| {
        order
            .iter()
            .position(|k| l.starts_with(&format!("| {k} |")))
            .unwrap_or(order.len())
    });
    let count = |v: &str| lines.iter().filter(|l| l.contains(v)).count();
    let (met, not_met, unmeasured) = (
        count("| **met**"),
        count("| **not met**"),
        count("| not measured"),
    );
    let mut s = String::from(
        "Issue 21's targets on this machine (5 KiB bodies, persistent messages, publisher \
         confirms, quorum queues, trace and sender checks on), each computed from this report's \
         own figures; \"from\" says which section and which run. The comparison run (the \
         tables below) gives the HTTP-adapter path's CPU, the bytes written, the ratios to \
         the best anchors ([Ratios](#ratios), median of its alternating rounds) and the paced \
         p99; the backlog drain, the soak and the scale run give theirs from their sections, \
         which their own invocations rewrite (`--backlog 200000`, `--soak 1000000`, `--scale \
         5000 --scale-rounds 3`). Every invocation computes this section again from the whole file. The bus is \
         `lienthong run` (in the scale run: its routers, adapters, HTTP API and tracer); the \
         broker is `beam.smp`.\n\n| target | measured | limit | | from |\n|---|---|---|---|---|\n",
    );
    for l in &lines {
        s.push_str(l);
        s.push('\n');
    }
    let budget = if r.modes.is_empty() {
        previous.and_then(|p| {
            p.lines()
                .find(|l| l.starts_with(BUDGET))
                .map(str::to_string)
        })
    } else {
        cpu_budget(r)
    };
    if let Some(b) = budget {
        let _ = writeln!(s, "\n{b}");
    }
    let _ = writeln!(
        s,
        "\n{met} met, {not_met} not met, {unmeasured} not measured. Where the cost is, for a \
         target not met: per process, [CPU and memory](#cpu-and-memory) and the \
         [Scale](#scale) table; what a routed message waits for, [Router \
         stages](#router-stages); for each target not met, the figures that place its cost \
         and whether it can go lower on this machine, [Why the targets not met stay \
         not met](#why-the-targets-not-met-stay-not-met) (kept by hand at the head of the \
         changes); the profiles and what was tried, [Changes and their \
         effect](#changes-and-their-effect)."
    );
    s
}

/// How the paragraph on the throughput targets' CPU budget starts.
const BUDGET: &str = "**What the throughput targets ask of the bus here.**";

/// The throughput targets as a CPU budget for the bus, from the comparison run's figures:
/// when the machine's CPUs bound both paths (the CPUs kept busy say whether they did), 0.8 × an
/// anchor's rate leaves the whole path its CPU per message ÷ 0.8; what the broker and the
/// bench's producer and sink spend in lienthong's path comes off it, and the rest is the bus's.
/// One paragraph (one line, so that other invocations can keep it); `None` when a figure is
/// missing.
fn cpu_budget(r: &Results) -> Option<String> {
    let (l_rate, lt) = anchors::best_of(&r.modes, LIENTHONG)?;
    let bus = cpu_us(lt, BUS)?;
    let l_total = total_cpu_us(lt)?;
    let others = l_total - bus;
    let mut s = format!(
        "{BUDGET} Both paths are bound by this machine's CPUs when the processes measured keep \
         them busy: lienthong's path at {l_rate:.0} msg/s spent {l_total:.0} µs of CPU per \
         message ({:.2} CPUs busy), {bus:.0} of them in the bus and {others:.0} in the broker \
         and the bench's producer and sink.",
        l_total * l_rate / 1e6
    );
    for anchor in [PIPE_PLAIN, SHOVEL] {
        let Some((a_rate, a)) = anchors::best_of(&r.modes, anchor) else {
            continue;
        };
        let Some(total) = total_cpu_us(a) else {
            continue;
        };
        let allowed = total / 0.8;
        let budget = allowed - others;
        let _ = write!(
            s,
            " The best {anchor} spent {total:.0} µs per message at {a_rate:.0} msg/s ({:.2} CPUs \
             busy): 0.8 × its rate leaves the whole path {allowed:.0} µs per message, so the \
             bus **{budget:.0} µs** against {bus:.0} measured",
            total * a_rate / 1e6
        );
        match cpu_us(a, "bench-pipe") {
            Some(client) => {
                let _ = write!(
                    s,
                    "; the raw pipe's own client, which only consumes, republishes with a \
                     confirm and acks, spends {client:.0}."
                );
            }
            None => s.push('.'),
        }
    }
    Some(s)
}

/// CPU µs per message moved of every process measured in `runs`.
fn total_cpu_us(runs: &ModeRuns) -> Option<f64> {
    let mut names: Vec<&str> = runs
        .rounds
        .iter()
        .flat_map(|r| r.procs.iter().map(|p| p.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return None;
    }
    names.iter().map(|n| cpu_us(runs, n)).sum()
}

fn limit_of(key: &str) -> &'static str {
    match key {
        CPU_HTTP | CPU_DRAIN | CPU_HTTP_SCALE | CPU_DRAIN_SCALE => "bus ÷ broker ≤ 1.00",
        BYTES_ROUTED | BYTES_PACED | BYTES_HTTP => "≤ 4.0 × the body",
        VS_PIPE | VS_SHOVEL => "≥ 0.80",
        PACED => "< 25 ms",
        RSS => "last − first < 10 % or < 8 MiB",
        _ => "≤ 1.50",
    }
}

/// CPU µs per message moved of `process` over every round of `runs`.
fn cpu_us(runs: &ModeRuns, process: &str) -> Option<f64> {
    let moved: u64 = runs.rounds.iter().map(|r| r.moved).sum();
    let uses: Vec<f64> = runs
        .rounds
        .iter()
        .flat_map(|r| r.procs.iter().filter(|p| p.name == process))
        .map(|p| p.cpu_s)
        .collect();
    (moved > 0 && !uses.is_empty()).then(|| uses.iter().sum::<f64>() * 1e6 / moved as f64)
}

/// Bytes `process` wrote to disk per message moved (only when every round could read them).
fn written_per_msg(runs: &ModeRuns, process: &str) -> Option<f64> {
    let moved: u64 = runs.rounds.iter().map(|r| r.moved).sum();
    let uses: Vec<Option<u64>> = runs
        .rounds
        .iter()
        .flat_map(|r| r.procs.iter().filter(|p| p.name == process))
        .map(|p| p.written)
        .collect();
    if moved == 0 || uses.is_empty() {
        return None;
    }
    let total: Option<u64> = uses.into_iter().sum();
    total.map(|b| b as f64 / moved as f64)
}

const BUS: &str = "lienthong run";
const BROKER: &str = "broker (beam.smp)";

/// The rows of a comparison run, from its own figures.
fn comparison_rows(r: &Results) -> Vec<Row> {
    let h = &r.header;
    let from = |what: &str| format!("comparison run of {}: {what}", h.date);
    let body_caveat = (h.body_bytes != TARGET_BODY)
        .then(|| format!("bodies of {} bytes, not 5 KiB", h.body_bytes));
    let find = |name: &str| r.modes.iter().find(|m| m.name == name);
    let not_run = |m: Option<&ModeRuns>| match m {
        None => Some("not in this run".to_string()),
        Some(m) => m.skipped.as_ref().map(|w| format!("skipped: {w}")),
    };
    let mut rows = Vec::new();

    // Bus CPU against the broker's in the HTTP-adapter path.
    let row = Row::new(
        CPU_HTTP,
        limit_of(CPU_HTTP),
        from("CPU and memory, http adapter"),
    );
    rows.push(match (not_run(r.http.as_ref()), r.http.as_ref()) {
        (None, Some(m)) => match (cpu_us(m, BUS), cpu_us(m, BROKER)) {
            (Some(bus), Some(broker)) if broker > 0.0 => row
                .judged(
                    format!(
                        "{bus:.0} vs {broker:.0} µs per dossier: {:.2}",
                        bus / broker
                    ),
                    bus <= broker && m.ok(),
                )
                .caveat(body_caveat.clone()),
            _ => row.unmeasured("the broker's CPU was not readable"),
        },
        (why, _) => row.unmeasured(why.unwrap_or_default()),
    });

    // Bytes the bus wrote per dossier, against the body.
    let paced = r.paced.iter().find(|m| m.mode == LIENTHONG);
    for (key, runs, what) in [
        (BYTES_ROUTED, find(LIENTHONG), "CPU and memory, lienthong"),
        (BYTES_PACED, paced, "CPU and memory, lienthong (paced)"),
        (BYTES_HTTP, r.http.as_ref(), "CPU and memory, http adapter"),
    ] {
        let row = Row::new(key, limit_of(key), from(what));
        rows.push(match (not_run(runs), runs) {
            (None, Some(m)) => match written_per_msg(m, BUS) {
                Some(w) if h.body_bytes > 0 => {
                    let x = w / h.body_bytes as f64;
                    row.judged(
                        format!(
                            "{:.1} KiB per dossier = {x:.1} × the body ({:.1} KiB)",
                            w / 1024.0,
                            h.body_bytes as f64 / 1024.0
                        ),
                        x <= 4.0 && m.ok(),
                    )
                    .caveat(body_caveat.clone())
                }
                _ => row.unmeasured("`write_bytes` not readable"),
            },
            (why, _) => row.unmeasured(why.unwrap_or_default()),
        });
    }

    // Routed msg/s against the best of the plain raw pipe and of the in-node shovel.
    let lt_best = anchors::best_of(&r.modes, LIENTHONG);
    let lt = lt_best.map(|(_, m)| m).or(find(LIENTHONG));
    let lt_rate = lt_best.map(|(l, _)| l);
    let rounds = lt.map_or(0, |m| m.rounds.len());
    let mut caveats: Vec<String> = body_caveat.iter().cloned().collect();
    if rounds < 3 {
        caveats.push(format!("median of {rounds} rounds, not ≥ 3"));
    }
    if r.sweep.is_none() {
        caveats.push("no prefetch sweep: the anchors at the bench's prefetch only".into());
    }
    let caveat = (!caveats.is_empty()).then(|| caveats.join("; "));
    for (key, anchor) in [(VS_PIPE, PIPE_PLAIN), (VS_SHOVEL, SHOVEL)] {
        let row = Row::new(key, limit_of(key), from("Ratios"));
        let best = anchors::best_of(&r.modes, anchor);
        rows.push(match (not_run(lt), lt_rate, best) {
            (None, Some(l), Some((b, m))) if b > 0.0 => row
                .judged(
                    format!(
                        "{:.2} (lienthong {l:.0} msg/s at prefetch {} ÷ {anchor} {b:.0} msg/s at prefetch {})",
                        l / b,
                        lt.map_or(0, |m| m.prefetch),
                        m.prefetch
                    ),
                    l / b >= 0.8 && lt.is_some_and(ModeRuns::ok),
                )
                .caveat(caveat.clone()),
            (Some(why), _, _) => row.unmeasured(format!("lienthong {why}")),
            _ => match not_run(find(anchor)) {
                Some(why) => row.unmeasured(format!("{anchor} {why}")),
                None => row.unmeasured(format!("no {anchor} that moved every message")),
            },
        });
    }

    // The paced p99.
    let row = Row::new(
        PACED,
        limit_of(PACED),
        from("Paced latency, lienthong (paced)"),
    );
    rows.push(match paced {
        Some(m) if m.skipped.is_none() => {
            match (
                m.median_round_percentile(99.0),
                m.median_round_percentile(50.0),
            ) {
                (Some(p99), Some(p50)) => {
                    let (p99, p50) = (p99 / 1000.0, p50 / 1000.0);
                    let achieved = m.median_rate().unwrap_or(0.0);
                    let mut c: Vec<String> = body_caveat.iter().cloned().collect();
                    if (h.paced_rate - TARGET_RATE).abs() > 0.5 {
                        c.push(format!("paced at {} msg/s, not 1,000", h.paced_rate));
                    }
                    // The broker's own hop in the same runs: when it misses the limit too,
                    // the machine does, not the bus.
                    if let Some((d, n)) = r
                        .paced
                        .iter()
                        .find(|x| x.mode == anchors::DIRECT && x.ok())
                        .and_then(|x| {
                            let n = x.round_percentiles(99.0).len();
                            x.median_round_percentile(99.0).map(|d| (d, n))
                        })
                    {
                        c.push(format!(
                            "the broker's one hop (direct, paced) in the same runs: p99 {:.1} ms{}",
                            d / 1000.0,
                            if n > 1 {
                                format!(", median of {n}")
                            } else {
                                String::new()
                            }
                        ));
                    }
                    let runs = m.round_percentiles(99.0);
                    if runs.len() < 3 {
                        c.push(format!(
                            "{} paced run(s), not ≥ 3: one stall of the machine can decide it",
                            runs.len()
                        ));
                    }
                    let measured = if runs.len() > 1 {
                        format!(
                            "p99 {p99:.1} ms, median of {} runs ({} ms; p50 {p50:.1} ms) at {achieved:.0} msg/s",
                            runs.len(),
                            runs.iter()
                                .map(|u| format!("{:.1}", f64::from(*u) / 1000.0))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    } else {
                        format!("p99 {p99:.1} ms (p50 {p50:.1} ms) at {achieved:.0} msg/s")
                    };
                    row.judged(measured, p99 < 25.0 && m.ok())
                        .caveat((!c.is_empty()).then(|| c.join("; ")))
                }
                _ => row.unmeasured("no message arrived"),
            }
        }
        _ => row.unmeasured("not in this run"),
    });
    rows
}

/// Bus against broker CPU in the backlog drain, from the "Backlog drain" section.
fn backlog_row(body: Option<&str>) -> Row {
    let Some(body) = body else {
        return Row::new(CPU_DRAIN, limit_of(CPU_DRAIN), "–".into())
            .unmeasured("no backlog drain in this report (`--backlog 200000`)");
    };
    let f = match read_back::backlog(body) {
        Ok(f) => f,
        Err(why) => {
            return Row::new(CPU_DRAIN, limit_of(CPU_DRAIN), "Backlog drain".into())
                .unmeasured(why);
        }
    };
    let row = Row::new(
        CPU_DRAIN,
        limit_of(CPU_DRAIN),
        format!("Backlog drain, run {}", f.date),
    );
    if f.dossiers == 0 || f.broker_s <= 0.0 {
        return row.unmeasured("no dossier or no broker CPU");
    }
    let n = f.dossiers as f64;
    let (bus, broker) = (f.bus_s * 1e6 / n, f.broker_s * 1e6 / n);
    row.judged(
        format!(
            "{bus:.0} vs {broker:.0} µs per dossier: {:.2} ({} dossiers)",
            bus / broker,
            f.dossiers
        ),
        bus <= broker && !f.failed,
    )
}

/// The scale run's rows: bus against broker CPU at the fewest processes on SQLite, and
/// PostgreSQL's bus CPU per dossier against SQLite's at each process count, per path.
fn scale_rows(body: Option<&str>) -> Vec<Row> {
    let keys = [CPU_HTTP_SCALE, CPU_DRAIN_SCALE, PG_HTTP, PG_DRAIN];
    let f = match body.map(read_back::scale) {
        Some(Ok(f)) => f,
        other => {
            let why = match other {
                Some(Err(why)) => why,
                _ => "no scale run in this report (`--scale 5000 --scale-rounds 3`)",
            };
            return keys
                .iter()
                .map(|k| Row::new(k, limit_of(k), "–".into()).unmeasured(why))
                .collect();
        }
    };
    let from = if f.rounds > 1 {
        format!(
            "Scale, run {} (each cell the median of {} rounds)",
            f.date, f.rounds
        )
    } else {
        format!(
            "Scale, run {} (one round: repeat with `--scale-rounds 3` to judge)",
            f.date
        )
    };
    let mut out = Vec::new();
    for (key, path) in [
        (CPU_HTTP_SCALE, "HTTP adapter"),
        (CPU_DRAIN_SCALE, "backlog drain"),
    ] {
        let row = Row::new(key, limit_of(key), from.clone());
        let cell = f
            .rows
            .iter()
            .filter(|c| c.store == "SQLite" && c.path == path)
            .min_by_key(|c| c.k);
        out.push(match cell {
            Some(c) if c.broker_us > 0.0 => row.judged(
                format!(
                    "{:.0} vs {:.0} µs per dossier: {:.2} (SQLite, k = {})",
                    c.bus_us,
                    c.broker_us,
                    c.bus_us / c.broker_us,
                    c.k
                ),
                c.bus_us <= c.broker_us && !c.failed,
            ),
            _ => row.unmeasured("no SQLite cell in the scale table"),
        });
    }
    for (key, path) in [(PG_HTTP, "HTTP adapter"), (PG_DRAIN, "backlog drain")] {
        let row = Row::new(key, limit_of(key), from.clone());
        // (k, PostgreSQL's bus µs, SQLite's, either failed)
        let mut pairs: Vec<(u32, f64, f64, bool)> = Vec::new();
        for pg in f
            .rows
            .iter()
            .filter(|c| c.store == "PostgreSQL" && c.path == path)
        {
            if let Some(sq) = f
                .rows
                .iter()
                .find(|c| c.store == "SQLite" && c.path == path && c.k == pg.k)
                && sq.bus_us > 0.0
            {
                pairs.push((pg.k, pg.bus_us, sq.bus_us, pg.failed || sq.failed));
            }
        }
        pairs.sort_by_key(|p| p.0);
        if pairs.is_empty() {
            out.push(row.unmeasured("no cells of both stores in the scale table"));
            continue;
        }
        let worst = pairs
            .iter()
            .map(|p| p.1 / p.2)
            .fold(f64::NEG_INFINITY, f64::max);
        let text: Vec<String> = pairs
            .iter()
            .map(|(k, pg, sq, _)| format!("k = {k}: {:.2} ({pg:.0} vs {sq:.0} µs)", pg / sq))
            .collect();
        out.push(row.judged(text.join(", "), worst <= 1.5 && !pairs.iter().any(|p| p.3)));
    }
    out
}

/// The router's memory over the soak, from the "Soak" section.
fn soak_row(body: Option<&str>) -> Row {
    let Some(body) = body else {
        return Row::new(RSS, limit_of(RSS), "–".into())
            .unmeasured("no soak in this report (`--soak 1000000`)");
    };
    let f = match read_back::soak(body) {
        Ok(f) => f,
        Err(why) => return Row::new(RSS, limit_of(RSS), "Soak".into()).unmeasured(why),
    };
    let short = (f.count < TARGET_SOAK).then(|| format!("a soak of {}, not 1 M", f.count));
    Row::new(RSS, limit_of(RSS), format!("Soak, run {}", f.date))
        .judged(
            format!(
                "{} → {} MiB ({}; max {} MiB) over {} of {} messages",
                f.first, f.last, f.growth, f.max, f.moved, f.count
            ),
            f.flat && f.moved == f.count && !f.failed,
        )
        .caveat(short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::long_runs::{Backlog, Soak, backlog_section, soak_section};
    use crate::measures::{ProcUse, Round};
    use crate::results::Header;
    use crate::scale_report::{BROKER as SCALE_BROKER, ClassUse, Path, Scale, ScaleCell};

    fn procs(bus: f64, broker: f64, written: u64) -> Vec<ProcUse> {
        vec![
            ProcUse {
                name: BUS.into(),
                cpu_s: bus,
                rss_kib: None,
                written: Some(written),
            },
            ProcUse {
                name: BROKER.into(),
                cpu_s: broker,
                rss_kib: None,
                written: Some(0),
            },
        ]
    }

    fn runs(name: &str, mode: &str, prefetch: u16, rate: f64, p: Vec<ProcUse>) -> ModeRuns {
        ModeRuns {
            name: name.into(),
            mode: mode.into(),
            prefetch,
            rounds: (1..=3)
                .map(|i| Round {
                    round: i,
                    count: 1000,
                    moved: 1000,
                    rate,
                    secs: 1.0,
                    lat_us: vec![5000; 100],
                    procs: p.clone(),
                    ..Round::default()
                })
                .collect(),
            ..ModeRuns::default()
        }
    }

    fn results() -> Results {
        Results {
            header: Header {
                date: "2026-12-05 10:00:00 +0000".into(),
                body_bytes: 5120,
                prefetch: 64,
                paced_rate: 1000.0,
                ..Header::default()
            },
            modes: vec![
                runs(
                    LIENTHONG,
                    LIENTHONG,
                    64,
                    3400.0,
                    procs(0.3, 0.3, 15_360_000),
                ),
                runs(PIPE_PLAIN, PIPE_PLAIN, 64, 4000.0, Vec::new()),
                runs(
                    "raw pipe (plain), prefetch 500",
                    PIPE_PLAIN,
                    500,
                    5000.0,
                    vec![
                        ProcUse {
                            name: "bench-pipe".into(),
                            cpu_s: 0.06,
                            rss_kib: None,
                            written: Some(0),
                        },
                        ProcUse {
                            name: BROKER.into(),
                            cpu_s: 0.26,
                            rss_kib: None,
                            written: Some(0),
                        },
                    ],
                ),
                runs(SHOVEL, SHOVEL, 64, 4000.0, Vec::new()),
            ],
            sweep: Some(anchors::Sweep::default()),
            http: Some(runs(
                "http adapter",
                "http adapter",
                64,
                700.0,
                procs(1.2, 0.9, 1_000_000),
            )),
            paced: vec![runs(
                "lienthong (paced)",
                LIENTHONG,
                64,
                1000.0,
                procs(0.5, 0.7, 35_840_000),
            )],
            ..Results::default()
        }
    }

    fn line<'a>(s: &'a str, key: &str) -> &'a str {
        s.lines()
            .find(|l| l.starts_with(&format!("| {key} |")))
            .unwrap_or_else(|| panic!("no row {key} in\n{s}"))
    }

    #[test]
    fn the_paced_p99_is_the_median_of_the_runs() {
        let mut r = results();
        // Run 2 has a hiccup: 5 % of its messages at 150 ms. Pooled, the three runs' p99
        // would be 150 ms; the median of the runs' p99s is run 1's (19.8 ms).
        r.paced[0].rounds[0].lat_us = (1..=100).map(|i| i * 200).collect();
        r.paced[0].rounds[1].lat_us = (1..=100)
            .map(|i| if i > 95 { 150_000 } else { 5000 })
            .collect();
        r.paced[0].rounds[2].lat_us = vec![18_000; 100];
        let s = section(&r, &[], None);
        assert!(
            line(&s, PACED).contains("p99 19.8 ms, median of 3 runs (19.8, 150.0, 18.0 ms;"),
            "{s}"
        );
        assert!(line(&s, PACED).contains("**met**"), "{s}");
        assert!(!line(&s, PACED).contains("broker's one hop"), "{s}");
        // The broker's own hop in the same runs is named beside it.
        let mut direct = runs(anchors::DIRECT, anchors::DIRECT, 64, 1000.0, Vec::new());
        direct.rounds[1].lat_us = vec![90_000; 100];
        direct.rounds[2].lat_us = vec![86_000; 100];
        r.paced.push(direct);
        let s = section(&r, &[], None);
        assert!(
            line(&s, PACED).contains(
                "the broker's one hop (direct, paced) in the same runs: p99 86.0 ms, median of 3"
            ),
            "{s}"
        );
        // One run alone is judged, and says it is one.
        let mut one = r.clone();
        one.paced[0].rounds.truncate(1);
        let s = section(&one, &[], None);
        assert!(line(&s, PACED).contains("p99 19.8 ms (p50"), "{s}");
        assert!(line(&s, PACED).contains("1 paced run(s), not ≥ 3"), "{s}");
        // Two runs of three over the limit: not met.
        r.paced[0].rounds[2].lat_us = vec![26_000; 100];
        let s = section(&r, &[], None);
        assert!(line(&s, PACED).contains("p99 26.0 ms"), "{s}");
        assert!(line(&s, PACED).contains("**not met**"), "{s}");
    }

    #[test]
    fn a_comparison_run_judges_its_own_figures() {
        let s = section(&results(), &[], None);
        // 3 × 1.2 s vs 3 × 0.9 s over 3 × 1000 dossiers.
        assert!(
            line(&s, CPU_HTTP).contains("1200 vs 900 µs per dossier: 1.33 |"),
            "{s}"
        );
        assert!(line(&s, CPU_HTTP).contains("**not met**"), "{s}");
        // 3 × 15,360,000 bytes over 3000 messages = 15 KiB = 3.0 × the body.
        assert!(
            line(&s, BYTES_ROUTED).contains("15.0 KiB per dossier = 3.0 × the body"),
            "{s}"
        );
        assert!(line(&s, BYTES_ROUTED).contains("**met**"), "{s}");
        // The same path at the paced rate: 3 × 35,840,000 bytes over 3000 messages.
        assert!(
            line(&s, BYTES_PACED).contains("35.0 KiB per dossier = 7.0 × the body"),
            "{s}"
        );
        assert!(line(&s, BYTES_PACED).contains("**not met**"), "{s}");
        assert!(
            line(&s, VS_PIPE)
                .contains("0.68 (lienthong 3400 msg/s at prefetch 64 ÷ raw pipe (plain) 5000 msg/s at prefetch 500)"),
            "{s}"
        );
        assert!(line(&s, VS_PIPE).contains("**not met**"), "{s}");
        assert!(line(&s, VS_SHOVEL).contains("0.85"), "{s}");
        assert!(line(&s, VS_SHOVEL).contains("**met**"), "{s}");
        assert!(line(&s, PACED).contains("p99 5.0 ms"), "{s}");
        assert!(line(&s, PACED).contains("**met**"), "{s}");
        assert!(line(&s, CPU_DRAIN).contains("not measured"), "{s}");
        assert!(s.contains("4 met, 3 not met, 6 not measured"), "{s}");
        // lienthong: 300 + 300 µs per message; the raw pipe: 60 + 260 = 320, ÷ 0.8 = 400,
        // less the 300 that are not the bus.
        let budget = s
            .lines()
            .find(|l| l.starts_with(BUDGET))
            .unwrap_or_else(|| panic!("no budget in\n{s}"));
        assert!(
            budget.contains("600 µs of CPU per message (2.04 CPUs busy)"),
            "{budget}"
        );
        assert!(
            budget.contains("leaves the whole path 400 µs per message, so the bus **100 µs** against 300 measured; the raw pipe's own client, which only consumes, republishes with a confirm and acks, spends 60."),
            "{budget}"
        );
        // The shovel's run here has no processes: no budget from it.
        assert!(!budget.contains("shovel"), "{budget}");
        // Another invocation keeps the paragraph.
        let again = section(&Results::default(), &[], Some(&s));
        assert!(again.contains(budget), "{again}");
    }

    #[test]
    fn other_invocations_keep_the_comparison_rows_and_read_their_sections() {
        let first = section(&results(), &[], None);
        let soak = Soak {
            round: Round {
                count: 1_000_000,
                moved: 1_000_000,
                secs: 300.0,
                rate: 3333.0,
                ..Round::default()
            },
            rss: vec![(1.0, 57_000), (100.0, 58_000), (300.0, 60_000)],
            anon: Vec::new(),
            broker_rss: (None, None),
            store_bytes: 0,
        };
        let backlog = Backlog {
            count: 200_000,
            drain_s: 180.0,
            procs: vec![
                ProcUse {
                    name: "lienthong run (router,tracer,http)".into(),
                    cpu_s: 90.0,
                    rss_kib: None,
                    written: None,
                },
                ProcUse {
                    name: "lienthong run (adapters)".into(),
                    cpu_s: 70.0,
                    rss_kib: None,
                    written: None,
                },
                ProcUse {
                    name: "broker (beam.smp)".into(),
                    cpu_s: 120.0,
                    rss_kib: None,
                    written: None,
                },
            ],
            ..Backlog::default()
        };
        let cell = |store: &str, k: u32, path: Path, bus: f64, broker: f64| ScaleCell {
            store: store.into(),
            processes: k,
            path,
            dossiers: 1000,
            moved: 1000,
            secs: 1.0,
            cores: 2,
            uses: vec![
                ClassUse {
                    class: crate::scale_report::ROUTERS.into(),
                    processes: 1,
                    cpu_s: bus / 1000.0,
                },
                ClassUse {
                    class: SCALE_BROKER.into(),
                    processes: 1,
                    cpu_s: broker / 1000.0,
                },
            ],
            ..ScaleCell::default()
        };
        let scale = Scale {
            count: 1000,
            rounds: 1,
            cells: vec![
                cell("SQLite", 1, Path::Http, 1000.0, 500.0),
                cell("SQLite", 1, Path::Drain, 700.0, 800.0),
                cell("PostgreSQL", 1, Path::Http, 1400.0, 500.0),
                cell("PostgreSQL", 1, Path::Drain, 1400.0, 800.0),
            ],
        };
        let run = "Run 2026-12-06 01:02:03 +0000 (`lienthong-bench --x`) on a machine.";
        let body = vec![
            (SOAK.to_string(), soak_section(&soak, run)),
            (BACKLOG.to_string(), backlog_section(&backlog, run)),
            (
                crate::scale_report::HEADING.to_string(),
                crate::scale_report::section(&scale, run),
            ),
        ];
        let s = section(&Results::default(), &body, Some(&first));
        // Kept verbatim from the comparison run.
        assert_eq!(line(&s, CPU_HTTP), line(&first, CPU_HTTP));
        assert_eq!(line(&s, VS_PIPE), line(&first, VS_PIPE));
        // (90 + 70) s and 120 s over 200,000 dossiers.
        assert!(
            line(&s, CPU_DRAIN).contains("800 vs 600 µs per dossier: 1.33 (200000 dossiers)"),
            "{s}"
        );
        assert!(
            line(&s, CPU_DRAIN).contains("Backlog drain, run 2026-12-06 01:02:03 +0000"),
            "{s}"
        );
        assert!(
            line(&s, CPU_HTTP_SCALE).contains("1000 vs 500 µs per dossier: 2.00 (SQLite, k = 1)"),
            "{s}"
        );
        assert!(line(&s, CPU_DRAIN_SCALE).contains("**met**"), "{s}");
        assert!(
            line(&s, PG_HTTP).contains("k = 1: 1.40 (1400 vs 1000 µs)"),
            "{s}"
        );
        assert!(line(&s, PG_HTTP).contains("**met**"), "{s}");
        assert!(line(&s, PG_DRAIN).contains("**not met**"), "{s}");
        assert!(line(&s, RSS).contains("55.7 → 58.6 MiB"), "{s}");
        assert!(line(&s, RSS).contains("**met**"), "{s}");
        assert!(line(&s, RSS).contains("Soak, run 2026-12-06"), "{s}");
        assert!(!s.contains("| not measured"), "{s}");
    }

    #[test]
    fn a_short_soak_is_not_the_targets() {
        let body = "Run 2026-12-06 (`x`) on y.\n\n1000 of 1000 messages through `lienthong run --components router,tracer,http` in 1 s: **1000 msg/s**.\n\n| first MiB | min MiB | max MiB | last MiB | last − first | flat? |\n|---:|---:|---:|---:|---:|---|\n| 55.9 | 55.9 | 58.9 | 58.9 | +3.0 MiB | yes (growth < 10 % or < 8 MiB) |\n";
        let r = soak_row(Some(body));
        assert_eq!(r.verdict, Verdict::Met);
        assert_eq!(r.caveat.as_deref(), Some("a soak of 1000, not 1 M"));
    }
}
