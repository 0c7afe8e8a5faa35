//! Configuration of the platform surfaces: `[egw]`, `[nats]`, `[business]`, `[storage]`
//! (documented with their defaults in `config/bridge.toml`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The EGW WebSocket (`/egw`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgwConfig {
    /// A connection that sends nothing (no heartbeat, no request) for this long is closed.
    pub heartbeat_timeout_ms: u64,
    /// A connection must log in (20000) within this many ms of opening, or is closed (4002):
    /// heartbeats alone do not keep an anonymous socket and its bus subscription.
    pub auth_timeout_ms: u64,
    /// A frame that cannot be written to a client within this time cuts the client off
    /// (a client that does not read must not hold anything up).
    pub send_timeout_ms: u64,
    /// URL returned by `GET /server/address?appType=8`; unset: from `[http]` (`public_url`, else
    /// the listen address), never from a request's Host header.
    pub public_url: Option<String>,
    /// Developer logins (`dev_id` + `token`). An app's own `app_id` + `app_secret` also log in,
    /// limited to that app.
    pub developers: Vec<Developer>,
}

impl Default for EgwConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout_ms: 60_000,
            auth_timeout_ms: 30_000,
            send_timeout_ms: 5_000,
            public_url: None,
            developers: Vec::new(),
        }
    }
}

impl EgwConfig {
    /// Heartbeat timeout.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }

    /// Time to log in.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    /// Send timeout.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }
}

/// One EGW developer login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Developer {
    /// `dev_id`.
    pub dev_id: String,
    /// Its `token`.
    pub token: String,
    /// Apps it may see; empty = all.
    #[serde(default)]
    pub apps: Vec<String>,
}

/// The NATS JetStream sink (off unless `url` is set).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222`; unset = no NATS.
    pub url: Option<String>,
    /// JetStream stream, created (or checked) at start, capturing `<subject_prefix>.>`.
    pub stream: String,
    /// First subject token: events go to `<prefix>.<app>.<group>.<type>`.
    pub subject_prefix: String,
    /// CloudEvents `source` attribute.
    pub source: String,
    /// Events held while NATS is unreachable; beyond this the oldest are dropped (and counted).
    pub outbox: usize,
    /// Publishes awaiting their JetStream ack at once.
    pub max_in_flight: usize,
    /// Wait for one ack before treating the publish as failed (it is then re-sent).
    pub ack_timeout_ms: u64,
    /// JetStream de-duplication window for a newly created stream, seconds.
    pub duplicate_window_s: u64,
    /// PEM CA certificate(s) the server's certificate is checked with (added to the system's
    /// roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Refuse a connection that is not TLS (a `tls://` URL requires it too).
    pub tls_required: bool,
    /// NATS credentials file (user JWT + NKey seed), e.g. from `nsc`.
    pub creds_file: Option<PathBuf>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "PTTBRIDGE".into(),
            subject_prefix: "pttbridge".into(),
            source: "pttbridge".into(),
            outbox: 100_000,
            max_in_flight: 4096,
            ack_timeout_ms: 2_000,
            duplicate_window_s: 120,
            tls_ca_file: None,
            tls_required: false,
            creds_file: None,
            user: None,
            password: None,
        }
    }
}

/// The business-gateway REST (`/v1/...`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessConfig {
    /// Apps created (or updated) at start, so config-defined tenants (e.g. a PTT server's `app`)
    /// have a known secret.
    pub apps: Vec<SeedApp>,
    /// PTT conversations (call records): silence that ends one, ms.
    pub ptt_call_idle_ms: u64,
}

impl Default for BusinessConfig {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            ptt_call_idle_ms: 10_000,
        }
    }
}

impl BusinessConfig {
    /// Silence after which a PTT channel conversation's call record is closed.
    pub fn ptt_call_idle(&self) -> Duration {
        Duration::from_millis(self.ptt_call_idle_ms)
    }
}

/// An app defined in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedApp {
    /// Its id (the `app` of PTT servers and events).
    pub app_id: String,
    /// Its secret.
    pub app_secret: String,
    /// Its name (default: the id).
    #[serde(default)]
    pub app_name: Option<String>,
}

/// Embedded storage (SQLite): apps and call records.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Database file; unset = in memory (lost at exit).
    pub path: Option<PathBuf>,
}

/// The connect options of a NATS credentials file (read and parsed).
pub fn nats_credentials(path: &std::path::Path) -> Result<async_nats::ConnectOptions, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    async_nats::ConnectOptions::new()
        .credentials(&text)
        .map_err(|e| format!("{}: not a NATS credentials file: {e}", path.display()))
}

