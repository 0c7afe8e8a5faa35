//! Bridge configuration: TOML, every option defaulted (see `config/bridge.toml`),
//! validated at start so a bad file fails with the key and the reason.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `ptt.servers[0].fingerprint`.
        key: String,
        /// Why it is rejected.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

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
}

/// The single HTTP port: health, metrics, WebSockets, REST, web page.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
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

/// PTT side: servers and the accounts the bridge keeps connected.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PttConfig {
    /// PTT servers.
    pub servers: Vec<PttServer>,
    /// Silence after which a talker counts as stopped, in ms (pymumble never sends the terminator).
    pub talk_timeout_ms: u64,
    /// First reconnect delay in ms (doubles per failure, with jitter).
    pub reconnect_initial_ms: u64,
    /// Largest reconnect delay in ms.
    pub reconnect_max_ms: u64,
}

impl Default for PttConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            talk_timeout_ms: 300,
            reconnect_initial_ms: 250,
            reconnect_max_ms: 4000,
        }
    }
}

/// One PTT server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PttServer {
    /// Short id used in events, metrics and health ("local").
    pub id: String,
    /// Tenant (`app_id`) whose events this server produces.
    #[serde(default = "default_app")]
    pub app: String,
    /// Host name or address.
    pub host: String,
    /// TCP (and UDP) port.
    #[serde(default = "default_ptt_port")]
    pub port: u16,
    /// SHA-256 fingerprint of the server certificate (hex, `:` optional).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Accept any server certificate. Only for test servers.
    #[serde(default)]
    pub accept_invalid_certs: bool,
    /// Use UDP for voice when it works (falls back to the TCP tunnel either way).
    #[serde(default = "default_true")]
    pub udp: bool,
    /// Server UDP port if it differs from `port`.
    #[serde(default)]
    pub udp_port: Option<u16>,
    /// Accounts to keep connected; each is one session in one channel.
    #[serde(default)]
    pub accounts: Vec<PttAccount>,
}

/// One PTT account held by the bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PttAccount {
    /// User name.
    pub username: String,
    /// Password (empty: none).
    #[serde(default)]
    pub password: String,
    /// Channel path to join ("North/Sub"); unset stays where the server puts it.
    #[serde(default)]
    pub channel: Option<String>,
}

fn default_app() -> String {
    "default".into()
}

fn default_ptt_port() -> u16 {
    64738
}

fn default_true() -> bool {
    true
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
        crate::events::config::validate(&self.egw, &self.nats, &self.business)?;
        self.meeting.validate(self)?;
        let ptt = &self.ptt;
        if !(20..=60_000).contains(&ptt.talk_timeout_ms) {
            return Err(invalid(
                "ptt.talk_timeout_ms",
                "must be between 20 and 60000",
            ));
        }
        if ptt.reconnect_initial_ms == 0 || ptt.reconnect_initial_ms > ptt.reconnect_max_ms {
            return Err(invalid(
                "ptt.reconnect_initial_ms",
                "must be > 0 and not above ptt.reconnect_max_ms",
            ));
        }
        let mut ids = HashSet::new();
        for (i, s) in ptt.servers.iter().enumerate() {
            let key = |k: &str| format!("ptt.servers[{i}].{k}");
            if s.id.is_empty()
                || !s
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    key("id"),
                    "must be non-empty letters, digits, '-' or '_'",
                ));
            }
            if !ids.insert(&s.id) {
                return Err(invalid(
                    key("id"),
                    format!("duplicate server id {:?}", s.id),
                ));
            }
            if s.host.is_empty() {
                return Err(invalid(key("host"), "must not be empty"));
            }
            if s.port == 0 {
                return Err(invalid(key("port"), "must not be 0"));
            }
            match (&s.fingerprint, s.accept_invalid_certs) {
                (Some(fp), false) => {
                    ptt::tls::parse_fingerprint(fp).map_err(|r| invalid(key("fingerprint"), r))?;
                }
                (None, true) => {}
                (Some(_), true) => {
                    return Err(invalid(
                        key("accept_invalid_certs"),
                        "set either `fingerprint` or `accept_invalid_certs = true`, not both",
                    ));
                }
                (None, false) => {
                    return Err(invalid(
                        key("fingerprint"),
                        "required: the SHA-256 of the server certificate (or set `accept_invalid_certs = true` for a test server)",
                    ));
                }
            }
            if s.accounts.is_empty() {
                return Err(invalid(key("accounts"), "at least one account is needed"));
            }
            let mut names = HashSet::new();
            for (j, a) in s.accounts.iter().enumerate() {
                let akey = format!("ptt.servers[{i}].accounts[{j}].username");
                if a.username.trim().is_empty() {
                    return Err(invalid(akey, "must not be empty"));
                }
                if !names.insert(&a.username) {
                    return Err(invalid(
                        akey,
                        format!("duplicate account {:?} on this server", a.username),
                    ));
                }
            }
        }
        self.console.validate(&self.ptt)?;
        Ok(())
    }
}

impl PttServer {
    /// The TLS trust this server is configured with (validated already).
    pub fn trust(&self) -> ptt::tls::ServerTrust {
        match &self.fingerprint {
            Some(fp) if !self.accept_invalid_certs => ptt::tls::ServerTrust::Pinned(
                ptt::tls::parse_fingerprint(fp).expect("validated at load"),
            ),
            _ => ptt::tls::ServerTrust::AcceptInvalid,
        }
    }
}

impl PttConfig {
    /// Talk timeout as a duration.
    pub fn talk_timeout(&self) -> Duration {
        Duration::from_millis(self.talk_timeout_ms)
    }

    /// Reconnect policy.
    pub fn backoff(&self) -> ptt::backoff::Backoff {
        ptt::backoff::Backoff {
            initial: Duration::from_millis(self.reconnect_initial_ms),
            max: Duration::from_millis(self.reconnect_max_ms),
            multiplier: 2.0,
        }
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
