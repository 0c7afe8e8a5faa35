//! `[directory]`: the Totalk admin server the directory is read from, how often, and its bounds.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// The environment variable read for the password when `directory.password` is unset.
pub const PASSWORD_ENV: &str = "PTTBRIDGE_DIRECTORY_PASSWORD";

/// `[directory]`. Off unless `url` is set.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The admin server's base URL, `http(s)://host:port[/prefix]` (calls go to `/ent/`).
    pub url: Option<String>,
    /// The enterprise (organisation) account: its eid, e.g. `10000`.
    pub account: String,
    /// Its password; unset: `PTTBRIDGE_DIRECTORY_PASSWORD`. Never logged or shown.
    pub password: Option<String>,
    /// Seconds between refreshes.
    pub refresh_secs: u64,
    /// Seconds before a failed refresh is tried again.
    pub retry_secs: u64,
    /// The copy counts as stale (health `degraded`) when older than this many seconds.
    pub stale_after_secs: u64,
    /// Users and channels asked for per page.
    pub page_size: u32,
    /// A directory with more users is refused (the last good copy is kept).
    pub max_users: usize,
    /// A directory with more channels is refused.
    pub max_channels: usize,
    /// At most this many member-role reads per refresh.
    pub max_role_queries: usize,
    /// PEM file of the CA(s) an `https://` admin server's certificate must chain to; unset: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Mic level (麦权级别) of a user whose directory role is dispatcher (role 1), where no
    /// per-account level is configured: consoles logged in as such a user, and such terminals.
    pub dispatcher_mic_level: u8,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            url: None,
            account: String::new(),
            password: None,
            refresh_secs: 300,
            retry_secs: 30,
            stale_after_secs: 900,
            page_size: 100,
            max_users: 20_000,
            max_channels: 5_000,
            max_role_queries: 5_000,
            ca_file: None,
            dispatcher_mic_level: 3,
        }
    }
}

/// The password is a secret: a debug print shows whether it is set, not what it is.
impl fmt::Debug for DirectoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryConfig")
            .field("url", &self.url)
            .field("account", &self.account)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("refresh_secs", &self.refresh_secs)
            .field("retry_secs", &self.retry_secs)
            .field("stale_after_secs", &self.stale_after_secs)
            .field("page_size", &self.page_size)
            .field("max_users", &self.max_users)
            .field("max_channels", &self.max_channels)
            .field("max_role_queries", &self.max_role_queries)
            .field("ca_file", &self.ca_file)
            .field("dispatcher_mic_level", &self.dispatcher_mic_level)
            .finish()
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl DirectoryConfig {
    /// Checks what the types cannot; with `url` set, the account is required.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        crate::http_client::BaseUrl::parse(url)
            .map_err(|e| invalid("directory.url", e.to_string()))?;
        if self.account.trim().is_empty() {
            return Err(invalid(
                "directory.account",
                "required when directory.url is set",
            ));
        }
        if self.password.as_ref().is_some_and(|p| p.is_empty()) {
            return Err(invalid("directory.password", "empty"));
        }
        ConfigError::check_range("directory.refresh_secs", self.refresh_secs, 1..=86_400)?;
        ConfigError::check_range("directory.retry_secs", self.retry_secs, 1..=86_400)?;
        ConfigError::check_range(
            "directory.stale_after_secs",
            self.stale_after_secs,
            self.refresh_secs..=7 * 86_400,
        )?;
        ConfigError::check_range("directory.page_size", self.page_size, 1..=1_000)?;
        ConfigError::check_range("directory.max_users", self.max_users, 1..=1_000_000)?;
        ConfigError::check_range("directory.max_channels", self.max_channels, 1..=100_000)?;
        ConfigError::check_range(
            "directory.max_role_queries",
            self.max_role_queries,
            0..=100_000,
        )?;
        ConfigError::check_range(
            "directory.dispatcher_mic_level",
            self.dispatcher_mic_level,
            1..=255,
        )?;
        if let Some(ca) = &self.ca_file
            && let Err(e) = crate::tls::client_config(Some(ca), &[])
        {
            return Err(invalid("directory.ca_file", e.to_string()));
        }
        Ok(())
    }

    /// The password: the config's, else the environment's; `None` when neither is set.
    pub fn password(&self) -> Option<String> {
        self.password
            .clone()
            .or_else(|| std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
    }

    /// Between refreshes.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_secs)
    }

    /// When the copy is stale.
    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.stale_after_secs)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::err;

    #[test]
    fn errors_name_the_key() {
        assert!(
            err("[directory]\nurl = \"ftp://x\"\naccount = \"1\"\n").starts_with("directory.url:")
        );
        assert!(
            err("[directory]\nurl = \"http://127.0.0.1:1\"\n").starts_with("directory.account:")
        );
        let base = "[directory]\nurl = \"http://127.0.0.1:1\"\naccount = \"10000\"\n";
        assert!(err(&format!("{base}refresh_secs = 0\n")).starts_with("directory.refresh_secs:"));
        assert!(
            err(&format!(
                "{base}refresh_secs = 600\nstale_after_secs = 60\n"
            ))
            .starts_with("directory.stale_after_secs:")
        );
        assert!(err(&format!("{base}page_size = 0\n")).starts_with("directory.page_size:"));
        assert!(
            err(&format!("{base}ca_file = \"/nonexistent.pem\"\n"))
                .starts_with("directory.ca_file:")
        );
        crate::config::Config::parse(base).unwrap();
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = crate::config::Config::parse(
            "[directory]\nurl = \"http://127.0.0.1:1\"\naccount = \"10000\"\npassword = \"hunter2-secret\"\n",
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("<set>"));
    }
}