/// Checks the platform sections.
pub fn validate(
    egw: &EgwConfig,
    nats: &NatsConfig,
    business: &BusinessConfig,
) -> Result<(), ConfigError> {
    ConfigError::check_range(
        "egw.heartbeat_timeout_ms",
        egw.heartbeat_timeout_ms,
        1_000..=3_600_000,
    )?;
    ConfigError::check_range("egw.auth_timeout_ms", egw.auth_timeout_ms, 1_000..=600_000)?;
    ConfigError::check_range("egw.send_timeout_ms", egw.send_timeout_ms, 100..=60_000)?;
    if let Some(url) = &egw.public_url
        && !(url.starts_with("ws://") || url.starts_with("wss://"))
    {
        return Err(invalid("egw.public_url", "must start with ws:// or wss://"));
    }
    let mut devs = HashSet::new();
    for (i, d) in egw.developers.iter().enumerate() {
        if d.dev_id.is_empty() || d.token.is_empty() {
            return Err(invalid(
                &format!("egw.developers[{i}]"),
                "dev_id and token must not be empty",
            ));
        }
        if !devs.insert(&d.dev_id) {
            return Err(invalid(
                &format!("egw.developers[{i}].dev_id"),
                format!("duplicate {:?}", d.dev_id),
            ));
        }
    }
    if let Some(url) = &nats.url
        && !(url.starts_with("nats://") || url.starts_with("tls://") || !url.contains("://"))
    {
        return Err(invalid("nats.url", "must be nats://host:port (or tls://)"));
    }
    let token_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !token_ok(&nats.stream) {
        return Err(invalid("nats.stream", "letters, digits, '_' or '-'"));
    }
    if !token_ok(&nats.subject_prefix) {
        return Err(invalid(
            "nats.subject_prefix",
            "letters, digits, '_' or '-'",
        ));
    }
    ConfigError::check_range("nats.outbox", nats.outbox, 1..=10_000_000)?;
    ConfigError::check_range("nats.max_in_flight", nats.max_in_flight, 1..=65_536)?;
    ConfigError::check_range("nats.ack_timeout_ms", nats.ack_timeout_ms, 100..=60_000)?;
    if nats.duplicate_window_s == 0 {
        return Err(invalid("nats.duplicate_window_s", "must be > 0"));
    }
    if let Some(ca) = &nats.tls_ca_file
        && let Err(e) = crate::tls::load_certs(ca)
    {
        return Err(invalid("nats.tls_ca_file", e.to_string()));
    }
    if let Some(path) = &nats.creds_file {
        nats_credentials(path).map_err(|e| invalid("nats.creds_file", e))?;
        if nats.user.is_some() {
            return Err(invalid(
                "nats.user",
                "set either nats.creds_file or nats.user",
            ));
        }
    }
    match (&nats.user, &nats.password) {
        (Some(_), None) => return Err(invalid("nats.password", "required with nats.user")),
        (None, Some(_)) => return Err(invalid("nats.user", "required with nats.password")),
        _ => {}
    }
    ConfigError::check_range(
        "business.ptt_call_idle_ms",
        business.ptt_call_idle_ms,
        200..=3_600_000,
    )?;
    let mut ids = HashSet::new();
    for (i, a) in business.apps.iter().enumerate() {
        if a.app_id.is_empty() || a.app_id.len() > 64 || a.app_id.contains(char::is_whitespace) {
            return Err(invalid(
                &format!("business.apps[{i}].app_id"),
                "1-64 characters, no spaces",
            ));
        }
        if a.app_secret.len() < 8 {
            return Err(invalid(
                &format!("business.apps[{i}].app_secret"),
                "at least 8 characters",
            ));
        }
        if !ids.insert(&a.app_id) {
            return Err(invalid(
                &format!("business.apps[{i}].app_id"),
                format!("duplicate {:?}", a.app_id),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::err;

    #[test]
    fn platform_sections_default_and_name_their_keys() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.egw.heartbeat_timeout_ms, 60_000);
        assert!(c.nats.url.is_none());
        assert!(c.storage.path.is_none());
        assert_eq!(c.business.ptt_call_idle().as_millis(), 10_000);
        for (text, key) in [
            (
                "[egw]\nheartbeat_timeout_ms = 5",
                "egw.heartbeat_timeout_ms",
            ),
            ("[egw]\npublic_url = \"http://x\"", "egw.public_url"),
            (
                "[[egw.developers]]\ndev_id = \"\"\ntoken = \"t\"",
                "egw.developers[0]",
            ),
            ("[nats]\nurl = \"http://x\"", "nats.url"),
            (
                "[nats]\ntls_ca_file = \"/nonexistent/ca.pem\"",
                "nats.tls_ca_file: cannot read",
            ),
            (
                "[nats]\ncreds_file = \"/nonexistent/x.creds\"",
                "nats.creds_file: cannot read",
            ),
            ("[nats]\nuser = \"u\"", "nats.password: required"),
            ("[nats]\noutbox = 0", "nats.outbox"),
            ("[nats]\nsubject_prefix = \"a.b\"", "nats.subject_prefix"),
            (
                // App management is the operators' now (`[operator] token`).
                "[business]\nadmin_token = \"long-enough-token\"",
                "admin_token",
            ),
            (
                "[[business.apps]]\napp_id = \"a\"\napp_secret = \"short\"",
                "business.apps[0].app_secret",
            ),
            (
                "[business]\nptt_call_idle_ms = 1",
                "business.ptt_call_idle_ms",
            ),
            ("[storage]\npath_typo = \"x\"", "path_typo"),
        ] {
            let e = err(text);
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }
}
