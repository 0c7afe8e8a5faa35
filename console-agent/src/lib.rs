//! The console agent: runs on the dispatcher's PC in place of the muicall voice plugin. The
//! console page, unchanged, connects to it and speaks the spec's JSON; the agent relays that to
//! the bridge's `/muicall` and does the call's audio with the PC's own microphone and speaker —
//! what the plugin did — sending and receiving it as the bridge's binary audio frames.
//!
//! - [`relay`]: the protocol core, without IO (what the page and the bridge say, and what it
//!   means for the microphone and the speaker);
//! - [`devices`]: the sound devices (cpal);
//! - [`bridge_link`]: the WebSocket to the bridge (`ws://` or `wss://`);
//! - [`agent`]: the IO around them;
//! - [`config`]: its settings (`config/console-agent.toml`);
//! - [`cli`]: its command line (`pttbridge console-agent`, and the standalone
//!   `pttbridge-console-agent` for PCs that should carry nothing of the bridge).

pub mod agent;
pub mod bridge_link;
pub mod cli;
pub mod config;
pub mod devices;
pub mod relay;

pub use agent::run;
pub use config::AgentConfig;
