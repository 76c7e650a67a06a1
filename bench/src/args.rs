//! The command line of `lienthong-bench`: what to measure, how much, and where the report goes.

use std::path::PathBuf;

/// Options of `lienthong-bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Rounds of the alternation direct, raw pipes, shovels, lienthong (at least 3, except with
    /// --smoke), each anchor at --prefetch and again at its best prefetch of the sweep.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Messages per round and mode.
    #[arg(long, default_value_t = 50_000)]
    pub messages: u64,
    /// Body size of every message, bytes.
    #[arg(long, default_value_t = 5120)]
    pub body_bytes: usize,
    /// Prefetch of every consumer in the path but lienthong's router (sink, raw pipes, shovels;
    /// see --router-prefetch).
    #[arg(long, default_value_t = 64)]
    pub prefetch: u16,
    /// The prefetch sweep of the anchors (both raw pipes, both shovels), comma-separated: each
    /// anchor is measured at each value (--sweep-rounds × --sweep-messages), and its best value
    /// then runs the full alternating rounds beside --prefetch. The ratios are to the best of
    /// each anchor. With --smoke only the largest value, one round.
    #[arg(long, value_delimiter = ',', default_values_t = [64u16, 200, 500])]
    pub sweep_prefetch: Vec<u16>,
    /// No prefetch sweep: the anchors run at --prefetch only.
    #[arg(long)]
    pub no_sweep: bool,
    /// Rounds per point of the prefetch sweep.
    #[arg(long, default_value_t = 1)]
    pub sweep_rounds: u32,
    /// Messages per round of the prefetch sweep (default: --messages ÷ 2).
    #[arg(long)]
    pub sweep_messages: Option<u64>,
    /// Prefetch of lienthong's router in every lienthong run (the shipped default,
    /// `[topology] router_prefetch`); the sink and the anchors use --prefetch and the sweep.
    /// lienthong also runs with its sink at this prefetch (every consumer of its path at one
    /// value, as the anchors' best runs), and its ratios are from the better of the two.
    #[arg(long, default_value_t = 500)]
    pub router_prefetch: u16,
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
    /// Paced runs of each paced mode, the modes alternating run by run (1 under --smoke). The
    /// p99 target is judged on the median of the runs' p99s, so that one hiccup of the machine
    /// in one run does not decide it: that needs an odd number of at least 3 (with fewer the
    /// target's row says so).
    #[arg(long, default_value_t = 3)]
    pub paced_rounds: u32,
    /// Dossiers of the HTTP-adapter run (default: --messages ÷ 5).
    #[arg(long)]
    pub http_messages: Option<u64>,
    /// Instead of the comparison: N messages through the router, its memory sampled every
    /// second (e.g. 1000000). Updates only the soak section of the report and the target read
    /// from it.
    #[arg(long)]
    pub soak: Option<u64>,
    /// Instead of the comparison: N dossiers piled up in Police's queue while the adapters are
    /// down, then drained (e.g. 200000). Updates only the backlog section of the report and the
    /// target read from it.
    #[arg(long)]
    pub backlog: Option<u64>,
    /// Instead of the comparison: the scale run. N dossiers through the HTTP-adapter path, then
    /// N dossiers of backlog drained, with 1, 2 and 4 router and adapter processes
    /// (`--scale-processes`) on SQLite and on PostgreSQL (`--scale-stores`); CPU per dossier of
    /// every process (bus, broker, PostgreSQL). Updates only the scale section of the report and
    /// the targets read from it.
    #[arg(long)]
    pub scale: Option<u64>,
    /// Rounds of the scale run: the whole grid of cells this many times, the stores' order
    /// alternating from one round to the next. The table gives, for each cell, the round whose
    /// bus CPU per dossier is the median (a coherent row, not a mix of rounds), and every
    /// round's figure beside it; the targets read the median row. 3 or more for a figure to
    /// judge a target by: one cell moved by up to 10 % between two runs of the same code.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub scale_rounds: u32,
    /// Router processes (and as many adapter processes) of each scale cell, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2, 4])]
    pub scale_processes: Vec<u32>,
    /// Stores of the scale run, comma-separated: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_string(), "postgres".to_string()], value_parser = ["sqlite", "postgres"])]
    pub scale_stores: Vec<String>,
    /// The PostgreSQL server of the scale run (any database of it; the bench creates and drops
    /// one database per cell, so the user needs CREATEDB). Default: `$LIENTHONG_TEST_PG`, or
    /// the machine's own server as `postgres` (scripts/ensure-postgres).
    #[arg(long, env = "LIENTHONG_BENCH_PG")]
    pub postgres: Option<String>,
    /// Instead of the comparison: the operators' console's pages timed against a store of N
    /// dossiers (e.g. 100000), served by `lienthong run --components http`. Prints a table (and
    /// writes it to --out when given); BENCHMARKS.md is not touched.
    #[arg(long)]
    pub console: Option<u64>,
    /// A tiny run of every mode for CI (2 rounds × 300 messages, a one-point prefetch sweep,
    /// one paced run of 2 s); the report goes to a temporary file unless --out is given. Exit 0 when every
    /// mode moved every message.
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
    /// Write the per-message latencies of each round of the comparison (saturated and paced)
    /// into this directory, one file per round named after its sink queue (`<queue>.tsv`): a
    /// line per message in the order it reached the sink, `arrival_ms<TAB>latency_ms`, the
    /// arrival counted from the sink's start. For finding when in a run the slow messages came
    /// (a paced run's warm-up is overwritten by its counted run).
    #[arg(long)]
    pub latency_log: Option<PathBuf>,
    /// Where the lienthong children keep their SQLite stores, one subdirectory per round
    /// (default: the round's working directory, under the system's temporary directory). The
    /// store's writes share the disk with the broker's unless this is on another one; the
    /// report says which.
    #[arg(long)]
    pub store_dir: Option<PathBuf>,
    /// RabbitMQ's data directory (the soak and the backlog check its free space first).
    #[arg(long, default_value = "/var/lib/rabbitmq")]
    pub broker_data_dir: PathBuf,
    /// Only these parts of the comparison, comma-separated: direct, pipe (both raw pipes, or
    /// pipe-plain, pipe-args), shovel (both shovels, or shovel-in-node, shovel-tcp), lienthong,
    /// http, paced (default: all). A partial run needs --out: BENCHMARKS.md keeps whole tables.
    #[arg(long, value_delimiter = ',', value_parser = [
        "direct", "pipe", "pipe-plain", "pipe-args", "shovel", "shovel-in-node", "shovel-tcp",
        "lienthong", "http", "paced",
    ])]
    pub modes: Vec<String>,
}

impl BenchArgs {
    /// Whether the comparison includes `part` (`--modes`).
    pub fn wants(&self, part: &str) -> bool {
        self.modes.is_empty() || self.modes.iter().any(|m| m == part)
    }

    /// The prefetch values of the sweep (none with --no-sweep), sorted, without repeats.
    pub fn sweep_points(&self) -> Vec<u16> {
        if self.no_sweep {
            return Vec::new();
        }
        let mut v = self.sweep_prefetch.clone();
        v.sort_unstable();
        v.dedup();
        v
    }
}
