//! The Totalk PTT voice protocol (wire-compatible with Mumble) as a library.
//!
//! Layers, bottom up, all sans-IO except [`client`]:
//! - [`framing`]: control frames on the TLS stream;
//! - [`message`]: typed control messages ([`proto`] holds the prost types);
//! - [`voice_packet`]: legacy and protobuf voice packets;
//! - [`ocb2`]: OCB2-AES128 for UDP voice;
//! - [`session`]: the client state machine (bytes and timers in, messages and events out);
//! - [`client`]: a thin tokio driver with TLS ([`tls`]), UDP and reconnection ([`backoff`]).

pub mod backoff;
pub mod client;
pub mod framing;
pub mod message;
pub mod ocb2;
pub mod session;
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
