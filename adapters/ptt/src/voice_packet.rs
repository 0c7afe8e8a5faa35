//! Voice packets: what travels inside UDP datagrams (after [`crate::ocb2`] decryption)
//! and inside `UDPTunnel` control frames. Sans-IO, and zero-copy on decode: the Opus
//! payload of a decoded packet is a slice of the input [`Bytes`].
//!
//! Two wire formats exist; which one a connection uses is decided by the server's
//! version (see [`VoiceFormat`]). Both map onto one type, [`UdpPacket`].
//!
//! # Legacy format (servers < 1.5, e.g. murmurd 1.3.4)
//!
//! ```text
//! header      u8       type << 5 | target        type: 0 CELT-alpha, 1 ping, 2 Speex, 3 CELT-beta, 4 Opus
//! session     varint   server → client only: who is talking
//! sequence    varint   frame number in 10 ms units
//! Opus:       varint   payload length | 0x2000 if this is the last packet of the burst
//!             bytes    the Opus packet (≤ 0x1FFF bytes)
//! CELT/Speex: frames   each: u8 (continuation << 7 | length), then length bytes
//! position    3 × f32  optional, little endian (Mumble writes host order, x86 in practice)
//! ```
//! A ping is `0x20` followed by a varint timestamp, echoed back by the server.
//! Varints are Mumble's prefix varints ([`crate::varint`]).
//!
//! # Protobuf format (protocol ≥ 1.5)
//!
//! One kind byte, `0` = `MumbleUDP.Audio`, `1` = `MumbleUDP.Ping`, then the protobuf message
//! ([`crate::proto::udp`]). The audio header is `target` from a client and `context` from
//! the server; `sender_session` is only meaningful from the server.
//!
//! # Example
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use ptt::voice_packet::{self, Direction, UdpPacket, VoiceFormat, VoicePacket};
//!
//! let packet = UdpPacket::Audio(VoicePacket {
//!     target_or_context: 0,
//!     session: None,
//!     sequence: 2,
//!     payload: Bytes::from_static(&[0xF8, 0xFF, 0xFE]),
//!     terminator: false,
//!     position: None,
//! });
//! let mut wire = BytesMut::new();
//! voice_packet::encode(&packet, VoiceFormat::Legacy, Direction::ToServer, &mut wire).unwrap();
//! assert_eq!(&wire[..], &[0x80, 0x02, 0x03, 0xF8, 0xFF, 0xFE]);
//! let back = voice_packet::decode(wire.freeze(), VoiceFormat::Legacy, Direction::ToServer).unwrap();
//! assert_eq!(back, packet);
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

use crate::proto::udp;
use crate::varint::{self, VarintError};

/// Largest Opus payload of the legacy format (13-bit length field).
pub const MAX_LEGACY_OPUS_LEN: usize = 0x1FFF;

/// Bit of the legacy Opus length varint that marks the last packet of a talk burst.
const LEGACY_TERMINATOR: u64 = 0x2000;

/// Largest target / context value: the legacy header has 5 bits for it.
pub const MAX_TARGET: u8 = 0x1F;

/// Legacy packet types (the 3 high bits of the header byte).
pub mod legacy_type {
    /// CELT 0.7 (Mumble 1.2 "alpha" codec).
    pub const CELT_ALPHA: u8 = 0;
    /// UDP ping.
    pub const PING: u8 = 1;
    /// Speex.
    pub const SPEEX: u8 = 2;
    /// CELT 0.11 ("beta" codec).
    pub const CELT_BETA: u8 = 3;
    /// Opus.
    pub const OPUS: u8 = 4;
}

/// Kind byte in front of a protobuf voice message.
mod protobuf_kind {
    pub const AUDIO: u8 = 0;
    pub const PING: u8 = 1;
}

/// Which wire format a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VoiceFormat {
    /// Header byte + varints; servers before 1.5 (and 1.5+ servers talking to old clients).
    #[default]
    Legacy,
    /// Kind byte + `MumbleUDP` protobuf; when both sides announce protocol ≥ 1.5.
    Protobuf,
}

/// Which way a packet travels; it decides whether the sender session is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by a client: carries the talker's session.
    FromServer,
    /// Sent by a client: the server knows who sent it, so there is no session field.
    ToServer,
}

