//! The agent's configuration (`config/console-agent.toml` documents every key and its default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What went wrong with the configuration, in the file's own words.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong kind.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (it names the key and the line).
        message: String,
    },
    /// A value outside what it can be.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, as written in the file.
        key: &'static str,
        /// What it must be.
        message: String,
    },
}

/// Where the standalone agent finds the bridge when `bridge` is not set.
pub const DEFAULT_BRIDGE: &str = "ws://127.0.0.1:8080/muicall";

/// The agent's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Where the console page connects (the voice plugin's address): loopback by default, as
    /// the page runs on the same PC.
    pub listen: SocketAddr,
    /// The bridge's console endpoint: `ws://host:port/muicall`, or `wss://` when the bridge
    /// serves TLS. Unset: [`DEFAULT_BRIDGE`] for the standalone agent; the bridge's own
    /// `/muicall` when the bridge runs the agent itself (`[console.agent]`).
    pub bridge: Option<String>,
    /// PEM file of the CA (or the self-signed certificate) a `wss://` bridge is checked against;
    /// unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Microphone, by name as `--list-devices` prints it (a unique part of it is enough);
    /// unset: the system's default input.
    pub input_device: Option<String>,
    /// Speaker, by name; unset: the system's default output.
    pub output_device: Option<String>,
    /// Gain applied to the microphone before encoding (dB, -40 to +20).
    pub input_gain_db: f32,
    /// Gain applied to what is played (dB, -40 to +20).
    pub output_gain_db: f32,
    /// Largest console message relayed (bytes); a longer one is answered with `code: 0`.
    pub max_message_bytes: usize,
    /// Jitter buffer for what the speaker plays: least depth (ms).
    pub jitter_min_ms: u32,
    /// Opus bitrate of the microphone (bits per second).
    pub opus_bitrate: i32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7890)),
            bridge: None,
            ca_file: None,
            input_device: None,
            output_device: None,
            input_gain_db: 0.0,
            output_gain_db: 0.0,
            max_message_bytes: 64 * 1024,
            jitter_min_ms: 40,
            opus_bitrate: 24_000,
        }
    }
}

impl AgentConfig {
    /// The bridge's console endpoint to use.
    pub fn bridge_url(&self) -> &str {
        self.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE)
    }

    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let scheme = self.bridge_url().split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("ws" | "wss")) {
            return Err(ConfigError::Invalid {
                key: "bridge",
                message: format!(
                    "{:?} is not a WebSocket URL such as ws://bridge.example:8080/muicall",
                    self.bridge_url()
                ),
            });
        }
        for (key, db) in [
            ("input_gain_db", self.input_gain_db),
            ("output_gain_db", self.output_gain_db),
        ] {
            if !(-40.0..=20.0).contains(&db) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{db} is not a gain from -40 to 20 dB"),
                });
            }
        }
        if !(1024..=1024 * 1024).contains(&self.max_message_bytes) {
            return Err(ConfigError::Invalid {
                key: "max_message_bytes",
                message: "must be a whole number from 1024 to 1048576".into(),
            });
        }
        if !(20..=500).contains(&self.jitter_min_ms) {
            return Err(ConfigError::Invalid {
                key: "jitter_min_ms",
                message: "must be a whole number of ms from 20 to 500".into(),
            });
        }
        if !(6_000..=128_000).contains(&self.opus_bitrate) {
            return Err(ConfigError::Invalid {
                key: "opus_bitrate",
                message: "must be a bitrate from 6000 to 128000".into(),
            });
        }
        Ok(())
    }
}

/// A gain in dB as a factor.
pub fn gain(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_key() {
        let cfg = AgentConfig::parse("").unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7890");
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/console-agent.toml"),
        )
        .unwrap();
        AgentConfig::parse(&text).expect("the documented file parses");
    }

    #[test]
    fn errors_name_the_key() {
        let e = AgentConfig::parse("bridge = \"http://x/muicall\"").unwrap_err();
        assert!(e.to_string().starts_with("bridge:"), "{e}");
        let e = AgentConfig::parse("input_gain_db = 30.0").unwrap_err();
        assert!(e.to_string().starts_with("input_gain_db:"), "{e}");
        let e = AgentConfig::parse("speaker = \"x\"").unwrap_err();
        assert!(e.to_string().contains("speaker"), "{e}");
    }

    #[test]
    fn gain_in_db() {
        assert!((gain(0.0) - 1.0).abs() < 1e-6);
        assert!((gain(-20.0) - 0.1).abs() < 1e-6);
    }
}
