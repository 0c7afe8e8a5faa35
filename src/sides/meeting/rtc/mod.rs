//! WebRTC for the meeting side, shared by rooms (the bridge as server) and client mode (the
//! bridge as a client of an external server's room):
//!
//! - [`sdp`]: a configured str0m `Rtc`, offers answered (video declined the way every stack
//!   takes it), payload types;
//! - [`peer_set`]: the live peers of one room or call — datagrams in, transmits out, ICE
//!   consent and connect timeouts, and audio written through each peer's outbound clock.
//! - [`send_batch`]: a fan-out's datagrams sent with one system call (`sendmmsg`).

pub mod peer_set;
pub mod sdp;
pub mod send_batch;

pub use peer_set::{Peer, PeerSet};