/// One Opus voice packet, the same for both formats.
#[derive(Debug, Clone, PartialEq)]
pub struct VoicePacket {
    /// To the server: 0 normal talking, 1..=30 a `VoiceTarget` id, 31 server loopback.
    /// From the server: 0 normal, 1 shout, 2 whisper, 3 channel listener. At most [`MAX_TARGET`].
    pub target_or_context: u8,
    /// Talker's session; `Some` exactly for [`Direction::FromServer`].
    pub session: Option<u32>,
    /// Number of the first frame in 10 ms units (a 20 ms packet advances it by 2).
    pub sequence: u64,
    /// The Opus packet, shared with the decoded input (no copy).
    pub payload: Bytes,
    /// Last packet of the talk burst. Many clients (pymumble) never set it.
    pub terminator: bool,
    /// Positional-audio coordinates, if the sender included them.
    pub position: Option<[f32; 3]>,
}

/// A [`VoicePacket`] to encode with its payload borrowed, so a sender needs no owned
/// [`Bytes`] (and no copy) for each packet: see [`encode_audio`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoicePacketRef<'a> {
    /// As [`VoicePacket::target_or_context`].
    pub target_or_context: u8,
    /// As [`VoicePacket::session`].
    pub session: Option<u32>,
    /// As [`VoicePacket::sequence`].
    pub sequence: u64,
    /// The Opus packet.
    pub payload: &'a [u8],
    /// As [`VoicePacket::terminator`].
    pub terminator: bool,
    /// As [`VoicePacket::position`].
    pub position: Option<[f32; 3]>,
}

impl VoicePacket {
    /// This packet with its payload borrowed.
    pub fn borrowed(&self) -> VoicePacketRef<'_> {
        VoicePacketRef {
            target_or_context: self.target_or_context,
            session: self.session,
            sequence: self.sequence,
            payload: &self.payload,
            terminator: self.terminator,
            position: self.position,
        }
    }
}

/// Anything that travels on the voice channel.
#[derive(Debug, Clone, PartialEq)]
pub enum UdpPacket {
    /// Opus voice.
    Audio(VoicePacket),
    /// UDP ping; the server echoes the client's timestamp.
    Ping {
        /// Opaque to the server: the client's clock or a counter.
        timestamp: u64,
    },
    /// A well-formed legacy packet of a codec we do not handle (CELT, Speex): count and drop it.
    /// Cannot be encoded.
    OtherCodec {
        /// Legacy type number (see [`legacy_type`]).
        codec: u8,
    },
}

/// Why a voice packet could not be decoded or encoded. Per packet: drop it and go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VoiceError {
    /// Zero bytes.
    #[error("empty voice packet")]
    Empty,
    /// A varint field was cut short or malformed.
    #[error("bad {field} in voice packet: {source}")]
    Varint {
        /// Which field.
        field: &'static str,
        /// What was wrong with it.
        source: VarintError,
    },
    /// A legacy frame header promises more bytes than the packet has.
    #[error("{what} of {len} bytes announced, {available} left in the packet")]
    BadLength {
        /// Which part.
        what: &'static str,
        /// Announced length.
        len: usize,
        /// Bytes left after the length field.
        available: usize,
    },
    /// Legacy type 5..=7.
    #[error("unknown legacy voice packet type {0}")]
    UnknownType(u8),
    /// Protobuf kind byte other than 0 (audio) and 1 (ping).
    #[error("unknown protobuf voice packet kind {0}")]
    UnknownKind(u8),
    /// The protobuf body did not parse.
    #[error("malformed protobuf voice packet: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A session number above `u32::MAX` (legacy varints are 64-bit).
    #[error("sender session {0} does not fit in 32 bits")]
    SessionOutOfRange(u64),
    /// Target or context above [`MAX_TARGET`].
    #[error("voice target/context {0} is above {MAX_TARGET}")]
    BadTarget(u32),
    /// Encode: an Opus payload longer than [`MAX_LEGACY_OPUS_LEN`] in the legacy format.
    #[error("Opus payload of {0} bytes exceeds the legacy limit of {MAX_LEGACY_OPUS_LEN}")]
    PayloadTooLong(usize),
    /// Encode: a server-to-client packet without `session`.
    #[error("a server-to-client voice packet needs a sender session")]
    MissingSession,
    /// Encode: [`UdpPacket::OtherCodec`] carries no payload to write.
    #[error("packets of other codecs (type {0}) cannot be encoded")]
    CannotEncodeOtherCodec(u8),
    /// Encode: prost refused the output buffer (cannot happen with `BytesMut`, which grows).
    #[error("protobuf encoding failed: {0}")]
    ProtobufEncode(#[from] prost::EncodeError),
}

