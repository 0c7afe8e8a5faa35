//! The media engine's error type.

use thiserror::Error;

/// Everything that can go wrong in the media primitives.
///
/// Garbage input is reported here, never by panicking: the bridge feeds these
/// primitives with bytes from the network.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// libopus rejected a call (bad packet, bad argument, buffer too small...).
    #[error("opus: {0}")]
    Opus(String),
    /// A sample rate the primitive does not support.
    #[error("unsupported sample rate {0} Hz")]
    UnsupportedRate(u32),
    /// A PCM buffer whose length is not a valid frame for the configured rate and channels.
    #[error("bad frame length: {got} samples (expected {expected})")]
    BadFrameLength {
        /// What the caller passed (total interleaved samples).
        got: usize,
        /// What would have been accepted, described for humans.
        expected: String,
    },
    /// An Opus packet whose framing (RFC 6716 §3) is invalid.
    #[error("malformed opus packet: {0}")]
    MalformedPacket(&'static str),
    /// The resampler could not be built or run.
    #[error("resampler: {0}")]
    Resampler(String),
    /// A mixing group already has its maximum number of talkers.
    #[error("group full: at most {0} talkers")]
    GroupFull(usize),
    /// An I/O error while writing a recording.
    #[error("io: {0}")]
    Io(String),
}

impl From<opus::Error> for Error {
    fn from(e: opus::Error) -> Self {
        Error::Opus(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
