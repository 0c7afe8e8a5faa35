//! The Totalk PTT voice protocol (wire-compatible with Mumble) as a library, split the way
//! quinn-proto and quinn are: a sans-IO core, and a driver that does the IO.
//!
//! # The sans-IO core (always built)
//!
//! Bytes and instants in; messages, events and bytes to send out. No runtime, no sockets,
//! no TLS, no clock of its own, so every behaviour is testable with byte vectors and fake
//! instants, and any IO stack can drive it. Layers, bottom up:
//! - [`varint`]: Mumble's prefix varints;
//! - [`framing`]: control frames on the TLS stream;
//! - [`message`]: typed control messages ([`proto`] holds the prost types);
//! - [`voice_packet`]: legacy and protobuf voice packets;
//! - [`ocb2`]: OCB2-AES128 for UDP voice;
//! - [`session`]: the client state machine (bytes and timers in, messages and events out);
//! - [`backoff`]: reconnect delays (arithmetic only; the driver does the waiting).
//!
//! # The driver (cargo feature `client`, on by default)
//!
//! - `client`: a thin tokio task per account that owns the TCP stream and the UDP socket,
//!   feeds one `Session` per connection, and reconnects with [`backoff`];
//! - `tls`: the rustls client configuration (a pinned certificate fingerprint, or none).
//!
//! Only this feature pulls in tokio, rustls, tokio-rustls, sha2 and tracing. Depend on the
//! core alone with `ptt = { path = "adapters/ptt", default-features = false }`; CI runs
//! `cargo test -p ptt --no-default-features` to keep it building that way.

mod arena;
pub mod backoff;
#[cfg(feature = "client")]
pub mod client;
pub mod framing;
pub mod message;
pub mod ocb2;
pub mod session;
#[cfg(feature = "client")]
pub mod tls;
pub mod varint;
pub mod voice_packet;

/// prost types generated from `proto/Mumble.proto` and `proto/MumbleUDP.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/mumble_proto.rs"));

    /// Protocol 1.5 voice messages.
    pub mod udp {
        include!(concat!(env!("OUT_DIR"), "/mumble_udp.rs"));
    }
}

pub use framing::{FrameDecoder, FrameError, RawFrame};
pub use message::{ControlMessage, DecodeError, MessageType};
