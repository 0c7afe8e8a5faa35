//! A refused RTCPeer request: the `result` code and the message its error reply carries.

use rtcpeer::code;

/// Why a request was refused, in the protocol's own terms (`rtcpeer::code`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{1} (result {0})")]
pub struct Refusal(pub i64, pub String);

impl Refusal {
    /// A refusal with `code` and `msg`.
    pub fn new(code: i64, msg: impl Into<String>) -> Self {
        Self(code, msg.into())
    }

    /// The room or actor that should have answered has stopped.
    pub fn stopped(what: &str) -> Self {
        Self(code::INTERNAL, format!("{what} stopped"))
    }

    /// Short name of the code for the error counter's `kind` label.
    pub fn kind(&self) -> &'static str {
        match self.0 {
            code::UNAUTHORIZED => "unauthorized",
            code::NOT_FOUND => "not_found",
            code::CONFLICT => "conflict",
            code::BAD_SDP => "bad_sdp",
            code::FAILED => "failed",
            code::FORBIDDEN => "forbidden",
            code::TOO_MANY => "too_many",
            code::BAD_FIELDS => "bad_fields",
            _ => "other",
        }
    }
}
