//! `lienthong-mock`: serve the eight mock agencies on loopback until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lienthong_core::registry::Settings;
use lienthong_testkit::procs::MOCK_LISTENING;

#[derive(Parser)]
#[command(
    name = "lienthong-mock",
    version,
    about = "Serve the agencies' reference interfaces (schemas/agencies/) on loopback, for the \
             demo, the bench and trying lienthong out: Police (/police), Social Insurance \
             (/bhxh), Tax (/tax), Customs (/customs), the departments' edXML document systems \
             (/edxml/<unit>), the civil-status software (/civil-status/<unit>; behind SOAP 1.1: \
             /civil-status-soap/<unit>/HoTichService) and the DVCQG \
             portal (/dvcqg); /_mock scripts faults and decisions and shows what they received. \
             Not for production."
)]
struct Cli {
    /// The bus's configuration file (TOML): [mock] settings, and the callback keys and portal
    /// credentials of the units reached by adapters. Default: the embedded
    /// deploy/config/quang-ngai.toml.
    #[arg(long, short, env = "LIENTHONG_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address (overrides [mock] listen; default 127.0.0.1:8490).
    #[arg(long)]
    listen: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
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
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(l) = cli.listen {
        settings.mock.listen = l;
    }
    let server = lienthong_testkit::mock::serve(&settings).await?;
    println!(
        "{MOCK_LISTENING} {}://{} (police: /police, bhxh: /bhxh, tax: /tax, customs: /customs, \
         edxml: /edxml/<unit>, civil status: /civil-status/<unit>, \
         civil status over SOAP: /civil-status-soap/<unit>/HoTichService, dvcqg: /dvcqg, control: /_mock)",
        if settings.mock.tls_cert.is_some() {
            "https"
        } else {
            "http"
        },
        server.addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    let _ = server.stop.send(());
    let _ = server.task.await;
    Ok(())
}
