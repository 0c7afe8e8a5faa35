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
    ConsoleAgent {
        /// Configuration file (TOML; see config/console-agent.toml); defaults without one.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where the console page connects (overrides `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The bridge's console endpoint, ws:// or wss:// (overrides `bridge`).
        #[arg(long)]
        bridge: Option<String>,
        /// List the microphones and speakers (the default first) and exit.
        #[arg(long)]
        list_devices: bool,
    },
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

/// The agent's settings: the file's (or the defaults), then the command line's.
fn agent_config(
    file: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    bridge: Option<String>,
) -> anyhow::Result<console_agent::AgentConfig> {
    let mut cfg = match &file {
        Some(f) => console_agent::AgentConfig::load(f)?,
        None => console_agent::AgentConfig::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(b) = bridge {
        cfg.bridge = Some(b);
    }
    cfg.validate()?;
    Ok(cfg)
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
        Cmd::ConsoleAgent {
            list_devices: true, ..
        } => console_agent::devices::list().map(|d| {
            println!("microphones (default first):");
            d.inputs.iter().for_each(|n| println!("  {n}"));
            println!("speakers (default first):");
            d.outputs.iter().for_each(|n| println!("  {n}"));
        }),
        Cmd::ConsoleAgent {
            config,
            listen,
            bridge,
            ..
        } => agent_config(config, listen, bridge).and_then(|cfg| {
            init_logs("info", LogFormat::Text);
            runtime.block_on(console_agent::run(cfg))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
