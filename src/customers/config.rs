//! `[customers]` and `[customers.commit]` (documented in `config/bridge.toml`).

use serde::Deserialize;

use crate::config::ConfigError;

fn invalid(key: impl Into<String>, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `[customers]`: the embedded customer management.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomersConfig {
    /// Commits older than this many days are deleted (0 = kept by age forever).
    pub retention_days: u32,
    /// At most this many rows per commit table (server, user, group); the oldest go first.
    pub max_rows: u32,
    /// At most this many entries in one commit's `data=[...]`.
    pub max_batch: u32,
    /// This site's usage committer; off when `url` is unset.
    pub commit: CommitConfig,
}

impl Default for CustomersConfig {
    fn default() -> Self {
        Self {
            retention_days: 90,
            max_rows: 1_000_000,
            max_batch: 1000,
            commit: CommitConfig::default(),
        }
    }
}

/// `[customers.commit]`: what this site commits about itself, where, and how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommitConfig {
    /// The management server, `http(s)://host:port[/prefix]` (may be this bridge); unset = off.
    pub url: Option<String>,
    /// This site's customer number.
    pub code: String,
    /// This site's customer name.
    pub name: String,
    /// This server's MAC address.
    pub mac: String,
    /// This server's IP address.
    pub ip: String,
    /// Licence expiry, `YYYY-MM-DD`.
    pub timeout: String,
    /// The customer's commit token (given by `/customer/add`), sent as `X-Commit-Token`.
    pub token: String,
    /// Seconds between commits.
    pub interval_s: u64,
    /// PEM file of the CA that signs an `https://` management server (unset: the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for CommitConfig {
    fn default() -> Self {
        Self {
            url: None,
            code: String::new(),
            name: String::new(),
            mac: String::new(),
            ip: String::new(),
            timeout: String::new(),
            token: String::new(),
            interval_s: 300,
            ca_file: None,
        }
    }
}

impl CustomersConfig {
    /// Checks what the types cannot, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check_range("customers.retention_days", self.retention_days, 0..=36_500)?;
        ConfigError::check_range("customers.max_rows", self.max_rows, 1000..=100_000_000)?;
        ConfigError::check_range("customers.max_batch", self.max_batch, 1..=100_000)?;
        let c = &self.commit;
        let Some(url) = &c.url else {
            return Ok(());
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "customers.commit.url",
                "an http:// or https:// URL of the management server",
            ));
        }
        ConfigError::check_range("customers.commit.interval_s", c.interval_s, 1..=86_400)?;
        use super::params as p;
        let fields: [(&str, &str, p::Rule, &str); 5] = [
            (
                "code",
                &c.code,
                p::is_code,
                "1 to 32 letters, digits, '-' or '_'",
            ),
            (
                "name",
                &c.name,
                p::is_text,
                "1 to 100 characters, no control characters",
            ),
            (
                "mac",
                &c.mac,
                p::is_mac,
                "hex octets like 56:E8:F6:23:EF:01",
            ),
            ("ip", &c.ip, p::is_ip, "an IP address"),
            ("timeout", &c.timeout, p::is_date, "a date YYYY-MM-DD"),
        ];
        for (key, value, ok, what) in fields {
            if !ok(value) {
                return Err(invalid(format!("customers.commit.{key}"), what));
            }
        }
        if c.token.trim().len() < 16 {
            return Err(invalid(
                "customers.commit.token",
                "the customer's commit token (at least 16 characters)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::err;

    const COMMIT: &str = "[customers.commit]\nurl = \"http://127.0.0.1:9000\"\ncode = \"0513001\"\n\
        name = \"site\"\nmac = \"56:E8:F6:23:EF:01\"\nip = \"192.168.0.7\"\ntimeout = \"2027-09-21\"\n\
        token = \"0123456789abcdef\"\n";

    #[test]
    fn defaults_and_bad_values_name_the_key() {
        let c = crate::config::Config::parse("").unwrap().customers;
        assert_eq!((c.retention_days, c.max_batch), (90, 1000));
        assert!(c.commit.url.is_none());
        crate::config::Config::parse(COMMIT).unwrap();
        for (from, to, key) in [
            ("http://127", "ftp://127", "customers.commit.url"),
            ("0513001", "05 13", "customers.commit.code"),
            ("56:E8", "ZZ:E8", "customers.commit.mac"),
            ("192.168.0.7", "192.168.0", "customers.commit.ip"),
            ("2027-09-21", "2027-02-30", "customers.commit.timeout"),
            ("0123456789abcdef", "short", "customers.commit.token"),
        ] {
            let e = err(&COMMIT.replace(from, to));
            assert!(e.starts_with(key), "{e}");
        }
        assert!(err("[customers]\nmax_batch = 0\n").starts_with("customers.max_batch"));
    }
}
