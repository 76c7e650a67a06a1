//! The benchmark's figures and their Markdown report (BENCHMARKS.md). Sections this run did
//! not produce (the soak, the backlog drain and the scale run run in their own invocations, and
//! "Changes and their effect", which engineers write) are kept from the previous file; the
//! targets are computed again from the whole file ([`crate::targets`]).

use std::fmt::Write as _;

use super::traffic::percentile;
use crate::measures::{ModeRuns, OTHERS, ProcUse, mib, ms, rate};
use crate::results::{BACKLOG, Results, SOAK};
use crate::{anchors, long_runs, targets};

/// The section engineers write by hand; always carried over verbatim.
pub const CHANGES: &str = "## Changes and their effect";

const SETTINGS: &str = "## Machine and settings";
const THROUGHPUT: &str = "## Throughput";
const LATENCY: &str = "## Latency at saturation";
const CPU: &str = "## CPU and memory";
const HTTP: &str = "## HTTP adapter, end to end";
const PACED: &str = "## Paced latency";
const STAGES: &str = "## Router stages";

/// Canonical order of the sections.
const ORDER: [&str; 14] = [
    SETTINGS,
    targets::HEADING,
    THROUGHPUT,
    anchors::SWEEP_HEADING,
    LATENCY,
    CPU,
    anchors::RATIOS_HEADING,
    HTTP,
    PACED,
    STAGES,
    SOAK,
    BACKLOG,
    crate::scale_report::HEADING,
    CHANGES,
];

