//! Property tests of every decoder a server (or anyone on the UDP path) can feed bytes to:
//! garbage never panics, and what we encode decodes back to the same thing.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ptt::ocb2::{CryptError, CryptState};
use ptt::proto;
use ptt::varint;
use ptt::voice_packet::{
    self, Direction, MAX_LEGACY_OPUS_LEN, MAX_TARGET, UdpPacket, VoiceFormat, VoicePacket,
};
use ptt::{ControlMessage, FrameDecoder};

const FORMATS: [VoiceFormat; 2] = [VoiceFormat::Legacy, VoiceFormat::Protobuf];
const DIRECTIONS: [Direction; 2] = [Direction::FromServer, Direction::ToServer];

/// Equality that treats positions bit for bit (garbage positions are often NaN).
fn same(a: &UdpPacket, b: &UdpPacket) -> bool {
    match (a, b) {
        (UdpPacket::Audio(x), UdpPacket::Audio(y)) => {
            let bits = |p: &Option<[f32; 3]>| p.map(|p| p.map(f32::to_bits));
            x.target_or_context == y.target_or_context
                && x.session == y.session
                && x.sequence == y.sequence
                && x.payload == y.payload
                && x.terminator == y.terminator
                && bits(&x.position) == bits(&y.position)
        }
        _ => a == b,
    }
}

/// Feeds `data` in chunks of the given sizes and decodes every complete frame.
fn drain_frames(dec: &mut FrameDecoder, data: &[u8], chunks: &[usize]) -> Vec<ControlMessage> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        dec.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if let Ok(msg) = ControlMessage::try_from(frame) {
                        out.push(msg);
                    }
                }
                Ok(None) => break,
                // Fatal for the stream: the caller closes the connection.
                Err(_) => return out,
            }
        }
    }
    out
}

