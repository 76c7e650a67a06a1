//! The demo.
use std::path::PathBuf;
use std::process::ExitCode;

/// Demo options.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Sample file.
    #[arg(long, default_value = "schemas/samples/dossiers.jsonl")]
    pub file: PathBuf,
}

/// Run the demo.
pub async fn run(_settings: lienthong_core::Settings, _config: Option<PathBuf>, _args: DemoArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
