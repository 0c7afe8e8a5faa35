//! `[ptt]`: the PTT servers and the accounts the bridge keeps connected. A leaf module: the
//! sides that build on PTT accounts (console, meeting) validate against it.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, invalid};

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
    /// Most users the bridge keeps of one PTT server's state (per session); more are ignored
    /// and counted, so a server flooding user announcements cannot grow the bridge's memory.
    pub max_users: usize,
    /// Most channels kept of one PTT server's state (per session).
    pub max_channels: usize,
}

impl Default for PttConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            talk_timeout_ms: 300,
            reconnect_initial_ms: 250,
            reconnect_max_ms: 4000,
            max_users: ptt::session::DEFAULT_MAX_USERS,
            max_channels: ptt::session::DEFAULT_MAX_CHANNELS,
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
    /// Checks what the types cannot: server ids, hosts, certificate pins, account names.
    /// The settings of a PTT session as `username` with the bridge-wide ones (talk timeout,
    /// caps on the server's state).
    pub fn session(&self, username: String, password: String) -> ptt::session::SessionConfig {
        ptt::session::SessionConfig {
            username,
            password,
            talk_timeout: self.talk_timeout(),
            max_users: self.max_users,
            max_channels: self.max_channels,
            ..ptt::session::SessionConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let ptt = self;
        for (key, value) in [
            ("ptt.max_users", ptt.max_users),
            ("ptt.max_channels", ptt.max_channels),
        ] {
            ConfigError::check_range(key, value, 16..=10_000_000)?;
        }
        ConfigError::check_range("ptt.talk_timeout_ms", ptt.talk_timeout_ms, 20..=60_000)?;
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
        Ok(())
    }

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