fn voice_packet(format: VoiceFormat, direction: Direction) -> impl Strategy<Value = VoicePacket> {
    let max_payload = match format {
        VoiceFormat::Legacy => MAX_LEGACY_OPUS_LEN,
        VoiceFormat::Protobuf => 2 * MAX_LEGACY_OPUS_LEN,
    };
    (
        0..=MAX_TARGET,
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..=max_payload),
        any::<bool>(),
        prop::option::of(any::<[f32; 3]>()),
    )
        .prop_map(
            move |(target, session, sequence, payload, terminator, position)| VoicePacket {
                target_or_context: target,
                session: (direction == Direction::FromServer).then_some(session),
                sequence,
                payload: payload.into(),
                terminator,
                position,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn frame_decoder_survives_garbage(
        data in prop::collection::vec(any::<u8>(), 0..4096),
        chunks in prop::collection::vec(1usize..64, 1..8),
        max in prop_oneof![Just(ptt::framing::DEFAULT_MAX_PAYLOAD), 0usize..256],
    ) {
        let mut dec = FrameDecoder::new(max);
        drain_frames(&mut dec, &data, &chunks);
        prop_assert!(dec.buffered() <= data.len());
    }

    /// Well-framed garbage: every message type gets a random protobuf payload.
    #[test]
    fn control_messages_survive_garbage_payloads(
        kind in 0u16..40,
        payload in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = ControlMessage::decode(kind, Bytes::from(payload));
    }

    #[test]
    fn varint_decode_survives_garbage(data in prop::collection::vec(any::<u8>(), 0..24)) {
        if let Ok((_, used)) = varint::decode(&data) {
            prop_assert!(used >= 1 && used <= data.len());
        }
    }

    #[test]
    fn varint_round_trips(value in any::<u64>(), trailing in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut buf = Vec::new();
        varint::encode(value, &mut buf);
        prop_assert_eq!(buf.len(), varint::encoded_len(value));
        prop_assert!(buf.len() <= varint::MAX_LEN);
        buf.extend_from_slice(&trailing);
        prop_assert_eq!(varint::decode(&buf), Ok((value, varint::encoded_len(value))));
    }

    #[test]
    fn varint_round_trips_small_negatives(value in -0x1_0000_0000i64..0) {
        let mut buf = Vec::new();
        varint::encode_i64(value, &mut buf);
        prop_assert!(buf[0] >= 0xF8);
        prop_assert_eq!(varint::decode_i64(&buf), Ok((value, buf.len())));
    }

    /// Garbage never panics, an audio payload is never longer than the input, and whatever
    /// decodes re-encodes to something that decodes to the same packet.
    #[test]
    fn voice_decoder_survives_garbage(data in prop::collection::vec(any::<u8>(), 0..256)) {
        for format in FORMATS {
            for direction in DIRECTIONS {
                let Ok(packet) = voice_packet::decode(Bytes::from(data.clone()), format, direction) else {
                    continue;
                };
                if let UdpPacket::Audio(v) = &packet {
                    prop_assert!(v.payload.len() <= data.len());
                    prop_assert_eq!(v.session.is_some(), direction == Direction::FromServer);
                }
                let mut wire = BytesMut::new();
                if voice_packet::encode(&packet, format, direction, &mut wire).is_ok() {
                    let again = voice_packet::decode(wire.freeze(), format, direction).unwrap();
                    prop_assert!(same(&packet, &again), "{:?} != {:?}", packet, again);
                }
            }
        }
    }

    /// Garbage behind a plausible legacy header: exercises the deeper parsing paths.
    #[test]
    fn legacy_voice_with_valid_header_survives(
        header in prop_oneof![Just(0x80u8), Just(0x20), Just(0x40), Just(0x00), Just(0x60), any::<u8>()],
        rest in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut data = vec![header];
        data.extend_from_slice(&rest);
        for direction in DIRECTIONS {
            let _ = voice_packet::decode(Bytes::from(data.clone()), VoiceFormat::Legacy, direction);
        }
    }

    #[test]
    fn legacy_voice_round_trips(
        (direction, packet) in prop_oneof![Just(Direction::FromServer), Just(Direction::ToServer)]
            .prop_flat_map(|d| (Just(d), voice_packet(VoiceFormat::Legacy, d))),
    ) {
        round_trip(UdpPacket::Audio(packet), VoiceFormat::Legacy, direction)?;
    }

    #[test]
    fn protobuf_voice_round_trips(
        (direction, packet) in prop_oneof![Just(Direction::FromServer), Just(Direction::ToServer)]
            .prop_flat_map(|d| (Just(d), voice_packet(VoiceFormat::Protobuf, d))),
    ) {
        round_trip(UdpPacket::Audio(packet), VoiceFormat::Protobuf, direction)?;
    }

    #[test]
    fn pings_round_trip(timestamp in any::<u64>()) {
        for format in FORMATS {
            for direction in DIRECTIONS {
                round_trip(UdpPacket::Ping { timestamp }, format, direction)?;
            }
        }
    }

    /// Control frames fed in arbitrary chunk sizes come out as they went in.
    #[test]
    fn control_frames_round_trip(
        session in any::<u32>(),
        name in ".{0,40}",
        channel in prop::option::of(any::<u32>()),
        text in ".{0,200}",
        tunnel in prop::collection::vec(any::<u8>(), 0..300),
        chunks in prop::collection::vec(1usize..50, 1..6),
    ) {
        let msgs: Vec<ControlMessage> = vec![
            proto::UserState {
                session: Some(session),
                name: Some(name),
                channel_id: channel,
                self_mute: Some(true),
                ..Default::default()
            }
            .into(),
            proto::TextMessage {
                actor: Some(session),
                channel_id: channel.into_iter().collect(),
                message: text,
                ..Default::default()
            }
            .into(),
            ControlMessage::UdpTunnel(tunnel.into()),
        ];
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire);
        }
        let mut dec = FrameDecoder::default();
        let got = drain_frames(&mut dec, &wire, &chunks);
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(dec.buffered(), 0);
    }
}

