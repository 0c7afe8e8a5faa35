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
    /// Customer management (seed 002) and this site's usage commits.
    pub customers: crate::customers::CustomersConfig,
    /// The directory read from a Totalk admin server.
    pub directory: crate::directory::DirectoryConfig,
    /// Several nodes sharing the PTT accounts (leases in NATS JetStream); off by default.
    pub cluster: crate::cluster::config::ClusterConfig,
}

/// Environment variable with an operator token (takes the place of `[operator] token`).
pub const OPERATOR_TOKEN_ENV: &str = "PTTBRIDGE_OPERATOR_TOKEN";

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
    /// Bursts older than this many days are deleted (0 = kept forever).
    pub retention_days: u32,
    /// When the archive's files add up to more than this, the oldest are deleted until they
    /// fit (0 = no limit).
    pub max_total_bytes: u64,
}

/// toml's messages say what serde expected in Rust's words ("expected u16", "expected struct
/// TransUser", "invalid socket address syntax"); an operator reads them in the config's.
fn plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 12] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected a quoted string"),
        (
            "invalid socket address syntax",
            "expected an IP:PORT such as \"127.0.0.1:8080\" (an IP address, not a host name)",
        ),
    ];
    let mut out = message.to_owned();
    for (rust, plain) in WORDS {
        out = out.replace(rust, plain);
    }
    // "expected struct TransUser" and the like: a table of settings.
    while let Some(at) = out.find("expected struct ") {
        let name_end = out[at + 16..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(out.len(), |n| at + 16 + n);
        out.replace_range(at..name_end, "expected a table of settings");
    }
    out
}

/// `log.level`: a level, or directives `target=level` after an optional default level. A bare
/// word that is no level would be taken as a target name and silence everything else.
fn check_log_level(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let hint =
        "use error, warn, info, debug or trace, or directives such as \"info,pttbridge=debug\"";
    for part in level.split(',').map(str::trim) {
        let lvl = part.rsplit_once('=').map_or(part, |(_, l)| l).trim();
        if !LEVELS.contains(&lvl.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                "log.level",
                format!("{part:?} is not a level: {hint}"),
            ));
        }
    }
    if tracing_subscriber::EnvFilter::try_new(level).is_err() {
        return Err(invalid(
            "log.level",
            format!("{level:?} cannot be read: {hint}"),
        ));
    }
    Ok(())
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
            message: plain_words(&e.to_string()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// What a valid config leaves the bridge unable to do, in the config's words: worth saying
    /// at `check-config` and at start, not worth refusing.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.ptt.servers.is_empty() {
            w.push(
                "ptt.servers: none configured: the bridge connects to no PTT server, so no \
                 channel can be called, heard or bridged"
                    .to_owned(),
            );
        }
        w
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_log_level(&self.log.level)?;
        self.http.validate()?;
        crate::events::config::validate(&self.egw, &self.nats, &self.business)?;
        self.meeting.validate(&self.ptt)?;
        self.ptt.validate()?;
        self.console.validate(&self.ptt)?;
        self.customers.validate()?;
        self.directory.validate()?;
        self.cluster.validate(&self.nats)?;
        if self
            .operator
            .token
            .as_ref()
            .is_some_and(|t| t.trim().len() < 16)
        {
            return Err(invalid("operator.token", "at least 16 characters"));
        }
        // Every node of a cluster must accept the same token: one generated at first start
        // would be each node's own (docs/cluster.md).
        if self.cluster.enabled()
            && self.operator.token.is_none()
            && std::env::var_os(OPERATOR_TOKEN_ENV).is_none()
        {
            return Err(invalid(
                "operator.token",
                "required on a cluster node (or the PTTBRIDGE_OPERATOR_TOKEN environment variable), the same on every node: a generated one would differ from node to node",
            ));
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
pub(crate) mod tests {
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

    /// The error `Config::parse` gives for `text` (for the config modules' tests).
    pub(crate) fn err(text: &str) -> String {
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
    fn the_empty_file_is_valid_but_warned_about() {
        let c = Config::parse("").unwrap();
        assert!(c.warnings()[0].starts_with("ptt.servers: none configured"));
        assert!(Config::parse(GOOD).unwrap().warnings().is_empty());
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
    fn type_errors_are_in_the_configs_words_not_rusts() {
        let e = err("[[ptt.servers]]\nid = \"a\"\nhost = \"h\"\nport = 70000\n");
        assert!(e.contains("a whole number from 0 to 65535"), "{e}");
        let e = err("[http]\nlisten = \"localhost:8080\"\n");
        assert!(e.contains("an IP:PORT such as \"127.0.0.1:8080\""), "{e}");
        let e = err("[meeting]\nupstream = [1]\n");
        assert!(e.contains("a table of settings"), "{e}");
        assert!(!e.contains("struct"), "{e}");
    }

    #[test]
    fn meeting_nat_settings_are_checked() {
        let ok = Config::parse(
            "[meeting]\nrtc_ip = \"203.0.113.7\"\nrtc_bind_ip = \"0.0.0.0\"\nrtc_port_min = 40000\nrtc_port_max = 40099\n",
        )
        .unwrap();
        let media = ok.meeting.media_address();
        assert_eq!(media.bind.to_string(), "0.0.0.0");
        assert_eq!(media.announce.to_string(), "203.0.113.7");
        assert_eq!(media.ports, Some((40000, 40099)));
        assert!(
            err("[meeting]\nrtc_port_min = 40000\n").starts_with("meeting.rtc_port_max: required")
        );
        assert!(
            err("[meeting]\nrtc_port_min = 5\nrtc_port_max = 4\n")
                .starts_with("meeting.rtc_port_min:")
        );
        assert!(err("[meeting]\nrtc_ip = \"0.0.0.0\"\n").starts_with("meeting.rtc_ip:"));
    }

    #[test]
    fn the_fan_out_shard_size_is_range_checked_naming_the_key() {
        assert_eq!(
            Config::parse("").unwrap().meeting.fanout_shard_listeners,
            512
        );
        for ok in [0, 1, 256, 100_000] {
            Config::parse(&format!("[meeting]\nfanout_shard_listeners = {ok}\n")).unwrap();
        }
        for bad in [100_001, 1_000_000] {
            let e = err(&format!("[meeting]\nfanout_shard_listeners = {bad}\n"));
            assert!(e.starts_with("meeting.fanout_shard_listeners:"), "{e}");
        }
    }

    #[test]
    fn the_room_threads_are_range_checked_naming_the_key() {
        assert_eq!(Config::parse("").unwrap().meeting.room_threads, 0);
        for ok in [0, 1, 2, 256] {
            Config::parse(&format!("[meeting]\nroom_threads = {ok}\n")).unwrap();
        }
        for bad in [257, 100_000] {
            let e = err(&format!("[meeting]\nroom_threads = {bad}\n"));
            assert!(e.starts_with("meeting.room_threads:"), "{e}");
        }
    }

    #[test]
    fn a_log_level_that_would_log_nothing_is_refused() {
        for bad in ["loud", "info,pttbridge", "pttbridge=chatty"] {
            let e = err(&format!("[log]\nlevel = \"{bad}\""));
            assert!(e.starts_with("log.level: "), "{e}");
            assert!(e.contains("is not a level"), "{e}");
        }
        for good in [
            "warn",
            "INFO",
            "info,pttbridge=debug",
            "pttbridge::events=trace,off",
        ] {
            Config::parse(&format!("[log]\nlevel = \"{good}\"")).unwrap();
        }
    }

    #[test]
    fn shipped_configs_are_valid() {
        for f in ["config/bridge.toml", "config/demo.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            Config::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}
