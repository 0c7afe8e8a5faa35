//! Bridge links: a PTT channel joined to a group on another side. Side-neutral: a meeting
//! room and a call answered on an external RTCPeer server drive the same link; a new side
//! that carries a group's audio drives it too.
//!
//! - [`link`]: the sans-IO core (PTT events, member audio, ticks in; packets, PTT voice and
//!   text, notices out), with its floor and pass-through/mix logic;
//! - `member`: one member's audio on its way to PTT (jitter buffer, decoder, VAD, mute);
//! - [`g711`]: G.711 members and listeners on the (Opus) link;
//! - [`port`]: the link's PTT end on a live account (the only part that does IO);
//! - `metrics`: the link's metric handles, registered once per link.

pub mod g711;
pub mod link;
mod member;
mod metrics;
pub mod passthrough;
pub mod port;
#[cfg(test)]
mod tests;

pub use link::{HANGUP_COMMAND, HandState, Link, LinkConfig, Notice, Output};
pub use passthrough::PassThrough;
pub use port::PttPort;