/// Decodes one voice-channel packet (a decrypted datagram or a `UDPTunnel` payload).
///
/// `direction` is the direction the packet travelled: a client decodes what it
/// receives with [`Direction::FromServer`]. Never panics; the payload of an audio
/// packet is a zero-copy slice of `packet`.
pub fn decode(
    packet: Bytes,
    format: VoiceFormat,
    direction: Direction,
) -> Result<UdpPacket, VoiceError> {
    match format {
        VoiceFormat::Legacy => decode_legacy(packet, direction),
        VoiceFormat::Protobuf => decode_protobuf(packet, direction),
    }
}

/// Appends the wire form of `packet` to `out`.
///
/// On error nothing is written. Errors: [`VoiceError::BadTarget`], [`VoiceError::MissingSession`]
/// (for [`Direction::FromServer`]), [`VoiceError::PayloadTooLong`] (legacy only) and
/// [`VoiceError::CannotEncodeOtherCodec`]. With [`Direction::ToServer`] a `session` is ignored.
pub fn encode(
    packet: &UdpPacket,
    format: VoiceFormat,
    direction: Direction,
    out: &mut BytesMut,
) -> Result<(), VoiceError> {
    match packet {
        UdpPacket::Audio(v) => encode_audio(&v.borrowed(), format, direction, out),
        UdpPacket::Ping { timestamp } => {
            match format {
                VoiceFormat::Legacy => {
                    out.reserve(1 + varint::encoded_len(*timestamp));
                    out.put_u8(legacy_type::PING << 5);
                    varint::encode(*timestamp, out);
                }
                VoiceFormat::Protobuf => {
                    let ping = udp::Ping {
                        timestamp: *timestamp,
                        ..Default::default()
                    };
                    out.reserve(1 + ping.encoded_len());
                    out.put_u8(protobuf_kind::PING);
                    ping.encode(out)?;
                }
            }
            Ok(())
        }
        UdpPacket::OtherCodec { codec } => Err(VoiceError::CannotEncodeOtherCodec(*codec)),
    }
}

/// Appends the wire form of one Opus packet to `out`, reading the payload where it is.
///
/// The same bytes and errors as [`encode`] of the [`UdpPacket::Audio`] holding this packet.
pub fn encode_audio(
    packet: &VoicePacketRef<'_>,
    format: VoiceFormat,
    direction: Direction,
    out: &mut BytesMut,
) -> Result<(), VoiceError> {
    if packet.target_or_context > MAX_TARGET {
        return Err(VoiceError::BadTarget(packet.target_or_context.into()));
    }
    let session = match direction {
        Direction::FromServer => Some(packet.session.ok_or(VoiceError::MissingSession)?),
        Direction::ToServer => None,
    };
    match format {
        VoiceFormat::Legacy => encode_legacy_audio(packet, session, out),
        VoiceFormat::Protobuf => encode_protobuf_audio(packet, session, direction, out),
    }
}

impl UdpPacket {
    /// Same as the free function [`decode`].
    pub fn decode(
        packet: Bytes,
        format: VoiceFormat,
        direction: Direction,
    ) -> Result<Self, VoiceError> {
        decode(packet, format, direction)
    }

    /// Same as the free function [`encode`].
    pub fn encode(
        &self,
        format: VoiceFormat,
        direction: Direction,
        out: &mut BytesMut,
    ) -> Result<(), VoiceError> {
        encode(self, format, direction, out)
    }
}

