//! `[http]`: the one HTTP port — address, TLS, timeouts, connection caps, the optional plain-HTTP
//! redirect, and the public URL the bridge gives out. A leaf module (the TLS files are checked
//! with [`crate::tls`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The single HTTP port: health, metrics, WebSockets, REST, web page.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The bridge's base URL as clients reach it, e.g. `https://bridge.example.net` (what
    /// `/server/address` and the redirect point at). Unset: derived from `listen`.
    pub public_url: Option<String>,
    /// PEM certificate chain (leaf first): HTTPS/WSS on `listen` when set, with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A connection must deliver a request's headers within this long after its first byte
    /// (or after connecting); else it is closed.
    pub header_timeout_ms: u64,
    /// A kept-alive connection with no request for this long is closed.
    pub idle_timeout_ms: u64,
    /// A connection whose peer takes none of what is written to it for this long (a response,
    /// an event stream, a WebSocket) is closed: a client that stops reading holds nothing.
    pub write_timeout_ms: u64,
    /// Open connections at most (both listeners, WebSockets included); more are closed at once.
    pub max_connections: usize,
    /// Open connections at most from one IP address.
    pub max_connections_per_ip: usize,
    /// A second, plain-HTTP listener answering every request with a 301 to HTTPS.
    pub redirect_listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            tls_cert: None,
            tls_key: None,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
            max_connections: 4096,
            max_connections_per_ip: 64,
            redirect_listen: None,
        }
    }
}

impl HttpConfig {
    /// Whether `listen` serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Header-read timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// Idle keep-alive timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Write-stall timeout.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// The base URL clients use (no trailing `/`): `public_url`, else `http(s)://<listen>`;
    /// `None` when that would be a wildcard address (0.0.0.0, ::).
    pub fn base_url(&self) -> Option<String> {
        if let Some(u) = &self.public_url {
            return Some(u.trim_end_matches('/').to_owned());
        }
        if self.listen.ip().is_unspecified() {
            return None;
        }
        let scheme = if self.tls() { "https" } else { "http" };
        Some(format!("{scheme}://{}", self.listen))
    }

    /// The EGW WebSocket's URL (`/server/address`): the base URL with `ws`/`wss`, plus `/egw`.
    pub fn egw_url(&self) -> Option<String> {
        let base = self.base_url()?;
        let ws = match base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", base.strip_prefix("http://").unwrap_or(&base)),
        };
        Some(format!("{ws}/egw"))
    }

    /// Checks what the types cannot; the TLS files are read and must make a server config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.public_url {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            let host = rest.map(|r| r.split('/').next().unwrap_or(""));
            if host.is_none_or(|h| h.is_empty() || h.contains(['?', '#', ' ', '@'])) {
                return Err(invalid(
                    "http.public_url",
                    "must be http(s)://host[:port][/prefix]",
                ));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                if let Err(e) = crate::tls::server_config(cert, key, &[]) {
                    let key = match e.part {
                        crate::tls::Part::Cert => "http.tls_cert",
                        crate::tls::Part::Key => "http.tls_key",
                    };
                    return Err(invalid(key, e.reason));
                }
            }
            (Some(_), None) => return Err(invalid("http.tls_key", "required with http.tls_cert")),
            (None, Some(_)) => return Err(invalid("http.tls_cert", "required with http.tls_key")),
            (None, None) => {}
        }
        ConfigError::check_range(
            "http.header_timeout_ms",
            self.header_timeout_ms,
            100..=600_000,
        )?;
        ConfigError::check_range(
            "http.idle_timeout_ms",
            self.idle_timeout_ms,
            100..=86_400_000,
        )?;
        ConfigError::check_range(
            "http.write_timeout_ms",
            self.write_timeout_ms,
            1_000..=3_600_000,
        )?;
        ConfigError::check_range("http.max_connections", self.max_connections, 1..=1_000_000)?;
        if self.max_connections_per_ip == 0 || self.max_connections_per_ip > self.max_connections {
            return Err(invalid(
                "http.max_connections_per_ip",
                "must be between 1 and http.max_connections",
            ));
        }
        if let Some(r) = self.redirect_listen {
            if !self.tls() {
                return Err(invalid(
                    "http.redirect_listen",
                    "redirects to HTTPS: needs http.tls_cert and http.tls_key",
                ));
            }
            if r == self.listen {
                return Err(invalid("http.redirect_listen", "is http.listen"));
            }
            if self
                .public_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
            {
                return Err(invalid(
                    "http.public_url",
                    "must be https:// when http.redirect_listen is set (it is the redirect's target)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::err;

    #[test]
    fn defaults_and_urls() {
        let c = Config::parse("").unwrap().http;
        assert_eq!((c.header_timeout_ms, c.idle_timeout_ms), (10_000, 60_000));
        assert_eq!((c.max_connections, c.max_connections_per_ip), (4096, 64));
        assert_eq!(c.egw_url().as_deref(), Some("ws://127.0.0.1:8080/egw"));
        let c = Config::parse("[http]\nlisten = \"0.0.0.0:80\"")
            .unwrap()
            .http;
        assert_eq!(c.egw_url(), None, "a wildcard address is nobody's URL");
        let c =
            Config::parse("[http]\nlisten = \"0.0.0.0:80\"\npublic_url = \"https://b.example/\"")
                .unwrap()
                .http;
        assert_eq!(c.egw_url().as_deref(), Some("wss://b.example/egw"));
        assert_eq!(c.base_url().as_deref(), Some("https://b.example"));
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let m = missing.display();
        for (text, key) in [
            (
                format!("[http]\ntls_cert = \"{m}\"\ntls_key = \"{m}\""),
                "http.tls_cert: cannot read",
            ),
            (
                format!("[http]\ntls_cert = \"{m}\""),
                "http.tls_key: required",
            ),
            (
                "[http]\nheader_timeout_ms = 5".into(),
                "http.header_timeout_ms",
            ),
            ("[http]\nidle_timeout_ms = 0".into(), "http.idle_timeout_ms"),
            ("[http]\nmax_connections = 0".into(), "http.max_connections"),
            (
                "[http]\nmax_connections = 10\nmax_connections_per_ip = 11".into(),
                "http.max_connections_per_ip",
            ),
            (
                "[http]\npublic_url = \"bridge.example\"".into(),
                "http.public_url",
            ),
            (
                "[http]\nredirect_listen = \"127.0.0.1:8081\"".into(),
                "http.redirect_listen: redirects to HTTPS",
            ),
        ] {
            let e = err(&text);
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }
}
