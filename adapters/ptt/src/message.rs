//! Typed control messages: the message-type table and protobuf (de)serialisation.

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use crate::framing::{RawFrame, encode_frame};
use crate::proto;

/// Why a well-framed control message could not be decoded. Per frame: the stream stays usable.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The type number is not one we know.
    #[error("unknown control message type {0}")]
    UnknownType(u16),
    /// The payload is not a valid protobuf message of the announced type.
    #[error("malformed {kind:?} message: {source}")]
    Protobuf {
        /// The announced type.
        kind: MessageType,
        /// What prost found wrong.
        source: prost::DecodeError,
    },
}

macro_rules! control_messages {
    ($( $num:literal => $variant:ident ( $ty:ty ) ),* $(,)?) => {
        /// Control message type numbers as sent in the frame header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum MessageType {
            /// Carries a raw voice packet over TCP.
            UdpTunnel = 1,
            $(
                #[doc = concat!("`", stringify!($variant), "` control message.")]
                $variant = $num,
            )*
        }

        impl MessageType {
            /// Maps a frame header type number to a message type.
            pub fn from_u16(n: u16) -> Option<Self> {
                match n {
                    1 => Some(Self::UdpTunnel),
                    $( $num => Some(Self::$variant), )*
                    _ => None,
                }
            }

            /// Short name for logs and metric labels.
            pub fn name(self) -> &'static str {
                match self {
                    Self::UdpTunnel => "UDPTunnel",
                    $( Self::$variant => stringify!($variant), )*
                }
            }
        }

        /// A decoded control message.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ControlMessage {
            /// A raw voice packet tunnelled through TCP (not protobuf-wrapped on the wire).
            UdpTunnel(Bytes),
            $(
                #[doc = concat!("`", stringify!($variant), "` control message.")]
                $variant($ty),
            )*
        }

        impl ControlMessage {
            /// Type number of this message.
            pub fn message_type(&self) -> MessageType {
                match self {
                    Self::UdpTunnel(_) => MessageType::UdpTunnel,
                    $( Self::$variant(_) => MessageType::$variant, )*
                }
            }

            /// Decodes a frame payload of type `kind`.
            pub fn decode(kind: u16, payload: Bytes) -> Result<Self, DecodeError> {
                let ty = MessageType::from_u16(kind).ok_or(DecodeError::UnknownType(kind))?;
                let wrap = |source| DecodeError::Protobuf { kind: ty, source };
                Ok(match ty {
                    MessageType::UdpTunnel => Self::UdpTunnel(payload),
                    $( MessageType::$variant => Self::$variant(<$ty>::decode(payload).map_err(wrap)?), )*
                })
            }

            /// Appends this message as a complete frame to `out`.
            pub fn encode(&self, out: &mut BytesMut) {
                let kind = self.message_type() as u16;
                match self {
                    Self::UdpTunnel(packet) => encode_frame(kind, packet, out),
                    $( Self::$variant(m) => encode_frame(kind, &m.encode_to_vec(), out), )*
                }
            }
        }

        $(
            impl From<$ty> for ControlMessage {
                fn from(m: $ty) -> Self {
                    Self::$variant(m)
                }
            }
        )*
    };
}

control_messages! {
    0 => Version(proto::Version),
    2 => Authenticate(proto::Authenticate),
    3 => Ping(proto::Ping),
    4 => Reject(proto::Reject),
    5 => ServerSync(proto::ServerSync),
    6 => ChannelRemove(proto::ChannelRemove),
    7 => ChannelState(proto::ChannelState),
    8 => UserRemove(proto::UserRemove),
    9 => UserState(proto::UserState),
    10 => BanList(proto::BanList),
    11 => TextMessage(proto::TextMessage),
    12 => PermissionDenied(proto::PermissionDenied),
    13 => Acl(proto::Acl),
    14 => QueryUsers(proto::QueryUsers),
    15 => CryptSetup(proto::CryptSetup),
    16 => ContextActionModify(proto::ContextActionModify),
    17 => ContextAction(proto::ContextAction),
    18 => UserList(proto::UserList),
    19 => VoiceTarget(proto::VoiceTarget),
    20 => PermissionQuery(proto::PermissionQuery),
    21 => CodecVersion(proto::CodecVersion),
    22 => UserStats(proto::UserStats),
    23 => RequestBlob(proto::RequestBlob),
    24 => ServerConfig(proto::ServerConfig),
    25 => SuggestConfig(proto::SuggestConfig),
    26 => PluginDataTransmission(proto::PluginDataTransmission),
}

impl TryFrom<RawFrame> for ControlMessage {
    type Error = DecodeError;

    fn try_from(frame: RawFrame) -> Result<Self, DecodeError> {
        Self::decode(frame.kind, frame.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameDecoder;

    #[test]
    fn every_type_number_round_trips() {
        for n in 0..=26u16 {
            let ty = MessageType::from_u16(n).expect("types 0..=26 are all defined");
            assert_eq!(ty as u16, n, "{}", ty.name());
        }
        assert_eq!(MessageType::from_u16(27), None);
    }

    #[test]
    fn messages_survive_framing() {
        let msgs: Vec<ControlMessage> = vec![
            proto::Version {
                version_v1: Some(0x0001_0304),
                release: Some("pttbridge".into()),
                ..Default::default()
            }
            .into(),
            proto::TextMessage {
                actor: Some(4),
                channel_id: vec![1],
                message: "你好".into(),
                ..Default::default()
            }
            .into(),
            ControlMessage::UdpTunnel(Bytes::from_static(&[0x80, 1, 2])),
        ];
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire);
        }
        let mut dec = FrameDecoder::default();
        dec.push(&wire);
        for m in msgs {
            let frame = dec.next_frame().unwrap().unwrap();
            assert_eq!(ControlMessage::try_from(frame).unwrap(), m);
        }
    }

    #[test]
    fn garbage_protobuf_is_a_per_frame_error() {
        let err = ControlMessage::decode(7, Bytes::from_static(&[0xff, 0xff, 0xff])).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Protobuf {
                kind: MessageType::ChannelState,
                ..
            }
        ));
        assert!(matches!(
            ControlMessage::decode(999, Bytes::new()),
            Err(DecodeError::UnknownType(999))
        ));
    }
}