/// The sections a comparison run writes: when this run is one, none of them is kept from the
/// previous file (they would mix two runs).
const COMPARISON: [&str; 9] = [
    SETTINGS,
    THROUGHPUT,
    anchors::SWEEP_HEADING,
    LATENCY,
    CPU,
    anchors::RATIOS_HEADING,
    HTTP,
    PACED,
    STAGES,
];

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
             quorum queues with lienthong's work-queue arguments (except the plain raw pipe's: \
             `x-queue-type: quorum` only). Latency = arrival at the sink − send, both read in the \
             bench process. Throughput = messages ÷ (last arrival − first send). Modes alternate \
             round by round. The anchors (raw pipes, shovels) run at the bench's prefetch and \
             again at the best prefetch of their sweep (named \"…, prefetch N\"); prefetch is \
             that of every consumer in the path and of the sink.\n",
        );
        s.push_str("\n| mode | path |\n|---|---|\n");
        for mr in r
            .modes
            .iter()
            .chain(r.http.iter())
            .filter(|m| m.name == m.mode)
        {
            let _ = writeln!(s, "| {} | {} |", mr.name, mr.what);
        }
        out.push((SETTINGS.to_string(), s));

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
        out.push((THROUGHPUT.to_string(), s));

        let mut s = String::from(
            "Producer at full speed (bounded by the window and the in-flight limit), so this is \
             latency at saturation, mostly queueing; see [Paced latency](#paced-latency) below \
             saturation. All rounds pooled.\n\n| mode | messages | p50 ms | p95 ms | p99 ms | max ms | |\n|---|---:|---:|---:|---:|---:|---|\n",
        );
        for mr in r.modes.iter().filter(|m| m.skipped.is_none()) {
            s.push_str(&latency_row(&mr.name, mr));
        }
        out.push((LATENCY.to_string(), s));

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
        out.push((CPU.to_string(), s));

        out.push((
            anchors::RATIOS_HEADING.to_string(),
            anchors::ratios_section(&r.modes, h.prefetch),
        ));
        if let Some(sw) = &r.sweep {
            out.push((
                anchors::SWEEP_HEADING.to_string(),
                anchors::sweep_section(sw, h.prefetch),
            ));
        }

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
            out.push((HTTP.to_string(), s));
        }

        if !r.paced.is_empty() {
            let mut s = String::from(
                "The producer sends at a fixed rate (below saturation); latency is then the \
                 path's own; the raw pipe's two quorum-queue hops are the broker's own floor for \
                 lienthong's. Each run follows a warm-up at the same rate that is not counted \
                 (the quorum queues were declared just before).\n\n| mode | rate asked msg/s | achieved msg/s | messages | p50 ms | p95 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for mr in &r.paced {
                let asked = h
                    .settings
                    .iter()
                    .find(|(k, _)| k == "paced rate")
                    .map_or(String::new(), |(_, v)| v.clone());
                for x in &mr.rounds {
                    let l = x.sorted_latencies();
                    let _ = writeln!(
                        s,
                        "| {}{} | {} | {:.0} | {}{} | {} | {} | {} | {} |",
                        mr.name,
                        if mr.rounds.len() > 1 {
                            format!(", run {}", x.round)
                        } else {
                            String::new()
                        },
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
                if mr.rounds.len() > 1 {
                    let med = |p: f64| ms(mr.median_round_percentile(p).map(|u| u.round() as u32));
                    let _ = writeln!(
                        s,
                        "| {}, median of the {} runs | {} | {} | {} | {} | {} | {} | {} |",
                        mr.name,
                        mr.round_percentiles(99.0).len(),
                        asked.trim_end_matches(" msg/s"),
                        rate(mr.median_rate()),
                        mr.rounds.iter().map(|x| x.moved).sum::<u64>(),
                        med(50.0),
                        med(95.0),
                        med(99.0),
                        ms(mr.latencies().last().copied())
                    );
                }
            }
            if r.paced.iter().any(|m| m.rounds.len() > 1) {
                s.push_str(
                    "\nEach percentile of a \"median\" row is the median of the runs' own (with an even \
                     number of runs, the mean of the middle two); its messages are all the runs' \
                     together and its max the largest of all. The p99 target reads that row.\n",
                );
            }
            out.push((PACED.to_string(), s));
        }
        if let Some(s) = crate::stages::section(r.modes.iter().chain(r.paced.iter())) {
            out.push((STAGES.to_string(), s));
        }
    }

    if let Some(soak) = &r.soak {
        let run = format!("Run {} (`{}`) on {machine_line}.", h.date, h.command);
        out.push((SOAK.to_string(), long_runs::soak_section(soak, &run)));
    }
    if let Some(b) = &r.backlog {
        let run = format!("Run {} (`{}`) on {machine_line}.", h.date, h.command);
        out.push((BACKLOG.to_string(), long_runs::backlog_section(b, &run)));
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

/// The new file: this run's sections, the previous file's other sections, the targets
/// computed from all of them, and "Changes and their effect" verbatim from the previous file.
pub fn render(r: &Results, previous: Option<&str>) -> String {
    let new = sections(r);
    let (_, old) = previous.map(split_sections).unwrap_or_default();
    let comparison = !r.modes.is_empty();
    // Each section of the new file, in order: this run's, else the previous file's (except the
    // comparison's own sections after a comparison run, and the targets, computed below).
    let mut body: Vec<(String, String)> = Vec::new();
    for heading in ORDER {
        if heading == CHANGES {
            // Other sections someone added to the file stay, before the changes.
            for (h, b) in &old {
                if !ORDER.contains(&h.as_str()) && !body.iter().any(|(x, _)| x == h) {
                    body.push((h.clone(), b.clone()));
                }
            }
        }
        let from_old =
            heading != targets::HEADING && !(comparison && COMPARISON.contains(&heading));
        if let Some((_, b)) = new.iter().find(|(h, _)| h == heading) {
            body.push((heading.to_string(), b.clone()));
        } else if let Some((_, b)) = old.iter().find(|(h, _)| h == heading && from_old) {
            body.push((heading.to_string(), b.clone()));
        } else if heading == CHANGES {
            body.push((heading.to_string(), DEFAULT_CHANGES.to_string()));
        }
    }
    let previous_targets = old
        .iter()
        .find(|(h, _)| h == targets::HEADING)
        .map(|(_, b)| b.as_str());
    let t = targets::section(r, &body, previous_targets);
    let at = body
        .iter()
        .position(|(h, _)| h == SETTINGS)
        .map_or(0, |i| i + 1);
    body.insert(at, (targets::HEADING.to_string(), t));

    let mut text = String::from(
        "# lienthong benchmarks\n\nWritten by `lienthong-bench` (`cargo build --release --workspace \
         --bins`, then `./target/release/lienthong-bench`; see `lienthong-bench --help`). Do not edit by hand, except the section \
         \"Changes and their effect\", which the harness keeps. The soak, the backlog drain and \
         the scale run run in their own invocations (`--soak N`, `--backlog N`, `--scale N`), \
         which update only their sections (and the targets' rows taken from them).\n\n",
    );
    for (heading, b) in &body {
        text.push_str(heading);
        text.push('\n');
        if !b.starts_with('\n') {
            text.push('\n');
        }
        text.push_str(b.trim_end_matches('\n'));
        text.push_str("\n\n");
    }
    while text.ends_with("\n\n") {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measures::{Round, median};

    #[test]
    fn keeps_changes_and_other_runs_sections() {
        let previous = "# old\n\n## Throughput\n\nold figures\n\n## Prefetch sweep\n\nold sweep\n\n## Soak\n\nold soak\n\n## Notes\n\nmine\n\n## Changes and their effect\n\n- 2026-01-01 router: batch confirms, +40 %\n  (details)\n";
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
                ..ModeRuns::default()
            }],
            ..Results::default()
        };
        let text = render(&r, Some(previous));
        assert!(text.contains("old soak"));
        // The targets come right after the settings, the sweep after the throughput.
        assert!(text.find("## Machine and settings") < text.find(crate::targets::HEADING));
        assert!(text.find(crate::targets::HEADING) < text.find("## Throughput"));
        assert!(!text.contains("old figures"));
        // A comparison run keeps none of the previous comparison's sections.
        assert!(!text.contains("old sweep"));
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
