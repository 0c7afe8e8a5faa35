//! The muicall voice-plugin protocol spoken by legacy dispatch consoles over a WebSocket,
//! as a pure, sans-IO library: text frames in → [`Request`]s (validated, with clear
//! errors), bridge decisions → outbound [`Reply`], [`MemberResp`], [`HangupResp`] and
//! [`Notify`] JSON, and the bridge-defined binary [`audio`] frame.
//!
//! Spec: `muicall-voice-plugin-ws-api.md` (API v0.20.7) with the project's decisions:
//! - 64-bit ids (`groupId`, `tempCallId`, `sessionId`) are sent both as a JSON number and as
//!   a `…Str` string; on input either is accepted and the string wins when both are given
//!   (a JavaScript console rounds numbers above 2^53; the spec's own examples show it).
//! - "所有传入或传出参数均为字符串类型": every numeric input may also arrive as a string.
//! - The "user hung up" notification is `cmd: "tempCallHangup"`; `kickGroupMember` answers
//!   in the shape of `addGroupMember`.
//!
//! See `README.md` next to this crate for the full message catalogue and the audio frame.

pub mod audio;
mod lenient;
mod outbound;
mod request;

pub use outbound::{
    CallMember, CallState, HangupReason, HangupResp, HangupResult, MemberResp, MemberRespData,
    MemberResult, Notify, NotifyBody, Reply, response_type,
};
pub use request::{
    AudioCodecName, AudioFormat, Echo, ErrorKind, Request, RequestError, Transaction,
};

/// Parses one text frame from a console. Never panics, whatever the input.
pub fn parse_request(text: &str) -> Result<Request, RequestError> {
    request::parse(text)
}
