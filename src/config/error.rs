//! The one error type of configuration loading: it names the key, in the config's own words.

use std::path::PathBuf;

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

impl ConfigError {
    /// `Ok` when `value`, the value of `key`, lies in `range`; else the error naming the bounds.
    pub fn check_range<T: PartialOrd + std::fmt::Display>(
        key: impl Into<String>,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<(), ConfigError> {
        if range.contains(&value) {
            Ok(())
        } else {
            Err(invalid(
                key,
                format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    }
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}