/// A read position in a legacy packet.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, VoiceError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (value, used) =
            varint::decode(rest).map_err(|source| VoiceError::Varint { field, source })?;
        self.pos += used;
        Ok(value)
    }

    fn skip(&mut self, what: &'static str, len: usize) -> Result<(), VoiceError> {
        let available = self.remaining();
        if len > available {
            return Err(VoiceError::BadLength {
                what,
                len,
                available,
            });
        }
        self.pos += len;
        Ok(())
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, VoiceError> {
        let b = *self.buf.get(self.pos).ok_or(VoiceError::BadLength {
            what: field,
            len: 1,
            available: 0,
        })?;
        self.pos += 1;
        Ok(b)
    }
}

fn decode_legacy(packet: Bytes, direction: Direction) -> Result<UdpPacket, VoiceError> {
    let header = *packet.first().ok_or(VoiceError::Empty)?;
    let kind = header >> 5;
    let target = header & MAX_TARGET;
    let mut cur = Cursor {
        buf: &packet,
        pos: 1,
    };
    match kind {
        legacy_type::PING => {
            // Anything after the timestamp is ignored, as murmurd does.
            let timestamp = cur.varint("ping timestamp")?;
            Ok(UdpPacket::Ping { timestamp })
        }
        legacy_type::OPUS => {
            let session = legacy_session(&mut cur, direction)?;
            let sequence = cur.varint("sequence")?;
            let length = cur.varint("Opus length")?;
            // Mumble masks the length to 13 bits and ignores bits above the terminator.
            let len = (length & MAX_LEGACY_OPUS_LEN as u64) as usize;
            let start = cur.pos;
            cur.skip("Opus payload", len)?;
            let payload = packet.slice(start..cur.pos);
            Ok(UdpPacket::Audio(VoicePacket {
                target_or_context: target,
                session,
                sequence,
                payload,
                terminator: length & LEGACY_TERMINATOR != 0,
                position: legacy_position(&packet[cur.pos..]),
            }))
        }
        legacy_type::CELT_ALPHA | legacy_type::SPEEX | legacy_type::CELT_BETA => {
            // Walk the frames only to tell a well-formed packet from garbage; the audio is dropped.
            legacy_session(&mut cur, direction)?;
            cur.varint("sequence")?;
            loop {
                let frame = cur.u8("frame header")?;
                cur.skip("frame", usize::from(frame & 0x7F))?;
                if frame & 0x80 == 0 {
                    break;
                }
            }
            Ok(UdpPacket::OtherCodec { codec: kind })
        }
        other => Err(VoiceError::UnknownType(other)),
    }
}

fn legacy_session(cur: &mut Cursor<'_>, direction: Direction) -> Result<Option<u32>, VoiceError> {
    match direction {
        Direction::ToServer => Ok(None),
        Direction::FromServer => {
            let s = cur.varint("session")?;
            u32::try_from(s)
                .map(Some)
                .map_err(|_| VoiceError::SessionOutOfRange(s))
        }
    }
}

