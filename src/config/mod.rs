//! Bridge configuration: TOML, every option defaulted (see `config/bridge.toml`),
//! validated at start so a bad file fails with the key and the reason.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod error;
mod http_config;
mod ptt_config;

pub use error::ConfigError;
pub(crate) use error::invalid;
pub use http_config::HttpConfig;
pub use ptt_config::{PttAccount, PttConfig, PttServer};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP/WebSocket listener.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// PTT side.
    pub ptt: PttConfig,
    /// Talk-burst recordings.
    pub recording: RecordingConfig,
    /// EGW WebSocket (`/egw`).
    pub egw: crate::events::config::EgwConfig,
    /// NATS JetStream event sink.
    pub nats: crate::events::config::NatsConfig,
    /// Business-gateway REST (`/v1/...`).
    pub business: crate::events::config::BusinessConfig,
    /// Embedded storage (apps, call records).
    pub storage: crate::events::config::StorageConfig,
    /// Console side (muicall WebSocket).
    pub console: crate::sides::console::config::ConsoleConfig,
    /// Meeting side (RTCPeer + WebRTC).
    pub meeting: crate::sides::meeting::config::MeetingConfig,
    /// Operators: who may watch and steer the bridge.
    pub operator: OperatorConfig,
}

/// `[operator]`: the credentials of the page's live view, `/api/*`, `/events`,
/// `/meeting/links*`, app management and metrics (see `docs/security.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorConfig {
    /// An operator token (at least 16 characters). Unset, and `PTTBRIDGE_OPERATOR_TOKEN` unset
    /// too: one is generated at first start, kept as a digest in the store and printed once.
    pub token: Option<String>,
    /// Hours a signed-in page stays signed in.
    pub session_hours: u64,
    /// Serve `/metrics` without a token (for a scraper on a trusted network).
    pub public_metrics: bool,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            token: None,
            session_hours: 12,
            public_metrics: false,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `pttbridge=debug,ptt=info`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Talk-burst recording (Ogg Opus, no transcoding).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Directory for recordings; recording is off when unset.
    pub dir: Option<PathBuf>,
}

impl Config {
    /// Reads, parses and validates a file.
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

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("not a valid filter: {:?}", self.log.level),
            ));
        }
        self.http.validate()?;
        crate::events::config::validate(&self.egw, &self.nats, &self.business)?;
        self.meeting.validate(&self.ptt)?;
        self.ptt.validate()?;
        self.console.validate(&self.ptt)?;
        if self
            .operator
            .token
            .as_ref()
            .is_some_and(|t| t.trim().len() < 16)
        {
            return Err(invalid("operator.token", "at least 16 characters"));
        }
        ConfigError::check_range(
            "operator.session_hours",
            self.operator.session_hours,
            1..=24 * 30,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [http]
        listen = "127.0.0.1:9000"
        [[ptt.servers]]
        id = "local"
        host = "127.0.0.1"
        fingerprint = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"
        [[ptt.servers.accounts]]
        username = "bridge"
        channel = "North"
    "#;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_everything_else() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(c.ptt.servers[0].port, 64738);
        assert_eq!(c.ptt.servers[0].app, "default");
        assert!(c.ptt.servers[0].udp);
        assert_eq!(c.ptt.talk_timeout_ms, 300);
        assert!(c.recording.dir.is_none());
        assert!(matches!(
            c.ptt.servers[0].trust(),
            ptt::tls::ServerTrust::Pinned(_)
        ));
    }

    #[test]
    fn the_empty_file_is_valid() {
        Config::parse("").unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        assert!(
            err(&GOOD.replace("fingerprint = \"00", "fingerprint = \"zz"))
                .starts_with("ptt.servers[0].fingerprint:")
        );
        let no_tls = GOOD
            .lines()
            .filter(|l| !l.contains("fingerprint"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(err(&no_tls).contains("ptt.servers[0].fingerprint: required"));
        assert!(
            err(&GOOD.replace("listen = \"127.0.0.1:9000\"", "listen = \"nowhere\""))
                .contains("listen")
        );
        assert!(err(&GOOD.replace("[http]", "[http]\nlisten_typo = 1")).contains("listen_typo"));
        assert!(
            err(&GOOD.replace("username = \"bridge\"", "username = \"\""))
                .contains("accounts[0].username")
        );
        assert!(err("[ptt]\ntalk_timeout_ms = 5\n").contains("ptt.talk_timeout_ms"));
        assert!(err("[log]\nformat = \"xml\"").contains("format"));
    }

    #[test]
    fn shipped_configs_are_valid() {
        for f in ["config/bridge.toml", "config/demo.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            Config::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}
