//! `[console]`: the muicall console WebSocket (`/muicall`) and how its calls map onto PTT servers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, PttConfig};

/// The console side.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Base URLs consoles name in `initServer`, each mapped to a configured PTT server.
    pub servers: Vec<ConsoleServer>,
    /// Mic level (麦权级别) of a console; higher pre-empts lower.
    pub mic_level: u8,
    /// Mic level of PTT terminals.
    pub terminal_mic_level: u8,
    /// Per-account mic levels overriding `mic_level` (account name → level).
    pub account_mic_levels: HashMap<String, u8>,
    /// When a terminal counts as having answered: `auto` (as soon as it is in the call) or
    /// `on_talk` (when it first talks in the call).
    pub answer: AnswerMode,
    /// How long a login may take (ms).
    pub login_timeout_ms: u64,
    /// A connection must log in (`initServer`, `connect`) within this many ms of opening or of
    /// logging out, or is closed (1008).
    pub auth_timeout_ms: u64,
    /// How long the PTT server may take to create a call channel or move a terminal (ms).
    pub move_timeout_ms: u64,
    /// Most time `requestMic` waits for the called terminals to arrive before granting (ms).
    pub setup_wait_ms: u64,
    /// Largest WebSocket message accepted (bytes); larger closes the connection (1009).
    pub max_message_bytes: usize,
    /// Control requests per second per console (sustained).
    pub requests_per_second: u32,
    /// Control requests a console may send in a burst above the sustained rate.
    pub request_burst: u32,
    /// Opus bitrate for audio a console sends as PCM (bit/s).
    pub opus_bitrate: i32,
    /// `[console.agent]`: when the bridge runs on the dispatcher's PC itself, it also does the
    /// console agent's job — serves the unmodified console page at `listen` and does the call's
    /// audio with this machine's microphone and speaker (keys as in
    /// `config/console-agent.toml`; `bridge` unset: this bridge's own `/muicall`).
    pub agent: Option<console_agent::AgentConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            mic_level: 2,
            terminal_mic_level: 1,
            account_mic_levels: HashMap::new(),
            answer: AnswerMode::Auto,
            login_timeout_ms: 10_000,
            auth_timeout_ms: 30_000,
            move_timeout_ms: 5_000,
            setup_wait_ms: 1_500,
            max_message_bytes: 64 * 1024,
            requests_per_second: 20,
            request_burst: 40,
            opus_bitrate: 48_000,
            agent: None,
        }
    }
}

/// When a called terminal counts as answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// PTT group calls are answered by arriving in the call (ring and answer at once).
    Auto,
    /// Ringing until the terminal first talks in the call.
    OnTalk,
}

/// A base URL consoles may name, and the PTT server behind it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleServer {
    /// What consoles send as `initServer.data.baseUrl` (compared without a trailing `/`,
    /// scheme and host case-insensitively).
    pub base_url: String,
    /// `id` of the `[[ptt.servers]]` entry (host, port, TLS and tenant come from there).
    pub ptt_server: String,
    /// Account the bridge uses to move terminals into calls and back and to mute them while
    /// a console holds the floor: `SuperUser`, or a registered user with Move and MuteDeafen
    /// (e.g. a member of the root channel's `admin` group). Must not be a `ptt.servers` account.
    pub admin_username: String,
    /// Its password.
    #[serde(default)]
    pub admin_password: String,
    /// Channel under which call channels are created ("" = the root).
    #[serde(default)]
    pub call_parent: String,
}

fn invalid(key: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// `base_url` in the form used for lookups.
pub fn normalize_base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
            let path = if path.is_empty() {
                String::new()
            } else {
                format!("/{path}")
            };
            format!(
                "{}://{}{path}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            )
        }
        None => url.to_ascii_lowercase(),
    }
}

