//! `lienthong-bench`: how fast lienthong moves dossiers, measured against what the broker itself
//! does on the same machine in the same run.
//!
//! Modes, alternated round by round with the same producer, sink, envelopes, body size,
//! persistence, publisher confirms, manual acks, quorum queues and prefetch:
//!
//! - **direct**: producer → one queue → sink (the broker's one hop);
//! - **raw pipe**: producer → queue A → `lienthong-bench pipe` (a child process: consume,
//!   republish with a confirm, ack after the confirm, pipelined) → queue B → sink: the ceiling
//!   of any router written on lapin;
//! - **shovel**: the same two queues linked by RabbitMQ's shovel plugin (`on-confirm`);
//! - **lienthong**: `<prefix>.ingress` → `lienthong run --components router,tracer,http` (a
//!   child process: schema validation, registry and route checks, message store, trace; its
//!   HTTP API serves the router's stage times on `/metrics`) → the receiver unit's queue →
//!   sink.
//!
//! Then, apart: the **HTTP adapter** end to end (`lienthong-mock` + `lienthong run`: ingress → Police
//! adapter → agency → callback → result on the centre's queue), and **paced** runs of direct,
//! raw pipe and lienthong below saturation (the raw pipe's is the broker's own two-hop latency
//! at that rate, the floor of lienthong's). On request, in their own invocations: the **soak**
//! (`--soak N`, the router's memory sampled every second) and the **backlog drain**
//! (`--backlog N`, an agency's queue emptied once its adapter comes back), and the **scale**
//! run (`--scale N`: the HTTP-adapter path and the backlog drain with 1, 2 and 4 router and
//! adapter processes, on SQLite and on PostgreSQL; CPU per dossier of every kind of process).
//!
//! Everything the benchmark declares on the broker is named `lienthong-bench-<run id>…` and is
//! deleted at the end, also when a round fails or the run is interrupted; a shovel it created
//! is cleared, and the shovel plugin is disabled again if the benchmark enabled it. The report
//! goes to `BENCHMARKS.md` (see [`report`]).
//!
//! One file per part: [`args`] (options), [`harness`] (the run), [`compare`], [`soak`],
//! [`backlog`] and [`scale`] (the kinds of run; [`scale_report`] its section), [`round`] and [`setup`] (one round of a mode),
//! [`children`], [`cleanup`], [`broker`], [`pipe`], [`traffic`], [`procfs`], [`report`].

mod args;
mod backlog;
mod broker;
mod children;
mod cleanup;
mod compare;
mod console;
mod harness;
mod pipe;
mod procfs;
mod report;
mod round;
mod scale;
mod scale_report;
mod setup;
mod soak;
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
    about = "Measure lienthong against the broker on this machine (direct, raw pipe, shovel, \
             lienthong, HTTP adapter, paced; --soak, --backlog, --scale) and write BENCHMARKS.md. Runs \
             `lienthong` and `lienthong-mock` found beside this program (or at $LIENTHONG_BIN \
             and $LIENTHONG_MOCK_BIN)."
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
