//! `pttbridge-console-agent`: the console agent alone, for a dispatcher's PC (see the crate docs
//! and docs/console.md). The same as `pttbridge console-agent`, without the bridge.

use std::process::ExitCode;

use clap::Parser;
use console_agent::cli::AgentArgs;

#[derive(Parser)]
#[command(
    name = "pttbridge-console-agent",
    version,
    about = "Stands in for the muicall voice plugin: serves the unmodified console page, relays it to pttbridge and does the call's audio with this PC's microphone and speaker"
)]
struct Cli {
    #[command(flatten)]
    args: AgentArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| cli.args.execute(&rt));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