impl ConsoleConfig {
    /// Checks what the types cannot, against the PTT servers it refers to.
    pub fn validate(&self, ptt: &PttConfig) -> Result<(), ConfigError> {
        let key = |k: &str| format!("console.{k}");
        if self.mic_level == 0 || self.terminal_mic_level == 0 {
            return Err(invalid(key("mic_level"), "mic levels start at 1"));
        }
        ConfigError::check_range(
            key("login_timeout_ms"),
            self.login_timeout_ms,
            1_000..=120_000,
        )?;
        ConfigError::check_range(
            key("auth_timeout_ms"),
            self.auth_timeout_ms,
            1_000..=600_000,
        )?;
        ConfigError::check_range(key("move_timeout_ms"), self.move_timeout_ms, 100..=60_000)?;
        if self.setup_wait_ms > 30_000 {
            return Err(invalid(key("setup_wait_ms"), "must be at most 30000"));
        }
        ConfigError::check_range(
            key("max_message_bytes"),
            self.max_message_bytes,
            1024..=16 * 1024 * 1024,
        )?;
        if self.requests_per_second == 0 || self.request_burst == 0 {
            return Err(invalid(
                key("requests_per_second"),
                "must be at least 1 (and request_burst too)",
            ));
        }
        ConfigError::check_range(key("opus_bitrate"), self.opus_bitrate, 6_000..=510_000)?;
        if let Some(agent) = &self.agent {
            agent.validate().map_err(|e| match e {
                console_agent::config::ConfigError::Invalid { key: k, message } => {
                    invalid(key(&format!("agent.{k}")), message)
                }
                other => invalid(key("agent"), other.to_string()),
            })?;
        }
        let mut urls = HashSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            let k = |f: &str| format!("console.servers[{i}].{f}");
            if s.base_url.trim().is_empty() {
                return Err(invalid(k("base_url"), "must not be empty"));
            }
            if !urls.insert(normalize_base_url(&s.base_url)) {
                return Err(invalid(
                    k("base_url"),
                    format!("duplicate base URL {:?}", s.base_url),
                ));
            }
            let Some(server) = ptt.servers.iter().find(|p| p.id == s.ptt_server) else {
                let ids: Vec<&str> = ptt.servers.iter().map(|p| p.id.as_str()).collect();
                return Err(invalid(
                    k("ptt_server"),
                    format!(
                        "no [[ptt.servers]] with id {:?} (have {ids:?})",
                        s.ptt_server
                    ),
                ));
            };
            if s.admin_username.trim().is_empty() {
                return Err(invalid(k("admin_username"), "must not be empty"));
            }
            if server
                .accounts
                .iter()
                .any(|a| a.username == s.admin_username)
            {
                // murmurd disconnects the older session of a user who logs in twice.
                return Err(invalid(
                    k("admin_username"),
                    format!(
                        "{:?} is also a ptt.servers account; the two sessions would keep kicking each other",
                        s.admin_username
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The mic level of a console account.
    pub fn level_of(&self, account: &str) -> u8 {
        self.account_mic_levels
            .get(account)
            .copied()
            .unwrap_or(self.mic_level)
    }

    /// How long a connection may stay without logging in.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    /// How long a login may take.
    pub fn login_timeout(&self) -> Duration {
        Duration::from_millis(self.login_timeout_ms)
    }

    /// Move/creation timeout.
    pub fn move_timeout(&self) -> Duration {
        Duration::from_millis(self.move_timeout_ms)
    }

    /// Longest wait for called terminals before granting the floor.
    pub fn setup_wait(&self) -> Duration {
        Duration::from_millis(self.setup_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = r#"
        [[ptt.servers]]
        id = "local"
        host = "127.0.0.1"
        accept_invalid_certs = true
        [[ptt.servers.accounts]]
        username = "bridge"
        [[console.servers]]
        base_url = "http://PTT.example.net:8080/"
        ptt_server = "local"
        admin_username = "SuperUser"
        admin_password = "pw"
    "#;

    #[test]
    fn defaults_and_a_server() {
        let c = Config::parse(BASE).unwrap();
        assert_eq!(c.console.mic_level, 2);
        assert_eq!(c.console.terminal_mic_level, 1);
        assert_eq!(c.console.answer, AnswerMode::Auto);
        assert_eq!(c.console.servers[0].call_parent, "");
        assert_eq!(c.console.level_of("anyone"), 2);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse(&BASE.replace("ptt_server = \"local\"", "ptt_server = \"nope\""))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("console.servers[0].ptt_server:"), "{e}");
        let e = Config::parse(&BASE.replace("SuperUser", "bridge"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("console.servers[0].admin_username"), "{e}");
        let e = Config::parse(&format!("{BASE}\n[console]\nmic_level = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("console.mic_level"), "{e}");
        let e = Config::parse(&format!("{BASE}\n[console]\nanswer = \"never\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("answer"), "{e}");
        let e = Config::parse(&format!("{BASE}\n[console.agent]\ninput_gain_db = 30.0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("console.agent.input_gain_db:"), "{e}");
        let c = Config::parse(&format!(
            "{BASE}\n[console.agent]\nlisten = \"127.0.0.1:7000\"\n"
        ))
        .unwrap();
        let agent = c.console.agent.expect("[console.agent]");
        assert_eq!(agent.listen.port(), 7000);
        assert_eq!(agent.bridge, None, "unset: the bridge's own /muicall");
    }

    #[test]
    fn base_urls_compare_loosely() {
        assert_eq!(normalize_base_url("HTTP://Host:80/"), "http://host:80");
        assert_eq!(normalize_base_url("http://Host/Api/"), "http://host/Api");
        assert_eq!(normalize_base_url(" 10.0.0.1:8080 "), "10.0.0.1:8080");
    }
}
