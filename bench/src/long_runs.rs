//! The runs of their own invocations through the bus's longest paths: the soak (`--soak N`, the
//! router's memory over many messages) and the backlog drain (`--backlog N`), their figures
//! and their sections of the report.

use std::fmt::Write as _;

use crate::measures::{ProcUse, Round, mib, ms};
use crate::traffic::percentile;

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

/// The "Soak" section; `run` (date, command, machine) first.
pub fn soak_section(soak: &Soak, run: &str) -> String {
    {
        let mut s = format!("{run}\n\n");
        let x = &soak.round;
        let l = x.sorted_latencies();
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
        s
    }
}

/// The "Backlog drain" section; `run` (date, command, machine) first.
pub fn backlog_section(b: &Backlog, run: &str) -> String {
    {
        let mut s = format!("{run}\n\n");
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
        s
    }
}
