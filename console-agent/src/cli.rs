//! The agent's command line, shared by `pttbridge console-agent` and the standalone
//! `pttbridge-console-agent` (the small binary for dispatchers' PCs, Windows included, which
//! carries nothing of the bridge).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::AgentConfig;

/// `console-agent` options.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Configuration file (TOML; see config/console-agent.toml); defaults without one.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the console page connects (overrides `listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The bridge's console endpoint, ws:// or wss:// (overrides `bridge`).
    #[arg(long)]
    pub bridge: Option<String>,
    /// List the microphones and speakers (the default first) and exit.
    #[arg(long)]
    pub list_devices: bool,
}

impl AgentArgs {
    /// The settings: the file's (or the defaults), then the command line's, checked.
    pub fn settings(&self) -> anyhow::Result<AgentConfig> {
        let mut cfg = match &self.config {
            Some(f) => AgentConfig::load(f)?,
            None => AgentConfig::default(),
        };
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(b) = &self.bridge {
            cfg.bridge = Some(b.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// `--list-devices`: prints the microphones and speakers.
    pub fn print_devices() -> anyhow::Result<()> {
        let d = crate::devices::list()?;
        println!("microphones (default first):");
        d.inputs.iter().for_each(|n| println!("  {n}"));
        println!("speakers (default first):");
        d.outputs.iter().for_each(|n| println!("  {n}"));
        Ok(())
    }

    /// Lists the devices or runs the agent (until it fails), on `runtime`; logging is the
    /// caller's.
    pub fn execute(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        if self.list_devices {
            return Self::print_devices();
        }
        let cfg = self.settings()?;
        runtime.block_on(crate::run(cfg))
    }
}
