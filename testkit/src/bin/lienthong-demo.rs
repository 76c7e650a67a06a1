//! `lienthong-demo`: run the bus on the sample dossiers and watch every dossier travel and come
//! back (starts `lienthong-mock` and `lienthong run` as children).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lienthong_core::registry::Settings;

#[derive(Parser)]
#[command(
    name = "lienthong-demo",
    version,
    about = "Run the bus on the sample dossiers and watch every dossier travel and come back: \
             starts `lienthong-mock` and `lienthong run` (found beside this program, or at \
             $LIENTHONG_MOCK_BIN and $LIENTHONG_BIN) with a configuration of its own, files the \
             dossiers at their centres, plays the units that read their own queues, prints a \
             summary. Exits 1 unless every dossier completed."
)]
struct Cli {
    /// The registry to run (TOML); every adapter is pointed at the mock agencies. Default: the
    /// embedded deploy/config/quang-ngai.toml.
    #[arg(long, short, env = "LIENTHONG_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    args: lienthong_testkit::demo::DemoArgs,
}

fn main() -> ExitCode {
    // As in every `lienthong` process, lapin does not log a returned message (with its body).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    let filter = match "lapin::returned_messages=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        let settings = Settings::load(cli.config.as_deref())?;
        lienthong_testkit::demo::run(settings, cli.args).await
    };
    match rt.block_on(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
