//! `lienthong-bench`: how fast lienthong moves dossiers, measured against what the broker itself
//! does on the same machine in the same run, and where issue 21's targets stand.
//!
//! Modes, alternated round by round with the same producer, sink, envelopes, body size,
//! persistence, publisher confirms, manual acks and quorum queues:
//!
//! - **direct**: producer → one queue → sink (the broker's one hop);
//! - **raw pipe (plain)** and **raw pipe (lienthong args)**: producer → queue A →
//!   `lienthong-bench pipe` (a child process: consume, republish with a confirm, ack after the
//!   confirm, pipelined) → queue B → sink, on plain quorum queues and on quorum queues with
//!   lienthong's work-queue arguments: the ceiling of any router written on lapin;
//! - **shovel (in-node)** and **shovel (tcp)**: the same two queues linked by a dynamic shovel
//!   of RabbitMQ's plugin (`on-confirm`), through the node's direct connection (`amqp://`) or
//!   over TCP (the bench's own URL);
//! - **lienthong**: `<prefix>.ingress` → `lienthong run --components router,tracer,http` (a
//!   child process: schema validation, registry and route checks, message store, trace; its
//!   HTTP API serves the router's stage times on `/metrics`) → the receiver unit's queue →
//!   sink.
//!
//! The four anchors (raw pipes, shovels) first run a small prefetch sweep (`--sweep-prefetch
//! 64,200,500`, fewer messages, [`anchors`]); each then runs the alternating rounds at the bench's
//! `--prefetch` and again at its best value, and the ratios are to the best of each.
//!
//! Then, apart: the **HTTP adapter** end to end (`lienthong-mock` + `lienthong run`: ingress →
//! Police adapter → agency → callback → result on the centre's queue), and **paced** runs of
//! direct, raw pipe and lienthong below saturation (the raw pipe's is the broker's own two-hop
//! latency at that rate, the floor of lienthong's). On request, in their own invocations: the
//! **soak** (`--soak N`, the router's memory sampled every second) and the **backlog drain**
//! (`--backlog N`, an agency's queue emptied once its adapter comes back), and the **scale**
//! run (`--scale N`: the HTTP-adapter path and the backlog drain with 1, 2 and 4 router and
//! adapter processes, on SQLite and on PostgreSQL; CPU per dossier of every kind of process).
//!
//! Every invocation ends by computing the report's "Targets (issue 21)" section ([`targets`])
//! from the whole report: the comparison's figures and the soak's, backlog's and scale run's
//! sections, whichever invocation wrote them ([`read_back`]).
//!
//! Everything the benchmark declares on the broker is named `lienthong-bench-<run id>…` and is
//! deleted at the end, also when a round fails or the run is interrupted; a shovel it created
//! is cleared, and the shovel plugin is disabled again if the benchmark enabled it. The report
//! goes to `BENCHMARKS.md` (see [`report`]).
//!
//! One file per part: [`args`] (options), [`harness`] (the run), [`compare`] (the sweep and the
//! alternation), [`soak`], [`backlog`] and [`scale`] (the other kinds of run), [`round`] and
//! [`setup`] (one round of a mode), [`children`], [`cleanup`], [`broker`], [`pipe`],
//! [`traffic`], [`procfs`]; the report: [`report`] (the comparison's sections and the file),
//! [`anchors`] (the sweep and the ratios), [`stages`] (the router's stage times),
//! [`long_runs`] (the soak's and the backlog's sections), [`scale_report`], [`targets`],
//! [`read_back`].

mod anchors;
mod args;
mod backlog;
mod broker;
mod children;
mod cleanup;
mod compare;
mod console;
mod harness;
mod long_runs;
mod measures;
mod pipe;
mod procfs;
mod read_back;
mod report;
mod results;
mod round;
mod scale;
mod scale_report;
mod setup;
mod soak;
mod stages;
mod targets;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lienthong_core::registry::Settings;

#[derive(Parser)]
#[command(
    name = "lienthong-bench",
    version,
    args_conflicts_with_subcommands = true,
    about = "Measure lienthong against the broker on this machine (direct, raw pipes plain and \
             on lienthong's arguments, shovels in the node and over TCP, each anchor at the best \
             prefetch of a sweep, lienthong, HTTP adapter, paced; --soak, --backlog, --scale) and \
             write BENCHMARKS.md with where issue 21's targets stand. Runs `lienthong` and \
             `lienthong-mock` found beside this program (or at $LIENTHONG_BIN and \
             $LIENTHONG_MOCK_BIN)."
)]
struct Cli {
    /// The bus's configuration (TOML): the broker, the registry the bus runs with. Default: the
    /// embedded deploy/config/quang-ngai.toml.
    #[arg(long, short, env = "LIENTHONG_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: args::BenchArgs,
}

/// The machine's RabbitMQ through its default user (loopback only on a default broker): the
/// broker the bench uses without `--config`.
const SHARED_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Subcommand)]
enum Command {
    /// The benchmark's raw pipe (a child of `lienthong-bench`).
    #[command(hide = true)]
    Pipe(pipe::PipeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        match cli.command {
            Some(Command::Pipe(args)) => pipe::run(args).await,
            None => {
                let mut settings = Settings::load(cli.config.as_deref())?;
                if cli.config.is_none() {
                    // The shipped bus user has a placeholder password: without a config of
                    // its own the bench measures on the machine's broker as its default user
                    // (its producer publishes as the bus; BENCHMARKS.md, SECURITY.md).
                    settings.bus.amqp_url = SHARED_BROKER.into();
                }
                harness::run(settings, cli.args).await
            }
        }
    };
    match rt.block_on(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