fn round_trip(
    packet: UdpPacket,
    format: VoiceFormat,
    direction: Direction,
) -> Result<(), TestCaseError> {
    let mut wire = BytesMut::new();
    voice_packet::encode(&packet, format, direction, &mut wire)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back = voice_packet::decode(wire.freeze(), format, direction)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(same(&packet, &back), "{:?} != {:?}", packet, back);
    Ok(())
}

fn keyed(key: [u8; 16], encrypt_iv: [u8; 16], decrypt_iv: [u8; 16]) -> CryptState {
    let mut cs = CryptState::new();
    cs.set_key(&key, &encrypt_iv, &decrypt_iv)
        .expect("16-byte key and nonces");
    cs
}

/// What the receiver sees: Mumble's XEX* countermeasure flips bit 0 of a second-to-last
/// block that is zero in its first 15 bytes.
fn as_received(plain: &[u8]) -> Vec<u8> {
    let mut expected = plain.to_vec();
    let full = plain.len().saturating_sub(1) / 16;
    if full > 0 {
        let block = &mut expected[(full - 1) * 16..full * 16];
        if block[..15].iter().all(|b| *b == 0) {
            block[0] ^= 1;
        }
    }
    expected
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Garbage datagrams are rejected without panicking and without touching any state.
    #[test]
    fn ocb2_decrypt_survives_garbage(
        key in any::<[u8; 16]>(),
        iv in any::<[u8; 16]>(),
        datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 1..16),
    ) {
        let mut cs = keyed(key, iv, iv);
        for d in datagrams {
            let before = (cs.decrypt_iv(), cs.stats());
            let mut out = vec![7u8];
            match cs.decrypt(&d, &mut out) {
                // A 24-bit tag: a random datagram is accepted about once in 16 million.
                Ok(()) => prop_assert_eq!(out.len(), d.len() - 3),
                Err(e) => {
                    prop_assert_eq!(out, vec![7u8]);
                    prop_assert_eq!((cs.decrypt_iv(), cs.stats()), before, "{}", e);
                    if d.len() < 4 {
                        prop_assert_eq!(e, CryptError::TooShort(d.len()));
                    }
                }
            }
        }
    }

    /// Any plaintext survives encrypt → decrypt (with the XEX* bit flip where it applies),
    /// losses are counted, replays are refused.
    #[test]
    fn ocb2_round_trip_with_losses(
        key in any::<[u8; 16]>(),
        server_nonce in any::<[u8; 16]>(),
        plains in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..120),
                // Silence-like packets hit the countermeasure.
                (0usize..120).prop_map(|n| vec![0u8; n]),
            ],
            1..40,
        ),
        keep in prop::collection::vec(prop::bool::weighted(0.7), 40),
    ) {
        let mut server = keyed(key, server_nonce, [0; 16]);
        let mut client = keyed(key, [0; 16], server_nonce);
        let sealed: Vec<Vec<u8>> = plains
            .iter()
            .map(|p| {
                let mut out = Vec::new();
                server.encrypt(p, &mut out);
                out
            })
            .collect();
        let mut delivered = 0u32;
        let mut last = None;
        for (i, (plain, packet)) in plains.iter().zip(&sealed).enumerate() {
            if !keep[i] {
                continue;
            }
            let mut out = Vec::new();
            client.decrypt(packet, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(out, as_received(plain));
            delivered += 1;
            last = Some(i);
        }
        if let Some(last) = last {
            prop_assert_eq!(client.good(), delivered);
            prop_assert_eq!(client.lost(), last as u32 + 1 - delivered);
            prop_assert_eq!(client.late(), 0);
            let mut out = Vec::new();
            prop_assert!(client.decrypt(&sealed[last], &mut out).is_err());
        }
    }
}
