//! The `pttbridge` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pttbridge::config::{Config, LogFormat};
use pttbridge::probe::{self, ProbeOptions};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "pttbridge",
    version,
    about = "Protocol gateway between PTT voice servers, dispatch consoles, WebRTC meetings and event platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bridge.
    Run {
        /// Configuration file (TOML; see config/bridge.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Join a PTT channel, play/record audio and print what happens as JSON lines.
    Probe(ProbeOptions),
    /// On a dispatcher's PC: stand in for the muicall voice plugin — serve the unmodified
    /// console page, relay it to the bridge, and do the call's audio with this PC's microphone
    /// and speaker (see config/console-agent.toml).
    ConsoleAgent(console_agent::cli::AgentArgs),
}

fn init_logs(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colour only for a person at a terminal: a pipe, a file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match cli.command {
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => {
                let warnings = cfg.warnings();
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                match warnings.len() {
                    0 => println!("{}: ok", file.display()),
                    n => println!("{}: ok, with {n} warning(s)", file.display()),
                }
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e)),
        },
        Cmd::Run { config } => match Config::load(&config) {
            Ok(cfg) => {
                init_logs(&cfg.log.level, cfg.log.format);
                for w in cfg.warnings() {
                    tracing::warn!("config: {w}");
                }
                runtime.block_on(pttbridge::run::run(cfg))
            }
            Err(e) => Err(anyhow::Error::new(e)),
        },
        Cmd::Probe(opts) => {
            init_logs("warn", LogFormat::Text);
            runtime.block_on(probe::run(opts))
        }
        Cmd::ConsoleAgent(args) => {
            if !args.list_devices {
                init_logs("info", LogFormat::Text);
            }
            args.execute(&runtime)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
