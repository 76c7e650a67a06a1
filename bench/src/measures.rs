//! What a comparison run measured, as data: each process's share of a round, the rounds of
//! a mode, the router's stage times, and the number formats the report's sections share.

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

/// The pseudo-process for the CPU time of everything else on the machine during a round.
pub const OTHERS: &str = "other processes (machine busy − the above)";

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

impl Round {
    /// This round's latencies, µs, sorted.
    pub fn sorted_latencies(&self) -> Vec<u32> {
        let mut l = self.lat_us.clone();
        l.sort_unstable();
        l
    }

    /// Every message moved and nothing failed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.moved == self.count
    }
}

/// Every round of one mode at one prefetch.
#[derive(Debug, Clone, Default)]
pub struct ModeRuns {
    /// Display name: the mode's, with ", prefetch N" when that is not the bench's.
    pub name: String,
    /// The mode's name, the same for each of its prefetch values.
    pub mode: String,
    /// Prefetch of the path's consumers and the sink.
    pub prefetch: u16,
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

    /// The `p`th percentile of each round's latencies, µs, in round order (rounds with no
    /// latency left out).
    pub fn round_percentiles(&self, p: f64) -> Vec<u32> {
        self.rounds
            .iter()
            .filter_map(|r| crate::traffic::percentile(&r.sorted_latencies(), p))
            .collect()
    }

    /// The median over the rounds of each round's `p`th percentile, µs: what the paced p99
    /// target is judged on, so that one round's hiccup does not decide it.
    pub fn median_round_percentile(&self, p: f64) -> Option<f64> {
        let v: Vec<f64> = self
            .round_percentiles(p)
            .into_iter()
            .map(f64::from)
            .collect();
        median(&v)
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

pub(crate) fn ms(us: Option<u32>) -> String {
    us.map_or("–".into(), |u| format!("{:.3}", f64::from(u) / 1000.0))
}

pub(crate) fn rate(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.0}"))
}

pub(crate) fn mib(kib: Option<u64>) -> String {
    kib.map_or("–".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}