/// The optional trailing position. Like the Mumble client, fewer than 12 trailing bytes
/// do not spoil the audio: the position is just absent.
fn legacy_position(rest: &[u8]) -> Option<[f32; 3]> {
    let bytes = rest.get(..12)?;
    let mut pos = [0f32; 3];
    for (p, chunk) in pos.iter_mut().zip(bytes.chunks_exact(4)) {
        *p = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Some(pos)
}

fn encode_legacy_audio(
    v: &VoicePacketRef<'_>,
    session: Option<u32>,
    out: &mut BytesMut,
) -> Result<(), VoiceError> {
    let len = v.payload.len();
    if len > MAX_LEGACY_OPUS_LEN {
        return Err(VoiceError::PayloadTooLong(len));
    }
    let length_field = len as u64 | if v.terminator { LEGACY_TERMINATOR } else { 0 };
    out.reserve(1 + 5 + varint::encoded_len(v.sequence) + 2 + len + 12);
    out.put_u8(legacy_type::OPUS << 5 | v.target_or_context);
    if let Some(s) = session {
        varint::encode(s.into(), out);
    }
    varint::encode(v.sequence, out);
    varint::encode(length_field, out);
    out.put_slice(v.payload);
    if let Some(position) = v.position {
        for p in position {
            out.put_f32_le(p);
        }
    }
    Ok(())
}

fn encode_protobuf_audio(
    v: &VoicePacketRef<'_>,
    session: Option<u32>,
    direction: Direction,
    out: &mut BytesMut,
) -> Result<(), VoiceError> {
    // prost wants `opus_data` as an owned `Bytes`; to write a borrowed payload without
    // copying it into one, the message goes out in tag order in three parts: fields 1-4 by
    // prost, field 5 (`opus_data`) by hand, fields 6-16 by prost. Encodings of disjoint
    // fields concatenate, so the bytes are exactly prost's for the whole message (tested).
    let header = u32::from(v.target_or_context);
    let head = udp::Audio {
        header: Some(match direction {
            Direction::ToServer => udp::audio::Header::Target(header),
            Direction::FromServer => udp::audio::Header::Context(header),
        }),
        sender_session: session.unwrap_or(0),
        frame_number: v.sequence,
        ..Default::default()
    };
    let tail = udp::Audio {
        positional_data: v.position.map(Vec::from).unwrap_or_default(),
        volume_adjustment: 0.0,
        is_terminator: v.terminator,
        ..Default::default()
    };
    let len = v.payload.len();
    // proto3 leaves an empty `bytes` field out, as prost does.
    let opus_len = if len == 0 {
        0
    } else {
        1 + prost::length_delimiter_len(len) + len
    };
    out.reserve(1 + head.encoded_len() + opus_len + tail.encoded_len());
    out.put_u8(protobuf_kind::AUDIO);
    head.encode(out)?;
    if len > 0 {
        out.put_u8(OPUS_DATA_KEY);
        prost::encode_length_delimiter(len, out)?;
        out.put_slice(v.payload);
    }
    tail.encode(out)?;
    Ok(())
}

/// Key of `MumbleUDP.Audio.opus_data`: field 5, wire type 2 (length-delimited).
const OPUS_DATA_KEY: u8 = 5 << 3 | 2;

fn decode_protobuf(packet: Bytes, direction: Direction) -> Result<UdpPacket, VoiceError> {
    let kind = *packet.first().ok_or(VoiceError::Empty)?;
    // Decoding from `Bytes` lets prost slice `opus_data` out of it instead of copying.
    let body = packet.slice(1..);
    match kind {
        protobuf_kind::AUDIO => {
            let a = udp::Audio::decode(body)?;
            // Accept either header field whatever the direction: they differ only in meaning.
            let header = match a.header {
                Some(udp::audio::Header::Target(t) | udp::audio::Header::Context(t)) => t,
                None => 0,
            };
            let target_or_context = u8::try_from(header)
                .ok()
                .filter(|t| *t <= MAX_TARGET)
                .ok_or(VoiceError::BadTarget(header))?;
            let position = match a.positional_data.as_slice() {
                [x, y, z, ..] => Some([*x, *y, *z]),
                _ => None,
            };
            Ok(UdpPacket::Audio(VoicePacket {
                target_or_context,
                session: match direction {
                    Direction::FromServer => Some(a.sender_session),
                    Direction::ToServer => None,
                },
                sequence: a.frame_number,
                payload: a.opus_data,
                terminator: a.is_terminator,
                position,
            }))
        }
        protobuf_kind::PING => {
            let p = udp::Ping::decode(body)?;
            Ok(UdpPacket::Ping {
                timestamp: p.timestamp,
            })
        }
        other => Err(VoiceError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{FromServer, ToServer};
    use VoiceFormat::{Legacy, Protobuf};

    fn opus(len: usize) -> Bytes {
        (0..len).map(|i| i as u8).collect::<Vec<u8>>().into()
    }

    fn audio(session: Option<u32>, sequence: u64, payload: Bytes, terminator: bool) -> UdpPacket {
        UdpPacket::Audio(VoicePacket {
            target_or_context: 0,
            session,
            sequence,
            payload,
            terminator,
            position: None,
        })
    }

    fn enc(p: &UdpPacket, f: VoiceFormat, d: Direction) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(p, f, d, &mut out).unwrap();
        out.to_vec()
    }

    fn dec(bytes: &[u8], f: VoiceFormat, d: Direction) -> Result<UdpPacket, VoiceError> {
        decode(Bytes::copy_from_slice(bytes), f, d)
    }

    /// What a pymumble 1.6 client sends through UDPTunnel: header 0x80 (Opus, target 0),
    /// sequence in 10 ms units advancing by 2 per 20 ms packet, length without the
    /// terminator bit, then the Opus bytes.
    #[test]
    fn pymumble_opus_packets_to_server() {
        let payload = opus(60);
        let mut expected = vec![0x80, 0x02, 0x3C];
        expected.extend_from_slice(&payload);
        let p = audio(None, 2, payload.clone(), false);
        assert_eq!(enc(&p, Legacy, ToServer), expected);
        assert_eq!(dec(&expected, Legacy, ToServer).unwrap(), p);

        // 64 packets later (1.28 s) the sequence needs the two-byte varint form.
        let mut expected = vec![0x80, 0x80, 0x80, 0x3C];
        expected.extend_from_slice(&payload);
        let p = audio(None, 128, payload, false);
        assert_eq!(enc(&p, Legacy, ToServer), expected);
        assert_eq!(dec(&expected, Legacy, ToServer).unwrap(), p);
    }

    /// The same packet as murmurd 1.3 relays it to listeners: the session is inserted
    /// after the header byte, everything else is copied.
    #[test]
    fn relayed_opus_packet_from_server() {
        let payload = opus(60);
        let mut wire = vec![0x80, 0x81, 0x2C, 0x80, 0x82, 0x3C];
        wire.extend_from_slice(&payload);
        let p = audio(Some(300), 130, payload, false);
        assert_eq!(dec(&wire, Legacy, FromServer).unwrap(), p);
        assert_eq!(enc(&p, Legacy, FromServer), wire);
    }

    #[test]
    fn terminator_and_position_and_target() {
        let payload = opus(60);
        let mut wire = vec![0x80 | 31, 0x07, 0x0A, 0xA0, 0x3C];
        wire.extend_from_slice(&payload);
        for f in [1.0f32, -2.5, 1e3] {
            wire.extend_from_slice(&f.to_le_bytes());
        }
        let p = UdpPacket::Audio(VoicePacket {
            target_or_context: 31,
            session: Some(7),
            sequence: 10,
            payload,
            terminator: true,
            position: Some([1.0, -2.5, 1e3]),
        });
        assert_eq!(dec(&wire, Legacy, FromServer).unwrap(), p);
        assert_eq!(enc(&p, Legacy, FromServer), wire);
    }

    #[test]
    fn empty_terminator_packet() {
        // Length 0 with the terminator bit is 0x2000: the two-byte varint A0 00.
        let p = audio(None, 5, Bytes::new(), true);
        assert_eq!(enc(&p, Legacy, ToServer), [0x80, 0x05, 0xA0, 0x00]);
        assert_eq!(dec(&[0x80, 0x05, 0xA0, 0x00], Legacy, ToServer).unwrap(), p);
    }

    #[test]
    fn payload_is_a_slice_of_the_input() {
        let mut wire = vec![0x80, 0x02, 0x3C];
        wire.extend_from_slice(&opus(60));
        let input = Bytes::from(wire);
        let UdpPacket::Audio(v) = decode(input.clone(), Legacy, ToServer).unwrap() else {
            panic!("not audio");
        };
        assert_eq!(v.payload.as_ptr(), input[3..].as_ptr());

        let mut pb = BytesMut::new();
        encode(
            &audio(Some(1), 2, opus(60), false),
            Protobuf,
            FromServer,
            &mut pb,
        )
        .unwrap();
        let input = pb.freeze();
        let UdpPacket::Audio(v) = decode(input.clone(), Protobuf, FromServer).unwrap() else {
            panic!("not audio");
        };
        let offset = v.payload.as_ptr() as usize - input.as_ptr() as usize;
        assert!(offset < input.len(), "payload points into the input");
    }

    #[test]
    fn legacy_ping() {
        let p = UdpPacket::Ping { timestamp: 0x1234 };
        assert_eq!(enc(&p, Legacy, ToServer), [0x20, 0x92, 0x34]);
        assert_eq!(dec(&[0x20, 0x92, 0x34], Legacy, FromServer).unwrap(), p);
        // Target bits of a ping header are ignored.
        assert_eq!(
            dec(&[0x3F, 0x05], Legacy, ToServer).unwrap(),
            UdpPacket::Ping { timestamp: 5 }
        );
    }

    #[test]
    fn other_codecs_are_recognised_not_decoded() {
        // Speex from the server: session 3, sequence 9, two frames (continuation bit on the first).
        let wire = [0x40, 0x03, 0x09, 0x82, 0xAA, 0xBB, 0x01, 0xCC];
        assert_eq!(
            dec(&wire, Legacy, FromServer).unwrap(),
            UdpPacket::OtherCodec {
                codec: legacy_type::SPEEX
            }
        );
        // CELT-alpha to the server, one empty frame.
        assert_eq!(
            dec(&[0x00, 0x01, 0x00], Legacy, ToServer).unwrap(),
            UdpPacket::OtherCodec {
                codec: legacy_type::CELT_ALPHA
            }
        );
        // A frame header that promises more than there is.
        assert!(matches!(
            dec(&[0x60, 0x01, 0x05, 0xAA], Legacy, ToServer),
            Err(VoiceError::BadLength {
                len: 5,
                available: 1,
                ..
            })
        ));
        // Continuation bit set on the last frame.
        assert!(dec(&[0x60, 0x01, 0x81, 0xAA], Legacy, ToServer).is_err());
        assert_eq!(
            encode(
                &UdpPacket::OtherCodec { codec: 2 },
                Legacy,
                ToServer,
                &mut BytesMut::new()
            ),
            Err(VoiceError::CannotEncodeOtherCodec(2))
        );
    }

    #[test]
    fn legacy_errors() {
        assert_eq!(dec(&[], Legacy, ToServer), Err(VoiceError::Empty));
        assert_eq!(
            dec(&[0xA0, 0x01], Legacy, ToServer),
            Err(VoiceError::UnknownType(5))
        );
        assert!(matches!(
            dec(&[0x80], Legacy, ToServer),
            Err(VoiceError::Varint {
                field: "sequence",
                source: VarintError::Truncated
            })
        ));
        assert!(matches!(
            dec(&[0x80, 0x01], Legacy, FromServer),
            Err(VoiceError::Varint {
                field: "sequence",
                ..
            })
        ));
        assert!(matches!(
            dec(&[0x80, 0x01, 0x3C, 0x00], Legacy, ToServer),
            Err(VoiceError::BadLength {
                len: 60,
                available: 1,
                ..
            })
        ));
        assert_eq!(
            dec(
                &[0x80, 0xF4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
                Legacy,
                FromServer
            ),
            Err(VoiceError::SessionOutOfRange(1 << 32))
        );
    }

    #[test]
    fn short_trailer_is_no_position() {
        let mut wire = vec![0x80, 0x02, 0x01, 0x55];
        wire.extend_from_slice(&[1, 2, 3, 4, 5]);
        let UdpPacket::Audio(v) = dec(&wire, Legacy, ToServer).unwrap() else {
            panic!("not audio");
        };
        assert_eq!(v.position, None);
        assert_eq!(&v.payload[..], &[0x55]);
    }

    #[test]
    fn encode_errors_write_nothing() {
        let mut out = BytesMut::new();
        let too_long = audio(Some(1), 0, opus(MAX_LEGACY_OPUS_LEN + 1), false);
        assert_eq!(
            encode(&too_long, Legacy, ToServer, &mut out),
            Err(VoiceError::PayloadTooLong(MAX_LEGACY_OPUS_LEN + 1))
        );
        // The protobuf format has no 13-bit limit.
        encode(&too_long, Protobuf, ToServer, &mut BytesMut::new()).unwrap();
        assert_eq!(
            encode(
                &audio(None, 0, opus(1), false),
                Legacy,
                FromServer,
                &mut out
            ),
            Err(VoiceError::MissingSession)
        );
        let mut bad_target = audio(None, 0, opus(1), false);
        if let UdpPacket::Audio(v) = &mut bad_target {
            v.target_or_context = 32;
        }
        assert_eq!(
            encode(&bad_target, Protobuf, ToServer, &mut out),
            Err(VoiceError::BadTarget(32))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn protobuf_audio_both_directions() {
        let p = UdpPacket::Audio(VoicePacket {
            target_or_context: 2,
            session: Some(42),
            sequence: 1000,
            payload: opus(60),
            terminator: true,
            position: Some([0.5, 1.5, -3.0]),
        });
        let wire = enc(&p, Protobuf, FromServer);
        assert_eq!(wire[0], 0);
        let msg = udp::Audio::decode(&wire[1..]).unwrap();
        assert_eq!(msg.header, Some(udp::audio::Header::Context(2)));
        assert_eq!(msg.sender_session, 42);
        assert_eq!(msg.frame_number, 1000);
        assert!(msg.is_terminator);
        assert_eq!(dec(&wire, Protobuf, FromServer).unwrap(), p);

        let wire = enc(&p, Protobuf, ToServer);
        let msg = udp::Audio::decode(&wire[1..]).unwrap();
        assert_eq!(msg.header, Some(udp::audio::Header::Target(2)));
        assert_eq!(msg.sender_session, 0, "a client does not send its session");
        let UdpPacket::Audio(back) = dec(&wire, Protobuf, ToServer).unwrap() else {
            panic!("not audio");
        };
        assert_eq!(back.session, None);
        assert_eq!(back.sequence, 1000);
    }

    #[test]
    fn protobuf_exact_bytes() {
        // Client → server: target 0 is still written (oneof), frame 4, 2-byte payload.
        let p = audio(None, 4, Bytes::from_static(&[0xAB, 0xCD]), false);
        assert_eq!(
            enc(&p, Protobuf, ToServer),
            [0x00, 0x08, 0x00, 0x20, 0x04, 0x2A, 0x02, 0xAB, 0xCD]
        );
        let ping = UdpPacket::Ping { timestamp: 300 };
        assert_eq!(enc(&ping, Protobuf, ToServer), [0x01, 0x08, 0xAC, 0x02]);
        assert_eq!(
            dec(&[0x01, 0x08, 0xAC, 0x02], Protobuf, FromServer).unwrap(),
            ping
        );
    }

    #[test]
    fn protobuf_errors() {
        assert_eq!(dec(&[], Protobuf, FromServer), Err(VoiceError::Empty));
        assert_eq!(
            dec(&[7], Protobuf, FromServer),
            Err(VoiceError::UnknownKind(7))
        );
        assert!(matches!(
            dec(&[0, 0xFF, 0xFF, 0xFF], Protobuf, FromServer),
            Err(VoiceError::Protobuf(_))
        ));
        // opus_data claims 100 bytes, 1 present.
        assert!(matches!(
            dec(&[0, 0x2A, 100, 0x00], Protobuf, FromServer),
            Err(VoiceError::Protobuf(_))
        ));
        // context = 40
        assert_eq!(
            dec(&[0, 0x10, 40], Protobuf, FromServer),
            Err(VoiceError::BadTarget(40))
        );
        // An empty Audio message is a valid (empty) packet.
        assert_eq!(
            dec(&[0], Protobuf, FromServer).unwrap(),
            audio(Some(0), 0, Bytes::new(), false)
        );
    }

    proptest::proptest! {
        /// The protobuf audio encoder writes `opus_data` by hand: its bytes must stay exactly
        /// what prost writes for the whole message, in both directions.
        #[test]
        fn protobuf_audio_is_byte_identical_to_prost(
            target in 0..=MAX_TARGET,
            session in proptest::prelude::any::<u32>(),
            sequence in proptest::prelude::any::<u64>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            terminator in proptest::prelude::any::<bool>(),
            position in proptest::option::of(proptest::prelude::any::<[f32; 3]>()),
            from_server in proptest::prelude::any::<bool>(),
        ) {
            let direction = if from_server { FromServer } else { ToServer };
            let prost_audio = udp::Audio {
                header: Some(if from_server {
                    udp::audio::Header::Context(target.into())
                } else {
                    udp::audio::Header::Target(target.into())
                }),
                sender_session: if from_server { session } else { 0 },
                frame_number: sequence,
                opus_data: payload.clone().into(),
                positional_data: position.map(Vec::from).unwrap_or_default(),
                volume_adjustment: 0.0,
                is_terminator: terminator,
            };
            let mut expected = vec![protobuf_kind::AUDIO];
            prost_audio.encode(&mut expected).unwrap();
            let packet = UdpPacket::Audio(VoicePacket {
                target_or_context: target,
                session: Some(session),
                sequence,
                payload: payload.into(),
                terminator,
                position,
            });
            proptest::prop_assert_eq!(enc(&packet, Protobuf, direction), expected);
        }
    }
}
