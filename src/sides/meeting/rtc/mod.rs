//! WebRTC for the meeting side, shared by rooms (the bridge as server) and client mode (the
//! bridge as a client of an external server's room):
//!
//! - [`sdp`]: a configured str0m `Rtc`, offers answered (video declined the way every stack
//!   takes it), payload types;
//! - [`peer_set`]: the live peers of one room or call — datagrams in, transmits out, ICE
//!   consent and connect timeouts, and audio written through each peer's outbound clock.
//! - [`send_batch`]: a fan-out's datagrams sent with one system call (`sendmmsg`);
//! - [`fanout`]: a big room's fan-out of one packet spread over helper threads;
//! - [`srtp_keys`]: the SRTP keys of each peer's DTLS handshake, copied out of str0m;
//! - [`fast_tx`]: the bridge's own SRTP writer, with which a room sends a listener's audio the
//!   moment it arrives instead of through str0m at its next tick;
//! - [`listener`]: what a connected listener keeps instead of str0m's `Rtc` (ICE consent and
//!   liveness).

pub mod fanout;
pub mod fast_tx;
pub mod listener;
pub mod peer_set;
pub mod sdp;
pub mod send_batch;
pub mod srtp_keys;

pub use peer_set::{Peer, PeerSet};
